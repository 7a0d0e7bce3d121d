//! `DIR/cluster.json`: what a cluster is, fixed when it is created. Ids, the object
//! store URL and every port are chosen once, so that a restarted cluster is the same
//! cluster: the compute finds its timeline on the safekeepers, and clients find the
//! compute where they found it before.

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_ids::{NodeId, TenantId, TimelineId};

use crate::error::{io_err, ClusterError, Result};
use crate::limits::{MAX_SAFEKEEPERS, PORT_PICK_ATTEMPTS, PORT_RANGE};

/// Name of the cluster file inside the cluster directory.
pub const CLUSTER_FILE: &str = "cluster.json";

/// Version of the cluster file's format; a file of another version is refused rather
/// than misread.
pub const CLUSTER_FILE_VERSION: u32 = 1;

/// Every daemon of a local cluster listens on loopback only: it is a development and
/// test cluster, with no authentication.
pub const LISTEN_HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Default number of safekeepers: the smallest quorum that survives a failure.
pub const DEFAULT_SAFEKEEPERS: usize = 3;

/// Subdirectory of the default (local directory) object store.
pub const OBJECT_STORE_DIR: &str = "object-store";

/// What the caller asks for; `None` means "the default for a new cluster, whatever the
/// existing cluster has".
#[derive(Debug, Clone, Default)]
pub struct ClusterSpec {
    pub safekeepers: Option<usize>,
    pub object_store: Option<String>,
    pub pg_port: Option<u16>,
}

/// Content of `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub format_version: u32,
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    /// `file:///abs/DIR/object-store` by default, or an `s3://` URL. Nothing uses it
    /// until the pageserver and WAL offload exist; it is fixed now so that a cluster
    /// created today keeps its store.
    pub object_store: String,
    pub compute: ComputeConfig,
    pub safekeepers: Vec<SafekeeperConfig>,
    /// Absent in clusters created before the pageserver joined them: those run without
    /// one (their timeline's base image was never imported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pageserver: Option<PageserverConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeConfig {
    pub pg_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageserverConfig {
    pub grpc_port: u16,
    pub http_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafekeeperConfig {
    pub id: NodeId,
    pub pg_port: u16,
    pub grpc_port: u16,
    pub http_port: u16,
}

impl ClusterConfig {
    /// A new cluster for `dir` (absolute): fresh ids and free ports.
    pub(crate) fn new(dir: &Path, spec: &ClusterSpec) -> Result<ClusterConfig> {
        let count = spec.safekeepers.unwrap_or(DEFAULT_SAFEKEEPERS);
        if !(1..=MAX_SAFEKEEPERS).contains(&count) {
            return Err(ClusterError::InvalidSpec {
                what: "--safekeepers",
                message: format!("{count} is not between 1 and {MAX_SAFEKEEPERS}"),
            });
        }
        let object_store = match &spec.object_store {
            Some(url) => validate_object_store(url)?,
            None => format!("file://{}", dir.join(OBJECT_STORE_DIR).display()),
        };
        let mut ports = PortPicker::new()?;
        let pg_port = match spec.pg_port {
            Some(port) => ports.claim(port)?,
            None => ports.pick()?,
        };
        let mut safekeepers = Vec::with_capacity(count);
        for id in 1..=count as u64 {
            safekeepers.push(SafekeeperConfig {
                id: NodeId(id),
                pg_port: ports.pick()?,
                grpc_port: ports.pick()?,
                http_port: ports.pick()?,
            });
        }
        let pageserver = PageserverConfig {
            grpc_port: ports.pick()?,
            http_port: ports.pick()?,
        };
        Ok(ClusterConfig {
            format_version: CLUSTER_FILE_VERSION,
            tenant_id: TenantId(random_u128()?),
            timeline_id: TimelineId(random_u128()?),
            object_store,
            compute: ComputeConfig { pg_port },
            safekeepers,
            pageserver: Some(pageserver),
        })
    }

    /// Reads `dir/cluster.json`; `Ok(None)` when there is none.
    pub(crate) fn load(dir: &Path) -> Result<Option<ClusterConfig>> {
        let path = dir.join(CLUSTER_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        let bad = |message: String| ClusterError::BadClusterFile {
            path: path.clone(),
            message,
        };
        let config: ClusterConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if config.format_version != CLUSTER_FILE_VERSION {
            return Err(bad(format!(
                "format version {} (this strata reads version {CLUSTER_FILE_VERSION})",
                config.format_version
            )));
        }
        if config.safekeepers.is_empty() {
            return Err(bad("no safekeepers".into()));
        }
        Ok(Some(config))
    }

    /// Writes `dir/cluster.json` atomically: a crash leaves the old file or the new one.
    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ClusterError::Io {
            context: "encoding cluster.json".into(),
            source: e.into(),
        })?;
        write_atomically(&dir.join(CLUSTER_FILE), format!("{text}\n").as_bytes())
    }

    /// Refuses a request that contradicts what the cluster was created with.
    pub(crate) fn check_spec(&self, dir: &Path, spec: &ClusterSpec) -> Result<()> {
        let mismatch = |what, existing: String, requested: String| ClusterError::SpecMismatch {
            dir: dir.to_owned(),
            what,
            existing,
            requested,
        };
        if let Some(n) = spec.safekeepers.filter(|&n| n != self.safekeepers.len()) {
            let existing = self.safekeepers.len().to_string();
            return Err(mismatch("--safekeepers", existing, n.to_string()));
        }
        if let Some(url) = spec
            .object_store
            .as_ref()
            .filter(|&u| *u != self.object_store)
        {
            return Err(mismatch(
                "--object-store",
                self.object_store.clone(),
                url.clone(),
            ));
        }
        if let Some(port) = spec.pg_port.filter(|&p| p != self.compute.pg_port) {
            let existing = self.compute.pg_port.to_string();
            return Err(mismatch("--pg-port", existing, port.to_string()));
        }
        Ok(())
    }

    /// The safekeepers' gRPC addresses, as `compute_ctl --safekeepers` takes them.
    pub fn safekeeper_grpc_addrs(&self) -> String {
        self.safekeepers
            .iter()
            .map(|sk| format!("{LISTEN_HOST}:{}", sk.grpc_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The pageserver's gRPC address, as `compute_ctl --pageserver` takes it.
    pub fn pageserver_grpc_addr(&self) -> Option<String> {
        self.pageserver
            .as_ref()
            .map(|ps| format!("{LISTEN_HOST}:{}", ps.grpc_port))
    }
}

fn validate_object_store(url: &str) -> Result<String> {
    remote_storage::RemoteStorageConfig::parse_url(url)
        .map(|_| url.to_owned())
        .map_err(|e| ClusterError::InvalidSpec {
            what: "--object-store",
            message: e.to_string(),
        })
}

/// Temp file, fsync, rename, fsync of the directory: readers (another `strata`
/// invocation) see the old content or the new, never half a file, even after a crash.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let context = || format!("writing {}", path.display());
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(io_err(context()))?;
    file.write_all(bytes).map_err(io_err(context()))?;
    file.sync_all().map_err(io_err(context()))?;
    fs::rename(&tmp, path).map_err(io_err(context()))?;
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(io_err(format!("syncing directory {}", parent.display())))
}

/// 128 random bits from the kernel, for tenant and timeline ids.
fn random_u128() -> Result<u128> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(u128::from_be_bytes(bytes))
}

/// Picks distinct, currently free ports in [`PORT_RANGE`].
struct PortPicker {
    taken: Vec<u16>,
    state: u64,
}

impl PortPicker {
    fn new() -> Result<PortPicker> {
        // Truncation intended: 64 random bits seed the sequence.
        let state = random_u128()? as u64;
        Ok(PortPicker {
            taken: Vec::new(),
            state,
        })
    }

    /// A port the caller chose: it must be free now.
    fn claim(&mut self, port: u16) -> Result<u16> {
        if self.taken.contains(&port) || !is_free(port) {
            return Err(ClusterError::InvalidSpec {
                what: "--pg-port",
                message: format!("port {port} on {LISTEN_HOST} is in use"),
            });
        }
        self.taken.push(port);
        Ok(port)
    }

    fn pick(&mut self) -> Result<u16> {
        let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
        for _ in 0..PORT_PICK_ATTEMPTS {
            // splitmix64: well spread, and the seed is random, so concurrent creations
            // (parallel tests) are unlikely to try the same ports.
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let port = PORT_RANGE.start + u16::try_from(z % span).unwrap_or(0);
            if !self.taken.contains(&port) && is_free(port) {
                self.taken.push(port);
                return Ok(port);
            }
        }
        Err(ClusterError::NoFreePort {
            first: PORT_RANGE.start,
            last: PORT_RANGE.end - 1,
            attempts: PORT_PICK_ATTEMPTS,
        })
    }
}

fn is_free(port: u16) -> bool {
    TcpListener::bind((LISTEN_HOST, port)).is_ok()
}

/// The directory of the default object store, if the URL names one inside `dir`.
pub(crate) fn local_object_store(url: &str) -> Option<PathBuf> {
    url.strip_prefix("file://").map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_config_round_trips_and_has_distinct_ports() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ClusterSpec {
            safekeepers: Some(3),
            ..ClusterSpec::default()
        };
        let config = ClusterConfig::new(dir.path(), &spec).unwrap();
        config.save(dir.path()).unwrap();
        assert_eq!(
            ClusterConfig::load(dir.path()).unwrap(),
            Some(config.clone())
        );
        let mut ports = vec![config.compute.pg_port];
        for sk in &config.safekeepers {
            ports.extend([sk.pg_port, sk.grpc_port, sk.http_port]);
        }
        let ps = config.pageserver.clone().unwrap();
        ports.extend([ps.grpc_port, ps.http_port]);
        let count = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), count);
        assert!(ports.iter().all(|p| PORT_RANGE.contains(p)));
        assert_eq!(
            config.object_store,
            format!("file://{}/object-store", dir.path().display())
        );
    }

    #[test]
    fn spec_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = ClusterConfig::new(dir.path(), &ClusterSpec::default()).unwrap();
        assert_eq!(config.safekeepers.len(), DEFAULT_SAFEKEEPERS);
        let spec = ClusterSpec {
            safekeepers: Some(5),
            ..ClusterSpec::default()
        };
        let err = config
            .check_spec(dir.path(), &spec)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--safekeepers 3, not 5"), "{err}");
        assert!(config
            .check_spec(dir.path(), &ClusterSpec::default())
            .is_ok());
    }

    #[test]
    fn bad_specs_and_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        for spec in [
            ClusterSpec {
                safekeepers: Some(0),
                ..ClusterSpec::default()
            },
            ClusterSpec {
                object_store: Some("ftp://x".into()),
                ..ClusterSpec::default()
            },
        ] {
            assert!(ClusterConfig::new(dir.path(), &spec).is_err());
        }
        assert!(ClusterConfig::load(dir.path()).unwrap().is_none());
        fs::write(dir.path().join(CLUSTER_FILE), "{\"format_version\": 2}").unwrap();
        let err = ClusterConfig::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a valid cluster file"), "{err}");
        assert!(validate_object_store("s3://bucket/prefix?endpoint=http://h:9000").is_ok());
    }
}
