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
use tessera_orchestrator::report::build_report;
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
    #[command(subcommand)]
    command: Command,
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
    Run {
        /// The sweep file.
        sweep: PathBuf,
        /// Run directory (default: runs/<name>-<timestamp>, or the sweep's `results:`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// In-process workers, one trial each at a time (default: number of cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Continue the run in --out (or the newest run of this sweep) after a crash or kill.
        #[arg(long)]
        resume: bool,
        /// Leaderboard rows printed at the end.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Write a Parquet part after this many finished trials (tests use small values).
        #[arg(long, hide = true)]
        flush_trials: Option<usize>,
    },
    /// Summarise a run directory: leaderboard and each hyperparameter's effect.
    Report {
        /// The run directory `tessera run` wrote.
        dir: PathBuf,
        /// Leaderboard rows.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Check a sweep file without running it.
    Validate {
        /// The sweep file.
        sweep: PathBuf,
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

/// A user error: printed as is, exit status 2.
struct BadInput(String);

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

async fn cmd_run(
    sweep: PathBuf,
    out: Option<PathBuf>,
    workers: Option<usize>,
    resume: bool,
    top: usize,
    quiet: bool,
    flush_trials: Option<usize>,
) -> Result<(), Failure> {
    let (spec, source) = load(&sweep).map_err(Failure::Input)?;
    let Some(executor) = executor() else {
        return Err(Failure::Input(BadInput("this tessera was built without the embedded worker (feature `worker`); use a full build".into())));
    };
    let out = match (out, resume) {
        (Some(o), _) => o,
        (None, true) => {
            let base = PathBuf::from(spec.results.clone().unwrap_or_else(|| "runs".into()));
            latest_run(&base, &spec.name).ok_or_else(|| {
                Failure::Input(BadInput(format!(
                    "no run of `{}` under {} to resume; pass --out DIR",
                    spec.name,
                    base.display()
                )))
            })?
        }
        (None, false) => default_out(spec.results.as_deref(), &spec.name),
    };
    let workers =
        workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
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
        workers,
        resume,
        executor,
        progress: Some(tx),
        flush,
    };
    let result = run_sweep(opts).await;
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
    let report = build_report(&out, top).map_err(|e| Failure::Run(e.to_string()))?;
    print!("{}", report.render());
    println!("\nresults: {}  (tessera report {0})", out.display());
    Ok(())
}

enum Failure {
    Input(BadInput),
    Run(String),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result: Result<(), Failure> = match cli.command {
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&tessera_core::spec::json_schema())
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::Programs => {
            for p in programs() {
                println!("{}: {}", p.name, p.description);
                println!("  reports: {}", p.metrics.join(", "));
                for h in &p.params {
                    let default = h
                        .default
                        .as_ref()
                        .map_or(String::new(), |d| format!(" (default {d})"));
                    println!(
                        "  {:<14} {:<6} {}{default}",
                        h.name,
                        format!("{:?}", h.kind).to_lowercase(),
                        h.help
                    );
                }
                println!();
            }
            Ok(())
        }
        Command::Validate { sweep } => load(&sweep)
            .map(|(spec, _)| {
                println!(
                    "{}: ok ({} sweep of {} trials, program {})",
                    sweep.display(),
                    spec.kind.as_str(),
                    spec.trials,
                    spec.program
                );
            })
            .map_err(Failure::Input),
        Command::Report { dir, top } => match build_report(&dir, top) {
            Ok(r) => {
                print!("{}", r.render());
                Ok(())
            }
            Err(e) => Err(Failure::Input(BadInput(e.to_string()))),
        },
        Command::Run {
            sweep,
            out,
            workers,
            resume,
            top,
            quiet,
            flush_trials,
        } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            runtime.block_on(cmd_run(
                sweep,
                out,
                workers,
                resume,
                top,
                quiet,
                flush_trials,
            ))
        }
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
