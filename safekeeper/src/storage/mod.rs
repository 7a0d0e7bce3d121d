//! Durable storage of a timeline: its control file and WAL segments.
//!
//! One [`TimelineStorage`] owns one (tenant, timeline) directory and implements
//! [`consensus::storage::AcceptorStorage`], the contract the acceptor is written
//! against. Everything here is synchronous `std::fs` I/O: the daemon runs it on a
//! blocking thread (one writer per timeline); readers may run anywhere, concurrently.
//! Nothing here locks the directory against a second process: one daemon owns a data
//! directory.
//!
//! # Public API (for the daemon, the replication server and peer recovery)
//!
//! - [`TimelineStorage::create`]`(dir, PersistentState)`: create a timeline directory
//!   explicitly and durably. It is built under `<dir>.tmp` and renamed into place, so
//!   after a crash the timeline either does not exist or is complete. Fails with
//!   [`StorageError::TimelineExists`] if `dir` exists, [`StorageError::InvalidState`]
//!   if the state is not one of a new timeline (commit LSN after the start, start LSN
//!   zero or not 8-aligned, malformed term history).
//! - [`TimelineStorage::open`]`(dir)`: verify the control file, find the end of valid
//!   WAL by decoding from the commit LSN's segment, and cut what follows it (see
//!   "Open" below). Fails with [`StorageError::TimelineNotFound`] if `dir` does not
//!   exist.
//! - The [`AcceptorStorage`](consensus::storage::AcceptorStorage) methods: `state`,
//!   `persist`, `write_wal`, `flush_wal`, `truncate_wal`, `write_lsn`, `flush_lsn`.
//!   `persist` refuses to change the id, segment size or start LSN, and a commit LSN
//!   above the flush LSN; `truncate_wal` refuses below the persisted commit LSN or
//!   above `write_lsn`, and must be given a record boundary.
//! - [`TimelineStorage::reader`] → [`WalReader`]: reads flushed WAL from the segment
//!   files while the writer appends: `read(&mut self, lsn, buf) -> io::Result<usize>`
//!   and `read_exact`. `Send`; clone one per connection (each keeps its current
//!   segment file open). It never returns bytes at or beyond the flush LSN; bound it
//!   by the commit LSN yourself when serving committed WAL. A reader of a storage that
//!   was dropped and reopened no longer sees the flush LSN move: take a new one.
//! - [`removal_horizon`]`(&RemovalHorizonInputs)` → LSN below which local WAL may go
//!   (with an object store: below the uploaded and remote-consistent LSNs too),
//!   and [`TimelineStorage::remove_segments_below`]`(lsn)` (`&self`, so the actor
//!   calls it on the running acceptor's storage), which never removes the
//!   segment holding `lsn`, nor the segments of the persisted commit LSN and of the
//!   flush LSN or anything after them.
//! - [`remove_incomplete_creations`]`(parent)`: delete `*.tmp` timeline directories
//!   left by a crash during `create` (the daemon calls it at startup before listing
//!   timelines; `create` also removes its own leftover).
//! - Errors: [`StorageError`] (`thiserror`). [`StorageError::is_disk_full`] is true for
//!   ENOSPC (`io::ErrorKind::StorageFull`) so the daemon can say "disk full".
//!   After an I/O error on the WAL path the storage refuses further WAL operations
//!   ([`StorageError::Poisoned`]): the page cache state is unknown after a failed
//!   write or fsync, so the timeline must be reopened, which re-derives everything
//!   from what is on disk. A control-file write that fails leaves the old state in
//!   force and the storage usable. Caveat: after a failed fsync Linux may keep the
//!   unwritten pages in the page cache marked clean, so a reopen in the same boot can
//!   read WAL that is not on disk; treat repeated fsync failures as fatal for the node.
//! - Crash-test failpoints: [`failpoint`], armed by
//!   `STRATA_FAILPOINTS=name,name@N,name=enospc`.
//!
//! # On-disk layout of a timeline directory
//!
//! - `safekeeper.control`: the [`PersistentState`](consensus::storage::PersistentState),
//!   see [`control_file`] for the byte format (magic `STRATASK`, version, body length,
//!   body, crc32c).
//! - WAL segments named as PostgreSQL names them with timeline id 1
//!   (`000000010000000000000003`), each exactly `wal_segment_size` bytes (pre-allocated
//!   with zeros). The segment holding the write position is named `<segment>.partial`;
//!   all earlier ones have their final name; there are none after it. Everything after
//!   the write position is zeros, so a decoder scanning the segments stops exactly at
//!   the end of the WAL, and WAL of an older term cut by a truncation can never be
//!   read back after newer WAL. Before the timeline start LSN the first segment holds
//!   zeros, not WAL.
//! - `*.tmp`: a file being written durably; removed on open.
//!
//! # Guarantees
//!
//! - `write_wal` appends exactly at `write_lsn` (no gaps, no overwrites: typed
//!   [`StorageError::NotAtEnd`]) and is not durable until `flush_wal` returns. Every
//!   appended byte is decoded first; bytes that are not valid WAL are not written
//!   ([`StorageError::InvalidWal`]) and appends are refused until `truncate_wal`.
//! - `flush_lsn` is the end of the last complete record that is durable. An
//!   `XLOG SWITCH` record ends, as in PostgreSQL, at the next segment start, so it
//!   counts only once its padding up to there has been appended.
//! - `persist` and `truncate_wal` are durable when they return; after `truncate_wal(l)`,
//!   `write_lsn == flush_lsn == l`.
//! - Open: bytes after the last complete record (a torn or unfinished record from
//!   before a crash) are zeroed durably during `open`, so the storage is writable at
//!   once at `write_lsn == flush_lsn`. We cut on open rather than refuse appends until
//!   the acceptor truncates because the zero-tail invariant above must hold before
//!   anything is appended, and the cut bytes never counted as flushed, so nothing
//!   acknowledged is lost. Complete records written but not synced before a process
//!   crash (still in the page cache) are kept and synced by open. Open refuses
//!   ([`StorageError::CommittedWalMissing`]) if the valid WAL ends below the
//!   persisted commit LSN, and then cuts nothing.
//!
//! # Durability points (every fsync, in `durable.rs` unless noted)
//!
//! - Control file replace: fsync of the temp file, rename, fsync of the directory.
//! - Timeline creation: the control file and the first segment are written durably
//!   inside `<dir>.tmp`, then the rename into place and an fsync of the parent.
//! - Segment pre-allocation: zeros written, fsync, rename from `.tmp`, directory fsync.
//! - `flush_wal`: one fdatasync of the segment being written (if written since).
//! - Segment switch: fdatasync of the finished segment, rename `.partial` → final and
//!   directory fsync, then pre-allocation of the next (so 4 fsyncs per segment).
//! - `truncate_wal`: zeroing + fdatasync of the cut segment, renames with directory
//!   fsyncs, removal of later segments and one directory fsync.
//! - Open: the same cut, plus fdatasync of every segment scanned and a directory fsync.
//! - Segment removal: unlinks and one directory fsync.

pub mod control_file;
pub mod durable;
mod error;
pub mod failpoint;
mod horizon;
mod reader;
pub mod segments;
mod timeline;
mod wal_store;

pub use control_file::{ControlFileError, CONTROL_FILE_NAME};
pub use error::StorageError;
pub use horizon::{removal_horizon, OffloadHorizon, RemovalHorizonInputs};
pub use reader::WalReader;
pub use timeline::{remove_incomplete_creations, TimelineStorage};

#[cfg(test)]
mod test_wal;
#[cfg(test)]
mod tests;
