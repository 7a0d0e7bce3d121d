//! `strata wal dump` on bad input: a one-line error naming the file and LSN, and a
//! non-zero exit; on good input with a non-default segment size, every record.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{pg_waldump, run_strata};
use pg_harness::{PgConfig, PgServer};

/// A stopped server with 1 MiB segments holding a few segments of WAL.
fn server_with_small_segments() -> (PgServer, Vec<PathBuf>) {
    let mut server = PgServer::start(
        PgConfig::new()
            .wal_segment_size_mb(1)
            .setting("wal_keep_size", "1GB"),
    )
    .expect("start PostgreSQL");
    server
        .sql("CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g; CHECKPOINT; UPDATE t SET g = g + 1;")
        .expect("workload");
    server.stop().expect("stop PostgreSQL");
    let segments = server.wal_segments().expect("segments");
    assert!(
        segments.len() >= 3,
        "expected several 1 MiB segments, got {}",
        segments.len()
    );
    (server, segments)
}

/// Run `strata wal dump` and return its stderr, asserting it failed with one line.
fn dump_fails(args: &[&Path], extra: &[&str]) -> String {
    let mut argv = vec!["wal", "dump"];
    argv.extend_from_slice(extra);
    let paths: Vec<String> = args.iter().map(|p| p.display().to_string()).collect();
    argv.extend(paths.iter().map(String::as_str));
    let output = run_strata(&argv);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "strata wal dump {argv:?} should fail"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "error must be one line: {stderr}"
    );
    assert!(stderr.starts_with("strata: error: "), "{stderr}");
    stderr
}

fn copy_to(dir: &Path, segment: &Path) -> PathBuf {
    let to = dir.join(segment.file_name().expect("file name"));
    fs::copy(segment, &to).expect("copy segment");
    to
}

#[test]
fn small_segments_decode_like_pg_waldump_and_bad_input_is_refused() {
    let (server, segments) = server_with_small_segments();
    let output = run_strata(&["wal", "dump", &server.wal_dir().display().to_string()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ours = String::from_utf8_lossy(&output.stdout).lines().count();
    let theirs = pg_waldump(&server, &segments[0], &segments[segments.len() - 1]).len();
    assert_eq!(ours, theirs, "record count with 1 MiB segments");

    let scratch = tempfile::tempdir().expect("scratch directory");
    let dir = scratch.path();

    let truncated = copy_to(dir, &segments[0]);
    fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .and_then(|f| f.set_len(100_000))
        .expect("truncate");
    let err = dump_fails(&[&truncated], &[]);
    assert!(
        err.contains(&truncated.display().to_string()) && err.contains("100000 bytes"),
        "{err}"
    );

    let tiny = dir.join("tiny");
    fs::write(&tiny, b"not WAL").expect("write");
    let err = dump_fails(&[&tiny], &[]);
    assert!(err.contains("tiny") && err.contains("too short"), "{err}");

    let garbage = dir.join("garbage");
    fs::write(&garbage, vec![0x5Au8; 1 << 20]).expect("write");
    let err = dump_fails(&[&garbage], &[]);
    assert!(err.contains("garbage"), "{err}");

    let gap = dump_fails(&[&segments[0], &segments[2]], &[]);
    assert!(gap.contains("consecutive"), "{gap}");

    let err = dump_fails(&[&segments[0]], &["--start", "FF/0"]);
    assert!(
        err.contains("FF/0") && err.contains("not in the given files"),
        "{err}"
    );

    let err = dump_fails(&[&dir.join("missing")], &[]);
    assert!(err.contains("missing"), "{err}");

    // A flipped byte inside the first segment's second page: a CRC or record error
    // naming the file and the LSN of the damaged record.
    let corrupt_dir = dir.join("corrupt");
    fs::create_dir(&corrupt_dir).expect("mkdir");
    let corrupt = copy_to(&corrupt_dir, &segments[1]);
    let mut bytes = fs::read(&corrupt).expect("read");
    bytes[8192 + 4000] ^= 0xFF;
    fs::write(&corrupt, &bytes).expect("write");
    let err = dump_fails(&[&corrupt], &[]);
    assert!(err.contains(&corrupt.display().to_string()), "{err}");
    assert!(err.contains(" at 0/"), "error names an LSN: {err}");
}
