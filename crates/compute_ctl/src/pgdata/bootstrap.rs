//! Creating a new compute's data directory and the WAL its timeline begins with.
//!
//! `initdb --data-checksums`, then one run of PostgreSQL with synchronous replication
//! off (no standby exists yet) to create the `strata_proposer` role and its physical
//! slot and to switch to a new WAL segment, then a clean stop. The timeline begins at
//! the **start of the segment that holds the end of WAL** — not at the end of WAL
//! itself, as a literal reading of "the initdb end-of-WAL LSN" would have it — because
//! `pg_receivewal` and stock standbys always stream whole segments from their start:
//! a timeline starting mid-segment could never be read by them. The switch makes that
//! segment hold nothing but the shutdown checkpoint, so the first thing the compute
//! streams is small. `docs/compute.md` records the choice.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use consensus::term_history::Term;
use pg_harness::PgBin;
use postgres_wal::Lsn;
use strata_ids::TenantTimelineId;

use super::end_of_wal::{find_end_of_wal, read_control, ControlError, EndOfWalError};
use super::pg_wal::PgWalDir;
use super::settings::{
    command_line_options, compute_settings, write_settings, SettingsError, PROPOSER_NAME,
};
use super::state::{ComputeState, StateError};
use crate::limits::INITDB_TIMEOUT;
use crate::postgres::{run, Postgres, PostgresError, StopMode, SUPERUSER};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("creating the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0} exists and is not empty, but holds no PostgreSQL cluster: refusing to initdb over it"
    )]
    NotEmpty(PathBuf),
    #[error("giving {path} to the PostgreSQL server user: {source}")]
    Chown {
        path: PathBuf,
        #[source]
        source: pg_harness::HarnessError,
    },
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    EndOfWal(#[from] EndOfWalError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Whether `pgdata` holds a PostgreSQL cluster.
pub fn has_cluster(pgdata: &Path) -> bool {
    pgdata.join("PG_VERSION").is_file()
}

/// Create the cluster in `pgdata` (absent or empty) and its state file; the timeline
/// is not created on the safekeepers yet (`timeline_created == false`).
pub fn bootstrap(
    postgres: &Postgres,
    id: TenantTimelineId,
) -> Result<ComputeState, BootstrapError> {
    let pgdata = postgres.pgdata();
    prepare_dir(postgres.bin(), pgdata)?;
    tracing::info!(pgdata = %pgdata.display(), "initdb");
    let mut initdb = postgres.bin().command("initdb");
    initdb
        .current_dir(pgdata)
        .arg("-D")
        .arg(pgdata)
        .args(["--data-checksums", "-U", SUPERUSER, "-A", "trust"])
        .args(["--encoding=UTF8", "--locale=C"]);
    run("initdb", initdb, INITDB_TIMEOUT)?;
    // The bootstrap's WAL precedes the timeline's base image, so nobody replays it:
    // no consistency checking here.
    let mut settings = compute_settings(postgres.port(), None);
    give_to_server_user(postgres.bin(), &write_settings(pgdata, &settings)?)?;

    // No standby exists yet: the bootstrap's own commits must not wait for one. The
    // command line outranks the settings file written above.
    for (name, value) in &mut settings {
        if *name == "synchronous_standby_names" {
            value.clear();
        }
    }
    postgres.start(&command_line_options(&settings))?;
    let setup = postgres.psql(&format!(
        "CREATE ROLE {PROPOSER_NAME} WITH REPLICATION LOGIN; \
         SELECT pg_create_physical_replication_slot('{PROPOSER_NAME}', true); \
         SELECT pg_switch_wal();"
    ));
    // Stopped either way, so that a failed bootstrap leaves no server running.
    let stopped = postgres.stop(StopMode::Fast);
    setup?;
    stopped?;

    let control = read_control(pgdata)?;
    let wal = PgWalDir::new(pgdata, control.segment_size, control.system_id);
    let end = find_end_of_wal(&wal, control.checkpoint)?;
    let timeline_start_lsn = Lsn(end.0 - end.segment_offset(control.segment_size));
    tracing::info!(%end, %timeline_start_lsn, system_id = control.system_id, "bootstrapped");
    let state = ComputeState {
        id,
        system_id: control.system_id,
        timeline_start_lsn,
        timeline_created: false,
        // Term 0: the WAL before the timeline's first term is this compute's own.
        won_terms: vec![Term(0)],
        fenced_by: None,
        pending_safekeepers: Vec::new(),
        base_lsn: None,
    };
    state.save(pgdata)?;
    give_to_server_user(postgres.bin(), &[ComputeState::path(pgdata)])?;
    Ok(state)
}

fn prepare_dir(bin: &PgBin, pgdata: &Path) -> Result<(), BootstrapError> {
    match std::fs::read_dir(pgdata) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BootstrapError::NotEmpty(pgdata.to_owned()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(pgdata)
                .map_err(|source| BootstrapError::CreateDir {
                    path: pgdata.to_owned(),
                    source,
                })?;
        }
        Err(source) => {
            return Err(BootstrapError::CreateDir {
                path: pgdata.to_owned(),
                source,
            })
        }
    }
    give_to_server_user(bin, &[pgdata.to_owned()])
}

/// Files `compute_ctl` writes into the data directory belong to the server user, like
/// everything else there.
pub fn give_to_server_user(bin: &PgBin, paths: &[PathBuf]) -> Result<(), BootstrapError> {
    for path in paths {
        bin.chown_to_server_user(path)
            .map_err(|source| BootstrapError::Chown {
                path: path.clone(),
                source,
            })?;
    }
    Ok(())
}
