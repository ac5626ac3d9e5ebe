//! The object store behind the results, local and S3, against one shared suite; the S3
//! half talks to a real S3-compatible server on loopback (moto in server mode, installed
//! into `.venv` by `tests/run.sh`). Then whole sweeps write their Parquet to S3: read back
//! by Tessera and by pyarrow, resumed after a crash between an upload and its journal
//! record, without duplicates.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_orchestrator::lake::{LakeError, Location, MULTIPART_PART, ObjectStore, S3Options};
use tessera_orchestrator::store::{read_table, read_table_from, results_of};

const KEY: &str = "tessera-test-key";
const SECRET: &str = "tessera-test-secret";

/// moto's S3 server on a free loopback port; killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Option<Moto> {
    let bin = std::env::var_os("TESSERA_PYTHON")
        .map(PathBuf::from)
        .and_then(|p| p.parent().map(|d| d.join("moto_server")))
        .filter(|p| p.is_file())
        .or_else(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
            root.is_file().then_some(root)
        });
    let Some(bin) = bin else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide moto_server (tests/run.sh installs moto[server] into .venv)"
        );
        eprintln!(
            "\n!!!!!!!! S3 TESTS NOT RUN: no moto_server; run `bash tests/run.sh` !!!!!!!!\n"
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    })
}

fn options(m: &Moto) -> S3Options {
    S3Options {
        endpoint: Some(m.endpoint.clone()),
        path_style: true,
        credentials: Some((KEY.into(), SECRET.into())),
    }
}

async fn make_bucket(m: &Moto, bucket: &str) {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&m.endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            KEY, SECRET, None, None, "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
}

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What every store must do.
async fn suite(store: &ObjectStore) {
    // Write and read back; a missing object is NotFound.
    store.put("a/x.bin", b"one".to_vec()).await.unwrap();
    assert_eq!(store.get("a/x.bin").await.unwrap(), b"one");
    assert!(matches!(
        store.get("a/none").await,
        Err(LakeError::NotFound(_))
    ));
    // Overwrite replaces.
    store.put("a/x.bin", b"two".to_vec()).await.unwrap();
    assert_eq!(store.get("a/x.bin").await.unwrap(), b"two");
    // List: sorted, one folder, nothing below or beside it.
    store.put("a/y.bin", b"y".to_vec()).await.unwrap();
    store.put("a/deeper/z.bin", b"z".to_vec()).await.unwrap();
    store.put("b/z.bin", b"z".to_vec()).await.unwrap();
    assert_eq!(store.list("a").await.unwrap(), vec!["a/x.bin", "a/y.bin"]);
    assert_eq!(
        store.list("nothing-here").await.unwrap(),
        Vec::<String>::new()
    );
    // A large object (three multipart parts on S3) comes back whole.
    let big = bytes(2 * MULTIPART_PART + 12_345, 7);
    store.put("big/blob.bin", big.clone()).await.unwrap();
    assert!(store.get("big/blob.bin").await.unwrap() == big);
    // Delete, and deleting what is gone is fine.
    store.delete("a/y.bin").await.unwrap();
    store.delete("a/y.bin").await.unwrap();
    assert_eq!(store.list("a").await.unwrap(), vec!["a/x.bin"]);
    // An interrupted write is never visible.
    match store {
        ObjectStore::S3(_) => {
            store
                .start_upload_and_abandon("a/partial.bin", bytes(MULTIPART_PART, 3))
                .await
                .unwrap();
        }
        ObjectStore::Local(root) => {
            std::fs::write(root.join("a/.partial.bin.tmp"), b"half").unwrap();
        }
    }
    assert_eq!(store.list("a").await.unwrap(), vec!["a/x.bin"]);
    assert!(matches!(
        store.get("a/partial.bin").await,
        Err(LakeError::NotFound(_))
    ));
    store.clean_temporaries("a").await.unwrap();
    // A store one level down sees the same objects.
    assert_eq!(store.sub("a").list("").await.unwrap(), vec!["x.bin"]);
}

#[test]
fn the_local_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(suite(&ObjectStore::Local(dir.path().join("lake"))));
}

#[test]
fn the_s3_store_passes_the_suite_against_a_real_server() {
    let Some(m) = moto() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        make_bucket(&m, "suite").await;
        let store = ObjectStore::open_with(
            &Location::parse("s3://suite/some/prefix").unwrap(),
            &options(&m),
        )
        .await
        .unwrap();
        suite(&store).await;
    });
}

fn tessera_s3(m: &Moto) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &m.endpoint)
        .env("TESSERA_S3_PATH_STYLE", "1")
        .env_remove("TESSERA_CRASH_AT");
    c
}

const SWEEP: &str = "version: 1\nname: lake\nkind: random\nseed: 5\nprogram: synthetic\nspace:\n  x: { float: [0, 1] }\n  reports: 3\nobjective: { metric: loss, goal: minimize }\nbudget: { trials: 40, max_attempts: 1 }\n";

#[test]
fn a_sweep_writes_its_parquet_to_s3_and_survives_a_crash_mid_upload() {
    let Some(m) = moto() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(make_bucket(&m, "lake"));
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("lake.yaml");
    std::fs::write(&sweep, SWEEP).unwrap();
    let out = dir.path().join("run");
    let run = |crash: Option<&str>, resume: bool| {
        let mut c = tessera_s3(&m);
        c.args([
            "run",
            sweep.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--results",
            "s3://lake/team",
            "--workers",
            "2",
            "--quiet",
            "--flush-trials",
            "5",
        ]);
        if let Some(at) = crash {
            c.env("TESSERA_CRASH_AT", at);
        }
        if resume {
            c.arg("--resume");
        }
        c.output().unwrap()
    };
    // Crash right after the second part's upload, before the journal acknowledges it.
    let o = run(Some("after_part_written:2"), false);
    assert!(!o.status.success(), "the injected crash happened");
    let loc = results_of(&out).unwrap();
    let Location::S3 {
        ref bucket,
        ref prefix,
    } = loc
    else {
        panic!("{loc:?}")
    };
    assert_eq!(bucket, "lake");
    assert!(prefix.starts_with("team/sweep=run"), "{prefix}");
    let o = run(None, true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("results: {}", out.display())),
        "{stdout}"
    );

    let (trials, metrics) = rt.block_on(async {
        let store = ObjectStore::open_with(&loc, &options(&m)).await.unwrap();
        (
            read_table_from(&store, "trials").await.unwrap(),
            read_table_from(&store, "metrics").await.unwrap(),
        )
    });
    let ids: Vec<u64> = trials
        .column("trial_id")
        .unwrap()
        .u64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 40, "every trial once");
    assert_eq!(unique.len(), 40);
    assert_eq!(metrics.height(), 40 * 3 * 2);
    // Nothing is left locally but the journal and the spec.
    assert!(!out.join("trials").exists());

    // A real client reads the lake from S3: pyarrow's S3 file system, Hive partitions.
    if let Some(python) = std::env::var_os("TESSERA_PYTHON") {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/python/read_lake.py");
        let o = Command::new(python)
            .arg(script)
            .args([&m.endpoint, KEY, SECRET, "lake/team", "40", "240"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        assert!(std::env::var_os("CI").is_none(), "CI sets TESSERA_PYTHON");
    }
    // `tessera report` on the run directory follows it to S3.
    let o = tessera_s3(&m)
        .args(["report", out.to_str().unwrap(), "--top", "3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("40 trials recorded"));
}

#[test]
fn a_coordinator_service_writes_every_sweep_to_s3() {
    let Some(m) = moto() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(make_bucket(&m, "cluster"));
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let spawn = |c: &mut Command| {
        c.env("TESSERA_SECRET", "lake")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _serve = Kill(spawn(
        tessera_s3(&m)
            .args([
                "serve",
                "--listen",
                &addr,
                "--results",
                "s3://cluster/sweeps",
                "--state",
            ])
            .arg(dir.path().join("state")),
    ));
    let _worker = Kill(spawn(
        tessera_s3(&m).args(["worker", "--join", &addr, "--slots", "2"]),
    ));
    let sweep = dir.path().join("lake.yaml");
    std::fs::write(&sweep, SWEEP).unwrap();
    let client = |args: &[&str]| {
        let o = tessera_s3(&m)
            .env("TESSERA_SECRET", "lake")
            .args(args)
            .args(["--coordinator", &addr])
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let start = Instant::now();
    let id = loop {
        let (ok, out) = client(&["submit", sweep.to_str().unwrap()]);
        if ok {
            break out.split_whitespace().nth(1).unwrap().to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no coordinator");
        std::thread::sleep(Duration::from_millis(200));
    };
    loop {
        let (ok, out) = client(&["status", &id, "--json"]);
        assert!(ok);
        if out.contains("\"state\":\"complete\"") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let loc = Location::parse(&format!("s3://cluster/sweeps/sweep={id}")).unwrap();
    let trials = rt.block_on(async {
        let store = ObjectStore::open_with(&loc, &options(&m)).await.unwrap();
        read_table_from(&store, "trials").await.unwrap()
    });
    assert_eq!(trials.height(), 40);
    let (ok, report) = client(&["report", &id]);
    assert!(
        ok && report.contains("results: s3://cluster/sweeps/sweep="),
        "{report}"
    );
}

#[test]
fn s3_errors_say_what_failed_without_credentials() {
    let Some(m) = moto() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("lake.yaml");
    std::fs::write(&sweep, SWEEP).unwrap();
    // No such bucket: the run fails with the location in the message, never the secret.
    let o = tessera_s3(&m)
        .current_dir(dir.path())
        .args([
            "run",
            sweep.to_str().unwrap(),
            "--quiet",
            "--out",
            "s3://no-such-bucket/x",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("s3://no-such-bucket/x/sweep="), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    // The journal went to the local runs/ folder, the attempt can be resumed from there.
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .collect();
    assert_eq!(runs.len(), 1);
}

/// Runs `sweep` with its results under `s3://BUCKET/team` and two workers; returns the
/// run directory (which holds only the journal and spec).
fn run_to_s3(m: &Moto, sweep: &Path, bucket: &str, dir: &Path) -> PathBuf {
    let out = dir.join("run");
    let o = tessera_s3(m)
        .args([
            "run",
            sweep.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args([
            "--results",
            &format!("s3://{bucket}/team"),
            "--workers",
            "2",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// `tessera report --format json` of the run in `out`, read back from S3, and the
/// folder `tessera plot` drew its figures into.
fn report_and_plot_from_s3(m: &Moto, out: &Path, dir: &Path) -> (serde_json::Value, PathBuf) {
    let o = tessera_s3(m)
        .args(["report", out.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = serde_json::from_slice(&o.stdout).unwrap();
    let plots = dir.join("plots");
    let o = tessera_s3(m)
        .args([
            "plot",
            out.to_str().unwrap(),
            "--out",
            plots.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (report, plots)
}

/// A nas sweep whose results go to S3: the coordinator writes the front's tables, summary
/// and image there at completion, and `tessera report` and `tessera plot` read them back.
#[test]
fn a_nas_sweep_writes_its_pareto_front_to_s3() {
    let Some(m) = moto() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(make_bucket(&m, "fronts"));
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("nas.yaml");
    let data =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../experiments/data/digits/digits.parquet");
    std::fs::write(
        &sweep,
        format!(
            "version: 1\nname: nas-lake\nkind: nas\nseed: 1\ndataset: {{ path: {} }}\nnas:\n  supernet: {{ family: mlp, depth: [1, 2], width: [8, 16, 32] }}\n  training: {{ epochs: 2 }}\n  objectives:\n    - {{ metric: accuracy, goal: maximize }}\n    - {{ metric: params, goal: minimize }}\n  population: 5\n  evaluations: 10\n  predictor_generations: 5\n",
            data.display()
        ),
    )
    .unwrap();
    let out = run_to_s3(&m, &sweep, "fronts", dir.path());
    let loc = results_of(&out).unwrap();
    let (subnets, pareto, summary) = rt.block_on(async {
        let store = ObjectStore::open_with(&loc, &options(&m)).await.unwrap();
        (
            read_table_from(&store, "subnets").await.unwrap(),
            read_table_from(&store, "pareto").await.unwrap(),
            store.get("nas/summary.json").await.unwrap(),
        )
    });
    assert_eq!(subnets.height(), 10);
    let summary: serde_json::Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(summary["front"].as_array().unwrap().len(), pareto.height());
    assert!(
        !out.join("subnets").exists(),
        "nothing but the journal is local"
    );
    let (report, plots) = report_and_plot_from_s3(&m, &out, dir.path());
    assert_eq!(report["nas"]["measured"], 10);
    assert!(plots.join("front.png").is_file());
}

/// A metalic sweep whose results go to S3: its rounds, tests, summary and figures are
/// written there at completion, and `tessera report` and `tessera plot` read them back.
#[test]
fn a_metalic_sweep_writes_its_rounds_to_s3() {
    let Some(m) = moto() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(make_bucket(&m, "bandits"));
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("metalic.yaml");
    std::fs::write(
        &sweep,
        "version: 1\nname: metalic-lake\nkind: metalic\nseed: 1\nmetalic:\n  family: poisson\n  hidden: [8]\n  points: { boundary: 20, collocation: 40, interface: 11 }\n  adam: { steps: 20 }\n  lbfgs: { iterations: 10 }\n  two_stage: true\n  policies: [thompson, random]\n  warmup: 2\n  rounds: 2\n  test: 1\n  fit_iterations: 10\n",
    )
    .unwrap();
    let out = run_to_s3(&m, &sweep, "bandits", dir.path());
    let loc = results_of(&out).unwrap();
    let (rounds, tests, image) = rt.block_on(async {
        let store = ObjectStore::open_with(&loc, &options(&m)).await.unwrap();
        (
            read_table_from(&store, "rounds").await.unwrap(),
            read_table_from(&store, "tests").await.unwrap(),
            store.get("metalic/regret.png").await.unwrap(),
        )
    });
    assert_eq!(rounds.height(), 2 * 4);
    // Two-stage: an arm and a prediction per phase.
    for c in [
        "arm_0",
        "arm_1",
        "predicted_mean_1",
        "reward_phase_0",
        "reward_phase_1",
    ] {
        assert!(rounds.column(c).is_ok(), "no `{c}` column");
    }
    assert_eq!(tests.height(), 2);
    assert!(image.starts_with(b"\x89PNG"));
    assert!(
        !out.join("rounds").exists(),
        "nothing but the journal is local"
    );
    let (report, plots) = report_and_plot_from_s3(&m, &out, dir.path());
    assert_eq!(report["metalic"]["family"], "poisson");
    assert!(plots.join("regret.png").is_file() && plots.join("test_error.png").is_file());
}

/// A dataset registered on S3: `tessera dataset add … --to s3://…` uploads the shards and
/// manifest; a data-parallel sweep naming the S3 folder trains with each replica fetching
/// its shards from the server.
#[test]
fn a_registered_dataset_on_s3_feeds_a_data_parallel_sweep() {
    let Some(m) = moto() else { return };
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(make_bucket(&m, "data"));
    let dir = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = tessera_s3(&m)
        .args(["dataset", "add", "digits"])
        .arg(root.join("experiments/data/digits/digits.parquet"))
        .args(["--shards", "4", "--to", "s3://data/sets"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tessera_s3(&m)
        .args(["dataset", "show", "s3://data/sets/digits"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("validation.parquet"));
    let yaml = "version: 1\nname: dp-s3\nkind: random\nseed: 2\nprogram: mlp-classifier\ndataset: { path: s3://data/sets/digits }\nspace:\n  lr: 0.01\n  epochs: 3\nobjective: { metric: val_accuracy, goal: maximize }\nbudget: { trials: 2 }\nresources: { workers: 2 }\n";
    let sweep = dir.path().join("dp.yaml");
    std::fs::write(&sweep, yaml).unwrap();
    let out = dir.path().join("run");
    let o = tessera_s3(&m)
        .env("TESSERA_CACHE_DIR", dir.path().join("cache"))
        .args(["run", sweep.to_str().unwrap(), "--workers", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = read_table(&out, "trials").unwrap();
    let acc = t.column("val_accuracy").unwrap().f64().unwrap().clone();
    assert_eq!(t.height(), 2);
    assert!((0..2).all(|i| acc.get(i).unwrap() > 0.8), "{acc:?}");
    assert_eq!(read_table(&out, "replicas").unwrap().height(), 4);
    let cached = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .count();
    assert_eq!(
        cached, 5,
        "4 shards and the validation rows, each fetched once"
    );

    // A data-parallel sweep naming a plain Parquet file, its results on S3: the file is
    // cut into shards once, beside the results, and the replicas fetch theirs from there.
    let file = root.join("experiments/data/digits/digits.parquet");
    let yaml = format!(
        "version: 1\nname: dp-file\nkind: random\nseed: 2\nprogram: mlp-classifier\ndataset: {{ path: {}, shards: 4 }}\nspace:\n  lr: 0.01\n  epochs: 2\nobjective: {{ metric: val_accuracy, goal: maximize }}\nbudget: {{ trials: 2 }}\nresources: {{ workers: 2 }}\nresults: s3://data/runs\n",
        file.display()
    );
    std::fs::write(&sweep, yaml).unwrap();
    let o = tessera_s3(&m)
        .env("TESSERA_CACHE_DIR", dir.path().join("cache2"))
        .args(["run", sweep.to_str().unwrap(), "--workers", "2", "--out"])
        .arg(dir.path().join("run2"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let staged = tessera_orchestrator::datasets::staged_location(
        &Location::parse("s3://data/runs").unwrap(),
        &file,
        &std::fs::read(&file).unwrap(),
        &tessera_core::trial::DatasetRef {
            path: String::new(),
            validation_fraction: 0.2,
            split_seed: 0,
            shards: 4,
            registered: false,
        },
    );
    let o = tessera_s3(&m)
        .args(["dataset", "show", &staged.to_string()])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && shown.contains("shard-00003.parquet"),
        "{shown}"
    );
    let cached = std::fs::read_dir(dir.path().join("cache2"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .count();
    assert_eq!(cached, 5, "each replica fetched its shards from S3");
}
