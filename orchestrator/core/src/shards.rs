//! Registered datasets: a table cut once into fixed training shards plus a validation
//! file, described by a manifest (`manifest.json` beside the files, on local disk or S3).
//! Workers fetch only the files they need, check each against its SHA-256 and standardise
//! features with the manifest's training statistics, so every replica of a trial sees the
//! same numbers without ever reading the whole table.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name in a dataset's folder.
pub const MANIFEST: &str = "manifest.json";

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fetches a registered dataset's files from where it lives (a local folder or S3), and
/// keeps data-parallel trials' checkpoints beside a sweep's results.
pub trait Fetch: Send + Sync {
    /// The bytes of `file` in the dataset folder `location`.
    fn fetch(&self, location: &str, file: &str) -> Result<Vec<u8>, String>;

    /// Writes `bytes` as `file` under `location`, replacing it whole.
    fn put(&self, location: &str, file: &str, bytes: Vec<u8>) -> Result<(), String> {
        let _ = (file, bytes);
        Err(format!("{location}: this store cannot be written"))
    }

    /// Removes `file` under `location`, if it is there.
    fn remove(&self, location: &str, file: &str) -> Result<(), String> {
        let _ = (location, file);
        Ok(())
    }
}

/// One file of a registered dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardFile {
    /// File name, relative to the dataset's folder.
    pub file: String,
    /// Rows in it.
    pub rows: usize,
    /// Bytes in it.
    pub bytes: u64,
    /// SHA-256 of its bytes, lower-case hex.
    pub sha256: String,
}

/// A registered dataset's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version (1).
    pub version: u32,
    /// The dataset's name.
    pub name: String,
    /// Where its rows came from, as given to `tessera dataset add`.
    pub source: String,
    /// Feature columns, in order; the label column is `label`.
    pub features: Vec<String>,
    /// Classes (largest label + 1).
    pub classes: usize,
    /// Share of rows held out for validation, stratified by class.
    pub validation_fraction: f64,
    /// Seed of that split.
    pub split_seed: u64,
    /// Training rows' mean of each feature: workers standardise with it.
    pub mean: Vec<f64>,
    /// Training rows' standard deviation of each feature (1 where it is 0).
    pub std: Vec<f64>,
    /// Training shards: shard `i` holds training rows `i`, `i + N`, …
    pub shards: Vec<ShardFile>,
    /// The validation rows.
    pub validation: ShardFile,
}

impl Manifest {
    /// Training rows in all shards.
    pub fn train_rows(&self) -> usize {
        self.shards.iter().map(|s| s.rows).sum()
    }

    /// Checks that the manifest is usable; a one-line reason if not.
    pub fn check(&self) -> Result<(), String> {
        if self.version != 1 {
            return Err(format!(
                "manifest version {} is not 1: written by another Tessera release",
                self.version
            ));
        }
        if self.shards.is_empty() {
            return Err("the manifest lists no shard".into());
        }
        let d = self.features.len();
        if self.mean.len() != d || self.std.len() != d {
            return Err(format!(
                "{d} features but {} means and {} deviations",
                self.mean.len(),
                self.std.len()
            ));
        }
        for f in self.shards.iter().chain([&self.validation]) {
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{}: `{}` is not a SHA-256", f.file, f.sha256));
            }
            if f.file.contains('/') || f.file.contains("..") {
                return Err(format!(
                    "{}: a shard file must lie in the dataset's folder",
                    f.file
                ));
            }
        }
        Ok(())
    }

    /// Shards held by replica `rank` of `world`: `rank`, `rank + world`, …
    pub fn shards_of(&self, rank: usize, world: usize) -> Vec<usize> {
        (rank..self.shards.len()).step_by(world.max(1)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, rows: usize) -> ShardFile {
        ShardFile {
            file: name.into(),
            rows,
            bytes: 10,
            sha256: "ab".repeat(32),
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            version: 1,
            name: "d".into(),
            source: "d.parquet".into(),
            features: vec!["a".into(), "b".into()],
            classes: 2,
            validation_fraction: 0.2,
            split_seed: 0,
            mean: vec![0.0, 1.0],
            std: vec![1.0, 2.0],
            shards: (0..4)
                .map(|i| file(&format!("shard-{i}.parquet"), 10 + i))
                .collect(),
            validation: file("validation.parquet", 9),
        }
    }

    #[test]
    fn sha256_matches_a_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_manifest_round_trips_and_assigns_shards() {
        let m = manifest();
        m.check().unwrap();
        let back: Manifest = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.train_rows(), 46);
        assert_eq!(m.shards_of(1, 2), vec![1, 3]);
        assert_eq!(m.shards_of(0, 1), vec![0, 1, 2, 3]);
    }

    #[test]
    fn broken_manifests_say_what_is_wrong() {
        let mut m = manifest();
        m.shards[1].sha256 = "xyz".into();
        assert!(m.check().unwrap_err().contains("not a SHA-256"));
        let mut m = manifest();
        m.shards[0].file = "../etc/passwd".into();
        assert!(m.check().unwrap_err().contains("dataset's folder"));
        let mut m = manifest();
        m.mean.pop();
        assert!(m.check().unwrap_err().contains("2 features but 1 means"));
        let mut m = manifest();
        m.version = 2;
        assert!(m.check().is_err());
    }
}
