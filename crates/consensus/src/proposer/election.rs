//! Deciding an election: the donor, the start LSN, our term history, and where each
//! acceptor's log leaves ours.

use postgres_wal::Lsn;

use super::ProposerError;
use crate::limits::MAX_TERM_HISTORY_ENTRIES;
use crate::messages::VoteResponse;
use crate::term_history::{Term, TermHistory, TermSwitch};

/// The election a proposer won.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Election {
    pub term: Term,
    /// The voter whose log we continue: highest `(last_log_term, flush_lsn)`.
    pub donor: usize,
    /// Where our term begins writing: the donor's flush LSN.
    pub start_lsn: Lsn,
    /// The donor's history cut at its flush LSN, plus `(term, start_lsn)`.
    pub term_history: TermHistory,
    /// Below this every acceptor holds the WAL: the highest any voter knew, raised
    /// as acknowledgements come in; never decreases.
    pub truncate_lsn: Lsn,
}

/// Reject a vote response whose content cannot be right before trusting any of it.
pub(super) fn check_vote_response(acceptor: usize, v: &VoteResponse) -> Result<(), ProposerError> {
    let invalid = |reason: String| Err(ProposerError::InvalidReply { acceptor, reason });
    if let Err(e) = v.term_history.validate() {
        return invalid(e.to_string());
    }
    if v.term_history.last().is_some_and(|s| s.lsn > v.flush_lsn) {
        return invalid(format!(
            "term history goes past the flush LSN {}",
            v.flush_lsn
        ));
    }
    if v.commit_lsn > v.flush_lsn {
        return invalid(format!(
            "commit LSN {} above flush LSN {}",
            v.commit_lsn, v.flush_lsn
        ));
    }
    if v.flush_lsn < v.timeline_start_lsn {
        return invalid(format!(
            "flush LSN {} below the timeline start",
            v.flush_lsn
        ));
    }
    Ok(())
}

impl Election {
    /// Decide the election of `term` from a quorum of given votes (`(acceptor, vote)`).
    pub(super) fn decide(
        term: Term,
        voters: &[(usize, &VoteResponse)],
    ) -> Result<Election, ProposerError> {
        let (first, rest) = voters.split_first().expect("a quorum is never empty");
        for (_, v) in rest {
            if v.timeline_start_lsn != first.1.timeline_start_lsn {
                let pair = (first.1.timeline_start_lsn, v.timeline_start_lsn);
                return Err(ProposerError::TimelineStartMismatch(pair.0, pair.1));
            }
        }
        // The highest (last log term, flush LSN) holds every committed entry: a commit
        // needs a quorum in its term, and that quorum meets ours. Ties go to the
        // lowest index, so the choice is deterministic.
        let rank = |v: &VoteResponse| (v.term_history.last_log_term(v.flush_lsn), v.flush_lsn);
        let &(donor, vote) = voters
            .iter()
            .rev()
            .max_by_key(|(_, v)| rank(v))
            .expect("a quorum is never empty");
        let mut history = vote.term_history.up_to(vote.flush_lsn);
        if history.len() >= MAX_TERM_HISTORY_ENTRIES {
            return Err(ProposerError::TermHistoryFull);
        }
        assert!(
            history.last().is_none_or(|s| s.term < term),
            "the donor voted for {term}, so its history holds only lower terms"
        );
        history.0.push(TermSwitch {
            term,
            lsn: vote.flush_lsn,
        });
        Ok(Election {
            term,
            donor,
            start_lsn: vote.flush_lsn,
            term_history: history,
            truncate_lsn: voters
                .iter()
                .map(|(_, v)| v.truncate_lsn)
                .max()
                .unwrap_or_default(),
        })
    }

    /// Where `acceptor`'s log (as of its vote response) leaves ours: it truncates
    /// there and we stream from there.
    pub(super) fn start_point(
        &self,
        acceptor: usize,
        vote: &VoteResponse,
    ) -> Result<Lsn, ProposerError> {
        TermHistory::find_highest_common_point(
            &vote.term_history,
            &self.term_history,
            vote.flush_lsn,
        )
        .map(|point| point.lsn)
        .ok_or(ProposerError::NoCommonPoint { acceptor })
    }

    pub(super) fn advance_truncate_lsn(&mut self, lsn: Lsn) {
        self.truncate_lsn = self.truncate_lsn.max(lsn);
    }
}
