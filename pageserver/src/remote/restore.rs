//! Restoring timelines from object storage alone: at start, every timeline the store
//! has an index of (the newest at or below this attachment's generation) and the data
//! directory lacks is created locally from that index, its layer files listed but not
//! downloaded (a read fetches what it needs), with `last_record_lsn` at the index's
//! `disk_consistent_lsn`; the walreceiver then streams the rest from the safekeepers,
//! which keep WAL above the LSN the pageserver reported as remote-consistent.

use std::sync::Arc;

use postgres_wal::Lsn;

use super::Remote;
use crate::timelines::Timelines;

/// Restores what is missing; returns how many timelines it restored.
pub async fn restore_missing(remote: &Remote, timelines: &Arc<Timelines>) -> anyhow::Result<usize> {
    let mut restored = 0;
    for id in remote.timelines().await? {
        if timelines.get(id).is_ok() {
            continue;
        }
        let generation = remote.generation(id.tenant_id).await?;
        let Some(index) = remote.latest_index(id, generation).await? else {
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
        tokio::task::spawn_blocking(move || timelines.restore_timeline(id, meta, &layers, lsn))
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
