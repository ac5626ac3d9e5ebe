//! Analysis of trainability rasters, after Sohl-Dickstein, *The boundary of neural
//! network trainability is fractal* (2024): the per-point value of a training run, the
//! boundary between converged and diverged points, its box-counting fractal dimension,
//! and where to zoom next.
//!
//! Pure functions over plain slices; the batched training that produces the loss
//! trajectories lives on the worker side.

/// Values above this (or non-finite) count as this: the paper's cap for blow-ups.
pub const LOSS_CAP: f64 = 1e6;

/// How many final normalised losses decide convergence.
pub const TAIL: usize = 20;

/// The value of one grid point from its loss trajectory (`losses[t]` before update t,
/// `losses[0]` the initial loss). With `v_t = loss_t / loss_0`, non-finite or huge values
/// replaced by [`LOSS_CAP`]: converged if the mean of the last [`TAIL`] `v_t` is below 1,
/// and then the value is `−Σ v_t`; otherwise `+Σ 1/v_t`. Negative means trainable.
pub fn point_value(losses: &[f64]) -> f64 {
    let Some(&l0) = losses.first() else {
        return 0.0;
    };
    let v: Vec<f64> = losses
        .iter()
        .map(|l| {
            let r = l / l0;
            if r.is_finite() {
                r.clamp(0.0, LOSS_CAP)
            } else {
                LOSS_CAP
            }
        })
        .collect();
    let tail = &v[v.len().saturating_sub(TAIL)..];
    let converged = tail.iter().sum::<f64>() / (tail.len() as f64) < 1.0;
    if converged {
        -v.iter().sum::<f64>()
    } else {
        v.iter().map(|x| 1.0 / x.max(1.0 / LOSS_CAP)).sum()
    }
}

/// A `width × height` raster, row-major (`y * width + x`).
#[derive(Debug, Clone, PartialEq)]
pub struct Raster {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Values, row-major.
    pub values: Vec<f64>,
}

impl Raster {
    /// The value at column `x`, row `y`.
    pub fn at(&self, x: usize, y: usize) -> f64 {
        self.values[y * self.width + x]
    }
}

/// Boundary pixels: `(width−1) × (height−1)` cells, true where the 2×2 block whose top
/// left corner is the cell holds both signs (trainable and not).
pub fn boundary(r: &Raster) -> (usize, usize, Vec<bool>) {
    let (w, h) = (r.width.saturating_sub(1), r.height.saturating_sub(1));
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let block = [
                r.at(x, y),
                r.at(x + 1, y),
                r.at(x, y + 1),
                r.at(x + 1, y + 1),
            ];
            let neg = block.iter().any(|v| *v < 0.0);
            let pos = block.iter().any(|v| *v >= 0.0);
            out.push(neg && pos);
        }
    }
    (w, h, out)
}

/// The box-counting estimate of a boundary's fractal dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxCount {
    /// Box sizes in pixels, ascending.
    pub sizes: Vec<usize>,
    /// Boxes that hold both trainable and untrainable points, per size.
    pub counts: Vec<usize>,
    /// The slope of −log N against log size between neighbouring sizes.
    pub slopes: Vec<f64>,
    /// The least-squares slope of −log N against log size over all sizes.
    pub dimension: f64,
}

/// Box counting of the boundary image (see [`boundary`]) as the issue and the paper
/// describe it: about `n_sizes` log-spaced box sizes from 2 cells to a quarter of the
/// smaller side; a box counts if it holds some boundary but is not entirely boundary.
/// `None` if there is no boundary or the raster is smaller than 8 pixels a side.
pub fn box_count(r: &Raster, n_sizes: usize) -> Option<BoxCount> {
    let (w, h, edges) = boundary(r);
    let largest = w.min(h) / 4;
    if largest < 2 || !edges.iter().any(|e| *e) {
        return None;
    }
    let n_sizes = n_sizes.max(2);
    let mut sizes: Vec<usize> = (0..n_sizes)
        .map(|i| {
            let t = i as f64 / (n_sizes - 1) as f64;
            (2.0 * (largest as f64 / 2.0).powf(t)).round() as usize
        })
        .collect();
    sizes.dedup();
    let mut counts = Vec::with_capacity(sizes.len());
    for &s in &sizes {
        let mut n = 0;
        // Boxes tile the whole image, those at the right and top edges partial, as the
        // usual box-counting code does (`np.add.reduceat` over `arange(0, side, s)`): a
        // box counts if it holds boundary and fewer boundary cells than a whole box
        // has. Dropping the remainder strip instead would miss a boundary that runs
        // along an edge of the window, as a zoomed frame's often does.
        for by in (0..h).step_by(s) {
            for bx in (0..w).step_by(s) {
                let (y1, x1) = ((by + s).min(h), (bx + s).min(w));
                let inside = (by..y1).flat_map(|y| (bx..x1).map(move |x| y * w + x));
                let edge_cells = inside.filter(|i| edges[*i]).count();
                n += usize::from(edge_cells > 0 && edge_cells < s * s);
            }
        }
        counts.push(n);
    }
    let pts: Vec<(f64, f64)> = sizes
        .iter()
        .zip(&counts)
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| ((*s as f64).ln(), -(*n as f64).ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let slopes = pts
        .windows(2)
        .map(|p| (p[1].1 - p[0].1) / (p[1].0 - p[0].0))
        .collect();
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    Some(BoxCount {
        sizes,
        counts,
        slopes,
        dimension: sxy / sxx,
    })
}

/// The median of a zoom sequence's pooled per-size slopes (the paper's estimate for a
/// sequence of frames).
pub fn pooled_dimension(frames: &[BoxCount]) -> Option<f64> {
    let mut all: Vec<f64> = frames
        .iter()
        .flat_map(|f| f.slopes.iter().copied())
        .filter(|s| s.is_finite())
        .collect();
    if all.is_empty() {
        return None;
    }
    all.sort_by(f64::total_cmp);
    let m = all.len() / 2;
    Some(if all.len() % 2 == 1 {
        all[m]
    } else {
        (all[m - 1] + all[m]) / 2.0
    })
}

/// The centre (in cell coordinates) of the half-size window holding the most boundary
/// cells: where a zoom sequence goes next. Ties go to the window nearest the centre.
pub fn densest_half_window(w: usize, h: usize, edges: &[bool]) -> (f64, f64) {
    if w == 0 || h == 0 || edges.len() < w * h {
        return (w as f64 / 2.0, h as f64 / 2.0);
    }
    let (ww, wh) = ((w / 2).max(1), (h / 2).max(1));
    // Summed-area table for O(1) window sums.
    let mut sat = vec![0usize; (w + 1) * (h + 1)];
    for y in 0..h {
        for x in 0..w {
            sat[(y + 1) * (w + 1) + x + 1] = usize::from(edges[y * w + x])
                + sat[y * (w + 1) + x + 1]
                + sat[(y + 1) * (w + 1) + x]
                - sat[y * (w + 1) + x];
        }
    }
    let sum = |x0: usize, y0: usize| {
        let (x1, y1) = (x0 + ww, y0 + wh);
        sat[y1 * (w + 1) + x1] + sat[y0 * (w + 1) + x0]
            - sat[y0 * (w + 1) + x1]
            - sat[y1 * (w + 1) + x0]
    };
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut best = (0usize, f64::INFINITY, cx, cy);
    for y0 in 0..=h - wh {
        for x0 in 0..=w - ww {
            let n = sum(x0, y0);
            let (mx, my) = (x0 as f64 + ww as f64 / 2.0, y0 as f64 + wh as f64 / 2.0);
            let d = (mx - cx).powi(2) + (my - cy).powi(2);
            if n > best.0 || (n == best.0 && d < best.1) {
                best = (n, d, mx, my);
            }
        }
    }
    (best.2, best.3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raster(n: usize, f: impl Fn(f64, f64) -> f64) -> Raster {
        let mut values = Vec::with_capacity(n * n);
        for y in 0..n {
            for x in 0..n {
                values.push(f(x as f64 / n as f64, y as f64 / n as f64));
            }
        }
        Raster {
            width: n,
            height: n,
            values,
        }
    }

    #[test]
    fn converging_and_diverging_runs_get_opposite_signs() {
        let converging: Vec<f64> = (0..100).map(|t| 0.9f64.powi(t)).collect();
        let diverging: Vec<f64> = (0..100).map(|t| 1.2f64.powi(t)).collect();
        assert!(point_value(&converging) < 0.0);
        assert!(point_value(&diverging) > 0.0);
        // A blow-up to infinity or NaN is capped, not propagated.
        let blown = [1.0, 10.0, f64::INFINITY, f64::NAN];
        assert!(point_value(&blown).is_finite() && point_value(&blown) > 0.0);
    }

    #[test]
    fn smooth_boundaries_have_dimension_near_one() {
        for (name, r) in [
            ("line", raster(512, |x, y| y - 0.3 - 0.4 * x)),
            (
                "circle",
                raster(512, |x, y| (x - 0.5).powi(2) + (y - 0.5).powi(2) - 0.1),
            ),
        ] {
            let bc = box_count(&r, 10).unwrap();
            assert!((bc.dimension - 1.0).abs() < 0.1, "{name}: {bc:?}");
            assert!(
                (pooled_dimension(&[bc]).unwrap() - 1.0).abs() < 0.15,
                "{name}"
            );
        }
    }

    #[test]
    fn a_boundary_along_the_edge_of_the_window_is_counted_at_every_box_size() {
        // 100 cells a side: boxes of 7, 9, 13, 18 leave a remainder strip at the top
        // where this boundary runs.
        let bc = box_count(&raster(101, |x, y| y - 0.985 - 0.005 * x), 10).unwrap();
        assert!(bc.counts.iter().all(|n| *n > 0), "{bc:?}");
        assert!((bc.dimension - 1.0).abs() < 0.15, "{bc:?}");
    }

    #[test]
    fn the_weierstrass_graph_has_its_known_dimension() {
        // W(x) = Σ a^k cos(b^k π x) with a = 0.5, b = 3: box dimension 2 + ln a / ln b ≈ 1.369.
        let w = |x: f64| {
            (0..12)
                .map(|k| 0.5f64.powi(k) * (3f64.powi(k) * std::f64::consts::PI * x).cos())
                .sum::<f64>()
        };
        let r = raster(1024, |x, y| (y - 0.5) * 4.0 - w(x));
        let bc = box_count(&r, 10).unwrap();
        let expected = 2.0 + 0.5f64.ln() / 3f64.ln();
        // At 1024² box counting reads 1.24 (finite resolution biases it low, as is known
        // for graphs of this kind); it must still be clearly fractal and below the theory.
        assert!(
            bc.dimension > 1.15 && bc.dimension < expected + 0.05,
            "expected ≈{expected}: {bc:?}"
        );
    }

    #[test]
    fn no_boundary_no_dimension_and_zoom_finds_the_boundary() {
        assert!(box_count(&raster(64, |_, _| 1.0), 10).is_none());
        // Boundary only in the right half: the zoom window moves right.
        let (w, h, e) = boundary(&raster(
            64,
            |x, y| if x > 0.6 { (y * 40.0).sin() } else { 1.0 },
        ));
        let (cx, _) = densest_half_window(w, h, &e);
        assert!(cx > 40.0, "{cx}");
    }
}
