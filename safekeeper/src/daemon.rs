//! The daemon's life: bind, open timelines, serve, and stop cleanly.
//!
//! Start: connect to object storage if one is configured (a wrong bucket, endpoint or
//! key fails here, naming the store), bind the gRPC, replication and HTTP listeners (so a port conflict fails at
//! once), log the bound addresses and write them to [`PORTS_FILE`], serve HTTP (health
//! says `starting`), open every timeline found in the data directory, serve gRPC and the
//! replication protocol, then report ready.
//!
//! Stop (SIGTERM, SIGINT, or a server failing): health says `stopping`; the servers stop
//! accepting and end their streams; every timeline flushes its WAL and stops; the ports
//! file is removed. The daemon exits 0 after a clean stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::limits::SHUTDOWN_SERVERS_TIMEOUT;
use crate::metrics::{Metrics, MetricsError};
use crate::offload::metrics::OffloadMetrics;
use crate::offload::peers::{PeerAddressError, Peers};
use crate::offload::Offload;
use crate::timelines::{TimelineError, Timelines};
use crate::{grpc, replication};
use strata_http::Readiness;

/// Name of the file, in the data directory, holding the bound addresses of a running
/// daemon (written once all listeners are bound, removed at clean shutdown). With port 0
/// in the configuration this is how scripts and tests find the ports; `pid` tells a
/// stale file left by a killed daemon from the current one.
pub const PORTS_FILE: &str = "safekeeper.ports.json";

/// Content of [`PORTS_FILE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundPorts {
    pub pid: u32,
    pub grpc: SocketAddr,
    pub pg: SocketAddr,
    pub http: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binding the {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    PortsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Not a `#[source]`: the message already ends with it, and a one-line error
    /// printed with its chain would say it twice.
    #[error("connecting to object storage: {0}")]
    ObjectStore(remote_storage::RemoteError),
    #[error(transparent)]
    Peer(#[from] PeerAddressError),
    #[error("opening timelines: {0}")]
    Timelines(#[from] TimelineError),
    #[error("{what} server failed: {message}")]
    Server { what: &'static str, message: String },
}

/// Resolves on SIGTERM or SIGINT (or at once when signal handlers cannot be installed,
/// which only happens when the process is out of resources: stopping is then the safe
/// choice).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, stopping"),
        _ = int.recv() => tracing::info!("SIGINT received, stopping"),
    }
}

/// Run the daemon until `stop` resolves or a server fails.
pub async fn run(config: Config, stop: impl Future<Output = ()>) -> Result<(), DaemonError> {
    tracing::info!(id = %config.id, ?config, "safekeeper starting");
    let metrics = Metrics::new()?;
    let offload = connect_offload(&config, &metrics).await?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let ports_path = config.data_dir.join(PORTS_FILE);
    // A file left by a killed daemon must not be mistaken for this one's.
    remove_if_exists(&ports_path);

    let grpc_listener = bind("gRPC", config.listen_grpc).await?;
    let pg_listener = bind("replication", config.listen_pg).await?;
    let http_listener = bind("HTTP", config.listen_http).await?;
    let ports = BoundPorts {
        pid: std::process::id(),
        grpc: local_addr("gRPC", config.listen_grpc, &grpc_listener)?,
        pg: local_addr("replication", config.listen_pg, &pg_listener)?,
        http: local_addr("HTTP", config.listen_http, &http_listener)?,
    };
    tracing::info!(grpc = %ports.grpc, pg = %ports.pg, http = %ports.http, "listening");
    write_ports_file(&ports_path, &ports)?;

    let (readiness_tx, readiness_rx) = watch::channel(Readiness::Starting);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut servers = JoinSet::new();
    servers.spawn(named(
        "HTTP",
        shutdown_rx.clone(),
        strata_http::serve(
            http_listener,
            metrics.registry().clone(),
            readiness_rx,
            shutdown_rx.clone(),
        ),
    ));

    let timelines = Timelines::open(&config, metrics.clone(), offload).await?;
    servers.spawn(named(
        "gRPC",
        shutdown_rx.clone(),
        grpc::serve(
            grpc_listener,
            timelines.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
        ),
    ));
    servers.spawn(named(
        "replication",
        shutdown_rx.clone(),
        replication::serve(pg_listener, timelines.clone(), shutdown_rx.clone()),
    ));
    readiness_tx.send_replace(Readiness::Ready);
    tracing::info!(timelines = timelines.len(), "ready");

    let failure = tokio::select! {
        () = stop => None,
        Some(joined) = servers.join_next() => Some(server_failure(joined)),
    };
    readiness_tx.send_replace(Readiness::Stopping);
    shutdown_tx.send_replace(true);
    stop_servers(&mut servers).await;
    timelines.shutdown().await;
    remove_if_exists(&ports_path);
    match failure {
        Some(error) => Err(error),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// With an object store configured: connect to it (checking the bucket and the
/// credentials) and to the peers, for the timelines' offloaders.
async fn connect_offload(
    config: &Config,
    metrics: &Metrics,
) -> Result<Option<Arc<Offload>>, DaemonError> {
    let Some(store_config) = config
        .object_store_config()
        .map_err(DaemonError::ObjectStore)?
    else {
        if !config.peers.is_empty() {
            tracing::info!("peers are configured but no object store: WAL is not offloaded");
        }
        return Ok(None);
    };
    let store = remote_storage::connect(&store_config)
        .await
        .map_err(DaemonError::ObjectStore)?;
    let store = remote_storage::MeteredStorage::new(store, metrics.registry(), "safekeeper")
        .map_err(MetricsError::from)?;
    let offload_metrics = OffloadMetrics::new(metrics.registry()).map_err(MetricsError::from)?;
    let peers = Peers::new(&config.peers)?;
    tracing::info!(
        store = %remote_storage::RemoteStorage::describe(&store),
        peers = config.peers.len(),
        "WAL offload to object storage"
    );
    Ok(Some(Arc::new(Offload::new(
        config.id,
        Arc::new(store),
        peers,
        offload_metrics,
        config.wal_retention_bytes,
    ))))
}

type ServerResult = Result<(), DaemonError>;

/// Runs a server; its ending before shutdown was asked for is a failure.
async fn named<E: std::fmt::Display>(
    what: &'static str,
    shutdown: watch::Receiver<bool>,
    server: impl Future<Output = Result<(), E>>,
) -> ServerResult {
    let failed = |message: String| DaemonError::Server { what, message };
    match server.await {
        Err(e) => Err(failed(e.to_string())),
        Ok(()) if !*shutdown.borrow() => Err(failed("stopped unexpectedly".into())),
        Ok(()) => Ok(()),
    }
}

fn server_failure(joined: Result<ServerResult, tokio::task::JoinError>) -> DaemonError {
    match joined {
        Ok(Err(error)) => error,
        Ok(Ok(())) => DaemonError::Server {
            what: "a",
            message: "stopped before shutdown".into(),
        },
        Err(join) => DaemonError::Server {
            what: "a",
            message: format!("task failed: {join}"),
        },
    }
}

/// Wait (bounded) for the servers to drain their connections.
async fn stop_servers(servers: &mut JoinSet<ServerResult>) {
    let drained = tokio::time::timeout(SHUTDOWN_SERVERS_TIMEOUT, async {
        while let Some(joined) = servers.join_next().await {
            if let Ok(Err(error)) = joined {
                tracing::warn!(%error, "while stopping");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            timeout = ?SHUTDOWN_SERVERS_TIMEOUT,
            "servers did not stop in time; aborting their connections"
        );
        servers.abort_all();
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { what, addr, source })
}

fn local_addr(
    what: &'static str,
    addr: SocketAddr,
    listener: &TcpListener,
) -> Result<SocketAddr, DaemonError> {
    listener
        .local_addr()
        .map_err(|source| DaemonError::Bind { what, addr, source })
}

/// Written to a temporary name and renamed, so a reader never sees half a file. Not
/// fsynced: the file describes this process only and is useless after a crash.
fn write_ports_file(path: &Path, ports: &BoundPorts) -> Result<(), DaemonError> {
    let error = |source| DaemonError::PortsFile {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_string(ports).map_err(|e| error(e.into()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json + "\n").map_err(error)?;
    std::fs::rename(&tmp, path).map_err(error)
}

fn remove_if_exists(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "cannot remove"),
    }
}
