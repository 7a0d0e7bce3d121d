//! The Strata safekeeper: a Paxos acceptor that stores WAL durably. Built in its own issue; this crate only fixes its place in the workspace.
