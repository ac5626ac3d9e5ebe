//! The tiny networks of *The boundary of neural network trainability is fractal*
//! (Sohl-Dickstein, 2024), trained one grid point at a time with plain loops in `f64`.
//!
//! This is the straightforward implementation that the batched tile program (one tensor
//! program for thousands of grid points, coming with the `fractal` sweep kind) is tested
//! against: no tensors, no autodiff, hand-written gradients checked by finite
//! differences.

use tessera_core::rng::Rng;

/// The nonlinearity of the hidden layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `tanh(√2·z)`.
    Tanh,
    /// `√2·relu(z)`.
    Relu,
    /// `z` (a deep linear network).
    Identity,
}

impl Activation {
    fn f(self, z: f64) -> f64 {
        match self {
            Activation::Tanh => (std::f64::consts::SQRT_2 * z).tanh(),
            Activation::Relu => std::f64::consts::SQRT_2 * z.max(0.0),
            Activation::Identity => z,
        }
    }

    fn df(self, z: f64) -> f64 {
        match self {
            Activation::Tanh => {
                let t = (std::f64::consts::SQRT_2 * z).tanh();
                std::f64::consts::SQRT_2 * (1.0 - t * t)
            }
            Activation::Relu => {
                if z > 0.0 {
                    std::f64::consts::SQRT_2
                } else {
                    0.0
                }
            }
            Activation::Identity => 1.0,
        }
    }

    /// The paper's dataset size for this activation: the parameter count for tanh and
    /// relu, the input width for the linear network.
    pub fn dataset_size(self, n: usize, width: usize) -> usize {
        match self {
            Activation::Identity => n,
            _ => n * width + width,
        }
    }
}

/// One problem shared by every grid point: initial weights, inputs and targets.
#[derive(Debug, Clone, PartialEq)]
pub struct FractalProblem {
    /// Input width `n`.
    pub n: usize,
    /// Hidden width.
    pub width: usize,
    /// Hidden nonlinearity.
    pub activation: Activation,
    /// Initial input weights, `width × n`, row-major.
    pub w0: Vec<f64>,
    /// Initial output weights, `width`.
    pub w1: Vec<f64>,
    /// Inputs, `rows × n`.
    pub x: Vec<f64>,
    /// Targets, `rows`.
    pub t: Vec<f64>,
}

impl FractalProblem {
    /// Weights, inputs and targets drawn from N(0, 1) with `seed`.
    pub fn new(n: usize, width: usize, activation: Activation, rows: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut draw = |k: usize| (0..k).map(|_| rng.normal()).collect::<Vec<f64>>();
        let w0 = draw(width * n);
        let w1 = draw(width);
        let x = draw(rows * n);
        let t = draw(rows);
        Self {
            n,
            width,
            activation,
            w0,
            w1,
            x,
            t,
        }
    }

    /// Rows of data.
    pub fn rows(&self) -> usize {
        self.t.len()
    }

    /// Mean squared error and its gradients `(loss, dW0, dW1)` at weights `(w0, w1)`,
    /// for the mean-field network `y = (1/width)·W1·σ(W0·x/√n)`.
    pub fn loss_and_grads(&self, w0: &[f64], w1: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
        let (n, width, rows) = (self.n, self.width, self.rows());
        let scale = 1.0 / (n as f64).sqrt();
        let mut g0 = vec![0.0; width * n];
        let mut g1 = vec![0.0; width];
        let mut loss = 0.0;
        let mut pre = vec![0.0; width];
        for d in 0..rows {
            let xd = &self.x[d * n..(d + 1) * n];
            let mut y = 0.0;
            for j in 0..width {
                let z: f64 = w0[j * n..(j + 1) * n]
                    .iter()
                    .zip(xd)
                    .map(|(w, x)| w * x)
                    .sum::<f64>()
                    * scale;
                pre[j] = z;
                y += w1[j] * self.activation.f(z);
            }
            y /= width as f64;
            let err = y - self.t[d];
            loss += err * err;
            let dy = 2.0 * err / rows as f64;
            for j in 0..width {
                g1[j] += dy * self.activation.f(pre[j]) / width as f64;
                let dz = dy * w1[j] / width as f64 * self.activation.df(pre[j]) * scale;
                for (g, x) in g0[j * n..(j + 1) * n].iter_mut().zip(xd) {
                    *g += dz * x;
                }
            }
        }
        (loss / rows as f64, g0, g1)
    }

    /// Full-batch gradient descent from the shared initial weights with one learning
    /// rate per layer; returns the loss before each of the `steps` updates (stopping
    /// early, padded with infinity, once the loss is no longer finite).
    pub fn train_point(&self, lr0: f64, lr1: f64, steps: usize) -> Vec<f64> {
        let (mut w0, mut w1) = (self.w0.clone(), self.w1.clone());
        let mut losses = Vec::with_capacity(steps);
        for _ in 0..steps {
            let (loss, g0, g1) = self.loss_and_grads(&w0, &w1);
            losses.push(loss);
            if !loss.is_finite() {
                losses.resize(steps, f64::INFINITY);
                break;
            }
            w0.iter_mut().zip(&g0).for_each(|(w, g)| *w -= lr0 * g);
            w1.iter_mut().zip(&g1).for_each(|(w, g)| *w -= lr1 * g);
        }
        losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::fractal::{Raster, box_count, point_value};

    #[test]
    fn gradients_match_finite_differences() {
        for act in [Activation::Tanh, Activation::Relu, Activation::Identity] {
            let p = FractalProblem::new(4, 3, act, 7, 1);
            let (_, g0, g1) = p.loss_and_grads(&p.w0, &p.w1);
            let h = 1e-6;
            for i in 0..p.w0.len() {
                let (mut a, mut b) = (p.w0.clone(), p.w0.clone());
                a[i] += h;
                b[i] -= h;
                let fd =
                    (p.loss_and_grads(&a, &p.w1).0 - p.loss_and_grads(&b, &p.w1).0) / (2.0 * h);
                assert!(
                    (fd - g0[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{act:?} w0[{i}]: {fd} vs {}",
                    g0[i]
                );
            }
            for j in 0..p.w1.len() {
                let (mut a, mut b) = (p.w1.clone(), p.w1.clone());
                a[j] += h;
                b[j] -= h;
                let fd =
                    (p.loss_and_grads(&p.w0, &a).0 - p.loss_and_grads(&p.w0, &b).0) / (2.0 * h);
                assert!(
                    (fd - g1[j]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{act:?} w1[{j}]: {fd} vs {}",
                    g1[j]
                );
            }
        }
    }

    #[test]
    fn a_learning_rate_grid_has_trainable_and_diverging_regions_with_a_boundary() {
        let p = FractalProblem::new(
            8,
            8,
            Activation::Tanh,
            Activation::Tanh.dataset_size(8, 8),
            0,
        );
        let side = 24;
        let mut values = Vec::with_capacity(side * side);
        for yi in 0..side {
            for xi in 0..side {
                // log10 lr from -1 to 3 on both axes.
                let lr0 = 10f64.powf(-1.0 + 4.0 * xi as f64 / (side - 1) as f64);
                let lr1 = 10f64.powf(-1.0 + 4.0 * yi as f64 / (side - 1) as f64);
                values.push(point_value(&p.train_point(lr0, lr1, 100)));
            }
        }
        let trainable = values.iter().filter(|v| **v < 0.0).count();
        assert!(
            trainable > 0 && trainable < values.len(),
            "{trainable} of {}",
            values.len()
        );
        // Small learning rates train; the largest ones diverge.
        assert!(values[0] < 0.0 && values[values.len() - 1] > 0.0);
        assert!(
            box_count(
                &Raster {
                    width: side,
                    height: side,
                    values
                },
                4
            )
            .is_some()
        );
    }
}
