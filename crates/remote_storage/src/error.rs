use std::path::PathBuf;

/// Why an object storage operation failed. `store` is
/// [`crate::RemoteStorage::describe`], so every message names the bucket and endpoint
/// (or directory) it is about.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("invalid object store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid object name {name:?}: {reason}")]
    InvalidPath { name: String, reason: String },
    #[error("{store}: object {path} not found")]
    NotFound { store: String, path: String },
    #[error("{store}: {operation} is not supported by this store")]
    Unsupported {
        store: String,
        operation: &'static str,
    },
    /// A request the store refused and retrying cannot fix: wrong credentials, a
    /// missing bucket, access denied.
    #[error("{store}: {operation} {path}: {reason}")]
    Refused {
        store: String,
        operation: &'static str,
        path: String,
        reason: String,
    },
    /// A request that failed every attempt (timeouts, connection errors, 5xx).
    #[error("{store}: {operation} {path} failed after {attempts} attempts: {reason}")]
    Unavailable {
        store: String,
        operation: &'static str,
        path: String,
        attempts: u32,
        reason: String,
    },
    /// An object that is not what its name promises (shorter than a range asked for,
    /// larger than a whole get allows).
    #[error("{store}: object {path}: {reason}")]
    BadObject {
        store: String,
        path: String,
        reason: String,
    },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RemoteError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, RemoteError::NotFound { .. })
    }
}
