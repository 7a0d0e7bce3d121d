//! Strata's WAL consensus: the Paxos acceptor (run by each safekeeper) and proposer
//! (run by `compute_ctl` beside each compute), as pure state machines.
//!
//! Messages go in, replies and storage calls come out; all I/O goes through the
//! [`storage::AcceptorStorage`] trait (acceptor) and the [`proposer::WalSource`] trait
//! (proposer), so the same code runs in the daemons and in the seeded deterministic
//! simulation of `tests/simulation.rs`.
//!
//! Code map:
//! - [`term_history`]: terms, term histories, the highest common point of two logs.
//! - [`messages`]: the protocol's messages as domain types (the safekeeper maps them
//!   to protobuf).
//! - [`acceptor`]: [`Acceptor`], the acceptor state machine and its refusals.
//! - [`proposer`]: [`Proposer`], the proposer state machine (elections, streaming,
//!   commit LSN, sync-safekeepers).
//! - [`storage`]: what the acceptor needs from durable storage.
//! - [`limits`]: every bound of the protocol.
//!
//! Invariants (checked by the simulation after every step): at most one proposer is
//! elected per term; two committed entries at the same LSN are identical; committed
//! WAL stays on a quorum; no node's commit LSN decreases; an elected proposer starts
//! at or above every commit LSN seen.

pub mod acceptor;
pub mod limits;
pub mod messages;
pub mod proposer;
pub mod storage;
pub mod term_history;
#[cfg(test)]
mod test_support;

pub use acceptor::{Acceptor, AcceptorError, Refusal};
pub use proposer::{Proposer, ProposerConfig, ProposerError, ProposerEvent, WalSource};
