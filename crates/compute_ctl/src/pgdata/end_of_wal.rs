//! The compute's end of WAL: where its next record will go, found as PostgreSQL's own
//! recovery finds it, by decoding from the last checkpoint until the WAL stops being
//! valid.
//!
//! The lineage check compares it with the elected start LSN, before PostgreSQL is
//! started (once started, recovery would have replayed and extended it).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use postgres_wal::controlfile::{ControlFileData, ControlFileError};
use postgres_wal::decoder::WalStreamDecoder;
use postgres_wal::{Lsn, WalSegmentSize};

use super::pg_wal::PgWalDir;
use crate::limits::MAX_END_OF_WAL_SEGMENTS;

/// Bytes fed to the decoder per read.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: ControlFileError,
    },
    #[error("{path}: invalid WAL segment size {size}")]
    SegmentSize { path: PathBuf, size: u64 },
}

/// What `compute_ctl` needs from `global/pg_control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlInfo {
    pub system_id: u64,
    pub segment_size: WalSegmentSize,
    /// Where the last checkpoint record begins.
    pub checkpoint: Lsn,
}

pub fn read_control(pgdata: &Path) -> Result<ControlInfo, ControlError> {
    let path = pgdata.join("global").join("pg_control");
    let bytes = std::fs::read(&path).map_err(|source| ControlError::Read {
        path: path.clone(),
        source,
    })?;
    let control = ControlFileData::decode(&bytes).map_err(|source| ControlError::Decode {
        path: path.clone(),
        source,
    })?;
    let segment_size = control
        .wal_segment_size()
        .map_err(|invalid| ControlError::SegmentSize {
            path: path.clone(),
            size: invalid.0,
        })?;
    Ok(ControlInfo {
        system_id: control.system_identifier,
        segment_size,
        checkpoint: control.checkpoint,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("reading WAL segment {path} to find the end of WAL: {source}")]
pub struct EndOfWalError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The end of the last valid record at or after `from` (a record start, normally the
/// last checkpoint's), reading `pg_wal` until a segment is missing or the WAL is not
/// valid any more.
pub fn find_end_of_wal(wal: &PgWalDir, from: Lsn) -> Result<Lsn, EndOfWalError> {
    let size = wal.segment_size();
    let mut decoder = WalStreamDecoder::new(from, size).with_system_id(wal.system_id());
    let first = from.segment_number(size);
    let mut buf = vec![0; READ_CHUNK_BYTES];
    for segment in first..first.saturating_add(MAX_END_OF_WAL_SEGMENTS) {
        let path = wal.segment_path(segment);
        let fail = |source| EndOfWalError {
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(fail(e)),
        };
        let mut offset = if segment == first {
            from.segment_offset(size)
        } else {
            0
        };
        while offset < size.bytes() {
            let n = (size.bytes() - offset).min(buf.len() as u64) as usize;
            match file.read_exact_at(&mut buf[..n], offset) {
                Ok(()) => {}
                // A short file: what it holds is all there is.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(decoder.valid_end())
                }
                Err(e) => return Err(fail(e)),
            }
            decoder.feed(&buf[..n]);
            loop {
                match decoder.poll() {
                    Ok(Some(_record)) => {}
                    Ok(None) => break,
                    Err(end) => {
                        tracing::debug!(end = %decoder.valid_end(), reason = %end, "end of WAL");
                        return Ok(decoder.valid_end());
                    }
                }
            }
            offset += n as u64;
        }
    }
    Ok(decoder.valid_end())
}
