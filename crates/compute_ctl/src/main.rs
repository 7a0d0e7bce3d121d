//! `compute_ctl`: argument parsing, logging and exit codes; everything else is in the
//! library. Exit codes: see `compute_ctl::commands::exit_code` and `docs/compute.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use compute_ctl::commands::exit_code;
use compute_ctl::commands::start::{start, StartArgs};
use compute_ctl::commands::sync::{sync_safekeepers, SyncArgs};
use compute_ctl::commands::CommandError;
use compute_ctl::limits::DEFAULT_ELECTION_TIMEOUT_SECS;
use compute_ctl::logging::{self, LogFormat};
use compute_ctl::safekeepers::parse_list;
use strata_ids::{TenantId, TenantTimelineId, TimelineId};
use tracing::Instrument;

/// Strata compute agent: runs a stock PostgreSQL whose commits a quorum of safekeepers
/// holds.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Log format on stderr (levels from RUST_LOG, default info).
    #[arg(long, env = "STRATA_COMPUTE_CTL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Timeline {
    /// Tenant id (32 hex digits).
    #[arg(long, env = "STRATA_COMPUTE_CTL_TENANT")]
    tenant: TenantId,
    /// Timeline id (32 hex digits).
    #[arg(long, env = "STRATA_COMPUTE_CTL_TIMELINE")]
    timeline: TimelineId,
    /// The timeline's safekeepers, gRPC addresses: HOST:PORT,HOST:PORT,...
    #[arg(
        long,
        env = "STRATA_COMPUTE_CTL_SAFEKEEPERS",
        value_name = "HOST:PORT,..."
    )]
    safekeepers: String,
    /// How long to wait for a quorum of safekeepers to elect us.
    #[arg(long, env = "STRATA_COMPUTE_CTL_ELECTION_TIMEOUT_SECS", value_name = "SECONDS", default_value_t = DEFAULT_ELECTION_TIMEOUT_SECS)]
    election_timeout_secs: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Elect a proposer, bring a quorum of safekeepers to the donor's end of WAL in the
    /// new term, and print that LSN (fences any running compute of the timeline).
    SyncSafekeepers {
        #[command(flatten)]
        timeline: Timeline,
    },
    /// Run a compute: bootstrap a new data directory or continue an existing one (if
    /// its WAL continues the quorum's), start PostgreSQL and stream its WAL to the
    /// safekeepers until SIGTERM or fencing.
    Start {
        /// The data directory (created with initdb when absent or empty).
        #[arg(long, env = "STRATA_COMPUTE_CTL_PGDATA", value_name = "DIR")]
        pgdata: PathBuf,
        /// The port PostgreSQL listens on (127.0.0.1).
        #[arg(long, env = "STRATA_COMPUTE_CTL_PG_PORT", value_name = "PORT")]
        pg_port: u16,
        #[command(flatten)]
        timeline: Timeline,
        /// Write a JSON status here once PostgreSQL accepts connections.
        #[arg(long, env = "STRATA_COMPUTE_CTL_STATUS_FILE", value_name = "PATH")]
        status_file: Option<PathBuf>,
        /// PostgreSQL's log file (default: postgres.log in the data directory).
        #[arg(long, env = "STRATA_COMPUTE_CTL_PG_LOG", value_name = "PATH")]
        pg_log: Option<PathBuf>,
        /// The pageserver's gRPC address: a new timeline's base image is imported
        /// there, and an empty data directory of an existing timeline is made from its
        /// basebackup.
        #[arg(long, env = "STRATA_COMPUTE_CTL_PAGESERVER", value_name = "HOST:PORT")]
        pageserver: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::OK
            };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    if let Err(error) = strata_logging::check_env_overrides(&Cli::command(), "STRATA_COMPUTE_CTL_")
    {
        eprintln!("compute_ctl: {error}");
        return ExitCode::from(exit_code::USAGE);
    }
    if let Err(error) = logging::init(cli.log_format) {
        eprintln!("compute_ctl: {error}");
        return ExitCode::from(exit_code::ERROR);
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, as every Strata binary fails.
            eprintln!("compute_ctl: {}", one_line(&error));
            ExitCode::from(error.exit_code())
        }
    }
}

/// The error with its causes, on one line.
fn one_line(error: &CommandError) -> String {
    match error {
        CommandError::Failed(inner) => format!("{inner:#}"),
        other => other.to_string(),
    }
}

fn run(command: Command) -> Result<(), CommandError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match command {
        Command::SyncSafekeepers { timeline } => {
            let (id, safekeepers, election_timeout) = timeline_args(&timeline)?;
            let span = logging::timeline_span("sync-safekeepers", id);
            let args = SyncArgs {
                id,
                safekeepers,
                election_timeout,
            };
            let lsn = runtime.block_on(sync_safekeepers(args).instrument(span))?;
            println!("{lsn}");
            Ok(())
        }
        Command::Start {
            pgdata,
            pg_port,
            timeline,
            status_file,
            pg_log,
            pageserver,
        } => {
            let (id, safekeepers, election_timeout) = timeline_args(&timeline)?;
            let span = logging::timeline_span("start", id);
            let args = StartArgs {
                pgdata: absolute(pgdata)?,
                pg_port,
                id,
                safekeepers,
                status_file,
                election_timeout,
                pg_log,
                pageserver,
            };
            runtime.block_on(start(args).instrument(span))
        }
    }
}

fn timeline_args(t: &Timeline) -> Result<(TenantTimelineId, Vec<String>, Duration), CommandError> {
    let id = TenantTimelineId {
        tenant_id: t.tenant,
        timeline_id: t.timeline,
    };
    let safekeepers = parse_list(&t.safekeepers).context("parsing --safekeepers")?;
    Ok((
        id,
        safekeepers,
        Duration::from_secs(t.election_timeout_secs),
    ))
}

/// PostgreSQL tools run in the data directory; relative paths would point elsewhere.
fn absolute(path: PathBuf) -> Result<PathBuf, CommandError> {
    Ok(std::path::absolute(&path).with_context(|| format!("resolving {}", path.display()))?)
}
