//! The PostgreSQL replication protocol: WAL for pg_receivewal, standbys and the pageserver.
//!
//! A safekeeper serves each timeline's WAL, up to the timeline's **commit LSN**, over the
//! stock PostgreSQL streaming-replication protocol (protocol 3.0, `replication=true`), so
//! that unmodified `pg_receivewal`, a stock standby whose `primary_conninfo` points at a
//! safekeeper, and the pageserver can all stream from it.
//!
//! # Interface to the rest of the daemon
//!
//! The daemon implements two small traits over its real timelines and hands them to
//! [`serve`]:
//! - [`TimelineSource`] turns the ids a client asked for (possibly none) into a timeline;
//! - [`ReplicationTimeline`] is what a connection needs of one timeline: its identity, the
//!   commit LSN as a `watch` channel, and a blocking read of WAL below the commit LSN.
//!
//! # Which timeline a connection reads
//!
//! The client names the timeline with two run-time parameters, given either in the
//! `options` startup parameter (`options='-c tenant_id=<32 hex> -c timeline_id=<32 hex>'`,
//! which every libpq client can send, including a standby's `primary_conninfo`) or as
//! startup parameters of their own (`tenant_id`, `timeline_id`) for clients that can send
//! those. Ids left out are `None` in [`TimelineSource::resolve`]; the documented default is
//! that when the safekeeper holds **exactly one** timeline matching what was given, that
//! timeline is meant, and otherwise the connection is refused with a clear error.
//!
//! # Authentication
//!
//! Every connection is accepted with `AuthenticationOk` (trust). Authentication tokens
//! (and TLS) come in a later issue; until then the replication port must only be reachable
//! from trusted hosts. `SSLRequest` and `GSSENCRequest` are answered `N`, so clients with
//! `sslmode=prefer` (libpq's default) continue in plain text.
//!
//! # Commands
//!
//! See [`command`] for the grammar, [`session`] for the answers and [`stream`] for
//! `START_REPLICATION`. WAL is only ever sent below the commit LSN: what is
//! above it may still be truncated by a new term.

pub mod command;
pub mod connection;
pub mod errors;
pub mod limits;
pub mod messages;
pub mod server;
pub mod session;
pub mod startup;
pub mod stream;

use std::sync::Arc;

use postgres_wal::lsn::Lsn;
use strata_ids::{TenantId, TenantTimelineId, TimelineId};

pub use server::{serve, ServeError};

/// Finds the timeline a replication connection asked for.
pub trait TimelineSource: Send + Sync + 'static {
    /// Resolve the ids a client gave (either may be missing). With both missing, or with
    /// only the tenant given, the implementation returns the only matching timeline or
    /// [`ResolveError::Ambiguous`].
    fn resolve(
        &self,
        tenant: Option<TenantId>,
        timeline: Option<TimelineId>,
    ) -> Result<Arc<dyn ReplicationTimeline>, ResolveError>;
}

/// One timeline as a replication connection sees it.
pub trait ReplicationTimeline: Send + Sync + 'static {
    /// The tenant and timeline, for logs and spans.
    fn id(&self) -> TenantTimelineId;

    /// PostgreSQL's system identifier of the cluster whose WAL this is (`IDENTIFY_SYSTEM`).
    fn system_id(&self) -> u64;

    /// `wal_segment_size` in bytes (a power of two between 1 MiB and 1 GiB).
    fn wal_segment_size(&self) -> u32;

    /// The first LSN this safekeeper holds WAL for. `START_REPLICATION` below it fails
    /// with PostgreSQL's "requested WAL segment ... has already been removed".
    /// A stock walreceiver (and pg_receivewal) always starts at a segment boundary, so a
    /// timeline whose first segment is held whole, with valid page headers, should report
    /// that segment's start here.
    fn timeline_start_lsn(&self) -> Lsn;

    /// The commit LSN: WAL below it is durable on a quorum and may be served. The value
    /// never decreases. When the sender is dropped (the timeline is deleted or the daemon
    /// stops) streaming ends with an error.
    fn commit_lsn(&self) -> tokio::sync::watch::Receiver<Lsn>;

    /// Read WAL starting at `lsn` into `buf`, returning the number of bytes read (at least
    /// one unless `buf` is empty). The caller never asks for bytes at or above the commit
    /// LSN it has observed, nor below [`Self::timeline_start_lsn`]. **Blocking**: the server
    /// calls it through `tokio::task::spawn_blocking`.
    fn read_wal(&self, lsn: Lsn, buf: &mut [u8]) -> std::io::Result<usize>;

    /// A reader's latest standby status update, for metrics and for the caller (the
    /// pageserver's positions will later feed the WAL removal horizon). Called on the
    /// connection's task, so it must not block. The default ignores it.
    fn reader_feedback(&self, _feedback: &ReaderFeedback) {}
}

/// What a reader (walreceiver, pg_receivewal, pageserver) reported in its latest standby
/// status update (`'r'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderFeedback {
    /// `application_name` of the connection, if the client gave one.
    pub application_name: Option<String>,
    /// Last WAL byte + 1 received and written to disk by the reader.
    pub write_lsn: Lsn,
    /// Last WAL byte + 1 flushed to disk by the reader.
    pub flush_lsn: Lsn,
    /// Last WAL byte + 1 applied (replayed) by the reader.
    pub apply_lsn: Lsn,
}

/// Why [`TimelineSource::resolve`] found no timeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("timeline {tenant:?}/{timeline:?} not found on this safekeeper")]
    NotFound {
        tenant: Option<TenantId>,
        timeline: Option<TimelineId>,
    },
    #[error(
        "{count} timelines match; name one with options='-c tenant_id=<hex> -c timeline_id=<hex>'"
    )]
    Ambiguous { count: usize },
    #[error("timeline unavailable: {0}")]
    Unavailable(String),
}
