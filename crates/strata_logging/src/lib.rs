//! How every Strata program logs: `tracing` events to stderr, as text or as one JSON
//! object per line, levels from `RUST_LOG`. One place, so the safekeeper,
//! `compute_ctl` and the daemons to come print the same shape of line and accept the
//! same `--log-format` values. Each program names its own spans (tenant, timeline,
//! LSN); this crate only installs the subscriber.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// Used when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info";

/// `--log-format` and the `log_format` config key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
#[error("installing the log subscriber: {0}")]
pub struct LoggingError(String);

/// Install the global subscriber.
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
            // The whole span list, so a line inside a connection span nested in a
            // timeline span still carries the timeline's ids.
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
    result.map_err(|e| LoggingError(e.to_string()))
}

/// Environment variables that start with `prefix` (e.g. `STRATA_PAGESERVER_`) but that
/// no argument of `command` (or of its subcommands) reads, sorted: a misspelt override
/// is reported instead of silently leaving the setting at its default.
pub fn unknown_env_overrides(command: &clap::Command, prefix: &str) -> Vec<String> {
    fn known(command: &clap::Command, names: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.push(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            known(sub, names);
        }
    }
    let mut names = Vec::new();
    known(command, &mut names);
    let mut unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with(prefix) && !names.contains(name))
        .collect();
    unknown.sort();
    unknown
}

/// [`unknown_env_overrides`] as the one-line error every Strata program gives.
pub fn check_env_overrides(command: &clap::Command, prefix: &str) -> Result<(), String> {
    let unknown = unknown_env_overrides(command, prefix);
    if unknown.is_empty() {
        return Ok(());
    }
    Err(format!(
        "unknown environment variable{} {} (see --help for the {prefix}* variables)",
        if unknown.len() == 1 { "" } else { "s" },
        unknown.join(", ")
    ))
}
