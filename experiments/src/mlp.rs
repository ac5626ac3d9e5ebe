//! A multi-layer perceptron classifier and its trainer.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use tessera_core::rng::{Rng, derive_seed};

use crate::dataset::{Dataset, Split};
use crate::optim::{FlatAdam, flat_gradient};

/// The optimizer a trial trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Adam (Kingma & Ba, 2015).
    Adam,
    /// Stochastic gradient descent with momentum 0.9.
    Sgd,
}

/// Hyperparameters of one MLP training run.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpConfig {
    /// Learning rate.
    pub lr: f64,
    /// Units per hidden layer.
    pub width: usize,
    /// Hidden layers.
    pub depth: usize,
    /// Dropout probability after each hidden layer.
    pub dropout: f64,
    /// Rows per gradient step.
    pub batch_size: usize,
    /// Passes over the training set.
    pub epochs: u64,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Batches per optimizer step: their gradients are summed (and, data-parallel,
    /// exchanged between replicas) once per step. 1: a step per batch.
    pub sync_every: usize,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            width: 64,
            depth: 2,
            dropout: 0.0,
            batch_size: 32,
            epochs: 10,
            optimizer: OptimizerKind::Adam,
            weight_decay: 0.0,
            sync_every: 1,
        }
    }
}

/// What one epoch measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: u64,
    /// Mean training cross-entropy over the epoch's batches.
    pub train_loss: f64,
    /// Training accuracy over the epoch's batches.
    pub train_accuracy: f64,
    /// Validation cross-entropy.
    pub val_loss: f64,
    /// Validation accuracy.
    pub val_accuracy: f64,
}

/// Errors that end a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A hyperparameter is out of range.
    #[error("invalid hyperparameter: {0}")]
    Config(String),
    /// The dataset cannot be trained on.
    #[error("unusable dataset: {0}")]
    Data(String),
}

/// The classifier: `depth` ReLU layers of `width` units, then a linear output layer.
#[derive(Module, Debug)]
pub struct Mlp {
    hidden: Vec<Linear>,
    output: Linear,
}

/// A linear layer initialised like PyTorch's default (uniform in ±1/√fan_in) from `rng`.
fn linear(d_in: usize, d_out: usize, rng: &mut Rng, device: &Device) -> Linear {
    let bound = 1.0 / (d_in as f64).sqrt();
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
            .collect()
    };
    let weight = Tensor::<2>::from_data(TensorData::new(draw(d_in * d_out), [d_in, d_out]), device);
    let bias = Tensor::<1>::from_data(TensorData::new(draw(d_out), [d_out]), device);
    Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
    }
}

impl Mlp {
    /// A freshly initialised network.
    pub fn new(
        n_in: usize,
        n_out: usize,
        width: usize,
        depth: usize,
        rng: &mut Rng,
        device: &Device,
    ) -> Self {
        let mut hidden = Vec::with_capacity(depth);
        let mut d = n_in;
        for _ in 0..depth {
            hidden.push(linear(d, width, rng, device));
            d = width;
        }
        let output = linear(d, n_out, rng, device);
        Self { hidden, output }
    }

    /// Logits for a batch; `masks` (one per hidden layer, already scaled by 1/(1−p)) apply
    /// dropout when training.
    pub fn forward(&self, mut x: Tensor<2>, masks: Option<&[Tensor<2>]>) -> Tensor<2> {
        for (i, layer) in self.hidden.iter().enumerate() {
            x = relu(layer.forward(x));
            if let Some(m) = masks.and_then(|m| m.get(i)) {
                x = x * m.clone();
            }
        }
        self.output.forward(x)
    }
}

pub(crate) fn to_tensors(data: &Dataset, device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let x = Tensor::<2>::from_data(
        TensorData::new(data.features.clone(), [data.len(), data.n_features]),
        device,
    );
    let y = Tensor::<1, Int>::from_data(TensorData::new(data.labels.clone(), [data.len()]), device);
    (x, y)
}

pub(crate) fn scalar(t: Tensor<1>) -> f64 {
    f64::from(t.into_scalar::<f32>())
}

pub(crate) fn correct(logits: Tensor<2>, y: Tensor<1, Int>) -> i64 {
    let pred = logits.argmax(1).flatten::<1>(0, 1);
    pred.equal(y).int().sum().into_scalar::<i64>()
}

/// Rejects hyperparameters and data a trainer cannot use.
pub(crate) fn check(cfg: &MlpConfig, train: &Dataset, valid: &Dataset) -> Result<(), TrainError> {
    if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
        return Err(TrainError::Config(format!(
            "lr must be positive, got {}",
            cfg.lr
        )));
    }
    if !(0.0..1.0).contains(&cfg.dropout) {
        return Err(TrainError::Config(format!(
            "dropout must be in [0, 1), got {}",
            cfg.dropout
        )));
    }
    if cfg.width == 0 || cfg.batch_size == 0 {
        return Err(TrainError::Config(
            "width and batch_size must be positive".into(),
        ));
    }
    if train.is_empty() || valid.is_empty() {
        return Err(TrainError::Data(
            "the training or validation split is empty".into(),
        ));
    }
    Ok(())
}

/// Validation loss and accuracy of `model` (inner device).
pub(crate) fn evaluate(
    model: Mlp,
    x: &Tensor<2>,
    y: &Tensor<1, Int>,
    device: &Device,
) -> (f64, f64) {
    let logits = model.forward(x.clone(), None);
    let hits = correct(logits.clone(), y.clone());
    let loss = scalar(
        CrossEntropyLossConfig::new()
            .init(device)
            .forward(logits, y.clone()),
    );
    (loss, hits as f64 / y.dims()[0] as f64)
}

/// Dropout masks for `rows` rows, one per hidden layer, scaled by 1/(1−p).
pub(crate) fn dropout_masks(
    cfg: &MlpConfig,
    rows: usize,
    rng: &mut Rng,
    device: &Device,
) -> Option<Vec<Tensor<2>>> {
    let keep = 1.0 - cfg.dropout;
    (cfg.dropout > 0.0).then(|| {
        (0..cfg.depth)
            .map(|_| {
                let m: Vec<f32> = (0..rows * cfg.width)
                    .map(|_| {
                        if rng.next_f64() < keep {
                            (1.0 / keep) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect();
                Tensor::<2>::from_data(TensorData::new(m, [rows, cfg.width]), device)
            })
            .collect()
    })
}

/// Trains an MLP on `split.train`, evaluating on `split.valid` after every epoch.
/// `on_epoch` returns `false` to stop early. Weights, batch order and dropout masks are
/// drawn from `seed` alone. Returns the number of epochs run.
pub fn train_mlp(
    cfg: &MlpConfig,
    split: &Split,
    seed: u64,
    device: &Device,
    on_epoch: &mut dyn FnMut(&EpochMetrics) -> bool,
) -> Result<u64, TrainError> {
    check(cfg, &split.train, &split.valid)?;
    let ad = device.clone().autodiff();
    let mut init_rng = Rng::new(derive_seed(seed, 1));
    let mut order_rng = Rng::new(derive_seed(seed, 2));
    let mut dropout_rng = Rng::new(derive_seed(seed, 3));

    let mut model = Mlp::new(
        split.train.n_features,
        split.train.n_classes.max(split.valid.n_classes),
        cfg.width,
        cfg.depth,
        &mut init_rng,
        &ad,
    );
    let decay = (cfg.weight_decay > 0.0).then(|| WeightDecayConfig::new(cfg.weight_decay as f32));
    // Adam runs over the flat parameter vector (see `optim`); SGD is Burn's own.
    let mut adam = FlatAdam::new(cfg.weight_decay);
    let mut sgd = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .with_weight_decay(decay)
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let (x_train, y_train) = to_tensors(&split.train, &ad);
    let (x_valid, y_valid) = to_tensors(&split.valid, device);
    let n = split.train.len();
    let mut order: Vec<i64> = (0..n as i64).collect();

    for epoch in 1..=cfg.epochs {
        order_rng.shuffle(&mut order);
        let (mut loss_sum, mut hits, mut batches) = (0.0, 0i64, 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            let idx =
                Tensor::<1, Int>::from_data(TensorData::new(chunk.to_vec(), [chunk.len()]), &ad);
            let x = x_train.clone().select(0, idx.clone());
            let y = y_train.clone().select(0, idx);
            let masks = dropout_masks(cfg, chunk.len(), &mut dropout_rng, &ad);
            let logits = model.forward(x, masks.as_deref());
            hits += correct(logits.clone().detach(), y.clone());
            let loss = loss_fn.forward(logits, y);
            loss_sum += scalar(loss.clone().detach());
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = match cfg.optimizer {
                OptimizerKind::Adam => {
                    let grad = flat_gradient(&model, &grads);
                    adam.step(cfg.lr, model, grad)
                }
                OptimizerKind::Sgd => sgd.step(cfg.lr, model, grads),
            };
        }
        let (val_loss, val_accuracy) = evaluate(model.valid(), &x_valid, &y_valid, device);
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum / batches as f64,
            train_accuracy: hits as f64 / n as f64,
            val_loss,
            val_accuracy,
        };
        if !on_epoch(&metrics) {
            return Ok(epoch);
        }
    }
    Ok(cfg.epochs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn digits() -> Split {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/digits/digits.parquet");
        Dataset::from_parquet(&path).unwrap().split(0.2, 0)
    }

    #[test]
    fn digits_dataset_loads_and_splits_stratified() {
        let s = digits();
        assert_eq!(s.train.len() + s.valid.len(), 1797);
        assert_eq!(s.train.n_features, 64);
        assert_eq!(s.train.n_classes, 10);
        let per_class = (0..10).map(|c| s.valid.labels.iter().filter(|l| **l == c).count());
        for n in per_class {
            assert!((34..=37).contains(&n), "{n}");
        }
    }

    #[test]
    fn mlp_learns_digits_and_is_reproducible() {
        let split = digits();
        let cfg = MlpConfig {
            epochs: 5,
            ..MlpConfig::default()
        };
        let device = Device::flex();
        let run = || {
            let mut seen = Vec::new();
            train_mlp(&cfg, &split, 11, &device, &mut |m| {
                seen.push(*m);
                true
            })
            .unwrap();
            seen
        };
        let a = run();
        assert_eq!(a.len(), 5);
        let last = a.last().unwrap();
        assert!(last.val_accuracy > 0.9, "{last:?}");
        assert!(last.train_loss < a[0].train_loss);
        assert_eq!(a, run(), "same seed must give the same metrics");
    }

    #[test]
    fn dropout_and_sgd_train_and_stop_when_asked() {
        let split = digits();
        let cfg = MlpConfig {
            epochs: 10,
            dropout: 0.3,
            optimizer: OptimizerKind::Sgd,
            lr: 0.05,
            ..MlpConfig::default()
        };
        let mut epochs = 0;
        let ran = train_mlp(&cfg, &split, 3, &Device::flex(), &mut |m| {
            epochs += 1;
            m.epoch < 3
        })
        .unwrap();
        assert_eq!((ran, epochs), (3, 3));
    }

    #[test]
    fn bad_hyperparameters_are_errors() {
        let split = digits();
        let cfg = MlpConfig {
            lr: -1.0,
            ..MlpConfig::default()
        };
        assert!(train_mlp(&cfg, &split, 0, &Device::flex(), &mut |_| true).is_err());
    }
}
