//! The layer task of a timeline: off the ingest path, it freezes the open layer into a
//! delta layer file once it exceeds `checkpoint_distance`, and writes an image layer
//! (every live key reconstructed at one LSN) once `image_layer_after_deltas` delta
//! layers have accumulated above the newest image layer, so that a read walks a bounded
//! number of layers down to an image.
//!
//! One task per timeline, woken by commits and by `checkpoint_timeout` (an open layer
//! holding data that long is frozen whatever its size, so that object storage does not
//! lag ingest without bound); at most one freeze or image write of a timeline runs at a
//! time (the store also serialises them).

use std::sync::Arc;
use std::time::Duration;

use layer_store::{LayerInfo, LayerKind, StoreError, KEY_LEN};
use page_model::read::{self, ReadError};
use page_model::Key;
use postgres_wal::Lsn;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::limits::LAYER_RETRY_BACKOFF;
use crate::logging::timeline_span;
use crate::remote::limits::UPLOAD_QUEUE_MAX_LAYERS;
use crate::timeline::Timeline;

#[derive(Debug, Clone, Copy)]
pub struct LayerPolicy {
    /// Delta layers above the newest image layer that trigger a new image layer.
    pub image_layer_after_deltas: u32,
    /// Longest time data stays in the open layer: then it is frozen whatever its size,
    /// so that what object storage holds lags ingest by at most about this much.
    pub checkpoint_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer store: {0}")]
    Store(#[from] StoreError),
    #[error("reconstructing the image layer at {lsn}: {source}")]
    Read {
        lsn: Lsn,
        #[source]
        source: ReadError,
    },
}

/// Runs until `shutdown` turns true.
pub async fn run(
    timeline: Arc<Timeline>,
    policy: LayerPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = timeline_span(timeline.id());
    async move {
        // The first pass runs at once: a timeline just imported or reopened may already
        // hold more than a freeze's worth, or enough deltas for an image.
        let mut first = true;
        let mut last_freeze = Instant::now();
        loop {
            let mut force = false;
            if !first {
                tokio::select! {
                    () = timeline.layer_work() => {}
                    () = tokio::time::sleep_until(last_freeze + policy.checkpoint_timeout) => {
                        force = true;
                    }
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
            first = false;
            if force {
                last_freeze = Instant::now();
            }
            let t = timeline.clone();
            // A blocking task does not inherit the span: freezes and image layers log
            // inside the timeline's.
            let span = tracing::Span::current();
            let failed = match tokio::task::spawn_blocking(move || {
                span.in_scope(|| maintain(&t, policy, force))
            })
            .await
            {
                Ok(Ok(())) => false,
                Ok(Err(error)) => {
                    tracing::error!(%error, "layer maintenance failed");
                    true
                }
                Err(error) => {
                    tracing::error!(%error, "layer maintenance task failed");
                    true
                }
            };
            if failed {
                // Layer work failing loses no data (the open layer keeps it). It is
                // retried after the next commit, but not sooner than this, so that a
                // persistent failure (a corrupt layer an image must read) does not
                // redo a whole image's work after every commit.
                tokio::select! {
                    () = tokio::time::sleep(LAYER_RETRY_BACKOFF) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Freeze if due (or whatever the open layer holds, if `force`), then write an image
/// layer if due. Neither while the upload queue is full (see
/// [`UPLOAD_QUEUE_MAX_LAYERS`]). Blocking.
pub fn maintain(timeline: &Timeline, policy: LayerPolicy, force: bool) -> Result<(), LayerError> {
    let store = timeline.store();
    let queued = timeline.remote_status().upload_queue_layers;
    if queued >= UPLOAD_QUEUE_MAX_LAYERS {
        tracing::debug!(queued, "upload queue full; layer work waits");
        return Ok(());
    }
    if store
        .freeze(force && store.open_layer_bytes() > 0)?
        .is_some()
    {
        timeline.metrics().set_layers(&store.layers());
    }
    if let Some(lsn) = image_due(&store.layers(), policy) {
        write_image_layer(timeline, lsn)?;
        timeline.metrics().set_layers(&store.layers());
    }
    Ok(())
}

/// The LSN of the image layer to write (the newest delta layer's end), if enough delta
/// layers lie above the newest image layer.
fn image_due(layers: &[LayerInfo], policy: LayerPolicy) -> Option<Lsn> {
    let newest_image = layers
        .iter()
        .filter(|l| l.kind == LayerKind::Image)
        .map(|l| l.lsn_end)
        .max();
    let deltas_above: Vec<&LayerInfo> = layers
        .iter()
        .filter(|l| l.kind == LayerKind::Delta && newest_image.is_none_or(|i| l.lsn_end > i))
        .collect();
    if deltas_above.len() < policy.image_layer_after_deltas as usize {
        return None;
    }
    deltas_above.iter().map(|l| Lsn(l.lsn_end)).max()
}

/// Writes every live key at `lsn` as an image layer. Values stream from reconstruction
/// into the layer writer, so memory holds the key list, not the pages. Blocking.
pub fn write_image_layer(timeline: &Timeline, lsn: Lsn) -> Result<LayerInfo, LayerError> {
    let read_error = |source| LayerError::Read { lsn, source };
    let keys = read::keyspace(timeline, lsn).map_err(read_error)?;
    let mut failure: Option<ReadError> = None;
    let values = keys
        .iter()
        .map_while(|key| match image_value(timeline, key, lsn) {
            Ok(Some(value)) => Some(Some((key.encode(), value))),
            Ok(None) => Some(None),
            Err(error) => {
                failure = Some(error);
                None
            }
        });
    let values = values.flatten();
    let result = timeline.store().write_image_layer(lsn.0, values);
    // A layer cut short by a read error holds only correct values (each reconstructed
    // at `lsn`); keys missing from it are read from older layers as before. The
    // error is still reported.
    if let Some(error) = failure {
        return Err(read_error(error));
    }
    let info = result?;
    tracing::info!(layer = %info.name, %lsn, keys = keys.len(), "image layer written");
    Ok(info)
}

/// The encoded `Value::Image` of `key` at `lsn`, `None` for a key without a value.
fn image_value(timeline: &Timeline, key: &Key, lsn: Lsn) -> Result<Option<Vec<u8>>, ReadError> {
    let bytes = match key {
        // Blocks honour their fork's creation LSN (older incarnations of a relfilenode
        // are not part of the current one).
        Key::RelBlock { rel, blkno } => Some(read::rel_page(timeline, *rel, *blkno, lsn)?),
        _ => read::value_at(timeline, key, Lsn::INVALID, lsn)?,
    };
    Ok(bytes.map(|b| page_model::Value::Image(b).encode().to_vec()))
}

const _: () = assert!(KEY_LEN == page_model::KEY_LEN);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::timeline::TimelineMeta;
    use crate::timelines::Timelines;
    use bytes::Bytes;
    use page_model::read::{encode_db_dir, encode_rel_dir, RelSize};
    use page_model::Value;
    use postgres_wal::{ForkNumber, RelFileNode, RelTag, WalSegmentSize};
    use std::collections::BTreeSet;
    use strata_ids::{TenantId, TenantTimelineId, TimelineId};

    #[test]
    fn image_layer_holds_what_the_deltas_reconstruct() {
        let dir = tempfile::tempdir().unwrap();
        let timelines =
            Timelines::open(dir.path(), 1, Metrics::new().unwrap(), Box::new(|_| {})).unwrap();
        let start = Lsn(0x0100_0028);
        let rel = RelTag {
            node: RelFileNode {
                spc_node: 1663,
                db_node: 5,
                rel_node: 16384,
            },
            fork: ForkNumber::Main,
        };
        let page = |b: u8| Value::Image(Bytes::from(vec![b; postgres_wal::BLCKSZ]));
        let values = vec![
            (
                Key::DbDir,
                Value::Image(encode_db_dir(&BTreeSet::from([(1663, 5)]))),
            ),
            (
                Key::RelDir { spc: 1663, db: 5 },
                Value::Image(encode_rel_dir(&BTreeSet::from([(16384, ForkNumber::Main)]))),
            ),
            (
                Key::RelSize(rel),
                Value::Image(
                    RelSize {
                        nblocks: 3,
                        created_lsn: start,
                    }
                    .encode(),
                ),
            ),
            (Key::rel_block(rel, 0), page(1)),
            (Key::rel_block(rel, 2), page(3)),
        ];
        let meta = TimelineMeta {
            system_id: 1,
            pg_version: 15,
            wal_segment_size: WalSegmentSize::new(16 << 20).unwrap(),
            start_lsn: start,
            data_checksums: false,
        };
        let id = TenantTimelineId {
            tenant_id: TenantId(1),
            timeline_id: TimelineId(1),
        };
        let (timeline, _) = timelines.create_timeline(id, meta, values).unwrap();
        let policy = LayerPolicy {
            image_layer_after_deltas: 1,
            checkpoint_timeout: Duration::from_secs(60),
        };
        // checkpoint_distance 1: the first pass freezes, and one delta calls for an image.
        maintain(&timeline, policy, false).unwrap();
        let kinds: Vec<LayerKind> = timeline.store().layers().iter().map(|l| l.kind).collect();
        assert_eq!(kinds, vec![LayerKind::Image, LayerKind::Delta]);
        // Nothing more is due.
        maintain(&timeline, policy, false).unwrap();
        assert_eq!(timeline.store().layers().len(), 2);
        for (blkno, fill) in [(0, 1u8), (1, 0), (2, 3)] {
            let read = read::rel_page(timeline.as_ref(), rel, blkno, start).unwrap();
            assert_eq!(read, vec![fill; postgres_wal::BLCKSZ], "block {blkno}");
        }
        // Every block, the never-written one too, is in the image layer.
        let versions = timeline
            .store()
            .versions(&Key::rel_block(rel, 1).encode(), 0, start.0)
            .unwrap();
        assert_eq!(versions.len(), 1);
        assert!(versions[0].will_init);
    }

    fn layer(kind: LayerKind, lsn_start: u64, lsn_end: u64) -> LayerInfo {
        LayerInfo {
            name: format!("{kind:?}-{lsn_start}-{lsn_end}"),
            kind,
            key_start: [0; KEY_LEN],
            key_end: [0xff; KEY_LEN],
            lsn_start,
            lsn_end,
            size_bytes: 1,
        }
    }

    #[test]
    fn image_after_enough_deltas_above_the_newest_image() {
        let policy = LayerPolicy {
            image_layer_after_deltas: 2,
            checkpoint_timeout: Duration::from_secs(60),
        };
        assert_eq!(image_due(&[], policy), None);
        let one = [layer(LayerKind::Delta, 10, 20)];
        assert_eq!(image_due(&one, policy), None);
        let two = [
            layer(LayerKind::Delta, 21, 30),
            layer(LayerKind::Delta, 10, 20),
        ];
        assert_eq!(image_due(&two, policy), Some(Lsn(30)));
        let imaged = [
            layer(LayerKind::Image, 30, 30),
            layer(LayerKind::Delta, 31, 40),
            layer(LayerKind::Delta, 21, 30),
            layer(LayerKind::Delta, 10, 20),
        ];
        assert_eq!(image_due(&imaged, policy), None);
        let more = [
            layer(LayerKind::Delta, 41, 50),
            layer(LayerKind::Image, 30, 30),
            layer(LayerKind::Delta, 31, 40),
        ];
        assert_eq!(image_due(&more, policy), Some(Lsn(50)));
    }
}
