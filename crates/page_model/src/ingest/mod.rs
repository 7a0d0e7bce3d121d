//! WAL ingest: what each record does to the key space. Every value a record produces
//! is stored at the record's end LSN (PostgreSQL's `EndRecPtr`), one per key.
//!
//! Pages come from the images records carry (tier 0 and tier 1 of the design): full-page
//! writes, images with the apply flag, and the images `wal_consistency_checking` adds
//! to every block of the rmgrs it names. A block reference without an image in a
//! record whose rmgr is not redone natively ([`native_redo_rmgrs`], none yet) is an
//! error: ingest never stores a page it cannot produce exactly. Everything else a
//! record changes and no image covers is done here natively: directories, sizes,
//! CLOG, multixacts, visibility-map clears, relation maps, two-phase files and the
//! checkpoint fields.

mod batch;
mod parse;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use postgres_wal::controlfile::CheckPoint;
use postgres_wal::image::{restore_page, ImageError};
use postgres_wal::page;
use postgres_wal::record::{BlockRef, DecodedRecord};
use postgres_wal::reltag::{ForkNumber, Oid, RelFileNode, RelTag};
use postgres_wal::rmgr::{self, RmgrId};
use postgres_wal::{Lsn, BLCKSZ};

pub use batch::Batch;
use batch::Overlay;
use parse::{parse_xact, Le, Truncated};

#[cfg(test)]
mod tests;

use crate::key::{Key, SlruKind};
use crate::read::{self, ReadError, RelSize, VersionSource, SLRU_PAGES_PER_SEGMENT};
use crate::redo::{self, VM_ALL_FROZEN, VM_VALID_BITS};
use crate::value::{NativeOp, Value};

/// The rmgrs (by their `wal_consistency_checking` names) whose page changes ingest
/// redoes natively, so their records need no page images. None yet: every rmgr that
/// changes pages must be in the compute's `wal_consistency_checking`.
pub fn native_redo_rmgrs() -> &'static [&'static str] {
    &[]
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("no checkpoint stored at {0}: the timeline has no imported base")]
    NoCheckpoint(Lsn),
    #[error("record at {lsn} ({rmgr} {kind}) is malformed: {reason}")]
    Malformed {
        lsn: Lsn,
        rmgr: String,
        kind: String,
        reason: String,
    },
    #[error(
        "record at {lsn} ({rmgr} {kind}) changes block {block} but carries no image of it, \
         and the pageserver does not redo {rmgr} natively: set wal_consistency_checking \
         on the compute to include '{rmgr}' (or 'all')"
    )]
    MissingImage {
        lsn: Lsn,
        rmgr: String,
        kind: String,
        block: String,
    },
    #[error("record at {lsn}: image of block {block}: {source}")]
    Image {
        lsn: Lsn,
        block: String,
        source: ImageError,
    },
}

/// `FirstNormalTransactionId`.
const FIRST_NORMAL_XID: u32 = 3;
/// `FirstMultiXactId`.
const FIRST_MULTI_XID: u32 = 1;

/// `xl_smgr_truncate` flags.
const SMGR_TRUNCATE_HEAP: u32 = 0x0001;
const SMGR_TRUNCATE_VM: u32 = 0x0002;
const SMGR_TRUNCATE_FSM: u32 = 0x0004;

/// Heap record flag bits (PostgreSQL 15 `heapam_xlog.h`).
const XLH_INSERT_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
const XLH_DELETE_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
const XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED: u8 = 1 << 0;
const XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED: u8 = 1 << 1;
const XLH_LOCK_ALL_FROZEN_CLEARED: u8 = 0x01;
/// Offsets of `flags` in `xl_heap_insert`, `xl_heap_delete`, `xl_heap_update`,
/// `xl_heap_lock`, `xl_heap_lock_updated` and `xl_heap_multi_insert`.
const HEAP_INSERT_FLAGS_AT: usize = 2;
const HEAP_DELETE_FLAGS_AT: usize = 7;
const HEAP_UPDATE_FLAGS_AT: usize = 7;
const HEAP_LOCK_FLAGS_AT: usize = 7;
const HEAP_MULTI_INSERT_FLAGS_AT: usize = 0;

/// FSM geometry (`fsm_internals.h`, `freespace.c`): leaf slots per page and tree depth.
const FSM_SLOTS_PER_PAGE: u32 = {
    let nodes = BLCKSZ - 24 - 4; // page header (MAXALIGNed) and fp_next_slot
    (nodes - (BLCKSZ / 2 - 1)) as u32
};
const FSM_TREE_DEPTH: u32 = if FSM_SLOTS_PER_PAGE >= 1626 { 3 } else { 4 };

/// Offset of `xid` in a two-phase state file's `TwoPhaseFileHeader`.
const TWOPHASE_HEADER_XID_AT: usize = 8;

static ZERO_PAGE: [u8; BLCKSZ] = [0; BLCKSZ];

fn zero_page() -> Bytes {
    Bytes::from_static(&ZERO_PAGE)
}

fn xid_precedes(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Ingest state carried from record to record.
#[derive(Debug)]
pub struct WalIngest {
    checkpoint: CheckPoint,
    checkpoint_dirty: bool,
    /// The offsets page a `CREATE_ID` from an older minor version had to create for the
    /// next multixact; its `ZERO_OFF_PAGE`, which follows, must not wipe it.
    pre_initialized_offsets_page: Option<u32>,
}

impl WalIngest {
    /// State as of `lsn` (last_record_lsn), read from `src`.
    pub fn load(src: &dyn VersionSource, lsn: Lsn) -> Result<WalIngest, IngestError> {
        let checkpoint = read::checkpoint(src, lsn)?.ok_or(IngestError::NoCheckpoint(lsn))?;
        Ok(WalIngest {
            checkpoint,
            checkpoint_dirty: false,
            pre_initialized_offsets_page: None,
        })
    }

    /// The checkpoint fields as replayed so far.
    pub fn checkpoint(&self) -> &CheckPoint {
        &self.checkpoint
    }

    /// Adds the record's effects to `batch` (reading through `batch` over `src`). On
    /// error, neither `batch` nor this state holds any of the record's effects.
    pub fn ingest(
        &mut self,
        rec: &DecodedRecord,
        src: &dyn VersionSource,
        batch: &mut Batch,
    ) -> Result<(), IngestError> {
        let len = batch.len();
        let saved = (
            self.checkpoint,
            self.checkpoint_dirty,
            self.pre_initialized_offsets_page,
        );
        let mut cx = Cx {
            st: self,
            src,
            batch,
            rec,
            lsn: rec.end_lsn,
        };
        let result = cx.record();
        if result.is_err() {
            batch.truncate(len);
            (
                self.checkpoint,
                self.checkpoint_dirty,
                self.pre_initialized_offsets_page,
            ) = saved;
        }
        result
    }
}

/// A block reference and the page it leaves.
type BlockPage<'a> = (&'a BlockRef, Box<[u8; BLCKSZ]>);
/// Heap relation, heap block, VM bits to clear.
type VmClear = (RelFileNode, u32, u8);

/// One record being ingested.
struct Cx<'a> {
    st: &'a mut WalIngest,
    src: &'a dyn VersionSource,
    batch: &'a mut Batch,
    rec: &'a DecodedRecord,
    /// Where every value of this record is stored.
    lsn: Lsn,
}

fn block_name(b: &BlockRef) -> String {
    format!("{} fork {} block {}", b.rel, b.fork.name(), b.blkno)
}

fn slru_key(kind: SlruKind, pageno: u32) -> Key {
    Key::SlruPage {
        kind,
        segno: pageno / SLRU_PAGES_PER_SEGMENT,
        blkno: pageno % SLRU_PAGES_PER_SEGMENT,
    }
}

/// Two ops of one record on one key, as one op, when they are of a kind that adds up.
fn merge_ops(a: &NativeOp, b: &NativeOp) -> Option<NativeOp> {
    Some(match (a, b) {
        (NativeOp::ClearVmBits { heap_blocks: x }, NativeOp::ClearVmBits { heap_blocks: y }) => {
            NativeOp::ClearVmBits {
                heap_blocks: x.iter().chain(y).copied().collect(),
            }
        }
        (
            NativeOp::ClogSetStatus { xids: x, status: s },
            NativeOp::ClogSetStatus { xids: y, status: t },
        ) if s == t => NativeOp::ClogSetStatus {
            xids: x.iter().chain(y).copied().collect(),
            status: *s,
        },
        (NativeOp::MultiXactOffsets { entries: x }, NativeOp::MultiXactOffsets { entries: y }) => {
            NativeOp::MultiXactOffsets {
                entries: x.iter().chain(y).copied().collect(),
            }
        }
        (NativeOp::MultiXactMembers { members: x }, NativeOp::MultiXactMembers { members: y }) => {
            NativeOp::MultiXactMembers {
                members: x.iter().chain(y).copied().collect(),
            }
        }
        _ => return None,
    })
}

impl<'a> Cx<'a> {
    fn overlay(&self) -> Overlay<'_> {
        Overlay {
            src: self.src,
            batch: self.batch,
        }
    }

    fn rmgr_name(&self) -> String {
        self.rec.rmid().display_name()
    }

    fn kind_name(&self) -> String {
        rmgr::record_type_display(self.rec.rmid(), self.rec.header.info)
    }

    fn malformed(&self, reason: impl std::fmt::Display) -> IngestError {
        IngestError::Malformed {
            lsn: self.rec.lsn,
            rmgr: self.rmgr_name(),
            kind: self.kind_name(),
            reason: reason.to_string(),
        }
    }

    fn truncated(&self, t: Truncated) -> IngestError {
        self.malformed(t)
    }

    fn main(&self) -> Le<'a> {
        Le::new(self.rec.main_data())
    }

    fn put_image(&mut self, key: Key, bytes: Bytes) {
        self.batch.put(key, self.lsn, Value::Image(bytes));
    }

    /// Stores `op` on `key`, combining it with what this record already stored there;
    /// `since` bounds the versions a combination may read (a fork's creation LSN).
    fn put_op(&mut self, key: Key, since: Lsn, op: NativeOp) -> Result<(), IngestError> {
        let value = match self.batch.get(&key, self.lsn) {
            None => Value::Op(op),
            Some(Value::Op(prev)) => match merge_ops(prev, &op) {
                Some(merged) => Value::Op(merged),
                None => self.applied(&key, since, &op)?,
            },
            Some(Value::Image(_)) => self.applied(&key, since, &op)?,
        };
        self.batch.put(key, self.lsn, value);
        Ok(())
    }

    /// The page `key` holds at this LSN so far, with `op` applied, as an image: the one
    /// value of this record for `key` when `op` cannot join the one already there.
    fn applied(&self, key: &Key, since: Lsn, op: &NativeOp) -> Result<Value, IngestError> {
        let base = read::value_at(&self.overlay(), key, since, self.lsn)?;
        let mut page: Box<[u8; BLCKSZ]> = match base {
            None => Box::new([0; BLCKSZ]),
            Some(b) => Box::new(b.as_ref().try_into().map_err(|_| {
                self.malformed(format!("{key:?} is {} bytes, not a page", b.len()))
            })?),
        };
        redo::apply(op, &mut page).map_err(|e| self.malformed(e))?;
        Ok(Value::Image(Bytes::copy_from_slice(&page[..])))
    }

    fn record(&mut self) -> Result<(), IngestError> {
        let pages = self.block_pages()?;
        for (block, page) in pages {
            self.put_block(block, page)?;
        }
        let info = self.rec.rmgr_info();
        match self.rec.rmid() {
            RmgrId::XLOG => self.xlog(info)?,
            RmgrId::XACT => self.xact()?,
            RmgrId::SMGR => self.smgr(info)?,
            RmgrId::CLOG => self.clog(info)?,
            RmgrId::DBASE => self.dbase(info)?,
            RmgrId::MULTIXACT => self.multixact(info)?,
            RmgrId::RELMAP => self.relmap()?,
            RmgrId::HEAP => self.heap(info)?,
            RmgrId::HEAP2 => self.heap2(info)?,
            _ => {}
        }
        let xid = self.rec.xid();
        self.advance_next_xid(xid);
        self.put_image(Key::LastRecord, read::encode_last_record(self.rec.lsn));
        if self.st.checkpoint_dirty {
            let cp = self.st.checkpoint.encode();
            self.put_image(Key::Checkpoint, Bytes::copy_from_slice(&cp));
            self.st.checkpoint_dirty = false;
        }
        Ok(())
    }

    /// The page each block reference leaves behind, all checked before anything is
    /// stored. This is where native redo of rmgrs in [`native_redo_rmgrs`] joins.
    fn block_pages(&self) -> Result<Vec<BlockPage<'a>>, IngestError> {
        let mut pages = Vec::with_capacity(self.rec.blocks.len());
        let rec: &'a DecodedRecord = self.rec;
        for block in &rec.blocks {
            let Some(image) = &block.image else {
                return Err(IngestError::MissingImage {
                    lsn: self.rec.lsn,
                    rmgr: self.rmgr_name(),
                    kind: self.kind_name(),
                    block: block_name(block),
                });
            };
            // An apply image is the page before the record's other changes, which redo
            // then does not make to it; a consistency-check image is the page after
            // them. Either way it is the page as of the record's end.
            let mut page = restore_page(self.rec, image).map_err(|source| IngestError::Image {
                lsn: self.rec.lsn,
                block: block_name(block),
                source,
            })?;
            if !page::is_new(&page) {
                page::set_page_lsn(&mut page, self.lsn);
            }
            pages.push((block, page));
        }
        Ok(pages)
    }

    fn put_block(&mut self, block: &BlockRef, page: Box<[u8; BLCKSZ]>) -> Result<(), IngestError> {
        let rel = RelTag {
            node: block.rel,
            fork: block.fork,
        };
        self.extend_to(rel, block.blkno)?;
        self.put_image(
            Key::rel_block(rel, block.blkno),
            Bytes::copy_from_slice(&page[..]),
        );
        Ok(())
    }

    fn rel_size(&self, rel: RelTag) -> Result<Option<RelSize>, IngestError> {
        Ok(read::rel_size(&self.overlay(), rel, self.lsn)?)
    }

    fn put_rel_size(&mut self, rel: RelTag, size: RelSize) {
        self.put_image(Key::RelSize(rel), size.encode());
    }

    fn rel_dir(&self, spc: Oid, db: Oid) -> Result<BTreeSet<(Oid, ForkNumber)>, IngestError> {
        Ok(read::rel_dir(&self.overlay(), spc, db, self.lsn)?)
    }

    fn put_rel_dir(&mut self, spc: Oid, db: Oid, dir: &BTreeSet<(Oid, ForkNumber)>) {
        self.put_image(Key::RelDir { spc, db }, read::encode_rel_dir(dir));
    }

    /// Creates the fork with `nblocks` blocks at this LSN.
    fn create_rel(&mut self, rel: RelTag, nblocks: u32) -> Result<RelSize, IngestError> {
        let (spc, db) = (rel.node.spc_node, rel.node.db_node);
        // A database's relations in another tablespace live in a directory of their
        // own, which no CREATE DATABASE record names: list it so that readers that
        // walk the databases (keyspace, basebackup) find them.
        if spc != read::GLOBAL_TABLESPACE {
            self.add_database(spc, db)?;
        }
        let mut dir = self.rel_dir(spc, db)?;
        if dir.insert((rel.node.rel_node, rel.fork)) {
            self.put_rel_dir(spc, db, &dir);
        }
        let size = RelSize {
            nblocks,
            created_lsn: self.lsn,
        };
        self.put_rel_size(rel, size);
        Ok(size)
    }

    /// Makes block `blkno` part of the fork, creating the fork if it is missing, as
    /// PostgreSQL's redo extends a relation to the blocks it reads.
    fn extend_to(&mut self, rel: RelTag, blkno: u32) -> Result<(), IngestError> {
        let want = blkno
            .checked_add(1)
            .ok_or_else(|| self.malformed("block number 0xFFFFFFFF"))?;
        match self.rel_size(rel)? {
            None => {
                self.create_rel(rel, want)?;
            }
            Some(size) if size.nblocks < want => self.put_rel_size(
                rel,
                RelSize {
                    nblocks: want,
                    created_lsn: size.created_lsn,
                },
            ),
            Some(_) => {}
        }
        Ok(())
    }

    /// Shrinks the fork to `nblocks`. Removed blocks that have versions get a zero
    /// image so that, should the fork grow again, they read as the zero pages
    /// PostgreSQL extends with rather than as their old contents.
    fn truncate_rel(
        &mut self,
        rel: RelTag,
        size: RelSize,
        nblocks: u32,
    ) -> Result<(), IngestError> {
        if nblocks >= size.nblocks {
            return Ok(());
        }
        for blkno in nblocks..size.nblocks {
            let key = Key::rel_block(rel, blkno);
            if !self
                .overlay()
                .versions(&key, size.created_lsn, self.lsn)?
                .is_empty()
            {
                self.put_image(key, zero_page());
            }
        }
        self.put_rel_size(
            rel,
            RelSize {
                nblocks,
                created_lsn: size.created_lsn,
            },
        );
        Ok(())
    }

    /// Removes every fork of `node`, as the commit or abort that drops it does.
    fn drop_rel(&mut self, node: RelFileNode) -> Result<(), IngestError> {
        let mut dir = self.rel_dir(node.spc_node, node.db_node)?;
        let mut changed = false;
        for fork in [
            ForkNumber::Main,
            ForkNumber::Fsm,
            ForkNumber::VisibilityMap,
            ForkNumber::Init,
        ] {
            if dir.remove(&(node.rel_node, fork)) {
                changed = true;
                self.put_image(Key::RelSize(RelTag { node, fork }), Bytes::new());
            }
        }
        if changed {
            self.put_rel_dir(node.spc_node, node.db_node, &dir);
        }
        Ok(())
    }

    fn advance_next_xid(&mut self, xid: u32) {
        if xid < FIRST_NORMAL_XID {
            return;
        }
        let next = self.st.checkpoint.next_xid;
        let next_xid = next as u32;
        let follows = if next_xid < FIRST_NORMAL_XID {
            xid >= next_xid
        } else {
            !xid_precedes(xid, next_xid)
        };
        if !follows {
            return;
        }
        let mut new_xid = xid.wrapping_add(1);
        if new_xid < FIRST_NORMAL_XID {
            new_xid = FIRST_NORMAL_XID;
        }
        let mut epoch = next >> 32;
        if new_xid < next_xid {
            epoch += 1;
        }
        self.st.checkpoint.next_xid = (epoch << 32) | u64::from(new_xid);
        self.st.checkpoint_dirty = true;
    }

    fn xlog(&mut self, info: u8) -> Result<(), IngestError> {
        match info {
            rmgr::xlog::NEXTOID => {
                let oid = self.main().u32("nextOid").map_err(|t| self.truncated(t))?;
                self.st.checkpoint.next_oid = oid;
                self.st.checkpoint_dirty = true;
            }
            rmgr::xlog::CHECKPOINT_SHUTDOWN | rmgr::xlog::CHECKPOINT_ONLINE => {
                let rec_cp =
                    CheckPoint::decode(self.rec.main_data()).map_err(|e| self.malformed(e))?;
                let cp = &mut self.st.checkpoint;
                if info == rmgr::xlog::CHECKPOINT_SHUTDOWN {
                    // A shutdown checkpoint is the whole state: nothing runs concurrently.
                    *cp = rec_cp;
                } else {
                    // An online checkpoint's counters were read while transactions ran:
                    // move ours forward only, as xlog_redo does.
                    if cp.next_xid < rec_cp.next_xid {
                        cp.next_xid = rec_cp.next_xid;
                    }
                    if xid_precedes(cp.next_multi, rec_cp.next_multi) {
                        cp.next_multi = rec_cp.next_multi;
                    }
                    if xid_precedes(cp.next_multi_offset, rec_cp.next_multi_offset) {
                        cp.next_multi_offset = rec_cp.next_multi_offset;
                    }
                    if xid_precedes(cp.oldest_multi, rec_cp.oldest_multi) {
                        cp.oldest_multi = rec_cp.oldest_multi;
                        cp.oldest_multi_db = rec_cp.oldest_multi_db;
                    }
                    if xid_precedes(cp.oldest_xid, rec_cp.oldest_xid) {
                        cp.oldest_xid = rec_cp.oldest_xid;
                        cp.oldest_xid_db = rec_cp.oldest_xid_db;
                    }
                    cp.redo = rec_cp.redo;
                    cp.this_timeline_id = rec_cp.this_timeline_id;
                    cp.prev_timeline_id = rec_cp.prev_timeline_id;
                    cp.full_page_writes = rec_cp.full_page_writes;
                    cp.time = rec_cp.time;
                    cp.oldest_commit_ts_xid = rec_cp.oldest_commit_ts_xid;
                    cp.newest_commit_ts_xid = rec_cp.newest_commit_ts_xid;
                    cp.oldest_active_xid = rec_cp.oldest_active_xid;
                }
                self.st.checkpoint_dirty = true;
                let value = read::encode_last_checkpoint_record(self.rec.lsn, &rec_cp);
                self.put_image(Key::LastCheckpointRecord, value);
            }
            _ => {}
        }
        Ok(())
    }

    fn xact(&mut self) -> Result<(), IngestError> {
        let info = self.rec.header.info;
        let op = info & rmgr::xact::XLOG_XACT_OPMASK;
        let has_info = info & rmgr::xact::XLOG_XACT_HAS_INFO != 0;
        match op {
            rmgr::xact::COMMIT
            | rmgr::xact::COMMIT_PREPARED
            | rmgr::xact::ABORT
            | rmgr::xact::ABORT_PREPARED => {
                let is_commit = matches!(op, rmgr::xact::COMMIT | rmgr::xact::COMMIT_PREPARED);
                let prepared =
                    matches!(op, rmgr::xact::COMMIT_PREPARED | rmgr::xact::ABORT_PREPARED);
                let parsed = parse_xact(self.rec.main_data(), has_info, is_commit)
                    .map_err(|t| self.truncated(t))?;
                let xid = if prepared {
                    parsed
                        .twophase_xid
                        .ok_or_else(|| self.malformed("prepared transaction without its xid"))?
                } else {
                    self.rec.xid()
                };
                let status = if is_commit {
                    redo::TRANSACTION_STATUS_COMMITTED
                } else {
                    redo::TRANSACTION_STATUS_ABORTED
                };
                let mut by_page: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
                for &x in std::iter::once(&xid).chain(&parsed.subxacts) {
                    by_page.entry(redo::clog_page_of(x)).or_default().push(x);
                }
                for (pageno, xids) in by_page {
                    let op = NativeOp::ClogSetStatus { xids, status };
                    self.put_op(slru_key(SlruKind::Clog, pageno), Lsn::INVALID, op)?;
                }
                for node in &parsed.dropped {
                    self.drop_rel(*node)?;
                }
                if prepared {
                    self.remove_twophase(xid)?;
                }
                for x in std::iter::once(xid).chain(parsed.subxacts) {
                    self.advance_next_xid(x);
                }
            }
            rmgr::xact::PREPARE => {
                let data = self.rec.main_data();
                let xid = Le::at(data, TWOPHASE_HEADER_XID_AT)
                    .u32("two-phase header xid")
                    .map_err(|t| self.truncated(t))?;
                let file = Bytes::copy_from_slice(data);
                self.put_image(Key::TwoPhase { xid }, file);
                let mut dir = read::twophase_dir(&self.overlay(), self.lsn)?;
                dir.insert(xid);
                self.put_image(Key::TwoPhaseDir, read::encode_u32_set(&dir));
            }
            rmgr::xact::ASSIGNMENT => {
                // xl_xact_assignment: xtop, nsubxacts, xsub[].
                let mut r = self.main();
                let top = r.u32("xtop").map_err(|t| self.truncated(t))?;
                let n = r.count("nsubxacts").map_err(|t| self.truncated(t))?;
                let mut xids = vec![top];
                for _ in 0..n {
                    xids.push(r.u32("xsub").map_err(|t| self.truncated(t))?);
                }
                for x in xids {
                    self.advance_next_xid(x);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn remove_twophase(&mut self, xid: u32) -> Result<(), IngestError> {
        let mut dir = read::twophase_dir(&self.overlay(), self.lsn)?;
        if dir.remove(&xid) {
            self.put_image(Key::TwoPhaseDir, read::encode_u32_set(&dir));
            self.put_image(Key::TwoPhase { xid }, Bytes::new());
        }
        Ok(())
    }

    fn smgr(&mut self, info: u8) -> Result<(), IngestError> {
        let mut r = self.main();
        match info {
            rmgr::smgr::CREATE => {
                let node = r.rel_file_node("rnode").map_err(|t| self.truncated(t))?;
                let fork = r.u32("forkNum").map_err(|t| self.truncated(t))?;
                let fork = u8::try_from(fork)
                    .ok()
                    .and_then(ForkNumber::from_u8)
                    .ok_or_else(|| self.malformed(format!("fork number {fork}")))?;
                let rel = RelTag { node, fork };
                // Creating an existing fork keeps it, as smgrcreate in redo does.
                if self.rel_size(rel)?.is_none() {
                    self.create_rel(rel, 0)?;
                }
            }
            rmgr::smgr::TRUNCATE => {
                let blkno = r.u32("blkno").map_err(|t| self.truncated(t))?;
                let node = r.rel_file_node("rnode").map_err(|t| self.truncated(t))?;
                let flags = r.u32("flags").map_err(|t| self.truncated(t))?;
                self.smgr_truncate(node, blkno, flags)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// As `smgr_redo`: the main fork is created if missing, then each fork the flags
    /// name is cut to the size its `*_prepare_truncate` computes.
    fn smgr_truncate(
        &mut self,
        node: RelFileNode,
        blkno: u32,
        flags: u32,
    ) -> Result<(), IngestError> {
        let main = RelTag {
            node,
            fork: ForkNumber::Main,
        };
        let main_size = match self.rel_size(main)? {
            Some(size) => size,
            None => self.create_rel(main, 0)?,
        };
        if flags & SMGR_TRUNCATE_HEAP != 0 {
            self.truncate_rel(main, main_size, blkno)?;
        }
        let fsm = RelTag {
            node,
            fork: ForkNumber::Fsm,
        };
        if flags & SMGR_TRUNCATE_FSM != 0 {
            if let Some(size) = self.rel_size(fsm)? {
                self.truncate_fsm(fsm, size, blkno)?;
            }
        }
        let vm = RelTag {
            node,
            fork: ForkNumber::VisibilityMap,
        };
        if flags & SMGR_TRUNCATE_VM != 0 {
            if let Some(size) = self.rel_size(vm)? {
                self.truncate_vm(vm, size, blkno)?;
            }
        }
        Ok(())
    }

    /// `FreeSpaceMapPrepareTruncateRel` then the truncation. Where PostgreSQL clears
    /// the removed slots of the last remaining page, we store a zero page: the FSM
    /// is advisory and never shipped in a basebackup, and an empty page only means
    /// "no free space known", which VACUUM corrects.
    fn truncate_fsm(
        &mut self,
        fsm: RelTag,
        size: RelSize,
        heap_blocks: u32,
    ) -> Result<(), IngestError> {
        let leaf_page = heap_blocks / FSM_SLOTS_PER_PAGE;
        let slot = heap_blocks % FSM_SLOTS_PER_PAGE;
        let new_nblocks = if slot > 0 {
            let last = fsm_leaf_to_physical(leaf_page);
            if last >= size.nblocks {
                return Ok(());
            }
            self.put_image(Key::rel_block(fsm, last), zero_page());
            last + 1
        } else {
            let n = fsm_leaf_to_physical(leaf_page);
            if size.nblocks <= n {
                return Ok(());
            }
            n
        };
        self.truncate_rel(fsm, size, new_nblocks)
    }

    /// `visibilitymap_prepare_truncate` then the truncation.
    fn truncate_vm(
        &mut self,
        vm: RelTag,
        size: RelSize,
        heap_blocks: u32,
    ) -> Result<(), IngestError> {
        let trunc_block = redo::vm_page_of(heap_blocks);
        let new_nblocks = if heap_blocks % redo::VM_HEAPBLOCKS_PER_PAGE != 0 {
            if trunc_block >= size.nblocks {
                return Ok(());
            }
            let op = NativeOp::TruncateVmPage { heap_blocks };
            self.put_op(Key::rel_block(vm, trunc_block), size.created_lsn, op)?;
            trunc_block + 1
        } else {
            trunc_block
        };
        if size.nblocks <= new_nblocks {
            return Ok(());
        }
        self.truncate_rel(vm, size, new_nblocks)
    }

    fn dbase(&mut self, info: u8) -> Result<(), IngestError> {
        let mut r = self.main();
        match info {
            rmgr::dbase::CREATE_FILE_COPY => {
                let fields = (|| {
                    Ok::<_, Truncated>((
                        r.u32("db_id")?,
                        r.u32("tablespace_id")?,
                        r.u32("src_db_id")?,
                        r.u32("src_tablespace_id")?,
                    ))
                })();
                let (db, spc, src_db, src_spc) = fields.map_err(|t| self.truncated(t))?;
                self.copy_database(src_spc, src_db, spc, db)?;
            }
            rmgr::dbase::CREATE_WAL_LOG => {
                let fields = (|| Ok::<_, Truncated>((r.u32("db_id")?, r.u32("tablespace_id")?)))();
                let (db, spc) = fields.map_err(|t| self.truncated(t))?;
                self.add_database(spc, db)?;
            }
            rmgr::dbase::DROP => {
                let db = r.u32("db_id").map_err(|t| self.truncated(t))?;
                let n = r.count("ntablespaces").map_err(|t| self.truncated(t))?;
                let mut spcs = Vec::new();
                for _ in 0..n {
                    spcs.push(r.u32("tablespace_ids").map_err(|t| self.truncated(t))?);
                }
                for spc in spcs {
                    self.drop_database(spc, db)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn add_database(&mut self, spc: Oid, db: Oid) -> Result<(), IngestError> {
        let mut dbs = read::db_dir(&self.overlay(), self.lsn)?;
        if dbs.insert((spc, db)) {
            self.put_image(Key::DbDir, read::encode_db_dir(&dbs));
        }
        Ok(())
    }

    /// `CREATE DATABASE ... STRATEGY FILE_COPY`: the template's directory copied as
    /// it is at this LSN, relation map and every fork of every relation.
    fn copy_database(
        &mut self,
        src_spc: Oid,
        src_db: Oid,
        spc: Oid,
        db: Oid,
    ) -> Result<(), IngestError> {
        self.add_database(spc, db)?;
        let map = read::relmap(&self.overlay(), src_spc, src_db, self.lsn)?;
        self.put_image(Key::RelMap { spc, db }, map.unwrap_or_default());
        let rels = self.rel_dir(src_spc, src_db)?;
        let mut copied = BTreeSet::new();
        for &(rel_node, fork) in &rels {
            let from = RelTag {
                node: RelFileNode {
                    spc_node: src_spc,
                    db_node: src_db,
                    rel_node,
                },
                fork,
            };
            let Some(size) = self.rel_size(from)? else {
                continue;
            };
            let to = RelTag {
                node: RelFileNode {
                    spc_node: spc,
                    db_node: db,
                    rel_node,
                },
                fork,
            };
            for blkno in 0..size.nblocks {
                let page = read::rel_page(&self.overlay(), from, blkno, self.lsn)?;
                self.put_image(Key::rel_block(to, blkno), page);
            }
            self.put_rel_size(
                to,
                RelSize {
                    nblocks: size.nblocks,
                    created_lsn: self.lsn,
                },
            );
            copied.insert((rel_node, fork));
        }
        self.put_rel_dir(spc, db, &copied);
        Ok(())
    }

    fn drop_database(&mut self, spc: Oid, db: Oid) -> Result<(), IngestError> {
        let mut dbs = read::db_dir(&self.overlay(), self.lsn)?;
        if dbs.remove(&(spc, db)) {
            self.put_image(Key::DbDir, read::encode_db_dir(&dbs));
        }
        let rels = self.rel_dir(spc, db)?;
        for (rel_node, fork) in &rels {
            let node = RelFileNode {
                spc_node: spc,
                db_node: db,
                rel_node: *rel_node,
            };
            self.put_image(Key::RelSize(RelTag { node, fork: *fork }), Bytes::new());
        }
        if !rels.is_empty() {
            self.put_rel_dir(spc, db, &BTreeSet::new());
        }
        if read::relmap(&self.overlay(), spc, db, self.lsn)?.is_some() {
            self.put_image(Key::RelMap { spc, db }, Bytes::new());
        }
        Ok(())
    }

    fn relmap(&mut self) -> Result<(), IngestError> {
        // xl_relmap_update: dbid, tsid, nbytes, data.
        let mut r = self.main();
        let fields =
            (|| Ok::<_, Truncated>((r.u32("dbid")?, r.u32("tsid")?, r.count("nbytes")?)))();
        let (db, spc, n) = fields.map_err(|t| self.truncated(t))?;
        let data = r.take(n, "relmap data").map_err(|t| self.truncated(t))?;
        self.put_image(Key::RelMap { spc, db }, Bytes::copy_from_slice(data));
        Ok(())
    }

    /// A zeroed SLRU page, the segment growing to hold it.
    fn zero_slru_page(&mut self, kind: SlruKind, pageno: u32) -> Result<(), IngestError> {
        self.put_image(slru_key(kind, pageno), zero_page());
        self.extend_slru(kind, pageno)
    }

    fn extend_slru(&mut self, kind: SlruKind, pageno: u32) -> Result<(), IngestError> {
        let segno = pageno / SLRU_PAGES_PER_SEGMENT;
        let want = pageno % SLRU_PAGES_PER_SEGMENT + 1;
        let current = read::slru_seg_size(&self.overlay(), kind, segno, self.lsn)?;
        if current.is_none() {
            let mut dir = read::slru_dir(&self.overlay(), kind, self.lsn)?;
            dir.insert(segno);
            self.put_image(Key::SlruDir(kind), read::encode_u32_set(&dir));
        }
        if current.is_none_or(|n| n < want) {
            self.put_image(
                Key::SlruSegSize { kind, segno },
                read::encode_slru_seg_size(want),
            );
        }
        Ok(())
    }

    fn slru_page_exists(&self, kind: SlruKind, pageno: u32) -> Result<bool, IngestError> {
        let segno = pageno / SLRU_PAGES_PER_SEGMENT;
        let size = read::slru_seg_size(&self.overlay(), kind, segno, self.lsn)?;
        Ok(size.is_some_and(|n| pageno % SLRU_PAGES_PER_SEGMENT < n))
    }

    /// Removes the segments `doomed` picks, as `SimpleLruTruncate` and
    /// `PerformMembersTruncation` delete segment files.
    fn remove_slru_segments(
        &mut self,
        kind: SlruKind,
        doomed: impl Fn(u32) -> bool,
    ) -> Result<(), IngestError> {
        let mut dir = read::slru_dir(&self.overlay(), kind, self.lsn)?;
        let removed: Vec<u32> = dir.iter().copied().filter(|&s| doomed(s)).collect();
        if removed.is_empty() {
            return Ok(());
        }
        for segno in removed {
            dir.remove(&segno);
            self.put_image(Key::SlruSegSize { kind, segno }, Bytes::new());
        }
        self.put_image(Key::SlruDir(kind), read::encode_u32_set(&dir));
        Ok(())
    }

    fn clog(&mut self, info: u8) -> Result<(), IngestError> {
        let mut r = self.main();
        let pageno = r.u32("pageno").map_err(|t| self.truncated(t))?;
        match info {
            rmgr::clog::ZEROPAGE => self.zero_slru_page(SlruKind::Clog, pageno)?,
            rmgr::clog::TRUNCATE => {
                let cutoff = pageno - pageno % SLRU_PAGES_PER_SEGMENT;
                // Segment numbers come from the store; page numbers wrap as SLRU ones do.
                self.remove_slru_segments(SlruKind::Clog, |segno| {
                    let first = segno.wrapping_mul(SLRU_PAGES_PER_SEGMENT);
                    clog_page_precedes(first, cutoff)
                        && clog_page_precedes(
                            first.wrapping_add(SLRU_PAGES_PER_SEGMENT - 1),
                            cutoff,
                        )
                })?;
            }
            _ => {}
        }
        Ok(())
    }

    fn multixact(&mut self, info: u8) -> Result<(), IngestError> {
        let mut r = self.main();
        match info {
            rmgr::multixact::ZERO_OFF_PAGE => {
                let pageno = r.u32("pageno").map_err(|t| self.truncated(t))?;
                if self.st.pre_initialized_offsets_page != Some(pageno) {
                    self.zero_slru_page(SlruKind::MultiXactOffsets, pageno)?;
                }
                self.st.pre_initialized_offsets_page = None;
            }
            rmgr::multixact::ZERO_MEM_PAGE => {
                let pageno = r.u32("pageno").map_err(|t| self.truncated(t))?;
                self.zero_slru_page(SlruKind::MultiXactMembers, pageno)?;
            }
            rmgr::multixact::CREATE_ID => self.multixact_create()?,
            rmgr::multixact::TRUNCATE_ID => {
                let fields = (|| {
                    Ok::<_, Truncated>((
                        r.u32("oldestMultiDB")?,
                        r.u32("startTruncOff")?,
                        r.u32("endTruncOff")?,
                        r.u32("startTruncMemb")?,
                        r.u32("endTruncMemb")?,
                    ))
                })();
                // startTruncOff is "just for completeness" (multixact.h): redo ignores it.
                let (oldest_db, _start_off, end_off, start_memb, end_memb) =
                    fields.map_err(|t| self.truncated(t))?;
                self.st.checkpoint.oldest_multi = end_off;
                self.st.checkpoint.oldest_multi_db = oldest_db;
                self.st.checkpoint_dirty = true;
                let pages = SLRU_PAGES_PER_SEGMENT;
                let first = redo::mxact_members_page_of(start_memb) / pages;
                let end = redo::mxact_members_page_of(end_memb) / pages;
                self.remove_slru_segments(SlruKind::MultiXactMembers, |s| {
                    if first <= end {
                        first <= s && s < end
                    } else {
                        s >= first || s < end
                    }
                })?;
                let previous = if end_off == FIRST_MULTI_XID {
                    u32::MAX
                } else {
                    end_off.wrapping_sub(1)
                };
                let cutoff_page = redo::mxact_offsets_page_of(previous);
                let cutoff = cutoff_page - cutoff_page % pages;
                self.remove_slru_segments(SlruKind::MultiXactOffsets, |segno| {
                    let first = segno.wrapping_mul(pages);
                    offsets_page_precedes(first, cutoff)
                        && offsets_page_precedes(first.wrapping_add(pages - 1), cutoff)
                })?;
            }
            _ => {}
        }
        Ok(())
    }

    /// `RecordNewMultiXact` and the counters `multixact_redo` advances.
    fn multixact_create(&mut self) -> Result<(), IngestError> {
        let mut r = self.main();
        let head = (|| Ok::<_, Truncated>((r.u32("mid")?, r.u32("moff")?, r.count("nmembers")?)))();
        let (mid, moff, n) = head.map_err(|t| self.truncated(t))?;
        let mut members = Vec::with_capacity(n.min(r.rest().len() / 8));
        for _ in 0..n {
            let xid = r.u32("member xid").map_err(|t| self.truncated(t))?;
            let status = r.u32("member status").map_err(|t| self.truncated(t))?;
            let status = u8::try_from(status)
                .ok()
                .filter(|&s| s <= 5)
                .ok_or_else(|| self.malformed(format!("member status {status}")))?;
            members.push((xid, status));
        }
        let n32 = u32::try_from(n).map_err(|_| self.malformed("member count"))?;

        let page = redo::mxact_offsets_page_of(mid);
        let mut next = mid.wrapping_add(1);
        if next < FIRST_MULTI_XID {
            next = FIRST_MULTI_XID;
        }
        let next_page = redo::mxact_offsets_page_of(next);
        let mut next_offset = moff.wrapping_add(n32);
        if next_offset == 0 {
            next_offset = 1;
        }
        // WAL from minor versions before the next-offset change does not zero the next
        // offsets page ahead of time; PostgreSQL's redo creates it here.
        if next_page != page && !self.slru_page_exists(SlruKind::MultiXactOffsets, next_page)? {
            self.zero_slru_page(SlruKind::MultiXactOffsets, next_page)?;
            self.st.pre_initialized_offsets_page = Some(next_page);
        } else {
            self.st.pre_initialized_offsets_page = None;
        }
        let offsets = |entries| NativeOp::MultiXactOffsets { entries };
        if next_page == page {
            let op = offsets(vec![(mid, moff), (next, next_offset)]);
            self.put_op(slru_key(SlruKind::MultiXactOffsets, page), Lsn::INVALID, op)?;
        } else {
            let op = offsets(vec![(mid, moff)]);
            self.put_op(slru_key(SlruKind::MultiXactOffsets, page), Lsn::INVALID, op)?;
            let op = offsets(vec![(next, next_offset)]);
            self.put_op(
                slru_key(SlruKind::MultiXactOffsets, next_page),
                Lsn::INVALID,
                op,
            )?;
        }

        let mut by_page: BTreeMap<u32, Vec<(u32, u32, u8)>> = BTreeMap::new();
        for (i, &(xid, status)) in (0u32..).zip(&members) {
            let offset = moff.wrapping_add(i);
            by_page
                .entry(redo::mxact_members_page_of(offset))
                .or_default()
                .push((offset, xid, status));
        }
        for (pageno, members) in by_page {
            let op = NativeOp::MultiXactMembers { members };
            self.put_op(
                slru_key(SlruKind::MultiXactMembers, pageno),
                Lsn::INVALID,
                op,
            )?;
        }

        // MultiXactAdvanceNextMXact(mid + 1, moff + nmembers).
        let cp = &mut self.st.checkpoint;
        let min_multi = mid.wrapping_add(1);
        let min_offset = moff.wrapping_add(n32);
        if xid_precedes(cp.next_multi, min_multi) {
            cp.next_multi = min_multi;
        }
        if xid_precedes(cp.next_multi_offset, min_offset) {
            cp.next_multi_offset = min_offset;
        }
        self.st.checkpoint_dirty = true;
        for (xid, _) in members {
            self.advance_next_xid(xid);
        }
        Ok(())
    }

    /// Visibility-map bits the heap record's flags say its change cleared. The VM
    /// page is not registered in the record, so no image covers it.
    fn clear_vm(&mut self, clears: &[VmClear]) -> Result<(), IngestError> {
        let mut by_page: BTreeMap<(RelFileNode, u32), Vec<(u32, u8)>> = BTreeMap::new();
        for &(node, heap_blk, flags) in clears {
            by_page
                .entry((node, redo::vm_page_of(heap_blk)))
                .or_default()
                .push((heap_blk, flags));
        }
        for ((node, vm_blk), heap_blocks) in by_page {
            let vm = RelTag {
                node,
                fork: ForkNumber::VisibilityMap,
            };
            // The flag is sometimes set with no VM page to clear: bits of a missing
            // page read as zero already.
            let Some(size) = self.rel_size(vm)? else {
                continue;
            };
            if vm_blk >= size.nblocks {
                continue;
            }
            let op = NativeOp::ClearVmBits { heap_blocks };
            self.put_op(Key::rel_block(vm, vm_blk), size.created_lsn, op)?;
        }
        Ok(())
    }

    fn block(&self, id: u8) -> Option<&BlockRef> {
        self.rec.blocks.iter().find(|b| b.block_id == id)
    }

    fn flags_at(&self, at: usize) -> Result<u8, IngestError> {
        Le::at(self.rec.main_data(), at)
            .u8("flags")
            .map_err(|t| self.truncated(t))
    }

    /// Block 0, which every heap record that clears VM bits registers.
    fn block0(&self) -> Result<(RelFileNode, u32), IngestError> {
        let b = self.block(0).ok_or_else(|| self.malformed("no block 0"))?;
        Ok((b.rel, b.blkno))
    }

    /// The VM clear a heap record's `flags` byte at `at` asks for with `bit`, on the
    /// heap block of block reference 0.
    fn flag_clear(&self, at: usize, bit: u8, vm_flags: u8) -> Result<Vec<VmClear>, IngestError> {
        if self.flags_at(at)? & bit == 0 {
            return Ok(Vec::new());
        }
        let (node, blk) = self.block0()?;
        Ok(vec![(node, blk, vm_flags)])
    }

    fn heap(&mut self, info: u8) -> Result<(), IngestError> {
        let clears = match info & rmgr::heap::XLOG_HEAP_OPMASK {
            rmgr::heap::INSERT => self.flag_clear(
                HEAP_INSERT_FLAGS_AT,
                XLH_INSERT_ALL_VISIBLE_CLEARED,
                VM_VALID_BITS,
            )?,
            rmgr::heap::DELETE => self.flag_clear(
                HEAP_DELETE_FLAGS_AT,
                XLH_DELETE_ALL_VISIBLE_CLEARED,
                VM_VALID_BITS,
            )?,
            rmgr::heap::UPDATE | rmgr::heap::HOT_UPDATE => {
                let flags = self.flags_at(HEAP_UPDATE_FLAGS_AT)?;
                let (node, new_blk) = self.block0()?;
                // The old tuple is on block 1 when it moved to another page.
                let old_blk = self.block(1).map_or(new_blk, |b| b.blkno);
                let mut clears = Vec::new();
                if flags & XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED != 0 {
                    clears.push((node, old_blk, VM_VALID_BITS));
                }
                if flags & XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED != 0 {
                    clears.push((node, new_blk, VM_VALID_BITS));
                }
                clears
            }
            rmgr::heap::LOCK => self.flag_clear(
                HEAP_LOCK_FLAGS_AT,
                XLH_LOCK_ALL_FROZEN_CLEARED,
                VM_ALL_FROZEN,
            )?,
            _ => Vec::new(),
        };
        self.clear_vm(&clears)
    }

    fn heap2(&mut self, info: u8) -> Result<(), IngestError> {
        let clears = match info & rmgr::heap::XLOG_HEAP_OPMASK {
            rmgr::heap2::MULTI_INSERT => self.flag_clear(
                HEAP_MULTI_INSERT_FLAGS_AT,
                XLH_INSERT_ALL_VISIBLE_CLEARED,
                VM_VALID_BITS,
            )?,
            rmgr::heap2::LOCK_UPDATED => self.flag_clear(
                HEAP_LOCK_FLAGS_AT,
                XLH_LOCK_ALL_FROZEN_CLEARED,
                VM_ALL_FROZEN,
            )?,
            _ => Vec::new(),
        };
        self.clear_vm(&clears)
    }
}

/// `CLOGPagePrecedes`.
fn clog_page_precedes(page1: u32, page2: u32) -> bool {
    let per = redo::CLOG_XACTS_PER_PAGE;
    let xid1 = page1.wrapping_mul(per).wrapping_add(FIRST_NORMAL_XID);
    let xid2 = page2.wrapping_mul(per).wrapping_add(FIRST_NORMAL_XID);
    normal_xid_precedes(xid1, xid2) && normal_xid_precedes(xid1, xid2.wrapping_add(per - 1))
}

/// `TransactionIdPrecedes`, special xids comparing as plain numbers.
fn normal_xid_precedes(a: u32, b: u32) -> bool {
    if a < FIRST_NORMAL_XID || b < FIRST_NORMAL_XID {
        a < b
    } else {
        xid_precedes(a, b)
    }
}

/// `MultiXactOffsetPagePrecedes`.
fn offsets_page_precedes(page1: u32, page2: u32) -> bool {
    let per = redo::MULTIXACT_OFFSETS_PER_PAGE;
    let m1 = page1.wrapping_mul(per).wrapping_add(FIRST_MULTI_XID);
    let m2 = page2.wrapping_mul(per).wrapping_add(FIRST_MULTI_XID);
    xid_precedes(m1, m2) && xid_precedes(m1, m2.wrapping_add(per - 1))
}

/// `fsm_logical_to_physical` of a bottom-level (leaf) FSM page.
fn fsm_leaf_to_physical(leaf_page: u32) -> u32 {
    let mut leafno = u64::from(leaf_page);
    let mut pages = 0u64;
    for _ in 0..FSM_TREE_DEPTH {
        pages += leafno + 1;
        leafno /= u64::from(FSM_SLOTS_PER_PAGE);
    }
    u32::try_from(pages - 1).unwrap_or(u32::MAX)
}
