//! Test doubles shared by the unit tests of the acceptor and the proposer.

use postgres_wal::Lsn;
use strata_ids::{TenantId, TenantTimelineId, TimelineId};

use crate::proposer::WalSource;
use crate::storage::{AcceptorStorage, PersistentState};

pub(crate) const START: Lsn = Lsn(0x100);

/// Storage in memory where every write is whole records, so the flush LSN is where
/// the last flush ended. Counts durable operations to check what was persisted when.
#[derive(Debug)]
pub(crate) struct MemoryStorage {
    pub(crate) persisted: PersistentState,
    pub(crate) wal: Vec<u8>,
    pub(crate) flushed: usize,
    pub(crate) persist_calls: usize,
    pub(crate) fail_writes: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("injected storage failure")]
pub(crate) struct Injected;

impl MemoryStorage {
    pub(crate) fn new() -> MemoryStorage {
        MemoryStorage {
            persisted: PersistentState::new(timeline(), 42, 150_018, 1 << 24, START),
            wal: Vec::new(),
            flushed: 0,
            persist_calls: 0,
            fail_writes: false,
        }
    }

    fn end(&self, len: usize) -> Lsn {
        Lsn(START.0 + len as u64)
    }
}

impl AcceptorStorage for MemoryStorage {
    type Error = Injected;

    fn state(&self) -> &PersistentState {
        &self.persisted
    }

    fn persist(&mut self, state: &PersistentState) -> Result<(), Injected> {
        self.persist_calls += 1;
        self.persisted = state.clone();
        Ok(())
    }

    fn write_wal(&mut self, lsn: Lsn, bytes: &[u8]) -> Result<(), Injected> {
        assert_eq!(lsn, self.write_lsn());
        if self.fail_writes {
            return Err(Injected);
        }
        self.wal.extend_from_slice(bytes);
        Ok(())
    }

    fn flush_wal(&mut self) -> Result<(), Injected> {
        self.flushed = self.wal.len();
        Ok(())
    }

    fn truncate_wal(&mut self, lsn: Lsn) -> Result<(), Injected> {
        let len = (lsn.0 - START.0) as usize;
        self.wal.truncate(len);
        self.flushed = self.flushed.min(len);
        Ok(())
    }

    fn write_lsn(&self) -> Lsn {
        self.end(self.wal.len())
    }

    fn flush_lsn(&self) -> Lsn {
        self.end(self.flushed)
    }
}

pub(crate) fn timeline() -> TenantTimelineId {
    TenantTimelineId {
        tenant_id: TenantId(1),
        timeline_id: TimelineId(2),
    }
}

/// WAL in memory from `START`: what a compute has written.
#[derive(Debug, Default)]
pub(crate) struct VecWal(pub(crate) Vec<u8>);

impl WalSource for VecWal {
    fn end_lsn(&self) -> Lsn {
        Lsn(START.0 + self.0.len() as u64)
    }

    fn read(
        &mut self,
        begin: Lsn,
        end: Lsn,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        let from = usize::try_from(begin.0 - START.0)?;
        let to = usize::try_from(end.0 - START.0)?;
        Ok(self.0[from..to].to_vec())
    }
}
