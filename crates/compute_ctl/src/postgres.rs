//! Running the compute's PostgreSQL: `pg_ctl start/stop`, `psql` for the bootstrap, and
//! whether the postmaster is alive. Every tool runs through
//! [`pg_harness::PgBin::command`], so under root it runs as the unprivileged server
//! user, and every call has a time limit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pg_harness::PgBin;

use crate::limits::{PG_START_TIMEOUT, PG_STOP_TIMEOUT, PSQL_TIMEOUT};
use crate::pgdata::settings::LISTEN_HOST;

/// The superuser `initdb -U` creates; the connection URI names it.
pub const SUPERUSER: &str = "postgres";

/// Extra time given to a tool beyond its own `-t` before we kill it.
const TOOL_SLACK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("running {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} did not finish within {timeout:?}")]
    Timeout { tool: String, timeout: Duration },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: String,
        status: String,
        stderr: String,
    },
}

/// Run `command` to completion within `timeout`, killing it after that.
pub fn run(tool: &str, mut command: Command, timeout: Duration) -> Result<Output, PostgresError> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| PostgresError::Spawn {
            tool: tool.to_owned(),
            source,
        })?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // wait_with_output reads both pipes while waiting, so a chatty tool cannot block
    // on a full pipe; the thread ends when the tool does.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(output) => output.map_err(|source| PostgresError::Spawn {
            tool: tool.to_owned(),
            source,
        })?,
        Err(_) => {
            // Without unsafe code there is no kill(2); the kill tool does it.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            return Err(PostgresError::Timeout {
                tool: tool.to_owned(),
                timeout,
            });
        }
    };
    if !output.status.success() {
        return Err(PostgresError::Failed {
            tool: tool.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// How PostgreSQL is stopped (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Sessions are cut, a shutdown checkpoint is written (and streamed).
    Fast,
    /// At once, without a checkpoint: what fencing needs.
    Immediate,
}

impl StopMode {
    fn name(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// One compute's PostgreSQL.
#[derive(Debug, Clone)]
pub struct Postgres {
    bin: PgBin,
    pgdata: PathBuf,
    log_file: PathBuf,
    port: u16,
}

impl Postgres {
    pub fn new(bin: PgBin, pgdata: &Path, log_file: &Path, port: u16) -> Postgres {
        Postgres {
            bin,
            pgdata: pgdata.to_owned(),
            log_file: log_file.to_owned(),
            port,
        }
    }

    pub fn bin(&self) -> &PgBin {
        &self.bin
    }

    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn connstr(&self) -> String {
        format!(
            "postgresql://{SUPERUSER}@{LISTEN_HOST}:{}/postgres",
            self.port
        )
    }

    fn pg_ctl(&self, action: &str) -> Command {
        let mut command = self.bin.command("pg_ctl");
        command.arg(action).arg("-D").arg(&self.pgdata).arg("-s");
        // Tools run as the server user, which may not be able to enter our directory.
        command.current_dir(&self.pgdata);
        command
    }

    /// `pg_ctl start -w` with `options` on the postmaster's command line; returns once
    /// PostgreSQL accepts connections.
    pub fn start(&self, options: &str) -> Result<(), PostgresError> {
        let mut command = self.pg_ctl("start");
        command
            .arg("-w")
            .arg("-t")
            .arg(PG_START_TIMEOUT.as_secs().to_string())
            .arg("-l")
            .arg(&self.log_file)
            .arg("-o")
            .arg(options);
        run("pg_ctl start", command, PG_START_TIMEOUT + TOOL_SLACK).map(|_| ())
    }

    /// `pg_ctl stop -w -m <mode>`.
    pub fn stop(&self, mode: StopMode) -> Result<(), PostgresError> {
        let mut command = self.pg_ctl("stop");
        command
            .arg("-w")
            .arg("-t")
            .arg(PG_STOP_TIMEOUT.as_secs().to_string())
            .arg("-m")
            .arg(mode.name());
        run("pg_ctl stop", command, PG_STOP_TIMEOUT + TOOL_SLACK).map(|_| ())
    }

    /// The postmaster's pid if it is alive: the first line of `postmaster.pid`, and a
    /// process of that pid running `postgres`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // A zombie left for its parent to reap is not a running server.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        (comm.trim() == "postgres" && state != Some('Z')).then_some(pid)
    }

    /// Run SQL as the superuser over TCP; its output (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> Result<String, PostgresError> {
        let mut command = self.bin.command("psql");
        command
            .current_dir(&self.pgdata)
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", LISTEN_HOST])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-c",
                sql,
            ]);
        let output = run("psql", command, PSQL_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// `PG_VERSION_NUM` from a `postgres --version` line (`... 15.8 (Debian ...)` is
/// 150008), as the greeting and `CreateTimeline` carry it.
pub fn version_num(version_line: &str) -> Option<u32> {
    let rest = version_line.split("(PostgreSQL)").nth(1)?.trim_start();
    let number: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = number.split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some(major * 10000 + minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers() {
        assert_eq!(
            version_num("postgres (PostgreSQL) 15.8 (Debian 15.8-1.pgdg120+1)"),
            Some(150_008)
        );
        assert_eq!(version_num("postgres (PostgreSQL) 15.14"), Some(150_014));
        assert_eq!(version_num("postgres (PostgreSQL) 16beta1"), Some(160_000));
        assert_eq!(version_num("postgres 15.2"), None);
    }

    #[test]
    fn slow_tools_are_killed() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let started = std::time::Instant::now();
        let error = run("sleep", command, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(error, PostgresError::Timeout { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let mut failing = Command::new("sh");
        failing.args(["-c", "echo oops >&2; exit 3"]);
        let error = run("sh", failing, Duration::from_secs(10)).unwrap_err();
        assert!(error.to_string().contains("oops"), "{error}");
    }
}
