//! The driver of [`consensus::Proposer`]: it owns the connections to the safekeepers
//! and the WAL source, feeds the proposer their events, sends what it says to send,
//! and reports elections, commit LSNs and the end (synced, or fenced) to the command
//! that started it.
//!
//! One task runs the proposer (it is a pure state machine: no locks); one task per
//! safekeeper owns that safekeeper's gRPC stream ([`connection`]). All of them talk to
//! the driver through one bounded event queue. Per safekeeper at most
//! [`OUTBOUND_QUEUE_LEN`](crate::limits::OUTBOUND_QUEUE_LEN) messages wait to be sent,
//! so a slow safekeeper holds back only its own stream; the proposer's cursor for it
//! simply stays behind, and its missing WAL is read again when it catches up.
//!
//! ```text
//! safekeeper tasks ──Event──▶ driver ──▶ Proposer::handle / next_message
//!        ▲                       │  ├──▶ commit LSN (watch) ──▶ replication stream ──▶ PostgreSQL
//!        └───── outbound queue ◀─┘  └──▶ Report (elected, synced, lost, failed)
//! ```

pub mod connection;
pub mod wal;

use std::time::Instant;

use consensus::messages::{AcceptorMessage, ProposerId, ProposerMessage};
use consensus::proposer::Mode;
use consensus::term_history::Term;
use consensus::{Proposer, ProposerConfig, ProposerError, ProposerEvent};
use postgres_wal::Lsn;
use strata_proto::convert::proposer_message_into_proto;
use strata_proto::safekeeper as pb;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::limits::{EVENT_QUEUE_LEN, GREETING_GRACE, HEARTBEAT_INTERVAL, WAL_READ_RETRY};
use crate::safekeepers::Safekeepers;
use connection::Event;
use wal::ProposerWal;

/// What the driver tells the command that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// We won `term`; the compute must continue the log at `start_lsn`. The donor's
    /// last log term is what the lineage check needs.
    Elected {
        term: Term,
        start_lsn: Lsn,
        donor: usize,
        donor_last_term: Term,
    },
    /// Sync-safekeepers is done at this LSN.
    Synced(Lsn),
    /// A safekeeper has a higher term: we are fenced.
    Lost { term: Term },
    /// The proposer cannot go on (the voters disagree on the timeline, its history
    /// is full...).
    Failed(String),
}

/// The proposer's parameters.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub proposer_id: ProposerId,
    pub system_id: u64,
    pub pg_version: u32,
    pub wal_segment_size: u32,
    pub mode: Mode,
}

/// What the driver knows about each safekeeper, for logs and error messages.
#[derive(Debug, Clone, Default)]
pub struct PeerStatus {
    pub connected: bool,
    pub last_error: Option<String>,
}

/// The running driver, as its command holds it. Dropping it stops the driver and
/// every safekeeper connection.
#[derive(Debug)]
pub struct DriverHandle {
    pub reports: mpsc::Receiver<Report>,
    /// The quorum commit LSN of our term (0 until there is one).
    pub commit_lsn: watch::Receiver<Lsn>,
    /// Hints the driver that new WAL is in the buffer.
    pub events: mpsc::Sender<Event>,
    pub peers: watch::Receiver<Vec<PeerStatus>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DriverHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DriverHandle {
    /// One line per safekeeper that is not connected, with why.
    pub fn describe_peers(&self, safekeepers: &Safekeepers) -> String {
        let peers = self.peers.borrow();
        let lines: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let state = if p.connected { "connected" } else { "down" };
                match &p.last_error {
                    Some(e) if !p.connected => format!("{} {state}: {e}", safekeepers.addr(i)),
                    _ => format!("{} {state}", safekeepers.addr(i)),
                }
            })
            .collect();
        lines.join("; ")
    }

    /// Tell the driver WAL arrived (dropped when its queue is full: it is busy then).
    pub fn notify_new_wal(&self) {
        let _ = self.events.try_send(Event::NewWal);
    }
}

/// Start the driver and one connection task per safekeeper.
pub fn start(
    config: DriverConfig,
    safekeepers: Safekeepers,
    wal: ProposerWal,
) -> Result<DriverHandle, ProposerError> {
    let n = safekeepers.len();
    let proposer = Proposer::new(ProposerConfig {
        id: safekeepers.id(),
        proposer_id: config.proposer_id,
        system_id: config.system_id,
        pg_version: config.pg_version,
        wal_segment_size: config.wal_segment_size,
        acceptor_count: n,
        mode: config.mode,
        max_append_bytes: consensus::limits::MAX_WAL_BYTES_PER_APPEND,
    })?;
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE_LEN);
    let (reports_tx, reports_rx) = mpsc::channel(16);
    let (commit_tx, commit_rx) = watch::channel(Lsn::INVALID);
    let (peers_tx, peers_rx) = watch::channel(vec![PeerStatus::default(); n]);
    let mut connections = JoinSet::new();
    for i in 0..n {
        let span = tracing::info_span!("safekeeper", addr = %safekeepers.addr(i));
        connections
            .spawn(connection::run(i, safekeepers.clone(), events_tx.clone()).instrument(span));
    }
    let driver = Driver {
        proposer,
        wal,
        links: (0..n).map(|_| Link::Down { epoch: 0 }).collect(),
        events: events_rx,
        reports: reports_tx,
        commit: commit_tx,
        peers: peers_tx,
        safekeepers,
        connections,
        held_greetings: Vec::new(),
        quorum_greeted_at: None,
    };
    let task = tokio::spawn(driver.run().in_current_span());
    Ok(DriverHandle {
        reports: reports_rx,
        commit_lsn: commit_rx,
        events: events_tx,
        peers: peers_rx,
        task,
    })
}

#[derive(Debug)]
enum Link {
    /// No stream; events of `epoch` and older are stale.
    Down { epoch: u64 },
    Up {
        epoch: u64,
        outbound: mpsc::Sender<pb::ProposerMessage>,
        /// We sent it `ProposerElected`: its acknowledgements in our term are of our log.
        elected_sent: bool,
        /// A WAL read for it failed: do not feed it before this instant.
        paused_until: Option<Instant>,
    },
}

impl Link {
    fn epoch(&self) -> u64 {
        match self {
            Link::Down { epoch } | Link::Up { epoch, .. } => *epoch,
        }
    }
}

struct Driver {
    proposer: Proposer,
    wal: ProposerWal,
    links: Vec<Link>,
    events: mpsc::Receiver<Event>,
    reports: mpsc::Sender<Report>,
    commit: watch::Sender<Lsn>,
    peers: watch::Sender<Vec<PeerStatus>>,
    safekeepers: Safekeepers,
    /// Aborted when the driver ends (dropped with it).
    connections: JoinSet<()>,
    /// Greetings held back before the term is chosen (see [`Driver::hold_greeting`]).
    held_greetings: Vec<(usize, u64, AcceptorMessage)>,
    /// When a quorum of greetings was first held.
    quorum_greeted_at: Option<Instant>,
}

impl Driver {
    async fn run(mut self) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.pump();
            if self.proposer.is_finished() {
                break;
            }
            tokio::select! {
                event = self.events.recv() => {
                    let Some(event) = event else { break };
                    self.on_event(event).await;
                    // Take everything already queued before the next round of sends,
                    // so that one round answers a burst of replies and WAL.
                    while let Ok(event) = self.events.try_recv() {
                        self.on_event(event).await;
                        if self.proposer.is_finished() {
                            break;
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    self.release_greetings_after_grace().await;
                    self.proposer.tick();
                    for link in &mut self.links {
                        if let Link::Up { paused_until, .. } = link {
                            *paused_until = None;
                        }
                    }
                }
            }
            if self.proposer.is_finished() {
                break;
            }
        }
        self.connections.abort_all();
    }

    async fn report(&self, report: Report) {
        // The command stopped listening: it is exiting anyway.
        let _ = self.reports.send(report).await;
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected {
                acceptor,
                epoch,
                outbound,
            } => {
                if matches!(self.links[acceptor], Link::Up { .. }) {
                    self.proposer.disconnected(acceptor);
                }
                self.links[acceptor] = Link::Up {
                    epoch,
                    outbound,
                    elected_sent: false,
                    paused_until: None,
                };
                self.proposer.connected(acceptor);
                self.set_peer(acceptor, true, None);
            }
            Event::Reply {
                acceptor,
                epoch,
                message,
            } => {
                if self.links[acceptor].epoch() == epoch {
                    if self.peers.borrow()[acceptor].last_error.is_some() {
                        tracing::info!(safekeeper = %self.safekeepers.addr(acceptor), "safekeeper answering again");
                        self.peers
                            .send_modify(|peers| peers[acceptor].last_error = None);
                    }
                    if self.proposer.term().is_none()
                        && matches!(message, AcceptorMessage::Greeting(_))
                    {
                        self.hold_greeting(acceptor, epoch, message).await;
                    } else {
                        self.on_reply(acceptor, message).await;
                    }
                }
            }
            Event::Closed {
                acceptor,
                epoch,
                reason,
            } => {
                if self.links[acceptor].epoch() == epoch {
                    // Once per change: a safekeeper that stays down is retried every
                    // few seconds, and each failed attempt would say the same.
                    let repeated =
                        self.peers.borrow()[acceptor].last_error.as_ref() == Some(&reason);
                    if repeated {
                        tracing::debug!(safekeeper = %self.safekeepers.addr(acceptor), %reason, "safekeeper still unreachable");
                    } else {
                        tracing::warn!(safekeeper = %self.safekeepers.addr(acceptor), %reason, "safekeeper stream closed");
                    }
                    self.disconnect(acceptor);
                    self.set_peer(acceptor, false, Some(reason));
                }
            }
            Event::Drained { .. } | Event::NewWal => {}
        }
    }

    fn set_peer(&self, acceptor: usize, connected: bool, error: Option<String>) {
        self.peers.send_modify(|peers| {
            peers[acceptor].connected = connected;
            if error.is_some() {
                peers[acceptor].last_error = error;
            }
        });
    }

    fn disconnect(&mut self, acceptor: usize) {
        let epoch = self.links[acceptor].epoch();
        // Dropping the sender ends our side of the stream; the connection task then
        // reconnects after its backoff.
        self.links[acceptor] = Link::Down { epoch };
        self.proposer.disconnected(acceptor);
    }

    async fn on_reply(&mut self, acceptor: usize, message: AcceptorMessage) {
        if let (AcceptorMessage::AppendResponse(r), Some(term)) = (&message, self.proposer.term()) {
            let elected_sent = matches!(
                self.links[acceptor],
                Link::Up {
                    elected_sent: true,
                    ..
                }
            );
            if r.term == term && elected_sent {
                self.wal.note_acked(acceptor, r.flush_lsn);
            }
        }
        match self.proposer.handle(acceptor, message) {
            Ok(None) => {}
            Ok(Some(ProposerEvent::Elected {
                term,
                start_lsn,
                donor,
            })) => {
                self.wal.set_elected(term, start_lsn, donor);
                let donor_last_term = self.donor_last_term();
                tracing::info!(%term, %start_lsn, donor = %self.safekeepers.addr(donor), %donor_last_term, "elected");
                self.report(Report::Elected {
                    term,
                    start_lsn,
                    donor,
                    donor_last_term,
                })
                .await;
            }
            Ok(Some(ProposerEvent::CommitLsn(lsn))) => {
                self.commit.send_replace(lsn);
            }
            Ok(Some(ProposerEvent::Synced(lsn))) => self.report(Report::Synced(lsn)).await,
            Ok(Some(ProposerEvent::Lost { term })) => {
                tracing::warn!(%term, safekeeper = %self.safekeepers.addr(acceptor), "a newer term was elected: fenced");
                self.report(Report::Lost { term }).await;
            }
            Err(
                error @ (ProposerError::InvalidReply { .. } | ProposerError::NoCommonPoint { .. }),
            ) => {
                tracing::warn!(safekeeper = %self.safekeepers.addr(acceptor), %error, "dropping the safekeeper's stream");
                self.disconnect(acceptor);
                self.set_peer(acceptor, false, Some(error.to_string()));
            }
            Err(error) => {
                tracing::error!(%error, "the proposer cannot go on");
                self.report(Report::Failed(error.to_string())).await;
                // Nothing more will be sent: stop as a finished proposer does.
                self.links
                    .iter_mut()
                    .for_each(|l| *l = Link::Down { epoch: l.epoch() });
                self.connections.abort_all();
            }
        }
    }

    /// Before our term is chosen, greetings are held until every safekeeper greeted,
    /// or a quorum did and [`GREETING_GRACE`] passed. The proposer picks its term as
    /// soon as a quorum greeted; a safekeeper greeting later with a higher term (a
    /// proposer that campaigned and died left it there) would then fence us at once.
    /// Waiting briefly for the others makes the term the highest of all reachable
    /// safekeepers, so such a leftover costs nothing.
    async fn hold_greeting(&mut self, acceptor: usize, epoch: u64, message: AcceptorMessage) {
        self.held_greetings.retain(|(a, _, _)| *a != acceptor);
        self.held_greetings.push((acceptor, epoch, message));
        let quorum = self.proposer.quorum();
        if self.held_greetings.len() >= quorum && self.quorum_greeted_at.is_none() {
            self.quorum_greeted_at = Some(Instant::now());
        }
        if self.held_greetings.len() == self.links.len() {
            self.release_greetings().await;
        }
    }

    async fn release_greetings_after_grace(&mut self) {
        if self
            .quorum_greeted_at
            .is_some_and(|at| at.elapsed() >= GREETING_GRACE)
        {
            self.release_greetings().await;
        }
    }

    async fn release_greetings(&mut self) {
        self.quorum_greeted_at = None;
        let mut held = std::mem::take(&mut self.held_greetings);
        // The proposer chooses its term as soon as a quorum greeted: the highest
        // terms must be among the first it sees.
        held.sort_by_key(|(_, _, message)| std::cmp::Reverse(message.term()));
        for (acceptor, epoch, message) in held {
            // A greeting of a stream that closed since is stale.
            if self.links[acceptor].epoch() == epoch
                && matches!(self.links[acceptor], Link::Up { .. })
            {
                self.on_reply(acceptor, message).await;
            }
        }
    }

    /// The donor's last log term: the entry before ours in our term history.
    fn donor_last_term(&self) -> Term {
        self.proposer
            .election()
            .and_then(|e| {
                let history = &e.term_history.0;
                history.len().checked_sub(2).map(|i| history[i].term)
            })
            .unwrap_or(Term(0))
    }

    /// Send every safekeeper what the proposer has for it, while its queue has room.
    fn pump(&mut self) {
        let now = Instant::now();
        let mut dropped = Vec::new();
        for acceptor in 0..self.links.len() {
            let Link::Up {
                outbound,
                elected_sent,
                paused_until,
                ..
            } = &mut self.links[acceptor]
            else {
                continue;
            };
            if paused_until.is_some_and(|until| now < until) {
                continue;
            }
            while outbound.capacity() > 0 {
                let message = match self.proposer.next_message(acceptor, &mut self.wal) {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(error @ ProposerError::WalSource { .. }) => {
                        tracing::warn!(safekeeper = %self.safekeepers.addr(acceptor), %error, "cannot feed the safekeeper yet");
                        *paused_until = Some(now + WAL_READ_RETRY);
                        break;
                    }
                    // Its log shares nothing with ours, or its vote was malformed:
                    // drop the stream; the connection task retries with backoff.
                    Err(error) => {
                        tracing::warn!(safekeeper = %self.safekeepers.addr(acceptor), %error, "dropping the safekeeper's stream");
                        dropped.push((acceptor, error.to_string()));
                        break;
                    }
                };
                if matches!(message, ProposerMessage::Elected(_)) {
                    *elected_sent = true;
                }
                // Room was checked and only this task sends: a failure means the
                // stream is gone, which its connection task reports.
                if outbound
                    .try_send(proposer_message_into_proto(message))
                    .is_err()
                {
                    break;
                }
            }
        }
        for (acceptor, error) in dropped {
            self.disconnect(acceptor);
            self.set_peer(acceptor, false, Some(error));
        }
    }
}
