//! How errors become gRPC statuses (the proto's header lists the codes). Caller
//! mistakes (unknown ids, LSNs out of range) only go back to the caller; failures of
//! the pageserver's own data are also logged where they are mapped.

use page_model::read::ReadError;
use tonic::Status;

use crate::timeline::WaitLsnError;
use crate::timelines::TimelinesError;

pub fn invalid_argument(error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(error.to_string())
}

pub fn from_timelines(error: TimelinesError) -> Status {
    use TimelinesError as E;
    match error {
        E::TenantNotFound(_) | E::TimelineNotFound(_) => Status::not_found(error.to_string()),
        E::AlreadyExists { .. } => Status::already_exists(error.to_string()),
        E::TooManyTimelines => Status::resource_exhausted(error.to_string()),
        E::Io { .. } | E::BadTimelineFile { .. } | E::Timeline { .. } | E::Store { .. } => {
            tracing::error!(%error, "timeline administration failed");
            Status::internal(error.to_string())
        }
    }
}

pub fn from_wait(error: WaitLsnError) -> Status {
    match error {
        WaitLsnError::Timeout { .. } => Status::deadline_exceeded(error.to_string()),
        WaitLsnError::Stopped { .. } => Status::failed_precondition(error.to_string()),
    }
}

pub fn from_read(error: ReadError) -> Status {
    match error {
        ReadError::NotFound(..) => Status::not_found(error.to_string()),
        ReadError::Corrupt(_) => {
            tracing::error!(%error, "corrupt data found by a read; not served");
            Status::data_loss(error.to_string())
        }
        ReadError::Storage(_) | ReadError::Reconstruct { .. } => {
            tracing::error!(%error, "read failed");
            Status::internal(error.to_string())
        }
    }
}
