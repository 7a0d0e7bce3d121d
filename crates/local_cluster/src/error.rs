//! The errors of the local cluster. Each renders as one line (the `strata` CLI prints it
//! as is), naming the file or process concerned and, for a daemon that failed, the last
//! line of its log and the log's path.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{dir} holds no cluster (no cluster.json); create one with `strata up --dir {dir}`")]
    NotACluster { dir: PathBuf },

    #[error("{path} is not a valid cluster file: {message}")]
    BadClusterFile { path: PathBuf, message: String },

    #[error(
        "the cluster in {dir} was created with {what} {existing}, not {requested} \
         (settings are fixed at creation; use another --dir for another cluster)"
    )]
    SpecMismatch {
        dir: PathBuf,
        what: &'static str,
        existing: String,
        requested: String,
    },

    #[error("invalid {what}: {message}")]
    InvalidSpec { what: &'static str, message: String },

    #[error(
        "cannot find the {name} binary in {searched}; build it (`cargo build --bins`) or \
         point STRATA_BIN_DIR at the directory holding it"
    )]
    BinaryNotFound {
        name: &'static str,
        searched: String,
    },

    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{component} exited during startup ({status}); last log line: {last_line} (log: {log})"
    )]
    StartFailed {
        component: String,
        status: String,
        last_line: String,
        log: PathBuf,
    },

    #[error(
        "{component} was not ready within {timeout:?}; last log line: {last_line} (log: {log})"
    )]
    StartTimeout {
        component: String,
        timeout: Duration,
        last_line: String,
        log: PathBuf,
    },

    #[error("{component} (pid {pid}) did not exit within {timeout:?}, even after SIGKILL")]
    StopTimeout {
        component: String,
        pid: u32,
        timeout: Duration,
    },

    #[error(
        "processes of a killed PostgreSQL on {pgdata} are still there after {timeout:?} \
         (pids {pids:?}); a new server cannot start until they are gone"
    )]
    StaleProcesses {
        pgdata: PathBuf,
        pids: Vec<u32>,
        timeout: Duration,
    },

    #[error("no free TCP ports on 127.0.0.1 in {first}..{last} after {attempts} attempts")]
    NoFreePort {
        first: u16,
        last: u16,
        attempts: usize,
    },

    #[error(
        "{path} (mode {mode:o}) cannot be entered by the OS user {user:?} that PostgreSQL \
         runs as under root; put the cluster under a directory such as /tmp or /var/lib"
    )]
    NotReachable {
        path: PathBuf,
        mode: u32,
        user: String,
    },

    #[error(transparent)]
    Postgres(#[from] pg_harness::HarnessError),
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// `map_err` helper: an I/O error with what was being done.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}
