//! The uploader of one timeline: after layer work, every layer file not yet in object
//! storage is uploaded under this attachment's generation, then the index listing all
//! of them. The order is the invariant: an index is written only after the store
//! acknowledged every layer it lists, and `remote_consistent_lsn` moves only after
//! the store acknowledged that index.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use postgres_wal::Lsn;
use remote_storage::layout::{self, Generation};
use tokio::sync::watch;
use tracing::Instrument;

use super::index::{IndexLayer, IndexPart};
use super::limits::{UPLOAD_BACKOFF_MAX, UPLOAD_BACKOFF_MIN, UPLOAD_INTERVAL};
use super::{failpoint, Remote, RemoteLayers};
use crate::logging::timeline_span;
use crate::metrics::RemoteMetrics;
use crate::timeline::Timeline;

/// What the store holds of the timeline, as this uploader knows it.
struct Uploaded {
    /// Layer name → (size, generation of its object).
    layers: BTreeMap<String, (u64, Generation)>,
    /// The LSN the last acknowledged index covers.
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
        let mut state: Option<(Generation, Uploaded)> = None;
        loop {
            let step = match &mut state {
                None => start(&timeline, &remote, &remote_layers).await.map(|s| {
                    state = Some(s);
                }),
                Some((generation, uploaded)) => {
                    upload_new(&timeline, &remote, *generation, uploaded, &remote_layers, &metrics)
                        .await
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

/// Claims the generation and learns what the store already holds: the newest index at
/// or below our generation (our own, after a restart; an older attachment's, after a
/// move).
async fn start(
    timeline: &Timeline,
    remote: &Remote,
    remote_layers: &RemoteLayers,
) -> anyhow::Result<(Generation, Uploaded)> {
    let id = timeline.id();
    let generation = remote.generation(id.tenant_id).await?;
    let index = remote.latest_index(id, generation).await?;
    let mut uploaded = Uploaded {
        layers: BTreeMap::new(),
        index_lsn: None,
    };
    if let Some(index) = index {
        for layer in &index.layers {
            uploaded.layers.insert(
                layer.name.clone(),
                (layer.size, Generation(layer.generation)),
            );
        }
        // The index of another generation is not ours to extend in place: ours is
        // written at the next upload even if no layer is new.
        if index.generation == generation.0 {
            uploaded.index_lsn = Some(Lsn(index.disk_consistent_lsn));
            timeline.set_remote_consistent_lsn(Lsn(index.disk_consistent_lsn));
        }
    }
    // A local layer file that differs from the uploaded one of its name would be a
    // different history: refuse to go on rather than mix them.
    for local in timeline.store().layers() {
        if let Some((size, _)) = uploaded.layers.get(&local.name) {
            anyhow::ensure!(
                *size == local.size_bytes,
                "local layer {} has {} bytes, the uploaded one {size}",
                local.name,
                local.size_bytes
            );
        }
    }
    remote_layers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(uploaded.layers.iter().map(|(n, (_, g))| (n.clone(), *g)));
    tracing::info!(%generation, uploaded_layers = uploaded.layers.len(), "uploader started");
    Ok((generation, uploaded))
}

async fn upload_new(
    timeline: &Timeline,
    remote: &Remote,
    generation: Generation,
    uploaded: &mut Uploaded,
    remote_layers: &RemoteLayers,
    metrics: &RemoteMetrics,
) -> anyhow::Result<()> {
    let id = timeline.id();
    let store = timeline.store();
    let new: Vec<_> = store
        .layers()
        .into_iter()
        .filter(|l| !uploaded.layers.contains_key(&l.name))
        .collect();
    metrics.upload_queue_layers.set(new.len() as i64);
    if new.is_empty() && uploaded.index_lsn.is_some() {
        return Ok(());
    }
    for layer in new.iter().rev() {
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
        remote_layers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(layer.name.clone(), generation);
        metrics.layers_uploaded.inc();
        metrics
            .upload_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(layer = %layer.name, bytes = size, "layer uploaded");
        failpoint("after-layer-upload");
    }
    if uploaded.layers.is_empty() {
        return Ok(());
    }
    // Every version up to the end of the last record any listed layer holds is in the
    // listed layers (layers hold whole commits, and every record stores a version at
    // its end LSN).
    let disk_consistent_lsn = uploaded
        .layers
        .keys()
        .filter_map(|name| layer_store::parse_layer_name(name))
        .map(|l| Lsn(l.lsn_end))
        .max()
        .unwrap_or(timeline.meta().start_lsn);
    if uploaded.index_lsn == Some(disk_consistent_lsn) && new.is_empty() {
        return Ok(());
    }
    let layers = uploaded
        .layers
        .iter()
        .map(|(name, (size, g))| IndexLayer {
            name: name.clone(),
            size: *size,
            generation: g.0,
        })
        .collect();
    let index = IndexPart::new(id, generation, timeline.meta(), disk_consistent_lsn, layers);
    failpoint("before-index-upload");
    remote
        .storage()
        .put(
            &layout::index_path(id, generation),
            Bytes::from(index.encode()),
        )
        .await?;
    uploaded.index_lsn = Some(disk_consistent_lsn);
    timeline.set_remote_consistent_lsn(disk_consistent_lsn);
    metrics.set_remote_layers(
        &uploaded
            .layers
            .values()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>(),
    );
    tracing::info!(
        %generation, remote_consistent_lsn = %disk_consistent_lsn,
        layers = uploaded.layers.len(), "index uploaded"
    );
    Ok(())
}
