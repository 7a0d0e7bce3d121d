//! How `compute_ctl` is the compute's synchronous standby: the physical-replication
//! client shared with the pageserver ([`pg_replication`]). `compute_ctl` reports the
//! quorum commit LSN as write, flush and apply position, which is what releases
//! PostgreSQL's waiting commits.

pub use pg_replication::{
    IdentifySystem, ReplicationConnection, ReplicationError, StreamEvent, WalStream,
};
