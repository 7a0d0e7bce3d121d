//! The decisions of WAL offload as pure functions: which safekeeper uploads, which
//! segments object storage holds and what the uploaded LSN is. The offloader
//! ([`super::Offloader`]) only feeds them what it observed.

use std::collections::BTreeSet;

use postgres_wal::{Lsn, WalSegmentSize};
use remote_storage::ObjectMeta;
use strata_ids::NodeId;

use crate::storage::segments::{segment_start, WAL_TIMELINE_ID};

/// A peer's answer to `TimelineStatus` about the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerView {
    pub id: NodeId,
    pub flush_lsn: Lsn,
    pub commit_lsn: Lsn,
    pub remote_consistent_lsn: Lsn,
    /// The peer's timeline stopped accepting WAL after a storage error.
    pub failed: bool,
}

/// This safekeeper's own view of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnView {
    pub id: NodeId,
    pub flush_lsn: Lsn,
    pub commit_lsn: Lsn,
}

/// Which safekeeper uploads the timeline's WAL: the lowest id among this one and its
/// reachable peers that are caught up. The commit LSN is the highest any of them
/// knows; caught up means holding every finished segment below it (a flush LSN at or
/// past the start of the commit LSN's segment), which is all an uploader needs. Being
/// caught up to the segment rather than to the byte keeps the choice steady under load,
/// where flush LSNs move past the commit LSN and back below a newer one all the time.
/// `None` when no safekeeper seen is caught up (this one is behind a peer's commit LSN
/// and every peer that reported is too).
pub fn choose_uploader(
    own: OwnView,
    peers: &[PeerView],
    segment_size: WalSegmentSize,
) -> Option<NodeId> {
    let reachable = peers.iter().filter(|peer| !peer.failed);
    let commit_lsn = reachable
        .clone()
        .map(|peer| peer.commit_lsn)
        .fold(own.commit_lsn, Lsn::max);
    let caught_up = segment_start(segment_size, commit_lsn.segment_number(segment_size));
    reachable
        .map(|peer| (peer.id, peer.flush_lsn))
        .chain(std::iter::once((own.id, own.flush_lsn)))
        .filter(|&(_, flush_lsn)| flush_lsn >= caught_up)
        .map(|(id, _)| id)
        .min()
}

/// The segments of one timeline known to be in object storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedSegments {
    first: u64,
    /// Every segment from `first` below this one is uploaded.
    contiguous_end: u64,
    /// Uploaded segments after a gap.
    beyond: BTreeSet<u64>,
}

impl UploadedSegments {
    /// Nothing uploaded yet of a timeline whose first segment is `first`.
    pub fn new(first: u64) -> UploadedSegments {
        UploadedSegments {
            first,
            contiguous_end: first,
            beyond: BTreeSet::new(),
        }
    }

    pub fn insert(&mut self, segment: u64) {
        if segment < self.contiguous_end {
            return;
        }
        self.beyond.insert(segment);
        while self.beyond.remove(&self.contiguous_end) {
            self.contiguous_end += 1;
        }
    }

    pub fn contains(&self, segment: u64) -> bool {
        (self.first..self.contiguous_end).contains(&segment) || self.beyond.contains(&segment)
    }

    /// The end of the contiguous run from the first segment: every byte of the
    /// timeline's WAL below it is in object storage. [`Lsn::INVALID`] while the first
    /// segment is not.
    pub fn uploaded_lsn(&self, segment_size: WalSegmentSize) -> Lsn {
        if self.contiguous_end == self.first {
            Lsn::INVALID
        } else {
            segment_start(segment_size, self.contiguous_end)
        }
    }

    /// Finished segments below `commit_lsn`'s segment not yet uploaded, in order.
    pub fn missing_below(
        &self,
        commit_lsn: Lsn,
        segment_size: WalSegmentSize,
    ) -> impl Iterator<Item = u64> + '_ {
        (self.contiguous_end..commit_lsn.segment_number(segment_size))
            .filter(|segment| !self.beyond.contains(segment))
    }
}

/// The segment numbers a listing of the timeline's WAL prefix shows as uploaded:
/// objects named as a finished segment of timeline 1 and exactly a segment long
/// (anything else under the prefix, such as a leftover temporary file, is not WAL).
pub fn listed_segments(
    objects: &[ObjectMeta],
    segment_size: WalSegmentSize,
) -> impl Iterator<Item = u64> + '_ {
    objects.iter().filter_map(move |object| {
        let name = object.path.file_name();
        if name.ends_with(crate::storage::segments::PARTIAL_SUFFIX)
            || object.size != segment_size.bytes()
        {
            return None;
        }
        match segment_size.parse_file_name(name) {
            Some((WAL_TIMELINE_ID, segment)) => Some(segment),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use remote_storage::RemotePath;

    const MIB: u64 = 1 << 20;

    fn size() -> WalSegmentSize {
        WalSegmentSize::new(MIB).unwrap()
    }

    fn own(id: u64, flush: u64, commit: u64) -> OwnView {
        OwnView {
            id: NodeId(id),
            flush_lsn: Lsn(flush),
            commit_lsn: Lsn(commit),
        }
    }

    fn peer(id: u64, flush: u64, commit: u64) -> PeerView {
        PeerView {
            id: NodeId(id),
            flush_lsn: Lsn(flush),
            commit_lsn: Lsn(commit),
            remote_consistent_lsn: Lsn::INVALID,
            failed: false,
        }
    }

    #[test]
    fn the_lowest_caught_up_id_uploads() {
        let choose = |own: OwnView, peers: &[PeerView]| choose_uploader(own, peers, size());
        // Everyone caught up: the lowest id, whoever asks.
        let all = [peer(1, 5 * MIB, 5 * MIB), peer(3, 5 * MIB, 5 * MIB)];
        assert_eq!(choose(own(2, 5 * MIB, 5 * MIB), &all), Some(NodeId(1)));
        // Alone (no peers, or none reachable): this one.
        assert_eq!(choose(own(2, 5 * MIB, 5 * MIB), &[]), Some(NodeId(2)));
        // A peer a segment behind the highest commit LSN is not caught up...
        let behind = [peer(1, 4 * MIB - 8, 4 * MIB - 8), peer(3, 5 * MIB, 5 * MIB)];
        assert_eq!(choose(own(2, 5 * MIB, 5 * MIB), &behind), Some(NodeId(2)));
        // ...and neither is this one when a peer knows a later commit LSN.
        assert_eq!(
            choose(own(1, 4 * MIB - 8, 4 * MIB - 8), &behind[1..]),
            Some(NodeId(3))
        );
        // Behind by bytes within the commit LSN's segment is caught up: it holds every
        // finished segment.
        let close = [peer(1, 5 * MIB + 100, 5 * MIB + 100)];
        assert_eq!(
            choose(own(2, 5 * MIB + 900, 5 * MIB + 900), &close),
            Some(NodeId(1))
        );
        // A failed peer is not a candidate.
        let failed = [PeerView {
            failed: true,
            ..peer(1, 5 * MIB, 5 * MIB)
        }];
        assert_eq!(choose(own(2, 5 * MIB, 5 * MIB), &failed), Some(NodeId(2)));
    }

    #[test]
    fn uploaded_lsn_is_the_end_of_the_contiguous_run() {
        let mut uploaded = UploadedSegments::new(3);
        assert_eq!(uploaded.uploaded_lsn(size()), Lsn::INVALID);
        uploaded.insert(5);
        assert_eq!(uploaded.uploaded_lsn(size()), Lsn::INVALID);
        assert_eq!(
            uploaded
                .missing_below(Lsn(7 * MIB + 5), size())
                .collect::<Vec<_>>(),
            [3, 4, 6]
        );
        uploaded.insert(3);
        assert_eq!(uploaded.uploaded_lsn(size()), Lsn(4 * MIB));
        uploaded.insert(4);
        assert_eq!(uploaded.uploaded_lsn(size()), Lsn(6 * MIB));
        assert!(uploaded.contains(3) && uploaded.contains(5) && !uploaded.contains(6));
        // Below the first segment: not the timeline's WAL.
        uploaded.insert(1);
        assert!(!uploaded.contains(1));
        assert_eq!(uploaded.missing_below(Lsn(6 * MIB), size()).count(), 0);
    }

    #[test]
    fn a_listing_counts_finished_full_segments_only() {
        let object = |name: &str, size: u64| ObjectMeta {
            path: RemotePath::new(&format!("tenants/a/timelines/b/wal/{name}")).unwrap(),
            size,
        };
        let objects = [
            object("000000010000000000000003", MIB),
            object("000000010000000000000004", MIB - 1),
            object("000000010000000000000005.partial", MIB),
            object("000000020000000000000006", MIB),
            object("000000010000000000000007.tmp", MIB),
            object("000000010000000000000008", MIB),
        ];
        assert_eq!(
            listed_segments(&objects, size()).collect::<Vec<_>>(),
            [3, 8]
        );
    }
}
