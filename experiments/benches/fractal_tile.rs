//! Fractal tile throughput in network-steps per second (one network trained one full-batch
//! step = one network-step): the fused CPU kernel the `fractal-tile` program runs and the
//! generic Burn tensor program (Flex backend), in float64 and float32, against training
//! the same points one at a time with plain loops.
//!
//! Run: `cargo bench --profile dev --workspace --bench fractal_tile -- [--side N] [--steps N] [--json]`.
//! `experiments/benchmarks/fractal_tile.py` runs it beside JAX and PyTorch and prints
//! the ratios.

use std::time::Instant;

use tessera_core::fractal::point_value;
use tessera_experiments::fractal::{
    Activation, FractalProblem, Precision, dataset_size, train_tile, train_tile_cpu,
};

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
    let json = std::env::args().any(|a| a == "--json");
    let (n, width) = (16, 16);
    let activation = std::env::args()
        .skip_while(|a| a != "--activation")
        .nth(1)
        .and_then(|a| Activation::parse(&a))
        .unwrap_or(Activation::Tanh);
    let problem = FractalProblem::new(
        n,
        width,
        activation,
        dataset_size(Activation::Tanh, n, width),
        0,
    );
    // The same grid as the Python contenders: 10^-1..10^3 on both axes, row-major with the
    // output layer's rate by row.
    let lrs: Vec<(f64, f64)> = (0..side * side)
        .map(|i| {
            let at = |k: usize| 10f64.powf(-1.0 + 4.0 * k as f64 / (side - 1) as f64);
            (at(i % side), at(i / side))
        })
        .collect();
    // `--problem-out FILE`: write the shared weights and data (JSON) so that the Python
    // contenders train exactly the same networks.
    if let Some(path) = std::env::args().skip_while(|a| a != "--problem-out").nth(1) {
        let list = |v: &[f64]| {
            let items: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
            format!("[{}]", items.join(","))
        };
        let json = format!(
            "{{\"n\":{n},\"width\":{width},\"w0\":{},\"w1\":{},\"x\":{},\"t\":{}}}",
            list(&problem.w0),
            list(&problem.w1),
            list(&problem.x),
            list(&problem.t)
        );
        std::fs::write(&path, json).expect("writing --problem-out");
    }
    let net_steps = (lrs.len() * steps) as f64;
    let device = burn::tensor::Device::flex();
    if !json {
        println!(
            "tile {side}x{side}, {steps} steps, {}, {n}->{width}->1, {} rows, kernel {}",
            activation.as_str(),
            problem.rows(),
            tessera_experiments::fractal::kernel_isa()
        );
    }
    let flops = tessera_experiments::fractal::flops_per_network_step(n, width, problem.rows());
    let report = |name: &str, precision: &str, secs: f64, values: &[f64]| {
        let rate = net_steps / secs;
        if json {
            let signs: String = values
                .iter()
                .map(|v| if *v < 0.0 { '1' } else { '0' })
                .collect();
            println!(
                "{{\"name\":\"{name}\",\"precision\":\"{precision}\",\"secs\":{secs},\"net_steps\":{net_steps},\"signs\":\"{signs}\"}}"
            );
        } else {
            println!(
                "{name:>22} {precision}: {rate:>10.0} network-steps/s ({secs:.2} s, {:.1} GFLOP/s without tanh)",
                rate * flops / 1e9
            );
        }
        rate
    };
    let mut fused_f64 = 0.0;
    for (label, precision) in [("f64", Precision::F64), ("f32", Precision::F32)] {
        let mut values = Vec::with_capacity(lrs.len());
        let t = Instant::now();
        train_tile_cpu(&problem, &lrs, steps, precision, &mut |_, l| {
            values.push(point_value(l))
        });
        let r = report("tessera fused", label, t.elapsed().as_secs_f64(), &values);
        if precision == Precision::F64 {
            fused_f64 = r;
        }
    }
    for (label, precision) in [("f64", Precision::F64), ("f32", Precision::F32)] {
        let t = Instant::now();
        let out = train_tile(&problem, &lrs, steps, precision, &device);
        let secs = t.elapsed().as_secs_f64();
        let values: Vec<f64> = out.chunks(steps).map(point_value).collect();
        report("tessera burn-flex", label, secs, &values);
    }
    if json {
        return;
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
    println!("fused f64 / point by point: {:.1}x", fused_f64 / loops);
}
