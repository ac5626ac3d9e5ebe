//! `tessera worker --join ADDR`: a worker node. Its agent registers what the node offers,
//! runs the attempts the scheduler sends, sends heartbeats, and keeps running through a
//! coordinator restart: it reconnects by itself and hands over what ended meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tessera_core::Decision;
use tessera_core::program::TrialExecutor;
use tokio::sync::{Notify, mpsc};

use super::ClusterError;
use super::client::{Connection, join, refusal};
use super::node::remote_member;
use super::wire::{
    self, COORDINATOR_GROUP, Ended, RunningLease, ToCoordinator, ToWorker, WorkerInfo,
};
use crate::actors::worker::{Decide, OnEnd, OnFreed, spawn_attempt};

/// What `tessera worker` needs.
pub struct AgentOptions {
    /// The coordinator, and the secret.
    pub connection: Connection,
    /// What this node offers.
    pub info: WorkerInfo,
    /// The code that trains.
    pub executor: Arc<dyn TrialExecutor>,
}

struct Attempt {
    lease: RunningLease,
    stop: Arc<AtomicBool>,
}

/// The agent's state.
pub struct AgentState {
    info: WorkerInfo,
    executor: Arc<dyn TrialExecutor>,
    welcomed: bool,
    hello_pending: bool,
    ticking: bool,
    running: HashMap<u64, Attempt>,
    /// Outcomes no coordinator has acknowledged; the first `in_hello` went with the
    /// last hello.
    outbox: Vec<Ended>,
    in_hello: usize,
    /// Dispatches whose thread ended while no coordinator listened.
    freed: Vec<u64>,
    decisions: Arc<Mutex<HashMap<u64, std::sync::mpsc::Sender<bool>>>>,
    fatal: mpsc::UnboundedSender<String>,
    lost: Arc<Notify>,
}

/// The worker node's agent.
pub struct Agent;

fn coordinator() -> Option<ActorRef<ToCoordinator>> {
    remote_member(COORDINATOR_GROUP).map(ActorRef::from)
}

impl AgentState {
    fn send(&self, msg: ToCoordinator) -> bool {
        coordinator().is_some_and(|c| c.cast(msg).is_ok())
    }

    fn hello(&mut self) {
        self.in_hello = self.outbox.len();
        let running = self.running.values().map(|a| a.lease.clone()).collect();
        self.send(ToCoordinator::Hello {
            info: self.info.clone(),
            running,
            ended: self.outbox.clone(),
        });
    }
}

impl Actor for Agent {
    type Msg = ToWorker;
    type State = AgentState;
    type Arguments = (AgentOptions, mpsc::UnboundedSender<String>, Arc<Notify>);

    async fn pre_start(
        &self,
        _: ActorRef<ToWorker>,
        (opts, fatal, lost): Self::Arguments,
    ) -> Result<AgentState, ActorProcessingErr> {
        Ok(AgentState {
            info: opts.info,
            executor: opts.executor,
            welcomed: false,
            hello_pending: false,
            ticking: false,
            running: HashMap::new(),
            outbox: Vec::new(),
            in_hello: 0,
            freed: Vec::new(),
            decisions: Arc::default(),
            fatal,
            lost,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ToWorker>,
        msg: ToWorker,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ToWorker::Rejoin if state.hello_pending => {} // one hello is enough
            ToWorker::Connected | ToWorker::Rejoin => {
                state.welcomed = false;
                state.hello_pending = true;
                state.hello();
            }
            ToWorker::Welcome { heartbeat_s, drop } => {
                state.welcomed = true;
                crate::metrics::set_not_ready(None);
                state.hello_pending = false;
                // What went with the hello is delivered; what ended since (a dispatch
                // can overtake the welcome) goes now.
                let sent = state.in_hello.min(state.outbox.len());
                state.outbox.drain(..sent);
                state.in_hello = 0;
                let worker = state.info.name.clone();
                for ended in std::mem::take(&mut state.outbox) {
                    if !state.send(ToCoordinator::Ended {
                        worker: worker.clone(),
                        ended: ended.clone(),
                    }) {
                        state.outbox.push(ended);
                    }
                }
                for lease in std::mem::take(&mut state.freed) {
                    state.send(ToCoordinator::Freed {
                        worker: worker.clone(),
                        lease,
                    });
                }
                for lease in drop {
                    if let Some(a) = state.running.get(&lease) {
                        a.stop.store(true, Ordering::Relaxed);
                    }
                }
                if !state.ticking {
                    state.ticking = true;
                    myself.send_interval(Duration::from_secs_f64(heartbeat_s.max(0.01)), || {
                        ToWorker::Tick
                    });
                }
                tracing::info!(worker = %state.info.name, running = state.running.len(), "joined the coordinator");
            }
            ToWorker::Refused { reason } => {
                let _ = state
                    .fatal
                    .send(format!("the coordinator refused this worker: {reason}"));
            }
            ToWorker::Incompatible(v, _) => {
                let _ = state.fatal.send(format!(
                    "the coordinator speaks protocol {v}, this worker {}; run the same Tessera release on every node",
                    wire::spoken_version()
                ));
            }
            ToWorker::Malformed(e) => tracing::warn!(error = %e, "dropped a malformed message"),
            ToWorker::Run {
                sweep_id,
                assignment,
                slots,
                gpus,
            } => {
                let lease = assignment.lease;
                let trial_id = assignment.request.trial_id;
                let worker = state.info.name.clone();
                let running_gauge =
                    crate::metrics::WORKER_TRIALS_RUNNING.with_label_values(&[&worker]);
                running_gauge.inc();
                // Replicas other than 0 of a data-parallel attempt only train: replica 0
                // reports and ends the attempt, and stops them all when told to.
                let silent = assignment.replica.as_ref().is_some_and(|r| r.rank > 0);
                let decide: Decide = if silent {
                    Box::new(|_, _| Decision::Continue)
                } else {
                    let decisions = state.decisions.clone();
                    let worker = worker.clone();
                    let sweep_id = sweep_id.clone();
                    Box::new(move |step, metrics| {
                        let (tx, rx) = std::sync::mpsc::channel();
                        if let Ok(mut d) = decisions.lock() {
                            d.insert(lease, tx);
                        }
                        let sent = coordinator().is_some_and(|c| {
                            c.cast(ToCoordinator::Report {
                                worker: worker.clone(),
                                sweep_id: sweep_id.clone(),
                                trial_id,
                                lease,
                                step,
                                metrics: metrics.clone(),
                            })
                            .is_ok()
                        });
                        // No coordinator, or no answer in time: keep training (it may
                        // come back; stopping would waste what was trained).
                        match sent.then(|| rx.recv_timeout(Duration::from_secs(30))) {
                            Some(Ok(true)) => Decision::Stop,
                            _ => Decision::Continue,
                        }
                    })
                };
                let on_end: OnEnd = {
                    let me = myself.clone();
                    let sweep_id = sweep_id.clone();
                    Box::new(move |end| {
                        if silent {
                            if let Err(e) = &end.result {
                                tracing::warn!(trial = end.trial_id, error = %e, "replica failed");
                            }
                        } else {
                            let _ =
                                me.cast(ToWorker::LocalEnded(Box::new(Ended { sweep_id, end })));
                        }
                    })
                };
                let on_freed: OnFreed = {
                    let me = myself.clone();
                    Box::new(move || {
                        running_gauge.dec();
                        let _ = me.cast(ToWorker::LocalFreed(lease));
                    })
                };
                let stop = spawn_attempt(
                    state.executor.clone(),
                    assignment.clone(),
                    worker,
                    decide,
                    on_end,
                    on_freed,
                );
                state.running.insert(
                    lease,
                    Attempt {
                        lease: RunningLease {
                            sweep_id,
                            trial_id,
                            attempt: assignment.attempt,
                            lease,
                            slots,
                            gpus,
                        },
                        stop,
                    },
                );
            }
            ToWorker::Decision { lease, stop, .. } => {
                let tx = state
                    .decisions
                    .lock()
                    .ok()
                    .and_then(|mut d| d.remove(&lease));
                if let Some(tx) = tx {
                    let _ = tx.send(stop);
                }
            }
            ToWorker::Cancel { lease } => {
                if let Some(a) = state.running.get(&lease) {
                    a.stop.store(true, Ordering::Relaxed);
                }
            }
            ToWorker::Tick => {
                if state.welcomed {
                    state.send(ToCoordinator::Heartbeat {
                        worker: state.info.name.clone(),
                    });
                }
            }
            ToWorker::CoordinatorDown => {
                crate::metrics::set_not_ready(Some(
                    "the coordinator connection is lost; reconnecting",
                ));
                if state.welcomed {
                    tracing::warn!("lost the coordinator; trials keep running, reconnecting");
                }
                state.welcomed = false;
                state.lost.notify_one();
            }
            ToWorker::LocalEnded(e) => {
                if !(state.welcomed
                    && state.send(ToCoordinator::Ended {
                        worker: state.info.name.clone(),
                        ended: (*e).clone(),
                    }))
                {
                    // Handed over with the next hello.
                    state.outbox.push(*e);
                }
            }
            ToWorker::LocalFreed(lease) => {
                state.running.remove(&lease);
                if !(state.welcomed
                    && state.send(ToCoordinator::Freed {
                        worker: state.info.name.clone(),
                        lease,
                    }))
                {
                    state.freed.push(lease);
                }
            }
        }
        Ok(())
    }
}

/// Runs a worker node until SIGINT/SIGTERM, or until the coordinator refuses it.
pub async fn run_worker(opts: AgentOptions) -> Result<(), ClusterError> {
    crate::metrics::set_not_ready(Some("not yet welcomed by a coordinator"));
    let name = opts.info.name.clone();
    let me = name.clone();
    let group = wire::worker_group(&name);
    wire::set_inbox(group.clone());
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
    let lost = Arc::new(Notify::new());
    let conn = Connection {
        coordinator: opts.connection.coordinator.clone(),
        secret: opts.connection.secret.clone(),
        tls: opts.connection.tls.clone(),
    };
    let (agent, _) = Actor::spawn(None, Agent, (opts, fatal_tx, lost.clone()))
        .await
        .map_err(|e| ClusterError::Io(e.to_string()))?;
    ractor::pg::join(group, vec![agent.get_cell()]);
    let refused = Arc::new(AtomicBool::new(false));
    let connector = {
        let agent = agent.clone();
        let refused = refused.clone();
        async move {
            let mut node = None;
            let mut backoff = Duration::from_millis(100);
            let mut said = false;
            loop {
                let a = agent.clone();
                let attempt = join(
                    &conn,
                    &format!("worker:{name}"),
                    refused.clone(),
                    move |_, authenticated, _| {
                        if authenticated {
                            let _ = a.cast(ToWorker::CoordinatorDown);
                        }
                    },
                )
                .await;
                match attempt {
                    Ok((n, _)) => {
                        node = Some(n);
                        backoff = Duration::from_millis(100);
                        said = false;
                        let _ = agent.cast(ToWorker::Connected);
                        lost.notified().await;
                    }
                    Err(_) if refused.load(Ordering::Relaxed) => {
                        return refusal(&conn.coordinator);
                    }
                    Err(e) => {
                        if !said {
                            tracing::warn!(error = %e, "waiting for the coordinator");
                            eprintln!(
                                "tessera: waiting for the coordinator at {} ({e})",
                                conn.coordinator
                            );
                            said = true;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
                // A fresh node server for the next connection.
                if let Some(n) = node.take() {
                    n.server.stop(None);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ClusterError::Io(e.to_string()))?;
    let result = tokio::select! {
        e = connector => Err(e),
        Some(reason) = fatal_rx.recv() => Err(ClusterError::Unreachable(reason)),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    crate::metrics::set_not_ready(Some("the worker is shutting down"));
    if result.is_ok() {
        if let Some(c) = coordinator() {
            let _ = c.cast(ToCoordinator::Goodbye { worker: me });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.stop(None);
    result
}
