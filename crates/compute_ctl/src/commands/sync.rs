//! `compute_ctl sync-safekeepers`: elect ourselves without writing WAL, bring a quorum
//! to the donor's end of WAL in the new term, and report that LSN.
//!
//! The timeline's parameters (system id, PostgreSQL version, segment size) come from
//! the safekeepers themselves: every one that answers must agree. Being elected bumps
//! the term, so a compute still running on the timeline is fenced by it.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use consensus::proposer::Mode;
use postgres_wal::Lsn;
use strata_ids::TenantTimelineId;

use super::{new_proposer_id, CommandError};
use crate::limits::{PREFLIGHT_TIMEOUT, RECONNECT_BACKOFF_MAX};
use crate::proposer::wal::ProposerWal;
use crate::proposer::{self, DriverConfig, Report};
use crate::safekeepers::{preflight, Safekeepers, TimelineParams};

#[derive(Debug, Clone)]
pub struct SyncArgs {
    pub id: TenantTimelineId,
    pub safekeepers: Vec<String>,
    pub election_timeout: Duration,
}

pub async fn sync_safekeepers(args: SyncArgs) -> Result<Lsn, CommandError> {
    let deadline = Instant::now() + args.election_timeout;
    let safekeepers =
        Safekeepers::new(args.id, args.safekeepers).context("parsing --safekeepers")?;
    let params = discover_params(&safekeepers, deadline).await?;
    tracing::info!(
        system_id = params.system_id,
        pg_version = params.pg_version,
        "syncing safekeepers"
    );
    let wal = ProposerWal::new(
        Mode::SyncSafekeepers,
        safekeepers.clone(),
        tokio::runtime::Handle::current(),
        None,
    );
    let config = DriverConfig {
        proposer_id: new_proposer_id(),
        system_id: params.system_id,
        pg_version: params.pg_version,
        wal_segment_size: params.wal_segment_size,
        mode: Mode::SyncSafekeepers,
    };
    let mut driver =
        proposer::start(config, safekeepers.clone(), wal).context("starting the proposer")?;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, driver.reports.recv()).await {
            Ok(Some(Report::Synced(lsn))) => return Ok(lsn),
            Ok(Some(Report::Lost { term })) => return Err(CommandError::Fenced { term }),
            Ok(Some(Report::Failed(error))) => return Err(anyhow!("{error}").into()),
            Ok(Some(Report::Elected {
                term, start_lsn, ..
            })) => tracing::info!(%term, %start_lsn, "elected; bringing a quorum to the start LSN"),
            Ok(None) => return Err(anyhow!("the proposer stopped").into()),
            Err(_) => {
                return Err(anyhow!(
                    "no quorum of safekeepers synced within {:?}: {}",
                    args.election_timeout,
                    driver.describe_peers(&safekeepers)
                )
                .into())
            }
        }
    }
}

/// The timeline's parameters as the safekeepers report them, retried until one
/// answers or the deadline passes.
pub(crate) async fn discover_params(
    safekeepers: &Safekeepers,
    deadline: Instant,
) -> Result<TimelineParams, CommandError> {
    loop {
        let found = preflight(safekeepers, PREFLIGHT_TIMEOUT).await;
        if let Some(&i) = found.not_found.first() {
            bail_not_found(safekeepers, i)?;
        }
        if let Some((first, info)) = found.answered.first() {
            let ours = TimelineParams::from_info(info);
            for (i, info) in &found.answered[1..] {
                if let Some(why) = ours.mismatch(&TimelineParams::from_info(info)) {
                    return Err(anyhow!(
                        "safekeepers {} and {} disagree on timeline {}: {why}",
                        safekeepers.addr(*first),
                        safekeepers.addr(*i),
                        safekeepers.id()
                    )
                    .into());
                }
            }
            return Ok(ours);
        }
        if Instant::now() + RECONNECT_BACKOFF_MAX > deadline {
            let why: Vec<String> = found
                .unreachable
                .iter()
                .map(|(i, e)| format!("{}: {e}", safekeepers.addr(*i)))
                .collect();
            return Err(anyhow!("no safekeeper answered: {}", why.join("; ")).into());
        }
        tokio::time::sleep(RECONNECT_BACKOFF_MAX).await;
    }
}

fn bail_not_found(safekeepers: &Safekeepers, i: usize) -> anyhow::Result<()> {
    bail!(
        "safekeeper {} does not have timeline {} (timelines are created only when their \
         compute is bootstrapped): check --safekeepers",
        safekeepers.addr(i),
        safekeepers.id()
    )
}
