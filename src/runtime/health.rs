//! The health and metrics endpoint on `--metrics-addr`: `/healthz` (the process is alive),
//! `/readyz` (the watch caches have synced) and `/metrics`. By default over TLS with `/metrics`
//! behind authentication and authorization ([`crate::runtime::metrics_auth`]; the probes stay
//! open: kubelets probe without a token); plain HTTP with `--metrics-secure=false`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::runtime::metrics::Metrics;
use crate::runtime::metrics_auth::{Decision, MetricsAuth};
use crate::runtime::tls::TlsListener;

/// Liveness and readiness, shared with the controller.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Marks the process ready (caches synced).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "watch caches not synced yet",
        )
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition as a body streamed chunk by chunk (see [`Metrics::exposition`]).
fn exposition(
    metrics: &Metrics,
) -> (
    [(axum::http::HeaderName, &'static str); 1],
    axum::body::Body,
) {
    let chunks = metrics.exposition().map(Ok::<_, std::convert::Infallible>);
    (
        [(axum::http::header::CONTENT_TYPE, OPENMETRICS)],
        axum::body::Body::from_stream(futures::stream::iter(chunks)),
    )
}

async fn metrics(
    State(metrics): State<Arc<Metrics>>,
) -> (
    [(axum::http::HeaderName, &'static str); 1],
    axum::body::Body,
) {
    exposition(&metrics)
}

/// `/metrics` for an authenticated caller allowed to get it.
async fn guarded_metrics(
    State((metrics, auth)): State<(Arc<Metrics>, Arc<MetricsAuth>)>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.decide(authorization).await {
        Ok(Decision::Allowed) => exposition(&metrics).into_response(),
        Ok(Decision::Unauthenticated) => (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            "Unauthorized: present a bearer token the Kubernetes API server accepts\n",
        )
            .into_response(),
        Ok(Decision::Throttled) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, "1")],
            "Too many distinct tokens to review at once; try again\n",
        )
            .into_response(),
        Ok(Decision::Forbidden(user)) => {
            tracing::debug!(
                user,
                "/metrics refused: no get on the non-resource URL /metrics"
            );
            (
                StatusCode::FORBIDDEN,
                "Forbidden: the identity may not get the non-resource URL /metrics (bind it to the chart's metrics-reader ClusterRole)\n",
            )
                .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "/metrics: the API server could not review the caller's token");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the Kubernetes API server could not review the token\n",
            )
                .into_response()
        }
    }
}

/// How the endpoint is served.
pub enum Security {
    /// Plain HTTP; `/metrics` open to whoever reaches the port (`--metrics-secure=false`).
    Plain,
    /// TLS with this configuration; `/metrics` behind `auth`.
    Secure {
        /// The server's TLS.
        tls: Arc<rustls::ServerConfig>,
        /// Who may read `/metrics`.
        auth: Arc<MetricsAuth>,
    },
}

/// Binds `addr`; the returned future serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics_registry: Arc<Metrics>,
    security: Security,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let served = match security {
        Security::Plain => {
            tracing::info!(addr = %bound, scheme = "http", "serving /metrics, /healthz and /readyz");
            let app = Router::new()
                .route("/metrics", get(metrics))
                .with_state(metrics_registry)
                .merge(probes);
            let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
            futures::future::Either::Left(async move { server.await })
        }
        Security::Secure { tls, auth } => {
            tracing::info!(addr = %bound, scheme = "https", "serving /metrics, /healthz and /readyz");
            let app = Router::new()
                .route("/metrics", get(guarded_metrics))
                .with_state((metrics_registry, auth))
                .merge(probes);
            let listener = TlsListener::new(listener, tls)?;
            let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
            futures::future::Either::Right(async move { server.await })
        }
    };
    Ok(served)
}
