//! Running trial attempts: [`spawn_attempt`] runs one on a blocking thread with a
//! watchdog for its time limit and a stop flag for cancellation, and never lets a
//! trial's panic or error escape. The in-process [`WorkerActor`] and the worker node's
//! agent (`cluster::agent`) both use it.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tessera_core::Decision;
use tessera_core::program::{TrialExecutor, TrialReporter};
use tessera_core::trial::{Artifact, MetricValues, StepReport, TrialAssignment};

use super::now_ms;
use super::scheduler::SchedulerMsg;
use super::sweep::{AttemptEnd, SweepMsg};

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs one attempt, turning a panic into an error.
pub fn run_attempt(
    executor: &dyn TrialExecutor,
    a: &TrialAssignment,
    reporter: &mut dyn TrialReporter,
) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| executor.execute(a, reporter))) {
        Ok(r) => r,
        Err(payload) => Err(format!("panicked: {}", panic_message(payload.as_ref()))),
    }
}

/// Asks the sweep for a decision after a report (only when early stopping is on).
pub type Decide = Box<dyn FnMut(u64, &MetricValues) -> Decision + Send>;
/// Receives the attempt's end, once: from the trial thread or from the watchdog.
pub type OnEnd = Box<dyn FnOnce(AttemptEnd) + Send>;
/// Called when the trial thread is really done and its slot is free again.
pub type OnFreed = Box<dyn FnOnce() + Send>;

struct Reporter {
    history: Arc<Mutex<Vec<StepReport>>>,
    artifacts: Arc<Mutex<Vec<Artifact>>>,
    /// Set when the attempt is cancelled or over its time limit.
    stop: Arc<AtomicBool>,
    /// Whether the sweep decided to stop it early (kept apart from `stop`: a
    /// data-parallel ring gives up its exchange on `stop`, but an early stop must still
    /// reach the other replicas through that exchange).
    decided_stop: bool,
    wants_decisions: bool,
    decide: Decide,
}

impl TrialReporter for Reporter {
    fn report(&mut self, step: u64, metrics: &MetricValues) -> Decision {
        if let Ok(mut h) = self.history.lock() {
            h.push(StepReport {
                step,
                at_ms: now_ms(),
                metrics: metrics.clone(),
            });
        }
        if self.decided_stop || self.stop.load(Ordering::Relaxed) {
            return Decision::Stop;
        }
        if !self.wants_decisions {
            return Decision::Continue;
        }
        let d = (self.decide)(step, metrics);
        self.decided_stop = d == Decision::Stop;
        d
    }

    fn artifact(&mut self, artifact: Artifact) {
        if let Ok(mut a) = self.artifacts.lock() {
            a.push(artifact);
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn stop_signal(&self) -> Option<Arc<AtomicBool>> {
        Some(self.stop.clone())
    }
}

/// Starts one attempt on a blocking thread; returns its stop flag (set it to cancel:
/// the trial stops at its next report). If the assignment has a time limit and the
/// attempt exceeds it, `on_end` gets a failure at once and the thread is told to stop;
/// `on_freed` still waits for the thread.
pub fn spawn_attempt(
    executor: Arc<dyn TrialExecutor>,
    assignment: TrialAssignment,
    worker: String,
    decide: Decide,
    on_end: OnEnd,
    on_freed: OnFreed,
) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::new()));
    let artifacts = Arc::new(Mutex::new(Vec::new()));
    let on_end = Arc::new(Mutex::new(Some(on_end)));
    let started_at_ms = now_ms();
    let end_with = {
        let history = history.clone();
        let artifacts = artifacts.clone();
        let on_end = on_end.clone();
        let assignment = assignment.clone();
        move |result: Result<(), String>| {
            let f = on_end.lock().ok().and_then(|mut f| f.take());
            if let Some(f) = f {
                let history = history.lock().map(|h| h.clone()).unwrap_or_default();
                // A failed attempt's partial rows are not results.
                let artifacts = match &result {
                    Ok(()) => artifacts
                        .lock()
                        .map(|mut a| std::mem::take(&mut *a))
                        .unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                f(AttemptEnd {
                    trial_id: assignment.request.trial_id,
                    lease: assignment.lease,
                    attempt: assignment.attempt,
                    worker: worker.clone(),
                    started_at_ms,
                    result,
                    history,
                    artifacts,
                });
            }
        }
    };
    if let Some(limit) = assignment.time_limit_s {
        let end_with = end_with.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs_f64(limit)).await;
            stop.store(true, Ordering::Relaxed);
            end_with(Err(format!(
                "exceeded the time limit of {limit} s (budget.trial_timeout_s)"
            )));
        });
    }
    let mut reporter = Reporter {
        history,
        artifacts,
        stop: stop.clone(),
        decided_stop: false,
        wants_decisions: assignment.wants_decisions,
        decide,
    };
    tokio::task::spawn_blocking(move || {
        let result = run_attempt(executor.as_ref(), &assignment, &mut reporter);
        end_with(result);
        on_freed();
    });
    stop
}

/// Messages an in-process worker handles.
pub enum WorkerMsg {
    /// Run one attempt; report to `sweep`, free the slot at `scheduler`.
    Run {
        /// The attempt.
        assignment: Box<TrialAssignment>,
        /// Where decisions come from and the outcome goes.
        sweep: ActorRef<SweepMsg>,
        /// Where the freed slot goes.
        scheduler: ActorRef<SchedulerMsg>,
    },
    /// Stop a running attempt at its next report.
    Cancel {
        /// The dispatch.
        lease: u64,
    },
    /// An attempt's thread ended.
    Freed {
        /// The dispatch.
        lease: u64,
    },
}

// Local only: never crosses the network.
impl ractor::Message for WorkerMsg {}

/// A worker of the embedded coordinator.
pub struct WorkerActor;

/// The worker's state.
pub struct WorkerState {
    name: String,
    executor: Arc<dyn TrialExecutor>,
    running: HashMap<u64, Arc<AtomicBool>>,
}

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = (String, Arc<dyn TrialExecutor>);

    async fn pre_start(
        &self,
        _: ActorRef<WorkerMsg>,
        (name, executor): Self::Arguments,
    ) -> Result<WorkerState, ActorProcessingErr> {
        Ok(WorkerState {
            name,
            executor,
            running: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Run {
                assignment,
                sweep,
                scheduler,
            } => {
                let assignment = *assignment;
                let lease = assignment.lease;
                let trial_id = assignment.request.trial_id;
                let runtime = tokio::runtime::Handle::current();
                let running =
                    crate::metrics::WORKER_TRIALS_RUNNING.with_label_values(&[&state.name]);
                running.inc();
                // Replicas other than 0 of a data-parallel attempt only train: replica 0
                // reports and ends the attempt, and stops them all when told to.
                let silent = assignment.replica.as_ref().is_some_and(|r| r.rank > 0);
                let decide: Decide = if silent {
                    Box::new(|_, _| Decision::Continue)
                } else {
                    let sweep = sweep.clone();
                    Box::new(move |step, metrics| {
                        let call = sweep.call(
                            |reply| SweepMsg::Report {
                                trial_id,
                                lease,
                                step,
                                metrics: metrics.clone(),
                                reply,
                            },
                            None,
                        );
                        match runtime.block_on(call) {
                            Ok(ractor::rpc::CallResult::Success(d)) => d,
                            // The coordinator is gone or shutting down: stop wasting the slot.
                            _ => Decision::Stop,
                        }
                    })
                };
                let on_end: OnEnd = Box::new(move |end| {
                    if silent {
                        if let Err(e) = &end.result {
                            tracing::warn!(trial = end.trial_id, error = %e, "replica failed");
                        }
                    } else {
                        let _ = sweep.cast(SweepMsg::AttemptEnded(end));
                    }
                });
                let on_freed: OnFreed = Box::new(move || {
                    running.dec();
                    let _ = scheduler.cast(SchedulerMsg::SlotFreed { lease });
                    let _ = myself.cast(WorkerMsg::Freed { lease });
                });
                let stop = spawn_attempt(
                    state.executor.clone(),
                    assignment,
                    state.name.clone(),
                    decide,
                    on_end,
                    on_freed,
                );
                state.running.insert(lease, stop);
            }
            WorkerMsg::Cancel { lease } => {
                if let Some(stop) = state.running.get(&lease) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            WorkerMsg::Freed { lease } => {
                state.running.remove(&lease);
            }
        }
        Ok(())
    }
}
