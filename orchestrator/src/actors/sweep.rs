//! The sweep actor: owns one sweep's searcher, early-stopping rule and journal.
//!
//! Every state change is journaled before it is acted on: a trial is `Issued` before it
//! is queued, `Finished` before it is handed to the writer and told to the searcher, and
//! `Flushed` once its Parquet part is visible. On restart, [`SweepCore::restore`]
//! rebuilds the same state from the journal.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tessera_core::searcher::{Ask, Searcher};
use tessera_core::stopping::EarlyStopper;
use tessera_core::trial::{
    Artifact, DatasetRef, MetricValues, StepReport, TrialAssignment, TrialId, TrialOutcome,
    TrialRequest, TrialStatus,
};
use tessera_core::{Decision, SweepSpec};
use tokio::sync::{oneshot, watch};

use super::now_ms;
use super::scheduler::SchedulerMsg;
use super::writer::WriterMsg;
use crate::journal::{Journal, JournalState, Record};
use crate::metrics;
use crate::store::{MetricRow, TrialRow};

/// Messages the sweep actor handles.
pub enum SweepMsg {
    /// A running trial's metrics at `step`; the reply is the early-stopping decision.
    Report {
        /// Trial.
        trial_id: TrialId,
        /// The dispatch.
        lease: u64,
        /// Step.
        step: u64,
        /// Values.
        metrics: MetricValues,
        /// Where the decision goes.
        reply: RpcReplyPort<Decision>,
    },
    /// An attempt ended (well, stopped or with an error).
    AttemptEnded(AttemptEnd),
    /// The worker running a dispatch was lost: run the attempt again elsewhere.
    AttemptLost {
        /// Trial.
        trial_id: TrialId,
        /// The dispatch.
        lease: u64,
    },
    /// A worker that reconnected after a coordinator restart still runs this attempt;
    /// the reply says whether it is adopted (if not, the worker drops it).
    Adopt {
        /// Trial.
        trial_id: TrialId,
        /// Attempt.
        attempt: u32,
        /// The worker's dispatch token.
        lease: u64,
        /// Adopted or not.
        reply: RpcReplyPort<bool>,
    },
    /// The grace period after a restart is over: run every attempt no worker adopted.
    ReleaseHeld,
    /// Stop the sweep: issue nothing more, stop what runs, complete with what finished.
    Cancel,
    /// The writer made a part visible.
    Flushed {
        /// Part number.
        part: u64,
        /// Trials in it.
        trial_ids: Vec<TrialId>,
    },
    /// The writer could not write; the sweep stops (the journal keeps everything).
    WriterFailed(String),
}

// Local only: never crosses the network.
impl ractor::Message for SweepMsg {}

/// What a progress display shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// Trials in the budget.
    pub total: u64,
    /// Trials that ran to the end.
    pub finished: u64,
    /// Trials stopped early.
    pub stopped: u64,
    /// Trials failed for good.
    pub failed: u64,
    /// Attempts running or queued.
    pub running: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Best objective so far and its trial.
    pub best: Option<(TrialId, f64)>,
}

impl Progress {
    /// Trials done in any way.
    pub fn done(&self) -> u64 {
        self.finished + self.stopped + self.failed
    }
}

/// How a sweep run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepResult {
    /// Final counts.
    pub progress: Progress,
    /// Steps trained over all trials and attempts recorded (a measure of total work).
    pub total_steps: u64,
    /// The seed in force (drawn if the sweep file had none).
    pub seed: u64,
    /// A sweep kind's derived results (a `nas` front, `metalic` rounds), set when it
    /// completes.
    pub kind: Option<tessera_core::searcher::KindSummary>,
}

/// How an attempt ended, as a worker tells it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttemptEnd {
    /// Trial.
    pub trial_id: TrialId,
    /// The dispatch.
    pub lease: u64,
    /// Attempt.
    pub attempt: u32,
    /// Worker that ran it.
    pub worker: String,
    /// When it started.
    pub started_at_ms: i64,
    /// `Err` carries the error or panic message.
    pub result: Result<(), String>,
    /// Everything it reported, in order.
    pub history: Vec<StepReport>,
    /// Rows for results tables besides the metrics (a fractal tile's raster).
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

struct Running {
    request: TrialRequest,
    attempt: u32,
    lease: u64,
    /// Waiting after a restart for a reconnecting worker to claim it.
    held: bool,
    stop_sent: bool,
}

/// The sweep's logic, without the actor: tests drive it directly.
pub struct SweepCore {
    spec: SweepSpec,
    dataset: Option<DatasetRef>,
    /// Where data-parallel trials keep a copy of their checkpoints.
    checkpoints: Option<String>,
    seed: u64,
    journal: Journal,
    searcher: Box<dyn Searcher>,
    stopper: Box<dyn EarlyStopper>,
    running: BTreeMap<TrialId, Running>,
    next_lease: u64,
    cancelled: bool,
    unflushed: BTreeSet<TrialId>,
    flush_requested: bool,
    exhausted: bool,
    max_concurrent: u64,
    progress: Progress,
    total_steps: u64,
    completed: bool,
}

/// What the actor must do after the core handled a message.
#[derive(Debug, Default)]
pub struct Effects {
    /// Attempts to queue.
    pub submit: Vec<TrialAssignment>,
    /// Finished trials for the writer.
    pub record: Vec<Recorded>,
    /// Ask the writer to flush now.
    pub flush: bool,
    /// Dispatches to stop (the sweep was cancelled).
    pub cancel: Vec<u64>,
    /// The sweep is complete.
    pub complete: bool,
}

/// A finished trial, as the writer gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Its trials-table row.
    pub row: TrialRow,
    /// Its metric rows.
    pub metrics: Vec<MetricRow>,
    /// Rows for the sweep kind's own tables (the fractal raster).
    pub tables: Vec<Artifact>,
}

impl Recorded {
    /// What `spec`'s writer records for a trial: kind-specific artifacts become the rows
    /// of their tables (a fractal tile's values become raster rows with their place and
    /// learning rates). A kind without tables of its own records none: its store would
    /// not clean up their unacknowledged parts after a crash.
    pub fn new(
        spec: &SweepSpec,
        row: TrialRow,
        metrics: Vec<MetricRow>,
        artifacts: &[Artifact],
    ) -> Self {
        let known = spec.tables();
        let tables = artifacts
            .iter()
            .filter_map(|a| match spec.kind {
                tessera_core::spec::SweepKind::Fractal
                    if a.table != tessera_core::trial::REPLICAS_TABLE =>
                {
                    let rows = tessera_core::fractal_sweep::raster_rows(&row.params, a);
                    if rows.is_none() {
                        tracing::warn!(trial_id = row.trial_id, table = %a.table, "a tile's values do not fit the tile; not recorded");
                    }
                    rows
                }
                _ => known.contains(&a.table.as_str()).then(|| a.clone()),
            })
            .collect();
        Self {
            row,
            metrics,
            tables,
        }
    }
}

/// Errors of the sweep logic.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The journal could not be written or read.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The journal belongs to another sweep.
    #[error("{0}")]
    Mismatch(String),
}

fn spec_hash(spec: &SweepSpec) -> String {
    // Concurrency may differ on resume (it changes no trial); everything else, the seed
    // as written included, must match. A drawn seed is journaled, not hashed.
    let mut s = spec.clone();
    s.concurrent = None;
    tessera_core::spec::fnv_hex(&serde_json::to_string(&s).unwrap_or_default())
}

impl SweepCore {
    /// Builds the sweep state, replaying `state` (read from `journal`) if it has any.
    /// `seed` is used when the journal has none yet. Returns the core and the work that
    /// replay left to do. With `hold_orphans`, attempts that were running when the
    /// coordinator stopped wait for [`SweepCore::adopt`] or [`SweepCore::release_held`]
    /// instead of being queued again at once. Data-parallel trials keep a copy of their
    /// checkpoints under `checkpoints`.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        spec: SweepSpec,
        dataset: Option<DatasetRef>,
        checkpoints: Option<String>,
        seed: u64,
        mut journal: Journal,
        state: JournalState,
        max_concurrent: u64,
        hold_orphans: bool,
    ) -> Result<(Self, Effects), SweepError> {
        // Runs are pinned to the sweep file's YAML; journals written before that carry
        // the hash of the validated spec, which is still accepted.
        let legacy = spec_hash(&spec);
        let hash = spec.source_hash.clone().unwrap_or_else(|| legacy.clone());
        let seed = match &state.started {
            Some((h, s)) if *h == hash || *h == legacy => *s,
            Some(_) => {
                return Err(SweepError::Mismatch(
                    "the sweep file changed since this run started; resume it with the file it started with, or start a new run with another --out".into(),
                ));
            }
            None => {
                journal.append(&Record::Started {
                    version: crate::journal::JOURNAL_VERSION,
                    spec_hash: hash,
                    seed,
                    at_ms: now_ms(),
                })?;
                seed
            }
        };
        let mut spec = spec;
        spec.seed = Some(seed);
        // Export every labelled series of this sweep from the start, at zero, so rates
        // and alerts work before the first event.
        for status in ["finished", "stopped", "failed"] {
            metrics::TRIALS_COMPLETED
                .with_label_values(&[spec.name.as_str(), status])
                .inc_by(0);
        }
        metrics::ATTEMPTS_RETRIED
            .with_label_values(&[spec.name.as_str()])
            .inc_by(0);
        let mut searcher = tessera_core::searcher_for(&spec);
        searcher.replay(&state.replay).map_err(|e| {
            SweepError::Mismatch(format!("{e}; start a new run with another --out"))
        })?;
        let mut stopper = tessera_core::stopping::stopper_for(spec.early_stopping.as_ref());
        for (trial_id, step, metrics) in &state.milestones {
            stopper.on_report(*trial_id, *step, metrics);
        }
        let mut progress = Progress {
            total: spec.trials,
            ..Progress::default()
        };
        let mut total_steps = 0;
        for (row, _, _) in state.finished.values() {
            count(&mut progress, row, spec.objective.goal);
            total_steps += row.steps;
        }
        progress.retries = state.retries.values().map(|r| u64::from(*r)).sum();
        let mut core = SweepCore {
            spec,
            dataset,
            checkpoints,
            seed,
            journal,
            searcher,
            stopper,
            running: BTreeMap::new(),
            // Leases of different coordinator lives must not collide.
            next_lease: tessera_core::trial::next_attempt_lease(tessera_core::rng::mix64(
                now_ms() as u64 ^ u64::from(std::process::id()),
            )),
            cancelled: state.cancelled,
            unflushed: BTreeSet::new(),
            flush_requested: false,
            exhausted: state.cancelled,
            max_concurrent: max_concurrent.max(1),
            progress,
            total_steps,
            completed: state.completed,
        };
        let mut fx = Effects::default();
        // Finished but not yet in a visible part: write them again.
        for (id, (row, metrics, artifacts)) in &state.finished {
            if !state.flushed_trials.contains(id) {
                core.unflushed.insert(*id);
                fx.record.push(Recorded::new(
                    &core.spec,
                    row.clone(),
                    metrics.clone(),
                    artifacts,
                ));
            }
        }
        // Issued but never finished: run again (a crash is not a failed attempt).
        for request in &state.issued {
            if !state.finished.contains_key(&request.trial_id) && !core.cancelled {
                let attempt = state.retries.get(&request.trial_id).copied().unwrap_or(0) + 1;
                let a = core.start(request.clone(), attempt);
                if hold_orphans {
                    if let Some(r) = core.running.get_mut(&a.request.trial_id) {
                        r.held = true;
                    }
                } else {
                    fx.submit.push(a);
                }
            }
        }
        core.fill(&mut fx)?;
        core.check_done(&mut fx)?;
        Ok((core, fx))
    }

    /// The seed in force.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The result so far.
    pub fn result(&self) -> SweepResult {
        SweepResult {
            progress: self.progress.clone(),
            total_steps: self.total_steps,
            seed: self.seed,
            kind: None,
        }
    }

    /// Sets the trials-by-state gauges from the counts.
    pub fn export_gauges(&self) {
        let p = &self.progress;
        let pending = p.total.saturating_sub(p.done() + p.running);
        for (state, v) in [
            ("pending", pending),
            ("running", p.running),
            ("finished", p.finished),
            ("stopped", p.stopped),
            ("failed", p.failed),
        ] {
            metrics::TRIALS_BY_STATE
                .with_label_values(&[self.spec.name.as_str(), state])
                .set(v as i64);
        }
    }

    fn start(&mut self, request: TrialRequest, attempt: u32) -> TrialAssignment {
        self.next_lease = tessera_core::trial::next_attempt_lease(self.next_lease);
        let lease = self.next_lease;
        self.running.insert(
            request.trial_id,
            Running {
                request: request.clone(),
                attempt,
                lease,
                held: false,
                stop_sent: false,
            },
        );
        self.progress.running = self.running.len() as u64;
        self.assignment(request, attempt, lease)
    }

    fn assignment(&self, request: TrialRequest, attempt: u32, lease: u64) -> TrialAssignment {
        let inputs = self.searcher.inputs(&request);
        TrialAssignment {
            request,
            attempt,
            program: self.spec.program.clone(),
            dataset: self.dataset.clone(),
            lease,
            wants_decisions: self.spec.early_stopping.is_some(),
            time_limit_s: self.spec.trial_timeout_s,
            inputs,
            checkpoints: self.checkpoints.clone(),
            replica: None,
        }
    }

    /// Whether the sweep was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// A reconnecting worker still runs `lease` of `trial_id`: adopt it if the trial
    /// waits for exactly that (held after a restart, or the same dispatch).
    pub fn adopt(&mut self, trial_id: TrialId, attempt: u32, lease: u64) -> bool {
        match self.running.get_mut(&trial_id) {
            Some(r) if r.lease == lease => true,
            Some(r) if r.held => {
                r.held = false;
                r.lease = lease;
                r.attempt = attempt;
                true
            }
            _ => false,
        }
    }

    /// Queues every held attempt no worker claimed.
    pub fn release_held(&mut self) -> Effects {
        let mut fx = Effects::default();
        let held: Vec<TrialId> = self
            .running
            .iter()
            .filter(|(_, r)| r.held)
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            if let Some(r) = self.running.remove(&id) {
                fx.submit.push(self.start(r.request, r.attempt));
            }
        }
        fx
    }

    /// The worker of `lease` was lost: the same attempt runs again under a new lease (a
    /// lost worker is not the trial's failure).
    pub fn attempt_lost(&mut self, trial_id: TrialId, lease: u64) -> Result<Effects, SweepError> {
        let mut fx = Effects::default();
        match self.running.get(&trial_id) {
            Some(r) if r.lease == lease && !r.held => {}
            _ => return Ok(fx),
        }
        let r = self
            .running
            .remove(&trial_id)
            .unwrap_or_else(|| unreachable!());
        if self.cancelled || r.stop_sent {
            // Nothing more to learn from it.
            self.progress.running = self.running.len() as u64;
            self.check_done(&mut fx)?;
            return Ok(fx);
        }
        tracing::warn!(sweep = %self.spec.name, trial_id, attempt = r.attempt, "worker lost; the attempt runs again");
        fx.submit.push(self.start(r.request, r.attempt));
        Ok(fx)
    }

    /// Cancels the sweep: nothing more is issued, running attempts are told to stop and
    /// are recorded as stopped, attempts not yet running are dropped.
    pub fn cancel(&mut self) -> Result<Effects, SweepError> {
        let mut fx = Effects::default();
        if self.cancelled || self.completed {
            return Ok(fx);
        }
        self.journal
            .append(&Record::Cancelled { at_ms: now_ms() })?;
        self.cancelled = true;
        self.exhausted = true;
        self.running.retain(|_, r| !r.held);
        for r in self.running.values_mut() {
            r.stop_sent = true;
            fx.cancel.push(r.lease);
        }
        self.progress.running = self.running.len() as u64;
        self.check_done(&mut fx)?;
        Ok(fx)
    }

    /// Asks the searcher for trials until the concurrency limit is reached.
    fn fill(&mut self, fx: &mut Effects) -> Result<(), SweepError> {
        while !self.exhausted && (self.running.len() as u64) < self.max_concurrent {
            let t = Instant::now();
            let ask = self.searcher.ask();
            metrics::SEARCHER_ASK
                .with_label_values(&[&self.spec.name])
                .observe(t.elapsed().as_secs_f64());
            match ask {
                Ask::Trial(request) => {
                    self.journal.append(&Record::Issued {
                        request: request.clone(),
                    })?;
                    crate::fault::point("after_issued");
                    fx.submit.push(self.start(request, 1));
                }
                Ask::Wait => break,
                Ask::Done => self.exhausted = true,
            }
        }
        Ok(())
    }

    fn check_done(&mut self, fx: &mut Effects) -> Result<(), SweepError> {
        if !self.exhausted || !self.running.is_empty() {
            return Ok(());
        }
        if !self.unflushed.is_empty() {
            if !self.flush_requested {
                self.flush_requested = true;
                fx.flush = true;
            }
            return Ok(());
        }
        if !self.completed {
            self.journal
                .append(&Record::Completed { at_ms: now_ms() })?;
            self.completed = true;
        }
        self.journal.sync()?;
        fx.complete = true;
        Ok(())
    }

    /// A report from a running attempt that wants a decision; returns it. (Metrics
    /// themselves come with the attempt's end.)
    pub fn report(
        &mut self,
        trial_id: TrialId,
        lease: u64,
        step: u64,
        metrics: MetricValues,
    ) -> Result<Decision, SweepError> {
        let Some(r) = self.running.get_mut(&trial_id) else {
            return Ok(Decision::Stop); // a late report of a trial already ended
        };
        if r.lease != lease || r.stop_sent {
            return Ok(Decision::Stop);
        }
        if self.stopper.is_milestone(step) {
            self.journal.append(&Record::Milestone {
                trial_id,
                step,
                metrics: metrics.clone(),
            })?;
        }
        let decision = self.stopper.on_report(trial_id, step, &metrics);
        if decision == Decision::Stop {
            r.stop_sent = true;
        }
        Ok(decision)
    }

    /// An attempt ended. Accepted if it is the trial's current dispatch, or if the
    /// trial waits (held after a restart) for a worker to claim it; anything else is a
    /// late result and is not recorded twice.
    pub fn attempt_ended(&mut self, end: AttemptEnd) -> Result<Effects, SweepError> {
        let AttemptEnd {
            trial_id,
            lease,
            attempt,
            worker,
            started_at_ms,
            result,
            history,
            artifacts,
        } = end;
        let mut fx = Effects::default();
        match self.running.get(&trial_id) {
            Some(r) if r.lease == lease || r.held => {}
            _ => {
                tracing::info!(sweep = %self.spec.name, trial_id, attempt, worker = %worker, "late result of an attempt already given up on; ignored");
                return Ok(fx);
            }
        }
        let mut r = self
            .running
            .remove(&trial_id)
            .unwrap_or_else(|| unreachable!());
        if r.held {
            r.attempt = attempt;
        }
        let attempt = r.attempt;
        metrics::REPORTS.inc_by(history.len() as u64);
        let steps = history.iter().map(|h| h.step).max().unwrap_or(0);
        let last = history
            .last()
            .map(|h| h.metrics.clone())
            .unwrap_or_default();
        let rows: Vec<MetricRow> = history
            .into_iter()
            .flat_map(|h| {
                h.metrics.into_iter().map(move |(name, value)| MetricRow {
                    trial_id,
                    attempt,
                    step: h.step,
                    name,
                    value,
                    at_ms: h.at_ms,
                })
            })
            .collect();
        let (status, error) = match &result {
            Ok(()) if r.stop_sent => (TrialStatus::Stopped, None),
            // Told to stop, then errored while stopping: it was stopped, not failed.
            Err(_) if r.stop_sent => (TrialStatus::Stopped, None),
            Ok(()) => (TrialStatus::Finished, None),
            Err(e) if attempt < self.spec.max_attempts && !self.cancelled => {
                self.journal.append(&Record::Retry {
                    trial_id,
                    attempt,
                    error: e.clone(),
                })?;
                self.progress.retries += 1;
                metrics::ATTEMPTS_RETRIED
                    .with_label_values(&[&self.spec.name])
                    .inc();
                tracing::warn!(sweep = %self.spec.name, trial_id, attempt, error = %e, "trial attempt failed; retrying");
                fx.submit.push(self.start(r.request, attempt + 1));
                return Ok(fx);
            }
            Err(e) => (TrialStatus::Failed, Some(e.clone())),
        };
        if let Some(e) = &error {
            tracing::warn!(sweep = %self.spec.name, trial_id, attempt, error = %e, "trial failed");
        }
        let row = TrialRow {
            trial_id,
            status: status.as_str().to_owned(),
            attempt,
            worker,
            seed: r.request.seed,
            started_at_ms,
            finished_at_ms: now_ms(),
            steps,
            objective: last.get(&self.spec.objective.metric).copied(),
            error,
            params: r.request.params.clone(),
        };
        self.journal.append(&Record::Finished {
            row: row.clone(),
            metrics: rows.clone(),
            artifacts: artifacts.clone(),
        })?;
        crate::fault::point("after_finished");
        count(&mut self.progress, &row, self.spec.objective.goal);
        metrics::TRIALS_COMPLETED
            .with_label_values(&[&self.spec.name, status.as_str()])
            .inc();
        metrics::TRIAL_DURATION
            .with_label_values(&[&self.spec.name])
            .observe((row.finished_at_ms - row.started_at_ms) as f64 / 1000.0);
        if let Some((_, best)) = self.progress.best {
            metrics::BEST_OBJECTIVE
                .with_label_values(&[&self.spec.name, &self.spec.objective.metric])
                .set(best);
        }
        tracing::info!(sweep = %self.spec.name, trial_id, attempt, status = status.as_str(), objective = ?row.objective, steps = row.steps, "trial recorded");
        self.total_steps += row.steps;
        self.searcher.tell(&TrialOutcome {
            trial_id,
            status,
            objective: row.objective,
            steps: row.steps,
            artifacts: artifacts.clone(),
        });
        self.unflushed.insert(trial_id);
        fx.record
            .push(Recorded::new(&self.spec, row, rows, &artifacts));
        self.fill(&mut fx)?;
        self.progress.running = self.running.len() as u64;
        self.check_done(&mut fx)?;
        Ok(fx)
    }

    /// The writer made a part visible.
    pub fn flushed(&mut self, part: u64, trial_ids: Vec<TrialId>) -> Result<Effects, SweepError> {
        crate::fault::point("before_journal_flushed");
        for id in &trial_ids {
            self.unflushed.remove(id);
        }
        self.journal.append(&Record::Flushed { part, trial_ids })?;
        self.journal.sync()?;
        self.flush_requested = false;
        let mut fx = Effects::default();
        self.check_done(&mut fx)?;
        Ok(fx)
    }
}

fn count(p: &mut Progress, row: &TrialRow, goal: tessera_core::spec::Goal) {
    match row.status.as_str() {
        "finished" => p.finished += 1,
        "stopped" => p.stopped += 1,
        _ => p.failed += 1,
    }
    if let Some(v) = row.objective.filter(|v| v.is_finite())
        && p.best.is_none_or(|(_, b)| goal.better(v, b))
    {
        p.best = Some((row.trial_id, v));
    }
}

/// The sweep actor.
pub struct SweepActor;

/// Arguments: the restored core and its pending effects, the other actors, and where
/// progress and the final result go.
pub struct SweepArgs {
    /// The sweep's id (its run directory's name): the scheduler's fair share and the
    /// workers' messages are keyed by it.
    pub id: String,
    /// After a restart, how long attempts that were running wait for their worker to
    /// reconnect and claim them (see [`SweepCore::restore`]).
    pub release_after: Option<std::time::Duration>,
    /// The restored core.
    pub core: SweepCore,
    /// Work left by replay.
    pub pending: Effects,
    /// The scheduler.
    pub scheduler: ActorRef<SchedulerMsg>,
    /// The writer.
    pub writer: ActorRef<WriterMsg>,
    /// Progress updates.
    pub progress: watch::Sender<Progress>,
    /// The final result.
    pub done: oneshot::Sender<Result<SweepResult, String>>,
}

/// The sweep actor's state.
pub struct SweepState {
    id: String,
    core: SweepCore,
    scheduler: ActorRef<SchedulerMsg>,
    writer: ActorRef<WriterMsg>,
    progress: watch::Sender<Progress>,
    done: Option<oneshot::Sender<Result<SweepResult, String>>>,
    started: Instant,
}

impl SweepState {
    fn apply(&mut self, myself: &ActorRef<SweepMsg>, fx: Effects) {
        for recorded in fx.record {
            let _ = self.writer.cast(WriterMsg::Record(recorded));
        }
        for assignment in fx.submit {
            let (workers, min_workers) = self.core.spec.workers_for(&assignment.request.params);
            let _ = self.scheduler.cast(SchedulerMsg::Submit {
                sweep_id: self.id.clone(),
                assignment,
                slots: self.core.spec.slots,
                gpus: self.core.spec.gpus,
                workers,
                min_workers,
                sweep: myself.clone(),
            });
        }
        if !fx.cancel.is_empty() {
            let _ = self.scheduler.cast(SchedulerMsg::Cancel {
                sweep_id: self.id.clone(),
                leases: fx.cancel,
            });
        }
        if fx.flush {
            let _ = self.writer.cast(WriterMsg::Flush);
        }
        self.core.export_gauges();
        self.progress.send_replace(self.core.progress.clone());
        if fx.complete {
            tracing::info!(
                elapsed_s = self.started.elapsed().as_secs_f64(),
                "sweep complete"
            );
            let mut result = self.core.result();
            result.kind = self.core.searcher.summary();
            self.finish(Ok(result));
        }
    }

    fn finish(&mut self, result: Result<SweepResult, String>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

impl Actor for SweepActor {
    type Msg = SweepMsg;
    type State = SweepState;
    type Arguments = SweepArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SweepMsg>,
        args: SweepArgs,
    ) -> Result<SweepState, ActorProcessingErr> {
        let mut state = SweepState {
            id: args.id,
            core: args.core,
            scheduler: args.scheduler,
            writer: args.writer,
            progress: args.progress,
            done: Some(args.done),
            started: Instant::now(),
        };
        state.writer.cast(WriterMsg::Attach(myself.clone()))?;
        state.apply(&myself, args.pending);
        if let Some(after) = args.release_after {
            myself.send_after(after, || SweepMsg::ReleaseHeld);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<SweepMsg>,
        msg: SweepMsg,
        state: &mut SweepState,
    ) -> Result<(), ActorProcessingErr> {
        let fx = match msg {
            SweepMsg::Report {
                trial_id,
                lease,
                step,
                metrics,
                reply,
            } => match state.core.report(trial_id, lease, step, metrics) {
                Ok(decision) => {
                    let _ = reply.send(decision);
                    return Ok(());
                }
                Err(e) => Err(e),
            },
            SweepMsg::AttemptEnded(end) => state.core.attempt_ended(end),
            SweepMsg::AttemptLost { trial_id, lease } => state.core.attempt_lost(trial_id, lease),
            SweepMsg::Adopt {
                trial_id,
                attempt,
                lease,
                reply,
            } => {
                let _ = reply.send(state.core.adopt(trial_id, attempt, lease));
                return Ok(());
            }
            SweepMsg::ReleaseHeld => Ok(state.core.release_held()),
            SweepMsg::Cancel => state.core.cancel(),
            SweepMsg::Flushed { part, trial_ids } => state.core.flushed(part, trial_ids),
            SweepMsg::WriterFailed(e) => {
                state.finish(Err(format!(
                    "writing results failed: {e}; rerun with --resume to finish the sweep"
                )));
                myself.stop(None);
                return Ok(());
            }
        };
        match fx {
            Ok(fx) => state.apply(&myself, fx),
            Err(e) => {
                // A journal write failed: act on nothing more, so that what is on disk
                // stays a consistent prefix for --resume.
                state.finish(Err(format!("{e}; rerun with --resume to finish the sweep")));
                myself.stop(None);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::parse_sweep;

    fn spec() -> SweepSpec {
        parse_sweep(
            "t.yaml",
            "version: 1\nname: core\nkind: random\nseed: 9\nprogram: synthetic\nspace:\n  x: { float: [0, 1] }\nobjective: { metric: loss, goal: minimize }\nbudget: { trials: 4, max_attempts: 2 }\n",
        )
        .unwrap()
    }

    fn open(path: &std::path::Path, hold: bool) -> (SweepCore, Effects) {
        let (journal, state) = Journal::open(path).unwrap();
        SweepCore::restore(spec(), None, None, 0, journal, state, 2, hold).unwrap()
    }

    fn end(a: &TrialAssignment, result: Result<(), String>, loss: f64) -> AttemptEnd {
        AttemptEnd {
            trial_id: a.request.trial_id,
            lease: a.lease,
            attempt: a.attempt,
            worker: "w".into(),
            started_at_ms: 0,
            result,
            history: vec![StepReport {
                step: 1,
                at_ms: 0,
                metrics: [("loss".to_owned(), loss)].into_iter().collect(),
            }],
            artifacts: Vec::new(),
        }
    }

    /// Drives the sweep logic directly: retries, a lost worker, stale leases and late
    /// reports, a restart with a trial running (held, then adopted or released) and one
    /// finished but not yet in Parquet.
    #[test]
    fn sweep_core_bookkeeping_survives_stale_messages_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (mut core, fx) = open(&path, false);
        let a: Vec<TrialAssignment> = fx.submit;
        assert_eq!(
            a.iter().map(|a| a.request.trial_id).collect::<Vec<_>>(),
            vec![0, 1],
            "concurrency 2"
        );
        assert_ne!(a[0].lease, a[1].lease);

        // Trial 0 fails once, is retried as attempt 2 under a new lease.
        let fx = core
            .attempt_ended(end(&a[0], Err("boom".into()), 0.0))
            .unwrap();
        let retry = fx.submit[0].clone();
        assert_eq!((retry.attempt, retry.request.trial_id), (2, 0));
        assert_ne!(retry.lease, a[0].lease);
        // A late report and a late end of the first lease are ignored.
        assert_eq!(
            core.report(0, a[0].lease, 1, MetricValues::new()).unwrap(),
            Decision::Stop
        );
        let fx = core.attempt_ended(end(&a[0], Ok(()), 9.0)).unwrap();
        assert!(fx.record.is_empty() && fx.submit.is_empty());
        // Its worker is lost: the same attempt runs again under a new lease, and the lost
        // lease's result, arriving late, is not recorded.
        let fx = core.attempt_lost(0, retry.lease).unwrap();
        let again = fx.submit[0].clone();
        assert_eq!((again.attempt, again.request.trial_id), (2, 0));
        assert_ne!(again.lease, retry.lease);
        assert!(
            core.attempt_ended(end(&retry, Ok(()), 9.0))
                .unwrap()
                .record
                .is_empty()
        );
        // The current lease finishes; trial 2 is issued in its place.
        let fx = core.attempt_ended(end(&again, Ok(()), 0.5)).unwrap();
        assert_eq!(fx.record.len(), 1);
        assert_eq!(fx.record[0].row.objective, Some(0.5));
        assert_eq!(fx.record[0].metrics.len(), 1, "its metric rows");
        assert_eq!(fx.submit[0].request.trial_id, 2);
        let t2 = fx.submit[0].clone();
        // The same end again records nothing twice.
        assert!(
            core.attempt_ended(end(&again, Ok(()), 0.5))
                .unwrap()
                .record
                .is_empty()
        );
        drop(core);

        // Restart (cluster mode): trial 0 is finished but never flushed; 1 and 2 were
        // running and wait to be claimed.
        let (mut core, fx) = open(&path, true);
        let rerecorded: Vec<u64> = fx.record.iter().map(|r| r.row.trial_id).collect();
        assert_eq!(rerecorded, vec![0]);
        assert_eq!(
            fx.record[0].metrics.len(),
            1,
            "its metrics come back from the journal"
        );
        assert!(fx.submit.is_empty(), "held for their workers");
        assert_eq!(core.result().progress.retries, 1);
        // Trial 1's worker reconnects and claims it; trial 2's result arrives from a
        // worker's outbox (it ended while the coordinator was down) and is accepted.
        assert!(core.adopt(1, 1, a[1].lease));
        assert!(!core.adopt(3, 1, 12345), "never issued");
        let fx = core.attempt_ended(end(&t2, Ok(()), 0.7)).unwrap();
        assert_eq!(fx.record.len(), 1);
        assert_eq!(fx.submit[0].request.trial_id, 3, "the last trial is issued");
        let t3 = fx.submit[0].clone();
        assert!(
            core.release_held().submit.is_empty(),
            "nothing left unclaimed"
        );
        core.flushed(1, vec![0]).unwrap();
        core.attempt_ended(end(&a[1], Ok(()), 0.6)).unwrap();
        let fx = core.attempt_ended(end(&t3, Ok(()), 0.8)).unwrap();
        assert!(
            fx.flush && !fx.complete,
            "all ended: flush before completing"
        );
        let fx = core.flushed(2, vec![1, 2]).unwrap();
        assert!(!fx.complete, "trial 3 is not in a visible part yet");
        let fx = core.flushed(3, vec![3]).unwrap();
        assert!(fx.complete);
        assert_eq!(core.result().progress.finished, 4);
    }

    #[test]
    fn unclaimed_attempts_are_released_and_cancel_drains_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (core, fx) = open(&path, false);
        assert_eq!(fx.submit.len(), 2);
        drop(core);
        let (mut core, fx) = open(&path, true);
        assert!(fx.submit.is_empty());
        let released = core.release_held().submit;
        assert_eq!(released.len(), 2);
        // Cancel: nothing more is issued; the running attempts are told to stop and are
        // recorded as stopped when they end.
        let fx = core.cancel().unwrap();
        assert_eq!(fx.cancel.len(), 2);
        let fx = core.attempt_ended(end(&released[0], Ok(()), 0.1)).unwrap();
        assert_eq!(fx.record[0].row.status, "stopped");
        assert!(fx.submit.is_empty());
        // The other one's queue entry is dropped: lost, and not run again.
        let fx = core
            .attempt_lost(released[1].request.trial_id, released[1].lease)
            .unwrap();
        assert!(fx.submit.is_empty() && fx.flush);
        let fx = core.flushed(1, vec![released[0].request.trial_id]).unwrap();
        assert!(fx.complete);
        drop(core);
        // A cancelled sweep stays cancelled after a restart.
        let (core, fx) = open(&path, false);
        assert!(core.is_cancelled() && fx.submit.is_empty() && fx.complete);
    }

    /// A run is pinned to its sweep file's YAML as data: comments, layout and the
    /// concurrency may change on resume, anything that changes the trials may not, and a
    /// journal written with the older hash of the validated spec is still accepted.
    #[test]
    fn resume_follows_the_sweep_file_and_accepts_older_journals() {
        let base = "version: 1\nname: core\nkind: random\nseed: 9\nprogram: synthetic\nspace:\n  x: { float: [0, 1] }\nobjective: { metric: loss, goal: minimize }\nbudget: { trials: 4, max_attempts: 2 }\n";
        let restore = |path: &std::path::Path, text: &str| {
            let spec = parse_sweep("t.yaml", text).unwrap();
            let (journal, state) = Journal::open(path).unwrap();
            SweepCore::restore(spec, None, None, 0, journal, state, 2, false).map(|_| ())
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        restore(&path, base).unwrap();
        let relaid = format!(
            "# a comment\n{}",
            base.replace(
                "budget: { trials: 4, max_attempts: 2 }",
                "budget:\n  trials: 4\n  max_attempts: 2\n  concurrent: 3"
            )
        );
        restore(&path, &relaid).unwrap();
        let more = base.replace("trials: 4", "trials: 5");
        assert!(matches!(
            restore(&path, &more),
            Err(SweepError::Mismatch(_))
        ));
        // A journal started with the validated-spec hash (before this change).
        let old = dir.path().join("old.jsonl");
        let (mut journal, _) = Journal::open(&old).unwrap();
        journal
            .append(&Record::Started {
                version: crate::journal::JOURNAL_VERSION,
                spec_hash: spec_hash(&parse_sweep("t.yaml", base).unwrap()),
                seed: 9,
                at_ms: 0,
            })
            .unwrap();
        drop(journal);
        restore(&old, base).unwrap();
    }
}
