//! `strata wal dump --json` must agree with `pg_waldump -b` on every record of WAL that
//! a real PostgreSQL 15 wrote, under every `wal_compression` and with
//! `wal_consistency_checking`.

mod common;

use std::collections::BTreeSet;

use common::{parse_lsn, pg_waldump, server_with_every_rmgr, strata_dump_json, WaldumpRecord};
use serde_json::Value;

/// Resource managers the every-rmgr workload must reach.
const EXPECTED_RMGRS: &[&str] = &[
    "XLOG",
    "Transaction",
    "Storage",
    "CLOG",
    "Database",
    "Tablespace",
    "MultiXact",
    "RelMap",
    "Standby",
    "Heap2",
    "Heap",
    "Btree",
    "Hash",
    "Gin",
    "Gist",
    "Sequence",
    "SPGist",
    "BRIN",
    "CommitTs",
    "Generic",
    "LogicalMessage",
];

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
    let server = server_with_every_rmgr(settings);
    let segments = server.wal_segments().expect("list WAL segments");
    let (first, last) = (&segments[0], &segments[segments.len() - 1]);
    let theirs = pg_waldump(&server, first, last);
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
    (seen, verification_images)
}

fn assert_reaches_every_rmgr(seen: &BTreeSet<(String, String)>) {
    let rmgrs: BTreeSet<&str> = seen.iter().map(|(rmgr, _)| rmgr.as_str()).collect();
    for rmgr in EXPECTED_RMGRS {
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
