//! Bounds of tiering to object storage.

use std::time::Duration;

/// How often an uploader looks for new layer files (also woken by layer work).
pub const UPLOAD_INTERVAL: Duration = Duration::from_millis(500);

/// After a failed upload, the uploader waits this long (doubling, up to the maximum)
/// before trying again; the store's own retries have already run.
pub const UPLOAD_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const UPLOAD_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Layers one index may list (a timeline with more needs compaction first).
pub const MAX_INDEX_LAYERS: usize = 100_000;

/// Attempts at claiming a generation before giving up (another pageserver claiming
/// the same numbers at the same moment).
pub const MAX_GENERATION_CLAIMS: u32 = 16;

/// How often the eviction task compares local layer bytes with the disk budget.
pub const EVICTION_INTERVAL: Duration = Duration::from_secs(1);

/// Layer files downloaded at once while restoring a timeline.
pub const RESTORE_CONCURRENCY: usize = 8;
