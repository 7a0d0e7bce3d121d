//! Logs: installed by `strata_logging` (text or JSON lines on stderr). Work on a
//! timeline runs in a span carrying `tenant_id`, `timeline_id` and, once elected,
//! `term`; LSNs are fields of the events.

use strata_ids::TenantTimelineId;

pub use strata_logging::{init, LogFormat, LoggingError};

/// The span of one command's work on a timeline; `term` is recorded once known.
pub fn timeline_span(command: &'static str, id: TenantTimelineId) -> tracing::Span {
    tracing::info_span!(
        "compute_ctl",
        command,
        tenant_id = %id.tenant_id,
        timeline_id = %id.timeline_id,
        term = tracing::field::Empty,
    )
}
