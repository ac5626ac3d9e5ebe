//! Fractal tile throughput in network-steps per second (one network trained one full-batch
//! step = one network-step): the batched tile program on the Flex backend, in float64 and
//! float32, against training the same points one at a time with plain loops.
//!
//! Run: `cargo bench --profile dev --workspace --bench fractal_tile -- [--side N] [--steps N]`.
//! The JAX `vmap` and PyTorch comparison of the fractal issue comes with its sweep kind.

use std::time::Instant;

use tessera_experiments::fractal::{Activation, FractalProblem, Precision, train_tile};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (side, steps) = (arg("--side", 32), arg("--steps", 100));
    let (n, width) = (16, 16);
    let problem = FractalProblem::new(
        n,
        width,
        Activation::Tanh,
        Activation::Tanh.dataset_size(n, width),
        0,
    );
    let lrs: Vec<(f64, f64)> = (0..side * side)
        .map(|i| {
            let at = |k: usize| 10f64.powf(-1.0 + 4.0 * k as f64 / (side - 1) as f64);
            (at(i % side), at(i / side))
        })
        .collect();
    let net_steps = (lrs.len() * steps) as f64;
    let device = burn::tensor::Device::flex();
    println!(
        "tile {side}x{side}, {steps} steps, tanh, {n}->{width}->1, {} rows",
        problem.rows()
    );
    let mut rates = Vec::new();
    for (name, precision) in [
        ("batched f64", Precision::F64),
        ("batched f32", Precision::F32),
    ] {
        let t = Instant::now();
        let out = train_tile(&problem, &lrs, steps, precision, &device);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(out.len() as f64, net_steps);
        println!(
            "{name:>22}: {:>10.0} network-steps/s ({secs:.2} s)",
            net_steps / secs
        );
        rates.push(net_steps / secs);
    }
    // The plain loops on a sample of the points (they are slow); same per-point work.
    let sample = lrs.len().min(64);
    let t = Instant::now();
    for (a, b) in lrs.iter().take(sample) {
        std::hint::black_box(problem.train_point(*a, *b, steps));
    }
    let loops = (sample * steps) as f64 / t.elapsed().as_secs_f64();
    println!(
        "{:>22}: {loops:>10.0} network-steps/s ({sample} points)",
        "point by point f64"
    );
    println!("batched f64 / point by point: {:.1}x", rates[0] / loops);
}
