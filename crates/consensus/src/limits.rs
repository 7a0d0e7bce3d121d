//! Every bound of the consensus protocol, in one place.

/// Most WAL bytes one `AppendRequest` carries (as Neon and the walsender do): large
/// enough to amortise a message, small enough to bound a message's memory.
pub const MAX_WAL_BYTES_PER_APPEND: usize = 128 * 1024;

/// Most entries in a term history. Each election adds one (a compute start costs two:
/// sync-safekeepers, then the primary), so this allows thousands of restarts while a
/// history stays a bounded part of a control file and of a vote response (16 bytes per
/// entry on the wire).
pub const MAX_TERM_HISTORY_ENTRIES: usize = 16 * 1024;

/// Most acceptors a proposer talks to. Timelines use 3 or 5; 15 leaves room for
/// membership changes while keeping per-acceptor loops trivially cheap.
pub const MAX_ACCEPTORS: usize = 15;

const _: () = assert!(
    MAX_WAL_BYTES_PER_APPEND as u64 <= u32::MAX as u64,
    "an append's length fits the u32 fields of the wire formats"
);
