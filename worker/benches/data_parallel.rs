//! Data-parallel scaling on this machine: the same MLP trained by K = 1, 2 and 4 replica
//! *processes* joined by the TCP ring, over the same shards and global batch.
//!
//! Prints, for each K (and M, the batches per exchange): samples per second, time per
//! batch, time per batch spent in the all-reduce (waiting for the slowest replica
//! included), and bytes each replica sends per batch; then what a step's bytes would
//! cost on real links.
//!
//! Run: `cargo bench --profile dev -p tessera-worker --bench data_parallel -- [--width 1024]
//! [--epochs 3] [--batch 256]`. Rows with M = 4 exchange every 4 batches (`sync_every`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use tessera_experiments::data_parallel::{Reducer, Replica, train_mlp_replica};
use tessera_experiments::{Dataset, MlpConfig};
use tessera_worker::collective::{Ring, RingHub};

const SHARDS: usize = 4;

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The ring, timed.
struct Timed {
    ring: Ring,
    spent: Duration,
}

impl Reducer for Timed {
    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<(), String> {
        let t = Instant::now();
        let r = self.ring.all_reduce_sum(values);
        self.spent += t.elapsed();
        r
    }
}

fn config() -> MlpConfig {
    MlpConfig {
        lr: 1e-3,
        width: arg("--width", 1024),
        depth: 2,
        batch_size: arg("--batch", 256),
        epochs: arg("--epochs", 3) as u64,
        sync_every: arg("--sync-every", 1),
        ..MlpConfig::default()
    }
}

/// Joins the ring of replica processes listening on loopback `ports`, by rank.
fn join(rank: usize, ports: &[u16], session: u64) -> Ring {
    let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let hub = RingHub::bind(&peers[rank], None).expect("the replica's port is free");
    hub.join(rank, &peers, session, Duration::from_secs(60), &|| false)
        .expect("the replicas meet")
}

/// One replica process: trains and prints its figures as JSON.
fn replica(rank: usize, ports: &[u16]) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../experiments/data/digits/digits.parquet");
    let split = Dataset::from_parquet(&path).unwrap().split(0.2, 0);
    let world = ports.len();
    let ring = join(rank, ports, 1);
    let mut timed = Timed {
        ring,
        spent: Duration::ZERO,
    };
    let data = Replica::of(&split.train, &split.valid, SHARDS, rank, world);
    let start = Instant::now();
    let out = train_mlp_replica(
        &config(),
        &data,
        3,
        &Device::flex(),
        &mut timed,
        None,
        &mut |_| true,
    )
    .unwrap();
    let wall = start.elapsed().as_secs_f64();
    let samples = split.train.len() as f64 * out.epochs as f64;
    println!(
        "{}",
        serde_json::json!({
            "k": world,
            "sync_every": config().sync_every,
            "rank": rank,
            "samples_per_s": samples / wall,
            "step_ms": wall * 1e3 / out.batches as f64,
            "allreduce_ms": timed.spent.as_secs_f64() * 1e3 / out.batches as f64,
            "bytes_per_step": timed.ring.bytes_sent() as f64 / out.batches as f64,
            "parameters": out.parameters.len(),
            "steps": out.steps,
        })
    );
}

/// One replica process of the exchange alone: `--rounds` all-reduces of `floats` floats.
fn ring_only(rank: usize, ports: &[u16], floats: usize) {
    let mut ring = join(rank, ports, 2);
    let mut v = vec![1.0f32; floats];
    ring.all_reduce(&mut v).unwrap(); // warm-up
    let rounds = arg("--rounds", 20);
    let start = Instant::now();
    for _ in 0..rounds {
        ring.all_reduce(&mut v).unwrap();
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / rounds as f64;
    println!(
        "{}",
        serde_json::json!({ "k": ports.len(), "allreduce_ms": ms })
    );
}

/// Starts one process per rank (`MODE RANK PORTS EXTRA…`), returns each one's JSON line.
fn launch(k: usize, mode: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let args: Vec<String> = std::env::args().collect();
    let ports = free_ports(k);
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // Spawn every replica first: each waits in the ring until all have joined.
    let spawned: Vec<_> = (0..k)
        .map(|rank| {
            Command::new(&args[0])
                .args([mode, &rank.to_string(), &list])
                .args(extra)
                .args(args[1..].iter())
                .stdout(Stdio::piped())
                .spawn()
                .expect("the bench can start itself")
        })
        .collect();
    spawned
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().expect("a replica ran");
            assert!(o.status.success(), "a replica failed");
            let text = String::from_utf8(o.stdout).expect("JSON is UTF-8");
            serde_json::from_str(text.lines().last().unwrap_or("")).expect("a JSON line")
        })
        .collect()
}

fn free_ports(k: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..k)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    for mode in ["--replica", "--ring-only"] {
        if let Some(i) = args.iter().position(|a| a == mode) {
            let rank: usize = args[i + 1].parse().unwrap();
            let ports: Vec<u16> = args[i + 2].split(',').map(|p| p.parse().unwrap()).collect();
            match mode {
                "--replica" => replica(rank, &ports),
                _ => ring_only(rank, &ports, args[i + 3].parse().unwrap()),
            }
            return;
        }
    }
    let cfg = config();
    println!(
        "MLP 64-{w}-{w}-10, global batch {b}, {SHARDS} shards, {e} epochs of the digits training set",
        w = cfg.width,
        b = cfg.batch_size,
        e = cfg.epochs
    );
    // Per batch: with `sync_every` M the replicas exchange once every M batches.
    println!(
        "{:>2} {:>2} {:>10} {:>9} {:>14} {:>16} {:>8}",
        "K", "M", "samples/s", "batch ms", "all-reduce ms", "bytes/batch/rep", "speed-up"
    );
    let mut base = None;
    let mut rows = Vec::new();
    for (k, m) in [(1usize, 1usize), (2, 1), (4, 1), (2, 4), (4, 4)] {
        let outs = launch(k, "--replica", &["--sync-every", &m.to_string()]);
        let r0 = &outs[0];
        let sps = r0["samples_per_s"].as_f64().unwrap_or(0.0);
        let base = *base.get_or_insert(sps);
        println!(
            "{:>2} {:>2} {:>10.0} {:>9.2} {:>14.2} {:>16.0} {:>8.2}",
            k,
            m,
            sps,
            r0["step_ms"].as_f64().unwrap_or(0.0),
            r0["allreduce_ms"].as_f64().unwrap_or(0.0),
            r0["bytes_per_step"].as_f64().unwrap_or(0.0),
            sps / base
        );
        rows.push(r0.clone());
    }
    let params = rows[0]["parameters"].as_f64().unwrap_or(0.0);
    println!(
        "parameters: {params}; gradient per step: {:.2} MB",
        params * 4.0 / 1e6
    );
    let floats = (params as usize + 2).to_string();
    for k in [2usize, 4] {
        let ms = launch(k, "--ring-only", &[&floats]);
        println!(
            "  the exchange alone, K = {k} processes on loopback: {:.2} ms per all-reduce",
            ms[0]["allreduce_ms"].as_f64().unwrap_or(0.0)
        );
    }
    for (link, bytes_per_s) in [
        ("25 Gb/s Ethernet", 25e9 / 8.0),
        ("NVLink 4, 450 GB/s", 450e9),
    ] {
        for k in [8.0f64, 64.0] {
            let bytes = 2.0 * (k - 1.0) / k * params * 4.0;
            println!(
                "  ring all-reduce over {link}, K = {k}: {:.3} ms per step (bandwidth term)",
                bytes / bytes_per_s * 1e3
            );
        }
    }
    println!("{}", serde_json::Value::Array(rows));
}
