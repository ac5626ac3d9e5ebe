//! Registered datasets in the store: `tessera dataset add` publishes one, and a
//! data-parallel sweep that names a plain Parquet file has it cut into shards once,
//! next to its results, so that each replica fetches only its own shards.

use std::path::Path;

use tessera_core::shards::{MANIFEST, Manifest};
use tessera_core::trial::DatasetRef;

use crate::lake::{Location, ObjectStore};

/// Writes a dataset's files to `loc`, the manifest last: a reader never sees a manifest
/// whose files are not all there.
pub async fn publish(
    loc: &Location,
    manifest: &Manifest,
    files: Vec<(String, Vec<u8>)>,
) -> Result<(), String> {
    let store = ObjectStore::open(loc).await.map_err(|e| e.to_string())?;
    for (file, bytes) in files {
        store.put(&file, bytes).await.map_err(|e| e.to_string())?;
    }
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| e.to_string())?;
    store.put(MANIFEST, json).await.map_err(|e| e.to_string())
}

/// Where a sweep's plain Parquet file is registered under `root`: named after the file
/// and a digest of its bytes and of how it is split, so that a changed file or split is
/// registered anew and an unchanged one is reused by every later run.
pub fn staged_location(root: &Location, file: &Path, bytes: &[u8], d: &DatasetRef) -> Location {
    let key = serde_json::to_vec(&(
        tessera_core::shards::sha256_hex(bytes),
        d.shards,
        d.validation_fraction,
        d.split_seed,
    ))
    .unwrap_or_default();
    let digest = tessera_core::shards::sha256_hex(&key);
    root.join("datasets")
        .join(&format!("{}-{}", stem(file), &digest[..12]))
}

fn stem(file: &Path) -> String {
    file.file_stem().map_or_else(
        || "dataset".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// The dataset a sweep's trials read: for a data-parallel sweep (`resources.workers` >
/// 1), its plain Parquet file registered once under `root/datasets/` (see [`stage`]);
/// otherwise `dataset` as it is.
pub async fn for_sweep(
    spec: &tessera_core::SweepSpec,
    dataset: Option<DatasetRef>,
    root: &Location,
) -> Result<Option<DatasetRef>, String> {
    match dataset {
        #[cfg(feature = "worker")]
        Some(d) if spec.workers > 1 => stage(d, root)
            .await
            .map(Some)
            .map_err(|e| format!("cannot cut the dataset into shards: {e}")),
        d => {
            let _ = (spec, root);
            Ok(d)
        }
    }
}

/// A data-parallel sweep's dataset as its replicas should read it: a plain local
/// Parquet file is registered under `root/datasets/` (once: a run that finds it there
/// reuses it) and the reference points there; a registered dataset is returned as it is.
/// Reading, hashing and cutting the file run on a blocking thread.
#[cfg(feature = "worker")]
pub async fn stage(d: DatasetRef, root: &Location) -> Result<DatasetRef, String> {
    if d.registered {
        return Ok(d);
    }
    let file = std::path::PathBuf::from(&d.path);
    let (root, key) = (root.clone(), d.clone());
    let (bytes_file, loc) = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let loc = staged_location(&root, &file, &bytes, &key).absolute();
        Ok::<_, String>((file, loc))
    })
    .await
    .map_err(|e| e.to_string())??;
    let file = bytes_file;
    let store = ObjectStore::open(&loc).await.map_err(|e| e.to_string())?;
    let registered = store
        .get(MANIFEST)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .is_some_and(|m| m.check().is_ok());
    if !registered {
        let name = stem(&file);
        let (shards, fraction, seed) = (
            d.shards.max(1) as usize,
            d.validation_fraction,
            d.split_seed,
        );
        let (manifest, files) = tokio::task::spawn_blocking(move || {
            tessera_worker::datasets::register(&name, &file, shards, fraction, seed)
        })
        .await
        .map_err(|e| e.to_string())??;
        publish(&loc, &manifest, files).await?;
    }
    Ok(DatasetRef {
        path: loc.to_string(),
        registered: true,
        ..d
    })
}

#[cfg(all(test, feature = "worker"))]
mod tests {
    use super::*;

    fn digits() -> DatasetRef {
        DatasetRef {
            path: concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../experiments/data/digits/digits.parquet"
            )
            .into(),
            validation_fraction: 0.2,
            split_seed: 0,
            shards: 4,
            registered: false,
        }
    }

    #[tokio::test]
    async fn a_file_is_registered_once_and_again_only_when_its_split_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::Local(dir.path().to_owned());
        let first = stage(digits(), &root).await.unwrap();
        assert!(first.registered);
        let manifest = Path::new(&first.path).join(MANIFEST);
        let written = std::fs::metadata(&manifest).unwrap().modified().unwrap();
        // The same file and split: found, not written again.
        let again = stage(digits(), &root).await.unwrap();
        assert_eq!(again.path, first.path);
        assert_eq!(
            std::fs::metadata(&manifest).unwrap().modified().unwrap(),
            written
        );
        // Another number of shards is another dataset.
        let six = stage(
            DatasetRef {
                shards: 6,
                ..digits()
            },
            &root,
        )
        .await
        .unwrap();
        assert_ne!(six.path, first.path);
        let m: Manifest =
            serde_json::from_slice(&std::fs::read(Path::new(&six.path).join(MANIFEST)).unwrap())
                .unwrap();
        assert_eq!(m.shards.len(), 6);
        // A registered dataset is left as it is.
        assert_eq!(stage(six.clone(), &root).await.unwrap(), six);
    }
}
