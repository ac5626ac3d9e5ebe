//! Tabular classification datasets read from Parquet.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;
use tessera_core::rng::Rng;

/// Errors loading a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be opened.
    #[error("cannot open dataset {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not readable Parquet or has unusable columns.
    #[error("cannot read dataset {path}: {message}")]
    Read {
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// A classification dataset: numeric feature columns and an integer `label` column.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Row-major features, `rows × n_features`.
    pub features: Vec<f32>,
    /// Labels, `0..n_classes`.
    pub labels: Vec<i64>,
    /// Feature columns.
    pub n_features: usize,
    /// Number of classes (largest label + 1).
    pub n_classes: usize,
}

/// A deterministic train/validation split, standardised with training statistics.
#[derive(Debug, Clone)]
pub struct Split {
    /// Training rows.
    pub train: Dataset,
    /// Validation rows.
    pub valid: Dataset,
}

impl Dataset {
    /// Rows in the dataset.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Reads a Parquet file whose `label` column holds class ids and every other column
    /// is a numeric feature.
    pub fn from_parquet(path: &Path) -> Result<Self, DatasetError> {
        let shown = path.display().to_string();
        let read = |message: String| DatasetError::Read {
            path: shown.clone(),
            message,
        };
        let file = File::open(path).map_err(|source| DatasetError::Open {
            path: shown.clone(),
            source,
        })?;
        let df = ParquetReader::new(file)
            .finish()
            .map_err(|e| read(e.to_string()))?;
        let label = df
            .column("label")
            .map_err(|_| read("no `label` column".into()))?
            .cast(&DataType::Int64)
            .map_err(|e| read(e.to_string()))?;
        let labels: Vec<i64> = label
            .i64()
            .map_err(|e| read(e.to_string()))?
            .iter()
            .map(|v| v.ok_or_else(|| read("`label` has missing values".into())))
            .collect::<Result<_, _>>()?;
        if labels.iter().any(|l| *l < 0) {
            return Err(read("`label` has negative values".into()));
        }
        let feature_cols: Vec<&Column> = df
            .columns()
            .iter()
            .filter(|c| c.name().as_str() != "label")
            .collect();
        if feature_cols.is_empty() {
            return Err(read("no feature columns".into()));
        }
        let rows = labels.len();
        let n_features = feature_cols.len();
        let mut features = vec![0f32; rows * n_features];
        for (j, col) in feature_cols.iter().enumerate() {
            let col = col
                .cast(&DataType::Float32)
                .map_err(|e| read(format!("column `{}`: {e}", col.name())))?;
            let ca = col.f32().map_err(|e| read(e.to_string()))?;
            for (i, v) in ca.iter().enumerate() {
                features[i * n_features + j] =
                    v.ok_or_else(|| read(format!("column `{}` has missing values", col.name())))?;
            }
        }
        let n_classes = labels.iter().copied().max().unwrap_or(0) as usize + 1;
        Ok(Self {
            features,
            labels,
            n_features,
            n_classes,
        })
    }

    /// Shard `index` of `count`: every `count`-th row starting at `index`, so shards
    /// differ in size by at most one row and each keeps the class mix.
    pub fn shard(&self, index: usize, count: usize) -> Dataset {
        let idx: Vec<usize> = (index..self.len()).step_by(count.max(1)).collect();
        self.rows(&idx)
    }

    fn rows(&self, idx: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(idx.len() * self.n_features);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            features
                .extend_from_slice(&self.features[i * self.n_features..(i + 1) * self.n_features]);
            labels.push(self.labels[i]);
        }
        Dataset {
            features,
            labels,
            n_features: self.n_features,
            n_classes: self.n_classes,
        }
    }

    /// Splits rows into training and validation sets (the same split for the same seed),
    /// stratified by class, and standardises features with the training set's mean and
    /// standard deviation.
    pub fn split(&self, validation_fraction: f64, seed: u64) -> Split {
        let mut rng = Rng::new(seed);
        let (mut train_idx, mut valid_idx) = (Vec::new(), Vec::new());
        for class in 0..self.n_classes as i64 {
            let mut idx: Vec<usize> = (0..self.len())
                .filter(|&i| self.labels[i] == class)
                .collect();
            rng.shuffle(&mut idx);
            let n_valid = (idx.len() as f64 * validation_fraction).round() as usize;
            valid_idx.extend_from_slice(&idx[..n_valid]);
            train_idx.extend_from_slice(&idx[n_valid..]);
        }
        train_idx.sort_unstable();
        valid_idx.sort_unstable();
        let mut train = self.rows(&train_idx);
        let mut valid = self.rows(&valid_idx);
        let d = self.n_features;
        let n = train.len().max(1) as f64;
        for j in 0..d {
            let mean = train
                .features
                .iter()
                .skip(j)
                .step_by(d)
                .map(|v| f64::from(*v))
                .sum::<f64>()
                / n;
            let var = train
                .features
                .iter()
                .skip(j)
                .step_by(d)
                .map(|v| (f64::from(*v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let std = if var > 1e-12 { var.sqrt() } else { 1.0 };
            for set in [&mut train, &mut valid] {
                for v in set.features.iter_mut().skip(j).step_by(d) {
                    *v = ((f64::from(*v) - mean) / std) as f32;
                }
            }
        }
        Split { train, valid }
    }
}
