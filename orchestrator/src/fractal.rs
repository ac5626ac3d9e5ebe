//! What a finished `fractal` sweep leaves besides its tables: each frame's raster read
//! back from the `raster` dataset, its boundary, the box-counting dimension per frame
//! and pooled over the zoom sequence (`fractal/summary.json`), and the images
//! (`fractal/frame-K.png`, coloured like the paper, and `fractal/frame-K-boundary.png`),
//! all written to the sweep's results location, local or S3.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use tessera_core::fractal::{Raster, boundary};
use tessera_core::fractal_sweep::{FractalSummary, RASTER_TABLE, Window, summarise};

use crate::lake::ObjectStore;
use crate::report::{ReportError, col_f64};
use crate::store::{TRIALS, read_table_from};

/// Where the summary goes in the results location.
pub const SUMMARY_FILE: &str = "fractal/summary.json";

/// Every frame of the sweep in `store`: its window (from the tile trials) and its raster
/// (NaN where no tile reported).
pub async fn frames(store: &ObjectStore) -> Result<Vec<(Window, Raster)>, ReportError> {
    let trials = read_table_from(store, TRIALS).await?;
    let raster = read_table_from(store, RASTER_TABLE).await?;
    if trials.height() == 0 {
        return Ok(Vec::new());
    }
    let get = |name: &str| col_f64(&trials, name);
    let (frame, res_x, res_y) = (get("frame")?, get("res_x")?, get("res_y")?);
    let (x_lo, x_hi, y_lo, y_hi) = (get("x_lo")?, get("x_hi")?, get("y_lo")?, get("y_hi")?);
    let mut out: BTreeMap<u32, (Window, Raster)> = BTreeMap::new();
    for i in 0..trials.height() {
        let (Some(f), Some(w), Some(h)) = (frame[i], res_x[i], res_y[i]) else {
            continue;
        };
        let window = Window {
            x_lo: x_lo[i].unwrap_or(f64::NAN),
            x_hi: x_hi[i].unwrap_or(f64::NAN),
            y_lo: y_lo[i].unwrap_or(f64::NAN),
            y_hi: y_hi[i].unwrap_or(f64::NAN),
        };
        out.entry(f as u32).or_insert_with(|| {
            let (w, h) = (w as usize, h as usize);
            (
                window,
                Raster {
                    width: w,
                    height: h,
                    values: vec![f64::NAN; w * h],
                },
            )
        });
    }
    if raster.height() > 0 {
        let col = |name: &str| {
            col_f64(&raster, name)
                .map_err(|_| ReportError::Table(format!("raster table has no `{name}` column")))
        };
        let (f, x, y, v) = (col("frame")?, col("x")?, col("y")?, col("value")?);
        for i in 0..raster.height() {
            let (Some(f), Some(x), Some(y), Some(v)) = (f[i], x[i], y[i], v[i]) else {
                continue;
            };
            if let Some((_, r)) = out.get_mut(&(f as u32)) {
                let (x, y) = (x as usize, y as usize);
                if x < r.width && y < r.height {
                    r.values[y * r.width + x] = v;
                }
            }
        }
    }
    Ok(out.into_values().collect())
}

/// Analyses the sweep in `store`, writes the summary and the images there, and returns
/// the summary.
pub async fn finish(store: &ObjectStore) -> Result<FractalSummary, ReportError> {
    let frames = frames(store).await?;
    let summary = summarise(&frames);
    let tmp = tempfile::tempdir().map_err(|e| ReportError::NotARun(e.to_string()))?;
    for (k, (_, r)) in frames.iter().enumerate() {
        for (name, boundary_only) in [
            (format!("frame-{k}.png"), false),
            (format!("frame-{k}-boundary.png"), true),
        ] {
            let path = tmp.path().join(&name);
            render(r, boundary_only, &path)?;
            crate::store::put_files(store, "fractal", &[path]).await?;
        }
    }
    crate::store::put_json(store, SUMMARY_FILE, &summary).await?;
    Ok(summary)
}

/// Reads the summary a finished sweep wrote, or computes it from the tables.
pub async fn load_or_compute(store: &ObjectStore) -> Result<FractalSummary, ReportError> {
    if let Some(s) = crate::store::get_json(store, SUMMARY_FILE).await {
        return Ok(s);
    }
    Ok(summarise(&frames(store).await?))
}

/// The summary as text: per frame its window, trainable share, boundary and dimension
/// with its per-box-size slopes, then the pooled dimension beside the paper's figure.
pub fn format_summary(s: &FractalSummary) -> String {
    let mut out = String::new();
    for f in &s.frames {
        let w = &f.window;
        out.push_str(&format!(
            "frame {}: log10 lr input [{:.4}, {:.4}], output [{:.4}, {:.4}]; {} of {} points trainable ({:.1}%); {} boundary cells; dimension {}\n",
            f.frame,
            w.x_lo,
            w.x_hi,
            w.y_lo,
            w.y_hi,
            f.trainable,
            f.points,
            100.0 * f.trainable as f64 / f.points.max(1) as f64,
            f.boundary_cells,
            f.dimension.map_or("n/a (no boundary)".to_owned(), |d| format!("{d:.3}")),
        ));
        if !f.slopes.is_empty() {
            let slopes: Vec<String> = f.slopes.iter().map(|v| format!("{v:.2}")).collect();
            out.push_str(&format!(
                "  box sizes {:?}: counts {:?}; slopes {}\n",
                f.box_sizes,
                f.box_counts,
                slopes.join(" ")
            ));
        }
    }
    match s.pooled_dimension {
        Some(d) if s.frames.len() > 1 => out.push_str(&format!(
            "fractal dimension, median slope over {} frames: {d:.3}\n",
            s.frames.len()
        )),
        Some(d) => out.push_str(&format!("fractal dimension (median slope): {d:.3}\n")),
        None => out.push_str("fractal dimension: n/a (no boundary in any frame)\n"),
    }
    out
}

/// Colours of the paper's images: trainable points blue, diverging ones red, each sign
/// rank-normalised so that the whole range of each side is visible; unknown points grey.
fn colours(values: &[f64]) -> Vec<RGBColor> {
    let ranks = |neg: bool| -> BTreeMap<usize, f64> {
        let mut idx: Vec<usize> = (0..values.len())
            .filter(|i| !values[*i].is_nan() && (values[*i] < 0.0) == neg)
            .collect();
        // Rank 0 nearest the boundary (smallest |value|).
        idx.sort_by(|a, b| values[*a].abs().total_cmp(&values[*b].abs()));
        let n = idx.len().max(2) - 1;
        idx.into_iter()
            .enumerate()
            .map(|(r, i)| (i, r as f64 / n as f64))
            .collect()
    };
    let (neg, pos) = (ranks(true), ranks(false));
    let mix = |a: (f64, f64, f64), b: (f64, f64, f64), t: f64| {
        let c = |x: f64, y: f64| (x + (y - x) * t).round().clamp(0.0, 255.0) as u8;
        RGBColor(c(a.0, b.0), c(a.1, b.1), c(a.2, b.2))
    };
    (0..values.len())
        .map(|i| {
            if let Some(t) = neg.get(&i) {
                mix((198.0, 219.0, 239.0), (8.0, 48.0, 107.0), *t)
            } else if let Some(t) = pos.get(&i) {
                mix((252.0, 187.0, 161.0), (103.0, 0.0, 13.0), *t)
            } else {
                RGBColor(160, 160, 160)
            }
        })
        .collect()
}

/// Draws a raster as a PNG, one pixel per grid point, the output layer's learning rate
/// growing upwards; with `boundary_only`, boundary cells black on white.
pub fn render(r: &Raster, boundary_only: bool, path: &Path) -> Result<(), ReportError> {
    let draw = |e: String| ReportError::NotARun(format!("{}: {e}", path.display()));
    let (w, h, pixels) = if boundary_only {
        let (w, h, edges) = boundary(r);
        let px: Vec<RGBColor> = edges
            .iter()
            .map(|e| if *e { BLACK } else { WHITE })
            .collect();
        (w, h, px)
    } else {
        (r.width, r.height, colours(&r.values))
    };
    if w == 0 || h == 0 {
        return Err(draw("empty raster".into()));
    }
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    for y in 0..h {
        for x in 0..w {
            root.draw_pixel((x as i32, (h - 1 - y) as i32), &pixels[y * w + x])
                .map_err(|e| draw(e.to_string()))?;
        }
    }
    root.present().map_err(|e| draw(e.to_string()))
}
