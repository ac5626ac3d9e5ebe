//! Crash safety with real processes: `tessera run` is SIGKILLed (or crashes at an
//! injected point) mid-sweep, then `--resume`d. The sweep must end with exactly the
//! budgeted trials, none twice, the same trials as an uninterrupted run, and every
//! metric row once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use polars::prelude::*;
use tessera_orchestrator::store::read_table;

const TRIALS: u64 = 40;
const STEPS: u64 = 3;

fn sweep_file(dir: &Path) -> PathBuf {
    let path = dir.join("crash.yaml");
    std::fs::write(
        &path,
        format!(
            "version: 1\nname: crash\nkind: random\nseed: 11\nprogram: synthetic\nspace:\n  x: {{ float: [0, 1] }}\n  y: {{ float: [-1, 1] }}\n  reports: {STEPS}\n  sleep_ms: 15\nobjective: {{ metric: loss, goal: minimize }}\nbudget: {{ trials: {TRIALS}, concurrent: 4, max_attempts: 1 }}\n"
        ),
    )
    .unwrap();
    path
}

fn tessera(sweep: &Path, out: &Path, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.args([
        "run",
        sweep.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--workers",
        "3",
        "--quiet",
        "--flush-trials",
        "5",
    ]);
    if resume {
        c.arg("--resume");
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn finished_in_journal(out: &Path) -> usize {
    std::fs::read_to_string(out.join("journal.jsonl"))
        .map_or(0, |j| j.matches("\"type\":\"finished\"").count())
}

/// trial_id → (x, y, seed) of every recorded trial, checking no id appears twice.
fn recorded(out: &Path) -> BTreeMap<u64, (String, String, u64)> {
    let t = read_table(out, "trials").unwrap();
    let ids = t.column("trial_id").unwrap().u64().unwrap().clone();
    let xs = t.column("x").unwrap().f64().unwrap().clone();
    let ys = t.column("y").unwrap().f64().unwrap().clone();
    let seeds = t.column("seed").unwrap().u64().unwrap().clone();
    let mut map = BTreeMap::new();
    for i in 0..t.height() {
        let id = ids.get(i).unwrap();
        let prev = map.insert(
            id,
            (
                format!("{:.12}", xs.get(i).unwrap()),
                format!("{:.12}", ys.get(i).unwrap()),
                seeds.get(i).unwrap(),
            ),
        );
        assert!(prev.is_none(), "trial {id} recorded twice");
    }
    let m = read_table(out, "metrics").unwrap();
    assert_eq!(
        m.height() as u64,
        TRIALS * STEPS * 2,
        "every metric row exactly once"
    );
    let keys = m.select(["trial_id", "step", "metric"]).unwrap();
    assert_eq!(
        keys.unique_stable(None, UniqueKeepStrategy::First, None)
            .unwrap()
            .height(),
        m.height()
    );
    map
}

fn reference(dir: &Path, sweep: &Path) -> BTreeMap<u64, (String, String, u64)> {
    let out = dir.join("reference");
    let o = tessera(sweep, &out, false).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    recorded(&out)
}

fn resume_to_end(sweep: &Path, out: &Path) {
    let o = tessera(sweep, out, true).output().unwrap();
    assert!(
        o.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `sweep` into a fresh folder under `dir` with a crash injected at `point`, checks
/// that it crashed there, resumes it to the end; returns the run folder.
fn crash_at(sweep: &Path, dir: &Path, point: &str) -> PathBuf {
    let out = dir.join(point.replace(':', "-"));
    let o = tessera(sweep, &out, false)
        .env("TESSERA_CRASH_AT", point)
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "{point}: the injected crash did not happen"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("injected crash"),
        "{point}"
    );
    resume_to_end(sweep, &out);
    out
}

#[test]
fn sigkill_at_several_points_then_resume_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = sweep_file(dir.path());
    let expected = reference(dir.path(), &sweep);
    assert_eq!(expected.len() as u64, TRIALS);
    // Kill once early, once in the middle, once near the end; the middle run is killed
    // twice (once again during its first resume).
    for (case, kills) in [
        ("early", vec![1]),
        ("middle", vec![12, 25]),
        ("late", vec![36]),
    ] {
        let out = dir.path().join(case);
        let mut resume = false;
        for at in kills {
            let mut child = tessera(&sweep, &out, resume).spawn().unwrap();
            let t = Instant::now();
            while finished_in_journal(&out) < at && t.elapsed() < Duration::from_secs(60) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            let journal = std::fs::read_to_string(out.join("journal.jsonl")).unwrap_or_default();
            assert!(
                !journal.contains("\"type\":\"completed\""),
                "case {case}: the run ended before the kill at {at}"
            );
            resume = true;
        }
        resume_to_end(&sweep, &out);
        assert_eq!(recorded(&out), expected, "case {case}");
    }
}

#[test]
fn injected_crashes_at_the_narrow_windows_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = sweep_file(dir.path());
    let expected = reference(dir.path(), &sweep);
    for point in [
        "after_issued:7",
        "after_finished:9",
        "after_part_written:2",
        "before_journal_flushed:3",
    ] {
        let out = crash_at(&sweep, dir.path(), point);
        assert_eq!(recorded(&out), expected, "crash at {point}");
    }
}

/// `(frame, x, y) → value bits` of a fractal run's raster, checking no point twice.
fn raster(out: &Path) -> BTreeMap<(i64, i64, i64), u64> {
    let df = read_table(out, "raster").unwrap();
    let int = |n: &str| df.column(n).unwrap().i64().unwrap().clone();
    let (f, x, y) = (int("frame"), int("x"), int("y"));
    let v = df.column("value").unwrap().f64().unwrap().clone();
    let mut m = BTreeMap::new();
    for i in 0..df.height() {
        let key = (f.get(i).unwrap(), x.get(i).unwrap(), y.get(i).unwrap());
        assert!(
            m.insert(key, v.get(i).unwrap().to_bits()).is_none(),
            "point {key:?} recorded twice"
        );
    }
    m
}

/// A fractal zoom sequence crashed mid-frame, right after a tile of the second frame
/// was journaled, and around a Parquet part: the resumed run replays the told tiles,
/// picks the same zoom window, and ends with the uninterrupted run's raster, every
/// point once.
#[test]
fn a_fractal_zoom_sequence_resumes_after_crashes_with_the_same_raster() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("fractal.yaml");
    std::fs::write(
        &sweep,
        "version: 1\nname: fractal-crash\nkind: fractal\nseed: 3\nfractal:\n  n: 8\n  width: 8\n  steps: 30\n  window: { x: [-1, 3], y: [-1, 3] }\n  resolution: 16\n  tile: 8\n  zoom: { frames: 2 }\nbudget: { max_attempts: 1 }\n",
    )
    .unwrap();
    let reference_out = dir.path().join("reference");
    let o = tessera(&sweep, &reference_out, false).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = raster(&reference_out);
    assert_eq!(expected.len(), 2 * 16 * 16);
    for point in [
        "after_finished:3",
        "after_finished:6",
        "after_part_written:1",
        "before_journal_flushed:1",
    ] {
        let out = crash_at(&sweep, dir.path(), point);
        assert_eq!(raster(&out), expected, "crash at {point}");
    }
}

/// `subnet → (genes, accuracy bits, macs)` of a nas run, checking that every sub-network
/// was measured once per shard and the super-network recorded once.
fn nas_subnets(out: &Path) -> BTreeMap<u64, (String, u64, f64)> {
    let t = read_table(out, "trials").unwrap();
    let roles = t.column("role").unwrap().str().unwrap().clone();
    assert_eq!(roles.iter().filter(|r| *r == Some("supernet")).count(), 1);
    let ev = read_table(out, "evaluations").unwrap();
    let keys = ev.select(["subnet", "shard"]).unwrap();
    assert_eq!(
        keys.unique_stable(None, UniqueKeepStrategy::First, None)
            .unwrap()
            .height(),
        ev.height(),
        "a sub-network's shard measured twice"
    );
    let df = read_table(out, "subnets").unwrap();
    let ids = df.column("subnet").unwrap().u64().unwrap().clone();
    let genes = df.column("genes").unwrap().str().unwrap().clone();
    let acc = df.column("accuracy").unwrap().f64().unwrap().clone();
    let macs = df.column("macs").unwrap().f64().unwrap().clone();
    (0..df.height())
        .map(|i| {
            (
                ids.get(i).unwrap(),
                (
                    genes.get(i).unwrap().to_owned(),
                    acc.get(i).unwrap().to_bits(),
                    macs.get(i).unwrap(),
                ),
            )
        })
        .collect()
}

/// A LINAS search crashed right after the super-network was recorded, in the middle of
/// a generation and around a Parquet part: the resumed run replays the recorded
/// measurements (the super-network's weights included, so it is not trained again),
/// asks for the same next generations and ends with the uninterrupted run's sub-networks
/// and measurements. (Accuracy and MACs are deterministic; latency would not be.)
#[test]
fn a_nas_search_resumes_after_crashes_with_the_same_subnetworks() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("nas.yaml");
    let data =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../experiments/data/digits/digits.parquet");
    std::fs::write(
        &sweep,
        format!(
            "version: 1\nname: nas-crash\nkind: nas\nseed: 9\ndataset: {{ path: {} }}\nnas:\n  supernet: {{ family: mlp, depth: [1, 2], width: [8, 16, 32, 64] }}\n  training: {{ epochs: 2 }}\n  objectives:\n    - {{ metric: accuracy, goal: maximize }}\n    - {{ metric: macs, goal: minimize }}\n  population: 5\n  evaluations: 15\n  predictor_generations: 5\n  shards: 2\n  batch: 3\n  latency: {{ batch_size: 8, repeats: 1, warmup: 0 }}\nbudget: {{ max_attempts: 1 }}\n",
            data.display()
        ),
    )
    .unwrap();
    let reference_out = dir.path().join("reference");
    let o = tessera(&sweep, &reference_out, false).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = nas_subnets(&reference_out);
    assert_eq!(expected.len(), 15);
    for point in [
        "after_finished:1",
        "after_finished:6",
        "after_issued:12",
        "after_part_written:2",
    ] {
        let out = crash_at(&sweep, dir.path(), point);
        assert_eq!(nas_subnets(&out), expected, "crash at {point}");
    }
}

/// `(policy, stage, round) → (arm, reward bits)` of a metalic run's rounds and tests,
/// checking that every trial was recorded once.
fn metalic_rounds(out: &Path) -> BTreeMap<(String, String, u32), (String, u64)> {
    let t = read_table(out, "trials").unwrap();
    let ids = t.column("trial_id").unwrap().u64().unwrap().clone();
    let distinct: std::collections::BTreeSet<u64> = ids.into_no_null_iter().collect();
    assert_eq!(distinct.len(), t.height(), "a trial recorded twice");
    let mut out_map = BTreeMap::new();
    for table in ["rounds", "tests"] {
        let df = read_table(out, table).unwrap();
        let policy = df.column("policy").unwrap().str().unwrap().clone();
        let stage = df.column("stage").unwrap().str().unwrap().clone();
        let round = df.column("round").unwrap().u32().unwrap().clone();
        let arm = df.column("arm").unwrap().str().unwrap().clone();
        let reward = df.column("reward").unwrap().f64().unwrap().clone();
        for i in 0..df.height() {
            let key = (
                policy.get(i).unwrap().to_owned(),
                stage.get(i).unwrap().to_owned(),
                round.get(i).unwrap(),
            );
            let value = (
                arm.get(i).unwrap().to_owned(),
                reward.get(i).expect("every round finished").to_bits(),
            );
            assert!(out_map.insert(key, value).is_none(), "a round twice");
        }
    }
    out_map
}

/// A metalic sweep crashed after its warm-up, in the middle of the play rounds (after an
/// issue and around a Parquet part): the resumed run replays the recorded rounds, so the
/// GP bandit refits on the same data and picks the same arms; it ends with the
/// uninterrupted run's rounds, tests and rewards, none recorded twice.
#[test]
fn a_metalic_bandit_resumes_after_crashes_with_the_same_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("metalic.yaml");
    std::fs::write(
        &sweep,
        "version: 1\nname: metalic-crash\nkind: metalic\nseed: 5\nmetalic:\n  family: reaction\n  hidden: [8, 8]\n  points: { boundary: 30, collocation: 60, interface: 21 }\n  adam: { steps: 30, learning_rate: 0.01 }\n  lbfgs: { iterations: 15 }\n  policies: [ucb, thompson, { name: xpinn, fixed: [average, residual_continuity] }]\n  warmup: 2\n  rounds: 6\n  test: 2\n  batch: 2\n  fit_iterations: 20\nbudget: { max_attempts: 1 }\n",
    )
    .unwrap();
    let reference_out = dir.path().join("reference");
    let o = tessera(&sweep, &reference_out, false).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = metalic_rounds(&reference_out);
    assert_eq!(expected.len(), 3 * (2 + 6 + 2));
    for point in [
        "after_finished:4",
        "after_finished:11",
        "after_issued:15",
        "after_part_written:2",
    ] {
        let out = crash_at(&sweep, dir.path(), point);
        assert_eq!(metalic_rounds(&out), expected, "crash at {point}");
    }
}
