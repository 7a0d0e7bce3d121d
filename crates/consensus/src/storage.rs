//! What the acceptor needs from durable storage.

use postgres_wal::Lsn;
use strata_ids::TenantTimelineId;

use crate::term_history::{Term, TermHistory};

/// The acceptor's persisted state: the content of a timeline's control file.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PersistentState {
    pub id: TenantTimelineId,
    /// PostgreSQL's system identifier; a proposer with another one is refused.
    pub system_id: u64,
    /// `PG_VERSION_NUM` of the compute, e.g. 150018.
    pub pg_version: u32,
    pub wal_segment_size: u32,
    /// Where this timeline's WAL begins (set at creation, never changes).
    pub timeline_start_lsn: Lsn,
    /// The highest term this acceptor has voted in or accepted; it refuses lower ones.
    pub term: Term,
    /// The terms that wrote the WAL this acceptor holds.
    pub term_history: TermHistory,
    /// Highest LSN known committed (held by a quorum in the current term). Persisted
    /// lazily: it may lag in the control file, never run ahead of the flushed WAL.
    pub commit_lsn: Lsn,
    /// Below this every acceptor holds the WAL (the proposer's `truncate_lsn`).
    pub peer_horizon_lsn: Lsn,
}

impl PersistentState {
    /// The state of a new, empty timeline whose WAL begins at `timeline_start_lsn`:
    /// term 0, history `[(0, timeline_start_lsn)]`, every LSN at the start. Storage
    /// created from it must report `write_lsn() == flush_lsn() == timeline_start_lsn`.
    pub fn new(
        id: TenantTimelineId,
        system_id: u64,
        pg_version: u32,
        wal_segment_size: u32,
        timeline_start_lsn: Lsn,
    ) -> PersistentState {
        PersistentState {
            id,
            system_id,
            pg_version,
            wal_segment_size,
            timeline_start_lsn,
            term: Term(0),
            term_history: TermHistory::new(timeline_start_lsn),
            commit_lsn: timeline_start_lsn,
            peer_horizon_lsn: timeline_start_lsn,
        }
    }
}

/// Durable storage of one timeline, as the acceptor uses it.
///
/// Contract: `persist` and `truncate_wal` are durable when they return; `write_wal`
/// is not, until `flush_wal` returns. A crash loses exactly the WAL written and not
/// flushed. `flush_lsn` is always at a record boundary: the end of the last complete
/// WAL record that is durable.
pub trait AcceptorStorage {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The state last persisted.
    fn state(&self) -> &PersistentState;

    /// Replace the persisted state durably.
    fn persist(&mut self, state: &PersistentState) -> Result<(), Self::Error>;

    /// Append WAL at `lsn`, which must equal `write_lsn()`.
    fn write_wal(&mut self, lsn: Lsn, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Make everything written durable.
    fn flush_wal(&mut self) -> Result<(), Self::Error>;

    /// Durably remove all WAL at and after `lsn`.
    fn truncate_wal(&mut self, lsn: Lsn) -> Result<(), Self::Error>;

    /// The end of the WAL written (durable or not).
    fn write_lsn(&self) -> Lsn;

    /// The end of the last complete record that is durable.
    fn flush_lsn(&self) -> Lsn;
}
