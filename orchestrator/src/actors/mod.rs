//! The coordinator's actors: thin shells around the core, state in `State`, messages in
//! an enum, the work in plain functions.
//!
//! ```text
//!   run_sweep (caller, awaits the result)
//!    ├── SweepActor ──────── searcher + early-stopping rule + journal
//!    │     │ Submit                 ▲ Report (RPC → Decision), AttemptEnded, Flushed
//!    │     ▼                        │
//!    ├── SchedulerActor ──── queue + worker slots ── Run ──▶ WorkerActor × N
//!    │                                                        (trials on blocking threads)
//!    └── WriterActor ─────── buffers rows → Parquet parts ── Flushed ──▶ SweepActor
//! ```

pub mod scheduler;
pub mod sweep;
pub mod worker;
pub mod writer;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
