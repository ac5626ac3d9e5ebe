//! Orchestration throughput, measured (not asserted):
//!
//! 1. no-op trials per second through the embedded coordinator: sweep actor, scheduler,
//!    workers, journal and Parquet writer, with the `synthetic` program (one report per
//!    trial, no training);
//! 2. metric rows per second into Parquet (the writer's encode + fsync + rename).
//!
//! Run: `cargo bench --profile dev --workspace --bench throughput` (add `-- --trials N`).

use std::sync::Arc;
use std::time::Instant;

use tessera_core::parse_sweep;
use tessera_orchestrator::actors::writer::FlushPolicy;
use tessera_orchestrator::lake::ObjectStore;
use tessera_orchestrator::run::{RunOptions, run_sweep};
use tessera_orchestrator::store::{MetricRow, RunStore, parquet_bytes};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let trials = arg("--trials", 20_000);
    let rows = arg("--rows", 2_000_000);
    let workers = arg("--workers", 2) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let yaml = format!(
        "version: 1\nname: noop\nkind: random\nseed: 1\nprogram: synthetic\nspace:\n  x: {{ float: [0, 1] }}\n  y: {{ float: [0, 1] }}\nobjective: {{ metric: loss, goal: minimize }}\nbudget: {{ trials: {trials}, concurrent: 64 }}\n"
    );
    let spec = parse_sweep("noop.yaml", &yaml).expect("spec");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("run");
    let opts = RunOptions {
        spec,
        source: yaml,
        base_dir: dir.path().to_owned(),
        out: out.clone(),
        results: None,
        workers,
        resume: false,
        executor: Arc::new(tessera_worker::BurnExecutor::default()),
        progress: None,
        flush: FlushPolicy::default(),
    };
    let t = Instant::now();
    let result = runtime.block_on(run_sweep(opts)).expect("sweep");
    let secs = t.elapsed().as_secs_f64();
    let recorded = tessera_orchestrator::store::read_table(&out, "trials")
        .expect("read")
        .height();
    assert_eq!(recorded as u64, trials);
    println!(
        "no-op trials through the embedded coordinator: {trials} trials, {workers} workers, {secs:.2} s → {:.0} trials/s (finished {})",
        trials as f64 / secs,
        result.progress.finished
    );

    let metrics: Vec<MetricRow> = (0..rows)
        .map(|i| MetricRow {
            trial_id: i / 100,
            attempt: 1,
            step: i % 100,
            name: if i % 2 == 0 {
                "loss".into()
            } else {
                "val_accuracy".into()
            },
            value: i as f64 * 1e-6,
            at_ms: 1_700_000_000_000 + i as i64,
        })
        .collect();
    let path = dir.path().join("metrics.parquet");
    let t = Instant::now();
    let mut df = RunStore::metrics_frame(&metrics).expect("frame");
    let bytes = parquet_bytes(&mut df).expect("encode");
    runtime
        .block_on(ObjectStore::Local(dir.path().to_owned()).put("metrics.parquet", bytes))
        .expect("write");
    let secs = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "metric rows into Parquet: {rows} rows in {secs:.2} s → {:.2} M rows/s ({:.1} MB file)",
        rows as f64 / secs / 1e6,
        size as f64 / 1e6
    );
}
