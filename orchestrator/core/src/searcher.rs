//! Searchers decide *what* to try: one [`Searcher`] trait for every sweep kind.
//!
//! A searcher is a pure state machine: [`Searcher::ask`] returns the next trial (or says
//! to wait, or that it is done), [`Searcher::tell`] feeds back an outcome. It does no
//! I/O. After a crash the coordinator rebuilds a searcher by replaying the recorded
//! trials with [`Searcher::replay`]: a rebuilt searcher asks for exactly the trials an
//! uninterrupted one would have.

use crate::rng::{Rng, derive_seed};
use crate::space::SearchSpace;
use crate::spec::{SweepKind, SweepSpec};
use crate::trial::{TrialId, TrialOutcome, TrialRequest};

/// The answer to [`Searcher::ask`].
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    /// Run this trial.
    Trial(TrialRequest),
    /// Nothing now; ask again after the next outcome.
    Wait,
    /// Every trial has been handed out.
    Done,
}

/// Errors rebuilding a searcher from recorded trials.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayError {
    /// A recorded trial is not the one this searcher would have asked for: the sweep file
    /// or the seed changed since the trials were recorded.
    #[error(
        "recorded trial {trial_id} differs from what the searcher asks now; the sweep or its seed changed"
    )]
    Diverged {
        /// The first trial that differs.
        trial_id: TrialId,
    },
}

/// Decides which trials to run. See the module docs for the contract.
pub trait Searcher: Send {
    /// The next trial, if one is ready.
    fn ask(&mut self) -> Ask;

    /// An outcome of a trial this searcher asked for.
    fn tell(&mut self, outcome: &TrialOutcome);

    /// Trials asked for so far.
    fn issued(&self) -> u64;

    /// Rows an earlier trial produced that `request` needs (a `nas` sweep's trained
    /// super-network, for its evaluation trials); sent with the assignment, not recorded
    /// with the trial.
    fn inputs(&self, _request: &TrialRequest) -> Vec<crate::trial::Artifact> {
        Vec::new()
    }

    /// What the sweep derived from all its trials, written when it completes (a `nas`
    /// sweep's front, a `metalic` sweep's rounds); `None` for kinds without one.
    fn summary(&self) -> Option<KindSummary> {
        None
    }

    /// Rebuilds the state after a restart by replaying what was recorded, in the order
    /// it happened: each recorded trial must be the one `ask` gives again, each outcome
    /// is told again. (Order matters for adaptive searchers, whose asks depend on what
    /// they were told before.)
    fn replay(&mut self, events: &[ReplayEvent]) -> Result<(), ReplayError> {
        for event in events {
            match event {
                ReplayEvent::Issued(recorded) => match self.ask() {
                    Ask::Trial(t) if t == *recorded => {}
                    _ => {
                        return Err(ReplayError::Diverged {
                            trial_id: recorded.trial_id,
                        });
                    }
                },
                ReplayEvent::Told(outcome) => self.tell(outcome),
            }
        }
        Ok(())
    }
}

/// A sweep kind's results derived from all its trials.
#[derive(Debug, Clone, PartialEq)]
pub enum KindSummary {
    /// Every sub-network, the front and the hypervolume trace.
    Nas(Box<crate::nas_sweep::NasSummary>),
    /// Every round and test of every policy, with regrets.
    Metalic(Box<crate::metalic_sweep::MetalicSummary>),
}

/// One recorded searcher interaction, replayed after a restart.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayEvent {
    /// The searcher asked for this trial.
    Issued(TrialRequest),
    /// It was told this outcome.
    Told(TrialOutcome),
}

/// Builds the searcher of a sweep. The spec's seed must be set.
pub fn searcher_for(spec: &SweepSpec) -> Box<dyn Searcher> {
    let seed = spec.seed.unwrap_or(0);
    match spec.kind {
        SweepKind::Grid => Box::new(GridSearcher::new(spec.space.clone(), spec.trials, seed)),
        SweepKind::Fractal if spec.fractal.is_some() => {
            Box::new(crate::fractal_sweep::FractalSearcher::new(
                spec.fractal.clone().unwrap_or_else(|| unreachable!()),
                seed,
            ))
        }
        SweepKind::Nas if spec.nas.is_some() => Box::new(crate::nas_sweep::NasSearcher::new(
            spec.nas.clone().unwrap_or_else(|| unreachable!()),
            seed,
        )),
        SweepKind::Metalic if spec.metalic.is_some() => {
            Box::new(crate::metalic_sweep::MetalicSearcher::new(
                spec.metalic.clone().unwrap_or_else(|| unreachable!()),
                seed,
            ))
        }
        _ => Box::new(RandomSearcher::new(spec.space.clone(), spec.trials, seed)),
    }
}

/// Every point of the space's grid, in mixed-radix order.
///
/// Properties: each grid point is asked for at most once; `trials` ≤ grid size points are
/// asked for; the order depends only on the space, so the same file gives the same trials.
#[derive(Debug, Clone)]
pub struct GridSearcher {
    space: SearchSpace,
    trials: u64,
    seed: u64,
    next: u64,
}

impl GridSearcher {
    /// A grid searcher over `space` asking for `trials` points.
    pub fn new(space: SearchSpace, trials: u64, seed: u64) -> Self {
        let trials = trials.min(space.grid_size());
        Self {
            space,
            trials,
            seed,
            next: 0,
        }
    }
}

impl Searcher for GridSearcher {
    fn ask(&mut self) -> Ask {
        if self.next >= self.trials {
            return Ask::Done;
        }
        let trial_id = self.next;
        self.next += 1;
        Ask::Trial(TrialRequest {
            trial_id,
            params: self.space.grid_point(trial_id),
            seed: derive_seed(self.seed, trial_id),
        })
    }

    fn tell(&mut self, _outcome: &TrialOutcome) {}

    fn issued(&self) -> u64 {
        self.next
    }
}

/// Independent draws from the space (Bergstra & Bengio, 2012).
///
/// Properties: trial *i*'s hyperparameters depend only on the sweep seed and *i*, so the
/// same seed gives the same trials in any order of completion, and a restarted sweep
/// continues the same sequence.
#[derive(Debug, Clone)]
pub struct RandomSearcher {
    space: SearchSpace,
    trials: u64,
    seed: u64,
    next: u64,
}

impl RandomSearcher {
    /// A random searcher over `space` asking for `trials` draws.
    pub fn new(space: SearchSpace, trials: u64, seed: u64) -> Self {
        Self {
            space,
            trials,
            seed,
            next: 0,
        }
    }
}

impl Searcher for RandomSearcher {
    fn ask(&mut self) -> Ask {
        if self.next >= self.trials {
            return Ask::Done;
        }
        let trial_id = self.next;
        self.next += 1;
        let mut rng = Rng::new(derive_seed(self.seed ^ 0x7E55_E7A0, trial_id));
        Ask::Trial(TrialRequest {
            trial_id,
            params: self.space.sample(&mut rng),
            seed: derive_seed(self.seed, trial_id),
        })
    }

    fn tell(&mut self, _outcome: &TrialOutcome) {}

    fn issued(&self) -> u64 {
        self.next
    }
}
