//! The `nas` sweep kind: train one super-network, then search the accuracy/latency (or
//! MACs, parameters) Pareto front of its sub-networks, as DyNAS-T does (Cummings et al.,
//! *A Hardware-Aware System for Accelerating Deep Neural Network Optimization*).
//!
//! A sweep is one supernet-training trial (trial 0) and then generations of evaluation
//! trials. A generation is a population of sub-networks (integer genomes, one gene per
//! elastic choice of the [`Supernet`]); it is cut into batches, and each batch is
//! evaluated once per validation shard, so the trials of a generation spread over every
//! worker. A worker reports, per sub-network of its batch, the correct predictions and
//! rows of its shard, the latency it measured, and the MACs and parameters it counted;
//! the searcher adds the shards' counts into an exact accuracy. When a generation is
//! complete, the tactic picks the next: random draws, NSGA-II on the real measurements,
//! or LINAS (NSGA-II on predictors fitted to every measurement so far, [`linas_next`]).
//!
//! Everything here is pure: the searcher is rebuilt after a crash by replaying the
//! recorded trials, and [`NasSearcher::summary`] derives the sweep's tables (every
//! measured sub-network, the front, the hypervolume after each evaluation) from the same
//! state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::locate::PathStep;
use crate::moo::{Genome, LinasModel, Nsga2, fronts, hypervolume, linas_next};
use crate::rng::{Rng, derive_seed};
use crate::searcher::{Ask, Searcher};
use crate::space::{Domain, ParamValue, Params, Scale, SearchSpace};
use crate::spec::{Goal, Problem};
use crate::trial::{Artifact, ArtifactColumn, TrialId, TrialOutcome, TrialRequest, TrialStatus};

/// The program `nas` sweeps run: it trains the super-network (role `supernet`) or
/// evaluates sub-networks sliced out of it (role `evaluate`).
pub const PROGRAM: &str = "nas-supernet";
/// The trained super-network's weights, flattened (one `value` column).
pub const SUPERNET_TABLE: &str = "supernet";
/// The shape of the data the super-network was trained on (one row).
pub const SHAPE_TABLE: &str = "supernet_shape";
/// One row per sub-network and validation shard, as the workers measured them.
pub const EVALUATIONS_TABLE: &str = "evaluations";
/// One row per measured sub-network (written when the sweep completes).
pub const SUBNETS_TABLE: &str = "subnets";
/// The Pareto front of the feasible measured sub-networks.
pub const PARETO_TABLE: &str = "pareto";
/// Hypervolume of the front after each real evaluation.
pub const HYPERVOLUME_TABLE: &str = "hypervolume";

/// The tables of a `nas` sweep written as trials finish.
pub const TABLES: &[&str] = &[SUPERNET_TABLE, SHAPE_TABLE, EVALUATIONS_TABLE];

/// A constraint's violation is added to this in every objective, so that any feasible
/// sub-network dominates every infeasible one and less violation dominates more
/// (Deb's constrained domination).
const INFEASIBLE: f64 = 1e12;

/// The super-network: its architecture family and elastic choices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "family", rename_all = "lowercase", deny_unknown_fields)]
pub enum Supernet {
    /// An elastic multi-layer perceptron for tabular data: the number of hidden layers
    /// and each layer's width are elastic (a narrower layer uses the first units).
    Mlp {
        /// Hidden-layer counts to choose from, e.g. `[1, 2, 3]`.
        depth: Vec<u32>,
        /// Widths to choose from for each hidden layer, e.g. `[16, 32, 64, 128]`.
        width: Vec<u32>,
    },
    /// An OFA-style convolutional network for image data (the rows of the dataset are
    /// square single-channel images): a 3×3 stem, then stages of inverted-residual
    /// blocks (1×1 expand, depthwise k×k, 1×1 project), the first block of every stage
    /// after the first with stride 2, then global average pooling and a linear head.
    /// Elastic: the blocks per stage, each block's kernel size (centre of the largest
    /// kernel) and expansion ratio (first channels of the widest block).
    Conv {
        /// Output channels of the stem and of each stage, e.g. `[8, 16, 24]`: the stem
        /// takes the first, then one stage per remaining entry.
        channels: Vec<u32>,
        /// Blocks per stage to choose from, e.g. `[1, 2]`.
        depth: Vec<u32>,
        /// Kernel sizes to choose from (odd), e.g. `[3, 5]`.
        kernel: Vec<u32>,
        /// Expansion ratios to choose from, e.g. `[2, 4]`.
        expand: Vec<u32>,
    },
}

/// What the super-network's data looks like (from the supernet trial).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Input features per row.
    pub inputs: u32,
    /// Classes.
    pub classes: u32,
    /// Image side (conv: `inputs = side²`; mlp: 0).
    pub side: u32,
}

/// A sub-network, decoded from its genome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arch {
    /// Hidden-layer widths.
    Mlp {
        /// Widths, one per hidden layer in use.
        widths: Vec<u32>,
    },
    /// Per stage, its blocks in use as (kernel, expansion ratio).
    Conv {
        /// Blocks per stage.
        stages: Vec<Vec<(u32, u32)>>,
    },
}

impl Supernet {
    fn stages(&self) -> usize {
        match self {
            Supernet::Mlp { .. } => 0,
            Supernet::Conv { channels, .. } => channels.len().saturating_sub(1),
        }
    }

    fn max_depth(&self) -> u32 {
        match self {
            Supernet::Mlp { depth, .. } | Supernet::Conv { depth, .. } => {
                depth.iter().copied().max().unwrap_or(0)
            }
        }
    }

    /// Values per gene. Mlp: `[depth, width of layer 1, …, width of layer D]`. Conv
    /// (OFA's order): a kernel gene per block, an expansion gene per block, then a depth
    /// gene per stage, blocks numbered stage by stage up to the largest depth.
    pub fn choices(&self) -> Vec<u32> {
        let n = |v: &Vec<u32>| v.len() as u32;
        match self {
            Supernet::Mlp { depth, width } => {
                let mut c = vec![n(depth)];
                c.extend(std::iter::repeat_n(n(width), self.max_depth() as usize));
                c
            }
            Supernet::Conv {
                depth,
                kernel,
                expand,
                ..
            } => {
                let blocks = self.stages() * self.max_depth() as usize;
                let mut c = vec![n(kernel); blocks];
                c.extend(std::iter::repeat_n(n(expand), blocks));
                c.extend(std::iter::repeat_n(n(depth), self.stages()));
                c
            }
        }
    }

    /// The sub-network a genome selects.
    pub fn decode(&self, g: &Genome) -> Arch {
        let at =
            |v: &Vec<u32>, i: usize| v[(g.get(i).copied().unwrap_or(0) as usize).min(v.len() - 1)];
        match self {
            Supernet::Mlp { depth, width } => Arch::Mlp {
                widths: (0..at(depth, 0) as usize)
                    .map(|l| at(width, 1 + l))
                    .collect(),
            },
            Supernet::Conv {
                depth,
                kernel,
                expand,
                ..
            } => {
                let d = self.max_depth() as usize;
                let blocks = self.stages() * d;
                Arch::Conv {
                    stages: (0..self.stages())
                        .map(|s| {
                            (0..at(depth, 2 * blocks + s) as usize)
                                .map(|b| (at(kernel, s * d + b), at(expand, blocks + s * d + b)))
                                .collect()
                        })
                        .collect(),
                }
            }
        }
    }

    /// The genome with the genes of unused layers or blocks set to 0, so that genomes
    /// selecting the same sub-network are equal.
    pub fn canonical(&self, g: &Genome) -> Genome {
        let mut out = g.clone();
        match (self, self.decode(g)) {
            (Supernet::Mlp { .. }, Arch::Mlp { widths }) => {
                for v in out.iter_mut().skip(1 + widths.len()) {
                    *v = 0;
                }
            }
            (Supernet::Conv { .. }, Arch::Conv { stages }) => {
                let d = self.max_depth() as usize;
                let blocks = self.stages() * d;
                for (s, used) in stages.iter().enumerate() {
                    for b in used.len()..d {
                        out[s * d + b] = 0;
                        out[blocks + s * d + b] = 0;
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// How many distinct sub-networks there are.
    pub fn distinct(&self) -> u128 {
        match self {
            Supernet::Mlp { depth, width } => {
                depth.iter().map(|d| (width.len() as u128).pow(*d)).sum()
            }
            Supernet::Conv {
                depth,
                kernel,
                expand,
                ..
            } => {
                let per_block = (kernel.len() * expand.len()) as u128;
                let per_stage: u128 = depth.iter().map(|d| per_block.pow(*d)).sum();
                per_stage.saturating_pow(self.stages() as u32)
            }
        }
    }

    /// The genome of the largest sub-network (every choice at its last value).
    pub fn largest(&self) -> Genome {
        self.choices().iter().map(|c| c - 1).collect()
    }

    /// The genome of the smallest sub-network.
    pub fn smallest(&self) -> Genome {
        vec![0; self.choices().len()]
    }

    /// Exact multiply-accumulates of one example's forward pass, and parameters used.
    pub fn cost(&self, shape: &Shape, arch: &Arch) -> (u64, u64) {
        // (MACs, parameters) so far.
        let mut n = (0u64, 0u64);
        // A dense map from `i` to `o` features (with bias) at `positions` places.
        fn dense(n: &mut (u64, u64), i: u64, o: u64, positions: u64) {
            n.0 += i * o * positions;
            n.1 += i * o + o;
        }
        match (self, arch) {
            (Supernet::Mlp { .. }, Arch::Mlp { widths }) => {
                let mut d = u64::from(shape.inputs);
                for w in widths {
                    dense(&mut n, d, u64::from(*w), 1);
                    d = u64::from(*w);
                }
                dense(&mut n, d, u64::from(shape.classes), 1);
            }
            (Supernet::Conv { channels, .. }, Arch::Conv { stages }) => {
                let mut side = u64::from(shape.side);
                let mut c = u64::from(channels[0]);
                dense(&mut n, 9, c, side * side);
                for (s, blocks) in stages.iter().enumerate() {
                    let out = u64::from(channels[s + 1]);
                    for (b, (k, e)) in blocks.iter().enumerate() {
                        let hidden = c * u64::from(*e);
                        dense(&mut n, c, hidden, side * side);
                        let next = if b == 0 && s > 0 {
                            side.div_ceil(2)
                        } else {
                            side
                        };
                        // Depthwise: one k×k filter (and bias) per channel.
                        let kk = u64::from(*k) * u64::from(*k);
                        n.0 += hidden * kk * next * next;
                        n.1 += hidden * kk + hidden;
                        side = next;
                        dense(&mut n, hidden, out, side * side);
                        c = out;
                    }
                }
                dense(&mut n, c, u64::from(shape.classes), 1);
            }
            _ => {}
        }
        n
    }

    fn validate(&self) -> Result<(), Problem> {
        let lists: Vec<(&str, &Vec<u32>)> = match self {
            Supernet::Mlp { depth, width } => vec![("depth", depth), ("width", width)],
            Supernet::Conv {
                channels,
                depth,
                kernel,
                expand,
            } => vec![
                ("channels", channels),
                ("depth", depth),
                ("kernel", kernel),
                ("expand", expand),
            ],
        };
        for (name, list) in lists {
            let at = ["nas", "supernet", name];
            if list.is_empty() || list.contains(&0) {
                return Err(Problem::new(
                    &at,
                    format!("`{name}` needs at least one positive value"),
                    "list the choices, e.g. `[16, 32, 64]`",
                ));
            }
            if name != "channels" && list.windows(2).any(|w| w[0] >= w[1]) {
                return Err(Problem::new(
                    &at,
                    format!("the `{name}` choices must be distinct and ascending"),
                    "sort them from smallest to largest, without repeats",
                ));
            }
            let limit = match name {
                "depth" => 16,
                "kernel" => 9,
                "expand" => 8,
                _ => 4096,
            };
            if list.iter().any(|v| *v > limit) {
                return Err(Problem::new(
                    &at,
                    format!("a `{name}` choice is above {limit}"),
                    format!("use values from 1 to {limit}"),
                ));
            }
            if name == "kernel" && list.iter().any(|k| k % 2 == 0) {
                return Err(Problem::new(
                    &at,
                    "kernel sizes must be odd",
                    "use e.g. `[3, 5, 7]`",
                ));
            }
        }
        if let Supernet::Conv { channels, .. } = self
            && channels.len() < 2
        {
            return Err(Problem::new(
                &["nas", "supernet", "channels"],
                "a conv super-network needs the stem's channels and at least one stage's",
                "e.g. `channels: [8, 16, 24]` (stem, then two stages)",
            ));
        }
        Ok(())
    }
}

/// What a sub-network is judged by.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NasMetric {
    /// Top-1 accuracy on the validation set (all shards together).
    Accuracy,
    /// Median latency of one batch's forward pass, in milliseconds, on the worker that
    /// measured it.
    LatencyMs,
    /// Multiply-accumulates of one example's forward pass.
    Macs,
    /// Parameters used by the sub-network.
    Params,
}

impl NasMetric {
    /// The name as written in sweep files and results.
    pub fn as_str(&self) -> &'static str {
        match self {
            NasMetric::Accuracy => "accuracy",
            NasMetric::LatencyMs => "latency_ms",
            NasMetric::Macs => "macs",
            NasMetric::Params => "params",
        }
    }
}

/// How the next population is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tactic {
    /// NSGA-II on predictors fitted to every measurement (the reference's LINAS).
    Linas,
    /// NSGA-II with real evaluations every generation.
    Nsga2,
    /// Independent random sub-networks.
    Random,
}

impl Tactic {
    /// The name as written in sweep files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Tactic::Linas => "linas",
            Tactic::Nsga2 => "nsga2",
            Tactic::Random => "random",
        }
    }
}

/// One objective as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNasObjective {
    /// `accuracy`, `latency_ms`, `macs` or `params`.
    pub metric: NasMetric,
    /// `minimize` or `maximize`.
    pub goal: Goal,
    /// Constraint: sub-networks above this are infeasible (e.g. `latency_ms` ≤ 2).
    #[serde(default)]
    pub max: Option<f64>,
    /// Constraint: sub-networks below this are infeasible (e.g. `accuracy` ≥ 0.9).
    #[serde(default)]
    pub min: Option<f64>,
    /// Hypervolume reference value (default: 0 for a maximised objective, the worst
    /// measured value for a minimised one).
    #[serde(default)]
    pub reference: Option<f64>,
}

/// Training settings of the super-network.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNasTraining {
    /// Passes over the training set (default 20).
    #[serde(default)]
    pub epochs: Option<u32>,
    /// Adam's learning rate (default 0.003).
    #[serde(default)]
    pub learning_rate: Option<f64>,
    /// Rows per step (default 64).
    #[serde(default)]
    pub batch_size: Option<u32>,
    /// Random sub-networks per step besides the largest and the smallest (the sandwich
    /// rule; default 2).
    #[serde(default)]
    pub random_subnets: Option<u32>,
}

/// How latency is measured.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLatency {
    /// Rows per timed forward pass (default 128).
    #[serde(default)]
    pub batch_size: Option<u32>,
    /// Untimed passes first (default 3).
    #[serde(default)]
    pub warmup: Option<u32>,
    /// Timed passes; their median is the latency (default 15).
    #[serde(default)]
    pub repeats: Option<u32>,
}

/// The `nas` section as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNas {
    /// The super-network's family and elastic choices.
    pub supernet: Supernet,
    /// How the super-network is trained.
    #[serde(default)]
    pub training: RawNasTraining,
    /// Two or three objectives.
    pub objectives: Vec<RawNasObjective>,
    /// `linas` (default), `nsga2` or `random`.
    #[serde(default)]
    pub tactic: Option<Tactic>,
    /// Sub-networks per generation (default 50).
    #[serde(default)]
    pub population: Option<u32>,
    /// Sub-networks measured for real in all (default 200).
    #[serde(default)]
    pub evaluations: Option<u32>,
    /// LINAS: NSGA-II generations on the predictors per real generation (default 100).
    #[serde(default)]
    pub predictor_generations: Option<u32>,
    /// Validation shards: each batch is evaluated once per shard, on any worker
    /// (default 2).
    #[serde(default)]
    pub shards: Option<u32>,
    /// Sub-networks per evaluation trial (default 25).
    #[serde(default)]
    pub batch: Option<u32>,
    /// Latency measurement.
    #[serde(default)]
    pub latency: RawLatency,
}

/// A validated objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NasObjective {
    /// The metric.
    pub metric: NasMetric,
    /// Its goal.
    pub goal: Goal,
    /// Upper bound, if constrained.
    pub max: Option<f64>,
    /// Lower bound, if constrained.
    pub min: Option<f64>,
    /// Hypervolume reference, if given.
    pub reference: Option<f64>,
}

impl NasObjective {
    /// The value in minimisation form.
    pub fn minimised(&self, v: f64) -> f64 {
        -self.goal.score(v)
    }

    /// How far `v` is outside the constraint, relative to the bound (0 if inside).
    pub fn violation(&self, v: f64) -> f64 {
        let rel = |d: f64, bound: f64| d / bound.abs().max(1e-12);
        let over = self.max.map_or(0.0, |m| rel((v - m).max(0.0), m));
        let under = self.min.map_or(0.0, |m| rel((m - v).max(0.0), m));
        over + under
    }
}

/// A validated `nas` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NasSpec {
    /// The super-network.
    pub supernet: Supernet,
    /// Training epochs.
    pub epochs: u32,
    /// Learning rate.
    pub learning_rate: f64,
    /// Rows per step.
    pub batch_size: u32,
    /// Random sub-networks per step (sandwich rule).
    pub random_subnets: u32,
    /// Objectives.
    pub objectives: Vec<NasObjective>,
    /// Tactic.
    pub tactic: Tactic,
    /// Population.
    pub population: u32,
    /// Real evaluations in all.
    pub evaluations: u32,
    /// LINAS predictor generations.
    pub predictor_generations: u32,
    /// Validation shards.
    pub shards: u32,
    /// Sub-networks per evaluation trial.
    pub batch: u32,
    /// Rows per timed pass.
    pub latency_batch: u32,
    /// Untimed passes.
    pub latency_warmup: u32,
    /// Timed passes.
    pub latency_repeats: u32,
}

pub(crate) fn positive(
    value: Option<u32>,
    default: u32,
    path: &[&str],
    hint: &str,
) -> Result<u32, Problem> {
    match value {
        Some(0) => Err(Problem::new(
            path,
            format!("`{}` is 0", path.last().copied().unwrap_or("")),
            hint,
        )),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

impl RawNas {
    /// Checks the section; errors are located under `nas`.
    pub fn validate(self) -> Result<NasSpec, Problem> {
        self.supernet.validate()?;
        let t = &self.training;
        let epochs = positive(
            t.epochs,
            20,
            &["nas", "training", "epochs"],
            "train at least 1 epoch",
        )?;
        let batch_size = positive(
            t.batch_size,
            64,
            &["nas", "training", "batch_size"],
            "use e.g. 64 rows per step",
        )?;
        let learning_rate = t.learning_rate.unwrap_or(0.003);
        if !(learning_rate.is_finite() && learning_rate > 0.0) {
            return Err(Problem::new(
                &["nas", "training", "learning_rate"],
                format!("learning_rate {learning_rate} is not a positive number"),
                "use e.g. 0.003",
            ));
        }
        if !(2..=3).contains(&self.objectives.len()) {
            return Err(Problem::new(
                &["nas", "objectives"],
                format!(
                    "{} objectives; a NAS search takes two or three",
                    self.objectives.len()
                ),
                "e.g. `- { metric: accuracy, goal: maximize }` and `- { metric: latency_ms, goal: minimize }`",
            ));
        }
        let mut seen = BTreeSet::new();
        let mut objectives = Vec::new();
        for (i, o) in self.objectives.iter().enumerate() {
            let at = |key: &str| Problem {
                path: vec![
                    PathStep::Key("nas".into()),
                    PathStep::Key("objectives".into()),
                    PathStep::Index(i),
                    PathStep::Key(key.into()),
                ],
                message: String::new(),
                hint: String::new(),
            };
            if !seen.insert(o.metric) {
                return Err(Problem {
                    message: format!("objective `{}` appears twice", o.metric.as_str()),
                    hint: "list each metric once".into(),
                    ..at("metric")
                });
            }
            for (key, v) in [("max", o.max), ("min", o.min), ("reference", o.reference)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    return Err(Problem {
                        message: format!("`{key}` is not a finite number"),
                        hint: "give a number in the metric's unit".into(),
                        ..at(key)
                    });
                }
            }
            if let (Some(lo), Some(hi)) = (o.min, o.max)
                && lo > hi
            {
                return Err(Problem {
                    message: format!("min {lo} is above max {hi}: nothing is feasible"),
                    hint: "swap them or drop one".into(),
                    ..at("min")
                });
            }
            objectives.push(NasObjective {
                metric: o.metric,
                goal: o.goal,
                max: o.max,
                min: o.min,
                reference: o.reference,
            });
        }
        let population = positive(
            self.population,
            50,
            &["nas", "population"],
            "use e.g. 50 sub-networks per generation",
        )?;
        let evaluations = positive(
            self.evaluations,
            200,
            &["nas", "evaluations"],
            "measure at least one sub-network",
        )?;
        let distinct = self.supernet.distinct();
        if u128::from(evaluations) > distinct {
            return Err(Problem::new(
                &["nas", "evaluations"],
                format!(
                    "{evaluations} evaluations, but the super-network has only {distinct} distinct sub-networks"
                ),
                format!("use at most {distinct}, or add choices to the super-network"),
            ));
        }
        if population < 2 {
            return Err(Problem::new(
                &["nas", "population"],
                "a population of 1 cannot evolve",
                "use at least 2 (50 is usual)",
            ));
        }
        let l = &self.latency;
        Ok(NasSpec {
            epochs,
            learning_rate,
            batch_size,
            random_subnets: t.random_subnets.unwrap_or(2),
            objectives,
            tactic: self.tactic.unwrap_or(Tactic::Linas),
            population,
            evaluations,
            predictor_generations: self.predictor_generations.unwrap_or(100),
            shards: positive(self.shards, 2, &["nas", "shards"], "use at least 1 shard")?,
            batch: positive(
                self.batch,
                25,
                &["nas", "batch"],
                "use at least 1 sub-network per trial",
            )?,
            latency_batch: positive(
                l.batch_size,
                128,
                &["nas", "latency", "batch_size"],
                "time at least one row",
            )?,
            latency_warmup: l.warmup.unwrap_or(3),
            latency_repeats: positive(
                l.repeats,
                15,
                &["nas", "latency", "repeats"],
                "time at least one pass",
            )?,
            supernet: self.supernet,
        })
    }
}

/// One sub-network of an evaluation trial's `subnets` parameter.
pub type SubnetRef = (usize, Genome);

/// `id:g.g.g;id:g.g.g`: the sub-networks an evaluation trial measures.
pub fn format_subnets(subnets: &[SubnetRef]) -> String {
    subnets
        .iter()
        .map(|(id, g)| {
            let genes: Vec<String> = g.iter().map(u32::to_string).collect();
            format!("{id}:{}", genes.join("."))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Parses [`format_subnets`]'s text.
pub fn parse_subnets(text: &str) -> Result<Vec<SubnetRef>, String> {
    text.split(';')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (id, genes) = s.split_once(':').ok_or(format!("bad sub-network `{s}`"))?;
            let id = id
                .parse()
                .map_err(|_| format!("bad sub-network id `{id}`"))?;
            let genes = genes
                .split('.')
                .map(|g| g.parse().map_err(|_| format!("bad gene `{g}`")))
                .collect::<Result<Genome, String>>()?;
            Ok((id, genes))
        })
        .collect()
}

impl NasSpec {
    /// Trials of the sweep: the supernet trial, then each generation's batches times
    /// the shards.
    pub fn trials(&self) -> u64 {
        let mut left = u64::from(self.evaluations);
        let mut trials = 1;
        while left > 0 {
            let size = left.min(u64::from(self.population));
            trials += size.div_ceil(u64::from(self.batch)) * u64::from(self.shards);
            left -= size;
        }
        trials
    }

    /// The parameters every trial carries, as a search space (so the trials table has a
    /// column for each).
    pub fn space(&self) -> SearchSpace {
        let int = |high: i64| Domain::Int {
            low: 0,
            high,
            scale: Scale::Linear,
            grid: None,
        };
        let mut params = BTreeMap::new();
        params.insert(
            "role".to_owned(),
            Domain::Choice(vec![
                ParamValue::Str("supernet".into()),
                ParamValue::Str("evaluate".into()),
            ]),
        );
        params.insert("generation".to_owned(), int(i64::from(self.evaluations)));
        params.insert("shard".to_owned(), int(i64::from(self.shards)));
        // Free text: the sub-networks of the trial, `id:genes;…`.
        params.insert(
            "subnets".to_owned(),
            Domain::Fixed(ParamValue::Str(String::new())),
        );
        for (name, v) in self.fixed() {
            params.insert(name.to_owned(), Domain::Fixed(v));
        }
        SearchSpace { params }
    }

    fn fixed(&self) -> Vec<(&'static str, ParamValue)> {
        let int = |v: u32| ParamValue::Int(i64::from(v));
        vec![
            (
                "supernet",
                ParamValue::Str(serde_json::to_string(&self.supernet).unwrap_or_default()),
            ),
            ("shards", int(self.shards)),
            ("epochs", int(self.epochs)),
            ("learning_rate", ParamValue::Float(self.learning_rate)),
            ("batch_size", int(self.batch_size)),
            ("random_subnets", int(self.random_subnets)),
            ("latency_batch", int(self.latency_batch)),
            ("latency_warmup", int(self.latency_warmup)),
            ("latency_repeats", int(self.latency_repeats)),
        ]
    }

    fn params(&self, role: &str, generation: u32, shard: u32, subnets: &[SubnetRef]) -> Params {
        let mut p: Params = self
            .fixed()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        p.insert("role".into(), ParamValue::Str(role.into()));
        p.insert("generation".into(), ParamValue::Int(i64::from(generation)));
        p.insert("shard".into(), ParamValue::Int(i64::from(shard)));
        p.insert("subnets".into(), ParamValue::Str(format_subnets(subnets)));
        p
    }

    /// The constraint-penalised minimisation form of raw objective values.
    pub fn penalise(&self, raw_min: &[f64]) -> Vec<f64> {
        let violation: f64 = self
            .objectives
            .iter()
            .zip(raw_min)
            .map(|(o, v)| o.violation(o.minimised(*v)))
            .sum();
        if violation > 0.0 {
            vec![INFEASIBLE + violation; raw_min.len()]
        } else {
            raw_min.to_vec()
        }
    }
}

/// The median of `v` (the mean of the middle two for an even count; NaN if empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// One shard's measurement of one sub-network.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardResult {
    /// Correct predictions on the shard.
    pub correct: i64,
    /// Rows of the shard.
    pub total: i64,
    /// Median latency, milliseconds.
    pub latency_ms: f64,
    /// MACs per example.
    pub macs: i64,
    /// Parameters.
    pub params: i64,
    /// The hardware the latency was measured on.
    pub hardware: String,
}

/// A sub-network the search asked to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct SubnetRecord {
    /// Its number, in the order the search asked for them.
    pub id: usize,
    /// The generation that asked for it.
    pub generation: u32,
    /// Its genome (canonical).
    pub genome: Genome,
    /// What the predictors said, in objective order (LINAS, after the first generation).
    pub predicted: Option<Vec<f64>>,
    /// Shard results by shard.
    pub shards: BTreeMap<u32, ShardResult>,
    /// The measured objectives, in objective order, once every shard is in.
    pub measured: Option<Vec<f64>>,
}

impl SubnetRecord {
    fn combine(&mut self, spec: &NasSpec) {
        if self.shards.len() != spec.shards as usize {
            return;
        }
        let correct: i64 = self.shards.values().map(|s| s.correct).sum();
        let total: i64 = self.shards.values().map(|s| s.total).sum();
        let latency = median(self.shards.values().map(|s| s.latency_ms).collect());
        let first = self.shards.values().next();
        self.measured = Some(
            spec.objectives
                .iter()
                .map(|o| match o.metric {
                    NasMetric::Accuracy => correct as f64 / total.max(1) as f64,
                    NasMetric::LatencyMs => latency,
                    NasMetric::Macs => first.map_or(0.0, |s| s.macs as f64),
                    NasMetric::Params => first.map_or(0.0, |s| s.params as f64),
                })
                .collect(),
        );
    }

    /// Whether it was measured and is within every constraint (`None`: not measured).
    pub fn feasible(&self, objectives: &[NasObjective]) -> Option<bool> {
        let m = self.measured.as_ref()?;
        Some(
            objectives
                .iter()
                .zip(m)
                .all(|(o, v)| o.violation(*v) == 0.0),
        )
    }

    /// The hardware labels its latency came from, joined with ` | `.
    pub fn hardware(&self) -> String {
        let set: BTreeSet<&str> = self.shards.values().map(|s| s.hardware.as_str()).collect();
        set.into_iter().collect::<Vec<_>>().join(" | ")
    }
}

/// The `nas` kind's searcher. See the module docs.
#[derive(Debug, Clone)]
pub struct NasSearcher {
    spec: NasSpec,
    seed: u64,
    next_trial: TrialId,
    supernet: Vec<Artifact>,
    shape: Option<Shape>,
    supernet_failed: bool,
    subnets: Vec<SubnetRecord>,
    generations: u32,
    queue: VecDeque<TrialRequest>,
    /// Evaluation trials not yet told, with their sub-networks and shard.
    pending: BTreeMap<TrialId, (Vec<usize>, u32)>,
}

impl NasSearcher {
    /// A searcher for `spec` seeded with `seed`.
    pub fn new(spec: NasSpec, seed: u64) -> Self {
        Self {
            spec,
            seed,
            next_trial: 0,
            supernet: Vec::new(),
            shape: None,
            supernet_failed: false,
            subnets: Vec::new(),
            generations: 0,
            queue: VecDeque::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Every sub-network asked for so far.
    pub fn subnets(&self) -> &[SubnetRecord] {
        &self.subnets
    }

    /// The data shape the super-network was trained on, once known.
    pub fn shape(&self) -> Option<Shape> {
        self.shape
    }

    fn request(&mut self, params: Params) -> TrialRequest {
        let trial_id = self.next_trial;
        self.next_trial += 1;
        TrialRequest {
            trial_id,
            params,
            seed: derive_seed(self.seed, trial_id),
        }
    }

    /// Exact objective `k` of a genome, where it is counted rather than measured.
    fn exact(&self, g: &Genome, k: usize) -> Option<f64> {
        let shape = self.shape?;
        let o = self.spec.objectives.get(k)?;
        let (macs, params) = self
            .spec
            .supernet
            .cost(&shape, &self.spec.supernet.decode(g));
        match o.metric {
            NasMetric::Macs => Some(o.minimised(macs as f64)),
            NasMetric::Params => Some(o.minimised(params as f64)),
            _ => None,
        }
    }

    /// Measured sub-networks as (genome, objectives in minimisation form).
    fn measured_min(&self) -> Vec<(Genome, Vec<f64>)> {
        self.subnets
            .iter()
            .filter_map(|s| {
                let m = s.measured.as_ref()?;
                let v = self
                    .spec
                    .objectives
                    .iter()
                    .zip(m)
                    .map(|(o, v)| o.minimised(*v));
                Some((s.genome.clone(), v.collect()))
            })
            .collect()
    }

    fn plan_generation(&mut self) {
        let g = self.generations;
        self.generations += 1;
        let mut rng = Rng::new(derive_seed(self.seed ^ 0x4E41_5321, u64::from(g)));
        let remaining = self.spec.evaluations as usize - self.subnets.len();
        let size = remaining.min(self.spec.population as usize);
        let algo = Nsga2::new(self.spec.supernet.choices(), self.spec.population as usize);
        let measured = self.measured_min();
        let seen: BTreeSet<Genome> = self.subnets.iter().map(|s| s.genome.clone()).collect();
        let candidates: Vec<(Genome, Option<Vec<f64>>)> = match self.spec.tactic {
            _ if g == 0 || measured.is_empty() => Vec::new(),
            Tactic::Random => Vec::new(),
            Tactic::Nsga2 => {
                let pen: Vec<(Genome, Vec<f64>)> = measured
                    .iter()
                    .map(|(g, o)| (g.clone(), self.spec.penalise(o)))
                    .collect();
                algo.offspring(&algo.select(&pen), &seen, &mut rng)
                    .into_iter()
                    .map(|c| (c, None))
                    .collect()
            }
            Tactic::Linas => {
                let spec = &self.spec;
                let exact = |g: &Genome, k: usize| self.exact(g, k);
                let penalise = |o: &[f64]| spec.penalise(o);
                let model = LinasModel {
                    generations: spec.predictor_generations as usize,
                    exact: &exact,
                    penalise: &penalise,
                };
                linas_next(&algo, &measured, &model, &mut rng)
                    .into_iter()
                    .map(|(c, p)| {
                        // Back from minimisation form to the metric's own sign.
                        let raw = spec.objectives.iter().zip(&p).map(|(o, v)| o.minimised(*v));
                        (c, Some(raw.collect()))
                    })
                    .collect()
            }
        };
        let mut taken = seen;
        let mut chosen: Vec<(Genome, Option<Vec<f64>>)> = Vec::new();
        for (c, p) in candidates {
            let c = self.spec.supernet.canonical(&c);
            if chosen.len() < size && taken.insert(c.clone()) {
                chosen.push((c, p));
            }
        }
        // Random draws fill the generation (the first one, or when variation keeps
        // finding what was measured). `evaluations` ≤ distinct sub-networks, so
        // there is always an unseen one; the draw cap only guards a tiny space.
        let mut draws = 0;
        while chosen.len() < size && draws < 1_000_000 {
            draws += 1;
            let c = self.spec.supernet.canonical(&algo.random(&mut rng));
            if taken.insert(c.clone()) {
                chosen.push((c, None));
            }
        }
        let first = self.subnets.len();
        for (i, (genome, predicted)) in chosen.into_iter().enumerate() {
            self.subnets.push(SubnetRecord {
                id: first + i,
                generation: g,
                genome,
                predicted,
                shards: BTreeMap::new(),
                measured: None,
            });
        }
        let ids: Vec<usize> = (first..self.subnets.len()).collect();
        for batch in ids.chunks(self.spec.batch as usize) {
            let refs: Vec<SubnetRef> = batch
                .iter()
                .map(|i| (*i, self.subnets[*i].genome.clone()))
                .collect();
            for shard in 0..self.spec.shards {
                let params = self.spec.params("evaluate", g, shard, &refs);
                let r = self.request(params);
                self.pending.insert(r.trial_id, (batch.to_vec(), shard));
                self.queue.push_back(r);
            }
        }
    }

    /// The evaluation rows of an outcome: sub-network id and its shard result.
    fn shard_rows(outcome: &TrialOutcome) -> Vec<(usize, ShardResult)> {
        let Some(a) = outcome
            .artifacts
            .iter()
            .find(|a| a.table == EVALUATIONS_TABLE)
        else {
            return Vec::new();
        };
        let (Some(id), Some(correct), Some(total), Some(lat), Some(macs), Some(params)) = (
            a.i64s("subnet"),
            a.i64s("correct"),
            a.i64s("total"),
            a.f64s("latency_ms"),
            a.i64s("macs"),
            a.i64s("params"),
        ) else {
            return Vec::new();
        };
        let hardware = match a.columns.get("hardware") {
            Some(ArtifactColumn::Str(h)) => h.clone(),
            _ => Vec::new(),
        };
        (0..a.rows())
            .filter_map(|i| {
                Some((
                    usize::try_from(*id.get(i)?).ok()?,
                    ShardResult {
                        correct: *correct.get(i)?,
                        total: *total.get(i)?,
                        latency_ms: *lat.get(i)?,
                        macs: *macs.get(i)?,
                        params: *params.get(i)?,
                        hardware: hardware.get(i).cloned().unwrap_or_default(),
                    },
                ))
            })
            .collect()
    }

    /// The sweep's derived results: every sub-network, the front, the hypervolume trace.
    pub fn summary(&self) -> NasSummary {
        let spec = &self.spec;
        let measured: Vec<&SubnetRecord> = self
            .subnets
            .iter()
            .filter(|s| s.measured.is_some())
            .collect();
        let min_form = |s: &SubnetRecord| -> Vec<f64> {
            let m = s.measured.as_deref().unwrap_or(&[]);
            spec.objectives
                .iter()
                .zip(m)
                .map(|(o, v)| o.minimised(*v))
                .collect()
        };
        let feasible = |s: &SubnetRecord| s.feasible(&spec.objectives) == Some(true);
        // The reference point, in minimisation form: as given, else 0 for a maximised
        // objective and the worst measured value for a minimised one.
        let reference: Vec<f64> = spec
            .objectives
            .iter()
            .enumerate()
            .map(|(k, o)| match (o.reference, o.goal) {
                (Some(r), _) => o.minimised(r),
                (None, Goal::Maximize) => 0.0,
                (None, Goal::Minimize) => measured
                    .iter()
                    .map(|s| min_form(s)[k])
                    .fold(f64::NEG_INFINITY, f64::max)
                    .max(0.0),
            })
            .collect();
        let feasible_points: Vec<(usize, Vec<f64>)> = measured
            .iter()
            .filter(|s| feasible(s))
            .map(|s| (s.id, min_form(s)))
            .collect();
        let pts: Vec<Vec<f64>> = feasible_points.iter().map(|(_, p)| p.clone()).collect();
        let front: Vec<usize> = fronts(&pts)
            .first()
            .map(|f| f.iter().map(|i| feasible_points[*i].0).collect())
            .unwrap_or_default();
        let mut trace = Vec::new();
        let mut so_far: Vec<Vec<f64>> = Vec::new();
        let mut count = 0;
        for s in &measured {
            count += 1;
            if feasible(s) {
                so_far.push(min_form(s));
            }
            trace.push((count, hypervolume(&so_far, &reference)));
        }
        NasSummary {
            objectives: spec.objectives.clone(),
            reference,
            subnets: self.subnets.clone(),
            front,
            hypervolume: trace,
            choices: spec.supernet.choices(),
        }
    }
}

/// What a `nas` sweep found.
#[derive(Debug, Clone, PartialEq)]
pub struct NasSummary {
    /// The objectives.
    pub objectives: Vec<NasObjective>,
    /// The hypervolume reference point, in minimisation form.
    pub reference: Vec<f64>,
    /// Every sub-network asked for.
    pub subnets: Vec<SubnetRecord>,
    /// Ids of the feasible non-dominated sub-networks.
    pub front: Vec<usize>,
    /// (measured so far, hypervolume of their feasible front).
    pub hypervolume: Vec<(usize, f64)>,
    /// Values per gene.
    pub choices: Vec<u32>,
}

impl Searcher for NasSearcher {
    fn ask(&mut self) -> Ask {
        if self.next_trial == 0 {
            let params = self.spec.params("supernet", 0, 0, &[]);
            return Ask::Trial(self.request(params));
        }
        if let Some(r) = self.queue.pop_front() {
            return Ask::Trial(r);
        }
        if self.supernet_failed {
            return Ask::Done;
        }
        if self.shape.is_none() || !self.pending.is_empty() {
            return Ask::Wait;
        }
        if self.subnets.len() >= self.spec.evaluations as usize {
            return Ask::Done;
        }
        self.plan_generation();
        match self.queue.pop_front() {
            Some(r) => Ask::Trial(r),
            None => Ask::Done,
        }
    }

    fn tell(&mut self, outcome: &TrialOutcome) {
        if outcome.trial_id == 0 {
            let shape = outcome
                .artifacts
                .iter()
                .find(|a| a.table == SHAPE_TABLE)
                .and_then(|a| {
                    let get = |c: &str| a.i64s(c)?.first().and_then(|v| u32::try_from(*v).ok());
                    Some(Shape {
                        inputs: get("inputs")?,
                        classes: get("classes")?,
                        side: get("side")?,
                    })
                });
            match shape {
                Some(s) if outcome.status == TrialStatus::Finished => {
                    self.shape = Some(s);
                    self.supernet = outcome
                        .artifacts
                        .iter()
                        .filter(|a| a.table == SUPERNET_TABLE || a.table == SHAPE_TABLE)
                        .cloned()
                        .collect();
                }
                _ => self.supernet_failed = true,
            }
            return;
        }
        let Some((ids, shard)) = self.pending.remove(&outcome.trial_id) else {
            return;
        };
        let wanted: BTreeSet<usize> = ids.iter().copied().collect();
        for (id, r) in Self::shard_rows(outcome) {
            if wanted.contains(&id) {
                self.subnets[id].shards.insert(shard, r);
            }
        }
        let spec = &self.spec;
        for id in ids {
            self.subnets[id].combine(spec);
        }
    }

    fn issued(&self) -> u64 {
        self.next_trial - self.queue.len() as u64
    }

    fn inputs(&self, request: &TrialRequest) -> Vec<Artifact> {
        if request.trial_id == 0 {
            Vec::new()
        } else {
            self.supernet.clone()
        }
    }

    fn summary(&self) -> Option<crate::searcher::KindSummary> {
        Some(crate::searcher::KindSummary::Nas(Box::new(
            NasSearcher::summary(self),
        )))
    }
}

/// A made-up outcome of `r` for tests of the searcher: the supernet trial reports a
/// 64-input, 10-class shape; an evaluation trial reports, per sub-network, an accuracy
/// that grows and a latency (MACs / 1000 ms) that grows with its MACs.
pub fn synthetic_outcome(spec: &NasSpec, r: &TrialRequest) -> TrialOutcome {
    let mut artifacts = Vec::new();
    let shape = Shape {
        inputs: 64,
        classes: 10,
        side: 0,
    };
    if r.trial_id == 0 {
        let one = |v: i64| ArtifactColumn::I64(vec![v]);
        artifacts.push(Artifact {
            table: SHAPE_TABLE.into(),
            columns: [
                ("inputs".into(), one(64)),
                ("classes".into(), one(10)),
                ("side".into(), one(0)),
            ]
            .into_iter()
            .collect(),
        });
        artifacts.push(Artifact {
            table: SUPERNET_TABLE.into(),
            columns: [("value".into(), ArtifactColumn::F64(vec![0.5; 3]))]
                .into_iter()
                .collect(),
        });
    } else {
        let subnets = parse_subnets(r.params["subnets"].as_str().unwrap()).unwrap();
        let shard = r.params["shard"].as_i64().unwrap();
        let mut cols: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        let (mut lat, mut hw) = (Vec::new(), Vec::new());
        for (id, g) in &subnets {
            let (macs, params) = spec.supernet.cost(&shape, &spec.supernet.decode(g));
            let total = 50 + shard;
            let acc = 1.0 - 1.0 / (1.0 + (macs as f64).ln());
            for (c, v) in [
                ("subnet", *id as i64),
                ("correct", (acc * total as f64) as i64),
                ("total", total),
                ("macs", macs as i64),
                ("params", params as i64),
                ("shard", shard),
            ] {
                cols.entry(c).or_default().push(v);
            }
            lat.push(macs as f64 / 1000.0 + shard as f64 * 0.01);
            hw.push("test-cpu".to_owned());
        }
        let mut columns: BTreeMap<String, ArtifactColumn> = cols
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ArtifactColumn::I64(v)))
            .collect();
        columns.insert("latency_ms".into(), ArtifactColumn::F64(lat));
        columns.insert("hardware".into(), ArtifactColumn::Str(hw));
        artifacts.push(Artifact {
            table: EVALUATIONS_TABLE.into(),
            columns,
        });
    }
    TrialOutcome {
        trial_id: r.trial_id,
        status: TrialStatus::Finished,
        objective: None,
        steps: 1,
        artifacts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn mlp_spec(tactic: Tactic, evaluations: u32) -> NasSpec {
        let raw: RawNas = serde_yaml::from_str(&format!(
            "supernet: {{ family: mlp, depth: [1, 2, 3], width: [8, 16, 32, 64] }}\n\
             objectives:\n  - {{ metric: accuracy, goal: maximize }}\n  - {{ metric: latency_ms, goal: minimize }}\n\
             tactic: {}\npopulation: 10\nevaluations: {evaluations}\nshards: 2\nbatch: 4\npredictor_generations: 10\n",
            tactic.as_str()
        ))
        .unwrap();
        raw.validate().unwrap()
    }

    #[test]
    fn genes_decode_canonicalise_and_count() {
        let s = mlp_spec(Tactic::Random, 20).supernet;
        assert_eq!(s.choices(), vec![3, 4, 4, 4]);
        assert_eq!(
            s.decode(&vec![1, 3, 0, 2]),
            Arch::Mlp {
                widths: vec![64, 8]
            }
        );
        assert_eq!(s.canonical(&vec![1, 3, 0, 2]), vec![1, 3, 0, 0]);
        assert_eq!(s.distinct(), 4 + 16 + 64);
        let shape = Shape {
            inputs: 64,
            classes: 10,
            side: 0,
        };
        assert_eq!(
            s.cost(&shape, &s.decode(&vec![0, 1, 0, 0])),
            (64 * 16 + 16 * 10, 64 * 16 + 16 + 16 * 10 + 10)
        );
        let conv = Supernet::Conv {
            channels: vec![4, 8, 12],
            depth: vec![1, 2],
            kernel: vec![3, 5],
            expand: vec![2, 4],
        };
        assert_eq!(conv.choices(), vec![2, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
        let arch = conv.decode(&vec![1, 0, 0, 1, 1, 0, 0, 1, 0, 1]);
        assert_eq!(
            arch,
            Arch::Conv {
                stages: vec![vec![(5, 4)], vec![(3, 2), (5, 4)]]
            }
        );
        assert_eq!(
            conv.canonical(&vec![1, 1, 0, 1, 1, 1, 0, 1, 0, 1]),
            vec![1, 0, 0, 1, 1, 0, 0, 1, 0, 1]
        );
        assert_eq!(conv.distinct(), (4 + 16) * (4 + 16));
        // Stem 3×3 on 8×8, then stage 1 (8×8, one block 4→16→8) and stage 2.
        let (macs, _) = conv.cost(
            &Shape {
                inputs: 64,
                classes: 10,
                side: 8,
            },
            &arch,
        );
        let stem = 64 * 9 * 4;
        let s1 = 64 * 4 * 16 + 64 * 25 * 16 + 64 * 16 * 8;
        let s2 = (64 * 8 * 16 + 16 * 9 * 16 + 16 * 16 * 12)
            + (16 * 12 * 48 + 16 * 25 * 48 + 16 * 48 * 12);
        assert_eq!(macs, stem + s1 + s2 + 12 * 10);
    }

    fn run(spec: &NasSpec, seed: u64) -> (Vec<TrialRequest>, NasSearcher) {
        let mut s = NasSearcher::new(spec.clone(), seed);
        let mut asked = Vec::new();
        let mut running: Vec<TrialRequest> = Vec::new();
        loop {
            match s.ask() {
                Ask::Trial(t) => {
                    asked.push(t.clone());
                    running.push(t);
                }
                // Finish the newest first: out-of-order completion.
                Ask::Wait => match running.pop() {
                    Some(t) => s.tell(&synthetic_outcome(spec, &t)),
                    None => panic!("waiting with nothing running"),
                },
                Ask::Done => break,
            }
        }
        assert!(running.is_empty(), "done with trials still running");
        (asked, s)
    }

    #[test]
    fn every_tactic_measures_the_budget_once_each_with_the_planned_trials() {
        for tactic in [Tactic::Random, Tactic::Nsga2, Tactic::Linas] {
            let spec = mlp_spec(tactic, 27);
            let (asked, s) = run(&spec, 5);
            assert_eq!(asked.len() as u64, spec.trials(), "{tactic:?}");
            assert_eq!(asked[0].params["role"].as_str(), Some("supernet"));
            let genomes: BTreeSet<&Genome> = s.subnets().iter().map(|r| &r.genome).collect();
            assert_eq!(
                genomes.len(),
                27,
                "{tactic:?}: no sub-network measured twice"
            );
            assert!(s.subnets().iter().all(|r| r.measured.is_some()));
            // Accuracy = shard counts added: correct/total over 50 + 51 rows.
            let acc = s.subnets()[0].measured.as_ref().unwrap()[0];
            assert!(acc > 0.0 && acc < 1.0);
            let predicted = s.subnets().iter().filter(|r| r.predicted.is_some()).count();
            assert_eq!(predicted > 0, tactic == Tactic::Linas, "{tactic:?}");
            let sum = s.summary();
            assert_eq!(sum.hypervolume.len(), 27);
            assert!(sum.hypervolume.windows(2).all(|w| w[1].1 >= w[0].1));
            assert!(!sum.front.is_empty());
            let second = s.subnets().iter().find(|r| r.generation == 1).unwrap();
            let shown = r#"{"family":"mlp","depth":[1,2,3],"width":[8,16,32,64]}"#;
            assert_eq!(asked[1].params["supernet"].as_str(), Some(shown));
            assert!(second.id >= 10);
        }
    }

    #[test]
    fn evaluation_trials_carry_the_supernet_and_a_failed_supernet_ends_the_sweep() {
        let spec = mlp_spec(Tactic::Linas, 12);
        let mut s = NasSearcher::new(spec.clone(), 1);
        let Ask::Trial(t0) = s.ask() else { panic!() };
        assert_eq!(s.ask(), Ask::Wait);
        s.tell(&synthetic_outcome(&spec, &t0));
        let Ask::Trial(t1) = s.ask() else { panic!() };
        let inputs = s.inputs(&t1);
        assert_eq!(inputs.len(), 2);
        assert!(inputs.iter().any(|a| a.table == SUPERNET_TABLE));
        let mut f = NasSearcher::new(spec, 1);
        let Ask::Trial(t0) = f.ask() else { panic!() };
        f.tell(&TrialOutcome {
            trial_id: t0.trial_id,
            status: TrialStatus::Failed,
            objective: None,
            steps: 0,
            artifacts: Vec::new(),
        });
        assert_eq!(f.ask(), Ask::Done);
    }

    #[test]
    fn constraints_keep_infeasible_subnets_off_the_front() {
        let mut spec = mlp_spec(Tactic::Nsga2, 30);
        // Latency here is MACs / 1000: cap it at 3 ms.
        spec.objectives[1].max = Some(3.0);
        let (_, s) = run(&spec, 2);
        let sum = s.summary();
        for id in &sum.front {
            assert!(sum.subnets[*id].measured.as_ref().unwrap()[1] <= 3.0);
        }
        assert!(
            sum.subnets
                .iter()
                .any(|r| r.measured.as_ref().unwrap()[1] > 3.0)
        );
    }

    #[test]
    fn subnets_text_round_trips() {
        let refs = vec![(3, vec![1, 0, 2]), (14, vec![0, 0, 0])];
        assert_eq!(format_subnets(&refs), "3:1.0.2;14:0.0.0");
        assert_eq!(parse_subnets(&format_subnets(&refs)).unwrap(), refs);
        assert!(parse_subnets("3:1.x").is_err());
    }
}
