//! `strata basebackup` and `strata getpage`: read a local cluster's pageserver (design
//! brief §8). Both find the pageserver and the tenant in the cluster directory; the
//! timeline defaults to the cluster's.

use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use compute_ctl::pageserver::{Pageserver, RelFork};
use local_cluster::LocalCluster;
use pg_harness::PgBin;
use postgres_wal::Lsn;
use strata_ids::{TenantTimelineId, TimelineId};

/// How often a progress display redraws.
const PROGRESS_TICK: std::time::Duration = std::time::Duration::from_millis(120);

use crate::cluster_cmd::DirArg;

#[derive(Debug, clap::Args)]
pub struct BasebackupArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Timeline id (default: the cluster's).
    #[arg(long, value_name = "ID")]
    timeline: Option<TimelineId>,
    /// The state after every record that ends at or before this LSN (default: the
    /// latest the pageserver has ingested).
    #[arg(long, value_name = "LSN")]
    lsn: Option<Lsn>,
    /// The data directory to create (absent or empty; created with mode 0700).
    #[arg(long, value_name = "PGDATA")]
    out: PathBuf,
    /// A standby's data directory: it replays from the last checkpoint at or before the
    /// LSN (add standby.signal and primary_conninfo pointing at a safekeeper).
    #[arg(long)]
    standby: bool,
}

#[derive(Debug, clap::Args)]
pub struct GetpageArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Timeline id (default: the cluster's).
    #[arg(long, value_name = "ID")]
    timeline: Option<TimelineId>,
    /// Read the page as of this LSN (0/0: the latest).
    #[arg(long, value_name = "LSN")]
    lsn: Lsn,
    /// The relation: tablespace, database and relfilenode OIDs.
    #[arg(long, value_name = "SPC/DB/REL")]
    rel: String,
    /// The fork: main, fsm, vm or init.
    #[arg(long, default_value = "main")]
    fork: String,
    /// Block number.
    #[arg(long, value_name = "N")]
    blk: u32,
}

/// The cluster's pageserver and the timeline asked for.
fn target(
    dir: &Path,
    timeline: Option<TimelineId>,
) -> anyhow::Result<(Pageserver, TenantTimelineId)> {
    let cluster = LocalCluster::open(dir)?;
    let addr = cluster.pageserver_grpc_addr().ok_or_else(|| {
        anyhow!(
            "the cluster in {} has no pageserver (it was created before the pageserver existed)",
            cluster.dir().display()
        )
    })?;
    let config = cluster.config();
    let id = TenantTimelineId {
        tenant_id: config.tenant_id,
        timeline_id: timeline.unwrap_or(config.timeline_id),
    };
    Ok((Pageserver::new(&addr)?, id))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn basebackup(args: &BasebackupArgs) -> anyhow::Result<()> {
    let runtime = runtime()?;
    // The gRPC channel is made inside the runtime it runs on.
    let _entered = runtime.enter();
    let (pageserver, id) = target(&args.dir.dir, args.timeline)?;
    let out = &args.out;
    // Under root the directory must be the server user's, as PostgreSQL requires.
    let owner = PgBin::locate()
        .context("locating PostgreSQL 15")?
        .server_user()
        .map(|u| (u.uid, u.gid));
    let created = prepare_out(out, owner)?;
    let progress = progress_bar("receiving basebackup");
    let result = runtime.block_on(pageserver.basebackup_into_reporting(
        id,
        args.lsn.unwrap_or(Lsn::INVALID),
        args.standby,
        out,
        owner,
        |bytes| progress.set_position(bytes),
    ));
    progress.finish_and_clear();
    match result {
        Ok(unpacked) => {
            println!(
                "basebackup of timeline {} at {}: {} files, {} bytes in {}",
                id.timeline_id,
                unpacked.lsn,
                unpacked.files,
                unpacked.bytes,
                out.display()
            );
            Ok(())
        }
        Err(error) => {
            // Leave no half data directory behind: what was empty is empty again.
            if created {
                let _ = std::fs::remove_dir_all(out);
            } else if let Ok(entries) = std::fs::read_dir(out) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
            }
            Err(error.into())
        }
    }
}

/// Creates `out` (mode 0700) or checks that it is an empty directory; true if created.
fn prepare_out(out: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<bool> {
    let created = match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: refusing to unpack a basebackup into it",
                    out.display()
                );
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("setting the mode of {}", out.display()))?;
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(out)
                .with_context(|| format!("creating {}", out.display()))?;
            true
        }
        Err(e) => return Err(anyhow!("reading {}: {e}", out.display())),
    };
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(out, Some(uid), Some(gid))
            .with_context(|| format!("giving {} to the server user", out.display()))?;
    }
    Ok(created)
}

pub fn getpage(args: &GetpageArgs) -> anyhow::Result<()> {
    let rel = parse_rel(&args.rel, &args.fork)?;
    let runtime = runtime()?;
    let _entered = runtime.enter();
    let (pageserver, id) = target(&args.dir.dir, args.timeline)?;
    let (_, page) = runtime.block_on(pageserver.get_page(id, args.lsn, rel, args.blk))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&page).context("writing the page")?;
    stdout.flush().context("writing the page")?;
    Ok(())
}

/// `SPC/DB/REL` and a fork name.
fn parse_rel(rel: &str, fork: &str) -> anyhow::Result<RelFork> {
    let oids: Vec<&str> = rel.split('/').collect();
    let [spc, db, rel_number] = oids[..] else {
        bail!("--rel {rel:?} is not SPC/DB/REL");
    };
    let oid = |text: &str, what: &str| -> anyhow::Result<u32> {
        text.parse()
            .map_err(|_| anyhow!("--rel {rel:?}: the {what} OID {text:?} is not a number"))
    };
    let fork = match fork {
        "main" => 0,
        "fsm" => 1,
        "vm" => 2,
        "init" => 3,
        other => bail!("--fork {other:?} is not main, fsm, vm or init"),
    };
    Ok(RelFork {
        spc: oid(spc, "tablespace")?,
        db: oid(db, "database")?,
        rel: oid(rel_number, "relation")?,
        fork,
    })
}

/// A byte counter on stderr while a long transfer runs, for a person at a terminal;
/// hidden when stderr is not one (scripts, logs, CI), so it never lands in output
/// that is parsed.
fn progress_bar(what: &'static str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(what);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}: {bytes} ({bytes_per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(PROGRESS_TICK);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_and_forks_parse() {
        let rel = parse_rel("1663/5/16384", "vm").unwrap();
        assert_eq!((rel.spc, rel.db, rel.rel, rel.fork), (1663, 5, 16384, 2));
        assert!(parse_rel("1663/5", "main").is_err());
        assert!(parse_rel("1663/5/x", "main").is_err());
        assert!(parse_rel("1663/5/1/2", "main").is_err());
        assert!(parse_rel("1663/5/1", "heap").is_err());
    }
}
