//! Proposers against the real `safekeeper` binary: real PostgreSQL 15 WAL appended over
//! the gRPC stream, flush and commit LSNs in the replies and in `TimelineStatus`, the
//! consensus crate's own `Proposer` driving it, and fencing by a newer term.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon_support;

use consensus::limits::MAX_WAL_BYTES_PER_APPEND;
use consensus::messages::{AcceptorMessage, ProposerId, ProposerMessage};
use consensus::proposer::Mode;
use consensus::term_history::{Term, TermSwitch};
use consensus::{Proposer, ProposerConfig, ProposerEvent, WalSource};
use daemon_support::*;
use postgres_wal::Lsn;
use safekeeper::grpc::convert::ToProto;

fn slice(wal: &[u8], from: Lsn, to: Lsn) -> &[u8] {
    &wal[(from.0 - FIXTURE_START.0) as usize..(to.0 - FIXTURE_START.0) as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn flush_stops_at_record_boundaries_and_commit_follows_the_proposer() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("sk"));
    let mut client = daemon.client().await;
    let id = timeline_id(10);
    let created = create(&mut client, id).await;
    assert_eq!(
        (created.flush_lsn, created.commit_lsn, created.term),
        (FIXTURE_START, FIXTURE_START, Term(0))
    );
    let wal = fixture_wal();
    let (mut stream, _) = Stream::open(&mut client, greeting(id)).await.unwrap();
    stream.elect(1).await;

    // Many pipelined appends cut anywhere: acknowledged up to the last whole record.
    let boundary = fixture_boundary(150_000);
    let reply = stream
        .append(
            1,
            FIXTURE_START,
            slice(&wal, FIXTURE_START, boundary),
            FIXTURE_START,
            boundary,
        )
        .await;
    assert_eq!((reply.term, reply.flush_lsn), (Term(1), boundary));

    // Half a record more: written, but the flush LSN stays at the record boundary.
    let next = fixture_boundary(boundary.0 - FIXTURE_START.0 + 1);
    let middle = Lsn(boundary.0 + (next.0 - boundary.0) / 2);
    let reply = stream
        .append(
            1,
            boundary,
            slice(&wal, boundary, middle),
            FIXTURE_START,
            boundary,
        )
        .await;
    assert_eq!(reply.flush_lsn, boundary);
    let reply = stream
        .append(1, middle, slice(&wal, middle, next), FIXTURE_START, next)
        .await;
    assert_eq!(reply.flush_lsn, next);

    // The commit LSN follows the proposer's, never beyond what this acceptor holds.
    let reply = stream.append(1, next, &[], boundary, next).await;
    assert_eq!(reply.commit_lsn, boundary);
    let reply = stream.append(1, next, &[], Lsn(next.0 + 4096), next).await;
    assert_eq!(reply.commit_lsn, next);

    let status = status(&mut client, id).await.unwrap();
    assert_eq!((status.flush_lsn, status.commit_lsn), (next, next));
    assert_eq!(status.term, Term(1));
    assert_eq!(status.failure, None);
    daemon.assert_no_unexpected_errors(&[]);
}

/// The compute's WAL, as the proposer reads it.
struct FixtureSource {
    wal: Vec<u8>,
    end: Lsn,
}

impl WalSource for FixtureSource {
    fn end_lsn(&self) -> Lsn {
        self.end
    }

    fn read(
        &mut self,
        begin: Lsn,
        end: Lsn,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(slice(&self.wal, begin, end).to_vec())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consensus_proposer_commits_real_wal_over_grpc() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("sk"));
    let mut client = daemon.client().await;
    let id = timeline_id(11);
    create(&mut client, id).await;
    let end = fixture_boundary(200_000);
    let mut source = FixtureSource {
        wal: fixture_wal(),
        end,
    };
    let mut proposer = Proposer::new(ProposerConfig {
        id,
        proposer_id: ProposerId(7),
        system_id: FIXTURE_SYSTEM_ID,
        pg_version: PG_VERSION,
        wal_segment_size: FIXTURE_SEGMENT_SIZE,
        acceptor_count: 1,
        mode: Mode::Primary,
        max_append_bytes: MAX_WAL_BYTES_PER_APPEND,
    })
    .unwrap();
    proposer.connected(0);
    let first = proposer.next_message(0, &mut source).unwrap().unwrap();
    assert!(matches!(first, ProposerMessage::Greeting(_)));
    let mut stream = Stream::open_raw(&mut client, first.to_proto())
        .await
        .unwrap();

    let mut elected_at = None;
    let mut committed = Lsn::INVALID;
    while committed < end {
        while let Some(message) = proposer.next_message(0, &mut source).unwrap() {
            stream.send(message).await;
        }
        let reply = stream.recv().await.expect("a reply");
        match proposer.handle(0, reply).unwrap() {
            Some(ProposerEvent::Elected {
                term, start_lsn, ..
            }) => {
                elected_at = Some((term, start_lsn));
            }
            Some(ProposerEvent::CommitLsn(lsn)) => committed = lsn,
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
    }
    assert_eq!(elected_at, Some((Term(1), FIXTURE_START)));
    assert_eq!(committed, end);

    // A heartbeat carries the commit LSN to the acceptor.
    proposer.tick();
    let heartbeat = proposer.next_message(0, &mut source).unwrap().unwrap();
    stream.send(heartbeat).await;
    match stream.recv().await.unwrap() {
        AcceptorMessage::AppendResponse(r) => assert_eq!((r.flush_lsn, r.commit_lsn), (end, end)),
        other => panic!("expected an append response, got {other:?}"),
    }
    let status = status(&mut client, id).await.unwrap();
    assert_eq!((status.flush_lsn, status.commit_lsn), (end, end));
    daemon.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_term_fences_the_older_proposer() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("sk"));
    let mut client = daemon.client().await;
    let id = timeline_id(12);
    create(&mut client, id).await;
    let wal = fixture_wal();
    let first = fixture_boundary(50_000);
    let second = fixture_boundary(120_000);

    let (mut old, _) = Stream::open(&mut client, greeting(id)).await.unwrap();
    old.elect(1).await;
    old.append(
        1,
        FIXTURE_START,
        slice(&wal, FIXTURE_START, first),
        FIXTURE_START,
        first,
    )
    .await;

    let (mut new, greeted) = Stream::open(&mut client, greeting(id)).await.unwrap();
    assert_eq!(greeted.term, Term(1));
    let vote = new.elect(2).await;
    assert_eq!(vote.flush_lsn, first);

    // The old proposer's next append is answered with the newer term: it must stop.
    old.send(append_request(1, first, slice(&wal, first, second), first))
        .await;
    match old.recv().await.unwrap() {
        AcceptorMessage::AppendResponse(r) => {
            assert_eq!((r.term, r.flush_lsn), (Term(2), first))
        }
        other => panic!("expected an append response, got {other:?}"),
    }
    let reply = new
        .append(2, first, slice(&wal, first, second), first, second)
        .await;
    assert_eq!((reply.term, reply.flush_lsn), (Term(2), second));

    let status = status(&mut client, id).await.unwrap();
    let switches: Vec<(Term, Lsn)> = status
        .term_history
        .0
        .iter()
        .map(|TermSwitch { term, lsn }| (*term, *lsn))
        .collect();
    assert_eq!(
        switches,
        [
            (Term(0), FIXTURE_START),
            (Term(1), FIXTURE_START),
            (Term(2), first)
        ]
    );
    daemon.assert_no_unexpected_errors(&[]);
}
