//! The training programs Tessera's workers run, written once against Burn's tensor API.
//!
//! Everything here is backend-agnostic: a program takes a Burn [`Device`](burn::tensor::Device)
//! (Flex, the pure-Rust CPU backend, by default) and never names a backend type. It owns
//! models, trainers and dataset loading from local files; it must never talk to the
//! coordinator, the network or the results store: the worker wraps these functions.
//!
//! Programs are reproducible: weights, data order and dropout masks come from the trial's
//! seed through Tessera's own generator, never from the backend's global RNG, so trials
//! that run concurrently in one process do not disturb each other's streams.

pub mod data_parallel;
pub mod dataset;
pub mod fractal;
pub mod mlp;
pub mod optim;
pub mod pinn;
pub mod supernet;

pub use dataset::{Dataset, DatasetError, Split};
pub use mlp::{EpochMetrics, MlpConfig, OptimizerKind, TrainError, train_mlp};
