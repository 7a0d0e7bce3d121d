//! Where the proposer reads the WAL it sends ([`consensus::WalSource`]).
//!
//! - Below the elected start LSN the WAL is the donor's: read from the donor
//!   safekeeper (`ReadWal`, up to its flush LSN), or from another safekeeper that
//!   acknowledged it in our term. Never from the compute's own `pg_wal`: the lineage
//!   check proves the compute continues the donor's log at the start LSN, not that its
//!   older bytes are the donor's.
//! - From the start LSN on it is the compute's own WAL (primary mode only): from the
//!   in-memory buffer of what the replication stream delivered, else (a safekeeper
//!   that lags further behind) from the compute's `pg_wal`, where the replication slot
//!   keeps everything above the commit LSN, else from a safekeeper that has it.
//!
//! A remote read blocks the proposer's driver (`block_in_place`), bounded by the call
//! timeout: it only happens for a safekeeper catching up from far behind.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use consensus::proposer::Mode;
use consensus::term_history::Term;
use consensus::WalSource;
use postgres_wal::Lsn;

use crate::pgdata::pg_wal::PgWalDir;
use crate::safekeepers::{describe, Safekeepers};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The latest WAL the replication stream delivered, at most `capacity` bytes: the
/// oldest bytes go first.
#[derive(Debug)]
pub struct WalBuffer {
    start: Lsn,
    data: VecDeque<u8>,
    capacity: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("WAL received at {got} does not continue the stream, which ends at {end}")]
pub struct StreamGap {
    pub got: Lsn,
    pub end: Lsn,
}

impl WalBuffer {
    pub fn new(start: Lsn, capacity: usize) -> WalBuffer {
        WalBuffer {
            start,
            data: VecDeque::new(),
            capacity,
        }
    }

    /// End of the WAL received (exclusive).
    pub fn end(&self) -> Lsn {
        Lsn(self.start.0 + self.data.len() as u64)
    }

    /// Append WAL that must begin exactly where the buffer ends.
    pub fn append(&mut self, at: Lsn, wal: &[u8]) -> Result<(), StreamGap> {
        if at != self.end() {
            return Err(StreamGap {
                got: at,
                end: self.end(),
            });
        }
        self.data.extend(wal);
        let excess = self.data.len().saturating_sub(self.capacity);
        if excess > 0 {
            self.data.drain(..excess);
            self.start = Lsn(self.start.0 + excess as u64);
        }
        Ok(())
    }

    /// `[begin, end)` if the buffer holds all of it.
    pub fn read(&self, begin: Lsn, end: Lsn) -> Option<Vec<u8>> {
        if begin < self.start || end > self.end() || begin > end {
            return None;
        }
        let from = (begin.0 - self.start.0) as usize;
        let to = (end.0 - self.start.0) as usize;
        let (a, b) = self.data.as_slices();
        let mut out = Vec::with_capacity(to - from);
        if from < a.len() {
            out.extend_from_slice(&a[from..to.min(a.len())]);
        }
        if to > a.len() {
            out.extend_from_slice(&b[from.saturating_sub(a.len())..to - a.len()]);
        }
        Some(out)
    }
}

/// The buffer, shared by the replication stream (writer) and the driver (reader).
pub type SharedWalBuffer = Arc<Mutex<WalBuffer>>;

pub fn lock(buffer: &SharedWalBuffer) -> std::sync::MutexGuard<'_, WalBuffer> {
    // A panic while holding the lock leaves the buffer consistent (each method
    // completes its one change before returning), so the data stays usable.
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The compute's own WAL (primary mode).
#[derive(Debug, Clone)]
pub struct ComputeWal {
    pub buffer: SharedWalBuffer,
    pub pg_wal: PgWalDir,
}

#[derive(Debug, Clone, Copy)]
struct ElectedAt {
    term: Term,
    start_lsn: Lsn,
    donor: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("WAL [{begin}, {end}) is not available: {reasons}")]
struct Unavailable {
    begin: Lsn,
    end: Lsn,
    reasons: String,
}

/// The proposer's [`WalSource`].
#[derive(Debug)]
pub struct ProposerWal {
    mode: Mode,
    safekeepers: Safekeepers,
    runtime: tokio::runtime::Handle,
    compute: Option<ComputeWal>,
    elected: Option<ElectedAt>,
    /// Highest flush LSN each safekeeper acknowledged in our term.
    acked: Vec<Lsn>,
}

impl ProposerWal {
    pub fn new(
        mode: Mode,
        safekeepers: Safekeepers,
        runtime: tokio::runtime::Handle,
        compute: Option<ComputeWal>,
    ) -> ProposerWal {
        ProposerWal {
            mode,
            acked: vec![Lsn::INVALID; safekeepers.len()],
            safekeepers,
            runtime,
            compute,
            elected: None,
        }
    }

    pub fn set_elected(&mut self, term: Term, start_lsn: Lsn, donor: usize) {
        self.elected = Some(ElectedAt {
            term,
            start_lsn,
            donor,
        });
    }

    /// Safekeeper `i` acknowledged `flush_lsn` in our term: it holds our log up to there.
    pub fn note_acked(&mut self, i: usize, flush_lsn: Lsn) {
        self.acked[i] = self.acked[i].max(flush_lsn);
    }

    fn read_compute(&self, begin: Lsn, end: Lsn) -> Result<Vec<u8>, String> {
        let Some(compute) = &self.compute else {
            return Err("no compute WAL in sync-safekeepers mode".to_owned());
        };
        if let Some(wal) = lock(&compute.buffer).read(begin, end) {
            return Ok(wal);
        }
        compute.pg_wal.read(begin, end).map_err(|e| e.to_string())
    }

    /// Read from safekeepers: `first` (if any), then every one that acknowledged at
    /// least `end` in our term. Each answer must carry our term: a higher one means a
    /// newer term may have truncated what we read.
    fn read_remote(&self, first: Option<usize>, begin: Lsn, end: Lsn) -> Result<Vec<u8>, String> {
        let Some(elected) = self.elected else {
            return Err("not elected".to_owned());
        };
        let candidates = first
            .into_iter()
            .chain((0..self.acked.len()).filter(|&i| Some(i) != first && self.acked[i] >= end));
        let mut reasons = Vec::new();
        for i in candidates {
            let call = self.safekeepers.read_wal(i, begin, end);
            let answer = tokio::task::block_in_place(|| self.runtime.block_on(call));
            match answer {
                Ok(r) if r.term == elected.term.0 && r.wal.len() as u64 == end.0 - begin.0 => {
                    return Ok(r.wal)
                }
                Ok(r) if r.term != elected.term.0 => reasons.push(format!(
                    "{}: its term is {}, ours {}",
                    self.safekeepers.addr(i),
                    r.term,
                    elected.term
                )),
                Ok(r) => reasons.push(format!(
                    "{}: {} bytes returned",
                    self.safekeepers.addr(i),
                    r.wal.len()
                )),
                Err(status) => reasons.push(format!(
                    "{}: {}",
                    self.safekeepers.addr(i),
                    describe(&status)
                )),
            }
        }
        if reasons.is_empty() {
            reasons.push("no safekeeper holds it".to_owned());
        }
        Err(reasons.join("; "))
    }

    fn read_range(
        &self,
        begin: Lsn,
        end: Lsn,
        start_lsn: Lsn,
        donor: usize,
    ) -> Result<Vec<u8>, BoxError> {
        let unavailable = |reasons: String| -> BoxError {
            Box::new(Unavailable {
                begin,
                end,
                reasons,
            })
        };
        if end <= start_lsn {
            return self
                .read_remote(Some(donor), begin, end)
                .map_err(unavailable);
        }
        match self.read_compute(begin, end) {
            Ok(wal) => Ok(wal),
            Err(local) => self
                .read_remote(None, begin, end)
                .map_err(|remote| unavailable(format!("compute: {local}; safekeepers: {remote}"))),
        }
    }
}

impl WalSource for ProposerWal {
    fn end_lsn(&self) -> Lsn {
        let start = self.elected.map_or(Lsn::INVALID, |e| e.start_lsn);
        match (&self.compute, self.mode) {
            (Some(compute), Mode::Primary) => lock(&compute.buffer).end().max(start),
            _ => start,
        }
    }

    fn read(&mut self, begin: Lsn, end: Lsn) -> Result<Vec<u8>, BoxError> {
        let Some(ElectedAt {
            start_lsn, donor, ..
        }) = self.elected
        else {
            return Err("WAL read before the election".into());
        };
        // A range across the start LSN has two sources.
        if begin < start_lsn && end > start_lsn {
            let mut wal = self.read_range(begin, start_lsn, start_lsn, donor)?;
            wal.extend(self.read_range(start_lsn, end, start_lsn, donor)?);
            return Ok(wal);
        }
        self.read_range(begin, end, start_lsn, donor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_keeps_the_latest_bytes_and_refuses_gaps() {
        let mut buffer = WalBuffer::new(Lsn(1000), 10);
        buffer.append(Lsn(1000), &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(buffer.read(Lsn(1001), Lsn(1004)), Some(vec![2, 3, 4]));
        buffer.append(Lsn(1006), &[7, 8, 9, 10, 11, 12]).unwrap();
        assert_eq!(buffer.end(), Lsn(1012));
        // The two oldest bytes made room.
        assert_eq!(buffer.read(Lsn(1001), Lsn(1003)), None);
        assert_eq!(
            buffer.read(Lsn(1002), Lsn(1012)),
            Some(vec![3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        );
        assert_eq!(buffer.read(Lsn(1010), Lsn(1013)), None);
        assert_eq!(buffer.read(Lsn(1012), Lsn(1012)), Some(vec![]));
        assert!(buffer.append(Lsn(1013), &[0]).is_err());
        assert!(buffer.append(Lsn(1011), &[0]).is_err());
    }

    #[test]
    fn buffer_reads_across_the_ring_boundary() {
        let mut buffer = WalBuffer::new(Lsn(0), 8);
        let mut next = 0u8;
        for _ in 0..20 {
            let chunk: Vec<u8> = (0..3)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            let end = buffer.end();
            buffer.append(end, &chunk).unwrap();
            let end = buffer.end();
            let from = end.0.saturating_sub(8);
            let expect: Vec<u8> = (from..end.0).map(|v| (v + 1) as u8).collect();
            assert_eq!(buffer.read(Lsn(from), end), Some(expect));
        }
    }
}
