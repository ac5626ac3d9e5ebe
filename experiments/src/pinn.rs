//! Two-subdomain physics-informed networks for the `metalic` sweep kind, written once
//! against Burn's tensor API (any device).
//!
//! The domain is split at `y = ½` (time for advection and reaction) into two
//! subdomains, each with its own `[2, 20, 20, 1]` tanh network (Xavier-normal weights).
//! The loss is `w_b·boundary + w_r·residual + w_i·Σ(selected interface terms)`, as in the
//! reference (`shib0li/METALIC`, `get_loss_xcgpinn`).
//!
//! **Derivatives with respect to the inputs** are propagated forward through the layers
//! as truncated Taylor "jets": each layer maps the value and every partial derivative up
//! to the order needed (`∂x, ∂y, ∂xx, ∂xy, ∂yy`, and third order for the Poisson residual's
//! gradient) with the chain rule (Faà di Bruno for `tanh`). The loss is then an ordinary
//! function of the parameters, differentiated by Burn's first-order autodiff: no double
//! backward is needed. Points that need fewer derivatives (boundary data, collocation
//! points for a first-order PDE) get shorter jets.
//!
//! Both networks run as one batched program: weights are stacked `[2, in, out]` and every
//! tensor has a leading subdomain axis. All parameters live in one flat tensor, so Adam
//! and L-BFGS (with a backtracking line search) work on a single vector.

use std::f64::consts::PI;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use tessera_core::metalic_sweep::{Family, Term};
use tessera_core::rng::{Rng, derive_seed};

/// What a PINN trial trains.
#[derive(Debug, Clone, PartialEq)]
pub struct PinnConfig {
    /// The PDE family.
    pub family: Family,
    /// The family's parameter (β, ρ or the sharpness).
    pub context: f64,
    /// Hidden widths of each subdomain's network.
    pub hidden: Vec<usize>,
    /// Boundary (and initial-condition) points per subdomain.
    pub boundary: usize,
    /// Collocation points per subdomain (Latin hypercube).
    pub collocation: usize,
    /// Interface points.
    pub interface: usize,
    /// Weights of the boundary, residual and interface losses.
    pub weights: [f64; 3],
}

impl PinnConfig {
    /// The reference's setting: `[2, 20, 20, 1]` networks, 100 boundary, 1000
    /// collocation and 101 interface points, loss weights 20 / 1 / 5.
    pub fn reference(family: Family, context: f64) -> PinnConfig {
        PinnConfig {
            family,
            context,
            hidden: vec![20, 20],
            boundary: 100,
            collocation: 1000,
            interface: 101,
            weights: [20.0, 1.0, 5.0],
        }
    }
}

/// One optimisation phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Full-batch Adam.
    Adam {
        /// Steps.
        steps: usize,
        /// Learning rate.
        learning_rate: f64,
    },
    /// L-BFGS with a backtracking (Armijo) line search.
    Lbfgs {
        /// Iterations.
        iterations: usize,
        /// Curvature pairs kept.
        history: usize,
    },
}

/// What one phase achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseResult {
    /// The interface terms it trained with.
    pub arm: u32,
    /// Steps or iterations taken.
    pub steps: usize,
    /// Loss evaluations (L-BFGS's line search adds some).
    pub evaluations: usize,
    /// The last training loss.
    pub loss: f64,
    /// Relative L2 error against the exact or reference solution on the test grid,
    /// capped at [`ERROR_CAP`] (a diverged network counts as the cap).
    pub error: f64,
    /// `−log10(error)`.
    pub reward: f64,
    /// Seconds the phase took.
    pub wall_s: f64,
}

/// The largest error a trial reports (the reference's `err_cap`).
pub const ERROR_CAP: f64 = 100.0;

/// The reward of an error: `−log10(min(error, cap))`, with NaN as the cap.
pub fn reward_of(error: f64) -> f64 {
    let e = if error.is_finite() {
        error.min(ERROR_CAP)
    } else {
        ERROR_CAP
    };
    -e.max(1e-30).log10()
}

// ---------------------------------------------------------------------------------------
// Problems: geometry, points and solutions.

/// Points of one subdomain, `(x, y)`.
type Points = Vec<[f64; 2]>;

/// The sampled training and test data of one PINN problem.
#[derive(Debug, Clone)]
pub struct Problem {
    family: Family,
    context: f64,
    /// Per subdomain: boundary points and their values.
    boundary: [(Points, Vec<f64>); 2],
    /// Per subdomain: collocation points.
    collocation: [Points; 2],
    /// Interface points (shared).
    interface: Points,
    /// Per subdomain: test points and the solution there.
    test: [(Points, Vec<f64>); 2],
    /// Per subdomain: input scale and shift (`z = p·scale + shift`).
    scaling: [[[f64; 2]; 2]; 2],
}

fn linspace(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| lo + (hi - lo) * i as f64 / (n.max(2) - 1) as f64)
        .collect()
}

/// `n` Latin-hypercube points in the box `[x0, x1] × [y0, y1]`.
fn latin_hypercube(n: usize, x: [f64; 2], y: [f64; 2], rng: &mut Rng) -> Points {
    let strata = |rng: &mut Rng| {
        let mut p: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut p);
        p.into_iter()
            .map(|k| (k as f64 + rng.next_f64()) / n as f64)
            .collect::<Vec<f64>>()
    };
    let (u, v) = (strata(rng), strata(rng));
    u.iter()
        .zip(&v)
        .map(|(u, v)| [x[0] + (x[1] - x[0]) * u, y[0] + (y[1] - y[0]) * v])
        .collect()
}

/// The error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x >= 0.0 { y } else { -y }
}

/// The Poisson forcing `f(x, y) = A(x)·A(y)` with `A(z) = erf(s(z − ¼)) − erf(s(z − ¾))`,
/// and its partial derivatives, before normalisation.
fn poisson_forcing(s: f64, x: f64, y: f64) -> [f64; 3] {
    let a = |z: f64| erf(s * (z - 0.25)) - erf(s * (z - 0.75));
    let da = |z: f64| {
        2.0 * s / PI.sqrt()
            * ((-(s * (z - 0.25)).powi(2)).exp() - (-(s * (z - 0.75)).powi(2)).exp())
    };
    [a(x) * a(y), da(x) * a(y), a(x) * da(y)]
}

/// Grid points per side of the Poisson reference solution (the reference's 101).
pub const POISSON_GRID: usize = 101;

/// The Poisson reference solution: the 5-point finite-difference Laplacian on a
/// 101 × 101 grid, `Δ_h u = f/max f` inside and `u = f/max f` on the boundary (as the
/// reference's `poisson_direct` sets it), solved by conjugate gradients to a relative
/// residual of 1e-12. Returns the grid values (row-major, `y` outer) and `max f`.
pub fn poisson_reference(s: f64) -> (Vec<f64>, f64) {
    let n = POISSON_GRID;
    let g = linspace(0.0, 1.0, n);
    let fmax = poisson_forcing_max(s);
    let fb: Vec<f64> = (0..n * n)
        .map(|k| poisson_forcing(s, g[k % n], g[k / n])[0] / fmax)
        .collect();
    let h2 = (g[1] - g[0]).powi(2);
    let inner = n - 2;
    let idx = |i: usize, j: usize| (j - 1) * inner + (i - 1);
    let boundary = |i: usize, j: usize| i == 0 || j == 0 || i == n - 1 || j == n - 1;
    // A = −Δ_h on the interior (SPD); b = −f + boundary neighbours / h².
    let mut b = vec![0.0; inner * inner];
    for j in 1..n - 1 {
        for i in 1..n - 1 {
            let mut v = -fb[j * n + i];
            for (ii, jj) in [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)] {
                if boundary(ii, jj) {
                    v += fb[jj * n + ii] / h2;
                }
            }
            b[idx(i, j)] = v;
        }
    }
    let apply = |x: &[f64]| -> Vec<f64> {
        let mut y = vec![0.0; x.len()];
        for j in 1..n - 1 {
            for i in 1..n - 1 {
                let mut v = 4.0 * x[idx(i, j)];
                for (ii, jj) in [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)] {
                    if !boundary(ii, jj) {
                        v -= x[idx(ii, jj)];
                    }
                }
                y[idx(i, j)] = v / h2;
            }
        }
        y
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut x = vec![0.0; b.len()];
    let mut r = b.clone();
    let mut p = r.clone();
    let mut rr = dot(&r, &r);
    let stop = 1e-24 * dot(&b, &b);
    for _ in 0..20 * inner {
        if rr <= stop {
            break;
        }
        let ap = apply(&p);
        let alpha = rr / dot(&p, &ap);
        for k in 0..x.len() {
            x[k] += alpha * p[k];
            r[k] -= alpha * ap[k];
        }
        let next = dot(&r, &r);
        let beta = next / rr;
        rr = next;
        for k in 0..p.len() {
            p[k] = r[k] + beta * p[k];
        }
    }
    let mut u = fb;
    for j in 1..n - 1 {
        for i in 1..n - 1 {
            u[j * n + i] = x[idx(i, j)];
        }
    }
    (u, fmax)
}

impl Problem {
    /// Samples a problem: boundary and collocation points from `seed`, fixed interface
    /// and test grids, exact (advection, reaction) or finite-difference (Poisson)
    /// solutions.
    pub fn new(cfg: &PinnConfig, seed: u64) -> Problem {
        let (family, c) = (cfg.family, cfg.context);
        let mut rng = Rng::new(derive_seed(seed, 0x5049_4E4E));
        let ym = 0.5;
        let sub_of = |y: f64| usize::from(y > ym);
        let pick = |cands: Vec<([f64; 2], f64)>, n: usize, rng: &mut Rng| {
            let mut per: [Vec<([f64; 2], f64)>; 2] = [Vec::new(), Vec::new()];
            for (p, v) in cands {
                if p[1] != ym {
                    per[sub_of(p[1])].push((p, v));
                }
            }
            per.map(|mut v| {
                rng.shuffle(&mut v);
                v.truncate(n);
                v.into_iter().unzip::<_, _, Points, Vec<f64>>()
            })
        };
        match family {
            Family::Advection | Family::Reaction => {
                let exact = move |x: f64, t: f64| match family {
                    Family::Advection => (x - c * t).sin(),
                    _ => {
                        let h = (-(x - PI).powi(2) / (2.0 * (PI / 4.0).powi(2))).exp();
                        let e = h * (c * t).exp();
                        e / (e + 1.0 - h)
                    }
                };
                let side_t = if family == Family::Advection {
                    256
                } else {
                    101
                };
                let mut cands = Vec::new();
                for t in linspace(0.0, 1.0, side_t) {
                    for x in [0.0, 2.0 * PI] {
                        cands.push(([x, t], exact(x, t)));
                    }
                }
                for x in linspace(0.0, 2.0 * PI, 101) {
                    for t in [0.0, 1.0] {
                        cands.push(([x, t], exact(x, t)));
                    }
                }
                let boundary = pick(cands, cfg.boundary, &mut rng);
                let m = 0.01;
                let collocation = [
                    latin_hypercube(cfg.collocation, [m, 2.0 * PI - m], [m, ym - m], &mut rng),
                    latin_hypercube(
                        cfg.collocation,
                        [m, 2.0 * PI - m],
                        [ym + m, 1.0 - m],
                        &mut rng,
                    ),
                ];
                let interface = linspace(0.0, 2.0 * PI, cfg.interface)
                    .into_iter()
                    .map(|x| [x, ym])
                    .collect();
                let nx = if family == Family::Advection {
                    256
                } else {
                    101
                };
                let mut test: [(Points, Vec<f64>); 2] = Default::default();
                for t in linspace(0.0, 1.0, 101) {
                    if t == ym {
                        continue;
                    }
                    for x in linspace(0.0, 2.0 * PI, nx) {
                        let s = &mut test[sub_of(t)];
                        s.0.push([x, t]);
                        s.1.push(exact(x, t));
                    }
                }
                // The reference scales each subdomain's inputs to [−1, 1] over its test
                // extent: t ∈ [0, 0.49] and [0.51, 1].
                let scale = |lo: [f64; 2], hi: [f64; 2]| {
                    let mut s = [[0.0; 2]; 2];
                    for d in 0..2 {
                        s[0][d] = 2.0 / (hi[d] - lo[d]);
                        s[1][d] = -2.0 * lo[d] / (hi[d] - lo[d]) - 1.0;
                    }
                    s
                };
                Problem {
                    family,
                    context: c,
                    boundary,
                    collocation,
                    interface,
                    test,
                    scaling: [
                        scale([0.0, 0.0], [2.0 * PI, 0.49]),
                        scale([0.0, 0.51], [2.0 * PI, 1.0]),
                    ],
                }
            }
            Family::Poisson => {
                let n = POISSON_GRID;
                let (u, _) = poisson_reference(c);
                let g = linspace(0.0, 1.0, n);
                let mut cands = Vec::new();
                let mut test: [(Points, Vec<f64>); 2] = Default::default();
                for j in 0..n {
                    for i in 0..n {
                        let (x, y) = (g[i], g[j]);
                        if i == 0 || j == 0 || i == n - 1 || j == n - 1 {
                            cands.push(([x, y], u[j * n + i]));
                        }
                        if y != ym {
                            test[sub_of(y)].0.push([x, y]);
                            test[sub_of(y)].1.push(u[j * n + i]);
                        }
                    }
                }
                let boundary = pick(cands, cfg.boundary, &mut rng);
                let collocation = [
                    latin_hypercube(cfg.collocation, [0.0, 1.0], [0.0, ym], &mut rng),
                    latin_hypercube(cfg.collocation, [0.0, 1.0], [ym, 1.0], &mut rng),
                ];
                let interface = linspace(0.0, 1.0, cfg.interface)
                    .into_iter()
                    .map(|x| [x, ym])
                    .collect();
                // The reference does not scale Poisson's inputs.
                let identity = [[1.0, 1.0], [0.0, 0.0]];
                Problem {
                    family,
                    context: c,
                    boundary,
                    collocation,
                    interface,
                    test,
                    scaling: [identity, identity],
                }
            }
        }
    }

    /// Test points in all.
    pub fn test_points(&self) -> usize {
        self.test[0].0.len() + self.test[1].0.len()
    }
}

// ---------------------------------------------------------------------------------------
// Jets: values with their input derivatives.

/// Multi-indices `(∂x count, ∂y count)` in jet order: order 0, 1, 2, 3.
const INDEX: [(u8, u8); 10] = [
    (0, 0),
    (1, 0),
    (0, 1),
    (2, 0),
    (1, 1),
    (0, 2),
    (3, 0),
    (2, 1),
    (1, 2),
    (0, 3),
];

/// Components of a jet of `order`.
fn components(order: usize) -> usize {
    [1, 3, 6, 10][order.min(3)]
}

fn position(nx: u8, ny: u8) -> usize {
    INDEX
        .iter()
        .position(|i| *i == (nx, ny))
        .unwrap_or_else(|| unreachable!("derivatives up to third order"))
}

/// The directions of a multi-index, e.g. `(2, 1)` → `[x, x, y]` (0 is x).
fn directions(i: usize) -> Vec<u8> {
    let (nx, ny) = INDEX[i];
    std::iter::repeat_n(0, nx as usize)
        .chain(std::iter::repeat_n(1, ny as usize))
        .collect()
}

fn index_of(dirs: &[u8]) -> usize {
    let nx = dirs.iter().filter(|d| **d == 0).count() as u8;
    position(nx, dirs.len() as u8 - nx)
}

/// A value and its input derivatives, each `[subdomains, points, units]`; `None` is a
/// derivative known to be zero (or broadcast `[subdomains, 1, units]` for the first
/// layer's, which do not depend on the point).
#[derive(Clone)]
struct Jet {
    c: Vec<Option<Tensor<3>>>,
}

fn mul(a: &Option<Tensor<3>>, b: &Option<Tensor<3>>) -> Option<Tensor<3>> {
    Some(a.clone()? * b.clone()?)
}

fn add(a: Option<Tensor<3>>, b: Option<Tensor<3>>) -> Option<Tensor<3>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

fn scale(a: Option<Tensor<3>>, s: &Tensor<3>) -> Option<Tensor<3>> {
    a.map(|a| a * s.clone())
}

impl Jet {
    /// `tanh` applied to a jet (Faà di Bruno up to third order).
    fn tanh(&self) -> Jet {
        let a = &self.c;
        let s = a[0].clone().unwrap_or_else(|| unreachable!()).tanh();
        let s1 = s.clone().square().neg().add_scalar(1.0);
        let order = INDEX[a.len() - 1].0 + INDEX[a.len() - 1].1;
        let s2 = (order >= 2).then(|| s.clone() * s1.clone() * -2.0);
        let s3 = (order >= 3).then(|| {
            // σ‴ = −2σ′² + 4s²σ′.
            s1.clone() * (s.clone().square() * 4.0 - s1.clone() * 2.0)
        });
        let mut out = vec![Some(s)];
        for i in 1..a.len() {
            let d = directions(i);
            let at = |ds: &[u8]| &a[index_of(ds)];
            let v = match d.len() {
                1 => scale(a[i].clone(), &s1),
                2 => add(
                    scale(
                        mul(at(&d[..1]), at(&d[1..])),
                        s2.as_ref().unwrap_or_else(|| unreachable!()),
                    ),
                    scale(a[i].clone(), &s1),
                ),
                _ => {
                    let (x, y, z) = (&d[..1], &d[1..2], &d[2..]);
                    let pair = |p: &[u8], q: &[u8]| -> Vec<u8> { [p, q].concat() };
                    let s2 = s2.as_ref().unwrap_or_else(|| unreachable!());
                    let s3 = s3.as_ref().unwrap_or_else(|| unreachable!());
                    let cubic = scale(mul(&mul(at(x), at(y)), at(z)), s3);
                    let mixed = add(
                        add(mul(at(&pair(x, y)), at(z)), mul(at(&pair(x, z)), at(y))),
                        mul(at(&pair(y, z)), at(x)),
                    );
                    add(add(cubic, scale(mixed, s2)), scale(a[i].clone(), &s1))
                }
            };
            out.push(v);
        }
        Jet { c: out }
    }

    /// `jet · W + b` (the bias only on the value); `w` is `[2, in, out]`, `b` `[2, 1, out]`.
    fn linear(&self, w: &Tensor<3>, b: &Tensor<3>) -> Jet {
        let value = self.c[0].clone().unwrap_or_else(|| unreachable!());
        let mut out = vec![Some(value.matmul(w.clone()) + b.clone())];
        // The derivatives share one batched matmul: stacked along the point axis.
        let present: Vec<(usize, Tensor<3>)> = self
            .c
            .iter()
            .enumerate()
            .skip(1)
            .filter_map(|(i, t)| Some((i, t.clone()?)))
            .collect();
        let mut mapped: Vec<Option<Tensor<3>>> = vec![None; self.c.len() - 1];
        if !present.is_empty() {
            let lens: Vec<usize> = present.iter().map(|(_, t)| t.dims()[1]).collect();
            let stacked = Tensor::cat(present.iter().map(|(_, t)| t.clone()).collect(), 1);
            let y = stacked.matmul(w.clone());
            let mut at = 0;
            for ((i, _), n) in present.iter().zip(lens) {
                mapped[i - 1] = Some(y.clone().narrow(1, at, n));
                at += n;
            }
        }
        out.extend(mapped);
        Jet { c: out }
    }

    fn get(&self, nx: u8, ny: u8) -> Option<Tensor<3>> {
        self.c.get(position(nx, ny)).cloned().flatten()
    }
}

// ---------------------------------------------------------------------------------------
// The network.

/// Layer shapes `(in, out)` of one subdomain's network.
fn layers(hidden: &[usize]) -> Vec<(usize, usize)> {
    let mut dims = vec![2];
    dims.extend_from_slice(hidden);
    dims.push(1);
    dims.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Parameters of both networks (flat length).
pub fn parameter_count(hidden: &[usize]) -> usize {
    2 * layers(hidden).iter().map(|(i, o)| i * o + o).sum::<usize>()
}

/// Xavier-normal weights and PyTorch-default uniform biases for both networks, flat.
pub fn init_parameters(hidden: &[usize], seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(derive_seed(seed, 0x1A17));
    let mut out = Vec::with_capacity(parameter_count(hidden));
    for (i, o) in layers(hidden) {
        let sd = (2.0 / (i + o) as f64).sqrt();
        for _ in 0..2 * i * o {
            out.push((sd * rng.normal()) as f32);
        }
        let bound = 1.0 / (i as f64).sqrt();
        for _ in 0..2 * o {
            out.push((bound * (2.0 * rng.next_f64() - 1.0)) as f32);
        }
    }
    out
}

/// Device tensors of a point set: `[2, n, 2]` coordinates.
struct PointSet {
    p: Tensor<3>,
}

fn point_set(sets: [&Points; 2], device: &Device) -> PointSet {
    let n = sets[0].len();
    assert_eq!(
        n,
        sets[1].len(),
        "both subdomains have the same number of points"
    );
    let flat: Vec<f32> = sets
        .iter()
        .flat_map(|s| s.iter().flat_map(|p| [p[0] as f32, p[1] as f32]))
        .collect();
    PointSet {
        p: Tensor::<3>::from_data(TensorData::new(flat, [2, n, 2]), device),
    }
}

fn column(values: [&[f64]; 2], device: &Device) -> Tensor<3> {
    let n = values[0].len();
    let flat: Vec<f32> = values
        .iter()
        .flat_map(|v| v.iter().map(|x| *x as f32))
        .collect();
    Tensor::<3>::from_data(TensorData::new(flat, [2, n, 1]), device)
}

/// A problem's tensors on a device, ready for loss evaluations.
pub struct PinnProgram {
    family: Family,
    context: f64,
    hidden: Vec<usize>,
    weights: [f64; 3],
    /// Jet order the collocation points need (the PDE's order).
    pde_order: usize,
    scale: Tensor<3>,
    shift: Tensor<3>,
    boundary: PointSet,
    boundary_values: Tensor<3>,
    collocation: PointSet,
    /// Poisson: the normalised forcing at the collocation points.
    forcing: Option<Tensor<3>>,
    interface: PointSet,
    /// Poisson: forcing and its gradient at the interface points.
    interface_forcing: Option<[Tensor<3>; 3]>,
    test: PointSet,
    test_values: Vec<f64>,
    device: Device,
}

impl PinnProgram {
    /// Puts `problem` on `device`.
    pub fn new(cfg: &PinnConfig, problem: &Problem, device: &Device) -> PinnProgram {
        let sc = |k: usize| -> Tensor<3> {
            let flat: Vec<f32> = problem
                .scaling
                .iter()
                .flat_map(|s| [s[k][0] as f32, s[k][1] as f32])
                .collect();
            Tensor::<3>::from_data(TensorData::new(flat, [2, 1, 2]), device)
        };
        let b = &problem.boundary;
        // Poisson's normalised forcing (and gradient) at the points that need it.
        let fmax =
            (problem.family == Family::Poisson).then(|| poisson_forcing_max(problem.context));
        let forcing_at = |pts: [&Points; 2]| -> Option<[Tensor<3>; 3]> {
            let fmax = fmax?;
            let comps = [0, 1, 2].map(|k| {
                let v: [Vec<f64>; 2] = pts.map(|s| {
                    s.iter()
                        .map(|p| poisson_forcing(problem.context, p[0], p[1])[k] / fmax)
                        .collect()
                });
                column([&v[0], &v[1]], device)
            });
            Some(comps)
        };
        let iface = [&problem.interface, &problem.interface];
        PinnProgram {
            family: problem.family,
            context: problem.context,
            hidden: cfg.hidden.clone(),
            weights: cfg.weights,
            pde_order: if problem.family == Family::Poisson {
                2
            } else {
                1
            },
            scale: sc(0),
            shift: sc(1),
            boundary: point_set([&b[0].0, &b[1].0], device),
            boundary_values: column([&b[0].1, &b[1].1], device),
            collocation: point_set([&problem.collocation[0], &problem.collocation[1]], device),
            forcing: forcing_at([&problem.collocation[0], &problem.collocation[1]])
                .map(|[f, _, _]| f),
            interface: point_set(iface, device),
            interface_forcing: forcing_at(iface),
            test: point_set([&problem.test[0].0, &problem.test[1].0], device),
            test_values: problem.test[0]
                .1
                .iter()
                .chain(&problem.test[1].1)
                .copied()
                .collect(),
            device: device.clone(),
        }
    }

    /// The network's output jet at `points`, up to `order`, for flat parameters `theta`.
    fn forward(&self, theta: &Tensor<1>, points: &PointSet, order: usize) -> Jet {
        let mut at = 0;
        let mut params = Vec::new();
        for (i, o) in layers(&self.hidden) {
            let w = theta.clone().narrow(0, at, 2 * i * o).reshape([2, i, o]);
            at += 2 * i * o;
            let b = theta.clone().narrow(0, at, 2 * o).reshape([2, 1, o]);
            at += 2 * o;
            params.push((w, b));
        }
        let z = points.p.clone() * self.scale.clone() + self.shift.clone();
        let (w1, b1) = &params[0];
        // First layer: a = z·W + b; ∂a/∂x_d = scale_d·W[d, :] (constant over points),
        // higher derivatives are zero.
        let mut c = vec![Some(z.matmul(w1.clone()) + b1.clone())];
        for k in 1..components(order) {
            let d = directions(k);
            c.push(match d.as_slice() {
                [dir] => {
                    let dir = usize::from(*dir);
                    Some(w1.clone().narrow(1, dir, 1) * self.scale.clone().narrow(2, dir, 1))
                }
                _ => None,
            });
        }
        let mut jet = Jet { c };
        for (w, b) in &params[1..] {
            jet = jet.tanh().linear(w, b);
        }
        jet
    }

    /// The PDE residual and, if `gradient`, its `x` and `y` derivatives, from the
    /// output jet `u` (with `forcing` = `[f, f_x, f_y]` for Poisson).
    fn residual(
        &self,
        u: &Jet,
        forcing: Option<&[Tensor<3>]>,
        gradient: bool,
    ) -> (Tensor<3>, Option<[Tensor<3>; 2]>) {
        let g = |nx, ny| {
            u.get(nx, ny)
                .unwrap_or_else(|| unreachable!("jet order too low"))
        };
        let c = self.context;
        match self.family {
            Family::Advection => {
                let f = g(0, 1) + g(1, 0) * c;
                let grad = gradient.then(|| [g(1, 1) + g(2, 0) * c, g(0, 2) + g(1, 1) * c]);
                (f, grad)
            }
            Family::Reaction => {
                let v = g(0, 0);
                let f = g(0, 1) - (v.clone() - v.clone().square()) * c;
                let grad = gradient.then(|| {
                    let lin = (v * -2.0).add_scalar(1.0) * c;
                    [g(1, 1) - lin.clone() * g(1, 0), g(0, 2) - lin * g(0, 1)]
                });
                (f, grad)
            }
            Family::Poisson => {
                let fr = forcing.unwrap_or_else(|| unreachable!("poisson has a forcing"));
                let f = g(2, 0) + g(0, 2) - fr[0].clone();
                let grad = gradient.then(|| {
                    [
                        g(3, 0) + g(1, 2) - fr[1].clone(),
                        g(2, 1) + g(0, 3) - fr[2].clone(),
                    ]
                });
                (f, grad)
            }
        }
    }

    /// The training loss at flat parameters `theta` (autodiff or not) with the interface
    /// terms of `arm`.
    pub fn loss(&self, theta: &Tensor<1>, arm: u32) -> Tensor<1> {
        let on = |t: Term| arm & t.bit() != 0;
        let [wb, wr, wi] = self.weights;
        let mse2 = |t: Tensor<3>| t.square().mean() * 2.0; // Σ over the 2 subdomains of the means.
        let ub = self.forward(theta, &self.boundary, 0).c[0]
            .clone()
            .unwrap_or_else(|| unreachable!());
        let mut loss = mse2(ub - self.boundary_values.clone()) * wb;
        let uc = self.forward(theta, &self.collocation, self.pde_order);
        let (fc, _) = self.residual(&uc, self.forcing.as_ref().map(std::slice::from_ref), false);
        loss = loss + mse2(fc) * wr;
        if arm == 0 {
            return loss;
        }
        let needs_residual =
            on(Term::Residual) || on(Term::ResidualContinuity) || on(Term::ResidualGradient);
        let mut order = 0;
        if on(Term::Flux) || on(Term::Tangential) {
            order = 1;
        }
        if on(Term::NormalSecond) || on(Term::TangentialSecond) {
            order = 2;
        }
        if needs_residual {
            order = order.max(self.pde_order);
        }
        if on(Term::ResidualGradient) {
            order = order.max(self.pde_order + 1);
        }
        let u = self.forward(theta, &self.interface, order);
        let half = |t: Tensor<3>| (t.clone().narrow(0, 0, 1), t.narrow(0, 1, 1));
        let diff2 = |t: Tensor<3>| {
            let (a, b) = half(t);
            (a - b).square().mean()
        };
        let mut terms: Vec<Tensor<1>> = Vec::new();
        let get = |nx, ny| u.get(nx, ny).unwrap_or_else(|| unreachable!());
        if on(Term::Solution) {
            terms.push(diff2(get(0, 0)));
        }
        if on(Term::Average) {
            let (a, b) = half(get(0, 0));
            let avg = (a.clone() + b.clone()) * 0.5;
            terms.push((a - avg.clone()).square().mean() + (b - avg).square().mean());
        }
        if needs_residual {
            let forcing = self.interface_forcing.as_ref().map(|f| &f[..]);
            let (f, grad) = self.residual(&u, forcing, on(Term::ResidualGradient));
            if on(Term::Residual) {
                terms.push(mse2(f.clone()));
            }
            if on(Term::ResidualContinuity) {
                terms.push(diff2(f));
            }
            if let Some([fx, fy]) = grad {
                terms.push(mse2(fx) + mse2(fy));
            }
        }
        if on(Term::Flux) {
            terms.push(diff2(get(0, 1)));
        }
        if on(Term::NormalSecond) {
            terms.push(diff2(get(0, 2)));
        }
        if on(Term::Tangential) {
            terms.push(diff2(get(1, 0)));
        }
        if on(Term::TangentialSecond) {
            terms.push(diff2(get(2, 0)));
        }
        let interface = terms.into_iter().reduce(|a, b| a + b);
        match interface {
            Some(i) => loss + i * wi,
            None => loss,
        }
    }

    /// The loss and its gradient at host parameters.
    pub fn loss_and_gradient(&self, theta: &[f32], arm: u32) -> (f64, Vec<f32>) {
        let t =
            Tensor::<1>::from_data(TensorData::new(theta.to_vec(), [theta.len()]), &self.device)
                .autodiff()
                .require_grad();
        let loss = self.loss(&t, arm);
        let grads = loss.backward();
        let value = f64::from(loss.inner().into_scalar::<f32>());
        let g = t
            .grad(&grads)
            .map(|g| g.into_data().try_to_vec::<f32>().unwrap_or_default())
            .unwrap_or_else(|| vec![0.0; theta.len()]);
        (value, g)
    }

    /// Relative L2 error of the networks at `theta` on the test grid (capped; NaN is the
    /// cap).
    pub fn error(&self, theta: &[f32]) -> f64 {
        let t =
            Tensor::<1>::from_data(TensorData::new(theta.to_vec(), [theta.len()]), &self.device);
        let u = self.forward(&t, &self.test, 0).c[0]
            .clone()
            .unwrap_or_else(|| unreachable!());
        let pred = u.into_data().try_to_vec::<f32>().unwrap_or_default();
        let (mut num, mut den) = (0.0, 0.0);
        for (p, e) in pred.iter().zip(&self.test_values) {
            num += (f64::from(*p) - e).powi(2);
            den += e * e;
        }
        let e = (num / den.max(1e-300)).sqrt();
        if e.is_finite() {
            e.min(ERROR_CAP)
        } else {
            ERROR_CAP
        }
    }
}

/// `max f` of the Poisson forcing on the reference grid (its normaliser).
fn poisson_forcing_max(s: f64) -> f64 {
    let g = linspace(0.0, 1.0, POISSON_GRID);
    g.iter()
        .flat_map(|y| g.iter().map(move |x| poisson_forcing(s, *x, *y)[0]))
        .fold(f64::MIN, f64::max)
}

// ---------------------------------------------------------------------------------------
// Optimisers.

/// Full-batch Adam on the flat parameters, on the device.
fn adam(
    program: &PinnProgram,
    theta: &mut Vec<f32>,
    arm: u32,
    steps: usize,
    lr: f64,
) -> (usize, f64) {
    let n = theta.len();
    let device = &program.device;
    let mut p = Tensor::<1>::from_data(TensorData::new(theta.clone(), [n]), device);
    let mut m = Tensor::<1>::zeros([n], device);
    let mut v = Tensor::<1>::zeros([n], device);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let mut last = f64::NAN;
    let mut done = 0;
    for step in 1..=steps {
        let t = p.clone().autodiff().require_grad();
        let loss = program.loss(&t, arm);
        let grads = loss.backward();
        let Some(g) = t.grad(&grads) else { break };
        if step % 50 == 1 || step == steps {
            last = f64::from(loss.inner().into_scalar::<f32>());
            if !last.is_finite() {
                done = step;
                break;
            }
        }
        m = m * b1 + g.clone() * (1.0 - b1);
        v = v * b2 + g.square() * (1.0 - b2);
        let mh = m.clone() / (1.0 - b1.powi(step as i32));
        let vh = v.clone() / (1.0 - b2.powi(step as i32));
        p = p - mh / vh.sqrt().add_scalar(eps) * lr;
        done = step;
    }
    *theta = p.into_data().try_to_vec::<f32>().unwrap_or_default();
    (done, last)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// L-BFGS (two-loop recursion over the last `history` pairs) with a backtracking
/// line search on the Armijo condition; stops after `iterations`, at a gradient below
/// 1e-9, or when the loss stops changing (1e-12). Returns (iterations, evaluations, loss).
fn lbfgs(
    program: &PinnProgram,
    theta: &mut Vec<f32>,
    arm: u32,
    iterations: usize,
    history: usize,
) -> (usize, usize, f64) {
    let eval = |x: &[f64]| {
        let xf: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        let (l, g) = program.loss_and_gradient(&xf, arm);
        (l, g.into_iter().map(f64::from).collect::<Vec<f64>>())
    };
    let mut x: Vec<f64> = theta.iter().map(|v| f64::from(*v)).collect();
    let (mut f, mut g) = eval(&x);
    let mut evals = 1;
    let mut pairs: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> = Default::default();
    let mut it = 0;
    while it < iterations && f.is_finite() {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < 1e-9 {
            break;
        }
        // Two-loop recursion: d = −H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, y, rho) in pairs.iter().rev() {
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(y) {
                *qi -= a * yi;
            }
            alphas.push(a);
        }
        let gamma = pairs
            .back()
            .map_or(1.0, |(s, y, _)| dot(s, y) / dot(y, y).max(1e-300));
        for qi in &mut q {
            *qi *= gamma;
        }
        for ((s, y, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += (a - b) * si;
            }
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction: restart from steepest descent.
            pairs.clear();
            d = g.iter().map(|v| -v).collect();
            slope = dot(&g, &d);
        }
        let mut step = if pairs.is_empty() {
            (1.0 / g.iter().map(|v| v.abs()).sum::<f64>().max(1e-12)).min(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..30 {
            let xn: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + step * b).collect();
            let (fnew, gnew) = eval(&xn);
            evals += 1;
            if fnew.is_finite() && fnew <= f + 1e-4 * step * slope {
                accepted = Some((xn, fnew, gnew));
                break;
            }
            step *= 0.5;
        }
        it += 1;
        let Some((xn, fnew, gnew)) = accepted else {
            break;
        };
        let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gnew.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-10 {
            if pairs.len() == history.max(1) {
                pairs.pop_front();
            }
            pairs.push_back((s, y, 1.0 / sy));
        }
        let change = (f - fnew).abs();
        x = xn;
        f = fnew;
        g = gnew;
        if change < 1e-12 {
            break;
        }
    }
    *theta = x.iter().map(|v| *v as f32).collect();
    (it, evals, f)
}

/// Trains both networks of `cfg` through `phases`, phase `i` with the interface terms
/// `arms[i]` (the last arm repeats if there are fewer arms than phases), continuing the
/// same weights; measures the test error after each phase. `on_phase` sees each result
/// as it lands.
pub fn train_pinn(
    cfg: &PinnConfig,
    phases: &[Phase],
    arms: &[u32],
    seed: u64,
    device: &Device,
    on_phase: &mut dyn FnMut(usize, &PhaseResult),
) -> Vec<PhaseResult> {
    let problem = Problem::new(cfg, seed);
    let program = PinnProgram::new(cfg, &problem, device);
    let mut theta = init_parameters(&cfg.hidden, seed);
    let mut out = Vec::new();
    for (i, phase) in phases.iter().enumerate() {
        let arm = arms.get(i).or(arms.last()).copied().unwrap_or(0);
        let started = Instant::now();
        let (steps, evaluations, loss) = match *phase {
            Phase::Adam {
                steps,
                learning_rate,
            } => {
                let (s, l) = adam(&program, &mut theta, arm, steps, learning_rate);
                (s, s, l)
            }
            Phase::Lbfgs {
                iterations,
                history,
            } => lbfgs(&program, &mut theta, arm, iterations, history),
        };
        let error = program.error(&theta);
        let r = PhaseResult {
            arm,
            steps,
            evaluations,
            loss,
            error,
            reward: reward_of(error),
            wall_s: started.elapsed().as_secs_f64(),
        };
        on_phase(i, &r);
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(family: Family, context: f64) -> PinnConfig {
        PinnConfig::reference(family, context)
    }

    /// The network's value at host points, for finite differences.
    fn values(p: &PinnProgram, theta: &[f32], pts: &[[f64; 2]]) -> Vec<f64> {
        let set = point_set([&pts.to_vec(), &pts.to_vec()], &p.device);
        let t = Tensor::<1>::from_data(TensorData::new(theta.to_vec(), [theta.len()]), &p.device);
        let u = p.forward(&t, &set, 0).c[0].clone().unwrap();
        u.into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    #[test]
    fn jets_match_finite_differences_to_third_order() {
        let device = Device::flex();
        for family in [Family::Advection, Family::Poisson] {
            let c = cfg(family, 3.0);
            let problem = Problem::new(&c, 1);
            let p = PinnProgram::new(&c, &problem, &device);
            let theta = init_parameters(&c.hidden, 7);
            let pts = vec![[0.3, 0.2], [0.7, 0.4]];
            let set = point_set([&pts, &pts], &device);
            let t = Tensor::<1>::from_data(TensorData::new(theta.clone(), [theta.len()]), &device);
            let jet = p.forward(&t, &set, 3);
            // Finite differences in f32 need a wide step; compare derivatives of the
            // value with central differences of the previous order's jet component.
            let h = 1e-2;
            for (k, (nx, ny)) in INDEX.iter().enumerate().skip(1) {
                let got = jet.c[k]
                    .clone()
                    .unwrap()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                // Lower the order by one along a direction the index has.
                let (dx, dy, lower) = if *nx > 0 {
                    (h, 0.0, position(nx - 1, *ny))
                } else {
                    (0.0, h, position(*nx, ny - 1))
                };
                let shift = |s: f64| -> Vec<[f64; 2]> {
                    pts.iter().map(|q| [q[0] + s * dx, q[1] + s * dy]).collect()
                };
                let eval = |q: Vec<[f64; 2]>| {
                    let set = point_set([&q, &q], &device);
                    let j = p.forward(&t, &set, 3);
                    j.c[lower]
                        .clone()
                        .unwrap()
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap()
                };
                let (plus, minus) = (eval(shift(1.0)), eval(shift(-1.0)));
                for i in 0..got.len() {
                    let fd = (f64::from(plus[i]) - f64::from(minus[i])) / (2.0 * h);
                    let g = f64::from(got[i]);
                    assert!(
                        (fd - g).abs() < 2e-2 * (1.0 + g.abs()),
                        "{family:?} d^({nx},{ny}) at {i}: jet {g} vs fd {fd}"
                    );
                }
            }
            // And the value agrees with a plain forward pass.
            let v = values(&p, &theta, &pts);
            let j0 = jet.c[0]
                .clone()
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            for (a, b) in v.iter().zip(&j0) {
                assert!((a - f64::from(*b)).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn parameter_gradient_matches_finite_differences() {
        let device = Device::flex();
        let c = cfg(Family::Reaction, 4.0);
        let problem = Problem::new(&c, 2);
        let p = PinnProgram::new(&c, &problem, &device);
        let theta = init_parameters(&c.hidden, 3);
        let all = 0b1_1111_1111;
        let (_, g) = p.loss_and_gradient(&theta, all);
        for k in [0, 17, 100, 450, 700, theta.len() - 1] {
            let h = 1e-2f32;
            let mut a = theta.clone();
            a[k] += h;
            let mut b = theta.clone();
            b[k] -= h;
            let (la, _) = p.loss_and_gradient(&a, all);
            let (lb, _) = p.loss_and_gradient(&b, all);
            let fd = (la - lb) / (2.0 * f64::from(h));
            let gk = f64::from(g[k]);
            assert!(
                (fd - gk).abs() < 2e-2 * (1.0 + gk.abs()),
                "θ[{k}]: autodiff {gk} vs fd {fd}"
            );
        }
    }

    #[test]
    fn poisson_reference_satisfies_its_finite_difference_equations() {
        let s = 10.0;
        let (u, fmax) = poisson_reference(s);
        let n = POISSON_GRID;
        let h2 = (1.0 / (n - 1) as f64).powi(2);
        let g = linspace(0.0, 1.0, n);
        let mut worst: f64 = 0.0;
        for j in 1..n - 1 {
            for i in 1..n - 1 {
                let lap =
                    (u[j * n + i + 1] + u[j * n + i - 1] + u[(j + 1) * n + i] + u[(j - 1) * n + i]
                        - 4.0 * u[j * n + i])
                        / h2;
                let f = poisson_forcing(s, g[i], g[j])[0] / fmax;
                worst = worst.max((lap - f).abs());
            }
        }
        assert!(worst < 1e-6, "max |Δ_h u − f| = {worst}");
        assert!((u[0] - poisson_forcing(s, 0.0, 0.0)[0] / fmax).abs() < 1e-12);
    }

    #[test]
    fn problems_split_points_between_the_subdomains() {
        for family in [Family::Advection, Family::Reaction, Family::Poisson] {
            let p = Problem::new(&cfg(family, 5.0), 4);
            for s in 0..2 {
                assert_eq!(p.boundary[s].0.len(), 100, "{family:?}");
                assert_eq!(p.collocation[s].len(), 1000);
                assert!(p.collocation[s].iter().all(|q| (q[1] > 0.5) == (s == 1)));
                assert!(p.boundary[s].0.iter().all(|q| (q[1] > 0.5) == (s == 1)));
            }
            assert_eq!(p.test[0].0.len(), p.test[1].0.len());
        }
        // Advection's test grid is the reference's 256 × 100.
        assert_eq!(
            Problem::new(&cfg(Family::Advection, 5.0), 4).test_points(),
            25_600
        );
    }

    #[test]
    fn adam_then_lbfgs_solves_an_easy_advection_problem() {
        let device = Device::flex();
        let mut c = cfg(Family::Advection, 1.0);
        c.collocation = 400;
        let phases = [
            Phase::Adam {
                steps: 300,
                learning_rate: 1e-2,
            },
            Phase::Lbfgs {
                iterations: 300,
                history: 50,
            },
        ];
        let arm = Term::Solution.bit() | Term::Flux.bit();
        let r = train_pinn(&c, &phases, &[arm], 5, &device, &mut |_, _| {});
        assert_eq!(r.len(), 2);
        assert!(r[0].error < 0.5, "after Adam: {:?}", r[0]);
        assert!(
            r[1].error < r[0].error && r[1].error < 0.05,
            "after L-BFGS: {:?}",
            r[1]
        );
        assert!(r[1].loss < 1e-2, "{:?}", r[1]);
    }
}
