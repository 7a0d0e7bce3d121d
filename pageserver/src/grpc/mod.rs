//! The gRPC server (`proto/pageserver.proto`): reads at an LSN, basebackups, and tenant
//! and timeline administration. Errors map to statuses in [`status`]; reads run on the
//! blocking pool (the layer store reads files and RocksDB).

mod basebackup;
mod import;
mod pages;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use page_model::read;
use page_model::SlruKind;
use postgres_wal::{ForkNumber, Lsn, RelFileNode, RelTag, BLCKSZ};
use strata_ids::{TenantId, TenantTimelineId, TimelineId};
use strata_proto::pageserver as pb;
use strata_proto::pageserver::pageserver_server::{Pageserver, PageserverServer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::limits::{GRPC_KEEPALIVE_INTERVAL, GRPC_KEEPALIVE_TIMEOUT, MAX_GRPC_MESSAGE_BYTES};
use crate::logging::timeline_span;
use crate::metrics::Metrics;
use crate::timeline::Timeline;
use crate::timelines::Timelines;
use status::{from_read, from_timelines, from_wait, invalid_argument};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct Service {
    pub timelines: Arc<Timelines>,
    pub metrics: Metrics,
    pub wait_lsn_timeout: Duration,
    pub max_import_bytes: u64,
    pub shutdown: watch::Receiver<bool>,
}

/// Serve gRPC on `listener` until `shutdown` turns true; open streams then end with
/// `UNAVAILABLE` so that connections drain.
pub async fn serve(listener: TcpListener, service: Service) -> Result<(), tonic::transport::Error> {
    let mut stop = service.shutdown.clone();
    let server = PageserverServer::new(service)
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .add_service(server)
        // GetPage latency is what a compute waits on: no Nagle delay. tonic sets
        // TCP_NODELAY only on listeners it binds itself.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                // An error means the sender is gone: stopping either way.
                let _ = stop.wait_for(|stop| *stop).await;
            },
        )
        .await
}

/// Resolves once shutdown is asked for (or its sender is gone, which means the same).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

pub(crate) fn parse_ids(tenant: &str, timeline: &str) -> Result<TenantTimelineId, Status> {
    Ok(TenantTimelineId {
        tenant_id: tenant.parse::<TenantId>().map_err(invalid_argument)?,
        timeline_id: timeline.parse::<TimelineId>().map_err(invalid_argument)?,
    })
}

pub(crate) fn rel_tag(rel: Option<pb::RelTag>) -> Result<RelTag, Status> {
    let rel = rel.ok_or_else(|| Status::invalid_argument("missing rel"))?;
    let fork = u8::try_from(rel.fork)
        .ok()
        .and_then(ForkNumber::from_u8)
        .ok_or_else(|| Status::invalid_argument(format!("invalid fork number {}", rel.fork)))?;
    Ok(RelTag {
        node: RelFileNode {
            spc_node: rel.spc_oid,
            db_node: rel.db_oid,
            rel_node: rel.rel_number,
        },
        fork,
    })
}

fn timeline_info(timeline: &Timeline) -> pb::TimelineInfo {
    let id = timeline.id();
    let meta = timeline.meta();
    let state = timeline.ingest_state();
    let remote = timeline.remote_status();
    let (resident_layers, resident_layer_bytes) = timeline
        .store()
        .residency()
        .iter()
        .filter(|l| l.resident)
        .fold((0, 0), |(n, bytes), l| (n + 1, bytes + l.info.size_bytes));
    pb::TimelineInfo {
        tenant_id: id.tenant_id.to_string(),
        timeline_id: id.timeline_id.to_string(),
        system_id: meta.system_id,
        pg_version: meta.pg_version,
        start_lsn: meta.start_lsn.0,
        last_record_lsn: timeline.last_record_lsn().0,
        disk_consistent_lsn: timeline.disk_consistent_lsn().0,
        remote_consistent_lsn: timeline.remote_consistent_lsn().map_or(0, |l| l.0),
        wal_source: match &state {
            crate::timeline::IngestState::Ingesting { source } => source.clone(),
            _ => String::new(),
        },
        state: state.to_string(),
        generation: remote.generation,
        resident_layers,
        resident_layer_bytes,
        remote_layers: remote.layers,
        remote_layer_bytes: remote.layer_bytes,
    }
}

impl Service {
    fn timeline(&self, id: TenantTimelineId) -> Result<Arc<Timeline>, Status> {
        self.timelines.get(id).map_err(from_timelines)
    }

    /// The timeline and the LSN to read at: `0` is the latest; below the start is out
    /// of range; above what is ingested waits (bounded) for it.
    pub(crate) async fn resolve(
        &self,
        id: TenantTimelineId,
        lsn: Lsn,
    ) -> Result<(Arc<Timeline>, Lsn), Status> {
        let timeline = self.timeline(id)?;
        if lsn == Lsn::INVALID {
            let lsn = timeline.last_record_lsn();
            return Ok((timeline, lsn));
        }
        let start = timeline.meta().start_lsn;
        if lsn < start {
            return Err(Status::out_of_range(format!(
                "LSN {lsn} is below the start of timeline {id} ({start})"
            )));
        }
        timeline
            .wait_lsn(lsn, self.wait_lsn_timeout)
            .await
            .map_err(from_wait)?;
        Ok((timeline, lsn))
    }

    /// Resolves, then runs `read` on the blocking pool in the timeline's span.
    async fn read_at<T: Send + 'static>(
        &self,
        tenant: &str,
        timeline: &str,
        lsn: u64,
        read: impl FnOnce(&Timeline, Lsn) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let id = parse_ids(tenant, timeline)?;
        let span = timeline_span(id);
        let (timeline, lsn) = self.resolve(id, Lsn(lsn)).instrument(span.clone()).await?;
        tokio::task::spawn_blocking(move || {
            let _entered = tracing::info_span!(parent: &span, "read", %lsn).entered();
            read(&timeline, lsn)
        })
        .await
        .map_err(|e| Status::internal(format!("read task failed: {e}")))?
    }
}

#[tonic::async_trait]
impl Pageserver for Service {
    type GetPagesStream = pages::Outbound;
    type GetBasebackupStream = basebackup::Outbound;

    async fn get_pages(
        &self,
        request: Request<Streaming<pb::GetPagesRequest>>,
    ) -> Result<Response<Self::GetPagesStream>, Status> {
        Ok(Response::new(pages::start(self, request.into_inner())))
    }

    async fn get_rel_size(
        &self,
        request: Request<pb::RelRequest>,
    ) -> Result<Response<pb::RelSizeResponse>, Status> {
        let request = request.into_inner();
        let rel = rel_tag(request.rel)?;
        let response = self
            .read_at(
                &request.tenant_id,
                &request.timeline_id,
                request.lsn,
                move |timeline, lsn| {
                    let size = read::rel_size(timeline, rel, lsn).map_err(from_read)?;
                    Ok(pb::RelSizeResponse {
                        exists: size.is_some(),
                        blocks: size.map_or(0, |s| s.nblocks),
                        lsn: lsn.0,
                    })
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_db_size(
        &self,
        request: Request<pb::DbSizeRequest>,
    ) -> Result<Response<pb::DbSizeResponse>, Status> {
        let request = request.into_inner();
        let (spc, db) = (request.spc_oid, request.db_oid);
        let bytes = self
            .read_at(
                &request.tenant_id,
                &request.timeline_id,
                request.lsn,
                move |timeline, lsn| {
                    let mut blocks = 0u64;
                    for (rel_node, fork) in
                        read::rel_dir(timeline, spc, db, lsn).map_err(from_read)?
                    {
                        let rel = RelTag {
                            node: RelFileNode {
                                spc_node: spc,
                                db_node: db,
                                rel_node,
                            },
                            fork,
                        };
                        if let Some(size) = read::rel_size(timeline, rel, lsn).map_err(from_read)? {
                            blocks += u64::from(size.nblocks);
                        }
                    }
                    Ok(blocks * BLCKSZ as u64)
                },
            )
            .await?;
        Ok(Response::new(pb::DbSizeResponse { bytes }))
    }

    async fn get_slru_segment(
        &self,
        request: Request<pb::SlruSegmentRequest>,
    ) -> Result<Response<pb::SlruSegmentResponse>, Status> {
        let request = request.into_inner();
        let kind = u8::try_from(request.kind)
            .ok()
            .and_then(SlruKind::from_u8)
            .ok_or_else(|| {
                Status::invalid_argument(format!("invalid SLRU kind {}", request.kind))
            })?;
        let segno = request.segno;
        let segment = self
            .read_at(
                &request.tenant_id,
                &request.timeline_id,
                request.lsn,
                move |timeline, lsn| {
                    let nblocks = read::slru_seg_size(timeline, kind, segno, lsn)
                        .map_err(from_read)?
                        .ok_or_else(|| {
                            Status::not_found(format!(
                                "{} segment {segno:04X} does not exist at {lsn}",
                                kind.dir()
                            ))
                        })?;
                    let mut segment = Vec::with_capacity(nblocks as usize * BLCKSZ);
                    for blkno in 0..nblocks {
                        let page = read::slru_page(timeline, kind, segno, blkno, lsn)
                            .map_err(from_read)?;
                        segment.extend_from_slice(&page);
                    }
                    Ok(segment)
                },
            )
            .await?;
        Ok(Response::new(pb::SlruSegmentResponse { segment }))
    }

    async fn get_basebackup(
        &self,
        request: Request<pb::BasebackupRequest>,
    ) -> Result<Response<Self::GetBasebackupStream>, Status> {
        Ok(Response::new(
            basebackup::start(self, request.into_inner()).await?,
        ))
    }

    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let tenant_id: TenantId = request
            .into_inner()
            .tenant_id
            .parse()
            .map_err(invalid_argument)?;
        let timelines = self.timelines.clone();
        tokio::task::spawn_blocking(move || timelines.create_tenant(tenant_id))
            .await
            .map_err(|e| Status::internal(format!("tenant creation task failed: {e}")))?
            .map_err(from_timelines)?;
        tracing::info!(%tenant_id, "tenant created");
        Ok(Response::new(pb::CreateTenantResponse {}))
    }

    async fn import_timeline(
        &self,
        request: Request<Streaming<pb::ImportTimelineRequest>>,
    ) -> Result<Response<pb::TimelineInfo>, Status> {
        let timeline = import::import(self, request.into_inner()).await?;
        Ok(Response::new(timeline_info(&timeline)))
    }

    async fn timeline_status(
        &self,
        request: Request<pb::TimelineRequest>,
    ) -> Result<Response<pb::TimelineInfo>, Status> {
        let request = request.into_inner();
        let id = parse_ids(&request.tenant_id, &request.timeline_id)?;
        Ok(Response::new(timeline_info(self.timeline(id)?.as_ref())))
    }

    async fn list_timelines(
        &self,
        _request: Request<pb::ListTimelinesRequest>,
    ) -> Result<Response<pb::ListTimelinesResponse>, Status> {
        let timelines = self
            .timelines
            .list()
            .iter()
            .map(|t| timeline_info(t))
            .collect();
        Ok(Response::new(pb::ListTimelinesResponse { timelines }))
    }

    async fn get_capabilities(
        &self,
        _request: Request<pb::CapabilitiesRequest>,
    ) -> Result<Response<pb::CapabilitiesResponse>, Status> {
        Ok(Response::new(pb::CapabilitiesResponse {
            native_redo_rmgrs: page_model::ingest::native_redo_rmgrs()
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
        }))
    }
}
