//! Bad input and failures against the real `safekeeper` binary: each ends the offending
//! stream with a clear status, acknowledges nothing that is not durable, and leaves the
//! daemon serving every other timeline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon_support;

use consensus::messages::{ProposerMessage, VoteRequest};
use consensus::term_history::Term;
use daemon_support::*;
use postgres_wal::Lsn;
use safekeeper::grpc::convert::ToProto;
use strata_proto::safekeeper as pb;
use tonic::Code;

fn slice(wal: &[u8], from: Lsn, to: Lsn) -> &[u8] {
    &wal[(from.0 - FIXTURE_START.0) as usize..(to.0 - FIXTURE_START.0) as usize]
}

fn assert_status(status: &tonic::Status, code: Code, words: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(words),
        "{words:?} not in {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_proposer_input_closes_only_that_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("sk"));
    let mut client = daemon.client().await;
    let wal = fixture_wal();
    let (a, b) = (timeline_id(20), timeline_id(21));
    create(&mut client, a).await;
    create(&mut client, b).await;

    // A healthy proposer on B, streaming between every bad case below.
    let (mut healthy, _) = Stream::open(&mut client, greeting(b)).await.unwrap();
    healthy.elect(1).await;
    let mut b_end = FIXTURE_START;
    let mut b_boundary = 20_000;
    let mut check_b_still_streams = async |healthy: &mut Stream| {
        let next = fixture_boundary(b_boundary);
        let reply = healthy
            .append(1, b_end, slice(&wal, b_end, next), FIXTURE_START, next)
            .await;
        assert_eq!(reply.flush_lsn, next);
        b_end = next;
        b_boundary += 20_000;
    };
    check_b_still_streams(&mut healthy).await;

    // An unknown timeline.
    let unknown = Stream::open(&mut client, greeting(timeline_id(99))).await;
    assert_status(&unknown.err().unwrap(), Code::NotFound, "not found");
    check_b_still_streams(&mut healthy).await;

    // A proposer of another PostgreSQL cluster.
    let mut wrong = greeting(a);
    wrong.system_id += 1;
    let refused = Stream::open(&mut client, wrong).await.err().unwrap();
    assert_status(&refused, Code::FailedPrecondition, "system id");
    check_b_still_streams(&mut healthy).await;

    // Bytes that are not protobuf, valid protobuf that is not a greeting, a greeting
    // with a malformed id, a message over the size limit.
    let garbage = propose_raw(&daemon, vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).await;
    assert_status(&garbage, Code::InvalidArgument, "malformed");
    let vote_first = ProposerMessage::VoteRequest(VoteRequest { term: Term(1) }).to_proto();
    let refused = Stream::open_raw(&mut client, vote_first)
        .await
        .err()
        .unwrap();
    assert_status(&refused, Code::FailedPrecondition, "greeting");
    let mut bad_id = ProposerMessage::Greeting(greeting(a)).to_proto();
    if let Some(pb::proposer_message::Message::Greeting(g)) = &mut bad_id.message {
        g.tenant_id = "not-hex".into();
    }
    let refused = Stream::open_raw(&mut client, bad_id).await.err().unwrap();
    assert_status(&refused, Code::InvalidArgument, "tenant_id");
    let mut huge = ProposerMessage::Greeting(greeting(a)).to_proto();
    if let Some(pb::proposer_message::Message::Greeting(g)) = &mut huge.message {
        g.proposer_id = "0".repeat(1 << 20);
    }
    let refused = Stream::open_raw(&mut client, huge).await.err().unwrap();
    assert!(
        matches!(refused.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{refused:?}"
    );
    check_b_still_streams(&mut healthy).await;

    // On an established stream: a gap, then (on a new stream) an append whose length
    // does not match its LSN range.
    let (mut stream, _) = Stream::open(&mut client, greeting(a)).await.unwrap();
    stream.elect(1).await;
    let first = fixture_boundary(30_000);
    stream
        .append(
            1,
            FIXTURE_START,
            slice(&wal, FIXTURE_START, first),
            FIXTURE_START,
            first,
        )
        .await;
    let after_gap = fixture_boundary(40_000);
    stream
        .send(append_request(1, after_gap, &[0; 8], FIXTURE_START))
        .await;
    assert_status(&stream.error().await, Code::FailedPrecondition, "gap");
    let (mut stream, greeted) = Stream::open(&mut client, greeting(a)).await.unwrap();
    assert_eq!(greeted.term, Term(1));
    let mut mismatched = append_request(1, first, &[0; 8], FIXTURE_START).to_proto();
    if let Some(pb::proposer_message::Message::AppendRequest(r)) = &mut mismatched.message {
        r.end_lsn += 1;
    }
    stream.send_raw(mismatched).await;
    assert_status(&stream.error().await, Code::InvalidArgument, "carries");
    check_b_still_streams(&mut healthy).await;

    // Nothing was acknowledged beyond the good appends, and A still works.
    let a_status = status(&mut client, a).await.unwrap();
    assert_eq!((a_status.flush_lsn, a_status.failure), (first, None));
    let (mut stream, _) = Stream::open(&mut client, greeting(a)).await.unwrap();
    let vote = stream.elect(2).await;
    assert_eq!(vote.flush_lsn, first);

    let samples = parse_exposition(&daemon.metrics());
    assert!(sample(&samples, "safekeeper_proposer_errors_total").unwrap() >= 8.0);
    daemon.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_wal_stops_the_timeline_until_a_new_greeting_reopens_it() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("sk"));
    let mut client = daemon.client().await;
    let wal = fixture_wal();
    let id = timeline_id(22);
    create(&mut client, id).await;
    let (mut stream, _) = Stream::open(&mut client, greeting(id)).await.unwrap();
    stream.elect(1).await;
    let first = fixture_boundary(30_000);
    stream
        .append(
            1,
            FIXTURE_START,
            slice(&wal, FIXTURE_START, first),
            FIXTURE_START,
            first,
        )
        .await;
    // A record header whose length and CRC are nonsense, at the right position.
    stream
        .send(append_request(1, first, &[0xee; 64], FIXTURE_START))
        .await;
    let ended = stream.error().await;
    assert_status(&ended, Code::Unavailable, "invalid");
    let failed = status(&mut client, id).await.unwrap();
    assert!(failed.failure.is_some(), "{failed:?}");
    assert_eq!(failed.flush_lsn, first);

    // The storage never wrote the bad bytes; a new greeting reopens it.
    let (mut stream, _) = Stream::open(&mut client, greeting(id)).await.unwrap();
    let vote = stream.elect(2).await;
    assert_eq!(vote.flush_lsn, first);
    let next = fixture_boundary(60_000);
    let reply = stream
        .append(2, first, slice(&wal, first, next), first, next)
        .await;
    assert_eq!(reply.flush_lsn, next);
    assert_eq!(status(&mut client, id).await.unwrap().failure, None);
    daemon.assert_no_unexpected_errors(&["invalid", "storage failed"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_stops_one_timeline_and_the_daemon_serves_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("sk");
    let (full, other) = (timeline_id(30), timeline_id(31));
    let mut wal = fixture_wal();
    // The rest of the segment after the fixture's final XLOG SWITCH is zeros, as
    // PostgreSQL leaves it: appending all of it reaches the segment end, where the
    // safekeeper must create the next segment.
    wal.resize(FIXTURE_SEGMENT_SIZE as usize, 0);
    let segment_end = Lsn(FIXTURE_START.0 + u64::from(FIXTURE_SEGMENT_SIZE));

    // Timelines are created while the disk has room (creation pre-allocates too).
    let mut daemon = Daemon::start(&data_dir);
    let mut client = daemon.client().await;
    create(&mut client, full).await;
    create(&mut client, other).await;
    assert!(daemon.terminate().success());

    // Now every new segment fails with ENOSPC.
    let env = [(
        "STRATA_FAILPOINTS",
        "segment-preallocate-before-rename=enospc",
    )];
    let mut daemon = Daemon::start_with_env(&data_dir, &env);
    let mut client = daemon.client().await;
    let (mut healthy, _) = Stream::open(&mut client, greeting(other)).await.unwrap();
    healthy.elect(1).await;
    let small = fixture_boundary(10_000);
    healthy
        .append(
            1,
            FIXTURE_START,
            slice(&wal, FIXTURE_START, small),
            FIXTURE_START,
            small,
        )
        .await;

    let (mut stream, _) = Stream::open(&mut client, greeting(full)).await.unwrap();
    stream.elect(1).await;
    let mut lsn = FIXTURE_START;
    let mut acknowledged = FIXTURE_START;
    for chunk in wal.chunks(consensus::limits::MAX_WAL_BYTES_PER_APPEND) {
        stream
            .send(append_request(1, lsn, chunk, FIXTURE_START))
            .await;
        lsn = Lsn(lsn.0 + chunk.len() as u64);
    }
    let ended = loop {
        match stream.recv().await {
            Ok(consensus::messages::AcceptorMessage::AppendResponse(r)) => {
                acknowledged = r.flush_lsn
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(status) => break status,
        }
    };
    assert_status(&ended, Code::Unavailable, "disk full");
    assert!(acknowledged < segment_end);
    let status_full = status(&mut client, full).await.unwrap();
    assert!(
        status_full
            .failure
            .as_deref()
            .unwrap_or("")
            .contains("disk full"),
        "{status_full:?}"
    );
    let samples = parse_exposition(&daemon.metrics());
    let series = format!("safekeeper_storage_errors_total{{{}}}", labels(full));
    assert_eq!(sample(&samples, &series), Some(1.0));

    // The other timeline goes on; the full one refuses new proposers with the reason.
    let next = fixture_boundary(20_000);
    let reply = healthy
        .append(1, small, slice(&wal, small, next), FIXTURE_START, next)
        .await;
    assert_eq!(reply.flush_lsn, next);
    assert_eq!(status(&mut client, other).await.unwrap().failure, None);
    // A new proposer's greeting reopens the timeline from disk: the segment was
    // written and synced whole before the next one could not be created.
    let (mut stream, _) = Stream::open(&mut client, greeting(full)).await.unwrap();
    let vote = stream.elect(2).await;
    assert_eq!(vote.flush_lsn, segment_end);
    assert_eq!(status(&mut client, full).await.unwrap().failure, None);
    assert!(daemon.terminate().success());
    daemon.assert_no_unexpected_errors(&["disk full"]);

    // Space freed (no failpoint): the timeline opens with all acknowledged WAL.
    let daemon = Daemon::start(&data_dir);
    let mut client = daemon.client().await;
    let reopened = status(&mut client, full).await.unwrap();
    assert_eq!(reopened.flush_lsn, segment_end, "{reopened:?}");
    assert_eq!((reopened.term, reopened.failure), (Term(2), None));
    let (mut stream, _) = Stream::open(&mut client, greeting(full)).await.unwrap();
    let vote = stream.elect(3).await;
    assert_eq!(vote.flush_lsn, reopened.flush_lsn);
    daemon.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_list_and_delete_timelines() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("sk");
    let daemon = Daemon::start(&data_dir);
    let mut client = daemon.client().await;
    let (a, b) = (timeline_id(40), timeline_id(41));
    let created = create(&mut client, b).await;
    // Idempotent with the same parameters, refused with others.
    assert_eq!(create(&mut client, b).await, created);
    let mut other = new_timeline(b);
    other.system_id += 1;
    let refused = client.create_timeline(other.to_proto()).await.unwrap_err();
    assert_status(&refused, Code::AlreadyExists, "already exists");
    create(&mut client, a).await;

    for (change, words) in [
        (
            Box::new(|r: &mut pb::CreateTimelineRequest| r.tenant_id = "x".into())
                as Box<dyn Fn(&mut pb::CreateTimelineRequest)>,
            "tenant_id",
        ),
        (Box::new(|r| r.wal_segment_size = 3_000_000), "segment"),
        (Box::new(|r| r.start_lsn = 0), "start LSN"),
        (Box::new(|r| r.system_id = 0), "system_id"),
        (Box::new(|r| r.pg_version = 15), "pg_version"),
    ] {
        let mut request = new_timeline(timeline_id(42)).to_proto();
        change(&mut request);
        let refused = client.create_timeline(request).await.unwrap_err();
        assert_status(&refused, Code::InvalidArgument, words);
    }

    let listed = client
        .list_timelines(pb::ListTimelinesRequest {})
        .await
        .unwrap()
        .into_inner()
        .timelines;
    let ids: Vec<String> = listed.iter().map(|t| t.timeline_id.clone()).collect();
    assert_eq!(ids, [a.timeline_id.to_string(), b.timeline_id.to_string()]);

    // Deleting ends the timeline's streams and removes its data and series.
    let (mut stream, _) = Stream::open(&mut client, greeting(a)).await.unwrap();
    client.delete_timeline(a.to_proto()).await.unwrap();
    assert_status(&stream.error().await, Code::Unavailable, "stopped");
    assert_eq!(
        status(&mut client, a).await.unwrap_err().code(),
        Code::NotFound
    );
    let dir = data_dir.join(a.tenant_id.to_string());
    assert!(!dir.join(a.timeline_id.to_string()).exists());
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| {
        let name = e.unwrap().file_name();
        name.to_string_lossy() == b.timeline_id.to_string()
    }));
    assert!(!daemon.metrics().contains(&a.timeline_id.to_string()));
    let again = client.delete_timeline(a.to_proto()).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    // And it can be created afresh.
    assert_eq!(create(&mut client, a).await.term, Term(0));
    daemon.assert_no_unexpected_errors(&[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeline_that_cannot_be_opened_does_not_stop_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("sk");
    let (broken, fine) = (timeline_id(50), timeline_id(51));
    let mut daemon = Daemon::start(&data_dir);
    let mut client = daemon.client().await;
    create(&mut client, broken).await;
    create(&mut client, fine).await;
    assert!(daemon.terminate().success());

    let control = data_dir
        .join(broken.tenant_id.to_string())
        .join(broken.timeline_id.to_string())
        .join(safekeeper::storage::CONTROL_FILE_NAME);
    let mut bytes = std::fs::read(&control).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&control, bytes).unwrap();

    let daemon = Daemon::start(&data_dir);
    let mut client = daemon.client().await;
    let refused = status(&mut client, broken).await.unwrap_err();
    assert_status(&refused, Code::Unavailable, "cannot be opened");
    let refused = Stream::open(&mut client, greeting(broken))
        .await
        .err()
        .unwrap();
    assert_status(&refused, Code::Unavailable, "CRC");
    let listed = client
        .list_timelines(pb::ListTimelinesRequest {})
        .await
        .unwrap()
        .into_inner()
        .timelines;
    assert_eq!(listed.len(), 2);
    assert!(
        listed[0].failure.as_deref().unwrap().contains("CRC"),
        "{listed:?}"
    );

    let wal = fixture_wal();
    let (mut stream, _) = Stream::open(&mut client, greeting(fine)).await.unwrap();
    stream.elect(1).await;
    let end = fixture_boundary(10_000);
    let reply = stream
        .append(
            1,
            FIXTURE_START,
            slice(&wal, FIXTURE_START, end),
            FIXTURE_START,
            end,
        )
        .await;
    assert_eq!(reply.flush_lsn, end);
    // The operator's way out: delete it.
    client.delete_timeline(broken.to_proto()).await.unwrap();
    daemon.assert_no_unexpected_errors(&["cannot open timeline"]);
}
