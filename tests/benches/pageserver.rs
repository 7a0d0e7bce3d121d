//! Benchmark: the pageserver against stock PostgreSQL doing the same job, in one run on
//! one machine. Run it with `scripts/bench-pageserver.sh` (release binaries, then
//! `cargo bench -p strata_integration_tests --bench pageserver`). It starts a local
//! cluster (`strata up`: three safekeepers, the pageserver, a stock PostgreSQL compute)
//! in a temporary directory and prints:
//!
//! 1. **WAL volume**: WAL bytes of pgbench and of the pageserver tests' varied workload
//!    (`tests/sql/pageserver_workload.sql`) on the compute (which runs with
//!    `wal_consistency_checking` for every resource manager the pageserver does not redo
//!    natively, and lz4 `wal_compression`) against a stock PostgreSQL with default
//!    settings (data checksums on, as on the compute).
//! 2. **Ingest**: the pageserver is stopped while pgbench writes WAL, then started; the
//!    time until it has ingested all of it, against a stock standby (started from a
//!    standby basebackup before the workload, stopped meanwhile) replaying the same WAL
//!    from a safekeeper until it reaches the same LSN.
//! 3. **GetPage**: one page per request over one gRPC stream, at the latest LSN and at
//!    the LSN before the workload: p50, p99, pages per second; and 32 pages per request.
//! 4. **Basebackup**: `strata basebackup` against `pg_basebackup` from the compute, MB/s
//!    of the data directory produced.
//!
//! Timings are never asserted; it fails only when a tool fails.
//!
//! Environment: `STRATA_BENCH_SCALE` [10] (`pgbench -i -s`), `STRATA_BENCH_TRANSACTIONS`
//! [2000] (`pgbench -t`, per client, 4 clients), `STRATA_BENCH_GETPAGES` [2000].

mod bench_support;

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use bench_support::{bin_dir, env_u32, lsn_of, percentile, pgbench, sql, wait_until, Cluster};
use pg_harness::{PgBin, PgConfig, PgServer};
use postgres_wal::Lsn;
use strata_proto::pageserver::pageserver_client::PageserverClient;
use strata_proto::pageserver::{GetPagesRequest, RelTag};

const MB: f64 = 1_000_000.0;
const CLIENTS: u32 = 4;
/// Longest wait for ingest or replay to reach an LSN.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(1800);
const BATCH: u32 = 32;

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                total += dir_bytes(&entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

fn main() -> ExitCode {
    bench_support::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    let scale = env_u32("STRATA_BENCH_SCALE", 10)?.to_string();
    let transactions = env_u32("STRATA_BENCH_TRANSACTIONS", 2000)?.to_string();
    let getpages = env_u32("STRATA_BENCH_GETPAGES", 2000)?;
    let bin = PgBin::locate()?;
    let clients = CLIENTS.to_string();
    let run_args = ["-n", "-c", &clients, "-j", "2", "-t", &transactions];

    // 1. WAL volume of stock PostgreSQL for the same workloads.
    let stock = PgServer::start(
        PgConfig::new()
            .data_checksums(true)
            .setting("max_prepared_transactions", "10"),
    )?;
    let stock_varied = varied_workload_wal(&bin, &stock.connstr())?;
    pgbench(&bin, &stock.connstr(), &["-i", "-q", "-s", &scale])?;
    // Measured from a checkpoint, as in ../shared/research/stock-postgres-baselines.md:
    // the first change of each page after it carries a full-page image.
    sql(&bin, &stock.connstr(), "CHECKPOINT")?;
    let before = lsn_of(&bin, &stock.connstr(), "pg_current_wal_insert_lsn()")?;
    pgbench(&bin, &stock.connstr(), &run_args)?;
    let after = lsn_of(&bin, &stock.connstr(), "pg_current_wal_insert_lsn()")?;
    let stock_wal = after.0 - before.0;
    drop(stock);

    let cluster = Cluster::new(bin_dir(&["strata"])?.join("strata"), Vec::new())?;
    let connstr = cluster.up(&[])?;
    let strata_varied = varied_workload_wal(&bin, &connstr)?;
    pgbench(&bin, &connstr, &["-i", "-q", "-s", &scale])?;
    sql(&bin, &connstr, "CHECKPOINT")?;
    let start = lsn_of(&bin, &connstr, "pg_current_wal_flush_lsn()")?;
    wait_until(CATCH_UP_LIMIT, "initial ingest", || {
        Ok(cluster
            .pageserver_lsn("last_record_lsn")?
            .is_some_and(|l| l >= start))
    })?;

    // A stock standby that will replay the workload's WAL, stopped meanwhile.
    let status = cluster.status()?;
    let sk_port = status["safekeepers"][0]["pg_port"]
        .as_u64()
        .context("safekeeper pg_port")?;
    let conninfo = format!("host=127.0.0.1 port={sk_port} user=postgres application_name=bench");
    let strata = cluster.strata.clone();
    let cluster_dir = cluster.dir.clone();
    let start_str = start.to_string();
    let mut standby = PgServer::start_from(
        PgConfig::new()
            .setting("primary_conninfo", conninfo.as_str())
            .setting("max_prepared_transactions", "10")
            .setting("max_wal_senders", "10"),
        |dir| {
            std::fs::remove_dir(dir)?;
            let out = Command::new(&strata)
                .args(["basebackup", "--standby", "--lsn", &start_str, "--out"])
                .arg(dir)
                .arg("--dir")
                .arg(&cluster_dir)
                .output()?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
            }
            std::fs::write(dir.join("standby.signal"), "")?;
            Ok(())
        },
    )?;
    let standby_connstr = standby.connstr();
    wait_until(CATCH_UP_LIMIT, "standby reaching the start", || {
        Ok(lsn_of(&bin, &standby_connstr, "pg_last_wal_replay_lsn()").is_ok_and(|l| l >= start))
    })?;
    standby.stop()?;

    // 2. Ingest: the pageserver stopped while pgbench writes.
    let pid = status["pageserver"]["pid"]
        .as_u64()
        .context("pageserver pid")?;
    Command::new("kill").arg(pid.to_string()).status()?;
    wait_until(CATCH_UP_LIMIT, "pageserver stopping", || {
        Ok(!Path::new(&format!("/proc/{pid}")).exists())
    })?;
    pgbench(&bin, &connstr, &run_args)?;
    let end = lsn_of(&bin, &connstr, "pg_current_wal_flush_lsn()")?;
    let strata_wal = end.0 - start.0;
    let t = Instant::now();
    cluster.strata(&["up"])?;
    wait_until(CATCH_UP_LIMIT, "pageserver ingest", || {
        Ok(cluster
            .pageserver_lsn("last_record_lsn")?
            .is_some_and(|l| l >= end))
    })?;
    let ingest = t.elapsed();
    standby.restart()?;
    let standby_connstr = standby.connstr();
    let replay = wait_until(CATCH_UP_LIMIT, "standby replay", || {
        Ok(lsn_of(&bin, &standby_connstr, "pg_last_wal_replay_lsn()").is_ok_and(|l| l >= end))
    })?;
    drop(standby);

    println!("WAL volume of tests/sql/pageserver_workload.sql (every built-in rmgr):");
    println!(
        "  stock PostgreSQL {:.1} MB, Strata compute {:.1} MB: {:.2}x",
        stock_varied as f64 / MB,
        strata_varied as f64 / MB,
        strata_varied as f64 / stock_varied as f64
    );
    println!("WAL volume, {CLIENTS} x {transactions} pgbench transactions (scale {scale}):");
    println!(
        "  stock PostgreSQL {:.1} MB, Strata compute {:.1} MB: {:.2}x",
        stock_wal as f64 / MB,
        strata_wal as f64 / MB,
        strata_wal as f64 / stock_wal as f64
    );
    let mbps = |bytes: u64, d: Duration| bytes as f64 / MB / d.as_secs_f64();
    println!(
        "WAL ingest of {:.1} MB from the safekeepers:",
        strata_wal as f64 / MB
    );
    println!(
        "  pageserver {:.2} s ({:.1} MB/s, includes its start), stock standby replay {:.2} s ({:.1} MB/s): ratio {:.2}",
        ingest.as_secs_f64(),
        mbps(strata_wal, ingest),
        replay.as_secs_f64(),
        mbps(strata_wal, replay),
        replay.as_secs_f64() / ingest.as_secs_f64()
    );

    // 3. GetPage latency.
    let status = cluster.status()?;
    let grpc_port = status["pageserver"]["grpc_port"]
        .as_u64()
        .context("pageserver grpc_port")?;
    let tenant = status["tenant_id"].as_str().context("tenant")?.to_owned();
    let timeline = status["timeline_id"]
        .as_str()
        .context("timeline")?
        .to_owned();
    let (db, relnode, blocks) = bench_support::pgbench_accounts(&bin, &connstr)?;
    let runtime = tokio::runtime::Runtime::new()?;
    println!("GetPage, pgbench_accounts ({blocks} blocks), {getpages} requests each:");
    for (label, lsn) in [("latest LSN", end), ("LSN before the workload", start)] {
        for batch in [1, BATCH] {
            let (lat, elapsed) = runtime.block_on(getpage_run(
                grpc_port, &tenant, &timeline, db, relnode, blocks, lsn, getpages, batch,
            ))?;
            let mut sorted = lat.clone();
            sorted.sort();
            println!(
                "  {label}, {batch} page(s)/request: p50 {:.3} ms, p99 {:.3} ms, {:.0} pages/s",
                percentile(&sorted, 0.5).as_secs_f64() * 1e3,
                percentile(&sorted, 0.99).as_secs_f64() * 1e3,
                f64::from(getpages * batch) / elapsed.as_secs_f64()
            );
        }
    }

    // 4. Basebackup against pg_basebackup.
    let out_dir = bench_support::server_reachable_tempdir("strata-bb-")?;
    let t = Instant::now();
    let ours = out_dir.path().join("strata");
    cluster.strata(&["basebackup", "--out", ours.to_str().context("path")?])?;
    let ours_time = t.elapsed();
    let ours_bytes = dir_bytes(&ours);
    let theirs = out_dir.path().join("pg");
    std::fs::create_dir(&theirs)?;
    bin.chown_to_server_user(&theirs)?;
    let t = Instant::now();
    let out = bin
        .command("pg_basebackup")
        .args([
            "-d",
            &connstr,
            "-X",
            "none",
            "-c",
            "fast",
            "--no-sync",
            "-D",
        ])
        .arg(&theirs)
        .output()?;
    ensure!(
        out.status.success(),
        "pg_basebackup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs_time = t.elapsed();
    let theirs_bytes = dir_bytes(&theirs);
    println!("Basebackup:");
    println!(
        "  strata basebackup {:.1} MB in {:.2} s ({:.1} MB/s), pg_basebackup {:.1} MB in {:.2} s ({:.1} MB/s): ratio {:.2}",
        ours_bytes as f64 / MB,
        ours_time.as_secs_f64(),
        mbps(ours_bytes, ours_time),
        theirs_bytes as f64 / MB,
        theirs_time.as_secs_f64(),
        mbps(theirs_bytes, theirs_time),
        mbps(ours_bytes, ours_time) / mbps(theirs_bytes, theirs_time)
    );
    Ok(())
}

/// WAL bytes the pageserver tests' varied workload writes on the server at `connstr`.
fn varied_workload_wal(bin: &PgBin, connstr: &str) -> anyhow::Result<u64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/pageserver_workload.sql");
    let before = lsn_of(bin, connstr, "pg_current_wal_insert_lsn()")?;
    let out = bin.psql(connstr).arg("-f").arg(&path).output()?;
    ensure!(
        out.status.success(),
        "workload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = lsn_of(bin, connstr, "pg_current_wal_insert_lsn()")?;
    Ok(after.0 - before.0)
}

#[allow(clippy::too_many_arguments)]
async fn getpage_run(
    port: u64,
    tenant: &str,
    timeline: &str,
    db: u32,
    relnode: u32,
    blocks: u32,
    lsn: Lsn,
    requests: u32,
    batch: u32,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let mut client = PageserverClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut responses = client
        .get_pages(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut latencies = Vec::with_capacity(requests as usize);
    let started = Instant::now();
    // A fixed stride over the relation, so that requests do not hit one layer block.
    let mut blk = 0u32;
    for i in 0..requests {
        let block_numbers: Vec<u32> = (0..batch)
            .map(|_| {
                blk = (blk + 7919) % blocks.max(1);
                blk
            })
            .collect();
        let request = GetPagesRequest {
            tenant_id: tenant.to_owned(),
            timeline_id: timeline.to_owned(),
            request_id: u64::from(i),
            lsn: lsn.0,
            rel: Some(RelTag {
                spc_oid: 1663,
                db_oid: db,
                rel_number: relnode,
                fork: 0,
            }),
            block_numbers,
        };
        let t = Instant::now();
        tx.send(request).await?;
        let response = responses.message().await?.context("stream ended")?;
        ensure!(
            response.status_code == 0,
            "GetPages: {}",
            response.status_message
        );
        ensure!(response.pages.len() == batch as usize, "short response");
        latencies.push(t.elapsed());
    }
    Ok((latencies, started.elapsed()))
}
