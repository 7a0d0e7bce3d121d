//! Bounds of tiering to object storage.

use std::time::Duration;

/// How often an uploader looks for new layer files.
pub const UPLOAD_INTERVAL: Duration = Duration::from_millis(500);

/// After a failed upload round, the uploader waits this long (doubling, up to the
/// maximum) before trying again; the store's own retries have already run. Uploads are
/// retried for as long as the daemon runs: a layer is never dropped, since the index
/// that covers it cannot be written without it.
pub const UPLOAD_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const UPLOAD_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The upload queue of a timeline: layer files on local disk not yet in object storage.
/// At this many, the layer task stops freezing by size or age and writes no image
/// layer, so local layers do not run ahead of object storage without bound while the
/// store is slow or down. (A commit still freezes the open layer itself once it holds
/// `OPEN_LAYER_BACKLOG_FREEZES` freezes' worth: that bound protects ingest and wins.)
pub const UPLOAD_QUEUE_MAX_LAYERS: u64 = 16;

/// Layers one index may list (a timeline with more needs compaction first).
pub const MAX_INDEX_LAYERS: usize = 100_000;

/// Attempts at claiming a generation before giving up (another pageserver claiming
/// the same numbers at the same moment).
pub const MAX_GENERATION_CLAIMS: u32 = 16;

/// How often the eviction task compares local layer bytes with the disk budget.
pub const EVICTION_INTERVAL: Duration = Duration::from_secs(1);

/// Longest a read waits for one layer download. The store's own attempts are bounded
/// (`remote_storage::limits`); this bounds the wait on top, should the runtime be
/// stopping.
pub const DOWNLOAD_WAIT_TIMEOUT: Duration = Duration::from_secs(600);
