//! A seeded deterministic simulation of acceptors and dueling proposers over a faulty
//! network, checking the protocol's invariants after every step.

pub mod acceptors;
pub mod checks;
pub mod log;
pub mod network;
pub mod proposers;
pub mod rng;
pub mod storage;
pub mod trace;
pub mod world;
