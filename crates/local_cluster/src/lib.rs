//! A local Strata cluster in one directory: what `strata up`, `strata down` and
//! `strata status` do, and what the integration tests drive (so the tests exercise the
//! code users run).
//!
//! # Layout of a cluster directory `DIR`
//!
//! - `cluster.json`: tenant and timeline ids, object store URL, and every port, fixed at
//!   creation ([`ClusterConfig`]).
//! - `safekeeper-<id>/`: the safekeeper's data directory (timelines under
//!   `<tenant>/<timeline>/`, `safekeeper.ports.json` while it runs), with
//!   `safekeeper.log` and `safekeeper.pid`.
//! - `pageserver/`: the pageserver's data directory, with `pageserver.toml` (its
//!   configuration, rewritten at every start), `pageserver.log`, `pageserver.pid` and
//!   `pageserver.ports.json` while it runs.
//! - `compute/`: `pgdata/` (created by `compute_ctl`: with initdb for a new timeline, or
//!   from the pageserver's basebackup when it is empty), `compute_ctl.log`,
//!   `postgres.log`, `compute_ctl.pid`, and `status.json` (written by `compute_ctl` once
//!   it runs).
//! - `object-store/`: the default object store (empty until the pageserver and WAL
//!   offload use it).
//!
//! # Processes
//!
//! Daemons run detached from the caller (own process group, stdin from /dev/null,
//! output appended to their log). A pid file says which process is ours; it counts as
//! running only while `/proc/PID` is that program (not a zombie) with this cluster's
//! data directory on its command line, so stale pid files and reused pids are harmless.
//! [`LocalCluster::up`] starts what is not running (safekeepers first, then the
//! pageserver, then the compute) and waits, bounded, for each to be ready;
//! [`LocalCluster::down`] stops the compute first, then the pageserver, then the
//! safekeepers.
//!
//! Not handled: two `strata up` running at once on the same directory.
//!
//! Invariant: this crate never depends on the daemon crates (`safekeeper`,
//! `pageserver`): it talks to them through their binaries, files and gRPC API only
//! (checked by `scripts/check-layering.sh`).

mod compute;
mod config;
mod error;
pub mod limits;
mod pageserver;
mod process;
mod safekeeper;
mod status;

use std::path::{Path, PathBuf};

use strata_ids::NodeId;

pub use compute::{
    COMPUTE_CTL_LOG, COMPUTE_CTL_PROGRAM, COMPUTE_DIR, PGDATA_DIR, POSTGRES_LOG, STATUS_FILE,
};
pub use config::{
    ClusterConfig, ClusterSpec, ComputeConfig, PageserverConfig, SafekeeperConfig, CLUSTER_FILE,
    DEFAULT_SAFEKEEPERS, LISTEN_HOST, OBJECT_STORE_DIR,
};
pub use error::{ClusterError, Result};
pub use pageserver::{PAGESERVER_DIR, PAGESERVER_LOG, PAGESERVER_PROGRAM};
pub use process::{last_log_line, send_signal, Signal};
pub use safekeeper::{SAFEKEEPER_LOG, SAFEKEEPER_PROGRAM};
pub use status::{ClusterStatus, ComputeStatus, PageserverStatus, SafekeeperStatus};

use compute::ComputeNode;
use error::io_err;
use pageserver::PageserverNode;
use safekeeper::SafekeeperNode;

/// Environment variable naming the directory that holds the `safekeeper`,
/// `pageserver` and `compute_ctl` binaries; by default they are looked for beside the running executable.
pub const BIN_DIR_ENV: &str = "STRATA_BIN_DIR";

/// The daemon binaries a cluster runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub safekeeper: PathBuf,
    pub pageserver: PathBuf,
    pub compute_ctl: PathBuf,
}

impl Binaries {
    /// From `$STRATA_BIN_DIR`, else the directory of the running executable (the
    /// `strata` binary's target directory), else its parent when that directory is
    /// cargo's `deps/` (a test executable).
    pub fn locate() -> Result<Binaries> {
        let dirs: Vec<PathBuf> = match std::env::var_os(BIN_DIR_ENV).filter(|v| !v.is_empty()) {
            Some(dir) => vec![PathBuf::from(dir)],
            None => {
                let exe =
                    std::env::current_exe().map_err(io_err("finding the running executable"))?;
                let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
                let mut dirs = vec![dir.clone()];
                if dir.file_name().is_some_and(|name| name == "deps") {
                    dirs.extend(dir.parent().map(Path::to_path_buf));
                }
                dirs
            }
        };
        Binaries::in_dirs(&dirs)
    }

    /// Every binary from the first of `dirs` that holds it.
    pub fn in_dirs(dirs: &[PathBuf]) -> Result<Binaries> {
        let find = |name: &'static str| {
            dirs.iter()
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
                .ok_or_else(|| ClusterError::BinaryNotFound {
                    name,
                    searched: dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        };
        Ok(Binaries {
            safekeeper: find(SAFEKEEPER_PROGRAM)?,
            pageserver: find(PAGESERVER_PROGRAM)?,
            compute_ctl: find(COMPUTE_CTL_PROGRAM)?,
        })
    }
}

/// What `up` did to one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Started { pid: u32 },
    AlreadyRunning { pid: u32 },
}

impl Action {
    pub fn pid(self) -> u32 {
        match self {
            Action::Started { pid } | Action::AlreadyRunning { pid } => pid,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpReport {
    pub safekeepers: Vec<(NodeId, Action)>,
    /// `None` for a cluster created without a pageserver.
    pub pageserver: Option<Action>,
    pub compute: Action,
    pub connstr: String,
}

#[derive(Debug, Clone)]
pub struct DownReport {
    /// The compute_ctl pid stopped, if it was running.
    pub compute: Option<u32>,
    /// The pageserver pid stopped, if it was running (`None` too for a cluster without).
    pub pageserver: Option<u32>,
    /// Each safekeeper and the pid stopped, if it was running.
    pub safekeepers: Vec<(NodeId, Option<u32>)>,
}

/// A cluster directory and its configuration.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    dir: PathBuf,
    config: ClusterConfig,
}

impl LocalCluster {
    /// The existing cluster in `dir`.
    pub fn open(dir: &Path) -> Result<LocalCluster> {
        let dir = absolute(dir)?;
        match ClusterConfig::load(&dir)? {
            Some(config) => Ok(LocalCluster { dir, config }),
            None => Err(ClusterError::NotACluster { dir }),
        }
    }

    /// The cluster in `dir`, created (directory, ids, ports) if there is none; true
    /// when it was created. A `spec` that contradicts an existing cluster is an error.
    pub fn open_or_create(dir: &Path, spec: &ClusterSpec) -> Result<(LocalCluster, bool)> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let dir = absolute(dir)?;
        if let Some(config) = ClusterConfig::load(&dir)? {
            config.check_spec(&dir, spec)?;
            return Ok((LocalCluster { dir, config }, false));
        }
        let config = ClusterConfig::new(&dir, spec)?;
        if let Some(store) = config::local_object_store(&config.object_store) {
            std::fs::create_dir_all(&store)
                .map_err(io_err(format!("creating {}", store.display())))?;
        }
        config.save(&dir)?;
        Ok((LocalCluster { dir, config }, true))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    fn safekeepers(&self) -> impl Iterator<Item = SafekeeperNode> + '_ {
        self.config
            .safekeepers
            .iter()
            .map(|sk| SafekeeperNode::new(&self.dir, sk))
    }

    fn safekeeper(&self, id: NodeId) -> Option<SafekeeperNode> {
        self.safekeepers().find(|sk| sk.config.id == id)
    }

    fn compute(&self) -> ComputeNode {
        ComputeNode::new(&self.dir, &self.config)
    }

    fn pageserver(&self) -> Option<PageserverNode> {
        self.config
            .pageserver
            .as_ref()
            .map(|ps| PageserverNode::new(&self.dir, ps))
    }

    /// `DIR/pageserver`.
    pub fn pageserver_dir(&self) -> PathBuf {
        self.dir.join(PAGESERVER_DIR)
    }

    pub fn pageserver_log(&self) -> PathBuf {
        self.pageserver_dir().join(PAGESERVER_LOG)
    }

    /// The pageserver's gRPC address, if the cluster has one.
    pub fn pageserver_grpc_addr(&self) -> Option<String> {
        self.config.pageserver_grpc_addr()
    }

    /// The pid of the pageserver if it is running.
    pub fn pageserver_pid(&self) -> Option<u32> {
        self.pageserver()?.running_pid()
    }

    /// `DIR/safekeeper-<id>`.
    pub fn safekeeper_dir(&self, id: NodeId) -> PathBuf {
        self.dir.join(format!("safekeeper-{id}"))
    }

    pub fn safekeeper_log(&self, id: NodeId) -> PathBuf {
        self.safekeeper_dir(id).join(SAFEKEEPER_LOG)
    }

    /// Where safekeeper `id` keeps the cluster's timeline (control file and segments).
    pub fn safekeeper_timeline_dir(&self, id: NodeId) -> PathBuf {
        self.safekeeper_dir(id)
            .join(self.config.tenant_id.to_string())
            .join(self.config.timeline_id.to_string())
    }

    /// The pid of safekeeper `id` if it is running.
    pub fn safekeeper_pid(&self, id: NodeId) -> Option<u32> {
        self.safekeeper(id)?.running_pid()
    }

    /// `DIR/compute`.
    pub fn compute_dir(&self) -> PathBuf {
        self.compute().dir
    }

    pub fn pgdata(&self) -> PathBuf {
        self.compute().pgdata
    }

    pub fn compute_log(&self) -> PathBuf {
        self.compute().log()
    }

    /// The pids of `compute_ctl` and of the postmaster, each if alive.
    pub fn compute_pids(&self) -> (Option<u32>, Option<u32>) {
        let found = self.compute().processes();
        (found.compute_ctl_pid, found.postmaster_pid)
    }

    /// Starts whatever is not running; see the crate documentation. `progress` is told
    /// what is being waited for, one line at a time.
    pub fn up(&self, binaries: &Binaries, progress: &mut dyn FnMut(&str)) -> Result<UpReport> {
        let safekeepers = self.up_safekeepers(binaries, progress)?;
        let pageserver = match self.pageserver() {
            None => None,
            Some(node) => Some(match node.running_pid() {
                Some(pid) => Action::AlreadyRunning { pid },
                None => {
                    progress("starting pageserver");
                    let mut child = node.spawn(&binaries.pageserver, &self.config)?;
                    let pid = child.id();
                    let ready = node.wait_ready(&mut child);
                    process::reap_in_background(child);
                    ready?;
                    Action::Started { pid }
                }
            }),
        };
        let compute = self.compute();
        let found = compute.processes();
        let (action, connstr) = match found.compute_ctl_pid {
            Some(pid) => {
                if !found.running() {
                    progress(&format!("waiting for compute_ctl (pid {pid}) to start"));
                    compute.wait_running(pid)?;
                }
                let connstr = compute
                    .read_status()
                    .and_then(|status| status.connstr)
                    .unwrap_or_else(|| compute.default_connstr());
                (Action::AlreadyRunning { pid }, connstr)
            }
            None => {
                compute.prepare_dir()?;
                progress("starting compute (compute_ctl start)");
                let mut child = compute.spawn(&binaries.compute_ctl, &self.config)?;
                let pid = child.id();
                let result = compute.wait_ready(&mut child);
                process::reap_in_background(child);
                (Action::Started { pid }, result?)
            }
        };
        Ok(UpReport {
            safekeepers,
            pageserver,
            compute: action,
            connstr,
        })
    }

    /// Starts the safekeepers that are not running, all at once, then waits for each.
    fn up_safekeepers(
        &self,
        binaries: &Binaries,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<(NodeId, Action)>> {
        let mut actions = Vec::new();
        let mut starting = Vec::new();
        for node in self.safekeepers() {
            match node.running_pid() {
                Some(pid) => actions.push((node.config.id, Action::AlreadyRunning { pid })),
                None => {
                    progress(&format!("starting {}", node.name()));
                    let child = node.spawn(&binaries.safekeeper, &self.config)?;
                    starting.push((node, child));
                }
            }
        }
        let mut first_error = None;
        for (node, mut child) in starting {
            let pid = child.id();
            match node.wait_ready(&mut child) {
                Ok(()) => actions.push((node.config.id, Action::Started { pid })),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
            process::reap_in_background(child);
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        actions.sort_by_key(|(id, _)| *id);
        Ok(actions)
    }

    /// Stops the compute, then the pageserver, then every safekeeper (SIGTERM to all,
    /// then a bounded wait for each). Stopping what is not running is not an error.
    pub fn down(&self) -> Result<DownReport> {
        let compute = self.compute().stop()?;
        let pageserver = match self.pageserver() {
            Some(node) => {
                let pid = node.running_pid();
                node.stop(pid)?;
                pid
            }
            None => None,
        };
        // Every safekeeper is told at once, so they flush and exit in parallel.
        let nodes: Vec<(SafekeeperNode, Option<u32>)> = self
            .safekeepers()
            .map(|node| {
                let pid = node.running_pid();
                (node, pid)
            })
            .collect();
        for (_, pid) in &nodes {
            if let Some(pid) = pid {
                send_signal(*pid, Signal::Term);
            }
        }
        let mut safekeepers = Vec::new();
        for (node, pid) in &nodes {
            node.stop(*pid)?;
            safekeepers.push((node.config.id, *pid));
        }
        Ok(DownReport {
            compute,
            pageserver,
            safekeepers,
        })
    }

    /// The state of every process, and the safekeepers' and the pageserver's view of
    /// the timeline (asked over gRPC, each call bounded).
    pub fn status(&self) -> Result<ClusterStatus> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("starting the async runtime"))?;
        let mut safekeepers = Vec::new();
        for node in self.safekeepers() {
            let pid = node.running_pid();
            let state = match pid {
                Some(_) => runtime.block_on(safekeeper::timeline_state(
                    node.addr(node.config.grpc_port),
                    self.config.tenant_id,
                    self.config.timeline_id,
                )),
                None => None,
            };
            safekeepers.push(SafekeeperStatus {
                id: node.config.id,
                pid,
                running: pid.is_some(),
                pg_port: node.config.pg_port,
                grpc_port: node.config.grpc_port,
                http_port: node.config.http_port,
                term: state.map(|s| s.term),
                flush_lsn: state.map(|s| s.flush_lsn),
                commit_lsn: state.map(|s| s.commit_lsn),
            });
        }
        Ok(ClusterStatus {
            tenant_id: self.config.tenant_id,
            timeline_id: self.config.timeline_id,
            object_store: self.config.object_store.clone(),
            compute: self.compute_status(),
            safekeepers,
            pageserver: self.pageserver().map(|node| {
                let pid = node.running_pid();
                let state = pid.and_then(|_| {
                    runtime.block_on(pageserver::timeline_state(
                        node.grpc_addr(),
                        self.config.tenant_id,
                        self.config.timeline_id,
                    ))
                });
                PageserverStatus {
                    pid,
                    running: pid.is_some(),
                    grpc_port: node.config.grpc_port,
                    http_port: node.config.http_port,
                    last_record_lsn: state.map(|s| s.last_record_lsn),
                    disk_consistent_lsn: state.map(|s| s.disk_consistent_lsn),
                    remote_consistent_lsn: state.map(|s| s.remote_consistent_lsn),
                }
            }),
        })
    }

    fn compute_status(&self) -> ComputeStatus {
        let compute = self.compute();
        let found = compute.processes();
        let running = found.running();
        let status = found.status.clone().filter(|_| running);
        ComputeStatus {
            pid: found.postmaster_pid,
            port: compute.pg_port,
            connstr: status
                .as_ref()
                .and_then(|s| s.connstr.clone())
                .unwrap_or_else(|| compute.default_connstr()),
            running,
            compute_ctl_pid: found.compute_ctl_pid,
            term: status.and_then(|s| s.term),
        }
    }
}

/// `dir` made absolute (without resolving symlinks, which the user may rely on), so
/// that paths on daemons' command lines and in `cluster.json` do not depend on the
/// directory `strata` was run from.
fn absolute(dir: &Path) -> Result<PathBuf> {
    std::path::absolute(dir).map_err(io_err(format!("resolving {}", dir.display())))
}
