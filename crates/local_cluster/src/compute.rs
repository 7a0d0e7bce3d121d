//! The compute: a stock PostgreSQL run by `compute_ctl start`. `DIR/compute/` holds the
//! data directory `pgdata/` (created by `compute_ctl`, owned by the server user: with
//! initdb for a new timeline, from the pageserver's basebackup when it is empty and
//! the timeline exists), `compute_ctl.log`, `postgres.log` (the server's own log),
//! `compute_ctl.pid` and the status file `status.json` that `compute_ctl` writes once
//! Postgres accepts connections and it won the election.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use pg_harness::{PgBin, SUPERUSER};
use serde::Deserialize;

use crate::config::{ClusterConfig, LISTEN_HOST};
use crate::error::{io_err, ClusterError, Result};
use crate::limits::{
    COMPUTE_START_TIMEOUT, COMPUTE_STOP_TIMEOUT, DEAD_POSTGRES_RELEASE_TIMEOUT, KILL_WAIT_TIMEOUT,
    ORPHAN_POSTGRES_FAST_STOP_TIMEOUT,
};
use crate::process::{self, Identity, Signal};

/// The agent's binary name, which is also its `/proc/PID/comm`.
pub const COMPUTE_CTL_PROGRAM: &str = "compute_ctl";
/// PostgreSQL's server binary (its postmaster keeps this `comm`).
const POSTGRES_PROGRAM: &str = "postgres";

pub const COMPUTE_DIR: &str = "compute";
pub const PGDATA_DIR: &str = "pgdata";
pub const COMPUTE_CTL_LOG: &str = "compute_ctl.log";
pub const POSTGRES_LOG: &str = "postgres.log";
const PID_FILE: &str = "compute_ctl.pid";
pub const STATUS_FILE: &str = "status.json";

/// What `compute_ctl start --status-file` writes. Every field optional: the file is
/// another program's, and a field it drops must not make `strata status` fail.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct StatusFile {
    pub pid: Option<u32>,
    pub compute_ctl_pid: Option<u32>,
    pub connstr: Option<String>,
    pub term: Option<u64>,
    pub state: Option<String>,
}

/// The compute's place in a cluster directory.
#[derive(Debug, Clone)]
pub(crate) struct ComputeNode {
    pub dir: PathBuf,
    pub pgdata: PathBuf,
    /// `--pgdata` exactly as passed, which identifies the process.
    pgdata_arg: OsString,
    pub pg_port: u16,
}

/// The compute's processes as found now.
#[derive(Debug, Clone, Default)]
pub(crate) struct ComputeProcesses {
    pub compute_ctl_pid: Option<u32>,
    pub postmaster_pid: Option<u32>,
    pub status: Option<StatusFile>,
}

impl ComputeProcesses {
    /// Running: the agent and its Postgres are alive and the agent reported `running`.
    pub fn running(&self) -> bool {
        self.compute_ctl_pid.is_some()
            && self.postmaster_pid.is_some()
            && self.status.as_ref().is_some_and(|status| {
                status.state.as_deref() == Some("running")
                    && status.compute_ctl_pid == self.compute_ctl_pid
            })
    }
}

impl ComputeNode {
    pub fn new(cluster_dir: &Path, config: &ClusterConfig) -> ComputeNode {
        let dir = cluster_dir.join(COMPUTE_DIR);
        let pgdata = dir.join(PGDATA_DIR);
        ComputeNode {
            pgdata_arg: pgdata.clone().into_os_string(),
            pgdata,
            dir,
            pg_port: config.compute.pg_port,
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join(COMPUTE_CTL_LOG)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join(PID_FILE)
    }

    pub fn status_file(&self) -> PathBuf {
        self.dir.join(STATUS_FILE)
    }

    fn identity(&self) -> Identity<'_> {
        Identity {
            program: COMPUTE_CTL_PROGRAM,
            argument: Some(&self.pgdata_arg),
        }
    }

    /// The URI clients connect with (the superuser `compute_ctl`'s initdb creates).
    pub fn default_connstr(&self) -> String {
        format!(
            "postgresql://{SUPERUSER}@{LISTEN_HOST}:{}/postgres",
            self.pg_port
        )
    }

    pub fn read_status(&self) -> Option<StatusFile> {
        let text = fs::read_to_string(self.status_file()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The live postmaster of `pgdata`, from its lock file `postmaster.pid`, whose first
    /// line is the pid (Postgres removes the file when it stops cleanly).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse().ok()?;
        let postgres = Identity {
            program: POSTGRES_PROGRAM,
            argument: None,
        };
        postgres.matches(pid).then_some(pid)
    }

    pub fn processes(&self) -> ComputeProcesses {
        let status = self.read_status();
        let postgres = Identity {
            program: POSTGRES_PROGRAM,
            argument: None,
        };
        // The lock file may be unreadable for a moment while Postgres rewrites it; the
        // agent's status file names the postmaster too.
        let postmaster_pid = self.postmaster_pid().or_else(|| {
            status
                .as_ref()
                .and_then(|s| s.pid)
                .filter(|&pid| postgres.matches(pid))
        });
        ComputeProcesses {
            compute_ctl_pid: process::read_pid_file(&self.pid_file())
                .filter(|&pid| self.identity().matches(pid)),
            postmaster_pid,
            status,
        }
    }

    /// Creates `DIR/compute`, which the server user must be able to enter and write
    /// (compute_ctl runs initdb there as that user when we are root).
    pub fn prepare_dir(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .map_err(io_err(format!("creating {}", self.dir.display())))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755)).map_err(io_err(
            format!("setting the mode of {}", self.dir.display()),
        ))?;
        let bin = PgBin::locate()?;
        if let Some(user) = bin.server_user() {
            std::os::unix::fs::chown(&self.dir, Some(user.uid), Some(user.gid)).map_err(io_err(
                format!("giving {} to {}", self.dir.display(), user.name),
            ))?;
            check_reachable(&self.dir, user.uid, user.gid, &user.name)?;
        }
        Ok(())
    }

    /// Spawns `compute_ctl start` and records its pid. A Postgres left running by a
    /// killed `compute_ctl` is stopped first: it cannot commit without its agent, and
    /// the new agent must start Postgres itself.
    pub fn spawn(&self, binary: &Path, config: &ClusterConfig) -> Result<Child> {
        self.stop_orphan_postgres()?;
        self.release_dead_postgres()?;
        // A file left by the previous agent must not be mistaken for the new one's.
        process::remove_file_if_exists(&self.status_file())?;
        let mut command = Command::new(binary);
        command
            .arg("start")
            .arg("--pgdata")
            .arg(&self.pgdata_arg)
            .arg("--pg-port")
            .arg(self.pg_port.to_string())
            .arg("--tenant")
            .arg(config.tenant_id.to_string())
            .arg("--timeline")
            .arg(config.timeline_id.to_string())
            .arg("--safekeepers")
            .arg(config.safekeeper_grpc_addrs())
            .arg("--status-file")
            .arg(self.status_file())
            .arg("--pg-log")
            .arg(self.dir.join(POSTGRES_LOG))
            .current_dir(&self.dir);
        if let Some(pageserver) = config.pageserver_grpc_addr() {
            command.arg("--pageserver").arg(pageserver);
        }
        let child = process::spawn_detached(command, &self.log())?;
        process::write_pid_file(&self.pid_file(), child.id())?;
        Ok(child)
    }

    /// Waits until `child` reports `running` in the status file; its connection URI.
    pub fn wait_ready(&self, child: &mut Child) -> Result<String> {
        let pid = child.id();
        process::wait_ready("compute", child, &self.log(), COMPUTE_START_TIMEOUT, || {
            let status = self.read_status()?;
            let ready =
                status.compute_ctl_pid == Some(pid) && status.state.as_deref() == Some("running");
            ready.then(|| status.connstr.unwrap_or_else(|| self.default_connstr()))
        })
    }

    /// Waits for an agent that an earlier `up` started and that is still starting.
    pub fn wait_running(&self, pid: u32) -> Result<()> {
        let deadline = std::time::Instant::now() + COMPUTE_START_TIMEOUT;
        loop {
            let found = self.processes();
            if found.running() {
                return Ok(());
            }
            if found.compute_ctl_pid != Some(pid) {
                return Err(ClusterError::StartFailed {
                    component: "compute".into(),
                    status: "exited".into(),
                    last_line: process::last_log_line(&self.log()),
                    log: self.log(),
                });
            }
            if std::time::Instant::now() >= deadline {
                return Err(ClusterError::StartTimeout {
                    component: "compute".into(),
                    timeout: COMPUTE_START_TIMEOUT,
                    last_line: process::last_log_line(&self.log()),
                    log: self.log(),
                });
            }
            std::thread::sleep(crate::limits::POLL_INTERVAL);
        }
    }

    /// SIGTERM to `compute_ctl` (it stops Postgres), bounded wait, SIGKILL; then any
    /// Postgres it left behind. Returns the agent's pid if it was running.
    pub fn stop(&self) -> Result<Option<u32>> {
        let found = self.processes();
        if let Some(pid) = found.compute_ctl_pid {
            process::stop(
                "compute_ctl",
                pid,
                self.identity(),
                Signal::Term,
                COMPUTE_STOP_TIMEOUT,
            )?;
        }
        self.stop_orphan_postgres()?;
        process::remove_file_if_exists(&self.pid_file())?;
        process::remove_file_if_exists(&self.status_file())?;
        Ok(found.compute_ctl_pid)
    }

    /// Fast shutdown (SIGINT), then immediate (SIGQUIT: the postmaster takes its
    /// backends down with it, which SIGKILL would not), then SIGKILL.
    fn stop_orphan_postgres(&self) -> Result<()> {
        let Some(pid) = self.postmaster_pid() else {
            return Ok(());
        };
        let postgres = Identity {
            program: POSTGRES_PROGRAM,
            argument: None,
        };
        process::send_signal(pid, Signal::Int);
        if process::wait_gone(pid, postgres, ORPHAN_POSTGRES_FAST_STOP_TIMEOUT) {
            return Ok(());
        }
        process::stop("postgres", pid, postgres, Signal::Quit, KILL_WAIT_TIMEOUT)
    }
}

impl ComputeNode {
    /// After a Postgres crash (its postmaster killed), waits until nothing of it is
    /// left that would make a new postmaster refuse the data directory:
    ///
    /// - backends and auxiliary processes outlive a killed postmaster until they notice
    ///   (they still hold its shared memory, and a new postmaster refuses to start
    ///   while they do): as the postmaster would on a crash, they are killed. They are
    ///   found by their working directory, which every Postgres process sets to its
    ///   data directory.
    /// - the killed postmaster's pid stays in `postmaster.pid`, and Postgres takes a
    ///   pid that still exists, even as a zombie not yet reaped by init, for a running
    ///   server: the wait lasts until the kernel has released that pid.
    fn release_dead_postgres(&self) -> Result<()> {
        let Ok(pgdata) = fs::canonicalize(&self.pgdata) else {
            return Ok(()); // No data directory yet: nothing can be left of a server.
        };
        let lock_pid: Option<u32> = fs::read_to_string(self.pgdata.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok());
        let deadline = std::time::Instant::now() + DEAD_POSTGRES_RELEASE_TIMEOUT;
        loop {
            let leftovers = postgres_processes_in(&pgdata);
            for &pid in &leftovers {
                process::send_signal(pid, Signal::Kill);
            }
            let lock_pid_exists =
                lock_pid.is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists());
            if leftovers.is_empty() && !lock_pid_exists {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(ClusterError::StaleProcesses {
                    pgdata: self.pgdata.clone(),
                    pids: leftovers.into_iter().chain(lock_pid).collect(),
                    timeout: DEAD_POSTGRES_RELEASE_TIMEOUT,
                });
            }
            std::thread::sleep(crate::limits::POLL_INTERVAL);
        }
    }
}

/// Live `postgres` processes whose working directory is `pgdata` (canonical).
fn postgres_processes_in(pgdata: &Path) -> Vec<u32> {
    let postgres = Identity {
        program: POSTGRES_PROGRAM,
        argument: None,
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| postgres.matches(pid))
        .filter(|pid| fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == pgdata))
        .collect()
}

/// Every ancestor of `dir` must be searchable by the server user, or initdb fails with a
/// bare "Permission denied" deep in compute_ctl's log.
fn check_reachable(dir: &Path, uid: u32, gid: u32, user: &str) -> Result<()> {
    for ancestor in dir.ancestors() {
        let meta = fs::metadata(ancestor).map_err(io_err(format!(
            "reading the metadata of {}",
            ancestor.display()
        )))?;
        let mode = meta.mode();
        let searchable = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !searchable {
            return Err(ClusterError::NotReachable {
                path: ancestor.to_owned(),
                mode: mode & 0o7777,
                user: user.to_owned(),
            });
        }
    }
    Ok(())
}
