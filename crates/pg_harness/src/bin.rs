//! Locating the PostgreSQL 15 installation and running its tools as the right OS user.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{io_err, HarnessError, Result};
use crate::exec;

/// Where Debian's `postgresql-15` package installs its binaries.
pub const DEFAULT_BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// Environment variable that overrides [`DEFAULT_BINDIR`].
pub const BINDIR_ENV: &str = "STRATA_PG_BINDIR";

/// OS user PostgreSQL runs as when the harness itself runs as root.
pub const SERVER_OS_USER: &str = "postgres";

/// Major version the harness (and Strata) is written against.
pub const REQUIRED_MAJOR_VERSION: u32 = 15;

/// Time limit for `postgres --version`.
const VERSION_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// libpq/PostgreSQL environment variables that would silently redirect or alter the tools the
/// harness runs (another host, port, database, user, options, data directory...). They are
/// removed from every command so that a developer's shell setup cannot leak into tests.
const SCRUBBED_ENV: &[&str] = &[
    "PGAPPNAME",
    "PGCHANNELBINDING",
    "PGCLIENTENCODING",
    "PGCONNECT_TIMEOUT",
    "PGDATA",
    "PGDATABASE",
    "PGDATESTYLE",
    "PGGSSENCMODE",
    "PGHOST",
    "PGHOSTADDR",
    "PGOPTIONS",
    "PGPASSFILE",
    "PGPASSWORD",
    "PGPORT",
    "PGREQUIRESSL",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGTARGETSESSIONATTRS",
    "PGTZ",
    "PGUSER",
    "PSQLRC",
];

/// The unprivileged OS account that PostgreSQL processes run as when we are root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUser {
    /// Login name (always [`SERVER_OS_USER`]).
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Numeric primary group id.
    pub gid: u32,
    /// Home directory (used as `HOME` for the tools).
    pub home: PathBuf,
}

/// A located, version-checked PostgreSQL 15 installation.
///
/// Knows whether tools must drop privileges: PostgreSQL refuses to run as root, so when the
/// harness runs as root (as CI does) every tool is started as [`SERVER_OS_USER`] instead.
#[derive(Debug, Clone)]
pub struct PgBin {
    bindir: PathBuf,
    version: String,
    server_user: Option<ServerUser>,
}

impl PgBin {
    /// Finds the installation in `$STRATA_PG_BINDIR`, or else in [`DEFAULT_BINDIR`].
    pub fn locate() -> Result<PgBin> {
        let bindir = std::env::var_os(BINDIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINDIR));
        PgBin::at(bindir)
    }

    /// Uses the installation in `bindir`, checking that `postgres --version` reports 15.x.
    pub fn at(bindir: impl Into<PathBuf>) -> Result<PgBin> {
        let bindir = bindir.into();
        let postgres = bindir.join("postgres");
        if !postgres.is_file() {
            return Err(HarnessError::NotInstalled {
                reason: format!("{} does not exist", postgres.display()),
                bindir,
            });
        }
        let server_user = if effective_uid_is_root()? {
            Some(lookup_server_user(SERVER_OS_USER)?)
        } else {
            None
        };
        let mut bin = PgBin {
            bindir,
            version: String::new(),
            server_user,
        };
        let mut cmd = bin.command("postgres");
        cmd.arg("--version");
        let out = exec::run_ok(&mut cmd, None, VERSION_CHECK_TIMEOUT).map_err(|e| {
            HarnessError::NotInstalled {
                bindir: bin.bindir.clone(),
                reason: format!("`postgres --version` failed: {e}"),
            }
        })?;
        let line = out.stdout.trim().to_string();
        if parse_major_version(&line) != Some(REQUIRED_MAJOR_VERSION) {
            return Err(HarnessError::WrongVersion {
                bindir: bin.bindir,
                found: line,
            });
        }
        bin.version = line;
        Ok(bin)
    }

    /// The directory holding the binaries.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The `postgres --version` line, e.g. `postgres (PostgreSQL) 15.8 (Debian 15.8-1)`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Full path of a tool such as `"pg_waldump"`.
    pub fn path(&self, tool: &str) -> PathBuf {
        self.bindir.join(tool)
    }

    /// The OS user tools run as, or `None` when they run as the current (non-root) user.
    pub fn server_user(&self) -> Option<&ServerUser> {
        self.server_user.as_ref()
    }

    /// A [`Command`] for `tool` that is safe to run in both root and non-root environments:
    /// when we are root it runs as [`SERVER_OS_USER`] (uid, gid, `HOME`, `USER`), and
    /// libpq environment variables (`PGHOST`, `PGPORT`, `PGDATA`, ...) are removed so the
    /// caller's shell cannot redirect it. `LC_ALL=C` makes messages predictable.
    ///
    /// The working directory is inherited; when running as root, use absolute paths that the
    /// server user can read (see [`PgBin::chown_to_server_user`]).
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.path(tool));
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        cmd.env("LC_ALL", "C");
        if let Some(user) = &self.server_user {
            // std also clears supplementary groups when a root process sets a uid.
            cmd.uid(user.uid)
                .gid(user.gid)
                .env("HOME", &user.home)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        }
        cmd
    }

    /// `psql` set up for scripts against `connstr`: no psqlrc, quiet, unaligned tuples
    /// only, stopping at the first error. The caller adds `-c SQL` or `-f -`.
    pub fn psql(&self, connstr: &str) -> Command {
        let mut cmd = self.command("psql");
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            connstr,
        ]);
        cmd
    }

    /// Gives `path` (not recursively) to the server user so PostgreSQL can write it; a no-op
    /// when not running as root. Use it for directories the server must write into, e.g. a WAL
    /// archive, or for files a test writes into a stopped server's data directory.
    pub fn chown_to_server_user(&self, path: &Path) -> Result<()> {
        if let Some(user) = &self.server_user {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(io_err(
                format!("cannot chown {} to {}", path.display(), user.name),
            ))?;
        }
        Ok(())
    }

    /// Fails with a clear message if the server user cannot reach `dir` (every ancestor must be
    /// searchable by it), instead of letting initdb fail with a bare "Permission denied".
    pub(crate) fn check_reachable(&self, dir: &Path) -> Result<()> {
        let Some(user) = &self.server_user else {
            return Ok(());
        };
        for ancestor in dir.ancestors() {
            let meta = fs::metadata(ancestor)
                .map_err(io_err(format!("cannot stat {}", ancestor.display())))?;
            let mode = meta.mode();
            let searchable = if meta.uid() == user.uid {
                mode & 0o100 != 0
            } else if meta.gid() == user.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !searchable {
                return Err(HarnessError::InvalidConfig(format!(
                    "{} (mode {:o}) is not searchable by the OS user {:?} that PostgreSQL runs as \
                     under root; use a parent directory such as /tmp (set TMPDIR or \
                     PgConfig::parent_dir)",
                    ancestor.display(),
                    mode & 0o7777,
                    user.name
                )));
            }
        }
        Ok(())
    }
}

/// Extracts the major version from a `postgres --version` line.
fn parse_major_version(line: &str) -> Option<u32> {
    let rest = line.split("(PostgreSQL)").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Whether this process runs with effective uid 0, determined without `unsafe`: from the
/// `Uid:` line of `/proc/self/status` (real, effective, saved, fs), or, where `/proc` is not
/// available, from the owner of a freshly created temporary file.
fn effective_uid_is_root() -> Result<bool> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(euid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|id| id.parse::<u32>().ok())
        {
            return Ok(euid == 0);
        }
    }
    let probe = tempfile::NamedTempFile::new().map_err(io_err(
        "cannot create a temporary file to determine the effective uid",
    ))?;
    let meta = probe.as_file().metadata().map_err(io_err(
        "cannot stat a temporary file to determine the effective uid",
    ))?;
    Ok(meta.uid() == 0)
}

/// Looks `name` up in `/etc/passwd`.
fn lookup_server_user(name: &str) -> Result<ServerUser> {
    let err = |reason: String| HarnessError::ServerUser {
        user: name.to_string(),
        reason,
    };
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| err(format!("/etc/passwd cannot be read: {e}")))?;
    parse_passwd(&passwd, name).ok_or_else(|| err("it has no valid entry in /etc/passwd".into()))
}

fn parse_passwd(passwd: &str, name: &str) -> Option<ServerUser> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        let _gecos = fields.next()?;
        let home = PathBuf::from(fields.next()?);
        Some(ServerUser {
            name: name.to_string(),
            uid,
            gid,
            home,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_version_parsing() {
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 15.8 (Debian 15.8-1.pgdg120+1)"),
            Some(15)
        );
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 16beta1"),
            Some(16)
        );
        assert_eq!(parse_major_version("postgres 15.2"), None);
    }

    #[test]
    fn passwd_parsing() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        let user = parse_passwd(passwd, "postgres").expect("entry");
        assert_eq!((user.uid, user.gid), (101, 104));
        assert_eq!(user.home, PathBuf::from("/var/lib/postgresql"));
        assert!(parse_passwd(passwd, "nobody").is_none());
        assert!(parse_passwd("postgres:x:abc:1:::", "postgres").is_none());
    }
}
