//! What the object storage tests share: a cluster of one safekeeper and a compute
//! (`local_cluster`, as `strata up` starts it) whose own pageserver imported the
//! timeline and is then stopped, so that each test runs the `pageserver` binary itself
//! on that data directory with the object store, generation, budget and failpoints it
//! needs; the object store (a local directory, or S3 served by strata-s3-server) and what it
//! holds; basebackups compared file by file.

#![allow(dead_code)] // Each test uses its own part of this module.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use local_cluster::{send_signal, Binaries, ClusterSpec, LocalCluster, Signal};
use pg_harness::{PgBin, PgConfig, PgServer};
use postgres_wal::Lsn;
use remote_storage::{layout, RemoteStorage, RemoteStorageConfig};
use s3_harness::S3Server;
use strata_ids::TenantTimelineId;
use strata_proto::pageserver as pb;
use strata_proto::pageserver::pageserver_client::PageserverClient;
use tonic::transport::Channel;

use crate::support::{basebackup, request, Daemon, WAIT};

const POLL: Duration = Duration::from_millis(100);

/// A small workload makes several layer files, and object storage follows ingest
/// within about half a second (`checkpoint_timeout`).
const LAYER_FLAGS: [&str; 6] = [
    "--checkpoint-distance",
    "1048576",
    "--checkpoint-timeout-ms",
    "500",
    "--image-layer-after-deltas",
    "3",
];

/// One safekeeper and a compute in a temporary directory, stopped however the test
/// ends.
pub struct Cluster {
    pub cluster: LocalCluster,
    pub bin: PgBin,
    pub connstr: String,
    pub id: TenantTimelineId,
    /// The pageserver configuration `strata up` wrote (the safekeepers' addresses).
    pub config_file: PathBuf,
    tmp: tempfile::TempDir,
}

impl Cluster {
    pub fn up() -> Cluster {
        let binaries = Binaries::locate()
            .expect("the daemons' binaries beside the test: run `cargo build --bins` first");
        // Under /tmp, mode 0755: PostgreSQL runs as `postgres` when tests run as root.
        let tmp = tempfile::Builder::new()
            .prefix("strata-object-storage-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = ClusterSpec {
            safekeepers: Some(1),
            ..ClusterSpec::default()
        };
        let (cluster, _) =
            LocalCluster::open_or_create(&tmp.path().join("cluster"), &spec).unwrap();
        let config = cluster.config();
        let id = TenantTimelineId {
            tenant_id: config.tenant_id,
            timeline_id: config.timeline_id,
        };
        let connstr = cluster.up(&binaries, &mut |_| {}).unwrap().connstr;
        // The compute has its basebackup: the tests run pageservers of their own.
        let pid = cluster
            .pageserver_pid()
            .expect("the cluster's pageserver runs");
        assert!(send_signal(pid, Signal::Term));
        wait_gone(pid);
        let config_file = tmp.path().join("pageserver.toml");
        std::fs::copy(
            cluster.pageserver_dir().join("pageserver.toml"),
            &config_file,
        )
        .unwrap();
        Cluster {
            cluster,
            bin: PgBin::locate().unwrap(),
            connstr,
            id,
            config_file,
            tmp,
        }
    }

    /// The data directory holding the imported timeline.
    pub fn data_dir(&self) -> PathBuf {
        self.cluster.pageserver_dir()
    }

    /// A path in the test's temporary directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub fn sql(&self, sql: &str) -> String {
        let output = self
            .bin
            .psql(&self.connstr)
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Inserts rows `first..=last` into `t` (created if needed); the compute's flush LSN
    /// once committed.
    pub fn insert(&self, first: u64, last: u64) -> Lsn {
        self.sql("CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY, v text)");
        self.sql(&format!(
            "INSERT INTO t SELECT g, repeat(md5(g::text), 8) FROM generate_series({first}, {last}) g"
        ));
        self.flush_lsn()
    }

    pub fn flush_lsn(&self) -> Lsn {
        self.sql("SELECT pg_current_wal_flush_lsn()")
            .parse()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.cluster.down() {
            eprintln!("strata down: {error}");
        }
    }
}

fn wait_gone(pid: u32) {
    let deadline = Instant::now() + WAIT;
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "process {pid} did not exit");
        std::thread::sleep(POLL);
    }
}

/// The object store of a test.
pub struct Store {
    pub url: String,
    pub config: RemoteStorageConfig,
    keys: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    _server: Option<S3Server>,
}

impl Store {
    /// A local directory.
    pub fn file() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        Store {
            config: RemoteStorageConfig::parse_url(&url).unwrap(),
            url,
            keys: None,
            _dir: Some(dir),
            _server: None,
        }
    }

    /// A bucket of a real S3-compatible server (strata-s3-server, checking signatures).
    pub fn s3() -> Store {
        let server = S3Server::start().expect("strata-s3-server: run `cargo build --bins`");
        server.create_bucket("strata").unwrap();
        let url = server.url("strata", "cluster");
        Store {
            config: RemoteStorageConfig::S3(server.config("strata", "cluster")),
            url,
            keys: Some((
                server.access_key().to_owned(),
                server.secret_key().to_owned(),
            )),
            _dir: None,
            _server: Some(server),
        }
    }

    pub fn flags(&self) -> Vec<String> {
        let mut flags = vec!["--object-store".to_owned(), self.url.clone()];
        if let Some((key, secret)) = &self.keys {
            flags.extend([
                "--object-store-access-key-id".to_owned(),
                key.clone(),
                "--object-store-secret-access-key".to_owned(),
                secret.clone(),
            ]);
        }
        flags
    }

    pub async fn open(&self) -> Arc<dyn RemoteStorage> {
        remote_storage::connect(&self.config).await.unwrap()
    }

    /// What the store holds of timeline `id`.
    pub async fn objects(&self, id: TenantTimelineId) -> Objects {
        let storage = self.open().await;
        let mut objects = Objects::default();
        for object in storage.list(&layout::timeline_prefix(id)).await.unwrap() {
            let name = object.path.file_name();
            if let Some(generation) = layout::parse_index_name(name) {
                let bytes = storage.get(&object.path).await.unwrap();
                let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(index["format_version"], 1);
                assert_eq!(index["generation"], generation.0);
                assert!(index["ancestor"].is_null());
                let layers = index["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| {
                        (
                            l["name"].as_str().unwrap().to_owned(),
                            u32::try_from(l["generation"].as_u64().unwrap()).unwrap(),
                            l["size"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                objects.indexes.insert(
                    generation.0,
                    Index {
                        disk_consistent_lsn: Lsn(index["disk_consistent_lsn"].as_u64().unwrap()),
                        layers,
                    },
                );
            } else if let Some((layer, generation)) = layout::parse_layer_object(name) {
                objects
                    .layers
                    .insert((layer.to_owned(), generation.0), object.size);
            }
        }
        objects
    }

    /// The bytes of every layer object of timeline `id`, by (name, generation).
    pub async fn layer_bytes(&self, id: TenantTimelineId) -> BTreeMap<(String, u32), Vec<u8>> {
        let storage = self.open().await;
        let dir = tempfile::tempdir().unwrap();
        let mut out = BTreeMap::new();
        for (layer, generation) in self.objects(id).await.layers.keys() {
            let path = layout::layer_path(id, layer, layout::Generation(*generation));
            let dest = dir.path().join("layer");
            storage.download_to_file(&path, &dest).await.unwrap();
            out.insert((layer.clone(), *generation), std::fs::read(&dest).unwrap());
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Index {
    pub disk_consistent_lsn: Lsn,
    /// (layer name, generation of its object, size).
    pub layers: Vec<(String, u32, u64)>,
}

/// The objects of one timeline.
#[derive(Debug, Default)]
pub struct Objects {
    /// (layer name, generation) → size.
    pub layers: BTreeMap<(String, u32), u64>,
    /// Indexes by generation.
    pub indexes: BTreeMap<u32, Index>,
}

impl Objects {
    /// Every layer an index lists is in the store, with the listed size, and of a
    /// generation not above the index's.
    pub fn assert_indexes_complete(&self) {
        for (generation, index) in &self.indexes {
            for (name, layer_generation, size) in &index.layers {
                assert!(
                    layer_generation <= generation,
                    "index {generation} lists {name} of generation {layer_generation}"
                );
                assert_eq!(
                    self.layers.get(&(name.clone(), *layer_generation)),
                    Some(size),
                    "index {generation} lists {name}-{layer_generation:08x} of {size} bytes"
                );
            }
        }
    }

    /// Layer objects no index lists.
    pub fn orphans(&self) -> BTreeSet<(String, u32)> {
        let referenced: BTreeSet<(String, u32)> = self
            .indexes
            .values()
            .flat_map(|i| i.layers.iter().map(|(n, g, _)| (n.clone(), *g)))
            .collect();
        self.layers
            .keys()
            .filter(|k| !referenced.contains(*k))
            .cloned()
            .collect()
    }

    pub fn newest_index(&self) -> (u32, &Index) {
        let (generation, index) = self.indexes.iter().next_back().expect("an index");
        (*generation, index)
    }
}

/// A `pageserver` process of a test and a client of it.
pub struct Pageserver {
    pub daemon: Daemon,
    pub client: PageserverClient<Channel>,
    pub id: TenantTimelineId,
}

impl Pageserver {
    /// Starts the binary on `data_dir` with the cluster's safekeepers, `store`, the
    /// test layer settings and `extra` flags; waits until it is ready.
    pub async fn start(
        cluster: &Cluster,
        data_dir: &Path,
        store: &Store,
        extra: &[&str],
    ) -> Pageserver {
        let mut daemon = Pageserver::spawn(cluster, data_dir, store, extra, &[]);
        daemon.wait_ready();
        let client = daemon.client().await;
        Pageserver {
            daemon,
            client,
            id: cluster.id,
        }
    }

    /// Starts the binary as [`Pageserver::start`] does, with `env`, without waiting.
    pub fn spawn(
        cluster: &Cluster,
        data_dir: &Path,
        store: &Store,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut flags: Vec<String> = vec![
            "--config".to_owned(),
            cluster.config_file.display().to_string(),
        ];
        flags.extend(LAYER_FLAGS.iter().map(|f| (*f).to_owned()));
        flags.extend(store.flags());
        flags.extend(extra.iter().map(|f| (*f).to_owned()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Daemon::spawn(data_dir, &flags, env)
    }

    pub async fn status(&mut self) -> pb::TimelineInfo {
        self.client
            .timeline_status(request(self.id))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until `done` holds for the timeline's status; that status.
    pub async fn wait(
        &mut self,
        what: &str,
        done: impl Fn(&pb::TimelineInfo) -> bool,
    ) -> pb::TimelineInfo {
        let deadline = Instant::now() + WAIT;
        loop {
            let info = self.status().await;
            assert!(
                !info.state.starts_with("stopped"),
                "ingest stopped while waiting for {what}: {}",
                info.state
            );
            if done(&info) {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {info:?}\n{}",
                self.daemon.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until object storage holds everything up to `lsn` under an acknowledged
    /// index and no layer waits for upload.
    pub async fn wait_remote(&mut self, lsn: Lsn) -> pb::TimelineInfo {
        self.wait(&format!("remote_consistent_lsn {lsn}"), |i| {
            i.remote_consistent_lsn >= lsn.0
        })
        .await
    }

    /// The basebackup tar at `lsn`.
    pub async fn basebackup(&mut self, lsn: Lsn) -> Vec<u8> {
        let (_, tar) = basebackup(&mut self.client, self.id, lsn.0).await.unwrap();
        tar
    }

    /// The sum of the series of a counter or gauge.
    pub fn metric(&self, name: &str) -> f64 {
        self.daemon
            .metrics()
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Lines the daemon logged at ERROR.
    pub fn errors(&self) -> Vec<String> {
        self.daemon
            .log()
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\""))
            .map(str::to_owned)
            .collect()
    }

    pub fn assert_no_errors(&self) {
        let errors = self.errors();
        assert!(errors.is_empty(), "pageserver errors: {errors:#?}");
    }

    /// SIGTERM; asserts a clean exit.
    pub fn stop(mut self) {
        let status = self.daemon.terminate();
        assert!(status.success(), "{status}\n{}", self.daemon.log());
    }
}

/// The files of a tar, by path.
pub fn tar_entries(tar: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        out.insert(path, bytes);
    }
    out
}

/// Two basebackups hold the same files with the same bytes.
pub fn assert_same_basebackup(expected: &[u8], actual: &[u8], what: &str) {
    let (expected, actual) = (tar_entries(expected), tar_entries(actual));
    let differing: Vec<&String> = expected
        .keys()
        .chain(actual.keys())
        .filter(|path| expected.get(*path) != actual.get(*path))
        .collect();
    assert!(
        differing.is_empty(),
        "{what}: {} of {} files differ: {differing:?}",
        differing.len(),
        expected.len()
    );
    assert!(
        expected.keys().any(|p| p.starts_with("base/")),
        "{what}: no relation files"
    );
}

/// Starts stock PostgreSQL on a basebackup and runs `query`.
pub fn query_basebackup(tar: &[u8], query: &str) -> String {
    let server = PgServer::start_from(PgConfig::new(), |dir| {
        tar::Archive::new(tar).unpack(dir)?;
        Ok(())
    })
    .expect("PostgreSQL starts from the pageserver's basebackup");
    server.sql(query).unwrap()
}

/// What a basebackup must show of table `t`.
pub const ROWS_QUERY: &str = "SELECT count(*), sum(id), md5(string_agg(v, ',' ORDER BY id)) FROM t";
