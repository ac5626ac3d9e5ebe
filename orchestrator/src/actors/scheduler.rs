//! The scheduler actor: a queue of trial attempts and the free slots of each worker.
//! Placement is the pure function [`place`].

use std::collections::VecDeque;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tessera_core::trial::TrialAssignment;

use super::sweep::SweepMsg;
use super::worker::WorkerMsg;

/// Messages the scheduler handles.
pub enum SchedulerMsg {
    /// A worker joined with `slots` slots.
    AddWorker {
        /// Its name (the `worker` column of the results).
        name: String,
        /// Trials it can run at once.
        slots: u32,
        /// Its actor.
        actor: ActorRef<WorkerMsg>,
    },
    /// Queue an attempt; `sweep` receives its reports and outcome.
    Submit {
        /// The attempt.
        assignment: TrialAssignment,
        /// Slots it needs.
        slots: u32,
        /// Its sweep.
        sweep: ActorRef<SweepMsg>,
    },
    /// Slots of `worker` are free again.
    SlotFreed {
        /// The worker.
        worker: String,
        /// How many.
        slots: u32,
    },
}

/// A worker as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotView {
    /// Worker name.
    pub name: String,
    /// Free slots.
    pub free: u32,
    /// All its slots.
    pub capacity: u32,
}

/// Places queued attempts (by the slots each needs) on workers' free slots, in queue
/// order: returns (queue index, worker index) pairs. Never over-commits a worker; picks
/// the worker with the most free slots (spreading load), lowest index on ties; an
/// attempt that fits nowhere waits without blocking smaller ones behind it.
pub fn place(needs: &[u32], workers: &[SlotView]) -> Vec<(usize, usize)> {
    let mut free: Vec<u32> = workers.iter().map(|w| w.free).collect();
    let mut out = Vec::new();
    for (qi, &need) in needs.iter().enumerate() {
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, f)| **f >= need)
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i);
        if let Some(wi) = best {
            free[wi] -= need;
            out.push((qi, wi));
        }
    }
    out
}

/// The scheduler actor.
pub struct SchedulerActor;

struct Queued {
    queued_at: std::time::Instant,
    assignment: TrialAssignment,
    slots: u32,
    sweep: ActorRef<SweepMsg>,
}

/// The scheduler's state.
pub struct SchedulerState {
    queue: VecDeque<Queued>,
    workers: Vec<(SlotView, ActorRef<WorkerMsg>)>,
    myself: ActorRef<SchedulerMsg>,
}

impl SchedulerState {
    fn export(&self) {
        use crate::metrics::{QUEUE_DEPTH, SLOTS, WORKERS_CONNECTED};
        QUEUE_DEPTH.set(self.queue.len() as i64);
        WORKERS_CONNECTED.set(self.workers.len() as i64);
        let free: u32 = self.workers.iter().map(|(v, _)| v.free).sum();
        let total: u32 = self.workers.iter().map(|(v, _)| v.capacity).sum();
        SLOTS.with_label_values(&["free"]).set(i64::from(free));
        SLOTS
            .with_label_values(&["used"])
            .set(i64::from(total.saturating_sub(free)));
    }

    fn dispatch(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let needs: Vec<u32> = self.queue.iter().map(|q| q.slots).collect();
        let views: Vec<SlotView> = self.workers.iter().map(|(v, _)| v.clone()).collect();
        let placed = place(&needs, &views);
        let mut taken = vec![false; self.queue.len()];
        for &(qi, wi) in &placed {
            taken[qi] = true;
            let q = &self.queue[qi];
            crate::metrics::SCHEDULING_LATENCY
                .with_label_values(&[] as &[&str])
                .observe(q.queued_at.elapsed().as_secs_f64());
            self.workers[wi].0.free -= q.slots;
            let _ = self.workers[wi].1.cast(WorkerMsg::Run {
                assignment: q.assignment.clone(),
                slots: q.slots,
                sweep: q.sweep.clone(),
                scheduler: self.myself.clone(),
            });
        }
        let mut i = 0;
        self.queue.retain(|_| {
            let keep = !taken[i];
            i += 1;
            keep
        });
    }
}

impl Actor for SchedulerActor {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        _: (),
    ) -> Result<SchedulerState, ActorProcessingErr> {
        Ok(SchedulerState {
            queue: VecDeque::new(),
            workers: Vec::new(),
            myself,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<SchedulerMsg>,
        msg: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::AddWorker { name, slots, actor } => {
                crate::metrics::HEARTBEAT_MISSES
                    .with_label_values(&[&name])
                    .inc_by(0);
                state.workers.push((
                    SlotView {
                        name,
                        free: slots,
                        capacity: slots,
                    },
                    actor,
                ));
            }
            SchedulerMsg::Submit {
                assignment,
                slots,
                sweep,
            } => {
                state.queue.push_back(Queued {
                    queued_at: std::time::Instant::now(),
                    assignment,
                    slots,
                    sweep,
                });
            }
            SchedulerMsg::SlotFreed { worker, slots } => {
                if let Some((v, _)) = state.workers.iter_mut().find(|(v, _)| v.name == worker) {
                    v.free += slots;
                }
            }
        }
        state.dispatch();
        state.export();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(free: &[u32]) -> Vec<SlotView> {
        free.iter()
            .enumerate()
            .map(|(i, f)| SlotView {
                name: format!("w{i}"),
                free: *f,
                capacity: *f,
            })
            .collect()
    }

    #[test]
    fn never_overcommits_and_spreads() {
        assert_eq!(place(&[1, 1, 1], &w(&[2, 1])), vec![(0, 0), (1, 0), (2, 1)]);
        assert_eq!(place(&[1, 1, 1, 1], &w(&[1, 1])), vec![(0, 0), (1, 1)]);
    }

    #[test]
    fn big_attempts_wait_without_blocking_small_ones() {
        assert_eq!(place(&[3, 1], &w(&[2])), vec![(1, 0)]);
    }
}
