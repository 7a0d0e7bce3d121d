//! One `Propose` stream: a proposer's connection to one timeline.
//!
//! The first message must be a greeting; it names the timeline, and the stream then
//! belongs to that timeline's actor. Two halves run together: `forward` reads the
//! proposer's messages, checks and converts them and queues them to the actor;
//! `respond` sends the actor's replies back. Whichever ends first ends the stream: an
//! error reply (a refusal, a storage failure), a malformed message, the proposer closing
//! its side, the timeline stopping, or shutdown. The actor is then told of the
//! disconnect, which makes it flush.

use std::sync::Arc;

use consensus::messages::ProposerMessage;
use strata_proto::safekeeper as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};
use tracing::Instrument;

use super::convert::{FromProto, ToProto};
use super::status::invalid_argument;
use crate::limits::{GREETING_TIMEOUT, OUTBOUND_QUEUE_LEN};
use crate::metrics::Metrics;
use crate::timeline::{Connection, Reply, Timeline};
use crate::timelines::Timelines;

/// Why a stream ended, other than by the acceptor's refusal or a malformed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("the first message of a Propose stream must be a greeting")]
    NoGreeting,
    #[error("no greeting within {GREETING_TIMEOUT:?}")]
    GreetingTimeout,
    #[error("timeline stopped (deleted, or the safekeeper is shutting down)")]
    TimelineStopped,
    #[error("the safekeeper is shutting down")]
    ShuttingDown,
}

pub type Outbound = ReceiverStream<Result<pb::AcceptorMessage, Status>>;

/// Read the greeting, find the timeline, and start the stream's task.
pub async fn start(
    timelines: &Timelines,
    metrics: &Metrics,
    shutdown: watch::Receiver<bool>,
    mut inbound: Streaming<pb::ProposerMessage>,
) -> Result<Outbound, Status> {
    let first = match tokio::time::timeout(GREETING_TIMEOUT, inbound.message()).await {
        Err(_) => return Err(ConnectionError::GreetingTimeout.into()),
        Ok(Err(status)) => return Err(malformed(status)),
        Ok(Ok(None)) => return Err(ConnectionError::NoGreeting.into()),
        Ok(Ok(Some(first))) => ProposerMessage::from_proto(first).map_err(invalid_argument)?,
    };
    let ProposerMessage::Greeting(greeting) = &first else {
        return Err(ConnectionError::NoGreeting.into());
    };
    let span = tracing::info_span!(
        "proposer",
        tenant_id = %greeting.id.tenant_id,
        timeline_id = %greeting.id.timeline_id,
        proposer_id = %format_args!("{:032x}", greeting.proposer_id.0),
    );
    let timeline = timelines.get(greeting.id)?;
    let (connection, replies) = timeline.connect();
    timeline
        .send(&connection, first)
        .await
        .map_err(|_| ConnectionError::TimelineStopped)?;
    let (outbound, stream) = mpsc::channel(OUTBOUND_QUEUE_LEN);
    let stream_task = Stream {
        timeline,
        connection,
        replies,
        outbound,
        metrics: metrics.clone(),
    };
    tokio::spawn(stream_task.run(inbound, shutdown).instrument(span));
    Ok(ReceiverStream::new(stream))
}

struct Stream {
    timeline: Arc<Timeline>,
    connection: Connection,
    replies: mpsc::Receiver<Reply>,
    outbound: mpsc::Sender<Result<pb::AcceptorMessage, Status>>,
    metrics: Metrics,
}

impl Stream {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::ProposerMessage>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        tracing::info!(connection = self.connection.id, "proposer connected");
        self.metrics.proposer_connections.inc();
        let end = tokio::select! {
            end = forward(&self.timeline, &self.connection, &mut inbound) => end,
            end = respond(&mut self.replies, &self.outbound) => end,
            _ = shutdown.wait_for(|stop| *stop) => Some(ConnectionError::ShuttingDown.into()),
            () = self.timeline.stopped() => Some(ConnectionError::TimelineStopped.into()),
        };
        match end {
            Some(status) => {
                tracing::warn!(
                    connection = self.connection.id,
                    code = ?status.code(),
                    error = status.message(),
                    "proposer stream ended by an error"
                );
                self.metrics.proposer_errors.inc();
                // The proposer may be gone already; nothing else to tell then.
                let _ = self.outbound.send(Err(status)).await;
            }
            None => tracing::info!(connection = self.connection.id, "proposer disconnected"),
        }
        self.timeline.disconnect(&self.connection).await;
        self.metrics.proposer_connections.dec();
    }
}

/// Proposer → actor, until the proposer closes its side (`None`) or an error.
async fn forward(
    timeline: &Timeline,
    connection: &Connection,
    inbound: &mut Streaming<pb::ProposerMessage>,
) -> Option<Status> {
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return None,
            Err(status) => return Some(malformed(status)),
        };
        let message = match ProposerMessage::from_proto(message) {
            Ok(message) => message,
            Err(error) => return Some(invalid_argument(error)),
        };
        if timeline.send(connection, message).await.is_err() {
            return Some(ConnectionError::TimelineStopped.into());
        }
    }
}

/// Actor → proposer, until an error reply or the proposer stops listening (`None`).
async fn respond(
    replies: &mut mpsc::Receiver<Reply>,
    outbound: &mpsc::Sender<Result<pb::AcceptorMessage, Status>>,
) -> Option<Status> {
    while let Some(reply) = replies.recv().await {
        match reply {
            Ok(message) => {
                if outbound.send(Ok(message.to_proto())).await.is_err() {
                    return None;
                }
            }
            Err(error) => return Some(error.into()),
        }
    }
    None
}

/// tonic reports bytes that do not decode as `INTERNAL`; to the proposer that is an
/// invalid argument of its own making. Other codes (a message over the size limit,
/// a cancelled stream) pass through.
fn malformed(status: Status) -> Status {
    if status.code() == Code::Internal {
        Status::invalid_argument(format!("malformed proposer message: {}", status.message()))
    } else {
        status
    }
}
