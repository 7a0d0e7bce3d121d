//! Fuzz `WalStreamDecoder` with arbitrary bytes, fed in arbitrary chunks from an
//! arbitrary start, and restore every block image of every record it returns.
//!
//! Input layout (see `../README.md`):
//!
//! | bytes | meaning |
//! |-------|---------|
//! | 0     | flags: bit 0 segment size (0: 1 MiB, 1: 16 MiB); bit 1 fix CRCs; bits 2-3 chunking (0: all at once, 1: single bytes, 2: random 1..=64, 3: random 1..=16384); bit 4 round the start down to a page |
//! | 1..5  | start offset into the WAL bytes (u32 LE, taken modulo their length + 1) |
//! | 5..9  | seed for the random chunk sizes (u32 LE) |
//! | 9..   | WAL bytes; their LSN is the page address in the first page header (bytes 8..16), rounded down to a page and kept below 2^40 |
//!
//! With "fix CRCs", a record that fails only its CRC has the CRC rewritten and decoding
//! restarts (up to 32 times), so the fuzzer also reaches record-body decoding and image
//! restoration with bytes no CRC would let through.
//!
//! Besides "no panic", every run checks the decoder's promises: returned records carry
//! a valid CRC and come in LSN order, errors name an LSN inside the bytes fed, and
//! `valid_end` is the end of the last record returned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postgres_wal::decoder::{WalDecodeError, WalStreamDecoder};
use postgres_wal::image::restore_page;
use postgres_wal::lsn::WAL_PAGE_SIZE;
use postgres_wal::page::verify_header;
use postgres_wal::page_header::WalPageHeader;
use postgres_wal::record::{record_crc, DecodedRecord};
use postgres_wal::rmgr::record_type_display;
use postgres_wal::{Lsn, WalSegmentSize};

const HEADER_LEN: usize = 9;
const PAGE: usize = WAL_PAGE_SIZE as usize;
const MAX_CRC_FIXES: usize = 32;

struct Plan {
    segment: WalSegmentSize,
    fix_crcs: bool,
    chunking: u8,
    start_offset: usize,
    seed: u64,
}

fn plan(data: &[u8]) -> Option<(Plan, &[u8])> {
    let (head, wal) = data.split_at_checked(HEADER_LEN)?;
    let flags = head[0];
    let segment_bytes = if flags & 1 == 0 { 1 << 20 } else { 16 << 20 };
    let raw_start = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut start_offset = raw_start % (wal.len() + 1);
    if flags & 0x10 != 0 {
        start_offset -= start_offset % PAGE;
    }
    let plan = Plan {
        segment: WalSegmentSize::new(segment_bytes).ok()?,
        fix_crcs: flags & 2 != 0,
        chunking: (flags >> 2) & 3,
        start_offset,
        seed: u64::from(u32::from_le_bytes([head[5], head[6], head[7], head[8]])),
    };
    Some((plan, wal))
}

/// LSN of the first WAL byte: the first page header's address, page-aligned and low
/// enough that no LSN arithmetic can approach `u64::MAX`.
fn base_lsn(wal: &[u8]) -> Lsn {
    let addr = wal
        .get(8..16)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    let addr = addr % (1 << 40);
    Lsn(addr - addr % WAL_PAGE_SIZE)
}

struct Chunks {
    mode: u8,
    state: u64,
}

impl Chunks {
    fn next(&mut self) -> usize {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) as usize;
        match self.mode {
            0 => usize::MAX,
            1 => 1,
            2 => 1 + r % 64,
            _ => 1 + r % 16384,
        }
    }
}

/// Decode `wal[plan.start_offset..]`, check the decoder's promises, and return the
/// error decoding stopped at, if any.
fn decode(wal: &[u8], base: Lsn, plan: &Plan) -> Option<WalDecodeError> {
    let start = Lsn(base.0 + plan.start_offset as u64);
    let mut decoder = WalStreamDecoder::new(start, plan.segment);
    let mut chunks = Chunks {
        mode: plan.chunking,
        state: plan.seed | 1,
    };
    let mut rest = &wal[plan.start_offset..];
    let mut last: Option<DecodedRecord> = None;
    let mut error = None;
    'feed: loop {
        let n = chunks.next().min(rest.len());
        decoder.feed(&rest[..n]);
        rest = &rest[n..];
        loop {
            match decoder.poll() {
                Ok(Some(record)) => {
                    check_record(&record, start, last.as_ref());
                    assert!(decoder.at_record_boundary());
                    last = Some(record);
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'feed;
                }
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    let fed_end = decoder.fed_end();
    let valid_end = decoder.valid_end();
    assert!(valid_end >= start);
    if let Some(last) = &last {
        assert_eq!(
            valid_end, last.end_lsn,
            "valid_end is not the last record's end"
        );
    }
    match &error {
        Some(e) => {
            assert!(
                start <= e.lsn() && e.lsn() < fed_end,
                "error {e} outside the bytes fed, {start}..{fed_end}"
            );
            assert!(
                valid_end <= e.lsn(),
                "valid_end {valid_end} after error {e}"
            );
            assert_eq!(decoder.poll().as_ref(), Err(e), "errors are sticky");
        }
        None => assert_eq!(fed_end, Lsn(base.0 + wal.len() as u64)),
    }
    error
}

fn check_record(record: &DecodedRecord, start: Lsn, previous: Option<&DecodedRecord>) {
    assert_eq!(record_crc(&record.bytes), record.header.crc);
    assert_eq!(record.bytes.len(), record.header.total_len as usize);
    assert!(record.lsn >= start);
    assert!(record.end_lsn > record.lsn);
    if let Some(previous) = previous {
        assert!(record.lsn >= previous.end_lsn, "records overlap");
    }
    let _ = record_type_display(record.rmid(), record.header.info);
    let _ = record.rmid().display_name();
    let _ = record.main_data();
    let _ = record.non_image_len();
    for block in &record.blocks {
        let _ = record.block_data(block);
        if let Some(image) = &block.image {
            if let Ok(page) = restore_page(record, image) {
                let _ = verify_header(&page);
            }
        }
    }
}

/// Offset in `wal` of byte `k` of the record at `lsn`, stepping over page headers the
/// way the decoder did.
fn record_byte_offset(wal: &[u8], base: Lsn, lsn: Lsn, k: usize) -> Option<usize> {
    let mut offset = usize::try_from(lsn.0.checked_sub(base.0)?).ok()?;
    let mut left = k;
    loop {
        let page_left = PAGE - ((base.0 + offset as u64) % WAL_PAGE_SIZE) as usize;
        if left < page_left {
            return Some(offset + left).filter(|&o| o < wal.len());
        }
        left -= page_left;
        offset += page_left;
        offset += WalPageHeader::needed_len(wal.get(offset..)?);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((plan, wal)) = plan(data) else {
        return;
    };
    let base = base_lsn(wal);
    let mut wal = wal.to_vec();
    for _ in 0..MAX_CRC_FIXES {
        match decode(&wal, base, &plan) {
            Some(WalDecodeError::Crc { lsn, computed, .. }) if plan.fix_crcs => {
                let crc = computed.to_le_bytes();
                for (i, byte) in crc.iter().enumerate() {
                    match record_byte_offset(&wal, base, lsn, 20 + i) {
                        Some(offset) => wal[offset] = *byte,
                        None => return,
                    }
                }
            }
            _ => return,
        }
    }
});
