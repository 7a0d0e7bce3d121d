//! Durable storage of a timeline: its control file and WAL segments.
//!
//! One [`TimelineStorage`] owns one (tenant, timeline) directory and implements
//! [`consensus::storage::AcceptorStorage`], the contract the acceptor is written
//! against. Everything here is synchronous `std::fs` I/O: the daemon runs it on a
//! blocking thread (one writer per timeline); readers may run anywhere, concurrently.
//!
//! # Public API (for the daemon, the replication server and peer recovery)
//!
//! - [`TimelineStorage::create`]`(dir, PersistentState)`: create a timeline directory
//!   explicitly and durably. It is built under `<dir>.tmp` and renamed into place, so
//!   after a crash the timeline either does not exist or is complete. Fails with
//!   [`StorageError::TimelineExists`] if `dir` exists.
//! - [`TimelineStorage::open`]`(dir)`: verify the control file, find the end of valid
//!   WAL by decoding from the commit LSN's segment, and repair the tail (see "Open"
//!   below). Fails with [`StorageError::TimelineNotFound`] if `dir` does not exist.
//! - The [`AcceptorStorage`](consensus::storage::AcceptorStorage) methods: `state`,
//!   `persist`, `write_wal`, `flush_wal`, `truncate_wal`, `write_lsn`, `flush_lsn`.
//! - [`TimelineStorage::reader`] → [`WalReader`]: a cheap, cloneable, `Send + Sync`
//!   handle that reads flushed WAL from the segment files while the writer appends
//!   (`read(lsn, buf) -> io::Result<usize>`). It never returns bytes beyond the flush
//!   LSN; bound it by the commit LSN yourself when serving committed WAL.
//! - [`removal_horizon`]`(&RemovalHorizonInputs)` → LSN below which local WAL may go,
//!   and [`TimelineStorage::remove_segments_below`]`(lsn)`, which never removes the
//!   segment holding `lsn` nor anything at or above the commit LSN's segment.
//! - [`remove_incomplete_creations`]`(parent)`: delete `*.tmp` timeline directories
//!   left by a crash during `create` (the daemon calls it at startup before listing
//!   timelines; `create` also removes its own leftover).
//! - Errors: [`StorageError`] (`thiserror`). [`StorageError::is_disk_full`] is true for
//!   ENOSPC (`io::ErrorKind::StorageFull`) so the daemon can say "disk full".
//!   After an I/O error on the WAL path the storage refuses further WAL operations
//!   ([`StorageError::Poisoned`]): the page cache state is unknown after a failed
//!   write or fsync, so the timeline must be reopened, which re-derives everything
//!   from what is on disk.
//! - Crash-test failpoints: [`failpoint`], armed by `STRATA_FAILPOINTS=name,name=enospc`.
//!
//! # On-disk layout of a timeline directory
//!
//! - `safekeeper.control`: the [`PersistentState`](consensus::storage::PersistentState),
//!   see [`control_file`] for the byte format (magic, version, body, crc32c).
//! - WAL segments named as PostgreSQL names them with timeline id 1
//!   (`000000010000000000000003`), each exactly `wal_segment_size` bytes (pre-allocated
//!   with zeros). The segment holding the write position is named `<segment>.partial`;
//!   all earlier ones have their final name. Everything after the write position is
//!   zeros, so a decoder scanning the segments stops exactly at the end of the WAL.
//! - `*.tmp`: a file being written durably; removed on open.
//!
//! # Guarantees
//!
//! - `write_wal` appends exactly at `write_lsn` (no gaps, no overwrites) and is not
//!   durable until `flush_wal` returns; `flush_lsn` is the end of the last complete
//!   record that is durable, found by decoding every appended byte.
//! - `persist` and `truncate_wal` are durable when they return.
//! - Open: bytes after the last complete record (a torn or unfinished record from
//!   before a crash) are zeroed durably during `open`, so the storage is writable at
//!   once at `write_lsn == flush_lsn`. Those bytes never counted as flushed, so nothing
//!   acknowledged is lost. Open refuses ([`StorageError::CommittedWalMissing`]) if the
//!   valid WAL ends below the persisted commit LSN, instead of truncating committed
//!   WAL.

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
pub use horizon::{removal_horizon, RemovalHorizonInputs};
pub use reader::WalReader;
pub use timeline::{remove_incomplete_creations, TimelineStorage};

#[cfg(test)]
mod test_wal;
#[cfg(test)]
mod tests;
