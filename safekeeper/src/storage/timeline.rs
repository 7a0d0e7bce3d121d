//! [`TimelineStorage`]: a timeline directory (control file and WAL) as the acceptor's
//! [`AcceptorStorage`].

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use consensus::storage::{AcceptorStorage, PersistentState};
use postgres_wal::{Lsn, WalSegmentSize};

use super::control_file;
use super::durable::{self, TEMP_SUFFIX};
use super::error::StorageError;
use super::failpoint;
use super::reader::WalReader;
use super::wal_store::WalStore;

/// Durable storage of one (tenant, timeline); see the [module documentation](super).
#[derive(Debug)]
pub struct TimelineStorage {
    dir: PathBuf,
    state: PersistentState,
    wal: WalStore,
    span: tracing::Span,
}

fn span_for(state: &PersistentState) -> tracing::Span {
    tracing::info_span!(
        "timeline_storage",
        tenant_id = %state.id.tenant_id,
        timeline_id = %state.id.timeline_id
    )
}

/// The temporary name under which `dir` is built by [`TimelineStorage::create`].
fn creation_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(OsString::from).unwrap_or_default();
    name.push(TEMP_SUFFIX);
    durable::parent_of(dir).join(name)
}

fn segment_size(state: &PersistentState) -> Result<WalSegmentSize, StorageError> {
    WalSegmentSize::new(u64::from(state.wal_segment_size))
        .map_err(|e| StorageError::InvalidState(e.to_string()))
}

/// What a new timeline's state must satisfy beyond what every persisted state must.
fn validate_new(state: &PersistentState) -> Result<(), StorageError> {
    control_file::validate(state).map_err(StorageError::InvalidState)?;
    let start = state.timeline_start_lsn;
    if !start.is_valid() || start.align() != start {
        return Err(StorageError::InvalidState(format!(
            "timeline start LSN {start} must be a non-zero multiple of 8 (a record start)"
        )));
    }
    if state.commit_lsn > start {
        return Err(StorageError::InvalidState(format!(
            "commit LSN {} is after the timeline start {start}, where there is no WAL yet",
            state.commit_lsn
        )));
    }
    Ok(())
}

impl TimelineStorage {
    /// Create the timeline directory `dir` with `state` and an empty WAL starting at
    /// `state.timeline_start_lsn`. It is built under `<dir>.tmp` and renamed into
    /// place once complete, so after a crash the timeline either does not exist or is
    /// complete. Missing parent directories are created (durably).
    pub fn create(dir: &Path, state: PersistentState) -> Result<TimelineStorage, StorageError> {
        let span = span_for(&state);
        let _entered = span.enter();
        validate_new(&state)?;
        let size = segment_size(&state)?;
        if dir.exists() {
            return Err(StorageError::TimelineExists(dir.to_path_buf()));
        }
        let io = |action: &str, path: &Path| {
            let action = format!("{action} {}", path.display());
            move |e| StorageError::io(action, e)
        };
        let parent = durable::parent_of(dir);
        durable::create_dir_all(parent).map_err(io("create", parent))?;
        let temp = creation_dir(dir);
        if temp.exists() {
            tracing::info!(
                "removing {} left by an interrupted creation",
                temp.display()
            );
            durable::remove_dir_all(&temp).map_err(io("remove", &temp))?;
        }
        durable::create_dir(&temp).map_err(io("create", &temp))?;
        control_file::write_initial(&temp, &state)?;
        WalStore::create(&temp, size, state.timeline_start_lsn)?;
        failpoint::check(failpoint::CREATE_TIMELINE_BEFORE_RENAME).map_err(io("create", dir))?;
        durable::rename_dir(&temp, dir).map_err(io("rename into place", &temp))?;
        tracing::info!(start_lsn = %state.timeline_start_lsn, "created timeline in {}", dir.display());
        drop(_entered);
        Self::open(dir)
    }

    /// Open the timeline directory `dir`: verify the control file, find the end of the
    /// valid WAL and cut off anything after it (see the module documentation).
    pub fn open(dir: &Path) -> Result<TimelineStorage, StorageError> {
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(StorageError::TimelineNotFound(dir.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::TimelineNotFound(dir.to_path_buf()))
            }
            Err(e) => return Err(StorageError::io(format!("open {}", dir.display()), e)),
        }
        let state = control_file::read(dir)?;
        let span = span_for(&state);
        let wal = {
            let _entered = span.enter();
            let size = segment_size(&state)?;
            let wal = WalStore::open(dir, size, state.timeline_start_lsn, state.commit_lsn)?;
            tracing::info!(
                term = state.term.0,
                commit_lsn = %state.commit_lsn,
                flush_lsn = %wal.flush_lsn(),
                "opened timeline storage"
            );
            wal
        };
        Ok(TimelineStorage {
            dir: dir.to_path_buf(),
            state,
            wal,
            span,
        })
    }

    /// The timeline directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A reader of this timeline's flushed WAL, usable from other threads.
    pub fn reader(&self) -> WalReader {
        self.wal.reader()
    }

    /// Remove local WAL segments wholly below the segment holding `horizon` (from
    /// [`removal_horizon`](super::removal_horizon)). Never removes the segment holding
    /// the horizon, nor anything at or after the persisted commit LSN's or the flush
    /// LSN's segment, whatever `horizon` says. Returns the file names removed.
    ///
    /// Takes `&self` so that the owner of a running acceptor can call it through
    /// `Acceptor::storage`: the files it removes are below the persisted commit LSN's
    /// segment, which no write, truncation or open touches. Call it from the thread
    /// that owns the storage, like every other operation.
    pub fn remove_segments_below(&self, horizon: Lsn) -> Result<Vec<String>, StorageError> {
        let _entered = self.span.enter();
        self.wal
            .remove_segments_below(horizon.min(self.state.commit_lsn))
    }
}

impl AcceptorStorage for TimelineStorage {
    type Error = StorageError;

    fn state(&self) -> &PersistentState {
        &self.state
    }

    /// Replace the control file durably. Refuses to change the fields fixed at
    /// creation, and a commit LSN beyond the flushed WAL (the storage could not be
    /// opened again: open refuses WAL that ends below the commit LSN).
    fn persist(&mut self, state: &PersistentState) -> Result<(), StorageError> {
        let old = &self.state;
        if state.id != old.id
            || state.wal_segment_size != old.wal_segment_size
            || state.timeline_start_lsn != old.timeline_start_lsn
        {
            return Err(StorageError::InvalidState(
                "the timeline id, WAL segment size and start LSN cannot change".into(),
            ));
        }
        if state.commit_lsn > self.wal.flush_lsn() {
            return Err(StorageError::InvalidState(format!(
                "commit LSN {} is beyond the flushed WAL {}",
                state.commit_lsn,
                self.wal.flush_lsn()
            )));
        }
        control_file::write(&self.dir, state)?;
        self.state = state.clone();
        Ok(())
    }

    fn write_wal(&mut self, lsn: Lsn, bytes: &[u8]) -> Result<(), StorageError> {
        self.wal.write(lsn, bytes)
    }

    fn flush_wal(&mut self) -> Result<(), StorageError> {
        self.wal.flush()
    }

    /// Refuses to truncate below the persisted commit LSN (the acceptor's own check
    /// uses its in-memory one, which can only be higher).
    fn truncate_wal(&mut self, lsn: Lsn) -> Result<(), StorageError> {
        let _entered = self.span.enter();
        if lsn < self.state.commit_lsn {
            return Err(StorageError::TruncateBelowLimit {
                lsn,
                limit: self.state.commit_lsn,
                what: "the commit LSN",
            });
        }
        self.wal.truncate(lsn)
    }

    fn write_lsn(&self) -> Lsn {
        self.wal.write_lsn()
    }

    fn flush_lsn(&self) -> Lsn {
        self.wal.flush_lsn()
    }
}

/// Remove the `*.tmp` directories in `parent` that interrupted
/// [`TimelineStorage::create`] calls left; returns their paths. The daemon calls this
/// at startup, before it lists timelines.
pub fn remove_incomplete_creations(parent: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let action = || format!("list {}", parent.display());
    let mut removed = Vec::new();
    let entries = match fs::read_dir(parent) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        entries => entries.map_err(|e| StorageError::io(action(), e))?,
    };
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(action(), e))?;
        let is_temp = entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX);
        if is_temp && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let path = entry.path();
            durable::remove_dir_all(&path)
                .map_err(|e| StorageError::io(format!("remove {}", path.display()), e))?;
            tracing::info!("removed {} left by an interrupted creation", path.display());
            removed.push(path);
        }
    }
    Ok(removed)
}
