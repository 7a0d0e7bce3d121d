//! Every bound of the daemon (queues, messages, timeouts) in one place, so that a reader
//! sees what can grow and how far, and the bounds that depend on each other are checked
//! together at compile time.

use std::time::Duration;

use consensus::limits::{MAX_TERM_HISTORY_ENTRIES, MAX_WAL_BYTES_PER_APPEND};

/// Largest gRPC message the server decodes or encodes: the largest of an append (its
/// WAL plus a few dozen bytes of fields) and a vote response or elected message with the
/// longest term history the protocol allows (an entry takes at most 24 bytes encoded).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 512 * 1024;

/// Inbound queue of one timeline's actor: proposer messages of every connection to the
/// timeline, waiting to be written. When full, the connections stop reading their gRPC
/// streams (HTTP/2 flow control then holds the proposers back). 64 full appends are
/// 8 MiB: enough to keep the disk busy between two fsyncs, bounded in memory.
pub const TIMELINE_QUEUE_LEN: usize = 64;

/// Replies waiting to be sent on one proposer connection. A proposer that does not read
/// its replies while it keeps sending fills this queue; the connection is then closed
/// rather than letting the timeline's actor wait for it (which would stall every other
/// connection of the timeline).
pub const CONNECTION_REPLY_QUEUE_LEN: usize = 256;

/// Most WAL bytes the actor writes before it flushes even if its queue is not empty, so
/// that a proposer sending faster than the disk syncs still gets acknowledgements (and
/// its commits progress) at least this often.
pub const MAX_UNFLUSHED_WAL_BYTES: u64 = 16 * 1024 * 1024;

/// How long a new proposer stream may take to send its greeting.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for each timeline's actor to flush and stop before the
/// daemon exits anyway (the WAL not flushed by then was never acknowledged).
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long shutdown waits for the gRPC, HTTP and replication servers to finish their
/// connections.
pub const SHUTDOWN_SERVERS_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 keepalive of proposer streams: a proposer whose host vanished without closing
/// the connection is noticed within interval + timeout, and its unflushed WAL flushed.
pub const GRPC_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most timelines one safekeeper opens; each has a thread, open files and queues.
pub const MAX_TIMELINES: usize = 1024;

/// Idle WAL readers kept per timeline for the replication server; each holds one
/// segment file open. More concurrent readers than this still work, opening files.
pub const MAX_POOLED_WAL_READERS: usize = 8;

/// Replies converted to protobuf and waiting for the gRPC layer to send them on one
/// stream. Small: the reply queue before it ([`CONNECTION_REPLY_QUEUE_LEN`]) is where
/// replies wait; this only decouples conversion from the socket.
pub const OUTBOUND_QUEUE_LEN: usize = 16;

// An append: its WAL plus at most 1 KiB of fields.
const _: () = assert!(MAX_WAL_BYTES_PER_APPEND + 1024 <= MAX_GRPC_MESSAGE_BYTES);
// A term history: each proto TermSwitch takes at most 24 bytes (two tags, two 10-byte
// varints, a length prefix of 2).
const _: () = assert!(MAX_TERM_HISTORY_ENTRIES * 24 + 1024 <= MAX_GRPC_MESSAGE_BYTES);
// A flush is forced before a burst outgrows memory, never before one append fits.
const _: () = assert!(MAX_UNFLUSHED_WAL_BYTES >= MAX_WAL_BYTES_PER_APPEND as u64);
