//! The per-timeline index in object storage (`index-<generation>.json`): what a
//! pageserver with an empty disk needs to serve the timeline again. It lists every
//! layer file with the generation its object was written under, and
//! `disk_consistent_lsn`, the LSN up to which those layers hold every version: the
//! end of the last record any of them holds (every record stores its `LastRecord`
//! key at its end LSN, so that is where ingest resumes).
//!
//! The index is uploaded only after every layer it lists is acknowledged by the store,
//! so an index never references a missing object; a crash between the two leaves
//! layer objects no index references (orphans), which are harmless.

use postgres_wal::{Lsn, WalSegmentSize};
use remote_storage::Generation;
use serde::{Deserialize, Serialize};
use strata_ids::TenantTimelineId;

use crate::remote::limits::MAX_INDEX_LAYERS;
use crate::timeline::TimelineMeta;

const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexPart {
    pub format_version: u32,
    pub tenant_id: String,
    pub timeline_id: String,
    /// The generation of the attachment that wrote this index.
    pub generation: u32,
    pub disk_consistent_lsn: u64,
    pub timeline: IndexTimeline,
    /// The timeline this one branches from; always null until branches exist (an index
    /// naming one is refused rather than read without it).
    pub ancestor: Option<IndexAncestor>,
    pub layers: Vec<IndexLayer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexAncestor {
    pub timeline_id: String,
    pub lsn: u64,
}

/// The timeline's creation parameters (`timeline.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexTimeline {
    pub system_id: u64,
    pub pg_version: u32,
    pub wal_segment_size: u64,
    pub start_lsn: u64,
    pub data_checksums: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexLayer {
    pub name: String,
    pub size: u64,
    /// The generation in the layer object's name.
    pub generation: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("index of timeline {id}: {reason}")]
pub struct IndexError {
    id: TenantTimelineId,
    reason: String,
}

impl IndexPart {
    pub fn new(
        id: TenantTimelineId,
        generation: Generation,
        meta: &TimelineMeta,
        disk_consistent_lsn: Lsn,
        layers: Vec<IndexLayer>,
    ) -> IndexPart {
        IndexPart {
            format_version: FORMAT_VERSION,
            tenant_id: id.tenant_id.to_string(),
            timeline_id: id.timeline_id.to_string(),
            generation: generation.0,
            disk_consistent_lsn: disk_consistent_lsn.0,
            timeline: IndexTimeline {
                system_id: meta.system_id,
                pg_version: meta.pg_version,
                wal_segment_size: meta.wal_segment_size.bytes(),
                start_lsn: meta.start_lsn.0,
                data_checksums: meta.data_checksums,
            },
            ancestor: None,
            layers,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain structs of strings and integers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses and checks an index read from object storage: it must be ours (format,
    /// ids, the generation in its name) and coherent (layer names, sizes, LSNs), or it
    /// is refused with the reason.
    pub fn decode(
        bytes: &[u8],
        id: TenantTimelineId,
        generation: Generation,
    ) -> Result<IndexPart, IndexError> {
        let index = IndexPart::decode_any_generation(bytes, id)?;
        if index.generation != generation.0 {
            return Err(IndexError {
                id,
                reason: format!(
                    "generation {} inside an object named for {generation}",
                    index.generation
                ),
            });
        }
        Ok(index)
    }

    /// [`IndexPart::decode`] of an index whose generation is not known from a name
    /// (the local copy).
    pub fn decode_any_generation(
        bytes: &[u8],
        id: TenantTimelineId,
    ) -> Result<IndexPart, IndexError> {
        let bad = |reason: String| IndexError { id, reason };
        let index: IndexPart =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not an index: {e}")))?;
        if index.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} (this pageserver reads {FORMAT_VERSION})",
                index.format_version
            )));
        }
        if index.tenant_id != id.tenant_id.to_string()
            || index.timeline_id != id.timeline_id.to_string()
        {
            return Err(bad(format!(
                "it names {}/{}",
                index.tenant_id, index.timeline_id
            )));
        }
        if index.generation == 0 {
            return Err(bad("generation 0".into()));
        }
        if let Some(ancestor) = &index.ancestor {
            return Err(bad(format!(
                "it branches from {ancestor:?}; this pageserver has no branches"
            )));
        }
        if index.layers.len() > MAX_INDEX_LAYERS {
            return Err(bad(format!("{} layers", index.layers.len())));
        }
        if index.disk_consistent_lsn < index.timeline.start_lsn {
            return Err(bad("disk_consistent_lsn below the start LSN".into()));
        }
        for layer in &index.layers {
            if layer_store::parse_layer_name(&layer.name).is_none()
                || layer.size == 0
                || layer.generation == 0
                || layer.generation > index.generation
            {
                return Err(bad(format!("bad layer entry {layer:?}")));
            }
        }
        index.meta().map_err(bad)?;
        Ok(index)
    }

    pub fn meta(&self) -> Result<TimelineMeta, String> {
        Ok(TimelineMeta {
            system_id: self.timeline.system_id,
            pg_version: self.timeline.pg_version,
            wal_segment_size: WalSegmentSize::new(self.timeline.wal_segment_size)
                .map_err(|e| e.to_string())?,
            start_lsn: Lsn(self.timeline.start_lsn),
            data_checksums: self.timeline.data_checksums,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_ids::{TenantId, TimelineId};

    fn id() -> TenantTimelineId {
        TenantTimelineId {
            tenant_id: TenantId(7),
            timeline_id: TimelineId(8),
        }
    }

    fn sample() -> IndexPart {
        let meta = TimelineMeta {
            system_id: 42,
            pg_version: 15,
            wal_segment_size: WalSegmentSize::new(16 << 20).unwrap(),
            start_lsn: Lsn(0x0100_0028),
            data_checksums: true,
        };
        let layer = format!(
            "image__{}-{}__{:016X}",
            "00".repeat(18),
            "FF".repeat(18),
            0x0100_0028
        );
        IndexPart::new(
            id(),
            Generation(3),
            &meta,
            Lsn(0x0200_0000),
            vec![IndexLayer {
                name: layer,
                size: 8192,
                generation: 2,
            }],
        )
    }

    #[test]
    fn round_trips_and_refuses_what_is_not_ours() {
        let index = sample();
        let bytes = index.encode();
        assert_eq!(
            IndexPart::decode(&bytes, id(), Generation(3)).unwrap(),
            index
        );
        assert!(IndexPart::decode(&bytes, id(), Generation(4)).is_err());
        let other = TenantTimelineId {
            timeline_id: TimelineId(9),
            ..id()
        };
        assert!(IndexPart::decode(&bytes, other, Generation(3)).is_err());
        let mut newer_layer = index.clone();
        newer_layer.layers[0].generation = 4;
        assert!(IndexPart::decode(&newer_layer.encode(), id(), Generation(3)).is_err());
        let mut branch = index.clone();
        branch.ancestor = Some(IndexAncestor {
            timeline_id: TimelineId(1).to_string(),
            lsn: 0x0100_0028,
        });
        assert!(IndexPart::decode(&branch.encode(), id(), Generation(3)).is_err());
        let mut bad_name = index.clone();
        bad_name.layers[0].name = "layer".into();
        assert!(IndexPart::decode(&bad_name.encode(), id(), Generation(3)).is_err());
        for len in 0..bytes.len() {
            assert!(IndexPart::decode(&bytes[..len], id(), Generation(3)).is_err());
        }
    }
}
