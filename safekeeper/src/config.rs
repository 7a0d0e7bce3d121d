//! The daemon's configuration: a TOML file (`--config PATH`), environment variables
//! overriding its keys, and command-line flags overriding both (clap reads a flag's
//! variable when the flag is absent, so the two merge as one set of overrides).
//!
//! Every key of the file is documented in [`DEFAULT_CONFIG_TOML`], which
//! `safekeeper --print-default-config` prints. Unknown keys are an error naming the key,
//! so that a misspelt setting is noticed instead of silently taking its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use remote_storage::RemoteStorageConfig;
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
# (--wal-retention-bytes). Without an object store: applied when a timeline is opened;
# absent, all WAL is kept (nothing else holds removed WAL). With one: more WAL kept
# below the offload horizon (see object_store).
# wal_retention_bytes = 1073741824

# Object storage for WAL offload (--object-store): "file:///abs/path" or
# "s3://bucket/prefix?endpoint=http://host:port&region=..." (docs/object-storage.md).
# With it, full segments below the commit LSN are uploaded, and local segments are
# removed below min(the pageserver's remote-consistent LSN, the uploaded LSN, the
# commit LSN). Absent: nothing is uploaded and only wal_retention_bytes removes WAL.
# object_store = "s3://strata/cluster1?endpoint=http://127.0.0.1:9000"

# S3 credentials (--object-store-access-key-id, --object-store-secret-access-key; both
# or neither). Absent: the standard AWS chain (AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, instance or pod metadata).
# object_store_access_key_id = "..."
# object_store_secret_access_key = "..."

# The other safekeepers of the cluster (--peers 2=HOST:PORT,3=HOST:PORT): their ids and
# gRPC addresses. With an object store, the lowest-id caught-up safekeeper among this
# one and its reachable peers uploads a timeline's WAL, and peers share the
# pageserver's remote-consistent LSN. Absent: this safekeeper uploads alone.
# [[peers]]
# id = 2
# grpc = "127.0.0.1:7686"
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
    pub object_store: Option<String>,
    pub object_store_access_key_id: Option<String>,
    pub object_store_secret_access_key: Option<Secret>,
    pub peers: Vec<Peer>,
}

/// Another safekeeper of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: NodeId,
    /// `HOST:PORT` of its gRPC listener (a host name or an address).
    pub grpc: String,
}

impl std::str::FromStr for Peer {
    type Err = String;

    /// `ID=HOST:PORT`, the flag's form.
    fn from_str(text: &str) -> Result<Peer, String> {
        let (id, grpc) = text
            .split_once('=')
            .ok_or_else(|| format!("peer {text:?} is not ID=HOST:PORT"))?;
        let id = id
            .trim()
            .parse()
            .map_err(|_| format!("peer {text:?}: {id:?} is not a safekeeper id"))?;
        Ok(Peer {
            id: NodeId(id),
            grpc: grpc.trim().to_string(),
        })
    }
}

/// A secret from the configuration: never printed, logged or serialized as itself.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<set>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<set>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(text.to_string()))
    }
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
            object_store: None,
            object_store_access_key_id: None,
            object_store_secret_access_key: None,
            peers: Vec::new(),
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
    object_store: Option<String>,
    object_store_access_key_id: Option<String>,
    object_store_secret_access_key: Option<Secret>,
    peers: Option<Vec<Peer>>,
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
    /// Object storage URL for WAL offload (file:///path or s3://bucket/prefix?...).
    #[arg(long, env = "STRATA_SAFEKEEPER_OBJECT_STORE", value_name = "URL")]
    pub object_store: Option<String>,
    /// S3 access key id (default: the AWS credential chain).
    #[arg(long, env = "STRATA_SAFEKEEPER_OBJECT_STORE_ACCESS_KEY_ID")]
    pub object_store_access_key_id: Option<String>,
    /// S3 secret access key (default: the AWS credential chain).
    #[arg(long, env = "STRATA_SAFEKEEPER_OBJECT_STORE_SECRET_ACCESS_KEY")]
    pub object_store_secret_access_key: Option<Secret>,
    /// The other safekeepers: ID=HOST:PORT of their gRPC listeners, comma-separated.
    #[arg(
        long,
        env = "STRATA_SAFEKEEPER_PEERS",
        value_name = "ID=HOST:PORT",
        value_delimiter = ','
    )]
    pub peers: Vec<Peer>,
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
    /// A setting that parses but cannot be used (a bad object store URL, a peer with
    /// this safekeeper's id, half a credential pair).
    #[error("{0}")]
    Invalid(String),
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
        let config = Config::merge(file, overrides);
        config.validate()?;
        Ok(config)
    }

    /// What [`Config::load`] checks beyond types: every setting can be used.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let store = self
            .object_store_config()
            .map_err(|e| ConfigError::Invalid(format!("object_store: {e}")))?;
        match (
            &store,
            &self.object_store_access_key_id,
            &self.object_store_secret_access_key,
        ) {
            (_, None, None) | (Some(RemoteStorageConfig::S3(_)), Some(_), Some(_)) => {}
            (Some(RemoteStorageConfig::S3(_)), _, _) => {
                return invalid(
                    "object_store_access_key_id and object_store_secret_access_key are set \
                     together or not at all"
                        .into(),
                )
            }
            _ => {
                return invalid(
                    "object_store_access_key_id and object_store_secret_access_key need an \
                     s3:// object_store"
                        .into(),
                )
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for peer in &self.peers {
            if peer.id == self.id {
                return invalid(format!("peers: peer {} has this safekeeper's id", peer.id));
            }
            if !seen.insert(peer.id) {
                return invalid(format!("peers: id {} is listed twice", peer.id));
            }
            let port = peer
                .grpc
                .rsplit_once(':')
                .map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(port)) if port != 0) {
                return invalid(format!(
                    "peers: peer {}: {:?} is not HOST:PORT",
                    peer.id, peer.grpc
                ));
            }
        }
        Ok(())
    }

    /// The object store to offload WAL to, with the configured credentials.
    pub fn object_store_config(
        &self,
    ) -> Result<Option<RemoteStorageConfig>, remote_storage::RemoteError> {
        let Some(url) = &self.object_store else {
            return Ok(None);
        };
        let mut config = RemoteStorageConfig::parse_url(url)?;
        if let RemoteStorageConfig::S3(s3) = &mut config {
            s3.access_key_id
                .clone_from(&self.object_store_access_key_id);
            s3.secret_access_key = self
                .object_store_secret_access_key
                .as_ref()
                .map(|secret| secret.0.clone());
        }
        Ok(Some(config))
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
            object_store: flags.object_store.clone().or(file.object_store),
            object_store_access_key_id: flags
                .object_store_access_key_id
                .clone()
                .or(file.object_store_access_key_id),
            object_store_secret_access_key: flags
                .object_store_secret_access_key
                .clone()
                .or(file.object_store_secret_access_key),
            peers: if flags.peers.is_empty() {
                file.peers.unwrap_or_default()
            } else {
                flags.peers.clone()
            },
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
        Ok(Config::merge(file, &Overrides::default()))
    }

    #[test]
    fn printed_default_config_is_the_default() {
        assert_eq!(parse(DEFAULT_CONFIG_TOML).unwrap(), Config::default());
        // And every key of the struct appears in it, so the documentation is complete.
        let serialized = toml::to_string(&Config {
            wal_retention_bytes: Some(1),
            object_store: Some("file:///x".into()),
            object_store_access_key_id: Some("k".into()),
            object_store_secret_access_key: Some(Secret("s".into())),
            peers: vec![Peer {
                id: NodeId(2),
                grpc: "h:1".into(),
            }],
            ..Config::default()
        })
        .unwrap();
        for line in serialized.lines().filter(|l| !l.is_empty()) {
            if line.starts_with('[') {
                assert!(DEFAULT_CONFIG_TOML.contains(line), "{line} undocumented");
                continue;
            }
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
        // A value of the wrong type: toml does not name the key, the error does.
        std::fs::write(&path, "id = 3\n\nlisten_http = 5\n").unwrap();
        let err = Config::load(Some(&path), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3: listen_http: invalid type"), "{err}");
    }

    fn load(text: &str, flags: &Overrides) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sk.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), flags).map_err(|e| e.to_string())
    }

    #[test]
    fn object_store_and_peers_from_the_file_and_the_flags() {
        let text = "id = 1\nobject_store = \"s3://bkt/p?endpoint=http://127.0.0.1:9\"\n\
                    object_store_access_key_id = \"AK\"\n\
                    object_store_secret_access_key = \"SECRET\"\n\
                    [[peers]]\nid = 2\ngrpc = \"sk2:7676\"\n\
                    [[peers]]\nid = 3\ngrpc = \"127.0.0.1:7677\"\n";
        let config = load(text, &Overrides::default()).unwrap();
        assert_eq!(config.peers.len(), 2);
        assert_eq!(config.peers[0].grpc, "sk2:7676");
        let Some(RemoteStorageConfig::S3(s3)) = config.object_store_config().unwrap() else {
            panic!("not S3")
        };
        assert_eq!(s3.bucket, "bkt");
        assert_eq!(s3.access_key_id.as_deref(), Some("AK"));
        assert_eq!(s3.secret_access_key.as_deref(), Some("SECRET"));
        // The secret never shows in what is logged.
        assert!(!format!("{config:?}").contains("SECRET"));
        assert!(!toml::to_string(&config).unwrap().contains("SECRET"));

        let flags = Overrides {
            peers: vec!["4=h:1".parse().unwrap()],
            object_store: Some("file:///srv/wal".into()),
            object_store_access_key_id: None,
            ..Overrides::default()
        };
        let without_keys = "id = 1\n[[peers]]\nid = 2\ngrpc = \"a:1\"\n";
        let config = load(without_keys, &flags).unwrap();
        assert_eq!(
            config.peers,
            [Peer {
                id: NodeId(4),
                grpc: "h:1".into()
            }]
        );
        assert!(matches!(
            config.object_store_config().unwrap(),
            Some(RemoteStorageConfig::Local { .. })
        ));
    }

    #[test]
    fn unusable_offload_settings_are_errors() {
        let flags = Overrides::default();
        for (text, expected) in [
            (
                "object_store = \"gs://x\"",
                "object_store: invalid object store URL",
            ),
            (
                "object_store_access_key_id = \"a\"",
                "need an s3:// object_store",
            ),
            (
                "object_store = \"s3://bkt\"\nobject_store_access_key_id = \"a\"",
                "together or not at all",
            ),
            ("[[peers]]\nid = 1\ngrpc = \"h:1\"", "this safekeeper's id"),
            (
                "[[peers]]\nid = 2\ngrpc = \"h:1\"\n[[peers]]\nid = 2\ngrpc = \"h:2\"",
                "listed twice",
            ),
            ("[[peers]]\nid = 2\ngrpc = \"h\"", "not HOST:PORT"),
            ("[[peers]]\nid = 2\nhost = \"h:1\"", "host"),
        ] {
            let error = load(text, &flags).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert!("2".parse::<Peer>().is_err());
        assert!("x=h:1".parse::<Peer>().is_err());
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(parse("log_format = \"xml\"").is_err());
        assert!(parse("listen_http = \"nowhere\"").is_err());
        assert!(parse("id = -1").is_err());
    }
}
