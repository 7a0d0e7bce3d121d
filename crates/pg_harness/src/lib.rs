//! Starts and stops real PostgreSQL 15 servers for Strata's tests and local clusters.
//!
//! Every integration test needs a genuine PostgreSQL producing genuine WAL, so this crate
//! drives the stock binaries (Debian's `postgresql-15`, or `$STRATA_PG_BINDIR`): it runs
//! `initdb` in a temporary directory, starts the server on a free port with `pg_ctl`, runs SQL
//! through `psql`, and exposes the WAL directory. It works unchanged as root (as in CI) and
//! as a normal user: PostgreSQL refuses to run as root, so under root every tool is run as the
//! `postgres` OS user and the directories it needs are handed to that user.
//!
//! Every wait is bounded (see the timeout constants), so a misbehaving server fails a test
//! instead of hanging it, and errors quote the command, its stderr and the server log.
//!
//! ```no_run
//! use pg_harness::{PgConfig, PgServer};
//!
//! let server = PgServer::start(PgConfig::new().setting("wal_compression", "lz4"))?;
//! server.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1);")?;
//! assert_eq!(server.sql("SELECT count(*) FROM t")?, "1");
//! server.switch_wal()?;
//! let segments = server.wal_segments()?;
//! # let _ = segments;
//! # Ok::<(), pg_harness::HarnessError>(())
//! ```

mod bin;
mod config;
mod error;
mod exec;
mod port;
mod server;

pub use bin::{
    PgBin, ServerUser, BINDIR_ENV, DEFAULT_BINDIR, REQUIRED_MAJOR_VERSION, SERVER_OS_USER,
};
pub use config::{PgConfig, DEFAULT_SQL_TIMEOUT, DEFAULT_START_TIMEOUT};
pub use error::{HarnessError, Result};
pub use port::unused_port;
pub use server::{PgServer, SUPERUSER};

/// Parses a PostgreSQL LSN in its text form `X/Y` (two hex numbers of up to 8 digits) into a
/// 64-bit WAL position.
pub fn parse_lsn(text: &str) -> Result<u64> {
    let bad = || HarnessError::UnexpectedOutput {
        what: "an LSN (expected hex `X/Y`)".into(),
        output: text.to_string(),
    };
    let (hi, lo) = text.trim().split_once('/').ok_or_else(bad)?;
    let part = |s: &str| {
        if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u32::from_str_radix(s, 16).map_err(|_| bad())
    };
    Ok((u64::from(part(hi)?) << 32) | u64::from(part(lo)?))
}

#[cfg(test)]
mod tests {
    use super::parse_lsn;

    #[test]
    fn lsn_parsing() {
        assert_eq!(parse_lsn("0/16D4F30").ok(), Some(0x16D4F30));
        assert_eq!(parse_lsn("1/0").ok(), Some(1 << 32));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF").ok(), Some(u64::MAX));
        for bad in ["", "0", "/1", "1/", "x/1", "1/2/3", "123456789/0", "+1/0"] {
            assert!(parse_lsn(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
