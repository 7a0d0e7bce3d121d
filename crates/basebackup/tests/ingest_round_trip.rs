//! The pageserver's core without its daemon: a compute starts from a basebackup of an
//! imported cluster, its WAL (from X on, as the safekeepers would hold it) is ingested
//! on top of the import, and a basebackup at the end of that WAL starts a second
//! compute with the same contents, clean indexes and valid checksums.
// Helpers outside `#[test]` fns are test code too.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::process::Command;

use basebackup::{import_datadir_tar, tar_datadir, write_basebackup};
use page_model::ingest::{Batch, WalIngest};
use pg_harness::{PgConfig, PgServer};
use postgres_wal::decoder::WalStreamDecoder;

use page_model::memory::MemorySource as Mem;

fn run_ok(mut cmd: Command) -> String {
    let out = cmd.output().expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tool failed: {text}");
    text
}

/// `pg_dumpall` without its per-run random `\restrict` keys.
fn dumpall(server: &PgServer) -> Vec<String> {
    let mut cmd = server.bin().command("pg_dumpall");
    cmd.arg("-d").arg(server.connstr());
    run_ok(cmd)
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .map(str::to_string)
        .collect()
}

fn assert_same_dump(got: &[String], expected: &[String]) {
    let first_diff = got.iter().zip(expected).position(|(a, b)| a != b);
    assert!(
        first_diff.is_none() && got.len() == expected.len(),
        "dumps differ: line {first_diff:?}: {:?} vs {:?} ({} vs {} lines)",
        first_diff.map(|i| &got[i]),
        first_diff.map(|i| &expected[i]),
        got.len(),
        expected.len()
    );
}

fn start_from_tar(config: PgConfig, tar_bytes: &[u8]) -> PgServer {
    PgServer::start_from(config, |dir| {
        tar::Archive::new(tar_bytes).unpack(dir)?;
        Ok(())
    })
    .unwrap()
}

const WORKLOAD: &str = "
CREATE TABLE t (id int PRIMARY KEY, v text, n numeric);
INSERT INTO t SELECT g, md5(g::text), g * 1.5 FROM generate_series(1, 5000) g;
CREATE INDEX t_v ON t (v);
UPDATE t SET v = v || 'x' WHERE id % 3 = 0;
DELETE FROM t WHERE id % 7 = 0;
VACUUM t;
CREATE UNLOGGED TABLE u (id int PRIMARY KEY, v text);
INSERT INTO u VALUES (1, 'gone after a basebackup');
CREATE SEQUENCE s;
SELECT nextval('s') FROM generate_series(1, 10);
CREATE DATABASE wal_logged;
CREATE DATABASE file_copied STRATEGY FILE_COPY;
";

#[test]
fn wal_ingested_over_an_import_comes_back_as_a_basebackup() {
    let mut original = PgServer::start(PgConfig::new().data_checksums(true)).unwrap();
    original.stop().unwrap();
    let mut datadir_tar = Vec::new();
    tar_datadir(original.data_dir(), &[], &mut datadir_tar).unwrap();
    let import = import_datadir_tar(&datadir_tar[..]).unwrap();
    let seg = import.segment_size;
    let x = import.start_lsn;
    let mut mem = Mem::default();
    for (key, value) in import.entries {
        mem.0.insert((key, x), value);
    }

    // Nothing is redone natively yet, so every rmgr's records carry page images.
    let config = PgConfig::new()
        .setting("wal_consistency_checking", "all")
        .setting("full_page_writes", "on")
        .setting("autovacuum", "off")
        .setting("wal_keep_size", "1GB");
    let mut first_tar = Vec::new();
    write_basebackup(&mem, x, false, &mut first_tar).unwrap();
    let mut first = start_from_tar(config.clone(), &first_tar);
    first.sql(WORKLOAD).unwrap();
    first
        .sql_db(
            "file_copied",
            "CREATE TABLE w AS SELECT g, g::text AS s FROM generate_series(1, 300) g;",
        )
        .unwrap();
    first.sql("TRUNCATE u").unwrap();
    let expected = dumpall(&first);
    first.stop().unwrap();

    // The compute's WAL from X on, as compute_ctl streams it to the safekeepers.
    let mut wal = Vec::new();
    let mut next_segno = x.segment_number(seg);
    for path in first.wal_segments().unwrap() {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let (_, segno) = seg.parse_file_name(&name).unwrap();
        if segno >= x.segment_number(seg) {
            assert_eq!(segno, next_segno, "WAL segments missing before {name}");
            wal.extend(fs::read(&path).unwrap());
            next_segno += 1;
        }
    }
    let mut decoder = WalStreamDecoder::new(x, seg).with_system_id(import.system_id);
    decoder.feed(&wal[x.segment_offset(seg) as usize..]);
    let mut ingest = WalIngest::load(&mem, x).unwrap();
    let mut records = 0;
    let mut end = x;
    loop {
        match decoder.poll() {
            Ok(Some(rec)) => {
                let mut batch = Batch::new();
                ingest.ingest(&rec, &mem, &mut batch).unwrap();
                for (key, lsn, value) in batch.into_entries() {
                    mem.0.insert((key, lsn), value);
                }
                end = rec.end_lsn;
                records += 1;
            }
            Ok(None) => break,
            Err(e) if e.is_end_of_wal() => break,
            Err(e) => panic!("decoding the compute's WAL: {e}"),
        }
    }
    assert!(records > 100, "only {records} records");

    let mut second_tar = Vec::new();
    let info = write_basebackup(&mem, end, false, &mut second_tar).unwrap();
    assert_eq!(info.lsn, end);
    let mut second = start_from_tar(config, &second_tar);
    // A sequence comes back at the value its last WAL record logged, up to 32 ahead
    // of the last one handed out (as after any replay of PostgreSQL's WAL); every
    // other line is equal.
    let is_setval = |l: &String| l.starts_with("SELECT pg_catalog.setval(");
    let got = dumpall(&second);
    let (got_seq, got_rest): (Vec<String>, Vec<String>) = got.into_iter().partition(is_setval);
    let (want_seq, want_rest): (Vec<String>, Vec<String>) =
        expected.into_iter().partition(is_setval);
    assert_same_dump(&got_rest, &want_rest);
    assert_eq!(
        want_seq,
        ["SELECT pg_catalog.setval('public.s', 10, true);"]
    );
    assert_eq!(got_seq, ["SELECT pg_catalog.setval('public.s', 33, true);"]);
    let mut cmd = second.bin().command("pg_amcheck");
    cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(second.port().to_string())
        .args(["--all", "--heapallindexed", "--install-missing"]);
    let out = run_ok(cmd);
    assert!(out.trim().is_empty(), "pg_amcheck: {out}");
    // The visibility map shipped agrees with the heap (VACUUM set its bits).
    second.sql("CREATE EXTENSION pg_visibility").unwrap();
    assert_eq!(
        second
            .sql("SELECT (SELECT count(*) FROM pg_check_visible('t')) + (SELECT count(*) FROM pg_check_frozen('t'))")
            .unwrap(),
        "0"
    );
    assert_ne!(
        second
            .sql("SELECT all_visible FROM pg_visibility_map_summary('t')")
            .unwrap(),
        "0"
    );
    second.stop().unwrap();
    let mut cmd = second.bin().command("pg_checksums");
    cmd.arg("--check").arg("-D").arg(second.data_dir());
    let out = run_ok(cmd);
    assert!(out.contains("Bad checksums:  0"), "{out}");
}
