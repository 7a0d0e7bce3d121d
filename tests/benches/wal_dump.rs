//! Benchmark: how fast `strata wal dump` decodes WAL compared with `pg_waldump`.
//!
//! Run it with `scripts/bench.sh` (or `cargo build --release --bins` followed by
//! `cargo bench -p strata_integration_tests --bench wal_dump`). It starts a real
//! PostgreSQL 15 through pg_harness, writes WAL with pgbench, stops the server, and then
//! times, alternately and several times each, over exactly the same segment files:
//!
//! - `pg_waldump FIRST LAST > /dev/null`
//! - `strata wal dump SEGMENTS... > /dev/null`
//! - `strata wal dump --json SEGMENTS... > /dev/null`
//!
//! It prints a table of median wall times, throughput and the ratio of Strata's throughput
//! to pg_waldump's (above 1 means Strata is faster). It never asserts anything about
//! timings; it fails only if a tool fails or the tools disagree on the number of records.
//!
//! Environment (defaults in brackets):
//!
//! - `STRATA_BENCH_SCALE` [10]: `pgbench -i -s`
//! - `STRATA_BENCH_CLIENTS` [4], `STRATA_BENCH_JOBS` [2]: `pgbench -c`, `-j`
//! - `STRATA_BENCH_TRANSACTIONS` [5000]: `pgbench -t` (transactions per client)
//! - `STRATA_BENCH_ROUNDS` [5]: timed runs of each tool
//! - `STRATA_BENCH_COMPRESSION` [off,lz4]: comma-separated `wal_compression` values, one
//!   workload (and one table) for each
//! - `STRATA_BENCH_KEEP_WAL` [unset]: a directory to copy the measured segment files into
//!   (one subdirectory per `wal_compression` value), e.g. for profiling afterwards

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context};
use pg_harness::{PgConfig, PgServer, SUPERUSER};

/// One decimal megabyte, the unit of the MB/s column.
const MB: f64 = 1_000_000.0;

/// Linux reports CPU times in `/proc` in units of `USER_HZ`, 100 on every mainstream
/// architecture; `getconf CLK_TCK` is asked first.
const DEFAULT_CLOCK_TICKS: u64 = 100;

/// How the benchmark is configured (see the module documentation).
#[derive(Debug)]
struct Settings {
    scale: u32,
    clients: u32,
    jobs: u32,
    transactions: u32,
    rounds: usize,
    compressions: Vec<String>,
    keep_wal: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let compressions: Vec<String> = env_or("STRATA_BENCH_COMPRESSION", "off,lz4".to_string())?
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        ensure!(
            !compressions.is_empty(),
            "STRATA_BENCH_COMPRESSION names no wal_compression value"
        );
        let settings = Settings {
            scale: env_or("STRATA_BENCH_SCALE", 10)?,
            clients: env_or("STRATA_BENCH_CLIENTS", 4)?,
            jobs: env_or("STRATA_BENCH_JOBS", 2)?,
            transactions: env_or("STRATA_BENCH_TRANSACTIONS", 5000)?,
            rounds: env_or("STRATA_BENCH_ROUNDS", 5)?,
            compressions,
            keep_wal: std::env::var_os("STRATA_BENCH_KEEP_WAL")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        };
        ensure!(settings.scale > 0, "STRATA_BENCH_SCALE must be at least 1");
        ensure!(
            settings.rounds > 0,
            "STRATA_BENCH_ROUNDS must be at least 1"
        );
        ensure!(
            settings.clients > 0 && settings.jobs > 0,
            "STRATA_BENCH_CLIENTS and STRATA_BENCH_JOBS must be at least 1"
        );
        Ok(settings)
    }
}

/// The value of environment variable `name` parsed, or `default` if it is unset or empty.
fn env_or<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={value:?} is not valid: {e}")),
        _ => Ok(default),
    }
}

/// The release `strata` binary beside this bench: the bench executable is
/// `target/release/deps/wal_dump-HASH`, the binary `target/release/strata`.
fn strata_release_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("path of the bench executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} has no grandparent directory", exe.display()))?;
    let bin = profile_dir.join("strata");
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo build --release --bins` first (scripts/bench.sh does both)",
            bin.display()
        );
    }
    warn_if_stale(&bin);
    Ok(bin)
}

/// Warns (without failing) when a source file of the decoder is newer than the binary, which
/// means the numbers would describe old code.
fn warn_if_stale(bin: &Path) {
    let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let newest = ["crates/strata/src", "crates/postgres_wal/src"]
        .iter()
        .filter_map(|dir| newest_mtime(&workspace.join(dir)))
        .max();
    if newest.is_some_and(|newest| newest > built) {
        eprintln!(
            "warning: {} is older than the strata/postgres_wal sources: \
             run `cargo build --release --bins` (or scripts/bench.sh) to measure current code",
            bin.display()
        );
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let mtime = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(mtime);
    }
    newest
}

/// WAL written by one workload, in a stopped server's `pg_wal`.
#[derive(Debug)]
struct Wal {
    /// Kept so the data directory (and the WAL in it) lives until the measurements end.
    server: PgServer,
    segments: Vec<PathBuf>,
    segment_size: u64,
    /// LSN of the first byte of the first segment.
    start_lsn: u64,
    /// LSN just past the `XLOG SWITCH` record that ends the last segment measured.
    end_lsn: u64,
    setup_time: Duration,
}

/// Starts PostgreSQL with `wal_compression = compression`, runs pgbench, closes the WAL
/// segment, and stops the server. The segments measured run from the first in `pg_wal` to
/// the one the switch closed, so both tools end cleanly at a segment boundary; the shutdown
/// checkpoint lands in the next segment, which is left out.
fn generate_wal(settings: &Settings, compression: &str) -> anyhow::Result<Wal> {
    let started = Instant::now();
    let config = PgConfig::new()
        .data_checksums(true)
        .setting("wal_keep_size", "4GB")
        .setting("max_wal_size", "4GB")
        .setting("checkpoint_timeout", "1h")
        .setting("wal_compression", compression)
        // Only makes generation faster; the WAL records written are the same.
        .setting("synchronous_commit", "off");
    let mut server = PgServer::start(config).context("start PostgreSQL 15")?;

    pgbench(
        &server,
        &["-i", "-q", "-s", &settings.scale.to_string()],
        "initialize",
    )?;
    pgbench(
        &server,
        &[
            "-n",
            "-c",
            &settings.clients.to_string(),
            "-j",
            &settings.jobs.to_string(),
            "-t",
            &settings.transactions.to_string(),
        ],
        "run",
    )?;

    let row = server
        .sql("SELECT lsn, pg_walfile_name(lsn) FROM pg_switch_wal() AS lsn")
        .context("switch WAL segment")?;
    let (end_lsn, last_name) = row
        .split_once('|')
        .with_context(|| format!("unexpected pg_switch_wal() row {row:?}"))?;
    let end_lsn = pg_harness::parse_lsn(end_lsn)?;
    let segments: Vec<PathBuf> = server
        .wal_segments()?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().as_ref() <= last_name)
        })
        .collect();
    server.stop().context("stop PostgreSQL")?;

    let first = segments
        .first()
        .with_context(|| format!("no WAL segments in {}", server.wal_dir().display()))?;
    ensure!(
        segments
            .last()
            .is_some_and(|p| p.ends_with(last_name.trim())),
        "segment {last_name} that pg_switch_wal() closed is not in {}",
        server.wal_dir().display()
    );
    let segment_size = fs::metadata(first)
        .with_context(|| format!("stat {}", first.display()))?
        .len();
    let start_lsn = segment_start_lsn(first, segment_size)?;
    Ok(Wal {
        server,
        segments,
        segment_size,
        start_lsn,
        end_lsn,
        setup_time: started.elapsed(),
    })
}

/// The LSN where a segment file starts, from its name (`TTTTTTTTXXXXXXXXYYYYYYYY`).
fn segment_start_lsn(path: &Path, segment_size: u64) -> anyhow::Result<u64> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hex = |range: std::ops::Range<usize>| {
        name.get(range)
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .with_context(|| format!("{name:?} is not a WAL segment file name"))
    };
    ensure!(
        segment_size.is_power_of_two() && segment_size <= 1 << 30,
        "{}: odd segment size {segment_size}",
        path.display()
    );
    let segments_per_id = (1u64 << 32) / segment_size;
    Ok((hex(8..16)? * segments_per_id + hex(16..24)?) * segment_size)
}

/// Runs `pgbench ARGS -h SOCKET -p PORT -U postgres postgres` as the server's OS user.
fn pgbench(server: &PgServer, args: &[&str], what: &str) -> anyhow::Result<()> {
    let mut cmd = server.bin().command("pgbench");
    cmd.current_dir(server.base_dir())
        .args(args)
        .arg("-h")
        .arg(server.socket_dir())
        .arg("-p")
        .arg(server.port().to_string())
        .args(["-U", SUPERUSER, "postgres"])
        .stdin(Stdio::null());
    let started = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("spawn pgbench ({what})"))?;
    if !out.status.success() {
        bail!(
            "pgbench {} ({what}) failed with {}:\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "  pgbench {} ({what}): {:.1} s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One of the decoders being compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    PgWaldump,
    StrataText,
    StrataJson,
}

impl Tool {
    const ALL: [Tool; 3] = [Tool::PgWaldump, Tool::StrataText, Tool::StrataJson];

    fn label(self) -> &'static str {
        match self {
            Tool::PgWaldump => "pg_waldump",
            Tool::StrataText => "strata wal dump",
            Tool::StrataJson => "strata wal dump --json",
        }
    }

    fn command(self, pg_waldump: &Path, strata: &Path, wal: &Wal) -> Command {
        let mut cmd;
        match self {
            Tool::PgWaldump => {
                cmd = Command::new(pg_waldump);
                cmd.arg(&wal.segments[0])
                    .arg(&wal.segments[wal.segments.len() - 1]);
            }
            Tool::StrataText | Tool::StrataJson => {
                cmd = Command::new(strata);
                cmd.args(["wal", "dump"]);
                if self == Tool::StrataJson {
                    cmd.arg("--json");
                }
                cmd.args(&wal.segments);
            }
        }
        cmd.env("LC_ALL", "C").stdin(Stdio::null());
        cmd
    }
}

/// Runs `cmd` once, untimed, and counts the lines it prints (one per record for every tool).
fn count_lines(mut cmd: Command) -> anyhow::Result<u64> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let mut stderr = child.stderr.take().context("stderr pipe")?;
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = child.stdout.take().context("stdout pipe")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = stdout.read(&mut buf).context("read output")?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let status = child.wait().context("wait")?;
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed with {status}:\n{stderr}");
    }
    Ok(lines)
}

/// One timed run of a tool with its output going to /dev/null.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    /// User plus system CPU time of the child, if `/proc/self/stat` could be read.
    cpu: Option<Duration>,
}

fn time_run(mut cmd: Command, clock_ticks: u64) -> anyhow::Result<Sample> {
    let null = || File::create("/dev/null").context("open /dev/null");
    cmd.stdout(null()?).stderr(null()?);
    let cpu_before = children_cpu_ticks();
    let started = Instant::now();
    let status: ExitStatus = cmd
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?
        .wait()
        .context("wait")?;
    let wall = started.elapsed();
    let cpu_after = children_cpu_ticks();
    ensure!(status.success(), "{cmd:?} failed with {status}");
    let cpu = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => Some(Duration::from_secs_f64(
            after.saturating_sub(before) as f64 / clock_ticks as f64,
        )),
        _ => None,
    };
    Ok(Sample { wall, cpu })
}

/// User plus system CPU time, in clock ticks, of this process's children that have been
/// waited for (`cutime` + `cstime`, fields 16 and 17 of `/proc/self/stat`).
fn children_cpu_ticks() -> Option<u64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field N is at index N - 3.
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(DEFAULT_CLOCK_TICKS)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Copies the measured segments into `dir` (for profiling after the server is gone).
fn keep_wal(wal: &Wal, dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for segment in &wal.segments {
        let name = segment.file_name().context("segment file name")?;
        fs::copy(segment, dir.join(name))
            .with_context(|| format!("copy {} to {}", segment.display(), dir.display()))?;
    }
    eprintln!(
        "  kept {} segments in {}",
        wal.segments.len(),
        dir.display()
    );
    Ok(())
}

/// Generates the WAL for one `wal_compression` value, measures the tools, prints the table.
fn bench_one(
    settings: &Settings,
    compression: &str,
    strata: &Path,
    clock_ticks: u64,
) -> anyhow::Result<()> {
    eprintln!("wal_compression={compression}: generating WAL");
    let wal = generate_wal(settings, compression)?;
    if let Some(dir) = &settings.keep_wal {
        keep_wal(&wal, &dir.join(compression))?;
    }
    let pg_waldump = wal.server.bin().path("pg_waldump");

    // Untimed runs: count records (and warm the page cache for everyone).
    let mut counts = Vec::new();
    for tool in Tool::ALL {
        let lines = count_lines(tool.command(&pg_waldump, strata, &wal))
            .with_context(|| format!("count the records {} prints", tool.label()))?;
        counts.push((tool, lines));
    }
    let records = counts[0].1;
    if counts.iter().any(|&(_, n)| n != records) {
        let list: Vec<String> = counts
            .iter()
            .map(|(tool, n)| format!("{}: {n}", tool.label()))
            .collect();
        bail!(
            "the tools decode different numbers of records over the same WAL ({}), \
             so their times are not comparable",
            list.join(", ")
        );
    }

    let mut samples: Vec<(Tool, Vec<Sample>)> = Tool::ALL.iter().map(|&t| (t, vec![])).collect();
    for round in 1..=settings.rounds {
        for (tool, runs) in &mut samples {
            runs.push(time_run(
                tool.command(&pg_waldump, strata, &wal),
                clock_ticks,
            )?);
        }
        eprintln!("  round {round}/{} done", settings.rounds);
    }

    let wal_bytes = wal.end_lsn - wal.start_lsn;
    let file_bytes = wal.segment_size * wal.segments.len() as u64;
    println!();
    println!("== wal_compression = {compression} ==");
    println!(
        "WAL: {} segments of {} MiB ({} .. {}), {file_bytes} bytes in files, \
         {wal_bytes} bytes of WAL ({:.1} MB) from {} to {}",
        wal.segments.len(),
        wal.segment_size >> 20,
        wal.segments[0]
            .file_name()
            .unwrap_or_default()
            .to_string_lossy(),
        wal.segments[wal.segments.len() - 1]
            .file_name()
            .unwrap_or_default()
            .to_string_lossy(),
        wal_bytes as f64 / MB,
        lsn_text(wal.start_lsn),
        lsn_text(wal.end_lsn),
    );
    println!(
        "records: {records} (each tool printed this many lines); \
         setup (initdb + pgbench + stop) took {:.1} s",
        wal.setup_time.as_secs_f64()
    );
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9}",
        "tool", "median s", "min s", "cpu s", "MB/s", "records/s", "vs pg_wd"
    );
    let mut baseline = None;
    for (tool, runs) in &samples {
        let wall = median(runs.iter().map(|s| s.wall.as_secs_f64()).collect());
        let min = runs
            .iter()
            .map(|s| s.wall.as_secs_f64())
            .fold(f64::INFINITY, f64::min);
        let cpu = runs
            .iter()
            .map(|s| s.cpu.map(|c| c.as_secs_f64()))
            .collect::<Option<Vec<f64>>>()
            .map(median);
        let throughput = wal_bytes as f64 / wall;
        let baseline = *baseline.get_or_insert(throughput);
        println!(
            "{:<24} {:>9.3} {:>9.3} {:>9} {:>9.1} {:>12.0} {:>8.2}x",
            tool.label(),
            wall,
            min,
            cpu.map_or_else(|| "-".to_string(), |c| format!("{c:.2}")),
            throughput / MB,
            records as f64 / wall,
            throughput / baseline,
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (and any filter); this bench has nothing to filter.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wal_dump bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let strata = strata_release_bin()?;
    let pg = pg_harness::PgBin::locate().context("locate PostgreSQL 15")?;
    let pg_waldump_version = first_line(Command::new(pg.path("pg_waldump")).arg("--version"));
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let clock_ticks = clock_ticks_per_second();

    println!("strata wal dump vs pg_waldump: decode throughput");
    println!(
        "machine: {cores} cores ({}); {}; {pg_waldump_version}",
        first_line(Command::new("uname").args(["-srm"])),
        pg.version()
    );
    println!("strata: {}", strata.display());
    println!(
        "workload: data checksums on; pgbench -i -s {}, then pgbench -n -c {} -j {} -t {}; \
         {} timed rounds per tool, run alternately, output to /dev/null",
        settings.scale, settings.clients, settings.jobs, settings.transactions, settings.rounds
    );
    println!(
        "vs pg_wd = tool throughput / pg_waldump throughput (text mode); above 1 means faster \
         than pg_waldump. MB = 10^6 bytes of WAL (LSN range)."
    );

    for compression in &settings.compressions {
        bench_one(&settings, compression, &strata, clock_ticks)
            .with_context(|| format!("benchmark with wal_compression={compression}"))?;
    }
    Ok(())
}
