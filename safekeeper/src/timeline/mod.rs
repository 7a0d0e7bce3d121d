//! One timeline of the safekeeper: a handle shared by its gRPC connections, its
//! replication readers and the registry, in front of an actor thread that owns the
//! acceptor and its storage.
//!
//! Why an actor on its own thread: the acceptor's storage does blocking file I/O and
//! fsyncs, which must not stall the async runtime; one writer per timeline makes its
//! messages totally ordered without locks; and draining a queue before one fsync is how
//! fsyncs get batched (see [`actor`]).
//!
//! Replies go back through the [`Connection`] that sent the request. Each message
//! carries a permit for one reply on its connection's bounded reply queue, reserved by
//! the connection before it forwarded the message: the actor can always answer without
//! waiting, and a proposer that stops reading replies stops being read itself.

mod actor;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use consensus::messages::{AcceptorMessage, ProposerMessage};
use consensus::storage::PersistentState;
use consensus::term_history::{Term, TermHistory};
use consensus::Refusal;
use postgres_wal::Lsn;
use strata_ids::{NodeId, TenantTimelineId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::limits::{CONNECTION_REPLY_QUEUE_LEN, MAX_POOLED_WAL_READERS, TIMELINE_QUEUE_LEN};
use crate::metrics::{Metrics, TimelineMetrics};
use crate::offload::Offload;
use crate::replication::{ReaderFeedback, ReplicationTimeline};
use crate::storage::{TimelineStorage, WalReader};

/// The parameters of a timeline to create (`CreateTimeline`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTimeline {
    pub id: TenantTimelineId,
    pub system_id: u64,
    /// `PG_VERSION_NUM`, e.g. 150018.
    pub pg_version: u32,
    pub wal_segment_size: u32,
    pub start_lsn: Lsn,
}

impl NewTimeline {
    pub fn initial_state(&self) -> PersistentState {
        PersistentState::new(
            self.id,
            self.system_id,
            self.pg_version,
            self.wal_segment_size,
            self.start_lsn,
        )
    }

    /// Whether an existing timeline was created with these parameters (creation is
    /// idempotent for retries).
    pub fn matches(&self, status: &TimelineStatus) -> bool {
        self.id == status.id
            && self.system_id == status.system_id
            && self.pg_version == status.pg_version
            && self.wal_segment_size == status.wal_segment_size
            && self.start_lsn == status.timeline_start_lsn
    }
}

/// What `TimelineStatus` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineStatus {
    pub id: TenantTimelineId,
    pub system_id: u64,
    pub pg_version: u32,
    pub wal_segment_size: u32,
    pub timeline_start_lsn: Lsn,
    pub term: Term,
    /// Cut at the flush LSN: the history of the WAL held durably.
    pub term_history: TermHistory,
    pub flush_lsn: Lsn,
    pub commit_lsn: Lsn,
    /// Why the timeline stopped accepting WAL, if it did.
    pub failure: Option<String>,
    pub offload: OffloadPositions,
}

/// Where WAL offload to object storage stands (all [`Lsn::INVALID`] until known, and
/// without an object store).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadPositions {
    /// End of the contiguous run of uploaded segments from the timeline's first one.
    pub uploaded_lsn: Lsn,
    /// The highest remote-consistent LSN the pageserver reported, here or to a peer.
    pub remote_consistent_lsn: Lsn,
    /// Local segments wholly below it may be removed.
    pub removal_horizon_lsn: Lsn,
}

/// The `application_name` of the pageserver's replication connections: the apply
/// position of its standby status updates is its remote-consistent LSN.
pub const PAGESERVER_APPLICATION_NAME: &str = "pageserver";

/// Why the actor did not process a proposer's message; ends that proposer's stream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// The message broke the protocol (wrong system id, gap, stale election…).
    #[error("{0}")]
    Refused(Refusal),
    /// Storage failed (disk full, I/O error); the timeline accepts nothing until it is
    /// reopened, which the next greeting attempts.
    #[error("timeline stopped accepting WAL after a storage error: {0}")]
    Failed(String),
}

/// A reply to one proposer message.
pub type Reply = Result<AcceptorMessage, ProposeError>;

/// One proposer stream's link to a timeline; its replies arrive on the receiver
/// [`Timeline::connect`] returns with it.
#[derive(Debug)]
pub struct Connection {
    pub id: u64,
    reply_slots: mpsc::Sender<Reply>,
}

enum Command {
    Message {
        connection: u64,
        message: ProposerMessage,
        /// Room for the reply on the sender's queue.
        reply: mpsc::OwnedPermit<Reply>,
    },
    /// The connection ended: flush, so that a proposer which reconnects (or
    /// sync-safekeepers) sees every byte it sent as durable (Neon #9259).
    Disconnected { connection: u64 },
    /// Remove local segments wholly below `horizon` (see
    /// [`TimelineStorage::remove_segments_below`]); the names removed go back.
    RemoveWal {
        horizon: Lsn,
        done: oneshot::Sender<Result<Vec<String>, String>>,
    },
    /// Flush and exit (shutdown or deletion).
    Stop,
}

/// Why [`Timeline::remove_wal_below`] removed nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoveWalError {
    #[error(transparent)]
    Stopped(TimelineStopped),
    #[error("{0}")]
    Failed(String),
}

/// Why a message did not reach the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timeline stopped (deleted, or the safekeeper is shutting down)")]
pub struct TimelineStopped;

/// State the actor publishes for everyone else.
#[derive(Debug)]
struct Shared {
    id: TenantTimelineId,
    status: Mutex<TimelineStatus>,
    /// Dropped when the actor exits, which ends replication streams.
    commit_lsn: Mutex<Option<watch::Sender<Lsn>>>,
    stopped: watch::Sender<bool>,
    readers: Mutex<ReaderPool>,
    metrics: TimelineMetrics,
    /// [`OffloadPositions`], as atomics: the offloader and the replication connections
    /// set them without going through the actor.
    uploaded_lsn: AtomicU64,
    remote_consistent_lsn: AtomicU64,
    removal_horizon_lsn: AtomicU64,
}

/// WAL readers for replication: each keeps its segment file open, so they are reused
/// rather than opened per read.
#[derive(Debug)]
struct ReaderPool {
    template: WalReader,
    idle: Vec<WalReader>,
}

/// A poisoned lock only means another thread panicked while holding it; the data
/// behind these locks is always left consistent (single assignments), so go on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The handle of an open timeline.
#[derive(Debug)]
pub struct Timeline {
    shared: Arc<Shared>,
    dir: PathBuf,
    params: PersistentState,
    inbox: mpsc::Sender<Command>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    next_connection: AtomicU64,
}

/// What the actor needs beyond the storage.
#[derive(Debug, Clone)]
pub struct TimelineContext {
    pub node_id: NodeId,
    pub wal_retention_bytes: Option<u64>,
    pub metrics: Metrics,
    /// Set when WAL is offloaded to object storage.
    pub offload: Option<Arc<Offload>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("{0}")]
    Acceptor(#[from] consensus::AcceptorError),
    #[error("starting the timeline's thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl Timeline {
    /// Run the timeline whose storage is open (blocking: may remove old WAL segments).
    pub fn start(
        dir: &Path,
        storage: TimelineStorage,
        context: &TimelineContext,
    ) -> Result<Arc<Timeline>, StartError> {
        let params = consensus::storage::AcceptorStorage::state(&storage).clone();
        let id = params.id;
        let (actor, status, reader, removal_horizon) =
            actor::Actor::new(dir.to_owned(), storage, context)?;
        let (commit_tx, _) = watch::channel(status.commit_lsn);
        let shared = Arc::new(Shared {
            id,
            commit_lsn: Mutex::new(Some(commit_tx)),
            status: Mutex::new(status),
            stopped: watch::channel(false).0,
            readers: Mutex::new(ReaderPool {
                template: reader,
                idle: Vec::new(),
            }),
            metrics: context.metrics.timeline(id),
            uploaded_lsn: AtomicU64::new(0),
            remote_consistent_lsn: AtomicU64::new(0),
            removal_horizon_lsn: AtomicU64::new(removal_horizon.0),
        });
        let (inbox, commands) = mpsc::channel(TIMELINE_QUEUE_LEN);
        let thread = std::thread::Builder::new()
            .name(format!("timeline-{}", &id.timeline_id.to_string()[..8]))
            .spawn({
                let shared = shared.clone();
                move || actor.run(commands, &shared)
            })
            .map_err(StartError::Thread)?;
        Ok(Arc::new(Timeline {
            shared,
            dir: dir.to_owned(),
            params,
            inbox,
            thread: Mutex::new(Some(thread)),
            next_connection: AtomicU64::new(1),
        }))
    }

    pub fn id(&self) -> TenantTimelineId {
        self.shared.id
    }

    pub fn status(&self) -> TimelineStatus {
        let mut status = lock(&self.shared.status).clone();
        status.offload = self.offload_positions();
        status
    }

    /// The timeline's directory, where its segment files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parameters fixed at creation.
    pub fn params(&self) -> &PersistentState {
        &self.params
    }

    pub fn offload_positions(&self) -> OffloadPositions {
        let load = |lsn: &AtomicU64| Lsn(lsn.load(Ordering::Acquire));
        OffloadPositions {
            uploaded_lsn: load(&self.shared.uploaded_lsn),
            remote_consistent_lsn: load(&self.shared.remote_consistent_lsn),
            removal_horizon_lsn: load(&self.shared.removal_horizon_lsn),
        }
    }

    /// What the offloader learned by listing object storage.
    pub fn set_uploaded_lsn(&self, lsn: Lsn) {
        self.shared.uploaded_lsn.store(lsn.0, Ordering::Release);
    }

    pub fn set_removal_horizon_lsn(&self, lsn: Lsn) {
        self.shared
            .removal_horizon_lsn
            .store(lsn.0, Ordering::Release);
    }

    /// A remote-consistent LSN reported by the pageserver, here or to a peer. Only
    /// ever rises: an older report (a reordered one, or a peer that heard less) says
    /// nothing about WAL the pageserver no longer needs.
    pub fn note_remote_consistent_lsn(&self, lsn: Lsn) {
        self.shared
            .remote_consistent_lsn
            .fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// Remove local segments wholly below `horizon`, on the actor's thread (between
    /// two of its messages, so never during a write). The names removed.
    pub async fn remove_wal_below(&self, horizon: Lsn) -> Result<Vec<String>, RemoveWalError> {
        let (done, result) = oneshot::channel();
        self.inbox
            .send(Command::RemoveWal { horizon, done })
            .await
            .map_err(|_| RemoveWalError::Stopped(TimelineStopped))?;
        match result.await {
            Ok(removed) => removed.map_err(RemoveWalError::Failed),
            Err(_) => Err(RemoveWalError::Stopped(TimelineStopped)),
        }
    }

    /// A new proposer stream to this timeline, and where its replies arrive.
    pub fn connect(&self) -> (Connection, mpsc::Receiver<Reply>) {
        let (reply_slots, replies) = mpsc::channel(CONNECTION_REPLY_QUEUE_LEN);
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        (Connection { id, reply_slots }, replies)
    }

    /// Hand a proposer's message to the actor. Waits for room on the connection's
    /// reply queue, then on the timeline's queue: both are bounded, so a fast proposer
    /// is slowed to the disk's pace and a proposer not reading its replies is no
    /// longer read either.
    pub async fn send(
        &self,
        connection: &Connection,
        message: ProposerMessage,
    ) -> Result<(), TimelineStopped> {
        let reply = connection
            .reply_slots
            .clone()
            .reserve_owned()
            .await
            .map_err(|_| TimelineStopped)?;
        self.inbox
            .send(Command::Message {
                connection: connection.id,
                message,
                reply,
            })
            .await
            .map_err(|_| TimelineStopped)
    }

    /// The connection ended; the actor flushes.
    pub async fn disconnect(&self, connection: &Connection) {
        let command = Command::Disconnected {
            connection: connection.id,
        };
        // An error means the actor is gone, and it flushed on its way out.
        let _ = self.inbox.send(command).await;
    }

    /// Resolves when the actor has stopped (deletion or shutdown).
    pub async fn stopped(&self) {
        let mut stopped = self.shared.stopped.subscribe();
        // An error means the sender is gone, which only happens once stopped.
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }

    /// Flush, stop the actor and wait for its thread (blocking).
    pub fn stop(&self) {
        // try_send would fail on a full queue; a blocking send waits for the actor to
        // make room. An error means the actor already exited.
        let _ = self.inbox.blocking_send(Command::Stop);
        if let Some(thread) = lock(&self.thread).take() {
            if thread.join().is_err() {
                tracing::error!(timeline = %self.id(), "timeline thread panicked");
            }
        }
    }
}

impl ReplicationTimeline for Timeline {
    fn id(&self) -> TenantTimelineId {
        self.shared.id
    }

    fn system_id(&self) -> u64 {
        self.params.system_id
    }

    fn wal_segment_size(&self) -> u32 {
        self.params.wal_segment_size
    }

    fn timeline_start_lsn(&self) -> Lsn {
        self.params.timeline_start_lsn
    }

    fn commit_lsn(&self) -> watch::Receiver<Lsn> {
        match &*lock(&self.shared.commit_lsn) {
            Some(sender) => sender.subscribe(),
            // Stopped: a receiver whose sender is gone, so streaming ends at once.
            None => watch::channel(self.status().commit_lsn).1,
        }
    }

    /// The pageserver's apply position is its remote-consistent LSN (what it made
    /// durable in object storage), which holds back local WAL removal. Other readers
    /// hold nothing back.
    fn reader_feedback(&self, feedback: &ReaderFeedback) {
        if feedback.application_name.as_deref() == Some(PAGESERVER_APPLICATION_NAME) {
            self.note_remote_consistent_lsn(feedback.apply_lsn);
        }
    }

    fn read_wal(&self, lsn: Lsn, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut reader = {
            let mut pool = lock(&self.shared.readers);
            pool.idle.pop().unwrap_or_else(|| pool.template.clone())
        };
        let result = reader.read(lsn, buf);
        let mut pool = lock(&self.shared.readers);
        if pool.idle.len() < MAX_POOLED_WAL_READERS {
            pool.idle.push(reader);
        }
        result
    }
}

impl Shared {
    fn publish(&self, status: TimelineStatus) {
        self.metrics
            .set_positions(status.term.0, status.flush_lsn, status.commit_lsn);
        if let Some(sender) = &*lock(&self.commit_lsn) {
            sender.send_if_modified(|lsn| {
                let advanced = status.commit_lsn > *lsn;
                if advanced {
                    *lsn = status.commit_lsn;
                }
                advanced
            });
        }
        *lock(&self.status) = status;
    }

    /// After the storage was reopened: readers of the old storage see a flush LSN that
    /// no longer moves.
    fn replace_reader(&self, reader: WalReader) {
        let mut pool = lock(&self.readers);
        pool.template = reader;
        pool.idle.clear();
    }

    fn mark_stopped(&self) {
        lock(&self.commit_lsn).take();
        self.stopped.send_replace(true);
    }
}

/// `<data_dir>/<tenant_id>/<timeline_id>`.
pub fn timeline_dir(data_dir: &Path, id: TenantTimelineId) -> PathBuf {
    data_dir
        .join(id.tenant_id.to_string())
        .join(id.timeline_id.to_string())
}
