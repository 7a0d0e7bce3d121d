//! The processes of a cluster: starting them detached from the caller, recording their
//! pids, telling whether a recorded pid is still the process we started, and stopping
//! them with signals (sent by the `kill` command, since the crate forbids `unsafe`).

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::config::write_atomically;
use crate::error::{io_err, ClusterError, Result};
use crate::limits::{KILL_WAIT_TIMEOUT, LOG_TAIL_BYTES, POLL_INTERVAL};

/// What identifies one of our processes: the executable name the kernel reports
/// (`/proc/PID/comm`, the file name truncated to 15 bytes) and, when given, an argument
/// its command line must contain (its data directory), so that a pid reused by another
/// program, or the same program serving another cluster, is not mistaken for ours.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity<'a> {
    pub program: &'a str,
    pub argument: Option<&'a OsStr>,
}

impl Identity<'_> {
    /// Whether `pid` is alive (not a zombie) and is this program.
    pub fn matches(&self, pid: u32) -> bool {
        let proc_dir = Path::new("/proc").join(pid.to_string());
        let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else {
            return false;
        };
        // `PID (comm) STATE ...`: comm may hold spaces and parentheses, so split at
        // the last `)`.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, None | Some('Z' | 'X' | 'x')) {
            return false;
        }
        let comm = fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
        let expected: String = self.program.chars().take(15).collect();
        if comm.trim_end() != expected {
            return false;
        }
        match self.argument {
            None => true,
            Some(argument) => fs::read(proc_dir.join("cmdline"))
                .unwrap_or_default()
                .split(|&b| b == 0)
                .any(|arg| arg == argument.as_encoded_bytes()),
        }
    }
}

/// The pid recorded in `path`, if the file exists and holds one.
pub(crate) fn read_pid_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(crate) fn write_pid_file(path: &Path, pid: u32) -> Result<()> {
    write_atomically(path, format!("{pid}\n").as_bytes())
}

pub(crate) fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", path.display()))(e)),
    }
}

/// Spawns `command` in its own process group (so a Ctrl-C at the terminal that ran
/// `strata up` does not reach it), stdin from /dev/null, stdout and stderr appended to
/// `log` (kept across restarts: the history of a crash is what one reads first).
pub(crate) fn spawn_detached(mut command: Command, log: &Path) -> Result<Child> {
    let open_log = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err(format!("opening {}", log.display())))
    };
    let stdout = open_log()?;
    let stderr = open_log()?;
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    command.spawn().map_err(|source| ClusterError::Spawn {
        program: command.get_program().into(),
        source,
    })
}

/// Leaves `child` to a thread that reaps it when it exits, so that a long-lived caller
/// (a test) does not collect zombies. The `strata` CLI exits soon after, and the
/// process is then adopted by init.
pub(crate) fn reap_in_background(mut child: Child) {
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

/// A signal, by the name `kill -s` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Stop cleanly.
    Term,
    /// Postgres: fast shutdown.
    Int,
    /// Postgres: immediate shutdown.
    Quit,
    /// A crash.
    Kill,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Quit => "QUIT",
            Signal::Kill => "KILL",
        }
    }
}

/// Sends `signal` to `pid`; false if it could not be delivered (the process is gone).
pub fn send_signal(pid: u32, signal: Signal) -> bool {
    Command::new("kill")
        .args(["-s", signal.name(), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Waits until `identity` no longer matches `pid`; false on timeout.
pub(crate) fn wait_gone(pid: u32, identity: Identity<'_>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while identity.matches(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    true
}

/// Signals `pid` with `signal`, waits up to `timeout`, then SIGKILL and a short wait.
pub(crate) fn stop(
    component: &str,
    pid: u32,
    identity: Identity<'_>,
    signal: Signal,
    timeout: Duration,
) -> Result<()> {
    send_signal(pid, signal);
    if wait_gone(pid, identity, timeout) {
        return Ok(());
    }
    send_signal(pid, Signal::Kill);
    if wait_gone(pid, identity, KILL_WAIT_TIMEOUT) {
        return Ok(());
    }
    Err(ClusterError::StopTimeout {
        component: component.to_owned(),
        pid,
        timeout: timeout + KILL_WAIT_TIMEOUT,
    })
}

/// Polls `probe` until it yields a value, failing when `child` exits first or the time
/// runs out; either error quotes the last line of `log`.
pub(crate) fn wait_ready<T>(
    component: &str,
    child: &mut Child,
    log: &Path,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        let exited: Option<ExitStatus> = child
            .try_wait()
            .map_err(io_err(format!("waiting for {component}")))?;
        if let Some(status) = exited {
            return Err(ClusterError::StartFailed {
                component: component.to_owned(),
                status: status.to_string(),
                last_line: last_log_line(log),
                log: log.to_owned(),
            });
        }
        if Instant::now() >= deadline {
            // Do not leave a half-started daemon behind: the next `up` starts afresh.
            let _ = child.kill();
            let _ = child.wait();
            return Err(ClusterError::StartTimeout {
                component: component.to_owned(),
                timeout,
                last_line: last_log_line(log),
                log: log.to_owned(),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The last non-empty line of a log file (read from its end only), for one-line errors.
pub fn last_log_line(log: &Path) -> String {
    let read_tail = || -> std::io::Result<String> {
        let mut file = fs::File::open(log)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read_tail()
        .ok()
        .and_then(|tail| {
            tail.lines()
                .rev()
                .find(|line| !line.trim().is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "(empty)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tells_our_process_from_others() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let sleep = Identity {
            program: "sleep",
            argument: Some(OsStr::new("30")),
        };
        // The kernel sets the new program's name a moment after `spawn` returns.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sleep.matches(pid) {
            assert!(Instant::now() < deadline, "sleep never matched");
            std::thread::sleep(Duration::from_millis(1));
        }
        let other_arg = Identity {
            argument: Some(OsStr::new("31")),
            ..sleep
        };
        assert!(!other_arg.matches(pid));
        let other_program = Identity {
            program: "safekeeper",
            argument: None,
        };
        assert!(!other_program.matches(pid));
        assert!(send_signal(pid, Signal::Kill));
        // Not yet reaped: a zombie is not alive.
        assert!(wait_gone(pid, sleep, Duration::from_secs(10)));
        child.wait().unwrap();
        assert!(!sleep.matches(pid));
    }

    #[test]
    fn last_log_line_skips_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        fs::write(&log, "one\ntwo\n\n").unwrap();
        assert_eq!(last_log_line(&log), "two");
        assert_eq!(last_log_line(&dir.path().join("missing")), "(empty)");
    }
}
