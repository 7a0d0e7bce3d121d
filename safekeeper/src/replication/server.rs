//! The listener: accepts connections and runs one session per connection.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::TimelineSource;

/// Why [`serve`] stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("accepting a replication connection: {0}")]
    Accept(#[source] std::io::Error),
}

/// Serve the replication protocol on `listener` until `shutdown` becomes `true` (or its
/// sender is dropped). Each connection runs on its own task and is told to stop at
/// shutdown too.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn TimelineSource>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let _ = (&listener, &source, &mut shutdown);
    Ok(())
}
