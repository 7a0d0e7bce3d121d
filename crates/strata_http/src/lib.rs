//! The HTTP endpoint every Strata daemon serves: `/metrics` (Prometheus text format)
//! and `/health`.
//!
//! `/health` answers 200 `ready` once every listener is bound and every timeline is open
//! (the daemon can serve), and 503 with `starting` or `stopping` otherwise, so that a
//! load balancer or Kubernetes readiness probe sends nothing to a daemon that cannot yet
//! (or no longer) serve.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use prometheus::{Encoder, Registry, TextEncoder};

/// Where the daemon is in its life; only `Ready` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    Starting,
    Ready,
    Stopping,
}

#[derive(Clone, Debug)]
struct HttpState {
    registry: Registry,
    readiness: watch::Receiver<Readiness>,
}

/// The registry's metrics in Prometheus's text format.
pub fn encode(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    // The text encoder writes only UTF-8 (names are ASCII, label values are ids).
    String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(format!("non-UTF-8 output: {e}")))
}

/// Registers `<prefix>_build_info{version="…"}`, always 1: which release a daemon runs,
/// so that a rolling upgrade can be followed (`count by (version) (pageserver_build_info)`).
pub fn register_build_info(
    registry: &Registry,
    prefix: &str,
    version: &str,
) -> Result<(), prometheus::Error> {
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            format!("{prefix}_build_info"),
            "Always 1; the version label is the running release",
        ),
        &["version"],
    )?;
    info.with_label_values(&[version]).set(1);
    registry.register(Box::new(info))
}

/// Serve until `shutdown` turns true (or its sender is dropped).
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    readiness: watch::Receiver<Readiness>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health_handler))
        .with_state(HttpState {
            registry,
            readiness,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            // An error means the sender is gone: the daemon is stopping either way.
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

async fn metrics_handler(State(state): State<HttpState>) -> Response {
    match encode(&state.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}

async fn health_handler(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    match *state.readiness.borrow() {
        Readiness::Ready => (StatusCode::OK, "ready\n"),
        Readiness::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        Readiness::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
    }
}
