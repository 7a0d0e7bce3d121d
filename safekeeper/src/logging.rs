//! Log output: `tracing` events to stderr, as text or as one JSON object per line.
//!
//! Work on a timeline runs inside a span carrying `tenant_id` and `timeline_id` (see
//! [`timeline_span`]), so every line about a timeline names it in both formats.

use std::io::IsTerminal;

use strata_ids::TenantTimelineId;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Used when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info";

#[derive(Debug, thiserror::Error)]
#[error("installing the log subscriber: {0}")]
pub struct LoggingError(String);

/// Install the global subscriber; levels come from `RUST_LOG`.
pub fn init(format: LogFormat) -> Result<(), LoggingError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            // The whole list, so a line inside a connection span nested in a timeline
            // span still carries the timeline's ids.
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
    result.map_err(|e| LoggingError(e.to_string()))
}

/// The span of all work on one timeline.
pub fn timeline_span(id: TenantTimelineId) -> tracing::Span {
    tracing::info_span!(
        "timeline",
        tenant_id = %id.tenant_id,
        timeline_id = %id.timeline_id
    )
}
