//! The one place that turns the safekeeper's errors into gRPC statuses, so every RPC
//! reports the same condition with the same code (documented in `proto/safekeeper.proto`).

use tonic::{Code, Status};

use super::convert::ConvertError;
use super::propose::ConnectionError;
use super::read_wal::ReadWalError;
use crate::timeline::ProposeError;
use crate::timelines::TimelineError;

/// A malformed request: `INVALID_ARGUMENT`. A function, not a `From`, because both
/// types belong to other crates.
pub fn invalid_argument(error: ConvertError) -> Status {
    Status::invalid_argument(error.to_string())
}

impl From<TimelineError> for Status {
    fn from(error: TimelineError) -> Status {
        let code = match &error {
            TimelineError::NotFound(_) => Code::NotFound,
            TimelineError::AlreadyExists(_) => Code::AlreadyExists,
            TimelineError::InvalidParameters(_) => Code::InvalidArgument,
            TimelineError::TooMany => Code::ResourceExhausted,
            TimelineError::Broken { .. } | TimelineError::ShuttingDown => Code::Unavailable,
            TimelineError::Storage { source, .. } if source.is_disk_full() => Code::Unavailable,
            TimelineError::Storage { .. }
            | TimelineError::Start { .. }
            | TimelineError::Io { .. }
            | TimelineError::Cleanup { .. }
            | TimelineError::Internal(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}

impl From<ProposeError> for Status {
    fn from(error: ProposeError) -> Status {
        match error {
            ProposeError::Refused(refusal) => Status::failed_precondition(refusal.to_string()),
            failed @ ProposeError::Failed(_) => Status::unavailable(failed.to_string()),
        }
    }
}

impl From<ConnectionError> for Status {
    fn from(error: ConnectionError) -> Status {
        let code = match &error {
            ConnectionError::NoGreeting => Code::FailedPrecondition,
            ConnectionError::GreetingTimeout => Code::DeadlineExceeded,
            ConnectionError::TimelineStopped | ConnectionError::ShuttingDown => Code::Unavailable,
        };
        Status::new(code, error.to_string())
    }
}

impl From<ReadWalError> for Status {
    fn from(error: ReadWalError) -> Status {
        let code = match error {
            // The timeline's own conditions keep the codes every RPC uses for them.
            ReadWalError::Timeline(timeline) => return timeline.into(),
            ReadWalError::Request(_) | ReadWalError::BadRange { .. } => Code::InvalidArgument,
            ReadWalError::OutOfRange { .. } => Code::OutOfRange,
            ReadWalError::Io { ref source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Code::NotFound
            }
            ReadWalError::Io { .. } => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::Refusal;
    use strata_ids::{TenantId, TenantTimelineId, TimelineId};

    #[test]
    fn each_condition_has_its_code() {
        let id = TenantTimelineId {
            tenant_id: TenantId(1),
            timeline_id: TimelineId(2),
        };
        let code = |status: Status| status.code();
        assert_eq!(code(TimelineError::NotFound(id).into()), Code::NotFound);
        assert_eq!(
            code(TimelineError::AlreadyExists(id).into()),
            Code::AlreadyExists
        );
        assert_eq!(code(TimelineError::ShuttingDown.into()), Code::Unavailable);
        let refusal = Refusal::SystemIdMismatch { ours: 1, theirs: 2 };
        let status: Status = ProposeError::Refused(refusal).into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("system id"),
            "{}",
            status.message()
        );
        let status: Status = ProposeError::Failed("disk full: cannot write".into()).into();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("disk full"));
        assert_eq!(
            code(ConnectionError::NoGreeting.into()),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(invalid_argument(ConvertError::Empty("ProposerMessage"))),
            Code::InvalidArgument
        );
    }
}
