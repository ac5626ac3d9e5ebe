//! Sweep specifications: the YAML a user writes, parsed into [`RawSweep`] (the file's
//! shape, `deny_unknown_fields`) and validated into [`SweepSpec`] (the domain type).
//!
//! Every error names the file, line and column and says what to do.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::locate::{PathStep, locate};
use crate::space::{Domain, ParamValue, Scale, SearchSpace};

/// The sweep-file version this build reads.
pub const SPEC_VERSION: u32 = 1;

/// The most trials one sweep may ask for.
pub const MAX_TRIALS: u64 = 10_000_000;

/// Column names of the trials table that hyperparameters may not take.
pub const RESERVED_COLUMNS: &[&str] = &[
    "trial_id",
    "status",
    "attempt",
    "worker",
    "seed",
    "started_at",
    "finished_at",
    "duration_s",
    "steps",
    "objective",
    "error",
    "sweep",
];

/// A sweep file that cannot be used, with where and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SpecError {
    /// The file the sweep came from.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if !self.hint.is_empty() {
            write!(f, "\n  help: {}", self.hint)?;
        }
        Ok(())
    }
}

/// The kinds of sweep. Each has its own searcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SweepKind {
    /// Every point of a grid over the space.
    Grid,
    /// Independent random draws from the space.
    Random,
    /// Fractal trainability tiles.
    Fractal,
    /// NAS sub-network search over a trained super-network.
    Nas,
    /// METALIC: a contextual GP bandit choosing a PINN's interface conditions.
    Metalic,
}

impl SweepKind {
    /// The kind's name as written in YAML.
    pub fn as_str(&self) -> &'static str {
        match self {
            SweepKind::Grid => "grid",
            SweepKind::Random => "random",
            SweepKind::Fractal => "fractal",
            SweepKind::Nas => "nas",
            SweepKind::Metalic => "metalic",
        }
    }
}

/// Whether an objective is to be made small or large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// Smaller is better.
    Minimize,
    /// Larger is better.
    Maximize,
}

impl Goal {
    /// `minimize` or `maximize`, as written in sweep files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Goal::Minimize => "minimize",
            Goal::Maximize => "maximize",
        }
    }

    /// Whether `a` is strictly better than `b` under this goal (NaN is never better).
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self {
            Goal::Minimize => a < b,
            Goal::Maximize => a > b,
        }
    }

    /// The value as a score where larger is better.
    pub fn score(&self, v: f64) -> f64 {
        match self {
            Goal::Minimize => -v,
            Goal::Maximize => v,
        }
    }
}

/// One search-space entry as written: a range, a choice or a fixed value.
///
/// Forms: `{ float: [low, high], scale: linear|log, grid: N }`,
/// `{ int: [low, high], scale: linear|log, grid: N }`, `{ choice: [a, b, …] }`, or a plain
/// scalar for a fixed value.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
#[allow(dead_code)]
enum ParamSchema {
    /// A real range.
    Float {
        /// `[low, high]`, inclusive.
        float: [f64; 2],
        /// Sampling scale (default linear).
        scale: Option<Scale>,
        /// Points along this axis in a grid sweep.
        grid: Option<u32>,
    },
    /// An integer range.
    Int {
        /// `[low, high]`, inclusive.
        int: [i64; 2],
        /// Sampling scale (default linear).
        scale: Option<Scale>,
        /// Points along this axis in a grid sweep (default: every integer).
        grid: Option<u32>,
    },
    /// A list of values.
    Choice {
        /// The values.
        choice: Vec<serde_json::Value>,
    },
    /// A fixed value: a number, a string or a boolean.
    Fixed(FixedValue),
}

/// A fixed hyperparameter value.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum FixedValue {
    /// A number.
    Number(f64),
    /// A string.
    Text(String),
    /// A boolean.
    Flag(bool),
}

fn space_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    <BTreeMap<String, ParamSchema>>::json_schema(generator)
}

/// A sweep file as written (version 1).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSweep {
    /// File format version: 1.
    pub version: u32,
    /// Sweep name: letters, digits, `-`, `_`, `.`; used in result paths.
    pub name: String,
    /// Sweep kind.
    pub kind: SweepKind,
    /// Seed for the searcher and every trial (a fresh one is drawn and recorded if absent).
    #[serde(default)]
    pub seed: Option<u64>,
    /// The training program workers run (`tessera programs` lists them; `fractal`
    /// sweeps run `fractal-tile` and may leave it out).
    #[serde(default)]
    pub program: Option<String>,
    /// The dataset the program trains on.
    #[serde(default)]
    pub dataset: Option<RawDataset>,
    /// Hyperparameters: ranges, choices and fixed values, by name.
    #[serde(default)]
    #[schemars(schema_with = "space_schema")]
    pub space: BTreeMap<String, serde_yaml::Value>,
    /// The metric to optimise (`fractal` sweeps: default `boundary_fraction`, maximize).
    #[serde(default)]
    pub objective: Option<RawObjective>,
    /// How many trials, how many at once, how many attempts each.
    #[serde(default)]
    pub budget: RawBudget,
    /// An early-stopping rule.
    #[serde(default)]
    pub early_stopping: Option<RawEarlyStopping>,
    /// What each trial needs from a worker.
    #[serde(default)]
    pub resources: Option<RawResources>,
    /// Where results go: a directory (`runs/`) or `s3://bucket/prefix`.
    #[serde(default)]
    pub results: Option<String>,
    /// The `fractal` kind's grid, training settings and zoom.
    #[serde(default)]
    pub fractal: Option<crate::fractal_sweep::RawFractal>,
    /// The `nas` kind's super-network, objectives and search.
    #[serde(default)]
    pub nas: Option<crate::nas_sweep::RawNas>,
    /// The `metalic` kind's PDE family, PINN, phases and policies.
    #[serde(default)]
    pub metalic: Option<crate::metalic_sweep::RawMetalic>,
}

/// The dataset section.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDataset {
    /// Path to a Parquet file, relative to the sweep file.
    pub path: String,
    /// Share of rows held out for validation (default 0.2).
    #[serde(default)]
    pub validation_fraction: Option<f64>,
    /// Seed of the train/validation split, the same for every trial (default 0).
    #[serde(default)]
    pub split_seed: Option<u64>,
    /// Fixed shards the training rows are cut into for data-parallel trials; each of a
    /// trial's `resources.workers` replicas holds every K-th shard, and the batches do
    /// not depend on K (default: `resources.workers`).
    #[serde(default)]
    pub shards: Option<u32>,
}

/// The objective section.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawObjective {
    /// Metric name as the program reports it (e.g. `val_accuracy`).
    pub metric: String,
    /// `minimize` or `maximize`.
    pub goal: Goal,
}

/// The budget section.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Number of trials (grid: default and maximum is the grid size).
    #[serde(default)]
    pub trials: Option<u64>,
    /// Trials running at once (default: every free worker slot).
    #[serde(default)]
    pub concurrent: Option<u32>,
    /// Attempts per trial before it is recorded as failed (default 2).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Seconds one attempt may run; a slower or stuck attempt is abandoned as failed
    /// (and retried if attempts are left). Default: no limit.
    #[serde(default)]
    pub trial_timeout_s: Option<f64>,
}

/// The early-stopping section: exactly one rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEarlyStopping {
    /// Asynchronous successive halving.
    pub asha: RawAsha,
}

/// ASHA settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAsha {
    /// Metric compared at each rung (default: the objective's).
    #[serde(default)]
    pub metric: Option<String>,
    /// Goal of that metric (default: the objective's).
    #[serde(default)]
    pub goal: Option<Goal>,
    /// Steps before the first rung (default 1).
    #[serde(default)]
    pub grace: Option<u64>,
    /// Reduction factor η: a trial continues past a rung if it is in the top 1/η (default 3).
    #[serde(default)]
    pub reduction: Option<f64>,
    /// Last step a trial can reach (default: the fixed `epochs` hyperparameter).
    #[serde(default)]
    pub max_t: Option<u64>,
}

/// The resources section.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    /// Worker slots one trial occupies (default 1).
    #[serde(default)]
    pub slots: Option<u32>,
    /// GPUs one trial needs (default 0).
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Workers one trial trains on at once, each on its own shards of the dataset with
    /// gradients summed every step, or every `sync_every` batches (default 1). `slots`
    /// and `gpus` are per worker.
    #[serde(default)]
    pub workers: Option<u32>,
    /// Fewest workers a data-parallel trial may continue on after losing one: a retry
    /// resumes from its checkpoint on the workers that are left when at least this many
    /// are free, instead of waiting for a replacement (default: `workers`, i.e. wait).
    #[serde(default)]
    pub min_workers: Option<u32>,
}

/// A validated dataset reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// Path as written (resolved by the caller against the sweep file's folder).
    pub path: String,
    /// Share of rows held out for validation.
    pub validation_fraction: f64,
    /// Seed of the split.
    pub split_seed: u64,
    /// Shards of the training rows (1 unless trials are data-parallel).
    pub shards: u32,
}

/// A validated objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// Metric name.
    pub metric: String,
    /// Goal.
    pub goal: Goal,
}

/// Validated ASHA settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AshaSpec {
    /// Metric compared at rungs.
    pub metric: String,
    /// Its goal.
    pub goal: Goal,
    /// First rung.
    pub grace: u64,
    /// Reduction factor η > 1.
    pub reduction: f64,
    /// Last step.
    pub max_t: u64,
}

/// A validated early-stopping rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EarlyStoppingSpec {
    /// Asynchronous successive halving.
    Asha(AshaSpec),
}

/// A validated sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// A hash of the sweep file's YAML as data (comments, layout and `budget.concurrent`
    /// aside), set by [`parse_sweep`]. A run's journal is pinned to it, so a newer
    /// `tessera` whose validated form of the same file differs still resumes the run.
    #[serde(skip)]
    pub source_hash: Option<String>,
    /// Sweep name.
    pub name: String,
    /// Kind.
    pub kind: SweepKind,
    /// Seed (if the file had none, the caller draws one and sets it).
    pub seed: Option<u64>,
    /// Training program.
    pub program: String,
    /// Dataset, if any.
    pub dataset: Option<DatasetSpec>,
    /// Search space.
    pub space: SearchSpace,
    /// Objective.
    pub objective: Objective,
    /// Number of trials.
    pub trials: u64,
    /// Trials at once (`None`: every free slot).
    pub concurrent: Option<u32>,
    /// Attempts per trial.
    pub max_attempts: u32,
    /// Seconds one attempt may run.
    pub trial_timeout_s: Option<f64>,
    /// Early stopping.
    pub early_stopping: Option<EarlyStoppingSpec>,
    /// Slots per trial.
    pub slots: u32,
    /// GPUs per trial (per worker).
    pub gpus: u32,
    /// Workers per trial (data-parallel replicas).
    pub workers: u32,
    /// Fewest workers a retry of a data-parallel trial continues on.
    pub min_workers: u32,
    /// Results location as written.
    pub results: Option<String>,
    /// The `fractal` kind's settings.
    pub fractal: Option<crate::fractal_sweep::FractalSpec>,
    /// The `nas` kind's settings.
    pub nas: Option<crate::nas_sweep::NasSpec>,
    /// The `metalic` kind's settings.
    pub metalic: Option<crate::metalic_sweep::MetalicSpec>,
}

impl SweepSpec {
    /// Workers the trial with `params` trains on at once, and the fewest a retry of it
    /// may continue on: the sweep's `resources.workers` for training trials, 1 for a
    /// `nas` sweep's evaluation trials (they measure sub-networks of the trained weights
    /// on a validation shard, with nothing to exchange).
    pub fn workers_for(&self, params: &crate::space::Params) -> (u32, u32) {
        let evaluation = self.kind == SweepKind::Nas
            && params
                .get("role")
                .and_then(crate::space::ParamValue::as_str)
                .is_some_and(|r| r != "supernet");
        if evaluation {
            (1, 1)
        } else {
            (self.workers, self.min_workers)
        }
    }

    /// The tables this sweep records besides `trials` and `metrics`: its kind's own, and
    /// `replicas` (which workers and shards trained each trial) when trials are
    /// data-parallel.
    pub fn tables(&self) -> Vec<&'static str> {
        let mut t: Vec<&'static str> = match self.kind {
            SweepKind::Fractal => vec![crate::fractal_sweep::RASTER_TABLE],
            SweepKind::Nas => crate::nas_sweep::TABLES.to_vec(),
            SweepKind::Metalic => crate::metalic_sweep::TABLES.to_vec(),
            _ => Vec::new(),
        };
        if self.workers > 1 {
            t.push(crate::trial::REPLICAS_TABLE);
        }
        t
    }
}

/// A problem found while validating, located by path in the document.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Where in the document.
    pub path: Vec<PathStep>,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: &[&str], message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            path: path
                .iter()
                .map(|s| PathStep::Key((*s).to_owned()))
                .collect(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Turns the problem into a located error for `file` whose text is `source`.
    pub fn locate(self, file: &str, source: &str) -> SpecError {
        let (line, column) = locate(source, &self.path).unwrap_or((1, 1));
        SpecError {
            file: file.to_owned(),
            line,
            column,
            message: self.message,
            hint: self.hint,
        }
    }
}

/// Parses and validates a sweep file's text. `file` is used in error messages only.
pub fn parse_sweep(file: &str, source: &str) -> Result<SweepSpec, SpecError> {
    if let Some((line, column, key)) = crate::locate::duplicate_key(source) {
        return Err(SpecError {
            file: file.to_owned(),
            line,
            column,
            message: format!("duplicate key `{key}`"),
            hint: "each key may appear once in a mapping; remove or rename one".to_owned(),
        });
    }
    let raw: RawSweep = serde_yaml::from_str(source).map_err(|e| yaml_error(file, source, &e))?;
    let mut spec = raw.validate().map_err(|p| p.locate(file, source))?;
    spec.source_hash = Some(source_hash(source));
    Ok(spec)
}

/// FNV-1a of `text`, as 16 hex digits.
pub fn fnv_hex(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The hash of a sweep file's YAML as data: comments and layout do not count, and
/// neither does `budget.concurrent` (it changes no trial).
pub fn source_hash(source: &str) -> String {
    let mut value: serde_yaml::Value = serde_yaml::from_str(source).unwrap_or_default();
    if let Some(budget) = value.get_mut("budget").and_then(|b| b.as_mapping_mut()) {
        budget.remove("concurrent");
    }
    format!(
        "yaml:{}",
        fnv_hex(&serde_yaml::to_string(&value).unwrap_or_default())
    )
}

fn yaml_error(file: &str, source: &str, e: &serde_yaml::Error) -> SpecError {
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    // serde_yaml appends " at line L column C"; the location is already in front.
    let mut message = e.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    if let Some(rest) = message.strip_prefix(": ") {
        message = rest.to_owned();
    }
    let hint = if source.trim().is_empty() {
        "the file is empty: start from configs/quickstart.yaml".to_owned()
    } else if message.contains("cannot start any token") && source.contains('\t') {
        "YAML does not allow tabs for indentation; indent with spaces".to_owned()
    } else if message.contains("unknown field") {
        "remove the field or fix its spelling; `tessera schema` prints every field".to_owned()
    } else if message.contains("missing field") {
        "add the field; `tessera schema` says what it takes".to_owned()
    } else if message.contains("unknown variant") {
        "use one of the values listed".to_owned()
    } else if message.contains("invalid type") {
        "check the value's type against `tessera schema`".to_owned()
    } else {
        "fix the YAML syntax at this position".to_owned()
    };
    SpecError {
        file: file.to_owned(),
        line,
        column,
        message,
        hint,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

fn valid_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl RawSweep {
    /// Checks everything serde could not and builds the domain type.
    pub fn validate(self) -> Result<SweepSpec, Problem> {
        if self.version != SPEC_VERSION {
            return Err(Problem::new(
                &["version"],
                format!("unsupported sweep version {}", self.version),
                format!("this tessera reads `version: {SPEC_VERSION}`"),
            ));
        }
        if !valid_name(&self.name) {
            return Err(Problem::new(
                &["name"],
                format!("invalid sweep name `{}`", self.name),
                "use 1–64 letters, digits, `-`, `_` or `.`, not starting with `.`",
            ));
        }
        let fractal = self.fractal_section()?;
        let nas = self.nas_section()?;
        let metalic = self.metalic_section()?;
        let kind_program = match (&fractal, &nas, &metalic) {
            (Some(_), _, _) => Some(crate::fractal_sweep::TILE_PROGRAM),
            (_, Some(_), _) => Some(crate::nas_sweep::PROGRAM),
            (_, _, Some(m)) if m.program.is_none() => Some(crate::metalic_sweep::PROGRAM),
            _ => None,
        };
        let program = match (&self.program, kind_program) {
            (Some(p), _) if p.trim().is_empty() => {
                return Err(Problem::new(
                    &["program"],
                    "empty program name",
                    "`tessera programs` lists them",
                ));
            }
            (Some(p), Some(k)) if p != k => {
                return Err(Problem::new(
                    &["program"],
                    format!("{} sweeps run `{k}`, not `{p}`", self.kind.as_str()),
                    format!(
                        "remove `program`; the `{}` section says what each trial trains",
                        self.kind.as_str()
                    ),
                ));
            }
            (Some(p), _) => p.clone(),
            (None, Some(k)) => k.to_owned(),
            (None, None) => {
                return Err(Problem::new(
                    &[],
                    "missing field `program`",
                    "add `program: NAME`; `tessera programs` lists them",
                ));
            }
        };
        let raw_objective = match (&self.objective, &fractal, &nas) {
            (Some(o), _, _) => o.clone(),
            // Each round reports −log10 of its relative L2 error.
            (None, _, _) if metalic.as_ref().is_some_and(|m| m.program.is_none()) => RawObjective {
                metric: "reward".into(),
                goal: Goal::Maximize,
            },
            (None, Some(_), _) => RawObjective {
                metric: "boundary_fraction".into(),
                goal: Goal::Maximize,
            },
            // The supernet trial reports its largest sub-network's validation accuracy.
            (None, _, Some(_)) => RawObjective {
                metric: "val_accuracy".into(),
                goal: Goal::Maximize,
            },
            (None, None, None) => {
                return Err(Problem::new(
                    &[],
                    "missing field `objective`",
                    "add e.g. `objective: { metric: val_accuracy, goal: maximize }`",
                ));
            }
        };
        let objective = Objective {
            metric: raw_objective.metric.clone(),
            goal: raw_objective.goal,
        };
        if objective.metric.trim().is_empty() {
            return Err(Problem::new(
                &["objective", "metric"],
                "empty metric name",
                "name a metric the program reports, e.g. `val_accuracy`",
            ));
        }

        if RESERVED_COLUMNS.contains(&objective.metric.as_str()) {
            return Err(Problem::new(
                &["objective", "metric"],
                format!(
                    "objective metric `{}` clashes with a results column",
                    objective.metric
                ),
                format!(
                    "the trials table already has {}",
                    RESERVED_COLUMNS.join(", ")
                ),
            ));
        }
        let mut space = SearchSpace::default();
        for (name, value) in &self.space {
            if !valid_param_name(name) {
                return Err(Problem::new(
                    &["space", name],
                    format!("invalid hyperparameter name `{name}`"),
                    "use letters, digits and `_`, starting with a letter",
                ));
            }
            if RESERVED_COLUMNS.contains(&name.as_str()) || *name == objective.metric {
                return Err(Problem::new(
                    &["space", name],
                    format!("hyperparameter name `{name}` is reserved for a results column"),
                    "rename the hyperparameter",
                ));
            }
            space
                .params
                .insert(name.clone(), parse_domain(name, value)?);
        }

        let dataset = match &self.dataset {
            None => None,
            Some(d) => {
                let validation_fraction = d.validation_fraction.unwrap_or(0.2);
                if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
                    return Err(Problem::new(
                        &["dataset", "validation_fraction"],
                        format!("validation_fraction {validation_fraction} is outside (0, 1)"),
                        "use a share such as 0.2",
                    ));
                }
                if d.path.trim().is_empty() {
                    return Err(Problem::new(
                        &["dataset", "path"],
                        "empty dataset path",
                        "give a Parquet file's path, relative to the sweep file",
                    ));
                }
                let workers = self.resources.as_ref().and_then(|r| r.workers).unwrap_or(1);
                let shards = d.shards.unwrap_or(workers.max(1));
                if shards == 0 || shards < workers {
                    return Err(Problem::new(
                        &["dataset", "shards"],
                        format!("dataset.shards is {shards} but resources.workers is {workers}"),
                        "give at least one shard per worker, e.g. `shards: 4` for up to 4 workers",
                    ));
                }
                Some(DatasetSpec {
                    path: d.path.clone(),
                    validation_fraction,
                    split_seed: d.split_seed.unwrap_or(0),
                    shards,
                })
            }
        };

        if let Some(f) = &fractal {
            space = f.space();
        }
        if let Some(n) = &nas {
            space = n.space();
        }
        if let Some(m) = &metalic {
            space = m.space();
        }
        let trials = match self.kind {
            SweepKind::Fractal => fractal.as_ref().map_or(0, |f| f.trials()),
            SweepKind::Nas => nas.as_ref().map_or(0, |n| n.trials()),
            SweepKind::Metalic => metalic.as_ref().map_or(0, |m| m.trials()),
            SweepKind::Grid => {
                for (name, d) in &space.params {
                    if let Domain::Float { grid: None, .. } = d {
                        return Err(Problem::new(
                            &["space", name],
                            format!("grid sweeps need a point count for float `{name}`"),
                            "add `grid: N` to the range, e.g. `{ float: [0.001, 0.1], scale: log, grid: 4 }`",
                        ));
                    }
                }
                let size = space.grid_size();
                match self.budget.trials {
                    None => size,
                    Some(t) if t > size => {
                        return Err(Problem::new(
                            &["budget", "trials"],
                            format!("budget.trials ({t}) is larger than the grid ({size} points)"),
                            "lower it, or remove it to run the whole grid",
                        ));
                    }
                    Some(t) => t,
                }
            }
            _ => match self.budget.trials {
                Some(t) => t,
                None => {
                    return Err(Problem::new(
                        &["budget"],
                        "random sweeps need `budget.trials`",
                        "add e.g. `trials: 32` under `budget`",
                    ));
                }
            },
        };
        if trials > MAX_TRIALS {
            let what = if self.kind == SweepKind::Grid {
                "the grid has"
            } else {
                "budget.trials asks for"
            };
            let at: &[&str] = if self.kind == SweepKind::Grid {
                &["space"]
            } else {
                &["budget", "trials"]
            };
            return Err(Problem::new(
                at,
                format!("{what} {trials} trials, more than the {MAX_TRIALS} one sweep may run"),
                "use fewer grid points or trials, or split the sweep",
            ));
        }
        if trials == 0 {
            return Err(Problem::new(
                &["budget", "trials"],
                "budget.trials is 0",
                "ask for at least one trial",
            ));
        }
        if self.budget.concurrent == Some(0) {
            return Err(Problem::new(
                &["budget", "concurrent"],
                "budget.concurrent is 0",
                "use at least 1, or remove it to use every worker slot",
            ));
        }
        let max_attempts = self.budget.max_attempts.unwrap_or(2);
        if max_attempts == 0 {
            return Err(Problem::new(
                &["budget", "max_attempts"],
                "budget.max_attempts is 0",
                "use at least 1 (1 means no retries)",
            ));
        }

        let early_stopping = match &self.early_stopping {
            None => None,
            Some(es) => {
                let a = &es.asha;
                let grace = a.grace.unwrap_or(1);
                let reduction = a.reduction.unwrap_or(3.0);
                let max_t = match a.max_t {
                    Some(t) => t,
                    None => match space.params.get("epochs") {
                        Some(Domain::Fixed(v)) if v.as_i64().is_some_and(|e| e > 0) => {
                            v.as_i64().unwrap_or(1) as u64
                        }
                        _ => {
                            return Err(Problem::new(
                                &["early_stopping", "asha"],
                                "asha needs `max_t` (or a fixed `epochs` hyperparameter to take it from)",
                                "add `max_t: N`, the last step a trial reports",
                            ));
                        }
                    },
                };
                if grace == 0 {
                    return Err(Problem::new(
                        &["early_stopping", "asha", "grace"],
                        "grace is 0",
                        "use at least 1 step",
                    ));
                }
                if reduction.is_nan() || reduction <= 1.0 {
                    return Err(Problem::new(
                        &["early_stopping", "asha", "reduction"],
                        format!("reduction {reduction} must be greater than 1"),
                        "3 is the usual choice",
                    ));
                }
                if max_t <= grace {
                    return Err(Problem::new(
                        &["early_stopping", "asha", "max_t"],
                        format!(
                            "max_t ({max_t}) must exceed grace ({grace}), or ASHA has no rung to stop trials at"
                        ),
                        "raise max_t or lower grace",
                    ));
                }
                Some(EarlyStoppingSpec::Asha(AshaSpec {
                    metric: a.metric.clone().unwrap_or_else(|| objective.metric.clone()),
                    goal: a.goal.unwrap_or(objective.goal),
                    grace,
                    reduction,
                    max_t,
                }))
            }
        };

        if let Some(t) = self
            .budget
            .trial_timeout_s
            .filter(|t| !(t.is_finite() && *t > 0.0))
        {
            return Err(Problem::new(
                &["budget", "trial_timeout_s"],
                format!("budget.trial_timeout_s is {t}"),
                "give the seconds one attempt may run as a positive number, e.g. 600",
            ));
        }

        let (slots, gpus, workers, min_workers) = match &self.resources {
            None => (1, 0, 1, None),
            Some(r) => (
                r.slots.unwrap_or(1),
                r.gpus.unwrap_or(0),
                r.workers.unwrap_or(1),
                r.min_workers,
            ),
        };
        if workers == 0 {
            return Err(Problem::new(
                &["resources", "workers"],
                "resources.workers is 0",
                "a trial trains on at least 1 worker",
            ));
        }
        let min_workers = min_workers.unwrap_or(workers);
        if min_workers == 0 || min_workers > workers {
            return Err(Problem::new(
                &["resources", "min_workers"],
                format!(
                    "resources.min_workers is {min_workers} but resources.workers is {workers}"
                ),
                format!(
                    "give a number from 1 to {workers}: the fewest workers a trial may continue on after losing one"
                ),
            ));
        }
        if workers > 1 && dataset.is_none() {
            return Err(Problem::new(
                &["resources", "workers"],
                format!("resources.workers is {workers} but the sweep has no dataset to shard"),
                "add `dataset: { path: …, shards: N }`, or use `workers: 1`",
            ));
        }
        if slots == 0 {
            return Err(Problem::new(
                &["resources", "slots"],
                "resources.slots is 0",
                "a trial needs at least 1 slot",
            ));
        }

        if let Some(r) = self.results.as_ref().filter(|r| {
            r.contains("://")
                && !r
                    .strip_prefix("s3://")
                    .is_some_and(|b| !b.is_empty() && !b.starts_with('/'))
        }) {
            return Err(Problem::new(
                &["results"],
                format!(
                    "results location `{r}` is neither a local directory nor s3://BUCKET/PREFIX"
                ),
                "use a path such as `runs/`, or an S3 location such as `s3://my-bucket/sweeps`",
            ));
        }

        Ok(SweepSpec {
            source_hash: None,
            name: self.name,
            kind: self.kind,
            seed: self.seed,
            program,
            dataset,
            space,
            objective,
            trials,
            concurrent: self.budget.concurrent,
            max_attempts,
            trial_timeout_s: self.budget.trial_timeout_s,
            early_stopping,
            slots,
            gpus,
            workers,
            min_workers,
            results: self.results,
            fractal,
            nas,
            metalic,
        })
    }

    /// Checks that the kind-specific section `key` appears exactly with its kind, and
    /// that a sweep of that kind has none of the sections it replaces. Returns whether
    /// the sweep is of that kind.
    fn kind_section(
        &self,
        kind: SweepKind,
        key: &str,
        present: bool,
        replaced: &[(&str, bool)],
        trials_hint: &str,
    ) -> Result<bool, Problem> {
        let name = kind.as_str();
        if self.kind != kind {
            if present {
                return Err(Problem::new(
                    &[key],
                    format!("a `{key}` section in a `{}` sweep", self.kind.as_str()),
                    format!("remove it, or set `kind: {name}`"),
                ));
            }
            return Ok(false);
        }
        for (k, there) in replaced {
            if *there {
                return Err(Problem::new(
                    &[k],
                    format!("{name} sweeps take no `{k}`"),
                    format!(
                        "remove it: the `{key}` section defines the trials and what each one trains"
                    ),
                ));
            }
        }
        if self.budget.trials.is_some() {
            return Err(Problem::new(
                &["budget", "trials"],
                format!("{name} sweeps take no budget.trials"),
                format!("remove it: {trials_hint}"),
            ));
        }
        let pinn = self.metalic.as_ref().is_none_or(|m| m.family.is_some());
        if self.objective.is_some() && kind == SweepKind::Metalic && pinn {
            return Err(Problem::new(
                &["objective"],
                "metalic sweeps maximise each round's reward, −log10 of the relative L2 error",
                "remove `objective`",
            ));
        }
        if self.objective.is_some() && kind == SweepKind::Nas {
            return Err(Problem::new(
                &["objective"],
                "nas sweeps take their objectives under `nas.objectives`",
                "move it there, e.g. `- { metric: accuracy, goal: maximize }`",
            ));
        }
        Ok(true)
    }

    /// The `fractal` section, checked against the kind and the sections it replaces.
    fn fractal_section(&self) -> Result<Option<crate::fractal_sweep::FractalSpec>, Problem> {
        let replaced = [
            ("space", !self.space.is_empty()),
            ("dataset", self.dataset.is_some()),
            ("early_stopping", self.early_stopping.is_some()),
        ];
        if !self.kind_section(
            SweepKind::Fractal,
            "fractal",
            self.fractal.is_some(),
            &replaced,
            "the trials are the tiles of `fractal.resolution` (times zoom frames)",
        )? {
            return Ok(None);
        }
        let raw = self.fractal.clone().unwrap_or_default();
        raw.validate().map(Some)
    }

    /// The `nas` section, checked likewise.
    fn nas_section(&self) -> Result<Option<crate::nas_sweep::NasSpec>, Problem> {
        let replaced = [
            ("space", !self.space.is_empty()),
            ("early_stopping", self.early_stopping.is_some()),
        ];
        if !self.kind_section(
            SweepKind::Nas,
            "nas",
            self.nas.is_some(),
            &replaced,
            "the search measures `nas.evaluations` sub-networks",
        )? {
            return Ok(None);
        }
        let Some(raw) = self.nas.clone() else {
            return Err(Problem::new(
                &["kind"],
                "a nas sweep needs a `nas` section",
                "add `nas:` with the supernet, its objectives and the tactic; see configs/nas.yaml",
            ));
        };
        if self.dataset.is_none() {
            return Err(Problem::new(
                &[],
                "a nas sweep needs a `dataset` to train and evaluate on",
                "add `dataset: { path: data.parquet }`",
            ));
        }
        raw.validate().map(Some)
    }
}

impl RawSweep {
    /// The `metalic` section, checked likewise.
    fn metalic_section(&self) -> Result<Option<crate::metalic_sweep::MetalicSpec>, Problem> {
        // A PINN task (with `family`) defines everything; a program task takes the
        // program, its dataset, objective and fixed values from the top level.
        let pinn = self.metalic.as_ref().is_none_or(|m| m.family.is_some());
        let replaced = [
            ("space", pinn && !self.space.is_empty()),
            ("dataset", pinn && self.dataset.is_some()),
            ("early_stopping", self.early_stopping.is_some()),
        ];
        if !self.kind_section(
            SweepKind::Metalic,
            "metalic",
            self.metalic.is_some(),
            &replaced,
            "the trials are every policy's warm-up, play and test rounds",
        )? {
            return Ok(None);
        }
        let Some(raw) = self.metalic.clone() else {
            return Err(Problem::new(
                &["kind"],
                "a metalic sweep needs a `metalic` section",
                "add `metalic:` with the PDE family and the policies; see configs/metalic.yaml",
            ));
        };
        let mut fixed = Vec::new();
        for (name, value) in &self.space {
            match scalar(value) {
                Some(v) if !pinn => fixed.push((name.clone(), v)),
                _ => {
                    return Err(Problem::new(
                        &["space", name],
                        format!("`{name}` is not a fixed value"),
                        "a metalic sweep's space holds fixed values only: the bandit sets the context and the switches",
                    ));
                }
            }
        }
        let outer = crate::metalic_sweep::Outer {
            program: self.program.clone(),
            objective: self.objective.as_ref().map(|o| (o.metric.clone(), o.goal)),
            fixed,
        };
        raw.validate(&outer).map(Some)
    }
}

fn scalar(value: &serde_yaml::Value) -> Option<ParamValue> {
    match value {
        serde_yaml::Value::Bool(b) => Some(ParamValue::Bool(*b)),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(ParamValue::Int(i))
            } else {
                n.as_f64().map(ParamValue::Float)
            }
        }
        serde_yaml::Value::String(s) => Some(ParamValue::Str(s.clone())),
        _ => None,
    }
}

fn parse_domain(name: &str, value: &serde_yaml::Value) -> Result<Domain, Problem> {
    let at = |rest: &[&str]| {
        let mut p = vec!["space", name];
        p.extend_from_slice(rest);
        p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
    };
    let problem = |rest: &[&str], message: String, hint: &str| {
        let path = at(rest);
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        Problem::new(&refs, message, hint)
    };
    if let Some(v) = scalar(value) {
        return Ok(Domain::Fixed(v));
    }
    let serde_yaml::Value::Mapping(map) = value else {
        return Err(problem(
            &[],
            format!("hyperparameter `{name}` must be a range, a choice or a fixed scalar"),
            "write `{ float: [low, high] }`, `{ int: [low, high] }`, `{ choice: [a, b] }` or a plain value",
        ));
    };
    let mut keys: Vec<String> = Vec::new();
    for k in map.keys() {
        match k.as_str() {
            Some(k) => keys.push(k.to_owned()),
            None => {
                return Err(problem(
                    &[],
                    format!("`{name}` has a non-string key"),
                    "use `float`, `int`, `choice`, `scale` or `grid`",
                ));
            }
        }
    }
    let kinds: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| matches!(*k, "float" | "int" | "choice"))
        .collect();
    if kinds.len() != 1 {
        return Err(problem(
            &[],
            format!("hyperparameter `{name}` needs exactly one of `float`, `int` or `choice`"),
            "e.g. `{ float: [0.0001, 0.1], scale: log }`",
        ));
    }
    let kind = kinds[0];
    for k in &keys {
        let allowed = match kind {
            "choice" => k == "choice",
            _ => matches!(k.as_str(), "float" | "int" | "scale" | "grid"),
        };
        if !allowed {
            return Err(problem(
                &[k],
                format!("unknown key `{k}` in hyperparameter `{name}`"),
                if kind == "choice" {
                    "a choice takes only `choice: [..]`"
                } else {
                    "a range takes `scale` and `grid` besides its bounds"
                },
            ));
        }
    }
    let scale = match map.get("scale") {
        None => Scale::Linear,
        Some(s) => match s.as_str() {
            Some("linear") => Scale::Linear,
            Some("log") => Scale::Log,
            _ => {
                return Err(problem(
                    &["scale"],
                    format!("invalid scale for `{name}`"),
                    "use `linear` or `log`",
                ));
            }
        },
    };
    let grid = match map.get("grid") {
        None => None,
        Some(g) => match g.as_u64() {
            Some(n) if (1..=100_000).contains(&n) => Some(n as u32),
            _ => {
                return Err(problem(
                    &["grid"],
                    format!("invalid grid point count for `{name}`"),
                    "use a whole number of points, at least 1",
                ));
            }
        },
    };
    let bounds = |key: &str| -> Result<[f64; 2], Problem> {
        let seq = map.get(key).and_then(|v| v.as_sequence());
        let parsed: Option<Vec<f64>> = seq.and_then(|s| {
            s.iter()
                .map(serde_yaml::Value::as_f64)
                .collect::<Option<Vec<f64>>>()
        });
        match parsed.as_deref() {
            Some([lo, hi]) if lo.is_finite() && hi.is_finite() => Ok([*lo, *hi]),
            _ => Err(problem(
                &[key],
                format!("`{name}.{key}` must be `[low, high]` with two numbers"),
                "e.g. `[0.0001, 0.1]`",
            )),
        }
    };
    match kind {
        "float" => {
            let [low, high] = bounds("float")?;
            if low > high {
                return Err(problem(
                    &["float"],
                    format!("`{name}`: low ({low}) is above high ({high})"),
                    "swap the bounds",
                ));
            }
            if scale == Scale::Log && low <= 0.0 {
                return Err(problem(
                    &["float"],
                    format!("`{name}`: a log scale needs positive bounds, got {low}"),
                    "use a positive lower bound or `scale: linear`",
                ));
            }
            Ok(Domain::Float {
                low,
                high,
                scale,
                grid,
            })
        }
        "int" => {
            let seq = map.get("int").and_then(|v| v.as_sequence());
            let parsed: Option<Vec<i64>> = seq.and_then(|s| {
                s.iter()
                    .map(serde_yaml::Value::as_i64)
                    .collect::<Option<Vec<i64>>>()
            });
            let [low, high] = match parsed.as_deref() {
                Some([lo, hi]) => [*lo, *hi],
                _ => {
                    return Err(problem(
                        &["int"],
                        format!("`{name}.int` must be `[low, high]` with two integers"),
                        "e.g. `[32, 512]`",
                    ));
                }
            };
            if low > high {
                return Err(problem(
                    &["int"],
                    format!("`{name}`: low ({low}) is above high ({high})"),
                    "swap the bounds",
                ));
            }
            if scale == Scale::Log && low <= 0 {
                return Err(problem(
                    &["int"],
                    format!("`{name}`: a log scale needs positive bounds, got {low}"),
                    "use a positive lower bound or `scale: linear`",
                ));
            }
            Ok(Domain::Int {
                low,
                high,
                scale,
                grid,
            })
        }
        _ => {
            let Some(seq) = map.get("choice").and_then(|v| v.as_sequence()) else {
                return Err(problem(
                    &["choice"],
                    format!("`{name}.choice` must be a list"),
                    "e.g. `{ choice: [1, 2, 3] }`",
                ));
            };
            let mut values = Vec::new();
            for (i, v) in seq.iter().enumerate() {
                match scalar(v) {
                    Some(pv) if !values.contains(&pv) => values.push(pv),
                    Some(pv) => {
                        let mut p = problem(
                            &["choice"],
                            format!("`{name}` lists {pv} twice"),
                            "remove the duplicate",
                        );
                        p.path.push(PathStep::Index(i));
                        return Err(p);
                    }
                    None => {
                        let mut p = problem(
                            &["choice"],
                            format!("`{name}.choice` may hold only scalars"),
                            "use numbers, strings or booleans",
                        );
                        p.path.push(PathStep::Index(i));
                        return Err(p);
                    }
                }
            }
            if values.is_empty() {
                return Err(problem(
                    &["choice"],
                    format!("`{name}.choice` is empty"),
                    "list at least one value",
                ));
            }
            Ok(Domain::Choice(values))
        }
    }
}

/// The JSON Schema of sweep files, for editors.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(RawSweep);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
