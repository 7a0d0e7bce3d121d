//! The WAL a primary-mode basebackup ships: one `XLOG_CHECKPOINT_SHUTDOWN` record at
//! X, laid out exactly as PostgreSQL 15's `XLogInsert` would have written it, inside
//! otherwise zeroed segment files with valid page headers.
//!
//! PostgreSQL starting on the basebackup reads that record (its `pg_control` points at
//! it), finds a clean shutdown, and appends its own WAL right after it. The pages
//! before the record's page hold only the segment's long header: nothing reads them,
//! since the compute never replays and its WAL is streamed from X onwards. On the
//! record's own page, the header marks the bytes before the record as the tail of a
//! continued record (`XLP_FIRST_IS_CONTRECORD`, `xlp_rem_len`), so tools that look for
//! the first record on the page find ours; the compute streams only from X, so that
//! header never reaches the safekeepers unless X is the page start (then no flag is set).

use std::io::{self, Write};

use postgres_wal::controlfile::CheckPoint;
use postgres_wal::lsn::WAL_PAGE_SIZE;
use postgres_wal::page_header::{
    LONG_PAGE_HEADER_SIZE, SHORT_PAGE_HEADER_SIZE, WAL_PAGE_MAGIC_PG15, XLP_FIRST_IS_CONTRECORD,
    XLP_LONG_HEADER,
};
use postgres_wal::record::{record_crc, RECORD_HEADER_SIZE};
use postgres_wal::rmgr::{xlog, RmgrId};
use postgres_wal::{Lsn, WalSegmentSize};

/// `XLR_BLOCK_ID_DATA_SHORT`: main data of at most 255 bytes follows, length in one byte.
const BLOCK_ID_DATA_SHORT: u8 = 255;

/// `xl_tot_len` of a checkpoint record: header, the short main-data header (id and
/// length byte) and the `CheckPoint`. No origin or top-level xid is ever attached.
pub const CHECKPOINT_RECORD_LEN: usize = RECORD_HEADER_SIZE + 2 + CheckPoint::SIZE;

const PAGE: usize = WAL_PAGE_SIZE as usize;

/// Zeros are streamed in pieces of this size between the pages that carry data.
const ZERO_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{0} is not a record boundary: records start 8-byte aligned, past the page header")]
    NotARecordBoundary(Lsn),
    #[error("previous record {prev} is not before the checkpoint record at {lsn}")]
    BadPrev { prev: Lsn, lsn: Lsn },
    #[error("LSN overflow placing a record at {0}")]
    Overflow(Lsn),
}

/// Size of the page header at the start of the page holding `page_start`.
fn header_size(page_start: Lsn, seg: WalSegmentSize) -> usize {
    if page_start.segment_offset(seg) == 0 {
        LONG_PAGE_HEADER_SIZE
    } else {
        SHORT_PAGE_HEADER_SIZE
    }
}

/// Where a record inserted when the WAL ends at `end` starts: `end` itself, or just
/// past the page header when `end` is a page boundary (as `XLogInsert` places it).
pub fn record_start_at(end: Lsn, seg: WalSegmentSize) -> Result<Lsn, WalError> {
    if end.page_offset() == 0 {
        return end
            .checked_add(header_size(end, seg) as u64)
            .ok_or(WalError::Overflow(end));
    }
    check_record_start(end, seg)?;
    Ok(end)
}

fn check_record_start(lsn: Lsn, seg: WalSegmentSize) -> Result<(), WalError> {
    let min = header_size(lsn.page_start(), seg) as u64;
    if lsn.0 % 8 != 0 || lsn.page_offset() < min {
        return Err(WalError::NotARecordBoundary(lsn));
    }
    Ok(())
}

/// `EndRecPtr` of a record of `len` bytes at `start`: past its last byte, counting
/// the page headers of the pages it continues onto, aligned to 8.
pub fn record_end(start: Lsn, len: usize, seg: WalSegmentSize) -> Result<Lsn, WalError> {
    check_record_start(start, seg)?;
    let mut pos = start.0;
    let mut left = len as u64;
    while left > 0 {
        if pos % WAL_PAGE_SIZE == 0 {
            pos = pos
                .checked_add(header_size(Lsn(pos), seg) as u64)
                .ok_or(WalError::Overflow(start))?;
        }
        let room = WAL_PAGE_SIZE - pos % WAL_PAGE_SIZE;
        let take = room.min(left);
        pos = pos.checked_add(take).ok_or(WalError::Overflow(start))?;
        left -= take;
    }
    Ok(Lsn(pos).align())
}

/// The bytes of a shutdown-checkpoint record: `CHECKPOINT_RECORD_LEN` bytes with the
/// CRC computed over the data, then the header up to `xl_crc`.
pub fn checkpoint_record(cp: &CheckPoint, prev: Lsn) -> Vec<u8> {
    let mut rec = Vec::with_capacity(CHECKPOINT_RECORD_LEN);
    rec.extend_from_slice(&(CHECKPOINT_RECORD_LEN as u32).to_le_bytes());
    rec.extend_from_slice(&0u32.to_le_bytes()); // xl_xid: a checkpoint has none
    rec.extend_from_slice(&prev.0.to_le_bytes());
    rec.push(xlog::CHECKPOINT_SHUTDOWN);
    rec.push(RmgrId::XLOG.0);
    rec.extend_from_slice(&[0, 0]); // padding, zero as XLogRecordAssemble leaves it
    rec.extend_from_slice(&[0; 4]); // xl_crc, filled in below
    rec.push(BLOCK_ID_DATA_SHORT);
    rec.push(CheckPoint::SIZE as u8);
    rec.extend_from_slice(&cp.encode());
    let crc = record_crc(&rec);
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
    rec
}

/// One WAL segment file, sparse: the pages that carry data; every other byte is zero.
#[derive(Debug, Clone)]
pub struct WalSegment {
    pub segno: u64,
    /// The file name in `pg_wal` (timeline, segment number).
    pub file_name: String,
    size: u64,
    /// `(offset in the segment, page)`, ascending.
    pages: Vec<(u64, Box<[u8; PAGE]>)>,
}

impl WalSegment {
    /// The file's length: the segment size.
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Streams the whole file.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        let zeros = [0u8; ZERO_CHUNK];
        let mut pos = 0u64;
        let fill = |out: &mut dyn Write, from: u64, to: u64| -> io::Result<()> {
            let mut at = from;
            while at < to {
                let n = (to - at).min(ZERO_CHUNK as u64) as usize;
                out.write_all(&zeros[..n])?;
                at += n as u64;
            }
            Ok(())
        };
        for (offset, page) in &self.pages {
            fill(out, pos, *offset)?;
            out.write_all(&page[..])?;
            pos = offset + WAL_PAGE_SIZE;
        }
        fill(out, pos, self.size)
    }
}

/// A shutdown-checkpoint record placed in the WAL, and the segment files holding it.
#[derive(Debug, Clone)]
pub struct CheckpointWal {
    /// Where the record starts: what `pg_control`'s `checkPoint` points at.
    pub record_lsn: Lsn,
    /// Where the compute inserts its first record.
    pub end_lsn: Lsn,
    /// One segment, or two when the record crosses a segment boundary.
    pub segments: Vec<WalSegment>,
}

/// Identifies the cluster in every segment's long page header.
#[derive(Debug, Clone, Copy)]
pub struct WalIdentity {
    pub system_id: u64,
    pub timeline: u32,
    pub segment_size: WalSegmentSize,
}

/// Places a shutdown-checkpoint record at `end` (the end of the last record, X), or
/// just past the page header when X is a page boundary. `make_cp` gets the record's
/// LSN, which a shutdown checkpoint's `redo` must equal.
pub fn shutdown_checkpoint_wal(
    id: WalIdentity,
    end: Lsn,
    prev: Lsn,
    make_cp: impl FnOnce(Lsn) -> CheckPoint,
) -> Result<CheckpointWal, WalError> {
    let seg = id.segment_size;
    let record_lsn = record_start_at(end, seg)?;
    if prev >= record_lsn {
        return Err(WalError::BadPrev {
            prev,
            lsn: record_lsn,
        });
    }
    let rec = checkpoint_record(&make_cp(record_lsn), prev);
    let end_lsn = record_end(record_lsn, rec.len(), seg)?;

    // (page start, page) for every page the record touches, in order.
    let mut pages: Vec<(Lsn, Box<[u8; PAGE]>)> = Vec::new();
    let mut pos = record_lsn;
    let mut written = 0usize;
    while written < rec.len() {
        let page_start = pos.page_start();
        if pos == page_start {
            pos = Lsn(pos.0 + header_size(page_start, seg) as u64);
        }
        if pages.last().map(|(p, _)| *p) != Some(page_start) {
            // On the record's first page, the bytes before it stand for the tail of a
            // record continued from earlier pages (the timeline's real WAL, which this
            // file does not hold): readers that search a page for its first record,
            // such as pg_waldump, then skip straight to ours.
            let rem_len = if written == 0 {
                (pos.page_offset() - header_size(page_start, seg) as u64) as u32
            } else {
                (rec.len() - written) as u32
            };
            pages.push((page_start, page_with_header(id, page_start, rem_len)));
        }
        let off = pos.page_offset() as usize;
        let take = (PAGE - off).min(rec.len() - written);
        if let Some((_, page)) = pages.last_mut() {
            page[off..off + take].copy_from_slice(&rec[written..written + take]);
        }
        written += take;
        pos = Lsn(pos.0 + take as u64);
    }

    let mut segments: Vec<WalSegment> = Vec::new();
    for (page_start, page) in pages {
        let segno = page_start.segment_number(seg);
        if segments.last().map(|s| s.segno) != Some(segno) {
            let seg_start = Lsn(segno * seg.bytes());
            let mut first = Vec::new();
            if seg_start != page_start {
                // Every segment starts with a long header, which readers check first.
                first.push((0, page_with_header(id, seg_start, 0)));
            }
            segments.push(WalSegment {
                segno,
                file_name: seg.file_name(id.timeline, segno),
                size: seg.bytes(),
                pages: first,
            });
        }
        if let Some(s) = segments.last_mut() {
            s.pages.push((page_start.segment_offset(seg), page));
        }
    }
    Ok(CheckpointWal {
        record_lsn,
        end_lsn,
        segments,
    })
}

/// A zero page with its header: long at a segment start. `rem_len` > 0 marks the page
/// as continuing a record with that many bytes left.
fn page_with_header(id: WalIdentity, page_start: Lsn, rem_len: u32) -> Box<[u8; PAGE]> {
    let mut page = Box::new([0u8; PAGE]);
    let long = page_start.segment_offset(id.segment_size) == 0;
    let mut info = 0u16;
    if long {
        info |= XLP_LONG_HEADER;
    }
    if rem_len > 0 {
        info |= XLP_FIRST_IS_CONTRECORD;
    }
    page[0..2].copy_from_slice(&WAL_PAGE_MAGIC_PG15.to_le_bytes());
    page[2..4].copy_from_slice(&info.to_le_bytes());
    page[4..8].copy_from_slice(&id.timeline.to_le_bytes());
    page[8..16].copy_from_slice(&page_start.0.to_le_bytes());
    page[16..20].copy_from_slice(&rem_len.to_le_bytes());
    if long {
        page[24..32].copy_from_slice(&id.system_id.to_le_bytes());
        page[32..36].copy_from_slice(&(id.segment_size.bytes() as u32).to_le_bytes());
        page[36..40].copy_from_slice(&(WAL_PAGE_SIZE as u32).to_le_bytes());
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_wal::decoder::WalStreamDecoder;

    fn id() -> WalIdentity {
        WalIdentity {
            system_id: 7_300_000_000_000_000_001,
            timeline: 1,
            segment_size: WalSegmentSize::new(1 << 20).unwrap(),
        }
    }

    fn cp(redo: Lsn) -> CheckPoint {
        CheckPoint {
            redo,
            this_timeline_id: 1,
            prev_timeline_id: 1,
            full_page_writes: true,
            next_xid: 740,
            next_oid: 16390,
            next_multi: 1,
            oldest_xid: 716,
            oldest_xid_db: 1,
            oldest_multi: 1,
            oldest_multi_db: 1,
            time: 1_700_000_000,
            ..CheckPoint::default()
        }
    }

    /// Decodes the segments from their start and returns the single record found.
    fn decode(wal: &CheckpointWal) -> postgres_wal::record::DecodedRecord {
        let seg = id().segment_size;
        let first = wal.segments[0].segno;
        let start = Lsn(first * seg.bytes());
        // From the page start, as pg_waldump searches: the header leads to the record.
        let mut dec =
            WalStreamDecoder::new(wal.record_lsn.page_start(), seg).with_system_id(id().system_id);
        let mut bytes = Vec::new();
        for s in &wal.segments {
            s.write_to(&mut bytes).unwrap();
        }
        assert_eq!(bytes.len() as u64, seg.bytes() * wal.segments.len() as u64);
        let from = (wal.record_lsn.page_start().0 - start.0) as usize;
        dec.feed(&bytes[from..]);
        let rec = dec.poll().unwrap().expect("a record");
        assert!(matches!(dec.poll(), Err(e) if e.is_end_of_wal()));
        rec
    }

    #[test]
    fn record_in_the_middle_of_a_page() {
        let end = Lsn(0x0030_0128);
        let wal = shutdown_checkpoint_wal(id(), end, Lsn(0x0030_00A0), cp).unwrap();
        assert_eq!(wal.record_lsn, end);
        assert_eq!(wal.end_lsn, Lsn(0x0030_0128 + 120));
        assert_eq!(wal.segments.len(), 1);
        assert_eq!(wal.segments[0].file_name, "000000010000000000000003");
        let rec = decode(&wal);
        assert_eq!(rec.header.prev, Lsn(0x0030_00A0));
        assert_eq!(rec.end_lsn, wal.end_lsn);
        assert_eq!(CheckPoint::decode(rec.main_data()).unwrap(), cp(end));
    }

    #[test]
    fn record_at_page_and_segment_boundaries() {
        let seg = id().segment_size;
        // A page boundary inside a segment: past the short header.
        let wal = shutdown_checkpoint_wal(id(), Lsn(0x0030_2000), Lsn(0x0030_1FD0), cp).unwrap();
        assert_eq!(wal.record_lsn, Lsn(0x0030_2018));
        assert_eq!(decode(&wal).lsn, wal.record_lsn);
        // A segment boundary: past the long header.
        let wal = shutdown_checkpoint_wal(id(), Lsn(0x0040_0000), Lsn(0x003F_FFD0), cp).unwrap();
        assert_eq!(wal.record_lsn, Lsn(0x0040_0028));
        assert_eq!(wal.segments[0].segno, 4);
        assert_eq!(decode(&wal).end_lsn, wal.end_lsn);
        assert_eq!(
            record_end(wal.record_lsn, CHECKPOINT_RECORD_LEN, seg).unwrap(),
            wal.end_lsn
        );
    }

    #[test]
    fn record_crossing_a_page_and_a_segment() {
        let seg = id().segment_size;
        // 40 bytes left on the page: the rest continues after the next short header.
        let end = Lsn(0x0030_2000 - 40);
        let wal = shutdown_checkpoint_wal(id(), end, Lsn(0x0030_1000), cp).unwrap();
        assert_eq!(wal.end_lsn, Lsn(0x0030_2000 + 24 + (114 - 40)).align());
        let rec = decode(&wal);
        assert_eq!(CheckPoint::decode(rec.main_data()).unwrap(), cp(end));
        // Across a segment: two files, the second's long header marks the continuation.
        let end = Lsn(0x0040_0000 - 16);
        let wal = shutdown_checkpoint_wal(id(), end, Lsn(0x003F_F000), cp).unwrap();
        assert_eq!(wal.segments.len(), 2);
        assert_eq!(wal.end_lsn, Lsn(0x0040_0000 + 40 + 98).align());
        assert_eq!(
            record_end(end, CHECKPOINT_RECORD_LEN, seg).unwrap(),
            wal.end_lsn
        );
        assert_eq!(decode(&wal).end_lsn, wal.end_lsn);
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            shutdown_checkpoint_wal(id(), Lsn(0x0030_0004), Lsn(0x10), cp),
            Err(WalError::NotARecordBoundary(_))
        ));
        assert!(matches!(
            shutdown_checkpoint_wal(id(), Lsn(0x0030_2008), Lsn(0x10), cp),
            Err(WalError::NotARecordBoundary(_))
        ));
        assert!(matches!(
            shutdown_checkpoint_wal(id(), Lsn(0x0030_0128), Lsn(0x0030_0128), cp),
            Err(WalError::BadPrev { .. })
        ));
    }
}
