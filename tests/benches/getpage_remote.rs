//! Benchmark: GetPage latency when the page's layer files must first be downloaded from
//! object storage, against the same pages once their layers are local, in one run. Run
//! it with `scripts/bench-pageserver.sh --bench getpage_remote` (release binaries).
//!
//! A `strata up` cluster tiers to a real S3-compatible server (`strata-s3-server` on
//! loopback). After `pgbench -i`, once `remote_consistent_lsn` has passed the end of
//! the load, the cluster is stopped. Then, for each round, the pageserver alone is
//! started on an empty data directory (it restores the timeline from the newest index
//! and fetches layers on read) and asked for one block of `pgbench_accounts`:
//!
//! - **cold**: that first request, which downloads every layer the page needs;
//! - **local**: the same block asked again, `LOCAL_READS` times.
//!
//! The rounds' blocks are spread over the relation. Layers downloaded and their bytes
//! are printed with the latencies. Timings are never asserted; it fails only when a
//! tool fails.
//!
//! Environment: `STRATA_BENCH_SCALE` [5] (`pgbench -i -s`), `STRATA_BENCH_GETPAGE_ROUNDS` [10].

mod bench_support;

use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bench_support::{bin_dir, env_u32, percentile, pgbench, sql, wait_until, Cluster};
use pg_harness::PgBin;
use postgres_wal::Lsn;
use s3_harness::S3Server;
use strata_proto::pageserver::pageserver_client::PageserverClient;
use strata_proto::pageserver::{GetPagesRequest, RelTag, TimelineRequest};

/// Reads of the block once its layers are local, per round.
const LOCAL_READS: usize = 200;
/// Longest wait for object storage to hold the load, and for a restarted pageserver.
const UPLOAD_WAIT: Duration = Duration::from_secs(900);
const START_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// Frozen soon after writes stop, so that the upload of the last layer does not wait
/// for 64 MiB more WAL; the layer size is the daemon's default.
const CHECKPOINT_TIMEOUT: (&str, &str) = ("STRATA_PAGESERVER_CHECKPOINT_TIMEOUT_MS", "500");

/// A pageserver started by hand, killed when dropped.
struct Pageserver(Child);

impl Drop for Pageserver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Layer files in `dir` and their total bytes.
fn local_layers(dir: &Path) -> anyhow::Result<(usize, u64)> {
    let mut count = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else if (name.starts_with("delta__") || name.starts_with("image__"))
                && !name.ends_with(".tmp")
            {
                count += 1;
                bytes += entry.metadata()?.len();
            }
        }
    }
    Ok((count, bytes))
}

/// Where a page is asked for.
struct Target {
    tenant: String,
    timeline: String,
    lsn: Lsn,
    rel: RelTag,
}

/// One GetPages request for `blk`, timed.
async fn get_page(
    client: &mut PageserverClient<tonic::transport::Channel>,
    target: &Target,
    blk: u32,
) -> anyhow::Result<Duration> {
    let request = GetPagesRequest {
        tenant_id: target.tenant.clone(),
        timeline_id: target.timeline.clone(),
        request_id: u64::from(blk),
        lsn: target.lsn.0,
        rel: Some(target.rel),
        block_numbers: vec![blk],
    };
    let t = Instant::now();
    let mut responses = client
        .get_pages(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = responses.message().await?.context("stream ended")?;
    let elapsed = t.elapsed();
    ensure!(
        response.status_code == 0,
        "GetPages: {}",
        response.status_message
    );
    ensure!(
        response.pages.len() == 1 && response.pages[0].len() == 8192,
        "short response"
    );
    Ok(elapsed)
}

/// Connects once the restarted pageserver knows the timeline (restored from the index).
async fn connect_when_restored(
    port: u64,
    target: &Target,
) -> anyhow::Result<PageserverClient<tonic::transport::Channel>> {
    let deadline = Instant::now() + START_WAIT;
    loop {
        if let Ok(mut client) = PageserverClient::connect(format!("http://127.0.0.1:{port}")).await
        {
            let status = client
                .timeline_status(TimelineRequest {
                    tenant_id: target.tenant.clone(),
                    timeline_id: target.timeline.clone(),
                })
                .await;
            if status.is_ok() {
                return Ok(client);
            }
        }
        if Instant::now() > deadline {
            bail!("the restarted pageserver did not restore the timeline in {START_WAIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

fn main() -> ExitCode {
    bench_support::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    let scale = env_u32("STRATA_BENCH_SCALE", 5)?.to_string();
    let rounds = env_u32("STRATA_BENCH_GETPAGE_ROUNDS", 10)?;
    let bin = PgBin::locate()?;
    let bins = bin_dir(&["strata", "pageserver", "strata-s3-server"])?;
    std::env::set_var("STRATA_S3_SERVER", bins.join("strata-s3-server"));
    let server = S3Server::start().map_err(anyhow::Error::msg)?;
    server.create_bucket("strata").map_err(anyhow::Error::msg)?;
    let url = server.url("strata", "bench");
    let mut env: Vec<(String, String)> = server
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.push((
        CHECKPOINT_TIMEOUT.0.to_owned(),
        CHECKPOINT_TIMEOUT.1.to_owned(),
    ));
    let cluster = Cluster::new(bins.join("strata"), env)?;
    let connstr = cluster.up(&["--object-store", &url])?;
    pgbench(&bin, &connstr, &["-i", "-q", "-s", &scale])?;
    let lsn: Lsn = sql(&bin, &connstr, "SELECT pg_current_wal_flush_lsn()")?.parse()?;
    let (db, relnode, blocks) = bench_support::pgbench_accounts(&bin, &connstr)?;
    let blocks = blocks.max(1);

    wait_until(
        UPLOAD_WAIT,
        "remote_consistent_lsn reaching the load's end",
        || {
            Ok(cluster
                .pageserver_lsn("remote_consistent_lsn")?
                .is_some_and(|r| r >= lsn))
        },
    )?;
    let status = cluster.status()?;
    let target = Target {
        tenant: status["tenant_id"].as_str().context("tenant")?.to_owned(),
        timeline: status["timeline_id"]
            .as_str()
            .context("timeline")?
            .to_owned(),
        lsn,
        rel: RelTag {
            spc_oid: 1663,
            db_oid: db,
            rel_number: relnode,
            fork: 0,
        },
    };
    let port = status["pageserver"]["grpc_port"]
        .as_u64()
        .context("pageserver grpc_port")?;
    let data_dir = cluster.dir.join("pageserver");
    let (layers, layer_bytes) = local_layers(&data_dir)?;
    let config = std::fs::read_to_string(data_dir.join("pageserver.toml"))?;
    cluster.strata(&["down"])?;
    let config_path = cluster.dir.join("pageserver-bench.toml");
    std::fs::write(&config_path, config)?;

    let runtime = tokio::runtime::Runtime::new()?;
    let mut cold = Vec::new();
    let mut local = Vec::new();
    let mut downloaded = Vec::new();
    for round in 0..rounds {
        std::fs::remove_dir_all(&data_dir)?;
        std::fs::create_dir_all(&data_dir)?;
        let log = std::fs::File::create(cluster.dir.join(format!("pageserver-bench-{round}.log")))?;
        let _pageserver = Pageserver(
            Command::new(bins.join("pageserver"))
                .arg("--config")
                .arg(&config_path)
                .envs(cluster.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?,
        );
        // Blocks spread over the relation, a different one each round.
        let blk = (u64::from(round) * u64::from(blocks) / u64::from(rounds)) as u32;
        runtime.block_on(async {
            let mut client = connect_when_restored(port, &target).await?;
            cold.push(get_page(&mut client, &target, blk).await?);
            downloaded.push(local_layers(&data_dir)?);
            for _ in 0..LOCAL_READS {
                local.push(get_page(&mut client, &target, blk).await?);
            }
            anyhow::Ok(())
        })?;
    }

    cold.sort();
    local.sort();
    let mean_layers = downloaded.iter().map(|d| d.0).sum::<usize>() as f64 / f64::from(rounds);
    let mean_mib =
        downloaded.iter().map(|d| d.1).sum::<u64>() as f64 / f64::from(rounds) / (1 << 20) as f64;
    println!(
        "GetPage from object storage (strata-s3-server on loopback), pgbench scale {scale}: \
         {layers} layer files, {:.1} MiB in the store; {rounds} rounds on an empty pageserver",
        layer_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  cold (layers downloaded first: {mean_layers:.1} files, {mean_mib:.1} MiB per read): \
         p50 {:.2} ms, max {:.2} ms",
        ms(percentile(&cold, 0.5)),
        ms(percentile(&cold, 1.0))
    );
    println!(
        "  local ({} reads): p50 {:.3} ms, p99 {:.3} ms",
        local.len(),
        ms(percentile(&local, 0.5)),
        ms(percentile(&local, 0.99))
    );
    println!(
        "  ratio cold/local at p50: {:.0}",
        percentile(&cold, 0.5).as_secs_f64() / percentile(&local, 0.5).as_secs_f64()
    );
    Ok(())
}
