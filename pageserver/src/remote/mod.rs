//! Tiering to object storage (docs/pageserver.md, "Object storage"): every layer file a
//! timeline freezes or writes is uploaded, then an index listing them ([`index`]);
//! `remote_consistent_lsn` moves only when the store has acknowledged the index that
//! covers it ([`upload`]). At start, a timeline the data directory lacks, or holds
//! behind the store's newest index, is restored from that index ([`restore`]), its
//! layers fetched only when read ([`Fetcher`]); local disk is a cache with a budget
//! ([`eviction`]).
//!
//! **Generations.** Each tenant's attachment to this pageserver has a generation,
//! claimed at start (the next number, with `put_if_absent` on
//! `tenants/<t>/generations/<g>`) or assigned by configuration. Every object the
//! pageserver writes carries its generation, it never writes an object of another
//! generation, and an attach reads the newest index whose generation is not above its
//! own. So an older attachment still running (a split brain) and a newer one never
//! overwrite each other. The only objects deleted are layer objects of the pageserver's
//! own generation that no index references (its own crashed uploads, with an assigned
//! generation); other generations' objects are left alone.
//!
//! **The local copy of the index.** Each timeline directory holds `remote_index.json`,
//! a copy of the last index this pageserver had acknowledged (or restored from),
//! written durably after the store acknowledged it. It says which local layers are in
//! object storage and under which generation: the fetcher downloads from there, the
//! eviction task evicts only those, and after a restart they are not uploaded again.

pub mod eviction;
pub mod failpoint;
pub mod index;
pub mod limits;
pub mod metrics;
pub mod restore;
pub mod upload;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use layer_store::LayerFetcher;
use prometheus::Registry;
use remote_storage::layout::{self, Generation};
use remote_storage::{MeteredStorage, ObjectMeta, RemoteError, RemoteStorage, RemoteStorageConfig};
use strata_ids::{TenantId, TenantTimelineId, TimelineId};
use tokio::sync::{watch, Notify};

use crate::timeline::Timeline;
use crate::timelines::{write_durably, Timelines, TimelinesError};
use eviction::Tiered;
use index::IndexPart;
use limits::{DOWNLOAD_WAIT_TIMEOUT, MAX_GENERATION_CLAIMS};
use metrics::{RemoteMetricVecs, RemoteMetrics};

/// In a timeline's directory: the copy of the last index acknowledged or restored from.
pub const LOCAL_INDEX_FILE: &str = "remote_index.json";

/// The object store and this pageserver's generation for each tenant.
#[derive(Debug)]
pub struct Remote {
    storage: Arc<dyn RemoteStorage>,
    /// From the configuration: every tenant's generation.
    assigned: Option<Generation>,
    /// Generations known for each tenant (claimed, or assigned and recorded).
    generations: tokio::sync::Mutex<HashMap<TenantId, Generation>>,
}

impl Remote {
    pub fn new(storage: Arc<dyn RemoteStorage>, assigned: Option<Generation>) -> Remote {
        Remote {
            storage,
            assigned,
            generations: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn storage(&self) -> &Arc<dyn RemoteStorage> {
        &self.storage
    }

    /// This attachment's generation for `tenant`, claimed (or, when assigned, recorded)
    /// on first use.
    pub async fn generation(&self, tenant: TenantId) -> Result<Generation, RemoteError> {
        let mut generations = self.generations.lock().await;
        if let Some(generation) = generations.get(&tenant) {
            return Ok(*generation);
        }
        let generation = match self.assigned {
            Some(assigned) => self.record_assigned(tenant, assigned).await?,
            None => self.claim(tenant).await?,
        };
        generations.insert(tenant, generation);
        Ok(generation)
    }

    /// An assigned generation is recorded as claimed too (if nobody did), so that a
    /// pageserver claiming later takes a number above it.
    async fn record_assigned(
        &self,
        tenant: TenantId,
        generation: Generation,
    ) -> Result<Generation, RemoteError> {
        let path = layout::generation_claim_path(tenant, generation);
        match self.storage.put_if_absent(&path, claim_body()).await {
            Ok(_) => {}
            // Without conditional creation, recording could overwrite another's claim
            // of the same (assigned) number: the record is only a hint, so skip it.
            Err(RemoteError::Unsupported { .. }) => {}
            Err(error) => return Err(error),
        }
        tracing::info!(%tenant, %generation, "attached with the configured generation");
        Ok(generation)
    }

    /// The next generation nobody claimed: conditional creation makes two pageservers
    /// starting at once get different numbers.
    async fn claim(&self, tenant: TenantId) -> Result<Generation, RemoteError> {
        let exhausted = |reason: String| RemoteError::BadObject {
            store: self.storage.describe(),
            path: layout::generations_prefix(tenant),
            reason,
        };
        let claims = self
            .storage
            .list(&layout::generations_prefix(tenant))
            .await?;
        let mut candidate = match claims
            .iter()
            .filter_map(|o| layout::parse_generation_claim(o.path.file_name()))
            .max()
        {
            Some(max) => max
                .next()
                .ok_or_else(|| exhausted("generations exhausted".into()))?,
            None => Generation::FIRST,
        };
        for _ in 0..MAX_GENERATION_CLAIMS {
            let path = layout::generation_claim_path(tenant, candidate);
            match self.storage.put_if_absent(&path, claim_body()).await {
                Ok(true) => {
                    tracing::info!(%tenant, generation = %candidate, "claimed generation");
                    return Ok(candidate);
                }
                Ok(false) => {}
                Err(RemoteError::Unsupported { .. }) => {
                    tracing::warn!(
                        %tenant, generation = %candidate, store = %self.storage.describe(),
                        "the store cannot create objects conditionally: generation claimed \
                         as the highest listed plus one, without exclusion (two pageservers \
                         attaching this tenant at the same moment could claim the same one)"
                    );
                    self.storage.put(&path, claim_body()).await?;
                    return Ok(candidate);
                }
                Err(error) => return Err(error),
            }
            candidate = candidate
                .next()
                .ok_or_else(|| exhausted("generations exhausted".into()))?;
        }
        Err(exhausted(format!(
            "{MAX_GENERATION_CLAIMS} generations claimed by others in a row"
        )))
    }

    /// The newest index of `id` whose generation is at most `at_most`.
    pub async fn latest_index(
        &self,
        id: TenantTimelineId,
        at_most: Generation,
    ) -> anyhow::Result<Option<IndexPart>> {
        let objects = self.storage.list(&layout::timeline_prefix(id)).await?;
        let newest = objects
            .iter()
            .filter_map(|o| layout::parse_index_name(o.path.file_name()))
            .filter(|g| *g <= at_most)
            .max();
        let Some(generation) = newest else {
            return Ok(None);
        };
        Ok(Some(self.read_index(id, generation).await?))
    }

    pub async fn read_index(
        &self,
        id: TenantTimelineId,
        generation: Generation,
    ) -> anyhow::Result<IndexPart> {
        let bytes = self
            .storage
            .get(&layout::index_path(id, generation))
            .await?;
        Ok(IndexPart::decode(&bytes, id, generation)?)
    }

    /// The layer objects (name, generation) that an index of generation at least
    /// `at_least` lists: an index lists no object of a later generation than its own,
    /// so these are all the references an object of `at_least` can have.
    pub async fn references_from(
        &self,
        id: TenantTimelineId,
        objects: &[ObjectMeta],
        at_least: Generation,
    ) -> anyhow::Result<HashSet<(String, Generation)>> {
        let mut referenced = HashSet::new();
        for generation in objects
            .iter()
            .filter_map(|o| layout::parse_index_name(o.path.file_name()))
            .filter(|g| *g >= at_least)
        {
            let index = self.read_index(id, generation).await?;
            referenced.extend(
                index
                    .layers
                    .into_iter()
                    .map(|l| (l.name, Generation(l.generation))),
            );
        }
        Ok(referenced)
    }

    /// Every timeline that has an index in the store.
    pub async fn timelines(&self) -> Result<Vec<TenantTimelineId>, RemoteError> {
        let objects = self.storage.list("tenants/").await?;
        let mut ids: Vec<TenantTimelineId> = objects
            .iter()
            .filter_map(|o| index_owner(o.path.as_str()))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

fn claim_body() -> Bytes {
    Bytes::from(format!(
        "claimed by pageserver pid {}\n",
        std::process::id()
    ))
}

/// The timeline of `tenants/<tenant>/timelines/<timeline>/index-<generation>.json`.
fn index_owner(path: &str) -> Option<TenantTimelineId> {
    let parts: Vec<&str> = path.split('/').collect();
    let ["tenants", tenant, "timelines", timeline, file] = parts.as_slice() else {
        return None;
    };
    layout::parse_index_name(file)?;
    Some(TenantTimelineId {
        tenant_id: tenant.parse::<TenantId>().ok()?,
        timeline_id: timeline.parse::<TimelineId>().ok()?,
    })
}

/// The local copy of the last index of the timeline in `dir`, if there is one.
pub fn read_local_index(id: TenantTimelineId, dir: &Path) -> anyhow::Result<Option<IndexPart>> {
    let path = dir.join(LOCAL_INDEX_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    Ok(Some(IndexPart::decode_any_generation(&bytes, id)?))
}

/// Replaces the local copy of the index, durably (temporary file, fsync, rename,
/// directory fsync): it is what a restart trusts to be in the store. Blocking.
pub fn write_local_index(dir: &Path, index: &IndexPart) -> Result<(), TimelinesError> {
    write_durably(&dir.join(LOCAL_INDEX_FILE), &index.encode())
}

/// Where each layer of a timeline is in the store (the generation of its object), for
/// the layers an acknowledged index lists: what may be evicted and fetched back.
pub type RemoteLayers = Arc<Mutex<HashMap<String, Generation>>>;

pub(crate) fn lock_layers(
    layers: &RemoteLayers,
) -> std::sync::MutexGuard<'_, HashMap<String, Generation>> {
    layers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Downloads a timeline's evicted or restored layer files when a read needs them.
#[derive(Debug)]
pub struct Fetcher {
    pub id: TenantTimelineId,
    pub storage: Arc<dyn RemoteStorage>,
    pub layers: RemoteLayers,
    pub metrics: RemoteMetrics,
    pub runtime: tokio::runtime::Handle,
    /// Woken after a download: the eviction task looks at the budget again.
    pub downloaded: Arc<Notify>,
}

impl LayerFetcher for Fetcher {
    fn fetch(&self, layer_name: &str, size_bytes: u64, dest: &Path) -> Result<(), std::io::Error> {
        let generation = lock_layers(&self.layers)
            .get(layer_name)
            .copied()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("layer {layer_name} is in no acknowledged index of this timeline"),
                )
            })?;
        let path = layout::layer_path(self.id, layer_name, generation);
        let storage = self.storage.clone();
        let dest = dest.to_path_buf();
        // Reads run on blocking threads (never on the runtime's workers): the download
        // runs on the runtime and this thread waits for it, bounded.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(storage.download_to_file(&path, &dest).await);
        });
        let downloaded = rx
            .recv_timeout(DOWNLOAD_WAIT_TIMEOUT)
            .map_err(|e| std::io::Error::other(format!("waiting for the download: {e}")))?
            .map_err(std::io::Error::other)?;
        if downloaded != size_bytes {
            return Err(std::io::Error::other(format!(
                "downloaded {downloaded} bytes of layer {layer_name}, the index says {size_bytes}"
            )));
        }
        self.metrics.layers_downloaded.inc();
        self.downloaded.notify_one();
        tracing::info!(
            tenant_id = %self.id.tenant_id, timeline_id = %self.id.timeline_id,
            layer = layer_name, %generation, bytes = downloaded, "layer downloaded"
        );
        Ok(())
    }
}

/// What the daemon holds for tiering: the store, the metric vectors, and the timelines
/// the eviction task looks after.
#[derive(Debug, Clone)]
pub struct Tiering {
    remote: Arc<Remote>,
    vecs: RemoteMetricVecs,
    tiered: Tiered,
    /// Fetchers wake the eviction task with it.
    downloaded: Arc<Notify>,
}

impl Tiering {
    /// Connects to the store (for S3 this checks the bucket and the credentials, so a
    /// wrong bucket, endpoint or key fails here with an error naming them), counting
    /// its requests under `pageserver_object_storage_*`.
    pub async fn connect(
        config: &RemoteStorageConfig,
        generation: Option<Generation>,
        registry: &Registry,
    ) -> Result<Tiering, String> {
        let storage = remote_storage::connect(config)
            .await
            .map_err(|e| e.to_string())?;
        let storage = MeteredStorage::new(storage, registry, "pageserver")
            .map_err(|e| format!("registering metrics: {e}"))?;
        tracing::info!(store = %storage.describe(), ?generation, "object storage connected");
        Ok(Tiering {
            remote: Arc::new(Remote::new(Arc::new(storage), generation)),
            vecs: RemoteMetricVecs::new(registry).map_err(|e| e.to_string())?,
            tiered: Tiered::default(),
            downloaded: Arc::default(),
        })
    }

    /// Before the data directory's timelines are opened: claims every local tenant's
    /// generation and discards local timelines behind the store
    /// ([`restore::discard_stale`]).
    pub async fn prepare(&self, data_dir: &Path, checkpoint_distance: u64) -> anyhow::Result<()> {
        restore::discard_stale(&self.remote, data_dir, checkpoint_distance).await
    }

    /// For a timeline just opened or created, before anything reads it: installs its
    /// fetcher (knowing the layers of the local copy of its last index) and registers
    /// it for eviction. Returns its uploader, to spawn. Blocking (reads the copy).
    pub fn attach(
        &self,
        timeline: &Arc<Timeline>,
        runtime: tokio::runtime::Handle,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let id = timeline.id();
        let remote_layers = RemoteLayers::default();
        match read_local_index(id, timeline.dir()) {
            Ok(Some(copy)) => lock_layers(&remote_layers).extend(
                copy.layers
                    .iter()
                    .map(|l| (l.name.clone(), Generation(l.generation))),
            ),
            Ok(None) => {}
            // The uploader uploads the local layers again; those not on local disk
            // cannot be read until then.
            Err(error) => tracing::error!(
                tenant_id = %id.tenant_id, timeline_id = %id.timeline_id,
                error = %format!("{error:#}"), "the local copy of the last index is unreadable"
            ),
        }
        let metrics = self.vecs.timeline(id);
        timeline.store().set_fetcher(Arc::new(Fetcher {
            id,
            storage: self.remote.storage().clone(),
            layers: remote_layers.clone(),
            metrics: metrics.clone(),
            runtime,
            downloaded: self.downloaded.clone(),
        }));
        self.tiered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                id,
                (timeline.clone(), remote_layers.clone(), metrics.clone()),
            );
        upload::run(
            timeline.clone(),
            self.remote.clone(),
            remote_layers,
            metrics,
            shutdown,
        )
    }

    /// After the local timelines are open: restores those only the store has.
    pub async fn restore_missing(&self, timelines: &Arc<Timelines>) -> anyhow::Result<usize> {
        restore::restore_missing(&self.remote, timelines).await
    }

    /// The eviction task (with no budget it only keeps the resident-bytes gauges).
    pub fn eviction(
        &self,
        budget: Option<u64>,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        eviction::run(
            self.tiered.clone(),
            budget,
            self.downloaded.clone(),
            shutdown,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_index_objects_name_a_timeline() {
        let id = TenantTimelineId {
            tenant_id: TenantId(1),
            timeline_id: TimelineId(2),
        };
        let prefix = layout::timeline_prefix(id);
        assert_eq!(
            index_owner(layout::index_path(id, Generation(3)).as_str()),
            Some(id)
        );
        assert_eq!(
            index_owner(&format!("{prefix}wal/000000010000000000000001")),
            None
        );
        assert_eq!(index_owner(&format!("{prefix}index-3.json")), None);
        assert_eq!(
            index_owner(layout::generation_claim_path(id.tenant_id, Generation(1)).as_str()),
            None
        );
    }
}
