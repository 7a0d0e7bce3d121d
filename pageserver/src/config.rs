//! The daemon's configuration: a TOML file (`--config PATH`), environment variables
//! overriding its keys, and command-line flags overriding both (clap reads a flag's
//! variable when the flag is absent, so the two merge as one set of overrides).
//!
//! Every key of the file is documented in [`DEFAULT_CONFIG_TOML`], which
//! `pageserver --print-default-config` prints. Unknown keys are an error naming the key,
//! so that a misspelt setting is noticed instead of silently taking its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_ids::NodeId;
pub use strata_logging::LogFormat;

/// What `--print-default-config` prints: every key with its default value and meaning.
/// A test checks that it parses into [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = r#"# Strata pageserver configuration. An environment variable STRATA_PAGESERVER_<KEY>
# (the key in upper case, e.g. STRATA_PAGESERVER_DATA_DIR) overrides a key, and the
# flag of the same name (--data-dir) overrides both. Tables have no variable or flag.

# Where tenants and timelines live: <data_dir>/tenants/<tenant_id>/timelines/<timeline_id>/
# (--data-dir). The daemon also writes pageserver.ports.json here once it has bound its
# listeners.
data_dir = "pageserver_data"

# gRPC: pages, basebackups, timeline administration (--listen-grpc). Port 0 picks a
# free port; the port taken is logged and written to pageserver.ports.json.
listen_grpc = "127.0.0.1:6400"

# HTTP: /metrics (Prometheus) and /health (--listen-http).
listen_http = "127.0.0.1:6401"

# "text" for people, "json" (one object per line) for log collectors (--log-format).
# Which levels are logged comes from the RUST_LOG environment variable (default "info").
log_format = "text"

# How long a read at an LSN not yet ingested waits for it before failing with
# DEADLINE_EXCEEDED, in milliseconds (--wait-lsn-timeout-ms).
wait_lsn_timeout_ms = 30000

# Size in bytes of a timeline's open (RocksDB) layer at which it is frozen into an
# immutable delta layer file (--checkpoint-distance). Small values (a few KiB) are
# allowed, for tests.
checkpoint_distance = 67108864

# Delta layers accumulated since a timeline's last image layer after which a new image
# layer (every page at the latest LSN) is written (--image-layer-after-deltas).
image_layer_after_deltas = 3

# Largest data directory tar ImportTimeline accepts, in bytes (--max-import-bytes). A
# freshly initialised PostgreSQL 15 data directory is about 40 MB.
max_import_bytes = 1073741824

# How long a WAL stream may deliver nothing, while another safekeeper reports a higher
# commit LSN, before the walreceiver switches to that one, in milliseconds
# (--wal-stall-timeout-ms).
wal_stall_timeout_ms = 10000

# How long the open layer may hold data before it is frozen into a delta layer file
# even when it has not reached checkpoint_distance, in milliseconds
# (--checkpoint-timeout-ms): it bounds how far object storage can lag behind ingest.
checkpoint_timeout_ms = 300000

# Object storage the timelines' layer files and indexes are uploaded to
# (--object-store): "file:///absolute/path" or
# "s3://bucket/prefix?endpoint=http://host:9000&region=us-east-1" (see
# docs/object-storage.md). Without it the pageserver keeps everything on local disk.
# With it, a pageserver whose data directory is empty restores every timeline it
# finds there.
# object_store = "file:///var/lib/strata/objects"

# S3 credentials (--object-store-access-key-id, --object-store-secret-access-key). When
# unset, the standard AWS chain is used (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
# ~/.aws/credentials, instance or pod metadata); prefer it, or the environment
# variables STRATA_PAGESERVER_OBJECT_STORE_*, to secrets in this file.
# object_store_access_key_id = ""
# object_store_secret_access_key = ""

# The generation of this pageserver's attachment to its tenants (--generation), if an
# external controller assigns it: never give two running pageservers the same one.
# Unset: at startup the pageserver claims, per tenant, the next generation not yet
# claimed in object storage. Every object it writes carries it, so two pageservers
# attached to one tenant never overwrite each other. Needs object_store.
# generation = 1

# Bytes of layer files kept on local disk (--disk-budget-bytes); beyond it, layer files
# already in object storage are evicted least recently read first, and downloaded
# again when read. Unset or 0: no eviction. Needs object_store.
# disk_budget_bytes = 10737418240

# The safekeepers WAL is streamed from, one table each (repeat for every safekeeper):
# id, gRPC address (for their commit LSN), PostgreSQL replication address.
# [[safekeepers]]
# id = 1
# grpc = "127.0.0.1:7676"
# pg = "127.0.0.1:5454"
"#;

/// One safekeeper the walreceiver may stream from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafekeeperConfig {
    pub id: NodeId,
    /// gRPC address (`host:port`), for `TimelineStatus`.
    pub grpc: String,
    /// PostgreSQL replication protocol address (`host:port`).
    pub pg: String,
}

/// The daemon's configuration after the file and the flags are merged.
// Serialize: the effective configuration is logged at startup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen_grpc: SocketAddr,
    pub listen_http: SocketAddr,
    pub log_format: LogFormat,
    pub wait_lsn_timeout: Duration,
    pub checkpoint_distance: u64,
    pub image_layer_after_deltas: u32,
    pub max_import_bytes: u64,
    pub wal_stall_timeout: Duration,
    pub checkpoint_timeout: Duration,
    pub object_store: Option<String>,
    pub object_store_access_key_id: Option<String>,
    #[serde(skip)]
    pub object_store_secret_access_key: Option<String>,
    pub generation: Option<u32>,
    pub disk_budget_bytes: Option<u64>,
    pub safekeepers: Vec<SafekeeperConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("pageserver_data"),
            listen_grpc: SocketAddr::from(([127, 0, 0, 1], 6400)),
            listen_http: SocketAddr::from(([127, 0, 0, 1], 6401)),
            log_format: LogFormat::Text,
            wait_lsn_timeout: Duration::from_secs(30),
            checkpoint_distance: 64 << 20,
            image_layer_after_deltas: 3,
            max_import_bytes: 1 << 30,
            wal_stall_timeout: crate::walreceiver::limits::DEFAULT_WAL_STALL_TIMEOUT,
            checkpoint_timeout: Duration::from_secs(300),
            object_store: None,
            object_store_access_key_id: None,
            object_store_secret_access_key: None,
            generation: None,
            disk_budget_bytes: None,
            safekeepers: Vec::new(),
        }
    }
}

/// The keys of the file, each optional so that flags and defaults fill the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen_grpc: Option<SocketAddr>,
    listen_http: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    wait_lsn_timeout_ms: Option<u64>,
    checkpoint_distance: Option<u64>,
    image_layer_after_deltas: Option<u32>,
    max_import_bytes: Option<u64>,
    wal_stall_timeout_ms: Option<u64>,
    checkpoint_timeout_ms: Option<u64>,
    object_store: Option<String>,
    object_store_access_key_id: Option<String>,
    object_store_secret_access_key: Option<String>,
    generation: Option<u32>,
    disk_budget_bytes: Option<u64>,
    safekeepers: Option<Vec<SafekeeperConfig>>,
}

/// Command-line flags; each overrides the file key of the same name.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Directory holding tenants and timelines.
    #[arg(long, env = "STRATA_PAGESERVER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address (HOST:PORT; port 0 picks a free port).
    #[arg(long, env = "STRATA_PAGESERVER_LISTEN_GRPC")]
    pub listen_grpc: Option<SocketAddr>,
    /// HTTP (/metrics, /health) listen address.
    #[arg(long, env = "STRATA_PAGESERVER_LISTEN_HTTP")]
    pub listen_http: Option<SocketAddr>,
    /// Log format.
    #[arg(long, env = "STRATA_PAGESERVER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// How long a read waits for an LSN not yet ingested, in milliseconds.
    #[arg(long, env = "STRATA_PAGESERVER_WAIT_LSN_TIMEOUT_MS")]
    pub wait_lsn_timeout_ms: Option<u64>,
    /// Open-layer size in bytes at which it is frozen into a delta layer file.
    #[arg(long, env = "STRATA_PAGESERVER_CHECKPOINT_DISTANCE")]
    pub checkpoint_distance: Option<u64>,
    /// Delta layers since the last image layer that trigger a new image layer.
    #[arg(long, env = "STRATA_PAGESERVER_IMAGE_LAYER_AFTER_DELTAS")]
    pub image_layer_after_deltas: Option<u32>,
    /// Largest ImportTimeline tar accepted, in bytes.
    #[arg(long, env = "STRATA_PAGESERVER_MAX_IMPORT_BYTES")]
    pub max_import_bytes: Option<u64>,
    /// How long a WAL stream may stall before switching safekeepers, in milliseconds.
    #[arg(long, env = "STRATA_PAGESERVER_WAL_STALL_TIMEOUT_MS")]
    pub wal_stall_timeout_ms: Option<u64>,
    /// Longest time data stays in the open layer before a freeze, in milliseconds.
    #[arg(long, env = "STRATA_PAGESERVER_CHECKPOINT_TIMEOUT_MS")]
    pub checkpoint_timeout_ms: Option<u64>,
    /// Object storage URL (file:///path or s3://bucket/prefix?endpoint=...).
    #[arg(long, env = "STRATA_PAGESERVER_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// S3 access key id (default: the AWS credential chain).
    #[arg(long, env = "STRATA_PAGESERVER_OBJECT_STORE_ACCESS_KEY_ID")]
    pub object_store_access_key_id: Option<String>,
    /// S3 secret access key (default: the AWS credential chain).
    #[arg(
        long,
        env = "STRATA_PAGESERVER_OBJECT_STORE_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub object_store_secret_access_key: Option<String>,
    /// The attachment generation (default: claim the next one in object storage).
    #[arg(long, env = "STRATA_PAGESERVER_GENERATION")]
    pub generation: Option<u32>,
    /// Bytes of layer files kept locally before evicting uploaded ones.
    #[arg(long, env = "STRATA_PAGESERVER_DISK_BUDGET_BYTES")]
    pub disk_budget_bytes: Option<u64>,
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
    #[error("{key} must be {requirement}")]
    Invalid {
        key: &'static str,
        requirement: &'static str,
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
        Config::merge(file, overrides).validate()
    }

    fn merge(file: FileConfig, flags: &Overrides) -> Config {
        let default = Config::default();
        Config {
            data_dir: flags
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(default.data_dir),
            listen_grpc: flags
                .listen_grpc
                .or(file.listen_grpc)
                .unwrap_or(default.listen_grpc),
            listen_http: flags
                .listen_http
                .or(file.listen_http)
                .unwrap_or(default.listen_http),
            log_format: flags
                .log_format
                .or(file.log_format)
                .unwrap_or(default.log_format),
            wait_lsn_timeout: flags
                .wait_lsn_timeout_ms
                .or(file.wait_lsn_timeout_ms)
                .map_or(default.wait_lsn_timeout, Duration::from_millis),
            checkpoint_distance: flags
                .checkpoint_distance
                .or(file.checkpoint_distance)
                .unwrap_or(default.checkpoint_distance),
            image_layer_after_deltas: flags
                .image_layer_after_deltas
                .or(file.image_layer_after_deltas)
                .unwrap_or(default.image_layer_after_deltas),
            max_import_bytes: flags
                .max_import_bytes
                .or(file.max_import_bytes)
                .unwrap_or(default.max_import_bytes),
            wal_stall_timeout: flags
                .wal_stall_timeout_ms
                .or(file.wal_stall_timeout_ms)
                .map_or(default.wal_stall_timeout, Duration::from_millis),
            checkpoint_timeout: flags
                .checkpoint_timeout_ms
                .or(file.checkpoint_timeout_ms)
                .map_or(default.checkpoint_timeout, Duration::from_millis),
            object_store: flags.object_store.clone().or(file.object_store),
            object_store_access_key_id: flags
                .object_store_access_key_id
                .clone()
                .or(file.object_store_access_key_id),
            object_store_secret_access_key: flags
                .object_store_secret_access_key
                .clone()
                .or(file.object_store_secret_access_key),
            generation: flags.generation.or(file.generation),
            // 0 means no budget, as absent does.
            disk_budget_bytes: flags
                .disk_budget_bytes
                .or(file.disk_budget_bytes)
                .filter(|&bytes| bytes > 0),
            safekeepers: file.safekeepers.unwrap_or(default.safekeepers),
        }
    }

    /// The object store, with the credentials the configuration gives (if any).
    pub fn remote_storage(&self) -> Option<remote_storage::RemoteStorageConfig> {
        let url = self.object_store.as_deref()?;
        let mut config = remote_storage::RemoteStorageConfig::parse_url(url).ok()?;
        if let remote_storage::RemoteStorageConfig::S3(s3) = &mut config {
            s3.access_key_id = self.object_store_access_key_id.clone();
            s3.secret_access_key = self.object_store_secret_access_key.clone();
        }
        Some(config)
    }

    fn validate(self) -> Result<Config, ConfigError> {
        let invalid = |key, requirement| Err(ConfigError::Invalid { key, requirement });
        if self.checkpoint_distance == 0 {
            return invalid("checkpoint_distance", "at least 1");
        }
        if self.image_layer_after_deltas == 0 {
            return invalid("image_layer_after_deltas", "at least 1");
        }
        if self.max_import_bytes == 0 {
            return invalid("max_import_bytes", "at least 1");
        }
        if self.wal_stall_timeout.is_zero() {
            return invalid("wal_stall_timeout_ms", "at least 1");
        }
        if self.checkpoint_timeout.is_zero() {
            return invalid("checkpoint_timeout_ms", "at least 1");
        }
        if self.generation == Some(0) {
            return invalid("generation", "at least 1");
        }
        if self.object_store.is_none() {
            if self.generation.is_some() {
                return invalid("generation", "set only with object_store");
            }
            if self.disk_budget_bytes.is_some() {
                return invalid(
                    "disk_budget_bytes",
                    "set only with object_store (only uploaded layers can be evicted)",
                );
            }
        }
        if let Some(url) = &self.object_store {
            if remote_storage::RemoteStorageConfig::parse_url(url).is_err() {
                return invalid(
                    "object_store",
                    "file:///absolute/path or s3://bucket/prefix[?endpoint=URL&region=R]",
                );
            }
        }
        Ok(self)
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
    let mut message = error.message().replace('\n', " ");
    // toml names the key of an unknown field but not of a value of the wrong type: add
    // the key of the offending line when the message lacks it.
    let key = text
        .lines()
        .nth(line - 1)
        .and_then(|l| l.split_once('='))
        .map(|(key, _)| key.trim())
        .filter(|key| !key.is_empty() && !message.contains(key));
    if let Some(key) = key {
        message = format!("{key}: {message}");
    }
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Config::merge(file, &Overrides::default())
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn printed_default_config_is_the_default() {
        assert_eq!(parse(DEFAULT_CONFIG_TOML).unwrap(), Config::default());
        // Every field appears in it (as a key, or a commented example), so the
        // documentation is complete.
        for key in [
            "data_dir = ",
            "listen_grpc = ",
            "listen_http = ",
            "log_format = ",
            "wait_lsn_timeout_ms = ",
            "checkpoint_distance = ",
            "image_layer_after_deltas = ",
            "max_import_bytes = ",
            "wal_stall_timeout_ms = ",
            "checkpoint_timeout_ms = ",
            "object_store = ",
            "object_store_access_key_id = ",
            "object_store_secret_access_key = ",
            "generation = ",
            "disk_budget_bytes = ",
            "[[safekeepers]]",
        ] {
            assert!(DEFAULT_CONFIG_TOML.contains(key), "{key} undocumented");
        }
    }

    #[test]
    fn safekeepers_are_parsed() {
        let config = parse(
            "[[safekeepers]]\nid = 1\ngrpc = \"127.0.0.1:1\"\npg = \"127.0.0.1:2\"\n\
             [[safekeepers]]\nid = 2\ngrpc = \"h:3\"\npg = \"h:4\"\n",
        )
        .unwrap();
        assert_eq!(config.safekeepers.len(), 2);
        assert_eq!(config.safekeepers[1].pg, "h:4");
        let err = parse("[[safekeepers]]\nid = 1\ngrpc = \"a:1\"\npg = \"a:2\"\nhost = \"x\"\n")
            .unwrap_err();
        assert!(err.contains("host"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = parse("listen_grcp = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.contains("listen_grcp"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let file: FileConfig =
            toml::from_str("data_dir = \"/a\"\nlog_format = \"json\"\nwait_lsn_timeout_ms = 5\n")
                .unwrap();
        let flags = Overrides {
            data_dir: Some("/b".into()),
            checkpoint_distance: Some(8192),
            ..Overrides::default()
        };
        let config = Config::merge(file, &flags);
        assert_eq!(config.data_dir, PathBuf::from("/b"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.wait_lsn_timeout, Duration::from_millis(5));
        assert_eq!(config.checkpoint_distance, 8192);
        assert_eq!(config.listen_grpc, Config::default().listen_grpc);
    }

    #[test]
    fn file_errors_are_one_line_with_the_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ps.toml");
        std::fs::write(&path, "data_dir = \"/x\"\nlisten_grcp = \"127.0.0.1:1\"\n").unwrap();
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
        assert!(parse("checkpoint_distance = -1").is_err());
        assert!(parse("checkpoint_distance = 0").is_err());
        assert!(parse("image_layer_after_deltas = 0").is_err());
        assert!(parse("wait_lsn_timeout_ms = \"30s\"").is_err());
        assert!(parse("generation = 0\nobject_store = \"file:///x\"").is_err());
        assert!(parse("object_store = \"s3:/x\"").is_err());
    }

    #[test]
    fn tiering_settings_need_an_object_store() {
        let err = parse("generation = 3").unwrap_err();
        assert!(err.contains("generation"), "{err}");
        let err = parse("disk_budget_bytes = 1000").unwrap_err();
        assert!(err.contains("disk_budget_bytes"), "{err}");
        let config =
            parse("object_store = \"file:///x\"\ngeneration = 3\ndisk_budget_bytes = 1000\n")
                .unwrap();
        assert_eq!(config.generation, Some(3));
        assert_eq!(config.disk_budget_bytes, Some(1000));
        // A budget of 0 is no budget.
        let config = parse("object_store = \"file:///x\"\ndisk_budget_bytes = 0\n").unwrap();
        assert_eq!(config.disk_budget_bytes, None);
    }
}
