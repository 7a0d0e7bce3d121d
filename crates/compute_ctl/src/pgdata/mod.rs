//! The compute's data directory: its bootstrap, the settings `compute_ctl` owns, the
//! state it remembers (`strata_compute.json`), its WAL files and its end of WAL.

pub mod archive;
pub mod bootstrap;
pub mod end_of_wal;
pub mod pg_wal;
pub mod settings;
pub mod state;
