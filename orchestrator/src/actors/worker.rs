//! The worker actor: runs trials with a [`TrialExecutor`] on blocking threads, one per
//! slot, and never lets a trial's panic or error take it down.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tessera_core::Decision;
use tessera_core::program::{TrialExecutor, TrialReporter};
use tessera_core::trial::{MetricValues, TrialAssignment, TrialId};

use super::now_ms;
use super::scheduler::SchedulerMsg;
use super::sweep::SweepMsg;

/// Messages a worker handles.
pub enum WorkerMsg {
    /// Run one attempt of a trial; report to `sweep`, free the slot at `scheduler`.
    Run {
        /// The attempt.
        assignment: TrialAssignment,
        /// Slots it occupies.
        slots: u32,
        /// Where reports and the outcome go.
        sweep: ActorRef<SweepMsg>,
        /// Where the freed slot goes.
        scheduler: ActorRef<SchedulerMsg>,
    },
}

/// A worker of the embedded coordinator.
pub struct WorkerActor;

/// The worker's state.
pub struct WorkerState {
    name: String,
    executor: Arc<dyn TrialExecutor>,
}

/// Reports from a trial thread to the sweep actor, waiting for each decision.
struct ActorReporter {
    sweep: ActorRef<SweepMsg>,
    trial_id: TrialId,
    attempt: u32,
    runtime: tokio::runtime::Handle,
}

impl TrialReporter for ActorReporter {
    fn report(&mut self, step: u64, metrics: &MetricValues) -> Decision {
        let call = self.sweep.call(
            |reply| SweepMsg::Report {
                trial_id: self.trial_id,
                attempt: self.attempt,
                step,
                metrics: metrics.clone(),
                reply,
            },
            None,
        );
        match self.runtime.block_on(call) {
            Ok(ractor::rpc::CallResult::Success(d)) => d,
            // The coordinator is gone or shutting down: stop wasting the slot.
            _ => Decision::Stop,
        }
    }
}

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

impl Actor for WorkerActor {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = (String, Arc<dyn TrialExecutor>);

    async fn pre_start(
        &self,
        _: ActorRef<WorkerMsg>,
        (name, executor): Self::Arguments,
    ) -> Result<WorkerState, ActorProcessingErr> {
        Ok(WorkerState { name, executor })
    }

    async fn handle(
        &self,
        _: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Run {
                assignment,
                slots,
                sweep,
                scheduler,
            } => {
                let executor = state.executor.clone();
                let worker = state.name.clone();
                let runtime = tokio::runtime::Handle::current();
                let running = crate::metrics::WORKER_TRIALS_RUNNING.with_label_values(&[&worker]);
                running.inc();
                tokio::task::spawn_blocking(move || {
                    let started_at_ms = now_ms();
                    let mut reporter = ActorReporter {
                        sweep: sweep.clone(),
                        trial_id: assignment.request.trial_id,
                        attempt: assignment.attempt,
                        runtime,
                    };
                    let result = run_attempt(executor.as_ref(), &assignment, &mut reporter);
                    running.dec();
                    let _ = sweep.cast(SweepMsg::AttemptEnded {
                        trial_id: assignment.request.trial_id,
                        attempt: assignment.attempt,
                        worker: worker.clone(),
                        started_at_ms,
                        result,
                    });
                    let _ = scheduler.cast(SchedulerMsg::SlotFreed { worker, slots });
                });
            }
        }
        Ok(())
    }
}
