//! Running child processes with a hard time limit and captured output.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};

/// Extra time granted to collect a child's output after it exited. Output pipes normally
/// close with the child; this only matters if a grandchild inherited them.
const OUTPUT_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Longest pause between polls of a running child.
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Captured result of a finished command.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Renders a command line for error messages (program and arguments, lossily decoded).
pub(crate) fn describe(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        out.push(' ');
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            out.push('\'');
            out.push_str(&arg.replace('\'', r"'\''"));
            out.push('\'');
        } else {
            out.push_str(&arg);
        }
    }
    out
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error just truncates the captured output; the exit status still tells the story.
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

fn collect(rx: &mpsc::Receiver<Vec<u8>>, deadline: Instant) -> String {
    let wait = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(wait) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::from("<output not collected: pipe still held open>"),
    }
}

/// Runs `cmd` to completion, feeding it `stdin` (or /dev/null), capturing stdout and stderr,
/// and killing it if it runs longer than `timeout`. Does not judge the exit status.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<Finished> {
    let command = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn {
        command: command.clone(),
        source,
    })?;

    // Write stdin from its own thread: a child that produces output while still reading input
    // would otherwise deadlock against us.
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        thread::spawn(move || {
            // The child may exit early (e.g. psql stopping at the first error): ignore EPIPE.
            let _ = pipe.write_all(&input);
        });
    }
    let stdout_rx = child.stdout.take().map(spawn_reader);
    let stderr_rx = child.stderr.take().map(spawn_reader);

    let start = Instant::now();
    let mut interval = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::Spawn { command, source });
            }
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            let deadline = Instant::now() + OUTPUT_DRAIN_GRACE;
            let stderr = stderr_rx
                .map(|rx| collect(&rx, deadline))
                .unwrap_or_default();
            return Err(HarnessError::Timeout {
                command,
                timeout,
                stderr,
            });
        }
        thread::sleep(interval);
        interval = (interval * 2).min(MAX_POLL_INTERVAL);
    };

    let deadline = Instant::now() + OUTPUT_DRAIN_GRACE;
    let stdout = stdout_rx
        .map(|rx| collect(&rx, deadline))
        .unwrap_or_default();
    let stderr = stderr_rx
        .map(|rx| collect(&rx, deadline))
        .unwrap_or_default();
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// Like [`run`], but turns an unsuccessful exit into [`HarnessError::CommandFailed`].
pub(crate) fn run_ok(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Finished> {
    let finished = run(cmd, stdin, timeout)?;
    if finished.status.success() {
        Ok(finished)
    } else {
        Err(HarnessError::CommandFailed {
            command: describe(cmd),
            status: finished.status,
            stdout: finished.stdout,
            stderr: finished.stderr,
        })
    }
}
