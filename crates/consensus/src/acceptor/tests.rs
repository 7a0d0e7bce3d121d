//! One test per acceptor rule, refusals included.

use postgres_wal::Lsn;
use strata_ids::{NodeId, TenantId, TimelineId};

use super::*;
use crate::messages::ProposerId;
use crate::term_history::TermSwitch;
use crate::test_support::{timeline, MemoryStorage, START};

fn acceptor() -> Acceptor<MemoryStorage> {
    Acceptor::new(NodeId(7), MemoryStorage::new()).unwrap()
}

fn greeting() -> ProposerGreeting {
    ProposerGreeting {
        id: timeline(),
        proposer_id: ProposerId(9),
        system_id: 42,
        pg_version: 150_020,
        wal_segment_size: 1 << 24,
    }
}

fn history(entries: &[(u64, Lsn)]) -> TermHistory {
    TermHistory(
        entries
            .iter()
            .map(|&(term, lsn)| TermSwitch {
                term: Term(term),
                lsn,
            })
            .collect(),
    )
}

fn vote(a: &mut Acceptor<MemoryStorage>, term: u64) -> VoteResponse {
    let msg = ProposerMessage::VoteRequest(VoteRequest { term: Term(term) });
    match a.handle(msg).unwrap() {
        Some(AcceptorMessage::VoteResponse(v)) => v,
        other => panic!("expected a vote response, got {other:?}"),
    }
}

fn elected(term: u64, start: Lsn, entries: &[(u64, Lsn)]) -> ProposerMessage {
    ProposerMessage::Elected(ProposerElected {
        term: Term(term),
        start_streaming_at: start,
        term_history: history(entries),
    })
}

fn append(term: u64, begin: Lsn, len: usize, commit: Lsn) -> ProposerMessage {
    ProposerMessage::Append(AppendRequest {
        term: Term(term),
        begin_lsn: begin,
        end_lsn: Lsn(begin.0 + len as u64),
        commit_lsn: commit,
        truncate_lsn: Lsn::INVALID,
        wal: vec![term as u8; len],
    })
}

fn refusal(result: Result<Option<AcceptorMessage>, AcceptorError>) -> Refusal {
    match result {
        Err(AcceptorError::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn append_response(msg: Option<AcceptorMessage>) -> AppendResponse {
    match msg {
        Some(AcceptorMessage::AppendResponse(r)) => r,
        other => panic!("expected an append response, got {other:?}"),
    }
}

/// An acceptor that elected term 1 at START and holds `len` flushed bytes of it.
fn elected_with_wal(len: usize) -> Acceptor<MemoryStorage> {
    let mut a = acceptor();
    vote(&mut a, 1);
    assert_eq!(
        a.handle(elected(1, START, &[(0, START), (1, START)]))
            .unwrap(),
        None
    );
    if len > 0 {
        assert_eq!(a.handle(append(1, START, len, Lsn::INVALID)).unwrap(), None);
        a.flush().unwrap();
    }
    a
}

#[test]
fn greeting_answers_with_node_id_and_term() {
    let mut a = acceptor();
    let reply = a.handle(ProposerMessage::Greeting(greeting())).unwrap();
    let expected = AcceptorGreeting {
        node_id: NodeId(7),
        term: Term(0),
    };
    assert_eq!(reply, Some(AcceptorMessage::Greeting(expected)));
}

/// A change to a valid greeting, and the refusal it must cause.
type GreetingCase = (fn(&mut ProposerGreeting), fn(&Refusal) -> bool);

#[test]
fn greeting_refuses_another_timeline_system_version_or_segment_size() {
    let mut a = acceptor();
    let cases: [GreetingCase; 5] = [
        (
            |g| g.id.tenant_id = TenantId(5),
            |r| matches!(r, Refusal::WrongTimeline { .. }),
        ),
        (
            |g| g.id.timeline_id = TimelineId(5),
            |r| matches!(r, Refusal::WrongTimeline { .. }),
        ),
        (
            |g| g.system_id = 43,
            |r| {
                matches!(
                    r,
                    Refusal::SystemIdMismatch {
                        ours: 42,
                        theirs: 43
                    }
                )
            },
        ),
        (
            |g| g.pg_version = 160_001,
            |r| matches!(r, Refusal::PgVersionMismatch { .. }),
        ),
        (
            |g| g.wal_segment_size = 1 << 20,
            |r| matches!(r, Refusal::WalSegmentSizeMismatch { .. }),
        ),
    ];
    for (change, expected) in cases {
        let mut g = greeting();
        change(&mut g);
        let r = refusal(a.handle(ProposerMessage::Greeting(g)));
        assert!(expected(&r), "unexpected refusal {r:?}");
    }
}

#[test]
fn vote_is_given_only_for_a_higher_term_and_persisted_before_the_reply() {
    let mut a = acceptor();
    let v = vote(&mut a, 3);
    assert!(v.vote_given);
    assert_eq!(v.term, Term(3));
    assert_eq!(
        a.storage().state().term,
        Term(3),
        "term persisted before the reply"
    );
    assert_eq!(v.term_history, TermHistory::new(START));
    assert_eq!((v.flush_lsn, v.timeline_start_lsn), (START, START));
    for term in [3, 2] {
        let v = vote(&mut a, term);
        assert!(!v.vote_given, "term {term} is not higher than 3");
        assert_eq!(v.term, Term(3));
    }
}

#[test]
fn vote_flushes_written_wal_before_answering() {
    let mut a = elected_with_wal(0);
    a.handle(append(1, START, 50, Lsn::INVALID)).unwrap();
    assert_eq!(a.flush_lsn(), START, "an append is written, not flushed");
    let v = vote(&mut a, 2);
    assert_eq!(v.flush_lsn, Lsn(START.0 + 50));
    assert_eq!(a.storage().flushed, 50);
    assert_eq!(v.term_history, history(&[(0, START), (1, START)]));
}

#[test]
fn elected_adopts_a_higher_term_truncates_and_persists_the_history() {
    let mut a = elected_with_wal(100);
    // Term 2 never reached us as a vote; its proposer's log leaves ours at +60.
    let at = Lsn(START.0 + 60);
    let h = [(0, START), (1, START), (2, at)];
    assert_eq!(a.handle(elected(2, at, &h)).unwrap(), None);
    assert_eq!(a.term(), Term(2));
    assert_eq!((a.storage().write_lsn(), a.flush_lsn()), (at, at));
    assert_eq!(a.storage().state().term, Term(2));
    assert_eq!(a.storage().state().term_history, history(&h));
}

#[test]
fn elected_refuses_a_start_that_is_not_the_common_point() {
    let mut a = elected_with_wal(100);
    let h = [(0, START), (1, START), (2, Lsn(START.0 + 100))];
    let r = refusal(a.handle(elected(2, Lsn(START.0 + 80), &h)));
    let expected = Lsn(START.0 + 100);
    assert_eq!(
        r,
        Refusal::StartMismatch {
            expected,
            proposed: Lsn(START.0 + 80)
        }
    );
    assert_eq!(a.flush_lsn(), expected, "nothing truncated");
}

#[test]
fn elected_never_truncates_below_the_commit_lsn() {
    let mut a = elected_with_wal(0);
    a.handle(append(1, START, 100, Lsn(START.0 + 100))).unwrap();
    a.flush().unwrap();
    assert_eq!(a.commit_lsn(), Lsn(START.0 + 100));
    // A history claiming term 1 ended at +40: its common point is below our commit.
    let at = Lsn(START.0 + 40);
    let r = refusal(a.handle(elected(3, at, &[(0, START), (1, START), (3, at)])));
    assert_eq!(
        r,
        Refusal::TruncateBelowCommit {
            start: at,
            commit_lsn: Lsn(START.0 + 100)
        }
    );
    assert_eq!(a.flush_lsn(), Lsn(START.0 + 100));
}

#[test]
fn elected_refuses_bad_histories() {
    let mut a = acceptor();
    let r = refusal(a.handle(elected(2, START, &[(0, START), (1, START)])));
    assert_eq!(
        r,
        Refusal::HistoryNotOfElectedTerm {
            term: Term(2),
            last: Term(1)
        }
    );
    let r = refusal(a.handle(elected(2, START, &[(2, START), (1, START)])));
    assert!(matches!(r, Refusal::InvalidTermHistory(_)));
    let r = refusal(a.handle(elected(2, START, &[(0, Lsn(8)), (2, START)])));
    assert_eq!(r, Refusal::NoCommonPoint);
}

#[test]
fn elected_of_a_lower_term_is_answered_with_our_term() {
    let mut a = acceptor();
    vote(&mut a, 5);
    let reply = a
        .handle(elected(4, START, &[(0, START), (4, START)]))
        .unwrap();
    assert_eq!(append_response(reply).term, Term(5));
}

#[test]
fn append_of_a_lower_term_is_refused_with_our_term() {
    let mut a = elected_with_wal(10);
    vote(&mut a, 2);
    let reply = a
        .handle(append(1, Lsn(START.0 + 10), 5, Lsn::INVALID))
        .unwrap();
    let r = append_response(reply);
    assert_eq!((r.term, r.flush_lsn), (Term(2), Lsn(START.0 + 10)));
    assert_eq!(
        a.storage().write_lsn(),
        Lsn(START.0 + 10),
        "nothing written"
    );
}

#[test]
fn append_before_the_election_reached_us_is_refused() {
    let mut a = acceptor();
    vote(&mut a, 1);
    let r = refusal(a.handle(append(1, START, 5, Lsn::INVALID)));
    assert_eq!(r, Refusal::NotElected { term: Term(1) });
    let r = refusal(a.handle(append(2, START, 5, Lsn::INVALID)));
    assert_eq!(r, Refusal::NotElected { term: Term(2) });
}

#[test]
fn append_must_begin_where_our_wal_ends() {
    let mut a = elected_with_wal(10);
    let r = refusal(a.handle(append(1, Lsn(START.0 + 5), 10, Lsn::INVALID)));
    let write_lsn = Lsn(START.0 + 10);
    assert_eq!(
        r,
        Refusal::Overwrite {
            write_lsn,
            begin_lsn: Lsn(START.0 + 5)
        }
    );
    let r = refusal(a.handle(append(1, Lsn(START.0 + 11), 10, Lsn::INVALID)));
    assert_eq!(
        r,
        Refusal::Gap {
            write_lsn,
            begin_lsn: Lsn(START.0 + 11)
        }
    );
}

#[test]
fn append_must_be_bounded_and_consistent() {
    let mut a = elected_with_wal(0);
    let big = MAX_WAL_BYTES_PER_APPEND + 1;
    let r = refusal(a.handle(append(1, START, big, Lsn::INVALID)));
    assert_eq!(r, Refusal::AppendTooLarge { bytes: big });
    let mut msg = append(1, START, 10, Lsn::INVALID);
    if let ProposerMessage::Append(req) = &mut msg {
        req.end_lsn = Lsn(START.0 + 11);
    }
    assert!(matches!(
        refusal(a.handle(msg)),
        Refusal::AppendLengthMismatch { .. }
    ));
}

#[test]
fn appends_are_answered_once_per_flush_with_the_flush_lsn() {
    let mut a = elected_with_wal(0);
    assert_eq!(a.flush().unwrap(), None, "no append, no answer");
    assert_eq!(a.handle(append(1, START, 10, Lsn::INVALID)).unwrap(), None);
    assert_eq!(
        a.handle(append(1, Lsn(START.0 + 10), 10, Lsn::INVALID))
            .unwrap(),
        None
    );
    let r = append_response(a.flush().unwrap());
    assert_eq!((r.term, r.flush_lsn), (Term(1), Lsn(START.0 + 20)));
    assert_eq!(a.flush().unwrap(), None, "answered once");
}

#[test]
fn heartbeat_is_answered_and_carries_the_commit_lsn() {
    let mut a = elected_with_wal(30);
    let at = Lsn(START.0 + 30);
    assert_eq!(a.handle(append(1, at, 0, at)).unwrap(), None);
    let r = append_response(a.flush().unwrap());
    assert_eq!((r.flush_lsn, r.commit_lsn), (at, at));
}

#[test]
fn commit_lsn_never_passes_flush_and_never_decreases() {
    let mut a = elected_with_wal(0);
    let far = Lsn(START.0 + 1000);
    a.handle(append(1, START, 40, far)).unwrap();
    assert_eq!(a.commit_lsn(), START, "not flushed yet");
    a.flush().unwrap();
    assert_eq!(a.commit_lsn(), Lsn(START.0 + 40), "up to the flushed WAL");
    a.handle(append(1, Lsn(START.0 + 40), 0, Lsn(START.0 + 10)))
        .unwrap();
    a.flush().unwrap();
    assert_eq!(
        a.commit_lsn(),
        Lsn(START.0 + 40),
        "a lower candidate changes nothing"
    );
    a.handle(append(1, Lsn(START.0 + 40), 100, Lsn::INVALID))
        .unwrap();
    a.flush().unwrap();
    assert_eq!(
        a.commit_lsn(),
        Lsn(START.0 + 140),
        "the candidate applies once flushed"
    );
}

#[test]
fn commit_lsn_is_persisted_lazily_and_never_above_flush() {
    let mut a = elected_with_wal(0);
    let calls = a.storage().persist_calls;
    a.handle(append(1, START, 40, Lsn(START.0 + 40))).unwrap();
    a.flush().unwrap();
    assert_eq!(
        a.storage().persist_calls,
        calls,
        "same segment: not persisted"
    );
    assert_eq!(a.storage().state().commit_lsn, START);
    // The next vote persists the whole state, commit LSN included.
    vote(&mut a, 2);
    assert_eq!(a.storage().state().commit_lsn, Lsn(START.0 + 40));
}

#[test]
fn persist_lsns_writes_the_lazy_positions_once() {
    let mut a = elected_with_wal(0);
    a.handle(append(1, START, 40, Lsn(START.0 + 40))).unwrap();
    a.flush().unwrap();
    let calls = a.storage().persist_calls;
    a.persist_lsns().unwrap();
    assert_eq!(a.storage().state().commit_lsn, Lsn(START.0 + 40));
    a.persist_lsns().unwrap();
    assert_eq!(
        a.storage().persist_calls,
        calls + 1,
        "nothing new, nothing written"
    );
}

#[test]
fn commit_lsn_is_persisted_when_it_crosses_a_segment() {
    let mut storage = MemoryStorage::new();
    storage.persisted.wal_segment_size = 64;
    let mut a = Acceptor::new(NodeId(1), storage).unwrap();
    vote(&mut a, 1);
    a.handle(elected(1, START, &[(0, START), (1, START)]))
        .unwrap();
    a.handle(append(1, START, 100, Lsn(START.0 + 100))).unwrap();
    a.flush().unwrap();
    assert_eq!(a.storage().state().commit_lsn, Lsn(START.0 + 100));
}

#[test]
fn storage_failure_stops_the_acceptor() {
    let mut a = elected_with_wal(0);
    a.storage.fail_writes = true;
    let err = a.handle(append(1, START, 10, Lsn::INVALID)).unwrap_err();
    assert!(matches!(err, AcceptorError::Storage(_)) && !err.is_refusal());
    assert!(matches!(a.flush(), Err(AcceptorError::Failed)));
    let greeting = ProposerMessage::Greeting(greeting());
    assert!(matches!(a.handle(greeting), Err(AcceptorError::Failed)));
}

#[test]
fn opening_refuses_impossible_states() {
    let mut s = MemoryStorage::new();
    s.persisted.commit_lsn = Lsn(START.0 + 1);
    assert!(matches!(
        Acceptor::new(NodeId(1), s),
        Err(AcceptorError::InvalidState(_))
    ));
    let mut s = MemoryStorage::new();
    s.persisted.term_history = TermHistory::default();
    assert!(matches!(
        Acceptor::new(NodeId(1), s),
        Err(AcceptorError::InvalidState(_))
    ));
    let mut s = MemoryStorage::new();
    s.persisted.term_history = history(&[(0, START), (3, START)]);
    assert!(matches!(
        Acceptor::new(NodeId(1), s),
        Err(AcceptorError::InvalidState(_))
    ));
}

#[test]
fn a_duplicate_elected_after_streaming_is_refused() {
    let mut a = elected_with_wal(50);
    let r = refusal(a.handle(elected(1, START, &[(0, START), (1, START)])));
    assert_eq!(
        r,
        Refusal::StartMismatch {
            expected: Lsn(START.0 + 50),
            proposed: START
        }
    );
    assert_eq!(a.flush_lsn(), Lsn(START.0 + 50));
}
