//! `strata bench commit`: what a commit costs through Strata, against the two things a
//! user would otherwise run, measured in one run on the same machine:
//!
//! - (a) stock PostgreSQL 15, no standby;
//! - (b) stock synchronous replication to `pg_receivewal --synchronous` (named in
//!   `synchronous_standby_names`), the cheapest durable-elsewhere setup stock offers;
//! - (c) stock PostgreSQL under `compute_ctl` with 3 safekeepers (`local_cluster`, as
//!   `strata up` runs it).
//!
//! Each round runs `pgbench -n -c C -j J -T D` (TPC-B-like, scale S) once on each, in an
//! order rotated every round (interleaved, so drift of a shared machine hits all three
//! alike), after a `CHECKPOINT`. Latency: pgbench's average, and the 99th percentile of
//! the per-transaction log (`--log`). The table shows medians over the rounds, and the
//! ratios c/a and c/b. All three use data checksums (as `compute_ctl`'s initdb does) and
//! Postgres's default memory settings.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use local_cluster::{Binaries, ClusterSpec, LocalCluster};
use pg_harness::{PgBin, PgConfig, PgServer};

/// The application name (and slot name) of the `pg_receivewal` standby in (b).
const RECEIVER_NAME: &str = "receiver";

/// How long (b)'s `pg_receivewal` may take to connect and become the synchronous
/// standby.
const RECEIVER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between two checks of the standby's state.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Extra time a pgbench run may take beyond its `-T` (connections, the final report)
/// before it is counted as hung.
const PGBENCH_SLACK: Duration = Duration::from_secs(120);

/// `pgbench -i` at scale 100 takes a few minutes through fsyncs on a slow disk.
const PGBENCH_INIT_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, clap::Args)]
pub struct BenchCommitArgs {
    /// Interleaved rounds; each runs every configuration once.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds of each pgbench run (-T).
    #[arg(long, default_value_t = 20)]
    duration_secs: u32,
    /// pgbench clients (-c).
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// pgbench threads (-j).
    #[arg(long, default_value_t = 2)]
    jobs: u32,
    /// pgbench scale factor (-i -s).
    #[arg(long, default_value_t = 10)]
    scale: u32,
    /// Directory for the three clusters and pgbench's logs (default: a new directory
    /// under /tmp, removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// One pgbench run's figures.
#[derive(Debug, Clone, Copy)]
struct RunResult {
    tps: f64,
    latency_avg_ms: f64,
    latency_p99_ms: f64,
}

struct Target {
    label: &'static str,
    connstr: String,
    runs: Vec<RunResult>,
}

pub fn run(args: &BenchCommitArgs) -> anyhow::Result<()> {
    let bin = PgBin::locate()?;
    let tmp;
    let work_dir = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("strata-bench-commit-")
                .tempdir_in("/tmp")
                .context("creating a work directory")?;
            tmp.path().to_owned()
        }
    };
    // Under root, Postgres (the server user) must enter it.
    std::fs::set_permissions(&work_dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", work_dir.display()))?;
    let logs = work_dir.join("pgbench-logs");
    std::fs::create_dir_all(&logs).context("creating the pgbench log directory")?;
    bin.chown_to_server_user(&logs)?;

    eprintln!("setting up (a) stock PostgreSQL");
    let stock = PgServer::start(base_config(&work_dir)).context("starting (a)")?;
    eprintln!("setting up (b) stock PostgreSQL with pg_receivewal --synchronous");
    let (sync, _receiver) = start_sync_replication(&bin, &work_dir).context("starting (b)")?;
    eprintln!("setting up (c) Strata: compute_ctl and 3 safekeepers");
    let cluster = StrataCluster::start(&work_dir.join("strata")).context("starting (c)")?;

    let mut targets = vec![
        Target {
            label: "(a) stock PostgreSQL 15, no standby",
            connstr: stock.connstr(),
            runs: Vec::new(),
        },
        Target {
            label: "(b) stock sync rep, pg_receivewal",
            connstr: sync.connstr(),
            runs: Vec::new(),
        },
        Target {
            label: "(c) Strata, compute_ctl + 3 SKs",
            connstr: cluster.connstr.clone(),
            runs: Vec::new(),
        },
    ];
    for target in &targets {
        eprintln!("pgbench -i -s {} for {}", args.scale, target.label);
        pgbench_init(&bin, &target.connstr, args.scale)?;
    }
    for round in 0..args.rounds {
        for offset in 0..targets.len() {
            let index = (round as usize + offset) % targets.len();
            let target = &mut targets[index];
            psql(&bin, &target.connstr, "CHECKPOINT")?;
            let prefix = logs.join(format!("r{round}-{index}"));
            let result = pgbench_run(&bin, &target.connstr, args, &prefix)
                .with_context(|| format!("pgbench on {}", target.label))?;
            eprintln!(
                "round {round} {}: {:.0} TPS, {:.2} ms average, {:.2} ms p99",
                target.label, result.tps, result.latency_avg_ms, result.latency_p99_ms
            );
            target.runs.push(result);
        }
    }
    print!("{}", report(args, &targets));
    cluster.stop()?;
    drop(stock);
    Ok(())
}

fn base_config(work_dir: &Path) -> PgConfig {
    PgConfig::new()
        .data_checksums(true)
        .parent_dir(work_dir)
        .setting("synchronous_commit", "on")
}

/// A server whose synchronous standby is `pg_receivewal --synchronous`, which flushes
/// each piece of WAL it receives and reports the flush at once; it streams from a
/// physical slot reserved at creation so that it never falls behind removed WAL.
fn start_sync_replication(bin: &PgBin, work_dir: &Path) -> anyhow::Result<(PgServer, ChildGuard)> {
    let server = PgServer::start(
        base_config(work_dir)
            .setting("synchronous_standby_names", RECEIVER_NAME)
            .setting("max_wal_senders", "10")
            .setting("max_replication_slots", "10"),
    )?;
    server.sql(&format!(
        "SELECT pg_create_physical_replication_slot('{RECEIVER_NAME}', true)"
    ))?;
    let wal_dir = server.base_dir().join("received");
    std::fs::create_dir(&wal_dir).context("creating the pg_receivewal directory")?;
    bin.chown_to_server_user(&wal_dir)?;
    let mut command = bin.command("pg_receivewal");
    command
        .arg("-D")
        .arg(&wal_dir)
        .args(["--slot", RECEIVER_NAME, "--synchronous", "--no-loop", "-d"])
        .arg(format!(
            "{}?application_name={RECEIVER_NAME}",
            server.connstr()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let receiver = ChildGuard(command.spawn().context("starting pg_receivewal")?);
    let deadline = Instant::now() + RECEIVER_READY_TIMEOUT;
    loop {
        let state = server.sql(&format!(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = '{RECEIVER_NAME}'"
        ))?;
        if state == "sync" {
            return Ok((server, receiver));
        }
        if Instant::now() >= deadline {
            bail!("pg_receivewal did not become the synchronous standby within {RECEIVER_READY_TIMEOUT:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Kills the child when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A local cluster that is stopped when dropped.
struct StrataCluster {
    cluster: LocalCluster,
    connstr: String,
}

impl StrataCluster {
    fn start(dir: &Path) -> anyhow::Result<StrataCluster> {
        let binaries = Binaries::locate()?;
        let (cluster, _) = LocalCluster::open_or_create(dir, &ClusterSpec::default())?;
        let report = cluster.up(&binaries, &mut |line| eprintln!("strata: {line}"));
        let connstr = match report {
            Ok(report) => report.connstr,
            Err(error) => {
                let _ = cluster.down();
                return Err(error.into());
            }
        };
        Ok(StrataCluster { cluster, connstr })
    }

    fn stop(&self) -> anyhow::Result<()> {
        self.cluster.down()?;
        Ok(())
    }
}

impl Drop for StrataCluster {
    fn drop(&mut self) {
        let _ = self.cluster.down();
    }
}

fn psql(bin: &PgBin, connstr: &str, sql: &str) -> anyhow::Result<String> {
    let mut command = bin.psql(connstr);
    command.args(["-c", sql]);
    let out = run_bounded(command, PGBENCH_SLACK)?;
    Ok(out.trim().to_owned())
}

fn pgbench_init(bin: &PgBin, connstr: &str, scale: u32) -> anyhow::Result<()> {
    let mut command = bin.command("pgbench");
    command.args(["-i", "-q", "-s", &scale.to_string(), connstr]);
    run_bounded(command, PGBENCH_INIT_TIMEOUT)?;
    Ok(())
}

fn pgbench_run(
    bin: &PgBin,
    connstr: &str,
    args: &BenchCommitArgs,
    log_prefix: &Path,
) -> anyhow::Result<RunResult> {
    let mut command = bin.command("pgbench");
    command
        .args([
            "-n",
            "-c",
            &args.clients.to_string(),
            "-j",
            &args.jobs.to_string(),
        ])
        .args(["-T", &args.duration_secs.to_string(), "--log"])
        .arg(format!("--log-prefix={}", log_prefix.display()))
        .arg(connstr);
    let timeout = Duration::from_secs(u64::from(args.duration_secs)) + PGBENCH_SLACK;
    let out = run_bounded(command, timeout)?;
    let number_after = |key: &str| -> anyhow::Result<f64> {
        out.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no {key:?} in pgbench's output:\n{out}"))
    };
    let tps = number_after("tps = ")?;
    let latency_avg_ms = number_after("latency average = ")?;
    let latency_p99_ms = p99_from_logs(log_prefix)?;
    Ok(RunResult {
        tps,
        latency_avg_ms,
        latency_p99_ms,
    })
}

/// The 99th percentile of the per-transaction latencies in pgbench's logs
/// `<prefix>.<pid>[.<thread>]`, whose third field is the latency in microseconds.
fn p99_from_logs(prefix: &Path) -> anyhow::Result<f64> {
    let dir = prefix.parent().context("log prefix has no directory")?;
    let stem = prefix
        .file_name()
        .context("log prefix has no name")?
        .to_string_lossy()
        .into_owned();
    let mut latencies_us: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir).context("listing pgbench logs")? {
        let entry = entry.context("listing pgbench logs")?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{stem}.")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        for line in text.lines() {
            if let Some(latency) = line.split_whitespace().nth(2).and_then(|f| f.parse().ok()) {
                latencies_us.push(latency);
            }
        }
    }
    if latencies_us.is_empty() {
        bail!(
            "pgbench wrote no transaction log under {}",
            prefix.display()
        );
    }
    latencies_us.sort_unstable();
    let index = (latencies_us.len() * 99).div_ceil(100) - 1;
    Ok(latencies_us[index] as f64 / 1000.0)
}

/// Runs a tool to completion within `timeout`; its stdout, or an error quoting stderr.
fn run_bounded(mut command: Command, timeout: Duration) -> anyhow::Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(output) = rx.recv_timeout(timeout) else {
        local_cluster::send_signal(pid, local_cluster::Signal::Kill);
        bail!("{program} did not finish within {timeout:?}");
    };
    let output = output.with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "{program} failed ({}): {}",
            output.status,
            stderr.trim().replace('\n', " | ")
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn report(args: &BenchCommitArgs, targets: &[Target]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nstrata bench commit: pgbench -n -c {} -j {} -T {}, scale {}, {} interleaved rounds; medians",
        args.clients, args.jobs, args.duration_secs, args.scale, args.rounds
    );
    let _ = writeln!(
        out,
        "{:<38} {:>9} {:>8} {:>8}   TPS of each round",
        "configuration", "TPS", "avg ms", "p99 ms"
    );
    let mut medians = Vec::new();
    for target in targets {
        let m = RunResult {
            tps: median(target.runs.iter().map(|r| r.tps)),
            latency_avg_ms: median(target.runs.iter().map(|r| r.latency_avg_ms)),
            latency_p99_ms: median(target.runs.iter().map(|r| r.latency_p99_ms)),
        };
        let each: Vec<String> = target
            .runs
            .iter()
            .map(|r| format!("{:.0}", r.tps))
            .collect();
        let _ = writeln!(
            out,
            "{:<38} {:>9.0} {:>8.2} {:>8.2}   {}",
            target.label,
            m.tps,
            m.latency_avg_ms,
            m.latency_p99_ms,
            each.join(" ")
        );
        medians.push(m);
    }
    if let [a, b, c] = medians[..] {
        for (name, base) in [("c/a", a), ("c/b", b)] {
            let _ = writeln!(
                out,
                "{name}: TPS {:.2}, average latency {:.2}, p99 latency {:.2}",
                c.tps / base.tps,
                c.latency_avg_ms / base.latency_avg_ms,
                c.latency_p99_ms / base.latency_p99_ms
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_of_pgbench_logs() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("r0-1");
        // client_id transaction_no time script_no time_epoch time_us
        let mut text = String::new();
        for i in 1..=100 {
            let _ = writeln!(text, "0 {i} {} 0 1700000000 {i}", i * 1000);
        }
        std::fs::write(dir.path().join("r0-1.123"), &text).unwrap();
        std::fs::write(dir.path().join("r0-1.123.1"), "1 1 500000 0 1700000000 1\n").unwrap();
        std::fs::write(dir.path().join("r0-10.5"), "1 1 900000000 0 1 1\n").unwrap();
        // 101 samples: the 100th smallest is the 99th percentile.
        assert_eq!(p99_from_logs(&prefix).unwrap(), 100.0);
        assert!(p99_from_logs(&dir.path().join("none")).is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
    }
}
