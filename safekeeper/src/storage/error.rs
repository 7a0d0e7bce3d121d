//! The errors of timeline storage, told apart by what the caller does about them.

use std::io;
use std::path::PathBuf;

use postgres_wal::decoder::WalDecodeError;
use postgres_wal::Lsn;

use super::control_file::ControlFileError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The file system is out of space (ENOSPC). Reported apart from other I/O errors
    /// so the daemon can say "disk full" and an operator can free space.
    #[error("disk full: cannot {action}: {source}")]
    DiskFull {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("control file {path}: {source}")]
    ControlFile {
        path: PathBuf,
        #[source]
        source: ControlFileError,
    },
    #[error("timeline directory {0} already exists")]
    TimelineExists(PathBuf),
    #[error("timeline directory {0} does not exist")]
    TimelineNotFound(PathBuf),
    /// A state the storage must not persist (it could not be opened again), or a change
    /// of a field fixed at creation.
    #[error("invalid timeline state: {0}")]
    InvalidState(String),
    /// An append that would leave a gap or overwrite WAL.
    #[error(
        "WAL append at {lsn}, but the WAL ends at {write_lsn}: gaps and overwrites are refused"
    )]
    NotAtEnd { lsn: Lsn, write_lsn: Lsn },
    /// Appended bytes are not valid WAL. Nothing of that append was written; appends
    /// are refused until the WAL is truncated.
    #[error("appended WAL is invalid ({source}); appends are refused until the WAL is truncated")]
    InvalidWal {
        #[source]
        source: WalDecodeError,
    },
    #[error("cannot truncate WAL at {lsn}: the WAL ends at {write_lsn}")]
    TruncateBeyondEnd { lsn: Lsn, write_lsn: Lsn },
    #[error("cannot truncate WAL at {lsn}: below {limit} ({what})")]
    TruncateBelowLimit {
        lsn: Lsn,
        limit: Lsn,
        what: &'static str,
    },
    /// On open: the valid WAL ends before the persisted commit LSN. Committed WAL is
    /// missing or corrupt; the storage refuses to open rather than truncate it.
    #[error("valid WAL ends at {valid_end} ({reason}), below the commit LSN {commit_lsn}: committed WAL is missing or corrupt")]
    CommittedWalMissing {
        valid_end: Lsn,
        commit_lsn: Lsn,
        reason: String,
    },
    #[error("unexpected WAL segment files in {dir}: {reason}")]
    SegmentLayout { dir: PathBuf, reason: String },
    /// An earlier write or fsync of WAL failed, after which the page cache may not
    /// match the disk (a failed fsync can drop dirty pages). Only reopening the
    /// timeline, which re-reads the disk, makes the storage usable again.
    #[error("WAL storage is unusable after an earlier I/O error ({0}); reopen the timeline")]
    Poisoned(String),
}

impl StorageError {
    /// True when the disk is full: the daemon reports it as such, and the operation can
    /// succeed once space is freed (after reopening, for WAL operations).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::DiskFull { .. })
    }

    /// Wrap an I/O error with what was being done, reporting ENOSPC as [`DiskFull`].
    ///
    /// [`DiskFull`]: StorageError::DiskFull
    pub(crate) fn io(action: impl Into<String>, source: io::Error) -> StorageError {
        let action = action.into();
        if source.kind() == io::ErrorKind::StorageFull {
            StorageError::DiskFull { action, source }
        } else {
            StorageError::Io { action, source }
        }
    }
}
