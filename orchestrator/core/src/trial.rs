//! What a trial is, what it reports and how it ends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::space::Params;

/// A trial's number within its sweep: 0, 1, 2, … in the order the searcher asked for them.
pub type TrialId = u64;

/// A trial the searcher wants run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRequest {
    /// The trial's number.
    pub trial_id: TrialId,
    /// Its hyperparameters (fixed ones included).
    pub params: Params,
    /// Its seed: model initialisation, data order and dropout derive from it. Every
    /// attempt of the trial uses the same seed.
    pub seed: u64,
}

/// One attempt of a trial, as sent to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialAssignment {
    /// The trial.
    pub request: TrialRequest,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    /// The program to run.
    pub program: String,
    /// The dataset, resolved to a path the worker can read.
    pub dataset: Option<DatasetRef>,
    /// This dispatch's unique token: reports and the outcome carry it back, so that a
    /// result from a dispatch the coordinator gave up on (a lost worker, a restart) is
    /// recognised as late and never recorded twice.
    pub lease: u64,
    /// Whether the sweep decides after each report (early stopping is on); if not, the
    /// worker reports only at the end, with the attempt's whole history.
    pub wants_decisions: bool,
    /// Seconds the attempt may run before it is abandoned as failed.
    pub time_limit_s: Option<f64>,
    /// Rows of earlier trials this one needs (a `nas` evaluation trial gets the trained
    /// super-network's weights).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Artifact>,
    /// Where a data-parallel trial's replica 0 keeps a copy of the trial's checkpoint
    /// (a folder or `s3://…` beside the sweep's results), for a retry on workers that
    /// hold none.
    #[serde(default)]
    pub checkpoints: Option<String>,
    /// This dispatch's place in a data-parallel attempt (`resources.workers` > 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<Box<ReplicaRef>>,
}

/// One replica of a data-parallel attempt: the attempt runs on `peers.len()` workers at
/// once, replica `rank` holding shards `rank`, `rank + K`, … of the training set. Replica
/// 0 reports and ends the attempt; the others only train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRef {
    /// The attempt's own dispatch token (replica 0's): the ring's session.
    pub attempt_lease: u64,
    /// This replica's rank, 0..K.
    pub rank: u32,
    /// Every replica's ring address (`HOST:PORT`), by rank.
    pub peers: Vec<String>,
    /// Every replica's worker name, by rank (recorded with the trial).
    pub workers: Vec<String>,
    /// Names the trial across its attempts (its sweep and trial id): the key of the
    /// checkpoints its replicas keep, so a retry resumes from them.
    pub trial_key: String,
}

/// The table of data-parallel trials' replicas: rank, worker, shards, steps, bytes.
pub const REPLICAS_TABLE: &str = "replicas";

/// Bits of a dispatch token that number the attempt; the bits above carry the replica
/// rank, so every replica of a data-parallel attempt has its own token.
const LEASE_BITS: u32 = 48;

/// The attempt token after `previous`: attempt tokens keep to the low [`LEASE_BITS`]
/// bits, so replica tokens never collide with them.
pub fn next_attempt_lease(previous: u64) -> u64 {
    previous.wrapping_add(1) & ((1 << LEASE_BITS) - 1)
}

/// The dispatch token of replica `rank` of the attempt dispatched as `lease` (rank 0
/// keeps the attempt's own token).
pub fn replica_lease(lease: u64, rank: u32) -> u64 {
    lease ^ (u64::from(rank) << LEASE_BITS)
}

/// One report of a running attempt, kept by the worker and sent with the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Step (an epoch, usually).
    pub step: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Values.
    pub metrics: MetricValues,
}

/// A dataset as a worker sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRef {
    /// Absolute or working-directory-relative path.
    pub path: String,
    /// Share of rows held out for validation.
    pub validation_fraction: f64,
    /// Seed of the split.
    pub split_seed: u64,
    /// Fixed shards the training rows are cut into for data-parallel training.
    #[serde(default = "one")]
    pub shards: u32,
    /// Whether `path` is a registered dataset's folder (local or `s3://`) holding a
    /// manifest and its shards, rather than one Parquet file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub registered: bool,
}

fn one() -> u32 {
    1
}

/// Metric values a trial reports at one step (an epoch, usually).
pub type MetricValues = BTreeMap<String, f64>;

/// What a scheduler tells a running trial after a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Keep training.
    Continue,
    /// Stop now; the trial is recorded as stopped early with what it reported so far.
    Stop,
}

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Ran to the end.
    Finished,
    /// Stopped by the early-stopping rule.
    Stopped,
    /// Errored or panicked on its last allowed attempt.
    Failed,
}

impl TrialStatus {
    /// The status as written in the results tables.
    pub fn as_str(&self) -> &'static str {
        match self {
            TrialStatus::Finished => "finished",
            TrialStatus::Stopped => "stopped",
            TrialStatus::Failed => "failed",
        }
    }
}

/// What the searcher learns when a trial ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialOutcome {
    /// The trial.
    pub trial_id: TrialId,
    /// How it ended.
    pub status: TrialStatus,
    /// The objective's last reported value (`None` if never reported).
    pub objective: Option<f64>,
    /// Steps reported.
    pub steps: u64,
    /// Rows the trial produced besides its metrics (see [`Artifact`]).
    pub artifacts: Vec<Artifact>,
}

/// One column of an [`Artifact`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactColumn {
    /// Floats (finite: JSON has no NaN).
    F64(Vec<f64>),
    /// Integers.
    I64(Vec<i64>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Text (a hardware label, say).
    Str(Vec<String>),
}

impl ArtifactColumn {
    /// Rows in the column.
    pub fn len(&self) -> usize {
        match self {
            ArtifactColumn::F64(v) => v.len(),
            ArtifactColumn::I64(v) => v.len(),
            ArtifactColumn::Bool(v) => v.len(),
            ArtifactColumn::Str(v) => v.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rows a trial produces besides its metrics (a fractal tile's raster, for one): named
/// columns of equal length, bound for the results table `table`. Workers send them with
/// the attempt's end; the sweep journals them, tells them to the searcher and writes
/// them as their own Parquet dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// The results table the rows belong to.
    pub table: String,
    /// Columns by name, all of the same length.
    pub columns: BTreeMap<String, ArtifactColumn>,
}

impl Artifact {
    /// Rows (the length of the first column).
    pub fn rows(&self) -> usize {
        self.columns.values().next().map_or(0, ArtifactColumn::len)
    }

    /// The float column `name`, if there is one.
    pub fn f64s(&self, name: &str) -> Option<&[f64]> {
        match self.columns.get(name) {
            Some(ArtifactColumn::F64(v)) => Some(v),
            _ => None,
        }
    }

    /// The integer column `name`, if there is one.
    pub fn i64s(&self, name: &str) -> Option<&[i64]> {
        match self.columns.get(name) {
            Some(ArtifactColumn::I64(v)) => Some(v),
            _ => None,
        }
    }
}
