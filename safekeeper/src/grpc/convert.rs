//! Conversions of the safekeeper's administration types (`NewTimeline`,
//! `TimelineStatus`) to and from their generated proto form. The consensus messages'
//! conversions are shared with every proposer and live in `strata_proto::convert`;
//! this module re-exports them so the daemon has one place to look.

use consensus::term_history::Term;
use postgres_wal::Lsn;
use strata_proto::safekeeper as pb;

pub use strata_proto::convert::{
    history_from_proto, history_to_proto, parse_id, parse_timeline_id, ConvertError, FromProto,
    ToProto,
};

use crate::timeline::{NewTimeline, OffloadPositions, TimelineStatus};

impl FromProto for NewTimeline {
    type Proto = pb::CreateTimelineRequest;
    fn from_proto(m: pb::CreateTimelineRequest) -> Result<NewTimeline, ConvertError> {
        Ok(NewTimeline {
            id: parse_timeline_id(&m.tenant_id, &m.timeline_id)?,
            system_id: m.system_id,
            pg_version: m.pg_version,
            wal_segment_size: m.wal_segment_size,
            start_lsn: Lsn(m.start_lsn),
        })
    }
}

impl ToProto for NewTimeline {
    type Proto = pb::CreateTimelineRequest;
    fn to_proto(&self) -> pb::CreateTimelineRequest {
        pb::CreateTimelineRequest {
            tenant_id: self.id.tenant_id.to_string(),
            timeline_id: self.id.timeline_id.to_string(),
            system_id: self.system_id,
            pg_version: self.pg_version,
            wal_segment_size: self.wal_segment_size,
            start_lsn: self.start_lsn.0,
        }
    }
}

impl ToProto for TimelineStatus {
    type Proto = pb::TimelineInfo;
    fn to_proto(&self) -> pb::TimelineInfo {
        pb::TimelineInfo {
            tenant_id: self.id.tenant_id.to_string(),
            timeline_id: self.id.timeline_id.to_string(),
            system_id: self.system_id,
            pg_version: self.pg_version,
            wal_segment_size: self.wal_segment_size,
            timeline_start_lsn: self.timeline_start_lsn.0,
            term: self.term.0,
            term_history: history_to_proto(&self.term_history),
            flush_lsn: self.flush_lsn.0,
            commit_lsn: self.commit_lsn.0,
            failure: self.failure.clone(),
            uploaded_lsn: self.offload.uploaded_lsn.0,
            remote_consistent_lsn: self.offload.remote_consistent_lsn.0,
            removal_horizon_lsn: self.offload.removal_horizon_lsn.0,
        }
    }
}

impl FromProto for TimelineStatus {
    type Proto = pb::TimelineInfo;
    fn from_proto(m: pb::TimelineInfo) -> Result<TimelineStatus, ConvertError> {
        Ok(TimelineStatus {
            id: parse_timeline_id(&m.tenant_id, &m.timeline_id)?,
            system_id: m.system_id,
            pg_version: m.pg_version,
            wal_segment_size: m.wal_segment_size,
            timeline_start_lsn: Lsn(m.timeline_start_lsn),
            term: Term(m.term),
            term_history: history_from_proto("timeline.term_history", m.term_history)?,
            flush_lsn: Lsn(m.flush_lsn),
            commit_lsn: Lsn(m.commit_lsn),
            failure: m.failure,
            offload: OffloadPositions {
                uploaded_lsn: Lsn(m.uploaded_lsn),
                remote_consistent_lsn: Lsn(m.remote_consistent_lsn),
                removal_horizon_lsn: Lsn(m.removal_horizon_lsn),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::term_history::{TermHistory, TermSwitch};
    use strata_ids::{TenantId, TenantTimelineId, TimelineId};

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
    fn administration_round_trips() {
        round_trip(id());
        round_trip(NewTimeline {
            id: id(),
            system_id: 1,
            pg_version: 150_018,
            wal_segment_size: 1 << 20,
            start_lsn: Lsn(0x100_0000),
        });
        round_trip(TimelineStatus {
            id: id(),
            system_id: 1,
            pg_version: 150_018,
            wal_segment_size: 1 << 20,
            timeline_start_lsn: Lsn(0x100_0000),
            term: Term(3),
            term_history: history(),
            flush_lsn: Lsn(0x100_0100),
            commit_lsn: Lsn(0x100_0028),
            failure: Some("disk full".into()),
            offload: OffloadPositions {
                uploaded_lsn: Lsn(0x100_0000),
                remote_consistent_lsn: Lsn(0xF0_0000),
                removal_horizon_lsn: Lsn(0xF0_0000),
            },
        });
    }
}
