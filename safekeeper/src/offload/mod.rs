//! WAL offload to object storage, and the removal of local WAL it makes safe.
//!
//! With an object store configured, every open timeline has one offloader task. Each
//! check ([`CHECK_INTERVAL`]) it:
//! 1. asks its peers for their `TimelineStatus` (bounded; an unreachable peer is left
//!    out), and takes the highest remote-consistent LSN any of them reports;
//! 2. chooses the uploader ([`plan::choose_uploader`]): the lowest id among this
//!    safekeeper and its reachable peers that hold every finished segment below the
//!    highest commit LSN known. Each safekeeper decides alone, from the same rule;
//! 3. lists the timeline's WAL in object storage every [`LIST_INTERVAL`] (and before it
//!    starts uploading), which is how a safekeeper that does not upload learns the
//!    uploaded LSN;
//! 4. if it has been the uploader for [`UPLOADER_CONFIRMATIONS`] checks in a row,
//!    uploads each finished segment below its commit LSN that object storage lacks, in
//!    order, byte for byte as the local file
//!    (`layout::wal_segment_path(id, <segment file name>)`);
//! 5. asks the timeline's actor to remove local segments wholly below
//!    `min(remote-consistent LSN, uploaded LSN, commit LSN)` (less
//!    `wal_retention_bytes` if set).
//!
//! A failed check (object storage down, a removal failing) is counted, logged at WARN
//! and retried with backoff ([`RETRY_FIRST_BACKOFF`] doubling to [`RETRY_MAX_BACKOFF`]):
//! WAL stays on local disk meanwhile, since nothing above the uploaded LSN is ever
//! removed, and the uploads catch up once the store answers.
//!
//! Why two safekeepers uploading at once is harmless: only finished segments below the
//! commit LSN are uploaded, and committed WAL is the same on every safekeeper that
//! holds it, so both write identical bytes under the same name (a PUT replaces an
//! object whole). It happens only briefly, while two safekeepers disagree about who is
//! caught up (a takeover, a peer seen late).
//!
//! What is uploaded for a timeline that started mid-segment: its first segment as the
//! local file holds it, which is zeros before the timeline start LSN (the storage
//! creates segments zero-filled) and WAL from there on.

pub mod limits;
pub mod metrics;
pub mod peers;
pub mod plan;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres_wal::{Lsn, WalSegmentSize};
use remote_storage::{layout, RemoteError, RemoteStorage};
use strata_ids::NodeId;
use tracing::Instrument;

use crate::logging::timeline_span;
use crate::storage::segments::segment_file_name;
use crate::storage::{removal_horizon, OffloadHorizon, RemovalHorizonInputs};
use crate::timeline::{RemoveWalError, Timeline, TimelineStatus};
use limits::{
    CHECK_INTERVAL, LIST_INTERVAL, MAX_SEGMENTS_PER_CHECK, RETRY_FIRST_BACKOFF, RETRY_MAX_BACKOFF,
    UPLOADER_CONFIRMATIONS,
};
use metrics::{OffloadMetrics, TimelineOffloadMetrics};
use peers::Peers;
use plan::{choose_uploader, listed_segments, OwnView, UploadedSegments};

/// What every timeline's offloader shares: the store, the peers, the metrics.
#[derive(Debug)]
pub struct Offload {
    node_id: NodeId,
    store: Arc<dyn RemoteStorage>,
    peers: Peers,
    metrics: OffloadMetrics,
    /// `wal_retention_bytes`: WAL kept below the offload horizon anyway.
    retention_bytes: u64,
}

/// Why a check failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("{0}")]
    Store(#[from] RemoteError),
    #[error("removing local WAL below {horizon}: {reason}")]
    Remove { horizon: Lsn, reason: String },
    #[error("the timeline's segment size {0} is not a WAL segment size")]
    SegmentSize(u32),
}

impl Offload {
    pub fn new(
        node_id: NodeId,
        store: Arc<dyn RemoteStorage>,
        peers: Peers,
        metrics: OffloadMetrics,
        retention_bytes: Option<u64>,
    ) -> Offload {
        Offload {
            node_id,
            store,
            peers,
            metrics,
            retention_bytes: retention_bytes.unwrap_or(0),
        }
    }

    pub fn metrics(&self) -> &OffloadMetrics {
        &self.metrics
    }

    /// Start the offloader of `timeline`; it ends when the timeline stops.
    pub fn spawn(self: &Arc<Self>, timeline: Arc<Timeline>) {
        let span = timeline_span(timeline.id());
        let offload = self.clone();
        tokio::spawn(
            async move {
                let stopping = timeline.clone();
                tokio::select! {
                    () = stopping.stopped() => {}
                    () = run(offload, timeline) => {}
                }
            }
            .instrument(span),
        );
    }
}

async fn run(offload: Arc<Offload>, timeline: Arc<Timeline>) {
    let params = timeline.params();
    let segment_size = match WalSegmentSize::new(u64::from(params.wal_segment_size)) {
        Ok(size) => size,
        // Storage opened the timeline with this size, so this cannot happen; if it did,
        // offloading would be impossible, never unsafe.
        Err(_) => {
            let error = CheckError::SegmentSize(params.wal_segment_size);
            tracing::error!(%error, "WAL offload cannot run for this timeline");
            return;
        }
    };
    let first_segment = params.timeline_start_lsn.segment_number(segment_size);
    let mut offloader = Offloader {
        metrics: offload.metrics.timeline(timeline.id()),
        offload,
        timeline,
        segment_size,
        uploaded: UploadedSegments::new(first_segment),
        listed_at: None,
        uploader_streak: 0,
        removed_below_segment: first_segment,
        missing_logged: None,
    };
    tracing::info!(store = %offloader.offload.store.describe(), "WAL offload started");
    let mut backoff = RETRY_FIRST_BACKOFF;
    let mut wait = Duration::ZERO;
    loop {
        tokio::time::sleep(wait).await;
        wait = match offloader.check().await {
            Ok(()) => {
                backoff = RETRY_FIRST_BACKOFF;
                CHECK_INTERVAL
            }
            Err(error) => {
                offloader.metrics.errors.inc();
                tracing::warn!(%error, retry_in = ?backoff, "WAL offload check failed; local WAL is kept");
                let this_wait = backoff;
                backoff = (backoff * 2).min(RETRY_MAX_BACKOFF);
                this_wait
            }
        };
    }
}

/// One timeline's offloader; see the [module documentation](self).
struct Offloader {
    offload: Arc<Offload>,
    timeline: Arc<Timeline>,
    metrics: TimelineOffloadMetrics,
    segment_size: WalSegmentSize,
    uploaded: UploadedSegments,
    listed_at: Option<Instant>,
    /// Consecutive checks in which this safekeeper was the uploader.
    uploader_streak: u32,
    /// Local segments below this one were removed (or never existed).
    removed_below_segment: u64,
    /// The last segment found missing locally, so the warning is logged once.
    missing_logged: Option<u64>,
}

impl Offloader {
    async fn check(&mut self) -> Result<(), CheckError> {
        let status = self.timeline.status();
        if status.failure.is_some() {
            // Its storage is in an unknown state until reopened: upload nothing from
            // it, remove nothing.
            self.set_uploader(false);
            return Ok(());
        }
        let peers = self.offload.peers.views(self.timeline.id()).await;
        for peer in &peers {
            self.timeline
                .note_remote_consistent_lsn(peer.remote_consistent_lsn);
        }
        let own = OwnView {
            id: self.offload.node_id,
            flush_lsn: status.flush_lsn,
            commit_lsn: status.commit_lsn,
        };
        let uploader = choose_uploader(own, &peers, self.segment_size);
        self.set_uploader(uploader == Some(own.id));
        let offloaded = self.list_and_upload(&status).await;
        // Even when object storage failed: what it already holds may go locally.
        let removed = self.remove(&status).await;
        offloaded.and(removed)
    }

    async fn list_and_upload(&mut self, status: &TimelineStatus) -> Result<(), CheckError> {
        let uploading = self.uploader_streak >= UPLOADER_CONFIRMATIONS;
        let starting = self.uploader_streak == UPLOADER_CONFIRMATIONS;
        if starting
            || self
                .listed_at
                .is_none_or(|at| at.elapsed() >= LIST_INTERVAL)
        {
            self.list().await?;
        }
        if uploading {
            self.upload(status).await?;
        }
        Ok(())
    }

    /// Count the checks in a row that chose this safekeeper; it uploads from the
    /// [`UPLOADER_CONFIRMATIONS`]-th on.
    fn set_uploader(&mut self, chosen: bool) {
        let was_uploading = self.uploader_streak >= UPLOADER_CONFIRMATIONS;
        self.uploader_streak = if chosen {
            self.uploader_streak.saturating_add(1)
        } else {
            0
        };
        let uploading = self.uploader_streak >= UPLOADER_CONFIRMATIONS;
        if uploading != was_uploading {
            tracing::info!(
                uploading,
                "{} uploading this timeline's WAL",
                if uploading { "now" } else { "no longer" }
            );
        }
        self.metrics.set_uploader(uploading);
    }

    /// Learn which segments object storage holds.
    async fn list(&mut self) -> Result<(), CheckError> {
        let prefix = layout::wal_prefix(self.timeline.id());
        let objects = self.offload.store.list(&prefix).await?;
        for segment in listed_segments(&objects, self.segment_size) {
            self.uploaded.insert(segment);
        }
        self.listed_at = Some(Instant::now());
        self.publish_uploaded();
        Ok(())
    }

    fn publish_uploaded(&self) {
        let lsn = self.uploaded.uploaded_lsn(self.segment_size);
        if lsn > self.timeline.offload_positions().uploaded_lsn {
            tracing::debug!(uploaded_lsn = %lsn, "uploaded LSN advanced");
        }
        self.timeline.set_uploaded_lsn(lsn);
    }

    /// Upload the finished segments below the commit LSN that object storage lacks.
    async fn upload(&mut self, status: &TimelineStatus) -> Result<(), CheckError> {
        let missing: Vec<u64> = self
            .uploaded
            .missing_below(status.commit_lsn, self.segment_size)
            .take(MAX_SEGMENTS_PER_CHECK)
            .collect();
        for segment in missing {
            // Below the commit LSN's segment every segment has its final name and is
            // never written again (truncation never goes below the commit LSN).
            let name = segment_file_name(self.segment_size, segment, false);
            let local: PathBuf = self.timeline.dir().join(&name);
            if !local.exists() {
                // Removed before offload was configured (wal_retention_bytes): the
                // uploaded LSN cannot pass it, so nothing after it is removed either.
                if self.missing_logged != Some(segment) {
                    tracing::warn!(segment = %name, "segment below the commit LSN is missing locally and not in object storage; the uploaded LSN stops before it");
                    self.missing_logged = Some(segment);
                }
                continue;
            }
            let started = Instant::now();
            let path = layout::wal_segment_path(self.timeline.id(), &name);
            let bytes = self.offload.store.put_file(&path, &local).await?;
            self.metrics
                .upload_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics.uploaded_segments.inc();
            self.metrics.uploaded_bytes.inc_by(bytes);
            tracing::info!(segment = %name, bytes, "uploaded WAL segment");
            self.uploaded.insert(segment);
            self.publish_uploaded();
        }
        Ok(())
    }

    /// Remove local segments below the horizon, if it passed a segment boundary since
    /// the last removal.
    async fn remove(&mut self, status: &TimelineStatus) -> Result<(), CheckError> {
        let positions = self.timeline.offload_positions();
        let horizon = removal_horizon(&RemovalHorizonInputs {
            commit_lsn: status.commit_lsn,
            retention_bytes: self.offload.retention_bytes,
            offload: Some(OffloadHorizon {
                uploaded_lsn: positions.uploaded_lsn,
                remote_consistent_lsn: positions.remote_consistent_lsn,
            }),
        });
        self.timeline.set_removal_horizon_lsn(horizon);
        self.metrics.set_positions(
            positions.uploaded_lsn,
            positions.remote_consistent_lsn,
            horizon,
        );
        let horizon_segment = horizon.segment_number(self.segment_size);
        if horizon_segment <= self.removed_below_segment {
            return Ok(());
        }
        let removed = match self.timeline.remove_wal_below(horizon).await {
            Ok(removed) => removed,
            // Stopping (shutdown, deletion): this task ends with the timeline.
            Err(RemoveWalError::Stopped(_)) => return Ok(()),
            Err(RemoveWalError::Failed(reason)) => {
                return Err(CheckError::Remove { horizon, reason })
            }
        };
        if !removed.is_empty() {
            tracing::info!(
                %horizon,
                uploaded_lsn = %positions.uploaded_lsn,
                remote_consistent_lsn = %positions.remote_consistent_lsn,
                commit_lsn = %status.commit_lsn,
                count = removed.len(),
                "removed local WAL segments below the offload horizon"
            );
        }
        self.metrics.removed_segments.inc_by(removed.len() as u64);
        self.removed_below_segment = horizon_segment;
        Ok(())
    }
}
