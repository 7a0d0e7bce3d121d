//! Code generated from `proto/*.proto`: messages, tonic clients and servers. This is the
//! only crate that holds generated code; daemons convert to and from their domain types
//! at their edges (for the safekeeper, `safekeeper::grpc::convert`), so generated types
//! never reach core logic.

/// `proto/safekeeper.proto`: the consensus stream and timeline administration.
pub mod safekeeper {
    tonic::include_proto!("strata.safekeeper.v1");
}
