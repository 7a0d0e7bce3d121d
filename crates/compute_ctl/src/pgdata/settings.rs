//! The PostgreSQL settings a compute runs with, which `compute_ctl` owns
//! (`docs/compute.md` says why each one).
//!
//! They go to two places. An included file, `strata_compute.conf`, makes them visible
//! to an operator and applies them to a PostgreSQL started by hand. And the same
//! settings go on the postmaster's command line (`pg_ctl -o "-c name=value"`), which
//! outranks every configuration file: `ALTER SYSTEM` writes `postgresql.auto.conf`,
//! which overrides included files but not the command line, so nobody can switch
//! `synchronous_standby_names` off with SQL while `compute_ctl` runs the compute.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The role and the `application_name` of `compute_ctl`'s replication connection; the
/// physical replication slot has the same name.
pub const PROPOSER_NAME: &str = "strata_proposer";

/// The included settings file, inside the data directory.
pub const SETTINGS_FILE: &str = "strata_compute.conf";

/// The line `compute_ctl` appends to `postgresql.conf` once.
const INCLUDE_LINE: &str = "include 'strata_compute.conf'  # compute settings owned by compute_ctl";

/// Marks the block `compute_ctl` puts at the top of `pg_hba.conf` (the first matching
/// line wins there).
const HBA_BEGIN: &str = "# BEGIN strata compute_ctl";
const HBA_END: &str = "# END strata compute_ctl";

/// `max_prepared_transactions` of every compute (a standby must have at least this).
pub const MAX_PREPARED_TRANSACTIONS: &str = "10";

/// The listen address: a compute serves local clients and its own agent.
pub const LISTEN_HOST: &str = "127.0.0.1";

#[derive(Debug, thiserror::Error)]
#[error("writing the compute settings in {path}: {source}")]
pub struct SettingsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Every resource manager PostgreSQL 15's `wal_consistency_checking` accepts (those
/// with a page mask: `rmgrlist.h`), by the names that setting takes.
pub const CHECKABLE_RMGRS: &[&str] = &[
    "heap", "heap2", "btree", "hash", "gin", "gist", "sequence", "spgist", "brin", "generic",
];

/// The `wal_consistency_checking` value for a pageserver that redoes `native` itself:
/// every other resource manager's records then carry the page as it is after them
/// (`docs/compute.md`).
pub fn wal_consistency_checking(native: &[String]) -> String {
    CHECKABLE_RMGRS
        .iter()
        .filter(|name| !native.iter().any(|n| n.eq_ignore_ascii_case(name)))
        .copied()
        .collect::<Vec<_>>()
        .join(",")
}

/// The compute's settings, in order, for port `port`; `wal_consistency_checking` is set
/// when the compute has a pageserver (see [`wal_consistency_checking`]).
pub fn compute_settings(
    port: u16,
    wal_consistency_checking: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("listen_addresses", LISTEN_HOST.to_owned()),
        ("port", port.to_string()),
        // Clients and compute_ctl connect over TCP to 127.0.0.1; no socket file in a
        // directory that may not exist or be too long for a socket path.
        ("unix_socket_directories", String::new()),
        ("wal_level", "replica".to_owned()),
        ("full_page_writes", "on".to_owned()),
        ("synchronous_commit", "on".to_owned()),
        ("synchronous_standby_names", PROPOSER_NAME.to_owned()),
        ("max_wal_senders", "10".to_owned()),
        ("max_replication_slots", "10".to_owned()),
        // The slot keeps the WAL the safekeepers have not all acknowledged; this bounds
        // what a long safekeeper outage can pin on the compute's disk.
        ("max_slot_wal_keep_size", "4GB".to_owned()),
        ("wal_keep_size", "0".to_owned()),
        // Everything above the commit LSN must stay on disk for the slot to serve it;
        // an archive is not how a compute keeps its history, the safekeepers are.
        ("archive_mode", "off".to_owned()),
        // compute_ctl sends status updates every second; a walsender that hears
        // nothing for this long was left by a dead agent.
        ("wal_sender_timeout", "60s".to_owned()),
        // Two-phase commit for applications that use it: the pageserver keeps prepared
        // transactions' state, and a standby made from a basebackup needs at least the
        // compute's value, so it is fixed here rather than left to each cluster.
        (
            "max_prepared_transactions",
            MAX_PREPARED_TRANSACTIONS.to_owned(),
        ),
    ];
    if let Some(checked) = wal_consistency_checking {
        settings.push(("wal_consistency_checking", checked.to_owned()));
        // Every record of a checked resource manager carries page images: compressed,
        // they are about a third of the bytes for pgbench (lz4: 2.35x of stock WAL
        // instead of 6.3x, see ../shared/research/stock-postgres-baselines.md), at a
        // CPU cost far below zstd's.
        settings.push(("wal_compression", "lz4".to_owned()));
    }
    settings
}

/// `-c name=value` options for `pg_ctl -o`, overriding any configuration file.
pub fn command_line_options(settings: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (name, value) in settings {
        let _ = write!(out, "-c {name}={} ", shell_quote(value));
    }
    out.trim_end().to_owned()
}

/// `pg_ctl` passes `-o` through `/bin/sh`: single-quote each value.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Write `settings` to `strata_compute.conf`, include it from `postgresql.conf` (once),
/// and put the replication lines for `strata_proposer` at the top of `pg_hba.conf`
/// (once). Returns the files written, which the caller gives to the server user.
pub fn write_settings(
    pgdata: &Path,
    settings: &[(&str, String)],
) -> Result<Vec<PathBuf>, SettingsError> {
    let mut text = String::from(
        "# Written by compute_ctl at every start; edits are lost. See docs/compute.md.\n\
         # The same settings are also passed on the postmaster's command line, which\n\
         # outranks postgresql.auto.conf (ALTER SYSTEM).\n",
    );
    for (name, value) in settings {
        let _ = writeln!(text, "{name} = {}", conf_quote(value));
    }
    let settings = pgdata.join(SETTINGS_FILE);
    write_file(&settings, text.as_bytes())?;

    let conf = pgdata.join("postgresql.conf");
    let current = read(&conf)?;
    if !current.lines().any(|line| line.trim() == INCLUDE_LINE) {
        let mut updated = current;
        if !updated.ends_with('\n') {
            updated.push('\n');
        }
        updated.push_str(INCLUDE_LINE);
        updated.push('\n');
        write_file(&conf, updated.as_bytes())?;
    }

    let hba = pgdata.join("pg_hba.conf");
    let current = read(&hba)?;
    if !current.contains(HBA_BEGIN) {
        let block = format!(
            "{HBA_BEGIN}\n\
             # compute_ctl's replication connection: it is the compute's synchronous\n\
             # standby. Local connections only.\n\
             host    replication     {PROPOSER_NAME}     127.0.0.1/32    trust\n\
             {HBA_END}\n"
        );
        write_file(&hba, format!("{block}{current}").as_bytes())?;
    }
    Ok(vec![settings, conf, hba])
}

fn read(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map_err(|source| SettingsError {
        path: path.to_owned(),
        source,
    })
}

/// Written in place and synced: PostgreSQL reads these files only at start, and a torn
/// one is rewritten by the next start.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SettingsError> {
    let fail = |source| SettingsError {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_written_once_and_first_in_pg_hba() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgresql.conf"), "shared_buffers = 128MB").unwrap();
        std::fs::write(dir.path().join("pg_hba.conf"), "local all all trust\n").unwrap();
        for port in [5432, 6543] {
            write_settings(dir.path(), &compute_settings(port, Some("heap,btree"))).unwrap();
        }
        let conf = std::fs::read_to_string(dir.path().join("postgresql.conf")).unwrap();
        assert_eq!(
            conf.matches("include 'strata_compute.conf'").count(),
            1,
            "{conf}"
        );
        assert!(conf.starts_with("shared_buffers = 128MB\n"));
        let hba = std::fs::read_to_string(dir.path().join("pg_hba.conf")).unwrap();
        assert_eq!(hba.matches(HBA_BEGIN).count(), 1);
        assert!(hba.starts_with(HBA_BEGIN) && hba.ends_with("local all all trust\n"));
        let settings = std::fs::read_to_string(dir.path().join(SETTINGS_FILE)).unwrap();
        assert!(settings.contains("port = '6543'"), "{settings}");
        assert!(settings.contains("synchronous_standby_names = 'strata_proposer'"));
        assert!(settings.contains("wal_consistency_checking = 'heap,btree'"));
        assert!(settings.contains("wal_compression = 'lz4'"));
        let without = compute_settings(5432, None);
        assert!(without
            .iter()
            .all(|(n, _)| *n != "wal_consistency_checking" && *n != "wal_compression"));
    }

    #[test]
    fn natively_redone_rmgrs_are_not_checked() {
        assert_eq!(
            wal_consistency_checking(&[]),
            "heap,heap2,btree,hash,gin,gist,sequence,spgist,brin,generic"
        );
        let native = ["heap".to_owned(), "BTREE".to_owned(), "unknown".to_owned()];
        assert_eq!(
            wal_consistency_checking(&native),
            "heap2,hash,gin,gist,sequence,spgist,brin,generic"
        );
        let all: Vec<String> = CHECKABLE_RMGRS.iter().map(|s| s.to_string()).collect();
        assert_eq!(wal_consistency_checking(&all), "");
    }

    #[test]
    fn command_line_quotes_values() {
        let options = command_line_options(&[
            ("synchronous_standby_names", "strata_proposer".to_owned()),
            ("unix_socket_directories", String::new()),
            ("x", "it's".to_owned()),
        ]);
        assert_eq!(
            options,
            r"-c synchronous_standby_names='strata_proposer' -c unix_socket_directories='' -c x='it'\''s'"
        );
    }
}
