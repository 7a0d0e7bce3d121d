//! The walreceiver: per timeline, one task that streams WAL from the safekeeper with
//! the highest commit LSN and ingests it.
//!
//! Each round: ask every configured safekeeper for its status (gRPC `TimelineStatus`,
//! concurrently, bounded), choose one ([`select::choose`]), connect to its replication
//! port with [`pg_replication`] and `START_REPLICATION PHYSICAL` at the timeline's
//! `last_record_lsn` (the end of a record: safekeepers accept any start between their
//! timeline start and commit LSN, so no alignment is needed, and the decoder starts
//! there). WAL goes to an ingest thread that decodes it, turns each record into values
//! (`page_model::ingest::WalIngest`) and commits them ([`Timeline::commit`], durable)
//! every [`COMMIT_EVERY_RECORDS`](limits::COMMIT_EVERY_RECORDS) records,
//! [`COMMIT_EVERY_BYTES`](limits::COMMIT_EVERY_BYTES) or whenever no more WAL is
//! waiting. Standby status updates report write = received, flush = apply = durable,
//! after each commit and when the safekeeper asks.
//!
//! The stream is left on error, when it ends, and when it delivered nothing for
//! `wal_stall_timeout` while another safekeeper reports a higher commit LSN
//! ([`select::should_switch`]); the next round starts after a backoff (100 ms doubling
//! to 2 s, back to 100 ms after a stream that delivered WAL), again exactly at
//! `last_record_lsn`, so no record is ingested twice or skipped.
//!
//! A record that cannot be decoded (other than the end of the WAL) or ingested, or a
//! commit that fails, stops ingest of the timeline for good
//! ([`IngestState::Stopped`] with the record's LSN and why): nothing after it is
//! stored, and reads of later LSNs fail instead of waiting.

mod ingest;
pub mod limits;
pub mod select;
mod session;
mod status;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use crate::config::SafekeeperConfig;
use crate::logging::timeline_span;
use crate::timeline::{IngestState, Timeline};
use limits::{RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN};
use session::SessionEnd;
use status::Safekeepers;

/// What the walreceiver of every timeline is configured with.
#[derive(Debug, Clone)]
pub struct WalReceiverConfig {
    pub safekeepers: Vec<SafekeeperConfig>,
    /// See [`limits::DEFAULT_WAL_STALL_TIMEOUT`].
    pub wal_stall_timeout: Duration,
}

/// Streams and ingests `timeline`'s WAL until `shutdown` turns true or ingest stops
/// for good. Spawn one per timeline.
pub async fn run(
    timeline: Arc<Timeline>,
    config: WalReceiverConfig,
    shutdown: watch::Receiver<bool>,
) {
    let span = timeline_span(timeline.id());
    receive(timeline, config, shutdown).instrument(span).await;
}

/// Resolves once shutdown is asked for (or its sender is gone). Returns nothing, so
/// that no borrow of the watch value is held across an await (it is not `Send`).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: shutting down as well.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn receive(
    timeline: Arc<Timeline>,
    config: WalReceiverConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    if let IngestState::Stopped(reason) = timeline.ingest_state() {
        tracing::warn!(%reason, "ingest of this timeline is stopped; not streaming");
        return;
    }
    if config.safekeepers.is_empty() {
        tracing::warn!("no safekeepers configured: this timeline ingests no WAL");
    }
    let meta = timeline.meta();
    let safekeepers = Safekeepers::new(timeline.id(), meta.system_id, config.safekeepers);
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut previous = None;
    let mut waiting_logged = false;
    loop {
        let start = timeline.last_record_lsn();
        let statuses = tokio::select! {
            statuses = safekeepers.statuses() => statuses,
            () = stopping(&mut shutdown) => return,
        };
        match select::choose(&statuses, start, previous) {
            None => {
                if !waiting_logged {
                    tracing::info!(%start, safekeepers = safekeepers.len(), "no safekeeper can stream this timeline from its last record yet; waiting");
                    waiting_logged = true;
                }
            }
            Some(sk) => {
                waiting_logged = false;
                previous = Some(sk);
                let stall = config.wal_stall_timeout;
                match session::run(&timeline, &safekeepers, sk, stall, &mut shutdown).await {
                    SessionEnd::Shutdown | SessionEnd::Stopped => return,
                    SessionEnd::Retry { reason, progressed } => {
                        let id = safekeepers.config(sk).id;
                        tracing::warn!(safekeeper = %id, %reason, last_record_lsn = %timeline.last_record_lsn(), "WAL stream ended; choosing a safekeeper again");
                        if progressed {
                            backoff = RECONNECT_BACKOFF_MIN;
                        }
                    }
                }
            }
        }
        timeline.set_ingest_state(IngestState::Waiting);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopping(&mut shutdown) => return,
        }
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}
