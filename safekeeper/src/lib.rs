//! The Strata safekeeper: a Paxos acceptor that stores WAL durably and serves it over
//! gRPC (to proposers) and the PostgreSQL replication protocol (to readers).
//!
//! Code map:
//! - [`daemon`]: the daemon's life (bind, open, serve, stop); `main.rs` only parses
//!   arguments and calls it.
//! - [`config`]: the TOML file and the flags that override it.
//! - [`timelines`]: the registry of timelines; [`timeline`]: one timeline, its actor
//!   thread owning the `consensus::Acceptor` and its storage.
//! - [`grpc`]: the gRPC service, its proto conversions and its error mapping.
//! - [`replication`]: the PostgreSQL replication protocol server.
//! - [`storage`]: control files and WAL segments of a timeline.
//! - [`offload`]: WAL offload to object storage and the removal of local WAL it
//!   allows.
//! - [`metrics`], [`logging`]: observability (the HTTP endpoint is `strata_http`).
//! - [`limits`]: every bound of the daemon.

pub mod config;
pub mod daemon;
pub mod grpc;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod offload;
pub mod replication;
pub mod storage;
pub mod timeline;
pub mod timelines;
