//! Every bound of the layer store, in one place.

/// Length of a key: `page_model::Key::encode` produces 18 bytes; the store treats them
/// as opaque and sorts them bytewise.
pub const KEY_LEN: usize = 18;

/// A RocksDB key of the open layer: the key followed by the LSN big-endian, so that
/// RocksDB's bytewise order is (key, LSN).
pub(crate) const OPEN_KEY_LEN: usize = KEY_LEN + 8;

/// Largest value accepted by `put_batch` or written to a layer. Pages are 8 KiB; the
/// largest other values (two-phase state files, directory listings) stay far below this.
pub const MAX_VALUE_BYTES: usize = 64 << 20;

/// Largest `meta` blob; it holds a handful of LSNs and ids.
pub const MAX_META_BYTES: usize = 1 << 20;

/// Default open-layer size at which `freeze(false)` writes a delta layer.
pub const DEFAULT_FREEZE_BYTES: u64 = 128 << 20;

/// Index entries per index block. A block of 256 entries is about 10 KiB: small enough
/// that a damaged block loses little, large enough that the CRC overhead is negligible.
pub(crate) const INDEX_ENTRIES_PER_BLOCK: usize = 256;

/// Largest index section read into memory from one layer file (about 27 million
/// entries): a footer claiming more is treated as corrupt rather than trusted.
pub(crate) const MAX_INDEX_BYTES: u64 = 1 << 30;

/// Deletes per RocksDB write batch when dropping frozen entries, so that one batch
/// never holds a whole open layer's keys in memory twice.
pub(crate) const DELETE_BATCH_ENTRIES: usize = 4096;

/// Largest manifest file read: one line per layer of about 120 bytes allows half a
/// million layers.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Bytes a reader fetches from the tail of a layer file before it knows the index
/// length: one range read covers footer and index of layers up to about 1,600 entries.
pub(crate) const TAIL_READ_BYTES: u64 = 64 << 10;

const _: () = assert!(DEFAULT_FREEZE_BYTES >= MAX_VALUE_BYTES as u64);
