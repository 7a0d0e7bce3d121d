//! Reading the compute's own WAL from its `pg_wal` segment files: for a safekeeper that
//! lags behind the in-memory buffer, for the lineage check's byte comparison, and to
//! find the end of WAL.
//!
//! PostgreSQL recycles old segment files by renaming them to future names, so a file
//! with the right name may hold another segment's old pages. Every page read is
//! therefore checked against its header (magic, page address, system id): a recycled
//! or not yet written page is an error, never WAL.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use postgres_wal::lsn::WAL_PAGE_SIZE;
use postgres_wal::page_header::{PageHeaderError, WalPageHeader};
use postgres_wal::{Lsn, WalSegmentSize};

/// PostgreSQL's timeline id; Strata keeps every compute on timeline 1.
pub const PG_TIMELINE: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PgWalError {
    #[error("reading WAL segment {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("WAL page {page} in {path}: {source}")]
    Page {
        path: PathBuf,
        page: Lsn,
        #[source]
        source: PageHeaderError,
    },
}

impl PgWalError {
    /// The segment is gone (removed or recycled by a checkpoint).
    pub fn is_missing(&self) -> bool {
        match self {
            PgWalError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            PgWalError::Page { .. } => true,
        }
    }
}

/// The `pg_wal` directory of one data directory.
#[derive(Debug, Clone)]
pub struct PgWalDir {
    dir: PathBuf,
    segment_size: WalSegmentSize,
    system_id: u64,
}

impl PgWalDir {
    pub fn new(pgdata: &Path, segment_size: WalSegmentSize, system_id: u64) -> PgWalDir {
        PgWalDir {
            dir: pgdata.join("pg_wal"),
            segment_size,
            system_id,
        }
    }

    pub fn segment_size(&self) -> WalSegmentSize {
        self.segment_size
    }

    pub fn system_id(&self) -> u64 {
        self.system_id
    }

    pub fn segment_path(&self, segment_number: u64) -> PathBuf {
        self.dir
            .join(self.segment_size.file_name(PG_TIMELINE, segment_number))
    }

    /// The WAL bytes `[begin, end)`, every page they touch checked.
    pub fn read(&self, begin: Lsn, end: Lsn) -> Result<Vec<u8>, PgWalError> {
        let mut out = Vec::with_capacity(end.0.saturating_sub(begin.0) as usize);
        let mut lsn = begin;
        while lsn < end {
            let segment = lsn.segment_number(self.segment_size);
            let segment_start = lsn.0 - lsn.segment_offset(self.segment_size);
            let chunk_end = end.0.min(segment_start + self.segment_size.bytes());
            let path = self.segment_path(segment);
            let io = |source| PgWalError::Io {
                path: path.clone(),
                source,
            };
            let file = File::open(&path).map_err(io)?;
            // Whole pages, from the start of the first: every header the range
            // touches is checked, even when the range ends inside one.
            let first_page = lsn.page_start();
            let pages_end = chunk_end.div_ceil(WAL_PAGE_SIZE) * WAL_PAGE_SIZE;
            let mut pages = vec![0; (pages_end - first_page.0) as usize];
            file.read_exact_at(&mut pages, first_page.0 - segment_start)
                .map_err(io)?;
            for (i, page) in pages.chunks(WAL_PAGE_SIZE as usize).enumerate() {
                let page_lsn = Lsn(first_page.0 + i as u64 * WAL_PAGE_SIZE);
                self.check_page(&path, page_lsn, page)?;
            }
            out.extend_from_slice(
                &pages[(lsn.0 - first_page.0) as usize..(chunk_end - first_page.0) as usize],
            );
            lsn = Lsn(chunk_end);
        }
        Ok(out)
    }

    fn check_page(&self, path: &Path, page_lsn: Lsn, page: &[u8]) -> Result<(), PgWalError> {
        let fail = |source| PgWalError::Page {
            path: path.to_owned(),
            page: page_lsn,
            source,
        };
        let header = WalPageHeader::parse(page).map_err(fail)?;
        header
            .validate(page_lsn, self.segment_size, Some(self.system_id))
            .map_err(fail)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A segment of `pages` valid (empty) WAL pages starting at segment `number`.
    pub fn fake_segment(size: WalSegmentSize, number: u64, system_id: u64, pages: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for page in 0..pages {
            let lsn = number * size.bytes() + page * WAL_PAGE_SIZE;
            let mut bytes = vec![0u8; WAL_PAGE_SIZE as usize];
            bytes[0..2]
                .copy_from_slice(&postgres_wal::page_header::WAL_PAGE_MAGIC_PG15.to_le_bytes());
            let long = page == 0;
            let info = if long {
                postgres_wal::page_header::XLP_LONG_HEADER
            } else {
                0
            };
            bytes[2..4].copy_from_slice(&info.to_le_bytes());
            bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
            bytes[8..16].copy_from_slice(&lsn.to_le_bytes());
            if long {
                bytes[24..32].copy_from_slice(&system_id.to_le_bytes());
                bytes[32..36].copy_from_slice(&(size.bytes() as u32).to_le_bytes());
                bytes[36..40].copy_from_slice(&(WAL_PAGE_SIZE as u32).to_le_bytes());
            }
            // A recognisable payload after the header.
            for (i, b) in bytes[40..].iter_mut().enumerate() {
                *b = (lsn as usize + i) as u8;
            }
            out.extend(bytes);
        }
        out
    }

    #[test]
    fn reads_ranges_across_pages_and_refuses_recycled_pages() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pg_wal")).unwrap();
        let size = WalSegmentSize::new(1 << 20).unwrap();
        let wal = PgWalDir::new(dir.path(), size, 42);
        // Full size, as PostgreSQL creates segments: zeros after the pages written.
        let mut segment = fake_segment(size, 3, 42, 4);
        segment.resize(1 << 20, 0);
        std::fs::write(wal.segment_path(3), &segment).unwrap();
        let base = 3 << 20;
        let got = wal
            .read(Lsn(base + 100), Lsn(base + 3 * 8192 + 10))
            .unwrap();
        assert_eq!(got, segment[100..3 * 8192 + 10]);

        // Past the pages written: zeros, not WAL.
        let err = wal
            .read(Lsn(base + 4 * 8192), Lsn(base + 4 * 8192 + 8))
            .unwrap_err();
        assert!(err.is_missing(), "{err}");
        // A segment file holding another segment's pages (recycled).
        std::fs::write(wal.segment_path(5), fake_segment(size, 2, 42, 2)).unwrap();
        let err = wal
            .read(Lsn((5 << 20) + 64), Lsn((5 << 20) + 128))
            .unwrap_err();
        assert!(matches!(err, PgWalError::Page { .. }), "{err}");
        // Another cluster's segment.
        std::fs::write(wal.segment_path(6), fake_segment(size, 6, 43, 1)).unwrap();
        assert!(wal.read(Lsn((6 << 20) + 64), Lsn((6 << 20) + 128)).is_err());
        // No file at all.
        assert!(wal
            .read(Lsn(9 << 20), Lsn((9 << 20) + 1))
            .unwrap_err()
            .is_missing());
    }
}
