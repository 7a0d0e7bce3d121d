//! The Strata pageserver: every page at every LSN. Built in its own issue; this crate only fixes its place in the workspace.
