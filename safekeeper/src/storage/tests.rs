//! Unit tests of timeline storage through its public API (plus thread-armed
//! failpoints), on synthetic WAL with 1 MiB segments and on a real PostgreSQL fixture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io;
use std::path::Path;

use consensus::storage::{AcceptorStorage, PersistentState};
use consensus::term_history::{Term, TermHistory, TermSwitch};
use postgres_wal::decoder::WalStreamDecoder;
use postgres_wal::{Lsn, WalSegmentSize};
use strata_ids::TenantTimelineId;

use super::failpoint::arm_in_this_thread;
use super::test_wal::{TestWal, SYSTEM_ID};
use super::*;

const MIB: u64 = 1 << 20;

fn size() -> WalSegmentSize {
    WalSegmentSize::new(MIB).unwrap()
}

fn new_state(start: Lsn) -> PersistentState {
    PersistentState {
        id: TenantTimelineId {
            tenant_id: "0123456789abcdef0123456789abcdef".parse().unwrap(),
            timeline_id: "00000000000000000000000000000001".parse().unwrap(),
        },
        system_id: SYSTEM_ID,
        pg_version: 150_018,
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

/// A new timeline in a fresh temporary directory, and WAL of `len` bytes for it
/// starting at segment 1.
fn setup(len: u64) -> (tempfile::TempDir, TimelineStorage, TestWal) {
    let wal = TestWal::with_records(Lsn(MIB), size(), len, 20_000);
    let parent = tempfile::tempdir().unwrap();
    let storage = TimelineStorage::create(&parent.path().join("tl"), new_state(wal.start)).unwrap();
    (parent, storage, wal)
}

/// Append `wal` from the storage's write LSN up to `to` in `chunk`-byte appends,
/// flushing after each.
fn append(storage: &mut TimelineStorage, wal: &TestWal, to: Lsn, chunk: usize) {
    let mut lsn = storage.write_lsn();
    for piece in wal.slice(lsn, to).chunks(chunk) {
        storage.write_wal(lsn, piece).unwrap();
        storage.flush_wal().unwrap();
        lsn = Lsn(lsn.0 + piece.len() as u64);
        assert_eq!(storage.write_lsn(), lsn);
        assert_eq!(storage.flush_lsn(), wal.record_end_at_or_before(lsn));
    }
}

fn wal_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != CONTROL_FILE_NAME)
        .collect();
    names.sort();
    names
}

fn stored(storage: &TimelineStorage, from: Lsn, to: Lsn) -> Vec<u8> {
    let mut buf = vec![0u8; (to.0 - from.0) as usize];
    storage.reader().read_exact(from, &mut buf).unwrap();
    buf
}

/// The bytes of the segment files from `from` to the end of its segment.
fn raw_tail(dir: &Path, from: Lsn) -> Vec<u8> {
    let name = segments::segment_file_name(size(), from.segment_number(size()), true);
    let bytes = fs::read(dir.join(name)).unwrap();
    bytes[from.segment_offset(size()) as usize..].to_vec()
}

#[test]
fn create_makes_an_empty_timeline_once() {
    let (parent, storage, wal) = setup(0);
    let dir = parent.path().join("tl");
    assert_eq!(storage.write_lsn(), wal.start);
    assert_eq!(storage.flush_lsn(), wal.start);
    assert_eq!(storage.state(), &new_state(wal.start));
    assert_eq!(wal_files(&dir), ["000000010000000000000001.partial"]);
    assert!(matches!(
        TimelineStorage::create(&dir, new_state(wal.start)),
        Err(StorageError::TimelineExists(_))
    ));
    assert!(matches!(
        TimelineStorage::open(&parent.path().join("other")),
        Err(StorageError::TimelineNotFound(_))
    ));
    let mut bad = new_state(Lsn(MIB + 3));
    assert!(matches!(
        TimelineStorage::create(&parent.path().join("bad"), bad.clone()),
        Err(StorageError::InvalidState(_))
    ));
    bad = new_state(wal.start);
    bad.commit_lsn = Lsn(wal.start.0 + 8);
    assert!(matches!(
        TimelineStorage::create(&parent.path().join("bad"), bad),
        Err(StorageError::InvalidState(_))
    ));
    assert!(!parent.path().join("bad").exists());
}

#[test]
fn segment_switch_renames_the_finished_segment_and_keeps_one_partial() {
    let (parent, mut storage, wal) = setup(2 * MIB + MIB / 2);
    let dir = parent.path().join("tl");
    append(&mut storage, &wal, Lsn(2 * MIB - 1000), 100_000);
    assert_eq!(wal_files(&dir), ["000000010000000000000001.partial"]);
    append(&mut storage, &wal, wal.end(), 100_000);
    assert_eq!(
        wal_files(&dir),
        [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000003.partial"
        ]
    );
    for name in wal_files(&dir) {
        assert_eq!(fs::metadata(dir.join(name)).unwrap().len(), MIB);
    }
    // A write ending exactly at a segment end switches at once.
    let (parent, mut storage, wal) = setup(2 * MIB);
    append(&mut storage, &wal, Lsn(2 * MIB), 1 << 20);
    assert_eq!(
        wal_files(&parent.path().join("tl")),
        [
            "000000010000000000000001",
            "000000010000000000000002.partial"
        ]
    );
}

#[test]
fn appends_with_a_gap_or_an_overlap_are_refused() {
    let (_parent, mut storage, wal) = setup(MIB / 2);
    append(&mut storage, &wal, Lsn(wal.start.0 + 10_000), 10_000);
    let end = storage.write_lsn();
    for lsn in [Lsn(end.0 + 8), Lsn(end.0 - 8), wal.start] {
        let error = storage
            .write_wal(lsn, wal.slice(end, Lsn(end.0 + 8)))
            .unwrap_err();
        assert!(
            matches!(error, StorageError::NotAtEnd { lsn: l, write_lsn } if l == lsn && write_lsn == end),
            "{error}"
        );
    }
    assert_eq!(storage.write_lsn(), end);
    append(&mut storage, &wal, wal.end(), 10_000);
    assert_eq!(
        stored(&storage, wal.start, storage.flush_lsn()),
        wal.slice(wal.start, storage.flush_lsn())
    );
}

#[test]
fn invalid_wal_is_not_written_and_blocks_appends_until_truncation() {
    let (parent, mut storage, wal) = setup(MIB / 2);
    let good_end = wal.records[20].1;
    append(&mut storage, &wal, good_end, 50_000);
    let (bad_start, bad_end) = wal.records[22];
    let mut bad = wal.slice(good_end, bad_end).to_vec();
    let at = (bad_start.0 - good_end.0) as usize + 30;
    bad[at] ^= 0xff;
    let error = storage.write_wal(good_end, &bad).unwrap_err();
    assert!(matches!(error, StorageError::InvalidWal { .. }), "{error}");
    assert_eq!(storage.write_lsn(), good_end);
    assert!(raw_tail(&parent.path().join("tl"), good_end)
        .iter()
        .all(|&b| b == 0));
    // Even valid WAL is refused now: the decoder's state is unknown.
    let error = storage
        .write_wal(good_end, wal.slice(good_end, wal.records[21].1))
        .unwrap_err();
    assert!(matches!(error, StorageError::InvalidWal { .. }), "{error}");
    storage.truncate_wal(good_end).unwrap();
    append(&mut storage, &wal, wal.end(), 50_000);
}

#[test]
fn flush_lsn_is_the_end_of_the_last_complete_flushed_record() {
    let (_parent, mut storage, wal) = setup(MIB / 2);
    // A record spanning pages, written in three pieces.
    let (start, end) = *wal
        .records
        .iter()
        .find(|(s, e)| e.0 - s.0 > 10_000)
        .unwrap();
    append(&mut storage, &wal, start, 4096);
    assert_eq!(storage.flush_lsn(), start);
    let middle = Lsn(start.0 + 5000);
    storage.write_wal(start, wal.slice(start, middle)).unwrap();
    storage.flush_wal().unwrap();
    assert_eq!(storage.flush_lsn(), start);
    storage.write_wal(middle, wal.slice(middle, end)).unwrap();
    assert_eq!(storage.flush_lsn(), start, "not durable before flush");
    storage.flush_wal().unwrap();
    assert_eq!(storage.flush_lsn(), end);
}

#[test]
fn truncate_within_a_segment_zeroes_the_tail_and_appends_resume_there() {
    let (parent, mut storage, wal) = setup(MIB / 2);
    let dir = parent.path().join("tl");
    append(&mut storage, &wal, wal.end(), 64 * 1024);
    let cut = wal.records[wal.records.len() / 2].1;
    storage.truncate_wal(cut).unwrap();
    assert_eq!((storage.write_lsn(), storage.flush_lsn()), (cut, cut));
    assert!(raw_tail(&dir, cut).iter().all(|&b| b == 0));
    drop(storage);
    let mut storage = TimelineStorage::open(&dir).unwrap();
    assert_eq!(storage.flush_lsn(), cut);
    append(&mut storage, &wal, wal.end(), 64 * 1024);
    assert_eq!(stored(&storage, wal.start, wal.end()), wal.bytes);
}

#[test]
fn truncate_across_segments_removes_later_ones_and_renames_to_partial() {
    let (parent, mut storage, wal) = setup(3 * MIB + 1000);
    let dir = parent.path().join("tl");
    append(&mut storage, &wal, wal.end(), 128 * 1024);
    assert_eq!(wal_files(&dir).len(), 4);
    let cut = wal.record_end_at_or_before(Lsn(MIB + MIB / 3));
    storage.truncate_wal(cut).unwrap();
    assert_eq!(wal_files(&dir), ["000000010000000000000001.partial"]);
    assert!(raw_tail(&dir, cut).iter().all(|&b| b == 0));
    // Again, cutting in the second of four segments.
    append(&mut storage, &wal, wal.end(), 128 * 1024);
    let boundary = *wal
        .records
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.0 > 2 * MIB)
        .unwrap();
    storage.truncate_wal(boundary).unwrap();
    assert_eq!(
        wal_files(&dir),
        [
            "000000010000000000000001",
            "000000010000000000000002.partial"
        ]
    );
    drop(storage);
    let mut storage = TimelineStorage::open(&dir).unwrap();
    assert_eq!(storage.flush_lsn(), boundary);
    append(&mut storage, &wal, wal.end(), 128 * 1024);
    assert_eq!(stored(&storage, wal.start, wal.end()), wal.bytes);
}

#[test]
fn truncate_refuses_beyond_the_end_and_below_the_commit_lsn() {
    let (_parent, mut storage, wal) = setup(MIB / 4);
    append(&mut storage, &wal, wal.end(), 64 * 1024);
    let end = storage.write_lsn();
    assert!(matches!(
        storage.truncate_wal(Lsn(end.0 + 8)),
        Err(StorageError::TruncateBeyondEnd { .. })
    ));
    let mut state = storage.state().clone();
    state.commit_lsn = wal.records[10].1;
    storage.persist(&state).unwrap();
    assert!(matches!(
        storage.truncate_wal(wal.records[9].1),
        Err(StorageError::TruncateBelowLimit { .. })
    ));
    assert_eq!(storage.write_lsn(), end);
    storage.truncate_wal(wal.records[10].1).unwrap();
}

#[test]
fn reopen_finds_the_end_and_cuts_a_torn_tail() {
    let (parent, mut storage, wal) = setup(MIB + MIB / 2);
    let dir = parent.path().join("tl");
    let flushed = wal.record_end_at_or_before(Lsn(MIB + MIB / 3));
    append(&mut storage, &wal, flushed, 100_000);
    // Written, not flushed: complete records and then half of one.
    let (_, last_end) = wal.records[wal.records.len() - 2];
    let torn = Lsn(last_end.0 + 100);
    storage
        .write_wal(flushed, wal.slice(flushed, torn))
        .unwrap();
    drop(storage);
    let storage = TimelineStorage::open(&dir).unwrap();
    // Complete records still in the page cache are found (and synced by open).
    assert_eq!(
        (storage.write_lsn(), storage.flush_lsn()),
        (last_end, last_end)
    );
    assert!(raw_tail(&dir, last_end).iter().all(|&b| b == 0));
    drop(storage);
    // Garbage after the end, as a torn write of a crashed process leaves.
    let path = dir.join("000000010000000000000002.partial");
    let mut bytes = fs::read(&path).unwrap();
    let at = last_end.segment_offset(size()) as usize;
    bytes[at..at + 3000].fill(0xA5);
    bytes[MIB as usize - 1] = 1;
    fs::write(&path, &bytes).unwrap();
    let mut storage = TimelineStorage::open(&dir).unwrap();
    assert_eq!(storage.flush_lsn(), last_end);
    assert!(raw_tail(&dir, last_end).iter().all(|&b| b == 0));
    append(&mut storage, &wal, wal.end(), 100_000);
    assert_eq!(stored(&storage, wal.start, wal.end()), wal.bytes);
}

#[test]
fn reopen_refuses_when_committed_wal_is_damaged() {
    let (parent, mut storage, wal) = setup(MIB / 2);
    let dir = parent.path().join("tl");
    append(&mut storage, &wal, wal.end(), 100_000);
    let mut state = storage.state().clone();
    state.commit_lsn = wal.records[30].1;
    storage.persist(&state).unwrap();
    drop(storage);
    let path = dir.join("000000010000000000000001.partial");
    let mut bytes = fs::read(&path).unwrap();
    let damaged = wal.records[20].0.segment_offset(size()) as usize + 28;
    bytes[damaged] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    let error = TimelineStorage::open(&dir).unwrap_err();
    assert!(
        matches!(error, StorageError::CommittedWalMissing { valid_end, .. } if valid_end == wal.records[19].1),
        "{error}"
    );
    // Nothing was cut: the damage can still be inspected or repaired.
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn reopen_completes_interrupted_segment_switches() {
    let (parent, mut storage, wal) = setup(2 * MIB + 50_000);
    let dir = parent.path().join("tl");
    append(&mut storage, &wal, wal.end(), 200_000);
    drop(storage);
    let [second, third] = [
        "000000010000000000000002",
        "000000010000000000000003.partial",
    ];
    // The WAL that survives ends with the last record wholly inside segment 2: the
    // one crossing into segment 3 is incomplete without it.
    let end = wal.record_end_at_or_before(Lsn(3 * MIB));
    assert!(end < Lsn(3 * MIB));
    // Crash after the rename of segment 2, before segment 3 was pre-allocated (plus
    // an interrupted pre-allocation).
    fs::remove_file(dir.join(third)).unwrap();
    fs::write(dir.join("000000010000000000000003.partial.tmp"), b"junk").unwrap();
    let storage = TimelineStorage::open(&dir).unwrap();
    assert_eq!(storage.flush_lsn(), end);
    let expected = [
        "000000010000000000000001",
        "000000010000000000000002.partial",
    ];
    assert_eq!(wal_files(&dir), expected);
    assert!(raw_tail(&dir, end).iter().all(|&b| b == 0));
    drop(storage);
    // Crash before the rename: segment 2 still .partial and full, no segment 3.
    let mut bytes = fs::read(dir.join(expected[1])).unwrap();
    let offset = end.segment_offset(size()) as usize;
    bytes[offset..].copy_from_slice(wal.slice(end, Lsn(3 * MIB)));
    fs::write(dir.join(expected[1]), &bytes).unwrap();
    let mut storage = TimelineStorage::open(&dir).unwrap();
    assert_eq!(storage.flush_lsn(), end);
    assert_eq!(wal_files(&dir), expected);
    append(&mut storage, &wal, wal.end(), 200_000);
    assert_eq!(wal_files(&dir), ["000000010000000000000001", second, third]);
}

#[test]
fn reader_reads_back_exactly_what_was_written_while_appending() {
    let (_parent, mut storage, wal) = setup(2 * MIB + 12345);
    let reader = storage.reader();
    let start = wal.start;
    let expected = wal
        .slice(wal.start, wal.record_end_at_or_before(wal.end()))
        .to_vec();
    let follower = std::thread::spawn(move || {
        let mut reader = reader;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 50_000];
        while got.len() < expected.len() {
            let n = reader
                .read(Lsn(start.0 + got.len() as u64), &mut buf)
                .unwrap();
            got.extend_from_slice(&buf[..n]);
            if n == 0 {
                std::thread::yield_now();
            }
        }
        assert_eq!(got, expected);
        reader
    });
    append(&mut storage, &wal, wal.end(), 30_000);
    let mut reader = follower.join().unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(reader.read(storage.flush_lsn(), &mut buf).unwrap(), 0);
    let below = reader.read(Lsn(start.0 - 8), &mut buf).unwrap_err();
    assert_eq!(below.kind(), io::ErrorKind::InvalidInput);
    // A read never crosses a segment boundary.
    let near_end = Lsn(2 * MIB - 5);
    assert_eq!(reader.read(near_end, &mut buf).unwrap(), 5);
}

#[test]
fn removal_keeps_the_segment_holding_the_horizon_and_everything_committed() {
    let (parent, mut storage, wal) = setup(3 * MIB + MIB / 2);
    let dir = parent.path().join("tl");
    append(&mut storage, &wal, wal.end(), 256 * 1024);
    let mut state = storage.state().clone();
    state.commit_lsn = wal.record_end_at_or_before(Lsn(3 * MIB + 100_000));
    storage.persist(&state).unwrap();
    let horizon = removal_horizon(&RemovalHorizonInputs {
        commit_lsn: state.commit_lsn,
        retention_bytes: MIB,
        offload: None,
    });
    assert_eq!(horizon.segment_number(size()), 2);
    let removed = storage.remove_segments_below(horizon).unwrap();
    assert_eq!(removed, ["000000010000000000000001"]);
    // Far beyond the commit LSN: clamped to it.
    let removed = storage.remove_segments_below(Lsn(u64::MAX)).unwrap();
    assert_eq!(removed, ["000000010000000000000002"]);
    assert_eq!(
        wal_files(&dir),
        [
            "000000010000000000000003",
            "000000010000000000000004.partial"
        ]
    );
    let mut reader = storage.reader();
    let mut buf = [0u8; 8];
    let error = reader.read(Lsn(MIB + 100), &mut buf).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    drop(storage);
    let storage = TimelineStorage::open(&dir).unwrap();
    assert_eq!(storage.flush_lsn(), wal.record_end_at_or_before(wal.end()));
}

#[test]
fn disk_full_on_a_wal_write_is_reported_and_poisons_until_reopen() {
    let (parent, mut storage, wal) = setup(MIB / 2);
    let dir = parent.path().join("tl");
    let acked = wal.records[10].1;
    append(&mut storage, &wal, acked, 100_000);
    arm_in_this_thread("wal-write=enospc").unwrap();
    let error = storage
        .write_wal(acked, wal.slice(acked, wal.records[20].1))
        .unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    assert!(error.to_string().starts_with("disk full"), "{error}");
    let error = storage.flush_wal().unwrap_err();
    assert!(matches!(error, StorageError::Poisoned(_)), "{error}");
    arm_in_this_thread("").unwrap();
    drop(storage);
    let mut storage = TimelineStorage::open(&dir).unwrap();
    assert_eq!(storage.flush_lsn(), acked);
    append(&mut storage, &wal, wal.end(), 100_000);
}

#[test]
fn disk_full_on_pre_allocation_is_reported() {
    let (parent, mut storage, wal) = setup(MIB + 1000);
    arm_in_this_thread("segment-preallocate-before-rename=enospc").unwrap();
    let error = storage
        .write_wal(wal.start, wal.slice(wal.start, Lsn(2 * MIB)))
        .unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    arm_in_this_thread("").unwrap();
    drop(storage);
    let storage = TimelineStorage::open(&parent.path().join("tl")).unwrap();
    assert_eq!(
        storage.flush_lsn(),
        wal.record_end_at_or_before(Lsn(2 * MIB))
    );
}

#[test]
fn disk_full_writing_the_control_file_keeps_the_old_state() {
    let (parent, mut storage, _wal) = setup(0);
    let old = storage.state().clone();
    let mut new = old.clone();
    new.term = Term(3);
    arm_in_this_thread("control-file-after-temp-write=enospc").unwrap();
    let error = storage.persist(&new).unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    assert_eq!(storage.state(), &old);
    arm_in_this_thread("").unwrap();
    storage.persist(&new).unwrap();
    drop(storage);
    let storage = TimelineStorage::open(&parent.path().join("tl")).unwrap();
    assert_eq!(storage.state(), &new);
}

#[test]
fn persist_refuses_changing_fixed_fields_or_committing_unflushed_wal() {
    let (_parent, mut storage, wal) = setup(MIB / 4);
    append(&mut storage, &wal, wal.records[5].1, 100_000);
    let mut state = storage.state().clone();
    state.wal_segment_size *= 2;
    assert!(matches!(
        storage.persist(&state),
        Err(StorageError::InvalidState(_))
    ));
    let mut state = storage.state().clone();
    state.commit_lsn = wal.records[6].1;
    assert!(matches!(
        storage.persist(&state),
        Err(StorageError::InvalidState(_))
    ));
    state.commit_lsn = wal.records[5].1;
    state.term = Term(2);
    state.term_history.0.push(TermSwitch {
        term: Term(2),
        lsn: wal.records[5].1,
    });
    storage.persist(&state).unwrap();
    assert_eq!(storage.state(), &state);
}

#[test]
fn timeline_starting_mid_segment_at_a_record() {
    let full = TestWal::with_records(Lsn(MIB), size(), MIB + MIB / 2, 9000);
    let start = full.records[40].0;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("tl");
    let mut storage = TimelineStorage::create(&dir, new_state(start)).unwrap();
    let mut lsn = start;
    for piece in full.slice(start, full.end()).chunks(70_000) {
        storage.write_wal(lsn, piece).unwrap();
        lsn = Lsn(lsn.0 + piece.len() as u64);
    }
    storage.flush_wal().unwrap();
    let end = full.record_end_at_or_before(full.end());
    assert_eq!(storage.flush_lsn(), end);
    drop(storage);
    let storage = TimelineStorage::open(&dir).unwrap();
    assert_eq!(storage.flush_lsn(), end);
    assert_eq!(stored(&storage, start, end), full.slice(start, end));
}

#[test]
fn real_wal_round_trips_and_a_switch_completes_with_its_padding() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/postgres_wal/tests/fixtures/pg15_wal_1mb_segment_prefix"
    );
    let bytes = fs::read(fixture).unwrap();
    let start = Lsn(0x90_0000);
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("tl");
    let mut storage = TimelineStorage::create(&dir, new_state(start)).unwrap();
    let mut lsn = start;
    for piece in bytes.chunks(8000) {
        storage.write_wal(lsn, piece).unwrap();
        storage.flush_wal().unwrap();
        lsn = Lsn(lsn.0 + piece.len() as u64);
    }
    // Every record decodes; the last one, XLOG SWITCH at 0/931DF0, ends at the next
    // segment, so it is complete only once its padding is written.
    let mut decoder = WalStreamDecoder::new(start, size());
    decoder.feed(&bytes);
    let mut last = None;
    while let Ok(Some(record)) = decoder.poll() {
        last = Some(record);
    }
    let switch = last.unwrap();
    assert_eq!(
        (switch.lsn, switch.end_lsn),
        (Lsn(0x931DF0), Lsn(0xA0_0000))
    );
    assert_eq!(storage.flush_lsn(), switch.lsn);
    storage
        .write_wal(lsn, &vec![0u8; (0xA0_0000 - lsn.0) as usize])
        .unwrap();
    storage.flush_wal().unwrap();
    assert_eq!(storage.flush_lsn(), Lsn(0xA0_0000));
    assert_eq!(
        wal_files(&dir),
        [
            "000000010000000000000009",
            "00000001000000000000000A.partial"
        ]
    );
    assert_eq!(stored(&storage, start, lsn), bytes);
    drop(storage);
    let storage = TimelineStorage::open(&dir).unwrap();
    assert_eq!(storage.flush_lsn(), Lsn(0xA0_0000));
}

#[test]
fn a_damaged_control_file_is_refused_on_open() {
    let (parent, mut storage, wal) = setup(MIB / 4);
    let dir = parent.path().join("tl");
    append(&mut storage, &wal, wal.end(), 100_000);
    drop(storage);
    let path = dir.join(CONTROL_FILE_NAME);
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 1);
    fs::write(&path, &bytes).unwrap();
    let error = TimelineStorage::open(&dir).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::ControlFile {
                source: ControlFileError::Truncated { .. },
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(wal_files(&dir), ["000000010000000000000001.partial"]);
}
