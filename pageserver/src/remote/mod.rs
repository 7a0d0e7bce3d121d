//! Tiering to object storage: every layer file a timeline freezes or writes is
//! uploaded, then an index listing them ([`index`]); `remote_consistent_lsn` moves only
//! when the store has acknowledged the index that covers it. A pageserver whose data
//! directory is empty restores each timeline it finds in the store from its newest
//! index ([`restore`]), with its layers on local disk only once read; local disk is a
//! cache with a budget ([`eviction`]).
//!
//! **Generations.** Each tenant's attachment to this pageserver has a generation,
//! claimed at start (the next number with `put_if_absent` on
//! `tenants/<t>/generations/<g>`, or assigned by configuration). Every object the
//! pageserver writes carries its generation, it never writes an object of another
//! generation, and an attach reads the newest index whose generation is not above its
//! own. So an older attachment still running (a split brain) and a newer one never
//! overwrite each other, and the newer one's index wins at the next attach. Nothing is
//! deleted: objects of older generations may be referenced by a live index.

pub mod eviction;
pub mod index;
pub mod limits;
pub mod restore;
pub mod upload;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use layer_store::LayerFetcher;
use remote_storage::layout::{self, Generation};
use remote_storage::{RemoteError, RemoteStorage};
use strata_ids::{TenantId, TenantTimelineId, TimelineId};

use index::IndexPart;
use limits::MAX_GENERATION_CLAIMS;

/// The object store and this pageserver's generation for each tenant.
#[derive(Debug)]
pub struct Remote {
    storage: Arc<dyn RemoteStorage>,
    /// From the configuration: every tenant's generation.
    assigned: Option<Generation>,
    claimed: tokio::sync::Mutex<HashMap<TenantId, Generation>>,
}

impl Remote {
    pub fn new(storage: Arc<dyn RemoteStorage>, assigned: Option<Generation>) -> Remote {
        Remote {
            storage,
            assigned,
            claimed: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn storage(&self) -> &Arc<dyn RemoteStorage> {
        &self.storage
    }

    /// This attachment's generation for `tenant`, claimed on first use.
    pub async fn generation(&self, tenant: TenantId) -> Result<Generation, RemoteError> {
        if let Some(generation) = self.assigned {
            return Ok(generation);
        }
        let mut claimed = self.claimed.lock().await;
        if let Some(generation) = claimed.get(&tenant) {
            return Ok(*generation);
        }
        let generation = self.claim(tenant).await?;
        claimed.insert(tenant, generation);
        Ok(generation)
    }

    /// The next generation nobody claimed: conditional creation makes two pageservers
    /// starting at once get different numbers.
    async fn claim(&self, tenant: TenantId) -> Result<Generation, RemoteError> {
        let claims = self
            .storage
            .list(&layout::generations_prefix(tenant))
            .await?;
        let mut candidate = claims
            .iter()
            .filter_map(|o| layout::parse_generation_claim(o.path.file_name()))
            .max()
            .and_then(Generation::next)
            .unwrap_or(Generation::FIRST);
        for _ in 0..MAX_GENERATION_CLAIMS {
            let path = layout::generation_claim_path(tenant, candidate);
            let body = Bytes::from(format!("claimed by pid {}\n", std::process::id()));
            match self.storage.put_if_absent(&path, body.clone()).await {
                Ok(true) => {
                    tracing::info!(%tenant, generation = %candidate, "claimed generation");
                    return Ok(candidate);
                }
                Ok(false) => {}
                Err(RemoteError::Unsupported { .. }) => {
                    tracing::warn!(%tenant, generation = %candidate, store = %self.storage.describe(),
                        "the store cannot create objects conditionally: generation claimed without exclusion");
                    self.storage.put(&path, body).await?;
                    return Ok(candidate);
                }
                Err(error) => return Err(error),
            }
            candidate = candidate.next().ok_or_else(|| RemoteError::BadObject {
                store: self.storage.describe(),
                path: layout::generations_prefix(tenant),
                reason: "generations exhausted".into(),
            })?;
        }
        Err(RemoteError::BadObject {
            store: self.storage.describe(),
            path: layout::generations_prefix(tenant),
            reason: format!("{MAX_GENERATION_CLAIMS} generations claimed by others in a row"),
        })
    }

    /// The newest index of `id` whose generation is at most `at_most`.
    pub async fn latest_index(
        &self,
        id: TenantTimelineId,
        at_most: Generation,
    ) -> Result<Option<IndexPart>, anyhow::Error> {
        let objects = self.storage.list(&layout::timeline_prefix(id)).await?;
        let newest = objects
            .iter()
            .filter_map(|o| layout::parse_index_name(o.path.file_name()))
            .filter(|g| *g <= at_most)
            .max();
        let Some(generation) = newest else {
            return Ok(None);
        };
        let bytes = self
            .storage
            .get(&layout::index_path(id, generation))
            .await?;
        Ok(Some(IndexPart::decode(&bytes, id, generation)?))
    }

    /// Every timeline that has an index in the store.
    pub async fn timelines(&self) -> Result<Vec<TenantTimelineId>, RemoteError> {
        let objects = self.storage.list("tenants/").await?;
        let mut ids: Vec<TenantTimelineId> = objects
            .iter()
            .filter_map(|o| {
                let mut parts = o.path.as_str().split('/');
                let (
                    Some("tenants"),
                    Some(tenant),
                    Some("timelines"),
                    Some(timeline),
                    Some(file),
                    None,
                ) = (
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                )
                else {
                    return None;
                };
                layout::parse_index_name(file)?;
                Some(TenantTimelineId {
                    tenant_id: tenant.parse::<TenantId>().ok()?,
                    timeline_id: timeline.parse::<TimelineId>().ok()?,
                })
            })
            .collect();
        ids.dedup();
        Ok(ids)
    }
}

/// Where each layer of a timeline lives in the store: the generation of its object.
/// Shared by the uploader (which adds what it uploads) and the fetcher.
pub type RemoteLayers = Arc<Mutex<HashMap<String, Generation>>>;

/// Downloads a timeline's evicted or restored layer files when a read needs them.
#[derive(Debug)]
pub struct Fetcher {
    pub id: TenantTimelineId,
    pub remote: Arc<Remote>,
    pub layers: RemoteLayers,
    pub runtime: tokio::runtime::Handle,
}

impl Fetcher {
    /// The generation of the object holding `layer_name`: from what the uploader knows,
    /// or (a read that comes before the uploader has looked, right after a restore) from
    /// the newest index at or below our generation.
    async fn object_generation(
        remote: &Remote,
        id: TenantTimelineId,
        layers: &RemoteLayers,
        layer_name: &str,
    ) -> Result<Generation, String> {
        let known = |layers: &RemoteLayers| {
            layers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(layer_name)
                .copied()
        };
        if let Some(generation) = known(layers) {
            return Ok(generation);
        }
        let generation = remote
            .generation(id.tenant_id)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(index) = remote
            .latest_index(id, generation)
            .await
            .map_err(|e| format!("{e:#}"))?
        {
            layers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(
                    index
                        .layers
                        .iter()
                        .map(|l| (l.name.clone(), Generation(l.generation))),
                );
        }
        known(layers).ok_or_else(|| format!("layer {layer_name} is in no uploaded index"))
    }
}

impl LayerFetcher for Fetcher {
    fn fetch(&self, layer_name: &str, _size_bytes: u64, dest: &Path) -> Result<(), std::io::Error> {
        let (remote, layers, id) = (self.remote.clone(), self.layers.clone(), self.id);
        let (name, dest) = (layer_name.to_string(), dest.to_path_buf());
        // Reads run on blocking threads: the download runs on the runtime and this
        // thread waits for it.
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let result = async {
                let generation = Fetcher::object_generation(&remote, id, &layers, &name).await?;
                let path = layout::layer_path(id, &name, generation);
                remote
                    .storage()
                    .download_to_file(&path, &dest)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            let _ = tx.send(result);
        });
        match rx.recv() {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(std::io::Error::other(error)),
            Err(_) => Err(std::io::Error::other(
                "the runtime stopped during a download",
            )),
        }
    }
}

/// Crash points for tests: `STRATA_FAILPOINT_PAGESERVER=<name>` makes the process exit
/// at once (no cleanup, as a crash) when it reaches the point of that name:
/// `after-layer-upload` (a layer is in the store, the index that would list it is not)
/// and `before-index-upload` (every layer is up, the index is not).
pub fn failpoint(name: &str) {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("STRATA_FAILPOINT_PAGESERVER").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("pageserver: failpoint {name} reached; exiting");
        std::process::exit(FAILPOINT_EXIT_CODE);
    }
}

/// The exit status of a process stopped by [`failpoint`].
pub const FAILPOINT_EXIT_CODE: i32 = 86;
