//! Logs: `tracing` events to stderr, as text or one JSON object per line. Work on a
//! timeline runs in a span carrying `tenant_id`, `timeline_id` and, once elected,
//! `term`; LSNs are fields of the events.

use std::io::IsTerminal;

use strata_ids::TenantTimelineId;
use tracing_subscriber::EnvFilter;

/// Used when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
#[error("installing the log subscriber: {0}")]
pub struct LoggingError(String);

pub fn init(format: LogFormat) -> Result<(), LoggingError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
    result.map_err(|e| LoggingError(e.to_string()))
}

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
