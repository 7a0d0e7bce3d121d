//! Reading a timeline's flushed WAL from its segment files, beside the writer.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use postgres_wal::{Lsn, WalSegmentSize};

use super::segments::segment_file_name;

/// Reads a timeline's WAL while its writer appends. Get one from
/// [`TimelineStorage::reader`](super::TimelineStorage::reader); clone it per
/// connection (each clone keeps its own open segment file).
///
/// It never returns bytes at or after the flush LSN, so it only ever sees durable
/// WAL. Callers serving committed WAL bound their reads by the commit LSN themselves:
/// WAL between the commit and flush LSNs can still be truncated, and a read that races
/// a truncation may see either the old bytes or zeros there. Committed WAL is never
/// truncated, so reads below the commit LSN are stable.
#[derive(Debug)]
pub struct WalReader {
    dir: PathBuf,
    size: WalSegmentSize,
    timeline_start_lsn: Lsn,
    flush_lsn: Arc<AtomicU64>,
    /// The segment last read. A renamed file stays readable through an open handle,
    /// and a removed one holds only WAL below the removal horizon or above the commit
    /// LSN, which callers do not read.
    open: Option<(u64, File)>,
}

impl Clone for WalReader {
    fn clone(&self) -> WalReader {
        WalReader::new(
            self.dir.clone(),
            self.size,
            self.timeline_start_lsn,
            self.flush_lsn.clone(),
        )
    }
}

impl WalReader {
    pub(crate) fn new(
        dir: PathBuf,
        size: WalSegmentSize,
        timeline_start_lsn: Lsn,
        flush_lsn: Arc<AtomicU64>,
    ) -> WalReader {
        WalReader {
            dir,
            size,
            timeline_start_lsn,
            flush_lsn,
            open: None,
        }
    }

    /// The end of the WAL that is durable, published by the writer after each flush.
    pub fn flush_lsn(&self) -> Lsn {
        Lsn(self.flush_lsn.load(Ordering::Acquire))
    }

    /// Where the timeline's WAL begins; nothing before it is stored.
    pub fn timeline_start_lsn(&self) -> Lsn {
        self.timeline_start_lsn
    }

    pub fn segment_size(&self) -> WalSegmentSize {
        self.size
    }

    /// Read WAL starting at `lsn` into `buf`: as many bytes as fit, stopping at the
    /// flush LSN and at the end of `lsn`'s segment. `Ok(0)` means `lsn` is at or past
    /// the flush LSN. Errors: `InvalidInput` below the timeline start, `NotFound` for a
    /// segment removed below the removal horizon.
    pub fn read(&mut self, lsn: Lsn, buf: &mut [u8]) -> io::Result<usize> {
        if lsn < self.timeline_start_lsn {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "WAL at {lsn} is before the timeline start {}",
                    self.timeline_start_lsn
                ),
            ));
        }
        let end = self.flush_lsn();
        if lsn >= end || buf.is_empty() {
            return Ok(0);
        }
        let offset = lsn.segment_offset(self.size);
        let n = (buf.len() as u64)
            .min(end.0 - lsn.0)
            .min(self.size.bytes() - offset) as usize;
        let file = self.segment(lsn.segment_number(self.size))?;
        file.read_exact_at(&mut buf[..n], offset)?;
        Ok(n)
    }

    /// Fill `buf` with the WAL at `lsn`, across segments; `UnexpectedEof` if it
    /// extends past the flush LSN.
    pub fn read_exact(&mut self, lsn: Lsn, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read(Lsn(lsn.0 + done as u64), &mut buf[done..])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "WAL {lsn}+{} requested, but it is flushed only up to {}",
                        buf.len(),
                        self.flush_lsn()
                    ),
                ));
            }
            done += n;
        }
        Ok(())
    }

    fn segment(&mut self, number: u64) -> io::Result<&File> {
        let cached = matches!(&self.open, Some((open, _)) if *open == number);
        if !cached {
            self.open = Some((number, self.open_segment(number)?));
        }
        match &self.open {
            Some((_, file)) => Ok(file),
            None => Err(io::Error::other("no segment open")),
        }
    }

    /// Open a segment under whichever name it has. The writer renames `.partial` to
    /// final at a segment switch and back at a truncation, so try both, then the first
    /// again in case a rename happened between the two attempts.
    fn open_segment(&self, number: u64) -> io::Result<File> {
        let complete = self.dir.join(segment_file_name(self.size, number, false));
        let partial = self.dir.join(segment_file_name(self.size, number, true));
        for path in [&complete, &partial, &complete] {
            match File::open(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                result => return result,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "WAL segment {} is not stored here (removed below the removal horizon?)",
                complete.display()
            ),
        ))
    }
}
