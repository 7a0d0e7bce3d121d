//! The single error type of the harness.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Everything that can go wrong while locating, starting, driving or stopping PostgreSQL.
///
/// Messages are written for a human reading a failed test: they name the command that ran,
/// its exit status and its stderr, and for a failed start the tail of the server log.
/// `Debug` prints the same text as `Display` (plus the cause chain) so that `.expect()` in
/// tests shows a readable message instead of an escaped struct dump.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The PostgreSQL binaries are missing or unusable.
    #[error(
        "PostgreSQL 15 not found at {bindir}: {reason}; install postgresql-15 \
         (e.g. `apt-get install postgresql-15`) or point STRATA_PG_BINDIR at its bin directory"
    )]
    NotInstalled {
        /// Directory that was searched.
        bindir: PathBuf,
        /// What exactly was wrong.
        reason: String,
    },

    /// The binaries exist but are not PostgreSQL 15.x.
    #[error("expected PostgreSQL 15.x at {bindir}, but `postgres --version` says {found:?}")]
    WrongVersion {
        /// Directory that was searched.
        bindir: PathBuf,
        /// The version line that was reported.
        found: String,
    },

    /// Running as root, but the unprivileged OS user PostgreSQL must run as is unusable.
    #[error(
        "running as root, so PostgreSQL must run as the OS user {user:?}, but {reason} \
         (create it, e.g. by installing postgresql-15, or run the tests as a non-root user)"
    )]
    ServerUser {
        /// Name of the OS user that was looked up.
        user: String,
        /// What exactly was wrong.
        reason: String,
    },

    /// A command could not be started at all.
    #[error("failed to run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },

    /// A command ran and exited unsuccessfully.
    #[error(
        "`{command}` failed ({status})\nstderr:\n{stderr}{}",
        labelled("stdout", stdout)
    )]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard output (lossily decoded).
        stdout: String,
        /// Its standard error (lossily decoded).
        stderr: String,
    },

    /// A command exceeded its time limit and was killed.
    #[error(
        "`{command}` did not finish within {timeout:?} and was killed\nstderr so far:\n{stderr}"
    )]
    Timeout {
        /// The command line.
        command: String,
        /// The limit that was exceeded.
        timeout: Duration,
        /// Whatever it had written to stderr.
        stderr: String,
    },

    /// The server did not come up.
    #[error(
        "PostgreSQL server in {data_dir} failed to start (attempt {attempts}): {cause}\n\
         --- server log tail ---\n{log_tail}"
    )]
    StartFailed {
        /// The data directory.
        data_dir: PathBuf,
        /// How many start attempts were made (port collisions are retried).
        attempts: u32,
        /// Why the last attempt failed.
        cause: Box<HarnessError>,
        /// The last lines the server wrote to its log during the last attempt.
        log_tail: String,
    },

    /// A SQL script failed (psql reported an error or could not connect).
    #[error("SQL failed on database {db:?} ({status}):\n{stderr}\n--- script ---\n{script}")]
    Sql {
        /// Database the script ran in.
        db: String,
        /// The script (truncated if very long).
        script: String,
        /// psql's exit status.
        status: ExitStatus,
        /// psql's stderr, which carries the server's error message.
        stderr: String,
    },

    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, including the path.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },

    /// The requested configuration cannot work.
    #[error("invalid pg_harness configuration: {0}")]
    InvalidConfig(String),

    /// An operation needs a running server but it was stopped.
    #[error("the PostgreSQL server in {0} is not running (call restart() first)")]
    NotRunning(PathBuf),

    /// Output that should have had a known shape did not.
    #[error("unexpected output from {what}: {output:?}")]
    UnexpectedOutput {
        /// What produced the output.
        what: String,
        /// The output itself.
        output: String,
    },
}

impl fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every Display message already embeds its cause, so no source chain is appended.
        fmt::Display::fmt(self, f)
    }
}

/// `"\n<label>:\n<text>"`, or nothing when `text` is blank.
fn labelled(label: &str, text: &str) -> String {
    if text.trim().is_empty() {
        String::new()
    } else {
        format!("\n{label}:\n{text}")
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}
