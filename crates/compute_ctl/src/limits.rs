//! Every bound of `compute_ctl`, in one place: message sizes, queues, buffers, timeouts
//! and retry intervals. Bounds that depend on each other are checked together at
//! compile time at the bottom.

use std::time::Duration;

use consensus::limits::{MAX_ACCEPTORS, MAX_WAL_BYTES_PER_APPEND};

// ---- PostgreSQL replication protocol (the client in `replication`) ----

/// The message size limit and the connect and command timeouts of the replication
/// client live with it, in `pg_replication`.
pub use pg_replication::limits::{MAX_PG_MESSAGE_BYTES, PG_COMMAND_TIMEOUT, PG_CONNECT_TIMEOUT};

/// How often a standby status update goes to the walsender even when the commit LSN
/// did not move (it also goes at once when it moves, and when a keepalive asks). Well
/// below the default `wal_sender_timeout` (60 s), so the walsender never gives up on us.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// WAL streamed from PostgreSQL kept in memory for the safekeepers. Older WAL that a
/// lagging safekeeper needs is read again from the compute's `pg_wal` (the replication
/// slot keeps everything above the commit LSN there) or from a safekeeper that has it.
pub const WAL_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// Attempts to re-open the replication stream after it broke while PostgreSQL still
/// runs (a walsender restart), before `compute_ctl` gives up and stops the compute.
pub const MAX_REPLICATION_RECONNECTS: u32 = 10;

// ---- Safekeepers (gRPC) ----

/// Most safekeepers a timeline may name: the consensus protocol's own bound.
pub const MAX_SAFEKEEPERS: usize = MAX_ACCEPTORS;

/// Largest gRPC message exchanged with a safekeeper: an append (128 KiB of WAL plus
/// its fields), a `ReadWal` answer of the same size, or a vote response with the
/// longest term history (16 Ki entries of at most 24 bytes). The safekeeper's own
/// limit is 512 KiB; ours matches it.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 512 * 1024;

/// Opening a TCP connection to a safekeeper.
pub const SAFEKEEPER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// HTTP/2 keepalive towards safekeepers: a safekeeper whose host vanished without
/// closing the connection is noticed within interval + timeout and counted as down.
pub const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A unary call to a safekeeper (`TimelineStatus`, `CreateTimeline`, `ReadWal`).
pub const SAFEKEEPER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Reconnecting to a safekeeper: the first retry waits this long, each further one
/// twice as long, up to [`RECONNECT_BACKOFF_MAX`]. A connection that stayed up for
/// [`RECONNECT_BACKOFF_RESET`] starts again from the minimum.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
pub const RECONNECT_BACKOFF_RESET: Duration = Duration::from_secs(10);

/// Proposer messages queued for one safekeeper stream: 16 full appends (2 MiB) keep
/// a safekeeper busy between two fsyncs while bounding memory per connection.
pub const OUTBOUND_QUEUE_LEN: usize = 16;

/// Events queued for the proposer's driver (replies of every safekeeper, connection
/// changes, new WAL). Producers of replies wait when it is full; "new WAL" and "room
/// on a stream" hints are dropped then, as the backlog itself wakes the driver.
pub const EVENT_QUEUE_LEN: usize = 1024;

/// Heartbeat period: each streaming safekeeper gets an append at least this often,
/// carrying the commit LSN, and answers with its term, so an idle compute learns within
/// this period that a newer term fenced it.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// Before choosing its term, how long the proposer waits, once a quorum greeted, for
/// the other safekeepers' greetings (each may carry a higher term). A disconnected
/// safekeeper is waited for only this long.
pub const GREETING_GRACE: Duration = Duration::from_millis(300);

/// After a WAL read for a safekeeper failed (its source unreachable), that safekeeper
/// is not fed again until the next heartbeat tick, so a failing read is retried at the
/// heartbeat rate rather than on every event.
pub const WAL_READ_RETRY: Duration = HEARTBEAT_INTERVAL;

/// Default for `--election-timeout-secs`: how long an election (and sync-safekeepers)
/// may wait for a quorum of safekeepers before `compute_ctl` gives up.
pub const DEFAULT_ELECTION_TIMEOUT_SECS: u64 = 60;

/// Creating a new timeline: how long each safekeeper is retried. Short: a quorum is
/// enough, and a safekeeper missed here gets the timeline when it answers later.
pub const CREATE_TIMELINE_TIMEOUT: Duration = Duration::from_secs(5);

/// Looking at every safekeeper's timeline before an election (system id check).
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);

// ---- PostgreSQL processes and files ----

/// `pg_ctl start -w -t`: crash recovery of a large WAL tail can take a while.
pub const PG_START_TIMEOUT: Duration = Duration::from_secs(300);

/// `pg_ctl stop -w -t` (fast or immediate).
pub const PG_STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// `initdb`, and each `psql` call of the bootstrap.
pub const INITDB_TIMEOUT: Duration = Duration::from_secs(300);
pub const PSQL_TIMEOUT: Duration = Duration::from_secs(60);

/// After SIGTERM, once PostgreSQL has stopped: how long to wait for a quorum to hold
/// the last WAL it streamed (its shutdown checkpoint) before exiting anyway.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a running compute checks that its postmaster is alive.
pub const POSTMASTER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// WAL compared byte for byte with the donor's in the lineage check: the bytes just
/// below the elected start LSN. One page is enough to tell two histories apart that
/// ended at the same LSN (their last records differ).
pub const LINEAGE_COMPARE_BYTES: u64 = 8192;

/// Most WAL segments scanned to find the end of the compute's WAL (from its last
/// checkpoint): 4096 16 MiB segments is 64 GiB, far beyond `max_wal_size`.
pub const MAX_END_OF_WAL_SEGMENTS: u64 = 4096;

/// Largest state file (`strata_compute.json`) read from a data directory.
pub const MAX_STATE_FILE_BYTES: u64 = 1024 * 1024;

/// Most terms recorded as won by one data directory. Each start wins one; a data
/// directory that reached the limit refuses to start (its history would also fill the
/// safekeepers' term histories, whose limit is the same order).
pub const MAX_WON_TERMS: usize = 16 * 1024;

// ---- Pageserver (gRPC) ----

/// Largest gRPC message exchanged with the pageserver: a basebackup chunk is at most
/// 256 KiB (`proto/pageserver.proto`), a `GetPages` answer at most 256 pages of 8 KiB
/// (2 MiB) plus their framing.
pub const MAX_PAGESERVER_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Bytes of the data directory's tar per `ImportTimeline` message.
pub const IMPORT_CHUNK_BYTES: usize = 256 * 1024;

/// A unary call to the pageserver (`TimelineStatus`, `GetCapabilities`), and the
/// opening of a streamed one.
pub const PAGESERVER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A whole `ImportTimeline` or `GetBasebackup`: the pageserver stores or builds every
/// page of the data directory meanwhile.
pub const PAGESERVER_TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// How long `start` retries a pageserver that does not answer yet (it may be starting
/// beside us) before giving up.
pub const PAGESERVER_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a compute started from a basebackup waits for the pageserver to ingest the
/// WAL up to the elected start LSN (it streams it from the safekeepers).
pub const PAGESERVER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);

/// How often the pageserver's position is polled while waiting for it.
pub const PAGESERVER_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Largest file accepted from a basebackup tar: PostgreSQL's relation segments and WAL
/// segments are at most 1 GiB.
pub const MAX_TAR_ENTRY_BYTES: u64 = 1024 * 1024 * 1024;

/// Basebackup chunks queued between the gRPC stream and the thread unpacking them.
pub const UNPACK_QUEUE_CHUNKS: usize = 16;

const _: () = assert!(
    MAX_WAL_BYTES_PER_APPEND + 1024 <= MAX_GRPC_MESSAGE_BYTES,
    "an append and a ReadWal answer fit a gRPC message"
);
const _: () = assert!(
    consensus::limits::MAX_TERM_HISTORY_ENTRIES * 24 + 1024 <= MAX_GRPC_MESSAGE_BYTES,
    "a vote response with the longest history fits a gRPC message"
);
const _: () = assert!(
    MAX_PG_MESSAGE_BYTES >= 128 * 1024 + 64,
    "one XLogData of the walsender's largest size fits"
);
const _: () = assert!(
    WAL_BUFFER_BYTES >= 4 * MAX_WAL_BYTES_PER_APPEND,
    "the buffer holds several appends, so streaming to caught-up safekeepers never reads files"
);
const _: () = assert!(RECONNECT_BACKOFF_MIN.as_nanos() <= RECONNECT_BACKOFF_MAX.as_nanos());
