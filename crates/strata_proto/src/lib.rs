//! Code generated from `proto/*.proto`: messages, tonic clients and servers. This is the
//! only crate that holds generated code; programs convert to and from their domain types
//! at their edges, so generated types never reach core logic. The consensus protocol's
//! messages, which both ends of a `Propose` stream speak, are mapped once in
//! [`convert`].

/// `proto/safekeeper.proto`: the consensus stream and timeline administration.
pub mod safekeeper {
    tonic::include_proto!("strata.safekeeper.v1");
}

pub mod convert;

/// `proto/pageserver.proto`: pages, basebackups and timeline administration.
pub mod pageserver {
    tonic::include_proto!("strata.pageserver.v1");
}
