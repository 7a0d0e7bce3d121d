//! `compute_ctl`: the agent beside each compute. It makes an unmodified PostgreSQL 15
//! commit only what a quorum of safekeepers holds, by being that PostgreSQL's
//! synchronous standby and the Paxos proposer of its timeline at once.
//!
//! Code map:
//! - [`commands`]: `start` and `sync-safekeepers`, and the exit codes.
//! - [`proposer`]: drives [`consensus::Proposer`] over gRPC streams to every
//!   safekeeper; [`proposer::wal`] is where it reads the WAL it sends.
//! - [`replication`]: a small PostgreSQL physical-replication client.
//! - [`pgdata`]: the data directory (bootstrap, owned settings, state file, WAL files,
//!   end of WAL).
//! - [`lineage`]: may this data directory continue the timeline?
//! - [`safekeepers`]: addresses, channels, timeline checks and creation.
//! - [`pageserver`]: the pageserver client (capabilities, import, basebackup, pages).
//! - [`postgres`]: `pg_ctl`, `psql`, the postmaster's liveness.
//! - [`limits`]: every bound.
//!
//! Invariants:
//! - The position reported to PostgreSQL (write = flush = apply) is never above the
//!   quorum commit LSN of our term: a commit returns only once a quorum holds it.
//! - PostgreSQL is started only after the election and the lineage check, and only
//!   after the won term is durably recorded in the data directory.
//! - A newer term stops PostgreSQL at once (immediate) and `compute_ctl` exits; it
//!   never campaigns again in the same process.
//! - This crate depends on no daemon: it speaks to safekeepers through
//!   `strata_proto` only.

pub mod commands;
pub mod durable;
pub mod limits;
pub mod lineage;
pub mod logging;
pub mod pageserver;
pub mod pgdata;
pub mod postgres;
pub mod proposer;
pub mod replication;
pub mod safekeepers;
pub mod status_file;
