//! The `safekeeper` daemon. Everything but argument parsing and the exit status lives in
//! the library (`safekeeper::daemon`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use safekeeper::config::{Config, Overrides, DEFAULT_CONFIG_TOML};

/// Strata safekeeper: a Paxos acceptor that stores WAL durably and serves it.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file. Environment variables override its keys, flags
    /// override both.
    #[arg(long, env = "STRATA_SAFEKEEPER_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the default configuration file, every key documented, and exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(flatten)]
    overrides: Overrides,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = strata_logging::check_env_overrides(&Args::command(), "STRATA_SAFEKEEPER_")
    {
        eprintln!("safekeeper: {error}");
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
            eprintln!("safekeeper: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config =
        Config::load(args.config.as_deref(), &args.overrides).context("loading configuration")?;
    safekeeper::logging::init(config.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(safekeeper::daemon::run(
        config,
        safekeeper::daemon::shutdown_signal(),
    ))?;
    Ok(())
}
