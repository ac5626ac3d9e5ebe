//! What a finished `nas` sweep leaves besides its tables of trials: every measured
//! sub-network (`subnets/`), the Pareto front (`pareto/`), the hypervolume after each
//! real evaluation (`hypervolume/`), a summary (`nas/summary.json`) and a figure
//! (`nas/front.png`: the front over the dominated points), all in the sweep's results
//! location, local or S3.

use std::path::Path;

use plotters::prelude::*;
use polars::prelude::{Column, DataFrame};
use serde::{Deserialize, Serialize};
use tessera_core::nas_sweep::{HYPERVOLUME_TABLE, NasSummary, PARETO_TABLE, SUBNETS_TABLE};

use crate::lake::ObjectStore;
use crate::report::{ReportError, col_f64, col_str};
use crate::store::{StoreError, get_json, put_files, put_json, put_table, read_table_from};

/// Where the summary goes in the results location.
pub const SUMMARY_FILE: &str = "nas/summary.json";

/// One sub-network of the front, as the summary lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontPoint {
    /// Its number.
    pub subnet: usize,
    /// Genes, dot-separated.
    pub genes: String,
    /// Objective values, in objective order.
    pub values: Vec<f64>,
    /// Where its latency was measured.
    pub hardware: String,
}

/// The summary a finished `nas` sweep writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontSummary {
    /// Objective names (`accuracy`, `latency_ms`, …).
    pub metrics: Vec<String>,
    /// Their goals.
    pub goals: Vec<String>,
    /// Sub-networks asked for.
    pub asked: usize,
    /// Sub-networks measured on every shard.
    pub measured: usize,
    /// Measured sub-networks within the constraints.
    pub feasible: usize,
    /// Hypervolume reference point (in each metric's own sign).
    pub reference: Vec<f64>,
    /// Final hypervolume.
    pub hypervolume: f64,
    /// The front, best first objective first.
    pub front: Vec<FrontPoint>,
}

fn genes(g: &[u32]) -> String {
    g.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

/// The summary of `s`.
pub fn front_summary(s: &NasSummary) -> FrontSummary {
    let mut front: Vec<FrontPoint> = s
        .front
        .iter()
        .filter_map(|id| {
            let r = s.subnets.get(*id)?;
            Some(FrontPoint {
                subnet: r.id,
                genes: genes(&r.genome),
                values: r.measured.clone()?,
                hardware: r.hardware(),
            })
        })
        .collect();
    let goal0 = s.objectives.first().map(|o| o.goal);
    front.sort_by(|a, b| {
        let (x, y) = (a.values[0], b.values[0]);
        match goal0 {
            Some(tessera_core::spec::Goal::Maximize) => y.total_cmp(&x),
            _ => x.total_cmp(&y),
        }
    });
    let measured: Vec<_> = s.subnets.iter().filter(|r| r.measured.is_some()).collect();
    let feasible = measured
        .iter()
        .filter(|r| r.feasible(&s.objectives) == Some(true))
        .count();
    FrontSummary {
        metrics: s
            .objectives
            .iter()
            .map(|o| o.metric.as_str().to_owned())
            .collect(),
        goals: s
            .objectives
            .iter()
            .map(|o| o.goal.as_str().to_owned())
            .collect(),
        asked: s.subnets.len(),
        measured: measured.len(),
        feasible,
        reference: s
            .objectives
            .iter()
            .zip(&s.reference)
            // `+ 0.0` turns −0 into 0.
            .map(|(o, r)| o.minimised(*r) + 0.0)
            .collect(),
        hypervolume: s.hypervolume.last().map_or(0.0, |(_, h)| *h),
        front,
    }
}

/// The `subnets` table: one row per sub-network asked for.
fn subnets_frame(s: &NasSummary) -> Result<DataFrame, StoreError> {
    let rows = &s.subnets;
    let on_front: std::collections::BTreeSet<usize> = s.front.iter().copied().collect();
    let mut cols = vec![
        Column::new(
            "subnet".into(),
            rows.iter().map(|r| r.id as u64).collect::<Vec<_>>(),
        ),
        Column::new(
            "generation".into(),
            rows.iter().map(|r| r.generation).collect::<Vec<_>>(),
        ),
        Column::new(
            "genes".into(),
            rows.iter().map(|r| genes(&r.genome)).collect::<Vec<_>>(),
        ),
    ];
    for g in 0..s.choices.len() {
        cols.push(Column::new(
            format!("gene_{g}").into(),
            rows.iter()
                .map(|r| r.genome.get(g).copied())
                .collect::<Vec<_>>(),
        ));
    }
    for (k, o) in s.objectives.iter().enumerate() {
        let name = o.metric.as_str();
        cols.push(Column::new(
            name.into(),
            rows.iter()
                .map(|r| r.measured.as_ref().map(|m| m[k]))
                .collect::<Vec<_>>(),
        ));
        cols.push(Column::new(
            format!("predicted_{name}").into(),
            rows.iter()
                .map(|r| r.predicted.as_ref().map(|m| m[k]).filter(|v| v.is_finite()))
                .collect::<Vec<_>>(),
        ));
    }
    cols.push(Column::new(
        "feasible".into(),
        rows.iter()
            .map(|r| r.feasible(&s.objectives))
            .collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "on_front".into(),
        rows.iter()
            .map(|r| on_front.contains(&r.id))
            .collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "shards_measured".into(),
        rows.iter()
            .map(|r| r.shards.len() as u32)
            .collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "latency_hardware".into(),
        rows.iter().map(|r| r.hardware()).collect::<Vec<_>>(),
    ));
    DataFrame::new(rows.len(), cols).map_err(|e| StoreError::Parquet {
        path: SUBNETS_TABLE.into(),
        message: e.to_string(),
    })
}

/// Writes the derived tables, the summary and the figures of `s` into `store`.
pub async fn finish(store: &ObjectStore, s: &NasSummary) -> Result<FrontSummary, ReportError> {
    let subnets = subnets_frame(s)?;
    let front_mask = subnets
        .column("on_front")
        .and_then(|c| c.bool().cloned())
        .map_err(|e| ReportError::Table(e.to_string()))?;
    let pareto = subnets
        .filter(&front_mask)
        .map_err(|e| ReportError::Table(e.to_string()))?;
    let hv = DataFrame::new(
        s.hypervolume.len(),
        vec![
            Column::new(
                "evaluations".into(),
                s.hypervolume
                    .iter()
                    .map(|(n, _)| *n as u64)
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "hypervolume".into(),
                s.hypervolume.iter().map(|(_, h)| *h).collect::<Vec<_>>(),
            ),
        ],
    )
    .map_err(|e| ReportError::Table(e.to_string()))?;
    let tmp = tempfile::tempdir().map_err(|e| ReportError::NotARun(e.to_string()))?;
    let files = render(&subnets, tmp.path()).map_err(ReportError::NotARun)?;
    put_table(store, SUBNETS_TABLE, subnets).await?;
    put_table(store, PARETO_TABLE, pareto).await?;
    put_table(store, HYPERVOLUME_TABLE, hv).await?;
    put_files(store, "nas", &files).await?;
    let summary = front_summary(s);
    put_json(store, SUMMARY_FILE, &summary).await?;
    Ok(summary)
}

/// The summary a finished sweep wrote in `store`, if it did.
pub async fn load(store: &ObjectStore) -> Option<FrontSummary> {
    get_json(store, SUMMARY_FILE).await
}

/// The summary as text: counts, hypervolume, then the front as a table.
pub fn format_summary(s: &FrontSummary) -> String {
    let mut out = format!(
        "{} sub-networks measured ({} feasible) of {} asked for; hypervolume {:.6} (reference {})\n",
        s.measured,
        s.feasible,
        s.asked,
        s.hypervolume,
        s.metrics
            .iter()
            .zip(&s.reference)
            .map(|(m, r)| format!("{m} {}", fmt_value(*r)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push_str(&format!("Pareto front ({} sub-networks):\n", s.front.len()));
    let mut header = format!("  {:>6}", "subnet");
    for (m, g) in s.metrics.iter().zip(&s.goals) {
        let arrow = if g == "maximize" { "↑" } else { "↓" };
        header.push_str(&format!("  {:>14}", format!("{m} {arrow}")));
    }
    header.push_str("  genes\n");
    out.push_str(&header);
    for p in &s.front {
        let mut line = format!("  {:>6}", p.subnet);
        for v in &p.values {
            line.push_str(&format!("  {:>14}", fmt_value(*v)));
        }
        line.push_str(&format!("  {}\n", p.genes));
        out.push_str(&line);
    }
    if let Some(h) = s.front.first().map(|p| &p.hardware)
        && !h.is_empty()
    {
        out.push_str(&format!("latency measured on: {h}\n"));
    }
    out
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() >= 1.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

/// Draws `front.png` from a `subnets` table (the first two objectives: every measured
/// sub-network, later generations darker, the front highlighted and joined); returns
/// the files.
pub fn render(subnets: &DataFrame, out: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    crate::plot::register_font();
    let names: Vec<String> = subnets
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let metrics: Vec<&str> = ["accuracy", "latency_ms", "macs", "params"]
        .into_iter()
        .filter(|m| names.iter().any(|n| n == m))
        .collect();
    // Keep the order the sweep listed them in (the table's column order).
    let mut metrics: Vec<(usize, &str)> = metrics
        .into_iter()
        .map(|m| (names.iter().position(|n| n == m).unwrap_or(0), m))
        .collect();
    metrics.sort();
    let [(_, mx), (_, my), ..] = metrics[..] else {
        return Err("the subnets table has fewer than two objectives".into());
    };
    let col = |n: &str| col_f64(subnets, n).map_err(|e| e.to_string());
    let (xs, ys) = (col(mx)?, col(my)?);
    let front = col_str(subnets, "on_front").map_err(|e| e.to_string())?;
    let generation = col("generation")?;
    let mut all = Vec::new();
    let mut best = Vec::new();
    for i in 0..subnets.height() {
        if let (Some(x), Some(y)) = (xs[i], ys[i]) {
            all.push((x, y, generation[i].unwrap_or(0.0)));
            if front[i].as_deref() == Some("true") {
                best.push((x, y));
            }
        }
    }
    if all.is_empty() {
        return Err("no sub-network was measured".into());
    }
    best.sort_by(|a, b| a.0.total_cmp(&b.0));
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let range = |v: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| {
            (l.min(x), h.max(x))
        });
        let pad = ((hi - lo) * 0.06).max(1e-9);
        (lo - pad)..(hi + pad)
    };
    let path = out.join("front.png");
    {
        let root = BitMapBackend::new(&path, (1000, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let max_gen = all.iter().map(|p| p.2).fold(0.0, f64::max).max(1.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Pareto front: {mx} vs {my}"),
                (crate::plot::FONT, 26),
            )
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(
                range(&mut all.iter().map(|p| p.0)),
                range(&mut all.iter().map(|p| p.1)),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(mx)
            .y_desc(my)
            .label_style((crate::plot::FONT, 15))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(all.iter().map(|(x, y, g)| {
                // Later generations darker.
                let t = g / max_gen;
                let c = RGBColor(
                    (200.0 - 120.0 * t) as u8,
                    (200.0 - 120.0 * t) as u8,
                    (200.0 - 100.0 * t) as u8,
                );
                Circle::new((*x, *y), 4, c.filled())
            }))
            .map_err(|e| e.to_string())?
            .label("measured (darker: later generation)")
            .legend(|(x, y)| Circle::new((x, y), 4, RGBColor(120, 120, 140).filled()));
        chart
            .draw_series(LineSeries::new(
                best.iter().copied(),
                RGBColor(214, 39, 40).stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                best.iter()
                    .map(|(x, y)| Circle::new((*x, *y), 6, RGBColor(214, 39, 40).filled())),
            )
            .map_err(|e| e.to_string())?
            .label("Pareto front")
            .legend(|(x, y)| Circle::new((x, y), 6, RGBColor(214, 39, 40).filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((crate::plot::FONT, 15))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(vec![path])
}

/// A run's figures for `tessera plot`: the front, from its `subnets` table.
pub async fn plot(store: &ObjectStore, out: &Path) -> Result<Vec<std::path::PathBuf>, ReportError> {
    let subnets = read_table_from(store, SUBNETS_TABLE).await?;
    if subnets.height() == 0 {
        return Err(ReportError::NotARun(
            "the sweep has not completed: its subnets table is written at the end".into(),
        ));
    }
    render(&subnets, out).map_err(ReportError::NotARun)
}
