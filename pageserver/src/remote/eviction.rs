//! Local disk as a cache: when the layer files on local disk exceed the disk budget,
//! the least recently read ones that an acknowledged index lists are removed; a read
//! that needs one downloads it again. A layer not yet listed by an acknowledged index
//! is never evicted (its object alone could be an orphan a restart does not know).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strata_ids::TenantTimelineId;
use tokio::sync::{watch, Notify};

use super::limits::EVICTION_INTERVAL;
use super::metrics::RemoteMetrics;
use super::{lock_layers, RemoteLayers};
use crate::timeline::Timeline;

/// The timelines the eviction task looks after.
pub type Tiered =
    Arc<Mutex<HashMap<TenantTimelineId, (Arc<Timeline>, RemoteLayers, RemoteMetrics)>>>;

/// Runs until `shutdown` turns true: a pass every [`EVICTION_INTERVAL`] and after each
/// download (`downloaded`).
pub async fn run(
    tiered: Tiered,
    budget: Option<u64>,
    downloaded: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVICTION_INTERVAL) => {}
            () = downloaded.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let snapshot: Vec<_> = tiered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        // Stat calls and file removals: off the async threads.
        let pass = tokio::task::spawn_blocking(move || evict_over_budget(&snapshot, budget)).await;
        if let Err(error) = pass {
            tracing::error!(%error, "eviction pass failed");
        }
    }
}

fn evict_over_budget(tiered: &[(Arc<Timeline>, RemoteLayers, RemoteMetrics)], budget: Option<u64>) {
    let mut total: u64 = 0;
    for (timeline, _, metrics) in tiered {
        let bytes = timeline.store().resident_bytes();
        metrics
            .resident_layer_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        total += bytes;
    }
    let Some(budget) = budget else {
        return;
    };
    if total <= budget {
        return;
    }
    let mut candidates = Vec::new();
    for (i, (timeline, remote_layers, _)) in tiered.iter().enumerate() {
        let uploaded = lock_layers(remote_layers).clone();
        for layer in timeline.store().residency() {
            if layer.resident && uploaded.contains_key(&layer.info.name) {
                candidates.push((layer.last_read, i, layer.info));
            }
        }
    }
    candidates.sort_by_key(|(last_read, _, _)| *last_read);
    for (_, i, info) in candidates {
        if total <= budget {
            break;
        }
        let (timeline, _, metrics) = &tiered[i];
        match timeline.store().evict(&info.name) {
            Ok(true) => {
                total = total.saturating_sub(info.size_bytes);
                metrics.layers_evicted.inc();
                tracing::info!(
                    tenant_id = %timeline.id().tenant_id, timeline_id = %timeline.id().timeline_id,
                    layer = %info.name, bytes = info.size_bytes, "layer evicted"
                );
            }
            // Being read or fetched right now: the next pass tries again.
            Ok(false) => {}
            Err(error) => tracing::warn!(layer = %info.name, %error, "eviction failed"),
        }
    }
}
