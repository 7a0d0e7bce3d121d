//! What the compute_ctl integration tests share: real `safekeeper` daemons and real
//! `compute_ctl` processes running a real PostgreSQL 15, and `psql` to talk to it.
//!
//! The binaries come from the target directory these tests run from (the grandparent
//! of the test executable: `target/<profile>/`); `cargo build --bins` builds them.
//! Every wait is bounded, so a misbehaving process fails the test with its log
//! instead of hanging it. Processes are killed by pid when a test ends, whatever way.

#![allow(dead_code)] // Each test binary uses its own part of this module.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use pg_harness::PgBin;
use strata_ids::{TenantId, TenantTimelineId, TimelineId};

/// Longest wait for anything: a start, an exit, a query.
pub const WAIT: Duration = Duration::from_secs(60);

/// `target/<profile>/`, where `cargo build --bins` puts the binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps")
        .to_owned()
}

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --bins` before these tests",
        path.display()
    );
    path
}

pub fn compute_ctl_binary() -> PathBuf {
    // Cargo builds this crate's own binary for its integration tests.
    PathBuf::from(env!("CARGO_BIN_EXE_compute_ctl"))
}

/// A directory for one test that the PostgreSQL server user can enter (the tests run
/// as root in CI, PostgreSQL as `postgres`).
pub fn test_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("compute-ctl-test-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

pub fn timeline_id(n: u128) -> TenantTimelineId {
    TenantTimelineId {
        tenant_id: TenantId(0x5eed_0000_0000_0000_0000_0000_0000_0001),
        timeline_id: TimelineId(n),
    }
}

pub fn free_port() -> u16 {
    pg_harness::unused_port().expect("an unused TCP port")
}

/// An address nothing listens on (connection refused at once).
pub fn dead_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn wait_until<T>(what: &str, log: impl Fn() -> String, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn kill_pid(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// A `safekeeper` process with fixed ports (so that a restart keeps its address).
pub struct Safekeeper {
    pub id: u64,
    pub data_dir: PathBuf,
    pub grpc: SocketAddr,
    pub pg: SocketAddr,
    pub http: SocketAddr,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Safekeeper {
    pub fn start(dir: &Path, id: u64) -> Safekeeper {
        let port = |_| SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut sk = Safekeeper {
            id,
            data_dir: dir.join(format!("safekeeper-{id}")),
            grpc: port(0),
            pg: port(1),
            http: port(2),
            child: None,
            log_path: dir.join(format!("safekeeper-{id}.log")),
        };
        sk.launch();
        sk
    }

    /// Three (or `n`) safekeepers.
    pub fn start_many(dir: &Path, n: u64) -> Vec<Safekeeper> {
        (1..=n).map(|id| Safekeeper::start(dir, id)).collect()
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(binary("safekeeper"))
            .env("RUST_LOG", "info")
            .args(["--id", &self.id.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-grpc", &self.grpc.to_string()])
            .args(["--listen-pg", &self.pg.to_string()])
            .args(["--listen-http", &self.http.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the safekeeper binary");
        self.child = Some(child);
        let log = || std::fs::read_to_string(&self.log_path).unwrap_or_default();
        wait_until("the safekeeper to be ready", log, || {
            (http_get(self.http, "/health").0 == 200).then_some(())
        });
    }

    pub fn grpc_addr(&self) -> String {
        self.grpc.to_string()
    }

    /// kill -9: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_pid("-KILL", child.id());
            child.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Log lines at ERROR level.
    pub fn errors(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .map(str::to_owned)
            .collect()
    }

    /// `(term, flush_lsn, commit_lsn)` of the first timeline in `/metrics`.
    pub fn positions(&self) -> (u64, u64, u64) {
        let (_, body) = http_get(self.http, "/metrics");
        let value = |name: &str| {
            body.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit_once(' '))
                .map(|(_, v)| v.parse::<f64>().unwrap() as u64)
                .unwrap_or(0)
        };
        (
            value("safekeeper_term"),
            value("safekeeper_flush_lsn"),
            value("safekeeper_commit_lsn"),
        )
    }
}

impl Drop for Safekeeper {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn addrs(safekeepers: &[Safekeeper]) -> String {
    safekeepers
        .iter()
        .map(Safekeeper::grpc_addr)
        .collect::<Vec<_>>()
        .join(",")
}

/// A plain HTTP/1.1 GET: (status, body); status 0 when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return (0, String::new());
    }
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A `compute_ctl start` process.
pub struct Compute {
    pub pgdata: PathBuf,
    pub port: u16,
    pub status_file: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
}

/// The election timeout the tests give compute_ctl (its default is a minute).
pub const ELECTION_TIMEOUT_SECS: u64 = 20;

/// Arguments of `compute_ctl start` for `pgdata` and `port`.
pub fn start_command(
    pgdata: &Path,
    port: u16,
    id: TenantTimelineId,
    safekeepers: &str,
    status_file: &Path,
    election_timeout_secs: u64,
) -> Command {
    let mut command = Command::new(compute_ctl_binary());
    command
        .env("RUST_LOG", "info,compute_ctl=debug")
        .arg("start")
        .arg("--pgdata")
        .arg(pgdata)
        .args(["--pg-port", &port.to_string()])
        .args(["--tenant", &id.tenant_id.to_string()])
        .args(["--timeline", &id.timeline_id.to_string()])
        .args(["--safekeepers", safekeepers])
        .arg("--status-file")
        .arg(status_file)
        .args([
            "--election-timeout-secs",
            &election_timeout_secs.to_string(),
        ]);
    command
}

impl Compute {
    /// Spawn `compute_ctl start` on `dir/pgdata` (no wait).
    pub fn spawn(dir: &Path, port: u16, id: TenantTimelineId, safekeepers: &str) -> Compute {
        Compute::spawn_with(dir, port, id, safekeepers, ELECTION_TIMEOUT_SECS)
    }

    pub fn spawn_with(
        dir: &Path,
        port: u16,
        id: TenantTimelineId,
        safekeepers: &str,
        election_timeout_secs: u64,
    ) -> Compute {
        let pgdata = dir.join("pgdata");
        let status_file = dir.join("status.json");
        let _ = std::fs::remove_file(&status_file);
        let log_path = dir.join("compute_ctl.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = start_command(
            &pgdata,
            port,
            id,
            safekeepers,
            &status_file,
            election_timeout_secs,
        );
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn compute_ctl");
        Compute {
            pgdata,
            port,
            status_file,
            child: Some(child),
            log_path,
        }
    }

    /// Spawn and wait until the status file says `running`.
    pub fn start(dir: &Path, port: u16, id: TenantTimelineId, safekeepers: &str) -> Compute {
        let mut compute = Compute::spawn(dir, port, id, safekeepers);
        compute.wait_running();
        compute
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(&self.status_file).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn wait_running(&mut self) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.status().filter(|s| s["state"] == "running") {
                return status;
            }
            if let Some(exit) = self.try_exit() {
                panic!(
                    "compute_ctl exited ({exit}) before running:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "compute_ctl not running in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// Wait (bounded) for compute_ctl to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "compute_ctl did not exit within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGTERM and the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(pid) = self.pid() {
            kill_pid("-TERM", pid);
        }
        self.wait_exit(WAIT)
    }

    /// kill -9 compute_ctl and its PostgreSQL (both crash).
    pub fn kill(&mut self) {
        let postmaster = self.postmaster_pid();
        if let Some(mut child) = self.child.take() {
            kill_pid("-KILL", child.id());
            let _ = child.wait();
        }
        if let Some(pid) = postmaster {
            kill_pid("-KILL", pid);
            wait_until(
                "the postmaster to die",
                || self.log(),
                || (!Path::new(&format!("/proc/{pid}")).exists()).then_some(()),
            );
        }
    }

    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "postgres").then_some(pid)
    }

    pub fn log(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        if let Ok(pg) = std::fs::read_to_string(self.pgdata.join("postgres.log")) {
            let tail: Vec<&str> = pg.lines().rev().take(30).collect();
            text.push_str("\n--- postgres.log (last lines) ---\n");
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    pub fn psql(&self, sql: &str) -> String {
        psql(self.port, sql).unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }

    /// Start `sql` in the background; it is killed when the handle drops.
    pub fn psql_background(&self, sql: &str) -> Background {
        Background::spawn(psql_command(self.port, sql))
    }
}

impl Drop for Compute {
    fn drop(&mut self) {
        // Whatever the test did: nothing of it may outlive it.
        self.kill();
    }
}

fn psql_command(port: u16, sql: &str) -> Command {
    let bin = PgBin::locate().expect("PostgreSQL 15");
    let mut command = bin.command("psql");
    command
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .current_dir("/");
    command
}

/// Run SQL and return its output; Err with stderr on failure.
pub fn psql(port: u16, sql: &str) -> Result<String, String> {
    let output = psql_command(port, sql)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A process run in the background (a commit that may wait).
pub struct Background {
    child: Option<Child>,
}

impl Background {
    pub fn spawn(mut command: Command) -> Background {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Background { child: Some(child) }
    }

    /// Still running after `duration`?
    pub fn still_running_after(&mut self, duration: Duration) -> bool {
        std::thread::sleep(duration);
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Wait (bounded) for it to finish; its output.
    pub fn finish(&mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                return self.child.take().unwrap().wait_with_output().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "background command did not finish within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_pid("-KILL", child.id());
            let _ = child.wait();
        }
    }
}

/// `compute_ctl sync-safekeepers`: (exit status, stdout, stderr).
pub fn sync_safekeepers(id: TenantTimelineId, safekeepers: &str) -> (ExitStatus, String, String) {
    let output = Command::new(compute_ctl_binary())
        .arg("sync-safekeepers")
        .args(["--tenant", &id.tenant_id.to_string()])
        .args(["--timeline", &id.timeline_id.to_string()])
        .args(["--safekeepers", safekeepers])
        .args([
            "--election-timeout-secs",
            &ELECTION_TIMEOUT_SECS.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Time a closure, for the timings the tests print.
pub fn timed<T>(what: &str, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = work();
    eprintln!("{what}: {:?}", started.elapsed());
    value
}

/// gRPC calls the tests make to safekeepers directly, as another program would.
pub mod grpc {
    use consensus::messages::{ProposerGreeting, ProposerId, ProposerMessage, VoteRequest};
    use consensus::term_history::Term;
    use strata_ids::TenantTimelineId;
    use strata_proto::convert::ToProto;
    use strata_proto::safekeeper as pb;
    use strata_proto::safekeeper::safekeeper_client::SafekeeperClient;
    use tokio_stream::wrappers::ReceiverStream;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn request(id: TenantTimelineId) -> pb::TimelineRequest {
        pb::TimelineRequest {
            tenant_id: id.tenant_id.to_string(),
            timeline_id: id.timeline_id.to_string(),
        }
    }

    pub fn create_timeline(addr: &str, id: TenantTimelineId, system_id: u64, start_lsn: u64) {
        runtime().block_on(async {
            let mut client = SafekeeperClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            client
                .create_timeline(pb::CreateTimelineRequest {
                    tenant_id: id.tenant_id.to_string(),
                    timeline_id: id.timeline_id.to_string(),
                    system_id,
                    pg_version: 150_000,
                    wal_segment_size: 16 << 20,
                    start_lsn,
                })
                .await
                .unwrap();
        });
    }

    pub fn status(addr: &str, id: TenantTimelineId) -> pb::TimelineInfo {
        runtime().block_on(async {
            let mut client = SafekeeperClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            client
                .timeline_status(request(id))
                .await
                .unwrap()
                .into_inner()
        })
    }

    /// What a proposer that campaigned for `term` and died leaves behind: the
    /// safekeeper voted, so its term is `term`.
    pub fn vote_for(addr: &str, id: TenantTimelineId, term: u64) {
        let info = status(addr, id);
        runtime().block_on(async {
            let mut client = SafekeeperClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let greeting = ProposerMessage::Greeting(ProposerGreeting {
                id,
                proposer_id: ProposerId(0xdead),
                system_id: info.system_id,
                pg_version: info.pg_version,
                wal_segment_size: info.wal_segment_size,
            });
            tx.send(greeting.to_proto()).await.unwrap();
            let mut replies = client
                .propose(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            replies.message().await.unwrap().expect("a greeting");
            let vote = ProposerMessage::VoteRequest(VoteRequest { term: Term(term) });
            tx.send(vote.to_proto()).await.unwrap();
            let answer = replies.message().await.unwrap().expect("a vote response");
            match answer.message {
                Some(pb::acceptor_message::Message::VoteResponse(v)) => {
                    assert!(v.vote_given, "{v:?}")
                }
                other => panic!("expected a vote response, got {other:?}"),
            }
        });
    }
}
