//! The acceptor: one timeline's side of the protocol, as a pure state machine.

use postgres_wal::Lsn;
use strata_ids::{NodeId, TenantTimelineId};

use crate::limits::MAX_WAL_BYTES_PER_APPEND;
use crate::messages::{
    AcceptorGreeting, AcceptorMessage, AppendRequest, AppendResponse, ProposerElected,
    ProposerGreeting, ProposerMessage, VoteRequest, VoteResponse,
};
use crate::storage::{AcceptorStorage, PersistentState};
use crate::term_history::{Term, TermHistory, TermHistoryError};

/// The Paxos acceptor of one timeline (one per timeline in each safekeeper).
///
/// A pure state machine over an injected [`AcceptorStorage`]: messages in, replies
/// out. It never creates a timeline: it is opened on storage that already holds a
/// [`PersistentState`] (see [`PersistentState::new`]).
///
/// # Driving it (the daemon)
///
/// ```text
/// let mut acceptor = Acceptor::new(node_id, storage)?;
/// loop {
///     while let Some(msg) = inbound.try_recv() {   // drain what has arrived
///         if let Some(reply) = acceptor.handle(msg)? { send(reply) }
///     }
///     // queue empty (also: at a segment end, on disconnect): one fsync per batch
///     if let Some(reply) = acceptor.flush()? { send(reply) }
///     wait_for_inbound();
/// }
/// ```
///
/// - [`Acceptor::handle`] answers greetings and votes at once, answers nothing to an
///   accepted `Elected` or `AppendRequest`: appends are written, not flushed.
/// - [`Acceptor::flush`] makes the written WAL durable and returns the
///   `AppendResponse` due for the appends accepted since the last flush (`None` if
///   none). It belongs to the proposer that sent those appends; its `term` tells that
///   proposer whether it was fenced meanwhile.
/// - A proposer whose term is lower than ours gets an `AppendResponse` carrying our
///   term in answer to its `Elected` or `AppendRequest`: it must exit (fencing).
/// - `Err(AcceptorError::Refused(_))`: the message broke the protocol (wrong
///   timeline, gap, stale election…); close that proposer's connection. The acceptor
///   is unchanged by a refused message (except that a higher term it carried may have
///   been adopted) and keeps serving others.
/// - `Err(AcceptorError::Storage(_))`: the storage failed; the acceptor then answers
///   [`AcceptorError::Failed`] to everything. Drop it, and reopen the storage (which
///   re-derives its state from disk) with a new `Acceptor`.
///
/// The daemon must see a greeting first on each connection before passing on its
/// other messages: the acceptor checks each greeting but keeps no per-connection state.
#[derive(Debug)]
pub struct Acceptor<S: AcceptorStorage> {
    node_id: NodeId,
    storage: S,
    /// The state as it should be persisted. Equal to `storage.state()` except for
    /// `commit_lsn` and `peer_horizon_lsn`, which are persisted lazily.
    state: PersistentState,
    /// Highest commit LSN announced by the proposer of the current term; our commit
    /// LSN follows it as far as our flushed WAL goes.
    commit_candidate: Lsn,
    /// WAL was written since the last flush.
    unflushed: bool,
    /// An append was accepted since the last flush: an `AppendResponse` is due.
    reply_due: bool,
    /// A storage call failed: the storage's state is unknown, refuse everything.
    failed: bool,
}

/// Why the acceptor did not process a message.
#[derive(Debug, thiserror::Error)]
pub enum AcceptorError {
    /// The message broke the protocol; close the proposer's connection.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// Storage failed; the acceptor must be reopened.
    #[error("storage failed: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A storage call failed earlier; reopen the storage.
    #[error("acceptor stopped after a storage failure; reopen the timeline")]
    Failed,
    /// The storage handed to [`Acceptor::new`] holds an impossible state.
    #[error("invalid persisted state: {0}")]
    InvalidState(String),
}

/// A protocol violation by the proposer, one variant per rule.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Refusal {
    #[error("greeting names timeline {theirs}, this acceptor serves {ours}")]
    WrongTimeline {
        ours: TenantTimelineId,
        theirs: TenantTimelineId,
    },
    #[error("proposer's system id {theirs} differs from the timeline's {ours}")]
    SystemIdMismatch { ours: u64, theirs: u64 },
    #[error("proposer's PostgreSQL {theirs} is not the timeline's major version ({ours})")]
    PgVersionMismatch { ours: u32, theirs: u32 },
    #[error("proposer's WAL segment size {theirs} differs from the timeline's {ours}")]
    WalSegmentSizeMismatch { ours: u32, theirs: u32 },
    #[error("invalid term history: {0}")]
    InvalidTermHistory(#[from] TermHistoryError),
    #[error("elected message for term {term} has a history ending in term {last}")]
    HistoryNotOfElectedTerm { term: Term, last: Term },
    #[error("proposer's term history shares no term with ours")]
    NoCommonPoint,
    #[error("proposer starts streaming at {proposed}, our logs diverge at {expected}")]
    StartMismatch { expected: Lsn, proposed: Lsn },
    #[error("truncating at {start} would remove committed WAL (commit LSN {commit_lsn})")]
    TruncateBelowCommit { start: Lsn, commit_lsn: Lsn },
    #[error("append in term {term} before its proposer's election reached this acceptor")]
    NotElected { term: Term },
    #[error("append at {begin_lsn} would leave a gap after our WAL end {write_lsn}")]
    Gap { write_lsn: Lsn, begin_lsn: Lsn },
    #[error("append at {begin_lsn} would overwrite WAL written up to {write_lsn}")]
    Overwrite { write_lsn: Lsn, begin_lsn: Lsn },
    #[error("append carries {bytes} WAL bytes, more than {MAX_WAL_BYTES_PER_APPEND}")]
    AppendTooLarge { bytes: usize },
    #[error("append [{begin_lsn}, {end_lsn}) does not match its {bytes} WAL bytes")]
    AppendLengthMismatch {
        begin_lsn: Lsn,
        end_lsn: Lsn,
        bytes: usize,
    },
}

impl AcceptorError {
    /// True if the proposer broke the protocol (as opposed to our storage failing).
    pub fn is_refusal(&self) -> bool {
        matches!(self, AcceptorError::Refused(_))
    }
}

fn storage_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> AcceptorError {
    AcceptorError::Storage(Box::new(e))
}

impl<S: AcceptorStorage> Acceptor<S> {
    /// Open the acceptor of the timeline held by `storage`, checking that its state is
    /// possible (a valid history, committed WAL present).
    pub fn new(node_id: NodeId, storage: S) -> Result<Acceptor<S>, AcceptorError> {
        let state = storage.state().clone();
        check_state(&state, storage.write_lsn(), storage.flush_lsn())?;
        Ok(Acceptor {
            node_id,
            commit_candidate: state.commit_lsn,
            state,
            storage,
            unflushed: false,
            reply_due: false,
            failed: false,
        })
    }

    /// Process one message from a proposer. See the type's documentation for what the
    /// replies and errors mean.
    pub fn handle(
        &mut self,
        msg: ProposerMessage,
    ) -> Result<Option<AcceptorMessage>, AcceptorError> {
        if self.failed {
            return Err(AcceptorError::Failed);
        }
        let result = match msg {
            ProposerMessage::Greeting(g) => self.on_greeting(&g).map(Some),
            ProposerMessage::VoteRequest(v) => self.on_vote_request(&v).map(Some),
            ProposerMessage::Elected(e) => self.on_elected(e),
            ProposerMessage::Append(a) => self.on_append(&a),
        };
        self.note_failure(&result);
        result
    }

    /// Make the written WAL durable (one fsync for everything since the last flush)
    /// and return the `AppendResponse` due, if any append was accepted since.
    pub fn flush(&mut self) -> Result<Option<AcceptorMessage>, AcceptorError> {
        if self.failed {
            return Err(AcceptorError::Failed);
        }
        let result = self
            .flush_wal()
            .map(|()| std::mem::take(&mut self.reply_due).then(|| self.append_response()));
        self.note_failure(&result);
        result
    }

    /// Persist the lazily persisted positions (commit LSN, peer horizon) now, if they
    /// moved: on a clean shutdown, or periodically so that a restart does not lag far.
    pub fn persist_lsns(&mut self) -> Result<(), AcceptorError> {
        if self.failed {
            return Err(AcceptorError::Failed);
        }
        let persisted = self.storage.state();
        if (persisted.commit_lsn, persisted.peer_horizon_lsn)
            == (self.state.commit_lsn, self.state.peer_horizon_lsn)
        {
            return Ok(());
        }
        let result = self.persist();
        self.note_failure(&result);
        result
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The current state (ahead of the persisted one in `commit_lsn` and
    /// `peer_horizon_lsn`, which are persisted lazily).
    pub fn state(&self) -> &PersistentState {
        &self.state
    }

    pub fn term(&self) -> Term {
        self.state.term
    }

    pub fn commit_lsn(&self) -> Lsn {
        self.state.commit_lsn
    }

    pub fn flush_lsn(&self) -> Lsn {
        self.storage.flush_lsn()
    }

    /// The history of the WAL this acceptor holds durably (cut at its flush LSN).
    pub fn term_history(&self) -> TermHistory {
        self.state.term_history.up_to(self.storage.flush_lsn())
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Give the storage back (to close it, or in a simulation to crash it).
    pub fn into_storage(self) -> S {
        self.storage
    }

    fn note_failure<T>(&mut self, result: &Result<T, AcceptorError>) {
        if matches!(result, Err(AcceptorError::Storage(_))) {
            self.failed = true;
        }
    }

    fn on_greeting(&self, g: &ProposerGreeting) -> Result<AcceptorMessage, AcceptorError> {
        let ours = &self.state;
        if g.id != ours.id {
            return Err(Refusal::WrongTimeline {
                ours: ours.id,
                theirs: g.id,
            }
            .into());
        }
        if g.system_id != ours.system_id {
            let (ours, theirs) = (ours.system_id, g.system_id);
            return Err(Refusal::SystemIdMismatch { ours, theirs }.into());
        }
        // Minor versions share the WAL format; a major upgrade needs a new timeline.
        if g.pg_version / 10000 != ours.pg_version / 10000 {
            let (ours, theirs) = (ours.pg_version, g.pg_version);
            return Err(Refusal::PgVersionMismatch { ours, theirs }.into());
        }
        if g.wal_segment_size != ours.wal_segment_size {
            let (ours, theirs) = (ours.wal_segment_size, g.wal_segment_size);
            return Err(Refusal::WalSegmentSizeMismatch { ours, theirs }.into());
        }
        Ok(AcceptorMessage::Greeting(AcceptorGreeting {
            node_id: self.node_id,
            term: self.state.term,
        }))
    }

    fn on_vote_request(&mut self, v: &VoteRequest) -> Result<AcceptorMessage, AcceptorError> {
        // The response's positions decide the election: they must be durable, or a
        // crash could lose WAL the new proposer counts on (Neon #9259).
        self.flush_wal()?;
        let vote_given = v.term > self.state.term;
        if vote_given {
            // Persisted before the reply: after a crash we must not vote in this term
            // again, nor accept a lower term's appends.
            self.state.term = v.term;
            self.persist()?;
        }
        Ok(AcceptorMessage::VoteResponse(VoteResponse {
            term: self.state.term,
            vote_given,
            flush_lsn: self.storage.flush_lsn(),
            commit_lsn: self.state.commit_lsn,
            truncate_lsn: self.state.peer_horizon_lsn,
            term_history: self.term_history(),
            timeline_start_lsn: self.state.timeline_start_lsn,
        }))
    }

    fn on_elected(&mut self, e: ProposerElected) -> Result<Option<AcceptorMessage>, AcceptorError> {
        if e.term < self.state.term {
            return Ok(Some(self.append_response()));
        }
        e.term_history.validate().map_err(Refusal::from)?;
        let last = e.term_history.last().map_or(Term(0), |s| s.term);
        if last != e.term {
            return Err(Refusal::HistoryNotOfElectedTerm { term: e.term, last }.into());
        }
        if e.term > self.state.term {
            // Only one proposer is elected per term, so adopting it is as safe as
            // having voted for it; persisted so that lower terms stay fenced.
            self.state.term = e.term;
            self.persist()?;
        }
        let start = self.check_start_point(&e)?;
        // Truncate before adopting the history: a history naming the new term with
        // the old tail still on disk would let that tail pass for the new term's WAL.
        self.storage.truncate_wal(start).map_err(storage_error)?;
        self.unflushed = false;
        assert_eq!(
            (self.storage.write_lsn(), self.storage.flush_lsn()),
            (start, start),
            "storage must end exactly at the truncation point"
        );
        self.state.term_history = e.term_history;
        // Candidates announced by earlier terms' proposers do not apply to this log.
        self.commit_candidate = self.state.commit_lsn;
        self.persist()?;
        Ok(None)
    }

    /// Where our log stops agreeing with the proposer's; it must be where the
    /// proposer computed it from our vote, and never below our commit LSN.
    fn check_start_point(&self, e: &ProposerElected) -> Result<Lsn, Refusal> {
        let flush_lsn = self.storage.flush_lsn();
        let ours = self.state.term_history.up_to(flush_lsn);
        let point = TermHistory::find_highest_common_point(&ours, &e.term_history, flush_lsn)
            .ok_or(Refusal::NoCommonPoint)?;
        // A late Elected of a previous connection, or our log moved since the vote:
        // the proposer reconnects and recomputes from a fresh vote response.
        if point.lsn != e.start_streaming_at {
            let (expected, proposed) = (point.lsn, e.start_streaming_at);
            return Err(Refusal::StartMismatch { expected, proposed });
        }
        if point.lsn < self.state.commit_lsn {
            let (start, commit_lsn) = (point.lsn, self.state.commit_lsn);
            return Err(Refusal::TruncateBelowCommit { start, commit_lsn });
        }
        Ok(point.lsn)
    }

    fn on_append(&mut self, a: &AppendRequest) -> Result<Option<AcceptorMessage>, AcceptorError> {
        check_append_shape(a)?;
        if a.term < self.state.term {
            return Ok(Some(self.append_response()));
        }
        let elected_term = self.state.term_history.last().map(|s| s.term);
        if a.term > self.state.term || elected_term != Some(a.term) {
            return Err(Refusal::NotElected { term: a.term }.into());
        }
        let write_lsn = self.storage.write_lsn();
        if a.begin_lsn < write_lsn {
            let begin_lsn = a.begin_lsn;
            return Err(Refusal::Overwrite {
                write_lsn,
                begin_lsn,
            }
            .into());
        }
        if a.begin_lsn > write_lsn {
            let begin_lsn = a.begin_lsn;
            return Err(Refusal::Gap {
                write_lsn,
                begin_lsn,
            }
            .into());
        }
        if !a.wal.is_empty() {
            self.storage
                .write_wal(a.begin_lsn, &a.wal)
                .map_err(storage_error)?;
            self.unflushed = true;
        }
        self.commit_candidate = self.commit_candidate.max(a.commit_lsn);
        self.advance_commit_lsn();
        self.state.peer_horizon_lsn = self.state.peer_horizon_lsn.max(a.truncate_lsn);
        self.reply_due = true;
        Ok(None)
    }

    fn flush_wal(&mut self) -> Result<(), AcceptorError> {
        if self.unflushed {
            self.storage.flush_wal().map_err(storage_error)?;
            self.unflushed = false;
        }
        self.advance_commit_lsn();
        // The commit LSN is persisted lazily, once per WAL segment it crosses: losing
        // it in a crash only makes it lag, and it is re-learned from the proposer.
        let segment_size = u64::from(self.state.wal_segment_size);
        let persisted = self.storage.state().commit_lsn;
        if self.state.commit_lsn.0 / segment_size > persisted.0 / segment_size {
            self.persist()?;
        }
        Ok(())
    }

    /// commit LSN = min(max(candidate, current), flush LSN), never decreasing: only
    /// WAL we hold durably can be committed here.
    fn advance_commit_lsn(&mut self) {
        let reachable = self.commit_candidate.min(self.storage.flush_lsn());
        self.state.commit_lsn = self.state.commit_lsn.max(reachable);
    }

    fn persist(&mut self) -> Result<(), AcceptorError> {
        assert!(
            self.state.commit_lsn <= self.storage.flush_lsn(),
            "commit LSN {} must never be persisted above the flushed WAL ({})",
            self.state.commit_lsn,
            self.storage.flush_lsn()
        );
        self.storage.persist(&self.state).map_err(storage_error)
    }

    fn append_response(&self) -> AcceptorMessage {
        AcceptorMessage::AppendResponse(AppendResponse {
            term: self.state.term,
            flush_lsn: self.storage.flush_lsn(),
            commit_lsn: self.state.commit_lsn,
        })
    }
}

fn check_append_shape(a: &AppendRequest) -> Result<(), Refusal> {
    let bytes = a.wal.len();
    if bytes > MAX_WAL_BYTES_PER_APPEND {
        return Err(Refusal::AppendTooLarge { bytes });
    }
    if a.begin_lsn.checked_add(bytes as u64) != Some(a.end_lsn) {
        let (begin_lsn, end_lsn) = (a.begin_lsn, a.end_lsn);
        return Err(Refusal::AppendLengthMismatch {
            begin_lsn,
            end_lsn,
            bytes,
        });
    }
    Ok(())
}

fn check_state(
    state: &PersistentState,
    write_lsn: Lsn,
    flush_lsn: Lsn,
) -> Result<(), AcceptorError> {
    let invalid = |what: String| Err(AcceptorError::InvalidState(what));
    if let Err(e) = state.term_history.validate() {
        return invalid(e.to_string());
    }
    let last_term = state.term_history.last().map_or(Term(0), |s| s.term);
    if last_term > state.term {
        return invalid(format!(
            "history names term {last_term}, above the term {}",
            state.term
        ));
    }
    if state.wal_segment_size == 0 {
        return invalid("WAL segment size is 0".to_owned());
    }
    if state.commit_lsn > flush_lsn {
        return invalid(format!(
            "commit LSN {} is above the flushed WAL {flush_lsn}",
            state.commit_lsn
        ));
    }
    if flush_lsn > write_lsn || flush_lsn < state.timeline_start_lsn {
        return invalid(format!(
            "flush LSN {flush_lsn} is outside [{}, {write_lsn}]",
            state.timeline_start_lsn
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
