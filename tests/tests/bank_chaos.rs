//! The bank-transfer chaos test: clients move money between accounts (the total is
//! invariant) while, round after round, a safekeeper, two safekeepers or the compute
//! (`compute_ctl` and its postmaster) is killed with SIGKILL and brought back with
//! `strata up`. Afterwards every transfer whose COMMIT returned OK is present, the
//! total holds, every account's balance is what the transfer log says, and the
//! safekeepers hold the same committed WAL, byte for byte.
//!
//! The fault schedule comes from a seeded RNG; the seed is printed, and
//! `STRATA_CHAOS_SEED=N` replays the schedule (the clients' timing still varies).
//! `STRATA_CHAOS_ROUNDS` changes the number of rounds (default 20).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cluster_support::{assert_same_wal, kill9, psql, sql, wait_gone, TestCluster};
use pg_harness::PgBin;
use postgres_wal::Lsn;
use strata_ids::NodeId;

const DEFAULT_ROUNDS: usize = 20;
const ACCOUNTS: u64 = 40;
const INITIAL_BALANCE: u64 = 1_000;
const CLIENTS: u64 = 4;
/// Workload time between two faults, in milliseconds.
const RUN_BETWEEN_FAULTS_MS: std::ops::Range<u64> = 300..1_200;
/// How long killed processes stay down before `strata up`, in milliseconds.
const DOWN_TIME_MS: std::ops::Range<u64> = 50..800;
/// A client whose transfer failed (compute down) waits this long before the next, so
/// that it does not spin on a refused connection.
const CLIENT_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// WAL segment size of the compute (initdb's default).
const WAL_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;
/// Every this many rounds the WAL is switched to a new segment (the rest of the old
/// one streams as padding), so that the compared WAL spans segment files.
const SWITCH_WAL_EVERY_ROUNDS: usize = 4;
/// Fewer acknowledged transfers than this means the workload did not really run.
const MIN_ACKNOWLEDGED: usize = 200;

/// Errors the daemons log in this test because of the faults it injects.
const EXPECTED_ERRORS: &[&str] = &[
    // compute_ctl sees its postmaster killed before it is killed itself.
    "PostgreSQL exited",
];

/// splitmix64: small, seeded, good enough to pick faults and transfers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next() % (range.end - range.start)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    OneSafekeeper,
    TwoSafekeepers,
    /// `compute_ctl` and the postmaster, in a random order.
    Compute,
    /// `compute_ctl` only: `strata up` must stop the Postgres it left running.
    ComputeCtlOnly,
}

#[test]
fn acknowledged_transfers_survive_kill_9_of_any_process() {
    let started = Instant::now();
    let seed = std::env::var("STRATA_CHAOS_SEED")
        .ok()
        .map(|s| s.parse().expect("STRATA_CHAOS_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let rounds = std::env::var("STRATA_CHAOS_ROUNDS")
        .ok()
        .map(|s| s.parse().expect("STRATA_CHAOS_ROUNDS is a number"))
        .unwrap_or(DEFAULT_ROUNDS);
    eprintln!("STRATA_CHAOS_SEED={seed} ({rounds} rounds)");
    let mut rng = Rng(seed);

    let bin = PgBin::locate().unwrap();
    let cluster = TestCluster::new();
    let connstr = cluster.up().lines().last().unwrap().to_owned();
    sql(
        &bin,
        &connstr,
        &format!(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
             INSERT INTO accounts SELECT g, {INITIAL_BALANCE} FROM generate_series(1, {ACCOUNTS}) g;
             CREATE TABLE transfers (id bigint PRIMARY KEY, src bigint NOT NULL,
                                     dst bigint NOT NULL, amount bigint NOT NULL);"
        ),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<u64>::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (bin, connstr) = (bin.clone(), connstr.clone());
            let (stop, acknowledged, failed) = (stop.clone(), acknowledged.clone(), failed.clone());
            let mut rng = Rng(seed ^ (client + 1).wrapping_mul(0x1234_5678_9ABC_DEF1));
            thread::spawn(move || {
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    sequence += 1;
                    let id = (client << 32) | sequence;
                    if transfer(&bin, &connstr, &mut rng, id) {
                        acknowledged.lock().unwrap().push(id);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(CLIENT_RETRY_PAUSE);
                    }
                }
            })
        })
        .collect();

    let local = cluster.cluster();
    let ids: Vec<NodeId> = local.config().safekeepers.iter().map(|sk| sk.id).collect();
    let mut counts = [0usize; 4];
    for round in 0..rounds {
        thread::sleep(Duration::from_millis(rng.range(RUN_BETWEEN_FAULTS_MS)));
        if round % SWITCH_WAL_EVERY_ROUNDS == SWITCH_WAL_EVERY_ROUNDS - 1 {
            sql(&bin, &connstr, "SELECT pg_switch_wal()");
        }
        let fault = match rng.range(0..10) {
            0..=3 => Fault::OneSafekeeper,
            4..=5 => Fault::TwoSafekeepers,
            6..=8 => Fault::Compute,
            _ => Fault::ComputeCtlOnly,
        };
        counts[fault as usize] += 1;
        let first = rng.range(0..ids.len() as u64) as usize;
        let victims: Vec<NodeId> = match fault {
            Fault::OneSafekeeper => vec![ids[first]],
            Fault::TwoSafekeepers => vec![ids[first], ids[(first + 1) % ids.len()]],
            Fault::Compute | Fault::ComputeCtlOnly => vec![],
        };
        let mut killed = Vec::new();
        for id in &victims {
            let pid = local.safekeeper_pid(*id).expect("safekeeper running");
            killed.push(u64::from(pid));
        }
        if fault == Fault::ComputeCtlOnly {
            let (compute_ctl, _) = local.compute_pids();
            killed.push(u64::from(compute_ctl.expect("compute_ctl running")));
        }
        if fault == Fault::Compute {
            let (compute_ctl, postmaster) = local.compute_pids();
            let mut pair = [
                u64::from(compute_ctl.expect("compute_ctl running")),
                u64::from(postmaster.expect("postmaster running")),
            ];
            if rng.range(0..2) == 1 {
                pair.reverse();
            }
            killed.extend(pair);
        }
        for &pid in &killed {
            kill9(pid);
        }
        for &pid in &killed {
            wait_gone(pid);
        }
        thread::sleep(Duration::from_millis(rng.range(DOWN_TIME_MS)));
        let up_started = Instant::now();
        let out = cluster.up();
        for id in &victims {
            assert!(out.contains(&format!("safekeeper {id}: started")), "{out}");
        }
        let compute_restarted = out.contains("compute: started");
        let compute_killed = matches!(fault, Fault::Compute | Fault::ComputeCtlOnly);
        assert_eq!(compute_restarted, compute_killed, "{out}");
        eprintln!(
            "round {round:2}: {fault:?} {victims:?} killed {killed:?}; up in {:?}; {} acknowledged, {} failed",
            up_started.elapsed(),
            acknowledged.lock().unwrap().len(),
            failed.load(Ordering::Relaxed)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    eprintln!(
        "faults: {} x one safekeeper, {} x two safekeepers, {} x compute, {} x compute_ctl alone; {:?} so far",
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        started.elapsed()
    );

    // Every acknowledged transfer is there; the money adds up.
    let acknowledged = acknowledged.lock().unwrap().clone();
    let present: HashSet<u64> = sql(&bin, &connstr, "SELECT id FROM transfers")
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    let missing: Vec<&u64> = acknowledged
        .iter()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged transfers are missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        acknowledged.len() >= MIN_ACKNOWLEDGED,
        "only {} transfers acknowledged",
        acknowledged.len()
    );
    let total = sql(&bin, &connstr, "SELECT sum(balance) FROM accounts");
    assert_eq!(total, (ACCOUNTS * INITIAL_BALANCE).to_string());
    let wrong_balances = sql(
        &bin,
        &connstr,
        &format!(
            "SELECT count(*) FROM accounts a WHERE balance <> {INITIAL_BALANCE}
               + coalesce((SELECT sum(amount) FROM transfers WHERE dst = a.id), 0)
               - coalesce((SELECT sum(amount) FROM transfers WHERE src = a.id), 0)"
        ),
    );
    assert_eq!(
        wrong_balances, "0",
        "balances disagree with the transfer log"
    );
    eprintln!(
        "{} transfers acknowledged, all present; {} more committed without an acknowledgement",
        acknowledged.len(),
        present.len() - acknowledged.len()
    );

    // The safekeepers agree on the committed WAL, byte for byte.
    let end: Lsn = sql(
        &bin,
        &connstr,
        "CREATE TABLE done (); SELECT pg_current_wal_flush_lsn()",
    )
    .parse()
    .unwrap();
    let commit = cluster.wait_commit_lsns_equal(end);
    cluster.down();
    let dirs: Vec<_> = ids
        .iter()
        .map(|id| local.safekeeper_timeline_dir(*id))
        .collect();
    let compared = assert_same_wal(&dirs, WAL_SEGMENT_SIZE, commit);
    eprintln!(
        "the {} safekeepers hold the same WAL up to the commit LSN {commit}: {compared} bytes compared",
        ids.len()
    );
    cluster.assert_no_unexpected_errors(EXPECTED_ERRORS);
    eprintln!("bank chaos test took {:?}", started.elapsed());
}

/// One transfer in its own transaction; true when COMMIT returned OK. Rows are locked
/// in id order so that two opposite transfers do not deadlock.
fn transfer(bin: &PgBin, connstr: &str, rng: &mut Rng, id: u64) -> bool {
    let src = rng.range(1..ACCOUNTS + 1);
    let dst = 1 + (src + rng.range(0..ACCOUNTS - 1)) % ACCOUNTS;
    let amount = rng.range(1..100);
    let (first, second) = if src < dst {
        (
            format!("- {amount} WHERE id = {src}"),
            format!("+ {amount} WHERE id = {dst}"),
        )
    } else {
        (
            format!("+ {amount} WHERE id = {dst}"),
            format!("- {amount} WHERE id = {src}"),
        )
    };
    let script = format!(
        "BEGIN;
         UPDATE accounts SET balance = balance {first};
         UPDATE accounts SET balance = balance {second};
         INSERT INTO transfers VALUES ({id}, {src}, {dst}, {amount});
         COMMIT;"
    );
    psql(bin, connstr, &script).success
}
