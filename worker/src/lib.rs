//! Tessera's worker side: the [`TrialExecutor`](tessera_core::program::TrialExecutor)
//! that runs the training programs of `tessera-experiments` on a Burn device.
//!
//! It owns Burn and the choice of backend (Flex, the pure-Rust CPU backend, by default);
//! the coordinator links it only for embedded runs and talks to it through the core's
//! `TrialExecutor` trait. It must never write results or journal anything: it reports
//! metrics through the reporter it is given and returns.

pub mod collective;
pub mod datasets;
pub mod device;
mod executor;
pub mod metrics;
mod params;
mod programs;

pub use executor::BurnExecutor;
pub use programs::program_infos;
