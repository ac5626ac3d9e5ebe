//! The `tessera` binary as a user meets it: help, schema, validation errors with
//! file:line:column and exit status 2, and a report of a finished run.

use std::path::PathBuf;
use std::process::Command;

fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes `yaml` to a sweep file in a fresh folder and runs
/// `tessera GLOBAL… run SWEEP --out DIR/run EXTRA…`; returns the folder (kept alive by
/// the caller), the run directory and the process output.
fn run_sweep(
    yaml: &str,
    global: &[&str],
    extra: &[&str],
) -> (tempfile::TempDir, PathBuf, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("sweep.yaml");
    std::fs::write(&sweep, yaml).unwrap();
    let out = dir.path().join("run");
    let o = tessera()
        .args(global)
        .args([
            "run",
            sweep.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    (dir, out, o)
}

#[test]
fn every_broken_fixture_exits_2_with_its_location_and_runs_nothing() {
    let dir = root().join("configs/invalid");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        let expect = first
            .strip_prefix("# expect: ")
            .or_else(|| first.strip_prefix("# expect(cli): "))
            .unwrap();
        let (pos, message) = expect.split_once(": ").unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        let run_dir = out_dir.path().join("run");
        let o = tessera()
            .args([
                "run",
                path.to_str().unwrap(),
                "--out",
                run_dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(
            stderr.contains(&format!("{}:{pos}: ", path.display())),
            "{}: {stderr}",
            path.display()
        );
        assert!(stderr.contains(message), "{stderr}");
        assert!(stderr.contains("help: "), "{stderr}");
        assert_eq!(
            stderr.matches("error").count(),
            1,
            "one error only: {stderr}"
        );
        assert!(!run_dir.exists(), "nothing runs on bad input");
        n += 1;
    }
    assert!(n >= 12);
}

#[test]
fn missing_file_and_bad_flags_exit_2() {
    let o = tessera()
        .args(["run", "no/such/sweep.yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read the sweep file"));
    let o = tessera()
        .args(["run", "--workers", "many", "x.yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = tessera()
        .args(["report", "/nonexistent-run"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn help_schema_programs_and_validate() {
    let o = tessera().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("--resume") && help.contains("--workers") && help.contains("Exit status"),
        "{help}"
    );
    let o = tessera().arg("schema").output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(schema["properties"]["space"].is_object(), "{schema}");
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false)
    );
    let o = tessera().arg("programs").output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("mlp-classifier"));
    for f in ["quickstart.yaml", "grid-digits.yaml"] {
        let o = tessera()
            .args(["validate", root().join("configs").join(f).to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn run_then_report_prints_a_leaderboard() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("s.yaml");
    std::fs::write(
        &sweep,
        "version: 1\nname: cli\nkind: grid\nprogram: synthetic\nspace:\n  x: { float: [0, 1], grid: 8 }\n  y: { choice: [a, b] }\nobjective: { metric: loss, goal: minimize }\n",
    )
    .unwrap();
    // `y` must be numeric for `synthetic`: the CLI says so with a location.
    let o = tessera()
        .args(["validate", sweep.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (_run_dir, out, o) = run_sweep(
        "version: 1\nname: cli\nkind: grid\nprogram: synthetic\nspace:\n  x: { float: [0, 1], grid: 8 }\n  y: { choice: [0.0, 0.5] }\nobjective: { metric: loss, goal: minimize }\n",
        &[],
        &["--workers", "2"],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("leaderboard") && stdout.contains("best: trial"),
        "{stdout}"
    );
    let o = tessera()
        .args(["report", out.to_str().unwrap(), "--top", "3"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        report.contains("16 trials recorded: 16 finished"),
        "{report}"
    );
    assert!(report.contains("Spearman"), "{report}");
    // For scripts: the leaderboard as CSV, everything as JSON.
    let report_as = |format: &str| {
        let o = tessera()
            .args([
                "report",
                out.to_str().unwrap(),
                "--top",
                "3",
                "--format",
                format,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let csv = report_as("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "header and 3 rows: {csv}");
    assert!(lines[0].starts_with("rank,trial,loss,"), "{csv}");
    let json: serde_json::Value = serde_json::from_str(&report_as("json")).unwrap();
    assert_eq!(json["trials"], 16);
    assert_eq!(json["counts"]["finished"], 16);
    assert_eq!(json["leaderboard"].as_array().unwrap().len(), 3);
    assert_eq!(json["leaderboard"][0]["rank"], 1);
    assert_eq!(json["best"]["trial_id"], json["leaderboard"][0]["trial"]);
    assert_eq!(json["effects"].as_array().unwrap().len(), 2);
    assert_eq!(
        json["curves"].as_object().unwrap().len(),
        3,
        "a learning curve per leaderboard trial"
    );
    // The folder holding the run: one line per sweep.
    let o = tessera()
        .args([
            "report",
            out.parent().unwrap().to_str().unwrap(),
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(csv.starts_with("sweep,name,trials,finished,"), "{csv}");
    assert!(csv.contains("\nrun,cli,16,16,0,0,loss,"), "{csv}");
}

#[test]
fn a_sweep_with_failed_trials_exits_1_but_keeps_its_results() {
    let (_dir, out, o) = run_sweep(
        "version: 1\nname: fails\nkind: random\nseed: 1\nprogram: synthetic\nspace:\n  x: { float: [0, 1] }\n  fail_attempts: { choice: [0, 5] }\nobjective: { metric: loss, goal: minimize }\nbudget: { trials: 8, max_attempts: 2 }\n",
        &[],
        &["--quiet"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("trials failed") && stderr.contains("`error` column"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("\u{1b}["),
        "no colour codes when stderr is not a terminal: {stderr}"
    );
    let o = tessera()
        .args(["report", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("8 trials recorded"));
}

#[test]
fn json_logs_carry_the_sweep_and_trial_ids() {
    let (_dir, _out, o) = run_sweep(
        "version: 1\nname: jsonlogs\nkind: random\nprogram: synthetic\nspace:\n  x: { float: [0, 1] }\nobjective: { metric: loss, goal: minimize }\nbudget: { trials: 3 }\n",
        &["--log-format", "json", "-v"],
        &["--quiet"],
    );
    assert!(o.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let recorded: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["message"] == "trial recorded")
        .collect();
    assert_eq!(recorded.len(), 3, "{lines:?}");
    for v in recorded {
        assert_eq!(v["sweep"], "jsonlogs");
        assert!(v["trial_id"].is_u64() && v["level"] == "INFO", "{v}");
    }
}

#[test]
fn an_attempt_over_its_time_limit_is_abandoned_as_failed_and_retried() {
    // The slow trial reports every 1.5 s; its limit is 0.6 s. The fast one is unaffected.
    let (_dir, out, o) = run_sweep(
        "version: 1\nname: slow\nkind: grid\nprogram: synthetic\nspace:\n  sleep_ms: { choice: [0, 1500] }\n  reports: 2\nobjective: { metric: loss, goal: minimize }\nbudget: { max_attempts: 2, trial_timeout_s: 0.6 }\n",
        &[],
        &["--workers", "2", "--quiet"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a failed trial fails the run: {stderr}"
    );
    let t = tessera_orchestrator::store::read_table(&out, "trials").unwrap();
    let status = t.column("status").unwrap().str().unwrap().clone();
    let error = t.column("error").unwrap().str().unwrap().clone();
    let attempt = t.column("attempt").unwrap().u32().unwrap().clone();
    let sleep = t.column("sleep_ms").unwrap().i64().unwrap().clone();
    for i in 0..t.height() {
        if sleep.get(i) == Some(0) {
            assert_eq!(status.get(i), Some("finished"));
        } else {
            assert_eq!(status.get(i), Some("failed"));
            assert_eq!(
                attempt.get(i),
                Some(2),
                "retried once, then failed for good"
            );
            assert!(
                error.get(i).unwrap().contains("time limit"),
                "{:?}",
                error.get(i)
            );
        }
    }
    assert_eq!(t.height(), 2);
}

#[test]
fn plot_draws_png_and_svg_figures_of_a_run() {
    let (_dir, out, o) = run_sweep(
        "version: 1\nname: plots\nkind: random\nseed: 4\nprogram: synthetic\nspace:\n  x: { float: [0.001, 1], scale: log }\n  y: { float: [-1, 1] }\n  reports: 5\nobjective: { metric: loss, goal: minimize }\nbudget: { trials: 20 }\n",
        &[],
        &["--workers", "2", "--quiet"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tessera()
        .args(["plot", out.to_str().unwrap(), "--top", "5"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = String::from_utf8_lossy(&o.stdout);
    for name in [
        "learning_curves",
        "objective_vs_x",
        "objective_vs_y",
        "parallel_coordinates",
    ] {
        let png = std::fs::read(out.join("plots").join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png is a PNG");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((w, h), (1000, 640));
        assert!(png.len() > 10_000, "{name}.png has content");
        let svg = std::fs::read_to_string(out.join("plots").join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("loss"),
            "{name}.svg"
        );
        assert!(listed.contains(&format!("{name}.png")), "{listed}");
    }
    let svg = std::fs::read_to_string(out.join("plots/objective_vs_x.svg")).unwrap();
    assert!(svg.contains("log scale"), "x is log-scaled in the space");
    // Not a run: one clear error, exit 2.
    let o = tessera().args(["plot", "/nonexistent"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a run directory"));
}

fn fractal_yaml(tile: u32) -> String {
    format!(
        "version: 1\nname: fractal-test\nkind: fractal\nseed: 5\nfractal:\n  n: 8\n  width: 8\n  steps: 40\n  window: {{ x: [-1, 3], y: [-1, 3] }}\n  resolution: 16\n  tile: {tile}\n  zoom: {{ frames: 2 }}\n"
    )
}

/// `(frame, x, y) → value` of a fractal run's raster table.
fn raster_values(run: &std::path::Path) -> std::collections::BTreeMap<(i64, i64, i64), f64> {
    use polars::prelude::*;
    let df = tessera_orchestrator::store::read_table(run, "raster").unwrap();
    let col = |n: &str| df.column(n).unwrap().cast(&DataType::Float64).unwrap();
    let (f, x, y, v) = (col("frame"), col("x"), col("y"), col("value"));
    let (f, x, y, v) = (
        f.f64().unwrap(),
        x.f64().unwrap(),
        y.f64().unwrap(),
        v.f64().unwrap(),
    );
    (0..df.height())
        .map(|i| {
            let k = |c: &ChunkedArray<Float64Type>| c.get(i).unwrap() as i64;
            ((k(f), k(x), k(y)), v.get(i).unwrap())
        })
        .collect()
}

/// A fractal sweep end to end through the binary: every grid point of both frames is in
/// the raster table once, the summary and images are written, `tessera report` prints
/// the dimension, and cutting the grid into 4 tiles gives the raster of 1 tile.
#[test]
fn a_fractal_sweep_writes_its_raster_images_and_dimension_and_tiles_do_not_show() {
    let (_d1, one, o) = run_sweep(&fractal_yaml(16), &[], &["--workers", "2", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_d4, four, o) = run_sweep(&fractal_yaml(8), &[], &["--workers", "2", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (raster_values(&one), raster_values(&four));
    assert_eq!(a.len(), 2 * 16 * 16, "both frames, every point once");
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(
            v.to_bits(),
            b[k].to_bits(),
            "point {k:?}: tiles changed the value"
        );
    }
    let trainable = a.values().filter(|v| **v < 0.0).count();
    assert!(trainable > 0 && trainable < a.len(), "a boundary exists");
    for f in [
        "fractal/summary.json",
        "fractal/frame-0.png",
        "fractal/frame-1.png",
        "fractal/frame-0-boundary.png",
    ] {
        assert!(four.join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(four.join("fractal/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["frames"].as_array().unwrap().len(), 2);
    let (w0, w1) = (
        &summary["frames"][0]["window"],
        &summary["frames"][1]["window"],
    );
    let width = |w: &serde_json::Value| w["x_hi"].as_f64().unwrap() - w["x_lo"].as_f64().unwrap();
    assert!(
        (width(w0) - 2.0 * width(w1)).abs() < 1e-9,
        "the zoom halves the window"
    );
    let o = tessera()
        .args(["report", four.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("fractal boundary"),
        "{text}"
    );
    assert!(text.contains("frame 1: log10 lr input"), "{text}");
    // `tessera plot` draws the frames.
    let o = tessera()
        .args(["plot", four.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(four.join("plots/frame-1-boundary.png").is_file());
}

/// A small `nas` sweep on the digits: an elastic MLP with 4 + 16 sub-networks of one and
/// two layers, 12 of them measured in generations of 6.
fn nas_yaml(second: &str, tactic: &str) -> String {
    let data = root().join("experiments/data/digits/digits.parquet");
    format!(
        "version: 1\nname: nas-test\nkind: nas\nseed: 4\ndataset: {{ path: {} }}\nnas:\n  supernet: {{ family: mlp, depth: [1, 2], width: [8, 16, 32, 64] }}\n  training: {{ epochs: 3, batch_size: 64 }}\n  objectives:\n    - {{ metric: accuracy, goal: maximize }}\n    - {{ metric: {second}, goal: minimize }}\n  tactic: {tactic}\n  population: 6\n  evaluations: 12\n  predictor_generations: 5\n  shards: 2\n  batch: 4\n  latency: {{ batch_size: 32, repeats: 5 }}\n",
        data.display()
    )
}

/// A `nas` sweep whose super-network trains data-parallel (`resources.workers: 2`): the
/// supernet trial runs on both embedded workers over their shards of the training rows,
/// and the evaluation trials, with nothing to exchange, on one worker each.
#[test]
fn a_nas_super_network_trains_on_two_workers_and_evaluations_on_one() {
    use tessera_orchestrator::store::read_table;
    let yaml = nas_yaml("latency_ms", "random") + "resources: { workers: 2 }\n";
    let (_d, run, o) = run_sweep(&yaml, &[], &["--workers", "2", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = read_table(&run, "trials").unwrap();
    assert_eq!(t.height(), 9);
    let r = read_table(&run, "replicas").unwrap();
    // One row per replica of the one supernet trial.
    assert_eq!(r.height(), 2);
    let workers = r.column("worker").unwrap().str().unwrap().clone();
    assert_ne!(workers.get(0), workers.get(1));
    let shards = r.column("shards").unwrap().str().unwrap().clone();
    assert_eq!((shards.get(0), shards.get(1)), (Some("0"), Some("1")));
    let id = r.column("trial_id").unwrap().u64().unwrap().clone();
    let roles = t.column("role").unwrap().str().unwrap().clone();
    let ids = t.column("trial_id").unwrap().u64().unwrap().clone();
    let supernet = (0..t.height())
        .find(|i| roles.get(*i) == Some("supernet"))
        .and_then(|i| ids.get(i));
    assert_eq!(id.get(0), supernet);
    assert!(run.join("nas/front.png").is_file());
}

/// A `nas` sweep end to end through the binary: the super-network is trained once, every
/// sub-network is measured once per shard, the tables, summary and front image are
/// written, LINAS's later generations carry predictions, and `tessera report` and
/// `tessera plot` show the front.
#[test]
fn a_nas_sweep_trains_once_measures_every_shard_and_writes_its_front() {
    use tessera_orchestrator::store::read_table;
    let (_d, run, o) = run_sweep(
        &nas_yaml("latency_ms", "linas"),
        &[],
        &["--workers", "2", "--quiet"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = read_table(&run, "trials").unwrap();
    // 1 supernet trial + 2 generations × 2 batches × 2 shards.
    assert_eq!(t.height(), 9);
    let roles = t.column("role").unwrap().str().unwrap().clone();
    let supernets = (0..t.height())
        .filter(|i| roles.get(*i) == Some("supernet"))
        .count();
    assert_eq!(supernets, 1, "the super-network is trained once");
    let ev = read_table(&run, "evaluations").unwrap();
    assert_eq!(ev.height(), 24, "12 sub-networks × 2 shards");
    let keys = ev.select(["subnet", "shard"]).unwrap();
    assert_eq!(
        keys.unique_stable(None, polars::prelude::UniqueKeepStrategy::First, None)
            .unwrap()
            .height(),
        24
    );
    let total: i64 = ev
        .column("total")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .sum();
    assert!(
        total % 12 == 0 && (355..=365).contains(&(total / 12)),
        "each sub-network's shards cover the ~360 validation rows once: {total}"
    );
    let subnets = read_table(&run, "subnets").unwrap();
    assert_eq!(subnets.height(), 12);
    let genes = subnets.column("genes").unwrap().str().unwrap().clone();
    let distinct: std::collections::BTreeSet<_> = genes.iter().collect();
    assert_eq!(distinct.len(), 12, "no sub-network measured twice");
    let acc = subnets.column("accuracy").unwrap().f64().unwrap().clone();
    assert!(acc.iter().all(|a| a.is_some_and(|a| a > 0.1 && a <= 1.0)));
    let predicted = subnets
        .column("predicted_accuracy")
        .unwrap()
        .f64()
        .unwrap()
        .clone();
    let generation = subnets.column("generation").unwrap().u32().unwrap().clone();
    let predicted_in = |g: u32| {
        (0..subnets.height())
            .filter(|i| generation.get(*i) == Some(g) && predicted.get(*i).is_some())
            .count()
    };
    assert_eq!(predicted_in(0), 0, "the first generation is random");
    assert!(
        predicted_in(1) > 0,
        "LINAS chose the second with its predictors"
    );
    let pareto = read_table(&run, "pareto").unwrap();
    assert!(pareto.height() >= 1 && pareto.height() <= 12);
    let hv = read_table(&run, "hypervolume").unwrap();
    assert_eq!(hv.height(), 12);
    for f in [
        "nas/front.png",
        "nas/summary.json",
        "supernet_shape/part-000001.parquet",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("nas/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["measured"], 12);
    assert_eq!(
        summary["metrics"],
        serde_json::json!(["accuracy", "latency_ms"])
    );
    assert!(
        summary["front"][0]["hardware"]
            .as_str()
            .unwrap()
            .contains("flex")
    );
    let o = tessera()
        .args(["report", run.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("Pareto front ("),
        "{text}"
    );
    let o = tessera()
        .args(["plot", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run.join("plots/front.png").is_file());
}

/// A small `metalic` sweep on advection: a bandit, random arms and a fixed condition,
/// tiny networks and budgets.
fn metalic_yaml(extra: &str) -> String {
    format!(
        "version: 1\nname: metalic-test\nkind: metalic\nseed: 2\nmetalic:\n  family: advection\n  hidden: [8, 8]\n  points: {{ boundary: 30, collocation: 80, interface: 21 }}\n  adam: {{ steps: 40, learning_rate: 0.01 }}\n  lbfgs: {{ iterations: 20 }}\n  policies: [ucb, random, {{ name: cpinn, fixed: [solution, flux] }}]\n  warmup: 2\n  rounds: 4\n  test: 2\n  batch: 2\n  fit_iterations: 20\n{extra}"
    )
}

/// A `metalic` sweep end to end through the binary: every policy plays every round on
/// the same contexts (the random and bandit policies share their warm-up trials), each
/// trial records one row per training phase, and the completed sweep writes its rounds
/// (with regrets and the GP's predictions), tests, summary and figures, which
/// `tessera report` and `tessera plot` show.
#[test]
fn a_metalic_sweep_plays_every_policy_on_shared_contexts_and_writes_its_rounds() {
    use tessera_orchestrator::store::read_table;
    let (_d, run, o) = run_sweep(&metalic_yaml(""), &[], &["--workers", "2", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = read_table(&run, "trials").unwrap();
    // Warm-up: 2 rounds × (shared + cpinn); play and test: 3 policies × (4 + 2).
    assert_eq!(t.height(), 2 * 2 + 3 * 6);
    let phases = read_table(&run, "phases").unwrap();
    assert_eq!(
        phases.height(),
        2 * t.height(),
        "Adam and L-BFGS rows per trial"
    );
    let rounds = read_table(&run, "rounds").unwrap();
    assert_eq!(rounds.height(), 3 * 6, "3 policies × (2 warm-up + 4 play)");
    let tests = read_table(&run, "tests").unwrap();
    assert_eq!(tests.height(), 3 * 2);
    let col = |df: &polars::prelude::DataFrame, c: &str| {
        df.column(c)
            .unwrap()
            .cast(&polars::prelude::DataType::Float64)
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .collect::<Vec<_>>()
    };
    // Every round finished, with a reward matching its error and a regret ≥ 0.
    let (reward, error, regret) = (
        col(&rounds, "reward"),
        col(&rounds, "error"),
        col(&rounds, "regret"),
    );
    for i in 0..rounds.height() {
        let (r, e) = (reward[i].unwrap(), error[i].unwrap());
        assert!((r + e.log10()).abs() < 1e-9, "reward {r} error {e}");
        assert!(regret[i].unwrap() >= -1e-12);
    }
    // The bandit's play rounds carry predictions; the others do not.
    let policy = rounds.column("policy").unwrap().str().unwrap().clone();
    let stage = rounds.column("stage").unwrap().str().unwrap().clone();
    let mean = col(&rounds, "predicted_mean");
    for (i, m) in mean.iter().enumerate() {
        let modelled = policy.get(i) == Some("ucb") && stage.get(i) == Some("play");
        assert_eq!(m.is_some(), modelled, "row {i}");
    }
    // Each round's context is the same for every policy.
    let ctx = col(&rounds, "beta");
    let round = col(&rounds, "round");
    for i in 0..rounds.height() {
        for j in 0..rounds.height() {
            if round[i] == round[j] {
                assert_eq!(ctx[i], ctx[j]);
            }
        }
    }
    let arm = rounds.column("arm").unwrap().str().unwrap().clone();
    assert!(
        (0..rounds.height())
            .all(|i| policy.get(i) != Some("cpinn") || arm.get(i) == Some("100010000"))
    );
    for f in [
        "metalic/regret.png",
        "metalic/test_error.png",
        "metalic/summary.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metalic/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["arms"], 512);
    assert_eq!(summary["policies"].as_array().unwrap().len(), 3);
    assert_eq!(summary["policies"][0]["rounds"], 6);
    assert_eq!(summary["policies"][0]["tests"], 2);
    let o = tessera()
        .args(["report", run.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("metalic bandit") && text.contains("cpinn"),
        "{text}"
    );
    let o = tessera()
        .args(["report", run.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["metalic"]["family"], "advection");
    let o = tessera()
        .args(["plot", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run.join("plots/regret.png").is_file() && run.join("plots/test_error.png").is_file());
}

/// The bandit over an ordinary program: the `synthetic` program's `x` is the context,
/// the switches set `y` and `reports`, the reward is its loss negated; the rounds table
/// names the objective, and a hyperparameter the program does not take is an error
/// before anything runs.
#[test]
fn a_metalic_bandit_plays_any_program() {
    use tessera_orchestrator::store::read_table;
    let yaml = "version: 1\nname: bandit-synthetic\nkind: metalic\nseed: 1\nprogram: synthetic\nobjective: { metric: loss, goal: minimize }\nspace: { sleep_ms: 0 }\nmetalic:\n  context_param: x\n  context: [0, 1]\n  switches: { y: [-0.2, 0.5], reports: [1, 3] }\n  policies: [ucb, random]\n  warmup: 2\n  rounds: 4\n  test: 2\n  fit_iterations: 20\n";
    let (_d, run, o) = run_sweep(yaml, &[], &["--workers", "2", "--quiet"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = read_table(&run, "trials").unwrap();
    assert_eq!(t.height(), 2 + 2 * 6);
    for c in ["x", "y", "reports", "sleep_ms"] {
        assert!(t.column(c).is_ok(), "trials table lacks `{c}`");
    }
    let rounds = read_table(&run, "rounds").unwrap();
    assert_eq!(rounds.height(), 2 * 6);
    let reward = rounds.column("reward").unwrap().f64().unwrap().clone();
    let loss = rounds.column("loss").unwrap().f64().unwrap().clone();
    for i in 0..rounds.height() {
        assert!((reward.get(i).unwrap() + loss.get(i).unwrap()).abs() < 1e-12);
    }
    let o = tessera()
        .args(["report", run.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("synthetic family") || text.contains("synthetic"),
        "{text}"
    );
    assert!(run.join("metalic/test_error.png").is_file());
    // A switch the program does not take.
    let bad = yaml.replace("reports: [1, 3]", "repots: [1, 3]");
    let (_d, _run, o) = run_sweep(&bad, &[], &["--quiet"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("repots"));
}

/// A data-parallel sweep through the binary: every trial trains on 2 of the 4 embedded
/// workers at once, each replica on its own shards; the replicas table says which.
#[test]
fn a_data_parallel_sweep_trains_each_trial_on_two_workers_over_their_shards() {
    let yaml = std::fs::read_to_string(root().join("configs/data-parallel.yaml"))
        .unwrap()
        .replace(
            "../experiments/data/digits/digits.parquet",
            root()
                .join("experiments/data/digits/digits.parquet")
                .to_str()
                .unwrap(),
        )
        .replace("epochs: 8", "epochs: 3");
    // Fewer workers than a trial's replicas is a usage error, before anything runs.
    let (_d, _out, o) = run_sweep(&yaml, &[], &["--workers", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("pass --workers 2"));
    // Unless the sweep is elastic: then each trial trains on the one worker there is,
    // holding every shard.
    let elastic = yaml.replace("workers: 2 }", "workers: 2, min_workers: 1 }");
    assert_ne!(elastic, yaml);
    let (_d, out, o) = run_sweep(&elastic, &[], &["--workers", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = tessera_orchestrator::store::read_table(&out, "replicas").unwrap();
    assert_eq!(r.height(), 4);
    let shards = r.column("shards").unwrap().str().unwrap().clone();
    assert!((0..4).all(|i| shards.get(i) == Some("0,1,2,3")));

    let (_dir, out, o) = run_sweep(&yaml, &[], &["--workers", "4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trials = tessera_orchestrator::store::read_table(&out, "trials").unwrap();
    assert_eq!(trials.height(), 4);
    let status = trials.column("status").unwrap().str().unwrap().clone();
    let acc = trials
        .column("val_accuracy")
        .unwrap()
        .f64()
        .unwrap()
        .clone();
    for i in 0..trials.height() {
        assert_eq!(status.get(i), Some("finished"));
    }
    let best = (0..trials.height())
        .filter_map(|i| acc.get(i))
        .fold(0.0, f64::max);
    assert!(best > 0.9, "best val_accuracy {best}");
    // The Parquet file was cut once into 4 shards beside the run, where the replicas
    // fetched their own from.
    let staged: Vec<PathBuf> = std::fs::read_dir(out.parent().unwrap().join("datasets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(staged.len(), 1, "{staged:?}");
    let manifest: tessera_core::shards::Manifest = serde_json::from_slice(
        &std::fs::read(staged[0].join(tessera_core::shards::MANIFEST)).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest.shards.len(), 4);
    assert!(manifest.check().is_ok());

    // With early stopping, replica 0 hears the decision and every replica stops at the
    // same epoch: each trial, stopped or not, is recorded with both replicas' rows.
    let asha = yaml.replace(
        "budget: { trials: 4 }",
        "budget: { trials: 6 }\nearly_stopping: { asha: { grace: 1, reduction: 3, max_t: 3 } }",
    );
    assert_ne!(asha, yaml);
    let (_d, out_asha, o) = run_sweep(&asha, &[], &["--workers", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = tessera_orchestrator::store::read_table(&out_asha, "trials").unwrap();
    let r = tessera_orchestrator::store::read_table(&out_asha, "replicas").unwrap();
    assert_eq!(t.height(), 6);
    assert_eq!(r.height(), 12, "{r}");

    // Two replicas per trial, on different workers, holding shards 0,2 and 1,3, for
    // 3 epochs of ⌈360 rows per shard / 16⌉ steps.
    let r = tessera_orchestrator::store::read_table(&out, "replicas").unwrap();
    assert_eq!(r.height(), 8, "{r}");
    let id = r.column("trial_id").unwrap().u64().unwrap().clone();
    let rank = r.column("rank").unwrap().i64().unwrap().clone();
    let worker = r.column("worker").unwrap().str().unwrap().clone();
    let shards = r.column("shards").unwrap().str().unwrap().clone();
    let steps = r.column("steps").unwrap().i64().unwrap().clone();
    let mut by_trial: std::collections::BTreeMap<u64, Vec<(i64, String, String)>> =
        Default::default();
    for i in 0..r.height() {
        assert_eq!(steps.get(i), Some(69), "{r}");
        by_trial.entry(id.get(i).unwrap()).or_default().push((
            rank.get(i).unwrap(),
            worker.get(i).unwrap().to_owned(),
            shards.get(i).unwrap().to_owned(),
        ));
    }
    assert_eq!(by_trial.len(), 4);
    for replicas in by_trial.values() {
        assert_eq!(replicas.len(), 2);
        assert_ne!(replicas[0].1, replicas[1].1, "two workers: {replicas:?}");
        let held: Vec<(i64, &str)> = replicas.iter().map(|(r, _, s)| (*r, s.as_str())).collect();
        assert_eq!(held, [(0, "0,2"), (1, "1,3")]);
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A registered dataset: `tessera dataset add` writes shards, validation rows and a
/// manifest; a data-parallel sweep naming its folder trains on it, each replica fetching
/// only its shards into the cache; a corrupted shard fails the trial with a clear error,
/// and a corrupted cache entry is fetched again.
#[test]
fn a_registered_dataset_is_sharded_once_fetched_per_replica_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("datasets");
    let o = tessera()
        .args(["dataset", "add", "digits"])
        .arg(root().join("experiments/data/digits/digits.parquet"))
        .args(["--shards", "4", "--to", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let folder = data.join("digits");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    let shards = manifest["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 4);
    let rows: u64 = shards.iter().map(|s| s["rows"].as_u64().unwrap()).sum();
    assert_eq!(
        rows + manifest["validation"]["rows"].as_u64().unwrap(),
        1797
    );
    let o = tessera()
        .args(["dataset", "show", folder.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("shard-00003.parquet"));

    let yaml = std::fs::read_to_string(root().join("configs/data-parallel.yaml"))
        .unwrap()
        .replace(
            "../experiments/data/digits/digits.parquet",
            folder.to_str().unwrap(),
        )
        .replace("epochs: 8", "epochs: 3")
        .replace("trials: 4", "trials: 2");
    let cache = dir.path().join("cache");
    let run = |out: &str| {
        let sweep = dir.path().join("dp.yaml");
        std::fs::write(&sweep, &yaml).unwrap();
        tessera()
            .env("TESSERA_CACHE_DIR", &cache)
            .args(["run", sweep.to_str().unwrap(), "--workers", "2", "--out"])
            .arg(dir.path().join(out))
            .output()
            .unwrap()
    };
    let o = run("ok");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trials = tessera_orchestrator::store::read_table(&dir.path().join("ok"), "trials").unwrap();
    assert_eq!(trials.height(), 2);
    // Every shard and the validation file were fetched into the cache once (the
    // finished trials' checkpoints are gone).
    let files = |ext: &str| {
        walk(&cache)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .count()
    };
    assert_eq!(files("parquet"), 5);
    assert_eq!(files("ckpt"), 0);

    // A damaged cache entry is noticed and fetched again: the run still succeeds.
    let first = shards[0]["sha256"].as_str().unwrap();
    std::fs::write(cache.join(format!("{first}.parquet")), b"garbage").unwrap();
    let o = run("recached");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A corrupted shard at the source (and not in the cache) fails the trials, saying which.
    std::fs::remove_dir_all(&cache).unwrap();
    let shard = folder.join("shard-00002.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();
    let o = run("corrupt");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let t = tessera_orchestrator::store::read_table(&dir.path().join("corrupt"), "trials").unwrap();
    let status = t.column("status").unwrap().str().unwrap().clone();
    assert!(
        (0..t.height()).all(|i| status.get(i) == Some("failed")),
        "{t}"
    );
    let error = t.column("error").unwrap().str().unwrap().clone();
    let e = error.get(0).unwrap_or_default();
    assert!(
        e.contains("shard-00002.parquet is corrupt") && e.contains("tessera dataset add"),
        "{e}\n{err}"
    );
}
