//! Object storage for Strata: the pageserver's layer files and indexes, the
//! safekeepers' offloaded WAL segments.
//!
//! One trait, [`RemoteStorage`], with two backends: a local directory (the default,
//! so that a cluster runs without S3; `file:///path`) and S3 (AWS, MinIO or any
//! S3-compatible server; `s3://bucket/prefix?endpoint=http://host:port&region=...`).
//! [`connect`] turns a [`RemoteStorageConfig`] into one.
//!
//! Objects are immutable once written, except a generation's own index, which its
//! writer replaces whole (an S3 PUT and a rename are both atomic). Names carry the
//! generation of the attachment that wrote them ([`layout`]), so two writers never
//! write the same name.

pub mod config;
pub mod error;
pub mod layout;
pub mod limits;
mod local;
pub mod metered;
pub mod s3;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub use config::RemoteStorageConfig;
pub use error::RemoteError;
pub use layout::{Generation, RemotePath};
pub use local::LocalFs;
pub use metered::MeteredStorage;
pub use s3::{RetryPolicy, S3Bucket, UploadSizes};

/// One object as a listing returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub path: RemotePath,
    pub size: u64,
}

/// An object store. Every method is bounded in time (retries and timeouts are the
/// backend's, see [`limits`]); an error names the store and the object.
#[async_trait::async_trait]
pub trait RemoteStorage: Send + Sync + std::fmt::Debug {
    /// Write `data` as `path`, replacing any object of that name. Durable when it
    /// returns: the local backend fsyncs the file and its directory, S3 acknowledges
    /// only stored objects.
    async fn put(&self, path: &RemotePath, data: Bytes) -> Result<(), RemoteError>;

    /// Upload the local file `src` as `path` (multipart above
    /// [`limits::MULTIPART_THRESHOLD`] on S3), without holding it in memory. Returns
    /// the bytes uploaded.
    async fn put_file(&self, path: &RemotePath, src: &Path) -> Result<u64, RemoteError>;

    /// Create `path` only if no object has that name: `Ok(true)` if this call created
    /// it, `Ok(false)` if it existed. [`RemoteError::Unsupported`] where the store
    /// cannot do it atomically.
    async fn put_if_absent(&self, path: &RemotePath, data: Bytes) -> Result<bool, RemoteError>;

    /// The whole object; [`RemoteError::NotFound`] if there is none. For small objects
    /// (indexes); at most [`limits::MAX_GET_BYTES`].
    async fn get(&self, path: &RemotePath) -> Result<Bytes, RemoteError>;

    /// `len` bytes from `offset`; an error if the object is shorter.
    async fn get_range(
        &self,
        path: &RemotePath,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, RemoteError>;

    /// Download `path` into the local file `dest`, durably and atomically (a
    /// temporary file, fsynced, renamed, the directory fsynced): `dest` either does
    /// not exist or holds the whole object. Returns its size.
    async fn download_to_file(&self, path: &RemotePath, dest: &Path) -> Result<u64, RemoteError>;

    /// Every object whose name starts with `prefix`, sorted by name.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, RemoteError>;

    /// Remove `path`; removing an absent object succeeds.
    async fn delete(&self, path: &RemotePath) -> Result<(), RemoteError>;

    /// The store as people name it (`file:///srv/strata`, `s3://bucket/prefix at
    /// http://host:9000`), for logs and errors.
    fn describe(&self) -> String;
}

/// Open the store `config` describes. For S3 this also checks that the bucket is
/// reachable with the credentials given, so a wrong endpoint, bucket or key is one
/// clear error at startup rather than failures later.
pub async fn connect(config: &RemoteStorageConfig) -> Result<Arc<dyn RemoteStorage>, RemoteError> {
    match config {
        RemoteStorageConfig::Local { root } => Ok(Arc::new(LocalFs::open(root)?)),
        RemoteStorageConfig::S3(s3) => Ok(Arc::new(
            S3Bucket::connect(s3, RetryPolicy::default(), UploadSizes::default()).await?,
        )),
    }
}
