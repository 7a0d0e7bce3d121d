//! The daemon's timelines as the replication server sees them: WAL appended over gRPC
//! and committed is what stock `pg_receivewal` and `psql` read from the daemon's
//! PostgreSQL port, and nothing above the commit LSN is served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod daemon_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::*;
use pg_harness::PgBin;
use postgres_wal::Lsn;

fn run(mut command: Command) -> (bool, String, String) {
    let output = command.output().expect("run a PostgreSQL client tool");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A directory the client tools may write into (they run as the server user as root).
fn writable_dir(bin: &PgBin, path: &Path) {
    std::fs::create_dir(path).unwrap();
    bin.chown_to_server_user(path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_receivewal_reads_the_committed_wal_from_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&tmp.path().join("sk"));
    let mut client = daemon.client().await;
    let id = timeline_id(60);
    create(&mut client, id).await;
    let wal = fixture_wal();
    let committed = fixture_boundary(150_000);
    let written = fixture_boundary(200_000);
    let (mut stream, _) = Stream::open(&mut client, greeting(id)).await.unwrap();
    stream.elect(1).await;
    let sent = &wal[..(written.0 - FIXTURE_START.0) as usize];
    stream
        .append(1, FIXTURE_START, sent, FIXTURE_START, written)
        .await;
    let reply = stream.append(1, written, &[], committed, written).await;
    assert_eq!(reply.commit_lsn, committed);

    let bin = PgBin::locate().unwrap();
    let port = daemon.ports.pg.port().to_string();
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=x options='-c tenant_id={} -c timeline_id={}'",
        id.tenant_id, id.timeline_id
    );
    // IDENTIFY_SYSTEM: the timeline's system id, and the commit LSN as its position.
    let mut psql = bin.command("psql");
    psql.args(["-X", "-A", "-t", "-c", "IDENTIFY_SYSTEM"])
        .arg(format!("dbname=replication replication=true {conninfo}"));
    let (ok, stdout, stderr) = run(psql);
    assert!(ok, "psql failed: {stderr}");
    assert_eq!(stdout.trim(), format!("{FIXTURE_SYSTEM_ID}|1|{committed}|"));

    // pg_receivewal starts at the segment of that position (the fixture's segment) and
    // stops once it has WAL beyond --endpos. Asked for all the WAL written, it must wait:
    // WAL above the commit LSN may still be truncated by a new term and is not served.
    let out = tmp.path().join("received");
    writable_dir(&bin, &out);
    let mut receivewal = bin.command("pg_receivewal");
    receivewal
        .arg("-D")
        .arg(&out)
        .args(["--no-loop", "--no-sync", "--status-interval=1"])
        .arg(format!("--endpos={}", Lsn(written.0 - 1)))
        .arg("-d")
        .arg(&conninfo)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut receiver = receivewal.spawn().unwrap();
    let partial = out.join("000000010000000000000009.partial");
    let held = (committed.0 - FIXTURE_START.0) as usize;
    let deadline = Instant::now() + WAIT;
    while std::fs::read(&partial).map_or(true, |got| got.len() < held || got[..held] != wal[..held])
    {
        assert!(
            Instant::now() < deadline,
            "pg_receivewal did not receive the committed WAL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Given time to receive more, it has nothing more: it waits.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        receiver.try_wait().unwrap().is_none(),
        "pg_receivewal did not wait"
    );
    let early = std::fs::read(&partial).unwrap();
    assert!(
        early[held..].iter().all(|&b| b == 0),
        "WAL above the commit LSN was served"
    );

    // The commit LSN moves: the stream delivers the rest and pg_receivewal finishes.
    let reply = stream.append(1, written, &[], written, written).await;
    assert_eq!(reply.commit_lsn, written);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = receiver.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "pg_receivewal did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut receiver.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "pg_receivewal failed:\n{stderr}");
    let segment = std::fs::read(&partial).unwrap();
    assert_eq!(segment.len(), FIXTURE_SEGMENT_SIZE as usize);
    let held = sent.len();
    assert!(segment[..held] == wal[..held], "received WAL differs");
    daemon.assert_no_unexpected_errors(&[]);
}
