//! The last events of a run, kept cheaply and printed only when a check fails.

use std::collections::VecDeque;
use std::fmt;

use consensus::messages::{AcceptorMessage, ProposerMessage};
use consensus::term_history::Term;
use postgres_wal::Lsn;

const TRACE_EVENTS: usize = 80;

/// A message reduced to what explains a run.
#[derive(Clone, Copy, Debug)]
pub enum Msg {
    Greeting,
    VoteRequest(Term),
    Elected {
        term: Term,
        start: Lsn,
    },
    Append {
        term: Term,
        begin: Lsn,
        end: Lsn,
        commit: Lsn,
    },
    AcceptorGreeting(Term),
    Vote {
        term: Term,
        given: bool,
        flush: Lsn,
    },
    AppendResponse {
        term: Term,
        flush: Lsn,
        commit: Lsn,
    },
}

impl Msg {
    pub fn of_proposer(m: &ProposerMessage) -> Msg {
        match m {
            ProposerMessage::Greeting(_) => Msg::Greeting,
            ProposerMessage::VoteRequest(v) => Msg::VoteRequest(v.term),
            ProposerMessage::Elected(e) => Msg::Elected {
                term: e.term,
                start: e.start_streaming_at,
            },
            ProposerMessage::Append(a) => Msg::Append {
                term: a.term,
                begin: a.begin_lsn,
                end: a.end_lsn,
                commit: a.commit_lsn,
            },
        }
    }

    pub fn of_acceptor(m: &AcceptorMessage) -> Msg {
        match m {
            AcceptorMessage::Greeting(g) => Msg::AcceptorGreeting(g.term),
            AcceptorMessage::VoteResponse(v) => Msg::Vote {
                term: v.term,
                given: v.vote_given,
                flush: v.flush_lsn,
            },
            AcceptorMessage::AppendResponse(r) => Msg::AppendResponse {
                term: r.term,
                flush: r.flush_lsn,
                commit: r.commit_lsn,
            },
        }
    }
}

#[derive(Clone, Debug)]
pub enum Event {
    ToAcceptor {
        slot: usize,
        incarnation: u64,
        acceptor: usize,
        msg: Msg,
    },
    ToProposer {
        slot: usize,
        incarnation: u64,
        acceptor: usize,
        msg: Msg,
    },
    Refused {
        slot: usize,
        acceptor: usize,
        why: String,
    },
    AcceptorCrash {
        acceptor: usize,
    },
    AcceptorRestart {
        acceptor: usize,
        term: Term,
        flush: Lsn,
        commit: Lsn,
    },
    StorageFailure {
        acceptor: usize,
    },
    ProposerStart {
        slot: usize,
        incarnation: u64,
        sync: bool,
    },
    ProposerStop {
        slot: usize,
        incarnation: u64,
        why: &'static str,
    },
    Elected {
        slot: usize,
        term: Term,
        start: Lsn,
        donor: usize,
    },
    Commit {
        slot: usize,
        lsn: Lsn,
    },
    Synced {
        slot: usize,
        lsn: Lsn,
    },
    Disconnect {
        slot: usize,
        acceptor: usize,
    },
    Connect {
        slot: usize,
        acceptor: usize,
    },
}

#[derive(Debug, Default)]
pub struct Trace {
    events: VecDeque<(u64, Event)>,
}

impl Trace {
    pub fn push(&mut self, step: u64, event: Event) {
        if self.events.len() == TRACE_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back((step, event));
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Msg::Greeting => write!(f, "greeting"),
            Msg::VoteRequest(term) => write!(f, "vote request term {term}"),
            Msg::Elected { term, start } => write!(f, "elected term {term} start {start}"),
            Msg::Append {
                term,
                begin,
                end,
                commit,
            } => {
                write!(f, "append term {term} [{begin}, {end}) commit {commit}")
            }
            Msg::AcceptorGreeting(term) => write!(f, "acceptor greeting term {term}"),
            Msg::Vote { term, given, flush } => {
                write!(f, "vote response term {term} given {given} flush {flush}")
            }
            Msg::AppendResponse {
                term,
                flush,
                commit,
            } => {
                write!(
                    f,
                    "append response term {term} flush {flush} commit {commit}"
                )
            }
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::ToAcceptor {
                slot,
                incarnation,
                acceptor,
                msg,
            } => {
                write!(
                    f,
                    "proposer {slot} (process {incarnation}) -> acceptor {acceptor}: {msg}"
                )
            }
            Event::ToProposer {
                slot,
                incarnation,
                acceptor,
                msg,
            } => {
                write!(
                    f,
                    "acceptor {acceptor} -> proposer {slot} (process {incarnation}): {msg}"
                )
            }
            Event::Refused {
                slot,
                acceptor,
                why,
            } => {
                write!(f, "acceptor {acceptor} refused proposer {slot}: {why}")
            }
            _ => self.fmt_lifecycle(f),
        }
    }
}

impl Event {
    /// Nodes starting, stopping, winning and committing.
    fn fmt_lifecycle(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::AcceptorCrash { acceptor } => write!(f, "acceptor {acceptor} crashed"),
            Event::AcceptorRestart {
                acceptor,
                term,
                flush,
                commit,
            } => write!(
                f,
                "acceptor {acceptor} restarted: term {term} flush {flush} commit {commit}"
            ),
            Event::StorageFailure { acceptor } => write!(f, "acceptor {acceptor} storage failed"),
            Event::ProposerStart {
                slot,
                incarnation,
                sync,
            } => {
                write!(
                    f,
                    "proposer {slot} starts process {incarnation} (sync: {sync})"
                )
            }
            Event::ProposerStop {
                slot,
                incarnation,
                why,
            } => {
                write!(f, "proposer {slot} process {incarnation} stops: {why}")
            }
            Event::Elected {
                slot,
                term,
                start,
                donor,
            } => write!(
                f,
                "proposer {slot} elected in term {term}, start {start}, donor {donor}"
            ),
            Event::Commit { slot, lsn } => write!(f, "proposer {slot} commit LSN {lsn}"),
            Event::Synced { slot, lsn } => write!(f, "proposer {slot} synced at {lsn}"),
            Event::Disconnect { slot, acceptor } => {
                write!(f, "proposer {slot} x acceptor {acceptor}")
            }
            Event::Connect { slot, acceptor } => {
                write!(f, "proposer {slot} -- acceptor {acceptor}")
            }
            Event::ToAcceptor { .. } | Event::ToProposer { .. } | Event::Refused { .. } => {
                unreachable!("formatted by Display")
            }
        }
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (step, event) in &self.events {
            writeln!(f, "  [{step:>6}] {event}")?;
        }
        Ok(())
    }
}
