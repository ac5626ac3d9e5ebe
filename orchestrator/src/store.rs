//! The result store: trials and metrics as Parquet parts in a run directory.
//!
//! ```text
//! DIR/sweep.yaml                 the spec as submitted
//! DIR/journal.jsonl              the journal (see `journal`)
//! DIR/trials/part-000001.parquet one row per finished trial
//! DIR/metrics/part-000001.parquet one row per (trial, attempt, step, metric)
//! ```
//!
//! Each part is written to a hidden temporary file, fsynced and renamed into place: a
//! reader never sees half a file. Every part of a table has the same schema, so
//! pandas/pyarrow, polars and DuckDB read each folder as one dataset.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tessera_core::space::{ParamValue, ValueKind};
use tessera_core::trial::{TrialId, TrialOutcome, TrialStatus};
use tessera_core::{Params, SearchSpace};

/// Errors writing or reading results.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File-system failure.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Parquet encoding or decoding failure.
    #[error("{path}: {message}")]
    Parquet {
        /// The file or folder.
        path: PathBuf,
        /// The polars message.
        message: String,
    },
}

/// One row of the trials table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRow {
    /// Trial number.
    pub trial_id: TrialId,
    /// `finished`, `stopped` or `failed`.
    pub status: String,
    /// The attempt this row records (1 = first try).
    pub attempt: u32,
    /// Worker that ran it.
    pub worker: String,
    /// Trial seed.
    pub seed: u64,
    /// Start of the recorded attempt, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// End, ms since the Unix epoch.
    pub finished_at_ms: i64,
    /// Steps reported.
    pub steps: u64,
    /// Objective's last reported value.
    pub objective: Option<f64>,
    /// Error of the last attempt, for failed trials.
    pub error: Option<String>,
    /// Hyperparameters.
    pub params: Params,
}

impl TrialRow {
    /// What the searcher was told when this trial ended.
    pub fn outcome(&self) -> TrialOutcome {
        TrialOutcome {
            trial_id: self.trial_id,
            status: match self.status.as_str() {
                "finished" => TrialStatus::Finished,
                "stopped" => TrialStatus::Stopped,
                _ => TrialStatus::Failed,
            },
            objective: self.objective,
            steps: self.steps,
        }
    }
}

/// One row of the metrics table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// Trial number.
    pub trial_id: TrialId,
    /// Attempt.
    pub attempt: u32,
    /// Step (epoch).
    pub step: u64,
    /// Metric name.
    pub name: String,
    /// Value.
    pub value: f64,
    /// When it was reported, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Table folder names.
pub const TRIALS: &str = "trials";
/// Metrics folder name.
pub const METRICS: &str = "metrics";

fn part_name(part: u64) -> String {
    format!("part-{part:06}.parquet")
}

fn parse_part(name: &str) -> Option<u64> {
    name.strip_prefix("part-")?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn pq(path: &Path) -> impl FnOnce(PolarsError) -> StoreError + '_ {
    move |e| StoreError::Parquet {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn datetime(name: &str, ms: Vec<i64>) -> Column {
    Series::new(name.into(), ms)
        .into_datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC))
        .into()
}

/// A run directory's Parquet tables.
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
    space: SearchSpace,
    objective: String,
}

impl RunStore {
    /// The store of the run in `dir` for a sweep over `space` whose objective metric is
    /// `objective` (the objective column is named after it).
    pub fn new(dir: &Path, space: SearchSpace, objective: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            space,
            objective: objective.to_owned(),
        }
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the table folders and removes what a crash may have left behind: temporary
    /// files and parts the journal never acknowledged (their trials are rewritten).
    pub fn prepare(
        &self,
        acknowledged: &std::collections::BTreeSet<u64>,
    ) -> Result<(), StoreError> {
        for table in [TRIALS, METRICS] {
            let folder = self.dir.join(table);
            fs::create_dir_all(&folder).map_err(io(&folder))?;
            for entry in fs::read_dir(&folder).map_err(io(&folder))? {
                let entry = entry.map_err(io(&folder))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let stale = name.starts_with('.')
                    || parse_part(&name).is_some_and(|p| !acknowledged.contains(&p));
                if stale {
                    fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
                }
            }
        }
        Ok(())
    }

    /// The trials table of `rows` as a data frame.
    pub fn trials_frame(&self, rows: &[TrialRow]) -> PolarsResult<DataFrame> {
        let mut cols: Vec<Column> = vec![
            Column::new(
                "trial_id".into(),
                rows.iter().map(|r| r.trial_id).collect::<Vec<u64>>(),
            ),
            Column::new(
                "status".into(),
                rows.iter()
                    .map(|r| r.status.as_str())
                    .collect::<Vec<&str>>(),
            ),
            Column::new(
                "attempt".into(),
                rows.iter().map(|r| r.attempt).collect::<Vec<u32>>(),
            ),
            Column::new(
                "worker".into(),
                rows.iter()
                    .map(|r| r.worker.as_str())
                    .collect::<Vec<&str>>(),
            ),
            Column::new(
                "seed".into(),
                rows.iter().map(|r| r.seed).collect::<Vec<u64>>(),
            ),
            datetime("started_at", rows.iter().map(|r| r.started_at_ms).collect()),
            datetime(
                "finished_at",
                rows.iter().map(|r| r.finished_at_ms).collect(),
            ),
            Column::new(
                "duration_s".into(),
                rows.iter()
                    .map(|r| (r.finished_at_ms - r.started_at_ms) as f64 / 1000.0)
                    .collect::<Vec<f64>>(),
            ),
            Column::new(
                "steps".into(),
                rows.iter().map(|r| r.steps).collect::<Vec<u64>>(),
            ),
            Column::new(
                self.objective.as_str().into(),
                rows.iter()
                    .map(|r| r.objective)
                    .collect::<Vec<Option<f64>>>(),
            ),
            Column::new(
                "error".into(),
                rows.iter()
                    .map(|r| r.error.as_deref())
                    .collect::<Vec<Option<&str>>>(),
            ),
        ];
        for (name, domain) in &self.space.params {
            let values = rows.iter().map(|r| r.params.get(name));
            let col = match domain.value_kind() {
                ValueKind::Bool => Column::new(
                    name.into(),
                    values
                        .map(|v| v.and_then(ParamValue::as_bool))
                        .collect::<Vec<_>>(),
                ),
                ValueKind::Int => Column::new(
                    name.into(),
                    values
                        .map(|v| v.and_then(ParamValue::as_i64))
                        .collect::<Vec<_>>(),
                ),
                ValueKind::Float => Column::new(
                    name.into(),
                    values
                        .map(|v| v.and_then(ParamValue::as_f64))
                        .collect::<Vec<_>>(),
                ),
                ValueKind::Str => Column::new(
                    name.into(),
                    values
                        .map(|v| v.map(|v| v.to_string()))
                        .collect::<Vec<Option<String>>>(),
                ),
            };
            cols.push(col);
        }
        DataFrame::new(rows.len(), cols)
    }

    /// The metrics table of `rows` as a data frame.
    pub fn metrics_frame(rows: &[MetricRow]) -> PolarsResult<DataFrame> {
        DataFrame::new(
            rows.len(),
            vec![
                Column::new(
                    "trial_id".into(),
                    rows.iter().map(|r| r.trial_id).collect::<Vec<u64>>(),
                ),
                Column::new(
                    "attempt".into(),
                    rows.iter().map(|r| r.attempt).collect::<Vec<u32>>(),
                ),
                Column::new(
                    "step".into(),
                    rows.iter().map(|r| r.step).collect::<Vec<u64>>(),
                ),
                Column::new(
                    "metric".into(),
                    rows.iter().map(|r| r.name.as_str()).collect::<Vec<&str>>(),
                ),
                Column::new(
                    "value".into(),
                    rows.iter().map(|r| r.value).collect::<Vec<f64>>(),
                ),
                datetime("timestamp", rows.iter().map(|r| r.at_ms).collect()),
            ],
        )
    }

    /// Writes part `part` of both tables, each atomically (trials last, so a visible
    /// trials part implies its metrics part is visible too).
    pub fn write_part(
        &self,
        part: u64,
        trials: &[TrialRow],
        metrics: &[MetricRow],
    ) -> Result<(), StoreError> {
        let mut m = Self::metrics_frame(metrics).map_err(pq(&self.dir))?;
        write_atomic(&self.dir.join(METRICS).join(part_name(part)), &mut m)?;
        let mut t = self.trials_frame(trials).map_err(pq(&self.dir))?;
        write_atomic(&self.dir.join(TRIALS).join(part_name(part)), &mut t)?;
        Ok(())
    }
}

/// Writes `df` to `path` through a temporary file, fsync and rename.
pub fn write_atomic(path: &Path, df: &mut DataFrame) -> Result<(), StoreError> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let tmp = folder.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let file = File::create(&tmp).map_err(io(&tmp))?;
    ParquetWriter::new(&file)
        .with_compression(ParquetCompression::Zstd(None))
        .with_statistics(StatisticsOptions::default())
        .finish(df)
        .map_err(pq(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Ok(dir) = File::open(folder) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Every part file of `table` in `dir`, in part order.
pub fn part_files(dir: &Path, table: &str) -> Result<Vec<PathBuf>, StoreError> {
    let folder = dir.join(table);
    let mut parts: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(&folder).map_err(io(&folder))? {
        let entry = entry.map_err(io(&folder))?;
        if let Some(p) = parse_part(&entry.file_name().to_string_lossy()) {
            parts.push((p, entry.path()));
        }
    }
    parts.sort();
    Ok(parts.into_iter().map(|(_, p)| p).collect())
}

/// Reads a whole table of a run directory (every part) into one data frame.
pub fn read_table(dir: &Path, table: &str) -> Result<DataFrame, StoreError> {
    let files = part_files(dir, table)?;
    let mut frames = Vec::with_capacity(files.len());
    for f in &files {
        let file = File::open(f).map_err(io(f))?;
        frames.push(ParquetReader::new(file).finish().map_err(pq(f))?);
    }
    let mut iter = frames.into_iter();
    let Some(mut df) = iter.next() else {
        return Ok(DataFrame::empty());
    };
    for next in iter {
        df.vstack_mut(&next).map_err(pq(&dir.join(table)))?;
    }
    Ok(df)
}
