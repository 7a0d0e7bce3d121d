//! The registry of this safekeeper's timelines: opens them at startup, creates and
//! deletes them on request, and finds them for proposer and replication connections.
//!
//! Timelines live in `<data_dir>/<tenant_id>/<timeline_id>/` (ids as 32 hex digits). A
//! timeline that exists on disk but cannot be opened (a corrupt control file, committed
//! WAL missing) is kept as *broken*: it is logged, reported by status calls with its
//! reason, refuses proposers, and can be deleted; the daemon serves the others.
//!
//! *Invariant:* a timeline exists only once `CreateTimeline` made it (nothing here
//! creates one implicitly), and exists fully or not at all on disk: creation is a
//! rename of a complete directory (the storage's `create`), deletion a rename to a
//! `.tmp` name that startup removes (the storage's `remove_incomplete_creations`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use consensus::term_history::{Term, TermHistory};
use postgres_wal::Lsn;
use strata_ids::{TenantId, TenantTimelineId, TimelineId};

use crate::config::Config;
use crate::limits::{MAX_TIMELINES, SHUTDOWN_FLUSH_TIMEOUT};
use crate::metrics::Metrics;
use crate::offload::Offload;
use crate::replication::{ReplicationTimeline, ResolveError, TimelineSource};
use crate::storage::{durable, remove_incomplete_creations, StorageError, TimelineStorage};
use crate::timeline::{
    timeline_dir, NewTimeline, StartError, Timeline, TimelineContext, TimelineStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("timeline {0} not found on this safekeeper")]
    NotFound(TenantTimelineId),
    #[error("timeline {0} already exists with other parameters")]
    AlreadyExists(TenantTimelineId),
    #[error("timeline {id} cannot be opened: {reason}")]
    Broken {
        id: TenantTimelineId,
        reason: String,
    },
    #[error("invalid timeline parameters: {0}")]
    InvalidParameters(String),
    #[error("this safekeeper already holds {MAX_TIMELINES} timelines")]
    TooMany,
    #[error("timeline {id}: {source}")]
    Storage {
        id: TenantTimelineId,
        #[source]
        source: StorageError,
    },
    #[error("timeline {id}: {source}")]
    Start {
        id: TenantTimelineId,
        #[source]
        source: StartError,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing leftovers in {path}: {source}")]
    Cleanup {
        path: PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("the safekeeper is shutting down")]
    ShuttingDown,
    /// A bug: a task doing timeline work panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Debug, Clone)]
enum Entry {
    Open(Arc<Timeline>),
    Broken(String),
}

/// Every timeline of this safekeeper.
#[derive(Debug)]
pub struct Timelines {
    data_dir: PathBuf,
    context: TimelineContext,
    entries: Mutex<BTreeMap<TenantTimelineId, Entry>>,
    /// Serializes creations and deletions (rare), so that two of them never race on
    /// one directory; lookups do not take it.
    admin: tokio::sync::Mutex<()>,
    shutting_down: std::sync::atomic::AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map is only ever changed by single inserts and removes; a panic elsewhere
    // cannot leave it half-changed.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Run blocking file work (opening, creating, stopping timelines) off the runtime, in
/// the caller's span (a blocking task does not inherit it).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TimelineError> + Send + 'static,
) -> Result<T, TimelineError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .unwrap_or_else(|join| Err(TimelineError::Internal(join.to_string())))
}

impl Timelines {
    /// Open every timeline under the data directory, and start offloading each one's
    /// WAL when `offload` is given.
    pub async fn open(
        config: &Config,
        metrics: Metrics,
        offload: Option<Arc<Offload>>,
    ) -> Result<Arc<Timelines>, TimelineError> {
        let timelines = Arc::new(Timelines {
            data_dir: config.data_dir.clone(),
            context: TimelineContext {
                node_id: config.id,
                wal_retention_bytes: config.wal_retention_bytes,
                metrics,
                offload,
            },
            entries: Mutex::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        });
        let this = timelines.clone();
        blocking(move || this.open_all()).await?;
        let opened: Vec<Arc<Timeline>> = lock(&timelines.entries)
            .values()
            .filter_map(|entry| match entry {
                Entry::Open(timeline) => Some(timeline.clone()),
                Entry::Broken(_) => None,
            })
            .collect();
        for timeline in opened {
            timelines.start_offload(timeline);
        }
        Ok(timelines)
    }

    fn start_offload(&self, timeline: Arc<Timeline>) {
        if let Some(offload) = &self.context.offload {
            offload.spawn(timeline);
        }
    }

    fn open_all(&self) -> Result<(), TimelineError> {
        for (tenant_id, tenant_dir) in hex_subdirs::<TenantId>(&self.data_dir)? {
            remove_incomplete_creations(&tenant_dir).map_err(|source| TimelineError::Cleanup {
                path: tenant_dir.clone(),
                source,
            })?;
            for (timeline_id, dir) in hex_subdirs::<TimelineId>(&tenant_dir)? {
                let id = TenantTimelineId {
                    tenant_id,
                    timeline_id,
                };
                let entry = match self.start(id, &dir, TimelineStorage::open(&dir)) {
                    Ok(timeline) => Entry::Open(timeline),
                    Err(error) => {
                        tracing::error!(timeline = %id, %error, "cannot open timeline; it stays unavailable");
                        Entry::Broken(error.to_string())
                    }
                };
                lock(&self.entries).insert(id, entry);
            }
        }
        self.context
            .metrics
            .timelines
            .set(i64::try_from(self.len()).unwrap_or(i64::MAX));
        Ok(())
    }

    fn start(
        &self,
        id: TenantTimelineId,
        dir: &Path,
        storage: Result<TimelineStorage, StorageError>,
    ) -> Result<Arc<Timeline>, TimelineError> {
        let storage = storage.map_err(|source| TimelineError::Storage { id, source })?;
        Timeline::start(dir, storage, &self.context)
            .map_err(|source| TimelineError::Start { id, source })
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open timeline `id`.
    pub fn get(&self, id: TenantTimelineId) -> Result<Arc<Timeline>, TimelineError> {
        match lock(&self.entries).get(&id) {
            Some(Entry::Open(timeline)) => Ok(timeline.clone()),
            Some(Entry::Broken(reason)) => Err(TimelineError::Broken {
                id,
                reason: reason.clone(),
            }),
            None => Err(TimelineError::NotFound(id)),
        }
    }

    pub fn status(&self, id: TenantTimelineId) -> Result<TimelineStatus, TimelineError> {
        self.get(id).map(|timeline| timeline.status())
    }

    /// Every timeline's status, ordered by id. A broken timeline appears with its ids
    /// and its reason only (its parameters could not be read).
    pub fn list(&self) -> Vec<TimelineStatus> {
        let entries = lock(&self.entries).clone();
        entries
            .into_iter()
            .map(|(id, entry)| match entry {
                Entry::Open(timeline) => timeline.status(),
                Entry::Broken(reason) => TimelineStatus {
                    id,
                    system_id: 0,
                    pg_version: 0,
                    wal_segment_size: 0,
                    timeline_start_lsn: Lsn::INVALID,
                    term: Term(0),
                    term_history: TermHistory::default(),
                    flush_lsn: Lsn::INVALID,
                    commit_lsn: Lsn::INVALID,
                    failure: Some(reason),
                    offload: Default::default(),
                },
            })
            .collect()
    }

    /// Create a timeline, durably, and start it. Idempotent when the timeline exists
    /// with the same parameters.
    pub async fn create(
        self: &Arc<Self>,
        new: NewTimeline,
    ) -> Result<TimelineStatus, TimelineError> {
        let _admin = self.admin.lock().await;
        self.check_running()?;
        check_parameters(&new)?;
        match self.status(new.id) {
            Ok(status) if new.matches(&status) => return Ok(status),
            Ok(_) => return Err(TimelineError::AlreadyExists(new.id)),
            Err(TimelineError::NotFound(_)) => {}
            Err(other) => return Err(other),
        }
        if self.len() >= MAX_TIMELINES {
            return Err(TimelineError::TooMany);
        }
        let this = self.clone();
        let span = crate::logging::timeline_span(new.id);
        let timeline = blocking(move || {
            let _entered = span.enter();
            let dir = timeline_dir(&this.data_dir, new.id);
            let storage = TimelineStorage::create(&dir, new.initial_state());
            if let Err(StorageError::InvalidState(reason)) = &storage {
                return Err(TimelineError::InvalidParameters(reason.clone()));
            }
            this.start(new.id, &dir, storage)
        })
        .await?;
        let status = timeline.status();
        crate::logging::timeline_span(status.id).in_scope(|| {
            tracing::info!(start_lsn = %status.timeline_start_lsn, "timeline created");
        });
        lock(&self.entries).insert(status.id, Entry::Open(timeline.clone()));
        self.update_count();
        self.start_offload(timeline);
        Ok(status)
    }

    /// Stop a timeline (its streams end) and remove its directory.
    pub async fn delete(self: &Arc<Self>, id: TenantTimelineId) -> Result<(), TimelineError> {
        let _admin = self.admin.lock().await;
        self.check_running()?;
        let entry = lock(&self.entries)
            .remove(&id)
            .ok_or(TimelineError::NotFound(id))?;
        self.update_count();
        self.context.metrics.remove_timeline(id);
        if let Some(offload) = &self.context.offload {
            offload.metrics().remove_timeline(id);
        }
        let dir = timeline_dir(&self.data_dir, id);
        blocking(move || {
            if let Entry::Open(timeline) = entry {
                timeline.stop();
            }
            remove_timeline_dir(&dir)
        })
        .await?;
        tracing::info!(timeline = %id, "timeline deleted");
        Ok(())
    }

    /// Flush and stop every timeline (bounded by [`SHUTDOWN_FLUSH_TIMEOUT`]).
    pub async fn shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _admin = self.admin.lock().await;
        let timelines: Vec<Arc<Timeline>> = lock(&self.entries)
            .values()
            .filter_map(|entry| match entry {
                Entry::Open(timeline) => Some(timeline.clone()),
                Entry::Broken(_) => None,
            })
            .collect();
        let stopping = tokio::task::spawn_blocking(move || {
            // Sequential: each stop is one flush, and flushes of one disk do not gain
            // from running at once.
            for timeline in timelines {
                timeline.stop();
            }
        });
        match tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, stopping).await {
            Ok(Ok(())) => tracing::info!("every timeline flushed and stopped"),
            Ok(Err(join)) => tracing::error!(error = %join, "stopping timelines failed"),
            Err(_) => tracing::error!(
                timeout = ?SHUTDOWN_FLUSH_TIMEOUT,
                "timelines did not stop in time; unflushed WAL was never acknowledged"
            ),
        }
    }

    fn check_running(&self) -> Result<(), TimelineError> {
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(TimelineError::ShuttingDown);
        }
        Ok(())
    }

    fn update_count(&self) {
        let count = i64::try_from(self.len()).unwrap_or(i64::MAX);
        self.context.metrics.timelines.set(count);
    }
}

impl TimelineSource for Timelines {
    fn resolve(
        &self,
        tenant: Option<TenantId>,
        timeline: Option<TimelineId>,
    ) -> Result<Arc<dyn ReplicationTimeline>, ResolveError> {
        let entries = lock(&self.entries);
        let matching: Vec<(&TenantTimelineId, &Entry)> = entries
            .iter()
            .filter(|(id, _)| {
                tenant.is_none_or(|t| t == id.tenant_id)
                    && timeline.is_none_or(|t| t == id.timeline_id)
            })
            .collect();
        match matching.as_slice() {
            [] => Err(ResolveError::NotFound { tenant, timeline }),
            [(_, Entry::Open(timeline))] => Ok(timeline.clone()),
            [(_, Entry::Broken(reason))] => Err(ResolveError::Unavailable(reason.clone())),
            many => Err(ResolveError::Ambiguous { count: many.len() }),
        }
    }
}

/// What the storage does not check: ids of a Postgres cluster.
fn check_parameters(new: &NewTimeline) -> Result<(), TimelineError> {
    if new.system_id == 0 {
        return Err(TimelineError::InvalidParameters(
            "system_id 0 is not a PostgreSQL system identifier".into(),
        ));
    }
    // PG_VERSION_NUM has had six digits since PostgreSQL 10.
    if !(100_000..1_000_000).contains(&new.pg_version) {
        return Err(TimelineError::InvalidParameters(format!(
            "pg_version {} is not a PG_VERSION_NUM such as 150018",
            new.pg_version
        )));
    }
    Ok(())
}

/// Subdirectories of `dir` named by an id; anything else is skipped with a warning
/// (except plain files, such as the ports file, and `.tmp` leftovers).
fn hex_subdirs<T: std::str::FromStr>(dir: &Path) -> Result<Vec<(T, PathBuf)>, TimelineError> {
    let io = |source| TimelineError::Io {
        action: "listing",
        path: dir.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.file_type().map_err(io)?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        match name.to_str().and_then(|name| name.parse::<T>().ok()) {
            Some(id) => found.push((id, entry.path())),
            None if name.to_string_lossy().ends_with(durable::TEMP_SUFFIX) => {}
            None => {
                tracing::warn!(path = %entry.path().display(), "not a timeline directory; skipped")
            }
        }
    }
    Ok(found)
}

/// Rename the directory to its `.tmp` name first, so that a crash during removal leaves
/// a leftover that startup removes, never half a timeline.
fn remove_timeline_dir(dir: &Path) -> Result<(), TimelineError> {
    let name = dir
        .file_name()
        .map(|n| durable::temp_name(&n.to_string_lossy()))
        .unwrap_or_default();
    let doomed = durable::parent_of(dir).join(name);
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| TimelineError::Io {
            action,
            path,
            source,
        }
    };
    if doomed.exists() {
        durable::remove_dir_all(&doomed).map_err(io("removing", &doomed))?;
    }
    durable::rename_dir(dir, &doomed).map_err(io("renaming", dir))?;
    durable::remove_dir_all(&doomed).map_err(io("removing", &doomed))
}
