//! The listener: accepts connections and runs one session per connection.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use super::connection::Connection;
use super::errors::{sqlstate, PgError};
use super::limits::MAX_CONNECTIONS;
use super::session::{run_session, wait_for_shutdown, SessionError};
use super::TimelineSource;

/// Pause after a failed `accept` (for example when out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// After this many failed `accept`s in a row the listener is considered broken.
const MAX_CONSECUTIVE_ACCEPT_ERRORS: u32 = 100;
/// How long [`serve`] waits for sessions to end after shutdown before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why [`serve`] stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("accepting a replication connection failed {count} times in a row: {last}")]
    Accept {
        count: u32,
        #[source]
        last: std::io::Error,
    },
}

/// Serve the replication protocol on `listener` until `shutdown` becomes `true` (or its
/// sender is dropped). Each connection runs on its own task; at shutdown every session is
/// told to stop (clients get `57P01 admin_shutdown`) and given [`SHUTDOWN_GRACE`] to do so.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn TimelineSource>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let local = listener.local_addr().ok();
    info!(?local, "serving the PostgreSQL replication protocol");
    let mut sessions = JoinSet::new();
    let mut next_id: u32 = 0;
    let mut consecutive_errors = 0;
    let keys = RandomState::new();
    let result = loop {
        let accepted = tokio::select! {
            biased;
            _ = wait_for_shutdown(&mut shutdown) => break Ok(()),
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                consecutive_errors = 0;
                accepted
            }
            Err(err) => {
                consecutive_errors += 1;
                warn!(%err, consecutive_errors, "accept failed");
                if consecutive_errors >= MAX_CONSECUTIVE_ACCEPT_ERRORS {
                    break Err(ServeError::Accept {
                        count: consecutive_errors,
                        last: err,
                    });
                }
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        next_id = next_id.wrapping_add(1);
        let span = tracing::info_span!(
            "replication",
            conn = next_id,
            %peer,
            tenant_id = tracing::field::Empty,
            timeline_id = tracing::field::Empty,
        );
        if sessions.len() >= MAX_CONNECTIONS {
            sessions.spawn(refuse(stream).instrument(span));
            continue;
        }
        let secret = u32::try_from(keys.hash_one(next_id) & u64::from(u32::MAX)).unwrap_or(0);
        let session = handle(
            stream,
            Arc::clone(&source),
            shutdown.clone(),
            (next_id, secret),
        );
        sessions.spawn(session.instrument(span));
    };
    drain(&mut sessions).await;
    result
}

async fn handle(
    stream: TcpStream,
    source: Arc<dyn TimelineSource>,
    shutdown: watch::Receiver<bool>,
    backend_key: (u32, u32),
) {
    if let Err(err) = stream.set_nodelay(true) {
        debug!(%err, "could not set TCP_NODELAY");
    }
    let (reader, writer) = stream.into_split();
    match run_session(
        Connection::new(reader, writer),
        source,
        shutdown,
        backend_key,
    )
    .await
    {
        Ok(()) => debug!("replication connection closed"),
        // Already logged where it was reported to the client.
        Err(SessionError::Reported(_)) => {}
        Err(err) => info!(%err, "replication connection lost"),
    }
}

/// Tell a client over the connection limit so, as PostgreSQL does.
async fn refuse(stream: TcpStream) {
    warn!(max = MAX_CONNECTIONS, "too many replication connections");
    let (reader, writer) = stream.into_split();
    let mut conn = Connection::new(reader, writer);
    conn.out.error_response(&PgError::fatal(
        sqlstate::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    ));
    conn.shutdown().await;
}

async fn drain(sessions: &mut JoinSet<()>) {
    let all_done = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, all_done)
        .await
        .is_err()
    {
        warn!(
            remaining = sessions.len(),
            "aborting replication sessions after shutdown grace"
        );
        sessions.shutdown().await;
    }
}
