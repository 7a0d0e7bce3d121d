//! Strata's WAL consensus: the Paxos acceptor (run by each safekeeper) and proposer
//! (run by `compute_ctl` beside each compute), as pure state machines.
//!
//! Messages go in, replies and storage calls come out; all I/O goes through the
//! [`storage::AcceptorStorage`] trait, so the same code runs in the safekeeper daemon
//! and in the seeded deterministic simulation of `tests/simulation.rs`.

pub mod storage;
pub mod term_history;
