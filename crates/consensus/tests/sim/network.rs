//! A network that drops, delays, duplicates and reorders messages.

use consensus::messages::{AcceptorMessage, ProposerMessage};

use super::rng::Rng;

#[derive(Clone, Copy, Debug)]
pub struct NetworkParams {
    pub drop: f64,
    pub duplicate: f64,
    /// Chance that a message ignores the link's order (and may overtake or be overtaken).
    pub reorder: f64,
    /// Chance that a message arrives very late, as from a stale connection (Neon #8212).
    pub late: f64,
    pub max_delay_steps: u64,
}

/// How late a late message may be.
const MAX_LATE_STEPS: u64 = 400;

#[derive(Debug)]
pub enum Payload {
    ToAcceptor(ProposerMessage),
    ToProposer(AcceptorMessage),
}

/// A message between proposer slot `slot` (process `incarnation`) and `acceptor`.
#[derive(Debug)]
pub struct Packet {
    pub deliver_at: u64,
    seq: u64,
    pub slot: usize,
    pub incarnation: u64,
    pub acceptor: usize,
    pub payload: Payload,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct NetworkStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
}

#[derive(Debug)]
pub struct Network {
    params: NetworkParams,
    packets: Vec<Packet>,
    seq: u64,
    acceptors: usize,
    /// Per link and direction: when its last in-order message arrives (FIFO by default).
    link_clock: Vec<u64>,
    /// Per link: messages towards the acceptor not yet delivered (flow control).
    in_flight: Vec<usize>,
    pub stats: NetworkStats,
}

impl Network {
    pub fn new(params: NetworkParams, slots: usize, acceptors: usize) -> Network {
        Network {
            params,
            packets: Vec::new(),
            seq: 0,
            acceptors,
            link_clock: vec![0; slots * acceptors * 2],
            in_flight: vec![0; slots * acceptors],
            stats: NetworkStats::default(),
        }
    }

    /// Messages towards `acceptor` from `slot` still in the network.
    pub fn in_flight(&self, slot: usize, acceptor: usize) -> usize {
        self.in_flight[slot * self.acceptors + acceptor]
    }

    pub fn send(
        &mut self,
        rng: &mut Rng,
        now: u64,
        slot: usize,
        incarnation: u64,
        acceptor: usize,
        payload: Payload,
    ) {
        self.stats.sent += 1;
        if rng.chance(self.params.drop) {
            self.stats.dropped += 1;
            return;
        }
        let copy = rng
            .chance(self.params.duplicate)
            .then(|| duplicate(&payload));
        self.enqueue(rng, now, slot, incarnation, acceptor, payload);
        if let Some(copy) = copy {
            self.stats.duplicated += 1;
            self.enqueue(rng, now, slot, incarnation, acceptor, copy);
        }
    }

    fn enqueue(
        &mut self,
        rng: &mut Rng,
        now: u64,
        slot: usize,
        incarnation: u64,
        acceptor: usize,
        payload: Payload,
    ) {
        let to_acceptor = matches!(payload, Payload::ToAcceptor(_));
        let link = slot * self.acceptors + acceptor;
        let mut deliver_at = now + rng.between(1, self.params.max_delay_steps);
        if rng.chance(self.params.late) {
            deliver_at = now + rng.between(self.params.max_delay_steps, MAX_LATE_STEPS);
        } else if rng.chance(self.params.reorder) {
            deliver_at += rng.below(4 * self.params.max_delay_steps);
        } else {
            let clock = &mut self.link_clock[link * 2 + usize::from(to_acceptor)];
            deliver_at = deliver_at.max(*clock);
            *clock = deliver_at;
        }
        if to_acceptor {
            self.in_flight[link] += 1;
        }
        self.seq += 1;
        self.packets.push(Packet {
            deliver_at,
            seq: self.seq,
            slot,
            incarnation,
            acceptor,
            payload,
        });
    }

    /// The packets due at `now`, in delivery order.
    pub fn take_due(&mut self, now: u64) -> Vec<Packet> {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.packets.len() {
            if self.packets[i].deliver_at <= now {
                due.push(self.packets.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|p| (p.deliver_at, p.seq));
        for p in &due {
            if matches!(p.payload, Payload::ToAcceptor(_)) {
                self.in_flight[p.slot * self.acceptors + p.acceptor] -= 1;
            }
        }
        due
    }
}

fn duplicate(payload: &Payload) -> Payload {
    match payload {
        Payload::ToAcceptor(m) => Payload::ToAcceptor(m.clone()),
        Payload::ToProposer(m) => Payload::ToProposer(m.clone()),
    }
}
