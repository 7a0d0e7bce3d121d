//! Every wait, retry and range of the local cluster in one place, with why it is what it
//! is. Each wait is bounded so that `strata up`, `down` and the tests fail with a message
//! instead of hanging.

use std::time::Duration;

/// How long a safekeeper may take from spawn to `/health` answering 200: binding three
/// listeners and opening its timelines (which scans the WAL from the commit LSN's
/// segment: a few segments at most).
pub const SAFEKEEPER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the pageserver may take from spawn to `/health` answering 200: binding its
/// listeners and opening its timelines' layer stores.
pub const PAGESERVER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the pageserver may take to exit after SIGTERM: it stops ingest and flushes
/// what it ingested.
pub const PAGESERVER_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `compute_ctl start` may take to report `running`: initdb and the import
/// into the pageserver on the first start, crash recovery of the local data directory
/// after a kill, or waiting for the pageserver and its basebackup for a new data
/// directory; plus the election on the safekeepers and Postgres accepting connections.
/// Longer than `compute_ctl`'s own bound on waiting for the pageserver (300 s) plus its
/// election timeout (60 s), so that it fails with its own message first.
pub const COMPUTE_START_TIMEOUT: Duration = Duration::from_secs(420);

/// How long `compute_ctl` may take to exit after SIGTERM: it stops Postgres with a fast
/// shutdown, whose shutdown checkpoint must be streamed to a quorum.
pub const COMPUTE_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a safekeeper may take to exit after SIGTERM: the daemon itself waits up to
/// 30 s for its timelines to flush and 10 s for its servers to drain
/// (`safekeeper/src/limits.rs`), so this must be longer than both.
pub const SAFEKEEPER_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a Postgres left without its `compute_ctl` may take to exit after a fast
/// shutdown request (SIGINT) before it is told to stop immediately (SIGQUIT).
pub const ORPHAN_POSTGRES_FAST_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the remains of a killed Postgres may take to go: its orphaned backends
/// after SIGKILL, and its postmaster's pid, which init may leave a zombie for a while
/// (about 2 s where tests run) and which Postgres takes for a live server until then.
pub const DEAD_POSTGRES_RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a process may take to disappear after SIGQUIT or SIGKILL (the kernel frees
/// it at once; this only covers a loaded machine).
pub const KILL_WAIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause between two probes of a process, a file or a port while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Connect and request timeouts of one `/health` probe or one gRPC status call, so that a
/// hung daemon costs `strata status` seconds, not minutes.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Ports of a new cluster are picked at random in this range, which lies below Linux's
/// default ephemeral range (32768–60999): a port chosen by the kernel for an outgoing
/// connection or for someone's `bind(0)` (every pg_harness server) can then never take a
/// cluster's port while its daemon is down.
pub const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Random ports tried before `strata up` gives up finding free ones for a new cluster.
pub const PORT_PICK_ATTEMPTS: usize = 2_000;

/// Most safekeepers `--safekeepers` accepts: each is a process with three ports, and a
/// quorum of more than a handful only makes a local cluster slower.
pub const MAX_SAFEKEEPERS: usize = 9;

/// Bytes read from the end of a log file to quote its last line in an error.
pub const LOG_TAIL_BYTES: u64 = 16 * 1024;
