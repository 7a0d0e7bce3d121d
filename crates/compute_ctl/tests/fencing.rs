//! Fencing: a second proposer (`compute_ctl sync-safekeepers`) elected while a compute
//! runs stops that compute at once, and its data directory runs again only when its
//! WAL is a prefix of the quorum's (the lineage check).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use postgres_wal::Lsn;
use support::*;

/// compute_ctl's exit codes (`compute_ctl::commands::exit_code`).
const EXIT_FENCED: i32 = 3;
const EXIT_LINEAGE: i32 = 4;

/// A running compute learns of a newer term within a heartbeat; allow for slow CI.
const FENCE_NOTICE: Duration = Duration::from_secs(10);

fn flush_lsn(compute: &Compute) -> Lsn {
    compute
        .psql("SELECT pg_current_wal_flush_lsn()")
        .parse()
        .unwrap()
}

#[test]
fn sync_safekeepers_fences_a_running_compute() {
    let dir = test_dir();
    let sks = Safekeeper::start_many(dir.path(), 3);
    let id = timeline_id(2);
    let mut compute = Compute::start(dir.path(), free_port(), id, &addrs(&sks));
    compute.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    let acknowledged_end = flush_lsn(&compute);
    let term_before = compute.status().unwrap()["term"].as_u64().unwrap();

    let (status, stdout, stderr) = timed("sync-safekeepers", || sync_safekeepers(id, &addrs(&sks)));
    assert!(status.success(), "sync-safekeepers failed: {stderr}");
    let synced: Lsn = stdout
        .parse()
        .unwrap_or_else(|_| panic!("not an LSN: {stdout:?}"));
    assert!(
        synced >= acknowledged_end,
        "synced {synced} below acknowledged {acknowledged_end}"
    );

    // A commit tried now can never be acknowledged: its appends carry the old term.
    let mut late = compute.psql_background("INSERT INTO t VALUES (2)");
    let exit = timed("the compute noticing it was fenced", || {
        compute.wait_exit(FENCE_NOTICE)
    });
    assert_eq!(exit.code(), Some(EXIT_FENCED), "{}", compute.log());
    let output = late.finish(WAIT);
    assert!(
        !output.status.success(),
        "a commit returned after fencing: {output:?}"
    );
    assert_eq!(
        compute.postmaster_pid(),
        None,
        "PostgreSQL still runs after fencing"
    );
    let status = compute.status().unwrap();
    assert_eq!(status["state"], "fenced");
    assert_eq!(status["term"].as_u64(), Some(term_before));
    assert!(compute.log().contains("fenced"), "{}", compute.log());
    // The data directory remembers who fenced it; it was the server user's file.
    let state_path = compute.pgdata.join("strata_compute.json");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert!(
        state["fenced_by"].as_u64().unwrap() > term_before,
        "{state}"
    );
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&state_path).unwrap());
    let pgdata_owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&compute.pgdata).unwrap());
    assert_eq!(owner, pgdata_owner);
}

#[test]
fn a_fenced_data_directory_runs_again_only_as_a_prefix_of_the_quorum() {
    let dir = test_dir();
    let mut sks = Safekeeper::start_many(dir.path(), 3);
    let id = timeline_id(3);
    let port = free_port();
    let mut compute = Compute::start(dir.path(), port, id, &addrs(&sks));
    compute.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)");

    // Fenced while idle: its WAL is exactly the quorum's, so it may go on.
    let (status, _, stderr) = sync_safekeepers(id, &addrs(&sks));
    assert!(status.success(), "{stderr}");
    assert_eq!(compute.wait_exit(FENCE_NOTICE).code(), Some(EXIT_FENCED));
    let mut compute = timed("restart of a fenced, caught-up data directory", || {
        Compute::start(dir.path(), port, id, &addrs(&sks))
    });
    compute.psql("INSERT INTO t VALUES (2)");
    assert_eq!(compute.psql("SELECT count(*) FROM t"), "2");

    // WAL no safekeeper has: every safekeeper down, a commit written locally (and
    // never acknowledged), the compute crashes.
    for sk in &mut sks {
        sk.kill();
    }
    let mut lost = compute.psql_background("INSERT INTO t VALUES (3)");
    assert!(lost.still_running_after(Duration::from_secs(2)));
    compute.kill();
    drop(lost);
    for sk in &mut sks {
        sk.restart();
    }
    // Another proposer continues the timeline without that WAL.
    let (status, _, stderr) = sync_safekeepers(id, &addrs(&sks));
    assert!(status.success(), "{stderr}");
    let mut refused = Compute::spawn(dir.path(), port, id, &addrs(&sks));
    let exit = refused.wait_exit(WAIT);
    assert_eq!(exit.code(), Some(EXIT_LINEAGE), "{}", refused.log());
    assert!(
        refused.log().contains("lineage check refused"),
        "{}",
        refused.log()
    );
    assert_eq!(refused.postmaster_pid(), None, "PostgreSQL was started");
}
