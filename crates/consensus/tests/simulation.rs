//! Seeded deterministic simulation of the consensus protocol: 3 or 5 real acceptors on
//! in-memory disks that lose unflushed WAL on a crash, 2 or 3 dueling proposers (primary
//! and sync-safekeepers) each writing its own records, a network that drops, delays,
//! duplicates and reorders, random crashes, restarts, disconnections and storage
//! failures. After every step it checks: one proposer elected per term; committed WAL
//! identical wherever it is claimed; committed WAL held by a quorum; commit LSNs never
//! decreasing; every elected start LSN at or above every commit LSN seen.
//!
//! `cargo test -p consensus` runs 2,000 seeds of 2,000 steps. Environment:
//! - `STRATA_SIM_SEEDS=N` runs seeds 1..=N;
//! - `STRATA_SIM_SEED=S` replays seed S alone, exactly;
//! - `STRATA_SIM_STEPS=K` changes the steps per seed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use sim::world::{run_seed, Stats};

const DEFAULT_SEEDS: u64 = 2000;
const DEFAULT_STEPS_PER_SEED: u64 = 2000;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

/// Run `seeds` on every core; stop at the first failure and return its report.
fn run_all(seeds: &[u64], steps: u64) -> (Stats, Option<String>) {
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let total = Mutex::new(Stats::default());
    let failure = Mutex::new(None);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(seeds.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&seed) = seeds.get(i) else { break };
                    match run_seed(seed, steps) {
                        Ok(stats) => total.lock().unwrap().add(&stats),
                        Err(report) => {
                            failed.store(true, Ordering::Relaxed);
                            failure.lock().unwrap().get_or_insert(report);
                        }
                    }
                }
            });
        }
    });
    (total.into_inner().unwrap(), failure.into_inner().unwrap())
}

#[test]
fn simulation() {
    let steps = env_u64("STRATA_SIM_STEPS").unwrap_or(DEFAULT_STEPS_PER_SEED);
    let seeds: Vec<u64> = match env_u64("STRATA_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_u64("STRATA_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let started = Instant::now();
    let (t, failure) = run_all(&seeds, steps);
    if let Some(report) = failure {
        panic!("{report}");
    }
    eprintln!(
        "simulation: {} seeds, {} steps, {} elections ({} stale), {} commits ({} KiB committed), \
         {} syncs, {} fenced, {} proposer starts, {} acceptor crashes, {} storage failures, \
         {} refusals, {} messages ({} dropped, {} duplicated) in {:.1} s",
        t.seeds,
        t.steps,
        t.elections,
        t.stale_elections,
        t.commits,
        t.committed_bytes / 1024,
        t.syncs,
        t.fenced,
        t.proposer_starts,
        t.acceptor_crashes,
        t.storage_failures,
        t.refusals,
        t.messages,
        t.dropped,
        t.duplicated,
        started.elapsed().as_secs_f64()
    );
    // The simulation must exercise the protocol, not just survive it.
    assert_eq!(t.seeds, seeds.len() as u64);
    if seeds.len() >= 100 {
        assert!(t.elections >= t.seeds, "too few elections: {t:?}");
        assert!(
            t.commits > t.seeds && t.syncs > 0 && t.fenced > 0,
            "too little progress: {t:?}"
        );
        assert!(
            t.acceptor_crashes > 0 && t.storage_failures > 0 && t.refusals > 0,
            "{t:?}"
        );
    }
}
