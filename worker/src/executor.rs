//! The executor: runs one attempt of a trial on a Burn device.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use tessera_core::Decision;
use tessera_core::program::{ProgramInfo, TrialExecutor, TrialReporter};
use tessera_core::shards::{Fetch, MANIFEST, Manifest, ShardFile, sha256_hex};
use tessera_core::trial::{
    Artifact, ArtifactColumn, DatasetRef, MetricValues, REPLICAS_TABLE, ReplicaRef, TrialAssignment,
};
use tessera_experiments::data_parallel::{
    Alone, CheckpointFile, CheckpointStore, Reducer, Replica, train_mlp_replica,
};
use tessera_experiments::dataset::Standardisation;
use tessera_experiments::{Dataset, EpochMetrics, MlpConfig, OptimizerKind, Split, train_mlp};

use crate::collective::{Ring, RingHub};
use crate::metrics::{SAMPLES_PER_SECOND, STEP_DURATION};
use crate::params::ParamReader;
use crate::programs::{FRACTAL_TILE, METALIC, MLP, NAS, SYNTHETIC, program_infos};

type SplitKey = (PathBuf, u64, u64);

/// Runs trials on one Burn device. Datasets are read once per process and shared by
/// every trial that uses the same file and split.
pub struct BurnExecutor {
    device: Device,
    programs: Vec<ProgramInfo>,
    splits: Mutex<HashMap<SplitKey, Arc<Split>>>,
    ring: Option<Arc<RingHub>>,
    fetch: Arc<dyn Fetch>,
    cache: PathBuf,
}

/// Reads a registered dataset's files from a local folder.
struct LocalFetch;

impl Fetch for LocalFetch {
    fn fetch(&self, location: &str, file: &str) -> Result<Vec<u8>, String> {
        let path = std::path::Path::new(location).join(file);
        std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    fn put(&self, location: &str, file: &str, bytes: Vec<u8>) -> Result<(), String> {
        let path = std::path::Path::new(location).join(file);
        CheckpointFile(path.clone())
            .write(&bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn remove(&self, location: &str, file: &str) -> Result<(), String> {
        let _ = std::fs::remove_file(std::path::Path::new(location).join(file));
        Ok(())
    }
}

/// A data-parallel replica's checkpoints: a file on this worker's disk after every
/// epoch, and (replica 0) a copy beside the sweep's results, so that a retry on workers
/// that hold none (every replica's worker was lost) resumes too. The copy is written on
/// a thread of its own, so training never waits for the store: at most one at a time,
/// at most once a second, and so that copying is busy at most a twentieth of the time.
struct ReplicaCheckpoint {
    local: CheckpointFile,
    shared: Option<SharedCheckpoint>,
}

struct SharedCheckpoint {
    fetch: Arc<dyn Fetch>,
    location: String,
    file: String,
    /// Whether this replica writes it (replica 0; every replica reads it).
    writes: bool,
    /// The copy being written: when it started, and its thread (which says how long it
    /// took).
    copying: Option<(Instant, std::thread::JoinHandle<Duration>)>,
    /// When the last finished copy started, and how long it took.
    last: Option<(Instant, Duration)>,
}

impl SharedCheckpoint {
    /// Waits for the copy being written, if any.
    fn settle(&mut self) {
        if let Some((at, handle)) = self.copying.take() {
            let took = handle.join().unwrap_or_default();
            self.last = Some((at, took));
        }
    }

    fn copy(&mut self, epoch: u64, bytes: &[u8]) {
        if self.copying.as_ref().is_some_and(|(_, h)| !h.is_finished()) {
            return;
        }
        self.settle();
        let due = self
            .last
            .is_none_or(|(at, took)| at.elapsed() >= Duration::from_secs(1).max(took * 20));
        if !due {
            return;
        }
        let (fetch, location, file) =
            (self.fetch.clone(), self.location.clone(), self.file.clone());
        let bytes = bytes.to_vec();
        let handle = std::thread::spawn(move || {
            let t = Instant::now();
            let result = match fetch.put(&location, &file, bytes) {
                Ok(()) => "ok",
                Err(e) => {
                    eprintln!("epoch {epoch}: cannot copy the checkpoint beside the results: {e}");
                    "failed"
                }
            };
            crate::metrics::CHECKPOINT_COPIES
                .with_label_values(&[result])
                .inc();
            t.elapsed()
        });
        self.copying = Some((Instant::now(), handle));
    }
}

impl CheckpointStore for ReplicaCheckpoint {
    fn load(&mut self) -> Vec<Vec<u8>> {
        let mut all = self.local.load();
        if let Some(s) = &self.shared
            && let Ok(bytes) = s.fetch.fetch(&s.location, &s.file)
        {
            all.push(bytes);
        }
        all
    }

    fn save(&mut self, epoch: u64, bytes: &[u8]) {
        self.local.save(epoch, bytes);
        if let Some(s) = self.shared.as_mut().filter(|s| s.writes) {
            s.copy(epoch, bytes);
        }
    }
}

impl ReplicaCheckpoint {
    /// The trial ended: its checkpoints are not needed any more (a copy still being
    /// written is waited for, so that it cannot land after the removal).
    fn remove(self) {
        let _ = std::fs::remove_file(&self.local.0);
        if let Some(mut s) = self.shared.filter(|s| s.writes) {
            s.settle();
            let _ = s.fetch.remove(&s.location, &s.file);
        }
    }
}

/// How long a replica waits for its ring to form, and for a silent neighbour.
const RING_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for BurnExecutor {
    fn default() -> Self {
        Self::new(Device::flex())
    }
}

impl BurnExecutor {
    /// An executor on a selected backend and device (see [`crate::device::select`]).
    pub fn on(selected: &crate::device::Selected) -> Self {
        Self::labelled(
            selected.device.clone(),
            selected.backend.as_str(),
            &selected.label,
        )
    }

    /// An executor training on `device` (Flex on the CPU unless told otherwise: use
    /// [`BurnExecutor::on`] for a selected device).
    pub fn new(device: Device) -> Self {
        Self::labelled(device, "flex", "cpu")
    }

    fn labelled(device: Device, backend: &str, label: &str) -> Self {
        crate::metrics::INFO.reset();
        crate::metrics::INFO
            .with_label_values(&[backend, label, env!("CARGO_PKG_VERSION")])
            .set(1);
        Self {
            device,
            programs: program_infos(),
            splits: Mutex::new(HashMap::new()),
            ring: None,
            fetch: Arc::new(LocalFetch),
            cache: std::env::var_os("TESSERA_CACHE_DIR")
                .map_or_else(|| std::env::temp_dir().join("tessera-cache"), PathBuf::from),
        }
    }

    /// The same executor, fetching registered datasets' files with `fetch` (local
    /// folders and S3). Files and checkpoints are cached under `TESSERA_CACHE_DIR`
    /// (default: the temporary folder's `tessera-cache`).
    pub fn with_fetch(mut self, fetch: Arc<dyn Fetch>) -> Self {
        self.fetch = fetch;
        self
    }

    /// A registered dataset's file, from the local cache when its bytes there still match
    /// the manifest's SHA-256, else fetched, checked and cached.
    fn shard_bytes(&self, d: &DatasetRef, m: &Manifest, f: &ShardFile) -> Result<Vec<u8>, String> {
        let cached = self.cache.join(format!("{}.parquet", f.sha256));
        if let Ok(bytes) = std::fs::read(&cached) {
            if sha256_hex(&bytes) == f.sha256 {
                crate::metrics::SHARD_CACHE
                    .with_label_values(&["hit"])
                    .inc();
                return Ok(bytes);
            }
            // A damaged cache entry: fetch the file again.
            let _ = std::fs::remove_file(&cached);
        }
        crate::metrics::SHARD_CACHE
            .with_label_values(&["miss"])
            .inc();
        let bytes = self.fetch.fetch(&d.path, &f.file).map_err(|e| {
            format!(
                "dataset `{}`: {} is missing or unreadable: {e}",
                m.name, f.file
            )
        })?;
        let got = sha256_hex(&bytes);
        if got != f.sha256 {
            return Err(format!(
                "dataset `{}`: {} is corrupt (SHA-256 {got}, the manifest says {}); register the dataset again with `tessera dataset add`",
                m.name, f.file, f.sha256
            ));
        }
        if std::fs::create_dir_all(&self.cache).is_ok() {
            let tmp = self
                .cache
                .join(format!(".{}.{}", f.sha256, std::process::id()));
            if std::fs::write(&tmp, &bytes).is_ok() {
                let _ = std::fs::rename(&tmp, &cached);
            }
        }
        Ok(bytes)
    }

    /// A registered dataset's manifest, checked.
    fn manifest(&self, d: &DatasetRef) -> Result<Manifest, String> {
        let raw = self.fetch.fetch(&d.path, MANIFEST).map_err(|e| {
            format!(
                "{} is not a registered dataset (no readable {MANIFEST}): {e}",
                d.path
            )
        })?;
        let m: Manifest =
            serde_json::from_slice(&raw).map_err(|e| format!("{}/{MANIFEST}: {e}", d.path))?;
        m.check()
            .map_err(|e| format!("{}/{MANIFEST}: {e}", d.path))?;
        Ok(m)
    }

    /// One file of a registered dataset, fetched (or read from the cache), checked and
    /// standardised with the manifest's statistics.
    fn registered_file(
        &self,
        d: &DatasetRef,
        m: &Manifest,
        f: &ShardFile,
    ) -> Result<Dataset, String> {
        let bytes = self.shard_bytes(d, m, f)?;
        let mut data = Dataset::from_parquet_bytes(&bytes, &f.file).map_err(|e| e.to_string())?;
        if data.n_features != m.features.len() || data.len() != f.rows {
            return Err(format!(
                "dataset `{}`: {} has {} rows of {} features, the manifest says {} of {}",
                m.name,
                f.file,
                data.len(),
                data.n_features,
                f.rows,
                m.features.len()
            ));
        }
        data.n_classes = m.classes;
        Standardisation {
            mean: m.mean.clone(),
            std: m.std.clone(),
        }
        .apply(&mut data);
        Ok(data)
    }

    /// Replica `rank` of `world` of a registered dataset: its training shards and the
    /// validation rows.
    fn registered_replica(
        &self,
        d: &DatasetRef,
        rank: usize,
        world: usize,
    ) -> Result<Replica, String> {
        let m = self.manifest(d)?;
        if m.shards.len() < world {
            return Err(format!(
                "dataset `{}` has {} shards but the trial trains on {world} workers; register it with at least {world} (`tessera dataset add --shards {world}`)",
                m.name,
                m.shards.len()
            ));
        }
        let shards = m
            .shards_of(rank, world)
            .into_iter()
            .map(|i| Ok((i, self.registered_file(d, &m, &m.shards[i])?)))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Replica {
            shards,
            shard_rows: m.shards.iter().map(|s| s.rows).collect(),
            valid: self.registered_file(d, &m, &m.validation)?,
        })
    }

    /// A registered dataset's validation rows alone.
    fn registered_validation(&self, d: &DatasetRef) -> Result<Dataset, String> {
        let m = self.manifest(d)?;
        self.registered_file(d, &m, &m.validation)
    }

    /// The same executor, running replicas of data-parallel trials through `hub`.
    pub fn with_ring(mut self, hub: Arc<RingHub>) -> Self {
        self.ring = Some(hub);
        self
    }

    fn split(&self, d: &DatasetRef) -> Result<Arc<Split>, String> {
        let key = (
            PathBuf::from(&d.path),
            d.validation_fraction.to_bits(),
            d.split_seed,
        );
        if let Some(s) = self.splits.lock().map_err(|e| e.to_string())?.get(&key) {
            return Ok(s.clone());
        }
        let data = Dataset::from_parquet(&key.0).map_err(|e| e.to_string())?;
        let split = Arc::new(data.split(d.validation_fraction, d.split_seed));
        self.splits
            .lock()
            .map_err(|e| e.to_string())?
            .insert(key, split.clone());
        Ok(split)
    }

    fn info(&self, name: &str) -> Result<&ProgramInfo, String> {
        self.programs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("unknown program `{name}`"))
    }

    /// The trial's data: the whole split of a Parquet file, and this replica's shards of
    /// it for a data-parallel attempt; or, for a registered dataset, only this replica's
    /// shards (every shard on one worker) and the validation rows, fetched and checked.
    fn replica_data(
        &self,
        a: &TrialAssignment,
        dataset: &DatasetRef,
    ) -> Result<(Option<Arc<Split>>, Option<Replica>), String> {
        let (rank, world) = rank_of(a);
        if dataset.registered {
            return Ok((None, Some(self.registered_replica(dataset, rank, world)?)));
        }
        let split = self.split(dataset)?;
        let mine = a.replica.as_ref().map(|_| {
            let shards = dataset.shards.max(1) as usize;
            Replica::of(&split.train, &split.valid, shards, rank, world)
        });
        Ok((Some(split), mine))
    }

    /// A data-parallel replica's ring, joined once its data is at hand, before it trains
    /// (giving up if the attempt is stopped meanwhile); `None` for a single-worker
    /// attempt.
    fn join_ring(
        &self,
        a: &TrialAssignment,
        reporter: &dyn TrialReporter,
    ) -> Result<Option<Ring>, String> {
        let Some(replica) = &a.replica else {
            return Ok(None);
        };
        let (rank, world) = rank_of(a);
        let hub = self
            .ring
            .as_ref()
            .ok_or("this worker takes no data-parallel trials (it has no ring address)")?;
        let stopping = || reporter.stopping();
        let mut ring = hub
            .join(
                rank,
                &replica.peers,
                replica.attempt_lease,
                RING_TIMEOUT,
                &stopping,
            )
            .map_err(|e| format!("replica {rank} of {world} cannot join its ring: {e}"))?;
        // A stopped attempt (a sibling replica was lost) leaves a blocked exchange at once.
        if let Some(flag) = reporter.stop_signal() {
            ring.stop_on(flag);
        }
        Ok(Some(ring))
    }

    /// A data-parallel replica's checkpoints: the same file for every attempt of the
    /// trial, on however many workers (the batches do not depend on it), so that a
    /// retry landing here resumes from it; and the copy beside the results.
    fn replica_checkpoint(
        &self,
        a: &TrialAssignment,
        replica: &ReplicaRef,
        dataset: &DatasetRef,
    ) -> ReplicaCheckpoint {
        let key = serde_json::to_vec(&(&replica.trial_key, &a.request, &dataset.path))
            .unwrap_or_default();
        let file = format!("{}.ckpt", &sha256_hex(&key)[..24]);
        ReplicaCheckpoint {
            local: CheckpointFile(self.cache.join("checkpoints").join(&file)),
            shared: a.checkpoints.clone().map(|location| SharedCheckpoint {
                fetch: self.fetch.clone(),
                location,
                file,
                writes: replica.rank == 0,
                copying: None,
                last: None,
            }),
        }
    }

    fn run_mlp(&self, a: &TrialAssignment, reporter: &mut dyn TrialReporter) -> Result<(), String> {
        let r = ParamReader {
            params: &a.request.params,
            info: self.info(MLP)?,
        };
        let optimizer = match r.str("optimizer")?.as_str() {
            "adam" => OptimizerKind::Adam,
            "sgd" => OptimizerKind::Sgd,
            other => return Err(format!("unknown optimizer `{other}`")),
        };
        let cfg = MlpConfig {
            lr: r.f64("lr")?,
            width: r.usize("width")?,
            depth: r.usize("depth")?,
            dropout: r.f64("dropout")?,
            batch_size: r.usize("batch_size")?,
            epochs: r.usize("epochs")? as u64,
            optimizer,
            weight_decay: r.f64("weight_decay")?,
            sync_every: r.usize("sync_every")?,
        };
        let dataset = a.dataset.as_ref().ok_or("mlp-classifier needs a dataset")?;
        let (split, mine) = self.replica_data(a, dataset)?;
        let rows = train_rows(split.as_deref(), mine.as_ref()) as f64;
        let ring = self.join_ring(a, reporter)?;
        let mut last = Instant::now();
        let mut on_epoch = |m: &EpochMetrics| {
            observe_epoch(MLP, rows, &mut last);
            let metrics: MetricValues = [
                ("train_loss".to_owned(), m.train_loss),
                ("train_accuracy".to_owned(), m.train_accuracy),
                ("val_loss".to_owned(), m.val_loss),
                ("val_accuracy".to_owned(), m.val_accuracy),
            ]
            .into_iter()
            .collect();
            reporter.report(m.epoch, &metrics) == Decision::Continue
        };
        let mine = match (mine, &split) {
            (Some(m), _) => m,
            // Gradient accumulation is the data-parallel trainer's, on one shard.
            (None, Some(split)) if cfg.sync_every > 1 => {
                Replica::of(&split.train, &split.valid, 1, 0, 1)
            }
            (None, Some(split)) => {
                return train_mlp(&cfg, split, a.request.seed, &self.device, &mut on_epoch)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
            }
            (None, None) => return Err("no training data".into()),
        };
        let (Some(replica), Some(mut ring)) = (&a.replica, ring) else {
            // A registered dataset trained on one worker: every shard, nothing to exchange.
            return train_mlp_replica(
                &cfg,
                &mine,
                a.request.seed,
                &self.device,
                &mut Alone,
                None,
                &mut on_epoch,
            )
            .map(|_| ())
            .map_err(|e| e.to_string());
        };
        // One replica of a data-parallel attempt: its shards, its ring.
        let shards = mine.shard_rows.len();
        let mut checkpoint = self.replica_checkpoint(a, replica, dataset);
        let out = train_mlp_replica(
            &cfg,
            &mine,
            a.request.seed,
            &self.device,
            &mut ring,
            Some(&mut checkpoint),
            &mut on_epoch,
        )
        .map_err(|e| e.to_string())?;
        checkpoint.remove();
        reporter.artifact(replicas_table(
            replica,
            shards,
            ring.bytes_sent(),
            out.steps,
            out.resumed_from,
        ));
        Ok(())
    }

    fn run_synthetic(
        &self,
        a: &TrialAssignment,
        reporter: &mut dyn TrialReporter,
    ) -> Result<(), String> {
        let r = ParamReader {
            params: &a.request.params,
            info: self.info(SYNTHETIC)?,
        };
        let (x, y) = (r.f64("x")?, r.f64("y")?);
        let (steps, sleep_ms) = (r.usize("reports")? as u64, r.usize("sleep_ms")? as u64);
        if (a.attempt as usize) <= r.usize("panic_attempts")? {
            panic!("synthetic panic on attempt {}", a.attempt);
        }
        if (a.attempt as usize) <= r.usize("fail_attempts")? {
            return Err(format!("synthetic failure on attempt {}", a.attempt));
        }
        let base = (x - 0.3).powi(2) + (y + 0.2).powi(2);
        for step in 1..=steps {
            let t = Instant::now();
            if sleep_ms > 0 {
                std::thread::sleep(Duration::from_millis(sleep_ms));
            }
            STEP_DURATION
                .with_label_values(&[SYNTHETIC])
                .observe(t.elapsed().as_secs_f64());
            let loss = base + 1.0 / step as f64;
            let metrics: MetricValues = [("loss".to_owned(), loss), ("score".to_owned(), -loss)]
                .into_iter()
                .collect();
            if reporter.report(step, &metrics) == Decision::Stop {
                break;
            }
        }
        Ok(())
    }
}

impl BurnExecutor {
    /// Trains one fractal tile: on a CPU Flex device with the fused kernel, on any other
    /// device with the batched Burn program. Reports progress about ten times (a cancel
    /// or time limit stops it there) and sends the per-point values as a `raster`
    /// artifact.
    fn run_fractal_tile(
        &self,
        a: &TrialAssignment,
        reporter: &mut dyn TrialReporter,
    ) -> Result<(), String> {
        use tessera_core::fractal_sweep::{Activation, Tile, Variant};
        use tessera_core::trial::{Artifact, ArtifactColumn};
        use tessera_experiments::fractal::{
            FractalProblem, Precision, TileValues, train_tile, train_tile_cpu,
        };
        let r = ParamReader {
            params: &a.request.params,
            info: self.info(FRACTAL_TILE)?,
        };
        let tile = Tile::from_params(&a.request.params)?;
        let activation = Activation::parse(&r.str("activation")?)
            .ok_or("unknown activation; use tanh, relu or identity")?;
        let variant = Variant::parse(&r.str("variant")?).ok_or("unknown fractal variant")?;
        let precision = match r.str("precision")?.as_str() {
            "f32" => Precision::F32,
            _ => Precision::F64,
        };
        let (steps, seed) = (r.usize("train_steps")?, r.usize("problem_seed")? as u64);
        let mut problem = FractalProblem::new(
            r.usize("n")?,
            r.usize("width")?,
            activation,
            r.usize("dataset_size")?,
            seed,
        );
        if variant == Variant::Minibatch {
            problem = problem.with_minibatches(r.usize("batch_size")?, seed);
        }
        let lrs = tile.learning_rates();
        let started = Instant::now();
        let mut out = TileValues::default();
        let progress = |done: usize, values: &TileValues| -> MetricValues {
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            let trainable = values.values.iter().filter(|v| **v < 0.0).count();
            [
                ("points_done".to_owned(), done as f64),
                (
                    "trainable_fraction".to_owned(),
                    trainable as f64 / done.max(1) as f64,
                ),
                (
                    "network_steps_per_s".to_owned(),
                    (done * steps) as f64 / secs,
                ),
            ]
            .into_iter()
            .collect()
        };
        let mut step = 0;
        if self.device == Device::flex() {
            // Report about ten times per tile.
            let every = lrs.len().div_ceil(10).max(1);
            let mut stopped = false;
            // Train chunk by chunk so that a stop is honoured within a chunk.
            for chunk in lrs.chunks(every) {
                train_tile_cpu(&problem, chunk, steps, precision, &mut |_, l| out.push(l));
                step += 1;
                let m = progress(out.values.len(), &out);
                STEP_DURATION
                    .with_label_values(&[FRACTAL_TILE])
                    .observe(started.elapsed().as_secs_f64() / step as f64);
                SAMPLES_PER_SECOND
                    .with_label_values(&[FRACTAL_TILE])
                    .set(m["network_steps_per_s"]);
                if out.values.len() < lrs.len() && reporter.report(step, &m) == Decision::Stop {
                    stopped = true;
                    break;
                }
            }
            if stopped {
                return Ok(());
            }
        } else {
            let losses = train_tile(&problem, &lrs, steps, precision, &self.device);
            for l in losses.chunks(steps.max(1)) {
                out.push(l);
            }
        }
        let mut m = progress(out.values.len(), &out);
        let raster = tessera_core::fractal::Raster {
            width: tile.cols as usize,
            height: tile.rows as usize,
            values: out.values.clone(),
        };
        let (w, h, edges) = tessera_core::fractal::boundary(&raster);
        m.insert(
            "boundary_fraction".to_owned(),
            edges.iter().filter(|e| **e).count() as f64 / (w * h).max(1) as f64,
        );
        reporter.report(step + 1, &m);
        reporter.artifact(Artifact {
            table: tessera_core::fractal_sweep::RASTER_TABLE.to_owned(),
            columns: [
                ("value".to_owned(), ArtifactColumn::F64(out.values)),
                (
                    "diverged_at".to_owned(),
                    ArtifactColumn::I64(out.diverged_at),
                ),
            ]
            .into_iter()
            .collect(),
        });
        Ok(())
    }
}

impl BurnExecutor {
    /// A `nas` trial: role `supernet` trains the super-network with the sandwich rule
    /// (a report per epoch) and sends its weights and data shape; role `evaluate`
    /// rebuilds it from the assignment's inputs and measures each sub-network of the
    /// trial on its validation shard: correct predictions, latency (median of timed
    /// passes, labelled with this hardware), MACs and parameters.
    fn run_nas(&self, a: &TrialAssignment, reporter: &mut dyn TrialReporter) -> Result<(), String> {
        use tessera_core::nas_sweep::{
            EVALUATIONS_TABLE, SHAPE_TABLE, SUPERNET_TABLE, Shape, Supernet, parse_subnets,
        };
        use tessera_core::trial::{Artifact, ArtifactColumn};
        use tessera_experiments::supernet::{
            SuperNetwork, SupernetEpoch, SupernetTraining, correct, latency_ms, shard,
            train_supernet, train_supernet_replica,
        };
        let r = ParamReader {
            params: &a.request.params,
            info: self.info(NAS)?,
        };
        let net: Supernet = serde_json::from_str(&r.str("supernet")?)
            .map_err(|e| format!("`supernet` is not a super-network description: {e}"))?;
        let dataset = a.dataset.as_ref().ok_or("nas trials need a dataset")?;
        let table = |name: &str, cols: Vec<(&str, ArtifactColumn)>| Artifact {
            table: name.to_owned(),
            columns: cols.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        };
        if r.str("role")? == "supernet" {
            let cfg = SupernetTraining {
                epochs: r.usize("epochs")? as u64,
                learning_rate: r.f64("learning_rate")?,
                batch_size: r.usize("batch_size")?,
                random_subnets: r.usize("random_subnets")?,
            };
            // Data-parallel (`resources.workers` > 1): this replica's shards, its ring.
            let (split, mine) = self.replica_data(a, dataset)?;
            let ring = self.join_ring(a, reporter)?;
            let rows = train_rows(split.as_deref(), mine.as_ref()) as f64
                * (2 + cfg.random_subnets) as f64;
            let mut last = Instant::now();
            let mut on_epoch = |m: &SupernetEpoch| {
                observe_epoch(NAS, rows, &mut last);
                let metrics: MetricValues = [
                    ("train_loss".to_owned(), m.train_loss),
                    ("val_accuracy".to_owned(), m.val_accuracy),
                    ("val_accuracy_smallest".to_owned(), m.val_accuracy_smallest),
                ]
                .into_iter()
                .collect();
                reporter.report(m.epoch, &metrics) == Decision::Continue
            };
            let seed = a.request.seed;
            let (model, shape) = match (mine, split) {
                // This replica's shards (or, a registered dataset on one worker, every
                // shard, nothing to exchange).
                (Some(mine), _) => {
                    let mut checkpoint =
                        (a.replica.as_ref()).map(|r| self.replica_checkpoint(a, r, dataset));
                    let mut ring = ring;
                    let reducer: &mut dyn Reducer = match ring.as_mut() {
                        Some(r) => r,
                        None => &mut Alone,
                    };
                    let (model, shape, steps, resumed_from) = train_supernet_replica(
                        &net,
                        &cfg,
                        &mine,
                        seed,
                        &self.device,
                        reducer,
                        checkpoint.as_mut().map(|c| c as &mut dyn CheckpointStore),
                        &mut on_epoch,
                    )
                    .map_err(|e| e.to_string())?;
                    if let (Some(c), Some(replica), Some(ring)) = (checkpoint, &a.replica, &ring) {
                        c.remove();
                        reporter.artifact(replicas_table(
                            replica,
                            mine.shard_rows.len(),
                            ring.bytes_sent(),
                            steps,
                            resumed_from,
                        ));
                    }
                    (model, shape)
                }
                (None, Some(split)) => {
                    train_supernet(&net, &cfg, &split, seed, &self.device, &mut on_epoch)
                        .map_err(|e| e.to_string())?
                }
                (None, None) => return Err("no training data".into()),
            };
            let one = |v: u32| ArtifactColumn::I64(vec![i64::from(v)]);
            reporter.artifact(table(
                SHAPE_TABLE,
                vec![
                    ("inputs", one(shape.inputs)),
                    ("classes", one(shape.classes)),
                    ("side", one(shape.side)),
                ],
            ));
            reporter.artifact(table(
                SUPERNET_TABLE,
                vec![("value", ArtifactColumn::F64(model.flat()))],
            ));
            return Ok(());
        }
        let input = |name: &str| a.inputs.iter().find(|x| x.table == name);
        let (Some(weights), Some(stored)) = (input(SUPERNET_TABLE), input(SHAPE_TABLE)) else {
            return Err("an evaluation trial came without the trained super-network".into());
        };
        let get = |c: &str| {
            stored
                .i64s(c)
                .and_then(|v| v.first())
                .map(|v| *v as u32)
                .unwrap_or(0)
        };
        let shape = Shape {
            inputs: get("inputs"),
            classes: get("classes"),
            side: get("side"),
        };
        let values = weights
            .f64s("value")
            .ok_or("the super-network has no `value` column")?;
        let model = SuperNetwork::from_flat(&net, &shape, values, &self.device)?;
        let (k, shards) = (r.usize("shard")?, r.usize("shards")?);
        // The validation rows: the split's, or a registered dataset's (no shards fetched).
        let valid = if dataset.registered {
            self.registered_validation(dataset)?
        } else {
            self.split(dataset)?.valid.clone()
        };
        let part = shard(&valid, k, shards);
        // The latency batch: the shard's rows, repeated to the batch size.
        let rows = r.usize("latency_batch")?.max(1);
        let f = part.n_features;
        let pool = if part.is_empty() { &valid } else { &part };
        let x: Vec<f32> = (0..rows)
            .flat_map(|i| {
                let row = i % pool.len();
                pool.features[row * f..(row + 1) * f].iter().copied()
            })
            .collect();
        let x = burn::tensor::Tensor::<2>::from_data(
            burn::tensor::TensorData::new(x, [rows, f]),
            &self.device,
        );
        let (warmup, repeats) = (r.usize("latency_warmup")?, r.usize("latency_repeats")?);
        let hardware = hardware_label(&self.device);
        let subnets = parse_subnets(&r.str("subnets")?)?;
        let mut cols: [Vec<i64>; 6] = Default::default();
        let (mut lat, mut best) = (Vec::new(), 0.0f64);
        for (step, (id, genome)) in subnets.iter().enumerate() {
            let arch = net.decode(genome);
            let started = Instant::now();
            let hits = correct(&model, &net, &shape, &arch, &part, &self.device);
            let ms = latency_ms(&model, &net, &shape, &arch, &x, warmup, repeats);
            let (macs, _) = net.cost(&shape, &arch);
            let params = model.count_params(&net, &shape, &arch);
            for (c, v) in cols.iter_mut().zip([
                *id as i64,
                k as i64,
                hits,
                part.len() as i64,
                macs as i64,
                params as i64,
            ]) {
                c.push(v);
            }
            lat.push(ms);
            best = best.max(hits as f64 / part.len().max(1) as f64);
            STEP_DURATION
                .with_label_values(&[NAS])
                .observe(started.elapsed().as_secs_f64());
            let m: MetricValues = [
                ("evaluated".to_owned(), (step + 1) as f64),
                ("best_accuracy".to_owned(), best),
            ]
            .into_iter()
            .collect();
            if reporter.report(step as u64 + 1, &m) == Decision::Stop {
                return Ok(());
            }
        }
        let [subnet, shard_col, hits, total, macs, params] = cols;
        let n = subnet.len();
        reporter.artifact(table(
            EVALUATIONS_TABLE,
            vec![
                ("subnet", ArtifactColumn::I64(subnet)),
                ("shard", ArtifactColumn::I64(shard_col)),
                ("correct", ArtifactColumn::I64(hits)),
                ("total", ArtifactColumn::I64(total)),
                ("latency_ms", ArtifactColumn::F64(lat)),
                ("macs", ArtifactColumn::I64(macs)),
                ("params", ArtifactColumn::I64(params)),
                ("hardware", ArtifactColumn::Str(vec![hardware; n])),
            ],
        ));
        Ok(())
    }
}

impl BurnExecutor {
    /// A `metalic` round: trains the two-subdomain PINN of the trial's PDE and context
    /// through Adam then L-BFGS with the trial's interface terms (one arm, or one per
    /// phase), reporting the error and reward after each phase, and sends one row per
    /// phase.
    fn run_metalic(
        &self,
        a: &TrialAssignment,
        reporter: &mut dyn TrialReporter,
    ) -> Result<(), String> {
        use tessera_core::metalic_sweep::{Family, PHASES_TABLE, format_arm, parse_arm};
        use tessera_core::trial::{Artifact, ArtifactColumn};
        use tessera_experiments::pinn::{Phase, PinnConfig, train_pinn};
        let r = ParamReader {
            params: &a.request.params,
            info: self.info(METALIC)?,
        };
        let family = Family::parse(&r.str("family")?).ok_or("`family` is not a PDE family")?;
        let hidden = r
            .str("hidden")?
            .split(',')
            .map(|w| {
                w.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("`hidden` has a bad width `{w}`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let arms = r
            .str("arms")?
            .split(',')
            .map(|s| parse_arm(s).ok_or_else(|| format!("`arms` has a bad arm `{s}`")))
            .collect::<Result<Vec<_>, _>>()?;
        let cfg = PinnConfig {
            family,
            context: r.f64("context")?,
            hidden,
            boundary: r.usize("boundary_points")?,
            collocation: r.usize("collocation_points")?,
            interface: r.usize("interface_points")?,
            weights: [
                r.f64("boundary_weight")?,
                r.f64("residual_weight")?,
                r.f64("interface_weight")?,
            ],
        };
        let mut phases = Vec::new();
        if r.usize("adam_steps")? > 0 {
            phases.push(Phase::Adam {
                steps: r.usize("adam_steps")?,
                learning_rate: r.f64("adam_learning_rate")?,
            });
        }
        if r.usize("lbfgs_iterations")? > 0 {
            phases.push(Phase::Lbfgs {
                iterations: r.usize("lbfgs_iterations")?,
                history: r.usize("lbfgs_history")?,
            });
        }
        let mut stopped = false;
        let results = train_pinn(
            &cfg,
            &phases,
            &arms,
            a.request.seed,
            &self.device,
            &mut |i, p| {
                STEP_DURATION
                    .with_label_values(&[METALIC])
                    .observe(p.wall_s / p.evaluations.max(1) as f64);
                let m: MetricValues = [
                    (
                        "loss".to_owned(),
                        if p.loss.is_finite() { p.loss } else { f64::MAX },
                    ),
                    ("error".to_owned(), p.error),
                    ("reward".to_owned(), p.reward),
                ]
                .into_iter()
                .collect();
                stopped |= reporter.report(i as u64 + 1, &m) == Decision::Stop;
            },
        );
        if stopped {
            return Ok(());
        }
        let col = |f: &dyn Fn(&tessera_experiments::pinn::PhaseResult) -> f64| {
            ArtifactColumn::F64(results.iter().map(f).collect())
        };
        let columns = [
            (
                "phase",
                ArtifactColumn::I64((0..results.len() as i64).collect()),
            ),
            (
                "optimizer",
                ArtifactColumn::Str(
                    phases
                        .iter()
                        .map(|p| match p {
                            Phase::Adam { .. } => "adam".to_owned(),
                            Phase::Lbfgs { .. } => "lbfgs".to_owned(),
                        })
                        .collect(),
                ),
            ),
            (
                "arm",
                ArtifactColumn::Str(results.iter().map(|p| format_arm(p.arm)).collect()),
            ),
            (
                "steps",
                ArtifactColumn::I64(results.iter().map(|p| p.steps as i64).collect()),
            ),
            (
                "evaluations",
                ArtifactColumn::I64(results.iter().map(|p| p.evaluations as i64).collect()),
            ),
            // JSON has no NaN or infinity: a diverged loss is sent as the largest float.
            (
                "loss",
                col(&|p| if p.loss.is_finite() { p.loss } else { f64::MAX }),
            ),
            ("error", col(&|p| p.error)),
            ("reward", col(&|p| p.reward)),
            ("wall_s", col(&|p| p.wall_s)),
        ];
        reporter.artifact(Artifact {
            table: PHASES_TABLE.to_owned(),
            columns: columns
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        });
        Ok(())
    }
}

/// Records an epoch of `program` that ended now (the previous one ended at `last`) and
/// trained on `rows` rows: its duration and the samples per second.
fn observe_epoch(program: &str, rows: f64, last: &mut Instant) {
    let secs = last.elapsed().as_secs_f64();
    *last = Instant::now();
    STEP_DURATION.with_label_values(&[program]).observe(secs);
    SAMPLES_PER_SECOND
        .with_label_values(&[program])
        .set(rows / secs.max(1e-9));
}

/// What latency is measured on: the CPU's model name and the Burn device.
fn hardware_label(device: &Device) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let backend = if *device == Device::flex() {
        "flex".to_owned()
    } else {
        format!("{device:?}")
    };
    format!("{cpu} · {backend}")
}

impl TrialExecutor for BurnExecutor {
    fn programs(&self) -> Vec<ProgramInfo> {
        self.programs.clone()
    }

    fn ring_address(&self) -> Option<String> {
        self.ring.as_ref().map(|h| h.address().to_owned())
    }

    fn execute(&self, a: &TrialAssignment, reporter: &mut dyn TrialReporter) -> Result<(), String> {
        match a.program.as_str() {
            MLP => self.run_mlp(a, reporter),
            SYNTHETIC => self.run_synthetic(a, reporter),
            FRACTAL_TILE => self.run_fractal_tile(a, reporter),
            NAS => self.run_nas(a, reporter),
            METALIC => self.run_metalic(a, reporter),
            other => Err(format!("unknown program `{other}`")),
        }
    }
}

/// Training rows of the trial: the whole split's, or all shards' of a registered one.
fn train_rows(split: Option<&Split>, mine: Option<&Replica>) -> usize {
    match (split, mine) {
        (Some(s), _) => s.train.len(),
        (None, Some(m)) => m.shard_rows.iter().sum(),
        (None, None) => 0,
    }
}

/// This dispatch's rank and its attempt's replica count (0 of 1 unless data-parallel).
fn rank_of(a: &TrialAssignment) -> (usize, usize) {
    a.replica
        .as_ref()
        .map_or((0, 1), |r| (r.rank as usize, r.peers.len()))
}

/// The `replicas` row of each replica of a data-parallel attempt: which workers and
/// shards trained it (only replica 0's artifacts are recorded).
fn replicas_table(
    replica: &ReplicaRef,
    shards: usize,
    ring_bytes: u64,
    steps: u64,
    resumed_from: u64,
) -> Artifact {
    let n = replica.peers.len();
    let held = |r: usize| -> String {
        (r..shards)
            .step_by(n)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    Artifact {
        table: REPLICAS_TABLE.into(),
        columns: [
            ("rank", ArtifactColumn::I64((0..n as i64).collect())),
            ("worker", ArtifactColumn::Str(replica.workers.clone())),
            ("shards", ArtifactColumn::Str((0..n).map(held).collect())),
            // Every replica sends the same volume through the ring.
            (
                "ring_bytes",
                ArtifactColumn::I64(vec![ring_bytes as i64; n]),
            ),
            ("steps", ArtifactColumn::I64(vec![steps as i64; n])),
            (
                "resumed_from_epoch",
                ArtifactColumn::I64(vec![resumed_from as i64; n]),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    }
}
