//! Tessera's pure core.
//!
//! It owns the meaning of a sweep: the YAML schema and its validation ([`spec`]), search
//! spaces ([`space`]), the [`Searcher`](searcher::Searcher) trait with its grid and random
//! implementations, early-stopping rules ([`stopping`]), and the contract with training
//! code ([`program`]).
//!
//! It must never do I/O, spawn threads, use async, or link Burn: everything here is a
//! plain function or state machine that a unit test drives directly. `cargo tree -p
//! tessera-core` shows it.

pub mod fractal;
pub mod fractal_sweep;
pub mod gp;
pub mod linalg;
pub mod locate;
pub mod metalic_sweep;
pub mod moo;
pub mod nas_sweep;
pub mod predictor;
pub mod program;
pub mod rng;
pub mod searcher;
pub mod shards;
pub mod space;
pub mod spec;
pub mod stopping;
pub mod trial;

pub use searcher::{Ask, ReplayEvent, Searcher, searcher_for};
pub use space::{Domain, ParamValue, Params, SearchSpace};
pub use spec::{SpecError, SweepSpec, parse_sweep};
pub use trial::{Decision, TrialId, TrialOutcome, TrialRequest, TrialStatus};
