//! The proposer: one compute's side of the protocol, as a pure state machine.

mod election;
#[cfg(test)]
mod tests;

use postgres_wal::Lsn;
use strata_ids::TenantTimelineId;

use crate::limits::{MAX_ACCEPTORS, MAX_WAL_BYTES_PER_APPEND};
use crate::messages::{
    AcceptorGreeting, AcceptorMessage, AppendRequest, AppendResponse, ProposerElected,
    ProposerGreeting, ProposerId, ProposerMessage, VoteRequest, VoteResponse,
};
use crate::term_history::Term;

pub use election::Election;

/// What the proposer is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Stream a running compute's WAL, read from the [`WalSource`] up to its
    /// [`WalSource::end_lsn`], and report the commit LSN.
    Primary,
    /// `compute_ctl sync-safekeepers`: write no new WAL; bring a quorum of acceptors
    /// to the donor's end of WAL in the new term, then report
    /// [`ProposerEvent::Synced`] with that LSN.
    SyncSafekeepers,
}

/// Where the proposer reads the WAL it sends.
///
/// Below the elected start LSN that is the donor's WAL (a lagging acceptor needs it):
/// read it from the donor acceptor, checking that its term has not moved past ours
/// (then its WAL may have been truncated, and we have lost anyway). From the start LSN
/// on it is the compute's own WAL (Primary mode only).
pub trait WalSource {
    /// End of the WAL available (exclusive). Primary mode streams up to it;
    /// sync-safekeepers mode streams up to the start LSN and does not call it.
    fn end_lsn(&self) -> Lsn;

    /// The WAL bytes `[begin, end)`, exactly `end - begin` of them.
    fn read(
        &mut self,
        begin: Lsn,
        end: Lsn,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync + 'static>>;
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProposerConfig {
    pub id: TenantTimelineId,
    pub proposer_id: ProposerId,
    pub system_id: u64,
    pub pg_version: u32,
    pub wal_segment_size: u32,
    /// How many acceptors the timeline has (1..=[`MAX_ACCEPTORS`]); they are named by
    /// their index `0..acceptor_count` in every call.
    pub acceptor_count: usize,
    pub mode: Mode,
    /// Most WAL bytes per append (1..=[`MAX_WAL_BYTES_PER_APPEND`]).
    pub max_append_bytes: usize,
}

/// Something the driver must act on, returned by [`Proposer::handle`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ProposerEvent {
    /// A quorum voted for us. Primary mode: the compute must start writing at exactly
    /// `start_lsn` (the lineage check is the driver's).
    Elected {
        term: Term,
        start_lsn: Lsn,
        donor: usize,
    },
    /// A quorum holds the WAL up to this LSN in our term (report it to PostgreSQL).
    CommitLsn(Lsn),
    /// Sync-safekeepers is done: a quorum has committed the donor's WAL up to this LSN
    /// in our term. The proposer is finished.
    Synced(Lsn),
    /// An acceptor has a higher term: another proposer was elected or is campaigning.
    /// We are fenced; the compute must stop. The proposer is finished.
    Lost { term: Term },
}

/// A reply or a configuration the proposer cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum ProposerError {
    #[error("invalid proposer configuration: {0}")]
    InvalidConfig(String),
    /// Disconnect that acceptor; it may be reconnected later.
    #[error("acceptor {acceptor} sent an invalid reply: {reason}")]
    InvalidReply { acceptor: usize, reason: String },
    /// The acceptor's log shares no term with ours (another timeline's, or damaged).
    #[error("acceptor {acceptor}'s term history shares no term with ours")]
    NoCommonPoint { acceptor: usize },
    /// The voters disagree on where the timeline begins: not one timeline.
    #[error("voters disagree on the timeline start: {0} and {1}")]
    TimelineStartMismatch(Lsn, Lsn),
    /// The donor's history is full; the timeline needs maintenance before an election.
    #[error("term history of the donor is full")]
    TermHistoryFull,
    #[error("reading WAL [{begin}, {end}) failed: {source}")]
    WalSource {
        begin: Lsn,
        end: Lsn,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Where the conversation with one acceptor stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    /// Not connected.
    Down,
    /// Connected: our greeting is to be sent (`sent == false`) or answered.
    Greeting { sent: bool },
    /// Greeted; waiting until a quorum has greeted to choose our term.
    Greeted,
    /// Our vote request is to be sent or answered.
    Vote { sent: bool },
    /// Voted (or refused at our term); `ProposerElected` is sent once we are elected.
    Voted,
    /// Streaming: the next append begins at `cursor`.
    Streaming { cursor: Lsn, heartbeat_due: bool },
}

/// What we know about one acceptor.
#[derive(Clone, Debug)]
struct Peer {
    link: Link,
    /// Its term as of its greeting, before our term was chosen.
    greeting_term: Option<Term>,
    /// Its answer to our vote request (given or not), at our term.
    vote: Option<VoteResponse>,
    /// We have sent it `ProposerElected` in our term: its append answers are ours.
    elected_sent: bool,
    /// Highest flush and commit LSNs it acknowledged in our term.
    acked_flush_lsn: Lsn,
    acked_commit_lsn: Lsn,
    /// The commit LSN we last told it.
    sent_commit_lsn: Lsn,
}

#[derive(Clone, Debug)]
enum Phase {
    /// Collecting greetings to choose a term.
    Campaigning,
    Voting {
        term: Term,
    },
    Elected(Election),
    /// Finished (synced or lost): everything is ignored.
    Finished,
}

/// The Paxos proposer of one timeline (one per compute, or per sync-safekeepers run).
///
/// A pure state machine: the driver owns the connections and tells the proposer about
/// them; the proposer says what to send to each acceptor, one message at a time, so
/// the driver's per-connection buffers bound everything in flight.
///
/// ```text
/// let mut p = Proposer::new(config)?;
/// for i in 0..n { connect(i); p.connected(i); }
/// loop {
///     for i in 0..n {                             // while connection i can take more
///         while let Some(m) = p.next_message(i, &mut wal)? { send(i, m) }
///     }
///     match next_input() {
///         Reply(i, m) => match p.handle(i, m)? {  // InvalidReply: disconnect i
///             Some(ProposerEvent::Elected { start_lsn, .. }) => start_compute(start_lsn),
///             Some(ProposerEvent::CommitLsn(lsn)) => report_to_postgres(lsn),
///             Some(ProposerEvent::Synced(lsn)) => { print(lsn); exit(0) }
///             Some(ProposerEvent::Lost { .. }) => { stop_compute(); exit(1) }
///             None => {}
///         },
///         Closed(i) => { p.disconnected(i); reconnect_later(i) }   // then p.connected(i)
///         HeartbeatTimer => p.tick(),
///         NewWal => {}   // wal.end_lsn() grew: next_message sends it
///     }
/// }
/// ```
///
/// Election: greetings from a quorum → term = max seen + 1 → vote requests → on a
/// quorum of votes, the donor is the voter with the highest `(last_log_term,
/// flush_lsn)`; our history is the donor's plus `(term, donor's flush LSN)`. Each
/// acceptor (voter or late joiner) gets `ProposerElected` with the point where its log
/// leaves ours, then appends from there. A reconnected acceptor goes through greeting
/// and vote again (its vote at our own term is refused, which is fine once elected).
///
/// Commit LSN: the quorum-th highest flush LSN acknowledged in our term, counting
/// acknowledgements below our start LSN as 0 (a proposer never commits an earlier
/// term's WAL by counting copies of it; it commits it by committing its own start).
///
/// `Elected` is not yet the right to commit: votes are promises gathered over time,
/// and a voter may have moved on to a later term since (the simulation sees such
/// stale elections). Such a proposer can never reach a quorum and is fenced by its
/// first answer from a later term. Acknowledge nothing to clients before
/// [`ProposerEvent::CommitLsn`] covers it. Below `start_lsn` the [`WalSource`] must
/// serve the donor's WAL ([`Proposer::election`] names the donor).
#[derive(Debug)]
pub struct Proposer {
    config: ProposerConfig,
    phase: Phase,
    peers: Vec<Peer>,
    commit_lsn: Lsn,
}

impl Proposer {
    pub fn new(config: ProposerConfig) -> Result<Proposer, ProposerError> {
        if !(1..=MAX_ACCEPTORS).contains(&config.acceptor_count) {
            return Err(ProposerError::InvalidConfig(format!(
                "acceptor count {} is not in 1..={MAX_ACCEPTORS}",
                config.acceptor_count
            )));
        }
        if !(1..=MAX_WAL_BYTES_PER_APPEND).contains(&config.max_append_bytes) {
            return Err(ProposerError::InvalidConfig(format!(
                "max append bytes {} is not in 1..={MAX_WAL_BYTES_PER_APPEND}",
                config.max_append_bytes
            )));
        }
        let peer = Peer {
            link: Link::Down,
            greeting_term: None,
            vote: None,
            elected_sent: false,
            acked_flush_lsn: Lsn::INVALID,
            acked_commit_lsn: Lsn::INVALID,
            sent_commit_lsn: Lsn::INVALID,
        };
        Ok(Proposer {
            peers: vec![peer; config.acceptor_count],
            config,
            phase: Phase::Campaigning,
            commit_lsn: Lsn::INVALID,
        })
    }

    /// Acceptors needed for a quorum: a majority.
    pub fn quorum(&self) -> usize {
        self.peers.len() / 2 + 1
    }

    /// Our term, once chosen.
    pub fn term(&self) -> Option<Term> {
        match &self.phase {
            Phase::Voting { term } => Some(*term),
            Phase::Elected(e) => Some(e.term),
            Phase::Campaigning | Phase::Finished => None,
        }
    }

    /// The election we won, if we are elected and not finished.
    pub fn election(&self) -> Option<&Election> {
        match &self.phase {
            Phase::Elected(e) => Some(e),
            _ => None,
        }
    }

    /// Our commit LSN (0 until a quorum holds WAL of our term).
    pub fn commit_lsn(&self) -> Lsn {
        self.commit_lsn
    }

    /// True once synced or lost: nothing more will be sent.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished)
    }

    /// A connection to acceptor `acceptor` is open (again): start with a greeting.
    pub fn connected(&mut self, acceptor: usize) {
        self.peers[acceptor].link = Link::Greeting { sent: false };
    }

    /// The connection to `acceptor` closed. What it acknowledged stays counted: it is
    /// durable there.
    pub fn disconnected(&mut self, acceptor: usize) {
        self.peers[acceptor].link = Link::Down;
    }

    /// Heartbeat time: every streaming acceptor gets an append (empty if there is no
    /// WAL to send), which carries the commit LSN and asks for its positions.
    pub fn tick(&mut self) {
        for peer in &mut self.peers {
            if let Link::Streaming { heartbeat_due, .. } = &mut peer.link {
                *heartbeat_due = true;
            }
        }
    }

    /// The next message for `acceptor`, if any. Call it while the connection can take
    /// more; appends are built from `wal` as they are taken. On
    /// `Err(ProposerError::WalSource)` nothing changed: retry later, or give up.
    pub fn next_message(
        &mut self,
        acceptor: usize,
        wal: &mut dyn WalSource,
    ) -> Result<Option<ProposerMessage>, ProposerError> {
        if self.is_finished() {
            return Ok(None);
        }
        match self.peers[acceptor].link {
            Link::Down | Link::Greeted => Ok(None),
            Link::Greeting { sent: true } | Link::Vote { sent: true } => Ok(None),
            Link::Greeting { sent: false } => {
                self.peers[acceptor].link = Link::Greeting { sent: true };
                Ok(Some(ProposerMessage::Greeting(self.greeting())))
            }
            Link::Vote { sent: false } => {
                let Some(term) = self.term() else {
                    return Ok(None);
                };
                self.peers[acceptor].link = Link::Vote { sent: true };
                Ok(Some(ProposerMessage::VoteRequest(VoteRequest { term })))
            }
            Link::Voted => self
                .elected_message(acceptor)
                .map(|m| m.map(ProposerMessage::Elected)),
            Link::Streaming {
                cursor,
                heartbeat_due,
            } => self.append_message(acceptor, cursor, heartbeat_due, wal),
        }
    }

    /// Process a reply from `acceptor`. `Err(InvalidReply | NoCommonPoint)`: disconnect
    /// that acceptor; the proposer itself goes on.
    pub fn handle(
        &mut self,
        acceptor: usize,
        msg: AcceptorMessage,
    ) -> Result<Option<ProposerEvent>, ProposerError> {
        if self.is_finished() {
            return Ok(None);
        }
        if let Some(term) = self.term() {
            if msg.term() > term {
                self.phase = Phase::Finished;
                return Ok(Some(ProposerEvent::Lost { term: msg.term() }));
            }
        }
        match msg {
            AcceptorMessage::Greeting(g) => {
                self.on_greeting(acceptor, &g);
                Ok(None)
            }
            AcceptorMessage::VoteResponse(v) => self.on_vote_response(acceptor, v),
            AcceptorMessage::AppendResponse(r) => self.on_append_response(acceptor, &r),
        }
    }

    fn greeting(&self) -> ProposerGreeting {
        ProposerGreeting {
            id: self.config.id,
            proposer_id: self.config.proposer_id,
            system_id: self.config.system_id,
            pg_version: self.config.pg_version,
            wal_segment_size: self.config.wal_segment_size,
        }
    }

    fn on_greeting(&mut self, acceptor: usize, g: &AcceptorGreeting) {
        if self.peers[acceptor].link != (Link::Greeting { sent: true }) {
            return; // a duplicate or an answer to an earlier connection
        }
        if self.term().is_some() {
            self.peers[acceptor].link = Link::Vote { sent: false };
            return;
        }
        let peer = &mut self.peers[acceptor];
        peer.greeting_term = Some(g.term);
        peer.link = Link::Greeted;
        let greeted: Vec<Term> = self.peers.iter().filter_map(|p| p.greeting_term).collect();
        if greeted.len() >= self.quorum() {
            let max = greeted.into_iter().max().unwrap_or_default();
            self.phase = Phase::Voting {
                term: Term(max.0 + 1),
            };
            for peer in &mut self.peers {
                if peer.link == Link::Greeted {
                    peer.link = Link::Vote { sent: false };
                }
            }
        }
    }

    fn on_vote_response(
        &mut self,
        acceptor: usize,
        v: VoteResponse,
    ) -> Result<Option<ProposerEvent>, ProposerError> {
        let Some(term) = self.term() else {
            return Ok(None);
        };
        if v.term != term || self.peers[acceptor].link != (Link::Vote { sent: true }) {
            return Ok(None); // stale: not an answer to our pending request
        }
        election::check_vote_response(acceptor, &v)?;
        let peer = &mut self.peers[acceptor];
        peer.vote = Some(v);
        peer.link = Link::Voted;
        if !matches!(self.phase, Phase::Voting { .. }) {
            return Ok(None);
        }
        let voters: Vec<(usize, &VoteResponse)> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.vote.as_ref().filter(|v| v.vote_given).map(|v| (i, v)))
            .collect();
        if voters.len() < self.quorum() {
            return Ok(None);
        }
        let won = Election::decide(term, &voters)?;
        let event = ProposerEvent::Elected {
            term,
            start_lsn: won.start_lsn,
            donor: won.donor,
        };
        self.phase = Phase::Elected(won);
        Ok(Some(event))
    }

    /// `ProposerElected` for a voted acceptor, once we are elected.
    fn elected_message(
        &mut self,
        acceptor: usize,
    ) -> Result<Option<ProposerElected>, ProposerError> {
        let Phase::Elected(won) = &self.phase else {
            return Ok(None);
        };
        let peer = &mut self.peers[acceptor];
        let Some(vote) = &peer.vote else {
            return Ok(None);
        };
        let start = won.start_point(acceptor, vote)?;
        let msg = ProposerElected {
            term: won.term,
            start_streaming_at: start,
            term_history: won.term_history.clone(),
        };
        peer.elected_sent = true;
        peer.link = Link::Streaming {
            cursor: start,
            // The first append, even empty, makes the acceptor report its position
            // in our term (sync-safekeepers needs that for acceptors already caught up).
            heartbeat_due: true,
        };
        Ok(Some(msg))
    }

    fn append_message(
        &mut self,
        acceptor: usize,
        cursor: Lsn,
        heartbeat_due: bool,
        wal: &mut dyn WalSource,
    ) -> Result<Option<ProposerMessage>, ProposerError> {
        let Phase::Elected(won) = &self.phase else {
            return Ok(None);
        };
        let limit = match self.config.mode {
            Mode::Primary => wal.end_lsn(),
            Mode::SyncSafekeepers => won.start_lsn,
        };
        let peer = &self.peers[acceptor];
        let commit_news = peer.sent_commit_lsn < self.commit_lsn;
        if cursor >= limit && !heartbeat_due && !commit_news {
            return Ok(None);
        }
        let room = (limit.0.saturating_sub(cursor.0)).min(self.config.max_append_bytes as u64);
        let end = Lsn(cursor.0 + room);
        let bytes = if room == 0 {
            Vec::new()
        } else {
            wal.read(cursor, end)
                .map_err(|source| ProposerError::WalSource {
                    begin: cursor,
                    end,
                    source,
                })?
        };
        assert_eq!(
            bytes.len() as u64,
            room,
            "WAL source returned a wrong length"
        );
        let msg = AppendRequest {
            term: won.term,
            begin_lsn: cursor,
            end_lsn: end,
            commit_lsn: self.commit_lsn,
            truncate_lsn: won.truncate_lsn,
            wal: bytes,
        };
        let peer = &mut self.peers[acceptor];
        peer.sent_commit_lsn = self.commit_lsn;
        peer.link = Link::Streaming {
            cursor: end,
            heartbeat_due: false,
        };
        Ok(Some(ProposerMessage::Append(msg)))
    }

    fn on_append_response(
        &mut self,
        acceptor: usize,
        r: &AppendResponse,
    ) -> Result<Option<ProposerEvent>, ProposerError> {
        let Phase::Elected(won) = &self.phase else {
            return Ok(None);
        };
        let start = won.start_lsn;
        let peer = &mut self.peers[acceptor];
        // Our term, and we told it we were elected: the positions are on our log.
        if r.term != won.term || !peer.elected_sent {
            return Ok(None);
        }
        if r.commit_lsn > r.flush_lsn {
            let reason = format!(
                "commit LSN {} above flush LSN {}",
                r.commit_lsn, r.flush_lsn
            );
            return Err(ProposerError::InvalidReply { acceptor, reason });
        }
        peer.acked_flush_lsn = peer.acked_flush_lsn.max(r.flush_lsn);
        peer.acked_commit_lsn = peer.acked_commit_lsn.max(r.commit_lsn);
        if self.config.mode == Mode::SyncSafekeepers {
            let synced = self
                .peers
                .iter()
                .filter(|p| p.acked_commit_lsn >= start)
                .count();
            if synced >= self.quorum() {
                self.phase = Phase::Finished;
                return Ok(Some(ProposerEvent::Synced(start)));
            }
        }
        let quorum_lsn = self.quorum_flush_lsn(start);
        if quorum_lsn <= self.commit_lsn {
            return Ok(None);
        }
        self.commit_lsn = quorum_lsn;
        let lowest_flush = self.peers.iter().map(|p| p.acked_flush_lsn).min();
        if let Phase::Elected(won) = &mut self.phase {
            won.advance_truncate_lsn(lowest_flush.unwrap_or_default().min(quorum_lsn));
        }
        Ok(Some(ProposerEvent::CommitLsn(quorum_lsn)))
    }

    /// The quorum-th highest flush LSN acknowledged in our term, where positions below
    /// our start count as 0.
    fn quorum_flush_lsn(&self, start: Lsn) -> Lsn {
        let mut flushed: Vec<Lsn> = self
            .peers
            .iter()
            .map(|p| p.acked_flush_lsn)
            .map(|lsn| if lsn >= start { lsn } else { Lsn::INVALID })
            .collect();
        flushed.sort_unstable_by(|a, b| b.cmp(a));
        flushed[self.quorum() - 1]
    }
}
