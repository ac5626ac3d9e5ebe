//! The writer actor: buffers finished trials and their metrics and writes them as
//! Parquet parts: when a buffer is large, every `interval`, and when the sweep asks.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tessera_core::trial::{Artifact, TrialId};

use super::sweep::{Recorded, SweepMsg};
use crate::store::{MetricRow, RunStore, TrialRow};

/// Messages the writer handles.
pub enum WriterMsg {
    /// A finished trial, its metrics and its kind's table rows.
    Record(Recorded),
    /// Write what is buffered now.
    Flush,
    /// Timer tick: write if anything waited long enough.
    Tick,
    /// The sweep that receives `Flushed` notices (sent by the sweep before any record).
    Attach(ActorRef<SweepMsg>),
}

// Local only: never crosses the network.
impl ractor::Message for WriterMsg {}

/// When the writer writes a part.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    /// Trials buffered before a part is written.
    pub max_trials: usize,
    /// Metric rows (and rows of the kind's own tables) buffered before a part is
    /// written.
    pub max_metric_rows: usize,
    /// Longest a finished trial waits before it is written.
    pub interval: Duration,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self {
            max_trials: 50_000,
            max_metric_rows: 1_000_000,
            interval: Duration::from_secs(2),
        }
    }
}

/// The writer actor.
pub struct WriterActor;

/// The writer's state.
pub struct WriterState {
    store: RunStore,
    policy: FlushPolicy,
    next_part: u64,
    trials: Vec<TrialRow>,
    metrics: Vec<MetricRow>,
    tables: Vec<(TrialId, Artifact)>,
    table_rows: usize,
    sweep: Option<ActorRef<SweepMsg>>,
    failed: bool,
}

/// Arguments: the store, the first free part number and the policy.
pub type WriterArgs = (RunStore, u64, FlushPolicy);

impl WriterState {
    async fn flush(&mut self) {
        if self.trials.is_empty() || self.failed || self.sweep.is_none() {
            return;
        }
        let part = self.next_part;
        let t = std::time::Instant::now();
        match self
            .store
            .write_part(part, &self.trials, &self.metrics, &self.tables)
            .await
        {
            Ok(()) => {
                use crate::metrics::{PARQUET_WRITE, ROWS_WRITTEN};
                PARQUET_WRITE
                    .with_label_values(&[] as &[&str])
                    .observe(t.elapsed().as_secs_f64());
                ROWS_WRITTEN
                    .with_label_values(&[crate::store::TRIALS])
                    .inc_by(self.trials.len() as u64);
                ROWS_WRITTEN
                    .with_label_values(&[crate::store::METRICS])
                    .inc_by(self.metrics.len() as u64);
                crate::fault::point("after_part_written");
                self.next_part += 1;
                let ids: Vec<TrialId> = self.trials.iter().map(|r| r.trial_id).collect();
                tracing::debug!(
                    part,
                    trials = ids.len(),
                    metric_rows = self.metrics.len(),
                    "parquet part written"
                );
                self.trials.clear();
                self.metrics.clear();
                self.tables.clear();
                self.table_rows = 0;
                if let Some(s) = &self.sweep {
                    let _ = s.cast(SweepMsg::Flushed {
                        part,
                        trial_ids: ids,
                    });
                }
            }
            Err(e) => {
                self.failed = true;
                tracing::error!(part, error = %e, "writing a parquet part failed");
                if let Some(s) = &self.sweep {
                    let _ = s.cast(SweepMsg::WriterFailed(e.to_string()));
                }
            }
        }
    }
}

impl Actor for WriterActor {
    type Msg = WriterMsg;
    type State = WriterState;
    type Arguments = WriterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WriterMsg>,
        (store, next_part, policy): WriterArgs,
    ) -> Result<WriterState, ActorProcessingErr> {
        myself.send_interval(policy.interval, || WriterMsg::Tick);
        Ok(WriterState {
            store,
            policy,
            next_part,
            trials: Vec::new(),
            metrics: Vec::new(),
            tables: Vec::new(),
            table_rows: 0,
            sweep: None,
            failed: false,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<WriterMsg>,
        msg: WriterMsg,
        state: &mut WriterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WriterMsg::Record(Recorded {
                row,
                mut metrics,
                tables,
            }) => {
                for t in tables {
                    state.table_rows += t.rows();
                    state.tables.push((row.trial_id, t));
                }
                state.trials.push(row);
                state.metrics.append(&mut metrics);
                if state.trials.len() >= state.policy.max_trials
                    || state.metrics.len() + state.table_rows >= state.policy.max_metric_rows
                {
                    state.flush().await;
                }
            }
            WriterMsg::Flush | WriterMsg::Tick => state.flush().await,
            WriterMsg::Attach(sweep) => state.sweep = Some(sweep),
        }
        Ok(())
    }
}
