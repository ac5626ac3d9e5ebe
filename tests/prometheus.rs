//! Observability against real parts: a real Prometheus server (Debian's `prometheus`,
//! installed by `.ci/run`) scrapes a real `tessera run` process; its query API must show
//! what the sweep did. The shipped alert rules pass `promtool check rules`, and every
//! metric the rules and the Grafana dashboard name is one Tessera exports.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The path of a tool, or None (then the test is skipped, loudly; CI must have it).
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install `{name}` (apt-get install prometheus)"
        );
        eprintln!(
            "SKIPPED: `{name}` is not installed; `bash .ci/run` installs it (apt-get install prometheus)"
        );
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of an instant query with one result, if Prometheus has it.
fn query(port: u16, q: &str) -> Option<f64> {
    let body = http_get(port, &format!("/api/v1/query?query={}", encode(q)))?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Prometheus on `port`, scraping every second with these `scrape_configs` entries.
fn start_prometheus(
    prometheus: &std::path::Path,
    dir: &std::path::Path,
    port: u16,
    jobs: &str,
) -> Kill {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}"),
    )
    .unwrap();
    Kill(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_real_prometheus_scrapes_what_the_sweep_did() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (tessera_port, prom_port) = (free_port(), free_port());
    let sweep = dir.path().join("prom.yaml");
    std::fs::write(
        &sweep,
        "version: 1\nname: prom\nkind: random\nseed: 2\nprogram: synthetic\nspace:\n  x: { float: [0, 1] }\n  y: { float: [-1, 1] }\n  reports: 3\n  sleep_ms: 20\n  fail_attempts: { int: [0, 1] }\nobjective: { metric: loss, goal: minimize }\nbudget: { trials: 30, max_attempts: 2 }\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let tessera = Kill(
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "run",
                sweep.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--workers",
                "2",
                "--quiet",
            ])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{tessera_port}"),
                "--metrics-linger",
                "120",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _prom = start_prometheus(
        &prometheus,
        dir.path(),
        prom_port,
        &format!(
            "  - job_name: tessera\n    static_configs:\n      - targets: ['127.0.0.1:{tessera_port}']\n"
        ),
    );
    wait_for("prometheus to be ready", Duration::from_secs(60), || {
        http_get(prom_port, "/-/ready").is_some()
    });
    // The sweep ends; Prometheus keeps scraping the lingering process.
    wait_for("the sweep to finish", Duration::from_secs(120), || {
        out.join("journal.jsonl").exists()
            && std::fs::read_to_string(out.join("journal.jsonl"))
                .unwrap_or_default()
                .contains("\"type\":\"completed\"")
    });
    let q = r#"sum(tessera_trials_completed_total{job="tessera",sweep="prom"})"#;
    wait_for(
        "Prometheus to see 30 recorded trials",
        Duration::from_secs(60),
        || query(prom_port, q) == Some(30.0),
    );

    let parquet_rows = tessera_orchestrator::store::read_table(&out, "trials")
        .unwrap()
        .height() as f64;
    assert_eq!(
        query(prom_port, q),
        Some(parquet_rows),
        "the counter equals the rows in Parquet"
    );
    let journal = std::fs::read_to_string(out.join("journal.jsonl")).unwrap();
    let retries = journal.matches("\"type\":\"retry\"").count() as f64;
    assert!(retries > 0.0, "the sweep had retries to count");
    assert_eq!(
        query(
            prom_port,
            r#"sum(tessera_trial_attempts_retried_total{sweep="prom"})"#
        ),
        Some(retries)
    );
    assert_eq!(
        query(
            prom_port,
            r#"tessera_trials{sweep="prom",state="finished"}"#
        ),
        Some(30.0)
    );
    assert_eq!(
        query(prom_port, r#"tessera_trials{sweep="prom",state="running"}"#),
        Some(0.0)
    );
    assert_eq!(
        query(
            prom_port,
            r#"tessera_parquet_rows_written_total{table="trials"}"#
        ),
        Some(30.0)
    );
    assert_eq!(
        query(
            prom_port,
            r#"tessera_parquet_rows_written_total{table="metrics"}"#
        ),
        Some(30.0 * 3.0 * 2.0)
    );
    assert_eq!(query(prom_port, "tessera_workers_connected"), Some(2.0));
    assert_eq!(
        query(prom_port, r#"tessera_worker_info{backend="flex"}"#),
        Some(1.0)
    );
    // Failing attempts fail before their first step; every recorded trial reported 3.
    assert_eq!(
        query(
            prom_port,
            r#"sum(tessera_worker_step_duration_seconds_count{program="synthetic"})"#
        ),
        Some(30.0 * 3.0)
    );
    assert!(query(prom_port, "process_resident_memory_bytes").is_some_and(|v| v > 1e6));
    let best = query(prom_port, r#"tessera_best_objective{sweep="prom"}"#).unwrap();
    assert!(best > 0.0 && best < 2.5, "{best}");
    drop(tessera);
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let starts = (rest.starts_with("tessera_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.insert(rest[..end].to_owned());
            i += end;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    names
}

fn exported() -> String {
    // A short real sweep so every labelled family has children, then the exposition.
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("names.yaml");
    let digits = root().join("experiments/data/digits/digits.parquet");
    std::fs::write(
        &sweep,
        format!(
            "version: 1\nname: names\nkind: random\nprogram: mlp-classifier\ndataset: {{ path: {} }}\nspace:\n  epochs: 1\n  lr: 0.01\nobjective: {{ metric: val_accuracy, goal: maximize }}\nbudget: {{ trials: 4 }}\n",
            digits.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "run",
                sweep.to_str().unwrap(),
                "--out",
                dir.path().join("run").to_str().unwrap(),
                "--quiet",
            ])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--metrics-linger",
                "60",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut text = String::new();
    wait_for("the sweep's metrics", Duration::from_secs(60), || {
        text = http_get(port, "/metrics").unwrap_or_default();
        text.contains("tessera_trials_completed_total{")
            && text.contains("tessera_trial_duration_seconds_bucket{")
    });
    let _ = child.0.kill();
    text
}

#[test]
fn alert_rules_pass_promtool_and_rules_and_dashboard_use_exported_metrics() {
    let rules = root().join("charts/tessera/files/alerts.yaml");
    let dashboard = root().join("charts/tessera/files/grafana-dashboard.json");
    if let Some(promtool) = tool("promtool") {
        let o = Command::new(promtool)
            .args(["check", "rules", rules.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
    let exposition = exported();
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_owned())
        .collect();
    for file in [&rules, &dashboard] {
        let text = std::fs::read_to_string(file).unwrap();
        let used = metric_names(&text);
        assert!(used.len() >= 5, "{}: {used:?}", file.display());
        let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{} names metrics Tessera does not export: {missing:?}",
            file.display()
        );
    }
    let _: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).unwrap();
}

#[test]
fn metrics_follow_prometheus_naming_conventions() {
    let text = exported();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(
            name.starts_with("tessera_") || name.starts_with("process_"),
            "{name}"
        );
        if kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        }
        if kind == "histogram" {
            assert!(
                name.ends_with("_seconds"),
                "histogram {name} must be in seconds"
            );
        }
        assert!(!text.contains("trial_id="), "no per-trial labels");
    }
}

/// Cluster mode: Prometheus scrapes the coordinator and both worker nodes; a frozen
/// worker shows up as a heartbeat miss and the sweep's counters match Parquet.
#[test]
fn a_real_prometheus_scrapes_a_cluster() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let [node_port, coord_metrics, w1_metrics, w2_metrics, prom_port] =
        [(); 5].map(|()| free_port());
    let addr = format!("127.0.0.1:{node_port}");
    let tessera = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
        c.env("TESSERA_SECRET", "prometheus-test")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let _coordinator = Kill(
        tessera()
            .args(["serve", "--listen", &addr, "--heartbeat-timeout", "2"])
            .arg("--state")
            .arg(dir.path().join("state"))
            .args(["--metrics-addr", &format!("127.0.0.1:{coord_metrics}")])
            .spawn()
            .unwrap(),
    );
    let worker = |name: &str, port: u16| {
        Kill(
            tessera()
                .args(["worker", "--join", &addr, "--name", name, "--slots", "2"])
                .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
                .spawn()
                .unwrap(),
        )
    };
    let _steady = worker("steady", w1_metrics);
    let frozen = worker("frozen", w2_metrics);
    let _prom = start_prometheus(
        &prometheus,
        dir.path(),
        prom_port,
        &format!(
            "  - job_name: coordinator\n    static_configs:\n      - targets: ['127.0.0.1:{coord_metrics}']\n  - job_name: workers\n    static_configs:\n      - targets: ['127.0.0.1:{w1_metrics}', '127.0.0.1:{w2_metrics}']\n"
        ),
    );
    wait_for("two workers", Duration::from_secs(60), || {
        http_get(coord_metrics, "/metrics")
            .is_some_and(|m| m.contains("tessera_workers_connected 2"))
    });
    let sweep = dir.path().join("pc.yaml");
    std::fs::write(
        &sweep,
        "version: 1\nname: pc\nkind: random\nseed: 4\nprogram: synthetic\nspace:\n  x: { float: [0, 1] }\n  reports: 2\n  sleep_ms: 100\nobjective: { metric: loss, goal: minimize }\nbudget: { trials: 40, max_attempts: 1 }\n",
    )
    .unwrap();
    let o = tessera()
        .args(["submit", sweep.to_str().unwrap(), "--coordinator", &addr])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(o.status.success());
    let id = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    // Freeze one worker mid-sweep: the coordinator counts its missed heartbeats.
    wait_for("some trials", Duration::from_secs(60), || {
        query(
            prom_port,
            r#"sum(tessera_trials_completed_total{sweep="pc"})"#,
        )
        .is_some_and(|v| v >= 6.0)
    });
    wait_for(
        "Prometheus to scrape both workers",
        Duration::from_secs(60),
        || {
            query(
                prom_port,
                r#"count(tessera_worker_info{job="workers",backend="flex"})"#,
            ) == Some(2.0)
        },
    );
    let pid = frozen.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = dir.path().join("state/runs").join(&id);
    wait_for("the sweep to finish", Duration::from_secs(120), || {
        std::fs::read_to_string(out.join("journal.jsonl"))
            .unwrap_or_default()
            .contains("\"type\":\"completed\"")
    });
    let rows = tessera_orchestrator::store::read_table(&out, "trials")
        .unwrap()
        .height() as f64;
    assert_eq!(rows, 40.0);
    let q = r#"sum(tessera_trials_completed_total{job="coordinator",sweep="pc"})"#;
    wait_for(
        "Prometheus to see every trial",
        Duration::from_secs(60),
        || query(prom_port, q) == Some(rows),
    );
    wait_for("the heartbeat miss", Duration::from_secs(30), || {
        query(
            prom_port,
            r#"tessera_heartbeat_misses_total{worker="frozen"}"#,
        ) == Some(1.0)
    });
    assert_eq!(
        query(
            prom_port,
            r#"tessera_heartbeat_misses_total{worker="steady"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        query(prom_port, r#"tessera_workers_connected{job="coordinator"}"#),
        Some(1.0)
    );
    assert_eq!(
        query(
            prom_port,
            r#"count(tessera_workers_connected{job="workers"})"#
        ),
        None,
        "workers export no coordinator series"
    );
    // Worker-side series come from the worker processes themselves.
    assert!(
        query(
            prom_port,
            r#"sum(tessera_worker_step_duration_seconds_count{job="workers",program="synthetic"})"#
        )
        .is_some_and(|v| v >= 2.0 * 6.0)
    );
    assert_eq!(
        query(
            prom_port,
            r#"count(last_over_time(tessera_worker_info{job="workers",backend="flex"}[5m]))"#
        ),
        Some(2.0),
        "both workers exported their info (the frozen one until it froze)"
    );
    assert_eq!(
        query(prom_port, r#"up{job="workers"} == 0"#),
        Some(0.0),
        "the frozen worker is down"
    );
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
}
