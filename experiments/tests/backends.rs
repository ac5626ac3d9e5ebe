//! The shared backend suite: every training program gives the same results, within
//! floating-point tolerance, on Burn's pure-Rust Flex backend and on LibTorch (burn's
//! `tch` backend), for the same seed and data. Built only with `--features tch` (after
//! `bash tests/libtorch.sh`; `.ci/run` runs it as its own step).
#![cfg(feature = "tch")]
#![allow(deprecated)] // burn 0.22's tch backend is deprecated upstream; pinned on purpose.

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use tessera_core::metalic_sweep::{Family, Term};
use tessera_core::nas_sweep::Supernet;
use tessera_experiments::fractal::{
    Activation, FractalProblem, Precision, dataset_size, train_tile,
};
use tessera_experiments::pinn::{PinnConfig, PinnProgram, Problem, init_parameters};
use tessera_experiments::supernet::{SuperNetwork, shape_of};
use tessera_experiments::{Dataset, MlpConfig, OptimizerKind, train_mlp};

fn backends() -> [(&'static str, Device); 2] {
    let torch = Device::libtorch();
    // Not Flex twice: the second device really is LibTorch's.
    assert!(format!("{torch:?}").contains("LibTorch"), "{torch:?}");
    [("flex", Device::flex()), ("libtorch", torch)]
}

fn digits() -> Dataset {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/digits/digits.parquet");
    Dataset::from_parquet(&p).unwrap()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * (1.0 + a.abs().max(b.abs()))
}

/// The quick-start MLP, three epochs of Adam on the digits: the same losses and
/// accuracies per epoch.
#[test]
fn the_mlp_trains_alike() {
    let split = digits().split(0.2, 0);
    let cfg = MlpConfig {
        width: 32,
        depth: 2,
        epochs: 3,
        lr: 3e-3,
        optimizer: OptimizerKind::Adam,
        ..MlpConfig::default()
    };
    let runs: Vec<Vec<(f64, f64, f64)>> = backends()
        .iter()
        .map(|(_, d)| {
            let mut v = Vec::new();
            train_mlp(&cfg, &split, 7, d, &mut |m| {
                v.push((m.train_loss, m.val_loss, m.val_accuracy));
                true
            })
            .unwrap();
            v
        })
        .collect();
    for (e, (f, t)) in runs[0].iter().zip(&runs[1]).enumerate() {
        assert!(
            close(f.0, t.0, 1e-3) && close(f.1, t.1, 1e-3),
            "epoch {e}: flex {f:?} libtorch {t:?}"
        );
        assert!(
            (f.2 - t.2).abs() <= 2.0 / 360.0,
            "epoch {e}: accuracy {f:?} vs {t:?}"
        );
    }
}

/// A PINN step (loss and parameter gradient through the input-derivative jets), for
/// each family with every interface term on.
#[test]
fn the_pinn_step_is_the_same() {
    for (family, c) in [
        (Family::Advection, 10.0),
        (Family::Reaction, 5.0),
        (Family::Poisson, 10.0),
    ] {
        let cfg = PinnConfig::reference(family, c);
        let problem = Problem::new(&cfg, 3);
        let theta = init_parameters(&cfg.hidden, 3);
        let all = (1 << Term::ALL.len()) - 1;
        let out: Vec<(f64, Vec<f32>, f64)> = backends()
            .iter()
            .map(|(_, d)| {
                let p = PinnProgram::new(&cfg, &problem, d);
                let (l, g) = p.loss_and_gradient(&theta, all);
                (l, g, p.error(&theta))
            })
            .collect();
        assert!(
            close(out[0].0, out[1].0, 1e-4),
            "{family:?} loss {} vs {}",
            out[0].0,
            out[1].0
        );
        assert!(close(out[0].2, out[1].2, 1e-4), "{family:?} error");
        let norm = out[0]
            .1
            .iter()
            .map(|g| f64::from(*g).powi(2))
            .sum::<f64>()
            .sqrt();
        let diff = out[0]
            .1
            .iter()
            .zip(&out[1].1)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            diff <= 1e-4 * (1.0 + norm),
            "{family:?} gradient differs by {diff} (norm {norm})"
        );
    }
}

/// A fractal tile's batched tensor program (float64): the same loss trajectories, so the
/// same trainable-or-not raster.
#[test]
fn the_fractal_tile_program_is_the_same() {
    let p = FractalProblem::new(
        8,
        8,
        Activation::Tanh,
        dataset_size(Activation::Tanh, 8, 8),
        3,
    );
    let lrs: Vec<(f64, f64)> = (0..64)
        .map(|i| {
            (
                10f64.powf(-1.0 + 4.0 * (i % 8) as f64 / 7.0),
                10f64.powf(-1.0 + 4.0 * (i / 8) as f64 / 7.0),
            )
        })
        .collect();
    let [a, b] = backends().map(|(_, d)| train_tile(&p, &lrs, 40, Precision::F64, &d));
    assert_eq!(a.len(), b.len());
    let steps = 40;
    for k in 0..lrs.len() {
        let (x, y) = (a[k * steps + steps - 1], b[k * steps + steps - 1]);
        let (fx, fy) = (x.is_finite() && x < 1e3, y.is_finite() && y < 1e3);
        assert_eq!(fx, fy, "point {k}: flex {x} libtorch {y}");
        // The first steps agree to float64 rounding (later chaotic points amplify it).
        for s in 0..4 {
            assert!(
                close(a[k * steps + s], b[k * steps + s], 1e-9),
                "point {k} step {s}"
            );
        }
    }
}

/// The NAS super-network: the same weights give the same logits for the largest and
/// smallest sub-networks, mlp and conv.
#[test]
fn supernet_forward_is_the_same() {
    let data = digits();
    for net in [
        Supernet::Mlp {
            depth: vec![1, 2],
            width: vec![16, 32],
        },
        Supernet::Conv {
            channels: vec![8, 16],
            depth: vec![1, 2],
            kernel: vec![3, 5],
            expand: vec![2, 4],
        },
    ] {
        let shape = shape_of(&net, &data).unwrap();
        let flex = SuperNetwork::init(&net, &shape, 5, &Device::flex());
        let weights = flex.flat();
        let rows = 16;
        let x: Vec<f32> = data.features[..rows * data.n_features].to_vec();
        for g in [net.largest(), net.smallest()] {
            let arch = net.decode(&g);
            let outs: Vec<Vec<f32>> = backends()
                .iter()
                .map(|(_, d)| {
                    let m = SuperNetwork::from_flat(&net, &shape, &weights, d).unwrap();
                    let t = Tensor::<2>::from_data(
                        TensorData::new(x.clone(), [rows, data.n_features]),
                        d,
                    );
                    m.forward(&net, &shape, &arch, t)
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap()
                })
                .collect();
            for (a, b) in outs[0].iter().zip(&outs[1]) {
                assert!(
                    close(f64::from(*a), f64::from(*b), 1e-4),
                    "{net:?}: {a} vs {b}"
                );
            }
        }
    }
}
