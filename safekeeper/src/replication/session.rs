//! One client session: the startup handshake, then replication commands until the client
//! leaves.
//!
//! Answers, column for column as PostgreSQL 15's walsender gives them:
//! - `IDENTIFY_SYSTEM`: `systemid` (text), `timeline` (int4, always 1), `xlogpos` (text,
//!   the current commit LSN), `dbname` (text, NULL).
//! - `SHOW name`: one text column named after the setting (see [`show_setting`]);
//!   an unknown name is `42704 unrecognized configuration parameter`.
//! - `READ_REPLICATION_SLOT s`: slots are not kept (retention is the safekeeper's own
//!   horizon), and every slot reads as a physical slot with no reserved position:
//!   `('physical', NULL, NULL)`. So `pg_receivewal --slot` starts at the server's position
//!   and `START_REPLICATION SLOT s` is accepted with the slot ignored.
//! - `TIMELINE_HISTORY n`: an error; timeline 1, the only one, has no history file.
//! - `START_REPLICATION`: see [`super::stream`].
//! - Other replication commands: `0A000 feature_not_supported`; SQL or an empty query:
//!   `0A000 cannot execute SQL commands in WAL sender for physical replication`, as
//!   PostgreSQL answers on a physical replication connection.

use std::sync::Arc;

use postgres_wal::{Lsn, WalSegmentSize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::command::{parse_command, ReplicationCommand};
use super::connection::{Connection, ReadError, WriteError};
use super::errors::{sqlstate, PgError};
use super::limits::{IDLE_COMMAND_TIMEOUT, STARTUP_TIMEOUT};
use super::messages::{Column, FrontendMessage, StartupPacket, INT4_OID};
use super::startup::StartupParameters;
use super::stream::{stream_wal, StreamEnd};
use super::{ReplicationTimeline, ResolveError, TimelineSource};

/// `server_version` reported to clients. libpq derives the version number from it
/// (`15.0` → 150000), and pg_receivewal refuses servers newer than itself, so the number
/// part must be the PostgreSQL major whose WAL we serve.
pub const SERVER_VERSION: &str = "15.0 (Strata safekeeper)";
/// `server_version_num` for `SHOW`.
pub const SERVER_VERSION_NUM: &str = "150000";
/// The only PostgreSQL timeline id Strata uses.
pub const PG_TIMELINE_ID: u32 = 1;
/// How many SSLRequest/GSSENCRequest packets a client may send before its startup packet
/// (libpq sends at most one of each).
const MAX_ENCRYPTION_REQUESTS: usize = 2;

/// How a session ended, for the log.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
    /// An error was reported to the client and the connection closed.
    #[error("{0}")]
    Reported(PgError),
}

/// What a session knows once startup is done.
pub(crate) struct Session {
    pub params: StartupParameters,
    pub timeline: Arc<dyn ReplicationTimeline>,
    pub segment_size: WalSegmentSize,
}

/// Run one connection from its first byte to its end.
pub(crate) async fn run_session<R, W>(
    mut conn: Connection<R, W>,
    source: Arc<dyn TimelineSource>,
    mut shutdown: watch::Receiver<bool>,
    backend_key: (u32, u32),
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let startup = tokio::time::timeout(STARTUP_TIMEOUT, startup(&mut conn, source.as_ref()));
    let session = match startup.await {
        Err(_) => {
            debug!("client sent no startup packet within {STARTUP_TIMEOUT:?}");
            return Ok(());
        }
        Ok(Ok(Some(session))) => session,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(SessionError::Reported(err))) => return report_fatal(&mut conn, err).await,
        Ok(Err(SessionError::Read(ReadError::Protocol(err)))) => {
            return report_fatal(&mut conn, err.into()).await
        }
        Ok(Err(err)) => return Err(err),
    };
    let span = tracing::Span::current();
    let id = session.timeline.id();
    span.record("tenant_id", tracing::field::display(id.tenant_id));
    span.record("timeline_id", tracing::field::display(id.timeline_id));
    info!(
        user = %session.params.user,
        application_name = session.params.application_name.as_deref().unwrap_or(""),
        ignored_settings = ?session.params.ignored_settings,
        "replication connection started"
    );
    greet(&mut conn, &session, backend_key);
    conn.flush().await?;
    command_loop(&mut conn, &session, &mut shutdown).await
}

/// Read packets until the StartupMessage, answering encryption requests with `N`.
/// `Ok(None)`: the client left or sent a CancelRequest (ignored: nothing runs long enough
/// to be worth cancelling, and streaming ends with CopyDone).
async fn startup<R, W>(
    conn: &mut Connection<R, W>,
    source: &dyn TimelineSource,
) -> Result<Option<Session>, SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut encryption_requests = 0;
    let (minor_version, pairs) = loop {
        match conn.read_startup().await? {
            None => return Ok(None),
            Some(StartupPacket::CancelRequest { .. }) => {
                debug!("ignoring a CancelRequest");
                return Ok(None);
            }
            Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                encryption_requests += 1;
                if encryption_requests > MAX_ENCRYPTION_REQUESTS {
                    return Err(SessionError::Reported(PgError::fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        "too many encryption requests",
                    )));
                }
                conn.out.encryption_refused();
                conn.flush().await?;
            }
            Some(StartupPacket::Startup {
                minor_version,
                parameters,
            }) => break (minor_version, parameters),
        }
    };
    let params = StartupParameters::from_pairs(&pairs).map_err(SessionError::Reported)?;
    if minor_version > 0 || !params.protocol_options.is_empty() {
        conn.out
            .negotiate_protocol_version(&params.protocol_options);
    }
    let timeline = source
        .resolve(params.tenant_id, params.timeline_id)
        .map_err(|err| SessionError::Reported(resolve_error(err)))?;
    let segment_size =
        WalSegmentSize::new(u64::from(timeline.wal_segment_size())).map_err(|err| {
            SessionError::Reported(PgError::fatal(sqlstate::INTERNAL_ERROR, err.to_string()))
        })?;
    Ok(Some(Session {
        params,
        timeline,
        segment_size,
    }))
}

fn resolve_error(err: ResolveError) -> PgError {
    let code = match err {
        ResolveError::NotFound { .. } | ResolveError::Ambiguous { .. } => {
            sqlstate::INVALID_CATALOG_NAME
        }
        ResolveError::Unavailable(_) => sqlstate::CANNOT_CONNECT_NOW,
    };
    PgError::fatal(code, err.to_string()).with_hint(
        "Name the timeline with options='-c tenant_id=<32 hex digits> -c timeline_id=<32 hex digits>'.",
    )
}

/// AuthenticationOk (trust: tokens come later), the parameters a client checks, the key.
fn greet<R, W>(conn: &mut Connection<R, W>, session: &Session, (pid, secret): (u32, u32))
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    conn.out.authentication_ok();
    for (name, value) in reported_parameters(&session.params) {
        conn.out.parameter_status(name, &value);
    }
    conn.out.backend_key_data(pid, secret);
    conn.out.ready_for_query();
}

/// The ParameterStatus messages of a PostgreSQL 15 server that clients look at:
/// pg_receivewal requires `integer_datetimes = on`; libpq reads `server_version`.
fn reported_parameters(params: &StartupParameters) -> Vec<(&'static str, String)> {
    vec![
        (
            "application_name",
            params.application_name.clone().unwrap_or_default(),
        ),
        ("client_encoding", client_encoding(params)),
        ("DateStyle", "ISO, MDY".into()),
        ("default_transaction_read_only", "on".into()),
        ("in_hot_standby", "off".into()),
        ("integer_datetimes", "on".into()),
        ("IntervalStyle", "postgres".into()),
        ("is_superuser", "off".into()),
        ("server_encoding", "UTF8".into()),
        ("server_version", SERVER_VERSION.into()),
        ("session_authorization", params.user.clone()),
        ("standard_conforming_strings", "on".into()),
        ("TimeZone", "UTC".into()),
    ]
}

/// Echo the client's encoding when it is a plain name (replies are ASCII anyway).
fn client_encoding(params: &StartupParameters) -> String {
    match &params.client_encoding {
        Some(name)
            if !name.is_empty()
                && name.len() <= 32
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            if name.eq_ignore_ascii_case("auto") {
                "UTF8".into()
            } else {
                name.to_ascii_uppercase()
            }
        }
        _ => "UTF8".into(),
    }
}

async fn command_loop<R, W>(
    conn: &mut Connection<R, W>,
    session: &Session,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let message = tokio::select! {
            biased;
            _ = wait_for_shutdown(shutdown) => {
                return report_fatal(conn, shutdown_error()).await;
            }
            read = tokio::time::timeout(IDLE_COMMAND_TIMEOUT, conn.read_message()) => match read {
                Err(_) => {
                    let err = PgError::fatal(
                        sqlstate::IDLE_SESSION_TIMEOUT,
                        format!("terminating connection: idle for {IDLE_COMMAND_TIMEOUT:?}"),
                    );
                    return report_fatal(conn, err).await;
                }
                Ok(Err(ReadError::Protocol(err))) => return report_fatal(conn, err.into()).await,
                Ok(read) => read?,
            }
        };
        let Some(message) = message else {
            return Ok(());
        };
        match message {
            FrontendMessage::Query(text) => {
                if run_query(conn, session, shutdown, &text).await? == Continue::Close {
                    return Ok(());
                }
            }
            FrontendMessage::Terminate => return Ok(()),
            // Copy messages outside COPY are ignored, as the protocol says.
            FrontendMessage::CopyData(_)
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail(_) => {}
            FrontendMessage::Unsupported(tag) => {
                let err = PgError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("extended query protocol not supported in a replication connection (message type {tag:?})"),
                );
                return report_fatal(conn, err).await;
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Continue {
    Yes,
    Close,
}

/// Run one Query; on return the client has its ReadyForQuery, or the connection is to
/// be closed.
async fn run_query<R, W>(
    conn: &mut Connection<R, W>,
    session: &Session,
    shutdown: &mut watch::Receiver<bool>,
    text: &str,
) -> Result<Continue, SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    debug!(command = text, "received replication command");
    let command = match parse_command(text) {
        Ok(command) => command,
        Err(err) => return answer_error(conn, err.into()).await,
    };
    let start = match command {
        ReplicationCommand::StartReplication {
            start,
            timeline,
            ref slot,
        } => {
            debug!(?slot, "slots are not kept; the slot name is ignored");
            match check_start(session, start, timeline) {
                Ok(()) => start,
                Err(err) => return answer_error(conn, err).await,
            }
        }
        other => {
            match answer_command(conn, session, &other) {
                Ok(()) => conn.out.ready_for_query(),
                Err(err) => {
                    conn.out.error_response(&err);
                    conn.out.ready_for_query();
                }
            }
            conn.flush().await?;
            return Ok(Continue::Yes);
        }
    };
    match stream_wal(conn, session, shutdown, start).await? {
        StreamEnd::CopyDone => {
            conn.out.command_complete("START_REPLICATION");
            conn.out.ready_for_query();
            conn.flush().await?;
            Ok(Continue::Yes)
        }
        StreamEnd::Terminate => Ok(Continue::Close),
        StreamEnd::Fatal(err) => report_fatal(conn, err).await.map(|()| Continue::Close),
    }
}

async fn answer_error<R, W>(
    conn: &mut Connection<R, W>,
    err: PgError,
) -> Result<Continue, SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    debug!(%err, "replication command failed");
    conn.out.error_response(&err);
    conn.out.ready_for_query();
    conn.flush().await?;
    Ok(Continue::Yes)
}

/// Queue the answer to a command other than START_REPLICATION (without ReadyForQuery).
fn answer_command<R, W>(
    conn: &mut Connection<R, W>,
    session: &Session,
    command: &ReplicationCommand,
) -> Result<(), PgError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match command {
        ReplicationCommand::IdentifySystem => {
            let system_id = session.timeline.system_id().to_string();
            let commit_lsn = current_commit_lsn(session).to_string();
            let timeline = PG_TIMELINE_ID.to_string();
            conn.out.row_description(&[
                Column::text("systemid"),
                Column {
                    name: "timeline",
                    type_oid: INT4_OID,
                },
                Column::text("xlogpos"),
                Column::text("dbname"),
            ]);
            conn.out
                .data_row(&[Some(&system_id), Some(&timeline), Some(&commit_lsn), None]);
            conn.out.command_complete("IDENTIFY_SYSTEM");
        }
        ReplicationCommand::Show { name } => {
            let (column, value) = show_setting(session, name)?;
            conn.out.row_description(&[Column::text(column)]);
            conn.out.data_row(&[Some(&value)]);
            conn.out.command_complete("SHOW");
        }
        ReplicationCommand::ReadReplicationSlot { .. } => {
            conn.out.row_description(&[
                Column::text("slot_type"),
                Column::text("restart_lsn"),
                Column {
                    name: "restart_tli",
                    type_oid: super::messages::INT8_OID,
                },
            ]);
            conn.out.data_row(&[Some("physical"), None, None]);
            conn.out.command_complete("READ_REPLICATION_SLOT");
        }
        ReplicationCommand::TimelineHistory { timeline } => {
            return Err(PgError::error(
                sqlstate::UNDEFINED_FILE,
                format!("could not open file \"pg_wal/{timeline:08X}.history\": No such file or directory"),
            )
            .with_detail("This safekeeper serves timeline 1 only, which has no history file."));
        }
        ReplicationCommand::Unsupported { command } => {
            return Err(PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("{command} is not supported by the Strata safekeeper"),
            ));
        }
        ReplicationCommand::StartReplication { .. } => {
            return Err(PgError::error(
                sqlstate::INTERNAL_ERROR,
                "START_REPLICATION answered elsewhere",
            ));
        }
    }
    Ok(())
}

pub(crate) fn current_commit_lsn(session: &Session) -> Lsn {
    *session.timeline.commit_lsn().borrow()
}

/// The settings `SHOW` knows, with PostgreSQL's column name and text form.
/// `SHOW tenant_id` and `SHOW timeline_id` tell which timeline the connection reads.
pub(crate) fn show_setting(
    session: &Session,
    name: &str,
) -> Result<(&'static str, String), PgError> {
    let id = session.timeline.id();
    let setting = match name.to_ascii_lowercase().as_str() {
        "wal_segment_size" => (
            "wal_segment_size",
            format_bytes(session.segment_size.bytes()),
        ),
        "data_directory_mode" => ("data_directory_mode", "0700".into()),
        "server_version" => ("server_version", SERVER_VERSION.into()),
        "server_version_num" => ("server_version_num", SERVER_VERSION_NUM.into()),
        "integer_datetimes" => ("integer_datetimes", "on".into()),
        "server_encoding" => ("server_encoding", "UTF8".into()),
        "client_encoding" => ("client_encoding", client_encoding(&session.params)),
        "timezone" => ("TimeZone", "UTC".into()),
        "datestyle" => ("DateStyle", "ISO, MDY".into()),
        "standard_conforming_strings" => ("standard_conforming_strings", "on".into()),
        "block_size" => ("block_size", "8192".into()),
        "wal_block_size" => ("wal_block_size", "8192".into()),
        "max_identifier_length" => ("max_identifier_length", "63".into()),
        "application_name" => (
            "application_name",
            session.params.application_name.clone().unwrap_or_default(),
        ),
        "tenant_id" => ("tenant_id", id.tenant_id.to_string()),
        "timeline_id" => ("timeline_id", id.timeline_id.to_string()),
        _ => {
            return Err(PgError::error(
                sqlstate::UNDEFINED_OBJECT,
                format!("unrecognized configuration parameter \"{name}\""),
            ))
        }
    };
    Ok(setting)
}

/// A byte count as PostgreSQL shows a `GUC_UNIT_BYTE` setting: in the largest unit that
/// divides it (`16MB`, `1GB`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TB", 1 << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("kB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// Whether streaming may start at `start`, with PostgreSQL's error texts.
pub(crate) fn check_start(
    session: &Session,
    start: Lsn,
    timeline: Option<u32>,
) -> Result<(), PgError> {
    if let Some(timeline) = timeline.filter(|&t| t != PG_TIMELINE_ID) {
        return Err(PgError::error(
            sqlstate::INTERNAL_ERROR,
            format!("requested timeline {timeline} is not in this server's history"),
        ));
    }
    let commit_lsn = current_commit_lsn(session);
    if start > commit_lsn {
        return Err(PgError::error(
            sqlstate::INTERNAL_ERROR,
            format!("requested starting point {start} is ahead of the WAL flush position of this server {commit_lsn}"),
        ));
    }
    let timeline_start = session.timeline.timeline_start_lsn();
    if start < timeline_start {
        let segment = session
            .segment_size
            .file_name(PG_TIMELINE_ID, start.segment_number(session.segment_size));
        return Err(PgError::error(
            sqlstate::UNDEFINED_FILE,
            format!("requested WAL segment {segment} has already been removed"),
        )
        .with_detail(format!("This safekeeper holds WAL from {timeline_start}.")));
    }
    Ok(())
}

pub(crate) fn shutdown_error() -> PgError {
    PgError::fatal(
        sqlstate::ADMIN_SHUTDOWN,
        "terminating connection due to safekeeper shutdown",
    )
}

/// Resolves when shutdown is requested (or its sender is gone).
pub(crate) async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// Send a fatal error and close the connection.
async fn report_fatal<R, W>(conn: &mut Connection<R, W>, err: PgError) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let err = PgError {
        severity: super::errors::Severity::Fatal,
        ..err
    };
    warn!(%err, "closing replication connection");
    conn.out.error_response(&err);
    conn.shutdown().await;
    Err(SessionError::Reported(err))
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
