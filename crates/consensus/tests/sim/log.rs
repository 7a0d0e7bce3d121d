//! A WAL byte stream made of synthetic records, with the record boundaries and a hash
//! of every prefix that ends at one.
//!
//! Record format: `[total length: u32 LE][tag: u32 LE][payload]`, the payload derived
//! from the tag, so every record a proposer writes is distinct. Boundaries are found by
//! parsing the stream as it is appended, as the safekeeper does by decoding WAL.
//! Prefix hashes make "the logs agree up to LSN X" an O(log n) question; each seed ends
//! with a byte-for-byte comparison to back them up.

use consensus::limits::MAX_WAL_BYTES_PER_APPEND;
use postgres_wal::Lsn;

use super::rng::mix;

pub const RECORD_HEADER_BYTES: usize = 8;
/// Records may span several appends (up to two full ones), never more.
pub const MAX_RECORD_BYTES: usize = 2 * MAX_WAL_BYTES_PER_APPEND;
const EMPTY_PREFIX_HASH: u64 = 0x5EED;

/// A record boundary and the hash of the stream up to it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Boundary {
    pub end: Lsn,
    pub hash: u64,
}

#[derive(Clone, Debug)]
pub struct Log {
    base: Lsn,
    bytes: Vec<u8>,
    /// Every complete record's end, in order.
    records: Vec<Boundary>,
}

/// A record of `len` bytes (at least the header) whose content is derived from `tag`.
pub fn make_record(tag: u32, len: usize) -> Vec<u8> {
    assert!((RECORD_HEADER_BYTES..=MAX_RECORD_BYTES).contains(&len));
    let mut record = Vec::with_capacity(len);
    record.extend_from_slice(&(len as u32).to_le_bytes());
    record.extend_from_slice(&tag.to_le_bytes());
    let mut state = u64::from(tag);
    while record.len() < len {
        state = mix(state.wrapping_add(1));
        let take = (len - record.len()).min(8);
        record.extend_from_slice(&state.to_le_bytes()[..take]);
    }
    record
}

impl Log {
    pub fn new(base: Lsn) -> Log {
        Log {
            base,
            bytes: Vec::new(),
            records: Vec::new(),
        }
    }

    /// End of the bytes held (possibly inside a record).
    pub fn end(&self) -> Lsn {
        Lsn(self.base.0 + self.bytes.len() as u64)
    }

    /// The last complete record's end.
    pub fn last_boundary(&self) -> Boundary {
        self.records.last().copied().unwrap_or(Boundary {
            end: self.base,
            hash: EMPTY_PREFIX_HASH,
        })
    }

    /// The last record boundary at or below `lsn`.
    pub fn boundary_at_or_below(&self, lsn: Lsn) -> Lsn {
        let n = self.records.partition_point(|b| b.end <= lsn);
        n.checked_sub(1).map_or(self.base, |i| self.records[i].end)
    }

    /// The hash of the stream up to `lsn`, if `lsn` is a record boundary.
    pub fn hash_at(&self, lsn: Lsn) -> Option<u64> {
        if lsn == self.base {
            return Some(EMPTY_PREFIX_HASH);
        }
        let i = self.records.binary_search_by(|b| b.end.cmp(&lsn)).ok()?;
        Some(self.records[i].hash)
    }

    /// The bytes `[from, to)`.
    pub fn slice(&self, from: Lsn, to: Lsn) -> &[u8] {
        let offset = |lsn: Lsn| usize::try_from(lsn.0 - self.base.0).expect("in memory");
        &self.bytes[offset(from)..offset(to)]
    }

    pub fn append(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
        self.parse_records();
    }

    /// Cut the log at `lsn`, which must be a record boundary.
    pub fn truncate(&mut self, lsn: Lsn) {
        assert!(
            lsn == self.base || self.hash_at(lsn).is_some(),
            "truncation at {lsn}, which is not a record boundary (log ends at {})",
            self.end()
        );
        self.bytes.truncate((lsn.0 - self.base.0) as usize);
        let keep = self.records.partition_point(|b| b.end <= lsn);
        self.records.truncate(keep);
    }

    fn parse_records(&mut self) {
        loop {
            let last = self.last_boundary();
            let at = (last.end.0 - self.base.0) as usize;
            let Some(header) = self.bytes.get(at..at + RECORD_HEADER_BYTES) else {
                return;
            };
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
            assert!(
                (RECORD_HEADER_BYTES..=MAX_RECORD_BYTES).contains(&len),
                "garbage record length {len} at {}: WAL written at the wrong place",
                last.end
            );
            let Some(record) = self.bytes.get(at..at + len) else {
                return;
            };
            // The header and the last 8 bytes: cheap, and the byte comparison that ends
            // each seed covers the rest.
            let word = |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().expect("8"));
            let hash = mix(last.hash ^ mix(word(0)) ^ word(len - 8).rotate_left(17));
            self.records.push(Boundary {
                end: Lsn(last.end.0 + len as u64),
                hash,
            });
        }
    }
}
