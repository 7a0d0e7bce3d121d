//! The messages of the proposer/acceptor protocol, as domain types.
//!
//! The safekeeper maps them to and from `proto/safekeeper.proto`; nothing here knows
//! about the wire. One exchange per election, then a stream of appends:
//!
//! ```text
//! proposer                         acceptor
//!   ProposerGreeting        ──▶
//!                           ◀──  AcceptorGreeting   (its term)
//!   VoteRequest(term)       ──▶                      term = max seen + 1
//!                           ◀──  VoteResponse       (persisted before the reply)
//!   ProposerElected         ──▶                      (no reply: truncates, adopts history)
//!   AppendRequest ...       ──▶
//!                           ◀──  AppendResponse     (after the WAL is flushed)
//! ```

use postgres_wal::Lsn;
use strata_ids::{NodeId, TenantTimelineId};

use crate::term_history::{Term, TermHistory};

/// Names one proposer process (random, chosen at its start), for logs: two computes
/// of one timeline are told apart by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct ProposerId(pub u128);

/// The first message of a proposer's connection: which timeline, and what its
/// PostgreSQL is. The acceptor refuses a proposer that does not match the timeline.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProposerGreeting {
    pub id: TenantTimelineId,
    pub proposer_id: ProposerId,
    /// PostgreSQL's system identifier (from `IDENTIFY_SYSTEM`).
    pub system_id: u64,
    /// `PG_VERSION_NUM`, e.g. 150018; only the major version (`/ 10000`) must match.
    pub pg_version: u32,
    pub wal_segment_size: u32,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AcceptorGreeting {
    pub node_id: NodeId,
    /// The highest term the acceptor has seen; the proposer's term is max + 1.
    pub term: Term,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VoteRequest {
    pub term: Term,
}

/// The acceptor's answer to a vote request. Its WAL was flushed and its term persisted
/// before it was sent, so the positions are durable.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VoteResponse {
    /// The acceptor's term after the request: the request's term if the vote was
    /// given, else its own (higher or equal) term.
    pub term: Term,
    pub vote_given: bool,
    /// End of the last complete durable WAL record.
    pub flush_lsn: Lsn,
    /// The acceptor's commit LSN (sync-safekeepers' fast path; never above flush).
    pub commit_lsn: Lsn,
    /// The acceptor's peer horizon: below it every acceptor holds the WAL.
    pub truncate_lsn: Lsn,
    /// The acceptor's term history cut at `flush_lsn`.
    pub term_history: TermHistory,
    pub timeline_start_lsn: Lsn,
}

/// The proposer won `term`. Its history is the donor's plus `(term, start LSN)`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProposerElected {
    pub term: Term,
    /// Where this acceptor's log stops agreeing with the proposer's: it truncates its
    /// WAL there and the proposer streams from there.
    pub start_streaming_at: Lsn,
    pub term_history: TermHistory,
}

/// WAL bytes `[begin_lsn, end_lsn)`. With no bytes it is a heartbeat, which still
/// carries the commit LSN and is answered.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AppendRequest {
    pub term: Term,
    pub begin_lsn: Lsn,
    pub end_lsn: Lsn,
    /// The proposer's commit LSN: WAL a quorum holds in this term.
    pub commit_lsn: Lsn,
    /// Below this every acceptor holds the WAL (becomes their peer horizon).
    pub truncate_lsn: Lsn,
    /// At most [`crate::limits::MAX_WAL_BYTES_PER_APPEND`] bytes.
    pub wal: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AppendResponse {
    /// The acceptor's term: higher than the proposer's means the proposer was fenced.
    pub term: Term,
    /// End of the last complete WAL record that is durable on this acceptor.
    pub flush_lsn: Lsn,
    pub commit_lsn: Lsn,
}

/// What a proposer sends to an acceptor.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ProposerMessage {
    Greeting(ProposerGreeting),
    VoteRequest(VoteRequest),
    Elected(ProposerElected),
    Append(AppendRequest),
}

/// What an acceptor sends to a proposer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AcceptorMessage {
    Greeting(AcceptorGreeting),
    VoteResponse(VoteResponse),
    AppendResponse(AppendResponse),
}

impl AcceptorMessage {
    /// The acceptor's term in any reply: a proposer that sees one above its own lost.
    pub fn term(&self) -> Term {
        match self {
            AcceptorMessage::Greeting(m) => m.term,
            AcceptorMessage::VoteResponse(m) => m.term,
            AcceptorMessage::AppendResponse(m) => m.term,
        }
    }
}
