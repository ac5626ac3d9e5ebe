//! Cluster mode: a long-lived coordinator (`tessera serve`), worker nodes (`tessera
//! worker`) and clients (`tessera submit|status|cancel|report`) over ractor_cluster.
//!
//! ```text
//!  client ──Request──▶ ┌ Gateway (pg group tessera.coordinator) ─────────────┐
//!         ◀──Answer──  │  sweeps: SweepActor + WriterActor each (as embedded)  │
//!                      │  SchedulerActor: one fair queue, every worker's slots │
//!  worker ──Hello, Heartbeat, Report, Ended, Freed──▶ Gateway ──▶ sweep/scheduler
//!  agent  ◀──Welcome, Run, Decision, Cancel, Rejoin── scheduler / Gateway
//! ```
//!
//! Messages are JSON in a versioned envelope ([`wire`]); nodes authenticate with the
//! shared secret (ractor_cluster's challenge–response on the cookie), optionally over
//! mutual TLS ([`node`]). Every dispatch carries a lease: results of dispatches the
//! coordinator gave up on (lost worker, restart) are recognised and never recorded twice.

pub mod agent;
pub mod client;
pub mod node;
pub mod serve;
pub mod wire;

/// Errors of cluster mode.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Bad settings: the message says what to change.
    #[error("{0}")]
    Usage(String),
    /// A peer could not be reached or refused this node.
    #[error("{0}")]
    Unreachable(String),
    /// Local I/O or actor failure.
    #[error("{0}")]
    Io(String),
}
