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
//!
//! Local disk is a cache of the layer files, which live in object storage: the manifest
//! lists every layer, and a listed layer whose file is not on local disk (evicted, or a
//! store restored with [`LayerStore::create_from_layers`]) is fetched through the
//! [`LayerFetcher`] when a read needs it, and checked like any layer file before use.
//!
//! *Invariant:* eviction and fetching change where a layer's bytes are, never which
//! versions a read returns.

mod durable;
mod format;
mod layer;
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

/// Kind, key range and LSN range of a layer file name, or `None` when `name` is not
/// exactly one (for names that come from outside, such as an object storage index).
pub fn parse_layer_name(name: &str) -> Option<LayerInfo> {
    let parts = name::parse_layer_file_name(name)?;
    Some(LayerInfo {
        name: name.to_string(),
        kind: parts.kind,
        key_start: parts.key_start,
        key_end: parts.key_end,
        lsn_start: parts.lsn_start,
        lsn_end: parts.lsn_end,
        size_bytes: 0,
    })
}

/// Brings a layer file that is not on local disk back (from object storage). Blocking:
/// reads run on blocking threads. Implementations write `dest` atomically (a temporary
/// file renamed into place, fsynced) so a crash never leaves a torn layer file. The
/// temporary file must be in `dest`'s directory with a name ending in `.tmp`, so that
/// `LayerStore::open` removes one that a crash left behind.
pub trait LayerFetcher: Send + Sync + std::fmt::Debug {
    /// Writes the layer `layer_name`, of `size_bytes` bytes, to `dest`. The store checks
    /// what it finds there (size, footer, index and blob checksums) before serving it.
    fn fetch(
        &self,
        layer_name: &str,
        size_bytes: u64,
        dest: &std::path::Path,
    ) -> Result<(), std::io::Error>;
}

/// Where a layer's bytes are, and when it was last read.
#[derive(Debug, Clone)]
pub struct LayerResidency {
    pub info: LayerInfo,
    /// Its file is on local disk.
    pub resident: bool,
    /// Last read by `versions`; a layer not read since the store was opened reports
    /// when it was opened (or, for a layer written since, when it was written).
    pub last_read: std::time::Instant,
}

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
    /// file (local or fetched) whose size differs from the manifest's: the data is not
    /// served.
    #[error("corrupt data in {file}: {reason}")]
    Corrupt { file: String, reason: String },
    /// A read needs a layer whose file is not on local disk and no fetcher is installed.
    #[error("layer {layer} is not on local disk and no fetcher is installed")]
    NotResident { layer: String },
    /// The fetcher failed to bring a layer file back.
    #[error("fetch of layer {layer}: {source}")]
    Fetch {
        layer: String,
        #[source]
        source: std::io::Error,
    },
    /// The caller broke a documented precondition (sizes, ordering).
    #[error("invalid request: {0}")]
    Invalid(String),
}
