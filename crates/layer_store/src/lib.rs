//! Storage of key versions for one timeline: an open layer in RocksDB that every commit
//! goes to, immutable delta and image layer files it is frozen into, and the layer map
//! that answers which of them hold a key at an LSN. Keys are opaque 18-byte strings
//! sorted bytewise, LSNs are `u64`, values are opaque bytes with a `will_init` flag (the
//! value alone reconstructs the key's state; older versions are not needed).
//!
//! Directory of one store:
//! - `open_layer/`: the RocksDB database (entries and the `meta` blob),
//! - `layers/`: the layer files (docs/layer-files.md),
//! - `layer_manifest`: the set of layer files the store is made of.
//!
//! *Invariant:* a version is readable from the moment `put_batch` returns until the end:
//! a freeze lists its layer (manifest, then layer map) before it deletes the entries the
//! layer holds from RocksDB.
//!
//! *Invariant:* damaged bytes are reported as [`StoreError::Corrupt`] and never served.

mod durable;
mod format;
pub mod limits;
mod manifest;
mod name;
mod open_layer;
mod store;

#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use limits::KEY_LEN;
pub use store::LayerStore;

/// One version to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: [u8; KEY_LEN],
    pub lsn: u64,
    pub will_init: bool,
    pub value: Bytes,
}

/// One stored version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub lsn: u64,
    pub will_init: bool,
    pub value: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// Versions of a key range over an LSN range.
    Delta,
    /// Images (every value `will_init`) of a key range at one LSN.
    Image,
}

/// A layer file of the store. Ranges are inclusive: `key_start`/`key_end` are the first
/// and last keys the file holds, `lsn_start`/`lsn_end` its lowest and highest LSNs (equal
/// for an image layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub name: String,
    pub kind: LayerKind,
    pub key_start: [u8; KEY_LEN],
    pub key_end: [u8; KEY_LEN],
    pub lsn_start: u64,
    pub lsn_end: u64,
    pub size_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Open layer size (approximate bytes of keys and values) at which `freeze(false)`
    /// writes it out as a delta layer.
    pub freeze_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            freeze_bytes: limits::DEFAULT_FREEZE_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("RocksDB: {0}")]
    RocksDb(#[from] rocksdb::Error),
    /// Checksum mismatch, bad magic, truncation, an index pointing outside its file, a
    /// listed layer file missing: the data is not served.
    #[error("corrupt data in {file}: {reason}")]
    Corrupt { file: String, reason: String },
    /// The caller broke a documented precondition (sizes, ordering).
    #[error("invalid request: {0}")]
    Invalid(String),
}
