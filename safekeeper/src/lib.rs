//! The Strata safekeeper: a Paxos acceptor that stores WAL durably and serves it over
//! gRPC (to proposers) and the PostgreSQL replication protocol (to readers).

pub mod replication;
pub mod storage;
