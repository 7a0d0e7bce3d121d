//! `GetPages`: a bidirectional stream of batched page reads. Requests are answered in
//! order, one response each; a failing request carries its status in the response and
//! the stream goes on (only a malformed stream, or shutdown, ends it).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use page_model::read;
use postgres_wal::{BlockNumber, Lsn, RelTag, BLCKSZ};
use strata_ids::TenantTimelineId;
use strata_proto::pageserver as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Code, Status, Streaming};
use tracing::Instrument;

use super::{parse_ids, rel_tag, stopping, Service};
use crate::limits::{GETPAGES_RESPONSE_QUEUE_LEN, MAX_BLOCKS_PER_GETPAGES_REQUEST};
use crate::logging::timeline_span;
use crate::timeline::Timeline;

pub type Outbound = ReceiverStream<Result<pb::GetPagesResponse, Status>>;

/// Starts answering `inbound`; the returned stream carries the responses.
pub fn start(service: &Service, mut inbound: Streaming<pb::GetPagesRequest>) -> Outbound {
    let (tx, rx) = mpsc::channel(GETPAGES_RESPONSE_QUEUE_LEN);
    let service = service.clone();
    let mut shutdown = service.shutdown.clone();
    tokio::spawn(
        async move {
            let mut current: Option<TenantTimelineId> = None;
            loop {
                let request = tokio::select! {
                    request = inbound.next() => request,
                    () = stopping(&mut shutdown) => {
                        let _ = tx.send(Err(Status::unavailable("pageserver shutting down"))).await;
                        return;
                    }
                };
                let request = match request {
                    None => return,
                    Some(Ok(request)) => request,
                    Some(Err(status)) => {
                        tracing::debug!(%status, "GetPages stream ended by the client");
                        return;
                    }
                };
                let response = answer(&service, &mut current, request, &mut shutdown).await;
                if tx.send(Ok(response)).await.is_err() {
                    // The client went away.
                    return;
                }
            }
        }
        .in_current_span(),
    );
    ReceiverStream::new(rx)
}

async fn answer(
    service: &Service,
    current: &mut Option<TenantTimelineId>,
    request: pb::GetPagesRequest,
    shutdown: &mut watch::Receiver<bool>,
) -> pb::GetPagesResponse {
    let started = Instant::now();
    let request_id = request.request_id;
    let result = read_pages(service, current, request, shutdown).await;
    service.metrics.getpage_requests.inc();
    service
        .metrics
        .getpage_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok((lsn, pages)) => pb::GetPagesResponse {
            request_id,
            status_code: Code::Ok as i32,
            status_message: String::new(),
            lsn: lsn.0,
            pages: pages.into_iter().map(Bytes::into).collect(),
        },
        Err(status) => pb::GetPagesResponse {
            request_id,
            status_code: status.code() as i32,
            status_message: status.message().to_owned(),
            lsn: 0,
            pages: Vec::new(),
        },
    }
}

async fn read_pages(
    service: &Service,
    current: &mut Option<TenantTimelineId>,
    request: pb::GetPagesRequest,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(Lsn, Vec<Bytes>), Status> {
    let id = if request.tenant_id.is_empty() && request.timeline_id.is_empty() {
        current.ok_or_else(|| {
            Status::invalid_argument("the first GetPages request must name the timeline")
        })?
    } else {
        parse_ids(&request.tenant_id, &request.timeline_id)?
    };
    *current = Some(id);
    let rel = rel_tag(request.rel)?;
    if request.block_numbers.len() > MAX_BLOCKS_PER_GETPAGES_REQUEST {
        return Err(Status::invalid_argument(format!(
            "{} blocks requested, at most {MAX_BLOCKS_PER_GETPAGES_REQUEST} per request",
            request.block_numbers.len()
        )));
    }
    let (timeline, lsn) = tokio::select! {
        resolved = service.resolve(id, Lsn(request.lsn)) => resolved?,
        () = stopping(shutdown) => return Err(Status::unavailable("pageserver shutting down")),
    };
    let blocks = request.block_numbers;
    let span = tracing::debug_span!(
        parent: &timeline_span(id),
        "get_pages",
        %lsn,
        rel = %rel.node,
        fork = rel.fork.name()
    );
    let pages = tokio::task::spawn_blocking(move || {
        span.in_scope(|| read_blocks(&timeline, rel, &blocks, lsn))
    })
    .await
    .map_err(|e| Status::internal(format!("page read task failed: {e}")))??;
    Ok((lsn, pages))
}

/// The pages, checksummed when the cluster has data checksums.
fn read_blocks(
    timeline: &Arc<Timeline>,
    rel: RelTag,
    blocks: &[BlockNumber],
    lsn: Lsn,
) -> Result<Vec<Bytes>, Status> {
    blocks
        .iter()
        .map(|&blkno| {
            let page = read::rel_page(timeline.as_ref(), rel, blkno, lsn)
                .map_err(super::status::from_read)?;
            Ok(emit_page(timeline, page, blkno))
        })
        .collect()
}

/// A page as it leaves the pageserver: its checksum set when the cluster has them.
pub(crate) fn emit_page(timeline: &Timeline, page: Bytes, blkno: BlockNumber) -> Bytes {
    // rel_page returns whole pages; anything else would not be a page to checksum.
    if !timeline.meta().data_checksums || page.len() != BLCKSZ {
        return page;
    }
    let mut buf = [0u8; BLCKSZ];
    buf.copy_from_slice(&page);
    postgres_wal::checksum::set_page_checksum(&mut buf, blkno);
    Bytes::copy_from_slice(&buf)
}
