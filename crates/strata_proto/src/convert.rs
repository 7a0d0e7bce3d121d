//! Conversions between the consensus protocol's domain messages (`consensus::messages`)
//! and their generated proto form, for every program that speaks the protocol: the
//! proposer side (`compute_ctl`) and, in time, the safekeeper (which today keeps its own
//! copy in `safekeeper::grpc::convert`, together with its administration types).
//!
//! Decoding checks what the types cannot say: ids are 32 hex digits, term histories are
//! well formed, an append's WAL fits the protocol's limit and matches its LSN range, a
//! oneof is set. Both directions exist for every message, with round-trip tests.

use crate::safekeeper as pb;
use consensus::limits::MAX_WAL_BYTES_PER_APPEND;
use consensus::messages::{
    AcceptorGreeting, AcceptorMessage, AppendRequest, AppendResponse, ProposerElected,
    ProposerGreeting, ProposerId, ProposerMessage, VoteRequest, VoteResponse,
};
use consensus::term_history::{Term, TermHistory, TermHistoryError, TermSwitch};
use postgres_wal::Lsn;
use strata_ids::{NodeId, ParseIdError, TenantId, TenantTimelineId, TimelineId};

/// Why a proto message does not make a domain value. A server maps it to `INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{0}: no message set")]
    Empty(&'static str),
    #[error("{field}: {source}")]
    Id {
        field: &'static str,
        #[source]
        source: ParseIdError,
    },
    #[error("{field}: {source}")]
    TermHistory {
        field: &'static str,
        #[source]
        source: TermHistoryError,
    },
    #[error("append carries {len} WAL bytes, more than the limit of {MAX_WAL_BYTES_PER_APPEND}")]
    WalTooLarge { len: usize },
    #[error("append covers {begin}..{end} but carries {len} WAL bytes")]
    WalLength { begin: Lsn, end: Lsn, len: usize },
}

/// A domain value that has a proto form.
pub trait ToProto {
    type Proto;
    fn to_proto(&self) -> Self::Proto;
}

/// A domain value decoded (and checked) from its proto form.
pub trait FromProto: Sized {
    type Proto;
    fn from_proto(proto: Self::Proto) -> Result<Self, ConvertError>;
}

pub fn parse_id<T: std::str::FromStr<Err = ParseIdError>>(
    field: &'static str,
    text: &str,
) -> Result<T, ConvertError> {
    text.parse()
        .map_err(|source| ConvertError::Id { field, source })
}

pub fn parse_timeline_id(
    tenant_id: &str,
    timeline_id: &str,
) -> Result<TenantTimelineId, ConvertError> {
    Ok(TenantTimelineId {
        tenant_id: parse_id::<TenantId>("tenant_id", tenant_id)?,
        timeline_id: parse_id::<TimelineId>("timeline_id", timeline_id)?,
    })
}

pub fn history_to_proto(history: &TermHistory) -> Vec<pb::TermSwitch> {
    history
        .0
        .iter()
        .map(|s| pb::TermSwitch {
            term: s.term.0,
            lsn: s.lsn.0,
        })
        .collect()
}

pub fn history_from_proto(
    field: &'static str,
    entries: Vec<pb::TermSwitch>,
) -> Result<TermHistory, ConvertError> {
    let history = TermHistory(
        entries
            .into_iter()
            .map(|s| TermSwitch {
                term: Term(s.term),
                lsn: Lsn(s.lsn),
            })
            .collect(),
    );
    history
        .validate()
        .map_err(|source| ConvertError::TermHistory { field, source })?;
    Ok(history)
}

impl ToProto for ProposerMessage {
    type Proto = pb::ProposerMessage;
    fn to_proto(&self) -> pb::ProposerMessage {
        proposer_message_into_proto(self.clone())
    }
}

/// [`ToProto::to_proto`] by value: an append's WAL moves into the proto message
/// instead of being copied, which is what a proposer sending every WAL byte wants.
pub fn proposer_message_into_proto(message: ProposerMessage) -> pb::ProposerMessage {
    use pb::proposer_message::Message;
    let message = match message {
        ProposerMessage::Greeting(m) => Message::Greeting(pb::ProposerGreeting {
            tenant_id: m.id.tenant_id.to_string(),
            timeline_id: m.id.timeline_id.to_string(),
            system_id: m.system_id,
            pg_version: m.pg_version,
            wal_segment_size: m.wal_segment_size,
            proposer_id: format!("{:032x}", m.proposer_id.0),
        }),
        ProposerMessage::VoteRequest(m) => Message::VoteRequest(pb::VoteRequest { term: m.term.0 }),
        ProposerMessage::Elected(m) => Message::Elected(pb::ProposerElected {
            term: m.term.0,
            start_streaming_at: m.start_streaming_at.0,
            term_history: history_to_proto(&m.term_history),
        }),
        ProposerMessage::Append(m) => Message::AppendRequest(pb::AppendRequest {
            term: m.term.0,
            begin_lsn: m.begin_lsn.0,
            end_lsn: m.end_lsn.0,
            commit_lsn: m.commit_lsn.0,
            truncate_lsn: m.truncate_lsn.0,
            wal: m.wal,
        }),
    };
    pb::ProposerMessage {
        message: Some(message),
    }
}

impl FromProto for ProposerMessage {
    type Proto = pb::ProposerMessage;
    fn from_proto(proto: pb::ProposerMessage) -> Result<ProposerMessage, ConvertError> {
        use pb::proposer_message::Message;
        Ok(
            match proto
                .message
                .ok_or(ConvertError::Empty("ProposerMessage"))?
            {
                Message::Greeting(m) => ProposerMessage::Greeting(ProposerGreeting {
                    id: parse_timeline_id(&m.tenant_id, &m.timeline_id)?,
                    proposer_id: parse_proposer_id(&m.proposer_id)?,
                    system_id: m.system_id,
                    pg_version: m.pg_version,
                    wal_segment_size: m.wal_segment_size,
                }),
                Message::VoteRequest(m) => {
                    ProposerMessage::VoteRequest(VoteRequest { term: Term(m.term) })
                }
                Message::Elected(m) => ProposerMessage::Elected(ProposerElected {
                    term: Term(m.term),
                    start_streaming_at: Lsn(m.start_streaming_at),
                    term_history: history_from_proto("elected.term_history", m.term_history)?,
                }),
                Message::AppendRequest(m) => ProposerMessage::Append(append_from_proto(m)?),
            },
        )
    }
}

/// Proposer ids share the tenant id's form (32 hex digits) and parser.
fn parse_proposer_id(text: &str) -> Result<ProposerId, ConvertError> {
    parse_id::<TenantId>("proposer_id", text).map(|id| ProposerId(id.0))
}

fn append_from_proto(m: pb::AppendRequest) -> Result<AppendRequest, ConvertError> {
    let len = m.wal.len();
    if len > MAX_WAL_BYTES_PER_APPEND {
        return Err(ConvertError::WalTooLarge { len });
    }
    let (begin, end) = (Lsn(m.begin_lsn), Lsn(m.end_lsn));
    if m.end_lsn.checked_sub(m.begin_lsn) != Some(len as u64) {
        return Err(ConvertError::WalLength { begin, end, len });
    }
    Ok(AppendRequest {
        term: Term(m.term),
        begin_lsn: begin,
        end_lsn: end,
        commit_lsn: Lsn(m.commit_lsn),
        truncate_lsn: Lsn(m.truncate_lsn),
        wal: m.wal,
    })
}

impl ToProto for AcceptorMessage {
    type Proto = pb::AcceptorMessage;
    fn to_proto(&self) -> pb::AcceptorMessage {
        use pb::acceptor_message::Message;
        let message = match self {
            AcceptorMessage::Greeting(m) => Message::Greeting(pb::AcceptorGreeting {
                node_id: m.node_id.0,
                term: m.term.0,
            }),
            AcceptorMessage::VoteResponse(m) => Message::VoteResponse(pb::VoteResponse {
                term: m.term.0,
                vote_given: m.vote_given,
                flush_lsn: m.flush_lsn.0,
                truncate_lsn: m.truncate_lsn.0,
                term_history: history_to_proto(&m.term_history),
                timeline_start_lsn: m.timeline_start_lsn.0,
                commit_lsn: m.commit_lsn.0,
            }),
            AcceptorMessage::AppendResponse(m) => Message::AppendResponse(pb::AppendResponse {
                term: m.term.0,
                flush_lsn: m.flush_lsn.0,
                commit_lsn: m.commit_lsn.0,
            }),
        };
        pb::AcceptorMessage {
            message: Some(message),
        }
    }
}

impl FromProto for AcceptorMessage {
    type Proto = pb::AcceptorMessage;
    fn from_proto(proto: pb::AcceptorMessage) -> Result<AcceptorMessage, ConvertError> {
        use pb::acceptor_message::Message;
        Ok(
            match proto
                .message
                .ok_or(ConvertError::Empty("AcceptorMessage"))?
            {
                Message::Greeting(m) => AcceptorMessage::Greeting(AcceptorGreeting {
                    node_id: NodeId(m.node_id),
                    term: Term(m.term),
                }),
                Message::VoteResponse(m) => AcceptorMessage::VoteResponse(VoteResponse {
                    term: Term(m.term),
                    vote_given: m.vote_given,
                    flush_lsn: Lsn(m.flush_lsn),
                    commit_lsn: Lsn(m.commit_lsn),
                    truncate_lsn: Lsn(m.truncate_lsn),
                    term_history: history_from_proto("vote_response.term_history", m.term_history)?,
                    timeline_start_lsn: Lsn(m.timeline_start_lsn),
                }),
                Message::AppendResponse(m) => AcceptorMessage::AppendResponse(AppendResponse {
                    term: Term(m.term),
                    flush_lsn: Lsn(m.flush_lsn),
                    commit_lsn: Lsn(m.commit_lsn),
                }),
            },
        )
    }
}

impl FromProto for TenantTimelineId {
    type Proto = pb::TimelineRequest;
    fn from_proto(m: pb::TimelineRequest) -> Result<TenantTimelineId, ConvertError> {
        parse_timeline_id(&m.tenant_id, &m.timeline_id)
    }
}

impl ToProto for TenantTimelineId {
    type Proto = pb::TimelineRequest;
    fn to_proto(&self) -> pb::TimelineRequest {
        pb::TimelineRequest {
            tenant_id: self.tenant_id.to_string(),
            timeline_id: self.timeline_id.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TenantTimelineId {
        TenantTimelineId {
            tenant_id: TenantId(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            timeline_id: TimelineId(7),
        }
    }

    fn history() -> TermHistory {
        TermHistory(vec![
            TermSwitch {
                term: Term(0),
                lsn: Lsn(0x100_0000),
            },
            TermSwitch {
                term: Term(3),
                lsn: Lsn(0x100_0028),
            },
        ])
    }

    fn round_trip<T>(value: T)
    where
        T: ToProto + FromProto<Proto = <T as ToProto>::Proto> + PartialEq + std::fmt::Debug,
    {
        let back = T::from_proto(value.to_proto()).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn proposer_messages_round_trip() {
        round_trip(ProposerMessage::Greeting(ProposerGreeting {
            id: id(),
            proposer_id: ProposerId(u128::MAX - 5),
            system_id: 7_300_000_000_000_000_001,
            pg_version: 150_018,
            wal_segment_size: 16 << 20,
        }));
        round_trip(ProposerMessage::VoteRequest(VoteRequest { term: Term(4) }));
        round_trip(ProposerMessage::Elected(ProposerElected {
            term: Term(3),
            start_streaming_at: Lsn(0x100_0028),
            term_history: history(),
        }));
        round_trip(ProposerMessage::Append(AppendRequest {
            term: Term(3),
            begin_lsn: Lsn(0x100_0028),
            end_lsn: Lsn(0x100_0030),
            commit_lsn: Lsn(0x100_0028),
            truncate_lsn: Lsn(0x100_0000),
            wal: vec![1, 2, 3, 4, 5, 6, 7, 8],
        }));
    }

    #[test]
    fn acceptor_messages_round_trip() {
        round_trip(AcceptorMessage::Greeting(AcceptorGreeting {
            node_id: NodeId(2),
            term: Term(9),
        }));
        round_trip(AcceptorMessage::VoteResponse(VoteResponse {
            term: Term(4),
            vote_given: true,
            flush_lsn: Lsn(0x100_0028),
            commit_lsn: Lsn(0x100_0000),
            truncate_lsn: Lsn(0x100_0000),
            term_history: history(),
            timeline_start_lsn: Lsn(0x100_0000),
        }));
        round_trip(AcceptorMessage::AppendResponse(AppendResponse {
            term: Term(4),
            flush_lsn: Lsn(u64::MAX),
            commit_lsn: Lsn(1),
        }));
    }

    #[test]
    fn timeline_ids_round_trip() {
        round_trip(id());
    }

    #[test]
    fn malformed_messages_are_refused() {
        let decode = |message| ProposerMessage::from_proto(pb::ProposerMessage { message });
        assert_eq!(decode(None), Err(ConvertError::Empty("ProposerMessage")));

        use pb::proposer_message::Message;
        let greeting = |tenant_id: &str| {
            Message::Greeting(pb::ProposerGreeting {
                tenant_id: tenant_id.into(),
                timeline_id: "00000000000000000000000000000001".into(),
                proposer_id: "00000000000000000000000000000002".into(),
                ..Default::default()
            })
        };
        assert!(decode(Some(greeting("00000000000000000000000000000003"))).is_ok());
        assert!(matches!(
            decode(Some(greeting("xyz"))),
            Err(ConvertError::Id {
                field: "tenant_id",
                ..
            })
        ));

        let append = |begin: u64, end: u64, len: usize| {
            Message::AppendRequest(pb::AppendRequest {
                begin_lsn: begin,
                end_lsn: end,
                wal: vec![0; len],
                ..Default::default()
            })
        };
        assert!(decode(Some(append(8, 16, 8))).is_ok());
        assert!(matches!(
            decode(Some(append(8, 17, 8))),
            Err(ConvertError::WalLength { .. })
        ));
        assert!(matches!(
            decode(Some(append(16, 8, 0))),
            Err(ConvertError::WalLength { .. })
        ));
        let big = MAX_WAL_BYTES_PER_APPEND + 1;
        assert!(matches!(
            decode(Some(append(0, big as u64, big))),
            Err(ConvertError::WalTooLarge { .. })
        ));

        let elected = |term_history| {
            Message::Elected(pb::ProposerElected {
                term: 5,
                start_streaming_at: 0,
                term_history,
            })
        };
        assert!(matches!(
            decode(Some(elected(vec![]))),
            Err(ConvertError::TermHistory { .. })
        ));
        let unordered = vec![
            pb::TermSwitch { term: 3, lsn: 10 },
            pb::TermSwitch { term: 2, lsn: 20 },
        ];
        assert!(matches!(
            decode(Some(elected(unordered))),
            Err(ConvertError::TermHistory { .. })
        ));
    }
}
