//! Helpers shared by the integration tests: the `strata` binary, WAL workloads, and
//! `pg_waldump` output parsed for comparison.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pg_harness::{PgConfig, PgServer};
use postgres_wal::decoder::WalStreamDecoder;
use postgres_wal::page_header::WalPageHeader;
use postgres_wal::record::DecodedRecord;
use postgres_wal::WalSegmentSize;

/// The `strata` binary built beside this test (`cargo build --bins` builds it).
pub fn strata_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let bin = profile_dir.join("strata");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` before the tests",
        bin.display()
    );
    bin
}

pub fn run_strata(args: &[&str]) -> Output {
    Command::new(strata_bin())
        .args(args)
        .output()
        .expect("run strata")
}

/// A stopped server whose WAL holds the every-rmgr workload.
pub struct EveryRmgrRun {
    pub server: PgServer,
    /// The database created with `STRATEGY wal_log`: its pages exist only as WAL images
    /// and were never touched after, so its files on disk are what those images say.
    pub wal_logged_db: u32,
}

/// Start a server with data checksums and the given settings, run the every-rmgr
/// workload, and stop it cleanly so its WAL ends with a shutdown checkpoint.
pub fn server_with_every_rmgr(settings: &[(&str, &str)]) -> EveryRmgrRun {
    let mut config = PgConfig::new()
        .data_checksums(true)
        .setting("wal_keep_size", "1GB")
        .setting("max_prepared_transactions", "5")
        .setting("track_commit_timestamp", "on")
        .setting("synchronous_commit", "off");
    for (name, value) in settings {
        config = config.setting(*name, *value);
    }
    let mut server = PgServer::start(config).expect("start PostgreSQL");
    let tablespace = server.base_dir().join("tablespace");
    std::fs::create_dir(&tablespace).expect("create tablespace directory");
    server
        .bin()
        .chown_to_server_user(&tablespace)
        .expect("chown tablespace directory");
    let workload = include_str!("../../sql/every_rmgr.sql")
        .replace("@TABLESPACE_DIR@", &tablespace.display().to_string());
    server.sql(&workload).expect("run the every-rmgr workload");
    let wal_logged_db = server
        .sql("SELECT oid FROM pg_database WHERE datname = 'logged_db'")
        .expect("query database oid")
        .trim()
        .parse()
        .expect("database oid");
    server.stop().expect("stop PostgreSQL");
    EveryRmgrRun {
        server,
        wal_logged_db,
    }
}

/// Decode every record of `segments` with the library, calling `each` on each one.
pub fn for_each_record(segments: &[PathBuf], mut each: impl FnMut(&DecodedRecord)) {
    let first = std::fs::read(&segments[0]).expect("read first segment");
    let start = WalPageHeader::parse(&first)
        .expect("first page header")
        .page_address;
    let mut decoder = WalStreamDecoder::new(start, WalSegmentSize::DEFAULT);
    for segment in segments {
        decoder.feed(&std::fs::read(segment).expect("read segment"));
        loop {
            match decoder.poll() {
                Ok(Some(record)) => each(&record),
                Ok(None) => break,
                Err(e) if e.is_end_of_wal() => return,
                Err(e) => panic!("decoding {}: {e}", segment.display()),
            }
        }
    }
}

/// One block reference as `pg_waldump -b` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaldumpBlock {
    pub block_id: u64,
    pub rel: String,
    pub fork: String,
    pub blk: u64,
    pub has_image: bool,
    pub apply_image: bool,
}

/// One record as `pg_waldump -b` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaldumpRecord {
    pub rmgr: String,
    pub total_len: u64,
    pub xid: u64,
    pub lsn: u64,
    pub prev: u64,
    pub info: String,
    pub blocks: Vec<WaldumpBlock>,
}

pub fn parse_lsn(s: &str) -> u64 {
    pg_harness::parse_lsn(s).unwrap_or_else(|e| panic!("bad LSN {s:?}: {e}"))
}

/// Run `pg_waldump -b` over the segments from `first` to `last` and parse every record.
pub fn pg_waldump(server: &PgServer, first: &Path, last: &Path) -> Vec<WaldumpRecord> {
    let output = Command::new(server.bin().path("pg_waldump"))
        .arg("-b")
        .arg(first)
        .arg(last)
        .output()
        .expect("run pg_waldump");
    parse_pg_waldump(&String::from_utf8_lossy(&output.stdout))
}

fn field<'a>(line: &'a str, after: &str, until: &str) -> &'a str {
    let start = line
        .find(after)
        .unwrap_or_else(|| panic!("no {after:?} in {line:?}"))
        + after.len();
    let rest = &line[start..];
    rest[..rest.find(until).unwrap_or(rest.len())].trim()
}

pub fn parse_pg_waldump(text: &str) -> Vec<WaldumpRecord> {
    let mut records: Vec<WaldumpRecord> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("rmgr: ") {
            let desc = field(line, "desc: ", "\u{0}");
            let info = if desc.starts_with("UNKNOWN (") {
                desc[..desc.find(')').map_or(desc.len(), |i| i + 1)].to_string()
            } else {
                desc.split_whitespace().next().unwrap_or("").to_string()
            };
            records.push(WaldumpRecord {
                rmgr: rest.split_whitespace().next().unwrap_or("").to_string(),
                total_len: field(line, "len (rec/tot):", ",")
                    .split('/')
                    .nth(1)
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap(),
                xid: field(line, "tx:", ",").parse().unwrap(),
                lsn: parse_lsn(field(line, "lsn: ", ",")),
                prev: parse_lsn(field(line, "prev ", ",")),
                info,
                blocks: Vec::new(),
            });
        } else if let Some(rest) = line.trim_start().strip_prefix("blkref #") {
            let record = records.last_mut().expect("blkref before any record");
            let has_image = rest.contains("(FPW");
            record.blocks.push(WaldumpBlock {
                block_id: rest[..rest.find(':').unwrap()].parse().unwrap(),
                rel: field(rest, "rel ", " ").to_string(),
                fork: field(rest, "fork ", " ").to_string(),
                blk: field(rest, "blk ", " ")
                    .trim_end_matches(';')
                    .parse()
                    .unwrap(),
                has_image,
                apply_image: has_image && !rest.contains("for WAL verification"),
            });
        }
    }
    records
}

/// Every record `strata wal dump --json` prints for `paths`, as JSON values.
pub fn strata_dump_json(paths: &[&Path]) -> Vec<serde_json::Value> {
    let mut args = vec!["wal", "dump", "--json"];
    let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let output = run_strata(&args);
    assert!(
        output.status.success(),
        "strata wal dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}")))
        .collect()
}
