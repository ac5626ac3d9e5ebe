//! The tiny networks of *The boundary of neural network trainability is fractal*
//! (Sohl-Dickstein, 2024), three ways:
//!
//! - [`FractalProblem::train_point`]: one grid point at a time with plain loops in `f64`,
//!   gradients written out and checked by finite differences. The reference the others
//!   are tested against.
//! - [`train_tile_cpu`]: the CPU program a worker runs for a tile: every point's whole
//!   training fused into one pass over contiguous per-point buffers, with hand-derived
//!   gradients and a vectorisable `tanh`, in `f64` or `f32`.
//! - [`train_tile`]: the same tile as one batched Burn tensor program, generic over the
//!   backend (the path for GPU backends).

pub use tessera_core::fractal_sweep::{Activation, Variant};
use tessera_core::rng::Rng;

const SQRT_2: f64 = std::f64::consts::SQRT_2;

fn act(a: Activation, z: f64) -> f64 {
    match a {
        Activation::Tanh => (SQRT_2 * z).tanh(),
        Activation::Relu => SQRT_2 * z.max(0.0),
        Activation::Identity => z,
    }
}

fn act_deriv(a: Activation, z: f64) -> f64 {
    match a {
        Activation::Tanh => {
            let t = (SQRT_2 * z).tanh();
            SQRT_2 * (1.0 - t * t)
        }
        Activation::Relu => {
            if z > 0.0 {
                SQRT_2
            } else {
                0.0
            }
        }
        Activation::Identity => 1.0,
    }
}

/// The paper's dataset size for `a`: the parameter count for tanh and relu, the input
/// width for the linear network.
pub fn dataset_size(a: Activation, n: usize, width: usize) -> usize {
    match a {
        Activation::Identity => n,
        _ => n * width + width,
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
    /// Minibatch size and the seed of the batch sequence; `None` for full batches.
    pub minibatch: Option<(usize, u64)>,
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
            minibatch: None,
        }
    }

    /// The same problem trained on minibatches of `batch` rows drawn with replacement,
    /// the same sequence for every grid point (drawn from `seed`).
    pub fn with_minibatches(mut self, batch: usize, seed: u64) -> Self {
        self.minibatch = Some((batch.max(1), seed));
        self
    }

    /// The rows each of `steps` updates uses: `None` for full batches, else `steps ×
    /// batch` row indices.
    pub fn batches(&self, steps: usize) -> Option<Vec<usize>> {
        let (batch, seed) = self.minibatch?;
        let mut rng = Rng::new(seed ^ 0xBA7C_4E55);
        let rows = self.rows() as u64;
        Some(
            (0..steps * batch)
                .map(|_| rng.below(rows) as usize)
                .collect(),
        )
    }

    /// Rows of data.
    pub fn rows(&self) -> usize {
        self.t.len()
    }

    /// Mean squared error and its gradients `(loss, dW0, dW1)` at weights `(w0, w1)`,
    /// for the mean-field network `y = (1/width)·W1·σ(W0·x/√n)`, over every row.
    pub fn loss_and_grads(&self, w0: &[f64], w1: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
        let all: Vec<usize> = (0..self.rows()).collect();
        self.loss_and_grads_on(w0, w1, &all)
    }

    /// [`Self::loss_and_grads`] over the rows `on` (repeats count twice).
    pub fn loss_and_grads_on(
        &self,
        w0: &[f64],
        w1: &[f64],
        on: &[usize],
    ) -> (f64, Vec<f64>, Vec<f64>) {
        let (n, width, rows) = (self.n, self.width, on.len());
        let scale = 1.0 / (n as f64).sqrt();
        let mut g0 = vec![0.0; width * n];
        let mut g1 = vec![0.0; width];
        let mut loss = 0.0;
        let mut pre = vec![0.0; width];
        for &d in on {
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
                y += w1[j] * act(self.activation, z);
            }
            y /= width as f64;
            let err = y - self.t[d];
            loss += err * err;
            let dy = 2.0 * err / rows as f64;
            for j in 0..width {
                g1[j] += dy * act(self.activation, pre[j]) / width as f64;
                let dz = dy * w1[j] / width as f64 * act_deriv(self.activation, pre[j]) * scale;
                for (g, x) in g0[j * n..(j + 1) * n].iter_mut().zip(xd) {
                    *g += dz * x;
                }
            }
        }
        (loss / rows as f64, g0, g1)
    }

    /// Gradient descent from the shared initial weights with one learning rate per
    /// layer (full-batch, or on the minibatch sequence); returns the full-batch loss
    /// before each of the `steps` updates (stopping early, padded with infinity, once the
    /// loss is no longer finite).
    pub fn train_point(&self, lr0: f64, lr1: f64, steps: usize) -> Vec<f64> {
        let (mut w0, mut w1) = (self.w0.clone(), self.w1.clone());
        let mut losses = Vec::with_capacity(steps);
        let batches = self.batches(steps);
        for step in 0..steps {
            let (loss, mut g0, mut g1) = self.loss_and_grads(&w0, &w1);
            if let (Some(b), Some((size, _))) = (&batches, self.minibatch) {
                (_, g0, g1) = self.loss_and_grads_on(&w0, &w1, &b[step * size..(step + 1) * size]);
            }
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

/// Precision of a tile's arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// 64-bit floats (the paper's default).
    F64,
    /// 32-bit floats.
    F32,
}

/// Trains every grid point of a tile at once as one batched tensor program on `device`
/// (any Burn backend): the weights of all `P` points are stacked, each step is a few
/// batched matrix products with hand-written gradients, and the losses are read back
/// once at the end. Returns each point's loss trajectory (`P × steps`, row-major), the
/// same quantity [`FractalProblem::train_point`] computes one point at a time.
pub fn train_tile(
    problem: &FractalProblem,
    lrs: &[(f64, f64)],
    steps: usize,
    precision: Precision,
    device: &burn::tensor::Device,
) -> Vec<f64> {
    use burn::tensor::{DType, Int, Tensor, TensorData};
    let (p, n, w, d) = (lrs.len(), problem.n, problem.width, problem.rows());
    if p == 0 || steps == 0 {
        return Vec::new();
    }
    let dtype = match precision {
        Precision::F64 => DType::F64,
        Precision::F32 => DType::F32,
    };
    let t2 = |v: Vec<f64>, shape: [usize; 2]| {
        Tensor::<2>::from_data(TensorData::new(v, shape), (device, dtype))
    };
    let mut w0 = t2(problem.w0.clone(), [w, n]).repeat_dim(0, p); // [P*w, n]
    let mut w1 = t2(problem.w1.clone(), [1, w]).repeat_dim(0, p); // [P, w]
    let x = t2(problem.x.clone(), [d, n]);
    let targets = t2(problem.t.clone(), [1, d]);
    let lr0 = t2(
        lrs.iter()
            .flat_map(|(a, _)| std::iter::repeat_n(*a, w))
            .collect(),
        [p * w, 1],
    );
    let lr1 = t2(lrs.iter().map(|(_, b)| *b).collect(), [p, 1]);
    let scale = 1.0 / (n as f64).sqrt();
    let sqrt2 = SQRT_2;
    let activation = problem.activation;
    // The forward pass on rows `xs` (`rows × n`): errors `[P, rows]`, hidden activations
    // and their derivatives `[P, w, rows]`.
    let forward = |w0: &Tensor<2>, w1: &Tensor<2>, xs: &Tensor<2>, ts: &Tensor<2>| {
        let rows = xs.dims()[0];
        let pre = w0
            .clone()
            .matmul(xs.clone().transpose())
            .mul_scalar(scale)
            .reshape([p, w, rows]);
        let (h, dh_dpre) = match activation {
            Activation::Tanh => {
                let th = pre.mul_scalar(sqrt2).tanh();
                let deriv = th.clone().square().neg().add_scalar(1.0).mul_scalar(sqrt2);
                (th, deriv)
            }
            Activation::Relu => {
                let mask = pre.clone().lower_equal_elem(0.0);
                let deriv = pre.ones_like().mask_fill(mask, 0.0).mul_scalar(sqrt2);
                (burn::tensor::activation::relu(pre).mul_scalar(sqrt2), deriv)
            }
            Activation::Identity => {
                let ones = pre.ones_like();
                (pre, ones)
            }
        };
        let y = w1
            .clone()
            .reshape([p, 1, w])
            .matmul(h.clone())
            .reshape([p, rows])
            .mul_scalar(1.0 / w as f64);
        (y - ts.clone(), h, dh_dpre)
    };
    let batches = problem.batches(steps);
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        let (err, h, dh_dpre) = forward(&w0, &w1, &x, &targets);
        losses.push(err.clone().square().mean_dim(1)); // [P, 1]
        let (err, h, dh_dpre, xs, rows) = match (&batches, problem.minibatch) {
            (Some(b), Some((size, _))) => {
                let idx: Vec<i64> = b[step * size..(step + 1) * size]
                    .iter()
                    .map(|i| *i as i64)
                    .collect();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [size]), device);
                let xs = x.clone().select(0, idx.clone());
                let ts = targets.clone().select(1, idx);
                let (e, h, dh) = forward(&w0, &w1, &xs, &ts);
                (e, h, dh, xs, size)
            }
            _ => (err, h, dh_dpre, x.clone(), d),
        };
        let dy = err.mul_scalar(2.0 / rows as f64); // [P, rows]
        let dw1 = dy
            .clone()
            .reshape([p, 1, rows])
            .matmul(h.swap_dims(1, 2))
            .reshape([p, w])
            .mul_scalar(1.0 / w as f64);
        let dh = w1.clone().reshape([p, w, 1]) * dy.reshape([p, 1, rows]);
        let dz = (dh * dh_dpre).mul_scalar(scale / w as f64);
        let dw0 = dz.reshape([p * w, rows]).matmul(xs);
        w0 = w0 - dw0 * lr0.clone();
        w1 = w1 - dw1 * lr1.clone();
    }
    let all = Tensor::cat(losses, 1).into_data(); // [P, steps]
    all.convert::<f64>().try_to_vec::<f64>().unwrap_or_default()
}

/// Floating-point arithmetic the fused CPU kernel runs in.
trait Real:
    Copy
    + Default
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
{
    fn of(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// `self · a + b`, fused into one instruction when `FMA` (only inside code compiled
    /// with the `fma` target feature; elsewhere `mul_add` would be a slow library call).
    fn madd<const FMA: bool>(self, a: Self, b: Self) -> Self;
    /// `tanh`, branch-free so that loops over it vectorise.
    fn tanh_v<const FMA: bool>(self) -> Self;
}

impl Real for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn madd<const FMA: bool>(self, a: Self, b: Self) -> Self {
        if FMA {
            self.mul_add(a, b)
        } else {
            self * a + b
        }
    }
    #[inline(always)]
    fn tanh_v<const FMA: bool>(self) -> Self {
        tanh_impl::<FMA>(self)
    }
}

impl Real for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn madd<const FMA: bool>(self, a: Self, b: Self) -> Self {
        if FMA {
            self.mul_add(a, b)
        } else {
            self * a + b
        }
    }
    #[inline(always)]
    fn tanh_v<const FMA: bool>(self) -> Self {
        tanh_impl::<FMA>(f64::from(self)) as f32
    }
}

/// `1/k!` for `k` = 0, 1, …, 15.
const INV_FACTORIAL: [f64; 16] = {
    let mut t = [1.0; 16];
    let mut k = 1;
    while k < 16 {
        t[k] = t[k - 1] / k as f64;
        k += 1;
    }
    t
};

/// `Σ c_k x^k` for `c` in ascending order, by Horner's rule.
#[inline(always)]
fn horner<const FMA: bool>(x: f64, c: &[f64]) -> f64 {
    let mut acc = 0.0;
    for ck in c.iter().rev() {
        acc = acc.madd::<FMA>(x, *ck);
    }
    acc
}

/// `e^x` for `x` in [0, 60], to about one unit in the last place, without branches or
/// calls (so that a loop over it vectorises): `x = k·ln 2 + r` with `|r| ≤ ln 2 / 2`,
/// `e^r` by its Taylor series to degree 13 (truncation error below 5e-18), and `2^k` put
/// into the exponent bits.
#[inline(always)]
fn exp_small<const FMA: bool>(x: f64) -> f64 {
    const SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52: adding it rounds to an integer
    // ln 2 split in a high part with trailing zero bits (k·LN2_HI is exact) and the rest.
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    let t = x * std::f64::consts::LOG2_E + SHIFT;
    let k = t - SHIFT;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // e^r = Σ_{k=0}^{13} r^k / k!
    let p = horner::<FMA>(r, &INV_FACTORIAL[..=13]);
    let two_k = f64::from_bits(t.to_bits().wrapping_sub(SHIFT.to_bits()).wrapping_add(1023) << 52);
    p * two_k
}

/// `tanh(x)` to a few units in the last place, branch-free: `tanh|x| = m / (m + 2)` with
/// `m = e^{2|x|} − 1`, taken from its Taylor series (degree 15, error below 1e-18) where
/// `2|x| < 0.5` and from [`exp_small`] above; `|x|` is capped at 20, where `tanh` is 1 in
/// `f64`.
pub fn tanh(x: f64) -> f64 {
    tanh_impl::<false>(x)
}

#[inline(always)]
fn tanh_impl<const FMA: bool>(x: f64) -> f64 {
    let y = 2.0 * x.abs().min(20.0);
    // e^y − 1 = y · Σ_{k=0}^{14} y^k / (k+1)!
    let s = horner::<FMA>(y, &INV_FACTORIAL[1..=15]);
    let small = s * y;
    let big = exp_small::<FMA>(y) - 1.0;
    let m = if y < 0.5 { small } else { big };
    (m / (m + 2.0)).copysign(x)
}

/// Trains every point of a tile on the CPU and hands each point's loss trajectory
/// (`steps` full-batch losses, padded with infinity after a blow-up) to `each`, in order.
/// Same quantity as [`train_tile`] and [`FractalProblem::train_point`]; the tests hold
/// all three to agree.
///
/// How it is fast: per point, a step is one pass over the data computing the hidden
/// layer (`rows × w` by broadcasting one input column at a time over a contiguous row of
/// `W0ᵀ`), the output errors, and the gradients from the same buffers (a minibatch step
/// reuses the full-batch forward pass, which it needs for the loss anyway); `tanh` is
/// branch-free; every inner loop runs over contiguous memory of the hidden width, so the
/// compiler vectorises it. Nothing is allocated per step.
///
/// Not generic on purpose: the kernel is compiled here, with this crate's optimisation
/// level, whatever the caller's profile.
pub fn train_tile_cpu(
    problem: &FractalProblem,
    lrs: &[(f64, f64)],
    steps: usize,
    precision: Precision,
    each: &mut dyn FnMut(usize, &[f64]),
) {
    match precision {
        Precision::F64 => dispatch::<f64>(problem, lrs, steps, each),
        Precision::F32 => dispatch::<f32>(problem, lrs, steps, each),
    }
}

/// The widest instruction set this CPU has that the kernel is compiled for.
pub fn kernel_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx2";
        }
    }
    "portable"
}

#[allow(unsafe_code)]
fn dispatch<R: Real>(
    problem: &FractalProblem,
    lrs: &[(f64, f64)],
    steps: usize,
    each: impl FnMut(usize, &[f64]),
) {
    #[cfg(target_arch = "x86_64")]
    match kernel_isa() {
        // SAFETY: `kernel_isa` checked at run time that the CPU has every feature these
        // functions are compiled with.
        "avx512" => return unsafe { fused_avx512::<R>(problem, lrs, steps, each) },
        "avx2" => return unsafe { fused_avx2::<R>(problem, lrs, steps, each) },
        _ => {}
    }
    fused::<R, false>(problem, lrs, steps, each);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fused_avx2<R: Real>(
    problem: &FractalProblem,
    lrs: &[(f64, f64)],
    steps: usize,
    each: impl FnMut(usize, &[f64]),
) {
    fused::<R, true>(problem, lrs, steps, each);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
fn fused_avx512<R: Real>(
    problem: &FractalProblem,
    lrs: &[(f64, f64)],
    steps: usize,
    each: impl FnMut(usize, &[f64]),
) {
    fused::<R, true>(problem, lrs, steps, each);
}

#[inline(always)]
fn fused<R: Real, const FMA: bool>(
    problem: &FractalProblem,
    lrs: &[(f64, f64)],
    steps: usize,
    mut each: impl FnMut(usize, &[f64]),
) {
    // Widths known at compile time keep a row of the hidden layer in registers. Other
    // widths are padded with hidden units whose weights are zero: they output 0, get
    // zero gradients and stay zero, so the padded network computes the same numbers.
    match problem.width {
        0..=8 => fused_fixed::<R, FMA, 8>(problem, lrs, steps, each),
        9..=16 => fused_fixed::<R, FMA, 16>(problem, lrs, steps, each),
        17..=32 => fused_fixed::<R, FMA, 32>(problem, lrs, steps, each),
        33..=64 => fused_fixed::<R, FMA, 64>(problem, lrs, steps, each),
        65..=128 => fused_fixed::<R, FMA, 128>(problem, lrs, steps, each),
        // Wider layers are matrix products large enough for the tensor program.
        _ => {
            let precision = if std::mem::size_of::<R>() == 4 {
                Precision::F32
            } else {
                Precision::F64
            };
            let losses = train_tile(
                problem,
                lrs,
                steps,
                precision,
                &burn::tensor::Device::flex(),
            );
            for (i, l) in losses.chunks(steps.max(1)).enumerate() {
                each(i, l);
            }
        }
    }
}

#[inline(always)]
fn deriv_from_h<R: Real>(a: Activation, h: R, sqrt2: R) -> R {
    match a {
        Activation::Tanh => sqrt2 * (R::of(1.0) - h * h),
        Activation::Relu => {
            if h > R::default() {
                sqrt2
            } else {
                R::default()
            }
        }
        Activation::Identity => R::of(1.0),
    }
}

/// The fused kernel for hidden width up to `W`: each row's hidden layer, each input
/// weight's gradient accumulator and the output gradient live in `[R; W]` registers.
#[inline(always)]
fn fused_fixed<R: Real, const FMA: bool, const W: usize>(
    problem: &FractalProblem,
    lrs: &[(f64, f64)],
    steps: usize,
    mut each: impl FnMut(usize, &[f64]),
) {
    let (n, d) = (problem.n, problem.rows());
    let x: Vec<R> = problem.x.iter().map(|v| R::of(*v)).collect();
    let t: Vec<R> = problem.t.iter().map(|v| R::of(*v)).collect();
    let mut w0t0 = vec![[R::default(); W]; n];
    for (k, row) in w0t0.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate().take(problem.width) {
            *v = R::of(problem.w0[j * n + k]);
        }
    }
    let mut w10 = [R::default(); W];
    for (v, w) in w10.iter_mut().zip(&problem.w1) {
        *v = R::of(*w);
    }
    let batches = problem.batches(steps);
    let batch = problem.minibatch.map_or(d, |(b, _)| b);
    let all: Vec<usize> = (0..d).collect();
    let a = problem.activation;
    let scale = R::of(1.0 / (n as f64).sqrt());
    let sqrt2 = R::of(SQRT_2);
    let inv_w = R::of(1.0 / problem.width as f64);
    let inv_d = 1.0 / d as f64;
    let dy_scale = R::of(2.0 / batch as f64);
    let mut w0t = w0t0.clone();
    let mut h = vec![[R::default(); W]; d];
    let mut err = vec![R::default(); d];
    let mut dz = vec![[R::default(); W]; batch];
    let mut losses = vec![f64::INFINITY; steps];
    for (point, (lr0, lr1)) in lrs.iter().enumerate() {
        w0t.copy_from_slice(&w0t0);
        let mut w1 = w10;
        let neg0 = R::default() - R::of(*lr0) * scale * inv_w;
        let neg1 = R::default() - R::of(*lr1) * inv_w;
        losses.fill(f64::INFINITY);
        for (s, loss_at) in losses.iter_mut().enumerate() {
            let mut loss = 0.0f64;
            for r in 0..d {
                let mut acc = [R::default(); W];
                for (xv, wk) in x[r * n..(r + 1) * n].iter().zip(&w0t) {
                    for j in 0..W {
                        acc[j] = xv.madd::<FMA>(wk[j], acc[j]);
                    }
                }
                match a {
                    Activation::Tanh => {
                        for v in &mut acc {
                            *v = (sqrt2 * scale * *v).tanh_v::<FMA>();
                        }
                    }
                    Activation::Relu => {
                        for v in &mut acc {
                            let z = scale * *v;
                            *v = if z > R::default() {
                                sqrt2 * z
                            } else {
                                R::default()
                            };
                        }
                    }
                    Activation::Identity => {
                        for v in &mut acc {
                            *v = scale * *v;
                        }
                    }
                }
                let mut y = R::default();
                for j in 0..W {
                    y = acc[j].madd::<FMA>(w1[j], y);
                }
                h[r] = acc;
                let e = y * inv_w - t[r];
                err[r] = e;
                loss += (e * e).to_f64();
            }
            let loss = loss * inv_d;
            *loss_at = loss;
            if !loss.is_finite() {
                break;
            }
            let rows: &[usize] = match (&batches, problem.minibatch) {
                (Some(bs), Some((size, _))) => &bs[s * size..(s + 1) * size],
                _ => &all,
            };
            let mut g1 = [R::default(); W];
            for (dzr, &r) in dz.iter_mut().zip(rows) {
                let dy = dy_scale * err[r];
                for j in 0..W {
                    g1[j] = dy.madd::<FMA>(h[r][j], g1[j]);
                    dzr[j] = dy * w1[j] * deriv_from_h(a, h[r][j], sqrt2);
                }
            }
            for (k, wk) in w0t.iter_mut().enumerate() {
                let mut g = [R::default(); W];
                for (dzr, &r) in dz.iter().zip(rows) {
                    let xv = x[r * n + k];
                    for j in 0..W {
                        g[j] = xv.madd::<FMA>(dzr[j], g[j]);
                    }
                }
                for j in 0..W {
                    wk[j] = g[j].madd::<FMA>(neg0, wk[j]);
                }
            }
            for j in 0..W {
                w1[j] = g1[j].madd::<FMA>(neg1, w1[j]);
            }
        }
        each(point, &losses);
    }
}

/// Floating-point operations of one network-step of the fused kernel, counting a
/// multiply-add as two and `tanh` as none: both matrix products of the forward and
/// backward passes over `rows`, the output layer and the hidden-layer gradients.
pub fn flops_per_network_step(n: usize, width: usize, rows: usize) -> f64 {
    (2 * rows * n * width * 2 + 2 * rows * width + 4 * rows * width) as f64
}

/// A tile's per-point results: the paper's value (negative = trainable) and the first
/// step whose loss passed [`tessera_core::fractal::LOSS_CAP`] times the initial loss (or
/// stopped being finite), `-1` if none did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TileValues {
    /// Per point, row-major.
    pub values: Vec<f64>,
    /// Per point, row-major.
    pub diverged_at: Vec<i64>,
}

impl TileValues {
    /// Adds one point's loss trajectory.
    pub fn push(&mut self, losses: &[f64]) {
        use tessera_core::fractal::{LOSS_CAP, point_value};
        self.values.push(point_value(losses));
        let l0 = losses.first().copied().unwrap_or(f64::NAN);
        let at = losses
            .iter()
            .position(|l| !(l / l0).is_finite() || l / l0 > LOSS_CAP);
        self.diverged_at.push(at.map_or(-1, |t| t as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::fractal::{Raster, box_count, point_value};

    fn grid(side: usize) -> Vec<(f64, f64)> {
        (0..side * side)
            .map(|i| {
                let (xi, yi) = (i % side, i / side);
                let at = |k: usize| 10f64.powf(-1.0 + 4.0 * k as f64 / (side - 1) as f64);
                (at(xi), at(yi))
            })
            .collect()
    }

    #[test]
    fn batched_tile_matches_point_by_point_training_in_f64() {
        let device = burn::tensor::Device::flex();
        for act in [Activation::Tanh, Activation::Relu, Activation::Identity] {
            let p = FractalProblem::new(8, 8, act, dataset_size(act, 8, 8), 3);
            let lrs = grid(6);
            let tile = train_tile(&p, &lrs, 60, Precision::F64, &device);
            assert_matches_loops(&p, &lrs, 60, &tile, 8, &format!("{act:?} burn"));
        }
    }

    fn fused(
        p: &FractalProblem,
        lrs: &[(f64, f64)],
        steps: usize,
        precision: Precision,
    ) -> Vec<f64> {
        let mut out = Vec::new();
        train_tile_cpu(p, lrs, steps, precision, &mut |_, l| {
            out.extend_from_slice(l)
        });
        out
    }

    /// Points agree with the plain loops: same sign (trainable or not) everywhere, and
    /// losses at float64 rounding level for the first `exact` steps. Later, at large
    /// learning rates the dynamics are chaotic and amplify the rounding of a different
    /// summation order (measured at lr 10^2.2: 1e-16 after 4 steps, 3e-9 after 60; at lr
    /// 10^3: 5e-12 after 12), and fused multiply-adds round differently again.
    fn assert_matches_loops(
        p: &FractalProblem,
        lrs: &[(f64, f64)],
        steps: usize,
        tile: &[f64],
        exact: usize,
        what: &str,
    ) {
        assert_eq!(tile.len(), lrs.len() * steps);
        for (k, (lr0, lr1)) in lrs.iter().enumerate() {
            let one = p.train_point(*lr0, *lr1, steps);
            let batched = &tile[k * steps..(k + 1) * steps];
            assert_eq!(
                point_value(&one) < 0.0,
                point_value(batched) < 0.0,
                "{what} point {k}"
            );
            for (t, (a, b)) in one.iter().zip(batched).enumerate().take(exact) {
                if a.is_finite() && *a < 1e3 {
                    assert!(
                        (a - b).abs() <= 1e-12 * a.abs().max(1.0),
                        "{what} point {k} step {t}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn fused_cpu_kernel_matches_point_by_point_training_in_f64() {
        for act in [Activation::Tanh, Activation::Relu, Activation::Identity] {
            // Widths of the register kernel, padded (5, 40) and the tensor fallback (130).
            for width in [8, 5, 16, 40, 130] {
                let p = FractalProblem::new(8, width, act, dataset_size(act, 8, width).min(72), 3);
                let lrs = grid(6);
                let tile = fused(&p, &lrs, 60, Precision::F64);
                assert_matches_loops(
                    &p,
                    &lrs,
                    60,
                    &tile,
                    4,
                    &format!("{act:?} width {width} fused"),
                );
            }
        }
        // The minibatch variant, through both batched paths.
        let p = FractalProblem::new(8, 8, Activation::Tanh, 72, 4).with_minibatches(5, 9);
        let lrs = grid(5);
        let tile = fused(&p, &lrs, 40, Precision::F64);
        assert_matches_loops(&p, &lrs, 40, &tile, 4, "minibatch fused");
        let tile = train_tile(&p, &lrs, 40, Precision::F64, &burn::tensor::Device::flex());
        assert_matches_loops(&p, &lrs, 40, &tile, 8, "minibatch burn");
    }

    #[test]
    fn f32_tiles_agree_with_f64_on_almost_every_sign() {
        let p = FractalProblem::new(8, 8, Activation::Tanh, 72, 2);
        let lrs = grid(12);
        let values = |v: Vec<f64>| v.chunks(50).map(point_value).collect::<Vec<_>>();
        let a = values(fused(&p, &lrs, 50, Precision::F64));
        let b = values(fused(&p, &lrs, 50, Precision::F32));
        let c = values(train_tile(
            &p,
            &lrs,
            50,
            Precision::F32,
            &burn::tensor::Device::flex(),
        ));
        for other in [&b, &c] {
            let differ = a
                .iter()
                .zip(other)
                .filter(|(x, y)| (**x < 0.0) != (**y < 0.0))
                .count();
            // Only points right at the boundary may flip.
            assert!(
                differ * 20 <= a.len(),
                "{differ} of {} signs differ",
                a.len()
            );
        }
    }

    #[test]
    fn branch_free_tanh_is_accurate_to_a_few_ulp() {
        let mut worst = 0.0f64;
        for i in -200_000..=200_000 {
            let x = i as f64 * 1e-4 + 1e-9;
            let (a, b) = (tanh(x), x.tanh());
            worst = worst.max((a - b).abs() / b.abs().max(f64::MIN_POSITIVE));
        }
        assert!(worst < 1e-15, "worst relative error {worst}");
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-1e300), -1.0);
        assert_eq!(tanh(f64::INFINITY), 1.0);
        assert_eq!(tanh(0.0), 0.0);
    }

    #[test]
    fn tile_values_mark_divergence() {
        let mut v = TileValues::default();
        v.push(&[1.0, 0.5, 0.25]);
        v.push(&[1.0, 10.0, 2e6, f64::INFINITY]);
        assert_eq!(v.diverged_at, vec![-1, 2]);
        assert!(v.values[0] < 0.0 && v.values[1] > 0.0);
    }

    #[test]
    fn a_raster_in_four_tiles_equals_the_raster_in_one() {
        let device = burn::tensor::Device::flex();
        let p = FractalProblem::new(8, 8, Activation::Tanh, 72, 5);
        let lrs = grid(8);
        let whole = train_tile(&p, &lrs, 40, Precision::F64, &device);
        let mut parts = Vec::new();
        for chunk in lrs.chunks(16) {
            parts.extend(train_tile(&p, chunk, 40, Precision::F64, &device));
        }
        let values = |v: &[f64]| v.chunks(40).map(point_value).collect::<Vec<_>>();
        let (a, b) = (values(&whole), values(&parts));
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x < &0.0, y < &0.0, "point {k}");
            assert!(
                (x - y).abs() <= 1e-6 * x.abs().max(1.0),
                "point {k}: {x} vs {y}"
            );
        }
    }

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
            dataset_size(Activation::Tanh, 8, 8),
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
