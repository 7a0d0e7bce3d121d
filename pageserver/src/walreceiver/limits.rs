//! Every bound of the walreceiver, in one place. The replication connection's own
//! bounds (message size, connect and command timeouts) are `pg_replication::limits`.

use std::time::Duration;

/// Default `wal_stall_timeout`: a stream that delivered no WAL for this long is left
/// when another safekeeper reports a higher commit LSN. Safekeepers send a keepalive
/// every 10 s, so a dead connection is also noticed within about this long.
pub const DEFAULT_WAL_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Opening a gRPC connection to a safekeeper.
pub const SAFEKEEPER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One `TimelineStatus` call, connecting included. Short: the statuses of all
/// safekeepers are asked at once, and a slow one only means it is not chosen.
pub const STATUS_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest `TimelineStatus` answer: a term history of 16 Ki entries of at most 24
/// bytes, with its fields (the safekeeper's own message limit is 512 KiB).
pub const MAX_STATUS_MESSAGE_BYTES: usize = 512 * 1024;

/// Waiting before reconnecting: the first retry waits this long, each further one
/// twice as long, up to [`RECONNECT_BACKOFF_MAX`]. A stream that delivered WAL starts
/// again from the minimum.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A batch is committed after this many records...
pub const COMMIT_EVERY_RECORDS: usize = 100;
/// ...or once it holds this many bytes of values, whichever comes first (and at once
/// whenever no more WAL is waiting, so that an idle stream is durable and readable).
pub const COMMIT_EVERY_BYTES: usize = 8 * 1024 * 1024;

/// WAL messages (at most 128 KiB each) queued between the connection and the ingest
/// thread: 8 MiB. When full, the connection stops reading and TCP pushes back.
pub const WAL_QUEUE_CHUNKS: usize = 64;

/// Ending a stream politely (CopyDone, Terminate): a frozen safekeeper whose socket
/// no longer drains must not hold the switch to another one for long.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// `user` and `application_name` of the replication connection (the safekeeper logs
/// them and labels our standby status updates with the name).
pub const APPLICATION_NAME: &str = "pageserver";

const _: () = assert!(RECONNECT_BACKOFF_MIN.as_nanos() <= RECONNECT_BACKOFF_MAX.as_nanos());
const _: () = assert!(STATUS_CALL_TIMEOUT.as_nanos() < DEFAULT_WAL_STALL_TIMEOUT.as_nanos());
