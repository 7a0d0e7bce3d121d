//! Bounds-checked reading of records' main data (little-endian, as PostgreSQL writes
//! it on every platform we support), and the PostgreSQL 15 layouts ingest needs.

use postgres_wal::reltag::RelFileNode;

/// Main data shorter than its layout says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("main data of {len} bytes ends before {what}")]
pub struct Truncated {
    pub what: &'static str,
    pub len: usize,
}

pub(crate) struct Le<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Le<'a> {
    pub fn new(bytes: &'a [u8]) -> Le<'a> {
        Le { bytes, pos: 0 }
    }

    pub fn at(bytes: &'a [u8], pos: usize) -> Le<'a> {
        Le { bytes, pos }
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Truncated> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or(Truncated {
                what,
                len: self.bytes.len(),
            })?;
        self.pos += n;
        Ok(slice)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Truncated> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, Truncated> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A C `int` count: negative counts are treated as a truncated record.
    pub fn count(&mut self, what: &'static str) -> Result<usize, Truncated> {
        let n = self.u32(what)?;
        if n > i32::MAX as u32 {
            return Err(Truncated {
                what,
                len: self.bytes.len(),
            });
        }
        Ok(n as usize)
    }

    pub fn rel_file_node(&mut self, what: &'static str) -> Result<RelFileNode, Truncated> {
        Ok(RelFileNode {
            spc_node: self.u32(what)?,
            db_node: self.u32(what)?,
            rel_node: self.u32(what)?,
        })
    }

    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), Truncated> {
        self.take(n, what).map(|_| ())
    }

    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or(&[])
    }
}

const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;
const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;
/// `MinSizeOfXactCommit` / `MinSizeOfXactAbort`: the `TimestampTz`.
const XACT_TIME_LEN: usize = 8;
const XL_XACT_DBINFO_LEN: usize = 8;
const XL_XACT_STATS_ITEM_LEN: usize = 12;
const SHARED_INVALIDATION_MESSAGE_LEN: usize = 16;
const REL_FILE_NODE_LEN: usize = 12;
const XID_LEN: usize = 4;

/// What ingest needs of a commit or abort record (`xl_xact_parsed_commit/abort`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ParsedXact {
    pub subxacts: Vec<u32>,
    pub dropped: Vec<RelFileNode>,
    pub twophase_xid: Option<u32>,
}

/// Parses a commit (`is_commit`) or abort record's main data as `ParseCommitRecord`
/// and `ParseAbortRecord` do; abort records carry no invalidations.
pub(crate) fn parse_xact(
    data: &[u8],
    has_info: bool,
    is_commit: bool,
) -> Result<ParsedXact, Truncated> {
    let mut r = Le::new(data);
    r.skip(XACT_TIME_LEN, "xact_time")?;
    let xinfo = if has_info { r.u32("xinfo")? } else { 0 };
    let mut parsed = ParsedXact::default();
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        r.skip(XL_XACT_DBINFO_LEN, "dbinfo")?;
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = r.count("nsubxacts")?;
        let bytes = r.take(n.saturating_mul(XID_LEN), "subxacts")?;
        parsed.subxacts = bytes
            .chunks_exact(XID_LEN)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
    }
    if xinfo & XACT_XINFO_HAS_RELFILENODES != 0 {
        let n = r.count("nrels")?;
        let bytes = r.take(n.saturating_mul(REL_FILE_NODE_LEN), "relfilenodes")?;
        let mut rels = Le::new(bytes);
        for _ in 0..n {
            parsed.dropped.push(rels.rel_file_node("relfilenode")?);
        }
    }
    if xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        let n = r.count("nitems")?;
        r.skip(n.saturating_mul(XL_XACT_STATS_ITEM_LEN), "dropped stats")?;
    }
    if is_commit && xinfo & XACT_XINFO_HAS_INVALS != 0 {
        let n = r.count("nmsgs")?;
        r.skip(
            n.saturating_mul(SHARED_INVALIDATION_MESSAGE_LEN),
            "invalidations",
        )?;
    }
    if xinfo & XACT_XINFO_HAS_TWOPHASE != 0 {
        parsed.twophase_xid = Some(r.u32("twophase xid")?);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn commit_prepared_with_everything() {
        let mut data = vec![0u8; 8];
        let xinfo = XACT_XINFO_HAS_DBINFO
            | XACT_XINFO_HAS_SUBXACTS
            | XACT_XINFO_HAS_RELFILENODES
            | XACT_XINFO_HAS_DROPPED_STATS
            | XACT_XINFO_HAS_INVALS
            | XACT_XINFO_HAS_TWOPHASE;
        data.extend(le(&[xinfo, 5, 1663]));
        data.extend(le(&[2, 801, 802]));
        data.extend(le(&[1, 1663, 5, 16384]));
        data.extend(le(&[1, 2, 5, 16384]));
        data.extend(le(&[1, 0, 0, 0, 0]));
        data.extend(le(&[800]));
        let parsed = parse_xact(&data, true, true).unwrap();
        assert_eq!(parsed.subxacts, vec![801, 802]);
        assert_eq!(parsed.dropped[0].rel_node, 16384);
        assert_eq!(parsed.twophase_xid, Some(800));
        // An abort has no invalidations: the same bytes would misparse, so refuse short.
        assert!(parse_xact(&data[..data.len() - 1], true, true).is_err());
        assert_eq!(
            parse_xact(&[0; 8], false, false).unwrap(),
            ParsedXact::default()
        );
        assert!(parse_xact(&le(&[0, 0, 2, 0xFFFF_FFF0]), true, false).is_err());
    }
}
