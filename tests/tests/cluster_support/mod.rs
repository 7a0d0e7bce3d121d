//! What the local-cluster tests share: a cluster directory driven by the real `strata`
//! binary (which uses `local_cluster`, as these helpers do for paths and pids), SQL
//! through `psql`, bounded waits, and the check that no daemon logged an error the test
//! did not expect.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use local_cluster::LocalCluster;
use pg_harness::PgBin;
use postgres_wal::Lsn;
use serde_json::Value;
use strata_ids::NodeId;

/// Longest wait for a condition the cluster must reach (commit LSNs converging, a
/// process disappearing).
pub const WAIT: Duration = Duration::from_secs(60);

/// Pause between two probes in a wait.
pub const POLL: Duration = Duration::from_millis(100);

/// Longest one `psql` may run before the test kills it: a commit waiting for a quorum
/// that never comes back must fail the test, not hang it.
pub const PSQL_TIMEOUT: Duration = Duration::from_secs(120);

/// libpq's connection timeout for `psql`, so that a client of a compute that is down
/// fails at once instead of blocking a chaos round.
pub const PSQL_CONNECT_TIMEOUT_SECS: u32 = 5;

/// The `strata` binary built beside this test (`cargo build --bins` builds it, with
/// `safekeeper`, `pageserver` and `compute_ctl` beside it, where `strata up` looks for
/// them).
pub fn strata_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe.parent().unwrap().parent().unwrap().join("strata");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` before the tests",
        bin.display()
    );
    bin
}

/// A cluster in a temporary directory; `strata down` runs when it is dropped, so a
/// failed test leaves no daemon behind.
pub struct TestCluster {
    /// Declared before `_tmp`: the cluster is stopped before its directory goes.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl TestCluster {
    /// An empty directory for a cluster (nothing started). Under /tmp, mode 0755: the
    /// `postgres` OS user must reach the compute's data directory when tests run as root.
    pub fn new() -> TestCluster {
        let tmp = tempfile::Builder::new()
            .prefix("strata-cluster-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        TestCluster {
            dir: tmp.path().join("cluster"),
            _tmp: tmp,
        }
    }

    pub fn strata(&self, args: &[&str]) -> Output {
        Command::new(strata_bin())
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run strata")
    }

    /// `strata up`, which must succeed; its stdout.
    pub fn up(&self) -> String {
        let started = Instant::now();
        let out = self.strata(&["up"]);
        assert!(
            out.status.success(),
            "strata up failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.logs_tail()
        );
        eprintln!("strata up took {:?}", started.elapsed());
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn down(&self) {
        let out = self.strata(&["down"]);
        assert!(
            out.status.success(),
            "strata down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn status(&self) -> Value {
        let out = self.strata(&["status", "--json"]);
        assert!(
            out.status.success(),
            "strata status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status is JSON")
    }

    pub fn cluster(&self) -> LocalCluster {
        LocalCluster::open(&self.dir).expect("open the cluster")
    }

    /// The connection URI `strata status` reports.
    pub fn connstr(&self) -> String {
        self.status()["compute"]["connstr"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The safekeepers' commit LSNs (None for one that is down).
    pub fn commit_lsns(&self) -> Vec<Option<Lsn>> {
        self.status()["safekeepers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sk| sk["commit_lsn"].as_str().map(|s| s.parse().unwrap()))
            .collect()
    }

    /// Waits until every safekeeper reports the same commit LSN, at least `at_least`.
    pub fn wait_commit_lsns_equal(&self, at_least: Lsn) -> Lsn {
        let deadline = Instant::now() + WAIT;
        loop {
            let lsns = self.commit_lsns();
            if let Some(Some(first)) = lsns.first() {
                if *first >= at_least && lsns.iter().all(|l| *l == Some(*first)) {
                    return *first;
                }
            }
            assert!(
                Instant::now() < deadline,
                "safekeepers' commit LSNs did not converge to at least {at_least}: {lsns:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// The last lines of every log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for log in self.logs() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} ---\n", log.display()));
            for line in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn logs(&self) -> Vec<PathBuf> {
        let Ok(cluster) = LocalCluster::open(&self.dir) else {
            return Vec::new();
        };
        let mut logs: Vec<PathBuf> = cluster
            .config()
            .safekeepers
            .iter()
            .map(|sk| cluster.safekeeper_log(sk.id))
            .collect();
        if cluster.config().pageserver.is_some() {
            logs.push(cluster.pageserver_log());
        }
        logs.push(cluster.compute_log());
        logs
    }

    /// Log lines at ERROR level (the daemons' `tracing` text format) containing none
    /// of `expected`.
    pub fn unexpected_errors(&self, expected: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        for log in self.logs() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for line in text.lines() {
                let is_error = line.contains(" ERROR ") || line.starts_with("ERROR");
                if is_error && !expected.iter().any(|e| line.contains(e)) {
                    found.push(format!("{}: {line}", log.display()));
                }
            }
        }
        found
    }

    pub fn assert_no_unexpected_errors(&self, expected: &[&str]) {
        let errors = self.unexpected_errors(expected);
        assert!(
            errors.is_empty(),
            "unexpected errors logged:\n{}",
            errors.join("\n")
        );
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.dir.join(local_cluster::CLUSTER_FILE).exists() {
            let _ = self.strata(&["down"]);
        }
    }
}

/// Whether a process is gone (no `/proc/PID`, or a zombie waiting to be reaped).
pub fn process_gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X'),
    }
}

pub fn kill9(pid: u64) {
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

/// Waits (bounded) until `pid` is gone.
pub fn wait_gone(pid: u64) {
    let deadline = Instant::now() + WAIT;
    while !process_gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} did not exit");
        std::thread::sleep(POLL);
    }
}

/// The result of one `psql` run.
#[derive(Debug)]
pub struct PsqlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `script` with `psql` (stopping at the first error, unaligned tuples only),
/// killing it after [`PSQL_TIMEOUT`].
pub fn psql(bin: &PgBin, connstr: &str, script: &str) -> PsqlOutput {
    use std::io::Write as _;
    let mut command = bin.psql(connstr);
    command
        .args(["-f", "-"])
        .env("PGCONNECT_TIMEOUT", PSQL_CONNECT_TIMEOUT_SECS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn psql");
    let mut stdin = child.stdin.take().unwrap();
    // psql may exit before reading everything (a failed connection): ignore EPIPE.
    let _ = stdin.write_all(script.as_bytes());
    drop(stdin);
    let deadline = Instant::now() + PSQL_TIMEOUT;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    PsqlOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim_end().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `script`, which must succeed; what it printed.
pub fn sql(bin: &PgBin, connstr: &str, script: &str) -> String {
    let out = psql(bin, connstr, script);
    assert!(out.success, "SQL failed: {}\n{script}", out.stderr);
    out.stdout
}

/// The WAL segment files of a safekeeper timeline directory, by segment number, each
/// under its final or `.partial` name, checked to be consecutive.
pub fn wal_segments(timeline_dir: &Path, segment_size: u64) -> Vec<(u64, PathBuf)> {
    let mut names: Vec<String> = std::fs::read_dir(timeline_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() >= 24 && n[..24].bytes().all(|b| b.is_ascii_hexdigit()))
        .filter(|n| n.len() == 24 || n.ends_with(".partial"))
        .collect();
    names.sort();
    let segments: Vec<(u64, PathBuf)> = names
        .iter()
        .map(|n| (segment_number(n, segment_size), timeline_dir.join(n)))
        .collect();
    for pair in segments.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "segments of {} are not consecutive",
            timeline_dir.display()
        );
    }
    segments
}

/// Compares the WAL `[0, end)` of several safekeeper timeline directories byte for
/// byte, segment by segment; the number of bytes compared. Each must hold all of it.
pub fn assert_same_wal(timeline_dirs: &[PathBuf], segment_size: u64, end: Lsn) -> u64 {
    let all: Vec<Vec<(u64, PathBuf)>> = timeline_dirs
        .iter()
        .map(|dir| wal_segments(dir, segment_size))
        .collect();
    let first = all[0][0].0;
    let last = (end.0 - 1) / segment_size;
    let mut compared = 0;
    for segment in first..=last {
        let limit = usize::try_from((end.0 - segment * segment_size).min(segment_size)).unwrap();
        let mut reference: Option<Vec<u8>> = None;
        for (dir, segments) in timeline_dirs.iter().zip(&all) {
            let (_, path) = segments
                .iter()
                .find(|(n, _)| *n == segment)
                .unwrap_or_else(|| panic!("{} lacks segment {segment:X}", dir.display()));
            let mut bytes = std::fs::read(path).unwrap();
            assert!(bytes.len() >= limit, "{} is short", path.display());
            bytes.truncate(limit);
            match &reference {
                None => reference = Some(bytes),
                Some(reference) => {
                    if let Some(at) = bytes.iter().zip(reference).position(|(a, b)| a != b) {
                        panic!(
                            "{} differs from {} at LSN {}",
                            path.display(),
                            timeline_dirs[0].display(),
                            Lsn(segment * segment_size + at as u64)
                        );
                    }
                }
            }
        }
        compared += limit as u64;
    }
    compared
}

/// `TTTTTTTTXXXXXXXXYYYYYYYY` → the segment number: XXXXXXXX segments of 4 GiB of WAL
/// each, plus YYYYYYYY.
fn segment_number(name: &str, segment_size: u64) -> u64 {
    let hi = u64::from_str_radix(&name[8..16], 16).unwrap();
    let lo = u64::from_str_radix(&name[16..24], 16).unwrap();
    hi * (0x1_0000_0000 / segment_size) + lo
}

/// The safekeepers of a cluster, by id.
pub fn safekeeper_ids(cluster: &LocalCluster) -> Vec<NodeId> {
    cluster
        .config()
        .safekeepers
        .iter()
        .map(|sk| sk.id)
        .collect()
}

/// The whole cluster as SQL, for comparing a compute with a copy made from a
/// basebackup. A fixed `\restrict` key: pg_dumpall 15.14 and later pick a random one per
/// run, and two dumps of the same data would differ. Unlogged tables' rows are left
/// out: they are never in WAL, so a basebackup holds them empty (their init fork), as
/// PostgreSQL itself resets them after a crash.
pub fn pg_dumpall(bin: &PgBin, connstr: &str) -> String {
    let out = bin
        .command("pg_dumpall")
        .args([
            "--no-sync",
            "--restrict-key=strata",
            "--no-unlogged-table-data",
            "-d",
            connstr,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dumpall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The pageserver's last_record_lsn as `strata status` reports it.
pub fn pageserver_lsn(cluster: &TestCluster) -> Option<Lsn> {
    cluster.status()["pageserver"]["last_record_lsn"]
        .as_str()
        .map(|s| s.parse().unwrap())
}

/// Waits, at most `limit`, until the pageserver has ingested `lsn`.
pub fn wait_ingested(cluster: &TestCluster, lsn: Lsn, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let ingested = pageserver_lsn(cluster);
        if ingested.is_some_and(|l| l >= lsn) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the pageserver did not ingest {lsn} (it is at {ingested:?})\n{}",
            cluster.logs_tail()
        );
        std::thread::sleep(POLL);
    }
}

/// A dump without its `setval` lines, and those lines' (sequence, value) pairs.
pub fn split_sequences(dump: &str) -> (String, Vec<(String, i64)>) {
    let mut rest = String::new();
    let mut sequences = Vec::new();
    for line in dump.lines() {
        if let Some(args) = line.strip_prefix("SELECT pg_catalog.setval(") {
            let fields: Vec<&str> = args.split(", ").collect();
            sequences.push((fields[0].to_owned(), fields[1].parse().unwrap()));
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    (rest, sequences)
}

/// PostgreSQL WAL-logs a sequence 32 values ahead of what it hands out
/// (`SEQ_LOG_VALS`), so every replay of its WAL — crash recovery, a standby, the
/// pageserver — sees a value up to 32 ahead, never behind: no value handed out is
/// handed out again.
pub fn check_sequences(compute: &[(String, i64)], copy: &[(String, i64)]) {
    assert_eq!(compute.len(), copy.len(), "{compute:?} vs {copy:?}");
    for ((name, handed_out), (copy_name, logged)) in compute.iter().zip(copy) {
        assert_eq!(name, copy_name);
        assert!(
            (*handed_out..=handed_out + 32).contains(logged),
            "sequence {name}: the compute handed out up to {handed_out}, the copy resumes after {logged}"
        );
    }
}

/// Where two dumps first differ, for a failure message.
pub fn first_difference(expected: &str, actual: &str) -> String {
    for (n, (a, b)) in expected.lines().zip(actual.lines()).enumerate() {
        if a != b {
            return format!("line {}:\n  compute: {a}\n  copy:    {b}", n + 1);
        }
    }
    format!(
        "lengths differ: compute {} lines, copy {} lines",
        expected.lines().count(),
        actual.lines().count()
    )
}
