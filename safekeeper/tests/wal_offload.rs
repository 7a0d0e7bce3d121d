//! WAL offload to object storage with one real safekeeper, fed real PostgreSQL 15 WAL
//! (1 MiB segments) by a hand-driven proposer: what object storage holds is the
//! committed WAL byte for byte, local segments go only below
//! min(remote-consistent, uploaded, commit), and a bad object store stops the daemon
//! at startup with one clear line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon_support;
mod offload_support;

use std::process::Stdio;

use daemon_support::{timeline_id, Daemon};
use offload_support::*;
use postgres_wal::Lsn;
use remote_storage::layout;

const SEGMENT: u64 = PgWal::SEGMENT_SIZE;

#[tokio::test(flavor = "multi_thread")]
async fn committed_segments_are_uploaded_byte_for_byte_and_removed_only_below_the_horizon() {
    let wal = tokio::task::spawn_blocking(|| PgWal::generate(5))
        .await
        .unwrap();
    let (first, end_segment) = (segment_of(wal.start, SEGMENT), segment_of(wal.end, SEGMENT));
    assert_eq!(end_segment - first, 5);

    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let data_dir = tmp.path().join("sk");
    let node = Node::new(1);
    let flags = vec![
        "--object-store".to_string(),
        format!("file://{}", store.display()),
    ];
    let mut daemon = start(&node, &data_dir, &flags);
    let id = timeline_id(70);
    let dir = timeline_dir(&data_dir, id);

    // All the WAL written, three segments committed: only those are uploaded.
    let committed = Lsn(wal.start.0 + 3 * SEGMENT + 1000);
    let mut stream = wal.propose(node.grpc, id, committed).await;
    let status = wait_status(node.grpc, id, "three segments uploaded", |s| {
        s.offload.uploaded_lsn == Lsn(wal.start.0 + 3 * SEGMENT)
    })
    .await;
    assert_eq!(status.commit_lsn, committed);
    // Then everything committed (the last WAL is a switch, so `end` is a segment start:
    // every segment before it is finished).
    wal.announce(&mut stream, wal.end, wal.end).await;
    let status = wait_status(node.grpc, id, "every finished segment uploaded", |s| {
        s.offload.uploaded_lsn == wal.end
    })
    .await;
    assert_eq!(status.commit_lsn, wal.end);

    // Byte for byte: each object is the local segment and the WAL PostgreSQL wrote
    // (the timeline starts at a segment start, so the committed range is whole
    // segments).
    for n in first..end_segment {
        let name = segment_name(n, SEGMENT);
        let object = store.join(layout::wal_segment_path(id, &name).as_str());
        let uploaded = std::fs::read(&object).unwrap();
        let segment_start = Lsn(n * SEGMENT);
        assert!(
            uploaded == wal.range(segment_start, Lsn(segment_start.0 + SEGMENT)),
            "{name} in object storage differs from the WAL PostgreSQL wrote"
        );
        assert!(
            uploaded == std::fs::read(dir.join(&name)).unwrap(),
            "{name} in object storage differs from the local segment"
        );
    }
    let uploaded_series = |daemon: &Daemon, name: &str| offload_metric(daemon, name, id);
    assert_eq!(
        uploaded_series(&daemon, "safekeeper_wal_offload_uploaded_segments_total"),
        5.0
    );
    assert_eq!(
        uploaded_series(&daemon, "safekeeper_wal_offload_uploaded_bytes_total"),
        (5 * SEGMENT) as f64
    );
    assert_eq!(
        uploaded_series(&daemon, "safekeeper_wal_offload_uploader"),
        1.0
    );

    // Uploaded and committed, but the pageserver reported nothing: nothing removed.
    assert_eq!(status.offload.remote_consistent_lsn, Lsn::INVALID);
    assert_eq!(status.offload.removal_horizon_lsn, Lsn::INVALID);
    assert_eq!(
        local_segments(&dir, SEGMENT).len(),
        6,
        "{:?}",
        local_segments(&dir, SEGMENT)
    );

    // The pageserver streams the WAL back and reports a remote-consistent LSN in the
    // middle of the third segment.
    let feed = PageserverFeed::start(node.pg, id, wal.start, Lsn::INVALID).await;
    wait_for("the WAL read back", || {
        (feed.received().len() == wal.wal.len()).then_some(())
    })
    .await;
    assert!(
        feed.received() == wal.wal,
        "WAL read back through the safekeeper differs"
    );
    let remote_consistent = Lsn(wal.start.0 + 2 * SEGMENT + 12345);
    feed.set_apply(remote_consistent);
    let status = wait_status(
        node.grpc,
        id,
        "the horizon at the remote-consistent LSN",
        |s| s.offload.removal_horizon_lsn == remote_consistent,
    )
    .await;
    assert_eq!(status.offload.remote_consistent_lsn, remote_consistent);
    let horizon_segment = segment_of(remote_consistent, SEGMENT);
    wait_for("segments below the horizon removed", || {
        (local_segments(&dir, SEGMENT)[0].0 == horizon_segment).then_some(())
    })
    .await;
    // Nothing at or above the horizon's segment went.
    let kept: Vec<u64> = local_segments(&dir, SEGMENT)
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(kept, (horizon_segment..=end_segment).collect::<Vec<_>>());
    assert_eq!(
        uploaded_series(&daemon, "safekeeper_wal_offload_removed_segments_total"),
        2.0
    );

    // The pageserver has everything: the commit and uploaded LSNs hold the rest back,
    // and the segment being written stays.
    feed.set_apply(Lsn(wal.end.0 + SEGMENT));
    wait_status(node.grpc, id, "the horizon at the commit LSN", |s| {
        s.offload.removal_horizon_lsn == wal.end
    })
    .await;
    wait_for("every finished segment removed", || {
        (local_segments(&dir, SEGMENT).len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        local_segments(&dir, SEGMENT),
        [(
            end_segment,
            format!("{}.partial", segment_name(end_segment, SEGMENT))
        )]
    );
    drop(feed);
    drop(stream);

    // After a restart the remote-consistent LSN is unknown (nothing more is removed
    // until the pageserver reports again), and the uploaded LSN is listed again.
    assert!(daemon.terminate().success());
    daemon.assert_no_unexpected_errors(&[]);
    let daemon = start(&node, &data_dir, &flags);
    let status = wait_status(node.grpc, id, "the uploaded LSN listed", |s| {
        s.offload.uploaded_lsn == wal.end
    })
    .await;
    assert_eq!(status.offload.remote_consistent_lsn, Lsn::INVALID);
    assert_eq!(status.commit_lsn, wal.end);
    daemon.assert_no_unexpected_errors(&[]);
}

/// Without an object store nothing is uploaded or removed, and the offload fields stay
/// zero: the safekeeper works as before.
#[tokio::test(flavor = "multi_thread")]
async fn without_an_object_store_nothing_is_offloaded_or_removed() {
    let wal = tokio::task::spawn_blocking(|| PgWal::generate(2))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("sk");
    let node = Node::new(1);
    let daemon = start(&node, &data_dir, &[]);
    let id = timeline_id(71);
    let _stream = wal.propose(node.grpc, id, wal.end).await;
    let feed = PageserverFeed::start(node.pg, id, wal.start, wal.end).await;
    let status = wait_status(node.grpc, id, "the pageserver's report", |s| {
        s.offload.remote_consistent_lsn == wal.end
    })
    .await;
    assert_eq!(status.offload.uploaded_lsn, Lsn::INVALID);
    assert_eq!(status.offload.removal_horizon_lsn, Lsn::INVALID);
    drop(feed);
    assert_eq!(
        local_segments(&timeline_dir(&data_dir, id), SEGMENT).len(),
        3
    );
    assert!(!daemon.metrics().contains("safekeeper_wal_offload_"));
    daemon.assert_no_unexpected_errors(&[]);
}

/// Run the safekeeper with `flags` until it exits (it must, by itself): its status and
/// standard error.
fn run_to_exit(flags: &[String]) -> (std::process::ExitStatus, String) {
    let tmp = tempfile::tempdir().unwrap();
    let node = Node::new(1);
    let mut child = command(&node, &tmp.path().join("sk"), flags)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the safekeeper did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

/// The daemon's own failure line: the last line of its standard error.
fn failure_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or_default()
}

#[test]
fn a_wrong_key_or_a_missing_bucket_stops_the_daemon_with_one_clear_line() {
    let server = s3_harness::S3Server::start().unwrap();
    server.create_bucket("wal").unwrap();
    let endpoint = server.endpoint();

    let mut wrong_key = s3_flags(&server, "wal", "cluster");
    *wrong_key.last_mut().unwrap() = "not-the-secret".into();
    let (status, stderr) = run_to_exit(&wrong_key);
    assert!(!status.success(), "{stderr}");
    let line = failure_line(&stderr);
    assert!(line.starts_with("safekeeper: "), "{stderr}");
    assert!(
        line.contains("s3://wal/cluster/") && line.contains(&endpoint),
        "the error does not name the bucket and the endpoint: {line}"
    );
    assert!(!line.contains("not-the-secret"), "{line}");
    assert_eq!(
        line.matches("s3://wal/cluster/").count(),
        1,
        "said twice: {line}"
    );

    let (status, stderr) = run_to_exit(&s3_flags(&server, "missing", "cluster"));
    assert!(!status.success(), "{stderr}");
    let line = failure_line(&stderr);
    assert!(
        line.contains("s3://missing/cluster/")
            && line.contains(&endpoint)
            && line.contains("NoSuchBucket"),
        "{line}"
    );

    let (status, stderr) = run_to_exit(&["--object-store".into(), "gs://x".into()]);
    assert!(!status.success(), "{stderr}");
    assert!(
        failure_line(&stderr).contains("invalid object store URL"),
        "{stderr}"
    );
}
