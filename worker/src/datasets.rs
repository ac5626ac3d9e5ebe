//! Registering a dataset: a Parquet table cut into fixed training shards and a validation
//! file, with the manifest that describes them (see `tessera_core::shards`). The caller
//! writes the files where the dataset lives (a local folder or S3).

use std::path::Path;

use tessera_core::shards::{Manifest, ShardFile, sha256_hex};
use tessera_experiments::Dataset;
use tessera_experiments::dataset::Standardisation;

/// A dataset's files to write: (file name, bytes).
pub type Files = Vec<(String, Vec<u8>)>;

/// The manifest and the files of dataset `name` registered from `source`:
/// `shards` training shards (shard `i` holds training rows `i`, `i + shards`, …) and the
/// validation rows, split off stratified by class with `validation_fraction` and `seed`.
pub fn register(
    name: &str,
    source: &Path,
    shards: usize,
    validation_fraction: f64,
    seed: u64,
) -> Result<(Manifest, Files), String> {
    if shards == 0 {
        return Err("a dataset needs at least 1 shard".into());
    }
    if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
        return Err(format!(
            "the validation fraction {validation_fraction} is outside (0, 1)"
        ));
    }
    let (data, features) = Dataset::from_parquet_named(source).map_err(|e| e.to_string())?;
    let split = data.split_raw(validation_fraction, seed);
    if split.train.len() < shards {
        return Err(format!(
            "{} training rows cannot fill {shards} shards",
            split.train.len()
        ));
    }
    let stats = Standardisation::of(&split.train);
    let mut files = Vec::new();
    let mut entry = |file: String, rows: &Dataset| -> Result<ShardFile, String> {
        let bytes = rows
            .to_parquet_bytes(&features)
            .map_err(|e| e.to_string())?;
        let f = ShardFile {
            file: file.clone(),
            rows: rows.len(),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        };
        files.push((file, bytes));
        Ok(f)
    };
    let shard_files = (0..shards)
        .map(|i| {
            entry(
                format!("shard-{i:05}.parquet"),
                &split.train.shard(i, shards),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let validation = entry("validation.parquet".into(), &split.valid)?;
    let manifest = Manifest {
        version: 1,
        name: name.to_owned(),
        source: source.display().to_string(),
        features,
        classes: data.n_classes,
        validation_fraction,
        split_seed: seed,
        mean: stats.mean,
        std: stats.std,
        shards: shard_files,
        validation,
    };
    manifest.check()?;
    Ok((manifest, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_hold_every_training_row_once_with_checksums() {
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/data/digits/digits.parquet");
        let (m, files) = register("digits", &source, 4, 0.2, 0).unwrap();
        assert_eq!(files.len(), 5);
        assert_eq!(m.shards.len(), 4);
        let split = Dataset::from_parquet(&source).unwrap().split(0.2, 0);
        assert_eq!(m.train_rows(), split.train.len());
        assert_eq!(m.validation.rows, split.valid.len());
        for (f, (name, bytes)) in m.shards.iter().chain([&m.validation]).zip(&files) {
            assert_eq!(&f.file, name);
            assert_eq!(f.sha256, sha256_hex(bytes));
        }
        // A shard read back and standardised with the manifest's statistics is the same
        // rows as sharding the standardised split in memory.
        let stats = Standardisation {
            mean: m.mean.clone(),
            std: m.std.clone(),
        };
        let mut back = Dataset::from_parquet_bytes(&files[2].1, "shard 2").unwrap();
        stats.apply(&mut back);
        let want = split.train.shard(2, 4);
        assert_eq!(back.labels, want.labels);
        for (a, b) in back.features.iter().zip(&want.features) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
        assert!(register("d", &source, 0, 0.2, 0).is_err());
    }
}
