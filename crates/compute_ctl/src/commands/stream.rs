//! The compute's WAL stream: `compute_ctl` as PostgreSQL's synchronous standby.
//!
//! WAL from the slot goes into the shared buffer the proposer reads, and the quorum
//! commit LSN goes back as write = flush = apply position: at once when it moves, at
//! once when a keepalive asks, and every [`STATUS_INTERVAL`] anyway. Never more than
//! the commit LSN: that is what makes a commit wait for the quorum.

use std::net::SocketAddr;

use postgres_wal::Lsn;
use tokio::sync::{mpsc, watch};

use crate::limits::STATUS_INTERVAL;
use crate::pgdata::pg_wal::PG_TIMELINE;
use crate::pgdata::settings::PROPOSER_NAME;
use crate::proposer::connection::Event;
use crate::proposer::wal::{lock, SharedWalBuffer};
use crate::replication::{ReplicationConnection, ReplicationError, StreamEvent};

/// How the stream ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// PostgreSQL ended replication (it is shutting down).
    ServerDone,
    /// The proposer's driver is gone.
    DriverGone,
}

#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub addr: SocketAddr,
    pub system_id: u64,
}

/// Stream from where the buffer ends until PostgreSQL stops or the stream breaks.
pub async fn run(
    config: StreamConfig,
    buffer: SharedWalBuffer,
    events: mpsc::Sender<Event>,
    mut commit: watch::Receiver<Lsn>,
) -> Result<StreamEnd, ReplicationError> {
    let mut connection =
        ReplicationConnection::connect(config.addr, PROPOSER_NAME, PROPOSER_NAME).await?;
    let system = connection.identify_system().await?;
    if system.system_id != config.system_id || system.timeline != PG_TIMELINE {
        return Err(ReplicationError::Protocol(format!(
            "PostgreSQL reports system {} timeline {}, expected {} timeline {PG_TIMELINE}",
            system.system_id, system.timeline, config.system_id
        )));
    }
    let start = lock(&buffer).end();
    tracing::info!(%start, server_flush = %system.xlog_pos, "streaming WAL from PostgreSQL");
    let mut stream = connection
        .start_replication(Some(PROPOSER_NAME), start, PG_TIMELINE)
        .await?;
    let mut status = tokio::time::interval(STATUS_INTERVAL);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = stream.next() => match event? {
                StreamEvent::Wal { start, wal } => {
                    lock(&buffer)
                        .append(start, &wal)
                        .map_err(|gap| ReplicationError::Protocol(gap.to_string()))?;
                    // Dropped when the driver's queue is full: it is busy and will
                    // read the buffer's end on its next round anyway.
                    let _ = events.try_send(Event::NewWal);
                }
                StreamEvent::Keepalive { reply_requested: true, .. } => {
                    let lsn = *commit.borrow();
                    stream.send_status(lsn).await?;
                }
                StreamEvent::Keepalive { .. } => {}
                StreamEvent::End => return Ok(StreamEnd::ServerDone),
            },
            changed = commit.changed() => {
                if changed.is_err() {
                    stream.close().await;
                    return Ok(StreamEnd::DriverGone);
                }
                let lsn = *commit.borrow_and_update();
                stream.send_status(lsn).await?;
            }
            _ = status.tick() => {
                let lsn = *commit.borrow();
                stream.send_status(lsn).await?;
            }
        }
    }
}
