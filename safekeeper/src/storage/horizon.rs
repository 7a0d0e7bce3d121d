//! Which local WAL may be removed: one function, so every input that must hold WAL
//! back is taken into account in one place.

use postgres_wal::Lsn;

/// Everything that holds local WAL back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovalHorizonInputs {
    /// The commit LSN. Uncommitted WAL may still be needed by the acceptor (it is
    /// what elections compare) and committed WAL near it by readers and peers.
    pub commit_lsn: Lsn,
    /// How many bytes of WAL below the commit LSN to keep anyway, for lagging
    /// readers and peers (configuration).
    pub retention_bytes: u64,
    /// With an object store configured: what offload holds back.
    pub offload: Option<OffloadHorizon>,
}

/// The positions that hold local WAL back when WAL is offloaded to object storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadHorizon {
    /// End of the contiguous run of segments in object storage: WAL above it exists
    /// only locally (and on peers).
    pub uploaded_lsn: Lsn,
    /// The pageserver's remote-consistent LSN: WAL above it is not yet in its layers in
    /// object storage, so a pageserver restarted or restored from there needs it
    /// streamed again. 0 (nothing removed) until the pageserver reports it.
    pub remote_consistent_lsn: Lsn,
}

/// The LSN below which local WAL may be removed. Hand it to
/// [`TimelineStorage::remove_segments_below`](super::TimelineStorage::remove_segments_below),
/// which keeps the segment holding it.
pub fn removal_horizon(inputs: &RemovalHorizonInputs) -> Lsn {
    let kept_from = match inputs.offload {
        Some(offload) => inputs
            .commit_lsn
            .min(offload.uploaded_lsn)
            .min(offload.remote_consistent_lsn),
        None => inputs.commit_lsn,
    };
    Lsn(kept_from.0.saturating_sub(inputs.retention_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizon_is_commit_minus_retention_never_below_zero() {
        let horizon = |commit, retention| {
            removal_horizon(&RemovalHorizonInputs {
                commit_lsn: Lsn(commit),
                retention_bytes: retention,
                offload: None,
            })
        };
        assert_eq!(horizon(0x500_0000, 0), Lsn(0x500_0000));
        assert_eq!(horizon(0x500_0000, 0x100_0000), Lsn(0x400_0000));
        assert_eq!(horizon(0x50, 0x100_0000), Lsn(0));
    }

    #[test]
    fn offload_horizon_is_the_lowest_of_commit_uploaded_and_remote_consistent() {
        let horizon = |commit, uploaded, remote, retention| {
            removal_horizon(&RemovalHorizonInputs {
                commit_lsn: Lsn(commit),
                retention_bytes: retention,
                offload: Some(OffloadHorizon {
                    uploaded_lsn: Lsn(uploaded),
                    remote_consistent_lsn: Lsn(remote),
                }),
            })
        };
        assert_eq!(horizon(0x500, 0x300, 0x400, 0), Lsn(0x300));
        assert_eq!(horizon(0x500, 0x600, 0x400, 0), Lsn(0x400));
        assert_eq!(horizon(0x200, 0x600, 0x400, 0), Lsn(0x200));
        assert_eq!(horizon(0x500, 0x600, 0x400, 0x100), Lsn(0x300));
        // Nothing reported yet: nothing removed.
        assert_eq!(horizon(0x500, 0x600, 0, 0), Lsn(0));
        assert_eq!(horizon(0x500, 0, 0x400, 0), Lsn(0));
    }
}
