//! Log output: installed by `strata_logging` (text or JSON lines on stderr).
//!
//! Work on a timeline runs inside a span carrying `tenant_id` and `timeline_id` (see
//! [`timeline_span`]); reads add the LSN they are at, so every line about a timeline
//! names it in both formats.

use strata_ids::TenantTimelineId;

pub use strata_logging::{init, LogFormat, LoggingError};

/// The span of all work on one timeline.
pub fn timeline_span(id: TenantTimelineId) -> tracing::Span {
    tracing::info_span!(
        "timeline",
        tenant_id = %id.tenant_id,
        timeline_id = %id.timeline_id
    )
}
