//! One safekeeper of the cluster: `DIR/safekeeper-<id>/` is its data directory (the
//! daemon keeps timelines in `<tenant>/<timeline>/` below it and writes
//! `safekeeper.ports.json` there), with `safekeeper.log` and `safekeeper.pid` beside.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use postgres_wal::Lsn;
use serde::Deserialize;
use strata_ids::{TenantId, TimelineId};
use strata_proto::safekeeper::safekeeper_client::SafekeeperClient;
use strata_proto::safekeeper::TimelineRequest;

use crate::config::{SafekeeperConfig, LISTEN_HOST};
use crate::error::{io_err, Result};
use crate::limits::{PROBE_TIMEOUT, SAFEKEEPER_START_TIMEOUT, SAFEKEEPER_STOP_TIMEOUT};
use crate::process::{self, Identity, Signal};

/// The daemon's binary name, which is also its `/proc/PID/comm`.
pub const SAFEKEEPER_PROGRAM: &str = "safekeeper";

/// Written by the daemon once its listeners are bound (`safekeeper::daemon::PORTS_FILE`;
/// named here again because this crate must not depend on the daemon).
const PORTS_FILE: &str = "safekeeper.ports.json";

pub const SAFEKEEPER_LOG: &str = "safekeeper.log";
const PID_FILE: &str = "safekeeper.pid";

/// The part of the ports file this crate reads: whose it is.
#[derive(Deserialize)]
struct BoundPorts {
    pid: u32,
}

/// A safekeeper's place in a cluster directory.
#[derive(Debug, Clone)]
pub(crate) struct SafekeeperNode {
    pub config: SafekeeperConfig,
    pub data_dir: PathBuf,
    /// `--data-dir` exactly as passed, which identifies the process.
    data_dir_arg: OsString,
}

impl SafekeeperNode {
    pub fn new(cluster_dir: &Path, config: &SafekeeperConfig) -> SafekeeperNode {
        let data_dir = cluster_dir.join(format!("safekeeper-{}", config.id));
        SafekeeperNode {
            config: config.clone(),
            data_dir_arg: data_dir.clone().into_os_string(),
            data_dir,
        }
    }

    pub fn name(&self) -> String {
        format!("safekeeper {}", self.config.id)
    }

    pub fn log(&self) -> PathBuf {
        self.data_dir.join(SAFEKEEPER_LOG)
    }

    fn pid_file(&self) -> PathBuf {
        self.data_dir.join(PID_FILE)
    }

    fn identity(&self) -> Identity<'_> {
        Identity {
            program: SAFEKEEPER_PROGRAM,
            argument: Some(&self.data_dir_arg),
        }
    }

    /// The pid of the running daemon, if it is running.
    pub fn running_pid(&self) -> Option<u32> {
        process::read_pid_file(&self.pid_file()).filter(|&pid| self.identity().matches(pid))
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((LISTEN_HOST, port))
    }

    /// Spawns the daemon on the cluster's fixed ports and records its pid; the caller
    /// waits for it with [`SafekeeperNode::wait_ready`].
    /// Spawns the daemon with the cluster's object store (WAL offload) and the other
    /// safekeepers as its peers (one of them offloads each timeline).
    pub fn spawn(&self, binary: &Path, cluster: &crate::config::ClusterConfig) -> Result<Child> {
        let peers: Vec<String> = cluster
            .safekeepers
            .iter()
            .filter(|sk| sk.id != self.config.id)
            .map(|sk| format!("{}={}", sk.id, self.addr(sk.grpc_port)))
            .collect();
        std::fs::create_dir_all(&self.data_dir)
            .map_err(io_err(format!("creating {}", self.data_dir.display())))?;
        let mut command = Command::new(binary);
        command
            .arg("--id")
            .arg(self.config.id.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir_arg)
            .arg("--listen-grpc")
            .arg(self.addr(self.config.grpc_port).to_string())
            .arg("--listen-pg")
            .arg(self.addr(self.config.pg_port).to_string())
            .arg("--listen-http")
            .arg(self.addr(self.config.http_port).to_string())
            // No --log-format: text by default, and STRATA_SAFEKEEPER_LOG_FORMAT=json in
            // `strata up`'s environment gives JSON lines, as for the other daemons.
            .arg("--object-store")
            .arg(&cluster.object_store)
            .current_dir(&self.data_dir);
        if !peers.is_empty() {
            command.arg("--peers").arg(peers.join(","));
        }
        let child = process::spawn_detached(command, &self.log())?;
        process::write_pid_file(&self.pid_file(), child.id())?;
        Ok(child)
    }

    /// Waits until the daemon `child` has written its ports file and `/health` says ready.
    pub fn wait_ready(&self, child: &mut Child) -> Result<()> {
        let pid = child.id();
        let ports_file = self.data_dir.join(PORTS_FILE);
        let health = self.addr(self.config.http_port);
        process::wait_ready(
            &self.name(),
            child,
            &self.log(),
            SAFEKEEPER_START_TIMEOUT,
            || {
                let ours = std::fs::read_to_string(&ports_file)
                    .ok()
                    .and_then(|text| serde_json::from_str::<BoundPorts>(&text).ok())
                    .is_some_and(|ports| ports.pid == pid);
                (ours && http_status(health, "/health") == Some(200)).then_some(())
            },
        )
    }

    /// Stops the daemon found running as `pid` (see [`SafekeeperNode::running_pid`]):
    /// SIGTERM, bounded wait, SIGKILL. The pid file goes once the process is gone.
    pub fn stop(&self, pid: Option<u32>) -> Result<()> {
        if let Some(pid) = pid {
            process::stop(
                &self.name(),
                pid,
                self.identity(),
                Signal::Term,
                SAFEKEEPER_STOP_TIMEOUT,
            )?;
        }
        process::remove_file_if_exists(&self.pid_file())
    }
}

/// What a safekeeper says about the cluster's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimelineState {
    pub term: u64,
    pub flush_lsn: Lsn,
    pub commit_lsn: Lsn,
}

/// `TimelineStatus` over gRPC; `None` when the daemon cannot be reached in time or does
/// not have the timeline (yet).
pub(crate) async fn timeline_state(
    grpc: SocketAddr,
    tenant: TenantId,
    timeline: TimelineId,
) -> Option<TimelineState> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .ok()?
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT);
    let channel = endpoint.connect().await.ok()?;
    let info = SafekeeperClient::new(channel)
        .timeline_status(TimelineRequest {
            tenant_id: tenant.to_string(),
            timeline_id: timeline.to_string(),
        })
        .await
        .ok()?
        .into_inner();
    Some(TimelineState {
        term: info.term,
        flush_lsn: Lsn(info.flush_lsn),
        commit_lsn: Lsn(info.commit_lsn),
    })
}

/// The status code of a plain HTTP/1.1 GET, or `None` if there is no answer in time.
pub(crate) fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    // "HTTP/1.1 200 OK"
    response.split(' ').nth(1)?.parse().ok()
}
