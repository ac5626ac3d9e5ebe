//! The coordinator's Prometheus metrics, declared once, and the `/metrics` endpoint.
//!
//! Names follow Prometheus conventions: `tessera_` prefix, `_total` counters, `_seconds`
//! histograms in base units. Labels have bounded cardinality: `sweep`, `worker`,
//! `status`/`state`, never a trial id. The worker side declares its own metrics in the
//! same default registry (`tessera_worker::metrics`); one endpoint serves both in
//! embedded mode.

use std::net::SocketAddr;
use std::sync::LazyLock;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Registers `metric` in the default registry and returns it. Metric definitions are
/// constants: an invalid or twice-registered one is a programming error.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    metric: prometheus::Result<C>,
) -> C {
    let metric = metric.expect("valid metric");
    prometheus::register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    registered(HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets),
        labels,
    ))
}

fn fast_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(1e-6, 4.0, 12).expect("valid buckets")
}

fn slow_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(1e-3, 3.0, 14).expect("valid buckets")
}

/// Trials that ended, by sweep and status (`finished`, `stopped`, `failed`).
pub static TRIALS_COMPLETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "tessera_trials_completed_total",
        "Trials that ended and were recorded, by status",
        &["sweep", "status"],
    )
});
/// Trials by state now (`pending`, `running`, `finished`, `stopped`, `failed`).
pub static TRIALS_BY_STATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "tessera_trials",
        "Trials of a sweep by state",
        &["sweep", "state"],
    )
});
/// Failed attempts that were retried.
pub static ATTEMPTS_RETRIED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "tessera_trial_attempts_retried_total",
        "Trial attempts that failed and were retried",
        &["sweep"],
    )
});
/// Trial wall time, first attempt start to end.
pub static TRIAL_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "tessera_trial_duration_seconds",
        "Wall time of a trial's recorded attempt",
        &["sweep"],
        slow_buckets(),
    )
});
/// Best objective so far.
pub static BEST_OBJECTIVE: LazyLock<GaugeVec> = LazyLock::new(|| {
    registered(GaugeVec::new(
        Opts::new(
            "tessera_best_objective",
            "Best objective value recorded so far",
        ),
        &["sweep", "metric"],
    ))
});
/// Time the searcher takes to answer an ask.
pub static SEARCHER_ASK: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "tessera_searcher_ask_seconds",
        "Time the searcher takes to propose a trial",
        &["sweep"],
        fast_buckets(),
    )
});
/// Attempts waiting for a slot.
pub static QUEUE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tessera_queue_depth",
        "Trial attempts waiting for a worker slot",
    ))
});
/// Time from queueing an attempt to handing it to a worker.
pub static SCHEDULING_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "tessera_scheduling_latency_seconds",
        "Time from queueing a trial attempt to placing it on a worker",
        &[],
        fast_buckets(),
    )
});
/// Workers connected.
pub static WORKERS_CONNECTED: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tessera_workers_connected",
        "Workers connected to the coordinator",
    ))
});
/// Worker slots by state (`free`, `used`).
pub static SLOTS: LazyLock<IntGaugeVec> =
    LazyLock::new(|| gauge_vec("tessera_worker_slots", "Worker slots by state", &["state"]));
/// Heartbeats a worker missed (cluster mode; 0 in embedded mode).
pub static HEARTBEAT_MISSES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "tessera_heartbeat_misses_total",
        "Heartbeats a worker missed",
        &["worker"],
    )
});
/// Journal operations' latency (`append`, `sync`).
pub static JOURNAL_WRITE: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "tessera_journal_write_seconds",
        "Journal append and fsync latency",
        &["op"],
        fast_buckets(),
    )
});
/// Parquet part write latency.
pub static PARQUET_WRITE: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "tessera_parquet_write_seconds",
        "Time to encode, fsync and publish one Parquet part (both tables)",
        &[],
        slow_buckets(),
    )
});
/// Rows written to Parquet, by table.
pub static ROWS_WRITTEN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "tessera_parquet_rows_written_total",
        "Rows written to Parquet, by table",
        &["table"],
    )
});
/// Trials running per worker.
pub static WORKER_TRIALS_RUNNING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "tessera_worker_trials_running",
        "Trial attempts running on a worker",
        &["worker"],
    )
});
/// Reports received from trials.
pub static REPORTS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(IntCounter::new(
        "tessera_trial_reports_total",
        "Metric reports received from running trials",
    ))
});

/// Which metrics a process exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A coordinator (`tessera serve`, or `tessera run`, whose workers are in-process).
    Coordinator,
    /// A worker node: its own trials and the process, no coordinator series.
    Worker,
}

/// Registers a worker's metrics and the process metrics.
pub fn init_worker() {
    LazyLock::force(&WORKER_TRIALS_RUNNING);
    crate::process_metrics::register();
}

/// Registers every coordinator metric (so each is exported from the start, at zero)
/// and the process metrics.
pub fn init() {
    LazyLock::force(&TRIALS_COMPLETED);
    LazyLock::force(&TRIALS_BY_STATE);
    LazyLock::force(&ATTEMPTS_RETRIED);
    LazyLock::force(&TRIAL_DURATION);
    LazyLock::force(&BEST_OBJECTIVE);
    LazyLock::force(&SEARCHER_ASK);
    LazyLock::force(&QUEUE_DEPTH);
    LazyLock::force(&SCHEDULING_LATENCY);
    LazyLock::force(&WORKERS_CONNECTED);
    LazyLock::force(&SLOTS);
    LazyLock::force(&HEARTBEAT_MISSES);
    LazyLock::force(&JOURNAL_WRITE);
    LazyLock::force(&PARQUET_WRITE);
    LazyLock::force(&ROWS_WRITTEN);
    LazyLock::force(&REPORTS);
    for t in [crate::store::TRIALS, crate::store::METRICS] {
        ROWS_WRITTEN.with_label_values(&[t]).inc_by(0);
    }
    SCHEDULING_LATENCY
        .with_label_values(&[] as &[&str])
        .observe(0.0);
    PARQUET_WRITE.with_label_values(&[] as &[&str]);
    for op in ["append", "sync"] {
        JOURNAL_WRITE.with_label_values(&[op]);
    }
    init_worker();
}

/// The text exposition of every registered metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// Why this process is not ready to work, or `None` when it is. `tessera run` is ready
/// from the start; `tessera serve` once it listens for nodes; `tessera worker` while a
/// coordinator has welcomed it (a worker that lost its coordinator is not ready).
static NOT_READY: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Marks the process ready (`None`) or not, with the reason `/readyz` gives.
pub fn set_not_ready(reason: Option<&str>) {
    if let Ok(mut r) = NOT_READY.lock() {
        *r = reason.map(str::to_owned);
    }
}

fn readiness() -> Option<String> {
    NOT_READY.lock().ok().and_then(|r| r.clone())
}

/// Serves `GET /metrics` (Prometheus text format), `GET /healthz` (liveness: the process
/// answers) and `GET /readyz` (200 when ready, 503 with the reason when not; see
/// [`set_not_ready`]) on `addr` until the runtime stops. Returns the bound address
/// (`addr` may use port 0).
pub async fn serve(addr: SocketAddr, role: Role) -> std::io::Result<SocketAddr> {
    match role {
        Role::Coordinator => init(),
        Role::Worker => init_worker(),
    }
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut len = 0;
                // Read until the end of the request head (or the buffer is full).
                while len < buf.len() {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..len]);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let (status, ctype, body) = match (head.starts_with("GET "), path.split('?').next())
                {
                    (true, Some("/metrics")) => (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        render(),
                    ),
                    (true, Some("/healthz")) => ("200 OK", "text/plain", "ok\n".to_owned()),
                    (true, Some("/readyz")) => match readiness() {
                        None => ("200 OK", "text/plain", "ready\n".to_owned()),
                        Some(why) => (
                            "503 Service Unavailable",
                            "text/plain",
                            format!("not ready: {why}\n"),
                        ),
                    },
                    (true, _) => (
                        "404 Not Found",
                        "text/plain",
                        "not found: try /metrics, /healthz or /readyz\n".to_owned(),
                    ),
                    _ => (
                        "405 Method Not Allowed",
                        "text/plain",
                        "only GET\n".to_owned(),
                    ),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(bound)
}
