//! The daemon's configuration: a TOML file (`--config PATH`), environment variables
//! overriding its keys, and command-line flags overriding both (clap reads a flag's
//! variable when the flag is absent, so the two merge as one set of overrides).
//!
//! Every key of the file is documented in [`DEFAULT_CONFIG_TOML`], which
//! `safekeeper --print-default-config` prints. Unknown keys are an error naming the key,
//! so that a misspelt setting is noticed instead of silently taking its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_ids::NodeId;
pub use strata_logging::LogFormat;

/// What `--print-default-config` prints: every key with its default value and meaning.
/// A test checks that it parses into [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = r#"# Strata safekeeper configuration. An environment variable STRATA_SAFEKEEPER_<KEY>
# (the key in upper case, e.g. STRATA_SAFEKEEPER_DATA_DIR) overrides a key, and the
# flag of the same name (--data-dir) overrides both.

# This safekeeper's id, unique within the cluster (--id).
id = 1

# Where timelines live, one directory per timeline: <data_dir>/<tenant_id>/<timeline_id>/
# (--data-dir). The daemon also writes safekeeper.ports.json here once it has bound its
# listeners.
data_dir = "safekeeper_data"

# gRPC: the consensus protocol for proposers, and timeline administration (--listen-grpc).
# Port 0 picks a free port; the port taken is logged and written to safekeeper.ports.json.
listen_grpc = "127.0.0.1:7676"

# PostgreSQL replication protocol, for pg_receivewal, standbys and the pageserver
# (--listen-pg).
listen_pg = "127.0.0.1:5454"

# HTTP: /metrics (Prometheus) and /health (--listen-http).
listen_http = "127.0.0.1:7677"

# "text" for people, "json" (one object per line) for log collectors (--log-format).
# Which levels are logged comes from the RUST_LOG environment variable (default "info").
log_format = "text"

# WAL kept on local disk below each timeline's commit LSN, in bytes
# (--wal-retention-bytes). Absent: keep all WAL (until offload to object storage exists,
# nothing else guarantees that removed WAL can be found again).
# wal_retention_bytes = 1073741824
"#;

/// The daemon's configuration after the file and the flags are merged.
// Serialize: the effective configuration is logged at startup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub listen_grpc: SocketAddr,
    pub listen_pg: SocketAddr,
    pub listen_http: SocketAddr,
    pub log_format: LogFormat,
    pub wal_retention_bytes: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: NodeId(1),
            data_dir: PathBuf::from("safekeeper_data"),
            listen_grpc: SocketAddr::from(([127, 0, 0, 1], 7676)),
            listen_pg: SocketAddr::from(([127, 0, 0, 1], 5454)),
            listen_http: SocketAddr::from(([127, 0, 0, 1], 7677)),
            log_format: LogFormat::Text,
            wal_retention_bytes: None,
        }
    }
}

/// The keys of the file, each optional so that flags and defaults fill the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<NodeId>,
    data_dir: Option<PathBuf>,
    listen_grpc: Option<SocketAddr>,
    listen_pg: Option<SocketAddr>,
    listen_http: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    wal_retention_bytes: Option<u64>,
}

/// Command-line flags; each overrides the file key of the same name.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// This safekeeper's id, unique within the cluster.
    #[arg(long, env = "STRATA_SAFEKEEPER_ID")]
    pub id: Option<u64>,
    /// Directory holding the timelines.
    #[arg(long, env = "STRATA_SAFEKEEPER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address (HOST:PORT; port 0 picks a free port).
    #[arg(long, env = "STRATA_SAFEKEEPER_LISTEN_GRPC")]
    pub listen_grpc: Option<SocketAddr>,
    /// PostgreSQL replication protocol listen address.
    #[arg(long, env = "STRATA_SAFEKEEPER_LISTEN_PG")]
    pub listen_pg: Option<SocketAddr>,
    /// HTTP (/metrics, /health) listen address.
    #[arg(long, env = "STRATA_SAFEKEEPER_LISTEN_HTTP")]
    pub listen_http: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "STRATA_SAFEKEEPER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// WAL bytes kept below each timeline's commit LSN (default: all).
    #[arg(long, env = "STRATA_SAFEKEEPER_WAL_RETENTION_BYTES")]
    pub wal_retention_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One line (toml's own rendering quotes the file over several), naming the
    /// unknown or malformed key.
    #[error("config file {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl Config {
    /// The file at `path` (if any), then `overrides`, over the defaults.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|error| parse_error(path, &text, &error))?
            }
            None => FileConfig::default(),
        };
        Ok(Config::merge(file, overrides))
    }

    fn merge(file: FileConfig, flags: &Overrides) -> Config {
        let default = Config::default();
        Config {
            id: flags.id.map(NodeId).or(file.id).unwrap_or(default.id),
            data_dir: flags
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(default.data_dir),
            listen_grpc: flags
                .listen_grpc
                .or(file.listen_grpc)
                .unwrap_or(default.listen_grpc),
            listen_pg: flags
                .listen_pg
                .or(file.listen_pg)
                .unwrap_or(default.listen_pg),
            listen_http: flags
                .listen_http
                .or(file.listen_http)
                .unwrap_or(default.listen_http),
            log_format: flags
                .log_format
                .or(file.log_format)
                .unwrap_or(default.log_format),
            wal_retention_bytes: flags.wal_retention_bytes.or(file.wal_retention_bytes),
        }
    }
}

fn parse_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let offset = error.span().map_or(0, |span| span.start);
    let line = 1 + text
        .as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count();
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        message: error.message().replace('\n', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(Config::merge(file, &Overrides::default()))
    }

    #[test]
    fn printed_default_config_is_the_default() {
        assert_eq!(parse(DEFAULT_CONFIG_TOML).unwrap(), Config::default());
        // And every key of the struct appears in it, so the documentation is complete.
        let serialized = toml::to_string(&Config {
            wal_retention_bytes: Some(1),
            ..Config::default()
        })
        .unwrap();
        for line in serialized.lines() {
            let key = line.split(" = ").next().unwrap();
            assert!(
                DEFAULT_CONFIG_TOML.contains(&format!("{key} = ")),
                "{key} undocumented"
            );
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = parse("id = 3\nlisten_grcp = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.contains("listen_grcp"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let file: FileConfig =
            toml::from_str("id = 3\ndata_dir = \"/a\"\nlog_format = \"json\"\n").unwrap();
        let flags = Overrides {
            data_dir: Some("/b".into()),
            wal_retention_bytes: Some(5),
            ..Overrides::default()
        };
        let config = Config::merge(file, &flags);
        assert_eq!(config.id, NodeId(3));
        assert_eq!(config.data_dir, PathBuf::from("/b"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.wal_retention_bytes, Some(5));
        assert_eq!(config.listen_grpc, Config::default().listen_grpc);
    }

    #[test]
    fn file_errors_are_one_line_with_the_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sk.toml");
        std::fs::write(&path, "id = 3\nlisten_grcp = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("listen_grcp"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(parse("log_format = \"xml\"").is_err());
        assert!(parse("listen_http = \"nowhere\"").is_err());
        assert!(parse("id = -1").is_err());
    }
}
