//! `strata wal dump --json` must agree with `pg_waldump -b` on every record of WAL that
//! a real PostgreSQL 15 wrote, under every `wal_compression` and with
//! `wal_consistency_checking`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use common::{
    for_each_record, parse_lsn, pg_waldump, server_with_every_rmgr, strata_dump_json, EveryRmgrRun,
    WaldumpRecord,
};
use postgres_wal::checksum::set_page_checksum;
use postgres_wal::image::restore_page;
use postgres_wal::page::{set_page_lsn, set_stored_checksum, stored_checksum, verify_header};
use postgres_wal::rmgr::RmgrId;
use postgres_wal::{ForkNumber, Lsn, BLCKSZ};
use serde_json::Value;

/// Built-in resource managers the every-rmgr workload cannot reach: replication
/// origins are only advanced by logical replication.
const UNREACHED_RMGRS: &[&str] = &["ReplicationOrigin"];

/// Record types whose absence would mean the workload lost its reach.
const EXPECTED_TYPES: &[(&str, &str)] = &[
    ("XLOG", "CHECKPOINT_SHUTDOWN"),
    ("XLOG", "CHECKPOINT_ONLINE"),
    ("XLOG", "SWITCH"),
    ("XLOG", "FPI"),
    ("XLOG", "FPI_FOR_HINT"),
    ("Transaction", "COMMIT"),
    ("Transaction", "ABORT"),
    ("Transaction", "PREPARE"),
    ("Transaction", "COMMIT_PREPARED"),
    ("Transaction", "ABORT_PREPARED"),
    ("Transaction", "ASSIGNMENT"),
    ("Storage", "CREATE"),
    ("Storage", "TRUNCATE"),
    ("CLOG", "ZEROPAGE"),
    ("Database", "CREATE_FILE_COPY"),
    ("Database", "CREATE_WAL_LOG"),
    ("Database", "DROP"),
    ("MultiXact", "CREATE_ID"),
    ("RelMap", "UPDATE"),
    ("Heap", "INSERT"),
    ("Heap", "HOT_UPDATE"),
    ("Heap", "LOCK"),
    ("Heap2", "MULTI_INSERT"),
    ("Heap2", "PRUNE"),
    ("Heap2", "VISIBLE"),
    ("Heap2", "FREEZE_PAGE"),
    ("Btree", "INSERT_LEAF"),
    ("Standby", "RUNNING_XACTS"),
];

fn str_field<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {value}"))
}

fn u64_field(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {value}"))
}

fn assert_record_matches(ours: &Value, theirs: &WaldumpRecord) {
    let at = str_field(ours, "lsn");
    assert_eq!(parse_lsn(at), theirs.lsn, "LSN");
    assert_eq!(
        parse_lsn(str_field(ours, "prev_lsn")),
        theirs.prev,
        "prev LSN at {at}"
    );
    assert_eq!(str_field(ours, "rmgr"), theirs.rmgr, "rmgr at {at}");
    assert_eq!(str_field(ours, "info"), theirs.info, "record type at {at}");
    assert_eq!(u64_field(ours, "xid"), theirs.xid, "xid at {at}");
    assert_eq!(
        u64_field(ours, "total_len"),
        theirs.total_len,
        "total length at {at}"
    );
    assert!(
        parse_lsn(str_field(ours, "end_lsn")) > theirs.lsn,
        "end LSN after start at {at}"
    );
    let blocks = ours["blocks"].as_array().expect("blocks array");
    assert_eq!(blocks.len(), theirs.blocks.len(), "block count at {at}");
    for (ours, theirs) in blocks.iter().zip(&theirs.blocks) {
        let rel = format!(
            "{}/{}/{}",
            u64_field(ours, "spc"),
            u64_field(ours, "db"),
            u64_field(ours, "rel")
        );
        assert_eq!(
            u64_field(ours, "block_id"),
            theirs.block_id,
            "block id at {at}"
        );
        assert_eq!(rel, theirs.rel, "relation at {at}");
        assert_eq!(str_field(ours, "fork"), theirs.fork, "fork at {at}");
        assert_eq!(u64_field(ours, "blk"), theirs.blk, "block number at {at}");
        assert_eq!(
            ours["has_image"].as_bool(),
            Some(theirs.has_image),
            "has_image at {at}"
        );
        assert_eq!(
            ours["apply_image"].as_bool(),
            Some(theirs.apply_image),
            "apply_image at {at}"
        );
        assert!(ours["will_init"].is_boolean(), "will_init at {at}");
    }
}

/// Run the workload under `settings` and compare every record with pg_waldump's.
/// Returns the (rmgr, type) pairs seen and how many images were verification-only.
fn compare_with_pg_waldump(settings: &[(&str, &str)]) -> (BTreeSet<(String, String)>, usize) {
    let run = server_with_every_rmgr(settings);
    let server = &run.server;
    let segments = server.wal_segments().expect("list WAL segments");
    let (first, last) = (&segments[0], &segments[segments.len() - 1]);
    let theirs = pg_waldump(server, first, last);
    let ours = strata_dump_json(&[&server.wal_dir()]);
    assert!(
        theirs.len() > 10_000,
        "pg_waldump printed only {} records",
        theirs.len()
    );
    assert_eq!(
        ours.len(),
        theirs.len(),
        "record count differs from pg_waldump"
    );
    for (ours, theirs) in ours.iter().zip(&theirs) {
        assert_record_matches(ours, theirs);
    }
    let seen = theirs
        .iter()
        .map(|r| (r.rmgr.clone(), r.info.clone()))
        .collect();
    let verification_images = theirs
        .iter()
        .flat_map(|r| &r.blocks)
        .filter(|b| b.has_image && !b.apply_image)
        .count();
    assert_images_match_disk(&run, &segments);
    (seen, verification_images)
}

/// Relfilenode, fork and block number.
type BlockKey = (u32, ForkNumber, u32);

/// Every page of the `wal_log` database was written to WAL as an image and never
/// touched again, so the last image of each block, restored and given the record's
/// end LSN as PostgreSQL's redo does, must be the page PostgreSQL wrote to disk. The
/// hole PostgreSQL leaves out of an image may hold stale bytes on disk, so it is
/// compared as zeros, and the checksum only where the disk's hole is zeros too.
fn assert_images_match_disk(run: &EveryRmgrRun, segments: &[PathBuf]) {
    let mut last_images: HashMap<BlockKey, (Box<[u8; BLCKSZ]>, Lsn)> = HashMap::new();
    let mut images_restored = 0;
    for_each_record(segments, |record| {
        for block in &record.blocks {
            let Some(image) = &block.image else { continue };
            let page = restore_page(record, image).unwrap_or_else(|e| {
                panic!(
                    "restore image of block {} at {}: {e}",
                    block.blkno, record.lsn
                )
            });
            assert!(
                verify_header(&page).is_ok(),
                "image of {} blk {} at {} has an invalid page header",
                block.rel,
                block.blkno,
                record.lsn
            );
            images_restored += 1;
            if block.rel.db_node == run.wal_logged_db && image.apply {
                last_images.insert(
                    (block.rel.rel_node, block.fork, block.blkno),
                    (page, record.end_lsn),
                );
            }
        }
    });
    assert!(
        images_restored > 100,
        "only {images_restored} images restored"
    );
    assert!(
        last_images.len() > 100,
        "only {} images of the wal_log database",
        last_images.len()
    );
    let db_dir = run
        .server
        .data_dir()
        .join("base")
        .join(run.wal_logged_db.to_string());
    let mut exact_checksums = 0;
    for ((rel, fork, blkno), (mut page, end_lsn)) in last_images {
        let suffix = match fork {
            ForkNumber::Main => String::new(),
            fork => format!("_{}", fork.name()),
        };
        let file =
            std::fs::read(db_dir.join(format!("{rel}{suffix}"))).expect("read relation file");
        let offset = blkno as usize * BLCKSZ;
        let mut disk: [u8; BLCKSZ] = file[offset..offset + BLCKSZ].try_into().expect("one page");
        set_page_lsn(&mut page, end_lsn);
        set_page_checksum(&mut page, blkno);
        let (lower, upper) = (
            u16::from_le_bytes([disk[12], disk[13]]),
            u16::from_le_bytes([disk[14], disk[15]]),
        );
        let hole = usize::from(lower)..usize::from(upper).max(usize::from(lower));
        if disk[hole.clone()].iter().all(|&b| b == 0) {
            assert_eq!(
                stored_checksum(&page),
                stored_checksum(&disk),
                "checksum of {rel} {fork:?} blk {blkno}"
            );
            exact_checksums += 1;
        }
        disk[hole].fill(0);
        set_stored_checksum(&mut disk, 0);
        set_stored_checksum(&mut page, 0);
        assert!(
            page[..] == disk[..],
            "restored image of {rel} {fork:?} blk {blkno} differs from the page on disk"
        );
    }
    assert!(
        exact_checksums > 50,
        "only {exact_checksums} pages had a zeroed hole to compare checksums on"
    );
}

fn assert_reaches_every_rmgr(seen: &BTreeSet<(String, String)>) {
    let rmgrs: BTreeSet<&str> = seen.iter().map(|(rmgr, _)| rmgr.as_str()).collect();
    let expected = RmgrId::builtins()
        .filter_map(RmgrId::name)
        .filter(|name| !UNREACHED_RMGRS.contains(name));
    for rmgr in expected {
        assert!(
            rmgrs.contains(rmgr),
            "workload wrote no {rmgr} record; saw {rmgrs:?}"
        );
    }
    for (rmgr, info) in EXPECTED_TYPES {
        assert!(
            seen.contains(&(rmgr.to_string(), info.to_string())),
            "workload wrote no {rmgr} {info} record"
        );
    }
}

#[test]
fn uncompressed_wal_matches_pg_waldump() {
    let (seen, _) = compare_with_pg_waldump(&[("wal_compression", "off")]);
    assert_reaches_every_rmgr(&seen);
}

#[test]
fn pglz_wal_matches_pg_waldump() {
    let (seen, _) = compare_with_pg_waldump(&[("wal_compression", "pglz")]);
    assert_reaches_every_rmgr(&seen);
}

#[test]
fn lz4_wal_with_consistency_checking_matches_pg_waldump() {
    let (seen, verification) = compare_with_pg_waldump(&[
        ("wal_compression", "lz4"),
        ("wal_consistency_checking", "heap,heap2,btree,gin"),
    ]);
    assert_reaches_every_rmgr(&seen);
    assert!(
        verification > 1000,
        "only {verification} verification images"
    );
}

#[test]
fn zstd_wal_with_all_consistency_checking_matches_pg_waldump() {
    let (seen, verification) = compare_with_pg_waldump(&[
        ("wal_compression", "zstd"),
        ("wal_consistency_checking", "all"),
    ]);
    assert_reaches_every_rmgr(&seen);
    assert!(
        verification > 1000,
        "only {verification} verification images"
    );
}
