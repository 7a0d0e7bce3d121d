//! The uploader of one timeline: every layer file not yet in object storage is uploaded
//! under this attachment's generation, then the index listing every layer of the
//! timeline. The order is the invariant: an index is written only after the store
//! acknowledged every layer it lists, and `remote_consistent_lsn` moves only after the
//! store acknowledged that index (then the local copy of the index is replaced).
//!
//! **Which LSN an index covers.** `disk_consistent_lsn` is the highest LSN a listed
//! layer holds. A freeze writes a snapshot of the open layer; commits are serialised
//! (`Timeline::commit`), each stores its batch (every version in `(last_record_lsn,
//! new]`) in one atomic write, and every record stores a version at its end LSN (its
//! `LastRecord` key). So a freeze's snapshot holds whole commits up to some point, the
//! newest version it holds is the end of a record, and every version at or below it is
//! in that layer or an earlier one (a freeze skips only entries an earlier layer
//! holds). It is at least the `last_record_lsn` read before the freeze (every commit
//! up to that had returned, so its write is in the snapshot), and it needs no word
//! from whoever froze (the layer task, or a commit freezing the open layer itself).
//! Ingest of a timeline restored from the index resumes there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use layer_store::LayerInfo;
use postgres_wal::Lsn;
use remote_storage::layout::{self, Generation};
use remote_storage::ObjectMeta;
use tokio::sync::watch;
use tracing::Instrument;

use super::failpoint::{self, AFTER_LAYER_UPLOAD, BEFORE_INDEX_UPLOAD, DURING_INDEX_UPLOAD};
use super::index::{IndexLayer, IndexPart};
use super::limits::{UPLOAD_BACKOFF_MAX, UPLOAD_BACKOFF_MIN, UPLOAD_INTERVAL};
use super::metrics::RemoteMetrics;
use super::{lock_layers, read_local_index, write_local_index, Remote, RemoteLayers};
use crate::logging::timeline_span;
use crate::timeline::Timeline;

/// What the store holds of the timeline, as this uploader knows it.
struct Uploaded {
    generation: Generation,
    /// Layer name → (size, generation of its object): layers acknowledged by the store.
    layers: BTreeMap<String, (u64, Generation)>,
    /// The LSN our own last acknowledged index covers.
    index_lsn: Option<Lsn>,
}

/// Runs until `shutdown` turns true.
pub async fn run(
    timeline: Arc<Timeline>,
    remote: Arc<Remote>,
    remote_layers: RemoteLayers,
    metrics: RemoteMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = timeline_span(timeline.id());
    async move {
        timeline.set_tiered();
        let mut backoff = UPLOAD_BACKOFF_MIN;
        let mut state: Option<Uploaded> = None;
        loop {
            let step = match &mut state {
                None => start(&timeline, &remote, &metrics)
                    .await
                    .map(|s| state = Some(s)),
                Some(uploaded) => {
                    upload_new(&timeline, &remote, uploaded, &remote_layers, &metrics).await
                }
            };
            let wait = match step {
                Ok(()) => {
                    backoff = UPLOAD_BACKOFF_MIN;
                    UPLOAD_INTERVAL
                }
                Err(error) => {
                    metrics.upload_errors.inc();
                    tracing::warn!(error = %format!("{error:#}"), retry_in = ?backoff, "upload to object storage failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(UPLOAD_BACKOFF_MAX);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
    .instrument(span)
    .await
}

/// Claims the generation and learns what the store already holds of the local layers:
/// those the local copy of the last index lists, still in the store under the same
/// size, of a generation not above ours. Removes our own generation's orphans.
async fn start(
    timeline: &Timeline,
    remote: &Remote,
    metrics: &RemoteMetrics,
) -> anyhow::Result<Uploaded> {
    let id = timeline.id();
    let generation = remote.generation(id.tenant_id).await?;
    metrics.generation.set(i64::from(generation.0));
    timeline.update_remote_status(|s| s.generation = generation.0);
    let objects = remote.storage().list(&layout::timeline_prefix(id)).await?;
    let sizes: HashMap<(&str, Generation), u64> = objects
        .iter()
        .filter_map(|o| {
            let (layer, g) = layout::parse_layer_object(o.path.file_name())?;
            Some(((layer, g), o.size))
        })
        .collect();
    let local: HashMap<String, u64> = timeline
        .store()
        .layers()
        .into_iter()
        .map(|l| (l.name, l.size_bytes))
        .collect();
    let mut uploaded = Uploaded {
        generation,
        layers: BTreeMap::new(),
        index_lsn: None,
    };
    let dir = timeline.dir().to_owned();
    let copy = tokio::task::spawn_blocking(move || read_local_index(id, &dir)).await??;
    if let Some(copy) = &copy {
        let mut complete = true;
        for layer in &copy.layers {
            let g = Generation(layer.generation);
            let in_store = sizes.get(&(layer.name.as_str(), g)) == Some(&layer.size);
            // An index lists no object of a later generation than its own (an assigned
            // generation may go down): such a layer is uploaded again under ours.
            if in_store && g <= generation && local.get(&layer.name) == Some(&layer.size) {
                uploaded.layers.insert(layer.name.clone(), (layer.size, g));
            } else {
                complete = false;
                tracing::warn!(layer = %layer.name, generation = %g, in_store,
                    "a layer of the last index is missing from the store or from local disk, \
                     or of a later generation: the local one is uploaded again under this generation");
            }
        }
        if complete {
            timeline.set_remote_consistent_lsn(Lsn(copy.disk_consistent_lsn));
            if copy.generation == generation.0 {
                uploaded.index_lsn = Some(Lsn(copy.disk_consistent_lsn));
            }
        }
    }
    // Removing orphans is housekeeping: an index that cannot be read now must not stop
    // the uploads.
    if let Err(error) = remove_own_orphans(remote, timeline, generation, &objects, &uploaded).await
    {
        tracing::warn!(error = %format!("{error:#}"), "orphaned layer objects of this generation not removed");
    }
    tracing::info!(%generation, uploaded_layers = uploaded.layers.len(), "uploader started");
    Ok(uploaded)
}

/// Deletes layer objects of our own generation that no index references: leftovers of
/// our uploads that a crash cut off before their index (with an assigned generation,
/// the same number survives restarts). An index lists no object newer than itself, so
/// only indexes of our generation or later can reference them. Objects of any other
/// generation are not ours to delete, referenced or not.
async fn remove_own_orphans(
    remote: &Remote,
    timeline: &Timeline,
    generation: Generation,
    objects: &[ObjectMeta],
    uploaded: &Uploaded,
) -> anyhow::Result<()> {
    let id = timeline.id();
    let referenced = remote.references_from(id, objects, generation).await?;
    for object in objects {
        let Some((layer, g)) = layout::parse_layer_object(object.path.file_name()) else {
            continue;
        };
        if g != generation
            || layer_store::parse_layer_name(layer).is_none()
            || referenced.contains(&(layer.to_string(), g))
            || uploaded.layers.get(layer).is_some_and(|(_, ug)| *ug == g)
        {
            continue;
        }
        remote.storage().delete(&object.path).await?;
        tracing::info!(object = %object.path, "deleted a layer object of this generation no index references");
    }
    Ok(())
}

async fn upload_new(
    timeline: &Timeline,
    remote: &Remote,
    uploaded: &mut Uploaded,
    remote_layers: &RemoteLayers,
    metrics: &RemoteMetrics,
) -> anyhow::Result<()> {
    let id = timeline.id();
    let store = timeline.store();
    let generation = uploaded.generation;
    let local = store.layers();
    let new: Vec<&LayerInfo> = local
        .iter()
        .filter(|l| !uploaded.layers.contains_key(&l.name))
        .collect();
    set_queue(timeline, metrics, new.len());
    if new.is_empty() && uploaded.index_lsn.is_some() {
        return Ok(());
    }
    // Oldest first (the store lists newest first).
    for (i, layer) in new.iter().rev().enumerate() {
        let started = Instant::now();
        let path = layout::layer_path(id, &layer.name, generation);
        let size = remote
            .storage()
            .put_file(&path, &store.layer_path(&layer.name))
            .await?;
        anyhow::ensure!(
            size == layer.size_bytes,
            "uploaded {size} bytes of layer {} of {} bytes",
            layer.name,
            layer.size_bytes
        );
        uploaded
            .layers
            .insert(layer.name.clone(), (size, generation));
        metrics.layers_uploaded.inc();
        metrics
            .upload_seconds
            .observe(started.elapsed().as_secs_f64());
        set_queue(timeline, metrics, new.len() - i - 1);
        tracing::info!(layer = %layer.name, bytes = size, "layer uploaded");
        failpoint::check(AFTER_LAYER_UPLOAD);
    }
    // Only layers of the local store: the index describes this pageserver's history.
    let listed: Vec<IndexLayer> = local
        .iter()
        .filter_map(|l| {
            let (size, g) = uploaded.layers.get(&l.name)?;
            Some(IndexLayer {
                name: l.name.clone(),
                size: *size,
                generation: g.0,
            })
        })
        .collect();
    let Some(disk_consistent_lsn) = local.iter().map(|l| Lsn(l.lsn_end)).max() else {
        return Ok(());
    };
    if uploaded.index_lsn == Some(disk_consistent_lsn) && new.is_empty() {
        return Ok(());
    }
    let index = IndexPart::new(id, generation, timeline.meta(), disk_consistent_lsn, listed);
    failpoint::check(BEFORE_INDEX_UPLOAD);
    remote
        .storage()
        .put(
            &layout::index_path(id, generation),
            Bytes::from(index.encode()),
        )
        .await?;
    failpoint::check(DURING_INDEX_UPLOAD);
    acknowledged(timeline, &index, remote_layers, metrics).await?;
    uploaded.index_lsn = Some(disk_consistent_lsn);
    tracing::info!(
        %generation, remote_consistent_lsn = %disk_consistent_lsn,
        layers = index.layers.len(), "index uploaded"
    );
    Ok(())
}

/// The store acknowledged `index`: the local copy records it (durably, before anything
/// relies on it), then its layers become evictable and `remote_consistent_lsn` moves.
async fn acknowledged(
    timeline: &Timeline,
    index: &IndexPart,
    remote_layers: &RemoteLayers,
    metrics: &RemoteMetrics,
) -> anyhow::Result<()> {
    let dir = timeline.dir().to_owned();
    let copy = index.clone();
    tokio::task::spawn_blocking(move || write_local_index(&dir, &copy)).await??;
    lock_layers(remote_layers).extend(
        index
            .layers
            .iter()
            .map(|l| (l.name.clone(), Generation(l.generation))),
    );
    let files = index.layers.len() as u64;
    let bytes = index.layers.iter().map(|l| l.size).sum();
    metrics.set_remote_layers(files, bytes);
    timeline.update_remote_status(|s| {
        s.layers = files;
        s.layer_bytes = bytes;
    });
    timeline.set_remote_consistent_lsn(Lsn(index.disk_consistent_lsn));
    Ok(())
}

fn set_queue(timeline: &Timeline, metrics: &RemoteMetrics, layers: usize) {
    metrics
        .upload_queue_layers
        .set(i64::try_from(layers).unwrap_or(i64::MAX));
    timeline.update_remote_status(|s| s.upload_queue_layers = layers as u64);
}
