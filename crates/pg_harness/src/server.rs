//! A running PostgreSQL server in a temporary directory.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::bin::PgBin;
use crate::config::{conf_quote, PgConfig};
use crate::error::{io_err, HarnessError, Result};
use crate::exec;
use crate::parse_lsn;

/// Database superuser created by `initdb -U`, whatever the OS user is.
pub const SUPERUSER: &str = "postgres";

/// Time limit for `initdb`.
const INITDB_TIMEOUT: Duration = Duration::from_secs(300);

/// How long `pg_ctl stop` waits for the server to exit (a fast shutdown writes a checkpoint).
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// Time limit for quick `pg_ctl` actions (`status`, `kill`).
const PG_CTL_QUICK_TIMEOUT: Duration = Duration::from_secs(30);

/// Extra time granted to `pg_ctl` itself beyond the `-t` it is told to wait.
const PG_CTL_SLACK: Duration = Duration::from_secs(30);

/// How many fresh ports are tried when the chosen one turns out to be taken. A port is found
/// free by binding 127.0.0.1:0, but someone else may grab it before the server binds it.
const MAX_START_ATTEMPTS: u32 = 5;

/// libpq connection timeout for psql, so an unreachable server fails fast.
const CONNECT_TIMEOUT_SECS: u32 = 10;

/// Lines of server log quoted when start fails.
const LOG_TAIL_LINES: usize = 40;

/// Longest script text quoted in an SQL error.
const MAX_SCRIPT_IN_ERROR: usize = 2000;

/// Unix socket paths (`sun_path`) hold at most 107 bytes plus the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Name of the file (inside the data directory) holding `port = N`, included from
/// `postgresql.conf` so a retry on another port rewrites just this file.
const PORT_CONF: &str = "pg_harness_port.conf";

/// A real PostgreSQL 15 server in its own temporary directory, listening on 127.0.0.1 on a
/// free port and on a Unix socket in that directory.
///
/// Layout of [`PgServer::base_dir`]: `data/` (the cluster), `sock/` (the Unix socket),
/// `server.log`. Dropping the value stops the server (immediate mode: nothing of it is kept)
/// and deletes the directory. If the test process is killed instead, the orphaned postmaster
/// notices its deleted lock file and shuts itself down within about a minute.
///
/// SQL methods take `&self`, so one server can be queried from several threads at once.
#[derive(Debug)]
pub struct PgServer {
    bin: PgBin,
    config: PgConfig,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    running: bool,
    /// Declared last: dropped (deleted) after `Drop::drop` has stopped the server.
    dir: TempDir,
}

/// Where a new server's data directory comes from.
enum DataSource<'a> {
    Initdb,
    Populate(PopulateFn<'a>),
}

/// Fills an empty data directory (see [`PgServer::start_from`]).
type PopulateFn<'a> =
    Box<dyn FnOnce(&Path) -> std::result::Result<(), Box<dyn std::error::Error>> + 'a>;

impl PgServer {
    /// Creates a fresh cluster with `initdb` and starts it; see [`PgConfig`] for the options.
    pub fn start(config: PgConfig) -> Result<PgServer> {
        PgServer::create(config, DataSource::Initdb)
    }

    /// Starts a server on a data directory that `populate` fills (for example by
    /// unpacking a basebackup) instead of `initdb`. `populate` gets the empty data
    /// directory (mode 0700); everything in it is then given to the server user. The
    /// harness's settings and `config`'s settings are appended to the `postgresql.conf`
    /// that `populate` wrote. `config`'s initdb options do not apply.
    pub fn start_from(
        config: PgConfig,
        populate: impl FnOnce(&Path) -> std::result::Result<(), Box<dyn std::error::Error>>,
    ) -> Result<PgServer> {
        PgServer::create(config, DataSource::Populate(Box::new(populate)))
    }

    fn create(config: PgConfig, source: DataSource<'_>) -> Result<PgServer> {
        config.validate()?;
        let bin = PgBin::locate()?;

        let parent = config.parent_dir.clone().unwrap_or_else(std::env::temp_dir);
        bin.check_reachable(&parent)?;
        let dir = tempfile::Builder::new()
            .prefix("strata-pg-")
            .tempdir_in(&parent)
            .map_err(io_err(format!(
                "cannot create a temporary directory in {}",
                parent.display()
            )))?;
        // TempDir is created 0700; the server user (under root) must be able to enter it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("cannot chmod {}", dir.path().display())))?;

        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        let log_file = dir.path().join("server.log");
        let socket_len = socket_dir
            .join(".s.PGSQL.65535.lock")
            .as_os_str()
            .as_bytes()
            .len();
        if socket_len > MAX_SOCKET_PATH {
            return Err(HarnessError::InvalidConfig(format!(
                "Unix socket paths under {} would be {socket_len} bytes, more than the \
                 {MAX_SOCKET_PATH} allowed; use a shorter TMPDIR or PgConfig::parent_dir",
                socket_dir.display()
            )));
        }
        for sub in [&data_dir, &socket_dir] {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(sub)
                .map_err(io_err(format!("cannot create {}", sub.display())))?;
            bin.chown_to_server_user(sub)?;
        }
        OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&log_file)
            .map_err(io_err(format!("cannot create {}", log_file.display())))?;
        bin.chown_to_server_user(&log_file)?;

        let mut server = PgServer {
            bin,
            config,
            data_dir,
            socket_dir,
            log_file,
            port: 0,
            running: false,
            dir,
        };
        match source {
            DataSource::Initdb => server.initdb()?,
            DataSource::Populate(populate) => {
                populate(&server.data_dir).map_err(|e| {
                    HarnessError::InvalidConfig(format!(
                        "populating {}: {e}",
                        server.data_dir.display()
                    ))
                })?;
                server.chown_tree_to_server_user(&server.data_dir.clone())?;
            }
        }
        server.write_settings()?;
        server.start_server()?;
        Ok(server)
    }

    /// Gives `dir` and everything below it to the server user (no-op unless root).
    fn chown_tree_to_server_user(&self, dir: &Path) -> Result<()> {
        self.bin.chown_to_server_user(dir)?;
        let entries =
            fs::read_dir(dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
        for entry in entries {
            let path = entry
                .map_err(io_err(format!("cannot list {}", dir.display())))?
                .path();
            let is_dir = fs::symlink_metadata(&path)
                .map_err(io_err(format!("cannot stat {}", path.display())))?
                .is_dir();
            if is_dir {
                self.chown_tree_to_server_user(&path)?;
            } else {
                self.bin.chown_to_server_user(&path)?;
            }
        }
        Ok(())
    }

    fn initdb(&self) -> Result<()> {
        let mut cmd = self.tool("initdb");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "--locale=C",
            "--encoding=UTF8",
        ]);
        if self.config.initdb_no_sync {
            cmd.arg("--no-sync");
        }
        if self.config.data_checksums {
            cmd.arg("--data-checksums");
        }
        if let Some(mb) = self.config.wal_segment_size_mb {
            cmd.arg(format!("--wal-segsize={mb}"));
        }
        cmd.args(&self.config.initdb_args);
        exec::run_ok(&mut cmd, None, INITDB_TIMEOUT)?;
        Ok(())
    }

    /// Appends the harness's and the caller's settings to `postgresql.conf`.
    fn write_settings(&self) -> Result<()> {
        let mut text = String::from("\n# ---- added by pg_harness ----\n");
        let socket_dir = self.socket_dir.to_string_lossy();
        let _ = writeln!(text, "listen_addresses = '127.0.0.1'");
        let _ = writeln!(
            text,
            "unix_socket_directories = {}",
            conf_quote(&socket_dir)
        );
        let _ = writeln!(text, "include = {}", conf_quote(PORT_CONF));
        for (name, value) in &self.config.settings {
            let _ = writeln!(text, "{name} = {}", conf_quote(value));
        }
        let conf = self.data_dir.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io_err(format!("cannot append to {}", conf.display())))
    }

    fn write_port(&mut self, port: u16) -> Result<()> {
        let path = self.data_dir.join(PORT_CONF);
        fs::write(&path, format!("port = {port}\n"))
            .map_err(io_err(format!("cannot write {}", path.display())))?;
        self.bin.chown_to_server_user(&path)?;
        self.port = port;
        Ok(())
    }

    /// Starts the (stopped) server, keeping its port if that is still free.
    fn start_server(&mut self) -> Result<()> {
        if self.port == 0 {
            self.write_port(free_port()?)?;
        }
        let mut attempt = 1;
        loop {
            let log_offset = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
            let timeout = self.config.start_timeout;
            let mut cmd = self.pg_ctl("start");
            cmd.arg("-l")
                .arg(&self.log_file)
                .arg("-t")
                .arg(timeout.as_secs().to_string());
            let err = match exec::run_ok(&mut cmd, None, timeout + PG_CTL_SLACK) {
                Ok(_) => {
                    self.running = true;
                    return Ok(());
                }
                Err(err) => err,
            };
            let log = self.log_since(log_offset);
            let port_taken = log.contains("Address already in use")
                || log.contains("could not create any TCP/IP sockets");
            if port_taken && attempt < MAX_START_ATTEMPTS {
                attempt += 1;
                self.write_port(free_port()?)?;
                continue;
            }
            // pg_ctl may have given up on a server that is still starting: do not leak it.
            let _ = self.stop_with_mode("immediate");
            self.running = false;
            return Err(HarnessError::StartFailed {
                data_dir: self.data_dir.clone(),
                attempts: attempt,
                cause: Box::new(err),
                log_tail: tail_lines(&log, LOG_TAIL_LINES),
            });
        }
    }

    fn log_since(&self, offset: u64) -> String {
        match fs::read(&self.log_file) {
            Ok(bytes) => {
                let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
                String::from_utf8_lossy(&bytes[start..]).into_owned()
            }
            Err(e) => format!("<cannot read {}: {e}>", self.log_file.display()),
        }
    }

    /// A command for a PostgreSQL tool, run as the right user from the server's directory.
    fn tool(&self, name: &str) -> Command {
        let mut cmd = self.bin.command(name);
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn pg_ctl(&self, action: &str) -> Command {
        let mut cmd = self.tool("pg_ctl");
        cmd.arg(action).arg("-D").arg(&self.data_dir).arg("-s");
        if action != "status" {
            cmd.arg("-w");
        }
        cmd
    }

    fn stop_with_mode(&mut self, mode: &str) -> Result<()> {
        let mut cmd = self.pg_ctl("stop");
        cmd.args(["-m", mode, "-t"])
            .arg(STOP_TIMEOUT.as_secs().to_string());
        let result = exec::run_ok(&mut cmd, None, STOP_TIMEOUT + PG_CTL_SLACK);
        if result.is_ok() || !self.is_running() {
            self.running = false;
        }
        result.map(|_| ())
    }

    /// Stops the server with a fast shutdown (active sessions are cut, a shutdown checkpoint
    /// is written) and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        self.stop_with_mode("fast")
    }

    /// Stops the server immediately, without a checkpoint, like a crash: the next
    /// [`PgServer::restart`] performs crash recovery from the WAL.
    pub fn stop_immediate(&mut self) -> Result<()> {
        self.stop_with_mode("immediate")
    }

    /// Starts the server again, first stopping it (fast) if it is running (a server that died
    /// on its own is simply started, with crash recovery). The data directory
    /// is kept; the port is kept unless another process took it meanwhile (then
    /// [`PgServer::port`] and [`PgServer::connstr`] change).
    pub fn restart(&mut self) -> Result<()> {
        if self.running {
            if let Err(err) = self.stop() {
                // A server that already died (crashed, killed) just needs starting.
                if self.running {
                    return Err(err);
                }
            }
        }
        self.start_server()
    }

    /// Whether the postmaster is alive, as reported by `pg_ctl status` (so a crashed server is
    /// seen as stopped even if the harness started it).
    pub fn is_running(&self) -> bool {
        let mut cmd = self.pg_ctl("status");
        matches!(exec::run(&mut cmd, None, PG_CTL_QUICK_TIMEOUT), Ok(f) if f.status.success())
    }

    /// Runs an SQL script in the `postgres` database; see [`PgServer::sql_db`].
    pub fn sql(&self, script: &str) -> Result<String> {
        self.sql_db("postgres", script)
    }

    /// Runs an SQL script (one or more `;`-separated statements, fed to `psql` on stdin) in
    /// database `db` as the superuser and returns what the queries printed: unaligned,
    /// tuples only, columns separated by `|`, one row per line, without the trailing newline.
    /// Execution stops at the first error, which is returned as [`HarnessError::Sql`] carrying
    /// psql's stderr (the server's error message). Each statement runs in its own transaction
    /// unless the script says `BEGIN`/`COMMIT`.
    pub fn sql_db(&self, db: &str, script: &str) -> Result<String> {
        if !self.running {
            return Err(HarnessError::NotRunning(self.data_dir.clone()));
        }
        let mut cmd = self.tool("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db, "-f", "-"])
            .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_SECS.to_string());
        let out = exec::run(&mut cmd, Some(script.as_bytes()), self.config.sql_timeout)?;
        if !out.status.success() {
            return Err(HarnessError::Sql {
                db: db.to_string(),
                script: truncate(script, MAX_SCRIPT_IN_ERROR),
                status: out.status,
                stderr: out.stderr.trim_end().to_string(),
            });
        }
        Ok(out.stdout.trim_end_matches(['\n', '\r']).to_string())
    }

    /// `pg_current_wal_lsn()`, e.g. `"0/16D4F30"` (see [`crate::parse_lsn`]).
    pub fn current_wal_lsn(&self) -> Result<String> {
        let lsn = self.sql("SELECT pg_current_wal_lsn()")?;
        parse_lsn(&lsn)?;
        Ok(lsn)
    }

    /// Closes the current WAL segment (`pg_switch_wal()`) and returns the LSN just past the
    /// switch record. PostgreSQL does nothing if no WAL was written since the last switch.
    pub fn switch_wal(&self) -> Result<String> {
        let lsn = self.sql("SELECT pg_switch_wal()")?;
        parse_lsn(&lsn)?;
        Ok(lsn)
    }

    /// Runs `CHECKPOINT`.
    pub fn checkpoint(&self) -> Result<()> {
        self.sql("CHECKPOINT").map(|_| ())
    }

    /// The WAL segment files in `pg_wal` (names of exactly 24 hex digits, so no `.partial`,
    /// `.history` or `archive_status`), sorted by name, which is WAL order.
    pub fn wal_segments(&self) -> Result<Vec<PathBuf>> {
        let wal_dir = self.wal_dir();
        let entries =
            fs::read_dir(&wal_dir).map_err(io_err(format!("cannot list {}", wal_dir.display())))?;
        let mut segments = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(format!("cannot list {}", wal_dir.display())))?;
            let name = entry.file_name();
            let is_segment_name =
                name.len() == 24 && name.as_bytes().iter().all(u8::is_ascii_hexdigit);
            if is_segment_name && entry.file_type().is_ok_and(|t| t.is_file()) {
                segments.push(entry.path());
            }
        }
        segments.sort();
        Ok(segments)
    }

    /// Everything the server has written to its log file so far.
    pub fn log_contents(&self) -> Result<String> {
        let bytes = fs::read(&self.log_file)
            .map_err(io_err(format!("cannot read {}", self.log_file.display())))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// TCP port on 127.0.0.1 (also the number in the Unix socket's name).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the Unix socket (what libpq calls the host for socket connections).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The WAL directory, `<data_dir>/pg_wal`.
    pub fn wal_dir(&self) -> PathBuf {
        self.data_dir.join("pg_wal")
    }

    /// The server log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The temporary directory holding data, socket and log; deleted on drop.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    /// libpq URI for a TCP connection as the superuser:
    /// `postgresql://postgres@127.0.0.1:PORT/postgres`.
    pub fn connstr(&self) -> String {
        format!("postgresql://{SUPERUSER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The installation, for running other tools (`pg_waldump`, `pgbench`, ...) as the right
    /// user via [`PgBin::command`].
    pub fn bin(&self) -> &PgBin {
        &self.bin
    }

    /// The configuration the server was created with.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        if self.stop_with_mode("immediate").is_ok() {
            return;
        }
        // Last resort, so no server outlives its (soon deleted) directory: SIGKILL the
        // postmaster named in the lock file; its children exit when they see it gone.
        let pid = fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::trim).map(str::to_string));
        if let Some(pid) = pid.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
            let mut cmd = self.tool("pg_ctl");
            cmd.args(["kill", "KILL", &pid]);
            let _ = exec::run(&mut cmd, None, PG_CTL_QUICK_TIMEOUT);
        }
    }
}

/// A currently unused TCP port on 127.0.0.1 for the server.
fn free_port() -> Result<u16> {
    crate::port::unused_port()
        .ok_or_else(|| HarnessError::InvalidConfig("no unused TCP port found on 127.0.0.1".into()))
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... [{} more bytes]", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_truncation() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
        assert_eq!(truncate("héllo", 2), "h... [5 more bytes]");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
