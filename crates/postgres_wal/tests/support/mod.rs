//! Shared by the decoder's integration tests: the real PostgreSQL 15 WAL fixture, what
//! `pg_waldump -b` printed for it, and helpers to decode bytes fed in chunks.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::sync::OnceLock;

use postgres_wal::decoder::{WalDecodeError, WalStreamDecoder};
use postgres_wal::lsn::WAL_PAGE_SIZE;
use postgres_wal::page_header::{WalPageHeader, LONG_PAGE_HEADER_SIZE, SHORT_PAGE_HEADER_SIZE};
use postgres_wal::record::DecodedRecord;
use postgres_wal::{Lsn, WalSegmentSize};

/// The first 256 KiB of a 1 MiB WAL segment; see `fixtures/README.md`.
pub const WAL: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/pg15_wal_1mb_segment_prefix"
));

/// `pg_waldump -b` of the records wholly inside [`WAL`].
pub const WALDUMP: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/pg15_wal_1mb_segment_prefix.waldump.txt"
));

pub const PAGE: usize = WAL_PAGE_SIZE as usize;

/// The fixture cluster was made with `initdb --wal-segsize=1`.
pub fn segment_size() -> WalSegmentSize {
    WalSegmentSize::new(1 << 20).expect("1 MiB is a valid segment size")
}

/// LSN of the fixture's first byte: the start of its segment, as its long header says.
pub fn wal_start() -> Lsn {
    let header = WalPageHeader::parse(WAL).expect("the fixture starts with a page header");
    assert_eq!(header.page_address.segment_offset(segment_size()), 0);
    header.page_address
}

/// Offset in [`WAL`] of `lsn`.
pub fn offset_of(lsn: Lsn) -> usize {
    usize::try_from(lsn.0 - wal_start().0).expect("fixture offsets fit in usize")
}

/// LSN of offset `offset` in [`WAL`].
pub fn lsn_at(offset: usize) -> Lsn {
    Lsn(wal_start().0 + offset as u64)
}

/// What decoding a byte stream produced.
#[derive(Debug)]
pub struct Decoded {
    pub records: Vec<DecodedRecord>,
    /// The error `poll` stopped at; `None` if every byte was fed and `poll` then asked
    /// for more.
    pub error: Option<WalDecodeError>,
    pub valid_end: Lsn,
    pub fed_end: Lsn,
}

/// Decode `bytes`, which start at `start`, fed in chunks of the sizes `next_chunk`
/// returns (clamped to 1..=what is left), polling to exhaustion after each chunk.
pub fn decode_chunked(
    bytes: &[u8],
    start: Lsn,
    segment: WalSegmentSize,
    next_chunk: &mut dyn FnMut() -> usize,
) -> Decoded {
    let mut decoder = WalStreamDecoder::new(start, segment);
    let mut records = Vec::new();
    let mut rest = bytes;
    let mut error = None;
    'feed: loop {
        let n = next_chunk().clamp(1, rest.len().max(1)).min(rest.len());
        decoder.feed(&rest[..n]);
        rest = &rest[n..];
        loop {
            match decoder.poll() {
                Ok(Some(record)) => records.push(record),
                Ok(None) => break,
                Err(e) => {
                    // Errors are sticky, whatever is fed afterwards.
                    decoder.feed(&[0; 100]);
                    assert_eq!(decoder.poll(), Err(e.clone()), "error is not sticky");
                    error = Some(e);
                    break 'feed;
                }
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    Decoded {
        records,
        error,
        valid_end: decoder.valid_end(),
        fed_end: Lsn(start.0 + (bytes.len() - rest.len()) as u64),
    }
}

/// Decode `bytes` (starting at `start`) of the fixture's 1 MiB segment size in one chunk.
pub fn decode(bytes: &[u8], start: Lsn) -> Decoded {
    decode_chunked(bytes, start, segment_size(), &mut || usize::MAX)
}

/// The whole fixture decoded from its start: the reference every other decode is
/// compared with (and which is itself checked against `pg_waldump`).
pub fn reference() -> &'static [DecodedRecord] {
    static REFERENCE: OnceLock<Vec<DecodedRecord>> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let decoded = decode(WAL, wal_start());
        assert_eq!(
            decoded.error, None,
            "the clean fixture decodes without error"
        );
        decoded.records
    })
}

/// The LSN of byte `k` of the record at `lsn`: records flow around the page headers.
/// Only long headers begin a segment, as in the fixture.
pub fn record_byte_lsn(lsn: Lsn, k: u32) -> Lsn {
    let mut pos = lsn.0;
    let mut left = u64::from(k);
    loop {
        let page_left = WAL_PAGE_SIZE - pos % WAL_PAGE_SIZE;
        if left < page_left {
            return Lsn(pos + left);
        }
        left -= page_left;
        pos += page_left;
        pos += if pos % segment_size().bytes() == 0 {
            LONG_PAGE_HEADER_SIZE as u64
        } else {
            SHORT_PAGE_HEADER_SIZE as u64
        };
    }
}

/// Just past the last byte of `record` (unaligned, unlike `end_lsn`): the decoder can
/// return the record once it has been fed up to here.
pub fn byte_end(record: &DecodedRecord) -> Lsn {
    Lsn(record_byte_lsn(record.lsn, record.header.total_len - 1).0 + 1)
}

/// A small deterministic generator (xorshift64*), so tests need no RNG crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `1..=max`.
    pub fn between_1_and(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max as u64) as usize
    }
}

/// One record line of `pg_waldump -b`, with its block reference lines.
#[derive(Debug, Clone)]
pub struct DumpRecord {
    pub rmgr: String,
    pub rec_len: u32,
    pub tot_len: u32,
    pub xid: u32,
    pub lsn: Lsn,
    pub prev: Lsn,
    /// Everything after `desc: `: the record type, then its description.
    pub desc: String,
    pub blocks: Vec<DumpBlock>,
}

#[derive(Debug, Clone)]
pub struct DumpBlock {
    pub block_id: u8,
    /// `spc/db/rel`.
    pub rel: String,
    pub fork: String,
    pub blkno: u32,
    pub image: Option<DumpImage>,
}

#[derive(Debug, Clone)]
pub struct DumpImage {
    /// `(FPW)` rather than `(FPW for WAL verification)`.
    pub apply: bool,
    pub hole_offset: u16,
    pub hole_length: u16,
    /// `compression saved` and `method`, for a compressed image.
    pub compression: Option<(u32, String)>,
}

/// The text of `line` between `from` and the next `to` (or the end of the line).
fn field<'a>(line: &'a str, from: &str, to: Option<&str>) -> &'a str {
    let start = line
        .find(from)
        .unwrap_or_else(|| panic!("no {from:?} in {line:?}"))
        + from.len();
    let rest = &line[start..];
    let end = to.and_then(|to| rest.find(to)).unwrap_or(rest.len());
    rest[..end].trim()
}

fn number<T: std::str::FromStr>(text: &str, line: &str) -> T {
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{text:?} is not a number in {line:?}"))
}

fn lsn(text: &str, line: &str) -> Lsn {
    text.parse()
        .unwrap_or_else(|_| panic!("{text:?} is not an LSN in {line:?}"))
}

/// Parse the saved `pg_waldump -b` output.
pub fn waldump() -> Vec<DumpRecord> {
    let mut records: Vec<DumpRecord> = Vec::new();
    for line in WALDUMP.lines() {
        if let Some(block) = line.strip_prefix("\tblkref #") {
            let record = records.last_mut().expect("a blkref line follows a record");
            record.blocks.push(parse_block(block, line));
        } else if line.starts_with("rmgr: ") {
            let (rec, tot) = field(line, "len (rec/tot):", Some(", tx:"))
                .split_once('/')
                .unwrap_or_else(|| panic!("no rec/tot in {line:?}"));
            records.push(DumpRecord {
                rmgr: field(line, "rmgr: ", Some(" ")).to_owned(),
                rec_len: number(rec, line),
                tot_len: number(tot, line),
                xid: number(field(line, "tx:", Some(",")), line),
                lsn: lsn(field(line, "lsn: ", Some(",")), line),
                prev: lsn(field(line, "prev ", Some(",")), line),
                desc: line[line.find("desc: ").expect("desc") + 6..].to_owned(),
                blocks: Vec::new(),
            });
        } else {
            panic!("unexpected pg_waldump line {line:?}");
        }
    }
    records
}

/// `0: rel 1663/5/1247 fork main blk 14 (FPW); hole: offset: 64, length: 6288,
/// compression saved: 1385, method: lz4`
fn parse_block(text: &str, line: &str) -> DumpBlock {
    let (id, rest) = text
        .split_once(": ")
        .unwrap_or_else(|| panic!("no block id in {line:?}"));
    let (location, image) = match rest.split_once(" (FPW") {
        Some((location, image)) => (location, Some(image)),
        None => (rest, None),
    };
    let words: Vec<&str> = location.split_whitespace().collect();
    let ["rel", rel, "fork", fork, "blk", blkno] = words[..] else {
        panic!("unexpected block reference in {line:?}");
    };
    let image = image.map(|image| DumpImage {
        apply: !image.starts_with(" for WAL verification"),
        hole_offset: number(field(image, "hole: offset: ", Some(",")), line),
        hole_length: number(field(image, ", length: ", Some(",")), line),
        compression: image.contains("compression saved: ").then(|| {
            (
                number(field(image, "compression saved: ", Some(",")), line),
                field(image, "method: ", None).to_owned(),
            )
        }),
    });
    DumpBlock {
        block_id: number(id, line),
        rel: rel.to_owned(),
        fork: fork.to_owned(),
        blkno: number(blkno, line),
        image,
    }
}
