//! Generated code of `proto/*.proto`.
