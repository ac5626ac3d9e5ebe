//! Weight-sharing super-networks for the `nas` sweep kind, written once against Burn's
//! tensor API (so they run on any device: Flex on CPU, LibTorch on GPU).
//!
//! A sub-network is sliced out of the super-network's tensors, never copied: a narrower
//! layer uses the first units of the widest one, a smaller kernel the centre of the
//! largest, a shallower stage its first blocks (Cai et al., *Once-for-All*, 2020).
//! Training follows the sandwich rule (Yu & Huang, *Universally Slimmable Networks*,
//! 2019): every step adds the losses of the largest sub-network, the smallest and
//! `random_subnets` random ones, and takes one optimiser step on their sum, so every
//! sub-network is trained at once. (OFA's progressive shrinking and in-place
//! distillation are not used; neither is batch normalisation, which would need
//! recalibrating per sub-network.)

use std::time::Instant;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Int, Tensor, TensorData};
use tessera_core::moo::Genome;
use tessera_core::nas_sweep::{Arch, Shape, Supernet};
use tessera_core::rng::{Rng, derive_seed};

use crate::dataset::{Dataset, Split};
use crate::mlp::TrainError;

/// One inverted-residual block at its largest: 1×1 expand, depthwise k×k, 1×1 project.
#[derive(Module, Debug)]
pub struct ConvBlock {
    expand_w: Param<Tensor<4>>,
    expand_b: Param<Tensor<1>>,
    depthwise_w: Param<Tensor<4>>,
    depthwise_b: Param<Tensor<1>>,
    project_w: Param<Tensor<4>>,
    project_b: Param<Tensor<1>>,
}

/// The trained weights of a super-network.
#[derive(Module, Debug)]
pub struct SuperNetwork {
    /// Mlp: the hidden layers at their widest. Conv: empty.
    hidden: Vec<Linear>,
    /// Conv: the stem's 3×3 weights and bias.
    stem: Vec<Param<Tensor<4>>>,
    stem_b: Vec<Param<Tensor<1>>>,
    /// Conv: the blocks, stage by stage, each stage at its largest depth.
    blocks: Vec<ConvBlock>,
    /// The classifier (rows: the widest last layer's units).
    output: Linear,
}

/// Where a tensor's initial values come from: its shape and fan-in.
type Source<'a> = dyn FnMut(&[usize], usize) -> Vec<f32> + 'a;

fn param<const D: usize>(
    dims: [usize; D],
    fan_in: usize,
    src: &mut Source,
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::<D>::from_data(
        TensorData::new(src(&dims, fan_in), dims),
        device,
    ))
}

fn linear(d_in: usize, d_out: usize, src: &mut Source, device: &Device) -> Linear {
    Linear {
        weight: param([d_in, d_out], d_in, src, device),
        bias: Some(param([d_out], d_in, src, device)),
    }
}

/// The input channels of block `b` of stage `s`, and its largest expansion.
fn block_channels(channels: &[u32], s: usize, b: usize) -> (usize, usize) {
    let c_in = if b == 0 { channels[s] } else { channels[s + 1] };
    (c_in as usize, channels[s + 1] as usize)
}

impl SuperNetwork {
    /// Builds the super-network of `net` for data of `shape`, every tensor's values drawn
    /// from `src` in a fixed order (the order [`SuperNetwork::flat`] writes them in).
    fn build(net: &Supernet, shape: &Shape, src: &mut Source, device: &Device) -> Self {
        let (inputs, classes) = (shape.inputs as usize, shape.classes as usize);
        match net {
            Supernet::Mlp { depth, width } => {
                let w = *width.last().unwrap_or(&1) as usize;
                let layers = *depth.last().unwrap_or(&0) as usize;
                let mut hidden = Vec::new();
                let mut d = inputs;
                for _ in 0..layers {
                    hidden.push(linear(d, w, src, device));
                    d = w;
                }
                // A sub-network's last hidden layer feeds the first rows of the output.
                let output = linear(d, classes, src, device);
                Self {
                    hidden,
                    stem: Vec::new(),
                    stem_b: Vec::new(),
                    blocks: Vec::new(),
                    output,
                }
            }
            Supernet::Conv {
                channels,
                depth,
                kernel,
                expand,
            } => {
                let kmax = *kernel.last().unwrap_or(&3) as usize;
                let emax = *expand.last().unwrap_or(&1) as usize;
                let dmax = *depth.last().unwrap_or(&1) as usize;
                let c0 = channels[0] as usize;
                let stem = vec![param([c0, 1, 3, 3], 9, src, device)];
                let stem_b = vec![param([c0], 9, src, device)];
                let mut blocks = Vec::new();
                for s in 0..channels.len() - 1 {
                    for b in 0..dmax {
                        let (c_in, c_out) = block_channels(channels, s, b);
                        let hidden = c_in * emax;
                        blocks.push(ConvBlock {
                            expand_w: param([hidden, c_in, 1, 1], c_in, src, device),
                            expand_b: param([hidden], c_in, src, device),
                            depthwise_w: param([hidden, 1, kmax, kmax], kmax * kmax, src, device),
                            depthwise_b: param([hidden], kmax * kmax, src, device),
                            project_w: param([c_out, hidden, 1, 1], hidden, src, device),
                            project_b: param([c_out], hidden, src, device),
                        });
                    }
                }
                let last = *channels.last().unwrap_or(&1) as usize;
                Self {
                    hidden: Vec::new(),
                    stem,
                    stem_b,
                    blocks,
                    output: linear(last, classes, src, device),
                }
            }
        }
    }

    /// A freshly initialised super-network (uniform in ±1/√fan-in, like PyTorch).
    pub fn init(net: &Supernet, shape: &Shape, seed: u64, device: &Device) -> Self {
        let mut rng = Rng::new(seed);
        let mut src = |dims: &[usize], fan_in: usize| -> Vec<f32> {
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            (0..dims.iter().product())
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                .collect()
        };
        Self::build(net, shape, &mut src, device)
    }

    /// The super-network whose [`SuperNetwork::flat`] weights are `values`.
    pub fn from_flat(
        net: &Supernet,
        shape: &Shape,
        values: &[f64],
        device: &Device,
    ) -> Result<Self, String> {
        let mut at = 0;
        let mut short = false;
        let mut src = |dims: &[usize], _: usize| -> Vec<f32> {
            let n: usize = dims.iter().product();
            let Some(chunk) = values.get(at..at + n) else {
                short = true;
                return vec![0.0; n];
            };
            at += n;
            chunk.iter().map(|v| *v as f32).collect()
        };
        let model = Self::build(net, shape, &mut src, device);
        if short || at != values.len() {
            return Err(format!(
                "the stored super-network has {} weights, not what this super-network and data shape need",
                values.len()
            ));
        }
        Ok(model)
    }

    /// Every weight, in the order [`SuperNetwork::from_flat`] reads them.
    pub fn flat(&self) -> Vec<f64> {
        fn push<const D: usize>(out: &mut Vec<f64>, p: &Param<Tensor<D>>) {
            let data = p.val().into_data();
            out.extend(data.iter::<f32>().map(f64::from));
        }
        let mut out = Vec::new();
        for l in &self.hidden {
            push(&mut out, &l.weight);
            if let Some(b) = &l.bias {
                push(&mut out, b);
            }
        }
        for (w, b) in self.stem.iter().zip(&self.stem_b) {
            push(&mut out, w);
            push(&mut out, b);
        }
        for b in &self.blocks {
            push(&mut out, &b.expand_w);
            push(&mut out, &b.expand_b);
            push(&mut out, &b.depthwise_w);
            push(&mut out, &b.depthwise_b);
            push(&mut out, &b.project_w);
            push(&mut out, &b.project_b);
        }
        push(&mut out, &self.output.weight);
        if let Some(b) = &self.output.bias {
            push(&mut out, b);
        }
        out
    }

    /// Logits of sub-network `arch` for a batch of rows.
    pub fn forward(&self, net: &Supernet, shape: &Shape, arch: &Arch, x: Tensor<2>) -> Tensor<2> {
        let classes = shape.classes as usize;
        let sliced = |l: &Linear, d_in: usize, d_out: usize, x: Tensor<2>| -> Tensor<2> {
            let w = l.weight.val().slice([0..d_in, 0..d_out]);
            let y = x.matmul(w);
            match &l.bias {
                Some(b) => y + b.val().narrow(0, 0, d_out).unsqueeze::<2>(),
                None => y,
            }
        };
        match (net, arch) {
            (Supernet::Mlp { .. }, Arch::Mlp { widths }) => {
                let mut x = x;
                let mut d = shape.inputs as usize;
                for (l, w) in self.hidden.iter().zip(widths) {
                    x = relu(sliced(l, d, *w as usize, x));
                    d = *w as usize;
                }
                sliced(&self.output, d, classes, x)
            }
            (
                Supernet::Conv {
                    channels, depth, ..
                },
                Arch::Conv { stages },
            ) => {
                let [rows, _] = x.dims();
                let side = shape.side as usize;
                let mut h = x.reshape([rows, 1, side, side]);
                h = relu(conv2d(
                    h,
                    self.stem[0].val(),
                    Some(self.stem_b[0].val()),
                    ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
                ));
                let dmax = *depth.last().unwrap_or(&1) as usize;
                for (s, blocks) in stages.iter().enumerate() {
                    for (b, (k, e)) in blocks.iter().enumerate() {
                        let blk = &self.blocks[s * dmax + b];
                        let (c_in, c_out) = block_channels(channels, s, b);
                        let hidden = c_in * *e as usize;
                        let k = *k as usize;
                        let [_, _, kmax, _] = blk.depthwise_w.val().dims();
                        let off = (kmax - k) / 2;
                        let stride = if b == 0 && s > 0 { 2 } else { 1 };
                        let y = relu(conv2d(
                            h.clone(),
                            blk.expand_w.val().slice([0..hidden, 0..c_in, 0..1, 0..1]),
                            Some(blk.expand_b.val().narrow(0, 0, hidden)),
                            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
                        ));
                        let y = relu(conv2d(
                            y,
                            blk.depthwise_w.val().slice([
                                0..hidden,
                                0..1,
                                off..off + k,
                                off..off + k,
                            ]),
                            Some(blk.depthwise_b.val().narrow(0, 0, hidden)),
                            ConvOptions::new([stride, stride], [k / 2, k / 2], [1, 1], hidden),
                        ));
                        let y = conv2d(
                            y,
                            blk.project_w.val().slice([0..c_out, 0..hidden, 0..1, 0..1]),
                            Some(blk.project_b.val()),
                            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
                        );
                        h = if stride == 1 && c_in == c_out {
                            y + h
                        } else {
                            y
                        };
                    }
                }
                let [n, c, hh, ww] = h.dims();
                let pooled = h.reshape([n, c, hh * ww]).mean_dim(2).reshape([n, c]);
                sliced(&self.output, c, classes, pooled)
            }
            _ => panic!("a sub-network of another family than its super-network"),
        }
    }

    /// Parameters sub-network `arch` uses, counted from the slices it takes.
    pub fn count_params(&self, net: &Supernet, shape: &Shape, arch: &Arch) -> u64 {
        let (inputs, classes) = (u64::from(shape.inputs), u64::from(shape.classes));
        match (net, arch) {
            (Supernet::Mlp { .. }, Arch::Mlp { widths }) => {
                let mut d = inputs;
                let mut n = 0;
                for w in widths {
                    n += d * u64::from(*w) + u64::from(*w);
                    d = u64::from(*w);
                }
                n + d * classes + classes
            }
            (Supernet::Conv { channels, .. }, Arch::Conv { stages }) => {
                let numel = |dims: [usize; 4]| dims.iter().product::<usize>() as u64;
                let stem = numel(self.stem[0].val().dims()) + u64::from(channels[0]);
                let mut n = stem;
                for (s, blocks) in stages.iter().enumerate() {
                    for (b, (k, e)) in blocks.iter().enumerate() {
                        let (c_in, c_out) = block_channels(channels, s, b);
                        let hidden = (c_in * *e as usize) as u64;
                        let (c_in, c_out) = (c_in as u64, c_out as u64);
                        let k = u64::from(*k);
                        n += hidden * c_in
                            + hidden
                            + hidden * k * k
                            + hidden
                            + c_out * hidden
                            + c_out;
                    }
                }
                n + u64::from(*channels.last().unwrap_or(&0)) * classes + classes
            }
            _ => 0,
        }
    }
}

/// What one epoch of super-network training measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SupernetEpoch {
    /// 1-based epoch.
    pub epoch: u64,
    /// Mean cross-entropy per sub-network over the epoch's steps.
    pub train_loss: f64,
    /// Validation accuracy of the largest sub-network.
    pub val_accuracy: f64,
    /// Validation accuracy of the smallest sub-network.
    pub val_accuracy_smallest: f64,
}

impl SupernetEpoch {
    /// Epoch `epoch`'s figures: its mean training loss, and the validation accuracy of
    /// the largest and the smallest sub-network of `model` on `valid`.
    fn of(
        epoch: u64,
        train_loss: f64,
        (model, net, shape): (&SuperNetwork, &Supernet, &Shape),
        [largest, smallest]: [&Arch; 2],
        valid: &Dataset,
        device: &Device,
    ) -> Self {
        let acc = |arch: &Arch| {
            correct(model, net, shape, arch, valid, device) as f64 / valid.len().max(1) as f64
        };
        Self {
            epoch,
            train_loss,
            val_accuracy: acc(largest),
            val_accuracy_smallest: acc(smallest),
        }
    }
}

/// Super-network training settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SupernetTraining {
    /// Passes over the training set.
    pub epochs: u64,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Rows per step.
    pub batch_size: usize,
    /// Random sub-networks per step besides the largest and smallest.
    pub random_subnets: usize,
}

/// The shape of `data` for `net`: a conv super-network needs square single-channel
/// images.
pub fn shape_of(net: &Supernet, data: &Dataset) -> Result<Shape, TrainError> {
    let inputs = data.n_features as u32;
    let side = match net {
        Supernet::Mlp { .. } => 0,
        Supernet::Conv { .. } => {
            let side = (f64::from(inputs).sqrt().round()) as u32;
            if side * side != inputs || side < 2 {
                return Err(TrainError::Data(format!(
                    "a conv super-network reads each row as a square image, but rows have {inputs} features"
                )));
            }
            side
        }
    };
    Ok(Shape {
        inputs,
        classes: data.n_classes as u32,
        side,
    })
}

pub(crate) fn tensors(data: &Dataset, device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let x = Tensor::<2>::from_data(
        TensorData::new(data.features.clone(), [data.len(), data.n_features]),
        device,
    );
    let y = Tensor::<1, Int>::from_data(TensorData::new(data.labels.clone(), [data.len()]), device);
    (x, y)
}

/// Correct predictions of sub-network `arch` on `data`.
pub fn correct(
    model: &SuperNetwork,
    net: &Supernet,
    shape: &Shape,
    arch: &Arch,
    data: &Dataset,
    device: &Device,
) -> i64 {
    if data.is_empty() {
        return 0;
    }
    let (x, y) = tensors(data, device);
    let pred = model
        .forward(net, shape, arch, x)
        .argmax(1)
        .flatten::<1>(0, 1);
    pred.equal(y).int().sum().into_scalar::<i64>()
}

/// Median milliseconds of sub-network `arch`'s forward pass on `x` (read back to the
/// host, so that a lazy or asynchronous device has finished), after `warmup` untimed
/// passes.
pub fn latency_ms(
    model: &SuperNetwork,
    net: &Supernet,
    shape: &Shape,
    arch: &Arch,
    x: &Tensor<2>,
    warmup: usize,
    repeats: usize,
) -> f64 {
    let run = || {
        let out = model.forward(net, shape, arch, x.clone());
        let _ = out.into_data();
    };
    for _ in 0..warmup {
        run();
    }
    tessera_core::nas_sweep::median(
        (0..repeats.max(1))
            .map(|_| {
                let t = Instant::now();
                run();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// One step's sandwich: the largest and the smallest sub-network, then `random` ones
/// drawn with `rng`.
fn sandwich(net: &Supernet, ends: [&Arch; 2], random: usize, rng: &mut Rng) -> Vec<Arch> {
    let choices = net.choices();
    let mut archs = vec![ends[0].clone(), ends[1].clone()];
    archs.extend((0..random).map(|_| {
        let genome: Genome = choices
            .iter()
            .map(|c| rng.below(u64::from(*c)) as u32)
            .collect();
        net.decode(&genome)
    }));
    archs
}

/// The summed cross-entropy of the sub-networks `archs` of `model` on `x` and `y`.
fn sandwich_loss(
    model: &SuperNetwork,
    net: &Supernet,
    shape: &Shape,
    archs: &[Arch],
    x: Tensor<2>,
    y: Tensor<1, Int>,
    loss_fn: &CrossEntropyLoss,
) -> Tensor<1> {
    archs
        .iter()
        .map(|arch| loss_fn.forward(model.forward(net, shape, arch, x.clone()), y.clone()))
        .reduce(|acc, l| acc + l)
        .expect("a sandwich holds at least the largest and the smallest sub-network")
}

/// Trains the super-network of `net` on `split.train` with the sandwich rule,
/// reporting after every epoch (`on_epoch` returns `false` to stop). Returns the model
/// and the data shape.
pub fn train_supernet(
    net: &Supernet,
    cfg: &SupernetTraining,
    split: &Split,
    seed: u64,
    device: &Device,
    on_epoch: &mut dyn FnMut(&SupernetEpoch) -> bool,
) -> Result<(SuperNetwork, Shape), TrainError> {
    if split.train.is_empty() || split.valid.is_empty() {
        return Err(TrainError::Data(
            "the training or validation split is empty".into(),
        ));
    }
    if cfg.batch_size == 0 || cfg.learning_rate.is_nan() || cfg.learning_rate <= 0.0 {
        return Err(TrainError::Config(
            "batch_size and learning_rate must be positive".into(),
        ));
    }
    let mut shape = shape_of(net, &split.train)?;
    shape.classes = split.train.n_classes.max(split.valid.n_classes) as u32;
    let ad = device.clone().autodiff();
    let mut model = SuperNetwork::init(net, &shape, derive_seed(seed, 1), &ad);
    let mut order_rng = Rng::new(derive_seed(seed, 2));
    let mut arch_rng = Rng::new(derive_seed(seed, 3));
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let (x_train, y_train) = tensors(&split.train, &ad);
    let (largest, smallest) = (net.decode(&net.largest()), net.decode(&net.smallest()));
    let n = split.train.len();
    let mut order: Vec<i64> = (0..n as i64).collect();
    let per_step = 2 + cfg.random_subnets;
    for epoch in 1..=cfg.epochs {
        order_rng.shuffle(&mut order);
        let (mut loss_sum, mut steps) = (0.0, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            let idx =
                Tensor::<1, Int>::from_data(TensorData::new(chunk.to_vec(), [chunk.len()]), &ad);
            let x = x_train.clone().select(0, idx.clone());
            let y = y_train.clone().select(0, idx);
            let archs = sandwich(
                net,
                [&largest, &smallest],
                cfg.random_subnets,
                &mut arch_rng,
            );
            let loss = sandwich_loss(&model, net, &shape, &archs, x, y, &loss_fn);
            loss_sum += f64::from(loss.clone().detach().into_scalar::<f32>()) / per_step as f64;
            steps += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.learning_rate, model, grads);
        }
        let eval = model.valid();
        let m = SupernetEpoch::of(
            epoch,
            loss_sum / steps.max(1) as f64,
            (&eval, net, &shape),
            [&largest, &smallest],
            &split.valid,
            device,
        );
        if !on_epoch(&m) {
            return Ok((eval, shape));
        }
    }
    Ok((model.valid(), shape))
}

/// Trains replica `replica` of a data-parallel super-network (`resources.workers` > 1 on
/// a `nas` sweep): the batches come from the shards as in
/// [`crate::data_parallel::train_mlp_replica`], every replica draws the same sandwich
/// sub-networks for a step (from the seed, the epoch and the step), and the gradients
/// of the replicas' rows are summed through `reducer` before one Adam step on the flat
/// parameter vector. Every replica ends with the same weights; K = 1, 2 or 4 take the
/// same steps up to the order of floating-point sums. With a `checkpoint` store the run
/// resumes and saves as [`crate::data_parallel::train_mlp_replica`] does. Returns the
/// model, the data shape, the optimizer steps taken and the epoch it resumed after.
// The MLP trainer's arguments plus the super-network's description.
#[allow(clippy::too_many_arguments)]
pub fn train_supernet_replica(
    net: &Supernet,
    cfg: &SupernetTraining,
    replica: &crate::data_parallel::Replica,
    seed: u64,
    device: &Device,
    reducer: &mut dyn crate::data_parallel::Reducer,
    mut checkpoint: Option<&mut dyn crate::data_parallel::CheckpointStore>,
    on_epoch: &mut dyn FnMut(&SupernetEpoch) -> bool,
) -> Result<(SuperNetwork, Shape, u64, u64), TrainError> {
    use crate::data_parallel::{Batches, Start, agree_to_stop, exchange_failed, restore, save};
    use crate::optim::{FlatAdam, FlatOptimizer, flat_gradient};
    let Some((_, first)) = replica.shards.first() else {
        return Err(TrainError::Data("this replica holds no shard".into()));
    };
    if replica.valid.is_empty() {
        return Err(TrainError::Data("the validation split is empty".into()));
    }
    if cfg.batch_size == 0 || cfg.learning_rate.is_nan() || cfg.learning_rate <= 0.0 {
        return Err(TrainError::Config(
            "batch_size and learning_rate must be positive".into(),
        ));
    }
    let mut shape = shape_of(net, first)?;
    shape.classes = replica
        .shards
        .iter()
        .map(|(_, d)| d.n_classes)
        .chain([replica.valid.n_classes])
        .max()
        .unwrap_or(0) as u32;
    let ad = device.clone().autodiff();
    let mut model = SuperNetwork::init(net, &shape, derive_seed(seed, 1), &ad);
    let mut optim = FlatOptimizer::Adam(Box::new(FlatAdam::new(0.0)));
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let held: Vec<(Tensor<2>, Tensor<1, Int>)> = replica
        .shards
        .iter()
        .map(|(_, d)| tensors(d, &ad))
        .collect();
    let batches = Batches::new(replica, cfg.batch_size);
    let (largest, smallest) = (net.decode(&net.largest()), net.decode(&net.smallest()));
    let per_step = 2 + cfg.random_subnets;
    // Per finished epoch: train loss, the largest and the smallest sub-network's
    // validation accuracy (and a spare figure).
    let start;
    (model, start) = restore(
        reducer,
        checkpoint.as_deref_mut(),
        model,
        &mut optim,
        cfg.epochs,
        device,
        |epoch, h| {
            on_epoch(&SupernetEpoch {
                epoch,
                train_loss: h[0],
                val_accuracy: h[1],
                val_accuracy_smallest: h[2],
            })
        },
    )?;
    let Start {
        after: resumed_from,
        mut steps,
        mut history,
        stopped,
    } = start;
    if stopped.is_some() {
        return Ok((model.valid(), shape, steps, resumed_from));
    }
    for epoch in resumed_from + 1..=cfg.epochs {
        let orders = batches.orders(seed, epoch);
        let mut loss_sum = 0.0;
        for step in 0..batches.per_epoch {
            // The same sub-networks on every replica.
            let mut arch_rng = Rng::new(derive_seed(
                seed,
                (epoch << 32) ^ ((step as u64) << 4) ^ 0x5A4D,
            ));
            let archs = sandwich(
                net,
                [&largest, &smallest],
                cfg.random_subnets,
                &mut arch_rng,
            );
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            for (pos, _, take) in batches.local(&orders, step) {
                let rows = take.len();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(take, [rows]), &ad);
                xs.push(held[pos].0.clone().select(0, idx.clone()));
                ys.push(held[pos].1.clone().select(0, idx));
            }
            let local: usize = ys.iter().map(|y| y.dims()[0]).sum();
            let mut flat = if local > 0 {
                let (x, y) = (Tensor::cat(xs, 0), Tensor::cat(ys, 0));
                // This replica's share of the global batch's mean loss, per sub-network.
                let loss = sandwich_loss(&model, net, &shape, &archs, x, y, &loss_fn)
                    .mul_scalar(local as f64 / batches.global_rows(step) as f64);
                let local_loss = loss.clone().detach().into_scalar::<f32>();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let mut g = flat_gradient(&model, &grads)
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| TrainError::Data(format!("{e:?}")))?;
                g.push(local_loss);
                g
            } else {
                vec![0.0; crate::optim::parameter_count(&model) + 1]
            };
            reducer.all_reduce_sum(&mut flat).map_err(exchange_failed)?;
            loss_sum += f64::from(flat.pop().unwrap_or(0.0)) / per_step as f64;
            let n = flat.len();
            let grad = Tensor::<1>::from_data(TensorData::new(flat, [n]), device);
            model = optim.step(cfg.learning_rate, model, grad);
            steps += 1;
        }
        let eval = model.valid();
        let m = SupernetEpoch::of(
            epoch,
            loss_sum / batches.per_epoch.max(1) as f64,
            (&eval, net, &shape),
            [&largest, &smallest],
            &replica.valid,
            device,
        );
        history.push([m.train_loss, m.val_accuracy, m.val_accuracy_smallest, 0.0]);
        if let Some(store) = checkpoint.as_deref_mut() {
            save(store, epoch, steps, &history, &model, &optim)?;
        }
        if agree_to_stop(reducer, !on_epoch(&m))? {
            return Ok((eval, shape, steps, resumed_from));
        }
    }
    Ok((model.valid(), shape, steps, resumed_from))
}

/// Rows `i` of `data` with `i % shards == shard`: one validation shard.
pub fn shard(data: &Dataset, shard: usize, shards: usize) -> Dataset {
    let rows: Vec<usize> = (0..data.len())
        .filter(|i| i % shards.max(1) == shard)
        .collect();
    let f = data.n_features;
    Dataset {
        features: rows
            .iter()
            .flat_map(|r| data.features[r * f..(r + 1) * f].iter().copied())
            .collect(),
        labels: rows.iter().map(|r| data.labels[*r]).collect(),
        n_features: f,
        n_classes: data.n_classes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn digits() -> Split {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/digits/digits.parquet");
        Dataset::from_parquet(&path).unwrap().split(0.2, 0)
    }

    fn conv() -> Supernet {
        Supernet::Conv {
            channels: vec![4, 8, 12],
            depth: vec![1, 2],
            kernel: vec![3, 5],
            expand: vec![2, 3],
        }
    }

    #[test]
    fn weights_round_trip_and_counts_match_the_core() {
        let device = Device::flex();
        let mlp = Supernet::Mlp {
            depth: vec![1, 2],
            width: vec![8, 16],
        };
        for (net, shape) in [
            (
                mlp,
                Shape {
                    inputs: 64,
                    classes: 10,
                    side: 0,
                },
            ),
            (
                conv(),
                Shape {
                    inputs: 64,
                    classes: 10,
                    side: 8,
                },
            ),
        ] {
            let model = SuperNetwork::init(&net, &shape, 3, &device);
            let flat = model.flat();
            let back = SuperNetwork::from_flat(&net, &shape, &flat, &device).unwrap();
            assert_eq!(back.flat(), flat);
            assert!(SuperNetwork::from_flat(&net, &shape, &flat[1..], &device).is_err());
            let mut rng = Rng::new(1);
            for _ in 0..20 {
                let g: Genome = net
                    .choices()
                    .iter()
                    .map(|c| rng.below(u64::from(*c)) as u32)
                    .collect();
                let arch = net.decode(&g);
                assert_eq!(
                    model.count_params(&net, &shape, &arch),
                    net.cost(&shape, &arch).1,
                    "{arch:?}"
                );
                let x = Tensor::<2>::zeros([3, 64], &device);
                assert_eq!(model.forward(&net, &shape, &arch, x).dims(), [3, 10]);
            }
        }
    }

    #[test]
    fn the_sandwich_rule_trains_every_size_at_once() {
        let split = digits();
        let net = Supernet::Mlp {
            depth: vec![1, 2],
            width: vec![8, 32],
        };
        let cfg = SupernetTraining {
            epochs: 4,
            learning_rate: 0.005,
            batch_size: 64,
            random_subnets: 1,
        };
        let device = Device::flex();
        let mut seen = Vec::new();
        let (model, shape) = train_supernet(&net, &cfg, &split, 7, &device, &mut |m| {
            seen.push(*m);
            true
        })
        .unwrap();
        let last = seen.last().unwrap();
        assert!(
            last.val_accuracy > 0.85 && last.val_accuracy_smallest > 0.6,
            "{last:?}"
        );
        assert!(last.train_loss < seen[0].train_loss);
        // Sub-networks of every size are usable without retraining; shards add up.
        let mid = net.decode(&vec![1, 0, 1]);
        let whole = correct(&model, &net, &shape, &mid, &split.valid, &device);
        let parts: i64 = (0..3)
            .map(|k| {
                correct(
                    &model,
                    &net,
                    &shape,
                    &mid,
                    &shard(&split.valid, k, 3),
                    &device,
                )
            })
            .sum();
        assert_eq!(whole, parts);
        assert!(whole as f64 / split.valid.len() as f64 > 0.6);
    }

    #[test]
    fn a_conv_supernet_learns_digits_images() {
        let split = digits();
        let cfg = SupernetTraining {
            epochs: 8,
            learning_rate: 0.01,
            batch_size: 64,
            random_subnets: 0,
        };
        let device = Device::flex();
        let mut last = None;
        train_supernet(&conv(), &cfg, &split, 1, &device, &mut |m| {
            last = Some(*m);
            true
        })
        .unwrap();
        let last = last.unwrap();
        assert!(last.val_accuracy > 0.7, "{last:?}");
    }
}
