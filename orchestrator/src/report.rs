//! `tessera report`: reads a run's Parquet tables back with polars and summarises them:
//! a leaderboard and, per hyperparameter, how the objective varies with it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use tessera_core::space::{Domain, ValueKind};
use tessera_core::spec::{Goal, SweepKind};
use tessera_core::{SweepSpec, parse_sweep};

use crate::run::SPEC_FILE;
use crate::store::{TRIALS, read_results};

/// Errors building a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The folder is not a run directory.
    #[error("{0}")]
    NotARun(String),
    /// Reading the tables failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A table lacks an expected column.
    #[error("{0}")]
    Table(String),
}

/// A plain text table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextTable {
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
}

impl TextTable {
    /// An empty table with these headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders with aligned columns (numbers right-aligned).
    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let numeric = |s: &str| s.parse::<f64>().is_ok() || s == "-";
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String, header: bool| {
            let mut parts = Vec::new();
            for (i, c) in cells.iter().enumerate().take(n) {
                let pad = width[i] - c.chars().count();
                if !header && numeric(c) {
                    parts.push(format!("{}{c}", " ".repeat(pad)));
                } else {
                    parts.push(format!("{c}{}", " ".repeat(pad)));
                }
            }
            let _ = writeln!(out, "  {}", parts.join("  ").trim_end());
        };
        line(&self.headers, &mut out, true);
        let rule: Vec<String> = width.iter().map(|w| "─".repeat(*w)).collect();
        let _ = writeln!(out, "  {}", rule.join("  "));
        for r in &self.rows {
            line(r, &mut out, false);
        }
        out
    }
}

/// How `tessera report` prints.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Aligned tables for a terminal.
    #[default]
    Table,
    /// The leaderboard as CSV (header row, RFC 4180 quoting), for spreadsheets and scripts.
    Csv,
    /// Everything as one JSON object, for scripts.
    Json,
}

impl TextTable {
    /// The table as CSV.
    pub fn to_csv(&self) -> String {
        let cell = |c: &str| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.to_owned()
            }
        };
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }

    /// The rows as JSON objects keyed by header; numeric cells become numbers, `-` null.
    pub fn to_json_rows(&self) -> Vec<serde_json::Value> {
        self.rows
            .iter()
            .map(|r| {
                let obj: serde_json::Map<String, serde_json::Value> = self
                    .headers
                    .iter()
                    .zip(r)
                    .map(|(h, c)| {
                        let v = if c == "-" {
                            serde_json::Value::Null
                        } else if let Ok(n) = c.parse::<i64>() {
                            n.into()
                        } else if let Ok(x) = c.parse::<f64>() {
                            x.into()
                        } else {
                            c.clone().into()
                        };
                        (h.clone(), v)
                    })
                    .collect();
                serde_json::Value::Object(obj)
            })
            .collect()
    }
}

/// How the objective varies with one hyperparameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    /// Hyperparameter.
    pub name: String,
    /// Spearman rank correlation with the objective (numeric hyperparameters).
    pub spearman: Option<f64>,
    /// Per value or per quantile bin: trials, mean and best objective.
    pub table: TextTable,
}

/// A run's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The sweep.
    pub spec: SweepSpec,
    /// Trials recorded, by status.
    pub counts: Vec<(String, usize)>,
    /// Best trials first.
    pub leaderboard: TextTable,
    /// Best trial id and objective.
    pub best: Option<(u64, f64)>,
    /// One entry per varied hyperparameter.
    pub effects: Vec<Effect>,
    /// Rows read from `trials/`.
    pub rows: usize,
    /// The objective by step of each leaderboard trial.
    pub curves: std::collections::BTreeMap<u64, Vec<(u64, f64)>>,
    /// A fractal sweep's frames and dimension.
    pub fractal: Option<tessera_core::fractal_sweep::FractalSummary>,
    /// A completed nas sweep's front.
    pub nas: Option<crate::nas::FrontSummary>,
    /// A completed metalic sweep's policies.
    pub metalic: Option<crate::metalic::BanditSummary>,
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e5) {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() || s == "-" {
            "0".to_owned()
        } else {
            s.to_owned()
        }
    } else {
        format!("{v:.3e}")
    }
}

pub(crate) fn col_f64(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>, ReportError> {
    let c = df
        .column(name)
        .map_err(|_| ReportError::Table(format!("trials table has no `{name}` column")))?;
    let c = c
        .cast(&DataType::Float64)
        .map_err(|e| ReportError::Table(e.to_string()))?;
    Ok(c.f64()
        .map_err(|e| ReportError::Table(e.to_string()))?
        .iter()
        .collect())
}

pub(crate) fn col_str(df: &DataFrame, name: &str) -> Result<Vec<Option<String>>, ReportError> {
    let c = df
        .column(name)
        .map_err(|_| ReportError::Table(format!("trials table has no `{name}` column")))?;
    let c = c
        .cast(&DataType::String)
        .map_err(|e| ReportError::Table(e.to_string()))?;
    Ok(c.str()
        .map_err(|e| ReportError::Table(e.to_string()))?
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect())
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|a, b| v[*a].total_cmp(&v[*b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation; `None` for fewer than 3 pairs or a constant side.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() < 3 || x.len() != y.len() {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = rx.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

fn group_rows(groups: Vec<(String, Vec<f64>)>, goal: Goal) -> TextTable {
    let mut t = TextTable {
        headers: vec![
            "value".into(),
            "trials".into(),
            "mean".into(),
            "best".into(),
        ],
        rows: Vec::new(),
    };
    for (label, vals) in groups {
        if vals.is_empty() {
            continue;
        }
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let best = vals.iter().copied().fold(None, |b: Option<f64>, v| {
            Some(b.map_or(v, |b| if goal.better(v, b) { v } else { b }))
        });
        t.rows.push(vec![
            label,
            vals.len().to_string(),
            fmt_num(mean),
            best.map_or("-".into(), fmt_num),
        ]);
    }
    t
}

/// A curve as a line of block characters, low to high, at most `width` wide.
pub fn sparkline(points: &[(u64, f64)], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let vals: Vec<f64> = points
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .collect();
    if vals.is_empty() || width == 0 {
        return "-".into();
    }
    let n = vals.len().min(width);
    let pick: Vec<f64> = (0..n)
        .map(|k| vals[k * (vals.len() - 1) / (n - 1).max(1)])
        .collect();
    let (lo, hi) = pick
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    pick.iter()
        .map(|v| {
            if hi > lo {
                BARS[(((v - lo) / (hi - lo)) * 7.0).round() as usize]
            } else {
                BARS[3]
            }
        })
        .collect()
}

/// Trials by status, in order of first appearance.
fn count_status(status: &[Option<String>]) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for s in status.iter().flatten() {
        match counts.iter_mut().find(|(k, _)| k == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s.clone(), 1)),
        }
    }
    counts
}

/// One line of an overview: a sweep, its counts and its best trial.
fn overview_row(
    id: &str,
    name: &str,
    metric: &str,
    goal: Goal,
    df: &DataFrame,
) -> Result<Vec<String>, ReportError> {
    if df.height() == 0 {
        return Ok(vec![
            id.into(),
            name.into(),
            "0".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            metric.into(),
            "-".into(),
            "-".into(),
        ]);
    }
    let counts = count_status(&col_str(df, "status")?);
    let ids = col_f64(df, "trial_id")?;
    let obj = col_f64(df, metric)?;
    let best = (0..df.height())
        .filter_map(|i| Some((ids[i]?, obj[i].filter(|v| v.is_finite())?)))
        .reduce(|a, b| if goal.better(b.1, a.1) { b } else { a });
    let n = |k: &str| {
        counts
            .iter()
            .find(|(s, _)| s == k)
            .map_or(0, |(_, n)| *n)
            .to_string()
    };
    Ok(vec![
        id.into(),
        name.into(),
        df.height().to_string(),
        n("finished"),
        n("stopped"),
        n("failed"),
        metric.into(),
        best.map_or("-".into(), |(_, v)| fmt_num(v)),
        best.map_or("-".into(), |(t, _)| format!("{t}")),
    ])
}

/// Whether `dir` is one run (it has a journal) rather than a folder of runs.
pub fn is_run_dir(dir: &Path) -> bool {
    dir.join(crate::run::JOURNAL_FILE).is_file()
}

/// Every sweep under a results location, one row each: a local folder of run directories,
/// or an S3 prefix of `sweep=<id>/` folders.
pub async fn build_overview(root: &crate::lake::Location) -> Result<TextTable, ReportError> {
    let mut t = TextTable::new(&[
        "sweep",
        "name",
        "trials",
        "finished",
        "stopped",
        "failed",
        "objective",
        "best",
        "best trial",
    ]);
    match root {
        crate::lake::Location::Local(dir) => {
            let mut runs: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| {
                    ReportError::NotARun(format!(
                        "{}: {e}; give a run directory (it holds journal.jsonl), a folder of them, or an s3://BUCKET/PREFIX results location",
                        dir.display()
                    ))
                })?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| is_run_dir(p))
                .collect();
            runs.sort();
            for run in runs {
                let Ok(spec) = load_spec(&run) else {
                    continue;
                };
                let df = crate::store::read_results(&run, TRIALS).await?;
                let id = run
                    .file_name()
                    .map_or(String::new(), |f| f.to_string_lossy().into_owned());
                t.row(overview_row(
                    &id,
                    &spec.name,
                    &spec.objective.metric,
                    spec.objective.goal,
                    &df,
                )?);
            }
        }
        s3 => {
            let store = crate::lake::ObjectStore::open(s3)
                .await
                .map_err(crate::store::StoreError::from)?;
            for dir in store
                .list_dirs("")
                .await
                .map_err(crate::store::StoreError::from)?
            {
                let Some(id) = dir.trim_end_matches('/').strip_prefix("sweep=") else {
                    continue;
                };
                let sweep = store.sub(dir.trim_end_matches('/'));
                let Ok(meta) = sweep.get(crate::store::META_FILE).await else {
                    continue;
                };
                let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap_or_default();
                let metric = meta["objective"]["metric"].as_str().unwrap_or("objective");
                let goal = serde_json::from_value(meta["objective"]["goal"].clone())
                    .unwrap_or(Goal::Minimize);
                let df = crate::store::read_table_from(&sweep, TRIALS).await?;
                t.row(overview_row(
                    id,
                    meta["name"].as_str().unwrap_or("-"),
                    metric,
                    goal,
                    &df,
                )?);
            }
        }
    }
    if t.rows.is_empty() {
        return Err(ReportError::NotARun(format!(
            "{root} holds no sweep: give a run directory, a folder of run directories, or the s3://… location results were written to"
        )));
    }
    Ok(t)
}

/// The hyperparameters a sweep varies (every one but the fixed), by name.
pub(crate) fn varied(spec: &SweepSpec) -> Vec<(String, Domain)> {
    spec.space
        .params
        .iter()
        .filter(|(_, d)| !matches!(d, Domain::Fixed(_)))
        .map(|(n, d)| (n.clone(), d.clone()))
        .collect()
}

/// The sweep spec of the run in `dir`.
pub(crate) fn load_spec(dir: &Path) -> Result<SweepSpec, ReportError> {
    let spec_path = dir.join(SPEC_FILE);
    let text = std::fs::read_to_string(&spec_path).map_err(|_| {
        ReportError::NotARun(format!(
            "{} is not a run directory (no {SPEC_FILE}); pass the folder `tessera run` wrote",
            dir.display()
        ))
    })?;
    parse_sweep(&spec_path.display().to_string(), &text)
        .map_err(|e| ReportError::NotARun(e.to_string()))
}

/// Reads the run in `dir` and summarises it; `top` rows in the leaderboard.
pub async fn build_report(dir: &Path, top: usize) -> Result<Report, ReportError> {
    let spec = load_spec(dir)?;
    let df = read_results(dir, TRIALS).await?;
    let rows = df.height();
    let metric = spec.objective.metric.clone();
    let goal = spec.objective.goal;
    if rows == 0 {
        let journal =
            std::fs::read_to_string(dir.join(crate::run::JOURNAL_FILE)).unwrap_or_default();
        let pending = journal.matches("\"type\":\"finished\"").count();
        if pending > 0 {
            return Err(ReportError::NotARun(format!(
                "{} has no trial in Parquet yet, but its journal holds {pending} finished trials: the run was stopped before writing them; finish it with `tessera run SWEEP.yaml --out {} --resume`",
                dir.display(),
                dir.display()
            )));
        }
        return Ok(Report {
            spec,
            counts: Vec::new(),
            leaderboard: TextTable::default(),
            best: None,
            effects: Vec::new(),
            rows,
            curves: Default::default(),
            fractal: None,
            nas: None,
            metalic: None,
        });
    }
    let ids = col_f64(&df, "trial_id")?;
    let status = col_str(&df, "status")?;
    let obj = col_f64(&df, &metric)?;
    let steps = col_f64(&df, "steps")?;
    let dur = col_f64(&df, "duration_s")?;
    let counts = count_status(&status);
    let varied = varied(&spec);
    let params: Vec<Vec<Option<String>>> = varied
        .iter()
        .map(|(n, _)| col_str(&df, n))
        .collect::<Result<_, _>>()?;

    let mut order: Vec<usize> = (0..rows)
        .filter(|i| obj[*i].is_some_and(f64::is_finite))
        .collect();
    order.sort_by(|a, b| {
        let (x, y) = (obj[*a].unwrap_or(f64::NAN), obj[*b].unwrap_or(f64::NAN));
        goal.score(y)
            .total_cmp(&goal.score(x))
            .then(ids[*a].unwrap_or(0.0).total_cmp(&ids[*b].unwrap_or(0.0)))
    });
    let best = order
        .first()
        .map(|i| (ids[*i].unwrap_or(0.0) as u64, obj[*i].unwrap_or(f64::NAN)));
    let mut headers = vec![
        "rank".to_owned(),
        "trial".into(),
        metric.clone(),
        "status".into(),
        "steps".into(),
        "time_s".into(),
        "curve".into(),
    ];
    headers.extend(varied.iter().map(|(n, _)| n.clone()));
    // Learning curves of the leaderboard's trials: the objective metric by step.
    let shown: std::collections::BTreeSet<u64> = order
        .iter()
        .take(top)
        .filter_map(|&i| ids[i].map(|v| v as u64))
        .collect();
    let mut curves: std::collections::BTreeMap<u64, Vec<(u64, f64)>> = Default::default();
    let m = crate::store::read_results(dir, crate::store::METRICS).await?;
    if m.height() > 0 {
        let (m_ids, m_steps, m_names, m_values) = (
            col_f64(&m, "trial_id")?,
            col_f64(&m, "step")?,
            col_str(&m, "metric")?,
            col_f64(&m, "value")?,
        );
        for k in 0..m.height() {
            if let (Some(id), Some(step), Some(name), Some(v)) =
                (m_ids[k], m_steps[k], &m_names[k], m_values[k])
                && name == &metric
                && shown.contains(&(id as u64))
            {
                curves.entry(id as u64).or_default().push((step as u64, v));
            }
        }
        for c in curves.values_mut() {
            c.sort_by_key(|p| p.0);
        }
    }
    let mut leaderboard = TextTable {
        headers,
        rows: Vec::new(),
    };
    for (rank, &i) in order.iter().take(top).enumerate() {
        let mut row = vec![
            (rank + 1).to_string(),
            fmt_num(ids[i].unwrap_or(0.0)),
            obj[i].map_or("-".into(), fmt_num),
            status[i].clone().unwrap_or_default(),
            steps[i].map_or("-".into(), fmt_num),
            dur[i].map_or("-".into(), |d| format!("{d:.2}")),
            ids[i]
                .and_then(|id| curves.get(&(id as u64)))
                .map_or("-".into(), |c| sparkline(c, 20)),
        ];
        for p in &params {
            row.push(match p[i].as_deref() {
                Some(s) => s.parse::<f64>().map_or_else(|_| s.to_owned(), fmt_num),
                None => "-".into(),
            });
        }
        leaderboard.rows.push(row);
    }

    let mut effects = Vec::new();
    for ((name, domain), values) in varied.iter().zip(&params) {
        let pairs: Vec<(String, f64)> = (0..rows)
            .filter_map(|i| Some((values[i].clone()?, obj[i].filter(|v| v.is_finite())?)))
            .collect();
        let numeric = matches!(domain.value_kind(), ValueKind::Int | ValueKind::Float);
        let distinct = {
            let mut d: Vec<&String> = pairs.iter().map(|(v, _)| v).collect();
            d.sort();
            d.dedup();
            d.len()
        };
        let (table, rho) = if numeric && distinct > 6 {
            let mut xs: Vec<(f64, f64)> = pairs
                .iter()
                .filter_map(|(v, o)| Some((v.parse::<f64>().ok()?, *o)))
                .collect();
            xs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let rho = spearman(
                &xs.iter().map(|p| p.0).collect::<Vec<_>>(),
                &xs.iter().map(|p| p.1).collect::<Vec<_>>(),
            );
            let bins = 4.min(xs.len());
            let mut groups = Vec::new();
            for b in 0..bins {
                let (lo, hi) = (b * xs.len() / bins, (b + 1) * xs.len() / bins);
                let chunk = &xs[lo..hi];
                if let (Some(first), Some(last)) = (chunk.first(), chunk.last()) {
                    groups.push((
                        format!("[{}, {}]", fmt_num(first.0), fmt_num(last.0)),
                        chunk.iter().map(|p| p.1).collect(),
                    ));
                }
            }
            (group_rows(groups, goal), rho)
        } else {
            let mut keys: Vec<String> = pairs.iter().map(|(v, _)| v.clone()).collect();
            keys.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => x.total_cmp(&y),
                _ => a.cmp(b),
            });
            keys.dedup();
            let groups = keys
                .into_iter()
                .map(|k| {
                    let vals = pairs
                        .iter()
                        .filter(|(v, _)| *v == k)
                        .map(|(_, o)| *o)
                        .collect();
                    let label = k.parse::<f64>().map_or_else(|_| k.clone(), fmt_num);
                    (label, vals)
                })
                .collect();
            let rho = if numeric {
                let xs: Vec<(f64, f64)> = pairs
                    .iter()
                    .filter_map(|(v, o)| Some((v.parse::<f64>().ok()?, *o)))
                    .collect();
                spearman(
                    &xs.iter().map(|p| p.0).collect::<Vec<_>>(),
                    &xs.iter().map(|p| p.1).collect::<Vec<_>>(),
                )
            } else {
                None
            };
            (group_rows(groups, goal), rho)
        };
        effects.push(Effect {
            name: name.clone(),
            spearman: rho,
            table,
        });
    }
    // A fractal, nas or metalic sweep's trials are not hyperparameter choices: its own
    // analysis replaces the effects.
    let (mut fractal, mut nas, mut metalic) = (None, None, None);
    let effects = match spec.kind {
        SweepKind::Fractal | SweepKind::Nas | SweepKind::Metalic => {
            let store = crate::lake::ObjectStore::open(&crate::store::results_of(dir)?)
                .await
                .map_err(crate::store::StoreError::from)?;
            match spec.kind {
                SweepKind::Fractal => {
                    fractal = Some(crate::fractal::load_or_compute(&store).await?);
                }
                SweepKind::Nas => nas = crate::nas::load(&store).await,
                _ => metalic = crate::metalic::load(&store).await,
            }
            Vec::new()
        }
        _ => effects,
    };
    Ok(Report {
        spec,
        counts,
        leaderboard,
        curves,
        best,
        effects,
        rows,
        fractal,
        nas,
        metalic,
    })
}

impl Report {
    /// The report in `format`.
    pub fn render_as(&self, format: Format) -> String {
        match format {
            Format::Table => self.render(),
            Format::Csv => self.leaderboard.to_csv(),
            Format::Json => format!(
                "{}\n",
                serde_json::to_string_pretty(&self.to_json()).unwrap_or_default()
            ),
        }
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "sweep": self.spec.name,
            "kind": self.spec.kind.as_str(),
            "program": self.spec.program,
            "objective": {
                "metric": self.spec.objective.metric,
                "goal": self.spec.objective.goal.as_str(),
            },
            "trials": self.rows,
            "counts": self.counts.iter().map(|(k, n)| (k.clone(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
            "best": self.best.map(|(id, v)| serde_json::json!({"trial_id": id, "value": v})),
            "leaderboard": self.leaderboard.to_json_rows(),
            "fractal": self.fractal,
            "nas": self.nas,
            "metalic": self.metalic,
            "curves": self.curves.iter().map(|(id, c)| (id.to_string(), serde_json::json!(c))).collect::<serde_json::Map<_, _>>(),
            "effects": self.effects.iter().map(|e| serde_json::json!({
                "hyperparameter": e.name,
                "spearman": e.spearman,
                "rows": e.table.to_json_rows(),
            })).collect::<Vec<_>>(),
        })
    }

    /// The report as text for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let goal = self.spec.objective.goal.as_str();
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let _ = writeln!(
            out,
            "sweep {} ({}, program {}): {} trials recorded: {}",
            self.spec.name,
            self.spec.kind.as_str(),
            self.spec.program,
            self.rows,
            counts.join(", ")
        );
        let _ = writeln!(out, "objective: {} ({goal})", self.spec.objective.metric);
        if let Some((id, v)) = self.best {
            let _ = writeln!(
                out,
                "best: trial {id} with {} = {}",
                self.spec.objective.metric,
                fmt_num(v)
            );
        }
        let _ = writeln!(out, "\nleaderboard");
        out.push_str(&self.leaderboard.render());
        for e in &self.effects {
            let rho = e.spearman.map_or(String::new(), |r| {
                format!(
                    " (Spearman ρ with {}: {:+.2})",
                    self.spec.objective.metric, r
                )
            });
            let _ = writeln!(out, "\n{}{rho}", e.name);
            out.push_str(&e.table.render());
        }
        if let Some(f) = &self.fractal {
            let _ = writeln!(out, "\nfractal boundary");
            out.push_str(&crate::fractal::format_summary(f));
        }
        if self.spec.kind == tessera_core::spec::SweepKind::Nas {
            let _ = writeln!(out, "\nnas search");
            match &self.nas {
                Some(n) => out.push_str(&crate::nas::format_summary(n)),
                None => out.push_str("no front yet: it is written when the sweep completes\n"),
            }
        }
        if self.spec.kind == tessera_core::spec::SweepKind::Metalic {
            let _ = writeln!(out, "\nmetalic bandit");
            match &self.metalic {
                Some(m) => out.push_str(&crate::metalic::format_summary(m)),
                None => out.push_str("no scores yet: they are written when the sweep completes\n"),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_monotone_data_is_one() {
        assert_eq!(
            spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 25.0, 40.0]),
            Some(1.0)
        );
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[3.0, 2.0, 1.0]), None);
    }

    #[test]
    fn tables_export_as_csv_and_json() {
        let mut t = TextTable::new(&["rank", "name", "value"]);
        t.row(vec!["1".into(), "a,b \"q\"".into(), "0.5".into()]);
        t.row(vec!["2".into(), "c".into(), "-".into()]);
        assert_eq!(
            t.to_csv(),
            "rank,name,value\n1,\"a,b \"\"q\"\"\",0.5\n2,c,-\n"
        );
        let rows = t.to_json_rows();
        assert_eq!(rows[0]["rank"], 1);
        assert_eq!(rows[0]["value"], 0.5);
        assert!(rows[1]["value"].is_null());
    }

    #[test]
    fn sparklines_span_low_to_high() {
        assert_eq!(sparkline(&[(1, 0.0), (2, 0.5), (3, 1.0)], 10), "▁▅█");
        assert_eq!(sparkline(&[(1, 2.0), (2, 2.0)], 10), "▄▄");
        assert_eq!(sparkline(&[], 10), "-");
        assert_eq!(
            sparkline(&(0..100).map(|i| (i, i as f64)).collect::<Vec<_>>(), 20)
                .chars()
                .count(),
            20
        );
    }

    #[test]
    fn numbers_print_compactly() {
        assert_eq!(fmt_num(0.9722), "0.9722");
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.00012), "1.200e-4");
    }
}
