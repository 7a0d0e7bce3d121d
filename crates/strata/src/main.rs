//! `strata`: the command-line tool for Strata clusters and WAL inspection.

mod bench_commit;
mod cluster_cmd;
mod pageserver_cmd;
mod wal_dump;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postgres_wal::Lsn;

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: disaggregated storage for stock PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create (the first time) or start a local cluster: safekeepers, a pageserver and a
    /// compute.
    /// Starts only what is not running; the last line printed is the connection URI.
    Up(cluster_cmd::UpArgs),
    /// Stop the local cluster (compute first, then the pageserver, then safekeepers).
    Down(cluster_cmd::DirArg),
    /// Show the processes of the local cluster and the safekeepers' and pageserver's
    /// LSNs.
    Status(cluster_cmd::StatusArgs),
    /// Fetch a basebackup from the pageserver and unpack it into a new data directory
    /// that stock PostgreSQL 15 starts from.
    Basebackup(pageserver_cmd::BasebackupArgs),
    /// Write one 8192-byte page, as the pageserver has it at an LSN, to stdout.
    Getpage(pageserver_cmd::GetpageArgs),
    /// Benchmarks (not tests): figures to compare against stock PostgreSQL.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Inspect PostgreSQL WAL.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// pgbench TPS and commit latency (average, p99) of stock PostgreSQL alone, with
    /// synchronous replication to pg_receivewal, and under compute_ctl with 3
    /// safekeepers, in interleaved rounds; prints the ratios.
    Commit(bench_commit::BenchCommitArgs),
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Decode WAL segment files or a pg_wal directory, one line per record.
    Dump(WalDumpArgs),
}

#[derive(Debug, clap::Args)]
pub struct WalDumpArgs {
    /// Print one JSON object per record.
    #[arg(long)]
    json: bool,
    /// Start at the first record at or after this LSN (default: the first file's start).
    #[arg(long)]
    start: Option<Lsn>,
    /// Stop before the first record at or after this LSN.
    #[arg(long)]
    end: Option<Lsn>,
    /// WAL segment files, or directories holding them (such as pg_wal).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => cluster_cmd::up(&args),
        Command::Down(args) => cluster_cmd::down(&args),
        Command::Status(args) => cluster_cmd::status(&args),
        Command::Basebackup(args) => pageserver_cmd::basebackup(&args),
        Command::Getpage(args) => pageserver_cmd::getpage(&args),
        Command::Bench {
            command: BenchCommand::Commit(args),
        } => bench_commit::run(&args),
        Command::Wal {
            command: WalCommand::Dump(args),
        } => wal_dump::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped early (`strata wal dump | head`) is not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("strata: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
