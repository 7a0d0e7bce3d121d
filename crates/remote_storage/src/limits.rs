//! Bounds of object storage operations.

use std::time::Duration;

/// Largest object [`crate::RemoteStorage::get`] returns whole (indexes are far smaller;
/// layer files are downloaded to disk or read by range).
pub const MAX_GET_BYTES: u64 = 64 << 20;

/// Objects above this size are uploaded to S3 in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;

/// Part size of a multipart upload (S3's minimum is 5 MiB; 10,000 parts at most).
pub const MULTIPART_PART_SIZE: u64 = 16 << 20;

/// Parts of one multipart upload in flight at once (each held in memory, so one
/// upload uses at most this many times the part size; all count against
/// [`MAX_CONCURRENT_REQUESTS`]).
pub const MULTIPART_CONCURRENT_PARTS: usize = 4;

/// Attempts of one S3 request before its error is returned (the first included).
pub const MAX_ATTEMPTS: u32 = 5;

/// Backoff before the second attempt; doubled each time, with full jitter.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Longest backoff between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Time allowed for one S3 request attempt (a part, not a whole multipart upload).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Time allowed to connect to the S3 endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// S3 requests in flight at once per store; more wait for a slot.
pub const MAX_CONCURRENT_REQUESTS: usize = 16;
