//! The observability endpoints: `/metrics` (Prometheus text format), `/healthz` (the process
//! is alive) and `/readyz` (ready to do its job), and [`Health`], the state `/readyz` reports:
//! the source's connection and the say of each [`ReadinessProbe`] the wiring registers. It
//! names no subsystem.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// A part of the service that has its say on `/readyz`, without `Health` knowing what it is:
/// reasons it is not ready (503), and reasons it works degraded (still 200).
pub trait ReadinessProbe: Send + Sync {
    /// Why the service cannot do its job now (empty: nothing to say).
    fn not_ready(&self) -> Vec<String> {
        Vec::new()
    }
    /// What does not work while the service still does its job (a helper task failing).
    fn degraded(&self) -> Vec<String> {
        Vec::new()
    }
    /// What the service is doing that is worth knowing while ready (a replica standing by).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The say of a part the wiring makes later (a client still connecting): `until` as its reason
/// not to be ready until [`Pending::set`] gives the part, then the part's own say.
pub struct Pending<P> {
    part: std::sync::OnceLock<P>,
    until: String,
}

impl<P> Pending<P> {
    pub fn new(until: impl Into<String>) -> Pending<P> {
        Pending {
            part: std::sync::OnceLock::new(),
            until: until.into(),
        }
    }

    /// The part is here: from now on it has its say. `false` when it was given already.
    pub fn set(&self, part: P) -> bool {
        self.part.set(part).is_ok()
    }
}

impl<P: ReadinessProbe> ReadinessProbe for Pending<P> {
    fn not_ready(&self) -> Vec<String> {
        match self.part.get() {
            Some(part) => part.not_ready(),
            None => vec![self.until.clone()],
        }
    }
    fn degraded(&self) -> Vec<String> {
        self.part.get().map(P::degraded).unwrap_or_default()
    }
    fn notes(&self) -> Vec<String> {
        self.part.get().map(P::notes).unwrap_or_default()
    }
}

/// Whether the source is consuming (joined its consumer group, the queue answered, the
/// broker of the bridge answers, the receiver listens), and what `/readyz` says until it is.
struct SourceConnection {
    connected: AtomicBool,
    not_connected: String,
}

impl ReadinessProbe for SourceConnection {
    fn not_ready(&self) -> Vec<String> {
        if self.connected.load(Ordering::SeqCst) {
            Vec::new()
        } else {
            vec![self.not_connected.clone()]
        }
    }
}

/// What `/readyz` reports: the source's connection, then the say of each registered probe
/// (the tenant, the ledger, the helper tasks: the wiring registers them), in that order.
pub struct Health {
    source: Arc<SourceConnection>,
    probes: std::sync::Mutex<Vec<Arc<dyn ReadinessProbe>>>,
}

impl Health {
    /// A health whose source says `source_not_connected` until it reports itself connected.
    pub fn new(source_not_connected: impl Into<String>) -> Arc<Health> {
        let source = Arc::new(SourceConnection {
            connected: AtomicBool::new(false),
            not_connected: source_not_connected.into(),
        });
        Arc::new(Health {
            source: Arc::clone(&source),
            probes: std::sync::Mutex::new(vec![source as Arc<dyn ReadinessProbe>]),
        })
    }

    /// Adds a part's say to `/readyz`.
    pub fn add_probe(&self, probe: Arc<dyn ReadinessProbe>) {
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(probe);
    }

    fn probes(&self) -> Vec<Arc<dyn ReadinessProbe>> {
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What works degraded while the service is ready (the probes' say); empty when nothing.
    pub fn degraded(&self) -> Vec<String> {
        self.probes().iter().flat_map(|p| p.degraded()).collect()
    }

    /// What the probes note while the service is ready (a replica standing by); empty when
    /// nothing.
    pub fn notes(&self) -> Vec<String> {
        self.probes().iter().flat_map(|p| p.notes()).collect()
    }

    /// Whether the source is consuming.
    pub fn set_source_connected(&self, connected: bool) {
        self.source.connected.store(connected, Ordering::SeqCst);
    }

    pub fn source_connected(&self) -> bool {
        self.source.connected.load(Ordering::SeqCst)
    }

    /// The reasons the service is not ready; empty when it is.
    pub fn not_ready(&self) -> Vec<String> {
        self.probes().iter().flat_map(|p| p.not_ready()).collect()
    }
}

#[derive(Clone)]
struct Endpoints {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// The router serving the three endpoints.
pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Endpoints { health, metrics })
}

async fn render_metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        endpoints.metrics.render(),
    )
}

async fn readyz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let reasons = endpoints.health.not_ready();
    if reasons.is_empty() {
        let mut body = "ready".to_owned();
        let notes = endpoints.health.notes();
        if !notes.is_empty() {
            body.push_str(&format!(" ({})", notes.join("; ")));
        }
        let degraded = endpoints.health.degraded();
        if !degraded.is_empty() {
            body.push_str(&format!(", degraded: {}", degraded.join("; ")));
        }
        body.push('\n');
        (StatusCode::OK, body)
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("; ")),
        )
    }
}

/// Binds `addr` and serves in the background until `shutdown`. Fails when the address cannot
/// be bound.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(health, metrics);
    tokio::spawn(async move {
        let stopped = async move { shutdown.wait().await };
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(%err, "metrics server stopped");
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe saying one fixed thing, or nothing.
    #[derive(Default)]
    struct Says {
        not_ready: Option<&'static str>,
        degraded: Option<&'static str>,
    }

    impl ReadinessProbe for Says {
        fn not_ready(&self) -> Vec<String> {
            self.not_ready.iter().map(|s| (*s).to_owned()).collect()
        }
        fn degraded(&self) -> Vec<String> {
            self.degraded.iter().map(|s| (*s).to_owned()).collect()
        }
    }

    #[test]
    fn readiness_is_the_source_then_each_probe_in_the_order_registered() {
        let health = Health::new("not joined yet");
        health.add_probe(Arc::new(Says {
            not_ready: Some("the tenant refuses"),
            ..Says::default()
        }));
        health.add_probe(Arc::new(Says {
            degraded: Some("a helper fails"),
            ..Says::default()
        }));
        health.add_probe(Arc::new(Says::default()));
        assert_eq!(health.not_ready(), ["not joined yet", "the tenant refuses"]);
        assert_eq!(health.degraded(), ["a helper fails"]);
        health.set_source_connected(true);
        assert!(health.source_connected());
        assert_eq!(health.not_ready(), ["the tenant refuses"]);
    }

    #[test]
    fn a_pending_part_says_why_until_it_is_given_then_has_its_own_say() {
        let pending: Pending<Says> = Pending::new("no client yet");
        assert_eq!(pending.not_ready(), ["no client yet"]);
        assert!(pending.degraded().is_empty());
        assert!(pending.set(Says {
            degraded: Some("slow"),
            ..Says::default()
        }));
        assert!(pending.not_ready().is_empty());
        assert_eq!(pending.degraded(), ["slow"]);
        assert!(!pending.set(Says::default()), "given once");
    }
}
