//! `strata up`, `strata down` and `strata status`: the local cluster of the design
//! brief §8, driven through `local_cluster` (the same code the integration tests use).
//!
//! Output: what is waited for goes to stderr as it happens; what was done goes to
//! stdout, and the last line of `strata up` is the compute's connection URI, so that
//! `psql "$(strata up | tail -n1)"` works.

use std::path::PathBuf;

use anyhow::Context;
use local_cluster::{Action, Binaries, ClusterSpec, LocalCluster};

/// Where the cluster lives unless `--dir` says otherwise.
const DEFAULT_DIR: &str = ".strata";

#[derive(Debug, clap::Args)]
pub struct DirArg {
    /// The cluster directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Number of safekeepers of a new cluster (default 3).
    #[arg(long, value_name = "N")]
    safekeepers: Option<usize>,
    /// Object store of a new cluster: file:///path or s3://bucket/prefix?endpoint=URL
    /// (default: DIR/object-store).
    #[arg(long, value_name = "URL")]
    object_store: Option<String>,
    /// Postgres port of a new cluster on 127.0.0.1 (default: a free port, then fixed).
    #[arg(long, value_name = "PORT")]
    pg_port: Option<u16>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Print the status as one JSON object (the stable format).
    #[arg(long)]
    json: bool,
}

pub fn up(args: &UpArgs) -> anyhow::Result<()> {
    let spec = ClusterSpec {
        safekeepers: args.safekeepers,
        object_store: args.object_store.clone(),
        pg_port: args.pg_port,
    };
    // Before creating anything: a missing binary should not leave an empty cluster.
    let binaries = Binaries::locate()?;
    let (cluster, created) = LocalCluster::open_or_create(&args.dir.dir, &spec)?;
    let config = cluster.config();
    let verb = if created { "created" } else { "starting" };
    println!(
        "{verb} cluster {} (tenant {}, timeline {})",
        cluster.dir().display(),
        config.tenant_id,
        config.timeline_id
    );
    let report = cluster
        .up(&binaries, &mut |line| eprintln!("strata: {line}"))
        .context("starting the cluster")?;
    for (id, action) in &report.safekeepers {
        println!("safekeeper {id}: {}", describe(*action));
    }
    if let Some(action) = report.pageserver {
        println!("pageserver: {}", describe(action));
    }
    println!("compute: {} (compute_ctl)", describe(report.compute));
    println!("{}", report.connstr);
    Ok(())
}

fn describe(action: Action) -> String {
    match action {
        Action::Started { pid } => format!("started, pid {pid}"),
        Action::AlreadyRunning { pid } => format!("already running, pid {pid}"),
    }
}

pub fn down(args: &DirArg) -> anyhow::Result<()> {
    let cluster = LocalCluster::open(&args.dir)?;
    let report = cluster.down().context("stopping the cluster")?;
    let stopped = |pid: Option<u32>| match pid {
        Some(pid) => format!("stopped (pid {pid})"),
        None => "was not running".to_owned(),
    };
    println!("compute: {}", stopped(report.compute));
    if cluster.config().pageserver.is_some() {
        println!("pageserver: {}", stopped(report.pageserver));
    }
    for (id, pid) in report.safekeepers {
        println!("safekeeper {id}: {}", stopped(pid));
    }
    Ok(())
}

pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let cluster = LocalCluster::open(&args.dir.dir)?;
    let status = cluster.status()?;
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        println!("{}", status.to_table());
    }
    Ok(())
}
