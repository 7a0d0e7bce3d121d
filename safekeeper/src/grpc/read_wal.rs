//! `ReadWal`: a timeline's durable WAL, up to its flush LSN, for a proposer.
//!
//! The replication port serves WAL only below the commit LSN, because WAL above it can
//! still be truncated by a new term. A proposer needs exactly that WAL: after an
//! election its donor's WAL between the commit and flush LSNs becomes the new term's
//! prefix, and the proposer copies it to lagging acceptors (sync-safekeepers does
//! nothing else). The response carries the acceptor's term, read after the bytes: a
//! proposer that finds its own term there knows that no newer term truncated the range
//! while it was read.

use postgres_wal::Lsn;
use strata_ids::TenantTimelineId;
use strata_proto::safekeeper as pb;

use super::convert::{parse_timeline_id, ConvertError};
use crate::replication::ReplicationTimeline;
use crate::timelines::{TimelineError, Timelines};

/// Most bytes one `ReadWal` returns: one append's worth, so that a response stays far
/// below the gRPC message limit and a read holds the blocking pool briefly.
pub const MAX_READ_WAL_BYTES: u64 = consensus::limits::MAX_WAL_BYTES_PER_APPEND as u64;

/// Why a `ReadWal` failed; mapped to a status in [`super::status`].
#[derive(Debug, thiserror::Error)]
pub enum ReadWalError {
    #[error("{0}")]
    Request(#[from] ConvertError),
    #[error("{0}")]
    Timeline(#[from] TimelineError),
    #[error("ReadWal [{begin}, {end}) asks for more than {MAX_READ_WAL_BYTES} bytes or ends before it begins")]
    BadRange { begin: Lsn, end: Lsn },
    #[error("ReadWal [{begin}, {end}) of {id} is not held: WAL is between the timeline start {start} and the flush LSN {flush}")]
    OutOfRange {
        id: TenantTimelineId,
        begin: Lsn,
        end: Lsn,
        start: Lsn,
        flush: Lsn,
    },
    #[error("reading WAL [{begin}, {end}) of {id}: {source}")]
    Io {
        id: TenantTimelineId,
        begin: Lsn,
        end: Lsn,
        #[source]
        source: std::io::Error,
    },
}

pub async fn read_wal(
    timelines: &Timelines,
    request: pb::ReadWalRequest,
) -> Result<pb::ReadWalResponse, ReadWalError> {
    let id = parse_timeline_id(&request.tenant_id, &request.timeline_id)?;
    let (begin, end) = (Lsn(request.begin_lsn), Lsn(request.end_lsn));
    let len = end
        .0
        .checked_sub(begin.0)
        .filter(|&n| n <= MAX_READ_WAL_BYTES);
    let Some(len) = len else {
        return Err(ReadWalError::BadRange { begin, end });
    };
    let timeline = timelines.get(id)?;
    let before = timeline.status();
    if begin < before.timeline_start_lsn || end > before.flush_lsn {
        return Err(ReadWalError::OutOfRange {
            id,
            begin,
            end,
            start: before.timeline_start_lsn,
            flush: before.flush_lsn,
        });
    }
    let reader = timeline.clone();
    let read = tokio::task::spawn_blocking(move || {
        let mut wal = vec![0; len as usize];
        let mut done = 0;
        while done < wal.len() {
            let n = reader.read_wal(Lsn(begin.0 + done as u64), &mut wal[done..])?;
            if n == 0 {
                // The flush LSN went down: a newer term truncated the timeline.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the WAL was truncated while it was read",
                ));
            }
            done += n;
        }
        Ok(wal)
    })
    .await
    .map_err(|join| std::io::Error::other(join.to_string()));
    let wal = read
        .and_then(|result| result)
        .map_err(|source| ReadWalError::Io {
            id,
            begin,
            end,
            source,
        })?;
    let after = timeline.status();
    Ok(pb::ReadWalResponse {
        term: after.term.0,
        flush_lsn: after.flush_lsn.0,
        wal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_ids::{TenantId, TimelineId};
    use tonic::{Code, Status};

    #[test]
    fn each_condition_has_its_code() {
        let id = TenantTimelineId {
            tenant_id: TenantId(1),
            timeline_id: TimelineId(2),
        };
        let (begin, end) = (Lsn(0x100_0000), Lsn(0x100_0100));
        let code = |error: ReadWalError| Status::from(error).code();
        assert_eq!(
            code(ReadWalError::BadRange { begin, end }),
            Code::InvalidArgument
        );
        let out_of_range = ReadWalError::OutOfRange {
            id,
            begin,
            end,
            start: begin,
            flush: Lsn(0x100_0028),
        };
        assert_eq!(code(out_of_range), Code::OutOfRange);
        assert_eq!(
            code(ReadWalError::Timeline(TimelineError::NotFound(id))),
            Code::NotFound
        );
        let removed = std::io::Error::from(std::io::ErrorKind::NotFound);
        let io = |source| ReadWalError::Io {
            id,
            begin,
            end,
            source,
        };
        assert_eq!(code(io(removed)), Code::NotFound);
        assert_eq!(code(io(std::io::Error::other("disk"))), Code::Internal);
    }
}
