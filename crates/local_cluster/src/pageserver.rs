//! The cluster's pageserver: `DIR/pageserver/` is its data directory (the daemon writes
//! `pageserver.ports.json` there once its listeners are bound), with its configuration
//! `pageserver.toml` (written by `strata up` at every start from `cluster.json`: the
//! ports, the object store, and every safekeeper's gRPC and replication addresses),
//! `pageserver.log` and `pageserver.pid` beside.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use postgres_wal::Lsn;
use serde::{Deserialize, Serialize};
use strata_ids::{NodeId, TenantId, TimelineId};
use strata_proto::pageserver::pageserver_client::PageserverClient;
use strata_proto::pageserver::TimelineRequest;

use crate::config::{ClusterConfig, PageserverConfig, LISTEN_HOST};
use crate::error::{io_err, ClusterError, Result};
use crate::limits::{PAGESERVER_START_TIMEOUT, PAGESERVER_STOP_TIMEOUT, PROBE_TIMEOUT};
use crate::process::{self, Identity, Signal};
use crate::safekeeper::http_status;

/// The daemon's binary name, which is also its `/proc/PID/comm`.
pub const PAGESERVER_PROGRAM: &str = "pageserver";

/// `DIR/pageserver`.
pub const PAGESERVER_DIR: &str = "pageserver";

/// Written by the daemon once its listeners are bound (named here again because this
/// crate must not depend on the daemon).
const PORTS_FILE: &str = "pageserver.ports.json";

pub const PAGESERVER_LOG: &str = "pageserver.log";
pub const PAGESERVER_CONFIG_FILE: &str = "pageserver.toml";
const PID_FILE: &str = "pageserver.pid";

/// The part of the ports file this crate reads: whose it is.
#[derive(Deserialize)]
struct BoundPorts {
    pid: u32,
}

/// The daemon's configuration file as `strata up` writes it.
#[derive(Serialize)]
struct ConfigFile {
    data_dir: PathBuf,
    listen_grpc: String,
    listen_http: String,
    log_format: &'static str,
    /// The cluster's object store; credentials come from `strata up`'s environment
    /// (the AWS variables), never from this file.
    object_store: String,
    safekeepers: Vec<SafekeeperEntry>,
}

#[derive(Serialize)]
struct SafekeeperEntry {
    id: NodeId,
    grpc: String,
    pg: String,
}

/// The pageserver's place in a cluster directory.
#[derive(Debug, Clone)]
pub(crate) struct PageserverNode {
    pub config: PageserverConfig,
    pub data_dir: PathBuf,
    /// `--config` exactly as passed, which identifies the process.
    config_arg: OsString,
}

impl PageserverNode {
    pub fn new(cluster_dir: &Path, config: &PageserverConfig) -> PageserverNode {
        let data_dir = cluster_dir.join(PAGESERVER_DIR);
        PageserverNode {
            config: config.clone(),
            config_arg: data_dir.join(PAGESERVER_CONFIG_FILE).into_os_string(),
            data_dir,
        }
    }

    pub fn log(&self) -> PathBuf {
        self.data_dir.join(PAGESERVER_LOG)
    }

    fn pid_file(&self) -> PathBuf {
        self.data_dir.join(PID_FILE)
    }

    fn identity(&self) -> Identity<'_> {
        Identity {
            program: PAGESERVER_PROGRAM,
            argument: Some(&self.config_arg),
        }
    }

    /// The pid of the running daemon, if it is running.
    pub fn running_pid(&self) -> Option<u32> {
        process::read_pid_file(&self.pid_file()).filter(|&pid| self.identity().matches(pid))
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::from((LISTEN_HOST, self.config.grpc_port))
    }

    fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((LISTEN_HOST, self.config.http_port))
    }

    /// Writes the configuration file (the cluster's safekeepers, fixed ports), spawns
    /// the daemon and records its pid; the caller waits with
    /// [`PageserverNode::wait_ready`].
    pub fn spawn(&self, binary: &Path, cluster: &ClusterConfig) -> Result<Child> {
        std::fs::create_dir_all(&self.data_dir)
            .map_err(io_err(format!("creating {}", self.data_dir.display())))?;
        let file = ConfigFile {
            data_dir: self.data_dir.clone(),
            listen_grpc: self.grpc_addr().to_string(),
            listen_http: self.http_addr().to_string(),
            log_format: "text",
            object_store: cluster.object_store.clone(),
            safekeepers: cluster
                .safekeepers
                .iter()
                .map(|sk| SafekeeperEntry {
                    id: sk.id,
                    grpc: SocketAddr::from((LISTEN_HOST, sk.grpc_port)).to_string(),
                    pg: SocketAddr::from((LISTEN_HOST, sk.pg_port)).to_string(),
                })
                .collect(),
        };
        let text = toml::to_string(&file).map_err(|e| ClusterError::Io {
            context: "encoding the pageserver configuration".into(),
            source: std::io::Error::other(e),
        })?;
        let header = "# Written by `strata up` at every start from cluster.json; edits are lost.\n";
        crate::config::write_atomically(
            Path::new(&self.config_arg),
            format!("{header}{text}").as_bytes(),
        )?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&self.config_arg)
            .current_dir(&self.data_dir);
        let child = process::spawn_detached(command, &self.log())?;
        process::write_pid_file(&self.pid_file(), child.id())?;
        Ok(child)
    }

    /// Waits until the daemon `child` has written its ports file and `/health` says ready.
    pub fn wait_ready(&self, child: &mut Child) -> Result<()> {
        let pid = child.id();
        let ports_file = self.data_dir.join(PORTS_FILE);
        let health = self.http_addr();
        process::wait_ready(
            "pageserver",
            child,
            &self.log(),
            PAGESERVER_START_TIMEOUT,
            || {
                let ours = std::fs::read_to_string(&ports_file)
                    .ok()
                    .and_then(|text| serde_json::from_str::<BoundPorts>(&text).ok())
                    .is_some_and(|ports| ports.pid == pid);
                (ours && http_status(health, "/health") == Some(200)).then_some(())
            },
        )
    }

    /// Stops the daemon found running as `pid`: SIGTERM, bounded wait, SIGKILL. The pid
    /// file goes once the process is gone.
    pub fn stop(&self, pid: Option<u32>) -> Result<()> {
        if let Some(pid) = pid {
            process::stop(
                "pageserver",
                pid,
                self.identity(),
                Signal::Term,
                PAGESERVER_STOP_TIMEOUT,
            )?;
        }
        process::remove_file_if_exists(&self.pid_file())
    }
}

/// What the pageserver says about the cluster's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageserverTimelineState {
    pub last_record_lsn: Lsn,
    pub disk_consistent_lsn: Lsn,
    pub remote_consistent_lsn: Lsn,
}

/// `TimelineStatus` over gRPC; `None` when the daemon cannot be reached in time or does
/// not have the timeline (yet).
pub(crate) async fn timeline_state(
    grpc: SocketAddr,
    tenant: TenantId,
    timeline: TimelineId,
) -> Option<PageserverTimelineState> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .ok()?
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT);
    let channel = endpoint.connect().await.ok()?;
    let info = PageserverClient::new(channel)
        .timeline_status(TimelineRequest {
            tenant_id: tenant.to_string(),
            timeline_id: timeline.to_string(),
        })
        .await
        .ok()?
        .into_inner();
    Some(PageserverTimelineState {
        last_record_lsn: Lsn(info.last_record_lsn),
        disk_consistent_lsn: Lsn(info.disk_consistent_lsn),
        remote_consistent_lsn: Lsn(info.remote_consistent_lsn),
    })
}
