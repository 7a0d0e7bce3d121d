//! The Strata pageserver: turns the safekeepers' WAL into every page at every LSN, and
//! serves pages, relation metadata and basebackups that stock PostgreSQL starts from.
//!
//! Code map:
//! - [`daemon`]: the daemon's life (bind, open, serve, stop); `main.rs` only parses
//!   arguments and calls it.
//! - [`config`]: the TOML file and the flags that override it.
//! - [`timeline`]: one timeline (its layer store, ingest progress, LSN waits), which
//!   implements `page_model::read::VersionSource`; [`timelines`]: the tenant manager
//!   (the directory layout, creation, loading at start).
//! - [`layers`]: per timeline, freezing the open layer and writing image layers.
//! - `walreceiver`: streams WAL from the safekeepers into timelines.
//! - [`grpc`]: the gRPC service and its error mapping.
//! - [`remote`]: tiering to object storage (uploads, the index, generations,
//!   restore, eviction).
//! - [`metrics`], [`logging`]: observability (the HTTP endpoint is `strata_http`).
//! - [`limits`]: every bound of the daemon.

pub mod config;
pub mod daemon;
pub mod grpc;
pub mod layers;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod remote;
pub mod timeline;
pub mod timelines;
pub mod walreceiver;
