//! The executor: runs one attempt of a trial on a Burn device.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use tessera_core::Decision;
use tessera_core::program::{ProgramInfo, TrialExecutor, TrialReporter};
use tessera_core::trial::{DatasetRef, MetricValues, TrialAssignment};
use tessera_experiments::{Dataset, MlpConfig, OptimizerKind, Split, train_mlp};

use crate::metrics::{SAMPLES_PER_SECOND, STEP_DURATION};
use crate::params::ParamReader;
use crate::programs::{MLP, SYNTHETIC, program_infos};

type SplitKey = (PathBuf, u64, u64);

/// Runs trials on one Burn device. Datasets are read once per process and shared by
/// every trial that uses the same file and split.
pub struct BurnExecutor {
    device: Device,
    programs: Vec<ProgramInfo>,
    splits: Mutex<HashMap<SplitKey, Arc<Split>>>,
}

impl Default for BurnExecutor {
    fn default() -> Self {
        Self::new(Device::flex())
    }
}

impl BurnExecutor {
    /// An executor training on `device`.
    pub fn new(device: Device) -> Self {
        crate::metrics::INFO
            .with_label_values(&["flex", "cpu", env!("CARGO_PKG_VERSION")])
            .set(1);
        Self {
            device,
            programs: program_infos(),
            splits: Mutex::new(HashMap::new()),
        }
    }

    fn split(&self, d: &DatasetRef) -> Result<Arc<Split>, String> {
        let key = (
            PathBuf::from(&d.path),
            d.validation_fraction.to_bits(),
            d.split_seed,
        );
        if let Some(s) = self.splits.lock().map_err(|e| e.to_string())?.get(&key) {
            return Ok(s.clone());
        }
        let data = Dataset::from_parquet(&key.0).map_err(|e| e.to_string())?;
        let split = Arc::new(data.split(d.validation_fraction, d.split_seed));
        self.splits
            .lock()
            .map_err(|e| e.to_string())?
            .insert(key, split.clone());
        Ok(split)
    }

    fn info(&self, name: &str) -> Result<&ProgramInfo, String> {
        self.programs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("unknown program `{name}`"))
    }

    fn run_mlp(&self, a: &TrialAssignment, reporter: &mut dyn TrialReporter) -> Result<(), String> {
        let r = ParamReader {
            params: &a.request.params,
            info: self.info(MLP)?,
        };
        let optimizer = match r.str("optimizer")?.as_str() {
            "adam" => OptimizerKind::Adam,
            "sgd" => OptimizerKind::Sgd,
            other => return Err(format!("unknown optimizer `{other}`")),
        };
        let cfg = MlpConfig {
            lr: r.f64("lr")?,
            width: r.usize("width")?,
            depth: r.usize("depth")?,
            dropout: r.f64("dropout")?,
            batch_size: r.usize("batch_size")?,
            epochs: r.usize("epochs")? as u64,
            optimizer,
            weight_decay: r.f64("weight_decay")?,
        };
        let dataset = a.dataset.as_ref().ok_or("mlp-classifier needs a dataset")?;
        let split = self.split(dataset)?;
        let rows = split.train.len() as f64;
        let mut last = Instant::now();
        train_mlp(&cfg, &split, a.request.seed, &self.device, &mut |m| {
            let secs = last.elapsed().as_secs_f64();
            last = Instant::now();
            STEP_DURATION.with_label_values(&[MLP]).observe(secs);
            SAMPLES_PER_SECOND
                .with_label_values(&[MLP])
                .set(rows / secs.max(1e-9));
            let metrics: MetricValues = [
                ("train_loss".to_owned(), m.train_loss),
                ("train_accuracy".to_owned(), m.train_accuracy),
                ("val_loss".to_owned(), m.val_loss),
                ("val_accuracy".to_owned(), m.val_accuracy),
            ]
            .into_iter()
            .collect();
            reporter.report(m.epoch, &metrics) == Decision::Continue
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    fn run_synthetic(
        &self,
        a: &TrialAssignment,
        reporter: &mut dyn TrialReporter,
    ) -> Result<(), String> {
        let r = ParamReader {
            params: &a.request.params,
            info: self.info(SYNTHETIC)?,
        };
        let (x, y) = (r.f64("x")?, r.f64("y")?);
        let (steps, sleep_ms) = (r.usize("reports")? as u64, r.usize("sleep_ms")? as u64);
        if (a.attempt as usize) <= r.usize("panic_attempts")? {
            panic!("synthetic panic on attempt {}", a.attempt);
        }
        if (a.attempt as usize) <= r.usize("fail_attempts")? {
            return Err(format!("synthetic failure on attempt {}", a.attempt));
        }
        let base = (x - 0.3).powi(2) + (y + 0.2).powi(2);
        for step in 1..=steps {
            let t = Instant::now();
            if sleep_ms > 0 {
                std::thread::sleep(Duration::from_millis(sleep_ms));
            }
            STEP_DURATION
                .with_label_values(&[SYNTHETIC])
                .observe(t.elapsed().as_secs_f64());
            let loss = base + 1.0 / step as f64;
            let metrics: MetricValues = [("loss".to_owned(), loss), ("score".to_owned(), -loss)]
                .into_iter()
                .collect();
            if reporter.report(step, &metrics) == Decision::Stop {
                break;
            }
        }
        Ok(())
    }
}

impl TrialExecutor for BurnExecutor {
    fn programs(&self) -> Vec<ProgramInfo> {
        self.programs.clone()
    }

    fn execute(&self, a: &TrialAssignment, reporter: &mut dyn TrialReporter) -> Result<(), String> {
        match a.program.as_str() {
            MLP => self.run_mlp(a, reporter),
            SYNTHETIC => self.run_synthetic(a, reporter),
            other => Err(format!("unknown program `{other}`")),
        }
    }
}
