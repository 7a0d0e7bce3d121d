//! Synthetic but valid PostgreSQL 15 WAL for the storage unit tests: records of chosen
//! sizes laid out as `XLogInsert` lays them out (aligned, flowing around short and
//! long page headers, across pages and segments), each with a correct CRC, so the
//! real decoder accepts them. The crash tests use WAL from a real PostgreSQL.

use postgres_wal::lsn::WAL_PAGE_SIZE;
use postgres_wal::page_header::{WAL_PAGE_MAGIC_PG15, XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER};
use postgres_wal::record::{record_crc, RECORD_HEADER_SIZE};
use postgres_wal::{Lsn, WalSegmentSize};

pub const SYSTEM_ID: u64 = 7_000_000_000_000_000_042;
/// XLOG `NOOP`: a record with only main data.
const XLOG_NOOP: u8 = 0x20;

#[derive(Debug)]
pub struct TestWal {
    pub size: WalSegmentSize,
    pub start: Lsn,
    pub bytes: Vec<u8>,
    /// (start, end) of every record, in order.
    pub records: Vec<(Lsn, Lsn)>,
    prev: Lsn,
}

impl TestWal {
    /// Empty WAL starting at `start`, a segment start.
    pub fn new(start: Lsn, size: WalSegmentSize) -> TestWal {
        assert_eq!(start.segment_offset(size), 0);
        TestWal {
            size,
            start,
            bytes: Vec::new(),
            records: Vec::new(),
            prev: Lsn(start.0 - 64),
        }
    }

    /// WAL of records with pseudo-random sizes from 26 bytes to `max_len`, until it
    /// is at least `len` bytes long.
    pub fn with_records(start: Lsn, size: WalSegmentSize, len: u64, max_len: usize) -> TestWal {
        let mut wal = TestWal::new(start, size);
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        while (wal.bytes.len() as u64) < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let record_len = 26 + (seed % (max_len as u64 - 25)) as usize;
            wal.append(record_len);
        }
        wal
    }

    pub fn end(&self) -> Lsn {
        Lsn(self.start.0 + self.bytes.len() as u64)
    }

    /// The bytes of LSNs `from..to`.
    pub fn slice(&self, from: Lsn, to: Lsn) -> &[u8] {
        &self.bytes[(from.0 - self.start.0) as usize..(to.0 - self.start.0) as usize]
    }

    /// The end of the last record that ends at or before `lsn` (or the start).
    pub fn record_end_at_or_before(&self, lsn: Lsn) -> Lsn {
        self.records
            .iter()
            .rev()
            .map(|&(_, end)| end)
            .find(|&end| end <= lsn)
            .unwrap_or(self.start)
    }

    fn page_header(&mut self, remaining: u32) {
        let pos = self.end();
        let long = pos.segment_offset(self.size) == 0;
        let mut info = if long { XLP_LONG_HEADER } else { 0 };
        if remaining > 0 {
            info |= XLP_FIRST_IS_CONTRECORD;
        }
        self.bytes
            .extend_from_slice(&WAL_PAGE_MAGIC_PG15.to_le_bytes());
        self.bytes.extend_from_slice(&info.to_le_bytes());
        self.bytes.extend_from_slice(&1u32.to_le_bytes());
        self.bytes.extend_from_slice(&pos.0.to_le_bytes());
        self.bytes.extend_from_slice(&remaining.to_le_bytes());
        self.bytes.extend_from_slice(&[0; 4]);
        if long {
            self.bytes.extend_from_slice(&SYSTEM_ID.to_le_bytes());
            self.bytes
                .extend_from_slice(&(self.size.bytes() as u32).to_le_bytes());
            self.bytes
                .extend_from_slice(&(WAL_PAGE_SIZE as u32).to_le_bytes());
        }
    }

    /// Append a record of `total_len` bytes (at least 26); returns its start.
    pub fn append(&mut self, total_len: usize) -> Lsn {
        if self.end().page_offset() == 0 {
            self.page_header(0);
        }
        let lsn = self.end();
        let record = record(self.prev, lsn, total_len);
        let mut written = 0;
        while written < record.len() {
            if self.end().page_offset() == 0 {
                self.page_header((record.len() - written) as u32);
            }
            let room = (WAL_PAGE_SIZE - self.end().page_offset()) as usize;
            let n = room.min(record.len() - written);
            self.bytes.extend_from_slice(&record[written..written + n]);
            written += n;
        }
        // PostgreSQL streams a record with its alignment padding (zeros): its end LSN
        // is aligned.
        let end = self.end().align();
        self.bytes.resize((end.0 - self.start.0) as usize, 0);
        self.prev = lsn;
        self.records.push((lsn, end));
        lsn
    }
}

/// An XLOG NOOP record of `total_len` bytes whose data depends on its LSN.
fn record(prev: Lsn, lsn: Lsn, total_len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; RECORD_HEADER_SIZE];
    bytes[0..4].copy_from_slice(&(total_len as u32).to_le_bytes());
    bytes[4..8].copy_from_slice(&1000u32.to_le_bytes());
    bytes[8..16].copy_from_slice(&prev.0.to_le_bytes());
    bytes[16] = XLOG_NOOP;
    bytes[17] = 0;
    let data_len = if total_len - RECORD_HEADER_SIZE - 2 <= 255 {
        let len = total_len - RECORD_HEADER_SIZE - 2;
        bytes.extend_from_slice(&[255, len as u8]);
        len
    } else {
        let len = total_len - RECORD_HEADER_SIZE - 5;
        bytes.push(254);
        bytes.extend_from_slice(&(len as u32).to_le_bytes());
        len
    };
    bytes.extend((0..data_len).map(|i| (i as u64 ^ lsn.0).wrapping_mul(31) as u8));
    let crc = record_crc(&bytes);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    bytes
}
