//! The contract between the coordinator and the code that trains: a [`TrialExecutor`]
//! runs the programs it lists, reporting through a [`TrialReporter`] that answers each
//! report with a [`Decision`]. The worker side implements it (with Burn); the coordinator
//! only calls it.

use crate::space::{Domain, ParamValue, ValueKind};
use crate::spec::{Problem, SweepSpec};
use crate::trial::{Artifact, Decision, MetricValues, TrialAssignment};

/// Where a running trial sends its metrics.
pub trait TrialReporter {
    /// Metrics at `step` (1, 2, … epochs, usually). The answer is the early-stopping
    /// decision: on [`Decision::Stop`] the program returns at once.
    fn report(&mut self, step: u64, metrics: &MetricValues) -> Decision;

    /// Rows for a results table besides the metrics (see [`Artifact`]); kept and sent
    /// with the attempt's end.
    fn artifact(&mut self, artifact: Artifact);

    /// Whether the attempt has been told to stop (cancelled, over its time limit): long
    /// waits outside training steps (a replica waiting for its ring) poll it.
    fn stopping(&self) -> bool {
        false
    }

    /// The stop flag itself, for waits that cannot call back into the reporter (a
    /// replica blocked in its ring's exchange watches it); `None` if it never stops.
    fn stop_signal(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        None
    }
}

/// One hyperparameter a program understands.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// Name.
    pub name: &'static str,
    /// Type of its values.
    pub kind: ValueKind,
    /// Value when the sweep does not set it.
    pub default: Option<ParamValue>,
    /// Allowed strings, for string parameters.
    pub options: &'static [&'static str],
    /// Smallest allowed value, for numeric parameters (inclusive).
    pub min: Option<f64>,
    /// Largest allowed value, for numeric parameters (inclusive).
    pub max: Option<f64>,
    /// One line on what it does.
    pub help: &'static str,
}

/// A training program and what it takes and reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramInfo {
    /// Name used in sweep files.
    pub name: &'static str,
    /// One line on what it trains.
    pub description: &'static str,
    /// Its hyperparameters.
    pub params: Vec<ParamInfo>,
    /// Metrics it reports at each step.
    pub metrics: &'static [&'static str],
    /// Whether it needs a `dataset`.
    pub needs_dataset: bool,
    /// Whether one trial can train on several workers at once (`resources.workers`).
    pub data_parallel: bool,
}

/// Runs trials. Implementations must be safe to call from several threads at once and
/// must turn every failure into an `Err` (the caller also catches panics).
pub trait TrialExecutor: Send + Sync {
    /// The programs this executor can run.
    fn programs(&self) -> Vec<ProgramInfo>;

    /// Where this executor's replicas of data-parallel trials meet their ring
    /// (`HOST:PORT`), if it can run them.
    fn ring_address(&self) -> Option<String> {
        None
    }

    /// Runs one attempt of a trial to its end, to an error, or until the reporter says
    /// stop.
    fn execute(
        &self,
        assignment: &TrialAssignment,
        reporter: &mut dyn TrialReporter,
    ) -> Result<(), String>;
}

/// Checks a sweep against the program it names: the program exists, takes every
/// hyperparameter with values of the right type, reports the objective's metric, and
/// gets a dataset if it needs one.
pub fn check_program(spec: &SweepSpec, programs: &[ProgramInfo]) -> Result<(), Problem> {
    let Some(info) = programs.iter().find(|p| p.name == spec.program) else {
        let names: Vec<&str> = programs.iter().map(|p| p.name).collect();
        return Err(Problem::new(
            &["program"],
            format!("unknown program `{}`", spec.program),
            format!("use one of: {}", names.join(", ")),
        ));
    };
    for (name, domain) in &spec.space.params {
        let Some(p) = info.params.iter().find(|p| p.name == name) else {
            let names: Vec<&str> = info.params.iter().map(|p| p.name).collect();
            return Err(Problem::new(
                &["space", name],
                format!("program `{}` has no hyperparameter `{name}`", info.name),
                format!("it takes: {}", names.join(", ")),
            ));
        };
        let got = domain.value_kind();
        let fits = got == p.kind || (p.kind == ValueKind::Float && got == ValueKind::Int);
        if !fits {
            return Err(Problem::new(
                &["space", name],
                format!(
                    "`{name}` takes {:?} values, the sweep gives {:?}",
                    p.kind, got
                )
                .to_lowercase(),
                p.help,
            ));
        }
        let numbers: Vec<f64> = match domain {
            Domain::Float { low, high, .. } => vec![*low, *high],
            Domain::Int { low, high, .. } => vec![*low as f64, *high as f64],
            Domain::Choice(v) => v.iter().filter_map(ParamValue::as_f64).collect(),
            Domain::Fixed(v) => v.as_f64().into_iter().collect(),
        };
        for x in numbers {
            if p.min.is_some_and(|m| x < m) || p.max.is_some_and(|m| x > m) {
                let lo = p.min.map_or("-inf".to_owned(), |v| v.to_string());
                let hi = p.max.map_or("inf".to_owned(), |v| v.to_string());
                return Err(Problem::new(
                    &["space", name],
                    format!("`{name}` must lie in [{lo}, {hi}], the sweep allows {x}"),
                    p.help,
                ));
            }
        }
        if !p.options.is_empty() {
            let values = match domain {
                Domain::Choice(v) => v.clone(),
                Domain::Fixed(v) => vec![v.clone()],
                _ => Vec::new(),
            };
            for v in values {
                if !v.as_str().is_some_and(|s| p.options.contains(&s)) {
                    return Err(Problem::new(
                        &["space", name],
                        format!("`{name}` cannot be `{v}`"),
                        format!("use one of: {}", p.options.join(", ")),
                    ));
                }
            }
        }
    }
    if !info.metrics.contains(&spec.objective.metric.as_str()) {
        return Err(Problem::new(
            &["objective", "metric"],
            format!(
                "program `{}` does not report `{}`",
                info.name, spec.objective.metric
            ),
            format!("it reports: {}", info.metrics.join(", ")),
        ));
    }
    if let Some(crate::spec::EarlyStoppingSpec::Asha(a)) = &spec.early_stopping
        && !info.metrics.contains(&a.metric.as_str())
    {
        return Err(Problem::new(
            &["early_stopping", "asha", "metric"],
            format!(
                "program `{}` does not report `{}`, so ASHA could never stop a trial",
                info.name, a.metric
            ),
            format!("it reports: {}", info.metrics.join(", ")),
        ));
    }
    if !info.needs_dataset && spec.dataset.is_some() {
        return Err(Problem::new(
            &["dataset"],
            format!("program `{}` takes no dataset", info.name),
            "remove the `dataset` section, or pick a program that trains on data",
        ));
    }
    if spec.workers > 1 && !info.data_parallel {
        return Err(Problem::new(
            &["resources", "workers"],
            format!(
                "program `{}` cannot train one trial on several workers",
                info.name
            ),
            "use `workers: 1`, or a program that trains data-parallel (mlp-classifier, or a `nas` sweep's super-network)",
        ));
    }
    if info.needs_dataset && spec.dataset.is_none() {
        return Err(Problem::new(
            &["program"],
            format!("program `{}` needs a dataset", info.name),
            "add `dataset: { path: … }`",
        ));
    }
    Ok(())
}
