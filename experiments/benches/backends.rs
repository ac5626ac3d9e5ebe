//! Time per step of the same three programs on Burn's Flex backend and on LibTorch
//! (burn's `tch` backend), one intra-op thread each (the driver,
//! `experiments/benchmarks/backends.py`, also pins the process to one core and times
//! plain PyTorch 2.9.0 on the same work):
//!
//! - `mlp`: one Adam step (forward, cross-entropy, backward, update) of a 64-256-256-10
//!   ReLU MLP on a batch of 64;
//! - `tile`: one full-batch step of a fractal tile (`side²` networks 16→16→1, tanh, 272
//!   rows, hand-written gradients), float32 and float64, per network-step;
//! - `pinn`: one METALIC PINN step (loss and parameter gradient, advection, XPINN terms)
//!   at the reference size.
//!
//! Prints one JSON object: milliseconds per step (median over repeats), by program and
//! backend. Run: `cargo bench --profile dev --workspace --features tessera-orchestrator/tch
//! --bench backends -- [--side 32] [--repeats 30]`.
#![allow(deprecated)] // burn 0.22's tch backend is deprecated upstream; pinned on purpose.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use tessera_core::metalic_sweep::{Family, Term};
use tessera_core::nas_sweep::median;
use tessera_core::rng::Rng;
use tessera_experiments::fractal::{Activation, FractalProblem, Precision, train_tile};
use tessera_experiments::mlp::Mlp;
use tessera_experiments::optim::{FlatAdam, flat_gradient};
use tessera_experiments::pinn::{PinnConfig, PinnProgram, Problem, init_parameters};

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median milliseconds of `f` over `repeats` runs after 3 untimed ones.
fn time(repeats: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    median(
        (0..repeats)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// Milliseconds per MLP step: the whole Adam step, and forward plus backward alone.
fn mlp_step_ms(device: &Device, repeats: usize) -> (f64, f64) {
    let ad = device.clone().autodiff();
    let mut rng = Rng::new(1);
    // Held in an Option so the step can move it into the optimizer, as training does.
    let mut model = Some(Mlp::new(64, 10, 256, 2, &mut rng, &ad));
    // The trainer's Adam (over the flat parameter vector), with PyTorch's ε.
    let mut optim = FlatAdam::new(0.0).with_epsilon(1e-8);
    let loss_fn = CrossEntropyLossConfig::new().init(&ad);
    let x: Vec<f32> = (0..64 * 64).map(|_| rng.normal() as f32).collect();
    let y: Vec<i64> = (0..64).map(|_| rng.below(10) as i64).collect();
    let x = Tensor::<2>::from_data(TensorData::new(x, [64, 64]), &ad);
    let y = Tensor::<1, Int>::from_data(TensorData::new(y, [64]), &ad);
    let step = time(repeats, || {
        let m = model
            .take()
            .expect("the model is put back after every step");
        let loss = loss_fn.forward(m.forward(x.clone(), None), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        let grad = flat_gradient(&m, &grads);
        model = Some(optim.step(1e-3, m, grad));
        // Wait for the step: read the loss back.
        let _ = loss.into_scalar::<f32>();
    });
    let model = model.expect("the model is put back after every step");
    let forward_backward = time(repeats, || {
        let loss = loss_fn.forward(model.forward(x.clone(), None), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let _ = loss.into_scalar::<f32>();
        drop(grads);
    });
    (step, forward_backward)
}

fn tile_network_step_ms(device: &Device, side: usize, precision: Precision, repeats: usize) -> f64 {
    let p = FractalProblem::new(16, 16, Activation::Tanh, 272, 3);
    let lrs: Vec<(f64, f64)> = (0..side * side)
        .map(|i| {
            let at = |k: usize| 10f64.powf(-1.0 + 4.0 * k as f64 / (side - 1) as f64);
            (at(i % side), at(i / side))
        })
        .collect();
    let steps = 10;
    let per_call = time(repeats.div_ceil(5).max(3), || {
        let _ = train_tile(&p, &lrs, steps, precision, device);
    });
    per_call / (steps * side * side) as f64
}

fn pinn_step_ms(device: &Device, repeats: usize) -> f64 {
    let cfg = PinnConfig::reference(Family::Advection, 10.0);
    let problem = Problem::new(&cfg, 1);
    let program = PinnProgram::new(&cfg, &problem, device);
    let theta = init_parameters(&cfg.hidden, 1);
    let arm = Term::Average.bit() | Term::ResidualContinuity.bit();
    time(repeats, || {
        let _ = program.loss_and_gradient(&theta, arm);
    })
}

fn main() {
    let (side, repeats) = (arg("--side", 32), arg("--repeats", 30));
    tch::set_num_threads(1);
    let mut out = serde_json::Map::new();
    for (name, device) in [("flex", Device::flex()), ("libtorch", Device::libtorch())] {
        let (mlp, mlp_fwd_bwd) = mlp_step_ms(&device, repeats);
        let r = serde_json::json!({
            "mlp_ms": mlp,
            "mlp_fwd_bwd_ms": mlp_fwd_bwd,
            "tile_f32_ms": tile_network_step_ms(&device, side, Precision::F32, repeats),
            "tile_f64_ms": tile_network_step_ms(&device, side, Precision::F64, repeats),
            "pinn_ms": pinn_step_ms(&device, repeats),
        });
        out.insert(name.into(), r);
    }
    println!("{}", serde_json::Value::Object(out));
}
