//! Time per PINN training step (loss and parameter gradient: forward-mode input-derivative
//! jets, then Burn's first-order autodiff) at the METALIC reference size: two
//! `[2, 20, 20, 1]` tanh networks, 100 boundary, 1000 collocation and 101 interface points
//! per subdomain, on Burn's Flex CPU device. Per family, with no interface terms, with the
//! XPINN-like pair and with all nine (the residual gradient needs third derivatives for
//! Poisson). Printed: the median of `--steps` timed steps after 20 untimed ones.
//!
//! Run: `cargo bench --profile dev --workspace --bench pinn_step -- [--steps 200]`.

use std::time::Instant;

use burn::tensor::Device;
use tessera_core::metalic_sweep::{Family, Term};
use tessera_core::nas_sweep::median;
use tessera_experiments::pinn::{PinnConfig, PinnProgram, Problem, init_parameters};

fn main() {
    let steps: usize = std::env::args()
        .skip_while(|a| a != "--steps")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let device = Device::flex();
    let xpinn = Term::Average.bit() | Term::ResidualContinuity.bit();
    println!("PINN step (loss + gradient), median of {steps}, Flex CPU, ms");
    println!(
        "{:<10} {:>10} {:>10} {:>10}",
        "family", "no terms", "xpinn", "all nine"
    );
    for (family, context) in [
        (Family::Advection, 10.0),
        (Family::Reaction, 5.0),
        (Family::Poisson, 10.0),
    ] {
        let cfg = PinnConfig::reference(family, context);
        let problem = Problem::new(&cfg, 1);
        let program = PinnProgram::new(&cfg, &problem, &device);
        let theta = init_parameters(&cfg.hidden, 1);
        let mut row = Vec::new();
        for arm in [0, xpinn, (1 << Term::ALL.len()) - 1] {
            for _ in 0..20 {
                program.loss_and_gradient(&theta, arm);
            }
            let times: Vec<f64> = (0..steps)
                .map(|_| {
                    let t = Instant::now();
                    program.loss_and_gradient(&theta, arm);
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            row.push(median(times));
        }
        println!(
            "{:<10} {:>10.2} {:>10.2} {:>10.2}",
            family.as_str(),
            row[0],
            row[1],
            row[2]
        );
    }
}
