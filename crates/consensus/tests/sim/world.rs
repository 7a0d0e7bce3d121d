//! The simulated cluster: acceptors, proposer slots, the network, and one step of
//! time. Everything is decided by the seeded PRNG, so a seed replays exactly.

use std::collections::{BTreeMap, HashMap};
use std::panic::{self, AssertUnwindSafe};

use consensus::limits::MAX_WAL_BYTES_PER_APPEND;
use consensus::storage::PersistentState;
use consensus::term_history::Term;
use postgres_wal::Lsn;
use strata_ids::{TenantId, TenantTimelineId, TimelineId};

use super::acceptors::AcceptorNode;
use super::checks::Oracle;
use super::network::{Network, NetworkParams, Packet, Payload};
use super::proposers::Slot;
use super::rng::Rng;
use super::trace::{Event, Trace};

/// Where the simulated timeline's WAL begins (an arbitrary, non-zero LSN).
pub const TIMELINE_START: Lsn = Lsn(0x0100_0028);

/// The knobs of one run, drawn from its seed so that seeds explore different regimes.
#[derive(Clone, Debug)]
pub struct Params {
    pub acceptors: usize,
    pub slots: usize,
    pub max_append_bytes: usize,
    pub network: NetworkParams,
    pub acceptor_crash: f64,
    pub acceptor_downtime_steps: u64,
    pub proposer_crash: f64,
    pub proposer_idle_steps: u64,
    pub disconnect: f64,
    pub storage_failure: f64,
    pub flush: f64,
    pub record: f64,
    pub sync_mode: f64,
}

impl Params {
    fn draw(rng: &mut Rng) -> Params {
        let append_sizes = [64, 200, 1024, 8192, MAX_WAL_BYTES_PER_APPEND];
        Params {
            acceptors: if rng.chance(0.5) { 3 } else { 5 },
            slots: rng.between(2, 3) as usize,
            max_append_bytes: append_sizes[rng.below(append_sizes.len() as u64) as usize],
            network: NetworkParams {
                drop: 0.05 * unit(rng),
                duplicate: 0.03 * unit(rng),
                reorder: 0.05 * unit(rng),
                late: 0.01 * unit(rng),
                max_delay_steps: rng.between(1, 5),
            },
            acceptor_crash: 0.001 + 0.006 * unit(rng),
            acceptor_downtime_steps: rng.between(5, 80),
            proposer_crash: 0.001 + 0.004 * unit(rng),
            proposer_idle_steps: rng.between(20, 300),
            disconnect: 0.003 * unit(rng),
            storage_failure: 0.002 * unit(rng),
            flush: 0.4 + 0.5 * unit(rng),
            record: 0.1 + 0.5 * unit(rng),
            sync_mode: 0.3,
        }
    }
}

fn unit(rng: &mut Rng) -> f64 {
    rng.below(1001) as f64 / 1000.0
}

/// What a run did, summed over seeds for the summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub seeds: u64,
    pub steps: u64,
    pub elections: u64,
    pub stale_elections: u64,
    pub commits: u64,
    pub committed_bytes: u64,
    pub syncs: u64,
    pub fenced: u64,
    pub acceptor_crashes: u64,
    pub storage_failures: u64,
    pub proposer_starts: u64,
    pub refusals: u64,
    pub messages: u64,
    pub dropped: u64,
    pub duplicated: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.seeds += other.seeds;
        self.steps += other.steps;
        self.elections += other.elections;
        self.stale_elections += other.stale_elections;
        self.commits += other.commits;
        self.committed_bytes += other.committed_bytes;
        self.syncs += other.syncs;
        self.fenced += other.fenced;
        self.acceptor_crashes += other.acceptor_crashes;
        self.storage_failures += other.storage_failures;
        self.proposer_starts += other.proposer_starts;
        self.refusals += other.refusals;
        self.messages += other.messages;
        self.dropped += other.dropped;
        self.duplicated += other.duplicated;
    }
}

#[derive(Debug)]
pub struct World {
    pub rng: Rng,
    pub now: u64,
    pub params: Params,
    pub timeline: PersistentState,
    pub acceptors: Vec<AcceptorNode>,
    pub slots: Vec<Slot>,
    pub net: Network,
    pub oracle: Oracle,
    /// Which proposer process won each term.
    pub elected_terms: HashMap<Term, u64>,
    /// The highest commit LSN each term's proposer reached.
    pub commits_by_term: BTreeMap<Term, Lsn>,
    pub trace: Trace,
    pub stats: Stats,
    pub next_incarnation: u64,
}

/// Run one seed for `steps` steps; `Err` holds a report naming the seed, the step and
/// the last events.
pub fn run_seed(seed: u64, steps: u64) -> Result<Stats, String> {
    let mut world = World::new(seed);
    for _ in 0..steps {
        let step = panic::catch_unwind(AssertUnwindSafe(|| world.step()));
        let failure = match step {
            Ok(Ok(())) => continue,
            Ok(Err(check)) => check,
            Err(panic) => panic_message(panic.as_ref()),
        };
        return Err(world.report(seed, &failure));
    }
    match panic::catch_unwind(AssertUnwindSafe(|| world.final_checks())) {
        Ok(Ok(())) => {}
        Ok(Err(check)) => return Err(world.report(seed, &check)),
        Err(panic) => return Err(world.report(seed, &panic_message(panic.as_ref()))),
    }
    let mut stats = world.stats;
    stats.seeds = 1;
    stats.steps = world.now;
    stats.committed_bytes = world.oracle.end().0 - TIMELINE_START.0;
    stats.messages = world.net.stats.sent;
    stats.dropped = world.net.stats.dropped;
    stats.duplicated = world.net.stats.duplicated;
    Ok(stats)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()));
    format!(
        "panic: {}",
        text.unwrap_or_else(|| "(no message)".to_owned())
    )
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let params = Params::draw(&mut rng);
        let id = TenantTimelineId {
            tenant_id: TenantId(0x5157),
            timeline_id: TimelineId(seed.into()),
        };
        let timeline =
            PersistentState::new(id, 7_000_000_000 + seed, 150_018, 1 << 24, TIMELINE_START);
        World {
            acceptors: (0..params.acceptors)
                .map(|_| AcceptorNode::new(&timeline))
                .collect(),
            slots: (0..params.slots)
                .map(|_| Slot::new(rng.between(1, 50)))
                .collect(),
            net: Network::new(params.network, params.slots, params.acceptors),
            oracle: Oracle::new(TIMELINE_START),
            elected_terms: HashMap::new(),
            commits_by_term: BTreeMap::new(),
            trace: Trace::default(),
            stats: Stats::default(),
            next_incarnation: 1,
            now: 0,
            timeline,
            params,
            rng,
        }
    }

    /// One step of time: faults, deliveries, flushes, proposers' work, then every check.
    fn step(&mut self) -> Result<(), String> {
        self.now += 1;
        self.acceptor_faults()?;
        self.proposer_lifecycle()?;
        for packet in self.net.take_due(self.now) {
            self.deliver(packet)?;
        }
        self.flush_acceptors()?;
        self.run_proposers()?;
        self.check_step()
    }

    fn deliver(&mut self, packet: Packet) -> Result<(), String> {
        let Packet {
            slot,
            incarnation,
            acceptor,
            payload,
            ..
        } = packet;
        match payload {
            Payload::ToAcceptor(msg) => self.deliver_to_acceptor(slot, incarnation, acceptor, msg),
            Payload::ToProposer(msg) => self.deliver_to_proposer(slot, incarnation, acceptor, msg),
        }
    }

    pub fn quorum(&self) -> usize {
        self.params.acceptors / 2 + 1
    }

    /// After every step: the invariants of the protocol.
    fn check_step(&mut self) -> Result<(), String> {
        for a in 0..self.acceptors.len() {
            self.check_acceptor(a)?;
        }
        for s in 0..self.slots.len() {
            self.check_proposer(s)?;
        }
        self.check_committed_on_quorum()
    }

    /// Committed WAL is never truncated from a quorum: a quorum holds the whole
    /// committed prefix durably (crashed acceptors' disks count).
    fn check_committed_on_quorum(&self) -> Result<(), String> {
        let end = self.oracle.end();
        let hash = self.oracle.hash_at(end);
        let holders = self
            .acceptors
            .iter()
            .filter(|node| node.storage().durable_hash_at(end) == hash)
            .count();
        if holders < self.quorum() {
            return Err(format!(
                "committed WAL up to {end} is held by {holders} acceptors, fewer than a quorum"
            ));
        }
        Ok(())
    }

    /// At the end: each acceptor's WAL up to its commit LSN equals the committed bytes,
    /// byte for byte (the hashes used during the run only sample each record).
    fn final_checks(&self) -> Result<(), String> {
        for (a, node) in self.acceptors.iter().enumerate() {
            let commit = node.commit_lsn();
            let theirs = node.storage().log().slice(TIMELINE_START, commit);
            let ours = self.oracle.log().slice(TIMELINE_START, commit);
            if theirs != ours {
                return Err(format!(
                    "acceptor {a}'s committed bytes differ from the oracle's"
                ));
            }
        }
        Ok(())
    }

    fn report(&self, seed: u64, failure: &str) -> String {
        format!(
            "simulation seed {seed} failed at step {}: {failure}\n\
             replay with STRATA_SIM_SEED={seed}\nparams: {:?}\nlast events:\n{}",
            self.now, self.params, self.trace
        )
    }

    pub fn record(&mut self, event: Event) {
        self.trace.push(self.now, event);
    }
}
