//! Where results live: a local directory or an S3 prefix, behind one [`ObjectStore`].
//!
//! Both implementations give the same guarantees, checked by one shared test suite
//! (`tests/lake.rs`): an object is either absent or complete (local: temporary file,
//! fsync, rename; S3: one PUT, or a multipart upload that becomes visible only when it is
//! completed and is aborted on error), `put` overwrites, `list` returns keys in order.
//!
//! S3 settings come from the standard AWS sources (environment, profile, web identity on
//! Kubernetes), including `AWS_ENDPOINT_URL` for S3-compatible stores; set
//! `TESSERA_S3_PATH_STYLE=1` for stores that need path-style addressing (MinIO, Ceph,
//! most test servers). Credentials never appear in errors or logs.

use std::fmt;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

/// The SDK's error chain without its trailing debug dump.
fn short(mut message: String) -> String {
    // The chain ends with ` (Variant(Struct { … }))`: the readable part is before it.
    if let Some(i) = message
        .find(" (DispatchFailure(")
        .or_else(|| message.find(" (ServiceError("))
    {
        message.truncate(i);
    }
    if message.chars().count() > 400 {
        message = message.chars().take(400).collect::<String>() + "…";
    }
    message
}

/// Objects above this size go up as a multipart upload, in parts of this size.
pub const MULTIPART_PART: usize = 8 << 20;

/// Errors of the object store.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The location string is not usable.
    #[error("{0}")]
    Location(String),
    /// Local file-system failure.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An S3 request failed.
    #[error(
        "s3://{bucket}/{key}: {message}\n  help: check the bucket, the endpoint (AWS_ENDPOINT_URL, TESSERA_S3_PATH_STYLE) and the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, …)"
    )]
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// What the SDK said (without credentials).
        message: String,
    },
    /// The object does not exist.
    #[error("{0}: no such object")]
    NotFound(String),
}

/// A results location as a user writes it: a directory or `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An S3 bucket and key prefix (no leading or trailing slash).
    S3 {
        /// Bucket.
        bucket: String,
        /// Prefix; empty for the bucket's root.
        prefix: String,
    },
}

impl Location {
    /// Parses `s3://bucket/prefix` or a local path.
    pub fn parse(s: &str) -> Result<Location, LakeError> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(LakeError::Location(format!(
                    "`{s}` names no bucket; write s3://BUCKET/PREFIX"
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if s.contains("://") {
            return Err(LakeError::Location(format!(
                "`{s}`: only local directories and s3://BUCKET/PREFIX are supported"
            )));
        }
        Ok(Location::Local(PathBuf::from(s)))
    }

    /// A location below this one.
    pub fn join(&self, sub: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(sub)),
            Location::S3 { bucket, prefix } => Location::S3 {
                bucket: bucket.clone(),
                prefix: if prefix.is_empty() {
                    sub.to_owned()
                } else {
                    format!("{prefix}/{sub}")
                },
            },
        }
    }

    /// The same location, a local one made absolute, to hand to processes that may run
    /// in another folder (workers).
    pub fn absolute(self) -> Location {
        match self {
            Location::Local(p) => Location::Local(std::path::absolute(&p).unwrap_or(p)),
            s3 => s3,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// An S3 client for one bucket and prefix.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Store(s3://{}/{})", self.bucket, self.prefix)
    }
}

/// A place objects are kept: a local directory or an S3 prefix.
#[derive(Debug, Clone)]
pub enum ObjectStore {
    /// A local directory.
    Local(PathBuf),
    /// An S3 prefix.
    S3(S3Store),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LakeError + '_ {
    move |source| LakeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// S3 settings beyond the standard AWS sources.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint override (else `AWS_ENDPOINT_URL` and the rest of the AWS chain).
    pub endpoint: Option<String>,
    /// Path-style addressing (`TESSERA_S3_PATH_STYLE=1`).
    pub path_style: bool,
    /// Fixed credentials (access key, secret) instead of the AWS chain; for tests.
    pub credentials: Option<(String, String)>,
}

impl S3Options {
    /// From the environment: `TESSERA_S3_PATH_STYLE`.
    pub fn from_env() -> Self {
        Self {
            path_style: std::env::var("TESSERA_S3_PATH_STYLE")
                .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes")),
            ..Self::default()
        }
    }
}

impl ObjectStore {
    /// Opens the store at `loc` (for S3, loads the AWS configuration).
    pub async fn open(loc: &Location) -> Result<ObjectStore, LakeError> {
        Self::open_with(loc, &S3Options::from_env()).await
    }

    /// Opens the store at `loc` with explicit S3 settings.
    pub async fn open_with(loc: &Location, opts: &S3Options) -> Result<ObjectStore, LakeError> {
        match loc {
            Location::Local(p) => Ok(ObjectStore::Local(p.clone())),
            Location::S3 { bucket, prefix } => {
                let region = aws_config::meta::region::RegionProviderChain::default_provider()
                    .or_else("us-east-1");
                let mut loader =
                    aws_config::defaults(aws_config::BehaviorVersion::latest()).region(region);
                if let Some(e) = &opts.endpoint {
                    loader = loader.endpoint_url(e);
                }
                if let Some((key, secret)) = &opts.credentials {
                    loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                        key, secret, None, None, "tessera",
                    ));
                }
                let sdk = loader.load().await;
                let conf = aws_sdk_s3::config::Builder::from(&sdk)
                    .force_path_style(opts.path_style)
                    .build();
                Ok(ObjectStore::S3(S3Store {
                    client: aws_sdk_s3::Client::from_conf(conf),
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                }))
            }
        }
    }

    /// Where this store is.
    pub fn location(&self) -> Location {
        match self {
            ObjectStore::Local(p) => Location::Local(p.clone()),
            ObjectStore::S3(s) => Location::S3 {
                bucket: s.bucket.clone(),
                prefix: s.prefix.clone(),
            },
        }
    }

    /// The same store, one level down.
    pub fn sub(&self, sub: &str) -> ObjectStore {
        match self {
            ObjectStore::Local(p) => ObjectStore::Local(p.join(sub)),
            ObjectStore::S3(s) => ObjectStore::S3(S3Store {
                client: s.client.clone(),
                bucket: s.bucket.clone(),
                prefix: if s.prefix.is_empty() {
                    sub.to_owned()
                } else {
                    format!("{}/{sub}", s.prefix)
                },
            }),
        }
    }

    fn s3_key(s: &S3Store, key: &str) -> String {
        if s.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", s.prefix)
        }
    }

    /// The key prefix of folder `prefix` (with a trailing `/`, or empty for the root).
    fn s3_folder(s: &S3Store, prefix: &str) -> String {
        let folder = prefix.trim_matches('/');
        match (s.prefix.is_empty(), folder.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!("{folder}/"),
            (false, true) => format!("{}/", s.prefix),
            (false, false) => format!("{}/{folder}/", s.prefix),
        }
    }

    fn s3_err(s: &S3Store, key: &str, e: impl std::error::Error) -> LakeError {
        LakeError::S3 {
            bucket: s.bucket.clone(),
            key: Self::s3_key(s, key),
            message: short(DisplayErrorContext(e).to_string()),
        }
    }

    /// Writes `bytes` to `key` (a `/`-separated path below the store), replacing what was
    /// there; readers see the old object or the whole new one, never a part.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), LakeError> {
        match self {
            ObjectStore::Local(root) => {
                let path = root.join(key);
                let folder = path.parent().unwrap_or(root).to_owned();
                fs::create_dir_all(&folder).map_err(io(&folder))?;
                let tmp = folder.join(format!(
                    ".{}.tmp",
                    path.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ));
                let mut file = File::create(&tmp).map_err(io(&tmp))?;
                file.write_all(&bytes).map_err(io(&tmp))?;
                file.sync_all().map_err(io(&tmp))?;
                drop(file);
                fs::rename(&tmp, &path).map_err(io(&path))?;
                if let Ok(dir) = File::open(&folder) {
                    let _ = dir.sync_all();
                }
                Ok(())
            }
            ObjectStore::S3(s) if bytes.len() <= MULTIPART_PART => {
                s.client
                    .put_object()
                    .bucket(&s.bucket)
                    .key(Self::s3_key(s, key))
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map_err(|e| Self::s3_err(s, key, e))?;
                Ok(())
            }
            ObjectStore::S3(s) => {
                let (full, id) = Self::start_upload(s, key).await?;
                let result = Self::upload_parts(s, &full, &id, &bytes).await;
                match result {
                    Ok(parts) => {
                        s.client
                            .complete_multipart_upload()
                            .bucket(&s.bucket)
                            .key(&full)
                            .upload_id(&id)
                            .multipart_upload(
                                CompletedMultipartUpload::builder()
                                    .set_parts(Some(parts))
                                    .build(),
                            )
                            .send()
                            .await
                            .map_err(|e| Self::s3_err(s, key, e))?;
                        Ok(())
                    }
                    Err(e) => {
                        // Leave nothing behind: an aborted upload is never visible.
                        let _ = s
                            .client
                            .abort_multipart_upload()
                            .bucket(&s.bucket)
                            .key(&full)
                            .upload_id(&id)
                            .send()
                            .await;
                        Err(e)
                    }
                }
            }
        }
    }

    /// Starts a multipart upload of `key`: its full key and the upload id.
    async fn start_upload(s: &S3Store, key: &str) -> Result<(String, String), LakeError> {
        let full = Self::s3_key(s, key);
        let upload = s
            .client
            .create_multipart_upload()
            .bucket(&s.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| Self::s3_err(s, key, e))?;
        let id = upload.upload_id().unwrap_or_default().to_owned();
        Ok((full, id))
    }

    async fn upload_parts(
        s: &S3Store,
        full: &str,
        id: &str,
        bytes: &[u8],
    ) -> Result<Vec<CompletedPart>, LakeError> {
        let mut parts = Vec::new();
        for (i, chunk) in bytes.chunks(MULTIPART_PART).enumerate() {
            let n = i as i32 + 1;
            let r = s
                .client
                .upload_part()
                .bucket(&s.bucket)
                .key(full)
                .upload_id(id)
                .part_number(n)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| LakeError::S3 {
                    bucket: s.bucket.clone(),
                    key: full.to_owned(),
                    message: short(DisplayErrorContext(e).to_string()),
                })?;
            parts.push(
                CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(r.e_tag().map(str::to_owned))
                    .build(),
            );
        }
        Ok(parts)
    }

    /// Reads the object at `key`.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, LakeError> {
        match self {
            ObjectStore::Local(root) => {
                let path = root.join(key);
                fs::read(&path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        LakeError::NotFound(path.display().to_string())
                    } else {
                        LakeError::Io { path, source: e }
                    }
                })
            }
            ObjectStore::S3(s) => {
                let r = s
                    .client
                    .get_object()
                    .bucket(&s.bucket)
                    .key(Self::s3_key(s, key))
                    .send()
                    .await;
                let r = match r {
                    Ok(r) => r,
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                        return Err(LakeError::NotFound(format!(
                            "s3://{}/{}",
                            s.bucket,
                            Self::s3_key(s, key)
                        )));
                    }
                    Err(e) => return Err(Self::s3_err(s, key, e)),
                };
                let data = r
                    .body
                    .collect()
                    .await
                    .map_err(|e| Self::s3_err(s, key, e))?;
                Ok(data.into_bytes().to_vec())
            }
        }
    }

    /// Keys below `prefix` (a folder, `/`-separated, relative to the store), sorted;
    /// temporary and hidden files are left out.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, LakeError> {
        let mut keys = Vec::new();
        match self {
            ObjectStore::Local(root) => {
                let folder = root.join(prefix);
                let entries = match fs::read_dir(&folder) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
                    Err(e) => {
                        return Err(LakeError::Io {
                            path: folder,
                            source: e,
                        });
                    }
                };
                for entry in entries {
                    let entry = entry.map_err(io(&folder))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') || !entry.path().is_file() {
                        continue;
                    }
                    keys.push(if prefix.is_empty() {
                        name
                    } else {
                        format!("{}/{name}", prefix.trim_end_matches('/'))
                    });
                }
            }
            ObjectStore::S3(s) => {
                let strip = Self::s3_folder(s, "");
                for k in Self::s3_list(s, prefix).await?.0 {
                    if let Some(k) = k.strip_prefix(&strip) {
                        keys.push(k.to_owned());
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Full keys of the objects, and full prefixes of the sub-folders, directly in folder
    /// `prefix` of an S3 store.
    async fn s3_list(s: &S3Store, prefix: &str) -> Result<(Vec<String>, Vec<String>), LakeError> {
        let (mut keys, mut dirs) = (Vec::new(), Vec::new());
        let mut pages = s
            .client
            .list_objects_v2()
            .bucket(&s.bucket)
            .prefix(Self::s3_folder(s, prefix))
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Self::s3_err(s, prefix, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            dirs.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned)),
            );
        }
        Ok((keys, dirs))
    }

    /// Sub-folders directly below `prefix` (names ending in `/`), sorted.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, LakeError> {
        let mut dirs = Vec::new();
        match self {
            ObjectStore::Local(root) => {
                let folder = root.join(prefix);
                if let Ok(entries) = fs::read_dir(&folder) {
                    for e in entries.flatten() {
                        if e.path().is_dir() {
                            dirs.push(format!("{}/", e.file_name().to_string_lossy()));
                        }
                    }
                }
            }
            ObjectStore::S3(s) => {
                let full = Self::s3_folder(s, prefix);
                for d in Self::s3_list(s, prefix).await?.1 {
                    if let Some(d) = d.strip_prefix(&full) {
                        dirs.push(d.to_owned());
                    }
                }
            }
        }
        dirs.sort();
        Ok(dirs)
    }

    /// Removes the object at `key` (absent is fine).
    pub async fn delete(&self, key: &str) -> Result<(), LakeError> {
        match self {
            ObjectStore::Local(root) => {
                let path = root.join(key);
                match fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(LakeError::Io { path, source: e }),
                }
            }
            ObjectStore::S3(s) => {
                s.client
                    .delete_object()
                    .bucket(&s.bucket)
                    .key(Self::s3_key(s, key))
                    .send()
                    .await
                    .map_err(|e| Self::s3_err(s, key, e))?;
                Ok(())
            }
        }
    }

    /// Removes temporary files a crash left in `prefix` (local only; S3 has none).
    pub async fn clean_temporaries(&self, prefix: &str) -> Result<(), LakeError> {
        if let ObjectStore::Local(root) = self {
            let folder = root.join(prefix);
            if let Ok(entries) = fs::read_dir(&folder) {
                for entry in entries.flatten() {
                    if entry.file_name().to_string_lossy().starts_with('.') {
                        fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts a multipart upload of `key` and sends one part without completing it, as a
    /// crash in the middle of an upload would (tests only: the object must stay invisible).
    #[doc(hidden)]
    pub async fn start_upload_and_abandon(
        &self,
        key: &str,
        part: Vec<u8>,
    ) -> Result<(), LakeError> {
        if let ObjectStore::S3(s) = self {
            let (full, id) = Self::start_upload(s, key).await?;
            Self::upload_parts(s, &full, &id, &part).await?;
        }
        Ok(())
    }
}

/// Fetches registered datasets' files from a local folder or S3 for the worker's
/// executor, which runs trials on blocking threads of this runtime.
pub struct StoreFetch {
    runtime: tokio::runtime::Handle,
}

impl StoreFetch {
    /// Fetches through `runtime`.
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        Self { runtime }
    }
}

impl tessera_core::shards::Fetch for StoreFetch {
    fn fetch(&self, location: &str, file: &str) -> Result<Vec<u8>, String> {
        let loc = Location::parse(location).map_err(|e| e.to_string())?;
        self.runtime
            .block_on(async {
                let store = ObjectStore::open(&loc).await?;
                store.get(file).await
            })
            .map_err(|e| e.to_string())
    }

    fn put(&self, location: &str, file: &str, bytes: Vec<u8>) -> Result<(), String> {
        let loc = Location::parse(location).map_err(|e| e.to_string())?;
        self.runtime
            .block_on(async {
                let store = ObjectStore::open(&loc).await?;
                store.put(file, bytes).await
            })
            .map_err(|e| e.to_string())
    }

    fn remove(&self, location: &str, file: &str) -> Result<(), String> {
        let loc = Location::parse(location).map_err(|e| e.to_string())?;
        self.runtime
            .block_on(async {
                let store = ObjectStore::open(&loc).await?;
                store.delete(file).await
            })
            .map_err(|e| e.to_string())
    }
}
