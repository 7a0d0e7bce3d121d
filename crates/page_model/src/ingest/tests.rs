//! Record-by-record tests over synthetic records laid out as PostgreSQL 15 writes them.

use bytes::Bytes;
use postgres_wal::controlfile::CheckPoint;
use postgres_wal::record::{record_crc, DecodedRecord};
use postgres_wal::reltag::{ForkNumber, RelFileNode, RelTag};
use postgres_wal::rmgr::{self, RmgrId};
use postgres_wal::{Lsn, BLCKSZ};

use super::{Batch, IngestError, WalIngest};
use crate::key::{Key, SlruKind};
use crate::read::{self, ReadError};
use crate::redo;
use crate::value::Value;

use crate::memory::MemorySource as Mem;

/// A block reference to build: an image of `page` (the hole is the page's free
/// space, between pd_lower and pd_upper) or none.
struct Blk {
    id: u8,
    node: RelFileNode,
    fork: ForkNumber,
    blkno: u32,
    page: Option<[u8; BLCKSZ]>,
    data: Vec<u8>,
}

const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
const BKPIMAGE_APPLY: u8 = 0x02;

fn le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Assembles and decodes a record, as `XLogRecordAssemble` lays it out.
fn record(
    lsn: u64,
    rmid: RmgrId,
    info: u8,
    xid: u32,
    blocks: &[Blk],
    main: &[u8],
) -> DecodedRecord {
    let mut headers = Vec::new();
    let mut payload = Vec::new();
    for b in blocks {
        let mut flags = b.fork as u8;
        if b.page.is_some() {
            flags |= BKPBLOCK_HAS_IMAGE;
        }
        if !b.data.is_empty() {
            flags |= BKPBLOCK_HAS_DATA;
        }
        headers.extend_from_slice(&[b.id, flags]);
        headers.extend_from_slice(&(b.data.len() as u16).to_le_bytes());
        if let Some(page) = &b.page {
            let lower = usize::from(u16::from_le_bytes([page[12], page[13]]));
            let upper = usize::from(u16::from_le_bytes([page[14], page[15]]));
            let (hole_off, hole_len) = if lower >= 24 && upper > lower {
                (lower, upper - lower)
            } else {
                (0, 0)
            };
            let info = BKPIMAGE_APPLY | if hole_len > 0 { BKPIMAGE_HAS_HOLE } else { 0 };
            headers.extend_from_slice(&((BLCKSZ - hole_len) as u16).to_le_bytes());
            headers.extend_from_slice(&(hole_off as u16).to_le_bytes());
            headers.push(info);
            payload.extend_from_slice(&page[..hole_off]);
            payload.extend_from_slice(&page[hole_off + hole_len..]);
        }
        headers.extend(le(&[
            b.node.spc_node,
            b.node.db_node,
            b.node.rel_node,
            b.blkno,
        ]));
        payload.extend_from_slice(&b.data);
    }
    if main.len() < 256 {
        headers.extend_from_slice(&[255, main.len() as u8]);
    } else {
        headers.push(254);
        headers.extend_from_slice(&(main.len() as u32).to_le_bytes());
    }
    payload.extend_from_slice(main);
    let total = 24 + headers.len() + payload.len();
    let mut bytes = Vec::with_capacity(total);
    bytes.extend(le(&[total as u32, xid]));
    bytes.extend_from_slice(&(lsn - 0x100).to_le_bytes());
    bytes.extend_from_slice(&[info, rmid.0, 0, 0, 0, 0, 0, 0]);
    bytes.extend(headers);
    bytes.extend(payload);
    let crc = record_crc(&bytes);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    let end = Lsn(lsn + total as u64).align();
    DecodedRecord::decode(Lsn(lsn), end, bytes).unwrap()
}

/// A heap-looking page: header with pd_lower/pd_upper, some tuple bytes.
fn page(fill: u8) -> [u8; BLCKSZ] {
    let mut p = [0u8; BLCKSZ];
    p[12..14].copy_from_slice(&28u16.to_le_bytes());
    p[14..16].copy_from_slice(&8000u16.to_le_bytes());
    p[16..18].copy_from_slice(&(BLCKSZ as u16).to_le_bytes());
    p[18..20].copy_from_slice(&0x2004u16.to_le_bytes());
    p[8000..].fill(fill);
    p
}

fn node(rel: u32) -> RelFileNode {
    RelFileNode {
        spc_node: 1663,
        db_node: 5,
        rel_node: rel,
    }
}

fn tag(rel: u32, fork: ForkNumber) -> RelTag {
    RelTag {
        node: node(rel),
        fork,
    }
}

fn fpi(id: u8, rel: u32, fork: ForkNumber, blkno: u32, p: [u8; BLCKSZ]) -> Blk {
    Blk {
        id,
        node: node(rel),
        fork,
        blkno,
        page: Some(p),
        data: Vec::new(),
    }
}

/// A store seeded with a checkpoint, and ingest over it; each `run` is one batch.
struct Harness {
    mem: Mem,
    ingest: WalIngest,
    lsn: u64,
}

impl Harness {
    fn new() -> Harness {
        let mut mem = Mem::default();
        let cp = CheckPoint {
            next_xid: (1u64 << 32) | 1000,
            next_multi: 1,
            next_multi_offset: 0,
            oldest_xid: 700,
            ..CheckPoint::default()
        };
        mem.0.insert(
            (Key::Checkpoint, Lsn(0x100)),
            Value::Image(Bytes::copy_from_slice(&cp.encode())),
        );
        let ingest = WalIngest::load(&mem, Lsn(0x100)).unwrap();
        Harness {
            mem,
            ingest,
            lsn: 0x1000,
        }
    }

    /// Ingests one record at the next LSN, returning its end LSN.
    fn run(
        &mut self,
        rmid: RmgrId,
        info: u8,
        xid: u32,
        blocks: &[Blk],
        main: &[u8],
    ) -> Result<Lsn, IngestError> {
        let rec = record(self.lsn, rmid, info, xid, blocks, main);
        self.lsn = rec.end_lsn.0 + 0x100;
        let mut batch = Batch::new();
        self.ingest.ingest(&rec, &self.mem, &mut batch)?;
        for (k, l, v) in batch.into_entries() {
            assert!(
                self.mem.0.insert((k, l), v).is_none(),
                "two values for {k:?} at {l}"
            );
        }
        Ok(rec.end_lsn)
    }

    fn at(&self) -> Lsn {
        Lsn(self.lsn)
    }

    fn fpi(&mut self, rel: u32, fork: ForkNumber, blkno: u32, p: [u8; BLCKSZ]) -> Lsn {
        self.run(
            RmgrId::XLOG,
            rmgr::xlog::FPI,
            0,
            &[fpi(0, rel, fork, blkno, p)],
            &[],
        )
        .unwrap()
    }

    fn size(&self, rel: RelTag) -> Option<u32> {
        read::rel_size(&self.mem, rel, self.at())
            .unwrap()
            .map(|s| s.nblocks)
    }

    fn page(&self, rel: RelTag, blkno: u32) -> Bytes {
        read::rel_page(&self.mem, rel, blkno, self.at()).unwrap()
    }
}

#[test]
fn images_become_pages_at_the_end_lsn_and_extend_the_relation() {
    let mut h = Harness::new();
    let end = h.fpi(16384, ForkNumber::Main, 3, page(0xAB));
    let main = tag(16384, ForkNumber::Main);
    assert_eq!(h.size(main), Some(4));
    let p = h.page(main, 3);
    assert_eq!(
        postgres_wal::page::page_lsn(&p[..].try_into().unwrap()),
        end
    );
    assert_eq!(&p[8000..], &[0xAB; 192][..]);
    assert!(p[28..8000].iter().all(|&b| b == 0), "hole zero-filled");
    assert!(
        h.page(main, 1).iter().all(|&b| b == 0),
        "gap blocks are zero pages"
    );
    let dir = read::rel_dir(&h.mem, 1663, 5, h.at()).unwrap();
    assert!(dir.contains(&(16384, ForkNumber::Main)));
    // A relation in another tablespace makes its directory known.
    let in_ts = Blk {
        node: RelFileNode {
            spc_node: 16500,
            ..node(16390)
        },
        ..fpi(0, 16390, ForkNumber::Main, 0, page(1))
    };
    h.run(RmgrId::XLOG, rmgr::xlog::FPI, 0, &[in_ts], &[])
        .unwrap();
    let dbs = read::db_dir(&h.mem, h.at()).unwrap();
    assert!(dbs.contains(&(16500, 5)), "{dbs:?}");
    assert!(read::keyspace(&h.mem, h.at())
        .unwrap()
        .contains(&Key::RelSize(RelTag {
            node: RelFileNode {
                spc_node: 16500,
                ..node(16390)
            },
            fork: ForkNumber::Main,
        })));
    // A new (all-zero) page keeps pd_lsn 0.
    h.fpi(16384, ForkNumber::Main, 5, [0; BLCKSZ]);
    assert!(h.page(main, 5).iter().all(|&b| b == 0));
    assert_eq!(
        read::last_record(&h.mem, h.at()).unwrap().map(|(_, e)| e),
        Some(Lsn(h.lsn - 0x100))
    );
}

#[test]
fn a_block_without_image_is_an_error_and_leaves_nothing_behind() {
    let mut h = Harness::new();
    let insert = Blk {
        id: 0,
        node: node(16384),
        fork: ForkNumber::Main,
        blkno: 0,
        page: None,
        data: vec![1, 2, 3],
    };
    let rec = record(
        0x1000,
        RmgrId::HEAP,
        rmgr::heap::INSERT,
        1000,
        &[insert],
        &[1, 0, 0],
    );
    let mut batch = Batch::new();
    let before = h.ingest.checkpoint().next_xid;
    let err = h.ingest.ingest(&rec, &h.mem, &mut batch).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IngestError::MissingImage { .. }), "{msg}");
    assert!(
        msg.contains("Heap INSERT") && msg.contains("1663/5/16384 fork main block 0"),
        "{msg}"
    );
    assert!(msg.contains("wal_consistency_checking"), "{msg}");
    assert!(batch.is_empty());
    assert_eq!(h.ingest.checkpoint().next_xid, before);
}

#[test]
fn smgr_create_and_truncate_with_vm_and_fsm() {
    let mut h = Harness::new();
    let main = tag(16384, ForkNumber::Main);
    let vm = tag(16384, ForkNumber::VisibilityMap);
    let fsm = tag(16384, ForkNumber::Fsm);
    let mut create = le(&[1663, 5, 16384, 0]);
    h.run(RmgrId::SMGR, rmgr::smgr::CREATE, 0, &[], &create)
        .unwrap();
    assert_eq!(h.size(main), Some(0));
    for blk in 0..10 {
        h.fpi(16384, ForkNumber::Main, blk, page(blk as u8 + 1));
    }
    let mut vm_page = page(0);
    vm_page[24..].fill(0xFF);
    // pd_lower = pd_upper: no hole, as for the VM's non-standard pages.
    vm_page[12..16].copy_from_slice(&[24, 0, 24, 0]);
    h.fpi(16384, ForkNumber::VisibilityMap, 0, vm_page);
    for blk in 0..3 {
        h.fpi(16384, ForkNumber::Fsm, blk, page(0x77));
    }
    // Creating an existing fork keeps it.
    create[12] = 0;
    h.run(RmgrId::SMGR, rmgr::smgr::CREATE, 0, &[], &create)
        .unwrap();
    assert_eq!(h.size(main), Some(10));

    let truncate = le(&[5, 1663, 5, 16384, 0x7]);
    h.run(RmgrId::SMGR, rmgr::smgr::TRUNCATE, 0, &[], &truncate)
        .unwrap();
    assert_eq!(h.size(main), Some(5));
    assert_eq!(h.size(vm), Some(1));
    assert_eq!(h.size(fsm), Some(3));
    let vmp = h.page(vm, 0);
    assert_eq!(vmp[24], 0xFF);
    assert_eq!(
        vmp[25], 0x03,
        "heap block 4 keeps its bits, 5.. lose theirs"
    );
    assert!(vmp[26..].iter().all(|&b| b == 0));
    // Heap block 5 is slot 5 of the first leaf, FSM block 2: zeroed, kept.
    assert!(h.page(fsm, 2).iter().all(|&b| b == 0));
    assert_eq!(h.page(fsm, 1)[8000], 0x77);
    // Growing again shows zero pages, not the truncated contents.
    h.fpi(16384, ForkNumber::Main, 8, page(0x99));
    assert!(h.page(main, 6).iter().all(|&b| b == 0));
    assert_eq!(h.page(main, 4)[8000], 5);

    // Truncating to 0 heap blocks empties the VM; the FSM keeps its upper levels.
    let truncate = le(&[0, 1663, 5, 16384, 0x7]);
    h.run(RmgrId::SMGR, rmgr::smgr::TRUNCATE, 0, &[], &truncate)
        .unwrap();
    assert_eq!(
        (h.size(main), h.size(vm), h.size(fsm)),
        (Some(0), Some(0), Some(2))
    );
}

fn commit_record(
    xinfo: u32,
    subxacts: &[u32],
    dropped: &[RelFileNode],
    twophase: Option<u32>,
) -> Vec<u8> {
    let mut d = vec![0u8; 8];
    d.extend(le(&[xinfo]));
    if xinfo & 2 != 0 {
        d.extend(le(&[subxacts.len() as u32]));
        d.extend(le(subxacts));
    }
    if xinfo & 4 != 0 {
        d.extend(le(&[dropped.len() as u32]));
        for n in dropped {
            d.extend(le(&[n.spc_node, n.db_node, n.rel_node]));
        }
    }
    if let Some(x) = twophase {
        d.extend(le(&[x]));
    }
    d
}

fn slru(h: &Harness, kind: SlruKind, pageno: u32) -> Bytes {
    read::slru_page(&h.mem, kind, pageno / 32, pageno % 32, h.at()).unwrap()
}

fn clog_status(h: &Harness, xid: u32) -> u8 {
    let pageno = redo::clog_page_of(xid);
    let p = read::slru_page(&h.mem, SlruKind::Clog, pageno / 32, pageno % 32, h.at()).unwrap();
    let byte = (xid % redo::CLOG_XACTS_PER_PAGE / 4) as usize;
    (p[byte] >> ((xid % 4) * 2)) & 3
}

#[test]
fn commit_abort_and_two_phase() {
    let mut h = Harness::new();
    h.fpi(16384, ForkNumber::Main, 0, page(1));
    h.fpi(16384, ForkNumber::Fsm, 0, page(1));
    let has_info = rmgr::xact::XLOG_XACT_HAS_INFO;
    // Subxacts on another CLOG page; the relation is dropped.
    let subs = [1001, redo::CLOG_XACTS_PER_PAGE + 5];
    let data = commit_record(2 | 4, &subs, &[node(16384)], None);
    h.run(
        RmgrId::XACT,
        rmgr::xact::COMMIT | has_info,
        1000,
        &[],
        &data,
    )
    .unwrap();
    for x in [1000, 1001, redo::CLOG_XACTS_PER_PAGE + 5] {
        assert_eq!(
            clog_status(&h, x),
            redo::TRANSACTION_STATUS_COMMITTED,
            "xid {x}"
        );
    }
    assert_eq!(h.size(tag(16384, ForkNumber::Main)), None);
    assert!(read::rel_dir(&h.mem, 1663, 5, h.at()).unwrap().is_empty());
    assert!(matches!(
        read::rel_page(&h.mem, tag(16384, ForkNumber::Main), 0, h.at()),
        Err(ReadError::NotFound(..))
    ));
    let next = h.ingest.checkpoint().next_xid;
    assert_eq!(
        next,
        (1u64 << 32) | u64::from(redo::CLOG_XACTS_PER_PAGE + 6)
    );

    h.run(RmgrId::XACT, rmgr::xact::ABORT, 1002, &[], &[0; 8])
        .unwrap();
    assert_eq!(clog_status(&h, 1002), redo::TRANSACTION_STATUS_ABORTED);

    let mut state = le(&[0x57F9_4534, 100, 1003]);
    state.extend_from_slice(&[7; 40]);
    h.run(RmgrId::XACT, rmgr::xact::PREPARE, 1003, &[], &state)
        .unwrap();
    assert_eq!(
        read::twophase_dir(&h.mem, h.at())
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![1003]
    );
    assert_eq!(
        read::twophase_file(&h.mem, 1003, h.at()).unwrap().unwrap(),
        Bytes::from(state)
    );
    let data = commit_record(0x10, &[], &[], Some(1003));
    h.run(
        RmgrId::XACT,
        rmgr::xact::COMMIT_PREPARED | has_info,
        0,
        &[],
        &data,
    )
    .unwrap();
    assert_eq!(clog_status(&h, 1003), redo::TRANSACTION_STATUS_COMMITTED);
    assert!(read::twophase_dir(&h.mem, h.at()).unwrap().is_empty());
    assert_eq!(read::twophase_file(&h.mem, 1003, h.at()).unwrap(), None);
}

#[test]
fn next_xid_wraps_into_the_next_epoch() {
    let mut h = Harness::new();
    h.ingest.checkpoint.next_xid = (3u64 << 32) | u64::from(u32::MAX - 1);
    h.run(RmgrId::XACT, rmgr::xact::COMMIT, u32::MAX, &[], &[0; 8])
        .unwrap();
    assert_eq!(h.ingest.checkpoint().next_xid, (4u64 << 32) | 3);
    // An older xid does not move it back.
    h.run(RmgrId::XACT, rmgr::xact::COMMIT, 5000, &[], &[0; 8])
        .unwrap();
    assert_eq!(h.ingest.checkpoint().next_xid, (4u64 << 32) | 5001);
    let cp = read::checkpoint(&h.mem, h.at()).unwrap().unwrap();
    assert_eq!(cp.next_xid, (4u64 << 32) | 5001);
}

#[test]
fn clog_zeropage_and_truncate() {
    let mut h = Harness::new();
    for pageno in [0u32, 31, 32, 64] {
        h.run(RmgrId::CLOG, rmgr::clog::ZEROPAGE, 0, &[], &le(&[pageno]))
            .unwrap();
    }
    let segs = |h: &Harness| {
        read::slru_dir(&h.mem, SlruKind::Clog, h.at())
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(segs(&h), vec![0, 1, 2]);
    assert_eq!(
        read::slru_seg_size(&h.mem, SlruKind::Clog, 0, h.at()).unwrap(),
        Some(32)
    );
    assert_eq!(
        read::slru_seg_size(&h.mem, SlruKind::Clog, 2, h.at()).unwrap(),
        Some(1)
    );
    // Cut-off page 70: segments wholly before page 64 go.
    h.run(
        RmgrId::CLOG,
        rmgr::clog::TRUNCATE,
        0,
        &[],
        &le(&[70, 2_000_000, 5]),
    )
    .unwrap();
    assert_eq!(segs(&h), vec![2]);
    assert_eq!(
        read::slru_seg_size(&h.mem, SlruKind::Clog, 0, h.at()).unwrap(),
        None
    );
    let keys = read::keyspace(&h.mem, h.at()).unwrap();
    assert!(keys.contains(&Key::SlruPage {
        kind: SlruKind::Clog,
        segno: 2,
        blkno: 0
    }));
    assert!(!keys.contains(&Key::SlruPage {
        kind: SlruKind::Clog,
        segno: 0,
        blkno: 0
    }));
}

#[test]
fn multixact_create_across_pages() {
    let mut h = Harness::new();
    h.run(
        RmgrId::MULTIXACT,
        rmgr::multixact::ZERO_OFF_PAGE,
        0,
        &[],
        &le(&[0]),
    )
    .unwrap();
    h.run(
        RmgrId::MULTIXACT,
        rmgr::multixact::ZERO_OFF_PAGE,
        0,
        &[],
        &le(&[1]),
    )
    .unwrap();
    h.run(
        RmgrId::MULTIXACT,
        rmgr::multixact::ZERO_MEM_PAGE,
        0,
        &[],
        &le(&[0]),
    )
    .unwrap();
    h.run(
        RmgrId::MULTIXACT,
        rmgr::multixact::ZERO_MEM_PAGE,
        0,
        &[],
        &le(&[1]),
    )
    .unwrap();
    // Multi 2047 is the last on offsets page 0; its members straddle members pages.
    let moff = redo::MULTIXACT_MEMBERS_PER_PAGE - 1;
    let data = le(&[2047, moff, 2, 1500, 1, 1600, 5]);
    h.run(RmgrId::MULTIXACT, rmgr::multixact::CREATE_ID, 0, &[], &data)
        .unwrap();

    let off0 = slru(&h, SlruKind::MultiXactOffsets, 0);
    assert_eq!(&off0[2047 * 4..], &moff.to_le_bytes());
    let off1 = slru(&h, SlruKind::MultiXactOffsets, 1);
    assert_eq!(
        &off1[..4],
        &(moff + 2).to_le_bytes(),
        "the next multi's offset"
    );
    let m0 = slru(&h, SlruKind::MultiXactMembers, 0);
    // Member 1635: group 408 (bytes 8160..8180), position 3.
    assert_eq!(m0[8160 + 3], 1);
    assert_eq!(&m0[8160 + 4 + 12..8180], &1500u32.to_le_bytes());
    let m1 = slru(&h, SlruKind::MultiXactMembers, 1);
    assert_eq!(m1[0], 5);
    assert_eq!(&m1[4..8], &1600u32.to_le_bytes());
    let cp = h.ingest.checkpoint();
    assert_eq!((cp.next_multi, cp.next_multi_offset), (2048, moff + 2));
    assert_eq!(cp.next_xid as u32, 1601);
    let data = le(&[5, 10, 1, 1700, 0]);
    h.run(RmgrId::MULTIXACT, rmgr::multixact::CREATE_ID, 0, &[], &data)
        .unwrap();
    let off0 = slru(&h, SlruKind::MultiXactOffsets, 0);
    assert_eq!(
        (&off0[20..24], &off0[24..28]),
        (&10u32.to_le_bytes()[..], &11u32.to_le_bytes()[..])
    );
    assert_eq!(
        h.ingest.checkpoint().next_multi,
        2048,
        "nextMulti never moves back"
    );

    let bad = le(&[6, 11, 1, 1700, 9]);
    assert!(matches!(
        h.run(RmgrId::MULTIXACT, rmgr::multixact::CREATE_ID, 0, &[], &bad),
        Err(IngestError::Malformed { .. })
    ));
}

#[test]
fn multixact_next_page_created_for_old_minor_versions() {
    let mut h = Harness::new();
    h.run(
        RmgrId::MULTIXACT,
        rmgr::multixact::ZERO_OFF_PAGE,
        0,
        &[],
        &le(&[0]),
    )
    .unwrap();
    h.run(
        RmgrId::MULTIXACT,
        rmgr::multixact::ZERO_MEM_PAGE,
        0,
        &[],
        &le(&[0]),
    )
    .unwrap();
    let data = le(&[2047, 100, 1, 1500, 1]);
    h.run(RmgrId::MULTIXACT, rmgr::multixact::CREATE_ID, 0, &[], &data)
        .unwrap();
    // The late ZERO_OFF_PAGE for page 1 must not wipe the next multi's offset.
    h.run(
        RmgrId::MULTIXACT,
        rmgr::multixact::ZERO_OFF_PAGE,
        0,
        &[],
        &le(&[1]),
    )
    .unwrap();
    let p = read::slru_page(&h.mem, SlruKind::MultiXactOffsets, 0, 1, h.at()).unwrap();
    assert_eq!(&p[..4], &101u32.to_le_bytes());
}

#[test]
fn multixact_truncate_removes_segments_and_advances_oldest() {
    let mut h = Harness::new();
    for pageno in [0u32, 32, 64] {
        h.run(
            RmgrId::MULTIXACT,
            rmgr::multixact::ZERO_OFF_PAGE,
            0,
            &[],
            &le(&[pageno]),
        )
        .unwrap();
        h.run(
            RmgrId::MULTIXACT,
            rmgr::multixact::ZERO_MEM_PAGE,
            0,
            &[],
            &le(&[pageno]),
        )
        .unwrap();
    }
    // Offsets before multi 70000 (page 34, segment 1) and members before offset
    // 1636*64 (members segment 2) go.
    let end_memb = redo::MULTIXACT_MEMBERS_PER_PAGE * 64;
    h.run(
        RmgrId::MULTIXACT,
        rmgr::multixact::TRUNCATE_ID,
        0,
        &[],
        &le(&[5, 1, 70000, 0, end_memb]),
    )
    .unwrap();
    let dir = |kind| {
        read::slru_dir(&h.mem, kind, h.at())
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(dir(SlruKind::MultiXactOffsets), vec![1, 2]);
    assert_eq!(dir(SlruKind::MultiXactMembers), vec![2]);
    let cp = h.ingest.checkpoint();
    assert_eq!((cp.oldest_multi, cp.oldest_multi_db), (70000, 5));
}

#[test]
fn heap_flags_clear_vm_bits_of_existing_vm_pages_only() {
    let mut h = Harness::new();
    let vm = tag(16384, ForkNumber::VisibilityMap);
    let mut vm_page = page(0);
    vm_page[24..].fill(0xFF);
    // pd_lower = pd_upper: no hole, as for the VM's non-standard pages.
    vm_page[12..16].copy_from_slice(&[24, 0, 24, 0]);
    h.fpi(16384, ForkNumber::VisibilityMap, 0, vm_page);
    let heap_blk = |id: u8, blkno: u32| fpi(id, 16384, ForkNumber::Main, blkno, page(1));
    // UPDATE from heap block 6 (block 1) to block 1 (block 0), both flags.
    let mut update = le(&[0]);
    update.extend_from_slice(&[1, 0, 0, 0x3]);
    update.extend(le(&[0, 0]));
    h.run(
        RmgrId::HEAP,
        rmgr::heap::UPDATE,
        1000,
        &[heap_blk(0, 1), heap_blk(1, 6)],
        &update,
    )
    .unwrap();
    let p = h.page(vm, 0);
    assert_eq!(p[24], 0xF3, "heap block 1 cleared");
    assert_eq!(p[25], 0xCF, "heap block 6 cleared");
    // LOCK clears ALL_FROZEN only.
    let lock = [0, 0, 0, 0, 2, 0, 0, 1];
    h.run(
        RmgrId::HEAP,
        rmgr::heap::LOCK,
        1000,
        &[heap_blk(0, 3)],
        &lock,
    )
    .unwrap();
    assert_eq!(h.page(vm, 0)[24], 0x73);
    // A heap block whose VM page does not exist: nothing to clear, no VM page made.
    let insert = [1, 0, 1];
    let far = redo::VM_HEAPBLOCKS_PER_PAGE + 2;
    h.run(
        RmgrId::HEAP,
        rmgr::heap::INSERT,
        1000,
        &[heap_blk(0, far)],
        &insert,
    )
    .unwrap();
    assert_eq!(h.size(vm), Some(1));
    // MULTI_INSERT and DELETE on blocks of one VM page within one record each.
    h.run(
        RmgrId::HEAP2,
        rmgr::heap2::MULTI_INSERT,
        1000,
        &[heap_blk(0, 8)],
        &[1, 1, 0, 1, 0],
    )
    .unwrap();
    assert_eq!(h.page(vm, 0)[26], 0xFC);
    let delete = [0, 0, 0, 0, 1, 0, 0, 1];
    h.run(
        RmgrId::HEAP,
        rmgr::heap::DELETE,
        1000,
        &[heap_blk(0, 9)],
        &delete,
    )
    .unwrap();
    assert_eq!(h.page(vm, 0)[26], 0xF0);
    // No VM fork at all: skipped.
    h.run(
        RmgrId::HEAP,
        rmgr::heap::INSERT,
        1000,
        &[fpi(0, 16385, ForkNumber::Main, 0, page(1))],
        &insert,
    )
    .unwrap();
    assert_eq!(h.size(tag(16385, ForkNumber::VisibilityMap)), None);
}

#[test]
fn databases_wal_log_file_copy_and_drop() {
    let mut h = Harness::new();
    h.run(
        RmgrId::DBASE,
        rmgr::dbase::CREATE_WAL_LOG,
        0,
        &[],
        &le(&[5, 1663]),
    )
    .unwrap();
    let mut relmap = le(&[5, 1663, 512]);
    relmap.extend_from_slice(&[0x42; 512]);
    h.run(RmgrId::RELMAP, rmgr::relmap::UPDATE, 0, &[], &relmap)
        .unwrap();
    h.fpi(16384, ForkNumber::Main, 1, page(3));
    h.fpi(16384, ForkNumber::Init, 0, page(4));

    h.run(
        RmgrId::DBASE,
        rmgr::dbase::CREATE_FILE_COPY,
        0,
        &[],
        &le(&[6, 1663, 5, 1663]),
    )
    .unwrap();
    let dbs = read::db_dir(&h.mem, h.at()).unwrap();
    assert_eq!(
        dbs.into_iter().collect::<Vec<_>>(),
        vec![(1663, 5), (1663, 6)]
    );
    assert_eq!(
        read::relmap(&h.mem, 1663, 6, h.at()).unwrap().unwrap(),
        Bytes::from(vec![0x42; 512])
    );
    let copy = RelTag {
        node: RelFileNode {
            db_node: 6,
            ..node(16384)
        },
        fork: ForkNumber::Main,
    };
    assert_eq!(h.size(copy), Some(2));
    assert_eq!(
        h.page(copy, 1),
        h.page(tag(16384, ForkNumber::Main), 1),
        "copied with its pd_lsn"
    );
    let init_copy = RelTag {
        fork: ForkNumber::Init,
        ..copy
    };
    assert_eq!(h.page(init_copy, 0)[8000], 4);

    let drop = le(&[6, 1, 1663]);
    h.run(RmgrId::DBASE, rmgr::dbase::DROP, 0, &[], &drop)
        .unwrap();
    assert_eq!(read::db_dir(&h.mem, h.at()).unwrap().len(), 1);
    assert!(read::rel_dir(&h.mem, 1663, 6, h.at()).unwrap().is_empty());
    assert_eq!(h.size(copy), None);
    assert_eq!(read::relmap(&h.mem, 1663, 6, h.at()).unwrap(), None);
    assert_eq!(
        h.size(tag(16384, ForkNumber::Main)),
        Some(2),
        "the template stays"
    );
}

#[test]
fn checkpoints_and_next_oid() {
    let mut h = Harness::new();
    h.run(RmgrId::XLOG, rmgr::xlog::NEXTOID, 0, &[], &le(&[24576]))
        .unwrap();
    assert_eq!(h.ingest.checkpoint().next_oid, 24576);
    let online = CheckPoint {
        redo: Lsn(0x900),
        this_timeline_id: 1,
        prev_timeline_id: 1,
        next_xid: (1u64 << 32) | 900,
        next_oid: 16384,
        next_multi: 7,
        next_multi_offset: 20,
        oldest_xid: 720,
        oldest_xid_db: 1,
        oldest_multi: 1,
        time: 1234,
        ..CheckPoint::default()
    };
    let at = h.lsn;
    h.run(
        RmgrId::XLOG,
        rmgr::xlog::CHECKPOINT_ONLINE,
        0,
        &[],
        &online.encode(),
    )
    .unwrap();
    let cp = *h.ingest.checkpoint();
    assert_eq!(
        cp.next_xid,
        (1u64 << 32) | 1000,
        "an online checkpoint's older nextXid is ignored"
    );
    assert_eq!(
        (cp.next_multi, cp.next_multi_offset, cp.next_oid),
        (7, 20, 24576)
    );
    assert_eq!((cp.oldest_xid, cp.redo, cp.time), (720, Lsn(0x900), 1234));
    let (lsn, rec_cp) = read::last_checkpoint_record(&h.mem, h.at())
        .unwrap()
        .unwrap();
    assert_eq!((lsn, rec_cp), (Lsn(at), online));
    let shutdown = CheckPoint {
        next_oid: 16000,
        ..online
    };
    h.run(
        RmgrId::XLOG,
        rmgr::xlog::CHECKPOINT_SHUTDOWN,
        0,
        &[],
        &shutdown.encode(),
    )
    .unwrap();
    assert_eq!(
        *h.ingest.checkpoint(),
        shutdown,
        "a shutdown checkpoint is the whole state"
    );
    assert_eq!(read::checkpoint(&h.mem, h.at()).unwrap().unwrap(), shutdown);
    assert!(matches!(
        h.run(
            RmgrId::XLOG,
            rmgr::xlog::CHECKPOINT_ONLINE,
            0,
            &[],
            &[0; 10]
        ),
        Err(IngestError::Malformed { .. })
    ));
}
