//! `START_REPLICATION`: the WAL sender loop of one connection.
//!
//! After CopyBothResponse the server sends XLogData (`w`) messages carrying WAL from the
//! requested start up to the commit LSN, at most [`MAX_WAL_CHUNK_BYTES`] each and never
//! across a segment boundary, then waits for the commit LSN to advance. It sends a
//! keepalive (`k`) when nothing was sent for [`KEEPALIVE_INTERVAL`], when the client asks
//! for one, and one asking for a reply when the client has been silent for half of
//! [`REPLICATION_TIMEOUT`]; after the whole timeout without a message the connection is
//! closed. Standby status updates (`r`) are handed to
//! [`ReplicationTimeline::reader_feedback`]; hot standby feedback (`h`) is ignored.
//!
//! Streaming ends when the client sends CopyDone (answered with CopyDone, then the caller
//! sends CommandComplete and ReadyForQuery) or Terminate, on shutdown, or on an error.

use std::sync::Arc;

use postgres_wal::Lsn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, trace};

use super::connection::{Connection, ReadError};
use super::errors::{sqlstate, PgError};
use super::limits::{KEEPALIVE_INTERVAL, MAX_WAL_CHUNK_BYTES, REPLICATION_TIMEOUT};
use super::messages::{parse_standby_message, pg_now, FrontendMessage, StandbyMessage};
use super::session::{shutdown_error, wait_for_shutdown, Session, SessionError};
use super::{ReaderFeedback, ReplicationTimeline};

/// How streaming ended.
#[derive(Debug)]
pub(crate) enum StreamEnd {
    /// The client sent CopyDone and we answered with ours: back to commands.
    CopyDone,
    /// The client sent Terminate or closed the connection.
    Terminate,
    /// Report this error and close the connection.
    Fatal(PgError),
}

struct Sender<'a, R, W> {
    conn: &'a mut Connection<R, W>,
    session: &'a Session,
    commit_rx: watch::Receiver<Lsn>,
    /// The commit LSN last observed.
    commit_lsn: Lsn,
    /// Whether the commit LSN's sender is gone (the timeline is no longer served).
    commit_closed: bool,
    /// Everything below this was sent.
    sent: Lsn,
    last_send: Instant,
    last_receive: Instant,
    /// A keepalive asking for a reply was sent since the last client message.
    ping_sent: bool,
}

/// Stream WAL from `start` (already checked) until the client stops. Sends the
/// CopyBothResponse first.
pub(crate) async fn stream_wal<R, W>(
    conn: &mut Connection<R, W>,
    session: &Session,
    shutdown: &mut watch::Receiver<bool>,
    start: Lsn,
) -> Result<StreamEnd, SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut commit_rx = session.timeline.commit_lsn();
    let commit_lsn = *commit_rx.borrow_and_update();
    conn.out.copy_both_response();
    conn.flush().await?;
    debug!(%start, %commit_lsn, "streaming started");
    let now = Instant::now();
    let mut sender = Sender {
        conn,
        session,
        commit_rx,
        commit_lsn,
        commit_closed: false,
        sent: start,
        last_send: now,
        last_receive: now,
        ping_sent: false,
    };
    let end = sender.run(shutdown).await;
    debug!(sent = %sender.sent, "streaming ended");
    end
}

/// What the loop should do next.
enum Step {
    Message(Option<FrontendMessage>),
    CommitAdvanced,
    CommitClosed,
    Timer,
    Send,
    Shutdown,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Sender<'_, R, W> {
    async fn run(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<StreamEnd, SessionError> {
        loop {
            let can_send = self.sent < self.commit_lsn;
            let deadline = self.next_deadline();
            let step = tokio::select! {
                biased;
                _ = wait_for_shutdown(shutdown) => Step::Shutdown,
                read = self.conn.read_message() => match read {
                    Ok(message) => Step::Message(message),
                    Err(ReadError::Protocol(err)) => return Ok(StreamEnd::Fatal(err.into())),
                    Err(err) => return Err(err.into()),
                },
                changed = self.commit_rx.changed(), if !can_send && !self.commit_closed => {
                    if changed.is_ok() { Step::CommitAdvanced } else { Step::CommitClosed }
                }
                _ = tokio::time::sleep_until(deadline) => Step::Timer,
                _ = std::future::ready(()), if can_send => Step::Send,
            };
            match step {
                Step::Shutdown => return Ok(StreamEnd::Fatal(shutdown_error())),
                Step::Message(None) => return Ok(StreamEnd::Terminate),
                Step::Message(Some(message)) => {
                    if let Some(end) = self.on_message(message).await? {
                        return Ok(end);
                    }
                }
                Step::CommitAdvanced => {
                    let commit_lsn = *self.commit_rx.borrow_and_update();
                    self.commit_lsn = self.commit_lsn.max(commit_lsn);
                }
                Step::CommitClosed => self.commit_closed = true,
                Step::Timer => {
                    if let Some(end) = self.on_timer().await? {
                        return Ok(end);
                    }
                }
                Step::Send => {
                    if let Err(err) = self.send_chunk().await? {
                        return Ok(StreamEnd::Fatal(err));
                    }
                }
            }
            if self.commit_closed && self.sent >= self.commit_lsn {
                return Ok(StreamEnd::Fatal(PgError::fatal(
                    sqlstate::ADMIN_SHUTDOWN,
                    "the timeline is no longer served by this safekeeper",
                )));
            }
        }
    }

    /// The next time the timer must fire: a periodic keepalive, the half-timeout ping, or
    /// the timeout itself.
    fn next_deadline(&self) -> Instant {
        let keepalive = self.last_send + KEEPALIVE_INTERVAL;
        let silence_limit = if self.ping_sent {
            self.last_receive + REPLICATION_TIMEOUT
        } else {
            self.last_receive + REPLICATION_TIMEOUT / 2
        };
        keepalive.min(silence_limit)
    }

    async fn on_timer(&mut self) -> Result<Option<StreamEnd>, SessionError> {
        let now = Instant::now();
        let silent_for = now.saturating_duration_since(self.last_receive);
        if silent_for >= REPLICATION_TIMEOUT {
            return Ok(Some(StreamEnd::Fatal(PgError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("terminating walsender: replication timeout (no message from the client for {silent_for:?})"),
            ))));
        }
        if silent_for >= REPLICATION_TIMEOUT / 2 && !self.ping_sent {
            self.ping_sent = true;
            self.send_keepalive(true).await?;
        } else if now.saturating_duration_since(self.last_send) >= KEEPALIVE_INTERVAL {
            self.send_keepalive(false).await?;
        }
        Ok(None)
    }

    async fn send_keepalive(&mut self, reply_requested: bool) -> Result<(), SessionError> {
        trace!(sent = %self.sent, reply_requested, "keepalive");
        self.conn
            .out
            .keepalive(self.sent, pg_now(), reply_requested);
        self.conn.flush().await?;
        self.last_send = Instant::now();
        Ok(())
    }

    async fn on_message(
        &mut self,
        message: FrontendMessage,
    ) -> Result<Option<StreamEnd>, SessionError> {
        self.last_receive = Instant::now();
        self.ping_sent = false;
        match message {
            FrontendMessage::CopyData(data) => match parse_standby_message(&data) {
                Ok(standby) => {
                    self.on_standby_message(standby).await?;
                    Ok(None)
                }
                Err(err) => Ok(Some(StreamEnd::Fatal(err.into()))),
            },
            FrontendMessage::CopyDone => {
                self.conn.out.copy_done();
                Ok(Some(StreamEnd::CopyDone))
            }
            FrontendMessage::Terminate => Ok(Some(StreamEnd::Terminate)),
            FrontendMessage::CopyFail(reason) => Ok(Some(StreamEnd::Fatal(PgError::fatal(
                sqlstate::QUERY_CANCELED,
                format!("COPY from stdin failed: {reason}"),
            )))),
            FrontendMessage::Query(_) | FrontendMessage::Unsupported(_) => {
                Ok(Some(StreamEnd::Fatal(PgError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    "unexpected message while streaming: only CopyData, CopyDone and Terminate are allowed",
                ))))
            }
        }
    }

    async fn on_standby_message(&mut self, message: StandbyMessage) -> Result<(), SessionError> {
        match message {
            StandbyMessage::Reply {
                write_lsn,
                flush_lsn,
                apply_lsn,
                reply_requested,
                ..
            } => {
                trace!(%write_lsn, %flush_lsn, %apply_lsn, reply_requested, "standby status update");
                self.session.timeline.reader_feedback(&ReaderFeedback {
                    application_name: self.session.params.application_name.clone(),
                    write_lsn,
                    flush_lsn,
                    apply_lsn,
                });
                if reply_requested {
                    self.send_keepalive(false).await?;
                }
            }
            StandbyMessage::HotStandbyFeedback {
                xmin, catalog_xmin, ..
            } => {
                trace!(xmin, catalog_xmin, "hot standby feedback ignored");
            }
        }
        Ok(())
    }

    /// Send the next chunk of WAL below the commit LSN. The inner error is reported to the
    /// client.
    async fn send_chunk(&mut self) -> Result<Result<(), PgError>, SessionError> {
        let start = self.sent;
        let len = chunk_len(start, self.commit_lsn, self.session.segment_size.bytes());
        let wal = match read_wal(Arc::clone(&self.session.timeline), start, len).await {
            Ok(wal) => wal,
            Err(err) => {
                return Ok(Err(PgError::fatal(
                    sqlstate::IO_ERROR,
                    format!("could not read WAL at {start}: {err}"),
                )))
            }
        };
        self.conn
            .out
            .xlog_data(start, self.commit_lsn, pg_now(), &wal);
        self.conn.flush().await?;
        self.sent = Lsn(start.0 + wal.len() as u64);
        self.last_send = Instant::now();
        trace!(%start, len, "sent WAL");
        Ok(Ok(()))
    }
}

/// How many bytes to send from `start`: up to the commit LSN, at most one chunk, and not
/// across a segment boundary. Zero only when `start >= commit_lsn`.
pub(crate) fn chunk_len(start: Lsn, commit_lsn: Lsn, segment_size: u64) -> usize {
    let to_commit = commit_lsn.0.saturating_sub(start.0);
    let to_segment_end = segment_size - start.0 % segment_size;
    let len = to_commit
        .min(to_segment_end)
        .min(MAX_WAL_CHUNK_BYTES as u64);
    // At most MAX_WAL_CHUNK_BYTES, which fits in usize.
    usize::try_from(len).unwrap_or(MAX_WAL_CHUNK_BYTES)
}

/// Read exactly `len` bytes of WAL at `start` on a blocking thread.
async fn read_wal(
    timeline: Arc<dyn ReplicationTimeline>,
    start: Lsn,
    len: usize,
) -> std::io::Result<Vec<u8>> {
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        // Each round makes progress or fails, so this runs at most `len` times.
        while filled < len {
            let at = Lsn(start.0 + filled as u64);
            match timeline.read_wal(at, &mut buf[filled..])? {
                0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "no WAL at {at} (expected up to {})",
                            Lsn(start.0 + len as u64)
                        ),
                    ))
                }
                n => filled += n.min(len - filled),
            }
        }
        Ok(buf)
    });
    read.await.map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stop_at_commit_lsn_chunk_size_and_segment_end() {
        let seg = 16 << 20;
        assert_eq!(chunk_len(Lsn(0x100_0000), Lsn(0x100_0000), seg), 0);
        assert_eq!(chunk_len(Lsn(0x100_0000), Lsn(0x100_0010), seg), 0x10);
        assert_eq!(
            chunk_len(Lsn(0x100_0000), Lsn(0x300_0000), seg),
            MAX_WAL_CHUNK_BYTES
        );
        assert_eq!(chunk_len(Lsn(0x1FF_FFF0), Lsn(0x300_0000), seg), 0x10);
        assert_eq!(chunk_len(Lsn(0x200_0000), Lsn(0x100_0000), seg), 0);
        let one_mb = 1 << 20;
        assert_eq!(chunk_len(Lsn(one_mb - 8), Lsn(10 * one_mb), one_mb), 8);
    }
}
