//! The worker side's Prometheus metrics, in the default registry (the process serving
//! `/metrics` exports them beside the coordinator's in embedded mode).

use std::sync::LazyLock;

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntGaugeVec, Opts};

/// Registers `metric` in the default registry and returns it (definitions are constants:
/// an invalid or twice-registered one is a programming error).
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    metric: prometheus::Result<C>,
) -> C {
    let metric = metric.expect("valid metric");
    prometheus::register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

/// Duration of one reporting step of a trial (an epoch for `mlp-classifier`).
pub static STEP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    registered(HistogramVec::new(
        HistogramOpts::new(
            "tessera_worker_step_duration_seconds",
            "Duration of one reported training step (an epoch for mlp-classifier)",
        )
        .buckets(prometheus::exponential_buckets(1e-4, 3.0, 14).expect("valid buckets")),
        &["program"],
    ))
});

/// Training samples per second over the last step, per program.
pub static SAMPLES_PER_SECOND: LazyLock<GaugeVec> = LazyLock::new(|| {
    registered(GaugeVec::new(
        Opts::new(
            "tessera_worker_samples_per_second",
            "Training samples per second over the last reported step",
        ),
        &["program"],
    ))
});

/// Always 1; its labels say which backend and device this worker trains on.
pub static INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new("tessera_worker_info", "Worker build and device; always 1"),
        &["backend", "device", "version"],
    ))
});

/// Registered datasets' files served from the local cache (`hit`) or fetched (`miss`).
pub static SHARD_CACHE: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    registered(prometheus::IntCounterVec::new(
        Opts::new(
            "tessera_worker_dataset_files_total",
            "Registered datasets' files a trial needed, by whether the local cache had them",
        ),
        &["result"],
    ))
});

/// Copies of data-parallel checkpoints written beside the sweep's results, by outcome
/// (`ok`, `failed`: training goes on, the copy is older).
pub static CHECKPOINT_COPIES: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    registered(prometheus::IntCounterVec::new(
        Opts::new(
            "tessera_worker_checkpoint_copies_total",
            "Data-parallel checkpoints copied beside the sweep's results, by outcome",
        ),
        &["result"],
    ))
});
