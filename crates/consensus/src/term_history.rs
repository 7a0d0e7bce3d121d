//! Terms and term histories.
//!
//! A term history says which term wrote which part of a log: entry `(t, lsn)` means
//! term `t`'s proposer began writing at `lsn`, and its WAL runs until the next entry's
//! LSN (or the end of the log for the last entry). Two logs whose histories share the
//! entry `(t, lsn)` hold identical bytes from `lsn` up to where term `t` ends in the
//! shorter of the two, because a term has exactly one proposer writing one stream.

use std::fmt;

use postgres_wal::Lsn;

use crate::limits::MAX_TERM_HISTORY_ENTRIES;

/// A Paxos term (ballot). Each election uses a term higher than any seen before.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Term(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The WAL position where a term began writing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TermSwitch {
    pub term: Term,
    pub lsn: Lsn,
}

/// Which term wrote which part of a log: switches in increasing term and LSN order.
///
/// A timeline is created with the history `[(0, timeline_start_lsn)]`
/// ([`crate::storage::PersistentState::new`]), so every two histories of one timeline
/// share at least their first entry.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct TermHistory(pub Vec<TermSwitch>);

/// Why a term history is not well formed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TermHistoryError {
    #[error("term history is empty")]
    Empty,
    #[error("term history has {0} entries, more than the limit of {MAX_TERM_HISTORY_ENTRIES}")]
    TooLong(usize),
    #[error("term history entry {index} ({term}, {lsn}) does not have a higher term than the one before")]
    TermNotIncreasing { index: usize, term: Term, lsn: Lsn },
    #[error("term history entry {index} ({term}, {lsn}) begins before the one before")]
    LsnDecreasing { index: usize, term: Term, lsn: Lsn },
}

impl TermHistory {
    /// The history of a new timeline: term 0 "wrote" everything up to its start.
    pub fn new(timeline_start_lsn: Lsn) -> TermHistory {
        TermHistory(vec![TermSwitch {
            term: Term(0),
            lsn: timeline_start_lsn,
        }])
    }

    pub fn last(&self) -> Option<TermSwitch> {
        self.0.last().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Check the shape every history must have: not empty, bounded, terms strictly
    /// increasing and LSNs never decreasing. LSNs may repeat: a proposer that was
    /// elected and wrote nothing leaves its successor starting at the same LSN (that
    /// is how sync-safekeepers makes earlier WAL committable in a new term).
    pub fn validate(&self) -> Result<(), TermHistoryError> {
        if self.0.is_empty() {
            return Err(TermHistoryError::Empty);
        }
        if self.0.len() > MAX_TERM_HISTORY_ENTRIES {
            return Err(TermHistoryError::TooLong(self.0.len()));
        }
        for (index, pair) in self.0.windows(2).enumerate() {
            let (before, entry) = (pair[0], pair[1]);
            let (index, term, lsn) = (index + 1, entry.term, entry.lsn);
            if entry.term <= before.term {
                return Err(TermHistoryError::TermNotIncreasing { index, term, lsn });
            }
            if entry.lsn < before.lsn {
                return Err(TermHistoryError::LsnDecreasing { index, term, lsn });
            }
        }
        Ok(())
    }

    /// The switches that happened at or before `lsn`: the history of a log that ends
    /// at `lsn`. A term that begins exactly at `lsn` is kept: its proposer adopted the
    /// whole log up to `lsn`, which is what lets it vouch for that WAL.
    pub fn up_to(&self, lsn: Lsn) -> TermHistory {
        TermHistory(
            self.0
                .iter()
                .take_while(|s| s.lsn <= lsn)
                .copied()
                .collect(),
        )
    }

    /// The term that wrote the log ending at `flush_lsn`: the last switch at or below
    /// it, or term 0 if there is none. Elections compare acceptors by
    /// `(last_log_term, flush_lsn)`.
    pub fn last_log_term(&self, flush_lsn: Lsn) -> Term {
        self.0
            .iter()
            .take_while(|s| s.lsn <= flush_lsn)
            .last()
            .map_or(Term(0), |s| s.term)
    }

    /// Where an acceptor's log (`ours`, ending at `our_flush_lsn`) stops agreeing with
    /// a proposer's (`theirs`): the last term both share, and the LSN where that term
    /// ends in the earlier of the two logs. The proposer's last term never ends (it is
    /// still writing), ours ends at `our_flush_lsn`. `None` if the histories share no
    /// term at all.
    ///
    /// `ours` must already be cut to `our_flush_lsn` ([`TermHistory::up_to`]). The
    /// result is where the acceptor truncates and the proposer starts streaming.
    pub fn find_highest_common_point(
        ours: &TermHistory,
        theirs: &TermHistory,
        our_flush_lsn: Lsn,
    ) -> Option<TermSwitch> {
        let common = ours
            .0
            .iter()
            .zip(&theirs.0)
            .take_while(|(a, b)| a.term == b.term && a.lsn == b.lsn)
            .count();
        let last = common.checked_sub(1)?;
        let our_end = ours.0.get(last + 1).map_or(our_flush_lsn, |s| s.lsn);
        let lsn = match theirs.0.get(last + 1) {
            Some(next) => our_end.min(next.lsn),
            None => our_end,
        };
        Some(TermSwitch {
            term: ours.0[last].term,
            lsn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(u64, u64)]) -> TermHistory {
        TermHistory(
            entries
                .iter()
                .map(|&(term, lsn)| TermSwitch {
                    term: Term(term),
                    lsn: Lsn(lsn),
                })
                .collect(),
        )
    }

    fn point(term: u64, lsn: u64) -> Option<TermSwitch> {
        Some(TermSwitch {
            term: Term(term),
            lsn: Lsn(lsn),
        })
    }

    #[test]
    fn validate_accepts_increasing_terms_and_repeated_lsns() {
        assert_eq!(history(&[(0, 10), (1, 10), (3, 50)]).validate(), Ok(()));
        assert_eq!(TermHistory::new(Lsn(8)).validate(), Ok(()));
    }

    #[test]
    fn validate_refuses_bad_shapes() {
        assert_eq!(history(&[]).validate(), Err(TermHistoryError::Empty));
        assert!(matches!(
            history(&[(1, 10), (1, 20)]).validate(),
            Err(TermHistoryError::TermNotIncreasing { index: 1, .. })
        ));
        assert!(matches!(
            history(&[(2, 10), (1, 20)]).validate(),
            Err(TermHistoryError::TermNotIncreasing { index: 1, .. })
        ));
        assert!(matches!(
            history(&[(1, 20), (2, 10)]).validate(),
            Err(TermHistoryError::LsnDecreasing { index: 1, .. })
        ));
        let long: Vec<(u64, u64)> = (0..=MAX_TERM_HISTORY_ENTRIES as u64)
            .map(|t| (t, 0))
            .collect();
        assert_eq!(
            history(&long).validate(),
            Err(TermHistoryError::TooLong(MAX_TERM_HISTORY_ENTRIES + 1))
        );
    }

    #[test]
    fn up_to_keeps_switches_at_or_below_the_lsn() {
        let h = history(&[(0, 10), (1, 10), (2, 30), (4, 50)]);
        assert_eq!(h.up_to(Lsn(9)), history(&[]));
        assert_eq!(h.up_to(Lsn(10)), history(&[(0, 10), (1, 10)]));
        assert_eq!(h.up_to(Lsn(49)), history(&[(0, 10), (1, 10), (2, 30)]));
        assert_eq!(h.up_to(Lsn(50)), h);
    }

    #[test]
    fn last_log_term_is_the_term_that_wrote_the_end() {
        let h = history(&[(0, 10), (1, 10), (2, 30)]);
        assert_eq!(h.last_log_term(Lsn(5)), Term(0));
        assert_eq!(h.last_log_term(Lsn(10)), Term(1));
        assert_eq!(h.last_log_term(Lsn(29)), Term(1));
        assert_eq!(h.last_log_term(Lsn(30)), Term(2));
        assert_eq!(h.last_log_term(Lsn(1000)), Term(2));
    }

    #[test]
    fn common_point_of_an_acceptor_behind_in_the_proposers_last_term() {
        // The acceptor holds part of term 2; the proposer continues term 2 and adds 3.
        let ours = history(&[(0, 0), (2, 100)]);
        let theirs = history(&[(0, 0), (2, 100), (3, 500)]);
        assert_eq!(
            TermHistory::find_highest_common_point(&ours, &theirs, Lsn(300)),
            point(2, 300)
        );
        // Beyond where term 2 ended for the proposer: the tail is divergent.
        assert_eq!(
            TermHistory::find_highest_common_point(&ours, &theirs, Lsn(700)),
            point(2, 500)
        );
    }

    #[test]
    fn common_point_when_the_acceptor_has_a_divergent_term() {
        // The acceptor wrote term 3 after 200; the proposer's history went 2 → 4 at 250.
        let ours = history(&[(0, 0), (2, 100), (3, 200)]);
        let theirs = history(&[(0, 0), (2, 100), (4, 250)]);
        assert_eq!(
            TermHistory::find_highest_common_point(&ours, &theirs, Lsn(400)),
            point(2, 200)
        );
        let theirs = history(&[(0, 0), (2, 100), (4, 150)]);
        assert_eq!(
            TermHistory::find_highest_common_point(&ours, &theirs, Lsn(400)),
            point(2, 150)
        );
    }

    #[test]
    fn common_point_when_the_acceptor_is_in_the_proposers_current_term() {
        let h = history(&[(0, 0), (5, 100)]);
        assert_eq!(
            TermHistory::find_highest_common_point(&h, &h, Lsn(180)),
            point(5, 180)
        );
    }

    #[test]
    fn common_point_of_a_fresh_acceptor_is_the_timeline_start() {
        let ours = TermHistory::new(Lsn(64));
        let theirs = history(&[(0, 64), (1, 64)]);
        assert_eq!(
            TermHistory::find_highest_common_point(&ours, &theirs, Lsn(64)),
            point(0, 64)
        );
    }

    #[test]
    fn no_common_point_when_the_first_entries_differ() {
        let ours = history(&[(0, 64)]);
        let theirs = history(&[(0, 128), (1, 128)]);
        assert_eq!(
            TermHistory::find_highest_common_point(&ours, &theirs, Lsn(64)),
            None
        );
        assert_eq!(
            TermHistory::find_highest_common_point(&history(&[]), &theirs, Lsn(64)),
            None
        );
    }
}
