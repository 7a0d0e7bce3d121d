//! `GetBasebackup`: a tar written by `basebackup::write_basebackup` on the blocking
//! pool, streamed in chunks of at most [`BASEBACKUP_CHUNK_BYTES`] through a bounded
//! queue (a slow client holds the writer back). The first chunk carries the LSN of the
//! backup.

use std::io::Write;
use std::sync::Arc;

use postgres_wal::Lsn;
use strata_proto::pageserver as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{parse_ids, status::from_read, Service};
use crate::limits::{BASEBACKUP_CHUNK_BYTES, BASEBACKUP_QUEUE_CHUNKS};
use crate::logging::timeline_span;
use crate::metrics::Metrics;
use crate::timeline::Timeline;

pub type Outbound = ReceiverStream<Result<pb::BasebackupChunk, Status>>;

pub async fn start(service: &Service, request: pb::BasebackupRequest) -> Result<Outbound, Status> {
    let id = parse_ids(&request.tenant_id, &request.timeline_id)?;
    let (timeline, requested) = service.resolve(id, Lsn(request.lsn)).await?;
    let standby = request.standby;
    let (tx, rx) = mpsc::channel(BASEBACKUP_QUEUE_CHUNKS);
    let metrics = service.metrics.clone();
    let span = timeline_span(id);
    tokio::task::spawn_blocking(move || {
        let _entered =
            tracing::info_span!(parent: &span, "basebackup", lsn = %requested, standby).entered();
        let errors = tx.clone();
        if let Err(status) = write(&timeline, requested, standby, tx, &metrics) {
            if status.code() != tonic::Code::Cancelled {
                tracing::warn!(code = ?status.code(), error = status.message(), "basebackup failed");
            }
            // The client may be gone already; nothing else to tell.
            let _ = errors.blocking_send(Err(status));
        }
    });
    Ok(ReceiverStream::new(rx))
}

fn write(
    timeline: &Arc<Timeline>,
    requested: Lsn,
    standby: bool,
    tx: mpsc::Sender<Result<pb::BasebackupChunk, Status>>,
    metrics: &Metrics,
) -> Result<(), Status> {
    let mut chunks = ChunkWriter {
        tx,
        buf: Vec::with_capacity(BASEBACKUP_CHUNK_BYTES),
        lsn: None,
        sent_bytes: 0,
    };
    // The backup's LSN leads the first chunk, so it is resolved (as the writer will
    // resolve it) before any byte is written.
    let (_, lsn) = page_model::read::last_record(timeline.as_ref(), requested)
        .map_err(from_read)?
        .ok_or_else(|| Status::out_of_range(format!("no record ends at or before {requested}")))?;
    chunks.lsn = Some(lsn);
    basebackup::write_basebackup(timeline.as_ref(), requested, standby, &mut chunks)
        .map_err(basebackup_status)?;
    chunks
        .flush()
        .map_err(|e| Status::cancelled(e.to_string()))?;
    metrics.basebackups.inc();
    metrics.basebackup_bytes.inc_by(chunks.sent_bytes);
    tracing::info!(%lsn, bytes = chunks.sent_bytes, "basebackup sent");
    Ok(())
}

/// Cuts the tar into chunks; the first carries the backup's LSN.
struct ChunkWriter {
    tx: mpsc::Sender<Result<pb::BasebackupChunk, Status>>,
    buf: Vec<u8>,
    /// The backup's LSN, set before the first byte is written, sent once.
    lsn: Option<Lsn>,
    sent_bytes: u64,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BASEBACKUP_CHUNK_BYTES));
        let len = data.len() as u64;
        let chunk = pb::BasebackupChunk {
            lsn: self.lsn.take().map_or(0, |lsn| lsn.0),
            data,
        };
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })?;
        self.sent_bytes += len;
        Ok(())
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = BASEBACKUP_CHUNK_BYTES - self.buf.len();
        let n = bytes.len().min(room);
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == BASEBACKUP_CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() || self.lsn.is_some() {
            self.send()?;
        }
        Ok(())
    }
}

fn basebackup_status(error: basebackup::BasebackupError) -> Status {
    use basebackup::BasebackupError as E;
    match error {
        E::Read(read) => from_read(read),
        // The only writer is the chunk queue: the client went away.
        E::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
            Status::cancelled(io.to_string())
        }
        E::NoRecord(_) => Status::out_of_range(error.to_string()),
        E::Control(_) => {
            tracing::error!(%error, "stored pg_control is corrupt; not served");
            Status::data_loss(error.to_string())
        }
        E::Io(_) | E::Missing { .. } | E::Wal(_) | E::Unsupported(_) => {
            tracing::error!(%error, "basebackup failed");
            Status::internal(error.to_string())
        }
    }
}
