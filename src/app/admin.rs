//! The admin endpoint (`[admin] listen`): `GET /healthz` (readiness), `GET /livez` (liveness) and
//! `GET /metrics`, nothing else.
//!
//! Readiness and liveness differ on purpose: a Discord gateway outage or an unwritable journal
//! makes the bot not *ready* (no traffic should count on it), but restarting it would not help,
//! so the liveness probe keeps answering 200 while the process serves. Otherwise an outage becomes
//! a restart loop.
//!
//! The endpoint is meant for a kubelet or a Prometheus scraper (`deploy/kubernetes/networkpolicy.yaml`
//! admits only them), but it must survive anyone who can reach it:
//! - at most [`Limits::max_connections`] connections are served at once (further ones wait in the
//!   kernel's backlog);
//! - one peer address holds at most [`Limits::max_per_peer`] of them, and a new connection from a
//!   peer at its cap closes that peer's oldest connection still waiting for its request head. So
//!   a flood of idle connections costs its sender its own older ones, never a probe its answer,
//!   even a probe from the same address (a kubelet behind the same NAT, a local scraper);
//! - a connection that has not sent its request head within [`Limits::header_read_timeout`] is
//!   closed, and none lives longer than [`Limits::connection_timeout`];
//! - one request per connection (no keep-alive), so an idle client cannot park on a slot between
//!   requests.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

use crate::metrics::Metrics;

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
    /// What `/metrics` serves: the core's registry.
    pub metrics: Arc<Metrics>,
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
            metrics: Arc::default(),
        }
    }
}

/// How much of the process a client of the admin endpoint may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; the rest wait, unaccepted, in the listen backlog.
    pub max_connections: usize,
    /// Connections one peer address may hold. At the cap, its new connection closes its oldest
    /// one that has not sent a request head yet (or, when all are being answered, is closed).
    pub max_per_peer: usize,
    /// From accept to the end of the request head.
    pub header_read_timeout: Duration,
    /// From accept to the close: bounds a slow body, a slow reader and the handler.
    pub connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // A kubelet probe times out after 1 s by default and probes one at a time; Prometheus
        // scrapes one at a time. 64 slots is ample for them and small for an attacker's sockets,
        // and 8 a peer leaves a kubelet's readiness and liveness probes room beside a scraper on
        // the same address. Both send their request head at once: 2 s is generous.
        Limits {
            max_connections: 64,
            max_per_peer: 8,
            header_read_timeout: Duration::from_secs(2),
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

/// The open connections of each peer address, oldest first.
#[derive(Default)]
struct Peers {
    by_ip: HashMap<IpAddr, Vec<Peer>>,
    next_id: u64,
}

struct Peer {
    id: u64,
    /// Set once hyper has read the request head: the connection is being answered.
    answering: Arc<AtomicBool>,
    /// Closes the connection.
    close: Option<oneshot::Sender<()>>,
}

impl Peers {
    /// Registers a connection from `ip`, making room by closing the peer's oldest connection
    /// that is still waiting for its head; `None` when there is no such room.
    fn admit(
        &mut self,
        ip: IpAddr,
        cap: usize,
        answering: &Arc<AtomicBool>,
    ) -> Option<(u64, oneshot::Receiver<()>)> {
        let conns = self.by_ip.entry(ip).or_default();
        if conns.len() >= cap.max(1) {
            let idle = conns
                .iter()
                .position(|c| !c.answering.load(Ordering::Acquire))?;
            let mut evicted = conns.remove(idle);
            if let Some(close) = evicted.close.take() {
                let _ = close.send(());
            }
        }
        let (close, closed) = oneshot::channel();
        self.next_id += 1;
        conns.push(Peer {
            id: self.next_id,
            answering: Arc::clone(answering),
            close: Some(close),
        });
        Some((self.next_id, closed))
    }

    fn lock(peers: &Mutex<Peers>) -> std::sync::MutexGuard<'_, Peers> {
        peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn leave(&mut self, ip: IpAddr, id: u64) {
        if let Some(conns) = self.by_ip.get_mut(&ip) {
            conns.retain(|c| c.id != id);
            if conns.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
    }
}

async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let peers = Arc::new(Mutex::new(Peers::default()));

    loop {
        // A slot before the accept: when all are taken, new connections stay in the backlog
        // instead of costing a task, a buffer and a file descriptor each.
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, ip) = match listener.accept().await {
            Ok((stream, peer)) => (stream, peer.ip()),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "admin endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let answering = Arc::new(AtomicBool::new(false));
        let Some((id, evicted)) = Peers::lock(&peers).admit(ip, limits.max_per_peer, &answering)
        else {
            // Every connection of this peer is being answered: this one waits for nothing.
            tracing::debug!(%ip, "admin endpoint: peer at its connection cap");
            continue;
        };
        let router = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |request| {
            answering.store(true, Ordering::Release);
            hyper::service::Service::call(&router, request)
        });
        let peers = Arc::clone(&peers);
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(false)
                // The smallest hyper allows: our requests are a line and a few headers.
                .max_buf_size(8192)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = tokio::time::timeout(limits.connection_timeout, connection) => match served {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "admin endpoint: connection failed"),
                    Err(_) => tracing::debug!("admin endpoint: connection timed out"),
                },
                _ = evicted => tracing::debug!(%ip, "admin endpoint: closed an idle connection for its peer's newer one"),
            }
            Peers::lock(&peers).leave(ip, id);
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

async fn metrics(State(checks): State<Arc<Checks>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        checks.metrics.render(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_at_its_cap_loses_its_oldest_idle_connection_never_one_being_answered() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        let mut peers = Peers::default();
        let flags: Vec<_> = (0..4).map(|_| Arc::new(AtomicBool::new(false))).collect();
        let (a, mut a_closed) = peers.admit(ip, 2, &flags[0]).unwrap();
        let (_, mut b_closed) = peers.admit(ip, 2, &flags[1]).unwrap();
        // Another address has its own budget.
        let (_, mut o_closed) = peers.admit(other, 2, &flags[3]).unwrap();
        // The first is being answered: the second, idle, makes room.
        flags[0].store(true, Ordering::Release);
        let (c, _c_closed) = peers.admit(ip, 2, &flags[2]).unwrap();
        assert!(
            a_closed.try_recv().is_err(),
            "an answering connection was closed"
        );
        assert_eq!(b_closed.try_recv(), Ok(()));
        assert!(o_closed.try_recv().is_err());
        // Both being answered: no room, and nothing closed.
        flags[2].store(true, Ordering::Release);
        assert!(peers
            .admit(ip, 2, &Arc::new(AtomicBool::new(false)))
            .is_none());
        assert!(a_closed.try_recv().is_err());
        // Leaving frees the room; an address with no connections is forgotten.
        peers.leave(ip, a);
        peers.leave(ip, c);
        assert!(!peers.by_ip.contains_key(&ip));
        assert!(peers.by_ip.contains_key(&other));
    }
}
