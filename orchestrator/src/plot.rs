//! `tessera plot`: figures of a run, as PNG and SVG.
//!
//! - `learning_curves`: the objective against the step for the best trials;
//! - `objective_vs_<hyperparameter>`: every trial's objective against each varied
//!   hyperparameter (log axes where the space is log-scaled; categories spread out);
//! - `parallel_coordinates`: the best trials across every varied hyperparameter and the
//!   objective, each axis scaled to its range, the best trial darkest.
//!
//! Text uses the Ubuntu Light font shipped inside the `epaint_default_fonts` package, so
//! the PNGs look the same on every machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use tessera_core::space::{Domain, ParamValue, Scale};
use tessera_core::spec::Goal;

use crate::report::{ReportError, col_f64, col_str, load_spec, varied};
use crate::store::{METRICS, TRIALS, read_results};

/// Image formats `tessera plot` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    /// PNG (1000×640 pixels).
    Png,
    /// SVG (scalable, text as text).
    Svg,
}

/// Errors while plotting.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Reading the run failed.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Drawing or writing an image failed.
    #[error("{0}")]
    Draw(String),
}

const SIZE: (u32, u32) = (1000, 640);
pub(crate) const FONT: &str = "sans-serif";

pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// One trial as the plots see it.
struct Trial {
    id: u64,
    objective: f64,
    params: BTreeMap<String, Option<String>>,
}

/// Colour of rank `i` of `n` (best darkest), on a blue ramp.
fn ramp(i: usize, n: usize) -> RGBColor {
    let t = if n <= 1 {
        0.0
    } else {
        i as f64 / (n - 1) as f64
    };
    let lerp = |a: f64, b: f64| (a + (b - a) * t) as u8;
    RGBColor(lerp(8.0, 158.0), lerp(48.0, 202.0), lerp(107.0, 225.0))
}

/// Distinct colours for up to ten series.
fn palette(i: usize) -> RGBColor {
    const P: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = P[i % P.len()];
    RGBColor(r, g, b)
}

/// A fractal run's frames: each raster coloured like the paper and its boundary, as PNG
/// (one pixel per grid point; a raster has no use for SVG).
async fn plot_fractal(dir: &Path, out: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let store =
        crate::lake::ObjectStore::open(&crate::store::results_of(dir).map_err(ReportError::from)?)
            .await
            .map_err(|e| ReportError::from(crate::store::StoreError::from(e)))?;
    let frames = crate::fractal::frames(&store).await?;
    if frames.is_empty() {
        return Err(ReportError::NotARun(format!("{} has no tiles yet", dir.display())).into());
    }
    std::fs::create_dir_all(out)
        .map_err(|e| ReportError::NotARun(format!("{}: {e}", out.display())))?;
    let mut files = Vec::new();
    for (k, (_, raster)) in frames.iter().enumerate() {
        for (name, boundary_only) in [
            (format!("frame-{k}.png"), false),
            (format!("frame-{k}-boundary.png"), true),
        ] {
            let path = out.join(name);
            crate::fractal::render(raster, boundary_only, &path)?;
            files.push(path);
        }
    }
    Ok(files)
}

/// Draws every figure of the run in `dir` into `out`; returns the files written. A
/// fractal run's figures are its frames (see [`crate::fractal`]).
pub async fn plot_run(
    dir: &Path,
    out: &Path,
    top: usize,
    formats: &[ImageFormat],
) -> Result<Vec<PathBuf>, PlotError> {
    register_font();
    let spec = load_spec(dir)?;
    if spec.kind == tessera_core::spec::SweepKind::Fractal {
        return plot_fractal(dir, out).await;
    }
    if spec.kind == tessera_core::spec::SweepKind::Nas {
        let store = crate::lake::ObjectStore::open(
            &crate::store::results_of(dir).map_err(ReportError::from)?,
        )
        .await
        .map_err(|e| ReportError::from(crate::store::StoreError::from(e)))?;
        return Ok(crate::nas::plot(&store, out).await?);
    }
    if let Some(m) = &spec.metalic {
        let store = crate::lake::ObjectStore::open(
            &crate::store::results_of(dir).map_err(ReportError::from)?,
        )
        .await
        .map_err(|e| ReportError::from(crate::store::StoreError::from(e)))?;
        return Ok(crate::metalic::plot(&store, out, m).await?);
    }
    let trials_df = read_results(dir, TRIALS).await.map_err(ReportError::from)?;
    let metrics_df = read_results(dir, METRICS)
        .await
        .map_err(ReportError::from)?;
    if trials_df.height() == 0 {
        return Err(ReportError::NotARun(format!("{} has no trials yet", dir.display())).into());
    }
    let metric = spec.objective.metric.clone();
    let better = |a: f64, b: f64| match spec.objective.goal {
        Goal::Maximize => b.total_cmp(&a),
        Goal::Minimize => a.total_cmp(&b),
    };
    let varied = varied(&spec);
    let ids = col_f64(&trials_df, "trial_id")?;
    let obj = col_f64(&trials_df, &metric)?;
    let mut cols = BTreeMap::new();
    for (name, _) in &varied {
        cols.insert(name.clone(), col_str(&trials_df, name)?);
    }
    let mut trials: Vec<Trial> = (0..trials_df.height())
        .filter_map(|i| {
            let objective = obj[i].filter(|v| v.is_finite())?;
            Some(Trial {
                id: ids[i]? as u64,
                objective,
                params: cols
                    .iter()
                    .map(|(n, c)| (n.clone(), c[i].clone()))
                    .collect(),
            })
        })
        .collect();
    trials.sort_by(|a, b| better(a.objective, b.objective));
    if trials.is_empty() {
        return Err(PlotError::Draw(format!(
            "no trial reported `{metric}`; nothing to plot"
        )));
    }
    let best: Vec<&Trial> = trials.iter().take(top.max(1)).collect();

    // Learning curves of the best trials: (step, value) of the objective metric.
    let m_ids = col_f64(&metrics_df, "trial_id")?;
    let m_steps = col_f64(&metrics_df, "step")?;
    let m_names = col_str(&metrics_df, "metric")?;
    let m_values = col_f64(&metrics_df, "value")?;
    let mut curves: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    let wanted: std::collections::BTreeSet<u64> = best.iter().take(10).map(|t| t.id).collect();
    for i in 0..metrics_df.height() {
        if let (Some(id), Some(step), Some(name), Some(v)) =
            (m_ids[i], m_steps[i], &m_names[i], m_values[i])
            && name == &metric
            && wanted.contains(&(id as u64))
            && v.is_finite()
        {
            curves.entry(id as u64).or_default().push((step, v));
        }
    }
    for c in curves.values_mut() {
        c.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    std::fs::create_dir_all(out).map_err(draw_err)?;
    let mut written = Vec::new();
    let title = &spec.name;
    for &format in formats {
        let ext = match format {
            ImageFormat::Png => "png",
            ImageFormat::Svg => "svg",
        };
        let path = out.join(format!("learning_curves.{ext}"));
        write(
            &Curves {
                title,
                metric: &metric,
                curves: &curves,
                best: &best,
            },
            &path,
            format,
        )?;
        written.push(path);
        for (name, domain) in &varied {
            let path = out.join(format!("objective_vs_{name}.{ext}"));
            write(
                &Scatter {
                    title,
                    metric: &metric,
                    name,
                    domain,
                    trials: &trials,
                },
                &path,
                format,
            )?;
            written.push(path);
        }
        if !varied.is_empty() {
            let path = out.join(format!("parallel_coordinates.{ext}"));
            write(
                &Parallel {
                    title,
                    metric: &metric,
                    varied: &varied,
                    best: &best,
                    goal: spec.objective.goal,
                },
                &path,
                format,
            )?;
            written.push(path);
        }
    }
    Ok(written)
}

/// A figure that draws on any backend.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>
    where
        DB::ErrorType: 'static;
}

fn write(fig: &impl Figure, path: &Path, format: ImageFormat) -> Result<(), PlotError> {
    match format {
        ImageFormat::Png => {
            let root = BitMapBackend::new(path, SIZE).into_drawing_area();
            fig.draw(&root)?;
            root.present().map_err(draw_err)
        }
        ImageFormat::Svg => {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            fig.draw(&root)?;
            root.present().map_err(draw_err)
        }
    }
}

fn font(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().into()
}

struct Curves<'a> {
    title: &'a str,
    metric: &'a str,
    curves: &'a BTreeMap<u64, Vec<(f64, f64)>>,
    best: &'a [&'a Trial],
}

impl Figure for Curves<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(draw_err)?;
        let points = self.curves.values().flatten();
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in points {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let pad = ((y1 - y0) * 0.05).max(1e-9);
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "{}: {} of the best trials, by step",
                    self.title, self.metric
                ),
                font(24),
            )
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
            .map_err(draw_err)?;
        let whole = |v: &f64| {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_label_formatter(&whole)
            .x_desc("step")
            .y_desc(self.metric)
            .label_style(font(15))
            .axis_desc_style(font(17))
            .draw()
            .map_err(draw_err)?;
        // In rank order, so the legend reads best first.
        for (i, t) in self
            .best
            .iter()
            .filter(|t| self.curves.contains_key(&t.id))
            .enumerate()
        {
            let color = palette(i);
            let pts = &self.curves[&t.id];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(draw_err)?
                .label(format!("#{} trial {} ({:.4})", i + 1, t.id, t.objective))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(draw_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(font(14))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(draw_err)?;
        Ok(())
    }
}

/// Numeric value of a hyperparameter cell, or the index of its category.
fn axis_value(domain: &Domain, cell: Option<&str>) -> Option<f64> {
    let cell = cell?;
    match domain {
        Domain::Choice(options) => options
            .iter()
            .position(|o| {
                o.to_string() == cell
                    || o.as_f64()
                        .zip(cell.parse().ok())
                        .is_some_and(|(a, b): (f64, f64)| a == b)
            })
            .map(|i| i as f64),
        _ => cell.parse().ok(),
    }
}

fn categories(domain: &Domain) -> Option<Vec<String>> {
    match domain {
        Domain::Choice(options) => Some(options.iter().map(ParamValue::to_string).collect()),
        _ => None,
    }
}

fn bounds(domain: &Domain) -> (f64, f64, bool) {
    match domain {
        Domain::Float {
            low, high, scale, ..
        } => (*low, *high, *scale == Scale::Log),
        Domain::Int {
            low, high, scale, ..
        } => (*low as f64, *high as f64, *scale == Scale::Log),
        Domain::Choice(o) => (-0.5, o.len() as f64 - 0.5, false),
        Domain::Fixed(_) => (0.0, 1.0, false),
    }
}

struct Scatter<'a> {
    title: &'a str,
    metric: &'a str,
    name: &'a str,
    domain: &'a Domain,
    trials: &'a [Trial],
}

impl Figure for Scatter<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(draw_err)?;
        let pts: Vec<(f64, f64, usize)> = self
            .trials
            .iter()
            .enumerate()
            .filter_map(|(rank, t)| {
                let x = axis_value(self.domain, t.params.get(self.name)?.as_deref())?;
                Some((x, t.objective, rank))
            })
            .collect();
        let (y0, y1) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let (y0, y1) = if y0 > y1 { (0.0, 1.0) } else { (y0, y1) };
        let pad = ((y1 - y0) * 0.05).max(1e-9);
        let (x0, x1, log) = bounds(self.domain);
        let caption = format!("{}: {} against {}", self.title, self.metric, self.name);
        let n = pts.len();
        let draw_points = |pts: &[(f64, f64, usize)]| {
            pts.iter()
                .rev()
                .map(|&(x, y, rank)| Circle::new((x, y), 5, ramp(rank, n).filled()))
                .collect::<Vec<_>>()
        };
        let mut builder = ChartBuilder::on(root);
        builder
            .caption(caption, font(24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72);
        if log && x0 > 0.0 {
            let mut chart = builder
                .build_cartesian_2d((x0..x1).log_scale(), (y0 - pad)..(y1 + pad))
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc(format!("{} (log scale)", self.name))
                .y_desc(self.metric)
                .label_style(font(15))
                .axis_desc_style(font(17))
                .draw()
                .map_err(draw_err)?;
            chart.draw_series(draw_points(&pts)).map_err(draw_err)?;
        } else {
            let cats = categories(self.domain);
            let mut chart = builder
                .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
                .map_err(draw_err)?;
            let fmt = |v: &f64| match &cats {
                Some(c) => {
                    let i = v.round();
                    if (v - i).abs() < 1e-6 && i >= 0.0 {
                        c.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                }
                None => format!("{v}"),
            };
            let mut mesh = chart.configure_mesh();
            mesh.x_desc(self.name)
                .y_desc(self.metric)
                .label_style(font(15))
                .axis_desc_style(font(17))
                .x_label_formatter(&fmt);
            if let Some(c) = &cats {
                mesh.x_labels(c.len() * 4 + 1);
            }
            mesh.draw().map_err(draw_err)?;
            // Categories: spread the points of one value a little, deterministically.
            let spread: Vec<(f64, f64, usize)> = pts
                .iter()
                .map(|&(x, y, r)| {
                    if cats.is_some() {
                        let j = ((r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64
                            / (1u64 << 24) as f64;
                        (x + (j - 0.5) * 0.3, y, r)
                    } else {
                        (x, y, r)
                    }
                })
                .collect();
            chart.draw_series(draw_points(&spread)).map_err(draw_err)?;
        }
        Ok(())
    }
}

struct Parallel<'a> {
    title: &'a str,
    metric: &'a str,
    varied: &'a [(String, Domain)],
    best: &'a [&'a Trial],
    goal: Goal,
}

impl Figure for Parallel<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), PlotError>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(draw_err)?;
        let axes = self.varied.len() + 1;
        let (omin, omax) = self.best.iter().fold((f64::MAX, f64::MIN), |(a, b), t| {
            (a.min(t.objective), b.max(t.objective))
        });
        let norm = |v: f64, lo: f64, hi: f64, log: bool| {
            let (v, lo, hi) = if log && lo > 0.0 && v > 0.0 {
                (v.ln(), lo.ln(), hi.ln())
            } else {
                (v, lo, hi)
            };
            if hi > lo {
                ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
            } else {
                0.5
            }
        };
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "{}: the {} best trials across hyperparameters",
                    self.title,
                    self.best.len()
                ),
                font(24),
            )
            .margin(24)
            .x_label_area_size(56)
            .y_label_area_size(16)
            .build_cartesian_2d(-0.2f64..(axes as f64 - 0.8), -0.05f64..1.05)
            .map_err(draw_err)?;
        let names: Vec<String> = self
            .varied
            .iter()
            .map(|(n, _)| n.clone())
            .chain(std::iter::once(format!(
                "{} ({})",
                self.metric,
                match self.goal {
                    Goal::Maximize => "max",
                    Goal::Minimize => "min",
                }
            )))
            .collect();
        let fmt = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_y_axis()
            .x_labels(axes * 5 + 1)
            .x_label_formatter(&fmt)
            .label_style(font(15))
            .draw()
            .map_err(draw_err)?;
        for i in 0..axes {
            chart
                .draw_series(LineSeries::new(
                    [(i as f64, 0.0), (i as f64, 1.0)],
                    BLACK.stroke_width(1),
                ))
                .map_err(draw_err)?;
        }
        // Axis ends: low at the bottom, high at the top.
        for (i, (_, d)) in self.varied.iter().enumerate() {
            let (lo, hi) = match d {
                Domain::Choice(o) => (
                    o.first().map(ParamValue::to_string).unwrap_or_default(),
                    o.last().map(ParamValue::to_string).unwrap_or_default(),
                ),
                _ => {
                    let (lo, hi, _) = bounds(d);
                    (format!("{lo}"), format!("{hi}"))
                }
            };
            for (y, label) in [(0.0, lo), (1.0, hi)] {
                chart
                    .draw_series(std::iter::once(Text::new(
                        label,
                        (i as f64 + 0.03, y),
                        font(13),
                    )))
                    .map_err(draw_err)?;
            }
        }
        let obj_axis = self.varied.len() as f64 + 0.03;
        for (y, v) in [(0.0, omin), (1.0, omax)] {
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{v:.4}"),
                    (obj_axis, y),
                    font(13),
                )))
                .map_err(draw_err)?;
        }
        let n = self.best.len();
        for (rank, t) in self.best.iter().enumerate().rev() {
            let mut pts = Vec::with_capacity(axes);
            for (i, (name, d)) in self.varied.iter().enumerate() {
                let (lo, hi, log) = bounds(d);
                let v = axis_value(d, t.params.get(name).and_then(|v| v.as_deref()));
                let y = match d {
                    Domain::Choice(o) => v.map(|v| {
                        if o.len() > 1 {
                            v / (o.len() - 1) as f64
                        } else {
                            0.5
                        }
                    }),
                    _ => v.map(|v| norm(v, lo, hi, log)),
                };
                if let Some(y) = y {
                    pts.push((i as f64, y));
                }
            }
            pts.push((
                self.varied.len() as f64,
                norm(t.objective, omin, omax, false),
            ));
            let color = ramp(rank, n);
            chart
                .draw_series(LineSeries::new(
                    pts,
                    color.stroke_width(if rank == 0 { 4 } else { 2 }),
                ))
                .map_err(draw_err)?;
        }
        Ok(())
    }
}
