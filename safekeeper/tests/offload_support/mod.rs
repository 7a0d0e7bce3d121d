//! What the WAL offload tests share, on top of `daemon_support`: safekeepers started
//! with fixed ports (so peers can name each other) and offload flags, real PostgreSQL
//! WAL in small segments, a hand-driven proposer feeding it, a replication client
//! reporting positions as the pageserver does, `compute_ctl` running a real compute,
//! and reading what object storage holds.
//!
//! Every wait is bounded ([`WAIT`]).

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consensus::messages::{AppendRequest, ProposerGreeting, ProposerId, ProposerMessage};
use consensus::term_history::Term;
use pg_harness::{PgBin, PgConfig, PgServer};
use pg_replication::{ReplicationConnection, StreamEvent};
use postgres_wal::Lsn;
use safekeeper::grpc::convert::ToProto;
use safekeeper::timeline::{NewTimeline, TimelineStatus};
use strata_ids::TenantTimelineId;
use strata_proto::safekeeper::safekeeper_client::SafekeeperClient;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::daemon_support::{parse_exposition, sample, status, Daemon, Stream};

pub use crate::daemon_support::WAIT;

pub const MIB: u64 = 1 << 20;

pub fn free_addr() -> SocketAddr {
    SocketAddr::from((
        [127, 0, 0, 1],
        pg_harness::unused_port().expect("a free port"),
    ))
}

/// A safekeeper's id and fixed addresses.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub id: u64,
    pub grpc: SocketAddr,
    pub pg: SocketAddr,
    pub http: SocketAddr,
}

impl Node {
    pub fn new(id: u64) -> Node {
        Node {
            id,
            grpc: free_addr(),
            pg: free_addr(),
            http: free_addr(),
        }
    }
}

/// `--peers` naming every node of `nodes` but `me`.
pub fn peers_flag(nodes: &[Node], me: u64) -> String {
    nodes
        .iter()
        .filter(|n| n.id != me)
        .map(|n| format!("{}={}", n.id, n.grpc))
        .collect::<Vec<_>>()
        .join(",")
}

/// The safekeeper command for `node` on `data_dir` with `extra` flags.
pub fn command(node: &Node, data_dir: &Path, extra: &[String]) -> Command {
    let mut command = Daemon::command();
    command
        .args(["--id", &node.id.to_string(), "--log-format", "json"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-grpc", &node.grpc.to_string()])
        .args(["--listen-pg", &node.pg.to_string()])
        .args(["--listen-http", &node.http.to_string()])
        .args(extra);
    command
}

pub fn start(node: &Node, data_dir: &Path, extra: &[String]) -> Daemon {
    Daemon::launch(command(node, data_dir, extra), data_dir)
}

/// `--object-store URL` and, for S3, the server's keys as flags.
pub fn s3_flags(server: &s3_harness::S3Server, bucket: &str, prefix: &str) -> Vec<String> {
    vec![
        "--object-store".into(),
        server.url(bucket, prefix),
        "--object-store-access-key-id".into(),
        server.access_key().into(),
        "--object-store-secret-access-key".into(),
        server.secret_key().into(),
    ]
}

/// A value of `series` in the daemon's metrics (0 when absent).
pub fn metric(daemon: &Daemon, series: &str) -> f64 {
    sample(&parse_exposition(&daemon.metrics()), series).unwrap_or(0.0)
}

pub fn offload_metric(daemon: &Daemon, name: &str, id: TenantTimelineId) -> f64 {
    metric(
        daemon,
        &format!("{name}{{{}}}", crate::daemon_support::labels(id)),
    )
}

/// Poll `probe` until it returns `Some`, for at most [`WAIT`].
pub async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn client(addr: SocketAddr) -> SafekeeperClient<Channel> {
    SafekeeperClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the gRPC port")
}

pub async fn timeline_status(addr: SocketAddr, id: TenantTimelineId) -> TimelineStatus {
    status(&mut client(addr).await, id).await.unwrap()
}

/// Wait until the safekeeper at `addr` reports `check` true of the timeline's status.
pub async fn wait_status(
    addr: SocketAddr,
    id: TenantTimelineId,
    what: &str,
    check: impl Fn(&TimelineStatus) -> bool,
) -> TimelineStatus {
    let mut last = None;
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(status) = status(&mut client(addr).await, id).await {
            if check(&status) {
                return status;
            }
            last = Some(status);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} on {addr}; last status {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Segment files (final and `.partial`) in a timeline directory with segments of
/// `size` bytes, by segment number.
pub fn local_segments(dir: &Path, size: u64) -> Vec<(u64, String)> {
    let mut found: Vec<(u64, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let base = name.strip_suffix(".partial").unwrap_or(&name).to_owned();
            (base.len() == 24 && base.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
                let log = u64::from_str_radix(&base[8..16], 16).unwrap();
                let seg = u64::from_str_radix(&base[16..24], 16).unwrap();
                (log, seg, name)
            })
        })
        .map(|(log, seg, name)| (log * (0x1_0000_0000 / size) + seg, name))
        .collect();
    found.sort();
    found
}

/// The segment number of `lsn` with segments of `size` bytes.
pub fn segment_of(lsn: Lsn, size: u64) -> u64 {
    lsn.0 / size
}

/// The Postgres name of segment `n` with segments of `size` bytes (timeline 1).
pub fn segment_name(n: u64, size: u64) -> String {
    let per_id = 0x1_0000_0000 / size;
    format!("00000001{:08X}{:08X}", n / per_id, n % per_id)
}

pub fn timeline_dir(data_dir: &Path, id: TenantTimelineId) -> PathBuf {
    data_dir
        .join(id.tenant_id.to_string())
        .join(id.timeline_id.to_string())
}

// ---------------------------------------------------------------------------------------
// Real PostgreSQL WAL, fed by a hand-driven proposer.

/// WAL a real PostgreSQL 15 wrote, with 1 MiB segments: `[start, end)`, `start` and
/// `end` at segment starts (right after a `pg_switch_wal()`).
pub struct PgWal {
    pub system_id: u64,
    pub pg_version: u32,
    pub start: Lsn,
    pub end: Lsn,
    pub wal: Vec<u8>,
}

impl PgWal {
    pub const SEGMENT_SIZE: u64 = MIB;

    /// `segments` segments of WAL, each some inserts closed by `pg_switch_wal()`.
    pub fn generate(segments: usize) -> PgWal {
        let pg = PgServer::start(PgConfig::new().wal_segment_size_mb(1)).unwrap();
        pg.sql("CREATE TABLE t (id int, v text)").unwrap();
        pg.switch_wal().unwrap();
        let lsn = |pg: &PgServer| -> Lsn { pg.current_wal_lsn().unwrap().parse().unwrap() };
        let start = lsn(&pg);
        for i in 0..segments {
            pg.sql(&format!(
                "INSERT INTO t SELECT g, repeat('{i}', 100) FROM generate_series(1, 1000) g"
            ))
            .unwrap();
            pg.switch_wal().unwrap();
        }
        let end = lsn(&pg);
        assert_eq!(start.0 % Self::SEGMENT_SIZE, 0, "{start}");
        assert_eq!(end.0 % Self::SEGMENT_SIZE, 0, "{end}");
        let system_id = pg
            .sql("SELECT system_identifier FROM pg_control_system()")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pg_version = pg
            .sql("SHOW server_version_num")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut wal = Vec::new();
        for n in segment_of(start, Self::SEGMENT_SIZE)..segment_of(end, Self::SEGMENT_SIZE) {
            let path = pg.wal_dir().join(segment_name(n, Self::SEGMENT_SIZE));
            wal.extend(std::fs::read(&path).unwrap());
        }
        assert_eq!(wal.len() as u64, end.0 - start.0);
        PgWal {
            system_id,
            pg_version,
            start,
            end,
            wal,
        }
    }

    pub fn new_timeline(&self, id: TenantTimelineId) -> NewTimeline {
        NewTimeline {
            id,
            system_id: self.system_id,
            pg_version: self.pg_version,
            wal_segment_size: Self::SEGMENT_SIZE as u32,
            start_lsn: self.start,
        }
    }

    /// The WAL bytes of `[from, to)`.
    pub fn range(&self, from: Lsn, to: Lsn) -> &[u8] {
        &self.wal[(from.0 - self.start.0) as usize..(to.0 - self.start.0) as usize]
    }

    /// Create the timeline on the safekeeper at `addr`, win term 1 and append all the
    /// WAL, then announce `commit_lsn`. The stream is returned open.
    pub async fn propose(&self, addr: SocketAddr, id: TenantTimelineId, commit_lsn: Lsn) -> Stream {
        let mut client = client(addr).await;
        client
            .create_timeline(self.new_timeline(id).to_proto())
            .await
            .unwrap();
        let greeting = ProposerGreeting {
            id,
            proposer_id: ProposerId(0xabc),
            system_id: self.system_id,
            pg_version: self.pg_version,
            wal_segment_size: Self::SEGMENT_SIZE as u32,
        };
        let (mut stream, _) = Stream::open(&mut client, greeting).await.unwrap();
        stream.elect(1).await;
        let mut lsn = self.start;
        for chunk in self.wal.chunks(consensus::limits::MAX_WAL_BYTES_PER_APPEND) {
            stream
                .send(append(lsn, chunk, self.start, self.start))
                .await;
            lsn = Lsn(lsn.0 + chunk.len() as u64);
        }
        self.announce(&mut stream, self.end, commit_lsn).await;
        stream
    }

    /// A heartbeat carrying `commit_lsn`; waits for the reply acknowledging `flush`.
    pub async fn announce(&self, stream: &mut Stream, flush: Lsn, commit_lsn: Lsn) {
        stream
            .send(append(self.end, &[], commit_lsn, self.start))
            .await;
        loop {
            match stream.recv().await.unwrap() {
                consensus::messages::AcceptorMessage::AppendResponse(r)
                    if r.flush_lsn >= flush && r.commit_lsn >= commit_lsn =>
                {
                    return
                }
                consensus::messages::AcceptorMessage::AppendResponse(r) => {
                    assert_eq!(r.term, Term(1))
                }
                other => panic!("expected an append response, got {other:?}"),
            }
        }
    }
}

fn append(begin: Lsn, wal: &[u8], commit_lsn: Lsn, truncate_lsn: Lsn) -> ProposerMessage {
    ProposerMessage::Append(AppendRequest {
        term: Term(1),
        begin_lsn: begin,
        end_lsn: Lsn(begin.0 + wal.len() as u64),
        commit_lsn,
        truncate_lsn,
        wal: wal.to_vec(),
    })
}

// ---------------------------------------------------------------------------------------
// The pageserver's side of a replication connection.

/// A replication connection named as the pageserver's (`application_name`
/// "pageserver"), streaming the timeline from `start`, keeping what it receives, and
/// reporting `apply` (never beyond what it received, as a pageserver never does) in a
/// standby status update every 100 ms, as the pageserver reports its
/// remote-consistent LSN.
pub struct PageserverFeed {
    apply: watch::Sender<Lsn>,
    received: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PageserverFeed {
    pub async fn start(
        pg: SocketAddr,
        id: TenantTimelineId,
        start: Lsn,
        apply: Lsn,
    ) -> PageserverFeed {
        let options = format!(
            "-c tenant_id={} -c timeline_id={}",
            id.tenant_id, id.timeline_id
        );
        let connection = ReplicationConnection::connect_with(
            pg,
            "pageserver",
            "pageserver",
            &[("options", &options)],
        )
        .await
        .unwrap();
        let mut stream = connection.start_replication(None, start, 1).await.unwrap();
        let (apply_tx, mut apply_rx) = watch::channel(apply);
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = received.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut end = start;
            loop {
                tokio::select! {
                    event = stream.next() => match event {
                        Ok(StreamEvent::Wal { start: at, wal }) => {
                            assert_eq!(at, end, "WAL out of order");
                            end = Lsn(end.0 + wal.len() as u64);
                            kept.lock().unwrap().extend(wal);
                        }
                        Ok(StreamEvent::Keepalive { .. }) => {}
                        Ok(StreamEvent::End) | Err(_) => return,
                    },
                    _ = tick.tick() => {
                        let apply = (*apply_rx.borrow_and_update()).min(end);
                        if stream.send_positions(end, end, apply).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        PageserverFeed {
            apply: apply_tx,
            received,
            task,
        }
    }

    pub fn set_apply(&self, lsn: Lsn) {
        self.apply.send_replace(lsn);
    }

    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for PageserverFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// A compute under compute_ctl.

/// `target/<profile>/`, where `cargo build --bins` puts `compute_ctl`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

/// A directory the PostgreSQL server user can enter (tests run as root in CI).
pub fn test_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("wal-offload-test-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `compute_ctl start`: a real PostgreSQL 15 streaming its WAL to the safekeepers.
pub struct Compute {
    pub port: u16,
    pgdata: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Compute {
    pub fn start(dir: &Path, id: TenantTimelineId, safekeepers: &[Node]) -> Compute {
        let binary = bin_dir().join("compute_ctl");
        assert!(
            binary.is_file(),
            "{} is missing: run `cargo build --bins` before these tests",
            binary.display()
        );
        let port = pg_harness::unused_port().unwrap();
        let pgdata = dir.join("pgdata");
        let status_file = dir.join("compute-status.json");
        let log_path = dir.join("compute_ctl.log");
        let addrs = safekeepers
            .iter()
            .map(|n| n.grpc.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new(&binary)
            .env("RUST_LOG", "info")
            .arg("start")
            .arg("--pgdata")
            .arg(&pgdata)
            .args(["--pg-port", &port.to_string()])
            .args(["--tenant", &id.tenant_id.to_string()])
            .args(["--timeline", &id.timeline_id.to_string()])
            .args(["--safekeepers", &addrs])
            .arg("--status-file")
            .arg(&status_file)
            .args(["--election-timeout-secs", "20"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let mut compute = Compute {
            port,
            pgdata,
            child: Some(child),
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let running = std::fs::read_to_string(&status_file)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .is_some_and(|status| status["state"] == "running");
            if running {
                return compute;
            }
            if let Some(exit) = compute.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("compute_ctl exited ({exit}):\n{}", compute.log());
            }
            assert!(
                Instant::now() < deadline,
                "compute not running in time:\n{}",
                compute.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Run `sql`; its output.
    pub fn psql(&self, sql: &str) -> String {
        let bin = PgBin::locate().unwrap();
        let output = bin
            .command("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-c", sql])
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql {sql:?}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    pub fn lsn(&self, sql: &str) -> Lsn {
        self.psql(sql).parse().unwrap()
    }

    /// Some rows, then `pg_switch_wal()`: one more finished segment. Returns the LSN
    /// after the switch (a segment start).
    pub fn fill_segment(&self, n: usize) -> Lsn {
        self.psql(&format!(
            "INSERT INTO t SELECT g, repeat('{n}', 100) FROM generate_series(1, 200) g"
        ));
        self.psql("SELECT pg_switch_wal()");
        self.lsn("SELECT pg_current_wal_flush_lsn()")
    }
}

impl Drop for Compute {
    fn drop(&mut self) {
        let postmaster = std::fs::read_to_string(self.pgdata.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = postmaster {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}
