//! One timeline: its layer store, how far it has ingested, and readers waiting for more.
//!
//! The walreceiver is the only writer: it decodes WAL into a [`Batch`] and hands it to
//! [`Timeline::commit`] with the end of the last record it covers. A commit is durable
//! (the layer store syncs its log) before `last_record_lsn` moves, and the new
//! `last_record_lsn` is committed atomically with the batch in the store's meta blob,
//! so a restart resumes exactly after the last committed record: nothing lost, nothing
//! ingested twice.
//!
//! Readers see the timeline through [`VersionSource`], which decodes the stored value
//! bytes, and wait for an LSN with [`Timeline::wait_lsn`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use layer_store::{Entry, LayerStore, StoreError};
use page_model::ingest::Batch;
use page_model::read::{ReadError, VersionSource};
use page_model::{Key, Value};
use postgres_wal::{Lsn, WalSegmentSize};
use strata_ids::TenantTimelineId;
use tokio::sync::{watch, Notify};

use crate::limits::OPEN_LAYER_BACKLOG_FREEZES;
use crate::metrics::TimelineMetrics;

/// What a timeline was created from; fixed for its life (`timeline.json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineMeta {
    /// `pg_control`'s system identifier of the imported data directory.
    pub system_id: u64,
    /// PostgreSQL major version (15).
    pub pg_version: u32,
    pub wal_segment_size: WalSegmentSize,
    /// End of the imported shutdown-checkpoint record: the first LSN readable.
    pub start_lsn: Lsn,
    /// Whether the cluster has data checksums (pages are then emitted with theirs set).
    pub data_checksums: bool,
}

/// Where ingest of a timeline stands, as the walreceiver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IngestState {
    /// No safekeeper streams to us (none reachable yet, or between two).
    Waiting,
    /// Streaming from `source` (a safekeeper's replication address).
    Ingesting { source: String },
    /// Ingest stopped for good on this record; the reason names it. Reads up to
    /// `last_record_lsn` still work; waits for later LSNs fail at once.
    Stopped(String),
}

impl std::fmt::Display for IngestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestState::Waiting => f.write_str("waiting"),
            IngestState::Ingesting { .. } => f.write_str("ingesting"),
            IngestState::Stopped(reason) => write!(f, "stopped: {reason}"),
        }
    }
}

/// What readers wait on: one watch so that a stop wakes waiters as an LSN does.
#[derive(Clone, Debug)]
struct Progress {
    last_record_lsn: Lsn,
    state: IngestState,
}

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("layer store: {0}")]
    Store(#[from] StoreError),
    #[error("commit to {new} would move last_record_lsn back from {current}")]
    LsnBackwards { current: Lsn, new: Lsn },
    #[error("batch has a value of {key:?} at {lsn}, outside ({after}, {upto}]")]
    EntryOutsideCommit {
        key: Key,
        lsn: Lsn,
        after: Lsn,
        upto: Lsn,
    },
    #[error("the layer store's timeline metadata is corrupt: {0}")]
    CorruptMeta(String),
    #[error("the layer store holds no timeline metadata (an interrupted creation?)")]
    MissingMeta,
}

/// Why [`Timeline::wait_lsn`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitLsnError {
    #[error(
        "timed out after {timeout:?} waiting for LSN {requested}; ingested up to {last_record_lsn}"
    )]
    Timeout {
        requested: Lsn,
        last_record_lsn: Lsn,
        timeout: Duration,
    },
    #[error("LSN {requested} will never arrive: ingest stopped at {last_record_lsn}: {reason}")]
    Stopped {
        requested: Lsn,
        last_record_lsn: Lsn,
        reason: String,
    },
}

/// Format of the meta blob the layer store commits with every batch: a version byte,
/// then `last_record_lsn` as u64 big-endian.
const META_VERSION: u8 = 1;
const META_LEN: usize = 9;

pub(crate) fn encode_meta(last_record_lsn: Lsn) -> [u8; META_LEN] {
    let mut out = [0u8; META_LEN];
    out[0] = META_VERSION;
    out[1..].copy_from_slice(&last_record_lsn.0.to_be_bytes());
    out
}

pub(crate) fn decode_meta(bytes: &[u8]) -> Result<Lsn, TimelineError> {
    match bytes {
        [META_VERSION, rest @ ..] if rest.len() == 8 => {
            let mut lsn = [0u8; 8];
            lsn.copy_from_slice(rest);
            Ok(Lsn(u64::from_be_bytes(lsn)))
        }
        _ => Err(TimelineError::CorruptMeta(format!(
            "expected {META_LEN} bytes starting with version {META_VERSION}, found {:02x?}",
            &bytes[..bytes.len().min(16)]
        ))),
    }
}

/// Converts a batch into store entries, checking that every value lies in the LSN range
/// the commit covers (so a replayed record can never store a second value at an LSN
/// already committed).
pub(crate) fn batch_entries(
    batch: Batch,
    after: Lsn,
    upto: Lsn,
) -> Result<Vec<Entry>, TimelineError> {
    batch
        .into_entries()
        .into_iter()
        .map(|(key, lsn, value)| {
            if lsn <= after || lsn > upto {
                return Err(TimelineError::EntryOutsideCommit {
                    key,
                    lsn,
                    after,
                    upto,
                });
            }
            Ok(Entry {
                key: key.encode(),
                lsn: lsn.0,
                will_init: value.will_init(),
                value: value.encode(),
            })
        })
        .collect()
}

/// One timeline. Shared (`Arc`) by the walreceiver, the gRPC service and the layer task.
#[derive(Debug)]
pub struct Timeline {
    id: TenantTimelineId,
    /// Its directory (`timeline.json`, the layer store, the copy of its last index).
    dir: PathBuf,
    meta: TimelineMeta,
    store: LayerStore,
    progress: watch::Sender<Progress>,
    /// Serialises commits: the check that a batch follows `last_record_lsn` and the
    /// store write must not interleave with another commit's.
    commit_lock: Mutex<()>,
    /// Woken after each commit: the layer task checks whether to freeze or image.
    layer_work: Notify,
    /// Open-layer size at which a commit freezes it itself, because the layer task has
    /// fallen that far behind (see [`OPEN_LAYER_BACKLOG_FREEZES`]).
    max_open_layer_bytes: u64,
    metrics: TimelineMetrics,
    /// Everything up to here is in object storage under an index (0: nothing yet).
    remote_consistent_lsn: AtomicU64,
    /// Whether an uploader tiers this timeline to object storage.
    tiered: AtomicBool,
    /// What the uploader last reported about object storage.
    remote_status: Mutex<RemoteStatus>,
}

/// The timeline in object storage, as its uploader last reported it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteStatus {
    /// Of this pageserver's attachment to the tenant (0 before it is known).
    pub generation: u32,
    /// Layer files the latest acknowledged index lists, and their bytes.
    pub layers: u64,
    pub layer_bytes: u64,
    /// Layer files on local disk not yet uploaded.
    pub upload_queue_layers: u64,
}

impl Timeline {
    /// A timeline over an opened store; `last_record_lsn` comes from the store's meta blob.
    pub(crate) fn open(
        id: TenantTimelineId,
        dir: PathBuf,
        meta: TimelineMeta,
        store: LayerStore,
        checkpoint_distance: u64,
        metrics: TimelineMetrics,
    ) -> Result<Timeline, TimelineError> {
        let last_record_lsn = decode_meta(&store.meta()?.ok_or(TimelineError::MissingMeta)?)?;
        if last_record_lsn < meta.start_lsn {
            return Err(TimelineError::CorruptMeta(format!(
                "last_record_lsn {last_record_lsn} is below the start LSN {}",
                meta.start_lsn
            )));
        }
        metrics.set_lsns(last_record_lsn);
        metrics.set_layers(&store.layers());
        let (progress, _) = watch::channel(Progress {
            last_record_lsn,
            state: IngestState::Waiting,
        });
        Ok(Timeline {
            id,
            dir,
            meta,
            store,
            progress,
            commit_lock: Mutex::new(()),
            layer_work: Notify::new(),
            max_open_layer_bytes: checkpoint_distance.saturating_mul(OPEN_LAYER_BACKLOG_FREEZES),
            metrics,
            remote_consistent_lsn: AtomicU64::new(0),
            tiered: AtomicBool::new(false),
            remote_status: Mutex::new(RemoteStatus::default()),
        })
    }

    pub fn id(&self) -> TenantTimelineId {
        self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &TimelineMeta {
        &self.meta
    }

    /// End of the last record ingested: readable, durable, and where ingest resumes.
    pub fn last_record_lsn(&self) -> Lsn {
        self.progress.borrow().last_record_lsn
    }

    /// Everything up to here is durable on local disk. Every commit is durable before
    /// it becomes visible, so this equals [`Timeline::last_record_lsn`]; it is reported
    /// separately because the two will differ once commits are acknowledged before
    /// they are synced.
    pub fn disk_consistent_lsn(&self) -> Lsn {
        self.last_record_lsn()
    }

    /// Everything up to here is durable in object storage, under an index that lists
    /// it; `None` when the timeline is not tiered or nothing is uploaded yet.
    pub fn remote_consistent_lsn(&self) -> Option<Lsn> {
        match self.remote_consistent_lsn.load(Ordering::Acquire) {
            0 => None,
            lsn => Some(Lsn(lsn)),
        }
    }

    /// Set by the uploader once the index covering `lsn` is acknowledged by the store.
    pub fn set_remote_consistent_lsn(&self, lsn: Lsn) {
        self.remote_consistent_lsn
            .fetch_max(lsn.0, Ordering::AcqRel);
        self.metrics.set_remote_consistent_lsn(lsn);
    }

    pub fn set_tiered(&self) {
        self.tiered.store(true, Ordering::Release);
    }

    pub fn remote_status(&self) -> RemoteStatus {
        *self
            .remote_status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Set by the uploader (`update` changes what it learnt).
    pub fn update_remote_status(&self, update: impl FnOnce(&mut RemoteStatus)) {
        update(
            &mut self
                .remote_status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    /// The LSN the safekeepers may forget WAL below, as far as this pageserver is
    /// concerned: what object storage holds when tiered, what local disk holds if not.
    pub fn wal_horizon(&self) -> Lsn {
        if self.tiered.load(Ordering::Acquire) {
            self.remote_consistent_lsn().unwrap_or(Lsn::INVALID)
        } else {
            self.disk_consistent_lsn()
        }
    }

    pub fn ingest_state(&self) -> IngestState {
        self.progress.borrow().state.clone()
    }

    pub fn set_ingest_state(&self, state: IngestState) {
        if let IngestState::Stopped(reason) = &state {
            tracing::error!(
                tenant_id = %self.id.tenant_id,
                timeline_id = %self.id.timeline_id,
                last_record_lsn = %self.last_record_lsn(),
                reason = reason.as_str(),
                "ingest stopped"
            );
            self.metrics.ingest_errors.inc();
        }
        self.progress.send_modify(|p| p.state = state);
    }

    /// The series of this timeline, for the walreceiver's ingest counters.
    pub fn metrics(&self) -> &TimelineMetrics {
        &self.metrics
    }

    pub fn store(&self) -> &LayerStore {
        &self.store
    }

    /// Waits until every record ending at or before `lsn` is readable, at most
    /// `timeout`; fails at once when ingest has stopped below `lsn`.
    pub async fn wait_lsn(&self, lsn: Lsn, timeout: Duration) -> Result<(), WaitLsnError> {
        let mut rx = self.progress.subscribe();
        // Only whether the wait ended matters; the state is read again below.
        let _ = tokio::time::timeout(timeout, async {
            let _ = rx
                .wait_for(|p| {
                    p.last_record_lsn >= lsn || matches!(p.state, IngestState::Stopped(_))
                })
                .await;
        })
        .await;
        let progress = self.progress.borrow().clone();
        if progress.last_record_lsn >= lsn {
            return Ok(());
        }
        match progress.state {
            IngestState::Stopped(reason) => Err(WaitLsnError::Stopped {
                requested: lsn,
                last_record_lsn: progress.last_record_lsn,
                reason,
            }),
            // The sender lives as long as `self`, so the wait cannot end on a closed
            // channel: anything else is the timeout.
            _ => Err(WaitLsnError::Timeout {
                requested: lsn,
                last_record_lsn: progress.last_record_lsn,
                timeout,
            }),
        }
    }

    /// Stores `batch` (every value at an LSN in `(last_record_lsn, new]`) and advances
    /// `last_record_lsn` to `new`, the end of the last record the batch covers.
    /// Blocking (the store syncs its log, and freezes the open layer itself when the
    /// layer task has fallen behind): call it from `spawn_blocking` or a thread.
    pub fn commit(&self, batch: Batch, new: Lsn) -> Result<(), TimelineError> {
        // A poisoned lock only means another commit panicked; the store itself is
        // consistent (its writes are atomic), so carrying on is safe.
        let _guard = self
            .commit_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.last_record_lsn();
        if new < current {
            return Err(TimelineError::LsnBackwards { current, new });
        }
        let entries = batch_entries(batch, current, new)?;
        // Durable when put_batch returns (the store syncs its write-ahead log), and the
        // meta blob with the new last_record_lsn is in the same atomic write: only
        // then may readers see `new` and the walreceiver report it as disk-consistent.
        self.store.put_batch(&entries, &encode_meta(new))?;
        self.progress.send_modify(|p| p.last_record_lsn = new);
        self.metrics.set_lsns(new);
        if self.store.open_layer_bytes() >= self.max_open_layer_bytes {
            // The layer task fell behind: ingest pays for one freeze rather than letting
            // the open layer (and every read's walk through it) grow without bound.
            // The batch is committed whatever happens here: a failed freeze loses
            // nothing (the open layer keeps the entries) and is retried.
            match self.store.freeze(false) {
                Ok(Some(_)) => self.metrics.set_layers(&self.store.layers()),
                Ok(None) => {}
                Err(error) => tracing::error!(
                    tenant_id = %self.id.tenant_id,
                    timeline_id = %self.id.timeline_id,
                    %error,
                    "freezing the open layer failed"
                ),
            }
        }
        self.layer_work.notify_one();
        Ok(())
    }

    /// Resolves once a commit happened since the last call (for the layer task).
    pub(crate) async fn layer_work(&self) {
        self.layer_work.notified().await;
    }
}

fn store_error(error: StoreError) -> ReadError {
    match error {
        corrupt @ StoreError::Corrupt { .. } => ReadError::Corrupt(corrupt.to_string()),
        other => ReadError::Storage(Box::new(other)),
    }
}

impl VersionSource for Timeline {
    fn versions(&self, key: &Key, since: Lsn, at: Lsn) -> Result<Vec<(Lsn, Value)>, ReadError> {
        let versions = self
            .store
            .versions(&key.encode(), since.0, at.0)
            .map_err(store_error)?;
        versions
            .into_iter()
            .map(|version| {
                let bytes: Bytes = version.value;
                let value = Value::decode(&bytes).map_err(|e| {
                    ReadError::Corrupt(format!("value of {key:?} at {}: {e}", Lsn(version.lsn)))
                })?;
                Ok((Lsn(version.lsn), value))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_garbage_is_refused() {
        let lsn = Lsn(0x0100_0028);
        assert_eq!(decode_meta(&encode_meta(lsn)).unwrap(), lsn);
        assert!(decode_meta(&[]).is_err());
        assert!(decode_meta(&[2, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_meta(&encode_meta(lsn)[..8]).is_err());
    }

    #[test]
    fn ingest_state_renders_as_the_proto_says() {
        assert_eq!(IngestState::Waiting.to_string(), "waiting");
        assert_eq!(
            IngestState::Ingesting {
                source: "127.0.0.1:5454".into()
            }
            .to_string(),
            "ingesting"
        );
        assert_eq!(
            IngestState::Stopped("no redo for rmgr Hash".into()).to_string(),
            "stopped: no redo for rmgr Hash"
        );
    }
}
