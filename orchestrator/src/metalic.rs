//! What a finished `metalic` sweep leaves besides its tables of trials: every policy's
//! warm-up and play rounds (`rounds/`, with regrets and the model's predictions), its
//! test contexts (`tests/`), a summary (`metalic/summary.json`) and two figures
//! (`metalic/regret.png`: cumulative regret per policy; `metalic/test_error.png`: the
//! test error per context per policy), all in the sweep's results location, local or S3.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use polars::prelude::{Column, DataFrame};
use serde::{Deserialize, Serialize};
use tessera_core::metalic_sweep::{
    MetalicSpec, MetalicSummary, ROUNDS_TABLE, RoundRecord, Rule, Stage, TESTS_TABLE,
};

use crate::lake::ObjectStore;
use crate::report::{ReportError, col_f64, col_str};
use crate::store::{StoreError, get_json, put_files, put_json, put_table, read_table_from};

/// Where the summary goes in the results location.
pub const SUMMARY_FILE: &str = "metalic/summary.json";

/// One policy's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyScore {
    /// Its name.
    pub name: String,
    /// `ucb`, `thompson`, `random` or `fixed:<arm>`.
    pub rule: String,
    /// Warm-up and play rounds finished.
    pub rounds: usize,
    /// Mean final reward over those rounds.
    pub play_reward: f64,
    /// Cumulative regret against the best arm any policy played on the same round.
    pub regret: f64,
    /// Test contexts finished.
    pub tests: usize,
    /// Mean test reward (`−log10` error).
    pub test_reward: f64,
    /// Median test error (PINN tasks) or objective (program tasks).
    pub test_median_error: f64,
    /// The arm it played most at test, as terms.
    pub test_arm: String,
}

/// The summary a finished `metalic` sweep writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BanditSummary {
    /// The PDE family.
    pub family: String,
    /// The context's name and range.
    pub context: String,
    /// Arms in play.
    pub arms: usize,
    /// What `test_median_error` measures: `error`, or the program's objective.
    #[serde(default)]
    pub outcome: String,
    /// Whether each phase had its own arm.
    pub two_stage: bool,
    /// Per policy, in the sweep's order.
    pub policies: Vec<PolicyScore>,
}

fn rule_name(spec: &MetalicSpec, r: Rule) -> String {
    match r {
        Rule::Ucb => "ucb".into(),
        Rule::Thompson => "thompson".into(),
        Rule::Random => "random".into(),
        Rule::Fixed(a) => format!("fixed:{}", spec.arm_text(a)),
    }
}

/// The summary of `s`.
pub fn bandit_summary(s: &MetalicSummary) -> BanditSummary {
    let scores = s.test_scores();
    let regret = s.total_regret();
    let policies = s
        .spec
        .policies
        .iter()
        .enumerate()
        .map(|(p, policy)| {
            let play: Vec<f64> = s
                .records
                .iter()
                .filter(|r| r.policy == p && r.stage != Stage::Test)
                .filter_map(RoundRecord::reward)
                .collect();
            let mut counts = std::collections::BTreeMap::<u32, usize>::new();
            for r in s
                .records
                .iter()
                .filter(|r| r.policy == p && r.stage == Stage::Test)
            {
                if let Some(a) = r.arms.last() {
                    *counts.entry(*a).or_default() += 1;
                }
            }
            let test_arm = counts
                .iter()
                .max_by_key(|(a, n)| (**n, std::cmp::Reverse(**a)))
                .map_or_else(String::new, |(a, _)| s.spec.arm_names(*a));
            let (test_reward, test_median_error, tests) = scores[p];
            PolicyScore {
                name: policy.name.clone(),
                rule: rule_name(&s.spec, policy.rule),
                rounds: play.len(),
                play_reward: play.iter().sum::<f64>() / play.len().max(1) as f64,
                regret: regret[p],
                tests,
                test_reward,
                test_median_error,
                test_arm,
            }
        })
        .collect();
    BanditSummary {
        family: s.spec.label(),
        context: format!(
            "{} in [{}, {}]",
            s.spec.context_name(),
            s.spec.context[0],
            s.spec.context[1]
        ),
        arms: s.spec.arms().len(),
        outcome: s.spec.outcome_name(),
        two_stage: s.spec.two_stage,
        policies,
    }
}

/// The `rounds` (warm-up and play) or `tests` table.
fn frame(s: &MetalicSummary, test: bool, table: &str) -> Result<DataFrame, StoreError> {
    let idx: Vec<usize> = (0..s.records.len())
        .filter(|i| (s.records[*i].stage == Stage::Test) == test)
        .collect();
    let recs: Vec<&RoundRecord> = idx.iter().map(|i| &s.records[*i]).collect();
    let finite = |v: f64| v.is_finite().then_some(v);
    let slots = s.spec.arm_slots();
    let phases = s.spec.phases();
    let name = |base: &str, k: usize, n: usize| {
        if n == 1 {
            base.to_owned()
        } else {
            format!("{base}_{k}")
        }
    };
    let mut cols = vec![
        Column::new(
            "policy".into(),
            recs.iter()
                .map(|r| s.spec.policies[r.policy].name.clone())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "rule".into(),
            recs.iter()
                .map(|r| rule_name(&s.spec, s.spec.policies[r.policy].rule))
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "stage".into(),
            recs.iter().map(|r| r.stage.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "round".into(),
            recs.iter().map(|r| r.round).collect::<Vec<_>>(),
        ),
        Column::new(
            s.spec.context_name().into(),
            recs.iter().map(|r| r.context).collect::<Vec<_>>(),
        ),
    ];
    for k in 0..slots {
        cols.push(Column::new(
            name("arm", k, slots).into(),
            recs.iter()
                .map(|r| r.arms.get(k).map(|a| s.spec.arm_text(*a)))
                .collect::<Vec<_>>(),
        ));
        cols.push(Column::new(
            name("terms", k, slots).into(),
            recs.iter()
                .map(|r| r.arms.get(k).map(|a| s.spec.arm_names(*a)))
                .collect::<Vec<_>>(),
        ));
        cols.push(Column::new(
            name("predicted_mean", k, slots).into(),
            recs.iter()
                .map(|r| r.predicted.get(k).and_then(|p| finite(p.0)))
                .collect::<Vec<_>>(),
        ));
        cols.push(Column::new(
            name("predicted_sd", k, slots).into(),
            recs.iter()
                .map(|r| r.predicted.get(k).and_then(|p| finite(p.1)))
                .collect::<Vec<_>>(),
        ));
    }
    for k in 0..phases {
        cols.push(Column::new(
            format!("reward_phase_{k}").into(),
            recs.iter()
                .map(|r| r.phases.as_ref().and_then(|p| p.get(k)).map(|p| p.reward))
                .collect::<Vec<_>>(),
        ));
        cols.push(Column::new(
            format!("error_phase_{k}").into(),
            recs.iter()
                .map(|r| r.phases.as_ref().and_then(|p| p.get(k)).map(|p| p.error))
                .collect::<Vec<_>>(),
        ));
    }
    cols.push(Column::new(
        "reward".into(),
        recs.iter().map(|r| r.reward()).collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        s.spec.outcome_name().into(),
        recs.iter().map(|r| r.error()).collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "wall_s".into(),
        recs.iter()
            .map(|r| {
                r.phases
                    .as_ref()
                    .map(|p| p.iter().map(|p| p.wall_s).sum::<f64>())
                    .filter(|v| v.is_finite())
            })
            .collect::<Vec<_>>(),
    ));
    if !test {
        cols.push(Column::new(
            "regret".into(),
            idx.iter().map(|i| finite(s.regret[*i])).collect::<Vec<_>>(),
        ));
        cols.push(Column::new(
            "cumulative_regret".into(),
            idx.iter()
                .map(|i| finite(s.cumulative_regret[*i]))
                .collect::<Vec<_>>(),
        ));
    }
    cols.push(Column::new(
        "trial_id".into(),
        recs.iter().map(|r| r.trial_id).collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "failed".into(),
        recs.iter().map(|r| r.failed).collect::<Vec<_>>(),
    ));
    DataFrame::new(recs.len(), cols).map_err(|e| StoreError::Parquet {
        path: table.into(),
        message: e.to_string(),
    })
}

/// Writes the rounds and tests tables, the summary and the figures of `s` into `store`.
pub async fn finish(store: &ObjectStore, s: &MetalicSummary) -> Result<BanditSummary, ReportError> {
    let rounds = frame(s, false, ROUNDS_TABLE)?;
    let tests = frame(s, true, TESTS_TABLE)?;
    let tmp = tempfile::tempdir().map_err(|e| ReportError::NotARun(e.to_string()))?;
    let files = render(
        &rounds,
        &tests,
        &s.spec.context_name(),
        &s.spec.outcome_name(),
        tmp.path(),
    )
    .map_err(ReportError::NotARun)?;
    put_table(store, ROUNDS_TABLE, rounds).await?;
    put_table(store, TESTS_TABLE, tests).await?;
    put_files(store, "metalic", &files).await?;
    let summary = bandit_summary(s);
    put_json(store, SUMMARY_FILE, &summary).await?;
    Ok(summary)
}

/// The summary a finished sweep wrote in `store`, if it did.
pub async fn load(store: &ObjectStore) -> Option<BanditSummary> {
    get_json(store, SUMMARY_FILE).await
}

/// The summary as text: one line per policy, best test reward first.
pub fn format_summary(s: &BanditSummary) -> String {
    let mut out = format!(
        "{}: {}, {} arms{}\n",
        s.family,
        s.context,
        s.arms,
        if s.two_stage {
            ", one arm per phase"
        } else {
            ""
        }
    );
    out.push_str(&format!(
        "  {:<12} {:<20} {:>6} {:>10} {:>9} {:>6} {:>11} {:>14}  {}\n",
        "policy",
        "rule",
        "rounds",
        "play rew.",
        "regret",
        "tests",
        "test rew. ↑",
        format!("median {}", s.outcome),
        "arm at test (most often)"
    ));
    let mut order: Vec<&PolicyScore> = s.policies.iter().collect();
    order.sort_by(|a, b| b.test_reward.total_cmp(&a.test_reward));
    for p in order {
        out.push_str(&format!(
            "  {:<12} {:<20} {:>6} {:>10.3} {:>9.2} {:>6} {:>11.3} {:>14.4}  {}\n",
            p.name,
            p.rule,
            p.rounds,
            p.play_reward,
            p.regret,
            p.tests,
            p.test_reward,
            p.test_median_error,
            p.test_arm
        ));
    }
    out.push_str(if s.outcome == "error" {
        "(reward: −log10 of the relative L2 error; regret: against the best arm any policy played on the same round)\n"
    } else {
        "(reward: the objective, negated if minimised; regret: against the best arm any policy played on the same round)\n"
    });
    out
}

/// Policy colours, in order.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Named lines of points.
type Series = Vec<(String, Vec<(f64, f64)>)>;

/// Per policy (in first-seen order), the points `(x, y)` of `df`'s columns.
fn series(df: &DataFrame, x: &str, y: &str) -> Result<Series, String> {
    let e = |e: ReportError| e.to_string();
    let (policy, xs, ys) = (
        col_str(df, "policy").map_err(e)?,
        col_f64(df, x).map_err(e)?,
        col_f64(df, y).map_err(e)?,
    );
    let mut out: Series = Vec::new();
    for i in 0..df.height() {
        let (Some(p), Some(x), Some(y)) = (&policy[i], xs[i], ys[i]) else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| n == p) {
            Some((_, v)) => v.push((x, y)),
            None => out.push((p.clone(), vec![(x, y)])),
        }
    }
    for (_, v) in &mut out {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(out)
}

fn line_chart(
    path: &Path,
    caption: &str,
    (x_desc, y_desc): (&str, &str),
    data: &Series,
    log_y: bool,
) -> Result<(), String> {
    let pts = || data.iter().flat_map(|(_, v)| v.iter().copied());
    let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
        (l.min(p.0), h.max(p.0))
    });
    let (y0, y1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
        (l.min(p.1), h.max(p.1))
    });
    if !x0.is_finite() {
        return Err(format!("nothing to draw for {caption}"));
    }
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(caption, (crate::plot::FONT, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72);
    let xr = x0 - (x1 - x0).max(1e-9) * 0.03..x1 + (x1 - x0).max(1e-9) * 0.03;
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .label_style((crate::plot::FONT, 15))
                .draw()
                .map_err(|e| e.to_string())?;
            for (k, (name, v)) in data.iter().enumerate() {
                let c = COLOURS[k % COLOURS.len()];
                chart
                    .draw_series(LineSeries::new(v.iter().copied(), c.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                    });
                chart
                    .draw_series(v.iter().map(|p| Circle::new(*p, 3, c.filled())))
                    .map_err(|e| e.to_string())?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((crate::plot::FONT, 15))
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    if log_y {
        let (lo, hi) = (y0.max(1e-8) / 1.5, y1.max(1e-8) * 1.5);
        draw!(
            builder
                .build_cartesian_2d(xr, (lo..hi).log_scale())
                .map_err(|e| e.to_string())?
        );
    } else {
        let pad = (y1 - y0).max(1e-9) * 0.05;
        draw!(
            builder
                .build_cartesian_2d(xr, y0 - pad..y1 + pad)
                .map_err(|e| e.to_string())?
        );
    }
    root.present().map_err(|e| e.to_string())
}

/// Draws `regret.png` from a `rounds` table and `test_error.png` from a `tests` table;
/// returns the files written.
pub fn render(
    rounds: &DataFrame,
    tests: &DataFrame,
    context: &str,
    outcome: &str,
    out: &Path,
) -> Result<Vec<PathBuf>, String> {
    crate::plot::register_font();
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    if rounds.height() > 0 {
        let path = out.join("regret.png");
        line_chart(
            &path,
            "Cumulative regret (against the best arm any policy played that round)",
            ("round", "cumulative regret (reward = −log10 error)"),
            &series(rounds, "round", "cumulative_regret")?,
            false,
        )?;
        files.push(path);
    }
    if tests.height() > 0 {
        let path = out.join("test_error.png");
        let (caption, axis, log) = if outcome == "error" {
            (
                "Test error per context (greedy arm on fresh contexts)",
                "relative L2 error",
                true,
            )
        } else {
            (
                "Test objective per context (greedy arm on fresh contexts)",
                outcome,
                false,
            )
        };
        line_chart(
            &path,
            caption,
            (context, axis),
            &series(tests, context, outcome)?,
            log,
        )?;
        files.push(path);
    }
    Ok(files)
}

/// A run's figures for `tessera plot`, from its `rounds` and `tests` tables.
pub async fn plot(
    store: &ObjectStore,
    out: &Path,
    spec: &MetalicSpec,
) -> Result<Vec<PathBuf>, ReportError> {
    let rounds = read_table_from(store, ROUNDS_TABLE).await?;
    let tests = read_table_from(store, TESTS_TABLE).await?;
    if rounds.height() == 0 {
        return Err(ReportError::NotARun(
            "the sweep has not completed: its rounds table is written at the end".into(),
        ));
    }
    render(
        &rounds,
        &tests,
        &spec.context_name(),
        &spec.outcome_name(),
        out,
    )
    .map_err(ReportError::NotARun)
}
