//! Early-stopping rules decide *whether to keep running* a trial: they see reports and
//! return [`Decision`]s. They never touch a worker; the runtime acts on the decision.

use std::collections::BTreeMap;

use crate::spec::{AshaSpec, EarlyStoppingSpec};
use crate::trial::{Decision, MetricValues, TrialId};

/// A rule that looks at each report of a running trial and says continue or stop.
///
/// Implementations must be deterministic functions of the reports they were given, in
/// order, so that replaying the recorded reports after a restart rebuilds their state.
pub trait EarlyStopper: Send {
    /// A trial reported `metrics` at `step`.
    fn on_report(&mut self, trial_id: TrialId, step: u64, metrics: &MetricValues) -> Decision;

    /// Whether a report at `step` can change this rule's state (the runtime journals only
    /// those reports, to rebuild the rule after a restart).
    fn is_milestone(&self, step: u64) -> bool;
}

/// Builds the rule a spec asks for (or one that never stops).
pub fn stopper_for(spec: Option<&EarlyStoppingSpec>) -> Box<dyn EarlyStopper> {
    match spec {
        None => Box::new(NeverStop),
        Some(EarlyStoppingSpec::Asha(a)) => Box::new(Asha::new(a.clone())),
    }
}

/// Lets every trial run to its end.
#[derive(Debug, Default, Clone, Copy)]
pub struct NeverStop;

impl EarlyStopper for NeverStop {
    fn on_report(&mut self, _: TrialId, _: u64, _: &MetricValues) -> Decision {
        Decision::Continue
    }

    fn is_milestone(&self, _: u64) -> bool {
        false
    }
}

/// Asynchronous successive halving (Li et al., *A System for Massively Parallel
/// Hyperparameter Tuning*, MLSys 2020), as a stopping rule.
///
/// Rungs sit at `grace · η^k` steps below `max_t`. When a trial reaches a rung, its value
/// is compared with the values earlier trials had at that rung: it continues only if it is
/// at least as good as their `(1 − 1/η)` quantile, i.e. in their top `1/η`. Decisions never
/// wait for other trials (that is the "asynchronous"). Properties kept: the first trial at
/// a rung always continues; a trial at least as good as every earlier one continues; a
/// trial missing the metric continues; reports between rungs never stop a trial.
#[derive(Debug, Clone)]
pub struct Asha {
    spec: AshaSpec,
    rungs: Vec<u64>,
    /// rung step → trial → score (larger is better).
    recorded: BTreeMap<u64, BTreeMap<TrialId, f64>>,
}

impl Asha {
    /// An ASHA rule with the given settings.
    pub fn new(spec: AshaSpec) -> Self {
        let mut rungs: Vec<u64> = Vec::new();
        let mut r = spec.grace as f64;
        while (r.round() as u64) < spec.max_t && rungs.len() < 10_000 {
            let step = r.round() as u64;
            if rungs.last() != Some(&step) {
                rungs.push(step);
            }
            // Always move to a later step, even for a reduction factor barely above 1.
            r = (r * spec.reduction).max(step as f64 + 1.0);
        }
        Self {
            spec,
            rungs,
            recorded: BTreeMap::new(),
        }
    }

    /// The rung steps.
    pub fn rungs(&self) -> &[u64] {
        &self.rungs
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of `values` with linear interpolation (numpy's default).
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(values[lo] + (values[hi] - values[lo]) * (pos - lo as f64))
}

impl EarlyStopper for Asha {
    fn on_report(&mut self, trial_id: TrialId, step: u64, metrics: &MetricValues) -> Decision {
        if !self.rungs.contains(&step) {
            return Decision::Continue;
        }
        let Some(&value) = metrics.get(&self.spec.metric) else {
            return Decision::Continue;
        };
        let score = if value.is_finite() {
            self.spec.goal.score(value)
        } else {
            f64::NEG_INFINITY
        };
        let rung = self.recorded.entry(step).or_default();
        let mut others: Vec<f64> = rung
            .iter()
            .filter(|(t, _)| **t != trial_id)
            .map(|(_, s)| *s)
            .collect();
        rung.insert(trial_id, score);
        match quantile(&mut others, 1.0 - 1.0 / self.spec.reduction) {
            Some(cutoff) if score < cutoff => Decision::Stop,
            _ => Decision::Continue,
        }
    }

    fn is_milestone(&self, step: u64) -> bool {
        self.rungs.contains(&step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::Goal;

    #[test]
    fn a_reduction_barely_above_one_still_builds_finite_rungs() {
        let a = Asha::new(AshaSpec {
            metric: "m".into(),
            goal: Goal::Maximize,
            grace: 1,
            reduction: 1.0 + 1e-15,
            max_t: 50,
        });
        assert_eq!(a.rungs().len(), 49);
    }

    fn asha() -> Asha {
        Asha::new(AshaSpec {
            metric: "acc".into(),
            goal: Goal::Maximize,
            grace: 1,
            reduction: 3.0,
            max_t: 20,
        })
    }

    fn m(v: f64) -> MetricValues {
        [("acc".to_owned(), v)].into_iter().collect()
    }

    #[test]
    fn rungs_grow_geometrically_below_max_t() {
        assert_eq!(asha().rungs(), &[1, 3, 9]);
    }

    #[test]
    fn first_trial_continues_and_bad_ones_stop() {
        let mut a = asha();
        assert_eq!(a.on_report(0, 1, &m(0.5)), Decision::Continue);
        assert_eq!(a.on_report(1, 1, &m(0.9)), Decision::Continue);
        assert_eq!(a.on_report(2, 1, &m(0.1)), Decision::Stop);
        // Between rungs nothing stops.
        assert_eq!(a.on_report(2, 2, &m(0.0)), Decision::Continue);
    }

    #[test]
    fn minimize_flips_the_order() {
        let mut a = Asha::new(AshaSpec {
            metric: "loss".into(),
            goal: Goal::Minimize,
            grace: 2,
            reduction: 2.0,
            max_t: 8,
        });
        let l = |v: f64| -> MetricValues { [("loss".to_owned(), v)].into_iter().collect() };
        assert_eq!(a.on_report(0, 2, &l(1.0)), Decision::Continue);
        assert_eq!(a.on_report(1, 2, &l(2.0)), Decision::Stop);
        assert_eq!(a.on_report(2, 2, &l(0.5)), Decision::Continue);
    }

    #[test]
    fn a_rerun_replaces_its_own_record() {
        let mut a = asha();
        a.on_report(0, 1, &m(0.5));
        a.on_report(0, 1, &m(0.5));
        assert_eq!(a.recorded[&1].len(), 1);
    }

    #[test]
    fn quantile_matches_numpy() {
        assert_eq!(quantile(&mut [1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
        assert_eq!(quantile(&mut [5.0], 0.9), Some(5.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
