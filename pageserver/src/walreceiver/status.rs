//! Asking the safekeepers (gRPC `TimelineStatus`) how far each one's copy of the
//! timeline goes.

use postgres_wal::Lsn;
use strata_ids::TenantTimelineId;
use strata_proto::safekeeper as pb;
use strata_proto::safekeeper::safekeeper_client::SafekeeperClient;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use super::limits::{MAX_STATUS_MESSAGE_BYTES, SAFEKEEPER_CONNECT_TIMEOUT, STATUS_CALL_TIMEOUT};
use super::select::Status;
use crate::config::SafekeeperConfig;

/// The configured safekeepers of one timeline, with a gRPC channel each (connected
/// lazily, and again after a failure, by tonic).
#[derive(Debug)]
pub(super) struct Safekeepers {
    id: TenantTimelineId,
    system_id: u64,
    configs: Vec<SafekeeperConfig>,
    /// `None` for a `grpc` address that is not a valid URI authority (logged once).
    channels: Vec<Option<Channel>>,
}

impl Safekeepers {
    pub(super) fn new(
        id: TenantTimelineId,
        system_id: u64,
        configs: Vec<SafekeeperConfig>,
    ) -> Safekeepers {
        let channels = configs
            .iter()
            .map(|sk| match Endpoint::from_shared(format!("http://{}", sk.grpc)) {
                Ok(endpoint) => Some(
                    endpoint
                        .connect_timeout(SAFEKEEPER_CONNECT_TIMEOUT)
                        .tcp_nodelay(true)
                        .connect_lazy(),
                ),
                Err(error) => {
                    tracing::error!(safekeeper = %sk.id, grpc = %sk.grpc, %error, "invalid safekeeper gRPC address; it is never streamed from");
                    None
                }
            })
            .collect();
        Safekeepers {
            id,
            system_id,
            configs,
            channels,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.configs.len()
    }

    pub(super) fn config(&self, i: usize) -> &SafekeeperConfig {
        &self.configs[i]
    }

    /// Every safekeeper's status, asked concurrently; `None` for one that did not
    /// answer within [`STATUS_CALL_TIMEOUT`], does not hold the timeline, holds
    /// another cluster's WAL under its id, or has stopped it after a storage error.
    pub(super) async fn statuses(&self) -> Vec<Option<Status>> {
        let mut calls = JoinSet::new();
        for (i, channel) in self.channels.iter().enumerate() {
            let Some(channel) = channel.clone() else {
                continue;
            };
            let request = pb::TimelineRequest {
                tenant_id: self.id.tenant_id.to_string(),
                timeline_id: self.id.timeline_id.to_string(),
            };
            calls.spawn(async move { (i, timeline_status(channel, request).await) });
        }
        let mut statuses = vec![None; self.configs.len()];
        while let Some(joined) = calls.join_next().await {
            // A call task only panics if tonic does; that safekeeper then did not answer.
            let Ok((i, answer)) = joined else { continue };
            let sk = &self.configs[i];
            statuses[i] = match answer {
                Ok(info) if info.system_id != self.system_id => {
                    tracing::warn!(safekeeper = %sk.id, theirs = info.system_id, ours = self.system_id, "safekeeper holds WAL of another cluster under this timeline id; not streaming from it");
                    None
                }
                Ok(info) if info.failure.is_some() => {
                    tracing::warn!(safekeeper = %sk.id, failure = info.failure.as_deref().unwrap_or(""), "safekeeper stopped this timeline; not streaming from it");
                    None
                }
                Ok(info) => Some(Status {
                    commit_lsn: Lsn(info.commit_lsn),
                    timeline_start_lsn: Lsn(info.timeline_start_lsn),
                }),
                Err(status) => {
                    tracing::debug!(safekeeper = %sk.id, grpc = %sk.grpc, code = ?status.code(), message = status.message(), "no timeline status");
                    None
                }
            };
        }
        statuses
    }
}

async fn timeline_status(
    channel: Channel,
    request: pb::TimelineRequest,
) -> Result<pb::TimelineInfo, tonic::Status> {
    let mut client =
        SafekeeperClient::new(channel).max_decoding_message_size(MAX_STATUS_MESSAGE_BYTES);
    let call = client.timeline_status(request);
    match tokio::time::timeout(STATUS_CALL_TIMEOUT, call).await {
        Ok(answer) => Ok(answer?.into_inner()),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {STATUS_CALL_TIMEOUT:?}"
        ))),
    }
}
