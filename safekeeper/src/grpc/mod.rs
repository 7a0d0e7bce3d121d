//! The gRPC server (`proto/safekeeper.proto`): proposer streams and timeline
//! administration. Conversions to and from the generated types live in [`convert`],
//! the mapping of errors to statuses in [`status`]; the handlers here only connect the
//! two to the [`Timelines`] registry.

pub mod convert;
mod propose;
pub mod read_wal;
pub mod status;

use std::sync::Arc;

use strata_ids::TenantTimelineId;
use strata_proto::safekeeper as pb;
use strata_proto::safekeeper::safekeeper_server::{Safekeeper, SafekeeperServer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use crate::limits::{GRPC_KEEPALIVE_INTERVAL, GRPC_KEEPALIVE_TIMEOUT, MAX_GRPC_MESSAGE_BYTES};
use crate::metrics::Metrics;
use crate::timeline::{NewTimeline, TimelineStatus};
use crate::timelines::Timelines;
use convert::{FromProto, ToProto};
use status::invalid_argument;

pub use propose::ConnectionError;

#[derive(Debug)]
struct Service {
    timelines: Arc<Timelines>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
}

/// Serve gRPC on `listener` until `shutdown` turns true; proposer streams then end with
/// `UNAVAILABLE` so that connections drain.
pub async fn serve(
    listener: TcpListener,
    timelines: Arc<Timelines>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let service = Service {
        timelines,
        metrics,
        shutdown: shutdown.clone(),
    };
    let server = SafekeeperServer::new(service)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let mut stop = shutdown;
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .add_service(server)
        // Append responses release commits: they must not wait for Nagle and the
        // peer's delayed ACK (up to 40 ms). tonic sets TCP_NODELAY only on sockets of
        // a listener it binds itself, not on a `TcpIncoming` built from ours.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                // An error means the sender is gone: stopping either way.
                let _ = stop.wait_for(|stop| *stop).await;
            },
        )
        .await
}

#[tonic::async_trait]
impl Safekeeper for Service {
    type ProposeStream = propose::Outbound;

    async fn propose(
        &self,
        request: Request<Streaming<pb::ProposerMessage>>,
    ) -> Result<Response<Self::ProposeStream>, Status> {
        let stream = propose::start(
            &self.timelines,
            &self.metrics,
            self.shutdown.clone(),
            request.into_inner(),
        )
        .await
        .inspect_err(|status| {
            self.metrics.proposer_errors.inc();
            tracing::warn!(code = ?status.code(), error = status.message(), "proposer stream refused");
        })?;
        Ok(Response::new(stream))
    }

    async fn create_timeline(
        &self,
        request: Request<pb::CreateTimelineRequest>,
    ) -> Result<Response<pb::TimelineInfo>, Status> {
        let new = NewTimeline::from_proto(request.into_inner()).map_err(invalid_argument)?;
        let status = self.timelines.create(new).await.inspect_err(log_failure)?;
        Ok(Response::new(status.to_proto()))
    }

    async fn timeline_status(
        &self,
        request: Request<pb::TimelineRequest>,
    ) -> Result<Response<pb::TimelineInfo>, Status> {
        let id = TenantTimelineId::from_proto(request.into_inner()).map_err(invalid_argument)?;
        let status = self.timelines.status(id)?;
        Ok(Response::new(status.to_proto()))
    }

    async fn delete_timeline(
        &self,
        request: Request<pb::TimelineRequest>,
    ) -> Result<Response<pb::DeleteTimelineResponse>, Status> {
        let id = TenantTimelineId::from_proto(request.into_inner()).map_err(invalid_argument)?;
        self.timelines.delete(id).await.inspect_err(log_failure)?;
        Ok(Response::new(pb::DeleteTimelineResponse {}))
    }

    async fn list_timelines(
        &self,
        _request: Request<pb::ListTimelinesRequest>,
    ) -> Result<Response<pb::ListTimelinesResponse>, Status> {
        let timelines = self
            .timelines
            .list()
            .iter()
            .map(TimelineStatus::to_proto)
            .collect();
        Ok(Response::new(pb::ListTimelinesResponse { timelines }))
    }

    async fn read_wal(
        &self,
        request: Request<pb::ReadWalRequest>,
    ) -> Result<Response<pb::ReadWalResponse>, Status> {
        let response = read_wal::read_wal(&self.timelines, request.into_inner()).await?;
        Ok(Response::new(response))
    }
}

/// Administration failures that are the safekeeper's, not the caller's, are logged
/// here where they are handled; the caller's mistakes only go back to the caller.
fn log_failure(error: &crate::timelines::TimelineError) {
    use crate::timelines::TimelineError as E;
    match error {
        E::Storage { .. } | E::Start { .. } | E::Io { .. } | E::Cleanup { .. } | E::Internal(_) => {
            tracing::error!(%error, "timeline administration failed")
        }
        _ => tracing::info!(%error, "timeline administration refused"),
    }
}
