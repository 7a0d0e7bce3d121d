//! The actor of one timeline: owns the [`Acceptor`] and its storage on a dedicated
//! thread, and decides when to fsync.
//!
//! Flushes (one fsync for everything written since the last one) happen when the
//! inbound queue is empty, when an append reaches a segment end, when
//! [`MAX_UNFLUSHED_WAL_BYTES`] are written, on a disconnect and on stop; never on a
//! timer. The queue-empty rule is what batches fsyncs under load (a proposer pipelining
//! appends gets one fsync per burst) without adding latency when idle (Neon #9690: a
//! timer cost up to a second per commit). Append responses are sent only after the flush
//! that made their WAL durable.
//!
//! A storage error stops the acceptor: the requester and every connection waiting for a
//! flush get [`ProposeError::Failed`], and so does every later message, until a new
//! greeting finds the storage reopenable (say, after an operator freed disk space).
//! Other timelines are unaffected: each has its own actor.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use consensus::messages::ProposerMessage;
use consensus::storage::AcceptorStorage;
use consensus::{Acceptor, AcceptorError};
use postgres_wal::Lsn;
use strata_ids::NodeId;
use tokio::sync::mpsc;

use super::{Command, ProposeError, Reply, Shared, StartError, TimelineContext, TimelineStatus};
use crate::limits::MAX_UNFLUSHED_WAL_BYTES;
use crate::logging::timeline_span;
use crate::metrics::Metrics;
use crate::storage::{removal_horizon, RemovalHorizonInputs, TimelineStorage, WalReader};

pub(super) struct Actor {
    dir: PathBuf,
    node_id: NodeId,
    metrics: Metrics,
    /// `None` after a storage failure, until the storage is reopened.
    acceptor: Option<Acceptor<TimelineStorage>>,
    failure: Option<String>,
    /// The last status published (kept for when the acceptor is gone).
    status: TimelineStatus,
    /// Connections with an append accepted since the last flush, each holding the
    /// permit for the reply that flush will send.
    awaiting_flush: Vec<(u64, mpsc::OwnedPermit<Reply>)>,
    /// WAL bytes written since the last flush.
    unflushed_bytes: u64,
    /// An append reached a segment end: flush before the next message.
    at_segment_end: bool,
    /// Connections whose stream an error ended; their queued messages are dropped
    /// until their disconnect arrives.
    closed: HashSet<u64>,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("dir", &self.dir)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl Actor {
    /// Open the acceptor over `storage`, removing WAL below the retention horizon
    /// first when no object store is configured (see [`remove_old_wal`]; with one, the
    /// offloader decides what goes). Also returns that horizon.
    pub(super) fn new(
        dir: PathBuf,
        storage: TimelineStorage,
        context: &TimelineContext,
    ) -> Result<(Actor, TimelineStatus, WalReader, Lsn), StartError> {
        let horizon = match context.offload {
            None => remove_old_wal(&storage, context.wal_retention_bytes),
            Some(_) => Lsn::INVALID,
        };
        let reader = storage.reader();
        let acceptor = Acceptor::new(context.node_id, storage)?;
        let status = status_of(&acceptor, None);
        let actor = Actor {
            dir,
            node_id: context.node_id,
            metrics: context.metrics.clone(),
            acceptor: Some(acceptor),
            failure: None,
            status: status.clone(),
            awaiting_flush: Vec::new(),
            unflushed_bytes: 0,
            at_segment_end: false,
            closed: HashSet::new(),
        };
        Ok((actor, status, reader, horizon))
    }

    pub(super) fn run(mut self, mut commands: mpsc::Receiver<Command>, shared: &Arc<Shared>) {
        let span = timeline_span(shared.id);
        let _entered = span.enter();
        tracing::info!(
            term = self.status.term.0,
            flush_lsn = %self.status.flush_lsn,
            commit_lsn = %self.status.commit_lsn,
            "timeline running"
        );
        shared.publish(self.status.clone());
        loop {
            let command = match commands.try_recv() {
                Ok(command) => command,
                Err(mpsc::error::TryRecvError::Empty) if self.flush_due() => {
                    self.flush(shared);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Empty) => match commands.blocking_recv() {
                    Some(command) => command,
                    None => break,
                },
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            match command {
                Command::Message {
                    connection,
                    message,
                    reply,
                } => self.handle(shared, connection, message, reply),
                Command::Disconnected { connection } => {
                    self.closed.remove(&connection);
                    self.flush(shared);
                }
                Command::RemoveWal { horizon, done } => {
                    // The receiver gone means the offloader stopped; nothing to tell.
                    let _ = done.send(self.remove_wal_below(horizon));
                }
                Command::Stop => break,
            }
            if self.at_segment_end || self.unflushed_bytes >= MAX_UNFLUSHED_WAL_BYTES {
                self.flush(shared);
            }
        }
        self.flush(shared);
        self.persist_positions(shared);
        shared.mark_stopped();
        tracing::info!(flush_lsn = %self.status.flush_lsn, "timeline stopped");
    }

    fn flush_due(&self) -> bool {
        !self.awaiting_flush.is_empty()
    }

    fn handle(
        &mut self,
        shared: &Shared,
        connection: u64,
        message: ProposerMessage,
        reply: mpsc::OwnedPermit<Reply>,
    ) {
        if self.closed.contains(&connection) {
            return;
        }
        if self.acceptor.is_none() && matches!(message, ProposerMessage::Greeting(_)) {
            self.reopen(shared);
        }
        let Some(acceptor) = self.acceptor.as_mut() else {
            let failure = self.failure.clone().unwrap_or_default();
            self.refuse(connection, reply, ProposeError::Failed(failure));
            return;
        };
        let append = match &message {
            ProposerMessage::Append(a) => Some((a.begin_lsn, a.end_lsn)),
            _ => None,
        };
        let segment_size = u64::from(acceptor.state().wal_segment_size);
        match acceptor.handle(message) {
            Ok(Some(answer)) => {
                // A vote may have changed the term: visible before the reply is.
                self.publish(shared);
                reply.send(Ok(answer));
            }
            Ok(None) => match append {
                Some((begin, end)) => {
                    let bytes = end.0 - begin.0;
                    shared.metrics.appends.inc();
                    shared.metrics.wal_bytes_received.inc_by(bytes);
                    self.unflushed_bytes += bytes;
                    self.at_segment_end |=
                        bytes > 0 && begin.0 / segment_size != end.0 / segment_size;
                    // One reply per flush and connection: the latest permit is kept,
                    // earlier ones are released.
                    self.awaiting_flush.retain(|(c, _)| *c != connection);
                    self.awaiting_flush.push((connection, reply));
                }
                // An accepted Elected has no reply; its truncation changed the state.
                None => self.publish(shared),
            },
            Err(AcceptorError::Refused(refusal)) => {
                tracing::warn!(connection, %refusal, "refused a proposer message");
                self.refuse(connection, reply, ProposeError::Refused(refusal));
            }
            Err(error) => {
                self.fail(shared, &error);
                self.refuse(connection, reply, ProposeError::Failed(error.to_string()));
            }
        }
    }

    /// End `connection`'s stream with `error`, dropping what it still has queued.
    fn refuse(&mut self, connection: u64, reply: mpsc::OwnedPermit<Reply>, error: ProposeError) {
        reply.send(Err(error));
        self.closed.insert(connection);
        self.awaiting_flush.retain(|(c, _)| *c != connection);
    }

    fn flush(&mut self, shared: &Shared) {
        let Some(acceptor) = self.acceptor.as_mut() else {
            return;
        };
        let timed = self.unflushed_bytes > 0;
        let started = Instant::now();
        match acceptor.flush() {
            Ok(answer) => {
                if timed {
                    self.metrics
                        .fsync_seconds
                        .observe(started.elapsed().as_secs_f64());
                    shared
                        .metrics
                        .wal_bytes_flushed
                        .inc_by(self.unflushed_bytes);
                }
                self.unflushed_bytes = 0;
                self.at_segment_end = false;
                // Published before the replies go out, so that a proposer that got
                // its acknowledgement finds the same positions in status and metrics.
                self.publish(shared);
                for (_, reply) in self.awaiting_flush.drain(..) {
                    if let Some(answer) = &answer {
                        reply.send(Ok(answer.clone()));
                    }
                }
            }
            Err(error) => self.fail(shared, &error),
        }
    }

    /// Persist the commit LSN and peer horizon, which the acceptor persists lazily, so
    /// that a clean restart reports the commit LSN it had (a crash only makes it lag:
    /// the proposer announces it again).
    fn persist_positions(&mut self, shared: &Shared) {
        if let Some(acceptor) = self.acceptor.as_mut() {
            if let Err(error) = acceptor.persist_lsns() {
                self.fail(shared, &error);
            }
        }
    }

    /// Stop accepting: the storage is in an unknown state until reopened.
    fn fail(&mut self, shared: &Shared, error: &AcceptorError) {
        let text = error.to_string();
        tracing::error!(error = %text, "storage failed; the timeline stops accepting WAL until it is reopened");
        shared.metrics.storage_errors.inc();
        self.acceptor = None;
        self.unflushed_bytes = 0;
        self.at_segment_end = false;
        for (connection, reply) in std::mem::take(&mut self.awaiting_flush) {
            reply.send(Err(ProposeError::Failed(text.clone())));
            self.closed.insert(connection);
        }
        self.failure = Some(text);
        self.status.failure = self.failure.clone();
        shared.publish(self.status.clone());
    }

    /// Reopen the storage after a failure; re-reads everything from disk.
    fn reopen(&mut self, shared: &Shared) {
        let opened = TimelineStorage::open(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|storage| Acceptor::new(self.node_id, storage).map_err(|e| e.to_string()));
        match opened {
            Ok(acceptor) => {
                tracing::info!(flush_lsn = %acceptor.flush_lsn(), "storage reopened; accepting WAL again");
                shared.replace_reader(acceptor.storage().reader());
                self.acceptor = Some(acceptor);
                self.failure = None;
                self.publish(shared);
            }
            Err(error) => {
                tracing::warn!(%error, "storage still cannot be reopened");
                self.failure = Some(error);
                self.status.failure = self.failure.clone();
                shared.publish(self.status.clone());
            }
        }
    }

    /// A failure here is not a storage failure of the timeline: WAL left on disk is
    /// harmless, and the offloader asks again.
    fn remove_wal_below(&self, horizon: Lsn) -> Result<Vec<String>, String> {
        let Some(acceptor) = &self.acceptor else {
            return Err("the timeline's storage failed; nothing is removed".into());
        };
        acceptor
            .storage()
            .remove_segments_below(horizon)
            .map_err(|error| error.to_string())
    }

    fn publish(&mut self, shared: &Shared) {
        if let Some(acceptor) = &self.acceptor {
            self.status = status_of(acceptor, self.failure.clone());
            shared.publish(self.status.clone());
        }
    }
}

fn status_of(acceptor: &Acceptor<TimelineStorage>, failure: Option<String>) -> TimelineStatus {
    let state = acceptor.state();
    TimelineStatus {
        id: state.id,
        system_id: state.system_id,
        pg_version: state.pg_version,
        wal_segment_size: state.wal_segment_size,
        timeline_start_lsn: state.timeline_start_lsn,
        term: state.term,
        term_history: acceptor.term_history(),
        flush_lsn: acceptor.flush_lsn(),
        commit_lsn: acceptor.commit_lsn(),
        failure,
        offload: Default::default(),
    }
}

/// Without an object store: remove segments below the retention horizon, when a
/// timeline is opened (and only then: nothing else holds removed WAL, so a restart is
/// often enough). Returns the horizon. A failure is logged and otherwise ignored: old
/// WAL left on disk is harmless.
fn remove_old_wal(storage: &TimelineStorage, retention_bytes: Option<u64>) -> Lsn {
    let Some(retention_bytes) = retention_bytes else {
        return Lsn::INVALID;
    };
    let horizon = removal_horizon(&RemovalHorizonInputs {
        commit_lsn: storage.state().commit_lsn,
        retention_bytes,
        offload: None,
    });
    if horizon == Lsn::INVALID {
        return horizon;
    }
    match storage.remove_segments_below(horizon) {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => tracing::info!(%horizon, count = removed.len(), "removed old WAL segments"),
        Err(error) => tracing::warn!(%error, "removing old WAL segments"),
    }
    horizon
}
