//! The `metalic` sweep kind: a contextual GP bandit that learns which interface
//! conditions train a two-subdomain PINN best for each member of a PDE family (METALIC,
//! Li et al., ICML 2023; reference code `shib0li/METALIC`), or, as a program task, which
//! on/off switches of any program's hyperparameters work best for each context.
//!
//! The protocol. Round `r` draws a context from the seed; every policy plays it with the
//! same training seed (the same points and initial weights: only the arm differs), so
//! rounds compare across policies and the regret of a round is measured against the best
//! reward any policy reached on it. Warm-up rounds play random arms; the random and
//! bandit policies share those trials. Play rounds are planned `batch` at a time: each GP
//! bandit refits on its own finished rounds and suggests a batch (kriging believer for UCB,
//! joint posterior draws for Thompson, see [`crate::gp`]); fixed and random policies play
//! their arms. After the play rounds, every policy plays the fresh test contexts (the
//! bandits greedily on the posterior mean). Each round is one trial; the searcher waits
//! for a batch before planning the next, so it is deterministic given the outcomes and
//! rebuilds exactly from the recorded trials after a restart.

use std::collections::{BTreeMap, VecDeque};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::gp::{Acquisition, Observation, suggest};
use crate::locate::PathStep;
use crate::nas_sweep::positive;
use crate::rng::{Rng, derive_seed};
use crate::searcher::{Ask, Searcher};
use crate::space::{Domain, ParamValue, Params, Scale, SearchSpace};
use crate::spec::Problem;
use crate::trial::{TrialId, TrialOutcome, TrialRequest, TrialStatus};

/// The worker program a `metalic` sweep's trials run.
pub const PROGRAM: &str = "metalic-pinn";
/// Per trial, one row per training phase (written as trials finish).
pub const PHASES_TABLE: &str = "phases";
/// Per policy, one row per warm-up and play round (written at completion).
pub const ROUNDS_TABLE: &str = "rounds";
/// Per policy, one row per test context (written at completion).
pub const TESTS_TABLE: &str = "tests";
/// Tables trials write as they finish.
pub const TABLES: &[&str] = &[PHASES_TABLE];
/// The largest error a round reports; rewards are `−log10(min(error, cap))`.
pub const ERROR_CAP: f64 = 100.0;

/// A parametric PDE family; the parameter is the bandit's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `u_t + β u_x = 0` on `[0, 2π] × [0, 1]`, `u = sin(x − βt)`; context β.
    Advection,
    /// `u_t − ρ u (1 − u) = 0` on `[0, 2π] × [0, 1]`, logistic closed form; context ρ.
    Reaction,
    /// `u_xx + u_yy = f` on `[0, 1]²` with an erf bump forcing of sharpness `s`; reference
    /// solution by finite differences; context `s`.
    Poisson,
}

impl Family {
    /// The name as written in sweep files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Family::Advection => "advection",
            Family::Reaction => "reaction",
            Family::Poisson => "poisson",
        }
    }

    /// The context's name (`beta`, `rho`, `sharpness`).
    pub fn context_name(&self) -> &'static str {
        match self {
            Family::Advection => "beta",
            Family::Reaction => "rho",
            Family::Poisson => "sharpness",
        }
    }

    /// The reference's context range.
    pub fn default_range(&self) -> [f64; 2] {
        match self {
            Family::Advection => [1.0, 30.0],
            Family::Reaction => [1.0, 15.0],
            Family::Poisson => [1.0, 50.0],
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Family> {
        [Family::Advection, Family::Reaction, Family::Poisson]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// One interface condition: a loss term coupling the two subdomains' networks on the
/// interface. `y` is the coordinate normal to the interface (time for advection and
/// reaction), `x` the tangential one; `u₁, u₂` are the networks, `f₁, f₂` their PDE
/// residuals. Each term is a mean over the interface points.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Term {
    /// `(u₁ − u₂)²`: solution continuity.
    Solution,
    /// `(u₁ − ū)² + (u₂ − ū)²`, `ū` the average: the average-solution condition.
    Average,
    /// `f₁² + f₂²`: each network's residual on the interface.
    Residual,
    /// `(f₁ − f₂)²`: residual continuity.
    ResidualContinuity,
    /// `(∂_y u₁ − ∂_y u₂)²`: flux (normal derivative) continuity.
    Flux,
    /// `(∂_yy u₁ − ∂_yy u₂)²`: second normal derivative continuity.
    NormalSecond,
    /// `|∇f₁|² + |∇f₂|²`: the residual's gradient (gPINN).
    ResidualGradient,
    /// `(∂_x u₁ − ∂_x u₂)²`: tangential derivative continuity.
    Tangential,
    /// `(∂_xx u₁ − ∂_xx u₂)²`: second tangential derivative continuity.
    TangentialSecond,
}

impl Term {
    /// Every term, in bit order (bit `i` of an arm switches `ALL[i]` on).
    pub const ALL: [Term; 9] = [
        Term::Solution,
        Term::Average,
        Term::Residual,
        Term::ResidualContinuity,
        Term::Flux,
        Term::NormalSecond,
        Term::ResidualGradient,
        Term::Tangential,
        Term::TangentialSecond,
    ];

    /// The name as written in sweep files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Term::Solution => "solution",
            Term::Average => "average",
            Term::Residual => "residual",
            Term::ResidualContinuity => "residual_continuity",
            Term::Flux => "flux",
            Term::NormalSecond => "normal_second",
            Term::ResidualGradient => "residual_gradient",
            Term::Tangential => "tangential",
            Term::TangentialSecond => "tangential_second",
        }
    }

    /// The term's bit in an arm.
    pub fn bit(&self) -> u32 {
        1 << Term::ALL.iter().position(|t| t == self).unwrap_or(0)
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Term> {
        Term::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// An arm as text: one `0`/`1` per term in bit order (`"010100000"` is average +
/// residual continuity).
pub fn format_arm(arm: u32) -> String {
    format_bits(arm, Term::ALL.len())
}

/// The first `n` bits of `arm`, lowest first, as `0`/`1` text.
pub fn format_bits(arm: u32, n: usize) -> String {
    (0..n)
        .map(|i| if arm >> i & 1 == 1 { '1' } else { '0' })
        .collect()
}

/// Parses [`format_arm`]'s text.
pub fn parse_arm(s: &str) -> Option<u32> {
    if s.len() != Term::ALL.len() {
        return None;
    }
    s.chars().enumerate().try_fold(0u32, |acc, (i, c)| match c {
        '0' => Some(acc),
        '1' => Some(acc | 1 << i),
        _ => None,
    })
}

/// The terms an arm switches on.
pub fn arm_terms(arm: u32) -> Vec<Term> {
    Term::ALL
        .into_iter()
        .filter(|t| arm & t.bit() != 0)
        .collect()
}

/// A bandit over any program: the context is one of its hyperparameters, the arm sets
/// others to one of two values each, the reward is its objective (negated when it is
/// minimised).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramTask {
    /// The program trials run.
    pub program: String,
    /// The objective metric.
    pub metric: String,
    /// Its goal.
    pub goal: crate::spec::Goal,
    /// The context hyperparameter.
    pub context_param: String,
    /// Switches: name, off value, on value.
    pub switches: Vec<(String, ParamValue, ParamValue)>,
    /// Other hyperparameters, fixed.
    pub fixed: Vec<(String, ParamValue)>,
}

/// What a program-task sweep's top level gives the `metalic` section.
#[derive(Debug, Clone, Default)]
pub struct Outer {
    /// Top-level `program`.
    pub program: Option<String>,
    /// Top-level `objective`.
    pub objective: Option<(String, crate::spec::Goal)>,
    /// Top-level `space` (fixed values only).
    pub fixed: Vec<(String, ParamValue)>,
}

/// How a policy picks arms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// GP-UCB.
    Ucb,
    /// GP Thompson sampling.
    Thompson,
    /// A uniformly random arm every round (and at test).
    Random,
    /// Always this arm.
    Fixed(u32),
}

/// A named policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Its name in the tables.
    pub name: String,
    /// How it picks.
    pub rule: Rule,
}

impl Policy {
    /// Whether the policy learns from its rounds (a GP bandit).
    pub fn learns(&self) -> bool {
        matches!(self.rule, Rule::Ucb | Rule::Thompson)
    }
}

/// A policy as written: `ucb`, `thompson`, `random`, or `{ name: NAME, fixed: [terms] }`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawPolicy {
    /// `ucb`, `thompson` or `random`.
    Named(String),
    /// A fixed set of interface terms.
    Fixed {
        /// The policy's name in the tables.
        name: String,
        /// The terms it always switches on (may be empty: no interface terms).
        fixed: Vec<String>,
    },
}

/// Adam's settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdam {
    /// Full-batch steps (default 1000; 0 skips the phase).
    #[serde(default)]
    pub steps: Option<u32>,
    /// Learning rate (default 0.001).
    #[serde(default)]
    pub learning_rate: Option<f64>,
}

/// L-BFGS's settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLbfgs {
    /// Iterations (default 1000; 0 skips the phase).
    #[serde(default)]
    pub iterations: Option<u32>,
    /// Curvature pairs kept (default 50).
    #[serde(default)]
    pub history: Option<u32>,
}

/// Point counts.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPoints {
    /// Boundary and initial-condition points per subdomain (default 100).
    #[serde(default)]
    pub boundary: Option<u32>,
    /// Latin-hypercube collocation points per subdomain (default 1000).
    #[serde(default)]
    pub collocation: Option<u32>,
    /// Points on the interface (default 101).
    #[serde(default)]
    pub interface: Option<u32>,
}

/// Loss weights.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWeights {
    /// Boundary loss weight (default 20).
    #[serde(default)]
    pub boundary: Option<f64>,
    /// Residual loss weight (default 1).
    #[serde(default)]
    pub residual: Option<f64>,
    /// Weight of the sum of the selected interface terms (default 5).
    #[serde(default)]
    pub interface: Option<f64>,
}

/// The `metalic` section as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetalic {
    /// `advection`, `reaction` or `poisson` (a PINN task); leave it out to play the
    /// bandit over any program (top-level `program` and `objective`, with
    /// `context_param` and `switches`).
    #[serde(default)]
    pub family: Option<String>,
    /// Program tasks: the hyperparameter that is the context (a float drawn from
    /// `context` each round).
    #[serde(default)]
    pub context_param: Option<String>,
    /// Program tasks: the arm's switches, each a hyperparameter with its off and on value
    /// (`{ optimizer: [sgd, adam], depth: [1, 2] }`); bit `i` is the `i`-th switch.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, Vec<serde_json::Value>>>")]
    pub switches: Option<serde_yaml::Mapping>,
    /// The family parameter's range `[low, high]`, drawn uniformly each round (default:
    /// the reference's, e.g. β ∈ [1, 30]).
    #[serde(default)]
    pub context: Option<[f64; 2]>,
    /// The interface terms the arms switch (default all nine: 512 arms).
    #[serde(default)]
    pub terms: Option<Vec<String>>,
    /// Hidden widths of each subdomain's tanh network (default [20, 20]).
    #[serde(default)]
    pub hidden: Option<Vec<u32>>,
    /// Point counts.
    #[serde(default)]
    pub points: RawPoints,
    /// Loss weights.
    #[serde(default)]
    pub weights: RawWeights,
    /// The stochastic phase.
    #[serde(default)]
    pub adam: RawAdam,
    /// The deterministic phase, continuing Adam's weights.
    #[serde(default)]
    pub lbfgs: RawLbfgs,
    /// One arm and one GP per phase (the reference's two-stage bandit) instead of one arm
    /// for the whole training (default false).
    #[serde(default)]
    pub two_stage: Option<bool>,
    /// Policies compared on the same contexts (default `[ucb]`).
    #[serde(default)]
    pub policies: Option<Vec<RawPolicy>>,
    /// UCB's exploration weight β (default 1).
    #[serde(default)]
    pub beta: Option<f64>,
    /// Random warm-up rounds before the bandits play (default 5).
    #[serde(default)]
    pub warmup: Option<u32>,
    /// Play rounds (default 40).
    #[serde(default)]
    pub rounds: Option<u32>,
    /// Fresh test contexts, played greedily on the posterior mean (default 20).
    #[serde(default)]
    pub test: Option<u32>,
    /// Rounds each policy plays at once, on different workers (default 2).
    #[serde(default)]
    pub batch: Option<u32>,
    /// Adam steps of the GP's hyperparameter fit per round (default 100).
    #[serde(default)]
    pub fit_iterations: Option<u32>,
}

/// A validated `metalic` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetalicSpec {
    /// The PDE family (PINN tasks).
    pub family: Option<Family>,
    /// The program task (when there is no family).
    pub program: Option<ProgramTask>,
    /// The context range.
    pub context: [f64; 2],
    /// Bits the arms may switch (a mask over [`Term::ALL`]).
    pub terms: u32,
    /// Hidden widths.
    pub hidden: Vec<u32>,
    /// Boundary points per subdomain.
    pub boundary: u32,
    /// Collocation points per subdomain.
    pub collocation: u32,
    /// Interface points.
    pub interface: u32,
    /// Loss weights (boundary, residual, interface).
    pub weights: [f64; 3],
    /// Adam steps.
    pub adam_steps: u32,
    /// Adam learning rate.
    pub adam_learning_rate: f64,
    /// L-BFGS iterations.
    pub lbfgs_iterations: u32,
    /// L-BFGS history.
    pub lbfgs_history: u32,
    /// One arm per phase.
    pub two_stage: bool,
    /// Policies (serialised as their names and rules).
    #[serde(with = "policies_serde")]
    pub policies: Vec<Policy>,
    /// UCB's β.
    pub beta: f64,
    /// Warm-up rounds.
    pub warmup: u32,
    /// Play rounds.
    pub rounds: u32,
    /// Test contexts.
    pub test: u32,
    /// Rounds per policy at once.
    pub batch: u32,
    /// GP fit steps.
    pub fit_iterations: u32,
}

mod policies_serde {
    use super::{Policy, Rule, format_arm, parse_arm};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wire {
        name: String,
        rule: String,
    }

    pub(super) fn serialize<S: Serializer>(p: &[Policy], s: S) -> Result<S::Ok, S::Error> {
        p.iter()
            .map(|p| Wire {
                name: p.name.clone(),
                rule: match p.rule {
                    Rule::Ucb => "ucb".into(),
                    Rule::Thompson => "thompson".into(),
                    Rule::Random => "random".into(),
                    Rule::Fixed(a) => format!("fixed:{}", format_arm(a)),
                },
            })
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Policy>, D::Error> {
        let wire = Vec::<Wire>::deserialize(d)?;
        wire.into_iter()
            .map(|w| {
                let rule = match w.rule.as_str() {
                    "ucb" => Rule::Ucb,
                    "thompson" => Rule::Thompson,
                    "random" => Rule::Random,
                    other => Rule::Fixed(
                        other
                            .strip_prefix("fixed:")
                            .and_then(parse_arm)
                            .ok_or_else(|| serde::de::Error::custom(format!("bad rule {other}")))?,
                    ),
                };
                Ok(Policy { name: w.name, rule })
            })
            .collect()
    }
}

fn at(path: &[PathStep], message: impl Into<String>, hint: impl Into<String>) -> Problem {
    Problem {
        path: path.to_vec(),
        message: message.into(),
        hint: hint.into(),
    }
}

fn key(path: &[&str]) -> Vec<PathStep> {
    std::iter::once("metalic")
        .chain(path.iter().copied())
        .map(|k| PathStep::Key(k.into()))
        .collect()
}

fn finite_positive(
    v: Option<f64>,
    default: f64,
    path: &[&str],
    hint: &str,
    zero_ok: bool,
) -> Result<f64, Problem> {
    let v = v.unwrap_or(default);
    if v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0)) {
        Ok(v)
    } else {
        Err(at(
            &key(path),
            format!(
                "`{}` is {v}; it must be a {} number",
                path.last().copied().unwrap_or(""),
                if zero_ok { "non-negative" } else { "positive" }
            ),
            hint,
        ))
    }
}

fn terms_hint() -> String {
    let names: Vec<&str> = Term::ALL.iter().map(Term::as_str).collect();
    format!("interface terms are {}", names.join(", "))
}

/// The most switches a program task may have (arms are enumerated).
pub const MAX_SWITCHES: usize = 12;

fn yaml_scalar(v: &serde_yaml::Value) -> Option<ParamValue> {
    match v {
        serde_yaml::Value::Bool(b) => Some(ParamValue::Bool(*b)),
        serde_yaml::Value::Number(n) => n
            .as_i64()
            .map(ParamValue::Int)
            .or_else(|| n.as_f64().map(ParamValue::Float)),
        serde_yaml::Value::String(s) => Some(ParamValue::Str(s.clone())),
        _ => None,
    }
}

impl RawMetalic {
    /// A program task: the top level's program, objective and fixed values, with this
    /// section's context hyperparameter and switches.
    fn program_task(&self, outer: &Outer) -> Result<ProgramTask, Problem> {
        let pinn_only = [
            ("terms", self.terms.is_some()),
            ("hidden", self.hidden.is_some()),
            (
                "points",
                self.points.boundary.is_some()
                    || self.points.collocation.is_some()
                    || self.points.interface.is_some(),
            ),
            (
                "weights",
                self.weights.boundary.is_some()
                    || self.weights.residual.is_some()
                    || self.weights.interface.is_some(),
            ),
            (
                "adam",
                self.adam.steps.is_some() || self.adam.learning_rate.is_some(),
            ),
            (
                "lbfgs",
                self.lbfgs.iterations.is_some() || self.lbfgs.history.is_some(),
            ),
            ("two_stage", self.two_stage.is_some()),
        ];
        if let Some((k, _)) = pinn_only.iter().find(|(_, there)| *there) {
            return Err(at(
                &key(&[k]),
                format!("`{k}` is for PINN tasks, and this sweep has no `family`"),
                "add `family:` for a PINN task, or remove it when the bandit plays a program",
            ));
        }
        let Some(program) = outer.program.clone() else {
            return Err(at(
                &key(&[]),
                "a metalic sweep needs a PDE `family`, or a top-level `program` for the bandit to play",
                "add `family: advection` (or reaction, poisson), or `program:` with `metalic.context_param` and `metalic.switches`",
            ));
        };
        let Some((metric, goal)) = outer.objective.clone() else {
            return Err(at(
                &[],
                "a metalic sweep over a program needs an `objective`",
                "add e.g. `objective: { metric: val_accuracy, goal: maximize }` (the reward)",
            ));
        };
        let Some(context_param) = self.context_param.clone() else {
            return Err(at(
                &key(&[]),
                "a metalic sweep over a program needs `context_param`",
                "name the hyperparameter drawn from `context` each round, e.g. `context_param: weight_decay`",
            ));
        };
        if self.context.is_none() {
            return Err(at(
                &key(&["context_param"]),
                "a metalic sweep over a program needs the context's range",
                "add `context: [low, high]`",
            ));
        }
        let mut switches = Vec::new();
        for (k, v) in self.switches.iter().flatten() {
            let name = k.as_str().unwrap_or_default().to_owned();
            let path = key(&["switches", &name]);
            let values: Vec<ParamValue> = match v {
                serde_yaml::Value::Sequence(items) => {
                    items.iter().filter_map(yaml_scalar).collect()
                }
                _ => Vec::new(),
            };
            let [off, on] = values.as_slice() else {
                return Err(at(
                    &path,
                    format!("switch `{name}` needs two values"),
                    "give `[off value, on value]`, e.g. `[sgd, adam]`",
                ));
            };
            if off == on {
                return Err(at(
                    &path,
                    format!("switch `{name}` has the same value twice"),
                    "give two different values",
                ));
            }
            if name == context_param || outer.fixed.iter().any(|(f, _)| *f == name) {
                return Err(at(
                    &path,
                    format!("`{name}` is also the context or a fixed value"),
                    "give each hyperparameter one role",
                ));
            }
            switches.push((name, off.clone(), on.clone()));
        }
        if switches.is_empty() || switches.len() > MAX_SWITCHES {
            return Err(at(
                &key(&["switches"]),
                format!(
                    "{} switches; a program task takes 1 to {MAX_SWITCHES}",
                    switches.len()
                ),
                "e.g. `switches: { optimizer: [sgd, adam], depth: [1, 2] }`",
            ));
        }
        if outer.fixed.iter().any(|(f, _)| *f == context_param) {
            return Err(at(
                &key(&["context_param"]),
                format!("`{context_param}` is also fixed in `space`"),
                "remove it from `space`",
            ));
        }
        Ok(ProgramTask {
            program,
            metric,
            goal,
            context_param,
            switches,
            fixed: outer.fixed.clone(),
        })
    }

    /// Checks the section (and, for a program task, what the top level gives it);
    /// errors are located under `metalic`.
    pub fn validate(self, outer: &Outer) -> Result<MetalicSpec, Problem> {
        let program = match self.family {
            None => Some(self.program_task(outer)?),
            Some(_) => None,
        };
        let family = match &self.family {
            Some(f) => Some(Family::parse(f).ok_or_else(|| {
                at(
                    &key(&["family"]),
                    format!("unknown PDE family `{f}`"),
                    "use `advection`, `reaction` or `poisson`",
                )
            })?),
            None => None,
        };
        // Program tasks keep the PINN settings at their (unused) defaults.
        let pde = family.unwrap_or(Family::Advection);
        let context = self.context.unwrap_or_else(|| pde.default_range());
        if !(context[0].is_finite() && context[1].is_finite() && context[0] < context[1]) {
            return Err(at(
                &key(&["context"]),
                format!("context range [{}, {}] is empty", context[0], context[1]),
                format!(
                    "give `[low, high]` with low < high, e.g. {:?}",
                    pde.default_range()
                ),
            ));
        }
        if family == Some(Family::Poisson) && context[0] <= 0.0 {
            return Err(at(
                &key(&["context"]),
                "poisson sharpness must be positive",
                "e.g. [1, 50]",
            ));
        }
        let mut terms = 0u32;
        let names = self
            .terms
            .clone()
            .unwrap_or_else(|| Term::ALL.iter().map(|t| t.as_str().to_owned()).collect());
        for (i, n) in names.iter().enumerate() {
            let mut path = key(&["terms"]);
            path.push(PathStep::Index(i));
            let t = Term::parse(n)
                .ok_or_else(|| at(&path, format!("unknown interface term `{n}`"), terms_hint()))?;
            if terms & t.bit() != 0 {
                return Err(at(
                    &path,
                    format!("interface term `{n}` appears twice"),
                    "list each term once",
                ));
            }
            terms |= t.bit();
        }
        if let Some(p) = &program {
            terms = (1u32 << p.switches.len()) - 1;
        }
        if terms == 0 {
            return Err(at(
                &key(&["terms"]),
                "no interface terms to choose from",
                terms_hint(),
            ));
        }
        let hidden = self.hidden.clone().unwrap_or_else(|| vec![20, 20]);
        if hidden.is_empty() || hidden.contains(&0) || hidden.len() > 8 {
            return Err(at(
                &key(&["hidden"]),
                "hidden widths must be 1–8 positive numbers",
                "e.g. [20, 20]",
            ));
        }
        let p = &self.points;
        let boundary = positive(
            p.boundary,
            100,
            &["metalic", "points", "boundary"],
            "e.g. 100",
        )?;
        let collocation = positive(
            p.collocation,
            1000,
            &["metalic", "points", "collocation"],
            "e.g. 1000",
        )?;
        let interface = positive(
            p.interface,
            101,
            &["metalic", "points", "interface"],
            "e.g. 101",
        )?;
        let limit = match pde {
            Family::Advection => 357,
            Family::Reaction => 201,
            Family::Poisson => 250,
        };
        if boundary > limit {
            return Err(at(
                &key(&["points", "boundary"]),
                format!(
                    "{boundary} boundary points per subdomain; the {} problem has {limit} candidates",
                    pde.as_str()
                ),
                format!("use at most {limit}"),
            ));
        }
        let w = &self.weights;
        let weights = [
            finite_positive(w.boundary, 20.0, &["weights", "boundary"], "e.g. 20", false)?,
            finite_positive(w.residual, 1.0, &["weights", "residual"], "e.g. 1", false)?,
            finite_positive(w.interface, 5.0, &["weights", "interface"], "e.g. 5", false)?,
        ];
        let adam_steps = self.adam.steps.unwrap_or(1000);
        let adam_learning_rate = finite_positive(
            self.adam.learning_rate,
            1e-3,
            &["adam", "learning_rate"],
            "e.g. 0.001",
            false,
        )?;
        let lbfgs_iterations = self.lbfgs.iterations.unwrap_or(1000);
        let lbfgs_history = positive(
            self.lbfgs.history,
            50,
            &["metalic", "lbfgs", "history"],
            "e.g. 50",
        )?;
        let two_stage = self.two_stage.unwrap_or(false);
        if adam_steps == 0 && lbfgs_iterations == 0 {
            return Err(at(
                &key(&["adam", "steps"]),
                "both phases have no steps",
                "give Adam steps, L-BFGS iterations or both",
            ));
        }
        if two_stage && (adam_steps == 0 || lbfgs_iterations == 0) {
            return Err(at(
                &key(&["two_stage"]),
                "a two-stage bandit needs both phases",
                "give both `adam.steps` and `lbfgs.iterations`, or set `two_stage: false`",
            ));
        }
        let raw = self
            .policies
            .clone()
            .unwrap_or_else(|| vec![RawPolicy::Named("ucb".into())]);
        if raw.is_empty() {
            return Err(at(
                &key(&["policies"]),
                "no policies",
                "list at least one, e.g. `[ucb]`",
            ));
        }
        let mut policies: Vec<Policy> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let mut path = key(&["policies"]);
            path.push(PathStep::Index(i));
            let policy = match r {
                RawPolicy::Named(n) => Policy {
                    name: n.clone(),
                    rule: match n.as_str() {
                        "ucb" => Rule::Ucb,
                        "thompson" => Rule::Thompson,
                        "random" => Rule::Random,
                        _ => {
                            return Err(at(
                                &path,
                                format!("unknown policy `{n}`"),
                                "use `ucb`, `thompson`, `random` or `{ name: NAME, fixed: [terms] }`",
                            ));
                        }
                    },
                },
                RawPolicy::Fixed { name, fixed } => {
                    let mut arm = 0;
                    for (j, n) in fixed.iter().enumerate() {
                        let mut tp = path.clone();
                        tp.extend([PathStep::Key("fixed".into()), PathStep::Index(j)]);
                        if let Some(task) = &program {
                            let i =
                                task.switches
                                    .iter()
                                    .position(|s| s.0 == *n)
                                    .ok_or_else(|| {
                                        let names: Vec<&str> =
                                            task.switches.iter().map(|s| s.0.as_str()).collect();
                                        at(
                                            &tp,
                                            format!("unknown switch `{n}`"),
                                            format!("switches are {}", names.join(", ")),
                                        )
                                    })?;
                            arm |= 1 << i;
                            continue;
                        }
                        let t = Term::parse(n).ok_or_else(|| {
                            at(&tp, format!("unknown interface term `{n}`"), terms_hint())
                        })?;
                        if terms & t.bit() == 0 {
                            return Err(at(
                                &tp,
                                format!("`{n}` is not among `metalic.terms`"),
                                "add it to `terms`, or remove it here",
                            ));
                        }
                        arm |= t.bit();
                    }
                    Policy {
                        name: name.clone(),
                        rule: Rule::Fixed(arm),
                    }
                }
            };
            let valid_name = !policy.name.is_empty()
                && policy.name.len() <= 32
                && policy
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid_name {
                return Err(at(
                    &path,
                    format!("invalid policy name `{}`", policy.name),
                    "use 1–32 letters, digits, `-` or `_`",
                ));
            }
            if policies.iter().any(|p| p.name == policy.name) {
                return Err(at(
                    &path,
                    format!("policy `{}` appears twice", policy.name),
                    "give each policy its own name",
                ));
            }
            if let Rule::Fixed(a) = policy.rule
                && let Some(other) = policies.iter().find(|p| p.rule == Rule::Fixed(a))
            {
                return Err(at(
                    &path,
                    format!(
                        "policy `{}` plays the same arm as `{}`",
                        policy.name, other.name
                    ),
                    "drop one of them",
                ));
            }
            policies.push(policy);
        }
        let beta = finite_positive(self.beta, 1.0, &["beta"], "e.g. 1", true)?;
        let warmup = self.warmup.unwrap_or(5);
        let rounds = self.rounds.unwrap_or(40);
        let test = self.test.unwrap_or(20);
        if warmup + rounds == 0 {
            return Err(at(
                &key(&["rounds"]),
                "no warm-up or play rounds",
                "play at least one round, e.g. `rounds: 40`",
            ));
        }
        if policies.iter().any(Policy::learns) && warmup == 0 {
            return Err(at(
                &key(&["warmup"]),
                "a GP bandit needs at least one warm-up round",
                "use e.g. `warmup: 5` (random arms before the GP plays)",
            ));
        }
        let batch = positive(
            self.batch,
            2,
            &["metalic", "batch"],
            "e.g. 2 (one per worker)",
        )?;
        let fit_iterations = positive(
            self.fit_iterations,
            100,
            &["metalic", "fit_iterations"],
            "e.g. 100",
        )?;
        Ok(MetalicSpec {
            family,
            program,
            context,
            terms,
            hidden,
            boundary,
            collocation,
            interface,
            weights,
            adam_steps,
            adam_learning_rate,
            lbfgs_iterations,
            lbfgs_history,
            two_stage,
            policies,
            beta,
            warmup,
            rounds,
            test,
            batch,
            fit_iterations,
        })
    }
}

/// Which part of the protocol a round belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Random arms before the bandits play.
    Warmup,
    /// The policies play.
    Play,
    /// Greedy play on fresh contexts.
    Test,
}

impl Stage {
    /// `warmup`, `play` or `test`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Stage::Warmup => "warmup",
            Stage::Play => "play",
            Stage::Test => "test",
        }
    }
}

/// The source of the shared warm-up trials of the random and bandit policies.
const SHARED: usize = usize::MAX;

impl MetalicSpec {
    /// Arms in play: every subset of the allowed terms (or switches), ascending.
    pub fn arms(&self) -> Vec<u32> {
        (0..1u32 << self.bits())
            .filter(|a| a & !self.terms == 0)
            .collect()
    }

    /// Bits of an arm: the nine interface terms, or the program task's switches.
    pub fn bits(&self) -> u32 {
        self.program
            .as_ref()
            .map_or(Term::ALL.len(), |p| p.switches.len()) as u32
    }

    /// An arm as `0`/`1` text, one digit per bit.
    pub fn arm_text(&self, arm: u32) -> String {
        format_bits(arm, self.bits() as usize)
    }

    /// The terms (or switches) an arm turns on, `+`-joined, or `none`.
    pub fn arm_names(&self, arm: u32) -> String {
        let names: Vec<String> = match &self.program {
            Some(p) => p
                .switches
                .iter()
                .enumerate()
                .filter(|(i, _)| arm >> i & 1 == 1)
                .map(|(_, s)| s.0.clone())
                .collect(),
            None => arm_terms(arm)
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
        };
        if names.is_empty() {
            "none".into()
        } else {
            names.join("+")
        }
    }

    /// What the sweep trains: the PDE family, or the program.
    pub fn label(&self) -> String {
        match (&self.program, self.family) {
            (Some(p), _) => p.program.clone(),
            (None, Some(f)) => f.as_str().to_owned(),
            (None, None) => String::new(),
        }
    }

    /// The context's name: `beta`, `rho`, `sharpness`, or the program's hyperparameter.
    pub fn context_name(&self) -> String {
        match (&self.program, self.family) {
            (Some(p), _) => p.context_param.clone(),
            (None, Some(f)) => f.context_name().to_owned(),
            (None, None) => "context".into(),
        }
    }

    /// What a round's `error` column holds: the PINN's relative L2 error, or the
    /// program's objective.
    pub fn outcome_name(&self) -> String {
        self.program
            .as_ref()
            .map_or_else(|| "error".to_owned(), |p| p.metric.clone())
    }

    /// Training phases (1 or 2; a program task has one).
    pub fn phases(&self) -> usize {
        if self.program.is_some() {
            return 1;
        }
        usize::from(self.adam_steps > 0) + usize::from(self.lbfgs_iterations > 0)
    }

    /// Arms chosen per round: one per phase in a two-stage bandit, else one.
    pub fn arm_slots(&self) -> usize {
        if self.two_stage { self.phases() } else { 1 }
    }

    /// The sources of warm-up trials: one shared by the random and bandit policies (they
    /// all play the same random arms), one per fixed policy.
    fn warmup_sources(&self) -> Vec<usize> {
        let mut v = Vec::new();
        if self
            .policies
            .iter()
            .any(|p| !matches!(p.rule, Rule::Fixed(_)))
        {
            v.push(SHARED);
        }
        v.extend(
            self.policies
                .iter()
                .enumerate()
                .filter(|(_, p)| matches!(p.rule, Rule::Fixed(_)))
                .map(|(i, _)| i),
        );
        v
    }

    /// Trials of the sweep.
    pub fn trials(&self) -> u64 {
        let p = self.policies.len() as u64;
        self.warmup_sources().len() as u64 * u64::from(self.warmup)
            + p * u64::from(self.rounds)
            + p * u64::from(self.test)
    }

    /// The context of warm-up/play round `round`, or of test context `round`.
    pub fn context_at(&self, stage: Stage, round: u32, seed: u64) -> f64 {
        let stream = if stage == Stage::Test { 0x7E57 } else { 0xC0 };
        let u = Rng::new(derive_seed(seed ^ stream, u64::from(round))).next_f64();
        self.context[0] + (self.context[1] - self.context[0]) * u
    }

    /// The context as the GP sees it: centred and scaled by the range's uniform spread.
    pub fn standardise(&self, c: f64) -> Vec<f64> {
        let [lo, hi] = self.context;
        vec![(c - 0.5 * (lo + hi)) / ((hi - lo) / 12f64.sqrt())]
    }

    /// The seed of the training in a round: the same for every policy (common random
    /// numbers: the same points and initial weights, only the arm differs).
    pub fn training_seed(&self, stage: Stage, round: u32, seed: u64) -> u64 {
        let k = if stage == Stage::Test { 1u64 << 32 } else { 0 };
        derive_seed(seed ^ 0x0072_411E, k + u64::from(round))
    }

    fn random_arms(&self, stage: Stage, round: u32, seed: u64, salt: u64) -> Vec<u32> {
        let arms = self.arms();
        let mut rng = Rng::new(derive_seed(
            seed ^ 0xA2B5 ^ salt,
            (u64::from(stage == Stage::Test) << 32) + u64::from(round),
        ));
        (0..self.arm_slots())
            .map(|_| arms[rng.below(arms.len() as u64) as usize])
            .collect()
    }

    /// The parameters every trial carries, as a search space.
    pub fn space(&self) -> SearchSpace {
        if let Some(p) = &self.program {
            let mut params: BTreeMap<String, Domain> = p
                .fixed
                .iter()
                .map(|(k, v)| (k.clone(), Domain::Fixed(v.clone())))
                .collect();
            params.insert(
                p.context_param.clone(),
                Domain::Float {
                    low: self.context[0],
                    high: self.context[1],
                    scale: Scale::Linear,
                    grid: None,
                },
            );
            for (name, off, on) in &p.switches {
                params.insert(name.clone(), Domain::Choice(vec![off.clone(), on.clone()]));
            }
            return SearchSpace { params };
        }
        let mut params: BTreeMap<String, Domain> = self
            .fixed()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Domain::Fixed(v)))
            .collect();
        params.insert(
            "context".into(),
            Domain::Float {
                low: self.context[0],
                high: self.context[1],
                scale: Scale::Linear,
                grid: None,
            },
        );
        params.insert("arms".into(), Domain::Fixed(ParamValue::Str(String::new())));
        params.insert(
            "stage".into(),
            Domain::Choice(
                ["warmup", "play", "test"]
                    .map(|s| ParamValue::Str(s.into()))
                    .to_vec(),
            ),
        );
        params.insert(
            "round".into(),
            Domain::Int {
                low: 0,
                high: i64::from(self.warmup + self.rounds + self.test),
                scale: Scale::Linear,
                grid: None,
            },
        );
        SearchSpace { params }
    }

    fn fixed(&self) -> Vec<(&'static str, ParamValue)> {
        let int = |v: u32| ParamValue::Int(i64::from(v));
        let hidden: Vec<String> = self.hidden.iter().map(u32::to_string).collect();
        let family = self.family.map_or("", |f| f.as_str());
        vec![
            ("family", ParamValue::Str(family.into())),
            ("hidden", ParamValue::Str(hidden.join(","))),
            ("boundary_points", int(self.boundary)),
            ("collocation_points", int(self.collocation)),
            ("interface_points", int(self.interface)),
            ("boundary_weight", ParamValue::Float(self.weights[0])),
            ("residual_weight", ParamValue::Float(self.weights[1])),
            ("interface_weight", ParamValue::Float(self.weights[2])),
            ("adam_steps", int(self.adam_steps)),
            (
                "adam_learning_rate",
                ParamValue::Float(self.adam_learning_rate),
            ),
            ("lbfgs_iterations", int(self.lbfgs_iterations)),
            ("lbfgs_history", int(self.lbfgs_history)),
        ]
    }

    fn params(&self, stage: Stage, round: u32, context: f64, arms: &[u32]) -> Params {
        if let Some(task) = &self.program {
            let mut p: Params = task.fixed.iter().cloned().collect();
            p.insert(task.context_param.clone(), ParamValue::Float(context));
            let arm = arms.first().copied().unwrap_or(0);
            for (i, (name, off, on)) in task.switches.iter().enumerate() {
                p.insert(
                    name.clone(),
                    if arm >> i & 1 == 1 {
                        on.clone()
                    } else {
                        off.clone()
                    },
                );
            }
            return p;
        }
        let mut p: Params = self
            .fixed()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        p.insert("context".into(), ParamValue::Float(context));
        let text: Vec<String> = arms.iter().map(|a| format_arm(*a)).collect();
        p.insert("arms".into(), ParamValue::Str(text.join(",")));
        p.insert("stage".into(), ParamValue::Str(stage.as_str().into()));
        p.insert("round".into(), ParamValue::Int(i64::from(round)));
        p
    }
}

/// One phase of a finished round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseOutcome {
    /// Relative L2 error after the phase.
    pub error: f64,
    /// `−log10(error)`.
    pub reward: f64,
    /// Final training loss.
    pub loss: f64,
    /// Seconds.
    pub wall_s: f64,
}

/// One policy's round: what it played and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRecord {
    /// Index into the policies.
    pub policy: usize,
    /// Warm-up, play or test.
    pub stage: Stage,
    /// Round number (warm-up and play count together; test contexts from 0).
    pub round: u32,
    /// The family parameter.
    pub context: f64,
    /// Arms per slot (one, or one per phase).
    pub arms: Vec<u32>,
    /// The policy's predicted mean and σ of each slot's reward (NaN without a model).
    pub predicted: Vec<(f64, f64)>,
    /// The trial that played it.
    pub trial_id: TrialId,
    /// Per phase, once finished.
    pub phases: Option<Vec<PhaseOutcome>>,
    /// Whether the trial failed.
    pub failed: bool,
}

impl RoundRecord {
    /// The final reward, once finished.
    pub fn reward(&self) -> Option<f64> {
        self.phases.as_ref()?.last().map(|p| p.reward)
    }

    /// The final error, once finished.
    pub fn error(&self) -> Option<f64> {
        self.phases.as_ref()?.last().map(|p| p.error)
    }
}

/// What a `metalic` sweep found: every round of every policy, with regrets.
#[derive(Debug, Clone, PartialEq)]
pub struct MetalicSummary {
    /// The settings.
    pub spec: MetalicSpec,
    /// Every round and test of every policy.
    pub records: Vec<RoundRecord>,
    /// Per record (same order): regret against the best arm any policy played on the
    /// same round (NaN for tests and unfinished rounds).
    pub regret: Vec<f64>,
    /// Per record: that policy's cumulative regret up to this round (NaN for tests).
    pub cumulative_regret: Vec<f64>,
}

impl MetalicSummary {
    /// Per policy: (mean test reward, median test error, tests finished).
    pub fn test_scores(&self) -> Vec<(f64, f64, usize)> {
        (0..self.spec.policies.len())
            .map(|p| {
                let (rewards, errors): (Vec<f64>, Vec<f64>) = self
                    .records
                    .iter()
                    .filter(|r| r.policy == p && r.stage == Stage::Test)
                    .filter_map(|r| Some((r.reward()?, r.error()?)))
                    .unzip();
                let n = rewards.len();
                let mean = rewards.iter().sum::<f64>() / n.max(1) as f64;
                (
                    if n == 0 { f64::NAN } else { mean },
                    crate::nas_sweep::median(errors),
                    n,
                )
            })
            .collect()
    }

    /// Per policy: cumulative regret after its last finished round.
    pub fn total_regret(&self) -> Vec<f64> {
        (0..self.spec.policies.len())
            .map(|p| {
                self.records
                    .iter()
                    .zip(&self.cumulative_regret)
                    .filter(|(r, c)| r.policy == p && c.is_finite())
                    .map(|(_, c)| *c)
                    .next_back()
                    .unwrap_or(f64::NAN)
            })
            .collect()
    }
}

/// The `metalic` searcher: plans the rounds of every policy, a batch at a time, and the
/// test contexts at the end; the GP bandits refit on their own finished rounds before
/// each batch. See the module docs.
#[derive(Debug, Clone)]
pub struct MetalicSearcher {
    spec: MetalicSpec,
    seed: u64,
    records: Vec<RoundRecord>,
    /// Trial → the records it plays.
    pending: BTreeMap<TrialId, Vec<usize>>,
    queue: VecDeque<TrialRequest>,
    next_trial: TrialId,
    /// Next round to plan (warm-up and play), then test.
    next_round: u32,
    tested: bool,
}

impl MetalicSearcher {
    /// A searcher for `spec`, seeded.
    pub fn new(spec: MetalicSpec, seed: u64) -> Self {
        MetalicSearcher {
            spec,
            seed,
            records: Vec::new(),
            pending: BTreeMap::new(),
            queue: VecDeque::new(),
            next_trial: 0,
            next_round: 0,
            tested: false,
        }
    }

    fn request(&mut self, stage: Stage, round: u32, context: f64, arms: &[u32]) -> TrialId {
        let trial_id = self.next_trial;
        self.next_trial += 1;
        self.queue.push_back(TrialRequest {
            trial_id,
            params: self.spec.params(stage, round, context, arms),
            seed: self.spec.training_seed(stage, round, self.seed),
        });
        trial_id
    }

    fn record(&mut self, r: RoundRecord) {
        self.pending
            .entry(r.trial_id)
            .or_default()
            .push(self.records.len());
        self.records.push(r);
    }

    /// The GP training data of `policy` for arm slot `slot`.
    fn observations(&self, policy: usize, slot: usize) -> Vec<Observation> {
        let two = self.spec.arm_slots() == 2;
        self.records
            .iter()
            .filter(|r| r.policy == policy && r.stage != Stage::Test)
            .filter_map(|r| {
                let ph = r.phases.as_ref()?;
                let last = ph.last()?.reward;
                // The reference's two-stage targets: stage 0 learns the discounted mean
                // (r₀ + 0.9·r₁)/2 of what follows, stage 1 its own reward.
                let reward = if two && slot == 0 {
                    (ph.first()?.reward + 0.9 * last) / 2.0
                } else {
                    last
                };
                Some(Observation {
                    context: self.spec.standardise(r.context),
                    arm: *r.arms.get(slot)?,
                    reward,
                })
            })
            .collect()
    }

    /// Plans warm-up (all at once) or the next batch of play rounds, or the tests.
    fn plan(&mut self) {
        let spec = self.spec.clone();
        let seed = self.seed;
        if self.next_round < spec.warmup {
            for round in 0..spec.warmup {
                let context = spec.context_at(Stage::Warmup, round, seed);
                for source in spec.warmup_sources() {
                    let arms = match spec.policies.get(source).map(|p| p.rule) {
                        Some(Rule::Fixed(a)) => vec![a; spec.arm_slots()],
                        _ => spec.random_arms(Stage::Warmup, round, seed, 0),
                    };
                    let t = self.request(Stage::Warmup, round, context, &arms);
                    for (p, policy) in spec.policies.iter().enumerate() {
                        let mine = match policy.rule {
                            Rule::Fixed(_) => p == source,
                            _ => source == SHARED,
                        };
                        if mine {
                            let nan = vec![(f64::NAN, f64::NAN); arms.len()];
                            self.record(RoundRecord {
                                policy: p,
                                stage: Stage::Warmup,
                                round,
                                context,
                                arms: arms.clone(),
                                predicted: nan,
                                trial_id: t,
                                phases: None,
                                failed: false,
                            });
                        }
                    }
                }
            }
            self.next_round = spec.warmup;
            return;
        }
        let end = spec.warmup + spec.rounds;
        if self.next_round < end {
            let rounds: Vec<u32> =
                (self.next_round..end.min(self.next_round + spec.batch)).collect();
            let contexts: Vec<f64> = rounds
                .iter()
                .map(|r| spec.context_at(Stage::Play, *r, seed))
                .collect();
            self.play(Stage::Play, &rounds, &contexts);
            self.next_round = end.min(self.next_round + spec.batch);
            return;
        }
        if !self.tested {
            self.tested = true;
            let rounds: Vec<u32> = (0..spec.test).collect();
            let contexts: Vec<f64> = rounds
                .iter()
                .map(|r| spec.context_at(Stage::Test, *r, seed))
                .collect();
            self.play(Stage::Test, &rounds, &contexts);
        }
    }

    /// Every policy picks arms for `rounds` (with their contexts) and each pick becomes a
    /// trial.
    fn play(&mut self, stage: Stage, rounds: &[u32], contexts: &[f64]) {
        let Some(first) = rounds.first().copied() else {
            return;
        };
        let spec = self.spec.clone();
        let arms_all = spec.arms();
        let standard: Vec<Vec<f64>> = contexts.iter().map(|c| spec.standardise(*c)).collect();
        for (p, policy) in spec.policies.iter().enumerate() {
            let n = rounds.len();
            let mut picks: Vec<Vec<(u32, f64, f64)>> = vec![Vec::new(); n];
            for slot in 0..spec.arm_slots() {
                let chosen: Vec<(u32, f64, f64)> = match policy.rule {
                    Rule::Fixed(a) => vec![(a, f64::NAN, f64::NAN); n],
                    Rule::Random => rounds
                        .iter()
                        .map(|r| {
                            (
                                spec.random_arms(stage, *r, self.seed, 1 + p as u64)[slot],
                                f64::NAN,
                                f64::NAN,
                            )
                        })
                        .collect(),
                    Rule::Ucb | Rule::Thompson => {
                        let how = match (stage, policy.rule) {
                            (Stage::Test, _) => Acquisition::Greedy,
                            (_, Rule::Ucb) => Acquisition::Ucb { beta: spec.beta },
                            _ => Acquisition::Thompson,
                        };
                        let data = self.observations(p, slot);
                        let mut rng = Rng::new(derive_seed(
                            self.seed ^ 0xBA4D,
                            (p as u64) << 40
                                | (slot as u64) << 36
                                | u64::from(first)
                                | (u64::from(stage == Stage::Test) << 32),
                        ));
                        suggest(
                            spec.bits(),
                            &data,
                            &standard,
                            &arms_all,
                            how,
                            spec.fit_iterations as usize,
                            &mut rng,
                        )
                        .into_iter()
                        .map(|s| (s.arm, s.mean, s.sd))
                        .collect()
                    }
                };
                for (k, c) in chosen.into_iter().enumerate() {
                    picks[k].push(c);
                }
            }
            for (k, round) in rounds.iter().enumerate() {
                let arms: Vec<u32> = picks[k].iter().map(|c| c.0).collect();
                let predicted: Vec<(f64, f64)> = picks[k].iter().map(|c| (c.1, c.2)).collect();
                let t = self.request(stage, *round, contexts[k], &arms);
                self.record(RoundRecord {
                    policy: p,
                    stage,
                    round: *round,
                    context: contexts[k],
                    arms,
                    predicted,
                    trial_id: t,
                    phases: None,
                    failed: false,
                });
            }
        }
    }

    /// The phases of an outcome: from its `phases` artifact, or for a program task its
    /// objective (the reward is the objective, negated when it is minimised).
    fn phase_outcomes(&self, outcome: &TrialOutcome) -> Option<Vec<PhaseOutcome>> {
        if let Some(p) = &self.spec.program {
            let v = outcome.objective.filter(|v| v.is_finite())?;
            return Some(vec![PhaseOutcome {
                error: v,
                reward: p.goal.score(v),
                loss: f64::NAN,
                wall_s: f64::NAN,
            }]);
        }
        let a = outcome.artifacts.iter().find(|a| a.table == PHASES_TABLE)?;
        let (error, reward, loss, wall) = (
            a.f64s("error")?,
            a.f64s("reward")?,
            a.f64s("loss")?,
            a.f64s("wall_s")?,
        );
        let v: Vec<PhaseOutcome> = (0..a.rows())
            .filter_map(|i| {
                Some(PhaseOutcome {
                    error: *error.get(i)?,
                    reward: *reward.get(i)?,
                    loss: *loss.get(i)?,
                    wall_s: *wall.get(i)?,
                })
            })
            .collect();
        (!v.is_empty()).then_some(v)
    }

    /// Regrets against the best final reward any policy reached on the same round.
    pub fn summary(&self) -> MetalicSummary {
        let mut best: BTreeMap<u32, f64> = BTreeMap::new();
        for r in self.records.iter().filter(|r| r.stage != Stage::Test) {
            if let Some(v) = r.reward() {
                let b = best.entry(r.round).or_insert(f64::NEG_INFINITY);
                *b = b.max(v);
            }
        }
        let regret: Vec<f64> = self
            .records
            .iter()
            .map(|r| match (r.stage, r.reward()) {
                (Stage::Test, _) | (_, None) => f64::NAN,
                (_, Some(v)) => best.get(&r.round).map_or(f64::NAN, |b| b - v),
            })
            .collect();
        let mut order: Vec<usize> = (0..self.records.len()).collect();
        order.sort_by_key(|i| {
            (
                self.records[*i].policy,
                self.records[*i].stage == Stage::Test,
                self.records[*i].round,
            )
        });
        let mut cumulative = vec![f64::NAN; self.records.len()];
        let mut running: BTreeMap<usize, f64> = BTreeMap::new();
        for i in order {
            if regret[i].is_finite() {
                let c = running.entry(self.records[i].policy).or_insert(0.0);
                *c += regret[i];
                cumulative[i] = *c;
            }
        }
        MetalicSummary {
            spec: self.spec.clone(),
            records: self.records.clone(),
            regret,
            cumulative_regret: cumulative,
        }
    }
}

impl Searcher for MetalicSearcher {
    fn ask(&mut self) -> Ask {
        if let Some(r) = self.queue.pop_front() {
            return Ask::Trial(r);
        }
        if !self.pending.is_empty() {
            return Ask::Wait;
        }
        if self.tested {
            return Ask::Done;
        }
        self.plan();
        match self.queue.pop_front() {
            Some(r) => Ask::Trial(r),
            None => Ask::Done,
        }
    }

    fn tell(&mut self, outcome: &TrialOutcome) {
        let Some(ids) = self.pending.remove(&outcome.trial_id) else {
            return;
        };
        let phases = match outcome.status {
            TrialStatus::Failed => None,
            _ => self.phase_outcomes(outcome),
        };
        for i in ids {
            self.records[i].failed = phases.is_none();
            self.records[i].phases = phases.clone();
        }
    }

    fn issued(&self) -> u64 {
        self.next_trial - self.queue.len() as u64
    }

    fn summary(&self) -> Option<crate::searcher::KindSummary> {
        Some(crate::searcher::KindSummary::Metalic(Box::new(
            MetalicSearcher::summary(self),
        )))
    }
}

/// A made-up outcome of `r` for tests of the searcher: the final reward of arm `a` in
/// context `c` is a known function (switches 0–3 help at low contexts, 4–8 at high ones,
/// each costs a little), the first phase reaches half a unit less.
pub fn synthetic_outcome(spec: &MetalicSpec, r: &TrialRequest) -> TrialOutcome {
    use crate::trial::{Artifact, ArtifactColumn};
    let c = r
        .params
        .get("context")
        .and_then(ParamValue::as_f64)
        .unwrap_or(0.0);
    let arms: Vec<u32> = match r.params.get("arms") {
        Some(ParamValue::Str(s)) => s.split(',').filter_map(parse_arm).collect(),
        _ => Vec::new(),
    };
    let u = (c - spec.context[0]) / (spec.context[1] - spec.context[0]);
    let reward = |arm: u32| {
        let bit = |i: u32| f64::from((arm >> i) & 1);
        let low: f64 = (0..4).map(bit).sum();
        let high: f64 = (4..9).map(bit).sum();
        (1.0 - u) * low + u * high - 0.4 * (low + high)
    };
    let phases = spec.phases();
    let last = reward(*arms.last().unwrap_or(&0));
    let rewards: Vec<f64> = (0..phases)
        .map(|i| {
            if i + 1 == phases {
                last
            } else {
                reward(arms[0]) - 0.5
            }
        })
        .collect();
    let errors: Vec<f64> = rewards.iter().map(|r| 10f64.powf(-r)).collect();
    let mut columns = BTreeMap::new();
    columns.insert(
        "phase".to_owned(),
        ArtifactColumn::I64((0..phases as i64).collect()),
    );
    columns.insert("reward".to_owned(), ArtifactColumn::F64(rewards.clone()));
    columns.insert("error".to_owned(), ArtifactColumn::F64(errors));
    columns.insert("loss".to_owned(), ArtifactColumn::F64(vec![0.1; phases]));
    columns.insert("wall_s".to_owned(), ArtifactColumn::F64(vec![1.0; phases]));
    TrialOutcome {
        trial_id: r.trial_id,
        status: TrialStatus::Finished,
        objective: Some(last),
        steps: phases as u64,
        artifacts: vec![Artifact {
            table: PHASES_TABLE.into(),
            columns,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec(extra: &str) -> MetalicSpec {
        let policies = if extra.contains("policies:") {
            ""
        } else {
            "policies: [ucb, thompson, random, { name: xpinn, fixed: [average, residual_continuity] }, { name: cpinn, fixed: [solution, flux] }]\n"
        };
        let mut text = format!("family: advection\n{policies}{extra}\n");
        for (k, v) in [
            ("warmup", "4"),
            ("rounds", "24"),
            ("test", "6"),
            ("batch", "2"),
            ("fit_iterations", "30"),
        ] {
            if !extra.contains(&format!("{k}:")) {
                text.push_str(&format!("{k}: {v}\n"));
            }
        }
        let raw: RawMetalic = serde_yaml::from_str(&text).unwrap();
        raw.validate(&Outer::default()).unwrap()
    }

    fn run(spec: &MetalicSpec, seed: u64) -> MetalicSearcher {
        let mut s = MetalicSearcher::new(spec.clone(), seed);
        let mut running = Vec::new();
        let mut issued = 0;
        loop {
            match s.ask() {
                Ask::Trial(t) => {
                    issued += 1;
                    running.push(t)
                }
                Ask::Wait => {
                    let t = running.remove(0);
                    s.tell(&synthetic_outcome(spec, &t));
                }
                Ask::Done => break,
            }
        }
        assert!(running.is_empty());
        assert_eq!(issued, spec.trials());
        s
    }

    #[test]
    fn arms_terms_and_text_round_trip() {
        let a = Term::Average.bit() | Term::ResidualContinuity.bit();
        assert_eq!(format_arm(a), "010100000");
        assert_eq!(parse_arm("010100000"), Some(a));
        assert_eq!(arm_terms(a), vec![Term::Average, Term::ResidualContinuity]);
        assert_eq!(parse_arm("01010000"), None);
        let s = spec("terms: [solution, flux, average]\npolicies: [ucb]");
        assert_eq!(s.arms().len(), 8);
        assert!(spec("").arms().len() == 512);
    }

    #[test]
    fn defaults_follow_the_reference() {
        let s = spec("policies: [ucb]");
        assert_eq!(s.context, [1.0, 30.0]);
        assert_eq!((s.boundary, s.collocation, s.interface), (100, 1000, 101));
        assert_eq!(s.weights, [20.0, 1.0, 5.0]);
        assert_eq!(s.hidden, vec![20, 20]);
        assert_eq!(
            (s.adam_steps, s.lbfgs_iterations, s.lbfgs_history),
            (1000, 1000, 50)
        );
        assert_eq!(s.phases(), 2);
        assert_eq!(s.arm_slots(), 1);
        // The spec survives its JSON form (it is written beside the results).
        let json = serde_json::to_string(&spec("")).unwrap();
        assert_eq!(
            serde_json::from_str::<MetalicSpec>(&json).unwrap(),
            spec("")
        );
    }

    #[test]
    fn warmup_is_shared_and_every_policy_sees_the_same_contexts() {
        let spec = spec("");
        let s = run(&spec, 3);
        let recs = &s.records;
        // 4 warm-up rounds: one shared source + two fixed; then 5 policies × (24 + 6).
        assert_eq!(spec.trials(), 4 * 3 + 5 * 30);
        for round in 0..4 {
            let shared: Vec<&RoundRecord> = recs
                .iter()
                .filter(|r| r.stage == Stage::Warmup && r.round == round && r.policy < 3)
                .collect();
            assert_eq!(shared.len(), 3);
            assert!(shared.iter().all(|r| r.trial_id == shared[0].trial_id));
        }
        for round in 0..28 {
            let at: Vec<&RoundRecord> = recs
                .iter()
                .filter(|r| r.stage != Stage::Test && r.round == round)
                .collect();
            assert_eq!(at.len(), 5);
            assert!(
                at.iter()
                    .all(|r| r.context == at[0].context && r.phases.is_some())
            );
        }
        // Fixed policies always play their arm.
        assert!(
            recs.iter()
                .filter(|r| r.policy == 3)
                .all(|r| r.arms == vec![0b1010])
        );
    }

    #[test]
    fn bandits_learn_the_synthetic_reward_and_beat_random_and_fixed_arms() {
        let spec = spec("");
        for seed in [1, 2] {
            let summary = run(&spec, seed).summary();
            let regret = summary.total_regret();
            let tests = summary.test_scores();
            // ucb, thompson vs random and both fixed conditions.
            for bandit in [0, 1] {
                for other in [2, 3, 4] {
                    assert!(
                        regret[bandit] < regret[other],
                        "seed {seed}: regret {regret:?}"
                    );
                    assert!(
                        tests[bandit].0 > tests[other].0,
                        "seed {seed}: tests {tests:?}"
                    );
                }
            }
            // Play rounds carry the model's prediction; warm-up and fixed rounds do not.
            let ucb_play: Vec<&RoundRecord> = summary
                .records
                .iter()
                .filter(|r| r.policy == 0 && r.stage == Stage::Play)
                .collect();
            assert!(
                ucb_play
                    .iter()
                    .all(|r| r.predicted[0].0.is_finite() && r.predicted[0].1 >= 0.0)
            );
            // The GP's predictions become accurate: late play rounds predict within 1.
            let late = &ucb_play[ucb_play.len() - 4..];
            for r in late {
                assert!(
                    (r.predicted[0].0 - r.reward().unwrap()).abs() < 1.0,
                    "{r:?}"
                );
            }
        }
    }

    #[test]
    fn two_stage_bandits_pick_one_arm_per_phase() {
        let spec = spec("two_stage: true\npolicies: [ucb, random]");
        assert_eq!(spec.arm_slots(), 2);
        let s = run(&spec, 4);
        assert!(
            s.records
                .iter()
                .all(|r| r.arms.len() == 2 && r.predicted.len() == 2)
        );
        assert!(s.records.iter().any(|r| r.arms[0] != r.arms[1]));
        let regret = s.summary().total_regret();
        assert!(regret[0] < regret[1], "{regret:?}");
    }

    #[test]
    fn failed_rounds_are_recorded_and_skipped_by_the_model() {
        let spec = spec("policies: [ucb]\nwarmup: 2\nrounds: 2\ntest: 0");
        let mut s = MetalicSearcher::new(spec.clone(), 1);
        let mut n = 0;
        loop {
            match s.ask() {
                Ask::Trial(t) => {
                    let mut o = synthetic_outcome(&spec, &t);
                    if n == 0 {
                        o.status = TrialStatus::Failed;
                        o.artifacts.clear();
                    }
                    n += 1;
                    s.tell(&o);
                }
                Ask::Wait => unreachable!("every trial is told at once"),
                Ask::Done => break,
            }
        }
        assert!(s.records[0].failed && s.records[0].reward().is_none());
        assert_eq!(s.observations(0, 0).len(), 3);
        assert!(s.summary().regret[0].is_nan());
    }

    /// A program task: the context is `x`, the switches set `y` and `reports`.
    fn program_spec(policies: &str) -> MetalicSpec {
        let raw: RawMetalic = serde_yaml::from_str(&format!(
            "context_param: x\ncontext: [0, 1]\nswitches: {{ y: [-0.2, 0.5], reports: [1, 3] }}\npolicies: {policies}\nwarmup: 3\nrounds: 12\ntest: 4\nfit_iterations: 20\n"
        ))
        .unwrap();
        let outer = Outer {
            program: Some("synthetic".into()),
            objective: Some(("loss".into(), crate::spec::Goal::Minimize)),
            fixed: vec![("sleep_ms".into(), ParamValue::Int(0))],
        };
        raw.validate(&outer).unwrap()
    }

    #[test]
    fn a_program_task_sets_the_context_and_switches_and_rewards_the_objective() {
        let spec = program_spec("[ucb, random, { name: both, fixed: [y, reports] }]");
        assert_eq!((spec.bits(), spec.arms().len(), spec.phases()), (2, 4, 1));
        assert_eq!(spec.arm_names(0b10), "reports");
        assert_eq!(spec.arm_text(0b10), "01");
        let space = spec.space();
        assert!(matches!(space.params.get("x"), Some(Domain::Float { .. })));
        assert!(matches!(space.params.get("y"), Some(Domain::Choice(v)) if v.len() == 2));
        assert!(space.params.contains_key("sleep_ms") && !space.params.contains_key("arms"));
        let mut s = MetalicSearcher::new(spec.clone(), 3);
        let mut asked = 0;
        loop {
            match s.ask() {
                Ask::Trial(t) => {
                    asked += 1;
                    let p = &t.params;
                    let x = p["x"].as_f64().unwrap();
                    let y = p["y"].as_f64().unwrap();
                    let reports = p["reports"].as_i64().unwrap() as f64;
                    assert_eq!(p.len(), 4, "{p:?}");
                    // The synthetic program's loss at its last report.
                    let loss = (x - 0.3).powi(2) + (y + 0.2).powi(2) + 1.0 / reports;
                    s.tell(&TrialOutcome {
                        trial_id: t.trial_id,
                        status: TrialStatus::Finished,
                        objective: Some(loss),
                        steps: reports as u64,
                        artifacts: Vec::new(),
                    });
                }
                Ask::Wait => unreachable!("every trial is told at once"),
                Ask::Done => break,
            }
        }
        assert_eq!(asked, spec.trials());
        let summary = s.summary();
        let r = &summary.records[0];
        assert!(
            (r.reward().unwrap() + r.error().unwrap()).abs() < 1e-12,
            "minimised: reward = −loss"
        );
        // The best arm is y off (−0.2), reports on (3): the bandit finds it by the test.
        let tests: Vec<&RoundRecord> = summary
            .records
            .iter()
            .filter(|r| r.policy == 0 && r.stage == Stage::Test)
            .collect();
        assert!(tests.iter().all(|r| r.arms == vec![0b10]), "{tests:?}");
        let regret = summary.total_regret();
        assert!(regret[0] < regret[1], "{regret:?}");
    }

    #[test]
    fn program_task_mistakes_are_located() {
        let outer = Outer {
            program: Some("synthetic".into()),
            objective: Some(("loss".into(), crate::spec::Goal::Minimize)),
            fixed: Vec::new(),
        };
        let bad = |yaml: &str, outer: &Outer| -> Problem {
            let raw: RawMetalic = serde_yaml::from_str(yaml).unwrap();
            raw.validate(outer).unwrap_err()
        };
        let p = bad(
            "context_param: x\ncontext: [0, 1]\nswitches: { y: [1] }",
            &outer,
        );
        assert!(p.message.contains("needs two values"), "{p:?}");
        let p = bad(
            "context_param: x\ncontext: [0, 1]\nswitches: { y: [1, 2] }\nhidden: [4]",
            &outer,
        );
        assert!(p.message.contains("PINN tasks"), "{p:?}");
        let p = bad("context: [0, 1]\nswitches: { y: [1, 2] }", &outer);
        assert!(p.message.contains("context_param"), "{p:?}");
        let p = bad(
            "context_param: x\ncontext: [0, 1]\nswitches: { x: [1, 2] }",
            &outer,
        );
        assert!(p.hint.contains("one role"), "{p:?}");
        let p = bad(
            "context_param: x\ncontext: [0, 1]\nswitches: { y: [1, 2] }\npolicies: [{ name: a, fixed: [z] }]",
            &outer,
        );
        assert!(p.message.contains("unknown switch `z`"), "{p:?}");
        let p = bad(
            "context_param: x\ncontext: [0, 1]\nswitches: { y: [1, 2] }",
            &Outer::default(),
        );
        assert!(p.message.contains("PDE `family`"), "{p:?}");
    }

    #[test]
    fn mistakes_are_located() {
        let bad = |yaml: &str| -> Problem {
            let raw: RawMetalic = serde_yaml::from_str(yaml).unwrap();
            raw.validate(&Outer::default()).unwrap_err()
        };
        let p = bad("family: heat");
        assert!(p.message.contains("unknown PDE family"), "{}", p.message);
        let p = bad("family: advection\nterms: [solution, flux, solution]");
        assert_eq!(p.path.last(), Some(&PathStep::Index(2)));
        let p = bad("family: advection\npolicies: [ucb, { name: x, fixed: [fluxx] }]");
        assert!(
            p.message.contains("fluxx") && p.hint.contains("residual_continuity"),
            "{p:?}"
        );
        let p = bad(
            "family: advection\npolicies: [{ name: a, fixed: [flux] }, { name: b, fixed: [flux] }]",
        );
        assert!(p.message.contains("same arm"));
        let p = bad("family: advection\ncontext: [5, 1]");
        assert!(p.message.contains("empty"));
        let p = bad("family: advection\nwarmup: 0");
        assert!(p.message.contains("warm-up"));
        let p = bad("family: advection\ntwo_stage: true\nlbfgs: { iterations: 0 }");
        assert!(p.message.contains("both phases"));
        let p = bad("family: reaction\npoints: { boundary: 300 }");
        assert!(p.message.contains("201 candidates"));
    }
}
