//! The result store: trials and metrics as Parquet parts, in the run directory or in
//! an S3 prefix.
//!
//! ```text
//! DIR/sweep.yaml                   the spec as submitted        (always local)
//! DIR/journal.jsonl                the journal (see `journal`)  (always local)
//! DIR/results.location             where the Parquet is, if not in DIR
//! ROOT/_tessera.json               schema version and the sweep's identity
//! ROOT/trials/part-000001.parquet  one row per finished trial
//! ROOT/metrics/part-000001.parquet one row per (trial, attempt, step, metric)
//! ```
//!
//! ROOT is DIR itself, or `s3://BUCKET/PREFIX/sweep=<id>` (Hive-style, so a whole prefix
//! reads as one dataset with a `sweep` column). Each part is written atomically (see
//! [`crate::lake`]): a reader never sees half a file. Every part of a table has the same
//! schema, so pandas/pyarrow, polars and DuckDB read each folder as one dataset.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::lake::{LakeError, Location, ObjectStore};

use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tessera_core::space::{ParamValue, ValueKind};
use tessera_core::trial::{Artifact, TrialId, TrialOutcome, TrialStatus};
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
    /// The object store failed.
    #[error(transparent)]
    Lake(#[from] LakeError),
}

/// Writes `df` as the one part of `table` in `store` (a sweep kind's derived table,
/// rewritten whole if the sweep completes again after a resume).
pub(crate) async fn put_table(
    store: &ObjectStore,
    table: &str,
    mut df: DataFrame,
) -> Result<(), StoreError> {
    let bytes = parquet_bytes(&mut df).map_err(|e| StoreError::Parquet {
        path: table.into(),
        message: e.to_string(),
    })?;
    store
        .put(&format!("{table}/{}", part_name(1)), bytes)
        .await
        .map_err(StoreError::from)
}

/// Copies the local files `files` into `store` under `folder/`, by file name.
pub(crate) async fn put_files(
    store: &ObjectStore,
    folder: &str,
    files: &[PathBuf],
) -> Result<(), StoreError> {
    for path in files {
        let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("figure.png");
        store.put(&format!("{folder}/{name}"), bytes).await?;
    }
    Ok(())
}

/// Writes `value` as pretty JSON at `path` in `store`.
pub(crate) async fn put_json<T: serde::Serialize>(
    store: &ObjectStore,
    path: &str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    Ok(store.put(path, bytes).await?)
}

/// The JSON at `path` in `store`, if it is there and parses.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    store: &ObjectStore,
    path: &str,
) -> Option<T> {
    serde_json::from_slice(&store.get(path).await.ok()?).ok()
}

/// The version of the tables' schema, written to `_tessera.json` beside them. It changes
/// only when a column is renamed, retyped or removed (added columns keep it).
pub const SCHEMA_VERSION: u32 = 1;
/// The metadata object beside the tables.
pub const META_FILE: &str = "_tessera.json";
/// The file in a run directory naming where its Parquet tables are, if elsewhere.
pub const RESULTS_FILE: &str = "results.location";

/// Where the Parquet tables of the run in `dir` are.
pub fn results_of(dir: &Path) -> Result<Location, StoreError> {
    match fs::read_to_string(dir.join(RESULTS_FILE)) {
        Ok(s) => Ok(Location::parse(s.trim())?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Location::Local(dir.to_owned())),
        Err(e) => Err(StoreError::Io {
            path: dir.join(RESULTS_FILE),
            source: e,
        }),
    }
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
            artifacts: Vec::new(),
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

pub(crate) fn part_name(part: u64) -> String {
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

/// A run's Parquet tables.
#[derive(Debug, Clone)]
pub struct RunStore {
    store: ObjectStore,
    space: SearchSpace,
    objective: String,
    tables: Vec<String>,
}

impl RunStore {
    /// The tables in `store` of a sweep over `space` whose objective metric is
    /// `objective` (the objective column is named after it).
    pub fn new(store: ObjectStore, space: SearchSpace, objective: &str) -> Self {
        Self {
            store,
            space,
            objective: objective.to_owned(),
            tables: Vec::new(),
        }
    }

    /// The same store with the sweep kind's own tables (e.g. `raster`) besides trials
    /// and metrics.
    pub fn with_tables(mut self, tables: &[&str]) -> Self {
        self.tables = tables.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    /// The object store underneath.
    pub fn objects(&self) -> &ObjectStore {
        &self.store
    }

    /// Where the tables are.
    pub fn location(&self) -> Location {
        self.store.location()
    }

    /// Creates the table folders, writes the metadata and removes what a crash may have
    /// left behind: temporary files and parts the journal never acknowledged (their trials
    /// are rewritten).
    pub async fn prepare(
        &self,
        acknowledged: &std::collections::BTreeSet<u64>,
        meta: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let tables = [TRIALS, METRICS]
            .into_iter()
            .chain(self.tables.iter().map(String::as_str));
        for table in tables {
            if let ObjectStore::Local(root) = &self.store {
                let folder = root.join(table);
                fs::create_dir_all(&folder).map_err(io(&folder))?;
            }
            self.store.clean_temporaries(table).await?;
            for key in self.store.list(table).await? {
                let name = key.rsplit('/').next().unwrap_or(&key);
                if parse_part(name).is_some_and(|p| !acknowledged.contains(&p)) {
                    self.store.delete(&key).await?;
                }
            }
        }
        let mut meta = meta.clone();
        meta["schema_version"] = SCHEMA_VERSION.into();
        self.store
            .put(
                META_FILE,
                serde_json::to_vec_pretty(&meta).unwrap_or_default(),
            )
            .await?;
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

    /// The rows of `artifacts` (all bound for one table) as a data frame, with a
    /// `trial_id` column first. Every artifact must have the first one's columns.
    pub fn artifact_frame(artifacts: &[(TrialId, &Artifact)]) -> PolarsResult<DataFrame> {
        use tessera_core::trial::{ArtifactColumn, ArtifactColumn as A};
        let Some((_, first)) = artifacts.first() else {
            return Ok(DataFrame::empty());
        };
        let ids: Vec<u64> = artifacts
            .iter()
            .flat_map(|(id, a)| std::iter::repeat_n(*id, a.rows()))
            .collect();
        let mut cols = vec![Column::new("trial_id".into(), ids)];
        for (name, kind) in &first.columns {
            let missing = || {
                PolarsError::ComputeError(
                    format!("table `{}`: a trial lacks column `{name}`", first.table).into(),
                )
            };
            // Every trial's values of column `name`, if each has it with this type.
            fn gather<'a, T: Clone + 'a>(
                artifacts: &[(TrialId, &'a Artifact)],
                name: &str,
                pick: impl Fn(&'a ArtifactColumn) -> Option<&'a [T]>,
            ) -> Option<Vec<T>> {
                let mut v = Vec::new();
                for (_, a) in artifacts {
                    v.extend_from_slice(pick(a.columns.get(name)?)?);
                }
                Some(v)
            }
            let col = match kind {
                A::F64(_) => gather(artifacts, name, |c| match c {
                    A::F64(x) => Some(x.as_slice()),
                    _ => None,
                })
                .map(|v| Column::new(name.into(), v)),
                A::I64(_) => gather(artifacts, name, |c| match c {
                    A::I64(x) => Some(x.as_slice()),
                    _ => None,
                })
                .map(|v| Column::new(name.into(), v)),
                A::Bool(_) => gather(artifacts, name, |c| match c {
                    A::Bool(x) => Some(x.as_slice()),
                    _ => None,
                })
                .map(|v| Column::new(name.into(), v)),
                A::Str(_) => gather(artifacts, name, |c| match c {
                    A::Str(x) => Some(x.as_slice()),
                    _ => None,
                })
                .map(|v| Column::new(name.into(), v)),
            }
            .ok_or_else(missing)?;
            cols.push(col);
        }
        DataFrame::new(artifacts.iter().map(|(_, a)| a.rows()).sum(), cols)
    }

    /// Writes part `part` of every table, each atomically: the kind's own tables and
    /// metrics first, trials last, so a visible trials part implies the rest of the part
    /// is visible too.
    pub async fn write_part(
        &self,
        part: u64,
        trials: &[TrialRow],
        metrics: &[MetricRow],
        tables: &[(TrialId, Artifact)],
    ) -> Result<(), StoreError> {
        let here = PathBuf::from(self.store.location().to_string());
        let mut names: Vec<&str> = tables.iter().map(|(_, a)| a.table.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let rows: Vec<(TrialId, &Artifact)> = tables
                .iter()
                .filter(|(_, a)| a.table == name)
                .map(|(id, a)| (*id, a))
                .collect();
            let mut df = Self::artifact_frame(&rows).map_err(pq(&here))?;
            let bytes = parquet_bytes(&mut df).map_err(pq(&here))?;
            self.store
                .put(&format!("{name}/{}", part_name(part)), bytes)
                .await?;
        }
        let mut m = Self::metrics_frame(metrics).map_err(pq(&here))?;
        let m = parquet_bytes(&mut m).map_err(pq(&here))?;
        self.store
            .put(&format!("{METRICS}/{}", part_name(part)), m)
            .await?;
        let mut t = self.trials_frame(trials).map_err(pq(&here))?;
        let t = parquet_bytes(&mut t).map_err(pq(&here))?;
        self.store
            .put(&format!("{TRIALS}/{}", part_name(part)), t)
            .await?;
        Ok(())
    }
}

/// `df` as Parquet bytes (zstd, with statistics).
pub fn parquet_bytes(df: &mut DataFrame) -> PolarsResult<Vec<u8>> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .with_compression(ParquetCompression::Zstd(None))
        .with_statistics(StatisticsOptions::default())
        .finish(df)?;
    Ok(buf)
}

/// Reads a whole table (every part, in part order) from `store`.
pub async fn read_table_from(store: &ObjectStore, table: &str) -> Result<DataFrame, StoreError> {
    if let ObjectStore::Local(dir) = store {
        return read_table(dir, table);
    }
    let here = PathBuf::from(store.location().join(table).to_string());
    let mut keys: Vec<(u64, String)> = store
        .list(table)
        .await?
        .into_iter()
        .filter_map(|k| parse_part(k.rsplit('/').next().unwrap_or(&k)).map(|p| (p, k)))
        .collect();
    keys.sort();
    let mut df: Option<DataFrame> = None;
    for (_, key) in keys {
        let bytes = store.get(&key).await?;
        let part = ParquetReader::new(std::io::Cursor::new(bytes))
            .finish()
            .map_err(pq(&here))?;
        match df.as_mut() {
            None => df = Some(part),
            Some(d) => {
                d.vstack_mut(&part).map_err(pq(&here))?;
            }
        }
    }
    Ok(df.unwrap_or_else(DataFrame::empty))
}

/// Reads a whole table of the run in `dir`, wherever its Parquet is.
pub async fn read_results(dir: &Path, table: &str) -> Result<DataFrame, StoreError> {
    let store = ObjectStore::open(&results_of(dir)?).await?;
    read_table_from(&store, table).await
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
