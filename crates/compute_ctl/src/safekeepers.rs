//! The safekeepers of one timeline, as `compute_ctl` reaches them over gRPC: their
//! addresses, one lazily connected channel each (shared by the proposer stream, which
//! [`crate::proposer`] drives, and the unary calls here), and the timeline checks made
//! before an election.

use std::time::Duration;

use postgres_wal::Lsn;
use strata_ids::TenantTimelineId;
use strata_proto::safekeeper as pb;
use strata_proto::safekeeper::safekeeper_client::SafekeeperClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::limits::{
    GRPC_KEEPALIVE_INTERVAL, GRPC_KEEPALIVE_TIMEOUT, MAX_GRPC_MESSAGE_BYTES, MAX_SAFEKEEPERS,
    SAFEKEEPER_CALL_TIMEOUT, SAFEKEEPER_CONNECT_TIMEOUT,
};

#[derive(Debug, thiserror::Error)]
pub enum SafekeeperListError {
    #[error("--safekeepers names no safekeeper")]
    Empty,
    #[error("--safekeepers names {0} safekeepers, more than the limit of {MAX_SAFEKEEPERS}")]
    TooMany(usize),
    #[error("--safekeepers names {0} twice")]
    Duplicate(String),
    #[error("safekeeper address {addr:?} is not HOST:PORT: {reason}")]
    BadAddress { addr: String, reason: String },
}

/// The parameters of a timeline as a safekeeper reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineParams {
    pub system_id: u64,
    pub pg_version: u32,
    pub wal_segment_size: u32,
    pub timeline_start_lsn: Lsn,
}

impl TimelineParams {
    pub fn from_info(info: &pb::TimelineInfo) -> TimelineParams {
        TimelineParams {
            system_id: info.system_id,
            pg_version: info.pg_version,
            wal_segment_size: info.wal_segment_size,
            timeline_start_lsn: Lsn(info.timeline_start_lsn),
        }
    }

    /// Why a safekeeper's timeline is not the one we mean (`None`: it is). The
    /// PostgreSQL minor version may differ: it shares the WAL format.
    pub fn mismatch(&self, theirs: &TimelineParams) -> Option<String> {
        if theirs.system_id != self.system_id {
            return Some(format!(
                "it holds the timeline of another cluster: system id {}, this compute's is {}",
                theirs.system_id, self.system_id
            ));
        }
        if theirs.wal_segment_size != self.wal_segment_size {
            return Some(format!(
                "its WAL segment size is {}, this compute's is {}",
                theirs.wal_segment_size, self.wal_segment_size
            ));
        }
        if theirs.pg_version / 10000 != self.pg_version / 10000 {
            return Some(format!(
                "its PostgreSQL version is {}, this compute's is {}",
                theirs.pg_version, self.pg_version
            ));
        }
        if theirs.timeline_start_lsn != self.timeline_start_lsn {
            return Some(format!(
                "its timeline starts at {}, this compute's at {}",
                theirs.timeline_start_lsn, self.timeline_start_lsn
            ));
        }
        None
    }
}

/// The safekeepers named on the command line, in that order (the index of each is its
/// acceptor number in the proposer).
#[derive(Debug, Clone)]
pub struct Safekeepers {
    id: TenantTimelineId,
    addrs: Vec<String>,
    channels: Vec<Channel>,
}

/// Parse `HOST:PORT,HOST:PORT,...`.
pub fn parse_list(list: &str) -> Result<Vec<String>, SafekeeperListError> {
    let addrs: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if addrs.is_empty() {
        return Err(SafekeeperListError::Empty);
    }
    if addrs.len() > MAX_SAFEKEEPERS {
        return Err(SafekeeperListError::TooMany(addrs.len()));
    }
    for (i, addr) in addrs.iter().enumerate() {
        let bad = |reason: &str| SafekeeperListError::BadAddress {
            addr: addr.clone(),
            reason: reason.to_owned(),
        };
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        port.parse::<u16>()
            .map_err(|_| bad("the port is not a number"))?;
        if addrs[..i].contains(addr) {
            return Err(SafekeeperListError::Duplicate(addr.clone()));
        }
    }
    Ok(addrs)
}

impl Safekeepers {
    pub fn new(
        id: TenantTimelineId,
        addrs: Vec<String>,
    ) -> Result<Safekeepers, SafekeeperListError> {
        let channels = addrs
            .iter()
            .map(|addr| {
                let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| {
                    SafekeeperListError::BadAddress {
                        addr: addr.clone(),
                        reason: e.to_string(),
                    }
                })?;
                Ok(endpoint
                    .connect_timeout(SAFEKEEPER_CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(GRPC_KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(GRPC_KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
                    .connect_lazy())
            })
            .collect::<Result<_, _>>()?;
        Ok(Safekeepers {
            id,
            addrs,
            channels,
        })
    }

    pub fn id(&self) -> TenantTimelineId {
        self.id
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    pub fn addr(&self, i: usize) -> &str {
        &self.addrs[i]
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub fn client(&self, i: usize) -> SafekeeperClient<Channel> {
        SafekeeperClient::new(self.channels[i].clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
    }

    fn request(&self) -> pb::TimelineRequest {
        pb::TimelineRequest {
            tenant_id: self.id.tenant_id.to_string(),
            timeline_id: self.id.timeline_id.to_string(),
        }
    }

    pub async fn status(&self, i: usize) -> Result<pb::TimelineInfo, Status> {
        let mut client = self.client(i);
        let call = client.timeline_status(self.request());
        Ok(bounded(SAFEKEEPER_CALL_TIMEOUT, call).await?.into_inner())
    }

    pub async fn create(
        &self,
        i: usize,
        params: &TimelineParams,
    ) -> Result<pb::TimelineInfo, Status> {
        let mut client = self.client(i);
        let call = client.create_timeline(pb::CreateTimelineRequest {
            tenant_id: self.id.tenant_id.to_string(),
            timeline_id: self.id.timeline_id.to_string(),
            system_id: params.system_id,
            pg_version: params.pg_version,
            wal_segment_size: params.wal_segment_size,
            start_lsn: params.timeline_start_lsn.0,
        });
        Ok(bounded(SAFEKEEPER_CALL_TIMEOUT, call).await?.into_inner())
    }

    pub async fn read_wal(
        &self,
        i: usize,
        begin: Lsn,
        end: Lsn,
    ) -> Result<pb::ReadWalResponse, Status> {
        let mut client = self.client(i);
        let call = client.read_wal(pb::ReadWalRequest {
            tenant_id: self.id.tenant_id.to_string(),
            timeline_id: self.id.timeline_id.to_string(),
            begin_lsn: begin.0,
            end_lsn: end.0,
        });
        Ok(bounded(SAFEKEEPER_CALL_TIMEOUT, call).await?.into_inner())
    }
}

pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Status::deadline_exceeded(format!("no answer within {timeout:?}")))?
}

/// A status as one line for people: the code's name and the message.
pub fn describe(status: &Status) -> String {
    let message = status.message();
    match status.code() {
        Code::Unavailable if message.is_empty() => "unreachable".to_owned(),
        Code::Unavailable => format!("unreachable ({message})"),
        code => format!("{code:?}: {message}"),
    }
}

/// What a check of every safekeeper's timeline found.
#[derive(Debug, Default)]
pub struct Preflight {
    /// Index and status of each safekeeper that answered.
    pub answered: Vec<(usize, pb::TimelineInfo)>,
    /// Index of each safekeeper that does not have the timeline.
    pub not_found: Vec<usize>,
    /// Index and description of each safekeeper that could not be asked.
    pub unreachable: Vec<(usize, String)>,
}

/// Ask every safekeeper for the timeline's status at once, each bounded by `timeout`.
pub async fn preflight(safekeepers: &Safekeepers, timeout: Duration) -> Preflight {
    let results = on_each(safekeepers, move |sks, i| async move {
        tokio::time::timeout(timeout, sks.status(i)).await
    })
    .await;
    let mut found = Preflight::default();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(Ok(info)) => found.answered.push((i, info)),
            Ok(Err(status)) if status.code() == Code::NotFound => found.not_found.push(i),
            Ok(Err(status)) => found.unreachable.push((i, describe(&status))),
            Err(_) => found
                .unreachable
                .push((i, format!("no answer within {timeout:?}"))),
        }
    }
    found
}

/// Run `call` for every safekeeper concurrently; the outputs in safekeeper order.
pub async fn on_each<T, F, Fut>(safekeepers: &Safekeepers, call: F) -> Vec<T>
where
    F: Fn(Safekeepers, usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = (0..safekeepers.len())
        .map(|i| tokio::spawn(call(safekeepers.clone(), i)))
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(value) => out.push(value),
            // A panicking call is a bug; surface it where it happened.
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_checked() {
        assert_eq!(
            parse_list("127.0.0.1:1, localhost:2").unwrap(),
            vec!["127.0.0.1:1", "localhost:2"]
        );
        assert!(matches!(parse_list(""), Err(SafekeeperListError::Empty)));
        assert!(matches!(
            parse_list("a:1,a:1"),
            Err(SafekeeperListError::Duplicate(_))
        ));
        assert!(matches!(
            parse_list("a"),
            Err(SafekeeperListError::BadAddress { .. })
        ));
        assert!(matches!(
            parse_list("a:x"),
            Err(SafekeeperListError::BadAddress { .. })
        ));
        assert!(matches!(
            parse_list(":5"),
            Err(SafekeeperListError::BadAddress { .. })
        ));
        let many: Vec<String> = (0..16).map(|i| format!("h:{i}")).collect();
        assert!(matches!(
            parse_list(&many.join(",")),
            Err(SafekeeperListError::TooMany(16))
        ));
    }

    #[test]
    fn mismatches_say_what_differs() {
        let ours = TimelineParams {
            system_id: 1,
            pg_version: 150_008,
            wal_segment_size: 16 << 20,
            timeline_start_lsn: Lsn(0x200_0000),
        };
        assert_eq!(ours.mismatch(&ours), None);
        let minor = TimelineParams {
            pg_version: 150_010,
            ..ours.clone()
        };
        assert_eq!(ours.mismatch(&minor), None);
        let other = TimelineParams {
            system_id: 2,
            ..ours.clone()
        };
        assert!(ours.mismatch(&other).unwrap().contains("another cluster"));
        let major = TimelineParams {
            pg_version: 160_000,
            ..ours.clone()
        };
        assert!(ours.mismatch(&major).is_some());
    }
}
