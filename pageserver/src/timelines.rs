//! The tenant manager: every tenant and timeline on this pageserver, on disk and open.
//!
//! Layout under the data directory:
//!
//! ```text
//! <data_dir>/tenants/<tenant_id>/timelines/<timeline_id>/timeline.json
//! <data_dir>/tenants/<tenant_id>/timelines/<timeline_id>/layers/      (the LayerStore)
//! <data_dir>/tenants/<tenant_id>/timelines/<timeline_id>/remote_index.json
//!     (with object storage: the copy of the last index acknowledged, see `remote`)
//! ```
//!
//! A timeline is created in a temporary directory (`.<timeline_id>.creating`) holding
//! its imported layer store and `timeline.json`, both durable, and renamed into place
//! (then the parent directory synced). So a timeline directory that exists is
//! complete; a leftover temporary directory is an interrupted creation, removed at
//! start, and the caller that did not get an answer retries.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use layer_store::{Entry, LayerStore, StoreConfig, StoreError};
use page_model::{Key, Value};
use postgres_wal::{Lsn, WalSegmentSize};
use serde::{Deserialize, Serialize};
use strata_ids::{TenantId, TenantTimelineId, TimelineId};

use crate::limits::MAX_TIMELINES;
use crate::metrics::Metrics;
use crate::remote::LOCAL_INDEX_FILE;
use crate::timeline::{decode_meta, encode_meta, Timeline, TimelineError, TimelineMeta};

/// `<data_dir>/tenants`.
pub const TENANTS_DIR: &str = "tenants";
const TIMELINES_DIR: &str = "timelines";
/// The timeline's creation parameters, in its directory.
pub const TIMELINE_FILE: &str = "timeline.json";
/// The timeline's layer store, in its directory.
pub const LAYERS_DIR: &str = "layers";
const CREATING_SUFFIX: &str = ".creating";

#[derive(Debug, thiserror::Error)]
pub enum TimelinesError {
    #[error("tenant {0} not found")]
    TenantNotFound(TenantId),
    #[error("timeline {0} not found")]
    TimelineNotFound(TenantTimelineId),
    #[error("timeline {id} already exists with system id {system_id} and start LSN {start_lsn}")]
    AlreadyExists {
        id: TenantTimelineId,
        system_id: u64,
        start_lsn: Lsn,
    },
    #[error("this pageserver already holds {MAX_TIMELINES} timelines")]
    TooManyTimelines,
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadTimelineFile { path: PathBuf, reason: String },
    #[error("timeline {id}: {source}")]
    Timeline {
        id: TenantTimelineId,
        #[source]
        source: TimelineError,
    },
    #[error("timeline {id}: layer store: {source}")]
    Store {
        id: TenantTimelineId,
        #[source]
        source: StoreError,
    },
}

fn io_error(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TimelinesError {
    let path = path.to_owned();
    move |source| TimelinesError::Io {
        context,
        path,
        source,
    }
}

/// `timeline.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineFile {
    system_id: u64,
    pg_version: u32,
    wal_segment_size: u64,
    start_lsn: u64,
    data_checksums: bool,
}

impl TimelineFile {
    fn from_meta(meta: &TimelineMeta) -> TimelineFile {
        TimelineFile {
            system_id: meta.system_id,
            pg_version: meta.pg_version,
            wal_segment_size: meta.wal_segment_size.bytes(),
            start_lsn: meta.start_lsn.0,
            data_checksums: meta.data_checksums,
        }
    }

    fn into_meta(self, path: &Path) -> Result<TimelineMeta, TimelinesError> {
        let wal_segment_size = WalSegmentSize::new(self.wal_segment_size).map_err(|e| {
            TimelinesError::BadTimelineFile {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(TimelineMeta {
            system_id: self.system_id,
            pg_version: self.pg_version,
            wal_segment_size,
            start_lsn: Lsn(self.start_lsn),
            data_checksums: self.data_checksums,
        })
    }
}

/// What the daemon does with every timeline opened or created (start its walreceiver
/// and layer task).
pub type OnOpen = Box<dyn Fn(&Arc<Timeline>) + Send + Sync>;

/// Every tenant and its open timelines.
pub struct Timelines {
    data_dir: PathBuf,
    root: PathBuf,
    checkpoint_distance: u64,
    metrics: Metrics,
    tenants: RwLock<BTreeMap<TenantId, BTreeMap<TimelineId, Arc<Timeline>>>>,
    /// Serialises creations, so two imports of one timeline cannot race to rename.
    creating: Mutex<()>,
    on_open: OnOpen,
}

impl std::fmt::Debug for Timelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timelines")
            .field("root", &self.root)
            .field("timelines", &self.len())
            .finish()
    }
}

/// Whether [`Timelines::create_timeline`] made the timeline or found it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    Existing,
}

impl Timelines {
    /// Opens every timeline under `<data_dir>/tenants` (blocking: it opens stores).
    /// `checkpoint_distance` is each layer store's freeze size.
    pub fn open(
        data_dir: &Path,
        checkpoint_distance: u64,
        metrics: Metrics,
        on_open: OnOpen,
    ) -> Result<Timelines, TimelinesError> {
        let root = data_dir.join(TENANTS_DIR);
        std::fs::create_dir_all(&root).map_err(io_error("creating", &root))?;
        let timelines = Timelines {
            data_dir: data_dir.to_owned(),
            root,
            checkpoint_distance,
            metrics,
            tenants: RwLock::new(BTreeMap::new()),
            creating: Mutex::new(()),
            on_open,
        };
        let mut opened = Vec::new();
        for tenant_id in list_ids::<TenantId>(&timelines.root)? {
            let dir = timelines.tenant_dir(tenant_id).join(TIMELINES_DIR);
            remove_interrupted_creations(&dir)?;
            let mut tenant = BTreeMap::new();
            for timeline_id in list_ids::<TimelineId>(&dir)? {
                let id = TenantTimelineId {
                    tenant_id,
                    timeline_id,
                };
                let _span = crate::logging::timeline_span(id).entered();
                let timeline =
                    Arc::new(timelines.open_timeline(id, &dir.join(timeline_id.to_string()))?);
                tracing::info!(
                    last_record_lsn = %timeline.last_record_lsn(),
                    "timeline opened"
                );
                tenant.insert(timeline_id, timeline.clone());
                opened.push(timeline);
            }
            timelines.write_map().insert(tenant_id, tenant);
        }
        timelines.metrics.timelines.set(opened.len() as i64);
        for timeline in &opened {
            (timelines.on_open)(timeline);
        }
        Ok(timelines)
    }

    fn read_map(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<TenantId, BTreeMap<TimelineId, Arc<Timeline>>>>
    {
        // Poisoning only means a panic elsewhere while holding the lock; the map is
        // only ever replaced entry by entry, so it is consistent.
        self.tenants
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_map(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<TenantId, BTreeMap<TimelineId, Arc<Timeline>>>>
    {
        self.tenants
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tenant_dir(&self, tenant_id: TenantId) -> PathBuf {
        self.root.join(tenant_id.to_string())
    }

    fn store_config(&self) -> StoreConfig {
        StoreConfig {
            freeze_bytes: self.checkpoint_distance,
        }
    }

    fn open_timeline(&self, id: TenantTimelineId, dir: &Path) -> Result<Timeline, TimelinesError> {
        let path = dir.join(TIMELINE_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_error("reading", &path))?;
        let file: TimelineFile =
            serde_json::from_str(&text).map_err(|e| TimelinesError::BadTimelineFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let meta = file.into_meta(&path)?;
        let store = LayerStore::open(&dir.join(LAYERS_DIR), self.store_config())
            .map_err(|source| TimelinesError::Store { id, source })?;
        Timeline::open(
            id,
            dir.to_owned(),
            meta,
            store,
            self.checkpoint_distance,
            self.metrics.timeline(id),
        )
        .map_err(|source| TimelinesError::Timeline { id, source })
    }

    /// The daemon's data directory (scratch files such as import spools go here, on
    /// the same disk as the timelines).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn len(&self) -> usize {
        self.read_map().values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates the tenant's directory, durably (idempotent). Blocking.
    pub fn create_tenant(&self, tenant_id: TenantId) -> Result<(), TimelinesError> {
        let dir = self.tenant_dir(tenant_id).join(TIMELINES_DIR);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
            // The tenant is acknowledged to the caller: its directories' entries must
            // survive a crash, so each parent is synced.
            sync_dir(&self.tenant_dir(tenant_id))?;
            sync_dir(&self.root)?;
        }
        self.write_map().entry(tenant_id).or_default();
        Ok(())
    }

    pub fn get(&self, id: TenantTimelineId) -> Result<Arc<Timeline>, TimelinesError> {
        let map = self.read_map();
        let tenant = map
            .get(&id.tenant_id)
            .ok_or(TimelinesError::TenantNotFound(id.tenant_id))?;
        tenant
            .get(&id.timeline_id)
            .cloned()
            .ok_or(TimelinesError::TimelineNotFound(id))
    }

    /// Every timeline, ordered by (tenant, timeline).
    pub fn list(&self) -> Vec<Arc<Timeline>> {
        self.read_map()
            .values()
            .flat_map(|tenant| tenant.values().cloned())
            .collect()
    }

    /// Creates a timeline whose state at `meta.start_lsn` is `values` (an imported data
    /// directory), durably, and opens it. Blocking. A timeline that exists with the same
    /// system id and start LSN is returned as it is (a retried import); otherwise
    /// [`TimelinesError::AlreadyExists`]. Creates the tenant if needed.
    pub fn create_timeline(
        &self,
        id: TenantTimelineId,
        meta: TimelineMeta,
        values: Vec<(Key, Value)>,
    ) -> Result<(Arc<Timeline>, Created), TimelinesError> {
        let _creating = self
            .creating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(existing) = self.get(id) {
            let m = existing.meta();
            if m.system_id == meta.system_id && m.start_lsn == meta.start_lsn {
                return Ok((existing, Created::Existing));
            }
            return Err(TimelinesError::AlreadyExists {
                id,
                system_id: m.system_id,
                start_lsn: m.start_lsn,
            });
        }
        let entries: Vec<Entry> = values
            .into_iter()
            .map(|(key, value)| Entry {
                key: key.encode(),
                lsn: meta.start_lsn.0,
                will_init: value.will_init(),
                value: value.encode(),
            })
            .collect();
        let start_lsn = meta.start_lsn;
        let timeline = self.build(id, &meta, |temp| {
            let store = LayerStore::open(&temp.join(LAYERS_DIR), self.store_config())
                .map_err(|source| TimelinesError::Store { id, source })?;
            // Durable when it returns (the store syncs its log); the store is closed
            // (dropped) before the rename so that no file of it is open under the
            // temporary path.
            store
                .put_batch(&entries, &encode_meta(start_lsn))
                .map_err(|source| TimelinesError::Store { id, source })
        })?;
        tracing::info!(
            tenant_id = %id.tenant_id, timeline_id = %id.timeline_id,
            start_lsn = %meta.start_lsn, system_id = meta.system_id,
            "timeline created"
        );
        (self.on_open)(&timeline);
        Ok((timeline, Created::New))
    }

    /// Creates the timeline from object storage: `layers` (name, size) listed but not
    /// on local disk, `last_record_lsn` at `lsn`, and `local_index` (the index it comes
    /// from) as the copy of the last index. Durable and atomic as
    /// [`Timelines::create_timeline`]. An existing timeline is returned as it is.
    /// Blocking.
    pub fn restore_timeline(
        &self,
        id: TenantTimelineId,
        meta: TimelineMeta,
        layers: &[(String, u64)],
        lsn: Lsn,
        local_index: &[u8],
    ) -> Result<Arc<Timeline>, TimelinesError> {
        let _creating = self
            .creating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(existing) = self.get(id) {
            return Ok(existing);
        }
        let timeline = self.build(id, &meta, |temp| {
            // Durable when it returns; closed (dropped) before the rename.
            LayerStore::create_from_layers(
                &temp.join(LAYERS_DIR),
                self.store_config(),
                layers,
                &encode_meta(lsn),
            )
            .map_err(|source| TimelinesError::Store { id, source })?;
            write_durably(&temp.join(LOCAL_INDEX_FILE), local_index)
        })?;
        (self.on_open)(&timeline);
        Ok(timeline)
    }

    /// Builds a timeline directory in a temporary directory (`fill` writes its layer
    /// store, then `timeline.json` is written), publishes it with a rename, opens and
    /// registers it. Called with `creating` held, for an id not registered.
    fn build(
        &self,
        id: TenantTimelineId,
        meta: &TimelineMeta,
        fill: impl FnOnce(&Path) -> Result<(), TimelinesError>,
    ) -> Result<Arc<Timeline>, TimelinesError> {
        if self.len() >= MAX_TIMELINES {
            return Err(TimelinesError::TooManyTimelines);
        }
        self.create_tenant(id.tenant_id)?;
        let parent = self.tenant_dir(id.tenant_id).join(TIMELINES_DIR);
        let temp = parent.join(format!(".{}{CREATING_SUFFIX}", id.timeline_id));
        remove_dir_if_exists(&temp)?;
        std::fs::create_dir(&temp).map_err(io_error("creating", &temp))?;
        fill(&temp)?;
        write_durably(
            &temp.join(TIMELINE_FILE),
            &serde_json::to_vec_pretty(&TimelineFile::from_meta(meta)).map_err(|e| {
                TimelinesError::BadTimelineFile {
                    path: temp.join(TIMELINE_FILE),
                    reason: e.to_string(),
                }
            })?,
        )?;
        // The directory's entries (layers/, timeline.json) must be durable before the
        // rename publishes the timeline, and the rename itself before we acknowledge.
        sync_dir(&temp)?;
        let dir = parent.join(id.timeline_id.to_string());
        std::fs::rename(&temp, &dir).map_err(io_error("renaming into place", &dir))?;
        sync_dir(&parent)?;
        let timeline = Arc::new(self.open_timeline(id, &dir)?);
        self.write_map()
            .entry(id.tenant_id)
            .or_default()
            .insert(id.timeline_id, timeline.clone());
        self.metrics.timelines.set(self.len() as i64);
        Ok(timeline)
    }
}

/// Every timeline in the data directory `data_dir` (before it is opened). Blocking.
pub fn local_timelines(data_dir: &Path) -> Result<Vec<TenantTimelineId>, TimelinesError> {
    let root = data_dir.join(TENANTS_DIR);
    let mut ids = Vec::new();
    for tenant_id in list_ids::<TenantId>(&root)? {
        let dir = root.join(tenant_id.to_string()).join(TIMELINES_DIR);
        for timeline_id in list_ids::<TimelineId>(&dir)? {
            ids.push(TenantTimelineId {
                tenant_id,
                timeline_id,
            });
        }
    }
    Ok(ids)
}

fn timeline_dir(data_dir: &Path, id: TenantTimelineId) -> PathBuf {
    data_dir
        .join(TENANTS_DIR)
        .join(id.tenant_id.to_string())
        .join(TIMELINES_DIR)
        .join(id.timeline_id.to_string())
}

/// The `last_record_lsn` of a timeline of `data_dir` that is not open (its store is
/// opened and closed). Blocking.
pub fn local_last_record_lsn(
    data_dir: &Path,
    id: TenantTimelineId,
    checkpoint_distance: u64,
) -> Result<Lsn, TimelinesError> {
    let config = StoreConfig {
        freeze_bytes: checkpoint_distance,
    };
    let store = LayerStore::open(&timeline_dir(data_dir, id).join(LAYERS_DIR), config)
        .map_err(|source| TimelinesError::Store { id, source })?;
    let meta = store
        .meta()
        .map_err(|source| TimelinesError::Store { id, source })?
        .ok_or(TimelinesError::Timeline {
            id,
            source: TimelineError::MissingMeta,
        })?;
    decode_meta(&meta).map_err(|source| TimelinesError::Timeline { id, source })
}

/// Takes a timeline of `data_dir` that is not open out of it: renamed to the name of
/// an interrupted creation (durably), which the next open removes. Blocking.
pub fn discard_timeline(data_dir: &Path, id: TenantTimelineId) -> Result<(), TimelinesError> {
    let dir = timeline_dir(data_dir, id);
    let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let discarded = parent.join(format!(".{}{CREATING_SUFFIX}", id.timeline_id));
    remove_dir_if_exists(&discarded)?;
    std::fs::rename(&dir, &discarded).map_err(io_error("discarding", &dir))?;
    sync_dir(&parent)
}

/// Directory entries named by an id (others are ignored, with a warning).
fn list_ids<T: std::str::FromStr>(dir: &Path) -> Result<Vec<T>, TimelinesError> {
    let mut ids = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(io_error("listing", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error("listing", dir))?;
        let name = entry.file_name();
        match name.to_str().and_then(|n| n.parse::<T>().ok()) {
            Some(id) => ids.push(id),
            None if name.to_string_lossy().ends_with(CREATING_SUFFIX) => {}
            None => {
                tracing::warn!(path = %entry.path().display(), "not a tenant or timeline; ignored")
            }
        }
    }
    Ok(ids)
}

fn remove_interrupted_creations(dir: &Path) -> Result<(), TimelinesError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("listing", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error("listing", dir))?;
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(CREATING_SUFFIX)
        {
            tracing::warn!(path = %entry.path().display(), "removing an interrupted timeline creation");
            remove_dir_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_dir_if_exists(path: &Path) -> Result<(), TimelinesError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("removing", path)(e)),
    }
}

/// Write to a temporary name, fsync, rename over `path`, fsync the directory.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), TimelinesError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io_error("creating", &tmp))?;
    file.write_all(bytes).map_err(io_error("writing", &tmp))?;
    // The content must be on disk before the rename can expose it under its name.
    file.sync_all().map_err(io_error("syncing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error("renaming", path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), TimelinesError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use page_model::ingest::Batch;
    use page_model::read::VersionSource;

    fn meta() -> TimelineMeta {
        TimelineMeta {
            system_id: 7,
            pg_version: 15,
            wal_segment_size: WalSegmentSize::new(16 << 20).unwrap(),
            start_lsn: Lsn(0x0100_0028),
            data_checksums: true,
        }
    }

    fn open(dir: &Path) -> Timelines {
        Timelines::open(dir, 1 << 20, Metrics::new().unwrap(), Box::new(|_| {})).unwrap()
    }

    #[test]
    fn created_timelines_come_back_where_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let id = TenantTimelineId {
            tenant_id: TenantId(1),
            timeline_id: TimelineId(2),
        };
        let image = Value::Image(Bytes::from_static(b"control"));
        {
            let timelines = open(dir.path());
            let (timeline, created) = timelines
                .create_timeline(id, meta(), vec![(Key::ControlFile, image.clone())])
                .unwrap();
            assert_eq!(created, Created::New);
            assert_eq!(timeline.last_record_lsn(), meta().start_lsn);
            // An empty batch still moves the resume point (records without effects).
            timeline.commit(Batch::new(), Lsn(0x0100_0100)).unwrap();
            assert!(matches!(
                timeline.commit(Batch::new(), Lsn(0x0100_0000)),
                Err(TimelineError::LsnBackwards { .. })
            ));
            // A retried import is answered with the timeline; another one is refused.
            let (_, again) = timelines.create_timeline(id, meta(), Vec::new()).unwrap();
            assert_eq!(again, Created::Existing);
            let other = TimelineMeta {
                system_id: 8,
                ..meta()
            };
            assert!(matches!(
                timelines.create_timeline(id, other, Vec::new()),
                Err(TimelinesError::AlreadyExists { .. })
            ));
        }
        // An interrupted creation left behind is removed at start.
        let leftover = dir
            .path()
            .join(TENANTS_DIR)
            .join(id.tenant_id.to_string())
            .join(TIMELINES_DIR)
            .join(format!(".{}{CREATING_SUFFIX}", TimelineId(3)));
        std::fs::create_dir_all(&leftover).unwrap();

        let timelines = open(dir.path());
        assert!(!leftover.exists());
        assert_eq!(timelines.len(), 1);
        let timeline = timelines.get(id).unwrap();
        assert_eq!(timeline.meta(), &meta());
        assert_eq!(timeline.last_record_lsn(), Lsn(0x0100_0100));
        let versions = timeline
            .versions(&Key::ControlFile, Lsn::INVALID, Lsn(0x0100_0100))
            .unwrap();
        assert_eq!(versions, vec![(meta().start_lsn, image)]);
        let unknown = TenantTimelineId {
            tenant_id: TenantId(9),
            ..id
        };
        assert!(matches!(
            timelines.get(unknown),
            Err(TimelinesError::TenantNotFound(_))
        ));
    }

    #[tokio::test]
    async fn lsn_waits_end_on_arrival_timeout_or_stop() {
        use crate::timeline::{IngestState, WaitLsnError};
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let timelines = open(dir.path());
        let id = TenantTimelineId {
            tenant_id: TenantId(1),
            timeline_id: TimelineId(2),
        };
        let (timeline, _) = timelines.create_timeline(id, meta(), Vec::new()).unwrap();
        let start = meta().start_lsn;
        let short = Duration::from_millis(50);
        timeline.wait_lsn(start, short).await.unwrap();
        let later = Lsn(start.0 + 0x100);
        assert!(matches!(
            timeline.wait_lsn(later, short).await,
            Err(WaitLsnError::Timeout { .. })
        ));
        let waiter = {
            let timeline = timeline.clone();
            tokio::spawn(async move { timeline.wait_lsn(later, Duration::from_secs(30)).await })
        };
        let committer = timeline.clone();
        tokio::task::spawn_blocking(move || committer.commit(Batch::new(), later))
            .await
            .unwrap()
            .unwrap();
        waiter.await.unwrap().unwrap();
        timeline.set_ingest_state(IngestState::Stopped("no redo for the record at 0/1".into()));
        let started = std::time::Instant::now();
        assert!(matches!(
            timeline
                .wait_lsn(Lsn(later.0 + 8), Duration::from_secs(30))
                .await,
            Err(WaitLsnError::Stopped { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
        // What was ingested stays readable.
        timeline.wait_lsn(later, short).await.unwrap();
    }
}
