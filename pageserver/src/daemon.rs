//! The daemon's life: bind, open timelines, serve, and stop cleanly.
//!
//! Start: bind the gRPC and HTTP listeners (so a port conflict fails at once), log the
//! bound addresses and write them to [`PORTS_FILE`], connect to object storage (if
//! configured: claim generations, discard local timelines behind the store), serve HTTP
//! (health says `starting`), open every timeline found in the data directory (starting
//! its walreceiver, layer task and uploader), restore the timelines only the store has,
//! serve gRPC, then report ready.
//!
//! Stop (SIGTERM, SIGINT, or a server failing): health says `stopping`; the servers stop
//! accepting and end their streams; walreceivers and layer tasks stop (every commit is
//! already durable, so nothing is flushed); the ports file is removed. The daemon exits
//! 0 after a clean stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::grpc;
use crate::layers::{self, LayerPolicy};
use crate::limits::{SHUTDOWN_SERVERS_TIMEOUT, SHUTDOWN_TASKS_TIMEOUT};
use crate::metrics::{Metrics, MetricsError};
use crate::remote::{failpoint, Tiering};
use crate::timeline::Timeline;
use crate::timelines::{Timelines, TimelinesError};
use crate::walreceiver::{self, WalReceiverConfig};
use remote_storage::Generation;
use strata_http::Readiness;

/// Name of the file, in the data directory, holding the bound addresses of a running
/// daemon (written once all listeners are bound, removed at clean shutdown). With port 0
/// in the configuration this is how scripts and tests find the ports; `pid` tells a
/// stale file left by a killed daemon from the current one.
pub const PORTS_FILE: &str = "pageserver.ports.json";

/// Content of [`PORTS_FILE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundPorts {
    pub pid: u32,
    pub grpc: SocketAddr,
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
    #[error("opening timelines: {0}")]
    Timelines(#[from] TimelinesError),
    #[error("{what} server failed: {message}")]
    Server { what: &'static str, message: String },
    #[error("object storage: {0}")]
    ObjectStore(String),
    #[error(transparent)]
    Failpoints(#[from] failpoint::FailpointError),
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
    tracing::info!(?config, "pageserver starting");
    failpoint::init()?;
    let metrics = Metrics::new()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let ports_path = config.data_dir.join(PORTS_FILE);
    // A file left by a killed daemon must not be mistaken for this one's.
    remove_if_exists(&ports_path);

    let grpc_listener = bind("gRPC", config.listen_grpc).await?;
    let http_listener = bind("HTTP", config.listen_http).await?;
    let ports = BoundPorts {
        pid: std::process::id(),
        grpc: local_addr("gRPC", config.listen_grpc, &grpc_listener)?,
        http: local_addr("HTTP", config.listen_http, &http_listener)?,
    };
    tracing::info!(grpc = %ports.grpc, http = %ports.http, "listening");
    write_ports_file(&ports_path, &ports)?;

    // Object storage is checked before anything is served: a wrong bucket, endpoint or
    // key is a startup error naming them.
    let tiering = match config.remote_storage() {
        Some(store_config) => Some(
            Tiering::connect(
                &store_config,
                config.generation.map(Generation),
                metrics.registry(),
            )
            .await
            .map_err(DaemonError::ObjectStore)?,
        ),
        None => None,
    };
    if let Some(tiering) = &tiering {
        tiering
            .prepare(&config.data_dir, config.checkpoint_distance)
            .await
            .map_err(|e| DaemonError::ObjectStore(format!("attaching: {e:#}")))?;
    }

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

    // Every timeline, opened now or created later, gets its walreceiver and layer task.
    let tasks = Arc::new(Mutex::new(JoinSet::new()));
    let on_open = {
        let tasks = tasks.clone();
        let shutdown = shutdown_rx.clone();
        let runtime = tokio::runtime::Handle::current();
        let policy = LayerPolicy {
            image_layer_after_deltas: config.image_layer_after_deltas,
            checkpoint_timeout: config.checkpoint_timeout,
        };
        let walreceiver = WalReceiverConfig {
            safekeepers: config.safekeepers.clone(),
            wal_stall_timeout: config.wal_stall_timeout,
        };
        let tiering = tiering.clone();
        Box::new(move |timeline: &Arc<Timeline>| {
            let mut tasks = tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // The fetcher first: the layer task may need an evicted layer at once.
            if let Some(tiering) = &tiering {
                let uploader = tiering.attach(timeline, runtime.clone(), shutdown.clone());
                tasks.spawn_on(uploader, &runtime);
            }
            tasks.spawn_on(
                layers::run(timeline.clone(), policy, shutdown.clone()),
                &runtime,
            );
            tasks.spawn_on(
                walreceiver::run(timeline.clone(), walreceiver.clone(), shutdown.clone()),
                &runtime,
            );
        })
    };
    let timelines = {
        let (data_dir, distance, metrics) = (
            config.data_dir.clone(),
            config.checkpoint_distance,
            metrics.clone(),
        );
        tokio::task::spawn_blocking(move || Timelines::open(&data_dir, distance, metrics, on_open))
            .await
            .map_err(|e| DaemonError::Server {
                what: "timeline loading",
                message: e.to_string(),
            })??
    };
    let timelines = Arc::new(timelines);
    if let Some(tiering) = &tiering {
        let restored = tiering
            .restore_missing(&timelines)
            .await
            .map_err(|e| DaemonError::ObjectStore(format!("restoring timelines: {e:#}")))?;
        if restored > 0 {
            tracing::info!(restored, "timelines restored from object storage");
        }
        tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .spawn(tiering.eviction(config.disk_budget_bytes, shutdown_rx.clone()));
    }
    let service = grpc::Service {
        timelines: timelines.clone(),
        metrics: metrics.clone(),
        wait_lsn_timeout: config.wait_lsn_timeout,
        max_import_bytes: config.max_import_bytes,
        shutdown: shutdown_rx.clone(),
    };
    servers.spawn(named(
        "gRPC",
        shutdown_rx.clone(),
        grpc::serve(grpc_listener, service),
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
    let mut tasks = std::mem::take(
        &mut *tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    stop_tasks(&mut tasks).await;
    remove_if_exists(&ports_path);
    match failure {
        Some(error) => Err(error),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
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

/// Wait (bounded) for walreceivers and layer tasks to notice the shutdown. A layer
/// write still running is abandoned: its temporary file is removed at the next open.
async fn stop_tasks(tasks: &mut JoinSet<()>) {
    let stopped = tokio::time::timeout(SHUTDOWN_TASKS_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        tracing::warn!(timeout = ?SHUTDOWN_TASKS_TIMEOUT, "timeline tasks did not stop in time");
        tasks.abort_all();
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
