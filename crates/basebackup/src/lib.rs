//! Data directories in and out of the pageserver's key space.
//!
//! # Basebackup
//!
//! [`write_basebackup`] streams a tar of a data directory that **stock PostgreSQL 15**
//! starts from, as of an LSN. The requested LSN is first resolved to X, the end of the
//! last record ending at or before it (`page_model::read::last_record`); the tar holds
//! the state after every record ending at or before X.
//!
//! Contents, in both modes:
//! - every directory `initdb` creates, `PG_VERSION` (root and per database), an empty
//!   `postgresql.conf` (a comment: `compute_ctl` appends the settings), a
//!   `postgresql.auto.conf`, `pg_hba.conf` trusting the local socket and loopback (as
//!   `initdb -A trust`), `pg_ident.conf`;
//! - every relation fork in the default and global tablespaces, split into 1 GiB
//!   segment files (an empty fork is an empty file), **except FSM forks** (never
//!   WAL-logged, so what the pageserver holds is stale; PostgreSQL rebuilds them).
//!   Unlogged relations (those with an init fork) ship their init fork and a main fork
//!   copied from it, and no VM, which is what PostgreSQL resets them to. Page
//!   checksums are recomputed for every page when `pg_control` says the cluster has
//!   data checksums;
//! - relation maps (`pg_filenode.map`), the CLOG and multixact SLRU segments, and
//!   `pg_twophase/<xid>` files with their CRC-32C appended.
//!
//! **Primary mode** (`standby = false`): `pg_wal` holds a real
//! `XLOG_CHECKPOINT_SHUTDOWN` record at X (just past the page header when X is a page
//! boundary), with `xl_prev` = the start of the last record, valid page headers and
//! CRC; `global/pg_control` says `DB_SHUTDOWNED`, `checkPoint` = that record,
//! `checkPointCopy` = its contents (the checkpoint fields tracked at X, `redo` = the
//! record, `oldestActiveXid` 0). PostgreSQL starts without recovery and writes its
//! first record at [`BasebackupInfo::compute_start_lsn`]; `compute_ctl` streams its WAL
//! from X, so the stream continues the timeline's WAL with the checkpoint record.
//!
//! **Standby mode** (`standby = true`): no WAL; `pg_control` says
//! `DB_IN_ARCHIVE_RECOVERY` with `checkPoint`/`checkPointCopy` = the last real
//! checkpoint record at or before X and `minRecoveryPoint` = X (the pages are already
//! as of X, so the standby is consistent only once it has replayed up to X), and a
//! `standby.signal` file. The standby streams WAL from a safekeeper from that
//! checkpoint's redo.
//!
//! The tar is written page by page through a buffer of [`STREAM_CHUNK`] bytes; no file
//! is held whole in memory. Output is deterministic: every entry has mode 0600/0700,
//! owner 0 and the checkpoint's time as mtime.
//!
//! # Import
//!
//! [`import_datadir_tar`] turns the tar of a freshly `initdb`'d, cleanly shut down
//! data directory (made by [`tar_datadir`]) into `(Key, Value)` images at the end of
//! its shutdown checkpoint record (see [`import`] for what is validated, skipped and
//! refused). The timeline starts there.
//!
//! # Not supported
//! Tablespaces other than the default and global ones, PostgreSQL versions other than
//! 15, non-default block sizes, `pg_commit_ts` (commit timestamps), logical
//! replication state and replication slots.

mod basebackup;
pub mod control;
pub mod import;
mod tar;
pub mod wal;

pub use crate::basebackup::{
    write_basebackup, BasebackupInfo, DATADIR_DIRS, PG_VERSION_FILE, RELSEG_SIZE, STREAM_CHUNK,
};
pub use crate::import::{import_datadir_tar, Import, ImportError};
pub use crate::tar::tar_datadir;

use page_model::read::ReadError;
use postgres_wal::controlfile::ControlFileError;
use postgres_wal::Lsn;

#[derive(Debug, thiserror::Error)]
pub enum BasebackupError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("writing the basebackup: {0}")]
    Io(#[from] std::io::Error),
    #[error("no record ends at or before {0}: the timeline has no WAL there")]
    NoRecord(Lsn),
    #[error("{what} is missing at {lsn}")]
    Missing { what: String, lsn: Lsn },
    #[error("stored pg_control: {0}")]
    Control(#[from] ControlFileError),
    #[error("shutdown checkpoint record: {0}")]
    Wal(#[from] wal::WalError),
    #[error("not supported: {0}")]
    Unsupported(String),
}
