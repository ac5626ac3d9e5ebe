//! The `tessera` command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tessera_core::program::{ProgramInfo, TrialExecutor, check_program};
use tessera_core::{SweepSpec, parse_sweep};
use tessera_orchestrator::actors::writer::FlushPolicy;
use tessera_orchestrator::cluster::ClusterError;
use tessera_orchestrator::cluster::agent::{AgentOptions, run_worker};
use tessera_orchestrator::cluster::client::{Connection, ask};
use tessera_orchestrator::cluster::node::{TlsFiles, hostname};
use tessera_orchestrator::cluster::serve::{ServeOptions, serve};
use tessera_orchestrator::cluster::wire::{Request, WorkerInfo};
use tessera_orchestrator::lake::Location;
use tessera_orchestrator::metrics::Role;
use tessera_orchestrator::plot::{ImageFormat, plot_run};
use tessera_orchestrator::report::{Format, build_overview, build_report, is_run_dir};
use tessera_orchestrator::run::{RunOptions, default_out, latest_run, run_sweep};
use tessera_orchestrator::{Progress, RunError};
use tokio::sync::watch;

/// Tessera: hyperparameter sweeps and distributed training, recorded in Parquet.
///
/// Write a sweep in YAML (see configs/quickstart.yaml and `tessera schema`), run it with
/// `tessera run`, read the results with `tessera report` or any Parquet reader.
#[derive(Parser)]
#[command(name = "tessera", version, about, long_about)]
struct Cli {
    /// More log output (-v: info, -vv: debug). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log format on stderr: `text` for people, `json` (one object per line) for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The sweep file.
    sweep: PathBuf,
    /// Run directory: journal and spec, and the Parquet unless it goes to S3 (default:
    /// runs/<name>-<timestamp>, under the sweep's `results:` if that is a directory).
    /// `--out s3://BUCKET/PREFIX` means `--results s3://BUCKET/PREFIX`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the results go: a directory (run directories are made in it) or
    /// s3://BUCKET/PREFIX (Parquet under PREFIX/sweep=<run id>/; the journal stays in the
    /// local run directory). Overrides the sweep's `results:`.
    #[arg(long)]
    results: Option<String>,
    /// In-process workers, one trial each at a time (default: number of cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    workers: Option<u64>,
    /// Continue the run in --out (or the newest run of this sweep) after a crash or kill.
    #[arg(long)]
    resume: bool,
    /// Leaderboard rows printed at the end.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464) at /metrics.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Keep serving /metrics this many seconds after the sweep ends (for a last scrape).
    #[arg(long, default_value_t = 0)]
    metrics_linger: u64,
    /// Write a Parquet part after this many finished trials (tests use small values).
    #[arg(long, hide = true)]
    flush_trials: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Where trials train.
#[derive(clap::Args)]
struct DeviceArgs {
    /// The device: `cpu`, or `cuda:N` for GPU N (needs a build with `--features tch`).
    #[arg(long, env = "TESSERA_DEVICE", default_value = "cpu")]
    device: String,
    /// The Burn backend: `flex` (pure Rust, the default on the CPU) or `libtorch` (the
    /// default for CUDA; needs a build with `--features tch`).
    #[arg(long, env = "TESSERA_BACKEND")]
    backend: Option<String>,
}

/// The executor for `d`, with `slots` trials at once; a clear error for a device this
/// build or machine lacks.
#[cfg(feature = "worker")]
fn executor_on(
    d: &DeviceArgs,
    slots: u32,
    ring: (&str, Option<&str>),
) -> Result<(Arc<dyn TrialExecutor>, tessera_worker::device::Selected), Failure> {
    use tessera_worker::device::{Backend, compiled_backends, select};
    let backend = match &d.backend {
        None => None,
        Some(b) => Some(Backend::parse(b).ok_or_else(|| {
            let built: Vec<&str> = compiled_backends().iter().map(Backend::as_str).collect();
            Failure::Input(BadInput(format!(
                "unknown backend `{b}`: this build has {}",
                built.join(", ")
            )))
        })?),
    };
    let selected = select(backend, &d.device, slots).map_err(|e| Failure::Input(BadInput(e)))?;
    // Replicas of data-parallel trials meet their rings here.
    let (bind, advertise) = ring;
    let hub = tessera_worker::collective::RingHub::bind(bind, advertise).map_err(|e| {
        Failure::Input(BadInput(format!(
            "cannot listen for data-parallel rings on {bind}: {e}; pick another --ring-bind"
        )))
    })?;
    // Registered datasets' files come from local folders or S3.
    let fetch = Arc::new(tessera_orchestrator::lake::StoreFetch::new(
        tokio::runtime::Handle::current(),
    ));
    let executor: Arc<dyn TrialExecutor> = Arc::new(
        tessera_worker::BurnExecutor::on(&selected)
            .with_ring(hub)
            .with_fetch(fetch),
    );
    Ok((executor, selected))
}

/// How this node proves it belongs to the cluster.
#[derive(clap::Args, Clone)]
struct SecurityArgs {
    /// File holding the cluster's shared secret (default: the TESSERA_SECRET environment
    /// variable). Every node needs the same secret; there is deliberately no flag for
    /// the secret itself, because `ps` shows command lines to every user.
    #[arg(long, env = "TESSERA_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// TLS between nodes: this node's certificate (PEM). Needs --tls-key and --tls-ca.
    #[arg(long, env = "TESSERA_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// TLS: this node's private key (PEM).
    #[arg(long, env = "TESSERA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// TLS: the CA that signed every node's certificate (PEM); peers must present one.
    #[arg(long, env = "TESSERA_TLS_CA", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// TLS: the name in the coordinator's certificate (workers and clients check it).
    #[arg(
        long,
        env = "TESSERA_TLS_SERVER_NAME",
        default_value = "tessera-coordinator"
    )]
    tls_server_name: String,
}

impl SecurityArgs {
    fn secret(&self) -> Result<String, Failure> {
        tessera_orchestrator::cluster::node::read_secret(self.secret_file.as_deref())
            .map_err(|e| Failure::Input(BadInput(e.to_string())))
    }

    fn tls(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
                server_name: self.tls_server_name.clone(),
            }),
            _ => None,
        }
    }
}

/// Where the coordinator is, for clients.
#[derive(clap::Args, Clone)]
struct ClientArgs {
    /// The coordinator's address (`tessera serve --listen`).
    #[arg(long, env = "TESSERA_COORDINATOR", default_value = "127.0.0.1:7946")]
    coordinator: String,
    #[command(flatten)]
    security: SecurityArgs,
}

impl ClientArgs {
    fn connection(&self) -> Result<Connection, Failure> {
        Ok(Connection {
            coordinator: self.coordinator.clone(),
            secret: self.security.secret()?,
            tls: self.security.tls(),
        })
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on for workers and clients.
    #[arg(long, default_value = "0.0.0.0:7946")]
    listen: std::net::SocketAddr,
    /// The coordinator's state: the list of submitted sweeps (resumed on restart).
    #[arg(long, default_value = "tessera-state")]
    state: PathBuf,
    /// Where results go: a directory for run directories, or s3://BUCKET/PREFIX for the
    /// Parquet (journals then stay in STATE/runs). Default: STATE/runs.
    #[arg(long)]
    results: Option<String>,
    /// Seconds without a heartbeat before a worker is declared lost and its trials are
    /// queued again (workers beat four times per timeout).
    #[arg(long, default_value_t = 5.0)]
    heartbeat_timeout: f64,
    /// Serve Prometheus metrics on this address at /metrics.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    security: SecurityArgs,
    /// Write a Parquet part after this many finished trials (tests use small values).
    #[arg(long, hide = true)]
    flush_trials: Option<usize>,
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// The coordinator's address.
    #[arg(long, env = "TESSERA_COORDINATOR", value_name = "HOST:PORT")]
    join: String,
    /// Trials this node runs at once (default: number of cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    slots: Option<u32>,
    /// GPU indices this node offers, e.g. 0,1 (default: none).
    #[arg(long, value_delimiter = ',')]
    gpus: Vec<u32>,
    /// Its name in the cluster and in the results (default: HOST-PID).
    #[arg(long)]
    name: Option<String>,
    /// Serve Prometheus metrics on this address at /metrics.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Where replicas of data-parallel trials (`resources.workers` > 1) on this node
    /// listen for their ring neighbours (port 0: any free port).
    #[arg(
        long,
        env = "TESSERA_RING_BIND",
        default_value = "0.0.0.0:0",
        value_name = "HOST:PORT"
    )]
    ring_bind: String,
    /// The host other workers reach this node's ring port at (default: the bound host,
    /// or this node's hostname when bound to every interface).
    #[arg(long, env = "TESSERA_RING_ADVERTISE", value_name = "HOST")]
    ring_advertise: Option<String>,
    #[command(flatten)]
    security: SecurityArgs,
    /// Speak another protocol version (tests of the version check).
    #[arg(long, hide = true)]
    protocol_version: Option<u32>,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Shard SOURCE (Parquet with a `label` column) into LOCATION/NAME/.
    Add {
        /// The dataset's name (its folder under --to).
        name: String,
        /// The Parquet table.
        source: PathBuf,
        /// Training shards (at least the most workers one trial will train on).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=65536))]
        shards: u32,
        /// Where datasets live: a folder or s3://BUCKET/PREFIX.
        #[arg(long, default_value = "datasets")]
        to: String,
        /// Share of rows held out for validation (stratified by class).
        #[arg(long, default_value_t = 0.2)]
        validation_fraction: f64,
        /// Seed of that split.
        #[arg(long, default_value_t = 0)]
        split_seed: u64,
    },
    /// Print a registered dataset's manifest: shards, rows, checksums.
    Show {
        /// The dataset's folder: LOCATION/NAME or s3://BUCKET/PREFIX/NAME.
        location: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a sweep in this process: a coordinator and N workers, with a progress bar.
    ///
    /// Results go to DIR (default runs/<name>-<timestamp>/): sweep.yaml, journal.jsonl,
    /// trials/*.parquet (one row per trial), metrics/*.parquet (one row per reported
    /// value). Kill it at any moment and rerun with --resume to continue where it stopped.
    #[command(
        after_help = "Exit status: 0 done, 1 the sweep failed, 2 bad input (file, line and column are printed).\n\nExample:\n  tessera run configs/quickstart.yaml --workers 2"
    )]
    Run(RunArgs),
    /// Summarise a run: leaderboard and each hyperparameter's effect.
    ///
    /// Give a run directory; a folder of run directories or an s3://BUCKET/PREFIX results
    /// location for one line per sweep; or, with --coordinator, a sweep id or name on a
    /// running coordinator.
    Report {
        /// A run directory, a folder of runs, s3://BUCKET/PREFIX, or (with --coordinator)
        /// a sweep id or name.
        run: String,
        /// Leaderboard rows.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// `table` for people; `csv` (the leaderboard) or `json` (everything) for scripts.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Ask this coordinator instead of reading a directory.
        #[arg(long, env = "TESSERA_COORDINATOR")]
        coordinator: Option<String>,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Draw a run's figures: learning curves of the best trials, the objective against
    /// each hyperparameter, parallel coordinates of the best trials.
    #[command(
        after_help = "Example:\n  tessera plot runs/digits-mlp-20261129-104912        # PNG and SVG into RUN/plots/"
    )]
    Plot {
        /// The run directory (its Parquet may be on S3).
        run: PathBuf,
        /// Where the images go (default: RUN/plots).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Trials in the learning curves (at most 10 drawn) and parallel coordinates.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Image formats (repeat or comma-separate).
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ImageFormat::Png, ImageFormat::Svg])]
        format: Vec<ImageFormat>,
    },
    /// Run the coordinator as a service: workers join it, clients submit sweeps to it.
    ///
    /// Sweeps survive a restart: start it again on the same --state and every
    /// unfinished sweep resumes; workers reconnect by themselves.
    #[command(
        after_help = "Example:\n  export TESSERA_SECRET=$(openssl rand -hex 16)   # the same on every node\n  tessera serve --listen 0.0.0.0:7946 --state /var/lib/tessera"
    )]
    Serve(ServeArgs),
    /// Run a worker node: join a coordinator and train the trials it sends.
    #[command(
        after_help = "Example:\n  TESSERA_SECRET=… tessera worker --join coordinator:7946 --slots 4"
    )]
    Worker(WorkerArgs),
    /// Submit a sweep file to a running coordinator.
    Submit {
        /// The sweep file (validated here first).
        sweep: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a coordinator's sweeps and workers.
    Status {
        /// One sweep (id or name).
        sweep: Option<String>,
        /// JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a sweep on a running coordinator (finished trials are kept).
    Cancel {
        /// The sweep (id or name).
        sweep: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Check a sweep file without running it.
    Validate {
        /// The sweep file.
        sweep: PathBuf,
    },
    /// Register a dataset: cut a Parquet table once into training shards and a
    /// validation file, with a manifest (row counts, SHA-256s, schema, statistics).
    ///
    /// A sweep names the dataset's folder as its `dataset.path`; each replica of a
    /// data-parallel trial then fetches only its shards, checks them and caches them.
    #[command(after_help = "Examples:
  tessera dataset add digits experiments/data/digits/digits.parquet --shards 4 --to datasets/
  tessera dataset add digits digits.parquet --shards 8 --to s3://bucket/datasets
  tessera dataset show datasets/digits")]
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
    /// Print the JSON Schema of sweep files (for editors' YAML validation).
    Schema,
    /// List the training programs and the hyperparameters and metrics of each.
    Programs,
}

fn executor() -> Option<Arc<dyn TrialExecutor>> {
    #[cfg(feature = "worker")]
    {
        Some(Arc::new(tessera_worker::BurnExecutor::default()))
    }
    #[cfg(not(feature = "worker"))]
    {
        None
    }
}

fn programs() -> Vec<ProgramInfo> {
    executor().map(|e| e.programs()).unwrap_or_default()
}

/// `print!` that ignores a closed stdout (`tessera report … | head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// `println!` that ignores a closed stdout.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// A user error: printed as is, exit status 2.
struct BadInput(String);

async fn cmd_dataset(command: DatasetCommand) -> Result<(), Failure> {
    use tessera_orchestrator::lake::{Location, ObjectStore};
    let bad = |m: String| Failure::Input(BadInput(m));
    match command {
        DatasetCommand::Add {
            name,
            source,
            shards,
            to,
            validation_fraction,
            split_seed,
        } => {
            #[cfg(feature = "worker")]
            {
                if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                    return Err(bad(format!(
                        "`{name}` is not a dataset name: use letters, digits, - _ ."
                    )));
                }
                let (manifest, files) = tessera_worker::datasets::register(
                    &name,
                    &source,
                    shards as usize,
                    validation_fraction,
                    split_seed,
                )
                .map_err(|e| bad(format!("{}: {e}", source.display())))?;
                let loc = Location::parse(&to)
                    .map_err(|e| bad(e.to_string()))?
                    .join(&name);
                tessera_orchestrator::datasets::publish(&loc, &manifest, files)
                    .await
                    .map_err(Failure::Run)?;
                outln!(
                    "registered {name}: {} training rows in {} shards, {} validation rows, at {loc}",
                    manifest.train_rows(),
                    manifest.shards.len(),
                    manifest.validation.rows
                );
                outln!("use it in a sweep: dataset: {{ path: {loc} }}");
                Ok(())
            }
            #[cfg(not(feature = "worker"))]
            {
                let _ = (name, source, shards, to, validation_fraction, split_seed);
                Err(bad("this tessera was built without the worker (feature `worker`), which reads datasets; use a full build".into()))
            }
        }
        DatasetCommand::Show { location } => {
            let loc = Location::parse(&location).map_err(|e| bad(e.to_string()))?;
            let store = ObjectStore::open(&loc)
                .await
                .map_err(|e| Failure::Run(e.to_string()))?;
            let bytes = store.get(tessera_core::shards::MANIFEST).await.map_err(|e| {
                bad(format!(
                    "{location} is not a registered dataset ({e}); register one with `tessera dataset add`"
                ))
            })?;
            let m: tessera_core::shards::Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| bad(format!("{location}/manifest.json: {e}")))?;
            outln!(
                "dataset {} (from {}): {} features, {} classes, validation {:.0} % (seed {})",
                m.name,
                m.source,
                m.features.len(),
                m.classes,
                m.validation_fraction * 100.0,
                m.split_seed
            );
            outln!("  {:<20} {:>8} {:>10}  sha256", "file", "rows", "bytes");
            for f in m.shards.iter().chain([&m.validation]) {
                outln!(
                    "  {:<20} {:>8} {:>10}  {}",
                    f.file,
                    f.rows,
                    f.bytes,
                    f.sha256
                );
            }
            Ok(())
        }
    }
}

fn load(path: &Path) -> Result<(SweepSpec, String), BadInput> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BadInput(format!("{}: cannot read the sweep file: {e}\n  help: check the path; example sweeps are in configs/", path.display()))
    })?;
    let file = path.display().to_string();
    let spec = parse_sweep(&file, &text).map_err(|e| BadInput(e.to_string()))?;
    let programs = programs();
    if !programs.is_empty() {
        check_program(&spec, &programs)
            .map_err(|p| BadInput(p.locate(&file, &text).to_string()))?;
    }
    if let Some(d) = spec
        .dataset
        .as_ref()
        .filter(|d| !d.path.starts_with("s3://"))
    {
        let base = path.parent().unwrap_or(Path::new("."));
        let manifest = base.join(&d.path).join(tessera_core::shards::MANIFEST);
        if manifest.is_file() {
            // A registered dataset: its manifest must be usable and shard it finely enough.
            let problem = |message: String, help: &str| {
                BadInput(
                    tessera_core::spec::Problem::new(&["dataset", "path"], message, help)
                        .locate(&file, &text)
                        .to_string(),
                )
            };
            let m: tessera_core::shards::Manifest = std::fs::read(&manifest)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                .and_then(|m: tessera_core::shards::Manifest| m.check().map(|()| m))
                .map_err(|e| {
                    problem(
                        format!("{}: {e}", manifest.display()),
                        "register the dataset again with `tessera dataset add`",
                    )
                })?;
            if (m.shards.len() as u32) < spec.workers {
                return Err(problem(
                    format!(
                        "dataset `{}` has {} shards but resources.workers is {}",
                        m.name,
                        m.shards.len(),
                        spec.workers
                    ),
                    "register it with at least one shard per worker (`tessera dataset add --shards N`)",
                ));
            }
        } else if !base.join(&d.path).is_file() {
            let shown = if base.as_os_str().is_empty() {
                "."
            } else {
                base.to_str().unwrap_or(".")
            };
            let p = tessera_core::spec::Problem::new(
                &["dataset", "path"],
                format!("dataset file `{}` does not exist", d.path),
                format!(
                    "give a Parquet file or a registered dataset's folder; paths are relative to the sweep file's folder ({shown})"
                ),
            );
            return Err(BadInput(p.locate(&file, &text).to_string()));
        }
    }
    Ok((spec, text))
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} trials · {msg} · ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn describe(p: &Progress, metric: &str) -> String {
    let best = p.best.map_or("best -".to_owned(), |(id, v)| {
        format!("best {metric} {v:.4} (trial {id})")
    });
    format!(
        "{} running · {} stopped early · {} failed · {best}",
        p.running, p.stopped, p.failed
    )
}

async fn cmd_run(args: RunArgs) -> Result<(), Failure> {
    let RunArgs {
        sweep,
        out,
        results,
        workers,
        resume,
        top,
        quiet,
        metrics_addr,
        metrics_linger,
        flush_trials,
        device,
    } = args;
    let (spec, source) = load(&sweep).map_err(Failure::Input)?;
    let seed_drawn = spec.seed.is_none();
    #[cfg(feature = "worker")]
    let executor = {
        let slots = workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            |w| w as u32,
        );
        executor_on(&device, slots, ("127.0.0.1:0", None))?.0
    };
    #[cfg(not(feature = "worker"))]
    let executor: Arc<dyn TrialExecutor> = {
        let _ = device;
        return Err(Failure::Input(BadInput("this tessera was built without the embedded worker (feature `worker`); use a full build".into())));
    };
    // `--out s3://…` names where the results go, like `--results s3://…`: the journal
    // needs a local disk and stays in runs/.
    let (out, results) = match out {
        Some(o) if o.to_string_lossy().starts_with("s3://") => {
            (None, Some(o.to_string_lossy().into_owned()))
        }
        o => (o, results),
    };
    let results = match results.or_else(|| spec.results.clone()) {
        Some(r) => Some(Location::parse(&r).map_err(|e| Failure::Input(BadInput(e.to_string())))?),
        None => None,
    };
    // Run directories go under a local `results`; with S3 results they stay in runs/.
    let (parent, results) = match results {
        Some(Location::Local(p)) => (p.display().to_string(), None),
        Some(s3) => ("runs".to_owned(), Some(s3)),
        None => ("runs".to_owned(), None),
    };
    let out = match (out, resume) {
        (Some(o), _) => o,
        (None, true) => {
            let base = PathBuf::from(&parent);
            latest_run(&base, &spec.name).ok_or_else(|| {
                Failure::Input(BadInput(format!(
                    "no run of `{}` under {} to resume; pass --out DIR",
                    spec.name,
                    base.display()
                )))
            })?
        }
        (None, false) => default_out(Some(&parent), &spec.name),
    };
    let workers = workers
        .map(|w| w as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let base_dir = sweep.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    };
    let (tx, mut rx) = watch::channel(Progress::default());
    let metric = spec.objective.metric.clone();
    let name = spec.name.clone();
    if !quiet {
        eprintln!(
            "tessera: sweep {name} ({} trials, {workers} workers) → {}",
            spec.trials,
            out.display()
        );
    }
    if let Some(addr) = metrics_addr {
        let bound = tessera_orchestrator::metrics::serve(addr, Role::Coordinator)
            .await
            .map_err(|e| {
                Failure::Input(BadInput(format!(
                    "cannot serve metrics on {addr}: {e}; pick a free address with --metrics-addr"
                )))
            })?;
        if !quiet {
            eprintln!("tessera: metrics at http://{bound}/metrics");
        }
    }
    let bar = progress_bar(spec.trials, quiet);
    bar.set_message("starting");
    let ui = {
        let bar = bar.clone();
        let metric = metric.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let p = rx.borrow_and_update().clone();
                bar.set_length(p.total);
                bar.set_position(p.done());
                bar.set_message(describe(&p, &metric));
            }
        })
    };
    let mut flush = FlushPolicy::default();
    if let Some(n) = flush_trials {
        flush.max_trials = n.max(1);
    }
    let opts = RunOptions {
        spec,
        source,
        base_dir,
        out: out.clone(),
        results,
        workers,
        resume,
        executor,
        progress: Some(tx),
        flush,
    };
    let result = run_sweep(opts).await;
    if metrics_linger > 0 && metrics_addr.is_some() {
        tokio::time::sleep(Duration::from_secs(metrics_linger)).await;
    }
    ui.abort();
    bar.finish_and_clear();
    let result = result.map_err(|e| match e {
        RunError::Usage(m) => Failure::Input(BadInput(m)),
        other => Failure::Run(other.to_string()),
    })?;
    let p = &result.progress;
    if !quiet {
        eprintln!(
            "tessera: done: {} finished, {} stopped early, {} failed ({} retried attempts), {} training steps",
            p.finished, p.stopped, p.failed, p.retries, result.total_steps
        );
    }
    if seed_drawn && !quiet {
        eprintln!(
            "tessera: the sweep file has no seed; this run drew seed {0} (add `seed: {0}` to repeat it)",
            result.seed
        );
    }
    let report = build_report(&out, top)
        .await
        .map_err(|e| Failure::Run(e.to_string()))?;
    out!("{}", report.render());
    outln!("\nresults: {}  (tessera report {0})", out.display());
    if p.failed > 0 {
        // Like Ray Tune: a sweep with failed trials is not a success, for scripts and CI.
        return Err(Failure::Run(format!(
            "{} of {} trials failed; their errors are in the `error` column (tessera report {})",
            p.failed,
            p.total,
            out.display()
        )));
    }
    Ok(())
}

enum Failure {
    Input(BadInput),
    Run(String),
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Run(format!("cannot start the runtime: {e}")))
}

fn cluster_failure(e: ClusterError) -> Failure {
    match e {
        ClusterError::Usage(m) => Failure::Input(BadInput(m)),
        other => Failure::Run(other.to_string()),
    }
}

async fn serve_metrics(addr: Option<std::net::SocketAddr>, role: Role) -> Result<(), Failure> {
    if let Some(addr) = addr {
        let bound = tessera_orchestrator::metrics::serve(addr, role)
            .await
            .map_err(|e| {
                Failure::Input(BadInput(format!(
                    "cannot serve metrics on {addr}: {e}; pick a free address with --metrics-addr"
                )))
            })?;
        eprintln!("tessera: metrics at http://{bound}/metrics");
    }
    Ok(())
}

async fn cmd_serve(args: ServeArgs) -> Result<(), Failure> {
    let secret = args.security.secret()?;
    serve_metrics(args.metrics_addr, Role::Coordinator).await?;
    if !(args.heartbeat_timeout.is_finite() && args.heartbeat_timeout > 0.0) {
        return Err(Failure::Input(BadInput(
            "--heartbeat-timeout must be a positive number of seconds".into(),
        )));
    }
    let mut flush = FlushPolicy::default();
    if let Some(n) = args.flush_trials {
        flush.max_trials = n.max(1);
    }
    let results = match args.results {
        Some(r) => Location::parse(&r).map_err(|e| Failure::Input(BadInput(e.to_string())))?,
        None => Location::Local(args.state.join("runs")),
    };
    serve(ServeOptions {
        listen: args.listen,
        state: args.state,
        results,
        secret,
        tls: args.security.tls(),
        heartbeat_timeout: Duration::from_secs_f64(args.heartbeat_timeout),
        flush,
        programs: programs(),
    })
    .await
    .map_err(cluster_failure)
}

async fn cmd_worker(args: WorkerArgs) -> Result<(), Failure> {
    let slots = args
        .slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    #[cfg(feature = "worker")]
    let (executor, backend, device_gpus) = {
        // Advertise the bound host, or this node's name when bound to every interface.
        let host = args.ring_bind.rsplit_once(':').map_or("", |(h, _)| h);
        let advertise = args
            .ring_advertise
            .clone()
            .or_else(|| matches!(host, "0.0.0.0" | "[::]" | "").then(hostname));
        let (e, s) = executor_on(
            &args.device,
            slots,
            (args.ring_bind.as_str(), advertise.as_deref()),
        )?;
        (e, s.backend.as_str().to_owned(), s.gpus)
    };
    #[cfg(not(feature = "worker"))]
    let (executor, backend, device_gpus): (Arc<dyn TrialExecutor>, String, Vec<u32>) = {
        return Err(Failure::Input(BadInput(
            "this tessera was built without the worker (feature `worker`); use a full build".into(),
        )));
    };
    if let Some(v) = args.protocol_version {
        tessera_orchestrator::cluster::wire::speak_version(v);
    }
    let secret = args.security.secret()?;
    serve_metrics(args.metrics_addr, Role::Worker).await?;
    let name = args
        .name
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    let info = WorkerInfo {
        programs: executor
            .programs()
            .into_iter()
            .map(|p| p.name.to_owned())
            .collect(),
        name: name.clone(),
        slots,
        // The GPUs it offers: --gpus, else the CUDA device it trains on.
        gpus: if args.gpus.is_empty() {
            device_gpus
        } else {
            args.gpus
        },
        backend,
        memory_bytes,
        instance: tessera_core::rng::mix64(
            tessera_orchestrator::actors::now_ms() as u64 ^ u64::from(std::process::id()),
        ),
        ring: executor.ring_address(),
    };
    eprintln!(
        "tessera: worker {name} ({slots} slots, {} on {}) joining {}",
        info.backend, args.device.device, args.join
    );
    run_worker(AgentOptions {
        connection: Connection {
            coordinator: args.join,
            secret,
            tls: args.security.tls(),
        },
        info,
        executor,
    })
    .await
    .map_err(cluster_failure)
}

async fn cmd_ask(client: ClientArgs, request: Request) -> Result<(), Failure> {
    let conn = client.connection()?;
    match ask(&conn, request, Duration::from_secs(60))
        .await
        .map_err(cluster_failure)?
    {
        Ok(text) => {
            out!("{text}");
            Ok(())
        }
        Err((2, m)) => Err(Failure::Input(BadInput(m))),
        Err((_, m)) => Err(Failure::Run(m)),
    }
}

fn init_logging(verbose: u8, format: LogFormat) {
    // ractor_cluster logs every closed session as a warning; ours say what matters.
    let default = match verbose {
        0 => "warn,ractor_cluster=error,ractor=error,aws_config=error",
        1 => "info,ractor_cluster=error,ractor=error,aws_config=error",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let builder = builder.with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    let result: Result<(), Failure> = match cli.command {
        Command::Dataset { command } => runtime().and_then(|rt| rt.block_on(cmd_dataset(command))),
        Command::Schema => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&tessera_core::spec::json_schema())
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::Programs => {
            for p in programs() {
                outln!("{}: {}", p.name, p.description);
                outln!("  reports: {}", p.metrics.join(", "));
                for h in &p.params {
                    let default = h
                        .default
                        .as_ref()
                        .map_or(String::new(), |d| format!(" (default {d})"));
                    outln!(
                        "  {:<14} {:<6} {}{default}",
                        h.name,
                        format!("{:?}", h.kind).to_lowercase(),
                        h.help
                    );
                }
                outln!();
            }
            Ok(())
        }
        Command::Validate { sweep } => load(&sweep)
            .map(|(spec, _)| {
                outln!(
                    "{}: ok ({} sweep of {} trials, program {})",
                    sweep.display(),
                    spec.kind.as_str(),
                    spec.trials,
                    spec.program
                );
            })
            .map_err(Failure::Input),
        Command::Report {
            run,
            top,
            format,
            coordinator: None,
            ..
        } => runtime().and_then(|rt| {
            let bad = |e: &dyn std::fmt::Display| Failure::Input(BadInput(e.to_string()));
            if run.starts_with("s3://") || !is_run_dir(Path::new(&run)) {
                // A results location with many sweeps: one line each.
                let loc = Location::parse(&run).map_err(|e| bad(&e))?;
                let t = rt.block_on(build_overview(&loc)).map_err(|e| bad(&e))?;
                match format {
                    Format::Table => out!("{}", t.render()),
                    Format::Csv => out!("{}", t.to_csv()),
                    Format::Json => outln!(
                        "{}",
                        serde_json::to_string_pretty(&t.to_json_rows()).unwrap_or_default()
                    ),
                }
                return Ok(());
            }
            let r = rt
                .block_on(build_report(Path::new(&run), top))
                .map_err(|e| bad(&e))?;
            out!("{}", r.render_as(format));
            Ok(())
        }),
        Command::Report {
            run,
            top,
            format,
            coordinator: Some(coordinator),
            security,
        } => runtime().and_then(|rt| {
            rt.block_on(cmd_ask(
                ClientArgs {
                    coordinator,
                    security,
                },
                Request::Report {
                    sweep: run,
                    top,
                    format,
                },
            ))
        }),
        Command::Plot {
            run,
            out,
            top,
            format,
        } => runtime().and_then(|rt| {
            let dir = out.unwrap_or_else(|| run.join("plots"));
            match rt.block_on(plot_run(&run, &dir, top, &format)) {
                Ok(files) => {
                    for f in files {
                        outln!("{}", f.display());
                    }
                    Ok(())
                }
                Err(e) => Err(Failure::Input(BadInput(e.to_string()))),
            }
        }),
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(cmd_serve(args))),
        Command::Worker(args) => runtime().and_then(|rt| rt.block_on(cmd_worker(args))),
        Command::Submit { sweep, client } => runtime().and_then(|rt| {
            let (_, source) = load(&sweep).map_err(Failure::Input)?;
            let base = sweep
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let base_dir = std::fs::canonicalize(base)
                .unwrap_or_else(|_| base.to_owned())
                .display()
                .to_string();
            rt.block_on(cmd_ask(
                client,
                Request::Submit {
                    file: sweep.display().to_string(),
                    source,
                    base_dir,
                },
            ))
        }),
        Command::Status {
            sweep,
            json,
            client,
        } => runtime().and_then(|rt| rt.block_on(cmd_ask(client, Request::Status { sweep, json }))),
        Command::Cancel { sweep, client } => {
            runtime().and_then(|rt| rt.block_on(cmd_ask(client, Request::Cancel { sweep })))
        }
        Command::Run(args) => runtime().and_then(|rt| rt.block_on(cmd_run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(BadInput(m))) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Run(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}
