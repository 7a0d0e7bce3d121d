//! Quorum commit of a stock PostgreSQL 15 under `compute_ctl`, against three real
//! safekeeper daemons: commits return while a majority holds them, wait while it does
//! not, and nothing acknowledged is lost across kill -9 of safekeepers and of the
//! compute.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;

/// How long a commit without a quorum is watched to make sure it does not return.
const NO_QUORUM_WAIT: Duration = Duration::from_secs(3);

fn insert(compute: &Compute, ids: impl IntoIterator<Item = i32>, acknowledged: &mut Vec<i32>) {
    for id in ids {
        compute.psql(&format!("INSERT INTO t VALUES ({id})"));
        acknowledged.push(id);
    }
}

fn rows(compute: &Compute) -> Vec<i32> {
    compute
        .psql("SELECT id FROM t ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn assert_all_present(compute: &Compute, acknowledged: &[i32]) {
    let present = rows(compute);
    for id in acknowledged {
        assert!(
            present.contains(id),
            "acknowledged row {id} is missing; present: {present:?}"
        );
    }
}

#[test]
fn commits_need_a_quorum_and_nothing_acknowledged_is_lost() {
    let dir = test_dir();
    let mut sks = Safekeeper::start_many(dir.path(), 3);
    let id = timeline_id(1);
    let port = free_port();
    let mut compute = timed("bootstrap, election and start", || {
        Compute::start(dir.path(), port, id, &addrs(&sks))
    });
    compute.psql("CREATE TABLE t (id int PRIMARY KEY)");
    let mut acknowledged = Vec::new();
    timed("10 commits with 3 safekeepers", || {
        insert(&compute, 1..=10, &mut acknowledged)
    });

    sks[2].kill();
    timed("10 commits with 2 of 3 safekeepers", || {
        insert(&compute, 11..=20, &mut acknowledged)
    });

    sks[1].kill();
    let mut waiting = compute.psql_background("INSERT INTO t VALUES (1000)");
    assert!(
        waiting.still_running_after(NO_QUORUM_WAIT),
        "a commit returned with 1 of 3 safekeepers"
    );
    timed(
        "the waiting commit completing after a safekeeper returned",
        || {
            sks[1].restart();
            let output = waiting.finish(WAIT);
            assert!(output.status.success(), "{output:?}");
        },
    );
    acknowledged.push(1000);
    insert(&compute, 21..=25, &mut acknowledged);

    // A clean stop: the shutdown checkpoint reaches the quorum, so the same data
    // directory passes the lineage check at its next start.
    assert!(compute.terminate().success(), "{}", compute.log());
    for sk in &mut sks {
        sk.restart();
    }
    let mut compute = timed("restart on the same data directory", || {
        Compute::start(dir.path(), port, id, &addrs(&sks))
    });
    assert_all_present(&compute, &acknowledged);
    insert(&compute, 26..=30, &mut acknowledged);

    // A crash of everything: the compute's WAL may run past the quorum's; its own
    // term's tail is streamed again.
    compute.kill();
    for sk in &mut sks {
        sk.kill();
    }
    for sk in &mut sks {
        sk.restart();
    }
    let compute = timed("restart after kill -9 of everything", || {
        Compute::start(dir.path(), port, id, &addrs(&sks))
    });
    assert_all_present(&compute, &acknowledged);
    insert(&compute, 31..=35, &mut acknowledged);
    assert_all_present(&compute, &acknowledged);

    // The safekeepers agree once the commit LSN has been broadcast.
    let target = compute.psql("SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn");
    let target: u64 = target.parse::<f64>().unwrap() as u64;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let positions: Vec<_> = sks.iter().map(Safekeeper::positions).collect();
        let caught_up = positions
            .iter()
            .all(|&(_, flush, commit)| flush >= target && commit >= target);
        // Equal, unless WAL arrived between two reads: then look again.
        if caught_up && positions.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "safekeepers did not catch up: {positions:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for sk in &sks {
        assert!(
            sk.errors().is_empty(),
            "safekeeper {} logged errors:\n{}",
            sk.id,
            sk.log()
        );
    }
}
