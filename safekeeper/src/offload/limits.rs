//! Bounds of WAL offload: how often each timeline's offloader looks, how long it waits
//! for peers, how it backs off when object storage fails.

use std::time::Duration;

/// Between two checks of a timeline: is there a finished segment below the commit LSN
/// to upload, which safekeeper uploads, what may be removed. A segment is uploaded at
/// most this long after it is committed (plus the upload), when nothing fails.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Between two listings of a timeline's WAL in object storage. The listing is how a
/// safekeeper that does not upload learns the uploaded LSN (and so may remove its own
/// copies); the uploader also learns there what another one uploaded.
pub const LIST_INTERVAL: Duration = Duration::from_secs(5);

/// Time to connect to a peer's gRPC port, and for one `TimelineStatus` call (the
/// connection included). A peer that does not answer in time counts as unreachable
/// for that check.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const PEER_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Consecutive checks in which a safekeeper must find itself the uploader before it
/// uploads. The choice is deterministic, but each safekeeper sees its peers' positions
/// at a slightly different moment, so under load a peer can look behind for one check;
/// requiring a few in a row keeps a higher-id safekeeper from uploading beside the
/// lowest one on such a glimpse, and delays a takeover by only a few seconds.
pub const UPLOADER_CONFIRMATIONS: u32 = 3;

/// Segments uploaded in one check before the choice of uploader is looked at again
/// (a backlog after an outage is worked through over several checks).
pub const MAX_SEGMENTS_PER_CHECK: usize = 16;

/// Backoff after a failed check (object storage or removal failing): doubled from the
/// first to the last, and back to [`CHECK_INTERVAL`] after a check succeeds. Each
/// storage request has its own retries inside the backend first
/// (`remote_storage::limits`).
pub const RETRY_FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const RETRY_MAX_BACKOFF: Duration = Duration::from_secs(10);

const _: () = assert!(RETRY_FIRST_BACKOFF.as_millis() <= RETRY_MAX_BACKOFF.as_millis());
const _: () = assert!(PEER_CONNECT_TIMEOUT.as_millis() <= PEER_STATUS_TIMEOUT.as_millis());
const _: () = assert!(CHECK_INTERVAL.as_millis() <= LIST_INTERVAL.as_millis());
