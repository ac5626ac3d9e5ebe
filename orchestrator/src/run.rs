//! Embedded mode: the coordinator's actors and N in-process workers in one process.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ractor::{Actor, ActorRef};
use tessera_core::program::TrialExecutor;
use tessera_core::trial::DatasetRef;
use tessera_core::{SweepSpec, rng};
use tokio::sync::{oneshot, watch};

use crate::actors::scheduler::{SchedulerActor, SchedulerMsg, WorkerLink};
use crate::actors::sweep::{Progress, SweepActor, SweepArgs, SweepCore, SweepMsg, SweepResult};
use crate::actors::worker::WorkerActor;
use crate::actors::writer::{FlushPolicy, WriterActor, WriterMsg};
use crate::journal::Journal;
use crate::lake::ObjectStore;
use crate::store::{METRICS, RESULTS_FILE, RunStore, StoreError, TRIALS, results_of};

/// File names inside a run directory.
pub const SPEC_FILE: &str = "sweep.yaml";
/// The journal's file name.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// Errors starting or running a sweep.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run directory cannot be used as asked.
    #[error("{0}")]
    Usage(String),
    /// File-system failure.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The sweep stopped with an error.
    #[error("{0}")]
    Sweep(String),
}

/// What `run_sweep` needs.
pub struct RunOptions {
    /// The validated sweep.
    pub spec: SweepSpec,
    /// The sweep file's text (copied into the run directory).
    pub source: String,
    /// The folder the sweep file is in (relative dataset paths start there).
    pub base_dir: PathBuf,
    /// The run directory (journal, spec; the Parquet too unless `results` is given).
    pub out: PathBuf,
    /// Where the Parquet goes instead (`s3://…`): `ROOT/sweep=<run id>/`.
    pub results: Option<crate::lake::Location>,
    /// In-process workers (one slot each).
    pub workers: usize,
    /// Continue the run in `out` instead of starting one.
    pub resume: bool,
    /// The code that trains.
    pub executor: Arc<dyn TrialExecutor>,
    /// Where progress goes (optional).
    pub progress: Option<watch::Sender<Progress>>,
    /// When parts are written.
    pub flush: FlushPolicy,
}

/// A sensible default run directory: `runs/<name>-<utc timestamp>`.
pub fn default_out(results: Option<&str>, name: &str) -> PathBuf {
    let base = results.unwrap_or("runs");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    Path::new(base).join(format!(
        "{name}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// Days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The newest run directory of sweep `name` under `base`, if any (for `--resume`
/// without `--out`).
pub fn latest_run(base: &Path, name: &str) -> Option<PathBuf> {
    let prefix = format!("{name}-");
    let mut runs: Vec<PathBuf> = fs::read_dir(base)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            // `<name>-YYYYMMDD-HHMMSS` exactly: sweep `a` must not pick up `a-b-…`.
            let file = e.file_name().to_string_lossy().into_owned();
            let stamp = file.strip_prefix(&prefix).unwrap_or("");
            let b = stamp.as_bytes();
            b.len() == 15
                && b[8] == b'-'
                && b.iter()
                    .enumerate()
                    .all(|(i, c)| i == 8 || c.is_ascii_digit())
                && e.path().join(JOURNAL_FILE).exists()
        })
        .map(|e| e.path())
        .collect();
    runs.sort();
    runs.pop()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The sweep's dataset, its path resolved against the sweep file's folder.
pub fn resolve_dataset(spec: &SweepSpec, base_dir: &Path) -> Option<DatasetRef> {
    spec.dataset.as_ref().map(|d| {
        let (path, registered) = if d.path.starts_with("s3://") {
            (d.path.trim_end_matches('/').to_owned(), true)
        } else {
            let p = Path::new(&d.path);
            let abs = if p.is_absolute() {
                p.to_owned()
            } else {
                base_dir.join(p)
            };
            let registered = abs.join(tessera_core::shards::MANIFEST).is_file();
            (abs.display().to_string(), registered)
        };
        DatasetRef {
            path,
            validation_fraction: d.validation_fraction,
            split_seed: d.split_seed,
            shards: d.shards,
            registered,
        }
    })
}

/// What [`launch_sweep`] needs.
pub struct Launch {
    /// The validated sweep.
    pub spec: SweepSpec,
    /// Its dataset, resolved.
    pub dataset: Option<DatasetRef>,
    /// The run directory (journal and spec; it must exist).
    pub out: PathBuf,
    /// Where the Parquet goes if not into `out` (only read when the run starts; a
    /// resumed run keeps the location it started with).
    pub results: Option<crate::lake::Location>,
    /// The sweep's id.
    pub id: String,
    /// The scheduler its attempts queue at.
    pub scheduler: ActorRef<SchedulerMsg>,
    /// Attempts in flight at most.
    pub max_concurrent: u64,
    /// After a restart: how long running attempts wait for their worker to reclaim them.
    pub release_after: Option<std::time::Duration>,
    /// When parts are written.
    pub flush: FlushPolicy,
    /// Where progress goes.
    pub progress: Option<watch::Sender<Progress>>,
}

/// A sweep's running actors.
pub struct Launched {
    /// The sweep actor.
    pub sweep: ActorRef<SweepMsg>,
    /// Its writer.
    pub writer: ActorRef<WriterMsg>,
    /// Resolves when the sweep ends.
    pub done: oneshot::Receiver<Result<SweepResult, String>>,
    /// Its progress.
    pub progress: watch::Receiver<Progress>,
    /// The actors' tasks.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens (or resumes) the sweep in `out` and starts its sweep and writer actors.
pub async fn launch_sweep(l: Launch) -> Result<Launched, RunError> {
    let Launch {
        spec,
        dataset,
        out,
        results,
        id,
        scheduler,
        max_concurrent,
        release_after,
        flush,
        progress,
    } = l;
    let (journal, state) = Journal::open(&out.join(JOURNAL_FILE))?;
    if let Some(loc) = results.filter(|_| state.started.is_none())
        && !out.join(RESULTS_FILE).exists()
    {
        let root = loc.join(&format!("sweep={id}"));
        fs::write(out.join(RESULTS_FILE), format!("{root}\n")).map_err(io(&out))?;
    }
    let root = results_of(&out)?;
    let objects = ObjectStore::open(&root).await.map_err(StoreError::from)?;
    let tables = spec.tables();
    // Kinds whose analysis and images are written when the sweep completes.
    let has_summary = matches!(
        spec.kind,
        tessera_core::spec::SweepKind::Fractal
            | tessera_core::spec::SweepKind::Nas
            | tessera_core::spec::SweepKind::Metalic
    );
    let store =
        RunStore::new(objects, spec.space.clone(), &spec.objective.metric).with_tables(&tables);
    let mut meta = serde_json::json!({
        "sweep": id,
        "name": spec.name,
        "kind": spec.kind.as_str(),
        "program": spec.program,
        "objective": { "metric": spec.objective.metric, "goal": spec.objective.goal.as_str() },
        "tables": { "trials": TRIALS, "metrics": METRICS },
    });
    for t in &tables {
        meta["tables"][*t] = (*t).into();
    }
    if let Some(f) = &spec.fractal {
        meta["fractal"] = serde_json::to_value(f).unwrap_or_default();
    }
    if let Some(n) = &spec.nas {
        meta["nas"] = serde_json::to_value(n).unwrap_or_default();
        for t in [
            tessera_core::nas_sweep::SUBNETS_TABLE,
            tessera_core::nas_sweep::PARETO_TABLE,
            tessera_core::nas_sweep::HYPERVOLUME_TABLE,
        ] {
            meta["tables"][t] = t.into();
        }
    }
    if let Some(m) = &spec.metalic {
        meta["metalic"] = serde_json::to_value(m).unwrap_or_default();
        for t in [
            tessera_core::metalic_sweep::ROUNDS_TABLE,
            tessera_core::metalic_sweep::TESTS_TABLE,
        ] {
            meta["tables"][t] = t.into();
        }
    }
    store.prepare(&state.flushed_parts, &meta).await?;
    let analysis = store.objects().clone();
    let next_part = state.flushed_parts.iter().next_back().map_or(1, |p| p + 1);
    let fresh_seed = spec
        .seed
        .unwrap_or_else(|| rng::mix64(crate::actors::now_ms() as u64));
    // A data-parallel trial's replica 0 keeps a copy of its checkpoint beside the
    // results, for a retry on workers that hold none.
    let checkpoints = (spec.workers > 1).then(|| root.join("checkpoints").absolute().to_string());
    let (core, pending) = SweepCore::restore(
        spec,
        dataset,
        checkpoints,
        fresh_seed,
        journal,
        state,
        max_concurrent,
        release_after.is_some(),
    )
    .map_err(|e| match e {
        crate::actors::sweep::SweepError::Mismatch(m) => RunError::Usage(format!(
            "{m} (the original is {})",
            out.join(SPEC_FILE).display()
        )),
        other => RunError::Sweep(other.to_string()),
    })?;
    tracing::info!(sweep = %id, seed = core.seed(), out = %out.display(), "sweep starting");
    let spawn_err = |e: ractor::SpawnErr| RunError::Sweep(format!("cannot start an actor: {e}"));
    let (writer, writer_task) = Actor::spawn(None, WriterActor, (store, next_part, flush))
        .await
        .map_err(spawn_err)?;
    let (done_tx, done_rx) = oneshot::channel();
    // A fractal or nas sweep's analysis and images are written when it completes,
    // before its end is announced.
    let done_tx = if !has_summary {
        done_tx
    } else {
        let (inner_tx, inner_rx) = oneshot::channel::<Result<SweepResult, String>>();
        tokio::spawn(async move {
            let Ok(result) = inner_rx.await else { return };
            use tessera_core::searcher::KindSummary;
            match result.as_ref().map(|r| &r.kind) {
                Ok(Some(KindSummary::Nas(summary))) => {
                    if let Err(e) = crate::nas::finish(&analysis, summary).await {
                        tracing::warn!(error = %e, "writing the nas front failed; resume the run to write it again");
                    }
                }
                Ok(Some(KindSummary::Metalic(summary))) => {
                    if let Err(e) = crate::metalic::finish(&analysis, summary).await {
                        tracing::warn!(error = %e, "writing the metalic rounds failed; resume the run to write them again");
                    }
                }
                Ok(None) => {
                    if let Err(e) = crate::fractal::finish(&analysis).await {
                        tracing::warn!(error = %e, "writing the fractal analysis failed; `tessera report` computes it from the tables");
                    }
                }
                Err(_) => {}
            }
            let _ = done_tx.send(result);
        });
        inner_tx
    };
    let progress = progress.unwrap_or_else(|| watch::channel(Progress::default()).0);
    let progress_rx = progress.subscribe();
    let (sweep, sweep_task) = Actor::spawn(
        None,
        SweepActor,
        SweepArgs {
            id,
            release_after,
            core,
            pending,
            scheduler,
            writer: writer.clone(),
            progress,
            done: done_tx,
        },
    )
    .await
    .map_err(|e| {
        writer.stop(None);
        spawn_err(e)
    })?;
    Ok(Launched {
        sweep,
        writer,
        done: done_rx,
        progress: progress_rx,
        tasks: vec![sweep_task, writer_task],
    })
}

/// Runs (or resumes) a sweep in embedded mode and waits for it to end.
pub async fn run_sweep(opts: RunOptions) -> Result<SweepResult, RunError> {
    let RunOptions {
        spec,
        source,
        base_dir,
        out,
        results,
        workers,
        resume,
        executor,
        progress,
        flush,
    } = opts;
    let journal_path = out.join(JOURNAL_FILE);
    let exists = journal_path.exists();
    if exists && !resume {
        return Err(RunError::Usage(format!(
            "{} already holds a run; pass --resume to continue it, or choose another --out",
            out.display()
        )));
    }
    if resume && !exists {
        return Err(RunError::Usage(format!(
            "{} holds no run to resume (no {JOURNAL_FILE})",
            out.display()
        )));
    }
    if spec.slots > 1 {
        return Err(RunError::Usage(format!(
            "resources.slots is {} but embedded workers have 1 slot each; use slots: 1",
            spec.slots
        )));
    }
    // An elastic sweep (`min_workers` < `workers`) runs on fewer workers, not on too few.
    if spec.workers > 1 && (workers as u32) < spec.min_workers {
        return Err(RunError::Usage(format!(
            "resources.workers is {} but this run has {workers} worker(s); pass --workers {}",
            spec.workers, spec.workers
        )));
    }
    fs::create_dir_all(&out).map_err(io(&out))?;
    if !exists {
        fs::write(out.join(SPEC_FILE), &source).map_err(io(&out))?;
    }
    let dataset = resolve_dataset(&spec, &base_dir);
    if let Some(d) = dataset
        .as_ref()
        .filter(|d| !d.registered && !Path::new(&d.path).is_file())
    {
        return Err(RunError::Usage(format!(
            "dataset {} does not exist; check `dataset.path` (it is relative to the sweep file)",
            d.path
        )));
    }
    let root = results.clone().unwrap_or_else(|| {
        crate::lake::Location::Local(out.parent().map_or_else(PathBuf::new, Path::to_path_buf))
    });
    let dataset = crate::datasets::for_sweep(&spec, dataset, &root)
        .await
        .map_err(RunError::Sweep)?;
    let workers = workers.max(1);
    let max_concurrent = spec
        .concurrent
        .map_or(workers as u64, u64::from)
        .min(workers as u64 * 64);

    let spawn_err = |e: ractor::SpawnErr| RunError::Sweep(format!("cannot start an actor: {e}"));
    let (scheduler, scheduler_task) = Actor::spawn(None, SchedulerActor, ())
        .await
        .map_err(spawn_err)?;
    let mut worker_refs = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..workers {
        let name = format!("local-{i}");
        let (w, t) = Actor::spawn(None, WorkerActor, (name.clone(), executor.clone()))
            .await
            .map_err(spawn_err)?;
        scheduler
            .cast(SchedulerMsg::AddWorker {
                name,
                slots: 1,
                gpus: 0,
                ring: executor.ring_address(),
                link: WorkerLink::Local(w.clone()),
                busy: Vec::new(),
            })
            .map_err(|e| RunError::Sweep(e.to_string()))?;
        worker_refs.push(w);
        tasks.push(t);
    }
    let id = out
        .file_name()
        .map_or_else(|| spec.name.clone(), |f| f.to_string_lossy().into_owned());
    let launched = launch_sweep(Launch {
        spec,
        dataset,
        out: out.clone(),
        results,
        id,
        scheduler: scheduler.clone(),
        max_concurrent,
        release_after: None,
        flush,
        progress,
    })
    .await;
    let launched = match launched {
        Ok(l) => l,
        Err(e) => {
            scheduler.stop(None);
            for w in &worker_refs {
                w.stop(None);
            }
            return Err(e);
        }
    };
    let Launched {
        sweep,
        writer,
        done: done_rx,
        tasks: sweep_tasks,
        ..
    } = launched;

    let result = done_rx
        .await
        .unwrap_or_else(|_| Err("the sweep actor stopped unexpectedly".into()));
    sweep.stop(None);
    writer.stop(None);
    scheduler.stop(None);
    for w in &worker_refs {
        w.stop(None);
    }
    for t in sweep_tasks {
        let _ = t.await;
    }
    let _ = scheduler_task.await;
    for t in tasks {
        let _ = t.await;
    }
    result.map_err(RunError::Sweep)
}
