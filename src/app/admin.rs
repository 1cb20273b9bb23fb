//! The admin endpoint (`[admin] listen`): `GET /healthz` (readiness), `GET /livez` (liveness) and
//! `GET /metrics`, nothing else.
//!
//! Readiness and liveness differ on purpose: a Discord gateway outage or an unwritable journal
//! makes the bot not *ready* (no traffic should count on it), but restarting it would not help,
//! so the liveness probe keeps answering 200 while the process serves. Otherwise an outage becomes
//! a restart loop.
//!
//! The endpoint is meant for a kubelet or a Prometheus scraper, but it must survive anyone who can
//! reach it: at most [`Limits::max_connections`] connections are served at once (further ones wait
//! in the kernel's backlog), a connection that has not sent its request head within
//! [`Limits::header_read_timeout`] is closed, and no connection lives longer than
//! [`Limits::connection_timeout`]. One request per connection (no keep-alive), so an idle client
//! cannot park on a slot between requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::METRICS;

/// Says whether the bot is healthy, and if not, why.
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The two probes. `ready` backs `/healthz` (gateway connected, journal writable: may fail during
/// an outage), `live` backs `/livez` (fails only if a restart would help).
#[derive(Clone)]
pub struct Checks {
    pub ready: HealthCheck,
    pub live: HealthCheck,
    /// Lines added under a passing `/healthz` (a degraded part that does not make the bot
    /// unready, such as a catalog that cannot refresh).
    pub detail: Detail,
}

/// What `/healthz` adds to `ok` when something is degraded but the bot still serves.
pub type Detail = Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl Checks {
    /// Readiness from `ready`; liveness is "the process answers".
    pub fn ready_only(ready: HealthCheck) -> Self {
        Checks {
            ready,
            live: Arc::new(|| Ok(())),
            detail: Arc::new(|| None),
        }
    }
}

/// How much of the process a client of the admin endpoint may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; the rest wait, unaccepted, in the listen backlog.
    pub max_connections: usize,
    /// From accept to the end of the request head.
    pub header_read_timeout: Duration,
    /// From accept to the close: bounds a slow body, a slow reader and the handler.
    pub connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // A kubelet probe times out after 1 s by default and probes one at a time; Prometheus
        // scrapes one at a time. 64 slots is ample for them and small for an attacker's sockets.
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(10),
        }
    }
}

/// Binds now (so a taken port fails at start-up) and serves in the background. `/livez` always
/// answers 200 while the process serves.
pub async fn start(listen: SocketAddr, health: HealthCheck) -> std::io::Result<SocketAddr> {
    start_with(listen, Checks::ready_only(health), Limits::default()).await
}

/// [`start`] with both probes and explicit limits.
pub async fn start_with(
    listen: SocketAddr,
    checks: Checks,
    limits: Limits,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, router(checks), limits));
    tracing::info!(%addr, "admin endpoint listening: /healthz, /livez, /metrics");
    Ok(addr)
}

fn router(checks: Checks) -> Router {
    Router::new()
        .route("/healthz", get(readiness))
        .route("/livez", get(liveness))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(Arc::new(checks))
}

async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        // A slot before the accept: when all are taken, new connections stay in the backlog
        // instead of costing a task, a buffer and a file descriptor each.
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "admin endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(false)
                // The smallest hyper allows: our requests are a line and a few headers.
                .max_buf_size(8192)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.connection_timeout, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "admin endpoint: connection failed"),
                Err(_) => tracing::debug!("admin endpoint: connection timed out"),
            }
        });
    }
}

async fn readiness(State(checks): State<Arc<Checks>>) -> Response {
    match ((checks.ready)(), (checks.detail)()) {
        (Ok(()), Some(detail)) => text(StatusCode::OK, format!("ok\n{detail}\n")),
        _ => probe(&checks.ready),
    }
}

async fn liveness(State(checks): State<Arc<Checks>>) -> Response {
    probe(&checks.live)
}

fn probe(check: &HealthCheck) -> Response {
    match check() {
        Ok(()) => text(StatusCode::OK, "ok\n".to_owned()),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        METRICS.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: try /healthz, /livez or /metrics\n".to_owned(),
    )
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}
