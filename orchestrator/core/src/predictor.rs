//! Cheap predictors of an objective from a genome, for LINAS (the NAS sweep's
//! predictor-guided search): ridge regression and RBF kernel ridge regression on one-hot
//! encoded genes, one chosen with its regularisation by k-fold cross-validation on the
//! mean absolute percentage error, as the reference (DyNAS-T) chooses between ridge and
//! RBF support-vector regression. Kernel ridge stands in for the SVR: the same RBF
//! model family, with a closed-form fit.

use crate::linalg::solve_spd;
use crate::moo::Genome;

/// One-hot features of a genome: one column per (gene, value).
pub fn one_hot(choices: &[u32], g: &Genome) -> Vec<f64> {
    let mut x = vec![0.0; choices.iter().map(|c| *c as usize).sum()];
    let mut at = 0;
    for (v, c) in g.iter().zip(choices) {
        x[at + (*v as usize).min(*c as usize - 1)] = 1.0;
        at += *c as usize;
    }
    x
}

/// A fitted model.
#[derive(Debug, Clone, PartialEq)]
pub enum Model {
    /// `y = mean + w·x`.
    Ridge {
        /// Weights.
        w: Vec<f64>,
        /// Feature means (the fit is centred).
        x_mean: Vec<f64>,
        /// Target mean.
        mean: f64,
        /// Regularisation.
        lambda: f64,
    },
    /// `y = mean + Σ α_i exp(−γ‖x − x_i‖²)`.
    Rbf {
        /// Training inputs.
        xs: Vec<Vec<f64>>,
        /// Dual weights.
        alpha: Vec<f64>,
        /// Target mean.
        mean: f64,
        /// Kernel width.
        gamma: f64,
        /// Regularisation.
        lambda: f64,
    },
}

impl Model {
    /// The prediction at features `x`.
    pub fn predict(&self, x: &[f64]) -> f64 {
        match self {
            Model::Ridge {
                w, x_mean, mean, ..
            } => {
                mean + w
                    .iter()
                    .zip(x.iter().zip(x_mean))
                    .map(|(w, (x, m))| w * (x - m))
                    .sum::<f64>()
            }
            Model::Rbf {
                xs,
                alpha,
                mean,
                gamma,
                ..
            } => {
                mean + xs
                    .iter()
                    .zip(alpha)
                    .map(|(xi, a)| a * (-gamma * sq_dist(x, xi)).exp())
                    .sum::<f64>()
            }
        }
    }

    /// `ridge(λ)` or `rbf(γ, λ)`.
    pub fn describe(&self) -> String {
        match self {
            Model::Ridge { lambda, .. } => format!("ridge(lambda={lambda})"),
            Model::Rbf { gamma, lambda, .. } => format!("rbf(gamma={gamma:.4}, lambda={lambda})"),
        }
    }
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Ridge regression of `ys` on `xs` with penalty `lambda`.
pub fn fit_ridge(xs: &[Vec<f64>], ys: &[f64], lambda: f64) -> Option<Model> {
    let (n, d) = (xs.len(), xs.first()?.len());
    let mean = ys.iter().sum::<f64>() / n as f64;
    let x_mean: Vec<f64> = (0..d)
        .map(|j| xs.iter().map(|x| x[j]).sum::<f64>() / n as f64)
        .collect();
    let mut a = vec![0.0; d * d];
    let mut b = vec![0.0; d];
    for (x, y) in xs.iter().zip(ys) {
        let c: Vec<f64> = x.iter().zip(&x_mean).map(|(x, m)| x - m).collect();
        for i in 0..d {
            b[i] += c[i] * (y - mean);
            for j in 0..d {
                a[i * d + j] += c[i] * c[j];
            }
        }
    }
    for i in 0..d {
        a[i * d + i] += lambda;
    }
    let w = solve_spd(a, b, d)?;
    Some(Model::Ridge {
        w,
        x_mean,
        mean,
        lambda,
    })
}

/// RBF kernel ridge regression of `ys` on `xs`.
pub fn fit_rbf(xs: &[Vec<f64>], ys: &[f64], gamma: f64, lambda: f64) -> Option<Model> {
    let n = xs.len();
    let mean = ys.iter().sum::<f64>() / n.max(1) as f64;
    let mut k = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = (-gamma * sq_dist(&xs[i], &xs[j])).exp();
            k[i * n + j] = v;
            k[j * n + i] = v;
        }
        k[i * n + i] += lambda;
    }
    let alpha = solve_spd(k, ys.iter().map(|y| y - mean).collect(), n)?;
    Some(Model::Rbf {
        xs: xs.to_vec(),
        alpha,
        mean,
        gamma,
        lambda,
    })
}

/// Mean absolute percentage error of `model` on `(xs, ys)`.
pub fn mape(model: &Model, xs: &[Vec<f64>], ys: &[f64]) -> f64 {
    let n = xs.len().max(1) as f64;
    xs.iter()
        .zip(ys)
        .map(|(x, y)| ((model.predict(x) - y) / y.abs().max(1e-12)).abs())
        .sum::<f64>()
        / n
        * 100.0
}

/// The most training points a predictor is fitted on (kernel ridge is cubic in them).
pub const RBF_MAX_POINTS: usize = 400;

/// Fits ridge regression (λ ∈ {0.01, 0.1, 1, 10}) and RBF kernel ridge (γ ∈ {0.5, 1,
/// 2}/genes, λ ∈ {0.01, 0.1}) and returns the candidate with the lowest `folds`-fold
/// cross-validated MAPE, refitted on its training points. Beyond [`RBF_MAX_POINTS`]
/// points only the most recent ones are used (in a search, the ones nearest the front).
pub fn fit_best(xs: &[Vec<f64>], ys: &[f64], genes: usize, folds: usize) -> Option<Model> {
    let skip = xs.len().saturating_sub(RBF_MAX_POINTS);
    let (xs, ys) = (&xs[skip..], &ys[skip..]);
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let folds = folds.clamp(2, n);
    type Fit = Box<dyn Fn(&[Vec<f64>], &[f64]) -> Option<Model>>;
    let mut candidates: Vec<Fit> = Vec::new();
    for lambda in [0.01, 0.1, 1.0, 10.0] {
        candidates.push(Box::new(move |x, y| fit_ridge(x, y, lambda)));
    }
    for g in [0.5, 1.0, 2.0] {
        for lambda in [0.01, 0.1] {
            let gamma = g / genes.max(1) as f64;
            candidates.push(Box::new(move |x, y| fit_rbf(x, y, gamma, lambda)));
        }
    }
    let mut best: Option<(f64, usize)> = None;
    for (c, fit) in candidates.iter().enumerate() {
        let mut err = 0.0;
        for f in 0..folds {
            let (mut tx, mut ty, mut vx, mut vy) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for i in 0..n {
                if i % folds == f {
                    vx.push(xs[i].clone());
                    vy.push(ys[i]);
                } else {
                    tx.push(xs[i].clone());
                    ty.push(ys[i]);
                }
            }
            err += fit(&tx, &ty).map_or(f64::INFINITY, |m| mape(&m, &vx, &vy));
        }
        if best.is_none_or(|(e, _)| err < e) {
            best = Some((err, c));
        }
    }
    let (_, c) = best?;
    candidates[c](xs, ys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn ridge_recovers_an_additive_function_and_rbf_an_interaction() {
        let choices = vec![3u32; 6];
        let mut rng = Rng::new(1);
        let genomes: Vec<Genome> = (0..150)
            .map(|_| {
                choices
                    .iter()
                    .map(|c| rng.below(u64::from(*c)) as u32)
                    .collect()
            })
            .collect();
        let xs: Vec<Vec<f64>> = genomes.iter().map(|g| one_hot(&choices, g)).collect();
        let additive: Vec<f64> = genomes
            .iter()
            .map(|g| 50.0 + g.iter().map(|v| f64::from(*v)).sum::<f64>())
            .collect();
        let m = fit_best(&xs[..120], &additive[..120], 6, 5).unwrap();
        assert!(
            mape(&m, &xs[120..], &additive[120..]) < 0.5,
            "{}",
            m.describe()
        );
        // An interaction ridge cannot express: cross-validation picks the kernel.
        let inter: Vec<f64> = genomes
            .iter()
            .map(|g| 50.0 + 10.0 * f64::from(u8::from(g[0] == g[1])))
            .collect();
        let m = fit_best(&xs[..120], &inter[..120], 6, 5).unwrap();
        assert!(matches!(m, Model::Rbf { .. }), "{}", m.describe());
        assert!(
            mape(&m, &xs[120..], &inter[120..]) < 5.0,
            "{}",
            m.describe()
        );
    }
}
