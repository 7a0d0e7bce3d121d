//! The proposers of the simulation: slots in which real `Proposer`s start, duel,
//! write their own records, crash and give up.

use consensus::messages::{AcceptorMessage, ProposerId};
use consensus::proposer::Mode;
use consensus::storage::AcceptorStorage;
use consensus::term_history::Term;
use consensus::{Proposer, ProposerConfig, ProposerEvent, WalSource};
use postgres_wal::Lsn;

use super::log::{make_record, Log, RECORD_HEADER_BYTES};
use super::network::Payload;
use super::rng::mix;
use super::trace::{Event, Msg};
use super::world::{World, TIMELINE_START};

/// Steps between heartbeats.
const HEARTBEAT_STEPS: u64 = 10;
/// A proposer not elected after this many steps gives up (a new one will try).
const ELECTION_TIMEOUT_STEPS: u64 = 150;
/// A sync-safekeepers run gives up after this many steps.
const SYNC_TIMEOUT_STEPS: u64 = 600;
/// Messages a proposer may have in the network towards one acceptor: the flow
/// control a real transport gives.
const LINK_WINDOW: usize = 8;
/// Proposers stop writing records once the timeline's WAL is this long.
const MAX_TIMELINE_WAL_BYTES: u64 = 256 * 1024;
/// Steps before a closed connection is retried.
const RECONNECT_STEPS: u64 = 20;

/// The WAL a proposer streams: the donor's (copied at the election) then its own.
#[derive(Debug)]
pub struct SimWal(Log);

impl WalSource for SimWal {
    fn end_lsn(&self) -> Lsn {
        self.0.end()
    }

    fn read(
        &mut self,
        begin: Lsn,
        end: Lsn,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.slice(begin, end).to_vec())
    }
}

#[derive(Debug, Clone, Copy)]
struct LinkState {
    up: bool,
    reconnect_at: u64,
}

#[derive(Debug)]
struct Running {
    incarnation: u64,
    proposer: Proposer,
    wal: SimWal,
    mode: Mode,
    started: u64,
    links: Vec<LinkState>,
    next_tick: u64,
    next_record: u64,
    seen_commit: Lsn,
    /// Elected below a commit LSN seen (of a higher term): it must never commit.
    stale: bool,
}

/// Where one proposer process at a time runs (a compute host).
#[derive(Debug)]
pub struct Slot {
    running: Option<Running>,
    start_at: u64,
}

impl Slot {
    pub fn new(start_at: u64) -> Slot {
        Slot {
            running: None,
            start_at,
        }
    }
}

impl World {
    /// Starts, crashes, timeouts, reconnections and random disconnections.
    pub fn proposer_lifecycle(&mut self) -> Result<(), String> {
        for slot in 0..self.slots.len() {
            let Some(r) = &self.slots[slot].running else {
                if self.now >= self.slots[slot].start_at {
                    self.start_proposer(slot)?;
                }
                continue;
            };
            let age = self.now - r.started;
            let unelected = r.proposer.election().is_none() && age > ELECTION_TIMEOUT_STEPS;
            if self.rng.chance(self.params.proposer_crash) {
                self.stop_proposer(slot, "crashed");
            } else if unelected || (r.mode == Mode::SyncSafekeepers && age > SYNC_TIMEOUT_STEPS) {
                self.stop_proposer(slot, "gave up");
            } else {
                self.maintain_links(slot);
            }
        }
        Ok(())
    }

    fn start_proposer(&mut self, slot: usize) -> Result<(), String> {
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let sync = self.rng.chance(self.params.sync_mode);
        let mode = if sync {
            Mode::SyncSafekeepers
        } else {
            Mode::Primary
        };
        let config = ProposerConfig {
            id: self.timeline.id,
            proposer_id: ProposerId(incarnation.into()),
            system_id: self.timeline.system_id,
            pg_version: self.timeline.pg_version,
            wal_segment_size: self.timeline.wal_segment_size,
            acceptor_count: self.params.acceptors,
            mode,
            max_append_bytes: self.params.max_append_bytes,
        };
        let proposer = Proposer::new(config).map_err(|e| format!("proposer config: {e}"))?;
        let link = LinkState {
            up: false,
            reconnect_at: self.now,
        };
        self.slots[slot].running = Some(Running {
            incarnation,
            proposer,
            wal: SimWal(Log::new(TIMELINE_START)),
            mode,
            started: self.now,
            links: vec![link; self.params.acceptors],
            next_tick: self.now + HEARTBEAT_STEPS,
            next_record: 0,
            seen_commit: Lsn::INVALID,
            stale: false,
        });
        self.stats.proposer_starts += 1;
        self.record(Event::ProposerStart {
            slot,
            incarnation,
            sync,
        });
        self.maintain_links(slot);
        Ok(())
    }

    fn stop_proposer(&mut self, slot: usize, why: &'static str) {
        if let Some(r) = self.slots[slot].running.take() {
            self.record(Event::ProposerStop {
                slot,
                incarnation: r.incarnation,
                why,
            });
        }
        self.slots[slot].start_at = self.now + self.rng.between(1, self.params.proposer_idle_steps);
    }

    fn maintain_links(&mut self, slot: usize) {
        for a in 0..self.params.acceptors {
            let acceptor_up = self.acceptors[a].is_up();
            let Some(r) = &mut self.slots[slot].running else {
                return;
            };
            let link = r.links[a];
            if !link.up && acceptor_up && self.now >= link.reconnect_at {
                r.links[a].up = true;
                r.proposer.connected(a);
                self.record(Event::Connect { slot, acceptor: a });
            } else if link.up && self.rng.chance(self.params.disconnect) {
                self.close_link(slot, None, a);
            }
        }
    }

    /// Close the connection between `slot`'s proposer (if it is still process
    /// `incarnation`) and acceptor `a`; it is retried later.
    pub fn close_link(&mut self, slot: usize, incarnation: Option<u64>, a: usize) {
        let reconnect_at = self.now + self.rng.between(1, RECONNECT_STEPS);
        let Some(r) = &mut self.slots[slot].running else {
            return;
        };
        if incarnation.is_some_and(|i| i != r.incarnation) || !r.links[a].up {
            return;
        }
        r.links[a] = LinkState {
            up: false,
            reconnect_at,
        };
        r.proposer.disconnected(a);
        self.record(Event::Disconnect { slot, acceptor: a });
    }

    /// Heartbeats, new records, and sending what each proposer has to send.
    pub fn run_proposers(&mut self) -> Result<(), String> {
        for slot in 0..self.slots.len() {
            let write = self.rng.chance(self.params.record);
            let len = self.record_len();
            let Some(r) = &mut self.slots[slot].running else {
                continue;
            };
            if self.now >= r.next_tick {
                r.proposer.tick();
                r.next_tick = self.now + HEARTBEAT_STEPS;
            }
            let elected = r.proposer.election().is_some();
            let room = r.wal.0.end().0 - TIMELINE_START.0 < MAX_TIMELINE_WAL_BYTES;
            if write && elected && r.mode == Mode::Primary && room {
                let tag = mix((r.incarnation << 32) | r.next_record) as u32;
                r.next_record += 1;
                r.wal.0.append(&make_record(tag, len));
            }
            self.pump(slot)?;
        }
        Ok(())
    }

    /// Mostly small records, some spanning several appends.
    fn record_len(&mut self) -> usize {
        let len = match self.rng.below(100) {
            0..=79 => self.rng.between(8, 200),
            80..=96 => self.rng.between(200, 2000),
            _ => self.rng.between(2000, 16 * 1024),
        };
        (len as usize).max(RECORD_HEADER_BYTES)
    }

    fn pump(&mut self, slot: usize) -> Result<(), String> {
        for a in 0..self.params.acceptors {
            loop {
                let Some(r) = &mut self.slots[slot].running else {
                    return Ok(());
                };
                if !r.links[a].up || self.net.in_flight(slot, a) >= LINK_WINDOW {
                    break;
                }
                let msg = match r.proposer.next_message(a, &mut r.wal) {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(e) => return Err(format!("proposer in slot {slot} failed: {e}")),
                };
                let incarnation = r.incarnation;
                let now = self.now;
                self.net.send(
                    &mut self.rng,
                    now,
                    slot,
                    incarnation,
                    a,
                    Payload::ToAcceptor(msg),
                );
            }
        }
        Ok(())
    }

    pub fn deliver_to_proposer(
        &mut self,
        slot: usize,
        incarnation: u64,
        a: usize,
        msg: AcceptorMessage,
    ) -> Result<(), String> {
        let Some(r) = &mut self.slots[slot].running else {
            return Ok(());
        };
        if r.incarnation != incarnation {
            return Ok(()); // an answer to a process that is gone
        }
        self.trace.push(
            self.now,
            Event::ToProposer {
                slot,
                incarnation,
                acceptor: a,
                msg: Msg::of_acceptor(&msg),
            },
        );
        match r.proposer.handle(a, msg) {
            Ok(Some(event)) => self.on_event(slot, event),
            Ok(None) => Ok(()),
            Err(e) => Err(format!(
                "proposer in slot {slot} refused a reply of acceptor {a}: {e}"
            )),
        }
    }

    fn on_event(&mut self, slot: usize, event: ProposerEvent) -> Result<(), String> {
        let stale = self.slots[slot].running.as_ref().is_some_and(|r| r.stale);
        if stale
            && matches!(
                event,
                ProposerEvent::CommitLsn(_) | ProposerEvent::Synced(_)
            )
        {
            return Err(format!(
                "proposer {slot}, elected below a later term's commit, committed: {event:?}"
            ));
        }
        match event {
            ProposerEvent::Elected {
                term,
                start_lsn,
                donor,
            } => {
                self.record(Event::Elected {
                    slot,
                    term,
                    start: start_lsn,
                    donor,
                });
                self.on_elected(slot, term, start_lsn, donor)
            }
            ProposerEvent::CommitLsn(lsn) => {
                self.stats.commits += 1;
                self.record(Event::Commit { slot, lsn });
                Ok(())
            }
            ProposerEvent::Synced(lsn) => {
                // A quorum reported a commit LSN at or above it: it must be known committed.
                if lsn > self.oracle.end() {
                    return Err(format!(
                        "proposer {slot} synced at {lsn}, beyond the committed WAL"
                    ));
                }
                self.stats.syncs += 1;
                self.record(Event::Synced { slot, lsn });
                self.stop_proposer(slot, "synced");
                Ok(())
            }
            ProposerEvent::Lost { .. } => {
                self.stats.fenced += 1;
                self.stop_proposer(slot, "fenced by a higher term");
                Ok(())
            }
        }
    }

    /// At most one proposer is elected per term, and it starts at or above every
    /// commit LSN of lower terms (Raft's leader completeness).
    ///
    /// It may start below a commit LSN of a *higher* term: its votes were promises
    /// collected over time, and some voters moved on to later terms since. Such a
    /// stale proposer is legal in Paxos and harmless because it can never commit (its
    /// quorum meets the later commit's quorum, whose acceptors refuse its term): that
    /// is checked too. Then it fetches the donor's WAL below its start, as
    /// `compute_ctl` would: refused if the donor moved past our term (its WAL may have
    /// been truncated since it voted; we have lost anyway).
    fn on_elected(
        &mut self,
        slot: usize,
        term: Term,
        start: Lsn,
        donor: usize,
    ) -> Result<(), String> {
        let incarnation = self.slots[slot]
            .running
            .as_ref()
            .map_or(0, |r| r.incarnation);
        if let Some(other) = self.elected_terms.insert(term, incarnation) {
            return Err(format!(
                "proposers {other} and {incarnation} were both elected in term {term}"
            ));
        }
        let earlier_commit = self
            .commits_by_term
            .range(..term)
            .map(|(_, &lsn)| lsn)
            .max();
        if let Some(commit) = earlier_commit.filter(|&commit| start < commit) {
            return Err(format!("elected in term {term} at {start}, below the commit LSN {commit} of an earlier term"));
        }
        if start < self.oracle.end() {
            self.stats.stale_elections += 1;
            if let Some(r) = &mut self.slots[slot].running {
                r.stale = true;
            }
        }
        self.stats.elections += 1;
        let storage = self.acceptors[donor].storage();
        if storage.state().term > term {
            self.stop_proposer(slot, "donor moved to a higher term");
            return Ok(());
        }
        if storage.flush_lsn() < start {
            return Err(format!(
                "donor {donor} lost the WAL it voted with (up to {start})"
            ));
        }
        let mut log = Log::new(TIMELINE_START);
        log.append(storage.log().slice(TIMELINE_START, start));
        if let Some(r) = &mut self.slots[slot].running {
            r.wal = SimWal(log);
        }
        Ok(())
    }

    /// A proposer's commit LSN never goes back, and what it covers agrees with every
    /// other node's.
    pub fn check_proposer(&mut self, slot: usize) -> Result<(), String> {
        let Some(r) = &mut self.slots[slot].running else {
            return Ok(());
        };
        let commit = r.proposer.commit_lsn();
        if commit < r.seen_commit {
            return Err(format!(
                "proposer {slot}'s commit LSN went back to {commit}"
            ));
        }
        if commit > r.seen_commit {
            let who = format!("proposer {slot} (process {})", r.incarnation);
            self.oracle.observe(&who, commit, &r.wal.0)?;
            r.seen_commit = commit;
            if let Some(term) = r.proposer.term() {
                let best = self.commits_by_term.entry(term).or_default();
                *best = (*best).max(commit);
            }
        }
        Ok(())
    }
}
