//! The acceptors of the simulation: real `Acceptor`s over `SimStorage`, crashed,
//! restarted and failed at random.

use consensus::messages::{AcceptorMessage, ProposerMessage};
use consensus::storage::{AcceptorStorage, PersistentState};
use consensus::term_history::Term;
use consensus::{Acceptor, AcceptorError, Refusal};
use postgres_wal::Lsn;
use strata_ids::NodeId;

use super::network::Payload;
use super::storage::SimStorage;
use super::trace::{Event, Msg};
use super::world::World;

/// Chance per flush that the lazily persisted positions are persisted too.
const PERSIST_LSNS: f64 = 0.05;

/// One acceptor: running (`up`) or crashed with its disk (`down`); exactly one is set.
#[derive(Debug)]
pub struct AcceptorNode {
    up: Option<Acceptor<SimStorage>>,
    down: Option<SimStorage>,
    restart_at: u64,
    /// The proposer process whose appends the next flush answers.
    last_appender: Option<(usize, u64)>,
    /// What the checks saw last: they must never go backwards.
    seen_commit: Lsn,
    seen_persisted_term: Term,
    seen_persisted_commit: Lsn,
    /// The term whose election it last accepted, and its flush LSN since: within one
    /// elected term the flush LSN never goes back (proposers count acknowledgements
    /// as permanent).
    seen_elected: (Term, Lsn),
}

impl AcceptorNode {
    pub fn new(timeline: &PersistentState) -> AcceptorNode {
        AcceptorNode {
            up: None,
            down: Some(SimStorage::create(timeline.clone())),
            restart_at: 0,
            last_appender: None,
            seen_commit: timeline.commit_lsn,
            seen_persisted_term: timeline.term,
            seen_persisted_commit: timeline.commit_lsn,
            seen_elected: (Term(0), timeline.timeline_start_lsn),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.is_some()
    }

    pub fn storage(&self) -> &SimStorage {
        match (&self.up, &self.down) {
            (Some(acceptor), _) => acceptor.storage(),
            (None, Some(storage)) => storage,
            (None, None) => unreachable!("an acceptor is either up or down"),
        }
    }

    /// The commit LSN it would act on: in memory if up, persisted if down.
    pub fn commit_lsn(&self) -> Lsn {
        match &self.up {
            Some(acceptor) => acceptor.commit_lsn(),
            None => self.storage().state().commit_lsn,
        }
    }
}

/// Refusals that correct proposers cause only through the network's tricks (stale,
/// duplicated, reordered or lost messages). Any other refusal is a protocol bug.
fn refusal_is_expected(r: &Refusal) -> bool {
    matches!(
        r,
        Refusal::StartMismatch { .. }
            | Refusal::NotElected { .. }
            | Refusal::Gap { .. }
            | Refusal::Overwrite { .. }
    )
}

impl World {
    /// Random crashes, storage failures and restarts.
    pub fn acceptor_faults(&mut self) -> Result<(), String> {
        for a in 0..self.acceptors.len() {
            if self.acceptors[a].is_up() {
                if self.rng.chance(self.params.acceptor_crash) {
                    self.crash_acceptor(a);
                } else if self.rng.chance(self.params.storage_failure) {
                    self.fail_next_write(a);
                }
            } else if self.now >= self.acceptors[a].restart_at {
                self.restart_acceptor(a)?;
            }
        }
        Ok(())
    }

    fn fail_next_write(&mut self, a: usize) {
        if let Some(acceptor) = &self.acceptors[a].up {
            acceptor.storage().failure_switch().set(true);
        }
    }

    pub fn crash_acceptor(&mut self, a: usize) {
        let Some(acceptor) = self.acceptors[a].up.take() else {
            return;
        };
        let mut storage = acceptor.into_storage();
        storage.crash();
        let node = &mut self.acceptors[a];
        // The in-memory commit LSN dies with the process; the persisted one remains.
        node.seen_commit = storage.state().commit_lsn;
        node.down = Some(storage);
        node.last_appender = None;
        node.restart_at = self.now + self.rng.between(1, self.params.acceptor_downtime_steps);
        self.stats.acceptor_crashes += 1;
        self.record(Event::AcceptorCrash { acceptor: a });
        for slot in 0..self.slots.len() {
            self.close_link(slot, None, a);
        }
    }

    fn restart_acceptor(&mut self, a: usize) -> Result<(), String> {
        let storage = self.acceptors[a].down.take().expect("down");
        let acceptor = Acceptor::new(NodeId(a as u64), storage)
            .map_err(|e| format!("acceptor {a} does not reopen: {e}"))?;
        if acceptor.commit_lsn() != self.acceptors[a].seen_commit {
            return Err(format!(
                "acceptor {a} reopened with another commit LSN than persisted"
            ));
        }
        self.record(Event::AcceptorRestart {
            acceptor: a,
            term: acceptor.term(),
            flush: acceptor.flush_lsn(),
            commit: acceptor.commit_lsn(),
        });
        self.acceptors[a].up = Some(acceptor);
        Ok(())
    }

    pub fn deliver_to_acceptor(
        &mut self,
        slot: usize,
        incarnation: u64,
        a: usize,
        msg: ProposerMessage,
    ) -> Result<(), String> {
        let Some(acceptor) = self.acceptors[a].up.as_mut() else {
            return Ok(()); // nobody listens
        };
        let is_append = matches!(msg, ProposerMessage::Append(_));
        self.trace.push(
            self.now,
            Event::ToAcceptor {
                slot,
                incarnation,
                acceptor: a,
                msg: Msg::of_proposer(&msg),
            },
        );
        match acceptor.handle(msg) {
            Ok(Some(reply)) => self.reply(slot, incarnation, a, reply),
            Ok(None) => {
                if is_append {
                    self.acceptors[a].last_appender = Some((slot, incarnation));
                }
            }
            Err(AcceptorError::Refused(r)) => {
                if !refusal_is_expected(&r) {
                    return Err(format!(
                        "acceptor {a} refused with a protocol violation: {r}"
                    ));
                }
                self.stats.refusals += 1;
                self.record(Event::Refused {
                    slot,
                    acceptor: a,
                    why: r.to_string(),
                });
                // The daemon closes the connection that broke the protocol.
                self.close_link(slot, Some(incarnation), a);
            }
            Err(e) => self.storage_failed(a, &e)?,
        }
        Ok(())
    }

    /// The acceptors whose inbound queue is (randomly) empty flush and answer.
    pub fn flush_acceptors(&mut self) -> Result<(), String> {
        for a in 0..self.acceptors.len() {
            if !self.rng.chance(self.params.flush) {
                continue;
            }
            let Some(acceptor) = self.acceptors[a].up.as_mut() else {
                continue;
            };
            // Now and then the daemon persists the lazy positions (as on a shutdown).
            let persisted = if self.rng.chance(PERSIST_LSNS) {
                acceptor.persist_lsns()
            } else {
                Ok(())
            };
            match persisted.and_then(|()| acceptor.flush()) {
                Ok(Some(reply)) => {
                    if let Some((slot, incarnation)) = self.acceptors[a].last_appender {
                        self.reply(slot, incarnation, a, reply);
                    }
                }
                Ok(None) => {}
                Err(e) => self.storage_failed(a, &e)?,
            }
        }
        Ok(())
    }

    /// A failed storage: the daemon drops the acceptor and reopens the timeline, which
    /// is a crash for everything that was not durable.
    fn storage_failed(&mut self, a: usize, e: &AcceptorError) -> Result<(), String> {
        if !matches!(e, AcceptorError::Storage(_)) {
            return Err(format!("acceptor {a} failed unexpectedly: {e}"));
        }
        self.stats.storage_failures += 1;
        self.record(Event::StorageFailure { acceptor: a });
        self.crash_acceptor(a);
        self.acceptors[a].restart_at = self.now + 1;
        Ok(())
    }

    fn reply(&mut self, slot: usize, incarnation: u64, a: usize, reply: AcceptorMessage) {
        let now = self.now;
        self.net.send(
            &mut self.rng,
            now,
            slot,
            incarnation,
            a,
            Payload::ToProposer(reply),
        );
    }

    /// Persisted term and commit LSN never go back; the commit LSN is never persisted
    /// above the durable WAL; in memory it never goes back either (except to the
    /// persisted one on a restart), and what it covers agrees with every other node.
    pub fn check_acceptor(&mut self, a: usize) -> Result<(), String> {
        let node = &self.acceptors[a];
        let storage = node.storage();
        let persisted = storage.state();
        if persisted.term < node.seen_persisted_term {
            return Err(format!(
                "acceptor {a}'s persisted term went back to {}",
                persisted.term
            ));
        }
        if persisted.commit_lsn < node.seen_persisted_commit {
            return Err(format!(
                "acceptor {a}'s persisted commit LSN went back to {}",
                persisted.commit_lsn
            ));
        }
        if persisted.commit_lsn > storage.flush_lsn() {
            return Err(format!(
                "acceptor {a} persisted commit LSN {} above its flushed WAL",
                persisted.commit_lsn
            ));
        }
        let (term, persisted_commit) = (persisted.term, persisted.commit_lsn);
        let elected = persisted.term_history.last().map_or(Term(0), |s| s.term);
        let flush = storage.flush_lsn();
        if elected == node.seen_elected.0 && flush < node.seen_elected.1 {
            return Err(format!(
                "acceptor {a} lost acknowledged WAL of term {elected}: flush LSN {} -> {flush}",
                node.seen_elected.1
            ));
        }
        let commit = node.commit_lsn();
        if commit < node.seen_commit {
            return Err(format!(
                "acceptor {a}'s commit LSN went back from {} to {commit}",
                node.seen_commit
            ));
        }
        if commit > storage.flush_lsn() {
            return Err(format!(
                "acceptor {a}'s commit LSN {commit} is above its flush LSN"
            ));
        }
        if commit > node.seen_commit {
            let who = format!("acceptor {a}");
            self.oracle
                .observe(&who, commit, self.acceptors[a].storage().log())?;
        }
        let node = &mut self.acceptors[a];
        node.seen_commit = commit;
        node.seen_persisted_term = term;
        node.seen_persisted_commit = persisted_commit;
        node.seen_elected = (elected, flush);
        Ok(())
    }
}
