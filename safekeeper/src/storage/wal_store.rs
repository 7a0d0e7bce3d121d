//! The WAL of one timeline in segment files: append, flush, truncate, and on open find
//! where the valid WAL ends.
//!
//! Invariants, true whenever a call returns:
//! - the segment holding `write_lsn` exists, is named `.partial` and is open as
//!   `current`; every earlier segment (down to the removal horizon) has its final name;
//!   no later segment exists;
//! - every byte at or after `write_lsn` in the segment files is zero, so a decoder
//!   scanning the files stops exactly where the appended WAL ends, and WAL of an older
//!   term can never be read back as if it followed newer WAL;
//! - `flush_lsn <= write_record_end <= write_lsn`, and both record ends are record
//!   boundaries found by decoding every appended byte.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use postgres_wal::decoder::{WalDecodeError, WalStreamDecoder};
use postgres_wal::{Lsn, WalSegmentSize};

use super::durable;
use super::error::StorageError;
use super::failpoint;
use super::reader::WalReader;
use super::segments::{self, segment_file_name, segment_start};

/// How much of a segment the open-time scan reads at once.
const SCAN_CHUNK_BYTES: usize = 256 * 1024;

#[derive(Debug)]
struct Current {
    number: u64,
    file: File,
}

#[derive(Debug)]
pub(crate) struct WalStore {
    dir: PathBuf,
    size: WalSegmentSize,
    timeline_start_lsn: Lsn,
    current: Current,
    write_lsn: Lsn,
    /// End of the last complete record among the written bytes.
    write_record_end: Lsn,
    /// End of the last complete record among the durable bytes.
    flush_lsn: Lsn,
    /// `flush_lsn`, shared with readers.
    published_flush_lsn: Arc<AtomicU64>,
    /// Whether `current` has writes not yet fdatasynced.
    dirty: bool,
    /// Decodes every appended byte, to find record boundaries.
    decoder: WalStreamDecoder,
    /// Set when appended bytes did not decode: appends are refused until truncation.
    invalid: Option<WalDecodeError>,
    /// Set by a failed write or fsync; see [`StorageError::Poisoned`].
    poisoned: Option<String>,
}

/// How far the bytes after a cut point may be non-zero.
#[derive(Debug, Clone, Copy)]
enum Tail {
    /// Up to this segment offset (the old write position): zero up to it.
    UpTo(u64),
    /// Unknown (after a crash): zero whatever is non-zero up to the segment end.
    Unknown,
}

/// Failpoints of a cut: armed for `truncate`, never for the repair done by `open`.
#[derive(Debug, Clone, Copy)]
struct CutFailpoints {
    after_zero: Option<&'static str>,
    before_remove: Option<&'static str>,
}

impl CutFailpoints {
    const TRUNCATE: CutFailpoints = CutFailpoints {
        after_zero: Some(failpoint::TRUNCATE_AFTER_ZERO),
        before_remove: Some(failpoint::TRUNCATE_BEFORE_REMOVE),
    };
    const NONE: CutFailpoints = CutFailpoints {
        after_zero: None,
        before_remove: None,
    };
}

/// Where the open-time scan starts: the start of the segment holding the commit LSN
/// (a page header lets the decoder find the first record boundary there, so a wrong
/// commit LSN cannot mislead it), or the timeline start if that is later.
fn scan_start(size: WalSegmentSize, timeline_start_lsn: Lsn, commit_lsn: Lsn) -> Lsn {
    let from = commit_lsn.max(timeline_start_lsn);
    segment_start(size, from.segment_number(size)).max(timeline_start_lsn)
}

impl WalStore {
    /// Create the first segment of a new timeline in `dir`.
    pub(crate) fn create(
        dir: &Path,
        size: WalSegmentSize,
        timeline_start_lsn: Lsn,
    ) -> Result<(), StorageError> {
        segments::preallocate_initial(dir, size, timeline_start_lsn.segment_number(size)).map(drop)
    }

    /// Open the WAL in `dir`: find the end of the valid WAL from the commit LSN's
    /// segment on, and make that the write position, zeroing durably whatever follows
    /// it. Refuses if the valid WAL ends below `commit_lsn`.
    pub(crate) fn open(
        dir: &Path,
        size: WalSegmentSize,
        timeline_start_lsn: Lsn,
        commit_lsn: Lsn,
    ) -> Result<WalStore, StorageError> {
        let listing = segments::list(dir, size)?;
        // Leftovers of interrupted pre-allocations or control-file replacements.
        durable::remove_files(dir, &listing.temp_files).map_err(|e| {
            StorageError::io(format!("remove temporary files in {}", dir.display()), e)
        })?;
        let start = scan_start(size, timeline_start_lsn, commit_lsn);
        let (valid_end, reason) = scan(dir, size, &listing, start)?;
        tracing::info!(%start, %valid_end, %commit_lsn, "found the end of WAL: {reason}");
        if valid_end < commit_lsn {
            return Err(StorageError::CommittedWalMissing {
                valid_end,
                commit_lsn,
                reason,
            });
        }
        let file = cut(dir, size, valid_end, Tail::Unknown, CutFailpoints::NONE)?;
        // The scan may have read WAL that a crashed process wrote but never synced: it
        // is still in the page cache, not necessarily on disk. Sync every scanned
        // segment before reporting any of it as flushed.
        for number in start.segment_number(size)..valid_end.segment_number(size) {
            let name = segment_file_name(size, number, false);
            segments::open(dir, &name).and_then(|f| {
                durable::sync_data(&f).map_err(|e| StorageError::io(format!("sync {name}"), e))
            })?;
        }
        // Sync the directory: renames done before the crash may not be durable yet.
        durable::sync_dir(dir)
            .map_err(|e| StorageError::io(format!("sync {}", dir.display()), e))?;
        Ok(WalStore {
            dir: dir.to_path_buf(),
            size,
            timeline_start_lsn,
            current: Current {
                number: valid_end.segment_number(size),
                file,
            },
            write_lsn: valid_end,
            write_record_end: valid_end,
            flush_lsn: valid_end,
            published_flush_lsn: Arc::new(AtomicU64::new(valid_end.0)),
            dirty: false,
            decoder: WalStreamDecoder::new(valid_end, size),
            invalid: None,
            poisoned: None,
        })
    }

    pub(crate) fn write_lsn(&self) -> Lsn {
        self.write_lsn
    }

    pub(crate) fn flush_lsn(&self) -> Lsn {
        self.flush_lsn
    }

    pub(crate) fn reader(&self) -> WalReader {
        WalReader::new(
            self.dir.clone(),
            self.size,
            self.timeline_start_lsn,
            self.published_flush_lsn.clone(),
        )
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(reason) => Err(StorageError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Remember that the on-disk state is unknown, and pass the error on (the caller
    /// logs it where it handles it).
    fn poison(&mut self, error: StorageError) -> StorageError {
        self.poisoned = Some(error.to_string());
        error
    }

    fn io_error(&mut self, action: &str, error: io::Error) -> StorageError {
        let action = format!("{action} {}", self.current_path().display());
        self.poison(StorageError::io(action, error))
    }

    fn current_path(&self) -> PathBuf {
        self.dir
            .join(segment_file_name(self.size, self.current.number, true))
    }

    fn set_flush_lsn(&mut self, lsn: Lsn) {
        self.flush_lsn = lsn;
        self.published_flush_lsn.store(lsn.0, Ordering::Release);
    }

    /// Append `bytes` at `lsn`, which must be `write_lsn`. The bytes are decoded first,
    /// and not written at all if they are not valid WAL.
    pub(crate) fn write(&mut self, lsn: Lsn, bytes: &[u8]) -> Result<(), StorageError> {
        self.check_usable()?;
        if lsn != self.write_lsn {
            return Err(StorageError::NotAtEnd {
                lsn,
                write_lsn: self.write_lsn,
            });
        }
        if let Some(source) = &self.invalid {
            return Err(StorageError::InvalidWal {
                source: source.clone(),
            });
        }
        let record_end = self.decode(bytes)?;
        self.write_bytes(bytes)?;
        self.write_record_end = record_end;
        Ok(())
    }

    /// Feed `bytes` to the decoder; the end of the last complete record after them.
    fn decode(&mut self, bytes: &[u8]) -> Result<Lsn, StorageError> {
        self.decoder.feed(bytes);
        match drain_records(&mut self.decoder, self.write_record_end) {
            Ok(end) => Ok(end),
            Err((_, source)) => {
                self.invalid = Some(source.clone());
                Err(StorageError::InvalidWal { source })
            }
        }
    }

    fn write_bytes(&mut self, mut bytes: &[u8]) -> Result<(), StorageError> {
        while !bytes.is_empty() {
            let offset = self.write_lsn.segment_offset(self.size);
            let room = self.size.bytes() - offset;
            let n = room.min(bytes.len() as u64) as usize;
            let (chunk, rest) = bytes.split_at(n);
            let written = failpoint::check(failpoint::WAL_WRITE)
                .and_then(|()| self.current.file.write_all_at(chunk, offset));
            if let Err(e) = written {
                return Err(self.io_error("write WAL to", e));
            }
            self.dirty = true;
            self.write_lsn = Lsn(self.write_lsn.0 + n as u64);
            bytes = rest;
            if self.write_lsn.segment_offset(self.size) == 0 {
                self.switch_segment()?;
            }
        }
        Ok(())
    }

    /// The current segment is full: give it its final name and start the next one.
    fn switch_segment(&mut self) -> Result<(), StorageError> {
        // fdatasync before the rename: the final name says the segment is complete,
        // and `flush` only syncs the segment being written.
        if let Err(e) = durable::sync_data(&self.current.file) {
            return Err(self.io_error("sync", e));
        }
        self.dirty = false;
        let finished = self.current.number;
        let partial = segment_file_name(self.size, finished, true);
        let complete = segment_file_name(self.size, finished, false);
        let renamed = failpoint::check(failpoint::SEGMENT_SWITCH_BEFORE_RENAME)
            .and_then(|()| durable::rename(&self.dir, &partial, &complete))
            .and_then(|()| failpoint::check(failpoint::SEGMENT_SWITCH_AFTER_RENAME));
        if let Err(e) = renamed {
            return Err(self.io_error("rename to its final name", e));
        }
        match segments::preallocate(&self.dir, self.size, finished + 1) {
            Ok(file) => {
                self.current = Current {
                    number: finished + 1,
                    file,
                };
                Ok(())
            }
            Err(e) => Err(self.poison(e)),
        }
    }

    /// Make everything written durable; `flush_lsn` becomes the end of the last
    /// complete record written.
    pub(crate) fn flush(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        if self.dirty {
            // fdatasync the segment being written: earlier ones were synced when they
            // were finished, and pre-allocation makes the size already durable.
            let synced = failpoint::check(failpoint::WAL_FLUSH)
                .and_then(|()| durable::sync_data(&self.current.file));
            if let Err(e) = synced {
                return Err(self.io_error("sync", e));
            }
            self.dirty = false;
        }
        self.set_flush_lsn(self.write_record_end);
        Ok(())
    }

    /// Durably remove all WAL at and after `lsn`, a record boundary at or below
    /// `write_lsn`. Appends continue at `lsn`, which also becomes the flush LSN (the
    /// cut syncs everything before it).
    pub(crate) fn truncate(&mut self, lsn: Lsn) -> Result<(), StorageError> {
        self.check_usable()?;
        if lsn > self.write_lsn {
            return Err(StorageError::TruncateBeyondEnd {
                lsn,
                write_lsn: self.write_lsn,
            });
        }
        if lsn < self.timeline_start_lsn {
            return Err(StorageError::TruncateBelowLimit {
                lsn,
                limit: self.timeline_start_lsn,
                what: "the timeline start",
            });
        }
        let target = lsn.segment_number(self.size);
        // Beyond `write_lsn` everything is zero already (invariant), so only the
        // written part of the target segment needs zeroing.
        let tail = if target == self.current.number {
            Tail::UpTo(self.write_lsn.segment_offset(self.size))
        } else {
            Tail::UpTo(self.size.bytes())
        };
        let file = match cut(&self.dir, self.size, lsn, tail, CutFailpoints::TRUNCATE) {
            Ok(file) => file,
            Err(e) => return Err(self.poison(e)),
        };
        tracing::info!(from = %self.write_lsn, to = %lsn, "truncated WAL");
        self.current = Current {
            number: target,
            file,
        };
        self.write_lsn = lsn;
        self.write_record_end = lsn;
        self.dirty = false;
        self.decoder = WalStreamDecoder::new(lsn, self.size);
        self.invalid = None;
        self.set_flush_lsn(lsn);
        Ok(())
    }

    /// Remove the segments wholly below the segment holding `horizon` (clamped to the
    /// flush LSN); returns the names removed. `&self`: it changes no state of the store,
    /// only files below every position the store writes, truncates or scans at.
    pub(crate) fn remove_segments_below(&self, horizon: Lsn) -> Result<Vec<String>, StorageError> {
        let keep_from = horizon.min(self.flush_lsn).segment_number(self.size);
        let listing = segments::list(&self.dir, self.size)?;
        let names: Vec<String> = listing
            .segments
            .range(..keep_from)
            .map(|(&number, &partial)| segment_file_name(self.size, number, partial))
            .collect();
        durable::remove_files(&self.dir, &names).map_err(|e| {
            StorageError::io(
                format!("remove old WAL segments in {}", self.dir.display()),
                e,
            )
        })?;
        if !names.is_empty() {
            tracing::info!(%horizon, count = names.len(), "removed WAL segments");
        }
        Ok(names)
    }
}

/// Decode from `start` through consecutive segment files until the WAL stops being
/// valid; the end of the last complete record and why decoding stopped.
fn scan(
    dir: &Path,
    size: WalSegmentSize,
    listing: &segments::Listing,
    start: Lsn,
) -> Result<(Lsn, String), StorageError> {
    let mut decoder = WalStreamDecoder::new(start, size);
    let mut end = start;
    let mut buf = vec![0u8; SCAN_CHUNK_BYTES];
    let mut number = start.segment_number(size);
    let mut offset = start.segment_offset(size);
    loop {
        let Some(name) = listing.name(size, number) else {
            let missing = segment_file_name(size, number, false);
            return Ok((end, format!("no segment {missing}")));
        };
        let path = dir.join(&name);
        let file = File::open(&path)
            .map_err(|e| StorageError::io(format!("open {}", path.display()), e))?;
        while offset < size.bytes() {
            let want = (size.bytes() - offset).min(SCAN_CHUNK_BYTES as u64) as usize;
            let n = file
                .read_at(&mut buf[..want], offset)
                .map_err(|e| StorageError::io(format!("read {}", path.display()), e))?;
            if n == 0 {
                return Ok((end, format!("{name} ends at offset {offset}")));
            }
            decoder.feed(&buf[..n]);
            end = match drain_records(&mut decoder, end) {
                Ok(end) => end,
                Err((end, e)) => return Ok((end, e.to_string())),
            };
            offset += n as u64;
        }
        number += 1;
        offset = 0;
    }
}

/// Poll `decoder` for every complete record. Returns the end of the last record all
/// of whose bytes have been fed, starting from `end`, or that and the error at which
/// the valid WAL stops.
///
/// An `XLOG SWITCH` record ends, as in PostgreSQL, at the start of the next segment:
/// the rest of its segment is padding that belongs to it. Until that padding has been
/// fed the record is not complete, and the end stays before it.
fn drain_records(
    decoder: &mut WalStreamDecoder,
    mut end: Lsn,
) -> Result<Lsn, (Lsn, WalDecodeError)> {
    let fed_end = decoder.fed_end();
    let mut error = None;
    loop {
        match decoder.poll() {
            Ok(Some(record)) if record.end_lsn <= fed_end => end = record.end_lsn,
            Ok(Some(_switch_awaiting_padding)) => {}
            Ok(None) => break,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    // Also covers the skipped continuation at a segment start, and a switch record
    // whose padding has now been fed.
    if decoder.valid_end() <= fed_end {
        end = end.max(decoder.valid_end());
    }
    match error {
        None => Ok(end),
        Some(e) => Err((end, e)),
    }
}

/// Make `lsn` the end of the WAL on disk: zero what follows it in its segment, name
/// that segment `.partial` and earlier ones final, remove later ones, and return the
/// segment holding `lsn`, open. Each step is durable before the next, so a crash
/// between steps leaves WAL that ends at `lsn` when scanned, which `open` completes.
fn cut(
    dir: &Path,
    size: WalSegmentSize,
    lsn: Lsn,
    tail: Tail,
    failpoints: CutFailpoints,
) -> Result<File, StorageError> {
    let listing = segments::list(dir, size)?;
    let target = lsn.segment_number(size);
    let file = match listing.name(size, target) {
        Some(name) => {
            let file = segments::open(dir, &name)?;
            zero_tail(&file, lsn.segment_offset(size), tail, size)
                .map_err(|e| StorageError::io(format!("zero the tail of {name}"), e))?;
            Some(file)
        }
        None => None,
    };
    let io = |action: String| move |e| StorageError::io(action, e);
    let pass = |point: Option<&'static str>| point.map_or(Ok(()), failpoint::check);
    pass(failpoints.after_zero).map_err(io("truncate WAL".into()))?;
    for (&number, &partial) in listing.segments.range(..target) {
        if partial {
            let (from, to) = (
                segment_file_name(size, number, true),
                segment_file_name(size, number, false),
            );
            durable::rename(dir, &from, &to).map_err(io(format!("rename {from} to {to}")))?;
        }
    }
    if listing.segments.get(&target) == Some(&false) {
        let (from, to) = (
            segment_file_name(size, target, false),
            segment_file_name(size, target, true),
        );
        durable::rename(dir, &from, &to).map_err(io(format!("rename {from} to {to}")))?;
    }
    pass(failpoints.before_remove).map_err(io("truncate WAL".into()))?;
    let later: Vec<String> = listing
        .segments
        .range(target + 1..)
        .map(|(&number, &partial)| segment_file_name(size, number, partial))
        .collect();
    durable::remove_files(dir, &later).map_err(io(format!("remove {later:?}")))?;
    match file {
        Some(file) => Ok(file),
        None => segments::preallocate(dir, size, target),
    }
}

/// Zero the segment from offset `from` as far as `tail` says bytes may be non-zero,
/// and sync it (which also syncs earlier writes to it).
fn zero_tail(file: &File, from: u64, tail: Tail, size: WalSegmentSize) -> io::Result<()> {
    let len = file.metadata()?.len();
    if len > size.bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("segment file is {len} bytes, longer than a segment"),
        ));
    }
    let to = match tail {
        Tail::UpTo(to) => to,
        // A short file (never made by us) is completed with zeros.
        Tail::Unknown if len < size.bytes() => size.bytes(),
        Tail::Unknown => last_non_zero_end(file, from, len)?,
    };
    if to > from {
        durable::zero_range(file, from, to)
    } else {
        // Nothing to zero, but what was written before `from` must be durable.
        durable::sync_data(file)
    }
}

/// The offset just after the last non-zero byte in `from..len` (or `from`).
fn last_non_zero_end(file: &File, from: u64, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; SCAN_CHUNK_BYTES];
    let mut end = from;
    let mut offset = from;
    while offset < len {
        let want = (len - offset).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..want], offset)?;
        if let Some(i) = buf[..want].iter().rposition(|&b| b != 0) {
            end = offset + i as u64 + 1;
        }
        offset += want as u64;
    }
    Ok(end)
}
