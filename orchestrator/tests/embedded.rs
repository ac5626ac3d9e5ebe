//! Embedded sweeps end to end, in-process: real actors, real workers (the synthetic
//! program, and Burn for the digits MLP), real Parquet read back with polars.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use polars::prelude::*;
use tessera_core::parse_sweep;
use tessera_orchestrator::actors::writer::FlushPolicy;
use tessera_orchestrator::run::{RunOptions, run_sweep};
use tessera_orchestrator::store::read_table;
use tessera_orchestrator::{RunError, SweepResult};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn run(
    yaml: &str,
    out: &Path,
    workers: usize,
    resume: bool,
) -> Result<SweepResult, RunError> {
    let spec = parse_sweep("test.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    run_sweep(RunOptions {
        spec,
        source: yaml.to_owned(),
        base_dir: root().join("configs"),
        out: out.to_owned(),
        results: None,
        workers,
        resume,
        executor: Arc::new(tessera_worker::BurnExecutor::default()),
        progress: None,
        flush: FlushPolicy {
            max_trials: 7,
            ..FlushPolicy::default()
        },
    })
    .await
}

fn synthetic(kind: &str, budget: &str, extra_space: &str) -> String {
    format!(
        "version: 1\nname: synth\nkind: {kind}\nseed: 3\nprogram: synthetic\nspace:\n  x: {{ float: [0, 1], grid: 4 }}\n  y: {{ choice: [-0.2, 0.0, 0.2] }}\n  reports: 3\n{extra_space}objective: {{ metric: loss, goal: minimize }}\nbudget: {budget}\n"
    )
}

fn ids(df: &DataFrame) -> Vec<u64> {
    df.column("trial_id")
        .unwrap()
        .u64()
        .unwrap()
        .no_null_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sweep_records_every_trial_and_metric_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let r = run(
        &synthetic("random", "{ trials: 30, concurrent: 4 }", ""),
        &out,
        3,
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.progress.finished, 30);
    let trials = read_table(&out, "trials").unwrap();
    let mut got = ids(&trials);
    got.sort_unstable();
    assert_eq!(got, (0..30).collect::<Vec<_>>());
    for col in [
        "status",
        "attempt",
        "worker",
        "seed",
        "started_at",
        "finished_at",
        "loss",
        "x",
        "y",
        "steps",
    ] {
        assert!(trials.column(col).is_ok(), "no column {col}");
    }
    let metrics = read_table(&out, "metrics").unwrap();
    assert_eq!(
        metrics.height(),
        30 * 3 * 2,
        "3 steps × 2 metrics per trial"
    );
    // Several parts were written (flush every 7 trials) and the sweep file was kept.
    assert!(std::fs::read_dir(out.join("trials")).unwrap().count() >= 4);
    assert!(out.join("sweep.yaml").is_file());
    // The objective is the last reported loss.
    let loss = trials
        .column("loss")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap();
    assert!(loss > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grid_sweep_covers_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let r = run(&synthetic("grid", "{ concurrent: 2 }", ""), &out, 2, false)
        .await
        .unwrap();
    assert_eq!(r.progress.finished, 12);
    let trials = read_table(&out, "trials").unwrap();
    let xs: BTreeSet<String> = trials
        .column("x")
        .unwrap()
        .f64()
        .unwrap()
        .no_null_iter()
        .map(|v| format!("{v:.4}"))
        .collect();
    assert_eq!(xs.len(), 4);
    let best = r.progress.best.unwrap();
    // The minimum of (x-0.3)^2+(y+0.2)^2 on the grid is at x=1/3, y=-0.2.
    let row = trials
        .filter(
            &trials
                .column("trial_id")
                .unwrap()
                .u64()
                .unwrap()
                .equal(best.0),
        )
        .unwrap();
    assert!((row.column("x").unwrap().f64().unwrap().get(0).unwrap() - 1.0 / 3.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_panicking_trials_are_retried_then_recorded_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    // First attempt of every trial errors; the retry succeeds.
    let out = dir.path().join("flaky");
    let r = run(
        &synthetic(
            "random",
            "{ trials: 6, max_attempts: 2 }",
            "  fail_attempts: 1\n",
        ),
        &out,
        2,
        false,
    )
    .await
    .unwrap();
    assert_eq!((r.progress.finished, r.progress.retries), (6, 6));
    let t = read_table(&out, "trials").unwrap();
    assert!(
        t.column("attempt")
            .unwrap()
            .u32()
            .unwrap()
            .no_null_iter()
            .all(|a| a == 2)
    );
    // Every attempt panics: the workers survive, each trial is recorded failed once.
    let out = dir.path().join("panics");
    let r = run(
        &synthetic(
            "random",
            "{ trials: 5, max_attempts: 3 }",
            "  panic_attempts: 9\n",
        ),
        &out,
        2,
        false,
    )
    .await
    .unwrap();
    assert_eq!((r.progress.failed, r.progress.retries), (5, 10));
    let t = read_table(&out, "trials").unwrap();
    assert_eq!(t.height(), 5);
    let errors: Vec<String> = t
        .column("error")
        .unwrap()
        .str()
        .unwrap()
        .no_null_iter()
        .map(str::to_owned)
        .collect();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("panicked: synthetic panic on attempt 3")),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_run_needs_resume_and_a_finished_one_resumes_to_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let yaml = synthetic("random", "{ trials: 5 }", "");
    run(&yaml, &out, 2, false).await.unwrap();
    let err = run(&yaml, &out, 2, false).await.unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    let again = run(&yaml, &out, 2, true).await.unwrap();
    assert_eq!(again.progress.finished, 5);
    assert_eq!(read_table(&out, "trials").unwrap().height(), 5);
    // A changed sweep is refused on resume.
    let changed = synthetic("random", "{ trials: 5 }", "  sleep_ms: 1\n");
    let err = run(&changed, &out, 2, true).await.unwrap_err();
    assert!(err.to_string().contains("sweep file changed"), "{err}");
    // So is a changed seed, and the refusal is a usage error.
    let reseeded = yaml.replace("seed: 3", "seed: 4");
    let err = run(&reseeded, &out, 2, true).await.unwrap_err();
    assert!(
        matches!(err, RunError::Usage(_)) && err.to_string().contains("sweep.yaml"),
        "{err}"
    );
}

fn digits_yaml(asha: bool) -> String {
    let es = if asha {
        "early_stopping:\n  asha: { grace: 2, reduction: 3 }\n"
    } else {
        ""
    };
    format!(
        "version: 1\nname: digits-asha\nkind: random\nseed: 5\nprogram: mlp-classifier\ndataset: {{ path: ../experiments/data/digits/digits.parquet }}\nspace:\n  lr: {{ float: [1.0e-4, 3.0e-1], scale: log }}\n  width: {{ choice: [16, 64] }}\n  depth: 1\n  batch_size: 64\n  optimizer: {{ choice: [adam, sgd] }}\n  epochs: 8\nobjective: {{ metric: val_accuracy, goal: maximize }}\nbudget: {{ trials: 12, concurrent: 2 }}\n{es}"
    )
}

/// ASHA does less training than running every trial to the end, and (with one trial at
/// a time, so that its decisions are deterministic) keeps the best trial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asha_trains_less_and_keeps_the_best_trial() {
    let dir = tempfile::tempdir().unwrap();
    let full = run(&digits_yaml(false), &dir.path().join("full"), 1, false)
        .await
        .unwrap();
    let asha = run(&digits_yaml(true), &dir.path().join("asha"), 1, false)
        .await
        .unwrap();
    assert_eq!(full.total_steps, 12 * 8);
    assert!(asha.progress.stopped > 0, "{asha:?}");
    assert!(
        asha.total_steps < full.total_steps,
        "asha {} vs full {}",
        asha.total_steps,
        full.total_steps
    );
    let (best_full, best_asha) = (full.progress.best.unwrap(), asha.progress.best.unwrap());
    assert_eq!(
        best_full.0, best_asha.0,
        "full {best_full:?} asha {best_asha:?}"
    );
    assert!(
        best_full.1 > 0.9,
        "a trained digits classifier: {best_full:?}"
    );
    eprintln!(
        "asha: {} of {} epochs ({} trials stopped early); best trial {} at {:.4}",
        asha.total_steps, full.total_steps, asha.progress.stopped, best_asha.0, best_asha.1
    );
}

/// pandas/pyarrow, polars and DuckDB read both folders as datasets with no help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_readers_read_the_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&synthetic("random", "{ trials: 20 }", ""), &out, 2, false)
        .await
        .unwrap();
    let venv = root().join(".venv/bin/python");
    let python = std::env::var("TESSERA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            if venv.exists() {
                venv
            } else {
                "python3".into()
            }
        });
    let check = std::process::Command::new(&python)
        .args(["-c", "import pyarrow, pandas, polars, duckdb"])
        .status();
    if !check.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have pyarrow, pandas, polars and duckdb for {}",
            python.display()
        );
        eprintln!(
            "SKIPPED: {} lacks pyarrow/pandas/polars/duckdb; run `bash tests/run.sh` to set them up",
            python.display()
        );
        return;
    }
    let status = std::process::Command::new(&python)
        .arg(root().join("tests/python/read_results.py"))
        .args([out.to_str().unwrap(), "20", "120", "loss"])
        .status()
        .unwrap();
    assert!(status.success());
}
