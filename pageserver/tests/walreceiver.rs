//! The walreceiver against real processes: three safekeepers fed by a real compute
//! (`compute_ctl` and stock PostgreSQL 15), and the `pageserver` binary ingesting, all
//! started as `strata up` starts them (`local_cluster`). Needs the daemons' binaries
//! beside the test (`cargo build --bins`, as `scripts/test.sh` does first).
//!
//! Under a steady insert workload: the safekeeper streamed from is frozen (SIGSTOP:
//! its connection stays open but delivers nothing) and ingest moves to another one
//! after `wal_stall_timeout`; the safekeeper then streamed from is killed (-9) and
//! ingest carries on from another one; then the pageserver is killed (-9) mid-ingest
//! and restarted, and resumes at its last_record_lsn. At the end the pageserver has
//! everything the compute flushed, ingest never stopped (a record stored twice would
//! stop it: commits refuse values at or below last_record_lsn), and a stock
//! PostgreSQL started from the pageserver's basebackup holds exactly the compute's
//! rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use local_cluster::{send_signal, Binaries, ClusterSpec, LocalCluster, Signal};
use pg_harness::{PgBin, PgConfig, PgServer};
use postgres_wal::Lsn;
use strata_ids::TenantTimelineId;
use strata_proto::pageserver as pb;
use strata_proto::pageserver::pageserver_client::PageserverClient;
use support::{basebackup, request, WAIT};
use tonic::transport::Channel;

const POLL: Duration = Duration::from_millis(100);

/// The workload: this many rows per commit, then this pause.
const ROWS_PER_COMMIT: u64 = 5;
const COMMIT_PAUSE: Duration = Duration::from_millis(20);

/// A running cluster of three safekeepers, a pageserver and a compute, in a temporary
/// directory; its daemons are stopped however the test ends.
struct Cluster {
    cluster: LocalCluster,
    binaries: Binaries,
    connstr: String,
    id: TenantTimelineId,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    fn up() -> Cluster {
        let binaries = Binaries::locate()
            .expect("the daemons' binaries beside the test: run `cargo build --bins` first");
        // Under /tmp, mode 0755: PostgreSQL runs as `postgres` when tests run as root.
        let tmp = tempfile::Builder::new()
            .prefix("strata-walreceiver-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = ClusterSpec {
            safekeepers: Some(3),
            ..ClusterSpec::default()
        };
        let (cluster, _) =
            LocalCluster::open_or_create(&tmp.path().join("cluster"), &spec).unwrap();
        let config = cluster.config();
        let id = TenantTimelineId {
            tenant_id: config.tenant_id,
            timeline_id: config.timeline_id,
        };
        let mut cluster = Cluster {
            cluster,
            binaries,
            connstr: String::new(),
            id,
            _tmp: tmp,
        };
        cluster.connstr = cluster.restart();
        cluster
    }

    /// Starts whatever is not running; the compute's connection string.
    fn restart(&self) -> String {
        self.cluster
            .up(&self.binaries, &mut |_| {})
            .unwrap()
            .connstr
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.cluster.down() {
            eprintln!("strata down: {error}");
        }
    }
}

fn psql(bin: &PgBin, connstr: &str, sql: &str) -> String {
    let output = bin.psql(connstr).args(["-c", sql]).output().unwrap();
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn status(client: &mut PageserverClient<Channel>, id: TenantTimelineId) -> pb::TimelineInfo {
    client
        .timeline_status(request(id))
        .await
        .unwrap()
        .into_inner()
}

async fn connect(cluster: &LocalCluster) -> PageserverClient<Channel> {
    let addr = cluster
        .pageserver_grpc_addr()
        .expect("the cluster has a pageserver");
    let deadline = Instant::now() + WAIT;
    loop {
        match PageserverClient::connect(format!("http://{addr}")).await {
            Ok(client) => return client,
            Err(error) if Instant::now() > deadline => panic!("pageserver at {addr}: {error}"),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Waits until `done` holds for the timeline's status; returns that status.
async fn wait_for(
    client: &mut PageserverClient<Channel>,
    id: TenantTimelineId,
    what: &str,
    done: impl Fn(&pb::TimelineInfo) -> bool,
) -> pb::TimelineInfo {
    let deadline = Instant::now() + WAIT;
    loop {
        let info = status(client, id).await;
        assert!(
            !info.state.starts_with("stopped"),
            "ingest stopped while waiting for {what}: {}",
            info.state
        );
        if done(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {info:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// SIGSTOP (`true`) or SIGCONT a process.
fn freeze(pid: u32, stop: bool) {
    let signal = if stop { "STOP" } else { "CONT" };
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -s {signal} {pid}");
}

fn unpack(tar: &[u8], dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    tar::Archive::new(tar).unpack(dir)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_survives_safekeeper_and_pageserver_kills() {
    let bin = PgBin::locate().unwrap();
    let test = Cluster::up();
    let (cluster, connstr, id) = (&test.cluster, test.connstr.clone(), test.id);
    let config = cluster.config().clone();
    let mut client = connect(cluster).await;
    let t0 = Instant::now();

    psql(
        &bin,
        &connstr,
        "CREATE TABLE t (id bigint PRIMARY KEY, v text)",
    );
    // A steady stream of small commits, each waiting for a quorum of safekeepers. Kept
    // light: with wal_consistency_checking every row's heap and index records carry
    // page images (about 16 KiB per row), and a debug-build pageserver must keep up.
    let stop = Arc::new(AtomicBool::new(false));
    let workload = {
        let (bin, connstr, stop) = (bin.clone(), connstr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut commits = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let first = commits * ROWS_PER_COMMIT + 1;
                let last = first + ROWS_PER_COMMIT - 1;
                psql(
                    &bin,
                    &connstr,
                    &format!(
                        "INSERT INTO t SELECT g, repeat(md5(g::text), 8) \
                         FROM generate_series({first}, {last}) g"
                    ),
                );
                commits += 1;
                std::thread::sleep(COMMIT_PAUSE);
            }
            commits
        })
    };

    let streamed_safekeeper = |info: &pb::TimelineInfo| {
        config
            .safekeepers
            .iter()
            .find(|sk| info.wal_source.ends_with(&format!(":{}", sk.pg_port)))
            .unwrap_or_else(|| panic!("wal_source {} is no safekeeper", info.wal_source))
            .id
    };

    // 1. Freeze the safekeeper streamed from: after the stall timeout (10 s by
    // default) ingest goes on from another one, which has more WAL.
    let first = wait_for(&mut client, id, "a WAL source", |i| {
        !i.wal_source.is_empty()
    })
    .await;
    let frozen = streamed_safekeeper(&first);
    let frozen_pid = cluster.safekeeper_pid(frozen).unwrap();
    freeze(frozen_pid, true);
    let frozen_at = status(&mut client, id).await.last_record_lsn;
    let unstalled = wait_for(
        &mut client,
        id,
        "a switch away from the frozen safekeeper",
        |i| {
            !i.wal_source.is_empty()
                && i.wal_source != first.wal_source
                && i.last_record_lsn > frozen_at
        },
    )
    .await;
    freeze(frozen_pid, false);
    eprintln!(
        "{:?}: safekeeper {frozen} frozen at {}; streaming from {} at {}",
        t0.elapsed(),
        Lsn(frozen_at),
        unstalled.wal_source,
        Lsn(unstalled.last_record_lsn)
    );

    // 2. Kill the safekeeper streamed from: ingest goes on from another one.
    let killed = streamed_safekeeper(&unstalled);
    let killed_at = status(&mut client, id).await.last_record_lsn;
    assert!(send_signal(
        cluster.safekeeper_pid(killed).unwrap(),
        Signal::Kill
    ));
    let switched = wait_for(&mut client, id, "another WAL source", |i| {
        !i.wal_source.is_empty()
            && i.wal_source != unstalled.wal_source
            && i.last_record_lsn > killed_at
    })
    .await;
    eprintln!(
        "{:?}: safekeeper {killed} killed at {}; streaming from {} at {}",
        t0.elapsed(),
        Lsn(killed_at),
        switched.wal_source,
        Lsn(switched.last_record_lsn)
    );

    // 3. Kill the pageserver mid-ingest, let the compute go on, restart everything.
    assert!(send_signal(cluster.pageserver_pid().unwrap(), Signal::Kill));
    let before_restart = Lsn(switched.last_record_lsn);
    tokio::time::sleep(Duration::from_secs(2)).await;
    test.restart();
    let mut client = connect(cluster).await;
    let resumed = status(&mut client, id).await;
    assert!(
        resumed.last_record_lsn >= before_restart.0,
        "the restarted pageserver lost committed WAL: {} < {before_restart}",
        Lsn(resumed.last_record_lsn)
    );
    wait_for(&mut client, id, "ingest after the restart", |i| {
        i.last_record_lsn > resumed.last_record_lsn
    })
    .await;

    eprintln!(
        "{:?}: pageserver restarted at {}",
        t0.elapsed(),
        Lsn(resumed.last_record_lsn)
    );
    stop.store(true, Ordering::Relaxed);
    let commits = workload.join().unwrap();
    eprintln!(
        "{:?}: workload stopped after {commits} commits",
        t0.elapsed()
    );
    assert!(commits > 0);
    let flushed: Lsn = psql(&bin, &connstr, "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();
    eprintln!("{:?}: the compute flushed up to {flushed}", t0.elapsed());
    let caught_up = wait_for(&mut client, id, "the compute's flush LSN", |i| {
        i.last_record_lsn >= flushed.0
    })
    .await;
    assert_eq!(caught_up.state, "ingesting");
    eprintln!(
        "{:?}: caught up with the compute's flush LSN {flushed} at {}",
        t0.elapsed(),
        Lsn(caught_up.last_record_lsn)
    );

    // Everything the compute committed is there, once.
    let query = "SELECT count(*), sum(id), md5(string_agg(v, ',' ORDER BY id)) FROM t";
    let expected = psql(&bin, &connstr, query);
    let (_, tar) = basebackup(&mut client, id, caught_up.last_record_lsn)
        .await
        .unwrap();
    let server = PgServer::start_from(PgConfig::new(), |dir| unpack(&tar, dir))
        .expect("PostgreSQL starts from the pageserver's basebackup");
    assert_eq!(server.sql(query).unwrap(), expected);
    assert!(
        expected.starts_with(&format!("{}|", commits * ROWS_PER_COMMIT)),
        "{expected}"
    );

    let log = std::fs::read_to_string(cluster.pageserver_log()).unwrap();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "pageserver errors: {errors:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_stops_at_a_record_it_cannot_reconstruct() {
    let bin = PgBin::locate().unwrap();
    let test = Cluster::up();
    let (connstr, id) = (test.connstr.as_str(), test.id);
    let mut client = connect(&test.cluster).await;

    psql(&bin, connstr, "CREATE TABLE u (id int, v text)");
    psql(&bin, connstr, "INSERT INTO u VALUES (1, 'kept')");
    let good: Lsn = psql(&bin, connstr, "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();
    wait_for(&mut client, id, "the good insert", |i| {
        i.last_record_lsn >= good.0
    })
    .await;

    // A superuser may turn the compute's wal_consistency_checking off for a session:
    // this insert's heap record then carries no image of its page (the page got one
    // since the last checkpoint), and the pageserver has no native heap redo.
    psql(
        &bin,
        connstr,
        "SET wal_consistency_checking = ''; INSERT INTO u VALUES (2, 'lost')",
    );
    let bad: Lsn = psql(&bin, connstr, "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let stopped = loop {
        let info = status(&mut client, id).await;
        if info.state.starts_with("stopped") {
            break info;
        }
        assert!(Instant::now() < deadline, "ingest did not stop: {info:?}");
        tokio::time::sleep(POLL).await;
    };
    eprintln!("{}", stopped.state);
    assert!(
        stopped.state.contains("Heap") && stopped.state.contains("no image"),
        "{}",
        stopped.state
    );
    // Nothing of the record is stored; what came before it is.
    assert!(
        stopped.last_record_lsn >= good.0 && stopped.last_record_lsn < bad.0,
        "stopped at {}, good {good}, bad {bad}",
        Lsn(stopped.last_record_lsn)
    );

    // Reads past the stop fail at once; reads up to it still work.
    let error = basebackup(&mut client, id, bad.0).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error}");
    let (_, tar) = basebackup(&mut client, id, stopped.last_record_lsn)
        .await
        .unwrap();
    let server = PgServer::start_from(PgConfig::new(), |dir| unpack(&tar, dir))
        .expect("PostgreSQL starts from the basebackup before the stop");
    assert_eq!(server.sql("SELECT id, v FROM u").unwrap(), "1|kept");
}
