//! Benchmark (not a test): appends per second and MB/s into one safekeeper timeline
//! with fsync on, against what `pg_test_fsync` says the same disk can do, in one run.
//!
//! The safekeeper's real acceptor and real storage run in process, fed real WAL that
//! PostgreSQL 15 wrote under pgbench. Two shapes of append:
//! - commit-sized: everything up to and including one COMMIT record, then a flush and
//!   its AppendResponse, as a compute's synchronous commit drives it;
//! - large: 128 KiB appends, each flushed, as a catching-up stream would be.
//!
//! Run with `cargo bench -p safekeeper --bench append`. Environment:
//! `STRATA_BENCH_TRANSACTIONS` (pgbench transactions, default 3000),
//! `STRATA_BENCH_DIR` (where the timeline lives, default the system temp dir: put it
//! on the disk you want to measure).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use consensus::acceptor::Acceptor;
use consensus::messages::{
    AppendRequest, ProposerElected, ProposerGreeting, ProposerId, ProposerMessage, VoteRequest,
};
use consensus::storage::PersistentState;
use consensus::term_history::{Term, TermHistory, TermSwitch};
use pg_harness::{PgConfig, PgServer};
use postgres_wal::decoder::WalStreamDecoder;
use postgres_wal::rmgr::{xact, RmgrId};
use postgres_wal::{Lsn, WalSegmentSize};
use safekeeper::storage::TimelineStorage;
use strata_ids::{NodeId, TenantId, TenantTimelineId, TimelineId};

const LARGE_APPEND_BYTES: usize = 128 * 1024;
const PG_VERSION: u32 = 150_000;

/// Real WAL: whole segments from a segment start, and where each commit record ends.
struct Wal {
    start: Lsn,
    bytes: Vec<u8>,
    commit_ends: Vec<Lsn>,
    end: Lsn,
    system_id: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn generate_wal() -> Wal {
    let mut server =
        PgServer::start(PgConfig::new().setting("wal_keep_size", "4GB")).expect("start PostgreSQL");
    let transactions = env_u64("STRATA_BENCH_TRANSACTIONS", 3000);
    let pgbench = |args: &[&str]| {
        let status = server
            .bin()
            .command("pgbench")
            .args(["-h", &server.socket_dir().display().to_string()])
            .args(["-p", &server.port().to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .output()
            .expect("run pgbench");
        assert!(
            status.status.success(),
            "pgbench: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    };
    pgbench(&["-i", "-q", "-s", "1"]);
    // Measure only the transactions' WAL, from the start of a fresh segment.
    server.sql("SELECT pg_switch_wal()").expect("switch");
    let start_text = server.current_wal_lsn().expect("lsn");
    pgbench(&["-n", "-c", "2", "-t", &(transactions / 2).to_string()]);
    let system_id: u64 = server
        .sql("SELECT system_identifier FROM pg_control_system()")
        .expect("system id")
        .trim()
        .parse()
        .expect("system id number");
    server.stop().expect("stop");
    let segment_size = WalSegmentSize::DEFAULT;
    let start_lsn: Lsn = start_text.trim().parse().expect("LSN");
    let start = segment_size
        .segment_start(start_lsn.segment_number(segment_size))
        .expect("segment");
    let mut bytes = Vec::new();
    for path in server.wal_segments().expect("segments") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (_, number) = segment_size.parse_file_name(&name).expect("segment name");
        if number >= start.segment_number(segment_size) {
            bytes.extend_from_slice(&std::fs::read(&path).expect("read segment"));
        }
    }
    let mut decoder = WalStreamDecoder::new(start, segment_size);
    decoder.feed(&bytes);
    let mut commit_ends = Vec::new();
    let mut end = start;
    while let Ok(Some(record)) = decoder.poll() {
        end = record.end_lsn;
        let info = record.rmgr_info() & xact::XLOG_XACT_OPMASK;
        if record.rmid() == RmgrId::XACT && info == xact::COMMIT {
            commit_ends.push(record.end_lsn);
        }
    }
    bytes.truncate((end.0 - start.0) as usize);
    Wal {
        start,
        bytes,
        commit_ends,
        end,
        system_id,
    }
}

/// A fresh timeline with an elected proposer at term 1, ready for appends.
fn elected_acceptor(dir: &Path, wal: &Wal) -> Acceptor<TimelineStorage> {
    let id = TenantTimelineId {
        tenant_id: TenantId(1),
        timeline_id: TimelineId(2),
    };
    let state = PersistentState::new(id, wal.system_id, PG_VERSION, 16 << 20, wal.start);
    let storage = TimelineStorage::create(&dir.join("timeline"), state).expect("create timeline");
    let mut acceptor = Acceptor::new(NodeId(1), storage).expect("acceptor");
    let greeting = ProposerGreeting {
        id,
        proposer_id: ProposerId(7),
        system_id: wal.system_id,
        pg_version: PG_VERSION,
        wal_segment_size: 16 << 20,
    };
    acceptor
        .handle(ProposerMessage::Greeting(greeting))
        .expect("greeting");
    acceptor
        .handle(ProposerMessage::VoteRequest(VoteRequest { term: Term(1) }))
        .expect("vote");
    let mut history = TermHistory::new(wal.start);
    history.0.push(TermSwitch {
        term: Term(1),
        lsn: wal.start,
    });
    let elected = ProposerElected {
        term: Term(1),
        start_streaming_at: wal.start,
        term_history: history,
    };
    acceptor
        .handle(ProposerMessage::Elected(elected))
        .expect("elected");
    acceptor
}

/// Append the WAL up to each of `flush_points`, flushing (one fsync and one
/// AppendResponse) at each; appends larger than the protocol's limit are split.
/// Returns (flushes, seconds).
fn run(dir: &Path, wal: &Wal, flush_points: &[Lsn]) -> (usize, f64) {
    let mut acceptor = elected_acceptor(dir, wal);
    let started = Instant::now();
    let mut begin = wal.start;
    for &flush_at in flush_points {
        while begin < flush_at {
            let end = Lsn(flush_at.0.min(begin.0 + LARGE_APPEND_BYTES as u64));
            append(&mut acceptor, wal, begin, end);
            begin = end;
        }
        acceptor.flush().expect("flush").expect("an AppendResponse");
    }
    assert_eq!(acceptor.flush_lsn(), wal.end, "everything flushed");
    (flush_points.len(), started.elapsed().as_secs_f64())
}

fn append(acceptor: &mut Acceptor<TimelineStorage>, wal: &Wal, begin: Lsn, end: Lsn) {
    {
        let slice = &wal.bytes[(begin.0 - wal.start.0) as usize..(end.0 - wal.start.0) as usize];
        let request = AppendRequest {
            term: Term(1),
            begin_lsn: begin,
            end_lsn: end,
            commit_lsn: begin,
            truncate_lsn: wal.start,
            wal: slice.to_vec(),
        };
        acceptor
            .handle(ProposerMessage::Append(request))
            .expect("append");
    }
}

fn large_cuts(wal: &Wal) -> Vec<Lsn> {
    let mut cuts: Vec<Lsn> = (1..)
        .map(|i| Lsn(wal.start.0 + (i * LARGE_APPEND_BYTES) as u64))
        .take_while(|lsn| *lsn < wal.end)
        .collect();
    cuts.push(wal.end);
    cuts
}

/// `pg_test_fsync`'s fdatasync rate (ops/s) for one 8 kB write, on a file in `dir`.
fn pg_test_fsync(dir: &Path) -> Option<f64> {
    let bin = pg_harness::PgBin::locate().ok()?;
    let output = std::process::Command::new(bin.path("pg_test_fsync"))
        .args(["-s", "2", "-f"])
        .arg(dir.join("pg_test_fsync.out"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("fdatasync"))?;
    line.split_whitespace().find_map(|w| w.parse::<f64>().ok())
}

fn main() {
    let base = std::env::var("STRATA_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    eprintln!("generating WAL with pgbench ...");
    let wal = generate_wal();
    let mut commit_cuts = wal.commit_ends.clone();
    if commit_cuts.last() != Some(&wal.end) {
        commit_cuts.push(wal.end);
    }
    let fsync_rate = {
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        pg_test_fsync(dir.path())
    };
    println!("safekeeper append benchmark: real acceptor + real storage, fsync on");
    println!(
        "WAL: {:.1} MB from {} to {}, {} commits",
        wal.bytes.len() as f64 / 1e6,
        wal.start,
        wal.end,
        wal.commit_ends.len()
    );
    match fsync_rate {
        Some(rate) => println!("pg_test_fsync, same disk: fdatasync {rate:.0} ops/s"),
        None => println!("pg_test_fsync: not available"),
    }
    println!(
        "{:<14} {:>9} {:>10} {:>11} {:>8} {:>16}",
        "append", "appends", "seconds", "appends/s", "MB/s", "vs fdatasync/s"
    );
    for (name, cuts) in [("commit-sized", commit_cuts), ("128 KiB", large_cuts(&wal))] {
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        let (appends, secs) = run(dir.path(), &wal, &cuts);
        let rate = appends as f64 / secs;
        let ratio = fsync_rate.map_or("-".to_string(), |f| format!("{:.2}x", rate / f));
        println!(
            "{:<14} {:>9} {:>10.3} {:>11.0} {:>8.1} {:>16}",
            name,
            appends,
            secs,
            rate,
            wal.bytes.len() as f64 / 1e6 / secs,
            ratio
        );
    }
}
