//! Tessera's coordinator: the sweep, scheduler, writer and worker actors (ractor on
//! tokio), the journal that makes sweeps crash-safe, the Parquet result store and the
//! report.
//!
//! It decides nothing itself: what to try and whether to stop come from the pure core
//! (`tessera-core`); training comes from a [`TrialExecutor`](tessera_core::program::TrialExecutor)
//! (the worker side). It must never link Burn: the `tessera` binary links the Burn worker
//! only with the `worker` feature, for embedded runs.

pub mod actors;
pub mod cluster;
pub mod datasets;
pub mod fault;
pub mod fractal;
pub mod journal;
pub mod lake;
pub mod metalic;
pub mod metrics;
pub mod nas;
pub mod plot;
mod process_metrics;
pub mod report;
pub mod run;
pub mod store;

pub use actors::sweep::{Progress, SweepResult};
pub use run::{RunError, RunOptions, run_sweep};
