//! What kind of cluster to create and how to run it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{HarnessError, Result};

/// Default time limit for one `psql` script (see [`PgConfig::sql_timeout`]).
pub const DEFAULT_SQL_TIMEOUT: Duration = Duration::from_secs(600);

/// Default time `pg_ctl start` may wait for the server to accept connections, including crash
/// recovery after [`crate::PgServer::stop_immediate`] (see [`PgConfig::start_timeout`]).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Settings the harness manages itself; overriding them would break connecting to the server.
const RESERVED_SETTINGS: &[&str] = &["port", "unix_socket_directories"];

/// Builder describing a cluster for [`crate::PgServer::start`].
///
/// The defaults match a plain `initdb` (no data checksums, 16 MiB WAL segments, `fsync` on),
/// so tests exercise the same on-disk formats as production unless they ask otherwise.
#[derive(Debug, Clone)]
pub struct PgConfig {
    pub(crate) data_checksums: bool,
    pub(crate) wal_segment_size_mb: Option<u32>,
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) initdb_args: Vec<OsString>,
    pub(crate) initdb_no_sync: bool,
    pub(crate) parent_dir: Option<PathBuf>,
    pub(crate) sql_timeout: Duration,
    pub(crate) start_timeout: Duration,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            data_checksums: false,
            wal_segment_size_mb: None,
            settings: Vec::new(),
            initdb_args: Vec::new(),
            initdb_no_sync: true,
            parent_dir: None,
            sql_timeout: DEFAULT_SQL_TIMEOUT,
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }
}

impl PgConfig {
    /// Same as [`PgConfig::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Enables page checksums (`initdb --data-checksums`). Off by default, like `initdb`.
    pub fn data_checksums(mut self, on: bool) -> Self {
        self.data_checksums = on;
        self
    }

    /// WAL segment size in MiB (`initdb --wal-segsize`, a power of two from 1 to 1024).
    /// Small segments make tests that need many segments cheap.
    pub fn wal_segment_size_mb(mut self, mb: u32) -> Self {
        self.wal_segment_size_mb = Some(mb);
        self
    }

    /// Adds `name = 'value'` to `postgresql.conf` (later settings win). The value is quoted
    /// for you, so pass it bare: `setting("wal_compression", "lz4")`. `port` and
    /// `unix_socket_directories` are reserved because the harness chooses them.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Passes an extra argument to `initdb` (after the harness's own arguments).
    pub fn initdb_arg(mut self, arg: impl Into<OsString>) -> Self {
        self.initdb_args.push(arg.into());
        self
    }

    /// Whether `initdb` runs with `--no-sync` (default `true`). Skipping the final fsync of a
    /// fresh cluster saves seconds per test and only matters if the machine crashes, which
    /// would lose a temporary directory anyway. The running server still fsyncs normally.
    pub fn initdb_no_sync(mut self, no_sync: bool) -> Self {
        self.initdb_no_sync = no_sync;
        self
    }

    /// Directory in which the server's temporary directory is created (default: the system
    /// temp dir, honouring `TMPDIR`). Under root it must be searchable by the `postgres` user,
    /// and it must be short enough for a Unix socket path (about 80 bytes).
    pub fn parent_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.parent_dir = Some(dir.into());
        self
    }

    /// Time limit for each [`crate::PgServer::sql`] call (default [`DEFAULT_SQL_TIMEOUT`]);
    /// psql is killed when it is exceeded so a hung query cannot hang the test suite.
    pub fn sql_timeout(mut self, timeout: Duration) -> Self {
        self.sql_timeout = timeout;
        self
    }

    /// Time limit for the server to start accepting connections (default
    /// [`DEFAULT_START_TIMEOUT`]); raise it for tests with long crash recovery.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Checks the settings can be written to `postgresql.conf` unambiguously.
    pub(crate) fn validate(&self) -> Result<()> {
        for (name, value) in &self.settings {
            let valid_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !valid_name {
                return Err(HarnessError::InvalidConfig(format!(
                    "setting name {name:?} is not a valid PostgreSQL parameter name"
                )));
            }
            if RESERVED_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(HarnessError::InvalidConfig(format!(
                    "setting {name:?} is chosen by pg_harness and cannot be overridden"
                )));
            }
            if value.contains(['\n', '\r', '\0']) {
                return Err(HarnessError::InvalidConfig(format!(
                    "value of setting {name:?} contains a line break or NUL: {value:?}"
                )));
            }
        }
        if self.start_timeout.as_secs() == 0 {
            return Err(HarnessError::InvalidConfig(
                "start_timeout must be at least one second".into(),
            ));
        }
        Ok(())
    }
}

/// Quotes `value` as a `postgresql.conf` string literal.
pub(crate) fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(conf_quote("lz4"), "'lz4'");
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(conf_quote(r"a\b"), r"'a\\b'");
    }

    #[test]
    fn validation() {
        assert!(PgConfig::new()
            .setting("wal_level", "logical")
            .validate()
            .is_ok());
        assert!(PgConfig::new()
            .setting("my.ext_opt", "1")
            .validate()
            .is_ok());
        assert!(PgConfig::new().setting("port", "5432").validate().is_err());
        assert!(PgConfig::new().setting("a = b", "1").validate().is_err());
        assert!(PgConfig::new().setting("x", "1\ny = 2").validate().is_err());
    }
}
