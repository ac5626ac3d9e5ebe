//! `tessera serve`: the coordinator as a service. Its gateway actor admits worker nodes,
//! watches their heartbeats, routes their results to the sweeps, and answers clients.
//! Sweeps live in run directories under `--results`; the list of submitted sweeps is
//! `sweeps.jsonl` in `--state`, so a restarted coordinator resumes every unfinished one.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tessera_core::program::{ProgramInfo, check_program};
use tessera_core::{SweepSpec, parse_sweep};
use tokio::sync::watch;

use super::ClusterError;
use super::node::{Node, TlsFiles, remote_member, wait_for_member};
use super::wire::{
    self, COORDINATOR_GROUP, Ended, Request, RunningLease, ToClient, ToCoordinator, ToWorker,
    WorkerInfo,
};
use crate::actors::scheduler::{Busy, SchedulerActor, SchedulerMsg, SlotView, WorkerLink};
use crate::actors::sweep::{Progress, SweepMsg};
use crate::actors::writer::{FlushPolicy, WriterMsg};
use crate::run::{JOURNAL_FILE, Launch, SPEC_FILE, default_out, launch_sweep, resolve_dataset};

/// What `tessera serve` needs.
pub struct ServeOptions {
    /// Where nodes connect.
    pub listen: SocketAddr,
    /// The coordinator's own state (the sweep registry).
    pub state: PathBuf,
    /// Where results go: a directory of run directories, or an S3 prefix for the Parquet
    /// (journals then stay in `STATE/runs`).
    pub results: crate::lake::Location,
    /// The shared secret.
    pub secret: String,
    /// TLS between nodes.
    pub tls: Option<TlsFiles>,
    /// A worker silent this long is lost: its trials go back to the queue.
    pub heartbeat_timeout: Duration,
    /// When Parquet parts are written.
    pub flush: FlushPolicy,
    /// Programs this coordinator can check sweeps against (empty: no check).
    pub programs: Vec<ProgramInfo>,
}

/// A registry line: one submitted sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registered {
    id: String,
    out: PathBuf,
    base_dir: PathBuf,
}

const REGISTRY: &str = "sweeps.jsonl";

struct SweepEntry {
    name: String,
    out: PathBuf,
    actor: Option<ActorRef<SweepMsg>>,
    writer: Option<ActorRef<WriterMsg>>,
    progress: watch::Receiver<Progress>,
    outcome: Option<Result<String, String>>,
    metric: String,
    cancelling: bool,
}

struct WorkerEntry {
    info: WorkerInfo,
    agent: ActorRef<ToWorker>,
    last_seen: Instant,
}

/// The gateway's state.
pub struct GatewayState {
    opts: ServeOptions,
    scheduler: ActorRef<SchedulerMsg>,
    sweeps: BTreeMap<String, SweepEntry>,
    workers: HashMap<String, WorkerEntry>,
}

/// The coordinator's front door.
pub struct Gateway;

impl GatewayState {
    fn heartbeat_s(&self) -> f64 {
        (self.opts.heartbeat_timeout.as_secs_f64() / 4.0).clamp(0.05, 5.0)
    }

    async fn launch(
        &mut self,
        myself: &ActorRef<ToCoordinator>,
        reg: &Registered,
        resumed: bool,
    ) -> Result<(), String> {
        let source = std::fs::read_to_string(reg.out.join(SPEC_FILE))
            .map_err(|e| format!("{}: {e}", reg.out.join(SPEC_FILE).display()))?;
        let spec = parse_sweep(&reg.out.join(SPEC_FILE).display().to_string(), &source)
            .map_err(|e| e.to_string())?;
        let dataset = resolve_dataset(&spec, &reg.base_dir);
        let dataset = crate::datasets::for_sweep(&spec, dataset, &self.opts.results).await?;
        let name = spec.name.clone();
        let metric = spec.objective.metric.clone();
        let max_concurrent = spec.concurrent.map_or(1024, u64::from);
        let launched = launch_sweep(Launch {
            spec,
            dataset,
            out: reg.out.clone(),
            results: match &self.opts.results {
                crate::lake::Location::Local(_) => None,
                s3 => Some(s3.clone()),
            },
            id: reg.id.clone(),
            scheduler: self.scheduler.clone(),
            max_concurrent,
            // After a restart, running attempts wait for their workers to come back.
            release_after: resumed.then_some(self.opts.heartbeat_timeout * 2),
            flush: self.opts.flush,
            progress: None,
        })
        .await
        .map_err(|e| e.to_string())?;
        let id = reg.id.clone();
        let me = myself.clone();
        let done = launched.done;
        tokio::spawn(async move {
            let outcome = match done.await {
                Ok(Ok(r)) => Ok(format!(
                    "{} finished, {} stopped early, {} failed",
                    r.progress.finished, r.progress.stopped, r.progress.failed
                )),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("the sweep actor stopped".into()),
            };
            let _ = me.cast(ToCoordinator::SweepDone(id, outcome));
        });
        self.sweeps.insert(
            reg.id.clone(),
            SweepEntry {
                name,
                out: reg.out.clone(),
                actor: Some(launched.sweep),
                writer: Some(launched.writer),
                progress: launched.progress,
                outcome: None,
                metric,
                cancelling: false,
            },
        );
        Ok(())
    }

    fn find_sweep(&self, key: &str) -> Result<&str, String> {
        if let Some((id, _)) = self.sweeps.get_key_value(key) {
            return Ok(id);
        }
        // A name: its newest sweep.
        self.sweeps
            .iter()
            .filter(|(_, s)| s.name == key)
            .map(|(id, _)| id.as_str())
            .next_back()
            .ok_or_else(|| {
                format!("no sweep `{key}` on this coordinator; `tessera status` lists them")
            })
    }

    fn route_ended(&self, e: Ended) {
        match self.sweeps.get(&e.sweep_id).and_then(|s| s.actor.as_ref()) {
            Some(sweep) => {
                let _ = sweep.cast(SweepMsg::AttemptEnded(e.end));
            }
            None => {
                tracing::info!(sweep = %e.sweep_id, trial_id = e.end.trial_id, worker = %e.end.worker, "result for a sweep that is no longer running; ignored")
            }
        }
    }

    /// Any message from a worker shows it is alive.
    fn seen(&mut self, worker: &str) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.last_seen = Instant::now();
        }
    }

    fn lose(&mut self, name: &str, why: &str) {
        if let Some(w) = self.workers.remove(name) {
            tracing::warn!(
                worker = name,
                silent_for_s = w.last_seen.elapsed().as_secs_f64(),
                "worker lost ({why}); its trials go back to the queue"
            );
            let _ = self
                .scheduler
                .cast(SchedulerMsg::RemoveWorker { name: name.into() });
        }
    }

    async fn joined(
        &mut self,
        info: WorkerInfo,
        running: Vec<RunningLease>,
        ended: Vec<Ended>,
        agent: ActorRef<ToWorker>,
    ) {
        if let Some(old) = self.workers.get(&info.name)
            && old.info.instance != info.instance
            && old.last_seen.elapsed() < self.opts.heartbeat_timeout
        {
            tracing::warn!(worker = %info.name, "refused a worker: the name is taken");
            let _ = agent.cast(ToWorker::Refused {
                reason: format!(
                    "a worker named `{}` is already connected; give each worker a unique --name",
                    info.name
                ),
            });
            return;
        }
        for e in ended {
            self.route_ended(e);
        }
        let mut busy = Vec::new();
        let mut drop = Vec::new();
        for r in running {
            let sweep = self.sweeps.get(&r.sweep_id).and_then(|s| s.actor.clone());
            let adopted = match &sweep {
                Some(s) => matches!(
                    s.call(
                        |reply| SweepMsg::Adopt {
                            trial_id: r.trial_id,
                            attempt: r.attempt,
                            lease: r.lease,
                            reply,
                        },
                        Some(Duration::from_secs(5)),
                    )
                    .await,
                    Ok(ractor::rpc::CallResult::Success(true))
                ),
                None => false,
            };
            if !adopted {
                drop.push(r.lease);
            }
            busy.push(Busy {
                sweep: sweep.filter(|_| adopted).map(|s| (s, r.trial_id)),
                sweep_id: r.sweep_id.clone(),
                lease: r.lease,
                slots: r.slots,
                gpus: r.gpus,
            });
        }
        tracing::info!(worker = %info.name, slots = info.slots, gpus = ?info.gpus, backend = %info.backend, memory_gib = format!("{:.1}", info.memory_bytes as f64 / (1u64 << 30) as f64), adopted = busy.len() - drop.len(), "worker joined");
        let _ = self.scheduler.cast(SchedulerMsg::AddWorker {
            name: info.name.clone(),
            slots: info.slots,
            gpus: info.gpus.len() as u32,
            ring: info.ring.clone(),
            link: WorkerLink::Remote(agent.clone()),
            busy,
        });
        let _ = agent.cast(ToWorker::Welcome {
            heartbeat_s: self.heartbeat_s(),
            drop,
        });
        crate::metrics::HEARTBEAT_MISSES
            .with_label_values(&[&info.name])
            .inc_by(0);
        self.workers.insert(
            info.name.clone(),
            WorkerEntry {
                info,
                agent,
                last_seen: Instant::now(),
            },
        );
    }

    fn agent_of(&self, worker: &str) -> Option<ActorRef<ToWorker>> {
        self.workers
            .get(worker)
            .map(|w| w.agent.clone())
            .or_else(|| remote_member(&wire::worker_group(worker)).map(ActorRef::<ToWorker>::from))
    }

    async fn answer(
        &mut self,
        myself: &ActorRef<ToCoordinator>,
        request: Request,
    ) -> Result<String, (i32, String)> {
        match request {
            Request::Submit {
                file,
                source,
                base_dir,
            } => {
                let spec = parse_sweep(&file, &source).map_err(|e| (2, e.to_string()))?;
                if !self.opts.programs.is_empty() {
                    check_program(&spec, &self.opts.programs)
                        .map_err(|p| (2, p.locate(&file, &source).to_string()))?;
                }
                let reg = self
                    .register(&spec, &source, &base_dir)
                    .map_err(|e| (1, e))?;
                self.launch(myself, &reg, false).await.map_err(|e| (1, e))?;
                Ok(format!(
                    "submitted {} ({} trials); follow it with `tessera status {}`\n",
                    reg.id, spec.trials, reg.id
                ))
            }
            Request::Status { sweep, json } => {
                let ids: Vec<String> = match &sweep {
                    Some(k) => vec![self.find_sweep(k).map_err(|e| (2, e))?.to_owned()],
                    None => self.sweeps.keys().cloned().collect(),
                };
                let workers = match self
                    .scheduler
                    .call(SchedulerMsg::Workers, Some(Duration::from_secs(5)))
                    .await
                {
                    Ok(ractor::rpc::CallResult::Success(w)) => w,
                    _ => Vec::new(),
                };
                Ok(if json {
                    self.status_json(&ids, &workers)
                } else {
                    self.status_text(&ids, &workers)
                })
            }
            Request::Cancel { sweep } => {
                let id = self.find_sweep(&sweep).map_err(|e| (2, e))?.to_owned();
                let s = self.sweeps.get_mut(&id).ok_or((2, "gone".to_owned()))?;
                match &s.actor {
                    Some(a) => {
                        s.cancelling = true;
                        let _ = a.cast(SweepMsg::Cancel);
                        Ok(format!(
                            "cancelling {id}: running trials stop at their next report; finished ones are kept\n"
                        ))
                    }
                    None => Err((2, format!("{id} has already ended"))),
                }
            }
            Request::Report { sweep, top, format } => {
                let id = self.find_sweep(&sweep).map_err(|e| (2, e))?.to_owned();
                let out = self.sweeps[&id].out.clone();
                let r = crate::report::build_report(&out, top)
                    .await
                    .map_err(|e| (1, e.to_string()))?;
                let at = crate::store::results_of(&out)
                    .map_or_else(|_| out.display().to_string(), |l| l.to_string());
                Ok(match format {
                    crate::report::Format::Table => format!("{}\nresults: {at}\n", r.render()),
                    other => r.render_as(other),
                })
            }
        }
    }

    fn register(
        &self,
        spec: &SweepSpec,
        source: &str,
        base_dir: &str,
    ) -> Result<Registered, String> {
        let parent = match &self.opts.results {
            crate::lake::Location::Local(p) => p.clone(),
            crate::lake::Location::S3 { .. } => self.opts.state.join("runs"),
        };
        let base = default_out(Some(&parent.display().to_string()), &spec.name);
        let mut out = base.clone();
        let mut n = 1;
        while out.exists() {
            n += 1;
            out = PathBuf::from(format!("{}-{n}", base.display()));
        }
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        std::fs::write(out.join(SPEC_FILE), source)
            .map_err(|e| format!("{}: {e}", out.display()))?;
        let reg = Registered {
            id: out
                .file_name()
                .map_or_else(|| spec.name.clone(), |f| f.to_string_lossy().into_owned()),
            out,
            base_dir: PathBuf::from(base_dir),
        };
        let path = self.opts.state.join(REGISTRY);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut line = serde_json::to_vec(&reg).map_err(|e| e.to_string())?;
        line.push(b'\n');
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(reg)
    }

    fn sweep_state(s: &SweepEntry) -> &'static str {
        match (&s.outcome, s.cancelling) {
            (None, false) => "running",
            (None, true) => "cancelling",
            (Some(Ok(_)), true) => "cancelled",
            (Some(Ok(_)), false) => "complete",
            (Some(Err(_)), _) => "error",
        }
    }

    fn status_json(&self, ids: &[String], workers: &[SlotView]) -> String {
        let sweeps: Vec<serde_json::Value> = ids
            .iter()
            .filter_map(|id| self.sweeps.get(id).map(|s| (id, s)))
            .map(|(id, s)| {
                let p = s.progress.borrow().clone();
                serde_json::json!({
                    "id": id, "name": s.name, "state": Self::sweep_state(s),
                    "total": p.total, "finished": p.finished, "stopped": p.stopped,
                    "failed": p.failed, "running": p.running, "retries": p.retries,
                    "best": p.best.map(|(t, v)| serde_json::json!({"trial_id": t, s.metric.clone(): v})),
                    "error": s.outcome.as_ref().and_then(|o| o.clone().err()),
                    "out": s.out,
                })
            })
            .collect();
        let workers: Vec<serde_json::Value> = workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "name": w.name, "slots": w.capacity, "free": w.free, "gpus": w.gpus,
                    "free_gpus": w.free_gpus,
                    "backend": self.workers.get(&w.name).map(|e| e.info.backend.clone()),
                })
            })
            .collect();
        format!(
            "{}\n",
            serde_json::json!({"sweeps": sweeps, "workers": workers})
        )
    }

    fn status_text(&self, ids: &[String], workers: &[SlotView]) -> String {
        use crate::report::TextTable;
        let mut t = TextTable::new(&["sweep", "state", "done", "running", "failed", "best"]);
        for id in ids {
            let Some(s) = self.sweeps.get(id) else {
                continue;
            };
            let p = s.progress.borrow().clone();
            t.row(vec![
                id.clone(),
                Self::sweep_state(s).to_owned(),
                format!("{}/{}", p.done(), p.total),
                p.running.to_string(),
                p.failed.to_string(),
                p.best.map_or("-".into(), |(tr, v)| {
                    format!("{} {v:.4} (trial {tr})", s.metric)
                }),
            ]);
        }
        let mut w = TextTable::new(&[
            "worker",
            "slots used",
            "gpus used",
            "backend",
            "last heartbeat",
        ]);
        for v in workers {
            let e = self.workers.get(&v.name);
            w.row(vec![
                v.name.clone(),
                format!("{}/{}", v.capacity - v.free, v.capacity),
                format!("{}/{}", v.gpus - v.free_gpus, v.gpus),
                e.map_or("-".into(), |e| e.info.backend.clone()),
                e.map_or("-".into(), |e| {
                    format!("{:.1} s ago", e.last_seen.elapsed().as_secs_f64())
                }),
            ]);
        }
        format!("{}\n{}", t.render(), w.render())
    }
}

impl Actor for Gateway {
    type Msg = ToCoordinator;
    type State = GatewayState;
    type Arguments = (ServeOptions, ActorRef<SchedulerMsg>);

    async fn pre_start(
        &self,
        myself: ActorRef<ToCoordinator>,
        (opts, scheduler): Self::Arguments,
    ) -> Result<GatewayState, ActorProcessingErr> {
        let mut state = GatewayState {
            opts,
            scheduler,
            sweeps: BTreeMap::new(),
            workers: HashMap::new(),
        };
        // Resume every registered sweep (completed ones end at once).
        let path = state.opts.state.join(REGISTRY);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(reg) = serde_json::from_str::<Registered>(line) else {
                tracing::warn!(line, "skipping an unreadable line of {}", path.display());
                continue;
            };
            if !reg.out.join(JOURNAL_FILE).exists() {
                continue;
            }
            if let Err(e) = state.launch(&myself, &reg, true).await {
                tracing::error!(sweep = %reg.id, error = %e, "cannot resume sweep");
            }
        }
        ractor::pg::join(COORDINATOR_GROUP.to_owned(), vec![myself.get_cell()]);
        let every = Duration::from_secs_f64(state.heartbeat_s());
        myself.send_interval(every, || ToCoordinator::Tick);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ToCoordinator>,
        msg: ToCoordinator,
        state: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ToCoordinator::Hello {
                info,
                running,
                ended,
            } => {
                let group = wire::worker_group(&info.name);
                match remote_member(&group) {
                    Some(cell) => {
                        state
                            .joined(info, running, ended, ActorRef::from(cell))
                            .await;
                    }
                    None => {
                        // Its process group has not reached us yet: wait for it.
                        let me = myself.clone();
                        tokio::spawn(async move {
                            match wait_for_member(&group, Duration::from_secs(5)).await {
                                Some(cell) => {
                                    let _ = me.cast(ToCoordinator::Joined(
                                        Box::new((info, running, ended)),
                                        cell,
                                    ));
                                }
                                None => {
                                    tracing::warn!(worker = %info.name, "a worker said hello but its agent is not reachable; ignored")
                                }
                            }
                        });
                    }
                }
            }
            ToCoordinator::Joined(hello, cell) => {
                let (info, running, ended) = *hello;
                state
                    .joined(info, running, ended, ActorRef::from(cell))
                    .await;
            }
            ToCoordinator::Heartbeat { worker } => match state.workers.get_mut(&worker) {
                Some(w) => w.last_seen = Instant::now(),
                None => {
                    if let Some(agent) = state.agent_of(&worker) {
                        tracing::info!(
                            worker,
                            "heartbeat from a worker this coordinator gave up on; asking it to rejoin"
                        );
                        let _ = agent.cast(ToWorker::Rejoin);
                    }
                }
            },
            ToCoordinator::Report {
                worker,
                sweep_id,
                trial_id,
                lease,
                step,
                metrics,
            } => {
                state.seen(&worker);
                let sweep = state.sweeps.get(&sweep_id).and_then(|s| s.actor.clone());
                let agent = state.agent_of(&worker);
                tokio::spawn(async move {
                    let stop = match sweep {
                        Some(s) => !matches!(
                            s.call(
                                |reply| SweepMsg::Report {
                                    trial_id,
                                    lease,
                                    step,
                                    metrics,
                                    reply,
                                },
                                Some(Duration::from_secs(30)),
                            )
                            .await,
                            Ok(ractor::rpc::CallResult::Success(
                                tessera_core::Decision::Continue
                            ))
                        ),
                        None => true,
                    };
                    if let Some(a) = agent {
                        let _ = a.cast(ToWorker::Decision { lease, step, stop });
                    }
                });
            }
            ToCoordinator::Ended { worker, ended } => {
                state.seen(&worker);
                state.route_ended(ended);
            }
            ToCoordinator::Freed { worker, lease } => {
                state.seen(&worker);
                let _ = state.scheduler.cast(SchedulerMsg::SlotFreed { lease });
            }
            ToCoordinator::Goodbye { worker } => state.lose(&worker, "it left"),
            ToCoordinator::Request { reply_to, request } => {
                let answer = state.answer(&myself, request).await;
                tokio::spawn(async move {
                    match wait_for_member(&reply_to, Duration::from_secs(5)).await {
                        Some(c) => {
                            let _ = ActorRef::<ToClient>::from(c).cast(ToClient::Answer(answer));
                        }
                        None => tracing::warn!(
                            reply_to,
                            "a client's inbox is not reachable; answer dropped"
                        ),
                    }
                });
            }
            ToCoordinator::Malformed(e) => {
                tracing::warn!(error = %e, "dropped a malformed message");
            }
            ToCoordinator::Incompatible(v, from) => {
                tracing::warn!(peer = %from, peer_version = v, version = wire::PROTOCOL_VERSION, "refused a peer speaking another protocol version");
                if let Some(c) = remote_member(&from) {
                    let _ = ActorRef::<ToWorker>::from(c).cast(ToWorker::Refused {
                        reason: format!("the coordinator speaks protocol {}, this node {v}; run the same Tessera release on every node", wire::PROTOCOL_VERSION),
                    });
                }
            }
            ToCoordinator::Tick => {
                let timeout = state.opts.heartbeat_timeout;
                let silent: Vec<String> = state
                    .workers
                    .iter()
                    .filter(|(_, w)| w.last_seen.elapsed() > timeout)
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in silent {
                    crate::metrics::HEARTBEAT_MISSES
                        .with_label_values(&[&name])
                        .inc();
                    state.lose(&name, "missed heartbeats");
                }
            }
            ToCoordinator::NodeDown(node) => {
                // ractor_cluster names a node `NAME@HOST`.
                let node = node.rsplit_once('@').map_or(node.as_str(), |(n, _)| n);
                if let Some(name) = node.strip_prefix("worker:") {
                    state.lose(name, "its connection closed");
                }
            }
            ToCoordinator::SweepDone(id, outcome) => {
                if let Some(s) = state.sweeps.get_mut(&id) {
                    match &outcome {
                        Ok(m) => tracing::info!(sweep = %id, "sweep ended: {m}"),
                        Err(e) => tracing::error!(sweep = %id, error = %e, "sweep failed"),
                    }
                    s.outcome = Some(outcome);
                    if let Some(a) = s.actor.take() {
                        a.stop(None);
                    }
                    if let Some(w) = s.writer.take() {
                        w.stop(None);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Runs the coordinator until SIGINT or SIGTERM.
pub async fn serve(opts: ServeOptions) -> Result<(), ClusterError> {
    let io = |p: &Path| {
        let p = p.to_owned();
        move |e: std::io::Error| ClusterError::Usage(format!("{}: {e}", p.display()))
    };
    crate::metrics::set_not_ready(Some("the coordinator is starting"));
    std::fs::create_dir_all(&opts.state).map_err(io(&opts.state))?;
    if let crate::lake::Location::Local(r) = &opts.results {
        std::fs::create_dir_all(r).map_err(io(r))?;
    }
    wire::set_inbox(COORDINATOR_GROUP.to_owned());
    let listen = opts.listen;
    let secret = opts.secret.clone();
    let tls = opts.tls.clone();
    let (scheduler, _) = Actor::spawn(None, SchedulerActor, ())
        .await
        .map_err(|e| ClusterError::Io(e.to_string()))?;
    let (gateway, gateway_task) = Actor::spawn(None, Gateway, (opts, scheduler.clone()))
        .await
        .map_err(|e| ClusterError::Io(e.to_string()))?;
    let g = gateway.clone();
    let _node = Node::start("coordinator", listen, secret, tls.as_ref(), move |peer, authenticated, addr| {
        if authenticated {
            if let Some(p) = peer {
                let _ = g.cast(ToCoordinator::NodeDown(p));
            }
        } else {
            tracing::warn!(peer = %addr, "refused a node: it did not authenticate (wrong or missing cluster secret, or not a Tessera node)");
        }
    })
    .await?;
    tracing::info!(%listen, tls = tls.is_some(), "coordinator listening");
    eprintln!("tessera: coordinator listening on {listen}");
    crate::metrics::set_not_ready(None);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ClusterError::Io(e.to_string()))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = gateway_task => return Err(ClusterError::Io("the gateway stopped".into())),
    }
    crate::metrics::set_not_ready(Some("the coordinator is shutting down"));
    tracing::info!("coordinator shutting down; unfinished sweeps resume on the next start");
    gateway.stop(None);
    scheduler.stop(None);
    Ok(())
}
