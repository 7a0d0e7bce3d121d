//! The pageserver, as computes and the `strata` tool reach it over gRPC
//! (`proto/pageserver.proto`): its capabilities, a timeline's status, importing a new
//! timeline's base image, basebackups (streamed and unpacked as they arrive) and
//! single pages. Every call is bounded.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres_wal::Lsn;
use strata_ids::TenantTimelineId;
use strata_proto::pageserver as pb;
use strata_proto::pageserver::pageserver_client::PageserverClient;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::limits::{
    IMPORT_CHUNK_BYTES, MAX_PAGESERVER_MESSAGE_BYTES, PAGESERVER_CALL_TIMEOUT,
    PAGESERVER_POLL_INTERVAL, PAGESERVER_TRANSFER_TIMEOUT, UNPACK_QUEUE_CHUNKS,
};
use crate::pgdata::archive::{self, ArchiveError};
use crate::safekeepers::{bounded, describe};

/// PostgreSQL's page size: what `GetPages` returns per block.
pub const PAGE_BYTES: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum PageserverError {
    #[error("pageserver address {addr:?} is not HOST:PORT")]
    BadAddress { addr: String },
    #[error("pageserver {addr}: {what}: {message}")]
    Call {
        addr: String,
        what: &'static str,
        code: Code,
        message: String,
    },
    #[error("pageserver {addr}: {what}: {message}")]
    Protocol {
        addr: String,
        what: &'static str,
        message: String,
    },
    #[error("pageserver {addr}: timeline {id} did not reach {lsn} within {timeout:?} (it is at {at}, state {state:?})")]
    CatchUp {
        addr: String,
        id: TenantTimelineId,
        lsn: Lsn,
        at: Lsn,
        state: String,
        timeout: Duration,
    },
    #[error("unpacking the basebackup into {dir}: {source}")]
    Unpack {
        dir: PathBuf,
        #[source]
        source: ArchiveError,
    },
}

impl PageserverError {
    /// The gRPC code of a failed call.
    pub fn code(&self) -> Option<Code> {
        match self {
            PageserverError::Call { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A relation fork: the `RelTag` of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelFork {
    pub spc: u32,
    pub db: u32,
    pub rel: u32,
    /// 0 main, 1 fsm, 2 vm, 3 init.
    pub fork: u32,
}

/// A basebackup unpacked into a directory.
#[derive(Debug, Clone, Copy)]
pub struct Unpacked {
    /// The LSN of the backup (the resolved latest LSN, or the end of the last record at
    /// or before the one asked for).
    pub lsn: Lsn,
    pub files: usize,
    pub bytes: u64,
}

/// One pageserver, by its gRPC address; the channel connects lazily.
#[derive(Debug, Clone)]
pub struct Pageserver {
    addr: String,
    channel: Channel,
}

impl Pageserver {
    pub fn new(addr: &str) -> Result<Pageserver, PageserverError> {
        let bad = || PageserverError::BadAddress {
            addr: addr.to_owned(),
        };
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|_| bad())?;
        let channel = endpoint
            .connect_timeout(PAGESERVER_CALL_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Pageserver {
            addr: addr.to_owned(),
            channel,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn client(&self) -> PageserverClient<Channel> {
        PageserverClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_PAGESERVER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PAGESERVER_MESSAGE_BYTES)
    }

    fn failed(&self, what: &'static str) -> impl FnOnce(Status) -> PageserverError + '_ {
        move |status| PageserverError::Call {
            addr: self.addr.clone(),
            what,
            code: status.code(),
            message: describe(&status),
        }
    }

    fn protocol(&self, what: &'static str, message: String) -> PageserverError {
        PageserverError::Protocol {
            addr: self.addr.clone(),
            what,
            message,
        }
    }

    fn timeline(id: TenantTimelineId) -> pb::TimelineRequest {
        pb::TimelineRequest {
            tenant_id: id.tenant_id.to_string(),
            timeline_id: id.timeline_id.to_string(),
        }
    }

    /// The resource managers the pageserver redoes natively (`wal_consistency_checking`
    /// names).
    pub async fn native_redo_rmgrs(&self) -> Result<Vec<String>, PageserverError> {
        let mut client = self.client();
        let call = client.get_capabilities(pb::CapabilitiesRequest {});
        let reply = bounded(PAGESERVER_CALL_TIMEOUT, call)
            .await
            .map_err(self.failed("GetCapabilities"))?;
        Ok(reply.into_inner().native_redo_rmgrs)
    }

    /// [`Pageserver::native_redo_rmgrs`], retried while the pageserver is unreachable
    /// (it may be starting) for at most `timeout`.
    pub async fn native_redo_rmgrs_retrying(
        &self,
        timeout: Duration,
    ) -> Result<Vec<String>, PageserverError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.native_redo_rmgrs().await {
                Err(error)
                    if error.code() == Some(Code::Unavailable)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tracing::info!(%error, "waiting for the pageserver");
                    tokio::time::sleep(PAGESERVER_POLL_INTERVAL * 5).await;
                }
                other => return other,
            }
        }
    }

    pub async fn timeline_status(
        &self,
        id: TenantTimelineId,
    ) -> Result<pb::TimelineInfo, PageserverError> {
        let mut client = self.client();
        let call = client.timeline_status(Self::timeline(id));
        let reply = bounded(PAGESERVER_CALL_TIMEOUT, call)
            .await
            .map_err(self.failed("TimelineStatus"))?;
        Ok(reply.into_inner())
    }

    /// Creates the timeline from `tar`, a freshly bootstrapped data directory (see
    /// [`basebackup::tar_datadir`]). Idempotent for the same data directory.
    pub async fn import_timeline(
        &self,
        id: TenantTimelineId,
        tar: Vec<u8>,
    ) -> Result<pb::TimelineInfo, PageserverError> {
        use pb::import_timeline_request::Item;
        let mut messages = vec![pb::ImportTimelineRequest {
            item: Some(Item::Start(Self::timeline(id))),
        }];
        messages.extend(
            tar.chunks(IMPORT_CHUNK_BYTES)
                .map(|chunk| pb::ImportTimelineRequest {
                    item: Some(Item::TarChunk(chunk.to_vec())),
                }),
        );
        let mut client = self.client();
        let call = client.import_timeline(tokio_stream::iter(messages));
        let reply = bounded(PAGESERVER_TRANSFER_TIMEOUT, call)
            .await
            .map_err(self.failed("ImportTimeline"))?;
        Ok(reply.into_inner())
    }

    /// Waits until the pageserver has ingested the timeline up to `lsn` (at most
    /// `timeout`); its status then. Not found yet and unreachable are waited out too:
    /// the pageserver may be starting.
    pub async fn wait_for_lsn(
        &self,
        id: TenantTimelineId,
        lsn: Lsn,
        timeout: Duration,
    ) -> Result<pb::TimelineInfo, PageserverError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last: Option<pb::TimelineInfo> = None;
        loop {
            match self.timeline_status(id).await {
                Ok(info) if Lsn(info.last_record_lsn) >= lsn => return Ok(info),
                Ok(info) => {
                    if info.state.starts_with("stopped") {
                        return Err(self.protocol(
                            "TimelineStatus",
                            format!("ingest of timeline {id} stopped: {}", info.state),
                        ));
                    }
                    last = Some(info);
                }
                Err(error) if matches!(error.code(), Some(Code::Unavailable | Code::NotFound)) => {}
                Err(error) => return Err(error),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PageserverError::CatchUp {
                    addr: self.addr.clone(),
                    id,
                    lsn,
                    at: Lsn(last.as_ref().map_or(0, |i| i.last_record_lsn)),
                    state: last.map(|i| i.state).unwrap_or_default(),
                    timeout,
                });
            }
            tokio::time::sleep(PAGESERVER_POLL_INTERVAL).await;
        }
    }

    /// Streams a basebackup at `lsn` (`Lsn(0)`: the latest) and unpacks it into `dir`,
    /// which must exist and be empty, as it arrives (see [`archive::unpack`]); `owner`
    /// (uid, gid) gets every file.
    pub async fn basebackup_into(
        &self,
        id: TenantTimelineId,
        lsn: Lsn,
        standby: bool,
        dir: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<Unpacked, PageserverError> {
        self.basebackup_into_reporting(id, lsn, standby, dir, owner, |_| {})
            .await
    }

    /// [`Self::basebackup_into`], calling `received` with the bytes of the tar
    /// received so far after every chunk (for a progress display).
    pub async fn basebackup_into_reporting(
        &self,
        id: TenantTimelineId,
        lsn: Lsn,
        standby: bool,
        dir: &Path,
        owner: Option<(u32, u32)>,
        received: impl Fn(u64),
    ) -> Result<Unpacked, PageserverError> {
        let deadline = tokio::time::Instant::now() + PAGESERVER_TRANSFER_TIMEOUT;
        let mut client = self.client();
        let call = client.get_basebackup(pb::BasebackupRequest {
            tenant_id: id.tenant_id.to_string(),
            timeline_id: id.timeline_id.to_string(),
            lsn: lsn.0,
            standby,
        });
        let mut stream = bounded(PAGESERVER_CALL_TIMEOUT, call)
            .await
            .map_err(self.failed("GetBasebackup"))?
            .into_inner();
        let first = next_chunk(&mut stream, deadline)
            .await
            .map_err(self.failed("GetBasebackup"))?
            .ok_or_else(|| self.protocol("GetBasebackup", "an empty stream".to_owned()))?;
        let backup_lsn = Lsn(first.lsn);
        if backup_lsn == Lsn::INVALID {
            return Err(self.protocol("GetBasebackup", "the first chunk carries no LSN".to_owned()));
        }
        let (tx, rx) = mpsc::channel(UNPACK_QUEUE_CHUNKS);
        let target = dir.to_owned();
        let unpacking = tokio::task::spawn_blocking(move || {
            archive::unpack(ChunkReader::new(rx), &target, owner)
        });
        let mut bytes = first.data.len() as u64;
        let mut chunk = Some(first.data);
        let mut stream_error = None;
        loop {
            if let Some(data) = chunk.take() {
                if tx.send(Ok(data)).await.is_err() {
                    break; // The unpacker stopped (its error says why).
                }
            }
            match next_chunk(&mut stream, deadline).await {
                Ok(Some(message)) => {
                    bytes += message.data.len() as u64;
                    received(bytes);
                    chunk = Some(message.data);
                }
                Ok(None) => break,
                Err(status) => {
                    let _ = tx.send(Err(describe(&status))).await;
                    stream_error = Some(status);
                    break;
                }
            }
        }
        drop(tx);
        let unpacked = unpacking
            .await
            .map_err(|e| self.protocol("GetBasebackup", format!("unpacking task failed: {e}")))?;
        if let Some(status) = stream_error {
            return Err(self.failed("GetBasebackup")(status));
        }
        let files = unpacked.map_err(|source| PageserverError::Unpack {
            dir: dir.to_owned(),
            source,
        })?;
        Ok(Unpacked {
            lsn: backup_lsn,
            files,
            bytes,
        })
    }

    /// One page at `lsn` (`Lsn(0)`: the latest); the LSN it was read at and its bytes.
    pub async fn get_page(
        &self,
        id: TenantTimelineId,
        lsn: Lsn,
        rel: RelFork,
        block: u32,
    ) -> Result<(Lsn, Vec<u8>), PageserverError> {
        let request = pb::GetPagesRequest {
            tenant_id: id.tenant_id.to_string(),
            timeline_id: id.timeline_id.to_string(),
            request_id: 1,
            lsn: lsn.0,
            rel: Some(pb::RelTag {
                spc_oid: rel.spc,
                db_oid: rel.db,
                rel_number: rel.rel,
                fork: rel.fork,
            }),
            block_numbers: vec![block],
        };
        let mut client = self.client();
        let call = client.get_pages(tokio_stream::once(request));
        let mut stream = bounded(PAGESERVER_CALL_TIMEOUT, call)
            .await
            .map_err(self.failed("GetPages"))?
            .into_inner();
        let reply = bounded(PAGESERVER_TRANSFER_TIMEOUT, stream.message())
            .await
            .map_err(self.failed("GetPages"))?
            .ok_or_else(|| self.protocol("GetPages", "no answer".to_owned()))?;
        if reply.status_code != 0 {
            let status = Status::new(Code::from(reply.status_code), reply.status_message);
            return Err(self.failed("GetPages")(status));
        }
        let mut pages = reply.pages.into_iter();
        match (pages.next(), pages.next()) {
            (Some(page), None) if page.len() == PAGE_BYTES => Ok((Lsn(reply.lsn), page)),
            (Some(page), None) => Err(self.protocol(
                "GetPages",
                format!("a page of {} bytes, not {PAGE_BYTES}", page.len()),
            )),
            _ => Err(self.protocol("GetPages", "not exactly one page".to_owned())),
        }
    }
}

/// The next basebackup chunk, failing once the whole transfer's `deadline` passed.
async fn next_chunk(
    stream: &mut tonic::Streaming<pb::BasebackupChunk>,
    deadline: tokio::time::Instant,
) -> Result<Option<pb::BasebackupChunk>, Status> {
    tokio::time::timeout_at(deadline, stream.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "the basebackup took longer than {PAGESERVER_TRANSFER_TIMEOUT:?}"
            ))
        })?
}

/// The basebackup chunks as a byte stream for the (blocking) tar reader.
struct ChunkReader {
    rx: mpsc::Receiver<Result<Vec<u8>, String>>,
    current: Vec<u8>,
    offset: usize,
}

impl ChunkReader {
    fn new(rx: mpsc::Receiver<Result<Vec<u8>, String>>) -> ChunkReader {
        ChunkReader {
            rx,
            current: Vec::new(),
            offset: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.current.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => {
                    self.current = chunk;
                    self.offset = 0;
                }
                Some(Err(why)) => return Err(std::io::Error::other(why)),
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_are_checked() {
        assert!(Pageserver::new("127.0.0.1:6400").is_ok());
        for bad in ["", "host", ":1", "h:port", "h:70000"] {
            assert!(
                matches!(
                    Pageserver::new(bad),
                    Err(PageserverError::BadAddress { .. })
                ),
                "{bad}"
            );
        }
    }
}
