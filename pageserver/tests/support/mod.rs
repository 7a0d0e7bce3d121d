//! What the daemon tests share: starting the real `pageserver` binary on free ports,
//! talking to it over gRPC and HTTP, and a cleanly stopped PostgreSQL 15 data directory
//! as a tar to import.
//!
//! Every wait is bounded ([`WAIT`]), so a daemon that misbehaves fails the test with a
//! message instead of hanging it.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pageserver::daemon::{BoundPorts, PORTS_FILE};
use pg_harness::{PgConfig, PgServer};
use strata_ids::{TenantId, TenantTimelineId, TimelineId};
use strata_proto::pageserver as pb;
use strata_proto::pageserver::pageserver_client::PageserverClient;
use tonic::transport::Channel;

/// Longest wait for anything: startup, a reply, an exit.
pub const WAIT: Duration = Duration::from_secs(60);

/// A running `pageserver` process.
pub struct Daemon {
    pub data_dir: PathBuf,
    pub ports: BoundPorts,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Daemon {
    /// The binary, with no arguments.
    pub fn command() -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pageserver"));
        command.env("RUST_LOG", "info");
        command
    }

    /// Start the daemon on `data_dir` with free ports, JSON logs and `extra` flags; wait
    /// until `/health` says ready.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(data_dir, extra, &[])
    }

    /// [`Daemon::start`] with environment variables `env` set for the daemon.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon::spawn(data_dir, extra, env);
        daemon.wait_ready();
        daemon
    }

    /// Start the daemon as [`Daemon::start_with_env`] does, without waiting for it.
    pub fn spawn(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut command = Daemon::command();
        command.envs(env.iter().copied());
        command
            .args(["--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen-grpc", "127.0.0.1:0"])
            .args(["--listen-http", "127.0.0.1:0"])
            .args(extra);
        std::fs::create_dir_all(data_dir).unwrap();
        let log_path = data_dir.with_extension(format!("{}.log", unique()));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the pageserver binary");
        let pid = child.id();
        Daemon {
            data_dir: data_dir.to_owned(),
            ports: BoundPorts {
                pid,
                grpc: SocketAddr::from(([0, 0, 0, 0], 0)),
                http: SocketAddr::from(([0, 0, 0, 0], 0)),
            },
            child: Some(child),
            log_path,
        }
    }

    /// Waits until the ports file is written and `/health` says ready.
    pub fn wait_ready(&mut self) {
        let pid = self.ports.pid;
        self.ports = self.wait_for(|d| d.read_ports().filter(|p| p.pid == pid), "ports file");
        self.wait_for(|d| (d.http_get("/health").0 == 200).then_some(()), "ready");
    }

    /// Waits (bounded) for the process to exit by itself; its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pageserver did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read_ports(&self) -> Option<BoundPorts> {
        let text = std::fs::read_to_string(self.data_dir.join(PORTS_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn wait_for<T>(&mut self, mut probe: impl FnMut(&Daemon) -> Option<T>, what: &str) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = probe(self) {
                return value;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "pageserver exited ({status}) waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until the log holds `text`.
    pub fn wait_for_log(&mut self, text: &str) {
        self.wait_for(|d| d.log().contains(text).then_some(()), text);
    }

    /// SIGTERM, and the exit status (bounded wait).
    pub fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.ports.pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + WAIT;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pageserver did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A plain HTTP/1.1 GET: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.ports.http, WAIT) else {
            return (0, String::new());
        };
        stream.set_read_timeout(Some(WAIT)).unwrap();
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
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    pub fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn client(&self) -> PageserverClient<Channel> {
        PageserverClient::connect(format!("http://{}", self.ports.grpc))
            .await
            .expect("connect to the gRPC port")
            .max_decoding_message_size(16 << 20)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A test that failed midway must not leave a daemon running.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub fn timeline_id(n: u128) -> TenantTimelineId {
    TenantTimelineId {
        tenant_id: TenantId(0xAAAA_0000 + n),
        timeline_id: TimelineId(0xBBBB_0000 + n),
    }
}

pub fn request(id: TenantTimelineId) -> pb::TimelineRequest {
    pb::TimelineRequest {
        tenant_id: id.tenant_id.to_string(),
        timeline_id: id.timeline_id.to_string(),
    }
}

/// A freshly initialised cluster (with data checksums), started once and stopped
/// cleanly, so its last record is a shutdown checkpoint. Kept alive (not running) for
/// its files.
pub fn stopped_cluster() -> PgServer {
    let mut server = PgServer::start(PgConfig::new().data_checksums(true)).expect("initdb");
    server.stop().expect("stop PostgreSQL");
    // The harness's own settings file is no part of a data directory compute_ctl sends.
    std::fs::remove_file(server.data_dir().join("pg_harness_port.conf"))
        .expect("remove the harness's settings file");
    server
}

/// A tar of `data_dir` as compute_ctl sends it (without the WAL).
pub fn tar_datadir(data_dir: &Path) -> Vec<u8> {
    let mut tar = Vec::new();
    basebackup::tar_datadir(data_dir, &[], &mut tar).expect("tar the data directory");
    tar
}

/// ImportTimeline of `tar` as `id`.
pub async fn import(
    client: &mut PageserverClient<Channel>,
    id: TenantTimelineId,
    tar: &[u8],
) -> Result<pb::TimelineInfo, tonic::Status> {
    use pb::import_timeline_request::Item;
    let mut messages = vec![pb::ImportTimelineRequest {
        item: Some(Item::Start(request(id))),
    }];
    messages.extend(tar.chunks(1 << 20).map(|chunk| pb::ImportTimelineRequest {
        item: Some(Item::TarChunk(chunk.to_vec())),
    }));
    Ok(client
        .import_timeline(tokio_stream::iter(messages))
        .await?
        .into_inner())
}

/// GetBasebackup: (LSN of the first chunk, the whole tar).
pub async fn basebackup(
    client: &mut PageserverClient<Channel>,
    id: TenantTimelineId,
    lsn: u64,
) -> Result<(u64, Vec<u8>), tonic::Status> {
    let mut stream = client
        .get_basebackup(pb::BasebackupRequest {
            tenant_id: id.tenant_id.to_string(),
            timeline_id: id.timeline_id.to_string(),
            lsn,
            standby: false,
        })
        .await?
        .into_inner();
    let mut first_lsn = None;
    let mut tar = Vec::new();
    while let Some(chunk) = stream.message().await? {
        assert!(chunk.data.len() <= 256 * 1024);
        first_lsn.get_or_insert(chunk.lsn);
        tar.extend_from_slice(&chunk.data);
    }
    Ok((first_lsn.unwrap_or(0), tar))
}

/// One GetPages request on a new stream: the response.
pub async fn get_pages(
    client: &mut PageserverClient<Channel>,
    id: TenantTimelineId,
    lsn: u64,
    rel: pb::RelTag,
    blocks: Vec<u32>,
) -> pb::GetPagesResponse {
    let request = pb::GetPagesRequest {
        tenant_id: id.tenant_id.to_string(),
        timeline_id: id.timeline_id.to_string(),
        request_id: 42,
        lsn,
        rel: Some(rel),
        block_numbers: blocks,
    };
    let mut responses = client
        .get_pages(tokio_stream::iter(vec![request]))
        .await
        .expect("GetPages stream")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("GetPages response")
        .expect("one response");
    assert_eq!(response.request_id, 42);
    response
}
