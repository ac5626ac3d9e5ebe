//! Properties ASHA keeps, for any sequence of reports (proptest).

use proptest::prelude::*;
use tessera_core::Decision;
use tessera_core::spec::{AshaSpec, Goal};
use tessera_core::stopping::{Asha, EarlyStopper};
use tessera_core::trial::MetricValues;

fn spec(goal: Goal, reduction: f64) -> AshaSpec {
    AshaSpec {
        metric: "m".into(),
        goal,
        grace: 1,
        reduction,
        max_t: 30,
    }
}

fn m(v: f64) -> MetricValues {
    [("m".to_owned(), v)].into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn asha_keeps_its_promises(
        reports in prop::collection::vec((0u64..12, 1u64..30, -10.0f64..10.0), 1..120),
        maximize in any::<bool>(),
        reduction in 1.5f64..5.0,
    ) {
        let goal = if maximize { Goal::Maximize } else { Goal::Minimize };
        let mut asha = Asha::new(spec(goal, reduction));
        let mut again = Asha::new(spec(goal, reduction));
        let rungs = asha.rungs().to_vec();
        // Per rung: (trial, score) seen so far, larger is better.
        let mut seen: std::collections::BTreeMap<u64, Vec<(u64, f64)>> = Default::default();
        for (trial, step, value) in reports {
            let d = asha.on_report(trial, step, &m(value));
            prop_assert_eq!(d, again.on_report(trial, step, &m(value)), "deterministic");
            if !rungs.contains(&step) {
                prop_assert_eq!(d, Decision::Continue, "no decision between rungs");
                continue;
            }
            let score = goal.score(value);
            let others: Vec<f64> = seen.get(&step).map(|v| v.iter().filter(|(t, _)| *t != trial).map(|(_, s)| *s).collect()).unwrap_or_default();
            if others.is_empty() {
                prop_assert_eq!(d, Decision::Continue, "the first trial at a rung continues");
            }
            if others.iter().all(|o| score >= *o) {
                prop_assert_eq!(d, Decision::Continue, "a trial as good as every earlier one continues");
            }
            let entry = seen.entry(step).or_default();
            entry.retain(|(t, _)| *t != trial);
            entry.push((trial, score));
        }
        // A report without the metric never stops a trial.
        prop_assert_eq!(asha.on_report(99, rungs[0], &MetricValues::new()), Decision::Continue);
    }
}
