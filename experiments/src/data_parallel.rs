//! Synchronous data-parallel training: one trial's model trained by several replicas,
//! each on its own shards of the training data, with gradients summed across replicas
//! after every step so that every replica holds the same parameters.
//!
//! The training set is cut into `S` fixed shards ([`Dataset::shard`]); a replica holds
//! some of them. Every step's global batch takes `batch_size / S` rows from each shard,
//! in an order drawn from the trial's seed, the epoch and the shard alone, so the global
//! batch, and the dropout masks of its rows, do not depend on how many replicas share
//! the shards. Each replica's loss is its rows' share of the global batch's mean, so the
//! sum of the replicas' gradients is the global batch's gradient, and K = 1, 2 or 4
//! replicas take the same steps up to the order of floating-point sums.
//!
//! With `sync_every: M`, a replica sums the gradients of M batches locally and the
//! replicas exchange once, taking one optimizer step on the mean loss of all M batches'
//! rows: 1/M of the traffic per row, and (when the shards divide the batch and without
//! dropout, whose masks follow the batch) the steps of a run with M times the batch,
//! using the memory of one batch: what PyTorch users do with `no_sync()` and gradient
//! accumulation.
//!
//! The exchange itself is a [`Reducer`]: the worker supplies a ring all-reduce over TCP;
//! this crate never touches the network.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use tessera_core::rng::{Rng, derive_seed};

use crate::dataset::Dataset;
use crate::mlp::{
    EpochMetrics, Mlp, MlpConfig, OptimizerKind, TrainError, check, correct, dropout_masks,
    evaluate, to_tensors,
};
use crate::optim::{
    FlatAdam, FlatOptimizer, FlatSgd, flat_gradient, flat_parameters, parameter_count,
    set_parameters,
};

/// Sums a vector element-wise across all replicas of a trial, in place; every replica
/// must end with the same values.
pub trait Reducer {
    /// Replaces `values` with the element-wise sum over all replicas.
    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<(), String>;

    /// This replica's rank.
    fn rank(&self) -> usize {
        0
    }

    /// Replicas taking part.
    fn world(&self) -> usize {
        1
    }
}

/// The reducer of a trial trained by one replica: nothing to exchange.
#[derive(Debug, Default, Clone, Copy)]
pub struct Alone;

impl Reducer for Alone {
    fn all_reduce_sum(&mut self, _values: &mut [f32]) -> Result<(), String> {
        Ok(())
    }
}

/// One replica's part of a data-parallel trial.
#[derive(Debug, Clone)]
pub struct Replica {
    /// The shards this replica holds, as (shard index, rows).
    pub shards: Vec<(usize, Dataset)>,
    /// Rows in every shard of the training set, by shard index (from the manifest).
    pub shard_rows: Vec<usize>,
    /// Validation rows (every replica evaluates the same parameters on them).
    pub valid: Dataset,
}

impl Replica {
    /// Replica `rank` of `world` over `shards` shards of `train`: shards `rank`,
    /// `rank + world`, … (the assignment the scheduler uses).
    pub fn of(train: &Dataset, valid: &Dataset, shards: usize, rank: usize, world: usize) -> Self {
        Self {
            shards: (rank..shards)
                .step_by(world.max(1))
                .map(|s| (s, train.shard(s, shards)))
                .collect(),
            shard_rows: (0..shards)
                .map(|s| train.len().saturating_sub(s).div_ceil(shards))
                .collect(),
            valid: valid.clone(),
        }
    }
}

/// What a data-parallel run ended with.
#[derive(Debug, Clone)]
pub struct DataParallelOutcome {
    /// Epochs run.
    pub epochs: u64,
    /// Optimizer steps taken (one exchange each).
    pub steps: u64,
    /// Batches this run trained on (`sync_every` per step, but for an epoch's last
    /// step; a resumed run counts from its checkpoint).
    pub batches: u64,
    /// Floats this replica handed to the reducer per step (gradient plus two counters).
    pub floats_per_step: usize,
    /// The final parameters, flattened in the module's visiting order.
    pub parameters: Vec<f32>,
    /// The epoch a checkpoint let this run start after (0: it started afresh).
    pub resumed_from: u64,
}

/// What a replica keeps after each epoch, to resume from after a failure: every replica
/// holds the same one, so any survivor can hand it to the others.
#[derive(Debug, Clone, PartialEq)]
struct Checkpoint {
    epoch: u64,
    steps: u64,
    /// Per finished epoch: train loss, train accuracy, validation loss and accuracy.
    history: Vec<[f64; 4]>,
    /// Parameters, then the optimizer's state.
    state: Vec<f32>,
}

const CHECKPOINT_MAGIC: &[u8; 8] = b"TSRCKPT1";

/// Where a replica keeps its trial's checkpoints between attempts.
pub trait CheckpointStore {
    /// Every checkpoint this replica can read (its own disk's, a shared store's); the
    /// newest whole one is used, damaged or foreign ones are ignored.
    fn load(&mut self) -> Vec<Vec<u8>>;

    /// Keeps `bytes`, the trial's state after `epoch`.
    fn save(&mut self, epoch: u64, bytes: &[u8]);
}

/// A checkpoint file on this machine's disk, replaced whole (written to a temporary
/// file, then renamed) so that a crash never leaves half of one.
#[derive(Debug, Clone)]
pub struct CheckpointFile(pub std::path::PathBuf);

impl CheckpointFile {
    /// Replaces the file with `bytes`, whole: through a temporary file of its own (the
    /// replicas of one process may write the same checkpoint at once), then a rename.
    pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .0
            .with_extension(format!("tmp{}-{n}", std::process::id()));
        if let Some(dir) = self.0.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.0))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
    }
}

impl CheckpointStore for CheckpointFile {
    fn load(&mut self) -> Vec<Vec<u8>> {
        std::fs::read(&self.0).into_iter().collect()
    }

    fn save(&mut self, _epoch: u64, bytes: &[u8]) {
        // A checkpoint that cannot be written costs only a resume point.
        let _ = self.write(bytes);
    }
}

impl Checkpoint {
    fn to_bytes(&self) -> Vec<u8> {
        let mut b = CHECKPOINT_MAGIC.to_vec();
        for v in [
            self.epoch,
            self.steps,
            self.history.len() as u64,
            self.state.len() as u64,
        ] {
            b.extend(v.to_le_bytes());
        }
        for h in &self.history {
            for v in h {
                b.extend(v.to_le_bytes());
            }
        }
        for v in &self.state {
            b.extend(v.to_le_bytes());
        }
        let digest = tessera_core::shards::sha256_hex(&b);
        b.extend(digest.as_bytes());
        b
    }

    /// The checkpoint in `bytes`, if they are one whole and its state has `state_len`
    /// floats (a checkpoint of another model or optimizer is ignored).
    fn from_bytes(bytes: &[u8], state_len: usize) -> Option<Self> {
        let (body, digest) = bytes.split_at_checked(bytes.len().checked_sub(64)?)?;
        if body.get(..8)? != CHECKPOINT_MAGIC
            || tessera_core::shards::sha256_hex(body).as_bytes() != digest
        {
            return None;
        }
        let u = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                body.get(8 + 8 * i..16 + 8 * i)?.try_into().ok()?,
            ))
        };
        let (epoch, steps, h, n) = (u(0)?, u(1)?, u(2)? as usize, u(3)? as usize);
        if n != state_len || h as u64 != epoch {
            return None;
        }
        let mut at = 40;
        let mut history = Vec::with_capacity(h);
        for _ in 0..h {
            let mut row = [0.0; 4];
            for v in &mut row {
                *v = f64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?);
                at += 8;
            }
            history.push(row);
        }
        let state = body
            .get(at..at + 4 * n)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(Self {
            epoch,
            steps,
            history,
            state,
        })
    }
}

/// How a data-parallel trial cuts an epoch into global batches: every batch takes
/// `batch_size / S` rows from each of the S shards, in an order drawn from the seed, the
/// epoch and the shard alone, so the batches do not depend on how many replicas share
/// the shards.
#[derive(Debug, Clone, Copy)]
pub struct Batches<'a> {
    replica: &'a Replica,
    per_shard: usize,
    /// Batches in an epoch (the largest shard's rows over the rows taken from each).
    pub per_epoch: usize,
}

impl<'a> Batches<'a> {
    /// The batches of `batch_size` global rows over `replica`'s shard table.
    pub fn new(replica: &'a Replica, batch_size: usize) -> Self {
        let per_shard = (batch_size / replica.shard_rows.len().max(1)).max(1);
        let largest = replica.shard_rows.iter().copied().max().unwrap_or(0);
        Self {
            replica,
            per_shard,
            per_epoch: largest.div_ceil(per_shard),
        }
    }

    /// The order of each held shard's rows in `epoch`, by the replica's shard position.
    pub fn orders(&self, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
        self.replica
            .shards
            .iter()
            .map(|(s, _)| {
                let mut idx: Vec<usize> = (0..self.replica.shard_rows[*s]).collect();
                Rng::new(derive_seed(seed, (epoch << 20) ^ *s as u64 ^ 0xD47A)).shuffle(&mut idx);
                idx
            })
            .collect()
    }

    fn range(&self, step: usize, rows: usize) -> std::ops::Range<usize> {
        let lo = (step * self.per_shard).min(rows);
        lo..((step + 1) * self.per_shard).min(rows)
    }

    /// Rows of batch `step` over all shards, held here or not.
    pub fn global_rows(&self, step: usize) -> usize {
        self.replica
            .shard_rows
            .iter()
            .map(|r| self.range(step, *r).len())
            .sum()
    }

    /// This replica's rows of batch `step`: (shard position, shard index, row indices)
    /// for each held shard that has rows left.
    pub fn local(&self, orders: &[Vec<usize>], step: usize) -> Vec<(usize, usize, Vec<i64>)> {
        self.replica
            .shards
            .iter()
            .zip(orders)
            .enumerate()
            .filter_map(|(pos, ((s, _), ord))| {
                let range = self.range(step, ord.len());
                (!range.is_empty())
                    .then(|| (pos, *s, ord[range].iter().map(|i| *i as i64).collect()))
            })
            .collect()
    }
}

/// Whether any replica asked to stop (an early-stopping decision reaches replica 0
/// only; a cancelled replica): every replica stops together.
pub fn agree_to_stop(reducer: &mut dyn Reducer, stop: bool) -> Result<bool, TrainError> {
    let mut flag = [if stop { 1.0 } else { 0.0 }];
    reducer.all_reduce_sum(&mut flag).map_err(exchange_failed)?;
    Ok(flag[0] > 0.0)
}

/// The error of a failed exchange between replicas.
pub fn exchange_failed(e: String) -> TrainError {
    TrainError::Data(format!("gradient exchange failed: {e}"))
}

/// Trains replica `replica` of a data-parallel MLP trial; every replica of the trial must
/// call this with the same `cfg`, `seed` and shard table. `on_epoch` (called with the
/// metrics every replica agrees on) returns `false` to stop early.
///
/// With a `checkpoint` store, each replica saves the trial's state there after every
/// epoch, and at the start the replicas agree on the newest checkpoint any of them reads:
/// its holder sends it to the others through the reducer, the finished epochs' metrics
/// are reported again, and training continues with the next epoch, taking the same steps
/// an uninterrupted run takes.
pub fn train_mlp_replica(
    cfg: &MlpConfig,
    replica: &Replica,
    seed: u64,
    device: &Device,
    reducer: &mut dyn Reducer,
    mut checkpoint: Option<&mut dyn CheckpointStore>,
    on_epoch: &mut dyn FnMut(&EpochMetrics) -> bool,
) -> Result<DataParallelOutcome, TrainError> {
    let Some((_, first)) = replica.shards.first() else {
        return Err(TrainError::Data("this replica holds no shard".into()));
    };
    check(cfg, first, &replica.valid)?;
    let batches_of = Batches::new(replica, cfg.batch_size);
    let steps_per_epoch = batches_of.per_epoch;
    let total_rows: usize = replica.shard_rows.iter().sum();
    let n_classes = replica
        .shards
        .iter()
        .map(|(_, d)| d.n_classes)
        .chain([replica.valid.n_classes])
        .max()
        .unwrap_or(0);

    let ad = device.clone().autodiff();
    let mut init_rng = Rng::new(derive_seed(seed, 1));
    let mut model = Mlp::new(
        first.n_features,
        n_classes,
        cfg.width,
        cfg.depth,
        &mut init_rng,
        &ad,
    );
    let mut optim = match cfg.optimizer {
        OptimizerKind::Adam => FlatOptimizer::Adam(Box::new(FlatAdam::new(cfg.weight_decay))),
        OptimizerKind::Sgd => FlatOptimizer::Sgd(Box::new(FlatSgd::new(0.9, cfg.weight_decay))),
    };
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let held: Vec<(usize, Tensor<2>, Tensor<1, Int>)> = replica
        .shards
        .iter()
        .map(|(s, d)| {
            let (x, y) = to_tensors(d, &ad);
            (*s, x, y)
        })
        .collect();
    let (x_valid, y_valid) = to_tensors(&replica.valid, device);
    let mut floats_per_step = 0;
    let n_params = parameter_count(&model);
    let start;
    (model, start) = restore(
        reducer,
        checkpoint.as_deref_mut(),
        model,
        &mut optim,
        cfg.epochs,
        device,
        |epoch, h| {
            on_epoch(&EpochMetrics {
                epoch,
                train_loss: h[0],
                train_accuracy: h[1],
                val_loss: h[2],
                val_accuracy: h[3],
            })
        },
    )?;
    let Start {
        after: resumed_from,
        mut steps,
        mut history,
        stopped,
    } = start;
    if let Some(epoch) = stopped {
        return finish(epoch, steps, 0, floats_per_step, &model, resumed_from);
    }

    let sync_every = cfg.sync_every.max(1);
    let mut batches = 0u64;
    for epoch in resumed_from + 1..=cfg.epochs {
        let orders = batches_of.orders(seed, epoch);
        let (mut loss_sum, mut hits) = (0.0, 0.0);
        // The gradients, loss and hits of the batches since the last exchange.
        let mut pending: Option<(Vec<f32>, f64, f64)> = None;
        let mut pending_batches = 0;
        let mut exchanges = 0usize;
        // Rows of every batch up to the next exchange: each batch's loss is its share of
        // their mean, so the summed gradient is that of one batch holding them all.
        let mut global = 0;
        for step in 0..steps_per_epoch {
            if pending_batches == 0 {
                global = (step..(step + sync_every).min(steps_per_epoch))
                    .map(|b| batches_of.global_rows(b))
                    .sum();
            }
            let mut parts_x = Vec::new();
            let mut parts_y = Vec::new();
            let mut masks: Vec<Vec<Tensor<2>>> = Vec::new();
            for (pos, s, take) in batches_of.local(&orders, step) {
                let (_, x, y) = &held[pos];
                let rows = take.len();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(take, [rows]), &ad);
                parts_x.push(x.clone().select(0, idx.clone()));
                parts_y.push(y.clone().select(0, idx));
                let mut mask_rng = Rng::new(derive_seed(
                    seed,
                    (epoch << 40) ^ ((step as u64) << 12) ^ s as u64 ^ 0x3A5C,
                ));
                if let Some(m) = dropout_masks(cfg, rows, &mut mask_rng, &ad) {
                    masks.push(m);
                }
            }
            let local = parts_y.iter().map(|y| y.dims()[0]).sum::<usize>();
            let (flat, local_loss, local_hits) = if local > 0 {
                let x = Tensor::cat(parts_x, 0);
                let y = Tensor::cat(parts_y, 0);
                let masks: Option<Vec<Tensor<2>>> = (!masks.is_empty()).then(|| {
                    (0..cfg.depth)
                        .map(|layer| {
                            Tensor::cat(masks.iter().map(|m| m[layer].clone()).collect(), 0)
                        })
                        .collect()
                });
                let logits = model.forward(x, masks.as_deref());
                let local_hits = correct(logits.clone().detach(), y.clone());
                // This replica's share of the global batch's (or batches') mean loss.
                let loss = loss_fn
                    .forward(logits, y)
                    .mul_scalar(local as f64 / global as f64);
                let local_loss = f64::from(loss.clone().detach().into_scalar::<f32>());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let g = flat_gradient(&model, &grads).into_data();
                (
                    g.try_to_vec::<f32>()
                        .map_err(|e| TrainError::Data(format!("{e:?}")))?,
                    local_loss,
                    local_hits as f64,
                )
            } else {
                (vec![0.0; n_params], 0.0, 0.0)
            };
            batches += 1;
            pending_batches += 1;
            pending = Some(match pending.take() {
                None => (flat, local_loss, local_hits),
                Some((mut sum, loss, hits)) => {
                    sum.iter_mut().zip(&flat).for_each(|(s, g)| *s += g);
                    (sum, loss + local_loss, hits + local_hits)
                }
            });
            if pending_batches < sync_every && step + 1 < steps_per_epoch {
                continue;
            }
            let Some((mut flat, local_loss, local_hits)) = pending.take() else {
                continue;
            };
            // One exchange carries the gradient and the batches' loss and hit count.
            flat.push(local_loss as f32);
            flat.push(local_hits as f32);
            floats_per_step = flat.len();
            reducer.all_reduce_sum(&mut flat).map_err(exchange_failed)?;
            hits += f64::from(flat.pop().unwrap_or(0.0));
            loss_sum += f64::from(flat.pop().unwrap_or(0.0));
            let n = flat.len();
            let grad = Tensor::<1>::from_data(TensorData::new(flat, [n]), device);
            pending_batches = 0;
            model = optim.step(cfg.lr, model, grad);
            steps += 1;
            exchanges += 1;
        }
        let (val_loss, val_accuracy) = evaluate(model.valid(), &x_valid, &y_valid, device);
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum / exchanges.max(1) as f64,
            train_accuracy: hits / total_rows.max(1) as f64,
            val_loss,
            val_accuracy,
        };
        history.push([
            metrics.train_loss,
            metrics.train_accuracy,
            metrics.val_loss,
            metrics.val_accuracy,
        ]);
        if let Some(store) = checkpoint.as_deref_mut() {
            save(store, epoch, steps, &history, &model, &optim)?;
        }
        if agree_to_stop(reducer, !on_epoch(&metrics))? {
            return finish(epoch, steps, batches, floats_per_step, &model, resumed_from);
        }
    }
    finish(
        cfg.epochs,
        steps,
        batches,
        floats_per_step,
        &model,
        resumed_from,
    )
}

/// Where a run starts: afresh (all zero), or after the checkpoint its replicas agreed on.
#[derive(Debug, Default)]
pub struct Start {
    /// The last finished epoch (0: none).
    pub after: u64,
    /// Optimizer steps taken by then.
    pub steps: u64,
    /// Per finished epoch, the four figures the trainer keeps.
    pub history: Vec<[f64; 4]>,
    /// The epoch at which the finished epochs, reported again, made the run stop.
    pub stopped: Option<u64>,
}

/// The start of a data-parallel run: with a checkpoint store, the replicas resume from
/// the newest checkpoint any of them reads ([`resume`]) and report its finished epochs
/// again through `report` ([`replay`]); without one, or with none found, a fresh start.
pub fn restore<'s, M: Module>(
    reducer: &mut dyn Reducer,
    checkpoint: Option<&mut (dyn CheckpointStore + 's)>,
    model: M,
    optim: &mut FlatOptimizer,
    max_epoch: u64,
    device: &Device,
    report: impl FnMut(u64, &[f64; 4]) -> bool,
) -> Result<(M, Start), TrainError> {
    let Some(store) = checkpoint else {
        return Ok((model, Start::default()));
    };
    let (model, resumed) = resume(reducer, store, model, optim, max_epoch, device)?;
    let Some(start) = resumed else {
        return Ok((model, Start::default()));
    };
    let stopped = replay(reducer, &start.history, report)?;
    Ok((model, Start { stopped, ..start }))
}

/// At the start of a data-parallel run with a checkpoint store: the replicas agree on
/// the newest checkpoint any of them reads (ties: the lowest rank's; none newer than
/// `max_epoch`, none of another model or optimizer), its holder sends it to the others
/// through `reducer`, and `model` and `optim` take its state. `None`: no replica has
/// one, and all start afresh.
fn resume<M: Module>(
    reducer: &mut dyn Reducer,
    store: &mut dyn CheckpointStore,
    model: M,
    optim: &mut FlatOptimizer,
    max_epoch: u64,
    device: &Device,
) -> Result<(M, Option<Start>), TrainError> {
    let n_params = parameter_count(&model);
    let state_len = n_params + optim.state_len(n_params);
    let mine = store
        .load()
        .iter()
        .filter_map(|b| Checkpoint::from_bytes(b, state_len))
        .filter(|c| c.epoch <= max_epoch)
        .max_by_key(|c| c.epoch);
    let mut epochs = vec![0.0f32; reducer.world()];
    epochs[reducer.rank()] = mine.as_ref().map_or(0.0, |c| c.epoch as f32);
    reducer
        .all_reduce_sum(&mut epochs)
        .map_err(exchange_failed)?;
    let (source, newest) =
        epochs.iter().enumerate().fold(
            (0, 0.0f32),
            |best, (i, e)| {
                if *e > best.1 { (i, *e) } else { best }
            },
        );
    let newest = newest as u64;
    if newest == 0 {
        return Ok((model, None));
    }
    // Steps, history and state in one vector only the source fills.
    let mut v = vec![0.0f32; 1 + 4 * newest as usize + state_len];
    if reducer.rank() == source
        && let Some(c) = &mine
    {
        v[0] = c.steps as f32;
        for (i, h) in c.history.iter().enumerate() {
            for (j, x) in h.iter().enumerate() {
                v[1 + 4 * i + j] = *x as f32;
            }
        }
        v[1 + 4 * newest as usize..].copy_from_slice(&c.state);
    }
    reducer.all_reduce_sum(&mut v).map_err(exchange_failed)?;
    let history = v[1..1 + 4 * newest as usize]
        .chunks_exact(4)
        .map(|c| [c[0].into(), c[1].into(), c[2].into(), c[3].into()])
        .collect();
    let state = &v[1 + 4 * newest as usize..];
    let params = Tensor::<1>::from_data(
        TensorData::new(state[..n_params].to_vec(), [n_params]),
        device,
    );
    optim.import(&state[n_params..], device);
    Ok((
        set_parameters(model, params),
        Some(Start {
            after: newest,
            steps: v[0] as u64,
            history,
            stopped: None,
        }),
    ))
}

/// Reports a resumed run's finished epochs again, from its `history`: `report` returns
/// `false` to stop, and every replica stops together. Returns the epoch it stopped at.
fn replay(
    reducer: &mut dyn Reducer,
    history: &[[f64; 4]],
    mut report: impl FnMut(u64, &[f64; 4]) -> bool,
) -> Result<Option<u64>, TrainError> {
    for (i, h) in history.iter().enumerate() {
        let epoch = i as u64 + 1;
        if agree_to_stop(reducer, !report(epoch, h))? {
            return Ok(Some(epoch));
        }
    }
    Ok(None)
}

/// Saves the state of `model` and `optim` after `epoch` (of `history.len()` finished
/// epochs and `steps` optimizer steps) into `store`.
pub fn save<M: Module>(
    store: &mut dyn CheckpointStore,
    epoch: u64,
    steps: u64,
    history: &[[f64; 4]],
    model: &M,
    optim: &FlatOptimizer,
) -> Result<(), TrainError> {
    let mut state = flat_parameters(model)
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| TrainError::Data(format!("{e:?}")))?;
    state.extend(optim.export(parameter_count(model)));
    let bytes = Checkpoint {
        epoch,
        steps,
        history: history.to_vec(),
        state,
    }
    .to_bytes();
    store.save(epoch, &bytes);
    Ok(())
}

fn finish(
    epochs: u64,
    steps: u64,
    batches: u64,
    floats_per_step: usize,
    model: &Mlp,
    resumed_from: u64,
) -> Result<DataParallelOutcome, TrainError> {
    let parameters = flat_parameters(model)
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| TrainError::Data(format!("{e:?}")))?;
    Ok(DataParallelOutcome {
        epochs,
        steps,
        batches,
        floats_per_step,
        parameters,
        resumed_from,
    })
}
