//! In-memory `AcceptorStorage` that loses unflushed WAL on a crash.

use std::cell::Cell;
use std::rc::Rc;

use consensus::storage::{AcceptorStorage, PersistentState};
use postgres_wal::Lsn;

use super::log::Log;

#[derive(Debug, thiserror::Error)]
#[error("simulated I/O error")]
pub struct SimIoError;

#[derive(Debug)]
pub struct SimStorage {
    persisted: PersistentState,
    log: Log,
    /// Bytes up to here survive a crash.
    durable_end: Lsn,
    /// The last record boundary at or below `durable_end` (kept, as it is asked often).
    flush_lsn: Lsn,
    /// Set by the simulation (which keeps a handle): the next WAL write fails, as on
    /// a full disk or a dying device.
    fail_next_write: Rc<Cell<bool>>,
}

impl SimStorage {
    pub fn create(state: PersistentState) -> SimStorage {
        let start = state.timeline_start_lsn;
        SimStorage {
            persisted: state,
            log: Log::new(start),
            durable_end: start,
            flush_lsn: start,
            fail_next_write: Rc::default(),
        }
    }

    /// A handle that makes the next WAL write fail when set.
    pub fn failure_switch(&self) -> Rc<Cell<bool>> {
        Rc::clone(&self.fail_next_write)
    }

    /// Everything written, durable or not.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The hash of the durable WAL up to `lsn`, if it holds a record boundary there.
    pub fn durable_hash_at(&self, lsn: Lsn) -> Option<u64> {
        (lsn <= self.flush_lsn())
            .then(|| self.log.hash_at(lsn))
            .flatten()
    }

    /// A crash: the WAL written and not flushed is gone; on restart the WAL ends at
    /// the last complete durable record, as a real safekeeper finds it by decoding.
    pub fn crash(&mut self) {
        let end = self.flush_lsn();
        self.log.truncate(end);
        self.durable_end = end;
        self.flush_lsn = end;
        self.fail_next_write.set(false);
    }
}

impl AcceptorStorage for SimStorage {
    type Error = SimIoError;

    fn state(&self) -> &PersistentState {
        &self.persisted
    }

    fn persist(&mut self, state: &PersistentState) -> Result<(), SimIoError> {
        self.persisted = state.clone();
        Ok(())
    }

    fn write_wal(&mut self, lsn: Lsn, bytes: &[u8]) -> Result<(), SimIoError> {
        assert_eq!(lsn, self.log.end(), "write_wal must append at write_lsn");
        if self.fail_next_write.take() {
            return Err(SimIoError);
        }
        self.log.append(bytes);
        Ok(())
    }

    fn flush_wal(&mut self) -> Result<(), SimIoError> {
        self.durable_end = self.log.end();
        self.flush_lsn = self.log.last_boundary().end;
        Ok(())
    }

    fn truncate_wal(&mut self, lsn: Lsn) -> Result<(), SimIoError> {
        self.log.truncate(lsn);
        self.durable_end = self.durable_end.min(lsn);
        self.flush_lsn = self.log.boundary_at_or_below(self.durable_end);
        Ok(())
    }

    fn write_lsn(&self) -> Lsn {
        self.log.end()
    }

    fn flush_lsn(&self) -> Lsn {
        self.flush_lsn
    }
}
