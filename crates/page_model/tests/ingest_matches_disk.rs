//! Ingest the WAL of a real PostgreSQL 15 workload and compare what the model says
//! with the files PostgreSQL wrote: every block of every main, VM and init fork of the
//! relations created during the workload and of a database created with FILE_COPY
//! (from template1, imported at the start), both new databases' relation maps, and
//! the CLOG and multixact entries of the workload's transactions. FSM forks are not
//! compared: PostgreSQL does not WAL-log them and basebackups leave them out.

// Test helpers outside #[test] fns: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use page_model::ingest::{Batch, IngestError, WalIngest};
use page_model::read::{self};
use page_model::{Key, NativeOp, SlruKind, Value};
use postgres_wal::controlfile::ControlFileData;
use postgres_wal::decoder::WalStreamDecoder;
use postgres_wal::record::{DecodedRecord, ImageCompression};
use postgres_wal::reltag::{ForkNumber, RelFileNode, RelTag};
use postgres_wal::rmgr::{self, RmgrId};
use postgres_wal::{Lsn, WalSegmentSize, BLCKSZ};

use pg_harness::{PgConfig, PgServer};

use page_model::memory::MemorySource as Mem;

/// Records to put in one batch: ingest must read its own pending writes.
const RECORDS_PER_BATCH: usize = 50;

fn control(server: &PgServer) -> ControlFileData {
    let bytes = fs::read(server.data_dir().join("global/pg_control")).unwrap();
    ControlFileData::decode(&bytes).unwrap()
}

/// Decodes the WAL from `start` up to `end` out of `pg_wal`.
fn records(server: &PgServer, start: Lsn, end: Lsn) -> Vec<DecodedRecord> {
    let seg = WalSegmentSize::DEFAULT;
    let mut decoder = WalStreamDecoder::new(start, seg);
    let mut out = Vec::new();
    let mut segno = start.segment_number(seg);
    let mut offset = start.segment_offset(seg) as usize;
    'segments: while segno <= end.segment_number(seg) {
        let path = server.wal_dir().join(seg.file_name(1, segno));
        let bytes = fs::read(&path).unwrap();
        decoder.feed(&bytes[offset..]);
        offset = 0;
        segno += 1;
        loop {
            match decoder.poll() {
                Ok(Some(rec)) => {
                    if rec.end_lsn > end {
                        break 'segments;
                    }
                    out.push(rec);
                }
                Ok(None) => break,
                // Past `end` the WAL may still be in PostgreSQL's buffers.
                Err(e) if e.is_end_of_wal() && decoder.valid_end() >= end => break 'segments,
                Err(e) => panic!("WAL ends early at {}: {e}", e.lsn()),
            }
        }
    }
    out
}

/// Seeds a store with the checkpoint at `start`, as an import would, and ingests.
/// What an import of one database directory would store at `lsn`: the database,
/// its relation map, and every fork's size and blocks as the files hold them.
fn import_database(data: &Path, spc: u32, db: u32, lsn: Lsn) -> Vec<(Key, Value)> {
    let dir = data.join(format!("base/{db}"));
    let image = |bytes: Vec<u8>| Value::Image(bytes::Bytes::from(bytes));
    let mut out = vec![
        (
            Key::DbDir,
            image(read::encode_db_dir(&[(spc, db)].into()).to_vec()),
        ),
        (
            Key::RelMap { spc, db },
            image(fs::read(dir.join("pg_filenode.map")).unwrap()),
        ),
    ];
    let mut rels = BTreeSet::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let (num, fork) = match name.split_once('_') {
            Some((num, fork)) => (num, ForkNumber::from_name(fork)),
            None => (name.as_str(), Some(ForkNumber::Main)),
        };
        let (Ok(rel_node), Some(fork)) = (num.parse::<u32>(), fork) else {
            continue;
        };
        let bytes = fs::read(dir.join(&name)).unwrap();
        let rel = RelTag {
            node: RelFileNode {
                spc_node: spc,
                db_node: db,
                rel_node,
            },
            fork,
        };
        for (blkno, page) in (0u32..).zip(bytes.chunks_exact(BLCKSZ)) {
            out.push((Key::rel_block(rel, blkno), image(page.to_vec())));
        }
        let size = read::RelSize {
            nblocks: (bytes.len() / BLCKSZ) as u32,
            created_lsn: lsn,
        };
        out.push((Key::RelSize(rel), Value::Image(size.encode())));
        rels.insert((rel_node, fork));
    }
    out.push((
        Key::RelDir { spc, db },
        Value::Image(read::encode_rel_dir(&rels)),
    ));
    out
}

fn ingest(
    records: &[DecodedRecord],
    start: Lsn,
    control: &ControlFileData,
    import: Vec<(Key, Value)>,
) -> Result<Mem, IngestError> {
    let mut mem = Mem::default();
    for (key, value) in import {
        mem.0.insert((key, start), value);
    }
    let cp = control.checkpoint_copy;
    mem.0.insert(
        (Key::Checkpoint, start),
        Value::Image(bytes::Bytes::copy_from_slice(&cp.encode())),
    );
    let mut ingest = WalIngest::load(&mem, start)?;
    for chunk in records.chunks(RECORDS_PER_BATCH) {
        let mut batch = Batch::new();
        for rec in chunk {
            ingest.ingest(rec, &mem, &mut batch)?;
        }
        mem.commit(batch).unwrap();
        // Resume from the store after every batch, as a restarted pageserver does:
        // everything ingest carries between records must be in the store.
        let last = chunk.last().map_or(start, |r| r.end_lsn);
        ingest = WalIngest::load(&mem, last)?;
    }
    Ok(mem)
}

fn server(consistency: bool) -> PgServer {
    let mut config = PgConfig::new()
        .data_checksums(true)
        .setting("full_page_writes", "on")
        .setting("max_prepared_transactions", "5")
        .setting("autovacuum", "off")
        .setting("wal_keep_size", "1GB");
    if consistency {
        // Compressed images too: restore_page must undo lz4.
        config = config
            .setting("wal_consistency_checking", "all")
            .setting("wal_compression", "lz4");
    }
    PgServer::start(config).unwrap()
}

fn lsn_of(text: &str) -> Lsn {
    text.trim().parse().unwrap()
}

fn u16_at(page: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([page[at], page[at + 1]])
}

const PD_FLAGS: usize = 10;
const PD_LOWER: usize = 12;
const PD_UPPER: usize = 14;
/// `SPGIST_PAGE_ID`, and `SPGIST_META` in the page's flags.
const SPGIST_PAGE_ID: u16 = 0xFF82;
/// `SEQ_MAGIC`, in a sequence page's special space.
const SEQ_MAGIC: u32 = 0x1717;
const PD_SPECIAL: usize = 16;
const PD_PRUNE_XID: usize = 20;
const PAGE_HEADER: usize = 24;
/// `HEAP_XACT_MASK`'s hint bits: XMIN_COMMITTED/INVALID, XMAX_COMMITTED/INVALID.
const HEAP_HINT_BITS: u16 = 0x0F00;
/// `PD_HAS_FREE_LINES | PD_PAGE_FULL`: hints (`mask_page_hint_bits`).
const PD_HINT_FLAGS: u16 = 0x0003;
/// `BTP_HAS_GARBAGE`, `BTP_SPLIT_END`: btree's hint flags (`btree_mask`).
const BTP_HINT_FLAGS: u16 = (1 << 6) | (1 << 5);

/// Masks what PostgreSQL changes without WAL, following its `rm_mask` functions: the
/// free space between `pd_lower` and `pd_upper` (`mask_unused_space`: a full-page
/// image leaves it out as its hole, and the file keeps whatever was there), the
/// checksum (the model's pages carry none; callers set it when emitting), `pd_prune_xid`
/// and the page-full/free-lines flags (`mask_page_hint_bits`), heap tuples' commit hint
/// bits (`heap_mask`), index items' LP_DEAD marks (`mask_lp_flags` in `btree_mask`
/// and the others) and btree's garbage and split-end flags.
fn mask(page: &mut [u8], is_heap: bool) {
    page[8] = 0;
    page[9] = 0;
    if page.iter().all(|&b| b == 0) || u16_at(page, PD_LOWER) == 0 {
        return;
    }
    let upper = usize::from(u16_at(page, PD_UPPER)).min(BLCKSZ);
    let special = usize::from(u16_at(page, PD_SPECIAL)).min(BLCKSZ);
    if special == BLCKSZ - 8 && page[special..special + 4] == SEQ_MAGIC.to_le_bytes() {
        // nextval() WAL-logs the value SEQ_LOG_VALS ahead and keeps the real one in
        // the buffer: the file has the real one, replay (and so the model) the logged
        // one, by PostgreSQL's design (a crash skips ahead).
        page[upper..special].fill(0);
    }
    if special == BLCKSZ - 8
        && u16_at(page, special + 6) == SPGIST_PAGE_ID
        && page[special] & 1 != 0
    {
        // The SP-GiST metapage's last-used-pages cache is updated without WAL
        // (SpGistUpdateMetaPage): keep only its magic number.
        let lower = usize::from(u16_at(page, PD_LOWER)).min(BLCKSZ);
        page[PAGE_HEADER + 4..lower.max(PAGE_HEADER + 4)].fill(0);
    }
    page[PD_PRUNE_XID..PD_PRUNE_XID + 4].fill(0);
    let flags = u16_at(page, PD_FLAGS) & !PD_HINT_FLAGS;
    page[PD_FLAGS..PD_FLAGS + 2].copy_from_slice(&flags.to_le_bytes());
    let lower = usize::from(u16_at(page, PD_LOWER)).min(BLCKSZ);
    page[lower..upper.max(lower)].fill(0);
    for item in (PAGE_HEADER..lower).step_by(4) {
        if item + 4 > lower {
            break;
        }
        let word = u32::from_le_bytes([page[item], page[item + 1], page[item + 2], page[item + 3]]);
        let off = (word & 0x7FFF) as usize;
        let lp_flags = (word >> 15) & 3;
        if is_heap {
            // LP_NORMAL: mask t_infomask (at 20 in the tuple header) hint bits.
            if lp_flags == 1 && off + 22 <= BLCKSZ {
                let infomask = u16_at(page, off + 20) & !HEAP_HINT_BITS;
                page[off + 20..off + 22].copy_from_slice(&infomask.to_le_bytes());
            }
        } else if lp_flags != 0 {
            let masked = word & !(3 << 15);
            page[item..item + 4].copy_from_slice(&masked.to_le_bytes());
        }
    }
    // A btree page's special space is 16 bytes; btpo_flags sits at 12.
    if !is_heap && special == BLCKSZ - 16 {
        let at = special + 12;
        let f = u16_at(page, at) & !BTP_HINT_FLAGS;
        page[at..at + 2].copy_from_slice(&f.to_le_bytes());
    }
}

fn fork_path(data: &Path, rel: RelTag) -> std::path::PathBuf {
    let n = rel.node;
    let dir = if n.spc_node == read::GLOBAL_TABLESPACE {
        data.join("global")
    } else {
        data.join(format!("base/{}", n.db_node))
    };
    match rel.fork {
        ForkNumber::Main => dir.join(n.rel_node.to_string()),
        fork => dir.join(format!("{}_{}", n.rel_node, fork.name())),
    }
}

/// Relation forks created by `SMGR CREATE` records in the WAL.
fn created_forks(records: &[DecodedRecord]) -> BTreeSet<RelFileNode> {
    let mut out = BTreeSet::new();
    for rec in records {
        if rec.rmid() == RmgrId::SMGR && rec.rmgr_info() == rmgr::smgr::CREATE {
            let d = rec.main_data();
            let w = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
            out.insert(RelFileNode {
                spc_node: w(0),
                db_node: w(4),
                rel_node: w(8),
            });
        }
    }
    out
}

#[derive(Default, Debug)]
struct Counts {
    exact: usize,
    masked: usize,
    forks: usize,
    vm_pages: usize,
    vm_copied_clear: usize,
}

fn compare_relations(
    mem: &Mem,
    data: &Path,
    end: Lsn,
    created: &BTreeSet<RelFileNode>,
    names: &BTreeMap<u32, String>,
    vm_lossy_db: u32,
) -> Counts {
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    for &node in created {
        let unlogged = read::rel_size(
            mem,
            RelTag {
                node,
                fork: ForkNumber::Init,
            },
            end,
        )
        .unwrap()
        .is_some();
        for fork in [
            ForkNumber::Main,
            ForkNumber::VisibilityMap,
            ForkNumber::Init,
        ] {
            let rel = RelTag { node, fork };
            let size = read::rel_size(mem, rel, end).unwrap();
            let disk = fs::read(fork_path(data, rel)).ok();
            let (size, disk) = match (size, disk) {
                (None, None) => continue,
                // An unlogged relation's main fork is not WAL-logged.
                (None, Some(_)) if unlogged && fork == ForkNumber::Main => continue,
                (Some(s), Some(d)) => (s, d),
                (s, d) => {
                    failures.push(format!(
                        "{node} {}: model size {s:?}, disk {:?} bytes",
                        fork.name(),
                        d.map(|d| d.len())
                    ));
                    continue;
                }
            };
            counts.forks += 1;
            let disk_blocks = (disk.len() / BLCKSZ) as u32;
            if disk_blocks != size.nblocks {
                failures.push(format!(
                    "{node} {}: model {} blocks, disk {disk_blocks}",
                    fork.name(),
                    size.nblocks
                ));
            }
            for blkno in 0..size.nblocks.max(disk_blocks) {
                let model = read::rel_page(mem, rel, blkno, end).unwrap();
                let start = blkno as usize * BLCKSZ;
                let on_disk = disk.get(start..start + BLCKSZ).unwrap_or(&[0; BLCKSZ]);
                let mut model = model.to_vec();
                let mut on_disk = on_disk.to_vec();
                model[8..10].copy_from_slice(&on_disk[8..10]);
                if fork == ForkNumber::VisibilityMap {
                    counts.vm_pages += 1;
                }
                if model == on_disk {
                    counts.exact += 1;
                    continue;
                }
                // Visibility-map pages have no hints and no free space: only exact,
                // except for one case PostgreSQL 15 itself creates. CREATE DATABASE ...
                // WAL_LOG logs copied pages as standard pages (RelationCopyStorageUsing-
                // Buffer: log_newpage_buffer(buf, true)), and a VM page's header says
                // its bits are free space: the image leaves them out, so replay, a
                // standby and this model have them clear while the primary's file
                // keeps them. Clear VM bits are safe (VACUUM sets them again); a set
                // bit the file lacks would not be, so the model's bits must be a
                // subset of the file's.
                if fork == ForkNumber::VisibilityMap
                    && node.db_node == vm_lossy_db
                    && model[..PAGE_HEADER] == on_disk[..PAGE_HEADER]
                    && model.iter().zip(&on_disk).all(|(m, d)| m & !d == 0)
                {
                    counts.vm_copied_clear += 1;
                    continue;
                }
                let maskable = fork != ForkNumber::VisibilityMap;
                let is_heap =
                    fork == ForkNumber::Main && usize::from(u16_at(&on_disk, PD_SPECIAL)) == BLCKSZ;
                // Index build functions write an empty index's init-fork pages straight
                // to the file and WAL-log them after: the file keeps pd_lsn 0, replay
                // sets the record's LSN.
                if on_disk[..8] == [0; 8] {
                    model[..8].fill(0);
                }
                if maskable {
                    mask(&mut model, is_heap);
                    mask(&mut on_disk, is_heap);
                }
                if maskable && model == on_disk {
                    counts.masked += 1;
                } else {
                    let first = model.iter().zip(&on_disk).position(|(a, b)| a != b);
                    if failures.len() < 3 {
                        let diffs: Vec<_> = (0..BLCKSZ)
                            .filter(|&i| model[i] != on_disk[i])
                            .take(12)
                            .map(|i| (i, model[i], on_disk[i]))
                            .collect();
                        eprintln!(
                            "{node} {} {blkno}: {diffs:?} header {:?} / {:?}",
                            fork.name(),
                            &model[..24],
                            &on_disk[..24]
                        );
                    }
                    failures.push(format!(
                        "{node} ({}) {} block {blkno} differs from byte {first:?} (model lsn {}, disk lsn {})",
                        names.get(&node.rel_node).map_or("?", String::as_str),
                        fork.name(),
                        postgres_wal::page::page_lsn(&model.clone().try_into().unwrap()),
                        postgres_wal::page::page_lsn(&on_disk.clone().try_into().unwrap()),
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    counts
}

fn slru_bytes(data: &Path, kind: SlruKind, pageno: u32) -> Vec<u8> {
    let segno = pageno / read::SLRU_PAGES_PER_SEGMENT;
    let path = data.join(kind.dir()).join(format!("{segno:04X}"));
    let bytes = fs::read(&path).unwrap();
    let at = (pageno % read::SLRU_PAGES_PER_SEGMENT) as usize * BLCKSZ;
    bytes[at..at + BLCKSZ].to_vec()
}

fn model_slru(mem: &Mem, kind: SlruKind, pageno: u32, end: Lsn) -> bytes::Bytes {
    let segno = pageno / read::SLRU_PAGES_PER_SEGMENT;
    read::slru_page(mem, kind, segno, pageno % read::SLRU_PAGES_PER_SEGMENT, end).unwrap()
}

const WORKLOAD: &str = "
CREATE TABLE t (id int PRIMARY KEY, v text, n int, arr int[], p point, r int4range);
INSERT INTO t SELECT g, repeat('x', g % 50), g, ARRAY[g, g+1], point(g, g), int4range(g, g+10)
  FROM generate_series(1, 3000) g;
CREATE INDEX t_hash ON t USING hash (n);
CREATE INDEX t_gin ON t USING gin (arr);
CREATE INDEX t_gist ON t USING gist (p);
CREATE INDEX t_brin ON t USING brin (n);
CREATE INDEX t_spgist ON t USING spgist (r);
CREATE INDEX t_btree ON t (v);
CREATE SEQUENCE s;
SELECT nextval('s') FROM generate_series(1, 40);
UPDATE t SET v = v || 'y' WHERE id % 7 = 0;
UPDATE t SET n = n + 1 WHERE id % 11 = 0;
DELETE FROM t WHERE id % 13 = 0;
VACUUM t;
INSERT INTO t SELECT g, 'z', g, ARRAY[g], point(g, 0), int4range(g, g+1)
  FROM generate_series(3001, 3500) g;
VACUUM FREEZE t;
UPDATE t SET v = 'after-freeze' WHERE id % 17 = 0;
DELETE FROM t WHERE id > 3400;
VACUUM t;
CREATE TABLE trunc (a int, b text);
INSERT INTO trunc SELECT g, repeat('q', 100) FROM generate_series(1, 2000) g;
VACUUM trunc;
DELETE FROM trunc WHERE a > 100;
VACUUM trunc;
CREATE TABLE tt (a int);
INSERT INTO tt SELECT generate_series(1, 1000);
TRUNCATE tt;
INSERT INTO tt SELECT generate_series(1, 10);
CREATE UNLOGGED TABLE u (a int PRIMARY KEY);
INSERT INTO u SELECT generate_series(1, 100);
BEGIN;
INSERT INTO t VALUES (100000, 'sub', 1, NULL, NULL, NULL);
SAVEPOINT a;
INSERT INTO t VALUES (100001, 'rolled back', 1, NULL, NULL, NULL);
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
INSERT INTO t VALUES (100002, 'kept', 1, NULL, NULL, NULL);
RELEASE SAVEPOINT b;
COMMIT;
BEGIN;
INSERT INTO t VALUES (100003, 'aborted', 1, NULL, NULL, NULL);
ROLLBACK;
BEGIN;
INSERT INTO t VALUES (100004, 'prepared', 1, NULL, NULL, NULL);
PREPARE TRANSACTION 'p1';
COMMIT PREPARED 'p1';
BEGIN;
INSERT INTO t VALUES (100005, 'prepared, aborted', 1, NULL, NULL, NULL);
PREPARE TRANSACTION 'p2';
ROLLBACK PREPARED 'p2';
BEGIN;
SELECT id FROM t WHERE id = 5 FOR SHARE;
SAVEPOINT c;
UPDATE t SET n = n + 1 WHERE id = 5;
COMMIT;
CREATE TABLE dropped (a int);
INSERT INTO dropped VALUES (1);
DROP TABLE dropped;
";

#[test]
fn ingest_matches_disk() {
    let pg = server(true);
    pg.checkpoint().unwrap();
    let start_control = control(&pg);
    let start = start_control.checkpoint;
    // template1, imported as the timeline's base would be, so that CREATE DATABASE
    // ... FILE_COPY has something to copy. Nothing writes to it during the workload.
    let template1 = import_database(pg.data_dir(), read::DEFAULT_TABLESPACE, 1, start);

    pg.sql(WORKLOAD).unwrap();
    // Two sessions share a row lock: a multixact.
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            pg.sql("BEGIN; SELECT id FROM t WHERE id = 10 FOR SHARE; SELECT pg_sleep(2); COMMIT;")
                .unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(700));
        pg.sql("BEGIN; SELECT id FROM t WHERE id = 10 FOR SHARE; COMMIT;")
            .unwrap();
        first.join().unwrap();
    });
    pg.sql(
        "CREATE DATABASE walcopy STRATEGY WAL_LOG; CREATE DATABASE filecopy STRATEGY FILE_COPY;",
    )
    .unwrap();
    pg.sql_db(
        "filecopy",
        "CREATE TABLE f (a int PRIMARY KEY); INSERT INTO f SELECT generate_series(1, 500);",
    )
    .unwrap();
    pg.sql_db(
        "walcopy",
        "CREATE TABLE w (a int PRIMARY KEY); INSERT INTO w SELECT generate_series(1, 500);",
    )
    .unwrap();
    pg.checkpoint().unwrap();
    let end = lsn_of(&pg.sql("SELECT pg_current_wal_flush_lsn()").unwrap());
    let filecopy: u32 = pg
        .sql("SELECT oid FROM pg_database WHERE datname = 'filecopy'")
        .unwrap()
        .parse()
        .unwrap();
    let walcopy: u32 = pg
        .sql("SELECT oid FROM pg_database WHERE datname = 'walcopy'")
        .unwrap()
        .parse()
        .unwrap();
    let end_control = control(&pg);

    let recs = records(&pg, start, end);
    assert!(recs.len() > 1000, "only {} records", recs.len());
    let mem = ingest(&recs, start, &start_control, template1).unwrap();
    let end = recs.last().unwrap().end_lsn;
    let data = pg.data_dir();

    // Relations created during the workload (an SMGR CREATE in the WAL we ingest):
    // the WAL_LOG database's copies of template1 are among them. The FILE_COPY
    // database's copies have no SMGR CREATE: they are compared below.
    let created = created_forks(&recs);
    assert!(
        created.iter().any(|n| n.db_node == filecopy),
        "no relation created in filecopy"
    );
    let lz4 = recs
        .iter()
        .flat_map(|r| &r.blocks)
        .filter_map(|b| b.image.as_ref())
        .any(|i| i.compression == ImageCompression::Lz4);
    assert!(lz4, "no lz4-compressed image in the WAL");
    let names: BTreeMap<u32, String> = pg
        .sql("SELECT relfilenode, relname FROM pg_class WHERE relfilenode <> 0")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(n, name)| (n.parse().unwrap(), name.to_string()))
        .collect();
    let counts = compare_relations(&mem, data, end, &created, &names, walcopy);
    assert!(
        counts.exact + counts.masked > 1000 && counts.vm_pages > 0,
        "{counts:?}"
    );
    // The FILE_COPY database: template1 as imported, copied at the record's LSN, then
    // changed by the WAL.
    let copied: BTreeSet<RelFileNode> =
        read::rel_dir(&mem, read::DEFAULT_TABLESPACE, filecopy, end)
            .unwrap()
            .into_iter()
            .map(|(rel_node, _)| RelFileNode {
                spc_node: read::DEFAULT_TABLESPACE,
                db_node: filecopy,
                rel_node,
            })
            .collect();
    assert!(copied.len() > 100, "{} relations in filecopy", copied.len());
    let file_copy = compare_relations(&mem, data, end, &copied, &names, walcopy);
    let map = read::relmap(&mem, read::DEFAULT_TABLESPACE, filecopy, end)
        .unwrap()
        .unwrap();
    assert_eq!(
        &map[..],
        &fs::read(data.join(format!("base/{filecopy}/pg_filenode.map"))).unwrap()[..]
    );

    // The native ops were exercised, not only images.
    let ops = |pred: fn(&NativeOp) -> bool| {
        mem.0
            .values()
            .filter(|v| matches!(v, Value::Op(op) if pred(op)))
            .count()
    };
    assert!(
        ops(|op| matches!(op, NativeOp::ClearVmBits { .. })) > 0,
        "no VM clears"
    );
    assert!(
        ops(|op| matches!(op, NativeOp::TruncateVmPage { .. })) > 0,
        "no VM truncation"
    );
    assert!(
        ops(|op| matches!(op, NativeOp::MultiXactMembers { .. })) > 0,
        "no multixact"
    );

    // The WAL_LOG database's relation map is WAL-logged in full.
    let map = read::relmap(&mem, read::DEFAULT_TABLESPACE, walcopy, end)
        .unwrap()
        .unwrap();
    assert_eq!(
        &map[..],
        &fs::read(data.join(format!("base/{walcopy}/pg_filenode.map"))).unwrap()[..]
    );
    let dbs = read::db_dir(&mem, end).unwrap();
    assert!(
        dbs.contains(&(read::DEFAULT_TABLESPACE, walcopy))
            && dbs.contains(&(read::DEFAULT_TABLESPACE, filecopy))
    );

    // CLOG: every xid the workload assigned.
    let first_xid = start_control.checkpoint_copy.next_xid as u32;
    let cp = read::checkpoint(&mem, end).unwrap().unwrap();
    let next_xid = cp.next_xid as u32;
    assert_eq!(cp.next_xid, end_control.checkpoint_copy.next_xid, "nextXid");
    assert_eq!(
        cp.next_multi, end_control.checkpoint_copy.next_multi,
        "nextMulti"
    );
    assert_eq!(
        cp.next_multi_offset,
        end_control.checkpoint_copy.next_multi_offset
    );
    assert_eq!(cp.next_oid, end_control.checkpoint_copy.next_oid, "nextOid");
    let mut clog_checked = 0;
    for xid in first_xid..next_xid {
        let pageno = xid / 32768;
        let byte = (xid % 32768 / 4) as usize;
        let shift = (xid % 4) * 2;
        let disk = (slru_bytes(data, SlruKind::Clog, pageno)[byte] >> shift) & 3;
        let model = (model_slru(&mem, SlruKind::Clog, pageno, end)[byte] >> shift) & 3;
        assert_eq!(model, disk, "CLOG status of xid {xid}");
        clog_checked += 1;
    }

    // Multixacts: offsets of the new multis (and the next one's), their members.
    let (m0, m1) = (start_control.checkpoint_copy.next_multi, cp.next_multi);
    assert!(m1 > m0, "the workload created no multixact");
    for multi in m0..=m1 {
        let page = multi / 2048;
        let at = (multi % 2048) as usize * 4;
        assert_eq!(
            model_slru(&mem, SlruKind::MultiXactOffsets, page, end)[at..at + 4],
            slru_bytes(data, SlruKind::MultiXactOffsets, page)[at..at + 4],
            "offset of multixact {multi}"
        );
    }
    let (o0, o1) = (
        start_control.checkpoint_copy.next_multi_offset,
        cp.next_multi_offset,
    );
    for off in o0..o1 {
        let page = off / 1636;
        let group = (off / 4 % 409) as usize * 20;
        let flag = group + (off % 4) as usize;
        let xid = group + 4 + (off % 4) as usize * 4;
        let model = model_slru(&mem, SlruKind::MultiXactMembers, page, end);
        let disk = slru_bytes(data, SlruKind::MultiXactMembers, page);
        assert_eq!(model[flag], disk[flag], "flags of member {off}");
        assert_eq!(
            model[xid..xid + 4],
            disk[xid..xid + 4],
            "xid of member {off}"
        );
    }

    let twophase = read::twophase_dir(&mem, end).unwrap();
    assert!(
        twophase.is_empty(),
        "prepared transactions left: {twophase:?}"
    );
    let keys = read::keyspace(&mem, end).unwrap();
    let (last_start, last_end) = read::last_record(&mem, end).unwrap().unwrap();
    assert_eq!((last_start, last_end), (recs.last().unwrap().lsn, end));
    let (ckpt_lsn, _) = read::last_checkpoint_record(&mem, end).unwrap().unwrap();
    assert_eq!(ckpt_lsn, end_control.checkpoint);
    eprintln!(
        "{} records; {} forks, {} pages identical, {} equal after masking hints ({} VM pages, {} of them \
         copied by WAL_LOG with bits cleared); \
         FILE_COPY database: {} forks, {} pages identical, {} equal after masking; \
         {clog_checked} CLOG statuses, {} multixacts; {} live keys",
        recs.len(),
        counts.forks,
        counts.exact,
        counts.masked,
        counts.vm_pages,
        counts.vm_copied_clear,
        file_copy.forks,
        file_copy.exact,
        file_copy.masked,
        m1 - m0,
        keys.len()
    );
}

#[test]
fn missing_images_are_an_error_not_a_wrong_page() {
    let pg = server(false);
    pg.sql("CREATE TABLE h (a int); INSERT INTO h VALUES (1);")
        .unwrap();
    pg.checkpoint().unwrap();
    let start_control = control(&pg);
    let start = start_control.checkpoint;
    // The first insert after the checkpoint carries a full-page image; the second
    // changes the same page with block data only.
    pg.sql("INSERT INTO h VALUES (2); INSERT INTO h VALUES (3);")
        .unwrap();
    let end = lsn_of(&pg.sql("SELECT pg_current_wal_flush_lsn()").unwrap());
    pg.sql("SELECT pg_switch_wal()").unwrap();
    let recs = records(&pg, start, end);
    match ingest(&recs, start, &start_control, Vec::new()) {
        Err(e @ IngestError::MissingImage { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("Heap") && msg.contains("INSERT"), "{msg}");
            assert!(msg.contains("wal_consistency_checking"), "{msg}");
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("ingest stored a page it could not produce"),
    }
}
