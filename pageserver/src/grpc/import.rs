//! `ImportTimeline`: the first message names the timeline, the following ones carry a
//! tar of a freshly initialised, cleanly stopped data directory. The tar is spooled to
//! an unnamed temporary file in the data directory (at most `max_import_bytes`), then
//! `basebackup::import_datadir_tar` turns it into the values at the end of its
//! shutdown-checkpoint record, which become the timeline's first (and only) batch.

use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use strata_proto::pageserver as pb;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};
use tracing::Instrument;

use super::status::from_timelines;
use super::{parse_ids, Service};
use crate::logging::timeline_span;
use crate::timeline::{Timeline, TimelineMeta};

pub async fn import(
    service: &Service,
    mut inbound: Streaming<pb::ImportTimelineRequest>,
) -> Result<Arc<Timeline>, Status> {
    use pb::import_timeline_request::Item;
    let start = match inbound.next().await {
        Some(Ok(pb::ImportTimelineRequest {
            item: Some(Item::Start(start)),
        })) => start,
        Some(Ok(_)) => {
            return Err(Status::invalid_argument(
                "the first ImportTimeline message must name the timeline",
            ))
        }
        Some(Err(status)) => return Err(status),
        None => return Err(Status::invalid_argument("empty ImportTimeline stream")),
    };
    let id = parse_ids(&start.tenant_id, &start.timeline_id)?;
    let span = timeline_span(id);
    async move {
        let spool_dir = service.timelines.data_dir().to_owned();
        let mut spool = tokio::task::spawn_blocking(move || tempfile::tempfile_in(spool_dir))
            .await
            .map_err(|e| Status::internal(format!("spool task failed: {e}")))?
            .map_err(|e| Status::internal(format!("creating the import spool file: {e}")))?;
        let mut total: u64 = 0;
        while let Some(message) = inbound.next().await {
            let chunk = match message?.item {
                Some(Item::TarChunk(chunk)) => chunk,
                _ => {
                    return Err(Status::invalid_argument(
                        "ImportTimeline messages after the first must carry tar bytes",
                    ))
                }
            };
            total += chunk.len() as u64;
            if total > service.max_import_bytes {
                return Err(Status::resource_exhausted(format!(
                    "the data directory tar exceeds max_import_bytes ({} bytes)",
                    service.max_import_bytes
                )));
            }
            // A chunk is at most a gRPC message (a few MiB): a short blocking write.
            spool = tokio::task::spawn_blocking(move || spool.write_all(&chunk).map(|()| spool))
                .await
                .map_err(|e| Status::internal(format!("spool task failed: {e}")))?
                .map_err(|e| Status::internal(format!("spooling the import: {e}")))?;
        }
        tracing::info!(bytes = total, "import tar received");
        let timelines = service.timelines.clone();
        // A blocking task does not inherit the span: the import and the new layer
        // store log inside the timeline's.
        let span = tracing::Span::current();
        let (timeline, created) = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            spool
                .seek(SeekFrom::Start(0))
                .map_err(|e| Status::internal(format!("rewinding the import spool: {e}")))?;
            let imported = basebackup::import_datadir_tar(std::io::BufReader::new(spool))
                .map_err(import_status)?;
            let meta = TimelineMeta {
                system_id: imported.system_id,
                pg_version: imported.pg_version,
                wal_segment_size: imported.segment_size,
                start_lsn: imported.start_lsn,
                data_checksums: imported.data_checksums,
            };
            timelines
                .create_timeline(id, meta, imported.entries)
                .map_err(from_timelines)
        })
        .await
        .map_err(|e| Status::internal(format!("import task failed: {e}")))??;
        tracing::info!(?created, start_lsn = %timeline.meta().start_lsn, "import done");
        Ok(timeline)
    }
    .instrument(span)
    .await
}

/// The tar's faults are the caller's (INVALID_ARGUMENT). A malformed tar surfaces as an
/// I/O error of the tar reader, indistinguishable from a failed read of our spool file,
/// which is far rarer (the file was just written): those are reported as the caller's
/// too, the message naming the cause.
fn import_status(error: basebackup::ImportError) -> Status {
    match error {
        basebackup::ImportError::TooLarge { .. } => {
            Status::resource_exhausted(format!("importing the data directory: {error}"))
        }
        _ => Status::invalid_argument(format!("importing the data directory: {error}")),
    }
}
