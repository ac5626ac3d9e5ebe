//! The shared searcher suite: every searcher stays in its space, gives the same trials
//! for the same seed, and continues exactly after being rebuilt from recorded trials.

use proptest::prelude::*;
use tessera_core::searcher::{GridSearcher, RandomSearcher};
use tessera_core::space::{Domain, ParamValue, Scale};
use tessera_core::trial::{TrialOutcome, TrialStatus};
use tessera_core::{Ask, ReplayEvent, SearchSpace, Searcher, TrialRequest};

fn space() -> SearchSpace {
    let mut s = SearchSpace::default();
    s.params.insert(
        "lr".into(),
        Domain::Float {
            low: 1e-4,
            high: 1e-1,
            scale: Scale::Log,
            grid: Some(5),
        },
    );
    s.params.insert(
        "width".into(),
        Domain::Int {
            low: 8,
            high: 512,
            scale: Scale::Log,
            grid: Some(4),
        },
    );
    s.params.insert(
        "units".into(),
        Domain::Int {
            low: -3,
            high: 3,
            scale: Scale::Linear,
            grid: None,
        },
    );
    s.params.insert(
        "opt".into(),
        Domain::Choice(vec![
            ParamValue::Str("adam".into()),
            ParamValue::Str("sgd".into()),
        ]),
    );
    s.params
        .insert("epochs".into(), Domain::Fixed(ParamValue::Int(3)));
    s
}

type Factory = fn(u64, u64) -> Box<dyn Searcher>;

fn factories() -> Vec<(&'static str, Factory)> {
    vec![
        ("grid", |trials, seed| {
            Box::new(GridSearcher::new(space(), trials, seed))
        }),
        ("random", |trials, seed| {
            Box::new(RandomSearcher::new(space(), trials, seed))
        }),
    ]
}

fn drain(s: &mut dyn Searcher, limit: usize) -> Vec<TrialRequest> {
    let mut out = Vec::new();
    while out.len() < limit {
        match s.ask() {
            Ask::Trial(t) => {
                s.tell(&TrialOutcome {
                    trial_id: t.trial_id,
                    status: TrialStatus::Finished,
                    objective: Some(t.trial_id as f64),
                    steps: 1,
                    artifacts: Vec::new(),
                });
                out.push(t);
            }
            Ask::Wait => continue,
            Ask::Done => break,
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn trials_stay_in_the_space(seed in any::<u64>(), trials in 1u64..200) {
        for (name, make) in factories() {
            let mut s = make(trials, seed);
            let got = drain(s.as_mut(), 1000);
            prop_assert!(got.len() as u64 <= trials, "{name}");
            for t in &got {
                prop_assert!(space().contains(&t.params), "{name}: {:?}", t.params);
            }
            let ids: Vec<u64> = got.iter().map(|t| t.trial_id).collect();
            prop_assert_eq!(ids, (0..got.len() as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn same_seed_same_trials(seed in any::<u64>()) {
        for (name, make) in factories() {
            let a = drain(make(40, seed).as_mut(), 1000);
            let b = drain(make(40, seed).as_mut(), 1000);
            prop_assert_eq!(a, b, "{}", name);
        }
    }

    #[test]
    fn replay_continues_exactly(seed in any::<u64>(), cut in 0usize..40) {
        for (name, make) in factories() {
            let full = drain(make(40, seed).as_mut(), 1000);
            let cut = cut.min(full.len());
            let outcomes: Vec<TrialOutcome> = full[..cut]
                .iter()
                .map(|t| TrialOutcome { trial_id: t.trial_id, status: TrialStatus::Finished, objective: Some(1.0), steps: 1, artifacts: Vec::new() })
                .collect();
            let mut rebuilt = make(40, seed);
            let events: Vec<ReplayEvent> = full[..cut]
                .iter()
                .zip(&outcomes)
                .flat_map(|(t, o)| [ReplayEvent::Issued(t.clone()), ReplayEvent::Told(o.clone())])
                .collect();
            rebuilt.replay(&events).unwrap();
            prop_assert_eq!(rebuilt.issued(), cut as u64);
            let rest = drain(rebuilt.as_mut(), 1000);
            prop_assert_eq!(&rest[..], &full[cut..], "{}", name);
        }
    }
}

#[test]
fn replay_detects_a_changed_sweep() {
    let recorded = drain(&mut RandomSearcher::new(space(), 5, 1), 5);
    let mut other = RandomSearcher::new(space(), 5, 2);
    let events: Vec<ReplayEvent> = recorded.into_iter().map(ReplayEvent::Issued).collect();
    assert!(other.replay(&events).is_err());
}

#[test]
fn grid_covers_the_whole_grid_without_repeats() {
    let s = space();
    let size = s.grid_size();
    assert_eq!(size, 5 * 4 * 7 * 2);
    let got = drain(&mut GridSearcher::new(s, u64::MAX, 0), 10_000);
    assert_eq!(got.len() as u64, size);
    let mut params: Vec<String> = got.iter().map(|t| format!("{:?}", t.params)).collect();
    params.sort();
    params.dedup();
    assert_eq!(params.len() as u64, size);
}

#[test]
fn random_log_scale_is_uniform_in_log_space() {
    let got = drain(&mut RandomSearcher::new(space(), 4000, 9), 4000);
    let below = got
        .iter()
        .filter(|t| t.params["lr"].as_f64().unwrap() < 10f64.powf(-2.5))
        .count() as f64
        / got.len() as f64;
    // log10(lr) is uniform on [-4, -1]: half the draws fall below 10^-2.5.
    assert!((below - 0.5).abs() < 0.05, "{below}");
}

/// The `nas` searcher's part of the suite. Its trials depend on what it is told (each
/// generation waits for the last), so it is driven by events: trials finish newest
/// first, with the synthetic measurement.
/// Every interaction of a whole run of `s`, in order: trials are asked for until the
/// searcher waits, then the newest running one ends with `outcome`.
fn run_to_end(
    mut s: impl Searcher,
    outcome: impl Fn(&TrialRequest) -> TrialOutcome,
) -> Vec<ReplayEvent> {
    let (mut out, mut running) = (Vec::new(), Vec::<TrialRequest>::new());
    loop {
        match s.ask() {
            Ask::Trial(t) => {
                out.push(ReplayEvent::Issued(t.clone()));
                running.push(t);
            }
            Ask::Wait => {
                let t = running.pop().expect("waiting with nothing running");
                let o = outcome(&t);
                s.tell(&o);
                out.push(ReplayEvent::Told(o));
            }
            Ask::Done => return out,
        }
    }
}

mod nas {
    use super::*;
    use tessera_core::nas_sweep::{NasSearcher, NasSpec, RawNas, Tactic, synthetic_outcome};

    fn spec(tactic: Tactic) -> NasSpec {
        let raw: RawNas = serde_yaml::from_str(&format!(
            "supernet: {{ family: mlp, depth: [1, 2, 3], width: [8, 16, 32, 64] }}\n\
             objectives:\n  - {{ metric: accuracy, goal: maximize }}\n  - {{ metric: macs, goal: minimize }}\n\
             tactic: {}\npopulation: 8\nevaluations: 30\nshards: 2\nbatch: 3\npredictor_generations: 5\n",
            tactic.as_str()
        ))
        .unwrap();
        raw.validate().unwrap()
    }

    /// Every interaction of a whole run, in order.
    fn events(spec: &NasSpec, seed: u64) -> Vec<ReplayEvent> {
        run_to_end(NasSearcher::new(spec.clone(), seed), |t| {
            synthetic_outcome(spec, t)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]

        #[test]
        fn nas_same_seed_same_trials_and_replay_continues_exactly(seed in any::<u64>(), cut in 0usize..200) {
            for tactic in [Tactic::Random, Tactic::Nsga2, Tactic::Linas] {
                let spec = spec(tactic);
                let full = events(&spec, seed);
                prop_assert_eq!(&full, &events(&spec, seed));
                let issued = full.iter().filter(|e| matches!(e, ReplayEvent::Issued(_))).count();
                prop_assert_eq!(issued as u64, spec.trials());
                let cut = cut.min(full.len());
                let mut rebuilt = NasSearcher::new(spec.clone(), seed);
                rebuilt.replay(&full[..cut]).unwrap();
                for e in &full[cut..] {
                    match e {
                        ReplayEvent::Issued(t) => prop_assert_eq!(rebuilt.ask(), Ask::Trial(t.clone())),
                        ReplayEvent::Told(o) => {
                            // A rebuilt searcher may say to wait where the original
                            // asked at once: only trials matter.
                            rebuilt.tell(o)
                        }
                    }
                }
                prop_assert_eq!(rebuilt.ask(), Ask::Done);
                let genomes_in_range = rebuilt.subnets().iter().all(|r| {
                    r.genome.iter().zip(spec.supernet.choices()).all(|(g, c)| *g < c)
                });
                prop_assert!(genomes_in_range);
            }
        }
    }
}

mod metalic {
    use super::*;
    use tessera_core::metalic_sweep::{
        MetalicSearcher, MetalicSpec, RawMetalic, synthetic_outcome,
    };

    fn spec(two_stage: bool) -> MetalicSpec {
        let raw: RawMetalic = serde_yaml::from_str(&format!(
            "family: reaction\npolicies: [ucb, thompson, random, {{ name: cpinn, fixed: [solution, flux] }}]\n\
             warmup: 3\nrounds: 8\ntest: 3\nbatch: 3\nfit_iterations: 20\ntwo_stage: {two_stage}\n"
        ))
        .unwrap();
        raw.validate(&Default::default()).unwrap()
    }

    /// Every interaction of a whole run, in order; outcomes come back newest first.
    fn events(spec: &MetalicSpec, seed: u64) -> Vec<ReplayEvent> {
        run_to_end(MetalicSearcher::new(spec.clone(), seed), |t| {
            synthetic_outcome(spec, t)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]

        #[test]
        fn metalic_same_seed_same_trials_and_replay_continues_exactly(seed in any::<u64>(), cut in 0usize..150) {
            for two_stage in [false, true] {
                let spec = spec(two_stage);
                let full = events(&spec, seed);
                prop_assert_eq!(&full, &events(&spec, seed));
                let issued = full.iter().filter(|e| matches!(e, ReplayEvent::Issued(_))).count();
                prop_assert_eq!(issued as u64, spec.trials());
                let cut = cut.min(full.len());
                let mut rebuilt = MetalicSearcher::new(spec.clone(), seed);
                rebuilt.replay(&full[..cut]).unwrap();
                for e in &full[cut..] {
                    match e {
                        ReplayEvent::Issued(t) => prop_assert_eq!(rebuilt.ask(), Ask::Trial(t.clone())),
                        ReplayEvent::Told(o) => rebuilt.tell(o),
                    }
                }
                prop_assert_eq!(rebuilt.ask(), Ask::Done);
                let original = {
                    let mut s = MetalicSearcher::new(spec.clone(), seed);
                    s.replay(&full).unwrap();
                    s.summary()
                };
                // (Debug text: predictions of unmodelled rounds are NaN, never equal.)
                prop_assert_eq!(format!("{:?}", rebuilt.summary()), format!("{original:?}"));
            }
        }
    }
}
