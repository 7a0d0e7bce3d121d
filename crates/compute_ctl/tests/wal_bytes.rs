//! The committed WAL a safekeeper serves to a stock `pg_receivewal` is, byte for byte,
//! the WAL the compute wrote to its own `pg_wal`, from the timeline's first segment on
//! and across a segment switch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use pg_harness::PgBin;
use postgres_wal::{Lsn, WalSegmentSize};
use support::*;

const SEGMENT: u64 = 16 * 1024 * 1024;

/// Bytes `[from, to)` of the segment files in `dir` (`.partial` ones too).
fn segment_bytes(dir: &Path, from: Lsn, to: Lsn) -> Vec<u8> {
    let size = WalSegmentSize::new(SEGMENT).unwrap();
    let mut bytes = Vec::new();
    for segment in from.segment_number(size)..=Lsn(to.0 - 1).segment_number(size) {
        let name = size.file_name(1, segment);
        let path = dir.join(&name);
        let path = if path.exists() {
            path
        } else {
            dir.join(format!("{name}.partial"))
        };
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            data.len() as u64,
            SEGMENT,
            "{} is not whole",
            path.display()
        );
        let start = segment * SEGMENT;
        let lo = from.0.max(start) - start;
        let hi = to.0.min(start + SEGMENT) - start;
        bytes.extend_from_slice(&data[lo as usize..hi as usize]);
    }
    bytes
}

#[test]
fn pg_receivewal_gets_the_computes_own_wal_bytes() {
    let dir = test_dir();
    let sks = Safekeeper::start_many(dir.path(), 3);
    let id = timeline_id(4);
    let compute = Compute::start(dir.path(), free_port(), id, &addrs(&sks));
    compute.psql("CREATE TABLE t (id int, pad text)");
    compute.psql("INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g");
    compute.psql("SELECT pg_switch_wal()");
    compute.psql("INSERT INTO t SELECT g, repeat('y', 100) FROM generate_series(1, 5000) g");
    let end: Lsn = compute
        .psql("SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(compute.pgdata.join("strata_compute.json")).unwrap(),
    )
    .unwrap();
    let start: Lsn = state["timeline_start_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        end.0 / SEGMENT > start.0 / SEGMENT,
        "the range crosses a segment"
    );

    // The safekeeper serves WAL up to its commit LSN, which follows the proposer's.
    let deadline = Instant::now() + WAIT;
    while sks[0].positions().2 < end.0 {
        assert!(
            Instant::now() < deadline,
            "commit LSN stuck at {:?}",
            sks[0].positions()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let bin = PgBin::locate().unwrap();
    let out = dir.path().join("received");
    std::fs::create_dir(&out).unwrap();
    bin.chown_to_server_user(&out).unwrap();
    // An empty .partial of the first segment makes pg_receivewal start there.
    let first = out.join(format!(
        "{}.partial",
        WalSegmentSize::new(SEGMENT)
            .unwrap()
            .file_name(1, start.0 / SEGMENT)
    ));
    File::create(&first).unwrap();
    bin.chown_to_server_user(&first).unwrap();
    let options = format!(
        "options='-c tenant_id={} -c timeline_id={}'",
        id.tenant_id, id.timeline_id
    );
    let started = Instant::now();
    let output = bin
        .command("pg_receivewal")
        .current_dir("/")
        .arg("-D")
        .arg(&out)
        .args(["--no-loop", "--no-sync", "--status-interval=1"])
        // It stops after WAL beyond --endpos: one byte less than the end.
        .arg(format!("--endpos={}", Lsn(end.0 - 1)))
        .arg("-d")
        .arg(format!(
            "host=127.0.0.1 port={} user=postgres {options}",
            sks[0].pg.port()
        ))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pg_receivewal failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received = segment_bytes(&out, start, end);
    let own = segment_bytes(&compute.pgdata.join("pg_wal"), start, end);
    assert_eq!(received.len(), own.len());
    assert!(
        received == own,
        "the safekeeper's WAL differs from the compute's"
    );
    eprintln!(
        "pg_receivewal: {} bytes [{start}, {end}) equal to the compute's pg_wal, in {:?}",
        received.len(),
        started.elapsed()
    );
}
