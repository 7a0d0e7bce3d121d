//! Which local WAL may be removed: one function, so every input that must hold WAL
//! back is taken into account in one place.

use postgres_wal::Lsn;

/// Everything that holds local WAL back. Fields join as their features do: the
/// pageserver's remote-consistent LSN (WAL it has not made durable in object storage
/// must stay streamable) and the offload LSN (WAL not yet uploaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovalHorizonInputs {
    /// The commit LSN. Uncommitted WAL may still be needed by the acceptor (it is
    /// what elections compare) and committed WAL near it by readers and peers.
    pub commit_lsn: Lsn,
    /// How many bytes of WAL below the commit LSN to keep anyway, for lagging
    /// readers and peers (configuration).
    pub retention_bytes: u64,
}

/// The LSN below which local WAL may be removed. Hand it to
/// [`TimelineStorage::remove_segments_below`](super::TimelineStorage::remove_segments_below),
/// which keeps the segment holding it.
pub fn removal_horizon(inputs: &RemovalHorizonInputs) -> Lsn {
    Lsn(inputs.commit_lsn.0.saturating_sub(inputs.retention_bytes))
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
            })
        };
        assert_eq!(horizon(0x500_0000, 0), Lsn(0x500_0000));
        assert_eq!(horizon(0x500_0000, 0x100_0000), Lsn(0x400_0000));
        assert_eq!(horizon(0x50, 0x100_0000), Lsn(0));
    }
}
