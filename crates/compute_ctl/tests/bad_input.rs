//! Bad input and faults at start-up: unreachable safekeeper addresses, a safekeeper of
//! another cluster, safekeepers holding terms the data directory never saw. Each is
//! either survived (a quorum suffices) or refused with a clear error; no commit is
//! acknowledged without a quorum.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::*;

const EXIT_ERROR: i32 = 1;
const EXIT_LINEAGE: i32 = 4;

/// A short election timeout, for the starts that must fail.
const FAILING_ELECTION_SECS: u64 = 3;

#[test]
fn unreachable_safekeepers_cost_nothing_while_a_quorum_answers() {
    let dir = test_dir();
    let mut sks = Safekeeper::start_many(dir.path(), 2);
    let dead = dead_address();
    let list = format!("{},{},{dead}", sks[0].grpc_addr(), sks[1].grpc_addr());
    let id = timeline_id(5);
    let port = free_port();
    let mut compute = timed("bootstrap with 1 of 3 safekeepers unreachable", || {
        Compute::start(dir.path(), port, id, &list)
    });
    compute.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    assert_eq!(compute.psql("SELECT count(*) FROM t"), "1");
    // The unreachable one gets the timeline when it answers; no other ever does.
    let state = std::fs::read_to_string(compute.pgdata.join("strata_compute.json")).unwrap();
    assert!(state.contains(&dead), "{state}");
    assert!(compute.terminate().success(), "{}", compute.log());

    // Two of three unreachable: no election, so PostgreSQL never starts and nothing
    // can be acknowledged.
    sks[1].kill();
    let mut no_quorum = Compute::spawn_with(dir.path(), port, id, &list, FAILING_ELECTION_SECS);
    let exit = timed("a start without a quorum failing", || {
        no_quorum.wait_exit(WAIT)
    });
    let log = no_quorum.log();
    assert_eq!(exit.code(), Some(EXIT_ERROR), "{log}");
    assert!(
        log.contains("no quorum of safekeepers elected this compute"),
        "{log}"
    );
    assert!(
        log.contains(&dead) && log.contains(&sks[1].grpc_addr()),
        "{log}"
    );
    assert_eq!(no_quorum.postmaster_pid(), None);
    assert!(psql(port, "INSERT INTO t VALUES (2)").is_err());
}

#[test]
fn a_safekeeper_of_another_cluster_is_refused() {
    let dir = test_dir();
    let sks = Safekeeper::start_many(dir.path(), 3);
    let id = timeline_id(6);
    // Another cluster's timeline under the same ids on the third safekeeper.
    grpc::create_timeline(&sks[2].grpc_addr(), id, 42, 0x200_0000);

    let mut compute = Compute::spawn(dir.path(), free_port(), id, &addrs(&sks));
    let exit = compute.wait_exit(WAIT);
    let log = compute.log();
    assert_eq!(exit.code(), Some(EXIT_ERROR), "{log}");
    assert!(
        log.contains(&format!(
            "safekeeper {} refused timeline",
            sks[2].grpc_addr()
        )) && log.contains("another cluster: system id 42"),
        "{log}"
    );
    assert_eq!(compute.postmaster_pid(), None);

    // sync-safekeepers sees the two clusters disagree and refuses too.
    let (status, _, stderr) = sync_safekeepers(id, &addrs(&sks));
    assert_eq!(status.code(), Some(EXIT_ERROR), "{stderr}");
    assert!(
        stderr.contains("disagree on timeline") && stderr.contains("another cluster"),
        "{stderr}"
    );
}

#[test]
fn terms_the_data_directory_never_saw() {
    let dir = test_dir();
    let sks = Safekeeper::start_many(dir.path(), 3);
    let id = timeline_id(7);
    let port = free_port();
    let mut compute = Compute::start(dir.path(), port, id, &addrs(&sks));
    compute.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    assert!(compute.terminate().success());
    // An old copy of the data directory.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&compute.pgdata)
        .arg(copy.join("pgdata"))
        .status()
        .unwrap();
    assert!(copied.success());

    // A proposer campaigned for term 1000 on one safekeeper and died: the next
    // election goes above it instead of being fenced by it.
    grpc::vote_for(&sks[2].grpc_addr(), id, 1000);
    let mut compute = Compute::start(dir.path(), port, id, &addrs(&sks));
    let term = compute.status().unwrap()["term"].as_u64().unwrap();
    assert!(term > 1000, "elected at term {term}");
    compute.psql("INSERT INTO t VALUES (2)");
    assert!(compute.terminate().success());

    // The old copy is behind what the safekeepers hold: refused, never started.
    let mut old = Compute::spawn(&copy, port, id, &addrs(&sks));
    let exit = old.wait_exit(WAIT);
    let log = old.log();
    assert_eq!(exit.code(), Some(EXIT_LINEAGE), "{log}");
    assert!(log.contains("it is behind the timeline"), "{log}");
    assert_eq!(old.postmaster_pid(), None);
}
