//! PostgreSQL's WAL and on-disk formats, as written by PostgreSQL 15.
//!
//! Everything here decodes untrusted bytes: no function panics on any input; malformed
//! input is a typed error. Version-specific layouts live in modules named for what they
//! hold; PostgreSQL 16 and 17 layouts join beside them when supported.

pub mod checksum;
pub mod controlfile;
pub mod decoder;
pub mod image;
pub mod lsn;
pub mod page;
pub mod page_header;
pub mod pglz;
pub mod record;
pub mod reltag;
pub mod rmgr;

pub use lsn::{Lsn, WalSegmentSize};
pub use reltag::{BlockNumber, ForkNumber, Oid, RelFileNode, RelTag};

/// Size of a relation data page (`BLCKSZ`).
pub const BLCKSZ: usize = 8192;
