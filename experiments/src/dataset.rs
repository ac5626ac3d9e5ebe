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
        Ok(Self::from_parquet_named(path)?.0)
    }

    /// [`Dataset::from_parquet`], with the feature columns' names.
    pub fn from_parquet_named(path: &Path) -> Result<(Self, Vec<String>), DatasetError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|source| DatasetError::Open {
            path: shown.clone(),
            source,
        })?;
        Self::read(file, &shown)
    }

    /// Reads Parquet bytes (a shard fetched from a store); `shown` names them in errors.
    pub fn from_parquet_bytes(bytes: &[u8], shown: &str) -> Result<Self, DatasetError> {
        Ok(Self::read(std::io::Cursor::new(bytes), shown)?.0)
    }

    fn read<R: polars::io::mmap::MmapBytesReader>(
        reader: R,
        shown: &str,
    ) -> Result<(Self, Vec<String>), DatasetError> {
        let read = |message: String| DatasetError::Read {
            path: shown.to_owned(),
            message,
        };
        let df = ParquetReader::new(reader)
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
        let names = feature_cols.iter().map(|c| c.name().to_string()).collect();
        Ok((
            Self {
                features,
                labels,
                n_features,
                n_classes,
            },
            names,
        ))
    }

    /// The rows as Parquet (zstd): one Float32 column per feature, named `names`, and an
    /// Int64 `label`.
    pub fn to_parquet_bytes(&self, names: &[String]) -> Result<Vec<u8>, DatasetError> {
        let fail = |e: PolarsError| DatasetError::Read {
            path: "(shard being written)".into(),
            message: e.to_string(),
        };
        let d = self.n_features;
        let mut cols: Vec<Column> = names
            .iter()
            .enumerate()
            .map(|(j, n)| {
                let v: Vec<f32> = self.features.iter().skip(j).step_by(d).copied().collect();
                Column::new(n.as_str().into(), v)
            })
            .collect();
        cols.push(Column::new("label".into(), self.labels.clone()));
        let mut df = DataFrame::new(self.len(), cols).map_err(fail)?;
        let mut buf = Vec::new();
        ParquetWriter::new(&mut buf)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(&mut df)
            .map_err(fail)?;
        Ok(buf)
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
        let mut split = self.split_raw(validation_fraction, seed);
        let stats = Standardisation::of(&split.train);
        stats.apply(&mut split.train);
        stats.apply(&mut split.valid);
        split
    }

    /// [`Dataset::split`] without the standardisation.
    pub fn split_raw(&self, validation_fraction: f64, seed: u64) -> Split {
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
        Split {
            train: self.rows(&train_idx),
            valid: self.rows(&valid_idx),
        }
    }
}

/// Each feature's mean and standard deviation (1 where it is 0) over a set of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardisation {
    /// Means.
    pub mean: Vec<f64>,
    /// Standard deviations.
    pub std: Vec<f64>,
}

impl Standardisation {
    /// The statistics of `data`'s rows.
    pub fn of(data: &Dataset) -> Self {
        let d = data.n_features;
        let n = data.len().max(1) as f64;
        let column = |j: usize| {
            data.features
                .iter()
                .skip(j)
                .step_by(d)
                .map(|v| f64::from(*v))
        };
        let mean: Vec<f64> = (0..d).map(|j| column(j).sum::<f64>() / n).collect();
        let std = (0..d)
            .map(|j| {
                let var = column(j).map(|v| (v - mean[j]).powi(2)).sum::<f64>() / n;
                if var > 1e-12 { var.sqrt() } else { 1.0 }
            })
            .collect();
        Self { mean, std }
    }

    /// Standardises `data`'s features in place.
    pub fn apply(&self, data: &mut Dataset) {
        let d = data.n_features;
        for (i, v) in data.features.iter_mut().enumerate() {
            let j = i % d;
            *v = ((f64::from(*v) - self.mean[j]) / self.std[j]) as f32;
        }
    }
}
