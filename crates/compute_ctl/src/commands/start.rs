//! `compute_ctl start`: run a compute on its data directory.
//!
//! 1. A new data directory is bootstrapped ([`crate::pgdata::bootstrap`]), imported
//!    into the pageserver (when there is one) as the timeline's base image, and its
//!    timeline created on the safekeepers; an existing one must belong to the timeline.
//!    An empty data directory on a timeline that exists is made from a pageserver
//!    basebackup instead ([`start_from_basebackup`]).
//! 2. The compute settings are written, the safekeepers' timelines checked (another
//!    cluster's is refused), and the end of the compute's WAL found.
//! 3. Election (the proposer in primary mode), then the lineage check
//!    ([`crate::lineage`]): PostgreSQL is started only if its WAL continues the
//!    quorum's exactly at the elected start LSN. The term is recorded as won, durably,
//!    before PostgreSQL can write anything in it.
//! 4. PostgreSQL starts; its WAL streams from the slot at the start LSN to the
//!    safekeepers; the quorum commit LSN goes back as its standby's position.
//! 5. Until: a newer term (fenced: immediate stop, exit 3), SIGTERM/SIGINT (fast stop,
//!    the shutdown checkpoint reaches the quorum, exit 0), or PostgreSQL exiting
//!    (exit 5).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use consensus::proposer::Mode;
use consensus::term_history::Term;
use pg_harness::PgBin;
use postgres_wal::{Lsn, WalSegmentSize};
use strata_ids::TenantTimelineId;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::stream::{self, StreamConfig, StreamEnd};
use super::{new_proposer_id, CommandError};
use crate::limits::{
    CREATE_TIMELINE_TIMEOUT, LINEAGE_COMPARE_BYTES, MAX_REPLICATION_RECONNECTS,
    PAGESERVER_CATCH_UP_TIMEOUT, PAGESERVER_CONNECT_TIMEOUT, POSTMASTER_CHECK_INTERVAL,
    PREFLIGHT_TIMEOUT, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN, SHUTDOWN_FLUSH_TIMEOUT,
    WAL_BUFFER_BYTES,
};
use crate::lineage;
use crate::pageserver::Pageserver;
use crate::pgdata::bootstrap::{bootstrap, give_to_server_user, has_cluster};
use crate::pgdata::end_of_wal::{find_end_of_wal, read_control, ControlInfo};
use crate::pgdata::pg_wal::PgWalDir;
use crate::pgdata::settings::{
    command_line_options, compute_settings, wal_consistency_checking, write_settings, PROPOSER_NAME,
};
use crate::pgdata::state::{ComputeState, STATE_FILE};
use crate::postgres::{version_num, Postgres, StopMode};
use crate::proposer::wal::{lock, ComputeWal, ProposerWal, SharedWalBuffer, WalBuffer};
use crate::proposer::{self, DriverConfig, DriverHandle, Report};
use crate::replication::ReplicationError;
use crate::safekeepers::{describe, on_each, preflight, Safekeepers, TimelineParams};
use crate::status_file::{self, ComputeStatus, Status};

/// PostgreSQL's log, inside the data directory unless `--pg-log` says otherwise (the
/// server user can always write there).
pub const PG_LOG_FILE: &str = "postgres.log";

#[derive(Debug, Clone)]
pub struct StartArgs {
    pub pgdata: PathBuf,
    pub pg_port: u16,
    pub id: TenantTimelineId,
    pub safekeepers: Vec<String>,
    pub status_file: Option<PathBuf>,
    pub election_timeout: Duration,
    pub pg_log: Option<PathBuf>,
    /// The pageserver's gRPC address: base images go there, basebackups come from there.
    pub pageserver: Option<String>,
}

/// The election's outcome, as the lineage check needs it.
#[derive(Debug, Clone, Copy)]
struct Elected {
    term: Term,
    start_lsn: Lsn,
    donor: usize,
    donor_last_term: Term,
}

/// SIGTERM and SIGINT, installed first thing so that neither kills `compute_ctl`
/// while it runs PostgreSQL.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

/// Run blocking work (PostgreSQL tools, file scans) off the async workers, in the
/// caller's span (a blocking task does not inherit it), so its lines name the timeline.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| anyhow!("blocking task failed: {e}"))?
}

pub async fn start(args: StartArgs) -> Result<(), CommandError> {
    let mut signals = Signals::install()?;
    let bin = PgBin::locate().context("locating PostgreSQL 15")?;
    let pg_version = version_num(bin.version())
        .ok_or_else(|| anyhow!("cannot read a version from {:?}", bin.version()))?;
    let pg_log = args
        .pg_log
        .clone()
        .unwrap_or_else(|| args.pgdata.join(PG_LOG_FILE));
    let postgres = Postgres::new(bin, &args.pgdata, &pg_log, args.pg_port);
    let safekeepers =
        Safekeepers::new(args.id, args.safekeepers.clone()).context("parsing --safekeepers")?;
    let pageserver = args
        .pageserver
        .as_deref()
        .map(Pageserver::new)
        .transpose()
        .context("parsing --pageserver")?;
    let checked = match &pageserver {
        Some(pageserver) => {
            let native = pageserver
                .native_redo_rmgrs_retrying(PAGESERVER_CONNECT_TIMEOUT)
                .await
                .context("asking the pageserver for its capabilities")?;
            let checked = wal_consistency_checking(&native);
            tracing::info!(?native, wal_consistency_checking = %checked, "pageserver capabilities");
            Some(checked)
        }
        None => None,
    };
    let settings = compute_settings(args.pg_port, checked.as_deref());

    if let Some(pageserver) = &pageserver {
        if is_empty_dir(&args.pgdata)?
            && timeline_exists(&safekeepers, args.election_timeout).await?
        {
            let from = FromBasebackup {
                args,
                postgres,
                safekeepers,
                pageserver: pageserver.clone(),
                settings,
            };
            return start_from_basebackup(from, signals).await;
        }
    }

    let (mut state, control) = open_data_dir(&postgres, args.id, &settings).await?;
    let params = TimelineParams {
        system_id: control.system_id,
        pg_version,
        wal_segment_size: control.segment_size.bytes() as u32,
        timeline_start_lsn: state.timeline_start_lsn,
    };
    if let (Some(pageserver), false) = (&pageserver, state.timeline_created) {
        // Before the safekeepers get the timeline: a timeline must never exist there
        // without its base image on the pageserver, or no compute could ever start
        // from a basebackup of it (docs/compute.md).
        import_base_image(pageserver, &postgres, args.id, &pg_log).await?;
    }
    ensure_timeline(&safekeepers, &params, &mut state, &postgres).await?;
    let pg_wal = PgWalDir::new(&args.pgdata, control.segment_size, control.system_id);
    let end_of_wal = {
        let pg_wal = pg_wal.clone();
        blocking(move || Ok(find_end_of_wal(&pg_wal, control.checkpoint)?)).await?
    };
    tracing::info!(%end_of_wal, checkpoint = %control.checkpoint, "found the end of the compute's WAL");

    let buffer: SharedWalBuffer =
        Arc::new(Mutex::new(WalBuffer::new(Lsn::INVALID, WAL_BUFFER_BYTES)));
    let (driver, elected) = {
        let wal = ComputeWal {
            buffer: buffer.clone(),
            pg_wal: pg_wal.clone(),
        };
        let elect = elect(
            &safekeepers,
            &params,
            wal,
            args.election_timeout,
            &mut signals,
        );
        match elect.await? {
            Some(won) => won,
            None => {
                tracing::info!("stopped before PostgreSQL was started");
                return Ok(());
            }
        }
    };
    check_lineage(&state, &elected, end_of_wal, &pg_wal, &safekeepers).await?;
    // Durable before PostgreSQL can write anything in this term.
    state
        .add_won_term(elected.term)
        .map_err(anyhow::Error::from)?;
    save_state(&postgres, &state)?;
    *lock(&buffer) = WalBuffer::new(elected.start_lsn, WAL_BUFFER_BYTES);

    start_postgres(&postgres, &settings).await?;
    let compute = Compute {
        stream_config: StreamConfig {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], args.pg_port)),
            system_id: params.system_id,
        },
        postgres,
        driver,
        buffer,
        state,
        term: elected.term,
        status_file: args.status_file,
    };
    compute.run(signals).await
}

async fn start_postgres(
    postgres: &Postgres,
    settings: &[(&'static str, String)],
) -> Result<(), CommandError> {
    let options = command_line_options(settings);
    let pg = postgres.clone();
    blocking(move || Ok(pg.start(&options)?))
        .await
        .context("starting PostgreSQL")?;
    tracing::info!(port = postgres.port(), "PostgreSQL accepts connections");
    Ok(())
}

/// Whether `pgdata` is absent or an empty directory.
fn is_empty_dir(pgdata: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(pgdata) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(anyhow!("reading {}: {e}", pgdata.display())),
    }
}

/// Whether the safekeepers hold the timeline: yes when one that answers has it, no
/// when a quorum says it does not exist and none has it. Retried until one of the two
/// is certain, within `timeout`.
async fn timeline_exists(safekeepers: &Safekeepers, timeout: Duration) -> anyhow::Result<bool> {
    let quorum = safekeepers.len() / 2 + 1;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let found = preflight(safekeepers, PREFLIGHT_TIMEOUT).await;
        if !found.answered.is_empty() {
            return Ok(true);
        }
        if found.not_found.len() >= quorum {
            return Ok(false);
        }
        if tokio::time::Instant::now() + RECONNECT_BACKOFF_MAX > deadline {
            let why: Vec<String> = found
                .unreachable
                .iter()
                .map(|(i, e)| format!("{}: {e}", safekeepers.addr(*i)))
                .collect();
            return Err(anyhow!(
                "cannot tell whether timeline {} exists: fewer than a quorum of safekeepers \
                 answered within {timeout:?} ({})",
                safekeepers.id(),
                why.join("; ")
            ));
        }
        tokio::time::sleep(RECONNECT_BACKOFF_MAX).await;
    }
}

/// Send the freshly bootstrapped data directory to the pageserver as the timeline's
/// base image (idempotent: the same data directory again returns the timeline).
async fn import_base_image(
    pageserver: &Pageserver,
    postgres: &Postgres,
    id: TenantTimelineId,
    pg_log: &Path,
) -> Result<(), CommandError> {
    let pgdata = postgres.pgdata().to_owned();
    // The state file belongs to this data directory, not to the timeline, and a log
    // kept inside it is not cluster state either.
    let mut skip: Vec<PathBuf> = vec![PathBuf::from(STATE_FILE)];
    skip.extend(pg_log.strip_prefix(&pgdata).ok().map(Path::to_path_buf));
    let tar = blocking(move || {
        let skip: Vec<&Path> = skip.iter().map(PathBuf::as_path).collect();
        let mut tar = Vec::new();
        basebackup::tar_datadir(&pgdata, &skip, &mut tar)?;
        Ok(tar)
    })
    .await
    .context("archiving the new data directory")?;
    tracing::info!(
        bytes = tar.len(),
        pageserver = pageserver.addr(),
        "importing the base image into the pageserver"
    );
    let info = pageserver
        .import_timeline(id, tar)
        .await
        .context("importing the timeline's base image")?;
    tracing::info!(start_lsn = %Lsn(info.start_lsn), "the pageserver holds the timeline's base image");
    Ok(())
}

/// What [`start_from_basebackup`] needs.
struct FromBasebackup {
    args: StartArgs,
    postgres: Postgres,
    safekeepers: Safekeepers,
    pageserver: Pageserver,
    settings: Vec<(&'static str, String)>,
}

/// A new compute for an existing timeline, on an empty data directory: election (the
/// quorum is brought to the start LSN S in our term), the pageserver's basebackup at S,
/// PostgreSQL started on it, its WAL streamed from S. The data directory is made in a
/// staging directory beside it and renamed into place whole, with its state file
/// (our term won, `base_lsn` = S) already inside: a crash leaves no half data directory.
async fn start_from_basebackup(
    from: FromBasebackup,
    mut signals: Signals,
) -> Result<(), CommandError> {
    let FromBasebackup {
        args,
        postgres,
        safekeepers,
        pageserver,
        settings,
    } = from;
    let deadline = std::time::Instant::now() + args.election_timeout;
    let params = super::sync::discover_params(&safekeepers, deadline).await?;
    let segment_size = WalSegmentSize::new(u64::from(params.wal_segment_size))
        .map_err(|e| anyhow!("the safekeepers' WAL segment size: {e}"))?;
    tracing::info!(
        system_id = params.system_id,
        "starting a new compute from the pageserver"
    );
    let pg_wal = PgWalDir::new(&args.pgdata, segment_size, params.system_id);
    let buffer: SharedWalBuffer =
        Arc::new(Mutex::new(WalBuffer::new(Lsn::INVALID, WAL_BUFFER_BYTES)));
    let wal = ComputeWal {
        buffer: buffer.clone(),
        pg_wal,
    };
    let elect = elect(
        &safekeepers,
        &params,
        wal,
        args.election_timeout,
        &mut signals,
    );
    let Some((mut driver, elected)) = elect.await? else {
        tracing::info!("stopped before PostgreSQL was started");
        return Ok(());
    };
    let start = elected.start_lsn;
    // The pageserver ingests only what the safekeepers' commit LSN covers; after the
    // election's sync the commit LSN is S.
    tracing::info!(%start, "waiting for the pageserver to ingest the timeline up to the start LSN");
    let caught_up = pageserver.wait_for_lsn(args.id, start, PAGESERVER_CATCH_UP_TIMEOUT);
    tokio::pin!(caught_up);
    loop {
        tokio::select! {
            result = &mut caught_up => {
                result.context("waiting for the pageserver")?;
                break;
            }
            report = driver.reports.recv() => match report {
                Some(Report::Lost { term }) => return Err(CommandError::Fenced { term }),
                Some(Report::Failed(error)) => return Err(anyhow!("{error}").into()),
                Some(_) => {}
                None => {
                    return Err(anyhow!("the proposer stopped while waiting for the pageserver").into())
                }
            },
            () = signals.recv() => {
                tracing::info!("stopped before PostgreSQL was started");
                return Ok(());
            }
        }
    }
    let state = ComputeState {
        id: args.id,
        system_id: params.system_id,
        timeline_start_lsn: params.timeline_start_lsn,
        timeline_created: true,
        won_terms: vec![elected.term],
        fenced_by: None,
        pending_safekeepers: Vec::new(),
        base_lsn: Some(start),
    };
    make_data_dir_from_basebackup(&postgres, &pageserver, &state, start, &settings).await?;
    *lock(&buffer) = WalBuffer::new(start, WAL_BUFFER_BYTES);

    start_postgres(&postgres, &settings).await?;
    // Slots are not part of a basebackup; the stream below needs ours.
    let pg = postgres.clone();
    blocking(move || {
        Ok(pg.psql(&format!(
            "SELECT pg_create_physical_replication_slot('{PROPOSER_NAME}', true)"
        ))?)
    })
    .await
    .context("creating the replication slot")?;
    let compute = Compute {
        stream_config: StreamConfig {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], args.pg_port)),
            system_id: params.system_id,
        },
        postgres,
        driver,
        buffer,
        state,
        term: elected.term,
        status_file: args.status_file,
    };
    compute.run(signals).await
}

/// The basebackup at `lsn` unpacked into a staging directory beside the data
/// directory, with `state` and the compute settings written, then renamed into place.
async fn make_data_dir_from_basebackup(
    postgres: &Postgres,
    pageserver: &Pageserver,
    state: &ComputeState,
    lsn: Lsn,
    settings: &[(&'static str, String)],
) -> Result<(), CommandError> {
    let pgdata = postgres.pgdata().to_owned();
    let parent = pgdata
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", pgdata.display()))?
        .to_owned();
    let mut staging_name = pgdata.file_name().unwrap_or_default().to_owned();
    staging_name.push(".basebackup");
    let staging = parent.join(staging_name);
    // A staging directory is never started from: one left by a crash is discarded.
    match std::fs::remove_dir_all(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow!("removing {}: {e}", staging.display()).into()),
    }
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
    }
    give_to_server_user(postgres.bin(), std::slice::from_ref(&staging))
        .map_err(anyhow::Error::from)?;
    let owner = postgres.bin().server_user().map(|u| (u.uid, u.gid));
    let unpacked = pageserver
        .basebackup_into(state.id, lsn, false, &staging, owner)
        .await
        .context("fetching the basebackup")?;
    if unpacked.lsn != lsn {
        return Err(anyhow!(
            "the pageserver's basebackup is at {}, not at the start LSN {lsn}",
            unpacked.lsn
        )
        .into());
    }
    tracing::info!(%lsn, files = unpacked.files, bytes = unpacked.bytes, "basebackup unpacked");
    state.save(&staging).map_err(anyhow::Error::from)?;
    let mut written = write_settings(&staging, settings).map_err(anyhow::Error::from)?;
    written.push(ComputeState::path(&staging));
    give_to_server_user(postgres.bin(), &written).map_err(anyhow::Error::from)?;
    // An empty data directory (checked by the caller) is replaced by the rename.
    match std::fs::remove_dir(&pgdata) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow!("removing the empty {}: {e}", pgdata.display()).into()),
    }
    std::fs::rename(&staging, &pgdata)
        .with_context(|| format!("renaming {} to {}", staging.display(), pgdata.display()))?;
    std::fs::File::open(&parent)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing {}", parent.display()))?;
    Ok(())
}

/// Start the proposer in primary mode and wait for its election; `None` when a
/// signal asked us to stop first.
async fn elect(
    safekeepers: &Safekeepers,
    params: &TimelineParams,
    compute_wal: ComputeWal,
    timeout: Duration,
    signals: &mut Signals,
) -> Result<Option<(DriverHandle, Elected)>, CommandError> {
    let wal = ProposerWal::new(
        Mode::Primary,
        safekeepers.clone(),
        tokio::runtime::Handle::current(),
        Some(compute_wal),
    );
    let config = DriverConfig {
        proposer_id: new_proposer_id(),
        system_id: params.system_id,
        pg_version: params.pg_version,
        wal_segment_size: params.wal_segment_size,
        mode: Mode::Primary,
    };
    let mut driver =
        proposer::start(config, safekeepers.clone(), wal).context("starting the proposer")?;
    let elected = wait_elected(&mut driver, safekeepers, timeout, signals).await?;
    if let Some(elected) = &elected {
        tracing::Span::current().record("term", elected.term.0);
    }
    Ok(elected.map(|elected| (driver, elected)))
}

/// Save the state file durably; like everything in the data directory it belongs to
/// the server user.
fn save_state(postgres: &Postgres, state: &ComputeState) -> anyhow::Result<()> {
    state.save(postgres.pgdata())?;
    give_to_server_user(postgres.bin(), &[ComputeState::path(postgres.pgdata())])?;
    Ok(())
}

/// The state of an existing data directory, or of a new one after its bootstrap.
async fn open_data_dir(
    postgres: &Postgres,
    id: TenantTimelineId,
    settings: &[(&'static str, String)],
) -> Result<(ComputeState, ControlInfo), CommandError> {
    let pgdata = postgres.pgdata().to_owned();
    let state = match ComputeState::load(&pgdata).map_err(anyhow::Error::from)? {
        Some(state) => state,
        None if has_cluster(&pgdata) => {
            return Err(anyhow!(
                "{} holds a PostgreSQL cluster that compute_ctl did not create (no {}), or \
                 whose bootstrap was interrupted: remove it to bootstrap a new compute",
                pgdata.display(),
                ComputeState::path(&pgdata).display()
            )
            .into())
        }
        None => {
            let postgres = postgres.clone();
            blocking(move || Ok(bootstrap(&postgres, id)?))
                .await
                .context("bootstrapping a new compute")?
        }
    };
    state
        .check_timeline(&pgdata, id)
        .map_err(anyhow::Error::from)?;
    if let Some(pid) = postgres.postmaster_pid() {
        return Err(anyhow!(
            "PostgreSQL already runs on {} (pid {pid}) without compute_ctl: stop it first",
            pgdata.display()
        )
        .into());
    }
    let written = write_settings(&pgdata, settings).map_err(anyhow::Error::from)?;
    give_to_server_user(postgres.bin(), &written).map_err(anyhow::Error::from)?;
    let control = read_control(&pgdata).map_err(anyhow::Error::from)?;
    if control.system_id != state.system_id {
        return Err(anyhow!(
            "{}: pg_control's system id {} is not the {} this compute was created with",
            pgdata.display(),
            control.system_id,
            state.system_id
        )
        .into());
    }
    if let Some(term) = state.fenced_by {
        tracing::warn!(%term, "this data directory was fenced by a newer term; the lineage check decides whether it may continue");
    }
    Ok((state, control))
}

/// Create the timeline where it is due (bootstrap; safekeepers unreachable then), and
/// check every safekeeper that answers holds this timeline of this cluster.
async fn ensure_timeline(
    safekeepers: &Safekeepers,
    params: &TimelineParams,
    state: &mut ComputeState,
    postgres: &Postgres,
) -> Result<(), CommandError> {
    let quorum = safekeepers.len() / 2 + 1;
    let due: Vec<bool> = safekeepers
        .addrs()
        .iter()
        .map(|a| !state.timeline_created || state.pending_safekeepers.contains(a))
        .collect();
    if due.iter().any(|&d| d) {
        // At bootstrap every safekeeper should be up: retry a while. Later, one try
        // for each still pending: it was down then and may well still be.
        let timeout = if state.timeline_created {
            Duration::ZERO
        } else {
            CREATE_TIMELINE_TIMEOUT
        };
        let p = params.clone();
        let due_each = due.clone();
        let results = on_each(safekeepers, move |sks, i| {
            let (params, due) = (p.clone(), due_each[i]);
            async move { due.then_some(create_with_retries(&sks, i, &params, timeout).await) }
        })
        .await;
        let mut failed = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            match result {
                None | Some(Ok(())) => {}
                Some(Err(CreateFailure::Refused(why))) => {
                    return Err(anyhow!(
                        "safekeeper {} refused timeline {}: {why}",
                        safekeepers.addr(i),
                        safekeepers.id()
                    )
                    .into())
                }
                Some(Err(CreateFailure::Unreachable(why))) => {
                    tracing::warn!(safekeeper = %safekeepers.addr(i), %why, "timeline not created there yet");
                    failed.push(safekeepers.addr(i).to_owned());
                }
            }
        }
        if !state.timeline_created {
            let created = safekeepers.len() - failed.len();
            if created < quorum {
                return Err(anyhow!(
                    "timeline {} was created on {created} of {} safekeepers, fewer than a \
                     quorum ({quorum}); the next start retries",
                    safekeepers.id(),
                    safekeepers.len()
                )
                .into());
            }
        }
        state.timeline_created = true;
        // Those just attempted are pending again only if they failed.
        let attempted: Vec<&String> = (0..safekeepers.len())
            .filter(|&i| due[i])
            .map(|i| &safekeepers.addrs()[i])
            .collect();
        state
            .pending_safekeepers
            .retain(|a| !attempted.contains(&a));
        state.pending_safekeepers.extend(failed);
        save_state(postgres, state)?;
    }
    check_safekeepers(safekeepers, params, state).await
}

enum CreateFailure {
    Refused(String),
    Unreachable(String),
}

async fn create_with_retries(
    safekeepers: &Safekeepers,
    i: usize,
    params: &TimelineParams,
    timeout: Duration,
) -> Result<(), CreateFailure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = RECONNECT_BACKOFF_MIN;
    loop {
        match safekeepers.create(i, params).await {
            Ok(_) => return Ok(()),
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    || status.code() == tonic::Code::DeadlineExceeded =>
            {
                if tokio::time::Instant::now() + backoff > deadline {
                    return Err(CreateFailure::Unreachable(describe(&status)));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
            Err(status) if status.code() == tonic::Code::AlreadyExists => {
                // Say what differs: usually another cluster's timeline under our ids.
                let why = match safekeepers.status(i).await {
                    Ok(info) => params.mismatch(&TimelineParams::from_info(&info)),
                    Err(_) => None,
                };
                return Err(CreateFailure::Refused(
                    why.unwrap_or_else(|| describe(&status)),
                ));
            }
            Err(status) => return Err(CreateFailure::Refused(describe(&status))),
        }
    }
}

/// Every safekeeper that answers must hold this timeline with our parameters.
async fn check_safekeepers(
    safekeepers: &Safekeepers,
    params: &TimelineParams,
    state: &ComputeState,
) -> Result<(), CommandError> {
    let found = preflight(safekeepers, PREFLIGHT_TIMEOUT).await;
    for (i, info) in &found.answered {
        if let Some(why) = params.mismatch(&TimelineParams::from_info(info)) {
            return Err(anyhow!(
                "safekeeper {} does not hold this compute's timeline {}: {why}",
                safekeepers.addr(*i),
                safekeepers.id()
            )
            .into());
        }
    }
    for &i in &found.not_found {
        if !state
            .pending_safekeepers
            .iter()
            .any(|a| a == safekeepers.addr(i))
        {
            return Err(anyhow!(
                "safekeeper {} does not have timeline {} (timelines are created only when \
                 their compute is bootstrapped): check --safekeepers",
                safekeepers.addr(i),
                safekeepers.id()
            )
            .into());
        }
    }
    for (i, why) in &found.unreachable {
        tracing::warn!(safekeeper = %safekeepers.addr(*i), %why, "safekeeper not reachable; a quorum of the others suffices");
    }
    Ok(())
}

/// Wait for the election; `None` when a signal asked us to stop first.
async fn wait_elected(
    driver: &mut DriverHandle,
    safekeepers: &Safekeepers,
    timeout: Duration,
    signals: &mut Signals,
) -> Result<Option<Elected>, CommandError> {
    let deadline = tokio::time::Instant::now() + timeout;
    tokio::select! {
        report = driver.reports.recv() => match report {
            Some(Report::Elected { term, start_lsn, donor, donor_last_term }) => {
                Ok(Some(Elected { term, start_lsn, donor, donor_last_term }))
            }
            Some(Report::Lost { term }) => Err(CommandError::Fenced { term }),
            Some(Report::Failed(error)) => Err(anyhow!("{error}").into()),
            Some(Report::Synced(_)) | None => Err(anyhow!("the proposer stopped before an election").into()),
        },
        () = tokio::time::sleep_until(deadline) => Err(anyhow!(
            "no quorum of safekeepers elected this compute within {timeout:?}: {}",
            driver.describe_peers(safekeepers)
        )
        .into()),
        () = signals.recv() => Ok(None),
    }
}

/// Positions and terms first, then the last bytes before the start LSN against the
/// donor's. A comparison that cannot be made (a source unreachable) is logged and
/// skipped; one that finds different bytes refuses.
async fn check_lineage(
    state: &ComputeState,
    elected: &Elected,
    end_of_wal: Lsn,
    pg_wal: &PgWalDir,
    safekeepers: &Safekeepers,
) -> Result<(), CommandError> {
    lineage::check_positions(
        elected.start_lsn,
        end_of_wal,
        elected.donor_last_term,
        state.base_lsn,
        |t| state.won(t),
    )
    .map_err(CommandError::Lineage)?;
    let start = elected.start_lsn;
    // WAL below a basebackup's LSN is not the timeline's bytes (see ComputeState).
    let from = Lsn(start.0.saturating_sub(LINEAGE_COMPARE_BYTES))
        .max(state.timeline_start_lsn)
        .max(state.base_lsn.unwrap_or(Lsn::INVALID));
    if from >= start {
        return Ok(());
    }
    let local = {
        let pg_wal = pg_wal.clone();
        blocking(move || Ok(pg_wal.read(from, start)?)).await
    };
    let remote = safekeepers.read_wal(elected.donor, from, start).await;
    match (local, remote) {
        (Ok(local), Ok(remote)) if remote.term == elected.term.0 => {
            if local != remote.wal {
                return Err(CommandError::Lineage(format!(
                    "the WAL in [{from}, {start}) differs from the donor's ({}): this data \
                     directory's history is not the timeline's",
                    safekeepers.addr(elected.donor)
                )));
            }
            tracing::info!(%from, %start, "lineage: WAL below the start LSN matches the donor's");
        }
        (Ok(_), Ok(remote)) => {
            return Err(CommandError::Fenced {
                term: Term(remote.term),
            })
        }
        (local, remote) => tracing::warn!(
            local = ?local.err().map(|e| e.to_string()),
            remote = ?remote.err().map(|s| describe(&s)),
            "lineage: could not compare the WAL below the start LSN; positions agree"
        ),
    }
    Ok(())
}

/// How a running compute ends.
enum Outcome {
    Fenced(Term),
    Shutdown,
    PostgresExited(String),
    Failed(String),
}

type StreamTask = JoinHandle<Result<StreamEnd, ReplicationError>>;

struct Compute {
    postgres: Postgres,
    driver: DriverHandle,
    buffer: SharedWalBuffer,
    state: ComputeState,
    term: Term,
    status_file: Option<PathBuf>,
    stream_config: StreamConfig,
}

impl Compute {
    fn spawn_stream(&self) -> StreamTask {
        let commit = self.driver.commit_lsn.clone();
        tokio::spawn(
            stream::run(
                self.stream_config.clone(),
                self.buffer.clone(),
                self.driver.events.clone(),
                commit,
            )
            .in_current_span(),
        )
    }

    fn write_status(&self, state: ComputeStatus) {
        let Some(path) = &self.status_file else {
            return;
        };
        let status = Status {
            pid: self.postgres.postmaster_pid(),
            compute_ctl_pid: std::process::id(),
            pg_port: self.postgres.port(),
            connstr: self.postgres.connstr(),
            term: self.term.0,
            state,
        };
        // Only a supervisor reads it; failing to write it must not stop the compute.
        if let Err(error) = status_file::write(path, &status) {
            tracing::error!(%error, "cannot write the status file");
        }
    }

    async fn run(mut self, mut signals: Signals) -> Result<(), CommandError> {
        let mut stream = self.spawn_stream();
        self.write_status(ComputeStatus::Running);
        tracing::info!(connstr = %self.postgres.connstr(), "compute running");
        let mut reconnects = 0;
        let mut check = tokio::time::interval(POSTMASTER_CHECK_INTERVAL);
        let outcome = loop {
            tokio::select! {
                report = self.driver.reports.recv() => match report {
                    Some(Report::Lost { term }) => break Outcome::Fenced(term),
                    Some(Report::Failed(error)) => break Outcome::Failed(error),
                    Some(_) => {}
                    None => break Outcome::Failed("the proposer stopped".to_owned()),
                },
                () = signals.recv() => break Outcome::Shutdown,
                ended = &mut stream => {
                    let reason = describe_stream_end(ended);
                    if self.postgres.postmaster_pid().is_none() {
                        break Outcome::PostgresExited(reason);
                    }
                    if reconnects >= MAX_REPLICATION_RECONNECTS {
                        break Outcome::Failed(format!("replication stream keeps failing: {reason}"));
                    }
                    reconnects += 1;
                    tracing::warn!(%reason, reconnects, "replication stream ended; reconnecting");
                    tokio::time::sleep(RECONNECT_BACKOFF_MAX).await;
                    stream = self.spawn_stream();
                }
                _ = check.tick() => {
                    if self.postgres.postmaster_pid().is_none() {
                        break Outcome::PostgresExited("the postmaster is gone".to_owned());
                    }
                }
            }
        };
        self.finish(outcome, stream).await
    }

    async fn finish(mut self, outcome: Outcome, stream: StreamTask) -> Result<(), CommandError> {
        match outcome {
            Outcome::Fenced(term) => Err(self.fence(term).await),
            Outcome::Failed(error) => {
                tracing::error!(%error, "stopping PostgreSQL (immediate)");
                self.stop(StopMode::Immediate).await;
                self.write_status(ComputeStatus::Stopped);
                Err(anyhow!("{error}").into())
            }
            Outcome::PostgresExited(reason) => {
                tracing::error!(%reason, "PostgreSQL exited");
                self.write_status(ComputeStatus::Stopped);
                Err(CommandError::PostgresExited(reason))
            }
            Outcome::Shutdown => self.shutdown(stream).await,
        }
    }

    /// A newer term exists: PostgreSQL must not acknowledge anything more. It cannot
    /// (our appends are refused, so our commit LSN no longer moves), but a session that
    /// cancels its wait would see a local commit: stop at once.
    async fn fence(&mut self, term: Term) -> CommandError {
        tracing::error!(%term, ours = %self.term, "fenced by a newer term: stopping PostgreSQL (immediate)");
        self.stop(StopMode::Immediate).await;
        self.state.fenced_by = Some(term);
        if let Err(error) = save_state(&self.postgres, &self.state) {
            tracing::error!(%error, "cannot record the fencing in the state file");
        }
        self.write_status(ComputeStatus::Fenced);
        CommandError::Fenced { term }
    }

    async fn stop(&self, mode: StopMode) {
        let postgres = self.postgres.clone();
        if let Err(error) = blocking(move || Ok(postgres.stop(mode)?)).await {
            // Already stopped (crashed, killed) is the common reason.
            tracing::warn!(%error, ?mode, "pg_ctl stop failed");
        }
    }

    /// Fast shutdown: PostgreSQL writes its shutdown checkpoint and its walsender waits
    /// until we report it flushed, i.e. until the quorum holds it; so the proposer
    /// keeps running while `pg_ctl stop` does. Then exit once the quorum has what was
    /// streamed (bounded).
    async fn shutdown(&mut self, mut stream: StreamTask) -> Result<(), CommandError> {
        tracing::info!("stopping PostgreSQL (fast)");
        let postgres = self.postgres.clone();
        let mut stopping = tokio::task::spawn_blocking(move || postgres.stop(StopMode::Fast));
        loop {
            tokio::select! {
                stopped = &mut stopping => {
                    if !matches!(stopped, Ok(Ok(()))) {
                        tracing::warn!(?stopped, "fast stop failed; stopping PostgreSQL (immediate)");
                        self.stop(StopMode::Immediate).await;
                    }
                    break;
                }
                report = self.driver.reports.recv() => {
                    if let Some(Report::Lost { term }) = report {
                        return Err(self.fence(term).await);
                    }
                }
            }
        }
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, &mut stream).await;
        let end = lock(&self.buffer).end();
        let mut commit = self.driver.commit_lsn.clone();
        let flushed = tokio::time::timeout(SHUTDOWN_FLUSH_TIMEOUT, commit.wait_for(|&c| c >= end))
            .await
            .is_ok_and(|waited| waited.is_ok());
        match flushed {
            true => tracing::info!(%end, "the quorum holds all WAL streamed; stopped"),
            false => tracing::warn!(
                %end,
                commit = %*commit.borrow(),
                "stopped with WAL not yet on a quorum; the next start streams it again"
            ),
        }
        self.write_status(ComputeStatus::Stopped);
        Ok(())
    }
}

fn describe_stream_end(
    ended: Result<Result<StreamEnd, ReplicationError>, tokio::task::JoinError>,
) -> String {
    match ended {
        Ok(Ok(StreamEnd::ServerDone)) => "PostgreSQL ended replication".to_owned(),
        Ok(Ok(StreamEnd::DriverGone)) => "the proposer stopped".to_owned(),
        Ok(Err(error)) => error.to_string(),
        Err(join) => format!("replication task failed: {join}"),
    }
}
