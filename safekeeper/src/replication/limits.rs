//! Every bound of the replication protocol server, in one place.

use std::time::Duration;

/// Largest startup packet accepted (length word included): PostgreSQL's
/// `MAX_STARTUP_PACKET_LENGTH`.
pub const MAX_STARTUP_PACKET_BYTES: usize = 10_000;

/// Largest regular frontend message accepted (type byte excluded, length word included).
/// Frontends send queries of a few dozen bytes and standby replies of 34 bytes; anything
/// this large is malformed or hostile, and the connection is closed.
pub const MAX_FRONTEND_MESSAGE_BYTES: usize = 64 * 1024;

/// Longest replication command text accepted (a `Query` of a replication connection).
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

/// Most startup parameters (name/value pairs) accepted in a startup packet.
pub const MAX_STARTUP_PARAMETERS: usize = 64;

/// Most WAL bytes carried by one XLogData message: PostgreSQL's `MAX_SEND_SIZE`
/// (`XLOG_BLCKSZ * 16`).
pub const MAX_WAL_CHUNK_BYTES: usize = 128 * 1024;

/// Longest identifier (slot or setting name) kept: `NAMEDATALEN - 1`; longer ones are
/// truncated, as PostgreSQL does.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// How long a client may take from connecting to sending its startup packet
/// (PostgreSQL's `authentication_timeout` default).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection may sit idle between commands before it is closed.
pub const IDLE_COMMAND_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// While streaming, a keepalive (`'k'`) is sent when nothing else was sent for this long,
/// well under a walreceiver's `wal_receiver_timeout / 2` (30 s by default), so that an idle
/// standby never has to ping us.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// While streaming, a client that sent nothing for this long is disconnected
/// (PostgreSQL's `wal_sender_timeout` default). At half of it a keepalive asking for a reply
/// is sent, as the walsender does.
pub const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one write to the client may block (a client that stopped reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most concurrent replication connections; further ones are refused with
/// `too_many_connections`.
pub const MAX_CONNECTIONS: usize = 256;

/// Longest message text put in an ErrorResponse (longer texts are cut).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

const _: () = assert!(MAX_QUERY_BYTES < MAX_FRONTEND_MESSAGE_BYTES);
const _: () = assert!(MAX_WAL_CHUNK_BYTES % 8192 == 0);
// A keepalive must go out before the client's own timeout and ours.
const _: () = assert!(KEEPALIVE_INTERVAL.as_secs() * 2 < REPLICATION_TIMEOUT.as_secs());
