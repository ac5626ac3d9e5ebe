//! The scheduler actor: one queue of trial attempts for every sweep, and the free slots
//! and GPUs of each worker, in-process or remote. Placement is the pure function
//! [`place`], fairness between sweeps the pure function [`fair_order`].

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tessera_core::trial::{ReplicaRef, TrialAssignment, TrialId, replica_lease};

use super::sweep::SweepMsg;
use super::worker::WorkerMsg;
use crate::cluster::wire::ToWorker;

/// How the scheduler reaches a worker.
#[derive(Clone)]
pub enum WorkerLink {
    /// An in-process worker actor.
    Local(ActorRef<WorkerMsg>),
    /// A worker node's agent, over the cluster.
    Remote(ActorRef<ToWorker>),
}

/// A dispatch a worker still holds when it (re)joins, so its slots count as used.
#[derive(Clone)]
pub struct Busy {
    /// The sweep that adopted it, if one did (it hears if the worker is lost).
    pub sweep: Option<(ActorRef<SweepMsg>, TrialId)>,
    /// Its sweep.
    pub sweep_id: String,
    /// The dispatch.
    pub lease: u64,
    /// Slots it holds.
    pub slots: u32,
    /// GPUs it holds.
    pub gpus: u32,
}

/// Messages the scheduler handles.
pub enum SchedulerMsg {
    /// A worker joined.
    AddWorker {
        /// Its name (the `worker` column of the results).
        name: String,
        /// Trials it can run at once.
        slots: u32,
        /// GPUs it has.
        gpus: u32,
        /// Its ring address for data-parallel trials, if it takes them.
        ring: Option<String>,
        /// How to reach it.
        link: WorkerLink,
        /// Dispatches it still runs from before (a rejoin).
        busy: Vec<Busy>,
    },
    /// A worker left or was lost: its dispatches go back to their sweeps as lost.
    RemoveWorker {
        /// The worker.
        name: String,
    },
    /// Queue an attempt; `sweep` receives its reports and outcome.
    Submit {
        /// The sweep's id, for fair sharing and for remote workers' results.
        sweep_id: String,
        /// The attempt.
        assignment: TrialAssignment,
        /// Slots it needs.
        slots: u32,
        /// GPUs it needs (per worker).
        gpus: u32,
        /// Workers it trains on at once.
        workers: u32,
        /// Fewest workers a retry of it may continue on.
        min_workers: u32,
        /// Its sweep.
        sweep: ActorRef<SweepMsg>,
    },
    /// The dispatch `lease` no longer occupies its worker.
    SlotFreed {
        /// The dispatch (the scheduler knows its worker).
        lease: u64,
    },
    /// A sweep was cancelled: drop its queued attempts, stop its running ones.
    Cancel {
        /// The sweep.
        sweep_id: String,
        /// Its dispatches.
        leases: Vec<u64>,
    },
    /// Who runs what, for `tessera status`.
    Workers(ractor::RpcReplyPort<Vec<SlotView>>),
}

// Local only: never crosses the network.
impl ractor::Message for SchedulerMsg {}

/// A worker as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SlotView {
    /// Worker name.
    pub name: String,
    /// Free slots.
    pub free: u32,
    /// All its slots.
    pub capacity: u32,
    /// Free GPUs.
    pub free_gpus: u32,
    /// All its GPUs.
    pub gpus: u32,
    /// Datasets it has loaded before (placement prefers them).
    pub datasets: BTreeSet<String>,
    /// Where its replicas of data-parallel trials meet their ring (`HOST:PORT`); a worker
    /// without one runs only single-worker trials.
    pub ring: Option<String>,
}

/// What one queued attempt needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Need {
    /// Slots.
    pub slots: u32,
    /// GPUs.
    pub gpus: u32,
    /// Its dataset, if any.
    pub dataset: Option<String>,
    /// Workers it trains on at once (data-parallel replicas; 0 or 1: one worker).
    pub workers: u32,
    /// Fewest workers it may start on when `workers` are not to be had: a retry that
    /// continues from its checkpoint on the workers that are left, or any attempt when
    /// fewer than `workers` able workers are connected at all (0: `workers`).
    pub min_workers: u32,
    /// Whether it is a retry (an earlier attempt failed, or was lost with a worker).
    pub retry: bool,
}

/// What a worker that ran replica `rank` of `world` of a trial on `dataset` holds in its
/// cache: that replica's shards (the same for every trial with that many replicas).
pub fn shard_key(dataset: &str, rank: usize, world: usize) -> String {
    format!("{dataset}#{rank}/{world}")
}

/// Places attempts (in the order given) on workers: returns (need index, worker indices)
/// pairs, one worker per replica. Never over-commits a worker's slots or GPUs. Among
/// workers that fit, prefers ones that already hold the attempt's dataset, then the most
/// free slots (spreading load), then the lowest index. An attempt that fits nowhere waits
/// without blocking smaller ones behind it.
///
/// A data-parallel attempt (`workers: K > 1`) is gang-placed: K distinct workers with a
/// ring address, all at once or not at all, so two such attempts competing for the same
/// workers never hold half a gang each (no deadlock). So that single-worker attempts
/// cannot keep a waiting gang's workers busy for ever, the first gang that cannot start
/// reserves the K workers that will free up for it (those with the most free slots now):
/// later attempts in the order skip them, and run on the other workers meanwhile.
///
/// An elastic gang (`min_workers` < K) starts on fewer workers, as many as fit, when it
/// is a retry (it continues from its checkpoint on the workers that are left rather than
/// wait for a replacement) or when fewer than K able workers are connected at all.
pub fn place(needs: &[Need], workers: &[SlotView]) -> Vec<(usize, Vec<usize>)> {
    let mut free: Vec<(u32, u32)> = workers.iter().map(|w| (w.free, w.free_gpus)).collect();
    let mut reserved = vec![false; workers.len()];
    let mut reserving = false;
    let mut out = Vec::new();
    for (qi, need) in needs.iter().enumerate() {
        let k = need.workers.max(1) as usize;
        let min = match need.min_workers as usize {
            0 => k,
            m => m.min(k),
        };
        let ever = |i: &usize| {
            workers[*i].capacity >= need.slots
                && workers[*i].gpus >= need.gpus
                && (k == 1 || workers[*i].ring.is_some())
        };
        let able = |i: &usize| !reserved[*i] && ever(i);
        // How many workers this gang may take: K, or fewer when it is elastic and K
        // are not to be had (a retry, or too few able workers connected).
        let connected = (0..workers.len()).filter(ever).count();
        let shrink = min < k && (need.retry || connected < k);
        let wanted = |n: usize| {
            if n >= k {
                k
            } else if shrink && n >= min {
                n
            } else {
                0
            }
        };
        // Whether worker `i` already holds the dataset (for a gang: some rank's shards).
        let holds_rank = |i: usize, r: usize, world: usize| {
            need.dataset
                .as_ref()
                .is_some_and(|d| workers[i].datasets.contains(&shard_key(d, r, world)))
        };
        let holds = |i: usize| {
            if k == 1 {
                need.dataset
                    .as_ref()
                    .is_some_and(|d| workers[i].datasets.contains(d))
            } else {
                (0..k).any(|r| holds_rank(i, r, k))
            }
        };
        let mut fit: Vec<usize> = (0..workers.len())
            .filter(able)
            .filter(|i| free[*i].0 >= need.slots && free[*i].1 >= need.gpus)
            .collect();
        fit.sort_by_key(|&i| std::cmp::Reverse((holds(i), free[i].0, std::cmp::Reverse(i))));
        let take = wanted(fit.len());
        if take > 0 {
            fit.truncate(take);
            if take > 1 {
                // Among them, hand each rank to a worker that already holds its shards.
                let mut ranked: Vec<Option<usize>> = vec![None; take];
                for (r, slot) in ranked.iter_mut().enumerate() {
                    if let Some(pos) = fit.iter().position(|&i| holds_rank(i, r, take)) {
                        *slot = Some(fit.remove(pos));
                    }
                }
                let mut rest = fit.into_iter();
                fit = ranked
                    .into_iter()
                    .map(|w| w.or_else(|| rest.next()).expect("K workers for K ranks"))
                    .collect();
            }
            for &wi in &fit {
                free[wi].0 -= need.slots;
                free[wi].1 -= need.gpus;
            }
            out.push((qi, fit));
        } else if k > 1 && !reserving {
            let mut could: Vec<usize> = (0..workers.len()).filter(able).collect();
            let target = wanted(could.len());
            if target > 0 {
                could.sort_by_key(|&i| std::cmp::Reverse((free[i].0, std::cmp::Reverse(i))));
                for &wi in &could[..target] {
                    reserved[wi] = true;
                }
                reserving = true;
            }
        }
    }
    out
}

/// Orders a queue so that sweeps share the workers fairly: the k-th queued attempt of a
/// sweep that already runs `r` attempts ranks `r + k`, lowest first (ties: the sweep seen
/// first in the queue). A sweep submitted behind a large one thus gets the next free
/// slots until both run as many attempts. Returns queue indices; within a sweep, queue
/// order is kept.
pub fn fair_order(sweeps: &[&str], running: &HashMap<String, usize>) -> Vec<usize> {
    let mut seen: HashMap<&str, (usize, usize)> = HashMap::new(); // sweep -> (first, rank)
    let mut keyed: Vec<(usize, usize, usize)> = Vec::with_capacity(sweeps.len());
    for (i, s) in sweeps.iter().enumerate() {
        let n = seen.len();
        let e = seen
            .entry(s)
            .or_insert((n, running.get(*s).copied().unwrap_or(0)));
        keyed.push((e.1, e.0, i));
        e.1 += 1;
    }
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// The scheduler actor.
pub struct SchedulerActor;

struct Queued {
    queued_at: std::time::Instant,
    sweep_id: String,
    assignment: TrialAssignment,
    need: Need,
    sweep: ActorRef<SweepMsg>,
}

struct InFlight {
    /// The attempt's token (its sweep knows it by this one; replicas have their own).
    attempt: u64,
    worker: String,
    sweep_id: String,
    slots: u32,
    gpus: u32,
    /// `None` for dispatches a rejoining worker brought along (no sweep waits on them).
    sweep: Option<(ActorRef<SweepMsg>, TrialId)>,
}

/// The scheduler's state.
pub struct SchedulerState {
    queue: VecDeque<Queued>,
    workers: Vec<(SlotView, WorkerLink)>,
    in_flight: HashMap<u64, InFlight>,
    /// Trials (by sweep) whose attempt was lost with a worker: their next submission is
    /// a retry (it keeps its attempt number, as a crash is not a failed attempt).
    requeued: HashSet<(String, TrialId)>,
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
        if self.queue.is_empty() || self.workers.is_empty() {
            return;
        }
        let mut running: HashMap<String, usize> = HashMap::new();
        for f in self.in_flight.values() {
            *running.entry(f.sweep_id.clone()).or_default() += 1;
        }
        let order = fair_order(
            &self
                .queue
                .iter()
                .map(|q| q.sweep_id.as_str())
                .collect::<Vec<_>>(),
            &running,
        );
        let needs: Vec<Need> = order.iter().map(|&i| self.queue[i].need.clone()).collect();
        let views: Vec<SlotView> = self.workers.iter().map(|(v, _)| v.clone()).collect();
        let placed = place(&needs, &views);
        let mut taken = vec![false; self.queue.len()];
        for (oi, wis) in placed {
            let qi = order[oi];
            taken[qi] = true;
            let q = &self.queue[qi];
            crate::metrics::SCHEDULING_LATENCY
                .with_label_values(&[] as &[&str])
                .observe(q.queued_at.elapsed().as_secs_f64());
            // A data-parallel attempt is a gang even on one worker (an elastic retry
            // left with one): it keeps its shards' sampling and resumes its checkpoint.
            let gang = q.need.workers > 1;
            let peers: Vec<String> = wis
                .iter()
                .map(|&wi| self.workers[wi].0.ring.clone().unwrap_or_default())
                .collect();
            let names: Vec<String> = wis
                .iter()
                .map(|&wi| self.workers[wi].0.name.clone())
                .collect();
            for (rank, &wi) in wis.iter().enumerate() {
                let mut assignment = q.assignment.clone();
                if gang {
                    assignment.lease = replica_lease(q.assignment.lease, rank as u32);
                    assignment.replica = Some(Box::new(ReplicaRef {
                        attempt_lease: q.assignment.lease,
                        rank: rank as u32,
                        peers: peers.clone(),
                        workers: names.clone(),
                        trial_key: format!("{}/{}", q.sweep_id, q.assignment.request.trial_id),
                    }));
                }
                let (view, link) = &mut self.workers[wi];
                view.free -= q.need.slots;
                view.free_gpus -= q.need.gpus;
                if let Some(d) = &q.need.dataset {
                    view.datasets.insert(if gang {
                        shard_key(d, rank, wis.len())
                    } else {
                        d.clone()
                    });
                }
                self.in_flight.insert(
                    assignment.lease,
                    InFlight {
                        attempt: q.assignment.lease,
                        worker: view.name.clone(),
                        sweep_id: q.sweep_id.clone(),
                        slots: q.need.slots,
                        gpus: q.need.gpus,
                        sweep: Some((q.sweep.clone(), q.assignment.request.trial_id)),
                    },
                );
                match link {
                    WorkerLink::Local(w) => {
                        let _ = w.cast(WorkerMsg::Run {
                            assignment: Box::new(assignment),
                            sweep: q.sweep.clone(),
                            scheduler: self.myself.clone(),
                        });
                    }
                    WorkerLink::Remote(w) => {
                        let _ = w.cast(ToWorker::Run {
                            sweep_id: q.sweep_id.clone(),
                            assignment,
                            slots: q.need.slots,
                            gpus: q.need.gpus,
                        });
                    }
                }
            }
        }
        let mut i = 0;
        self.queue.retain(|_| {
            let keep = !taken[i];
            i += 1;
            keep
        });
    }

    /// Dispatches in flight that `pick` selects.
    fn leases_where(&self, pick: impl Fn(u64, &InFlight) -> bool) -> Vec<u64> {
        self.in_flight
            .iter()
            .filter(|(l, f)| pick(**l, f))
            .map(|(l, _)| *l)
            .collect()
    }

    /// The dispatch `lease` is gone with its worker: its attempt goes back to its sweep,
    /// and the other replicas of a data-parallel attempt are stopped (their ring is
    /// broken; the attempt runs again from the start elsewhere).
    fn lose(&mut self, lease: u64) {
        if let Some(InFlight {
            attempt,
            sweep_id,
            sweep: Some((sweep, trial_id)),
            ..
        }) = self.in_flight.remove(&lease)
        {
            self.requeued.insert((sweep_id, trial_id));
            for l in self.leases_where(|_, f| f.attempt == attempt) {
                self.stop(l);
                // Its slots come back when the replica ends; its sweep hears once.
                if let Some(f) = self.in_flight.get_mut(&l) {
                    f.sweep = None;
                }
            }
            let _ = sweep.cast(SweepMsg::AttemptLost {
                trial_id,
                lease: attempt,
            });
        }
    }

    /// Asks the worker running dispatch `lease` to stop it.
    fn stop(&self, lease: u64) {
        let Some(f) = self.in_flight.get(&lease) else {
            return;
        };
        match self.workers.iter().find(|(v, _)| v.name == f.worker) {
            Some((_, WorkerLink::Local(w))) => {
                let _ = w.cast(WorkerMsg::Cancel { lease });
            }
            Some((_, WorkerLink::Remote(w))) => {
                let _ = w.cast(ToWorker::Cancel { lease });
            }
            None => {}
        }
    }

    fn free(&mut self, lease: u64) {
        let Some(f) = self.in_flight.remove(&lease) else {
            return;
        };
        // A replica that ended (finished, failed, stopped) leaves its ring broken: the
        // others stop too rather than wait for it.
        for l in self.leases_where(|_, g| g.attempt == f.attempt) {
            self.stop(l);
        }
        if let Some((v, _)) = self.workers.iter_mut().find(|(v, _)| v.name == f.worker) {
            v.free = (v.free + f.slots).min(v.capacity);
            v.free_gpus = (v.free_gpus + f.gpus).min(v.gpus);
        }
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
            in_flight: HashMap::new(),
            requeued: HashSet::new(),
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
            SchedulerMsg::AddWorker {
                name,
                slots,
                gpus,
                ring,
                link,
                busy,
            } => {
                crate::metrics::HEARTBEAT_MISSES
                    .with_label_values(&[&name])
                    .inc_by(0);
                state.workers.retain(|(v, _)| v.name != name);
                // A rejoin: what it no longer runs is lost; what it still runs stays.
                let keep: BTreeSet<u64> = busy.iter().map(|b| b.lease).collect();
                for lease in state.leases_where(|l, f| f.worker == name && !keep.contains(&l)) {
                    state.lose(lease);
                }
                let mut view = SlotView {
                    name: name.clone(),
                    free: slots,
                    capacity: slots,
                    free_gpus: gpus,
                    gpus,
                    datasets: BTreeSet::new(),
                    ring,
                };
                for b in busy {
                    view.free = view.free.saturating_sub(b.slots);
                    view.free_gpus = view.free_gpus.saturating_sub(b.gpus);
                    state.in_flight.insert(
                        b.lease,
                        InFlight {
                            attempt: b.lease,
                            worker: name.clone(),
                            sweep_id: b.sweep_id,
                            slots: b.slots,
                            gpus: b.gpus,
                            sweep: b.sweep,
                        },
                    );
                }
                state.workers.push((view, link));
            }
            SchedulerMsg::RemoveWorker { name } => {
                state.workers.retain(|(v, _)| v.name != name);
                for lease in state.leases_where(|_, f| f.worker == name) {
                    state.lose(lease);
                }
            }
            SchedulerMsg::Submit {
                sweep_id,
                assignment,
                slots,
                gpus,
                workers,
                min_workers,
                sweep,
            } => {
                let dataset = assignment.dataset.as_ref().map(|d| d.path.clone());
                let requeued = state
                    .requeued
                    .remove(&(sweep_id.clone(), assignment.request.trial_id));
                let retry = assignment.attempt > 1 || requeued;
                state.queue.push_back(Queued {
                    queued_at: std::time::Instant::now(),
                    sweep_id,
                    assignment,
                    need: Need {
                        slots,
                        gpus,
                        dataset,
                        workers,
                        min_workers,
                        retry,
                    },
                    sweep,
                });
            }
            SchedulerMsg::SlotFreed { lease } => state.free(lease),
            SchedulerMsg::Cancel { sweep_id, leases } => {
                state.requeued.retain(|(s, _)| *s != sweep_id);
                let mut dropped = Vec::new();
                state.queue.retain(|q| {
                    let keep = q.sweep_id != sweep_id;
                    if !keep {
                        dropped.push((
                            q.sweep.clone(),
                            q.assignment.request.trial_id,
                            q.assignment.lease,
                        ));
                    }
                    keep
                });
                for (sweep, trial_id, lease) in dropped {
                    let _ = sweep.cast(SweepMsg::AttemptLost { trial_id, lease });
                }
                // Every replica of a cancelled attempt stops.
                let leases: BTreeSet<u64> = leases.into_iter().collect();
                for lease in state.leases_where(|_, f| leases.contains(&f.attempt)) {
                    state.stop(lease);
                }
            }
            SchedulerMsg::Workers(reply) => {
                let _ = reply.send(state.workers.iter().map(|(v, _)| v.clone()).collect());
                return Ok(());
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
                ..SlotView::default()
            })
            .collect()
    }

    fn n(slots: &[u32]) -> Vec<Need> {
        slots
            .iter()
            .map(|s| Need {
                slots: *s,
                ..Need::default()
            })
            .collect()
    }

    #[test]
    fn never_overcommits_and_spreads() {
        assert_eq!(
            place(&n(&[1, 1, 1]), &w(&[2, 1])),
            vec![(0, vec![0]), (1, vec![0]), (2, vec![1])]
        );
        assert_eq!(
            place(&n(&[1, 1, 1, 1]), &w(&[1, 1])),
            vec![(0, vec![0]), (1, vec![1])]
        );
    }

    #[test]
    fn big_attempts_wait_without_blocking_small_ones() {
        assert_eq!(place(&n(&[3, 1]), &w(&[2])), vec![(1, vec![0])]);
    }

    #[test]
    fn gpus_are_never_overcommitted_and_cpu_trials_avoid_nothing() {
        let mut workers = w(&[4, 4]);
        workers[1].gpus = 1;
        workers[1].free_gpus = 1;
        let gpu = |s| Need {
            slots: s,
            gpus: 1,
            ..Need::default()
        };
        // Two GPU trials, one GPU in the cluster: one runs, one waits.
        assert_eq!(place(&[gpu(1), gpu(1)], &workers), vec![(0, vec![1])]);
    }

    #[test]
    fn workers_holding_the_dataset_are_preferred() {
        let mut workers = w(&[4, 1]);
        workers[1].datasets.insert("d.parquet".into());
        let need = Need {
            slots: 1,
            dataset: Some("d.parquet".into()),
            ..Need::default()
        };
        assert_eq!(
            place(&[need.clone(), need], &workers),
            vec![(0, vec![1]), (1, vec![0])]
        );
    }

    /// Workers with ring addresses, `free` slots each out of `capacity`.
    fn ringed(free: &[u32], capacity: u32) -> Vec<SlotView> {
        let mut ws = w(free);
        for (i, v) in ws.iter_mut().enumerate() {
            v.capacity = capacity;
            v.ring = Some(format!("10.0.0.{i}:7000"));
        }
        ws
    }

    fn gang(k: u32) -> Need {
        Need {
            slots: 1,
            workers: k,
            ..Need::default()
        }
    }

    #[test]
    fn a_gang_takes_distinct_workers_all_at_once_or_not_at_all() {
        // Two free slots on one worker are not two workers.
        assert_eq!(place(&[gang(2)], &ringed(&[2, 0], 2)), vec![]);
        assert_eq!(
            place(&[gang(2)], &ringed(&[2, 1, 0], 2)),
            vec![(0, vec![0, 1])]
        );
        // A worker without a ring address takes no replica.
        let mut ws = ringed(&[1, 1], 1);
        ws[1].ring = None;
        assert_eq!(place(&[gang(2)], &ws), vec![]);
        assert_eq!(place(&n(&[1]), &ws), vec![(0, vec![0])]);
    }

    #[test]
    fn each_replica_goes_to_a_worker_holding_its_shards() {
        let mut ws = ringed(&[1, 1, 1], 1);
        ws[0].datasets.insert(shard_key("d", 1, 2));
        ws[2].datasets.insert(shard_key("d", 0, 2));
        let need = Need {
            dataset: Some("d".into()),
            ..gang(2)
        };
        // Rank 0 on worker 2, rank 1 on worker 0, though worker 1 is as free.
        assert_eq!(place(&[need], &ws), vec![(0, vec![2, 0])]);
    }

    #[test]
    fn competing_gangs_never_hold_half_each() {
        // Three 1-slot workers, two gangs of 2: the first runs whole, the second waits
        // whole (no deadlock of two half-placed gangs).
        assert_eq!(
            place(&[gang(2), gang(2)], &ringed(&[1, 1, 1], 1)),
            vec![(0, vec![0, 1])]
        );
        // When the first ends, the second gets two workers at once.
        assert_eq!(
            place(&[gang(2)], &ringed(&[1, 1, 1], 1)),
            vec![(0, vec![0, 1])]
        );
    }

    #[test]
    fn a_waiting_gang_reserves_workers_and_single_trials_use_the_rest() {
        // Workers 0 and 1 are busy, 2 is free. A gang of 2 cannot start; it reserves the
        // two workers that will free up for it (2, then 0), so the single trial behind
        // it does not take worker 2 (else a stream of single trials could starve it).
        assert_eq!(place(&[gang(2), gang(1)], &ringed(&[0, 0, 1], 1)), vec![]);
        // Single trials ahead of the gang are never held back.
        assert_eq!(
            place(&[gang(1), gang(2)], &ringed(&[0, 0, 1], 1)),
            vec![(0, vec![2])]
        );
        // Workers outside the reservation keep serving single trials: a gang needing 2
        // slots on each of 2 workers reserves 2 and 0; worker 1 runs the single trial.
        let big = Need {
            slots: 2,
            workers: 2,
            ..Need::default()
        };
        assert_eq!(
            place(&[big, gang(1)], &ringed(&[1, 1, 2], 2)),
            vec![(1, vec![1])]
        );
    }

    #[test]
    fn an_elastic_retry_continues_on_the_workers_that_are_left() {
        let elastic = |retry| Need {
            min_workers: 2,
            retry,
            ..gang(3)
        };
        // Three workers connected, one busy: a first attempt waits for all three …
        assert_eq!(place(&[elastic(false)], &ringed(&[1, 1, 0], 1)), vec![]);
        // … a retry goes on with the two that are free …
        assert_eq!(
            place(&[elastic(true)], &ringed(&[1, 0, 1], 1)),
            vec![(0, vec![0, 2])]
        );
        // … but never on fewer than `min_workers`.
        assert_eq!(place(&[elastic(true)], &ringed(&[1, 0, 0], 1)), vec![]);
        // With only two workers connected (one died for good), every attempt starts on
        // two rather than wait for a third that may never come.
        assert_eq!(
            place(&[elastic(false)], &ringed(&[1, 1], 1)),
            vec![(0, vec![0, 1])]
        );
        // Without `min_workers` a retry waits for a replacement.
        let strict = Need {
            retry: true,
            ..gang(3)
        };
        assert_eq!(place(&[strict], &ringed(&[1, 0, 1], 1)), vec![]);
    }

    #[test]
    fn sweeps_take_turns_least_served_first() {
        let none = HashMap::new();
        assert_eq!(
            fair_order(&["a", "a", "a", "b", "c", "b"], &none),
            vec![0, 3, 4, 1, 5, 2]
        );
        // `a` already runs 2 attempts: `b` gets the next two slots.
        let running = [("a".to_owned(), 2)].into_iter().collect();
        assert_eq!(
            fair_order(&["a", "a", "b", "b", "b"], &running),
            vec![2, 3, 0, 4, 1]
        );
    }
}
