//! The two commands, `sync-safekeepers` and `start`, and how their failures map to
//! exit codes (documented in `docs/compute.md`; `strata up` relies on them).

pub mod start;
pub mod stream;
pub mod sync;

use consensus::messages::ProposerId;
use consensus::term_history::Term;

/// Exit codes of `compute_ctl`.
pub mod exit_code {
    /// Success: synced, or stopped on SIGTERM/SIGINT.
    pub const OK: u8 = 0;
    /// Any other failure (bad input, unreachable quorum, I/O); the message says which.
    pub const ERROR: u8 = 1;
    /// Command-line usage error (clap's convention).
    pub const USAGE: u8 = 2;
    /// Fenced: a safekeeper reported a newer term. PostgreSQL was stopped at once
    /// (immediate shutdown). Do not restart blindly: the lineage check decides whether
    /// this data directory may ever run again.
    pub const FENCED: u8 = 3;
    /// The lineage check refused the data directory: its WAL is not a prefix of the
    /// quorum's. PostgreSQL was not started. The data directory must be replaced (a
    /// new compute from a basebackup).
    pub const LINEAGE: u8 = 4;
    /// PostgreSQL exited (crashed, or was stopped behind `compute_ctl`'s back).
    pub const POSTGRES_EXITED: u8 = 5;
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(
        "fenced: the safekeepers elected term {term}, newer than ours; PostgreSQL was stopped"
    )]
    Fenced { term: Term },
    #[error("lineage check refused the data directory (PostgreSQL not started): {0}")]
    Lineage(String),
    #[error("PostgreSQL exited: {0}")]
    PostgresExited(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Fenced { .. } => exit_code::FENCED,
            CommandError::Lineage(_) => exit_code::LINEAGE,
            CommandError::PostgresExited(_) => exit_code::POSTGRES_EXITED,
            CommandError::Failed(_) => exit_code::ERROR,
        }
    }
}

/// A random id for this proposer process, for the safekeepers' logs. `RandomState` is
/// seeded from the OS's randomness once per process; time and pid make two ids of
/// one process differ too.
pub fn new_proposer_id() -> ProposerId {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let half = |salt: u64| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(now);
        hasher.write_u32(std::process::id());
        hasher.write_u64(salt);
        hasher.finish()
    };
    ProposerId((u128::from(half(1)) << 64) | u128::from(half(2)))
}
