//! Attaching from object storage at start.
//!
//! Before the data directory's timelines are opened ([`discard_stale`]): each local
//! timeline's tenant gets its generation, and a local timeline whose `last_record_lsn`
//! is below the `disk_consistent_lsn` of the store's newest index at or below that
//! generation is discarded: another attachment ingested further since this data
//! directory was last used, the safekeepers may have removed the WAL this copy would
//! need, and that index describes the same history further on.
//!
//! After ([`restore_missing`]): every timeline the store has an index of and the data
//! directory lacks is created locally from the newest index at or below this
//! attachment's generation, its layer files listed but not downloaded (a read fetches
//! what it needs), with `last_record_lsn` at the index's `disk_consistent_lsn`, and the
//! index as the local copy. The walreceiver then streams the rest from the
//! safekeepers, which keep WAL above the LSN reported to them as remote-consistent.

use std::path::Path;
use std::sync::Arc;

use postgres_wal::Lsn;

use super::Remote;
use crate::timelines::{self, Timelines};

/// Claims the generation of every local tenant and discards local timelines behind the
/// store. Blocking work runs off the async threads.
pub async fn discard_stale(
    remote: &Remote,
    data_dir: &Path,
    checkpoint_distance: u64,
) -> anyhow::Result<()> {
    let dir = data_dir.to_owned();
    let local = tokio::task::spawn_blocking(move || timelines::local_timelines(&dir)).await??;
    for id in local {
        let generation = remote.generation(id.tenant_id).await?;
        let Some(index) = remote.latest_index(id, generation).await? else {
            continue;
        };
        let dir = data_dir.to_owned();
        let local_lsn = tokio::task::spawn_blocking(move || {
            timelines::local_last_record_lsn(&dir, id, checkpoint_distance)
        })
        .await??;
        let remote_lsn = Lsn(index.disk_consistent_lsn);
        if remote_lsn <= local_lsn {
            continue;
        }
        tracing::warn!(
            tenant_id = %id.tenant_id, timeline_id = %id.timeline_id,
            %local_lsn, %remote_lsn, index_generation = index.generation, %generation,
            "the store's newest index is ahead of the local timeline: discarding the local copy to restore from the index"
        );
        let dir = data_dir.to_owned();
        tokio::task::spawn_blocking(move || timelines::discard_timeline(&dir, id)).await??;
    }
    Ok(())
}

/// Restores what is missing; returns how many timelines it restored.
pub async fn restore_missing(remote: &Remote, timelines: &Arc<Timelines>) -> anyhow::Result<usize> {
    let mut restored = 0;
    for id in remote.timelines().await? {
        if timelines.get(id).is_ok() {
            continue;
        }
        let generation = remote.generation(id.tenant_id).await?;
        let Some(index) = remote.latest_index(id, generation).await? else {
            tracing::info!(
                tenant_id = %id.tenant_id, timeline_id = %id.timeline_id, %generation,
                "the store has only indexes of later generations of this timeline; not attached"
            );
            continue;
        };
        let meta = index.meta().map_err(anyhow::Error::msg)?;
        let layers: Vec<(String, u64)> = index
            .layers
            .iter()
            .map(|l| (l.name.clone(), l.size))
            .collect();
        let lsn = Lsn(index.disk_consistent_lsn);
        let timelines = timelines.clone();
        let copy = index.encode();
        tokio::task::spawn_blocking(move || {
            timelines.restore_timeline(id, meta, &layers, lsn, &copy)
        })
        .await??;
        tracing::info!(
            tenant_id = %id.tenant_id, timeline_id = %id.timeline_id,
            index_generation = index.generation, %generation, last_record_lsn = %lsn,
            layers = index.layers.len(),
            "timeline restored from object storage"
        );
        restored += 1;
    }
    Ok(restored)
}
