//! Terms and term histories.

use postgres_wal::Lsn;

/// A Paxos term (ballot). Each election uses a term higher than any seen before.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Term(pub u64);

/// The WAL position where a term began writing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TermSwitch {
    pub term: Term,
    pub lsn: Lsn,
}

/// Which term wrote which part of a log: switches in increasing term and LSN order.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct TermHistory(pub Vec<TermSwitch>);
