//! What the cluster benchmarks share: a `strata up` cluster in a temporary directory,
//! PostgreSQL client helpers, waits and percentiles. Each benchmark uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use pg_harness::PgBin;
use postgres_wal::Lsn;
use serde_json::Value;

pub fn env_u32(name: &str, default: u32) -> anyhow::Result<u32> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

/// `target/release/`, where `cargo build --release --bins` put `binaries`.
pub fn bin_dir(binaries: &[&str]) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("bench executable path")?;
    for name in binaries {
        ensure!(
            dir.join(name).exists(),
            "{} is missing: run `cargo build --release --bins` first",
            dir.join(name).display()
        );
    }
    Ok(dir.to_owned())
}

/// A temporary directory under `/tmp` that PostgreSQL's server user, which runs the
/// servers and `pg_basebackup` when the benchmark runs as root, can enter and write.
pub fn server_reachable_tempdir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let tmp = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp")?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    Ok(tmp)
}

/// A `strata up` cluster in its own temporary directory, taken down when dropped.
pub struct Cluster {
    pub strata: PathBuf,
    pub dir: PathBuf,
    /// Set for every `strata` command (and so for the daemons it starts).
    pub env: Vec<(String, String)>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    pub fn new(strata: PathBuf, env: Vec<(String, String)>) -> anyhow::Result<Cluster> {
        let tmp = server_reachable_tempdir("strata-bench-")?;
        Ok(Cluster {
            strata,
            dir: tmp.path().join("cluster"),
            env,
            _tmp: tmp,
        })
    }

    pub fn strata(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.strata)
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            out.status.success(),
            "strata {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `strata up`; returns the compute's connection string.
    pub fn up(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["up"];
        all.extend_from_slice(args);
        Ok(self
            .strata(&all)?
            .lines()
            .last()
            .context("strata up printed no connection string")?
            .to_owned())
    }

    pub fn status(&self) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&self.strata(&["status", "--json"])?)?)
    }

    /// An LSN of the pageserver's status (`last_record_lsn`, `remote_consistent_lsn`).
    pub fn pageserver_lsn(&self, field: &str) -> anyhow::Result<Option<Lsn>> {
        let status = self.status()?;
        Ok(status["pageserver"][field]
            .as_str()
            .map(str::parse)
            .transpose()?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.strata)
            .args(["down", "--dir"])
            .arg(&self.dir)
            .output();
    }
}

pub fn sql(bin: &PgBin, connstr: &str, script: &str) -> anyhow::Result<String> {
    let out = bin.psql(connstr).args(["-c", script]).output()?;
    ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// `pgbench_accounts` of database `postgres`: its database oid, relfilenode and size
/// in blocks.
pub fn pgbench_accounts(bin: &PgBin, connstr: &str) -> anyhow::Result<(u32, u32, u32)> {
    let rel = sql(
        bin,
        connstr,
        "SELECT d.oid || '/' || pg_relation_filenode('pgbench_accounts') || '/' || \
         pg_relation_size('pgbench_accounts') / 8192 FROM pg_database d WHERE datname = 'postgres'",
    )?;
    let parts: Vec<u32> = rel.split('/').map(str::parse).collect::<Result<_, _>>()?;
    match parts[..] {
        [db, relnode, blocks] => Ok((db, relnode, blocks)),
        _ => bail!("unexpected answer for pgbench_accounts: {rel}"),
    }
}

pub fn pgbench(bin: &PgBin, connstr: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = bin.command("pgbench").args(args).arg(connstr).output()?;
    ensure!(
        out.status.success(),
        "pgbench {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

pub fn lsn_of(bin: &PgBin, connstr: &str, expr: &str) -> anyhow::Result<Lsn> {
    sql(bin, connstr, &format!("SELECT {expr}"))?
        .parse()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Polls `done` until it holds, for at most `limit`; returns how long it took.
pub fn wait_until(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !done()? {
        if started.elapsed() > limit {
            bail!("{what} did not happen within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(started.elapsed())
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A benchmark's exit: failure only when a tool failed, said on one line.
pub fn exit_code(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
