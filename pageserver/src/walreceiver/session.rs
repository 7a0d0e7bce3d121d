//! One stream from one safekeeper: connect, `START_REPLICATION` at the timeline's
//! `last_record_lsn`, hand the WAL to the ingest thread, report positions back, and
//! end on error, on the end of the stream, or on a stall while another safekeeper has
//! more WAL.

use std::sync::Arc;
use std::time::Duration;

use pg_replication::{ReplicationConnection, StreamEvent, WalStream};
use postgres_wal::Lsn;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ingest::{self, IngestEnd};
use super::limits::{APPLICATION_NAME, CLOSE_TIMEOUT, WAL_QUEUE_CHUNKS};
use super::select::should_switch;
use super::status::Safekeepers;
use super::stopping;
use crate::timeline::{IngestState, Timeline};

/// The only PostgreSQL timeline (history) id Strata uses.
const PG_TIMELINE: u32 = 1;

/// How a stream ended.
#[derive(Debug)]
pub(super) enum SessionEnd {
    Shutdown,
    /// Ingest of the timeline stopped for good (already recorded on the timeline).
    Stopped,
    /// Try again, possibly elsewhere. `progressed`: WAL arrived before the end.
    Retry {
        reason: String,
        progressed: bool,
    },
}

/// Stream from safekeeper `sk` until the stream ends, ingest stops or shutdown.
pub(super) async fn run(
    timeline: &Arc<Timeline>,
    safekeepers: &Safekeepers,
    sk: usize,
    stall_timeout: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let start = timeline.last_record_lsn();
    let addr = safekeepers.config(sk).pg.clone();
    let open = open_stream(timeline, &addr, start);
    let stream = tokio::select! {
        opened = open => match opened {
            Ok(stream) => stream,
            Err(reason) => return SessionEnd::Retry { reason, progressed: false },
        },
        () = stopping(shutdown) => return SessionEnd::Shutdown,
    };
    tracing::info!(safekeeper = %safekeepers.config(sk).id, %addr, %start, "streaming WAL");
    timeline.set_ingest_state(IngestState::Ingesting {
        source: addr.clone(),
    });

    let (wal_tx, wal_rx) = mpsc::channel(WAL_QUEUE_CHUNKS);
    let (committed_tx, committed_rx) = watch::channel(start);
    let worker = {
        let timeline = timeline.clone();
        // The ingest thread logs (and freezes layers) inside the timeline's span.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| ingest::run(timeline, start, wal_rx, committed_tx))
        })
    };
    let mut session = Session {
        timeline,
        safekeepers,
        sk,
        stall_timeout,
        stream,
        wal_tx,
        committed: committed_rx,
        start,
        received: start,
        last_wal: Instant::now(),
    };
    let outcome = session.pump(shutdown).await;
    session.finish(worker, outcome).await
}

/// Connect, check the cluster, and start replication at `start`.
async fn open_stream(timeline: &Timeline, addr: &str, start: Lsn) -> Result<WalStream, String> {
    let id = timeline.id();
    let options = format!(
        "-c tenant_id={} -c timeline_id={}",
        id.tenant_id, id.timeline_id
    );
    let mut connection = ReplicationConnection::connect_with(
        addr,
        APPLICATION_NAME,
        APPLICATION_NAME,
        &[("options", options.as_str())],
    )
    .await
    .map_err(|e| e.to_string())?;
    let system = connection
        .identify_system()
        .await
        .map_err(|e| e.to_string())?;
    let ours = timeline.meta().system_id;
    if system.system_id != ours {
        return Err(format!(
            "the safekeeper serves system {} under this timeline id, ours is {ours}",
            system.system_id
        ));
    }
    connection
        .start_replication(None, start, PG_TIMELINE)
        .await
        .map_err(|e| e.to_string())
}

/// Why the connection side stopped pumping.
enum Outcome {
    Shutdown,
    /// The ingest thread ended on its own (its result is waited for).
    IngestEnded,
    Retry(String),
}

struct Session<'a> {
    timeline: &'a Arc<Timeline>,
    safekeepers: &'a Safekeepers,
    sk: usize,
    stall_timeout: Duration,
    stream: WalStream,
    wal_tx: mpsc::Sender<Vec<u8>>,
    /// End of the last commit, from the ingest thread.
    committed: watch::Receiver<Lsn>,
    /// Where the stream started, and everything below `received` was received.
    start: Lsn,
    received: Lsn,
    /// When WAL last arrived (or the stream started, or a stall check found nothing
    /// better).
    last_wal: Instant,
}

impl Session<'_> {
    async fn pump(&mut self, shutdown: &mut watch::Receiver<bool>) -> Outcome {
        loop {
            let stall_at = self.last_wal + self.stall_timeout;
            tokio::select! {
                () = stopping(shutdown) => return Outcome::Shutdown,
                event = self.stream.next() => match event {
                    Ok(StreamEvent::Wal { start, wal }) => {
                        if let Err(outcome) = self.on_wal(start, wal).await {
                            return outcome;
                        }
                    }
                    Ok(StreamEvent::Keepalive { reply_requested, .. }) => {
                        if reply_requested {
                            if let Err(error) = self.send_status().await {
                                return Outcome::Retry(error);
                            }
                        }
                    }
                    Ok(StreamEvent::End) => {
                        return Outcome::Retry("the safekeeper ended the stream".to_owned());
                    }
                    Err(error) => return Outcome::Retry(error.to_string()),
                },
                changed = self.committed.changed() => {
                    // The ingest thread drops its sender when it ends by itself.
                    if changed.is_err() {
                        return Outcome::IngestEnded;
                    }
                    self.report_lag();
                    if let Err(error) = self.send_status().await {
                        return Outcome::Retry(error);
                    }
                }
                () = tokio::time::sleep_until(stall_at) => {
                    if let Some(reason) = self.stalled().await {
                        return Outcome::Retry(reason);
                    }
                }
            }
        }
    }

    fn report_lag(&self) {
        let ingested = *self.committed.borrow();
        let lag = self.received.0.saturating_sub(ingested.0);
        self.timeline
            .metrics()
            .ingest_lag
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    async fn on_wal(&mut self, start: Lsn, wal: Vec<u8>) -> Result<(), Outcome> {
        if start != self.received {
            return Err(Outcome::Retry(format!(
                "the safekeeper sent WAL at {start}, expected {}",
                self.received
            )));
        }
        let len = wal.len() as u64;
        self.received = Lsn(self.received.0 + len);
        self.timeline.metrics().wal_ingest_bytes.inc_by(len);
        self.report_lag();
        self.last_wal = Instant::now();
        // Waits when the ingest thread is behind by a whole queue: TCP then holds the
        // safekeeper back.
        self.wal_tx
            .send(wal)
            .await
            .map_err(|_| Outcome::IngestEnded)
    }

    /// Write = received, flush = apply = durable in the store.
    async fn send_status(&mut self) -> Result<(), String> {
        // apply: what the safekeepers may forget WAL below (object storage's LSN when
        // tiered), so that a pageserver restored from object storage finds its WAL.
        let durable = self.timeline.disk_consistent_lsn();
        self.stream
            .send_positions(self.received, durable, self.timeline.wal_horizon())
            .await
            .map_err(|e| e.to_string())
    }

    /// Nothing arrived for the stall timeout: leave if another safekeeper has more.
    async fn stalled(&mut self) -> Option<String> {
        let statuses = self.safekeepers.statuses().await;
        self.last_wal = Instant::now();
        if should_switch(&statuses, self.sk, self.received) {
            Some(format!(
                "no WAL for {:?} past {} while another safekeeper has more",
                self.stall_timeout, self.received
            ))
        } else {
            None
        }
    }

    /// Let the ingest thread commit what it has and end, then close the stream.
    async fn finish(self, worker: JoinHandle<IngestEnd>, outcome: Outcome) -> SessionEnd {
        let Session {
            timeline,
            stream,
            wal_tx,
            start,
            received,
            ..
        } = self;
        drop(wal_tx);
        let ended = worker.await;
        // Best effort: the safekeeper may be gone or frozen.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.close()).await;
        let progressed = received > start;
        match ended {
            Ok(IngestEnd::Stop(reason)) => {
                timeline.set_ingest_state(IngestState::Stopped(reason));
                return SessionEnd::Stopped;
            }
            Err(join) => {
                timeline.set_ingest_state(IngestState::Stopped(format!(
                    "the ingest thread failed: {join}"
                )));
                return SessionEnd::Stopped;
            }
            Ok(IngestEnd::EndOfWal(error)) => {
                return SessionEnd::Retry {
                    reason: format!("the stream's WAL ends: {error}"),
                    progressed,
                };
            }
            Ok(IngestEnd::Closed) => {}
        }
        match outcome {
            Outcome::Shutdown => SessionEnd::Shutdown,
            Outcome::Retry(reason) => SessionEnd::Retry { reason, progressed },
            Outcome::IngestEnded => SessionEnd::Retry {
                reason: "the ingest thread ended".to_owned(),
                progressed,
            },
        }
    }
}
