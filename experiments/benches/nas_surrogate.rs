//! Sample efficiency of NAS tactics on a surrogate built from data no one here wrote:
//! DyNAS-T's published measurements of OFA MobileNetV3 sub-networks
//! (`../shared/data/ofa-mbv3/`, ImageNet top-1 and MACs; genes: 20 kernel sizes, 20
//! expansion ratios, 5 depths, 3 values each).
//!
//! The ground truth for any genome is the mean of its 5 nearest measured sub-networks in
//! Hamming distance (a k-nearest-neighbour model: a different family from LINAS's ridge
//! and RBF predictors, so LINAS is not flattered). Each tactic minimises (MACs, −top-1)
//! for `--budget` real evaluations over `--seeds` seeds: random search, NSGA-II
//! (population 50, every generation measured) and LINAS (population 50, its next
//! population from 200 NSGA-II generations on the predictors). Printed: the hypervolume
//! after 100, 200, … evaluations (median over seeds), and the real evaluations each tactic
//! needs to reach a target hypervolume (median; the target is 98 % of the best final
//! hypervolume any run reached).
//!
//! Run: `cargo bench --profile dev --workspace --bench nas_surrogate -- [--seeds 10] [--budget 500] [--data DIR]`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tessera_core::moo::{Genome, LinasModel, Nsga2, hypervolume, linas_next};
use tessera_core::nas_sweep::median;
use tessera_core::rng::Rng;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// The integers of the list after `key` in a Python dict literal.
fn list(s: &str, key: &str) -> Vec<u32> {
    let Some(at) = s.find(&format!("'{key}': [")) else {
        return Vec::new();
    };
    let rest = &s[at + key.len() + 5..];
    let end = rest.find(']').unwrap_or(rest.len());
    rest[..end]
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// Every distinct measured sub-network: genome (indices into {3,5,7}, {3,4,6}, {2,3,4})
/// and (MACs in millions, top-1 %).
fn load(dir: &PathBuf) -> Vec<(Genome, f64, f64)> {
    let mut out: Vec<(Genome, f64, f64)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("the ofa-mbv3 data folder (pass --data DIR)")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("reading a csv");
        for line in text.lines().skip(1) {
            let Some(close) = line.rfind("}\"") else {
                continue;
            };
            let dict = &line[..close];
            let cols: Vec<&str> = line[close + 2..].split(',').collect();
            // cols: "", Date, Model Parameters, Latency (ms), MACs, Top-1
            let (Some(macs), Some(acc)) = (
                cols.get(4).and_then(|v| v.trim().parse::<f64>().ok()),
                cols.get(5).and_then(|v| v.trim().parse::<f64>().ok()),
            ) else {
                continue;
            };
            let idx = |v: u32, of: [u32; 3]| of.iter().position(|x| *x == v).unwrap_or(0) as u32;
            let mut g: Genome = list(dict, "ks")
                .iter()
                .map(|v| idx(*v, [3, 5, 7]))
                .collect();
            g.extend(list(dict, "e").iter().map(|v| idx(*v, [3, 4, 6])));
            g.extend(list(dict, "d").iter().map(|v| idx(*v, [2, 3, 4])));
            if g.len() == 45 && seen.insert(g.clone()) {
                out.push((g, macs / 1e6, acc));
            }
        }
    }
    out
}

struct Surrogate {
    data: Vec<(Genome, f64, f64)>,
}

impl Surrogate {
    /// (MACs, −top-1) of `g`: the mean over its 5 nearest measured sub-networks.
    fn eval(&self, g: &Genome) -> Vec<f64> {
        let mut d: Vec<(u32, usize)> = self
            .data
            .iter()
            .enumerate()
            .map(|(i, (h, _, _))| (g.iter().zip(h).filter(|(a, b)| a != b).count() as u32, i))
            .collect();
        d.select_nth_unstable(4);
        let near = &d[..5];
        let macs = near.iter().map(|(_, i)| self.data[*i].1).sum::<f64>() / 5.0;
        let acc = near.iter().map(|(_, i)| self.data[*i].2).sum::<f64>() / 5.0;
        vec![macs, -acc]
    }
}

/// Hypervolume after each real evaluation.
fn run(tactic: &str, s: &Surrogate, budget: usize, seed: u64, reference: &[f64]) -> Vec<f64> {
    let algo = Nsga2::new(vec![3; 45], 50);
    let mut rng = Rng::new(seed);
    let mut measured: Vec<(Genome, Vec<f64>)> = Vec::new();
    let mut seen: BTreeSet<Genome> = BTreeSet::new();
    let mut parents: Vec<(Genome, Vec<f64>)> = Vec::new();
    while measured.len() < budget {
        let batch = match tactic {
            "random" => (0..50).map(|_| algo.random(&mut rng)).collect(),
            "nsga2" => algo.offspring(&parents, &seen, &mut rng),
            _ if measured.is_empty() => algo.offspring(&[], &seen, &mut rng),
            _ => linas_next(&algo, &measured, &LinasModel::plain(200), &mut rng)
                .into_iter()
                .map(|(g, _)| g)
                .collect(),
        };
        for g in batch {
            if measured.len() >= budget || !seen.insert(g.clone()) {
                continue;
            }
            let o = s.eval(&g);
            measured.push((g, o));
        }
        parents = algo.select(&measured);
    }
    let mut hv = Vec::with_capacity(budget);
    let mut pts: Vec<Vec<f64>> = Vec::new();
    for (_, o) in &measured {
        pts.push(o.clone());
        hv.push(hypervolume(&pts, reference));
    }
    hv
}

fn main() {
    let dir = arg("--data").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ofa-mbv3"),
        PathBuf::from,
    );
    let seeds: u64 = arg("--seeds").and_then(|v| v.parse().ok()).unwrap_or(10);
    let budget: usize = arg("--budget").and_then(|v| v.parse().ok()).unwrap_or(500);
    let data = load(&dir);
    let max_macs = data.iter().map(|d| d.1).fold(0.0, f64::max);
    let min_acc = data.iter().map(|d| d.2).fold(f64::INFINITY, f64::min);
    let reference = [max_macs, -min_acc];
    println!(
        "{} distinct measured sub-networks; reference point: {max_macs:.0} M MACs, {min_acc:.2} % top-1; budget {budget}, {seeds} seeds",
        data.len()
    );
    let s = Surrogate { data };
    let tactics = ["random", "nsga2", "linas"];
    let runs: Vec<Vec<Vec<f64>>> = tactics
        .iter()
        .map(|t| {
            (0..seeds)
                .map(|seed| run(t, &s, budget, seed, &reference))
                .collect()
        })
        .collect();
    let best = runs
        .iter()
        .flatten()
        .map(|hv| hv[hv.len() - 1])
        .fold(0.0, f64::max);
    let target = 0.98 * best;
    print!("{:>8}", "evals");
    for t in tactics {
        print!("{t:>12}");
    }
    println!();
    for at in (100..=budget).step_by(100) {
        print!("{at:>8}");
        for r in &runs {
            print!("{:>12.1}", median(r.iter().map(|hv| hv[at - 1]).collect()));
        }
        println!();
    }
    println!(
        "target hypervolume {target:.1} (98 % of the best run's final {best:.1}); real evaluations to reach it, median over seeds (runs that never reach it count as {budget}+):"
    );
    for (t, r) in tactics.iter().zip(&runs) {
        let need: Vec<f64> = r
            .iter()
            .map(|hv| {
                hv.iter()
                    .position(|v| *v >= target)
                    .map_or(budget as f64 + 1.0, |i| i as f64 + 1.0)
            })
            .collect();
        let reached = need.iter().filter(|n| **n <= budget as f64).count();
        println!(
            "{t:>8}: {:>6.0} (reached in {reached} of {seeds} seeds)",
            median(need)
        );
    }
}
