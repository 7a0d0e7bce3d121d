//! The pageserver proven against PostgreSQL itself, on a real local cluster (`strata
//! up`: three safekeepers, the pageserver, a stock PostgreSQL 15 compute):
//!
//! - after each phase of a workload that reaches every built-in resource manager, the
//!   LSN X and a `pg_dumpall` of the compute are noted; at the end a stock PostgreSQL
//!   started from `strata basebackup --lsn X` dumps identically (sequences up to the
//!   32 values PostgreSQL logs ahead, as after any replay), `pg_amcheck
//!   --heapallindexed` is clean and `pg_visibility` finds nothing wrong;
//! - after `CHECKPOINT` with no further writes, every block of every relation fork
//!   `strata getpage` returns equals the compute's file block under PostgreSQL's
//!   masking rules (see [`mask`]);
//! - a stock standby started from a standby basebackup, streaming from a safekeeper,
//!   replays the compute's new commits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cluster_support::{
    check_sequences, first_difference, pg_dumpall, psql, split_sequences, sql, wait_ingested,
    TestCluster, WAIT,
};
use pg_harness::{PgBin, PgConfig, PgServer};
use postgres_wal::Lsn;

const BLCKSZ: usize = 8192;

/// Settings of every PostgreSQL started from a basebackup: the compute's values of the
/// parameters a standby must match or exceed, and room for the workload's prepared
/// transaction.
const COPY_SETTINGS: &[(&str, &str)] = &[
    ("max_prepared_transactions", "10"),
    ("max_wal_senders", "10"),
    ("max_connections", "100"),
    ("autovacuum", "off"),
];

fn workload_phases() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/pageserver_workload.sql");
    let text = std::fs::read_to_string(path).unwrap();
    text.split("-- @phase\n").map(str::to_owned).collect()
}

/// The state of the compute at one LSN.
struct Snapshot {
    lsn: Lsn,
    dump: String,
}

fn flush_lsn(bin: &PgBin, connstr: &str) -> Lsn {
    sql(bin, connstr, "SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap()
}

/// Longest wait for the pageserver to ingest the workload: hundreds of megabytes of
/// WAL with page images, in a debug build on a shared two-core machine.
const INGEST_WAIT: Duration = Duration::from_secs(600);

/// `strata basebackup` into a fresh directory that `PgServer::start_from` starts.
fn start_from_basebackup(
    cluster: &TestCluster,
    lsn: Option<Lsn>,
    standby: bool,
    extra: &[(&str, &str)],
) -> PgServer {
    let mut config = PgConfig::new();
    for (name, value) in COPY_SETTINGS.iter().chain(extra) {
        config = config.setting(*name, *value);
    }
    PgServer::start_from(config, |dir| {
        // `strata basebackup` wants to create its output directory itself.
        std::fs::remove_dir(dir)?;
        let mut args = vec!["basebackup".to_owned(), "--out".to_owned()];
        args.push(dir.display().to_string());
        if let Some(lsn) = lsn {
            args.push("--lsn".to_owned());
            args.push(lsn.to_string());
        }
        if standby {
            args.push("--standby".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cluster.strata(&args);
        if !out.status.success() {
            return Err(format!(
                "strata basebackup: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        if standby {
            std::fs::write(dir.join("standby.signal"), "")?;
        }
        Ok(())
    })
    .expect("stock PostgreSQL starts from the basebackup")
}

fn amcheck_clean(copy: &PgServer) {
    let port = copy.port().to_string();
    let out = copy
        .bin()
        .command("pg_amcheck")
        .args([
            "--all",
            "--heapallindexed",
            "--install-missing",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_amcheck found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pg_check_visible` and `pg_check_frozen` over every table of every database that
/// accepts connections: no row means every page marked all-visible (all-frozen) in the
/// visibility map really is.
fn visibility_clean(copy: &PgServer) -> usize {
    let dbs = copy
        .sql("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")
        .unwrap();
    let mut tables = 0;
    for db in dbs.lines() {
        copy.sql_db(db, "CREATE EXTENSION IF NOT EXISTS pg_visibility")
            .unwrap();
        let count = copy
            .sql_db(
                db,
                "SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'm', 't')",
            )
            .unwrap();
        tables += count.parse::<usize>().unwrap();
        let bad = copy
            .sql_db(
                db,
                "SELECT c.oid::regclass, v.t_ctid, 'visible' FROM pg_class c, \
                 pg_check_visible(c.oid) v WHERE c.relkind IN ('r', 'm', 't') \
                 UNION ALL SELECT c.oid::regclass, f.t_ctid, 'frozen' FROM pg_class c, \
                 pg_check_frozen(c.oid) f WHERE c.relkind IN ('r', 'm', 't')",
            )
            .unwrap();
        assert!(bad.is_empty(), "pg_visibility in {db}:\n{bad}");
    }
    tables
}

#[test]
fn pageserver_matches_postgres() {
    let started = Instant::now();
    let bin = PgBin::locate().unwrap();
    let cluster = TestCluster::new();
    let out = cluster.up();
    let connstr = out.lines().last().unwrap().to_owned();
    // No background writes between the CHECKPOINT of the page comparison and the file
    // reads; the dumps do not depend on it.
    sql(
        &bin,
        &connstr,
        "ALTER SYSTEM SET autovacuum = off; SELECT pg_reload_conf();",
    );

    // Phases, each followed by its LSN and dump.
    let mut snapshots = Vec::new();
    for (i, phase) in workload_phases().iter().enumerate() {
        let t = Instant::now();
        sql(&bin, &connstr, phase);
        if i == 2 {
            let logged = db_connstr(&connstr, "logged_db");
            sql(
                &bin,
                &logged,
                "CREATE TABLE in_logged (x int PRIMARY KEY, y text); \
                 INSERT INTO in_logged SELECT g, md5(g::text) FROM generate_series(1, 2000) g;",
            );
        }
        let lsn = flush_lsn(&bin, &connstr);
        let dump = pg_dumpall(&bin, &connstr);
        eprintln!("phase {i} ends at {lsn} ({:?})", t.elapsed());
        snapshots.push(Snapshot { lsn, dump });
    }

    // Basebackups at every phase's LSN, the latest last.
    for snapshot in &snapshots {
        wait_ingested(&cluster, snapshot.lsn, INGEST_WAIT);
        let t = Instant::now();
        let copy = start_from_basebackup(&cluster, Some(snapshot.lsn), false, &[]);
        let dump = pg_dumpall(&bin, &copy.connstr());
        let (expected, expected_seqs) = split_sequences(&snapshot.dump);
        let (actual, actual_seqs) = split_sequences(&dump);
        if actual != expected {
            let dir = std::env::temp_dir();
            std::fs::write(dir.join("strata-dump-compute.sql"), &snapshot.dump).unwrap();
            std::fs::write(dir.join("strata-dump-copy.sql"), &dump).unwrap();
            eprintln!(
                "dumps kept in {}/strata-dump-{{compute,copy}}.sql",
                dir.display()
            );
        }
        assert!(
            actual == expected,
            "the basebackup at {} dumps differently:\n{}",
            snapshot.lsn,
            first_difference(&expected, &actual)
        );
        check_sequences(&expected_seqs, &actual_seqs);
        amcheck_clean(&copy);
        let tables = visibility_clean(&copy);
        eprintln!(
            "basebackup at {}: dump identical, amcheck clean, {tables} tables visible-checked ({:?})",
            snapshot.lsn,
            t.elapsed()
        );
    }

    compare_pages(&cluster, &bin, &connstr);
    standby_replays_new_commits(&cluster, &bin, &connstr);
    cluster.assert_no_unexpected_errors(&[]);
    eprintln!("pageserver proofs took {:?}", started.elapsed());
}

/// The compute's connection URI for database `db`.
fn db_connstr(connstr: &str, db: &str) -> String {
    let (base, _) = connstr.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

/// How a relation's pages are laid out, for masking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageKind {
    Heap,
    Btree,
    Hash,
    Gist,
    /// A sequence: its tuple holds the value PostgreSQL WAL-logs 32 ahead of what it
    /// hands out, so the replayed page legitimately differs there (the dump comparison
    /// checks the values).
    Sequence,
    /// SP-GiST: its metapage (block 0) caches recently used pages without WAL.
    SpGist,
    /// Other access methods and relations the catalog could not be read for (template0):
    /// only the generic mask.
    Other,
}

/// Relation file node -> page kind, for every database that accepts connections and
/// the shared catalogs.
fn page_kinds(bin: &PgBin, connstr: &str) -> HashMap<(u32, u32), PageKind> {
    let mut kinds = HashMap::new();
    let dbs = sql(
        bin,
        connstr,
        "SELECT oid, datname FROM pg_database WHERE datallowconn",
    );
    for line in dbs.lines() {
        let (oid, name) = line.split_once('|').unwrap();
        let oid: u32 = oid.parse().unwrap();
        let rows = sql(
            bin,
            &db_connstr(connstr, name),
            "SELECT pg_relation_filenode(c.oid), c.relkind, coalesce(a.amname, ''), \
             c.relisshared FROM pg_class c LEFT JOIN pg_am a ON a.oid = c.relam \
             WHERE pg_relation_filenode(c.oid) IS NOT NULL",
        );
        for row in rows.lines() {
            let f: Vec<&str> = row.split('|').collect();
            let kind = match (f[1], f[2]) {
                ("r" | "t" | "m", _) => PageKind::Heap,
                ("S", _) => PageKind::Sequence,
                ("i", "btree") => PageKind::Btree,
                ("i", "hash") => PageKind::Hash,
                ("i", "gist") => PageKind::Gist,
                ("i", "spgist") => PageKind::SpGist,
                _ => PageKind::Other,
            };
            let db = if f[3] == "t" { 0 } else { oid };
            kinds.insert((db, f[0].parse().unwrap()), kind);
        }
    }
    kinds
}

/// Masks, in place, what PostgreSQL itself ignores when it compares a page replayed
/// from WAL with the primary's (`wal_consistency_checking`, `rm_mask`): changes made
/// without WAL. Stricter than PostgreSQL where our pages come straight from the
/// primary's images: `pd_lsn`, tuple command ids and padding are compared.
///
/// - the checksum (hint-bit writes change it; the pageserver's own is checked valid);
/// - `pd_lsn` only where the compute's file has 0 (a page written before it was
///   logged, see `compare_pages`);
/// - `PD_HAS_FREE_LINES` and `PD_PAGE_FULL`, hints set without WAL;
/// - the free space between `pd_lower` and `pd_upper`, never WAL-logged;
/// - heap tuples' commit hint bits (`HEAP_XMIN_COMMITTED`/`INVALID` unless the tuple is
///   frozen, where both are set by a logged freeze, and `HEAP_XMAX_COMMITTED`/`INVALID`);
/// - a sequence's tuple (see [`PageKind::Sequence`]) and the SP-GiST metapage's cache
///   of last-used pages (`SpGistUpdateMetaPage` does not log it);
/// - index items killed as hints (`LP_DEAD` seen as `LP_NORMAL`) and the special-space
///   flags that record it (btree `BTP_HAS_GARBAGE` and its vacuum cycle id, hash
///   `LH_PAGE_HAS_DEAD_TUPLES`, GiST `F_HAS_GARBAGE`).
fn mask(page: &mut [u8], kind: PageKind, blkno: usize) {
    let u16_at = |p: &[u8], at: usize| u16::from_le_bytes([p[at], p[at + 1]]);
    page[8] = 0;
    page[9] = 0;
    let flags = u16_at(page, 10) & !0x0003;
    page[10..12].copy_from_slice(&flags.to_le_bytes());
    let lower = usize::from(u16_at(page, 12));
    let upper = usize::from(u16_at(page, 14));
    let special = usize::from(u16_at(page, 16));
    let standard = (24..=upper).contains(&lower) && upper <= special && special <= BLCKSZ;
    if !standard {
        return;
    }
    page[lower..upper].fill(0);
    if kind == PageKind::Sequence {
        page[upper..special].fill(0);
    }
    if kind == PageKind::SpGist && blkno == 0 {
        // SpGistMetaPageData after its magic number: the last-used-pages cache,
        // 8 x (block number, free space).
        page[28..28 + 8 * 8].fill(0);
    }
    for item in (24..lower).step_by(4) {
        let id = u32::from_le_bytes(page[item..item + 4].try_into().unwrap());
        let (off, flags, len) = ((id & 0x7FFF) as usize, (id >> 15) & 3, (id >> 17) as usize);
        match kind {
            PageKind::Heap if flags == 1 && len >= 24 && off + 24 <= BLCKSZ => {
                let infomask = u16_at(page, off + 20);
                let frozen = infomask & 0x0300 == 0x0300;
                let hints = if frozen { 0x0C00 } else { 0x0F00 };
                page[off + 20..off + 22].copy_from_slice(&(infomask & !hints).to_le_bytes());
            }
            PageKind::Btree | PageKind::Hash | PageKind::Gist if flags == 3 => {
                let id = (id & !(3 << 15)) | (1 << 15);
                page[item..item + 4].copy_from_slice(&id.to_le_bytes());
            }
            _ => {}
        }
    }
    let special_flags = special + 12;
    let clear = match kind {
        PageKind::Btree => 0x0040,
        PageKind::Hash => 0x0080,
        PageKind::Gist => 0x0010,
        _ => 0,
    };
    if clear != 0 && special_flags + 2 <= BLCKSZ {
        let f = u16_at(page, special_flags) & !clear;
        page[special_flags..special_flags + 2].copy_from_slice(&f.to_le_bytes());
        if kind == PageKind::Btree && special_flags + 4 <= BLCKSZ {
            page[special_flags + 2..special_flags + 4].fill(0);
        }
    }
}

/// One relation fork file of the compute (all its 1 GiB segments).
struct RelFile {
    spc: u32,
    db: u32,
    rel: u32,
    fork: &'static str,
    segments: Vec<PathBuf>,
}

fn relation_files(pgdata: &Path) -> Vec<RelFile> {
    let mut dirs = vec![(1664, 0, pgdata.join("global"))];
    for entry in std::fs::read_dir(pgdata.join("base")).unwrap() {
        let entry = entry.unwrap();
        let db: u32 = entry.file_name().to_str().unwrap().parse().unwrap();
        dirs.push((1663, db, entry.path()));
    }
    let mut files: HashMap<(u32, u32, u32, &'static str), Vec<PathBuf>> = HashMap::new();
    for (spc, db, dir) in dirs {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let (base, segno) = match name.split_once('.') {
                Some((b, s)) => match s.parse::<usize>() {
                    Ok(n) => (b.to_owned(), n),
                    Err(_) => continue,
                },
                None => (name.clone(), 0),
            };
            let (rel, fork) = match base.split_once('_') {
                Some((r, "vm")) => (r, "vm"),
                Some((r, "init")) => (r, "init"),
                Some((r, "fsm")) => (r, "fsm"),
                Some(_) => continue,
                None => (base.as_str(), "main"),
            };
            let Ok(rel) = rel.parse::<u32>() else {
                continue;
            };
            let segments = files.entry((spc, db, rel, fork)).or_default();
            if segments.len() <= segno {
                segments.resize(segno + 1, PathBuf::new());
            }
            segments[segno] = dir.join(&name);
        }
    }
    files
        .into_iter()
        .map(|((spc, db, rel, fork), segments)| RelFile {
            spc,
            db,
            rel,
            fork,
            segments,
        })
        .collect()
}

fn getpage(cluster: &TestCluster, lsn: Lsn, file: &RelFile, blk: usize) -> Vec<u8> {
    let rel = format!("{}/{}/{}", file.spc, file.db, file.rel);
    let (lsn, blk) = (lsn.to_string(), blk.to_string());
    let out = cluster.strata(&[
        "getpage", "--lsn", &lsn, "--rel", &rel, "--fork", file.fork, "--blk", &blk,
    ]);
    assert!(
        out.status.success(),
        "strata getpage {rel} {} {blk}: {}",
        file.fork,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), BLCKSZ, "getpage returns one page");
    out.stdout
}

fn compare_pages(cluster: &TestCluster, bin: &PgBin, connstr: &str) {
    let t = Instant::now();
    sql(bin, connstr, "CHECKPOINT");
    let lsn = flush_lsn(bin, connstr);
    wait_ingested(cluster, lsn, INGEST_WAIT);
    let kinds = page_kinds(bin, connstr);
    let pgdata = cluster.cluster().pgdata();
    let files = relation_files(&pgdata);
    let unlogged_rels: std::collections::HashSet<(u32, u32)> = files
        .iter()
        .filter(|f| f.fork == "init")
        .map(|f| (f.db, f.rel))
        .collect();
    let (mut compared, mut masked_differences, mut skipped_fsm, mut skipped_unlogged) =
        (0usize, 0usize, 0usize, 0usize);
    for file in &files {
        let mut bytes = Vec::new();
        for segment in &file.segments {
            bytes.extend(std::fs::read(segment).unwrap());
        }
        let blocks = bytes.len() / BLCKSZ;
        if file.fork == "fsm" {
            skipped_fsm += blocks;
            continue;
        }
        if file.fork == "main" && unlogged_rels.contains(&(file.db, file.rel)) {
            skipped_unlogged += blocks;
            continue;
        }
        let kind = match file.fork {
            "main" => kinds
                .get(&(file.db, file.rel))
                .copied()
                .unwrap_or(PageKind::Other),
            _ => PageKind::Other,
        };
        for blk in 0..blocks {
            let mut disk = bytes[blk * BLCKSZ..(blk + 1) * BLCKSZ].to_vec();
            let mut served = getpage(cluster, lsn, file, blk);
            let served_checksum = u16::from_le_bytes([served[8], served[9]]);
            if served.iter().any(|b| *b != 0) {
                assert_eq!(
                    served_checksum,
                    postgres_wal::checksum::pg_checksum_page(
                        served.as_slice().try_into().unwrap(),
                        blk as u32
                    ),
                    "the pageserver's page {}/{}/{} {} {blk} has a wrong checksum",
                    file.spc,
                    file.db,
                    file.rel,
                    file.fork
                );
            }
            if disk != served {
                masked_differences += 1;
            }
            // A page PostgreSQL writes to disk itself before WAL-logging it (an index
            // build's init fork, `log_newpage` after `smgrwrite`) keeps pd_lsn 0 on the
            // primary; replaying the record stamps it, as on any standby.
            if disk[..8] == [0; 8] {
                served[..8].fill(0);
            }
            mask(&mut disk, kind, blk);
            mask(&mut served, kind, blk);
            assert!(
                disk == served,
                "page {}/{}/{} {} block {blk} ({kind:?}) differs at {lsn}: first byte {}",
                file.spc,
                file.db,
                file.rel,
                file.fork,
                disk.iter().zip(&served).position(|(a, b)| a != b).unwrap()
            );
            compared += 1;
        }
    }
    eprintln!(
        "compared {compared} pages at {lsn} ({masked_differences} equal only after masking); \
         skipped {skipped_fsm} FSM pages (never WAL-logged) and {skipped_unlogged} pages of \
         unlogged relations' main forks (their init forks were compared) ({:?})",
        t.elapsed()
    );
    assert!(compared > 500, "too few pages compared: {compared}");
}

fn standby_replays_new_commits(cluster: &TestCluster, bin: &PgBin, connstr: &str) {
    let t = Instant::now();
    let status = cluster.status();
    let sk_port = status["safekeepers"][0]["pg_port"].as_u64().unwrap();
    let conninfo = format!("host=127.0.0.1 port={sk_port} user=postgres application_name=standby");
    let standby = start_from_basebackup(
        cluster,
        None,
        true,
        &[
            ("primary_conninfo", conninfo.as_str()),
            ("hot_standby", "on"),
        ],
    );
    sql(
        bin,
        connstr,
        "CREATE TABLE after_standby (x int); INSERT INTO after_standby SELECT generate_series(1, 100);",
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let out = psql(
            bin,
            &standby.connstr(),
            "SELECT count(*) FROM after_standby",
        );
        if out.success && out.stdout == "100" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not replay the new commits: {} {}\n{}",
            out.stdout,
            out.stderr,
            standby.log_contents().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("standby replayed new commits ({:?})", t.elapsed());
}
