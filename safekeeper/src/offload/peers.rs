//! The other safekeepers of the cluster, as the offloader asks them: `TimelineStatus`
//! over gRPC, every call bounded, an unreachable peer simply absent from the answer.

use postgres_wal::Lsn;
use strata_ids::{NodeId, TenantTimelineId};
use strata_proto::safekeeper as pb;
use strata_proto::safekeeper::safekeeper_client::SafekeeperClient;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use super::limits::{PEER_CONNECT_TIMEOUT, PEER_STATUS_TIMEOUT};
use super::plan::PeerView;
use crate::config::Peer;
use crate::grpc::convert::ToProto;
use crate::limits::MAX_GRPC_MESSAGE_BYTES;

#[derive(Debug, thiserror::Error)]
#[error("peer {id}: {addr:?} is not a usable gRPC address: {reason}")]
pub struct PeerAddressError {
    id: NodeId,
    addr: String,
    reason: String,
}

#[derive(Debug, Clone)]
struct PeerClient {
    id: NodeId,
    client: SafekeeperClient<Channel>,
}

/// Clients of every configured peer; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    peers: Vec<PeerClient>,
}

impl Peers {
    /// Clients for `peers`. Connections are made lazily (and again after a failure),
    /// so a peer that is down at startup is simply unreachable until it is up. Must run
    /// inside the runtime.
    pub fn new(peers: &[Peer]) -> Result<Peers, PeerAddressError> {
        let peers = peers
            .iter()
            .map(|peer| {
                let endpoint = Endpoint::from_shared(format!("http://{}", peer.grpc))
                    .map_err(|error| PeerAddressError {
                        id: peer.id,
                        addr: peer.grpc.clone(),
                        reason: error.to_string(),
                    })?
                    .connect_timeout(PEER_CONNECT_TIMEOUT)
                    .timeout(PEER_STATUS_TIMEOUT);
                let client = SafekeeperClient::new(endpoint.connect_lazy())
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
                Ok(PeerClient {
                    id: peer.id,
                    client,
                })
            })
            .collect::<Result<_, PeerAddressError>>()?;
        Ok(Peers { peers })
    }

    /// What every reachable peer that holds the timeline says about it, asked at
    /// once; each answer within [`PEER_STATUS_TIMEOUT`] or not at all.
    pub async fn views(&self, id: TenantTimelineId) -> Vec<PeerView> {
        let mut calls = JoinSet::new();
        for peer in &self.peers {
            let mut client = peer.client.clone();
            let peer_id = peer.id;
            calls.spawn(async move {
                let call = client.timeline_status(id.to_proto());
                match tokio::time::timeout(PEER_STATUS_TIMEOUT, call).await {
                    Ok(Ok(info)) => Some(view(peer_id, info.into_inner())),
                    Ok(Err(status)) => {
                        tracing::debug!(peer = %peer_id, code = ?status.code(), error = status.message(), "peer did not answer TimelineStatus");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer_id, timeout = ?PEER_STATUS_TIMEOUT, "peer did not answer TimelineStatus in time");
                        None
                    }
                }
            });
        }
        let mut views = Vec::with_capacity(self.peers.len());
        while let Some(joined) = calls.join_next().await {
            if let Ok(Some(view)) = joined {
                views.push(view);
            }
        }
        views.sort_by_key(|view| view.id);
        views
    }
}

fn view(id: NodeId, info: pb::TimelineInfo) -> PeerView {
    PeerView {
        id,
        flush_lsn: Lsn(info.flush_lsn),
        commit_lsn: Lsn(info.commit_lsn),
        remote_consistent_lsn: Lsn(info.remote_consistent_lsn),
        failed: info.failure.is_some(),
    }
}
