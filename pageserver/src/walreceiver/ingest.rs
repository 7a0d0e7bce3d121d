//! The ingest thread of one stream: WAL bytes in, committed batches out.
//!
//! It runs on a blocking thread because ingest reads the timeline's store and a commit
//! syncs it. It owns the decoder (started at `last_record_lsn`, a record boundary),
//! the `WalIngest` state and the pending batch, and commits the batch after
//! [`COMMIT_EVERY_RECORDS`] records, after [`COMMIT_EVERY_BYTES`], and whenever no
//! more WAL is waiting. Each commit's end LSN goes back to the connection through a
//! watch channel, for its standby status updates.
//!
//! Nothing is stored twice or skipped: the decoder starts exactly at the timeline's
//! `last_record_lsn`, and only this thread commits while it runs (the connection waits
//! for it to finish before another stream starts).

use std::borrow::Cow;
use std::sync::Arc;

use page_model::ingest::{Batch, WalIngest};
use postgres_wal::decoder::{WalDecodeError, WalStreamDecoder};
use postgres_wal::record::DecodedRecord;
use postgres_wal::Lsn;
use tokio::sync::{mpsc, watch};

use super::limits::{COMMIT_EVERY_BYTES, COMMIT_EVERY_RECORDS};
use crate::timeline::Timeline;

/// How the ingest thread ended.
#[derive(Debug)]
pub(super) enum IngestEnd {
    /// The connection closed the queue; everything decoded is committed.
    Closed,
    /// The WAL ended (zeroed or recycled bytes) where a record should start; what came
    /// before is committed. Another stream may carry on from there.
    EndOfWal(WalDecodeError),
    /// Ingest of the timeline must stop for good: the reason names the record.
    Stop(String),
}

/// The ingest thread's body. `start` is the timeline's `last_record_lsn` when the
/// stream was opened; `wal` carries the stream's bytes from exactly `start`.
pub(super) fn run(
    timeline: Arc<Timeline>,
    start: Lsn,
    mut wal: mpsc::Receiver<Vec<u8>>,
    committed: watch::Sender<Lsn>,
) -> IngestEnd {
    let ingest = match WalIngest::load(timeline.as_ref(), start) {
        Ok(ingest) => ingest,
        Err(error) => return IngestEnd::Stop(format!("loading ingest state at {start}: {error}")),
    };
    let meta = timeline.meta();
    let decoder =
        WalStreamDecoder::new(start, meta.wal_segment_size).with_system_id(meta.system_id);
    let mut worker = Worker {
        timeline: timeline.clone(),
        decoder,
        ingest,
        batch: Batch::new(),
        records: 0,
        decoded_end: start,
        committed_end: start,
        committed,
    };
    loop {
        let chunk = match wal.try_recv() {
            Ok(chunk) => chunk,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing more is waiting: make what we have durable and readable now
                // rather than when the next batch fills.
                if let Err(stop) = worker.commit() {
                    return stop;
                }
                match wal.blocking_recv() {
                    Some(chunk) => chunk,
                    None => return worker.commit().err().unwrap_or(IngestEnd::Closed),
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                return worker.commit().err().unwrap_or(IngestEnd::Closed);
            }
        };
        if let Some(end) = worker.feed(&chunk) {
            return end;
        }
    }
}

struct Worker {
    timeline: Arc<Timeline>,
    decoder: WalStreamDecoder,
    ingest: WalIngest,
    batch: Batch,
    /// Records in `batch`.
    records: usize,
    /// End of the last record ingested into `batch` (or committed).
    decoded_end: Lsn,
    committed_end: Lsn,
    committed: watch::Sender<Lsn>,
}

impl Worker {
    /// Decode and ingest every whole record `bytes` completes. `Some` when this
    /// stream is over.
    fn feed(&mut self, bytes: &[u8]) -> Option<IngestEnd> {
        self.decoder.feed(bytes);
        loop {
            match self.decoder.poll() {
                Ok(Some(record)) => {
                    if let Err(stop) = self.ingest_record(&record) {
                        return Some(stop);
                    }
                    if self.records >= COMMIT_EVERY_RECORDS
                        || self.batch.bytes() >= COMMIT_EVERY_BYTES
                    {
                        if let Err(stop) = self.commit() {
                            return Some(stop);
                        }
                    }
                }
                Ok(None) => return None,
                Err(error) => {
                    // The records before the bad spot are whole and valid: keep them.
                    if let Err(stop) = self.commit() {
                        return Some(stop);
                    }
                    if error.is_end_of_wal() {
                        return Some(IngestEnd::EndOfWal(error));
                    }
                    return Some(IngestEnd::Stop(format!(
                        "invalid WAL after the record ending at {}: {error}",
                        self.committed_end
                    )));
                }
            }
        }
    }

    fn ingest_record(&mut self, record: &DecodedRecord) -> Result<(), IngestEnd> {
        let rmid = record.rmid();
        // Built-in rmgrs have a static name; only custom ones need formatting.
        let rmgr: Cow<'static, str> = match rmid.name() {
            Some(name) => name.into(),
            None => rmid.display_name().into(),
        };
        if let Err(error) = self
            .ingest
            .ingest(record, self.timeline.as_ref(), &mut self.batch)
        {
            // A failed record leaves nothing in the batch (ingest rolls it back), so
            // the records before it are committed and nothing of this one is stored:
            // last_record_lsn then names where ingest stopped.
            self.commit()?;
            return Err(IngestEnd::Stop(format!(
                "cannot ingest the {rmgr} record at {} (ending at {}): {error}",
                record.lsn, record.end_lsn
            )));
        }
        self.timeline.metrics().record_ingested(&rmgr);
        self.records += 1;
        self.decoded_end = record.end_lsn;
        Ok(())
    }

    /// Commit the batch, if any record was decoded since the last commit (a record
    /// may leave no value; its end still moves `last_record_lsn`).
    fn commit(&mut self) -> Result<(), IngestEnd> {
        if self.decoded_end == self.committed_end {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        // Durable when it returns (the store syncs its log before last_record_lsn
        // moves); only then is the new end reported to the safekeeper as flushed.
        if let Err(error) = self.timeline.commit(batch, self.decoded_end) {
            return Err(IngestEnd::Stop(format!(
                "committing the records up to {}: {error}",
                self.decoded_end
            )));
        }
        self.records = 0;
        self.committed_end = self.decoded_end;
        self.committed.send_replace(self.committed_end);
        Ok(())
    }
}
