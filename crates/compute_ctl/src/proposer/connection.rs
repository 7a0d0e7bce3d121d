//! One task per safekeeper: open a `Propose` stream, forward its replies to the
//! driver, and when it breaks, tell the driver and open a new one after a bounded
//! backoff. An unreachable safekeeper costs one task retrying; it never blocks the
//! others.

use std::time::{Duration, Instant};

use consensus::messages::AcceptorMessage;
use strata_proto::convert::FromProto;
use strata_proto::safekeeper as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::limits::{
    OUTBOUND_QUEUE_LEN, RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_RESET,
};
use crate::safekeepers::{describe, Safekeepers};

/// What the connection tasks (and the replication stream) tell the driver.
#[derive(Debug)]
pub enum Event {
    /// A new stream to `acceptor` is being opened: its first message (the greeting)
    /// goes to `outbound`. Events of older epochs of that acceptor are stale.
    Connected {
        acceptor: usize,
        epoch: u64,
        outbound: mpsc::Sender<pb::ProposerMessage>,
    },
    Reply {
        acceptor: usize,
        epoch: u64,
        message: AcceptorMessage,
    },
    Closed {
        acceptor: usize,
        epoch: u64,
        reason: String,
    },
    /// The gRPC layer took a message off `acceptor`'s queue: there is room for more.
    Drained { acceptor: usize, epoch: u64 },
    /// The replication stream delivered WAL.
    NewWal,
}

/// Run the connection to safekeeper `acceptor` until the driver goes away (the
/// driver also aborts this task when it finishes).
pub async fn run(acceptor: usize, safekeepers: Safekeepers, events: mpsc::Sender<Event>) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    for epoch in 1.. {
        let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE_LEN);
        let connected = Event::Connected {
            acceptor,
            epoch,
            outbound,
        };
        if events.send(connected).await.is_err() {
            return;
        }
        let opened = Instant::now();
        let drained = events.clone();
        let stream = ReceiverStream::new(queue).map(move |message| {
            // Dropped when the driver's queue is full: its backlog wakes it anyway.
            let _ = drained.try_send(Event::Drained { acceptor, epoch });
            message
        });
        let reason = match safekeepers.client(acceptor).propose(stream).await {
            Err(status) => describe(&status),
            Ok(response) => match forward(acceptor, epoch, response.into_inner(), &events).await {
                Some(reason) => reason,
                None => return,
            },
        };
        let closed = Event::Closed {
            acceptor,
            epoch,
            reason,
        };
        if events.send(closed).await.is_err() {
            return;
        }
        if opened.elapsed() >= RECONNECT_BACKOFF_RESET {
            backoff = RECONNECT_BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff);
    }
}

/// Replies → driver until the stream ends; why it ended (`None`: the driver is gone).
async fn forward(
    acceptor: usize,
    epoch: u64,
    mut inbound: tonic::Streaming<pb::AcceptorMessage>,
    events: &mpsc::Sender<Event>,
) -> Option<String> {
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Some("the safekeeper ended the stream".to_owned()),
            Err(status) => return Some(describe(&status)),
        };
        let message = match AcceptorMessage::from_proto(message) {
            Ok(message) => message,
            Err(error) => return Some(format!("invalid message from the safekeeper: {error}")),
        };
        let reply = Event::Reply {
            acceptor,
            epoch,
            message,
        };
        if events.send(reply).await.is_err() {
            return None;
        }
    }
}

fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(RECONNECT_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let mut backoff = RECONNECT_BACKOFF_MIN;
        let mut waits = Vec::new();
        for _ in 0..10 {
            waits.push(backoff);
            backoff = next_backoff(backoff);
        }
        assert_eq!(waits[1], RECONNECT_BACKOFF_MIN * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), RECONNECT_BACKOFF_MAX);
    }
}
