//! Crash tests of timeline storage: a child process (this test binary, re-executed)
//! writes real PostgreSQL 15 WAL into a timeline, flushes some of it (what the
//! acceptor would acknowledge), then dies at a failpoint (`STRATA_FAILPOINTS`,
//! `std::process::abort`). The parent reopens the timeline and proves it opens
//! cleanly, the acknowledged WAL is intact byte for byte and decodes, the flush LSN
//! is at least the acknowledged LSN, and appends continue at the right place.
//!
//! The WAL comes from a real server with 1 MiB segments (`pg_harness`), generated
//! once per run by the parent and handed to children as a file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;

use consensus::storage::{AcceptorStorage, PersistentState};
use consensus::term_history::{Term, TermHistory, TermSwitch};
use pg_harness::{parse_lsn, PgConfig, PgServer};
use postgres_wal::decoder::WalStreamDecoder;
use postgres_wal::{Lsn, WalSegmentSize};
use safekeeper::storage::{
    remove_incomplete_creations, StorageError, TimelineStorage, CONTROL_FILE_NAME,
};
use strata_ids::TenantTimelineId;

const MIB: u64 = 1 << 20;
/// Which scenario the child runs; unset in the parent.
const SCENARIO_ENV: &str = "STRATA_STORAGE_CRASH_SCENARIO";
/// The timeline's parent directory, for the child.
const DIR_ENV: &str = "STRATA_STORAGE_CRASH_DIR";
/// The WAL stream file, for the child.
const WAL_ENV: &str = "STRATA_STORAGE_CRASH_WAL";
/// What the child writes before crashing: the LSN it saw acknowledged (flushed).
const ACKED_FILE: &str = "acked";
const SIGABRT: i32 = 6;
/// Appends of this size, as a proposer sends them (not aligned to records).
const APPEND_BYTES: usize = 100_000;

fn segment_size() -> WalSegmentSize {
    WalSegmentSize::new(MIB).unwrap()
}

/// A stretch of real WAL and its record boundaries.
struct Stream {
    start: Lsn,
    bytes: Vec<u8>,
    records: Vec<(Lsn, Lsn)>,
}

impl Stream {
    /// Decode `bytes` (WAL from `start`, a segment start) and keep it up to the end of
    /// its last complete record.
    fn new(start: Lsn, mut bytes: Vec<u8>) -> Stream {
        let mut decoder = WalStreamDecoder::new(start, segment_size());
        decoder.feed(&bytes);
        let mut records = Vec::new();
        while let Ok(Some(record)) = decoder.poll() {
            records.push((record.lsn, record.end_lsn));
        }
        let end = records.last().expect("the WAL holds records").1;
        bytes.truncate((end.0 - start.0) as usize);
        Stream {
            start,
            bytes,
            records,
        }
    }

    /// File format: the start LSN (8 bytes, little-endian), then the WAL.
    fn load(path: &Path) -> Stream {
        let file = fs::read(path).unwrap();
        let (start, bytes) = file.split_at(8);
        Stream::new(
            Lsn(u64::from_le_bytes(start.try_into().unwrap())),
            bytes.to_vec(),
        )
    }

    fn end(&self) -> Lsn {
        Lsn(self.start.0 + self.bytes.len() as u64)
    }

    fn slice(&self, from: Lsn, to: Lsn) -> &[u8] {
        &self.bytes[(from.0 - self.start.0) as usize..(to.0 - self.start.0) as usize]
    }

    /// The end of the last record ending at or before `lsn`.
    fn record_end_at_or_before(&self, lsn: Lsn) -> Lsn {
        self.records
            .iter()
            .rev()
            .map(|&(_, end)| end)
            .find(|&end| end <= lsn)
            .unwrap_or(self.start)
    }

    /// A record start inside the first segment, away from its start: where a timeline
    /// that begins mid-segment starts.
    fn mid_segment_record_start(&self) -> Lsn {
        self.records
            .iter()
            .map(|&(start, _)| start)
            .find(|start| start.0 > self.start.0 + 100_000)
            .unwrap()
    }
}

/// Real WAL from a PostgreSQL 15 server with 1 MiB segments: about 4.5 MiB of
/// inserts, full-page images after a checkpoint, updates and commits, crossing four
/// segment boundaries, written to a file children can read.
fn real_wal() -> &'static (tempfile::TempDir, PathBuf) {
    static WAL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    WAL.get_or_init(|| {
        let mut server = PgServer::start(
            PgConfig::new()
                .wal_segment_size_mb(1)
                // Keep every segment of the workload in pg_wal through its checkpoint.
                .setting("wal_keep_size", "64MB")
                .setting("max_wal_size", "1GB"),
        )
        .unwrap();
        server.sql("CREATE TABLE t (id int, v text)").unwrap();
        let start = Lsn(parse_lsn(&server.current_wal_lsn().unwrap()).unwrap());
        for batch in 0..6 {
            server
                .sql(&format!(
                    "INSERT INTO t SELECT g, repeat(md5(g::text), 25) \
                     FROM generate_series({}, {}) g",
                    batch * 1000,
                    batch * 1000 + 999
                ))
                .unwrap();
        }
        server.checkpoint().unwrap();
        server
            .sql("UPDATE t SET v = 'x' || v WHERE id % 5 = 0")
            .unwrap();
        let end = Lsn(parse_lsn(&server.current_wal_lsn().unwrap()).unwrap());
        server.stop().unwrap();
        let size = segment_size();
        let first = start.segment_number(size);
        let mut bytes = Vec::new();
        for number in first..=end.segment_number(size) {
            let name = size.file_name(1, number);
            bytes.extend(fs::read(server.wal_dir().join(name)).unwrap());
        }
        let segment_start = Lsn(first * MIB);
        bytes.truncate((end.0 - segment_start.0) as usize);
        let stream = Stream::new(segment_start, bytes);
        assert!(
            stream.end().0 - stream.start.0 > 4 * MIB,
            "workload too small"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.bin");
        let mut file = stream.start.0.to_le_bytes().to_vec();
        file.extend_from_slice(&stream.bytes);
        fs::write(&path, file).unwrap();
        (dir, path)
    })
}

fn new_state(start: Lsn) -> PersistentState {
    PersistentState {
        id: TenantTimelineId {
            tenant_id: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            timeline_id: "00000000000000000000000000000002".parse().unwrap(),
        },
        system_id: 1,
        pg_version: 150_000,
        wal_segment_size: MIB as u32,
        timeline_start_lsn: start,
        term: Term(0),
        term_history: TermHistory(vec![TermSwitch {
            term: Term(0),
            lsn: start,
        }]),
        commit_lsn: start,
        peer_horizon_lsn: start,
    }
}

fn timeline_dir(parent: &Path) -> PathBuf {
    parent.join("timeline")
}

// ---------------------------------------------------------------------------------
// The child side.

/// Entry point of the child processes. Run by the test harness directly (without
/// `STRATA_STORAGE_CRASH_SCENARIO`) it only checks that no failpoint is armed there.
#[test]
fn crash_child_entry() {
    let Ok(scenario) = std::env::var(SCENARIO_ENV) else {
        assert!(std::env::var("STRATA_FAILPOINTS").is_err());
        return;
    };
    let parent = PathBuf::from(std::env::var(DIR_ENV).unwrap());
    let stream = Stream::load(Path::new(&std::env::var(WAL_ENV).unwrap()));
    let dir = timeline_dir(&parent);
    let acked = |lsn: Lsn| fs::write(parent.join(ACKED_FILE), lsn.0.to_string()).unwrap();
    match scenario.as_str() {
        "append-through-segments" => {
            let mut storage = TimelineStorage::create(&dir, new_state(stream.start)).unwrap();
            append(&mut storage, &stream, stream.end(), &acked);
        }
        "truncate" => {
            let start = stream.mid_segment_record_start();
            let mut storage = TimelineStorage::create(&dir, new_state(start)).unwrap();
            append(&mut storage, &stream, stream.end(), &acked);
            let (commit, cut) = truncation_points(&stream);
            let mut state = storage.state().clone();
            state.commit_lsn = commit;
            storage.persist(&state).unwrap();
            acked(cut);
            storage.truncate_wal(cut).unwrap();
        }
        "persist" => {
            let mut storage = TimelineStorage::create(&dir, new_state(stream.start)).unwrap();
            append(&mut storage, &stream, Lsn(stream.start.0 + MIB / 2), &acked);
            let mut state = storage.state().clone();
            state.term = Term(5);
            storage.persist(&state).unwrap();
            state.term = Term(6);
            storage.persist(&state).unwrap();
        }
        "create" => {
            TimelineStorage::create(&dir, new_state(stream.start)).unwrap();
        }
        "unflushed-tail" => {
            let mut storage = TimelineStorage::create(&dir, new_state(stream.start)).unwrap();
            let acked_at = Lsn(stream.start.0 + 2 * MIB + 12_345);
            append(&mut storage, &stream, acked_at, &acked);
            // Written, never flushed: whole records and then part of one.
            let torn = Lsn(stream.record_end_at_or_before(Lsn(acked_at.0 + 300_000)).0 + 20);
            let lsn = storage.write_lsn();
            storage.write_wal(lsn, stream.slice(lsn, torn)).unwrap();
            std::process::abort();
        }
        "disk-full" => {
            let mut storage = TimelineStorage::create(&dir, new_state(stream.start)).unwrap();
            let error = storage
                .write_wal(
                    stream.start,
                    stream.slice(stream.start, Lsn(stream.start.0 + 8192)),
                )
                .unwrap_err();
            assert!(error.is_disk_full(), "{error}");
            fs::write(parent.join("error"), error.to_string()).unwrap();
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// Append `stream` up to `to` in `APPEND_BYTES` pieces, flushing after each and
/// recording the flush LSN as acknowledged before the next append.
fn append(storage: &mut TimelineStorage, stream: &Stream, to: Lsn, acked: &dyn Fn(Lsn)) {
    let mut lsn = storage.write_lsn();
    while lsn < to {
        let next = Lsn((lsn.0 + APPEND_BYTES as u64).min(to.0));
        storage.write_wal(lsn, stream.slice(lsn, next)).unwrap();
        storage.flush_wal().unwrap();
        acked(storage.flush_lsn());
        lsn = next;
    }
}

/// The commit LSN (in the first segment) and the truncation point (in the second)
/// of the truncation scenario.
fn truncation_points(stream: &Stream) -> (Lsn, Lsn) {
    let commit = stream.record_end_at_or_before(Lsn(stream.start.0 + MIB / 2));
    let cut = stream.record_end_at_or_before(Lsn(stream.start.0 + MIB + MIB / 3));
    (commit, cut)
}

// ---------------------------------------------------------------------------------
// The parent side.

/// Run the child `scenario` with `failpoints` armed; its exit status.
fn run_child(scenario: &str, parent: &Path, failpoints: &str) -> ExitStatus {
    let (_, wal) = real_wal();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO_ENV, scenario)
        .env(DIR_ENV, parent)
        .env(WAL_ENV, wal)
        .env("STRATA_FAILPOINTS", failpoints)
        .output()
        .unwrap();
    eprintln!(
        "child {scenario} ({failpoints}): {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.status
}

fn crash(scenario: &str, failpoint: &str) -> (tempfile::TempDir, Stream) {
    let parent = tempfile::tempdir().unwrap();
    let status = run_child(scenario, parent.path(), failpoint);
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "the child must die at {failpoint}: {status}"
    );
    (parent, Stream::load(&real_wal().1))
}

fn acked(parent: &Path) -> Lsn {
    Lsn(fs::read_to_string(parent.join(ACKED_FILE))
        .unwrap()
        .parse()
        .unwrap())
}

/// Everything a reopened timeline must satisfy; returns it reopened. `exact` is the
/// flush LSN it must have when the crash leaves only one correct answer.
fn verify(parent: &Path, stream: &Stream, exact: Option<Lsn>) -> TimelineStorage {
    let dir = timeline_dir(parent);
    let acked = acked(parent);
    let mut storage = TimelineStorage::open(&dir).unwrap();
    let start = storage.state().timeline_start_lsn;
    let flushed = storage.flush_lsn();
    assert!(
        flushed >= acked,
        "flush LSN {flushed} below the acknowledged {acked}"
    );
    if let Some(exact) = exact {
        assert_eq!(flushed, exact);
    }
    assert_eq!(storage.write_lsn(), flushed);
    assert!(flushed == start || stream.records.iter().any(|&(_, end)| end == flushed));
    // The stored WAL is the stream, byte for byte, and decodes to its end.
    let mut stored = vec![0u8; (flushed.0 - start.0) as usize];
    storage.reader().read_exact(start, &mut stored).unwrap();
    assert!(stored == stream.slice(start, flushed), "stored WAL differs");
    let mut decoder = WalStreamDecoder::new(start, segment_size());
    decoder.feed(&stored);
    let mut last_end = start;
    while let Some(record) = decoder.poll().unwrap() {
        last_end = record.end_lsn;
    }
    assert!(flushed == start || last_end == flushed);
    check_files(&dir, flushed);
    // Appends continue exactly there, to the end of the stream.
    let mut lsn = flushed;
    while lsn < stream.end() {
        let next = Lsn((lsn.0 + APPEND_BYTES as u64).min(stream.end().0));
        storage.write_wal(lsn, stream.slice(lsn, next)).unwrap();
        lsn = next;
    }
    storage.flush_wal().unwrap();
    assert_eq!(storage.flush_lsn(), stream.end());
    drop(storage);
    let storage = TimelineStorage::open(&dir).unwrap();
    assert_eq!(storage.flush_lsn(), stream.end());
    let mut all = vec![0u8; (stream.end().0 - start.0) as usize];
    storage.reader().read_exact(start, &mut all).unwrap();
    assert!(all == stream.slice(start, stream.end()));
    check_files(&dir, stream.end());
    storage
}

/// Full-size segment files, the one holding `end` named `.partial` and no later one,
/// no temporary files.
fn check_files(dir: &Path, end: Lsn) {
    let size = segment_size();
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != CONTROL_FILE_NAME)
        .collect();
    names.sort();
    let last = names.pop().unwrap();
    assert_eq!(
        last,
        format!("{}.partial", size.file_name(1, end.segment_number(size)))
    );
    for name in &names {
        assert!(
            size.parse_file_name(name).is_some() && !name.ends_with(".partial"),
            "{name}"
        );
    }
    for name in names.iter().chain([&last]) {
        assert_eq!(fs::metadata(dir.join(name)).unwrap().len(), MIB, "{name}");
    }
}

#[test]
fn crash_before_renaming_a_finished_segment() {
    let (parent, stream) = crash("append-through-segments", "segment-switch-before-rename");
    // The child died writing across the first boundary: what it acknowledged is in
    // the first segment, and the finished segment was synced before the crash.
    assert!(acked(parent.path()).0 < stream.start.0 + MIB);
    let synced_to_boundary = stream.record_end_at_or_before(Lsn(stream.start.0 + MIB));
    verify(parent.path(), &stream, Some(synced_to_boundary));
}

#[test]
fn crash_after_renaming_a_finished_segment() {
    let (parent, stream) = crash("append-through-segments", "segment-switch-after-rename");
    let synced_to_boundary = stream.record_end_at_or_before(Lsn(stream.start.0 + MIB));
    verify(parent.path(), &stream, Some(synced_to_boundary));
}

#[test]
fn crash_while_pre_allocating_the_next_segment() {
    let (parent, stream) = crash(
        "append-through-segments",
        "segment-preallocate-before-rename",
    );
    assert!(fs::read_dir(timeline_dir(parent.path())).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
    let synced_to_boundary = stream.record_end_at_or_before(Lsn(stream.start.0 + MIB));
    verify(parent.path(), &stream, Some(synced_to_boundary));
}

#[test]
fn crash_after_zeroing_the_truncated_tail() {
    let (parent, stream) = crash("truncate", "truncate-after-zero");
    let (commit, cut) = truncation_points(&stream);
    let storage = verify(parent.path(), &stream, Some(cut));
    assert_eq!(storage.state().commit_lsn, commit);
}

#[test]
fn crash_before_removing_the_truncated_segments() {
    let (parent, stream) = crash("truncate", "truncate-before-remove");
    let (_, cut) = truncation_points(&stream);
    verify(parent.path(), &stream, Some(cut));
}

#[test]
fn crash_after_writing_the_new_control_file_under_its_temporary_name() {
    let (parent, stream) = crash("persist", "control-file-after-temp-write@2");
    assert!(timeline_dir(parent.path())
        .join(format!("{CONTROL_FILE_NAME}.tmp"))
        .exists());
    let storage = verify(parent.path(), &stream, None);
    assert_eq!(storage.state().term, Term(5));
}

#[test]
fn crash_after_renaming_the_new_control_file() {
    let (parent, stream) = crash("persist", "control-file-after-rename@2");
    let storage = verify(parent.path(), &stream, None);
    assert_eq!(storage.state().term, Term(6));
}

#[test]
fn crash_while_creating_a_timeline_leaves_no_timeline() {
    let parent = tempfile::tempdir().unwrap();
    let status = run_child("create", parent.path(), "create-timeline-before-rename");
    assert_eq!(status.signal(), Some(SIGABRT), "{status}");
    let dir = timeline_dir(parent.path());
    assert!(matches!(
        TimelineStorage::open(&dir),
        Err(StorageError::TimelineNotFound(_))
    ));
    assert_eq!(
        remove_incomplete_creations(parent.path()).unwrap(),
        [parent.path().join("timeline.tmp")]
    );
    // Creating it again works (and would also have removed the leftover itself).
    let stream = Stream::load(&real_wal().1);
    TimelineStorage::create(&dir, new_state(stream.start)).unwrap();
    fs::write(parent.path().join(ACKED_FILE), stream.start.0.to_string()).unwrap();
    verify(parent.path(), &stream, Some(stream.start));
}

#[test]
fn crash_with_written_but_unflushed_wal() {
    let (parent, stream) = crash("unflushed-tail", "");
    // After a process crash the page cache keeps what was written: every complete
    // record is found (and synced by open); the torn one is cut.
    let acked = acked(parent.path());
    let written_records_end = stream.record_end_at_or_before(Lsn(stream
        .record_end_at_or_before(Lsn(stream.start.0 + 2 * MIB + 12_345 + 300_000))
        .0));
    assert!(written_records_end > acked);
    verify(parent.path(), &stream, Some(written_records_end));
}

#[test]
fn a_full_disk_is_reported_as_such_in_a_real_process() {
    let parent = tempfile::tempdir().unwrap();
    let status = run_child("disk-full", parent.path(), "wal-write=enospc");
    assert!(status.success(), "{status}");
    let error = fs::read_to_string(parent.path().join("error")).unwrap();
    assert!(error.starts_with("disk full: "), "{error}");
    let stream = Stream::load(&real_wal().1);
    fs::write(parent.path().join(ACKED_FILE), stream.start.0.to_string()).unwrap();
    verify(parent.path(), &stream, Some(stream.start));
}
