//! Proposer rules, against hand-made replies and against real acceptors.

use postgres_wal::Lsn;
use strata_ids::NodeId;

use super::*;
use crate::acceptor::Acceptor;
use crate::messages::AcceptorGreeting;
use crate::term_history::{TermHistory, TermSwitch};
use crate::test_support::{timeline, MemoryStorage, VecWal, START};

fn config(mode: Mode, acceptor_count: usize) -> ProposerConfig {
    ProposerConfig {
        id: timeline(),
        proposer_id: ProposerId(1),
        system_id: 42,
        pg_version: 150_018,
        wal_segment_size: 1 << 24,
        acceptor_count,
        mode,
        max_append_bytes: 100,
    }
}

fn lsn(offset: u64) -> Lsn {
    Lsn(START.0 + offset)
}

fn history(entries: &[(u64, u64)]) -> TermHistory {
    TermHistory(
        entries
            .iter()
            .map(|&(term, offset)| TermSwitch {
                term: Term(term),
                lsn: lsn(offset),
            })
            .collect(),
    )
}

fn greeting_reply(term: u64) -> AcceptorMessage {
    AcceptorMessage::Greeting(AcceptorGreeting {
        node_id: NodeId(0),
        term: Term(term),
    })
}

fn vote_reply(term: u64, given: bool, flush: u64, entries: &[(u64, u64)]) -> AcceptorMessage {
    AcceptorMessage::VoteResponse(VoteResponse {
        term: Term(term),
        vote_given: given,
        flush_lsn: lsn(flush),
        commit_lsn: START,
        truncate_lsn: START,
        term_history: history(entries),
        timeline_start_lsn: START,
    })
}

fn append_reply(term: u64, flush: u64, commit: u64) -> AcceptorMessage {
    AcceptorMessage::AppendResponse(AppendResponse {
        term: Term(term),
        flush_lsn: lsn(flush),
        commit_lsn: lsn(commit),
    })
}

/// Everything the proposer wants to send now, per acceptor.
fn drain(p: &mut Proposer, wal: &mut VecWal) -> Vec<(usize, ProposerMessage)> {
    let mut out = Vec::new();
    for i in 0..p.peers.len() {
        while let Some(m) = p.next_message(i, wal).unwrap() {
            out.push((i, m));
        }
    }
    out
}

/// A proposer of 3 acceptors, greeted (terms 0, 4, 2) and waiting for votes in term 5.
fn voting_proposer(mode: Mode) -> (Proposer, VecWal) {
    let mut p = Proposer::new(config(mode, 3)).unwrap();
    let mut wal = VecWal::default();
    for i in 0..3 {
        p.connected(i);
    }
    drain(&mut p, &mut wal);
    for (i, term) in [(0, 0), (1, 4), (2, 2)] {
        assert_eq!(p.handle(i, greeting_reply(term)).unwrap(), None);
    }
    (p, wal)
}

#[test]
fn term_is_max_greeting_term_plus_one_once_a_quorum_greeted() {
    let mut p = Proposer::new(config(Mode::Primary, 3)).unwrap();
    let mut wal = VecWal::default();
    for i in 0..3 {
        p.connected(i);
    }
    let sent = drain(&mut p, &mut wal);
    assert_eq!(sent.len(), 3);
    assert!(sent
        .iter()
        .all(|(_, m)| matches!(m, ProposerMessage::Greeting(_))));
    p.handle(0, greeting_reply(7)).unwrap();
    assert_eq!(p.term(), None, "one greeting is not a quorum");
    assert!(drain(&mut p, &mut wal).is_empty());
    p.handle(2, greeting_reply(3)).unwrap();
    assert_eq!(p.term(), Some(Term(8)));
    let sent = drain(&mut p, &mut wal);
    let expected = ProposerMessage::VoteRequest(VoteRequest { term: Term(8) });
    assert_eq!(sent, vec![(0, expected.clone()), (2, expected.clone())]);
    // The late acceptor is asked too, and one with a higher term means we lost.
    p.handle(1, greeting_reply(8)).unwrap();
    assert_eq!(drain(&mut p, &mut wal), vec![(1, expected)]);
    p.connected(1);
    drain(&mut p, &mut wal);
    let event = p.handle(1, greeting_reply(9)).unwrap();
    assert_eq!(event, Some(ProposerEvent::Lost { term: Term(9) }));
    assert!(p.is_finished());
}

#[test]
fn donor_is_the_highest_last_log_term_then_flush_lsn() {
    let (mut p, mut wal) = voting_proposer(Mode::Primary);
    drain(&mut p, &mut wal);
    // 0 has more WAL, but 1's last term is higher.
    assert_eq!(
        p.handle(0, vote_reply(5, true, 600, &[(0, 0), (1, 0)]))
            .unwrap(),
        None
    );
    let event = p.handle(1, vote_reply(5, true, 400, &[(0, 0), (1, 0), (2, 300)]));
    let expected = ProposerEvent::Elected {
        term: Term(5),
        start_lsn: lsn(400),
        donor: 1,
    };
    assert_eq!(event.unwrap(), Some(expected));
    let won = p.election().unwrap();
    assert_eq!(
        won.term_history,
        history(&[(0, 0), (1, 0), (2, 300), (5, 400)])
    );
}

#[test]
fn each_acceptor_starts_where_its_log_leaves_ours() {
    let (mut p, mut wal) = voting_proposer(Mode::Primary);
    drain(&mut p, &mut wal);
    p.handle(0, vote_reply(5, true, 600, &[(0, 0), (1, 0)]))
        .unwrap();
    p.handle(1, vote_reply(5, true, 400, &[(0, 0), (1, 0), (2, 300)]))
        .unwrap();
    // A late acceptor, refused at our term (it voted already): still streamed to.
    p.handle(2, vote_reply(5, false, 100, &[(0, 0), (1, 0)]))
        .unwrap();
    let starts: Vec<(usize, Lsn)> = drain(&mut p, &mut wal)
        .into_iter()
        .filter_map(|(i, m)| match m {
            ProposerMessage::Elected(e) => Some((i, e.start_streaming_at)),
            _ => None,
        })
        .collect();
    // Term 1 ends at 300 in our log: 0's tail after it diverges; 2 is behind.
    assert_eq!(starts, vec![(0, lsn(300)), (1, lsn(400)), (2, lsn(100))]);
}

#[test]
fn commit_lsn_is_the_quorum_flush_of_our_term_counting_earlier_acks_as_zero() {
    let (mut p, mut wal) = voting_proposer(Mode::Primary);
    drain(&mut p, &mut wal);
    p.handle(0, vote_reply(5, true, 400, &[(0, 0), (1, 0)]))
        .unwrap();
    p.handle(1, vote_reply(5, true, 200, &[(0, 0), (1, 0)]))
        .unwrap();
    p.handle(2, vote_reply(5, true, 100, &[(0, 0), (1, 0)]))
        .unwrap();
    wal.0 = vec![0; 1000];
    drain(&mut p, &mut wal);
    assert_eq!(
        p.handle(1, append_reply(5, 300, 0)).unwrap(),
        None,
        "below start: 0"
    );
    assert_eq!(
        p.handle(0, append_reply(5, 450, 0)).unwrap(),
        None,
        "one of three"
    );
    let event = p.handle(2, append_reply(5, 420, 0)).unwrap();
    assert_eq!(event, Some(ProposerEvent::CommitLsn(lsn(420))));
    assert_eq!(
        p.handle(2, append_reply(5, 410, 0)).unwrap(),
        None,
        "stale ack"
    );
    assert_eq!(p.commit_lsn(), lsn(420));
    let event = p.handle(0, append_reply(6, 450, 0)).unwrap();
    assert_eq!(event, Some(ProposerEvent::Lost { term: Term(6) }));
}

#[test]
fn appends_are_cut_to_the_batch_size_and_heartbeats_follow_ticks() {
    let (mut p, mut wal) = voting_proposer(Mode::Primary);
    drain(&mut p, &mut wal);
    p.handle(0, vote_reply(5, true, 0, &[(0, 0)])).unwrap();
    p.handle(1, vote_reply(5, true, 0, &[(0, 0)])).unwrap();
    wal.0 = (0..250).map(|b| b as u8).collect();
    let appends: Vec<(Lsn, Lsn, usize)> = drain(&mut p, &mut wal)
        .into_iter()
        .filter(|(i, _)| *i == 0)
        .filter_map(|(_, m)| match m {
            ProposerMessage::Append(a) => Some((a.begin_lsn, a.end_lsn, a.wal.len())),
            _ => None,
        })
        .collect();
    let expected = vec![
        (lsn(0), lsn(100), 100),
        (lsn(100), lsn(200), 100),
        (lsn(200), lsn(250), 50),
    ];
    assert_eq!(appends, expected);
    assert!(
        drain(&mut p, &mut wal).is_empty(),
        "nothing new, no heartbeat due"
    );
    p.tick();
    let sent = drain(&mut p, &mut wal);
    assert_eq!(sent.len(), 2);
    for (_, m) in sent {
        let ProposerMessage::Append(a) = m else {
            panic!("expected a heartbeat, got {m:?}")
        };
        assert_eq!(
            (a.begin_lsn, a.end_lsn, a.wal.len()),
            (lsn(250), lsn(250), 0)
        );
    }
}

#[test]
fn no_common_point_is_an_error_for_that_acceptor() {
    let (mut p, mut wal) = voting_proposer(Mode::Primary);
    drain(&mut p, &mut wal);
    p.handle(0, vote_reply(5, true, 0, &[(0, 0)])).unwrap();
    p.handle(1, vote_reply(5, true, 0, &[(0, 0)])).unwrap();
    let mut foreign = vote_reply(5, false, 0, &[(0, 0)]);
    if let AcceptorMessage::VoteResponse(v) = &mut foreign {
        v.term_history = TermHistory(vec![TermSwitch {
            term: Term(0),
            lsn: Lsn(8),
        }]);
        v.timeline_start_lsn = Lsn(8);
        v.flush_lsn = Lsn(8);
        v.commit_lsn = Lsn(8);
    }
    p.handle(2, foreign).unwrap();
    assert!(p.next_message(0, &mut wal).unwrap().is_some());
    let err = p.next_message(2, &mut wal).unwrap_err();
    assert!(matches!(err, ProposerError::NoCommonPoint { acceptor: 2 }));
}

#[test]
fn invalid_vote_responses_are_refused() {
    let (mut p, mut wal) = voting_proposer(Mode::Primary);
    drain(&mut p, &mut wal);
    let err = p
        .handle(0, vote_reply(5, true, 10, &[(0, 0), (3, 20)]))
        .unwrap_err();
    assert!(matches!(
        err,
        ProposerError::InvalidReply { acceptor: 0, .. }
    ));
    let err = p
        .handle(1, vote_reply(5, true, 10, &[(3, 0), (2, 5)]))
        .unwrap_err();
    assert!(matches!(
        err,
        ProposerError::InvalidReply { acceptor: 1, .. }
    ));
}

#[test]
fn configuration_is_bounded() {
    let mut c = config(Mode::Primary, 0);
    assert!(matches!(
        Proposer::new(c.clone()),
        Err(ProposerError::InvalidConfig(_))
    ));
    c.acceptor_count = MAX_ACCEPTORS + 1;
    assert!(matches!(
        Proposer::new(c.clone()),
        Err(ProposerError::InvalidConfig(_))
    ));
    c.acceptor_count = 3;
    c.max_append_bytes = MAX_WAL_BYTES_PER_APPEND + 1;
    assert!(matches!(
        Proposer::new(c),
        Err(ProposerError::InvalidConfig(_))
    ));
}

/// A proposer and real acceptors exchanging messages in order, without loss.
struct Cluster {
    acceptors: Vec<Acceptor<MemoryStorage>>,
    proposer: Proposer,
    events: Vec<ProposerEvent>,
}

impl Cluster {
    fn new(proposer: Proposer, acceptors: Vec<Acceptor<MemoryStorage>>) -> Cluster {
        let mut cluster = Cluster {
            acceptors,
            proposer,
            events: Vec::new(),
        };
        for i in 0..cluster.acceptors.len() {
            cluster.proposer.connected(i);
        }
        cluster
    }

    /// Deliver everything until nobody has anything to say.
    fn run(&mut self, wal: &mut VecWal) {
        loop {
            let mut moved = false;
            for i in 0..self.acceptors.len() {
                while let Some(m) = self.proposer.next_message(i, wal).unwrap() {
                    moved = true;
                    let reply = self.acceptors[i].handle(m).unwrap();
                    self.reply(i, reply);
                }
                let reply = self.acceptors[i].flush().unwrap();
                self.reply(i, reply);
            }
            if !moved {
                return;
            }
        }
    }

    fn reply(&mut self, i: usize, reply: Option<AcceptorMessage>) {
        if let Some(reply) = reply {
            if let Some(event) = self.proposer.handle(i, reply).unwrap() {
                self.events.push(event);
            }
        }
    }
}

fn fresh_acceptors(n: usize) -> Vec<Acceptor<MemoryStorage>> {
    (0..n)
        .map(|i| Acceptor::new(NodeId(i as u64), MemoryStorage::new()).unwrap())
        .collect()
}

#[test]
fn primary_commits_its_wal_on_real_acceptors() {
    let mut wal = VecWal::default();
    let mut c = Cluster::new(
        Proposer::new(config(Mode::Primary, 3)).unwrap(),
        fresh_acceptors(3),
    );
    c.run(&mut wal);
    // Acceptors 1 and 2 vote first: 0 was asked before the term was chosen.
    let elected = ProposerEvent::Elected {
        term: Term(1),
        start_lsn: START,
        donor: 1,
    };
    assert_eq!(c.events[0], elected);
    wal.0 = vec![7; 1000];
    c.run(&mut wal);
    assert_eq!(c.proposer.commit_lsn(), lsn(1000));
    assert_eq!(c.events.last(), Some(&ProposerEvent::CommitLsn(lsn(1000))));
    for a in &c.acceptors {
        assert_eq!((a.flush_lsn(), a.commit_lsn()), (lsn(1000), lsn(1000)));
        assert_eq!(a.storage().wal, wal.0);
    }
}

#[test]
fn sync_safekeepers_brings_a_quorum_to_the_donors_end() {
    // A first proposer writes 600 bytes to acceptors 0 and 1 only, commits nothing
    // on 2, and goes away.
    let mut wal = VecWal(vec![3; 600]);
    let mut acceptors = fresh_acceptors(3);
    let lagging = acceptors.pop().unwrap();
    let mut first = Cluster::new(Proposer::new(config(Mode::Primary, 2)).unwrap(), acceptors);
    first.run(&mut wal);
    let mut acceptors = first.acceptors;
    acceptors.push(lagging);
    // Sync from a quorum that includes the lagging acceptor and one with the WAL.
    let mut sync = Cluster::new(
        Proposer::new(config(Mode::SyncSafekeepers, 3)).unwrap(),
        acceptors,
    );
    sync.proposer.disconnected(0);
    sync.run(&mut wal);
    let elected = ProposerEvent::Elected {
        term: Term(2),
        start_lsn: lsn(600),
        donor: 1,
    };
    assert_eq!(sync.events.first(), Some(&elected));
    assert_eq!(sync.events.last(), Some(&ProposerEvent::Synced(lsn(600))));
    assert!(sync.proposer.is_finished());
    for a in &sync.acceptors[1..] {
        assert_eq!((a.flush_lsn(), a.commit_lsn()), (lsn(600), lsn(600)));
        assert_eq!(a.term_history(), history(&[(0, 0), (1, 0), (2, 600)]));
    }
}
