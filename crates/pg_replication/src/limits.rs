//! Every bound of the replication client, in one place.

use std::time::Duration;

/// Largest message we accept from the server. A walsender (PostgreSQL's or a
/// safekeeper's) sends at most `MAX_SEND_SIZE` (16 WAL pages = 128 KiB) of WAL per
/// `XLogData`; every other message of a replication connection is small. A larger
/// length is a protocol error, never an allocation.
pub const MAX_PG_MESSAGE_BYTES: usize = 1024 * 1024;

/// Connecting to the server and getting through authentication.
pub const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A replication command (`IDENTIFY_SYSTEM`, `START_REPLICATION`) and its answer, and
/// each write to the server.
pub const PG_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

const _: () = assert!(
    MAX_PG_MESSAGE_BYTES >= 128 * 1024 + 64,
    "one XLogData of the walsender's largest size fits"
);
