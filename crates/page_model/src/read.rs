//! Reading the model back: the [`VersionSource`] storage implements, the encodings of
//! every non-page value, and typed accessors that reconstruct a key's value at an LSN.
//!
//! Encodings (every value below is a [`Value::Image`] of these bytes; integers
//! big-endian; lists sorted and prefixed with a `u32` count):
//! - `DbDir`: `(spcnode u32, dbnode u32)` per database.
//! - `RelDir`: `(relnode u32, fork u8)` per relation fork of the database.
//! - `SlruDir`: `segno u32` per segment; `TwoPhaseDir`: `xid u32` per prepared xact.
//! - `RelSize`: `nblocks u32, created_lsn u64`; `SlruSegSize`: `nblocks u32`.
//!   An empty image means the fork (segment) does not exist any more: dropping writes
//!   it so that reading a size never needs the directory.
//! - `TwoPhase`: the state file; empty once the transaction is finished.
//! - `Checkpoint`: `CheckPoint::encode` (88 bytes); `ControlFile`: the 8192-byte
//!   `pg_control` file.
//! - `LastRecord`: the start LSN `u64` of the record that ends at this version's LSN.
//! - `LastCheckpointRecord`: checkpoint record LSN `u64`, then its `CheckPoint` (88 bytes).
//!
//! Pages (relation blocks, SLRU pages) reconstruct from the newest image at or below
//! the LSN, or from a zero page when there is none, then apply newer native ops.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};
use postgres_wal::controlfile::CheckPoint;
use postgres_wal::reltag::{ForkNumber, Oid, RelTag};
use postgres_wal::{Lsn, BLCKSZ};

use crate::key::{Key, SlruKind};
use crate::redo;
use crate::value::Value;

/// The tablespace of the shared catalogs (`GLOBALTABLESPACE_OID`); their relations and
/// relation map live under database 0.
pub const GLOBAL_TABLESPACE: Oid = 1664;
/// The default tablespace (`DEFAULTTABLESPACE_OID`).
pub const DEFAULT_TABLESPACE: Oid = 1663;
/// Size of a relation map file (`RELMAPPER_FILESIZE`).
pub const RELMAP_FILE_SIZE: usize = 512;
/// SLRU pages per segment file (`SLRU_PAGES_PER_SEGMENT`).
pub const SLRU_PAGES_PER_SEGMENT: u32 = 32;

/// Versions of keys, as the storage keeps them.
pub trait VersionSource {
    /// Versions of `key` with `since <= lsn <= at`, newest first, ending with (and
    /// including) the first `Value::Image` met; empty if none.
    fn versions(&self, key: &Key, since: Lsn, at: Lsn) -> Result<Vec<(Lsn, Value)>, ReadError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("storage: {0}")]
    Storage(Box<dyn std::error::Error + Send + Sync>),
    /// Stored bytes fail a check (checksum, encoding): never served (`DATA_LOSS`).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("{0} does not exist at {1}")]
    NotFound(String, Lsn),
    #[error("cannot reconstruct {key:?} at {lsn}: {reason}")]
    Reconstruct { key: Key, lsn: Lsn, reason: String },
}

/// The value of `Key::RelSize`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RelSize {
    pub nblocks: u32,
    /// The LSN the fork was (last) created at: block versions older than it belong to
    /// an earlier incarnation of the same relfilenode and are ignored.
    pub created_lsn: Lsn,
}

const REL_SIZE_LEN: usize = 12;

impl RelSize {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(REL_SIZE_LEN);
        out.put_u32(self.nblocks);
        out.put_u64(self.created_lsn.0);
        out.freeze()
    }

    /// `None` for the empty "dropped" image.
    pub fn decode(bytes: &[u8]) -> Result<Option<RelSize>, ReadError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let b: &[u8; REL_SIZE_LEN] = bytes
            .try_into()
            .map_err(|_| ReadError::Corrupt(format!("relation size of {} bytes", bytes.len())))?;
        Ok(Some(RelSize {
            nblocks: be32(&b[0..4]),
            created_lsn: Lsn(be64(&b[4..12])),
        }))
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Encodes a sorted set of fixed-size entries behind a count.
fn encode_list<T>(
    entries: &BTreeSet<T>,
    entry_len: usize,
    put: impl Fn(&mut BytesMut, &T),
) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + entries.len() * entry_len);
    out.put_u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
    for e in entries {
        put(&mut out, e);
    }
    out.freeze()
}

fn decode_list<T: Ord>(
    what: &str,
    bytes: &[u8],
    entry_len: usize,
    get: impl Fn(&[u8]) -> Result<T, ReadError>,
) -> Result<BTreeSet<T>, ReadError> {
    let corrupt = || ReadError::Corrupt(format!("{what} of {} bytes", bytes.len()));
    let count = bytes.get(..4).map(be32).ok_or_else(corrupt)? as usize;
    let body = &bytes[4..];
    if count.checked_mul(entry_len) != Some(body.len()) {
        return Err(corrupt());
    }
    body.chunks_exact(entry_len).map(get).collect()
}

pub fn encode_db_dir(dbs: &BTreeSet<(Oid, Oid)>) -> Bytes {
    encode_list(dbs, 8, |out, &(spc, db)| {
        out.put_u32(spc);
        out.put_u32(db);
    })
}

pub fn decode_db_dir(bytes: &[u8]) -> Result<BTreeSet<(Oid, Oid)>, ReadError> {
    decode_list("database directory", bytes, 8, |c| {
        Ok((be32(c), be32(&c[4..])))
    })
}

pub fn encode_rel_dir(rels: &BTreeSet<(Oid, ForkNumber)>) -> Bytes {
    encode_list(rels, 5, |out, &(rel, fork)| {
        out.put_u32(rel);
        out.put_u8(fork as u8);
    })
}

pub fn decode_rel_dir(bytes: &[u8]) -> Result<BTreeSet<(Oid, ForkNumber)>, ReadError> {
    decode_list("relation directory", bytes, 5, |c| {
        let fork = ForkNumber::from_u8(c[4])
            .ok_or_else(|| ReadError::Corrupt(format!("fork {} in relation directory", c[4])))?;
        Ok((be32(c), fork))
    })
}

/// Encodes an `SlruDir` or a `TwoPhaseDir`.
pub fn encode_u32_set(set: &BTreeSet<u32>) -> Bytes {
    encode_list(set, 4, |out, &n| out.put_u32(n))
}

pub fn decode_u32_set(bytes: &[u8]) -> Result<BTreeSet<u32>, ReadError> {
    decode_list("directory", bytes, 4, |c| Ok(be32(c)))
}

pub fn encode_slru_seg_size(nblocks: u32) -> Bytes {
    Bytes::copy_from_slice(&nblocks.to_be_bytes())
}

/// `None` for the empty "removed" image.
pub fn decode_slru_seg_size(bytes: &[u8]) -> Result<Option<u32>, ReadError> {
    match bytes.len() {
        0 => Ok(None),
        4 => Ok(Some(be32(bytes))),
        n => Err(ReadError::Corrupt(format!(
            "SLRU segment size of {n} bytes"
        ))),
    }
}

pub fn encode_last_record(start: Lsn) -> Bytes {
    Bytes::copy_from_slice(&start.0.to_be_bytes())
}

pub fn encode_last_checkpoint_record(lsn: Lsn, cp: &CheckPoint) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + CheckPoint::SIZE);
    out.put_u64(lsn.0);
    out.put_slice(&cp.encode());
    out.freeze()
}

fn is_page(key: &Key) -> bool {
    matches!(key, Key::RelBlock { .. } | Key::SlruPage { .. })
}

/// Builds the value at `lsn` from `versions` (newest first, as [`VersionSource::versions`]
/// returns them): the oldest must be an image unless `key` is a page, whose base is
/// then a zero page. `None` when there are no versions.
pub fn reconstruct(
    key: &Key,
    lsn: Lsn,
    versions: Vec<(Lsn, Value)>,
) -> Result<Option<Bytes>, ReadError> {
    let mut iter = versions.into_iter().rev().peekable();
    let base = match iter.peek() {
        None => return Ok(None),
        Some((_, Value::Image(_))) => match iter.next() {
            Some((_, Value::Image(bytes))) => bytes,
            _ => return Ok(None),
        },
        Some((_, Value::Op(_))) if is_page(key) => Bytes::from_static(&[0u8; BLCKSZ]),
        Some((op_lsn, Value::Op(_))) => {
            return Err(ReadError::Reconstruct {
                key: *key,
                lsn,
                reason: format!("oldest version at {op_lsn} is an op, not an image"),
            })
        }
    };
    if iter.peek().is_none() {
        return Ok(Some(base));
    }
    let mut page: Box<[u8; BLCKSZ]> =
        base.as_ref()
            .try_into()
            .map(Box::new)
            .map_err(|_| ReadError::Reconstruct {
                key: *key,
                lsn,
                reason: format!("native ops over a {}-byte base", base.len()),
            })?;
    for (op_lsn, value) in iter {
        match value {
            Value::Op(op) => redo::apply(&op, &mut page).map_err(|e| ReadError::Reconstruct {
                key: *key,
                lsn,
                reason: format!("op at {op_lsn}: {e}"),
            })?,
            Value::Image(_) => {
                return Err(ReadError::Reconstruct {
                    key: *key,
                    lsn,
                    reason: format!("image at {op_lsn} below newer versions"),
                })
            }
        }
    }
    Ok(Some(Bytes::copy_from_slice(&page[..])))
}

/// The value of `key` at `lsn`, counting only versions at or after `since`.
pub fn value_at(
    src: &dyn VersionSource,
    key: &Key,
    since: Lsn,
    lsn: Lsn,
) -> Result<Option<Bytes>, ReadError> {
    reconstruct(key, lsn, src.versions(key, since, lsn)?)
}

fn get(src: &dyn VersionSource, key: Key, lsn: Lsn) -> Result<Option<Bytes>, ReadError> {
    value_at(src, &key, Lsn::INVALID, lsn)
}

pub fn rel_size(
    src: &dyn VersionSource,
    rel: RelTag,
    lsn: Lsn,
) -> Result<Option<RelSize>, ReadError> {
    match get(src, Key::RelSize(rel), lsn)? {
        Some(bytes) => RelSize::decode(&bytes),
        None => Ok(None),
    }
}

fn zero_page() -> Bytes {
    Bytes::from_static(&[0u8; BLCKSZ])
}

fn rel_name(rel: RelTag) -> String {
    format!("relation {} fork {}", rel.node, rel.fork.name())
}

/// 8192 bytes, without a checksum (callers that emit pages set it when the cluster
/// has checksums).
pub fn rel_page(
    src: &dyn VersionSource,
    rel: RelTag,
    blkno: u32,
    lsn: Lsn,
) -> Result<Bytes, ReadError> {
    let size = rel_size(src, rel, lsn)?.ok_or_else(|| ReadError::NotFound(rel_name(rel), lsn))?;
    if blkno >= size.nblocks {
        return Ok(zero_page());
    }
    let key = Key::rel_block(rel, blkno);
    let page = value_at(src, &key, size.created_lsn, lsn)?.unwrap_or_else(zero_page);
    check_page_len(&key, lsn, page)
}

fn check_page_len(key: &Key, lsn: Lsn, page: Bytes) -> Result<Bytes, ReadError> {
    if page.len() != BLCKSZ {
        return Err(ReadError::Corrupt(format!(
            "{key:?} at {lsn} is {} bytes, not a page",
            page.len()
        )));
    }
    Ok(page)
}

pub fn db_dir(src: &dyn VersionSource, lsn: Lsn) -> Result<BTreeSet<(Oid, Oid)>, ReadError> {
    get(src, Key::DbDir, lsn)?
        .map(|b| decode_db_dir(&b))
        .unwrap_or_else(|| Ok(BTreeSet::new()))
}

pub fn rel_dir(
    src: &dyn VersionSource,
    spc: Oid,
    db: Oid,
    lsn: Lsn,
) -> Result<BTreeSet<(Oid, ForkNumber)>, ReadError> {
    get(src, Key::RelDir { spc, db }, lsn)?
        .map(|b| decode_rel_dir(&b))
        .unwrap_or_else(|| Ok(BTreeSet::new()))
}

pub fn relmap(
    src: &dyn VersionSource,
    spc: Oid,
    db: Oid,
    lsn: Lsn,
) -> Result<Option<Bytes>, ReadError> {
    Ok(get(src, Key::RelMap { spc, db }, lsn)?.filter(|b| !b.is_empty()))
}

pub fn slru_dir(
    src: &dyn VersionSource,
    kind: SlruKind,
    lsn: Lsn,
) -> Result<BTreeSet<u32>, ReadError> {
    get(src, Key::SlruDir(kind), lsn)?
        .map(|b| decode_u32_set(&b))
        .unwrap_or_else(|| Ok(BTreeSet::new()))
}

pub fn slru_seg_size(
    src: &dyn VersionSource,
    kind: SlruKind,
    segno: u32,
    lsn: Lsn,
) -> Result<Option<u32>, ReadError> {
    match get(src, Key::SlruSegSize { kind, segno }, lsn)? {
        Some(b) => decode_slru_seg_size(&b),
        None => Ok(None),
    }
}

/// A zero page when the page was never written.
pub fn slru_page(
    src: &dyn VersionSource,
    kind: SlruKind,
    segno: u32,
    blkno: u32,
    lsn: Lsn,
) -> Result<Bytes, ReadError> {
    let key = Key::SlruPage { kind, segno, blkno };
    let page = get(src, key, lsn)?.unwrap_or_else(zero_page);
    check_page_len(&key, lsn, page)
}

pub fn twophase_dir(src: &dyn VersionSource, lsn: Lsn) -> Result<BTreeSet<u32>, ReadError> {
    get(src, Key::TwoPhaseDir, lsn)?
        .map(|b| decode_u32_set(&b))
        .unwrap_or_else(|| Ok(BTreeSet::new()))
}

pub fn twophase_file(
    src: &dyn VersionSource,
    xid: u32,
    lsn: Lsn,
) -> Result<Option<Bytes>, ReadError> {
    Ok(get(src, Key::TwoPhase { xid }, lsn)?.filter(|b| !b.is_empty()))
}

pub fn checkpoint(src: &dyn VersionSource, lsn: Lsn) -> Result<Option<CheckPoint>, ReadError> {
    get(src, Key::Checkpoint, lsn)?
        .map(|b| CheckPoint::decode(&b).map_err(|e| ReadError::Corrupt(format!("checkpoint: {e}"))))
        .transpose()
}

pub fn control_file(src: &dyn VersionSource, lsn: Lsn) -> Result<Option<Bytes>, ReadError> {
    get(src, Key::ControlFile, lsn)
}

/// `(start, end)` of the last record ending at or before `lsn`.
pub fn last_record(src: &dyn VersionSource, lsn: Lsn) -> Result<Option<(Lsn, Lsn)>, ReadError> {
    let versions = src.versions(&Key::LastRecord, Lsn::INVALID, lsn)?;
    match versions.into_iter().next() {
        None => Ok(None),
        Some((end, Value::Image(b))) if b.len() == 8 => Ok(Some((Lsn(be64(&b)), end))),
        Some((end, _)) => Err(ReadError::Corrupt(format!("last record value at {end}"))),
    }
}

/// The last checkpoint record at or before `lsn`: its LSN and its `CheckPoint`.
pub fn last_checkpoint_record(
    src: &dyn VersionSource,
    lsn: Lsn,
) -> Result<Option<(Lsn, CheckPoint)>, ReadError> {
    let Some(b) = get(src, Key::LastCheckpointRecord, lsn)? else {
        return Ok(None);
    };
    let corrupt = || ReadError::Corrupt(format!("last checkpoint record of {} bytes", b.len()));
    if b.len() != 8 + CheckPoint::SIZE {
        return Err(corrupt());
    }
    let cp = CheckPoint::decode(&b[8..]).map_err(|_| corrupt())?;
    Ok(Some((Lsn(be64(&b)), cp)))
}

/// The databases whose relations and maps exist at `lsn`, shared catalogs included.
fn databases(src: &dyn VersionSource, lsn: Lsn) -> Result<BTreeSet<(Oid, Oid)>, ReadError> {
    let mut dbs = db_dir(src, lsn)?;
    dbs.insert((GLOBAL_TABLESPACE, 0));
    Ok(dbs)
}

/// Every key that has a value at `lsn`, sorted: the directories, every block below
/// each fork's size (never-written ones too, which read as zero pages), every SLRU
/// page below each segment's size, prepared transactions' files and the singletons.
pub fn keyspace(src: &dyn VersionSource, lsn: Lsn) -> Result<Vec<Key>, ReadError> {
    let mut keys = Vec::new();
    let present = |key: Key| -> Result<bool, ReadError> {
        Ok(!src.versions(&key, Lsn::INVALID, lsn)?.is_empty())
    };
    for key in [
        Key::DbDir,
        Key::TwoPhaseDir,
        Key::Checkpoint,
        Key::ControlFile,
        Key::LastRecord,
        Key::LastCheckpointRecord,
    ] {
        if present(key)? {
            keys.push(key);
        }
    }
    for (spc, db) in databases(src, lsn)? {
        if relmap(src, spc, db, lsn)?.is_some() {
            keys.push(Key::RelMap { spc, db });
        }
        if !present(Key::RelDir { spc, db })? {
            continue;
        }
        keys.push(Key::RelDir { spc, db });
        for (rel_node, fork) in rel_dir(src, spc, db, lsn)? {
            let rel = RelTag {
                node: postgres_wal::RelFileNode {
                    spc_node: spc,
                    db_node: db,
                    rel_node,
                },
                fork,
            };
            if let Some(size) = rel_size(src, rel, lsn)? {
                keys.push(Key::RelSize(rel));
                keys.extend((0..size.nblocks).map(|blkno| Key::rel_block(rel, blkno)));
            }
        }
    }
    for kind in [
        SlruKind::Clog,
        SlruKind::MultiXactMembers,
        SlruKind::MultiXactOffsets,
    ] {
        let segs = slru_dir(src, kind, lsn)?;
        if segs.is_empty() && !present(Key::SlruDir(kind))? {
            continue;
        }
        keys.push(Key::SlruDir(kind));
        for segno in segs {
            if let Some(n) = slru_seg_size(src, kind, segno, lsn)? {
                keys.push(Key::SlruSegSize { kind, segno });
                keys.extend((0..n).map(|blkno| Key::SlruPage { kind, segno, blkno }));
            }
        }
    }
    for xid in twophase_dir(src, lsn)? {
        keys.push(Key::TwoPhase { xid });
    }
    keys.sort_by_key(|k| k.encode());
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::NativeOp;

    use crate::memory::MemorySource as Mem;

    fn rel() -> RelTag {
        RelTag {
            node: postgres_wal::RelFileNode {
                spc_node: DEFAULT_TABLESPACE,
                db_node: 5,
                rel_node: 16384,
            },
            fork: ForkNumber::VisibilityMap,
        }
    }

    #[test]
    fn encodings_round_trip() {
        let dbs: BTreeSet<_> = [(1663, 1), (1663, 5)].into();
        assert_eq!(decode_db_dir(&encode_db_dir(&dbs)).unwrap(), dbs);
        let rels: BTreeSet<_> = [(1259, ForkNumber::Main), (1259, ForkNumber::Fsm)].into();
        assert_eq!(decode_rel_dir(&encode_rel_dir(&rels)).unwrap(), rels);
        let segs: BTreeSet<_> = [0, 7].into();
        assert_eq!(decode_u32_set(&encode_u32_set(&segs)).unwrap(), segs);
        let size = RelSize {
            nblocks: 3,
            created_lsn: Lsn(0x1234),
        };
        assert_eq!(RelSize::decode(&size.encode()).unwrap(), Some(size));
        assert_eq!(RelSize::decode(&[]).unwrap(), None);
        assert!(decode_db_dir(&[0, 0, 0, 2, 1]).is_err());
        assert!(RelSize::decode(&[1]).is_err());
    }

    #[test]
    fn pages_reconstruct_from_zero_and_ignore_older_incarnations() {
        let mut mem = Mem::default();
        let rel = rel();
        let key = Key::rel_block(rel, 0);
        mem.0.insert(
            (key, Lsn(10)),
            Value::Image(Bytes::from(vec![0xFF; BLCKSZ])),
        );
        mem.0.insert(
            (Key::RelSize(rel), Lsn(20)),
            Value::Image(
                RelSize {
                    nblocks: 1,
                    created_lsn: Lsn(20),
                }
                .encode(),
            ),
        );
        mem.0.insert(
            (key, Lsn(30)),
            Value::Op(NativeOp::ClearVmBits {
                heap_blocks: vec![0, 1].into_iter().map(|b| (b, 3)).collect(),
            }),
        );
        // The image at 10 predates the fork's creation at 20: the op applies to zeroes.
        let page = rel_page(&mem, rel, 0, Lsn(40)).unwrap();
        assert!(page.iter().all(|&b| b == 0));
        // Without the size bound, the op applies over the old image.
        let old = value_at(&mem, &key, Lsn::INVALID, Lsn(40))
            .unwrap()
            .unwrap();
        assert_eq!(old[24], 0xF0);
        assert!(matches!(
            rel_page(&mem, rel, 0, Lsn(15)),
            Err(ReadError::NotFound(..))
        ));
        assert_eq!(rel_page(&mem, rel, 5, Lsn(40)).unwrap().len(), BLCKSZ);
        let keys = keyspace(&mem, Lsn(40)).unwrap();
        assert!(keys.is_empty(), "not in any RelDir: {keys:?}");
    }

    #[test]
    fn non_page_keys_need_an_image() {
        let versions = vec![(
            Lsn(5),
            Value::Op(NativeOp::TruncateVmPage { heap_blocks: 1 }),
        )];
        assert!(matches!(
            reconstruct(&Key::DbDir, Lsn(5), versions),
            Err(ReadError::Reconstruct { .. })
        ));
    }
}
