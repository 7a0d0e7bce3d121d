//! The `pageserver` daemon. Everything but argument parsing and the exit status lives in
//! the library (`pageserver::daemon`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use pageserver::config::{Config, Overrides, DEFAULT_CONFIG_TOML};
use pageserver::limits::SHUTDOWN_BLOCKING_TIMEOUT;

/// Strata pageserver: every page at every LSN, and basebackups stock PostgreSQL starts from.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file. Environment variables override its keys, flags
    /// override both.
    #[arg(long, env = "STRATA_PAGESERVER_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the default configuration file, every key documented, and exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(flatten)]
    overrides: Overrides,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = strata_logging::check_env_overrides(&Args::command(), "STRATA_PAGESERVER_")
    {
        eprintln!("pageserver: {error}");
        return ExitCode::FAILURE;
    }
    if args.print_default_config {
        print!("{DEFAULT_CONFIG_TOML}");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, as every Strata binary fails.
            eprintln!("pageserver: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config =
        Config::load(args.config.as_deref(), &args.overrides).context("loading configuration")?;
    pageserver::logging::init(config.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(pageserver::daemon::run(
        config,
        pageserver::daemon::shutdown_signal(),
    ));
    // A layer write or read still on the blocking pool holds no acknowledged state
    // (commits are durable when acknowledged): do not wait long for it.
    runtime.shutdown_timeout(SHUTDOWN_BLOCKING_TIMEOUT);
    result?;
    Ok(())
}
