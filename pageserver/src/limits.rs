//! Every bound of the daemon (messages, queues, sizes, timeouts) in one place, so that a
//! reader sees what can grow and how far.

use std::time::Duration;

/// Most timelines one pageserver holds; each has an open RocksDB and tasks.
pub const MAX_TIMELINES: usize = 1024;

/// How many freezes' worth (`checkpoint_distance`) a timeline's open layer may hold
/// before a commit freezes it itself instead of leaving that to the layer task: bounds
/// the open layer when the layer task falls behind ingest.
pub const OPEN_LAYER_BACKLOG_FREEZES: u64 = 2;

/// After layer work (a freeze, an image layer) failed, the layer task waits this long
/// before trying again.
pub const LAYER_RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// Largest gRPC message the server decodes or encodes: a GetPages response of
/// [`MAX_BLOCKS_PER_GETPAGES_REQUEST`] pages, or an SLRU segment (32 pages), with room
/// for fields.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Blocks one GetPages request may ask for (the proto says 256).
pub const MAX_BLOCKS_PER_GETPAGES_REQUEST: usize = 256;

/// GetPages responses computed and waiting for the gRPC layer to send them on one
/// stream; when full, the stream stops reading requests.
pub const GETPAGES_RESPONSE_QUEUE_LEN: usize = 4;

/// Bytes of basebackup tar per streamed chunk (the proto says at most 256 KiB).
pub const BASEBACKUP_CHUNK_BYTES: usize = 256 * 1024;

/// Chunks of basebackup tar buffered between the writer thread and the stream: a slow
/// client holds the writer back instead of letting the tar pile up in memory.
pub const BASEBACKUP_QUEUE_CHUNKS: usize = 8;

/// HTTP/2 keepalive: a client whose host vanished without closing the connection is
/// noticed within interval + timeout.
pub const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for the gRPC and HTTP servers to finish their connections.
pub const SHUTDOWN_SERVERS_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for walreceivers and layer tasks to stop.
pub const SHUTDOWN_TASKS_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the process waits, at exit, for blocking work (a layer write, a read) still
/// running. None of it holds acknowledged state.
pub const SHUTDOWN_BLOCKING_TIMEOUT: Duration = Duration::from_secs(5);

// A full GetPages response fits a message, with 64 KiB for the fields.
const _: () = assert!(
    MAX_BLOCKS_PER_GETPAGES_REQUEST * postgres_wal::BLCKSZ + 64 * 1024 <= MAX_GRPC_MESSAGE_BYTES
);
const _: () = assert!(BASEBACKUP_CHUNK_BYTES + 1024 <= MAX_GRPC_MESSAGE_BYTES);
