//! Proposer unit tests.
