//! The observability endpoints: `/metrics` (Prometheus text format), `/healthz` (the process
//! is alive) and `/readyz` (ready to do its job), and [`Health`], the state `/readyz` reports.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::mgmt::MgmtClient;
use crate::pipeline::SourceKind;
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

/// What `/readyz` checks: the tenant (a token, the policy's roles, calls not failing) and the
/// source. Each part of the service reports its own piece through a method.
pub struct Health {
    /// A Management API token was obtained and every policy role resolved (or no tenant is
    /// needed, as in the Kafka bridge).
    tenant: AtomicBool,
    /// The source is consuming (joined its consumer group, the queue answered, the broker of
    /// the bridge answers, the receiver listens).
    source: AtomicBool,
    source_kind: SourceKind,
    /// The Management API client, once connected: asked whether its calls are failing.
    client: OnceLock<MgmtClient>,
    /// The grants ledger, once open: asked whether its database fails.
    ledger: OnceLock<Ledger>,
    /// The other parts' say (helper tasks).
    probes: std::sync::Mutex<Vec<Arc<dyn ReadinessProbe>>>,
}

impl Health {
    pub fn new(source_kind: SourceKind) -> Arc<Health> {
        Arc::new(Health {
            tenant: AtomicBool::new(!source_kind.needs_tenant()),
            source: AtomicBool::new(false),
            source_kind,
            client: OnceLock::new(),
            ledger: OnceLock::new(),
            probes: std::sync::Mutex::new(Vec::new()),
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

    /// The client holds a token and the policy's roles are resolved.
    pub fn tenant_connected(&self, client: &MgmtClient) {
        let _ = self.client.set(client.clone());
        self.tenant.store(true, Ordering::SeqCst);
    }

    /// The ledger is open.
    pub fn ledger_connected(&self, ledger: &Ledger) {
        let _ = self.ledger.set(ledger.clone());
    }

    /// Whether the source is consuming.
    pub fn set_source_connected(&self, connected: bool) {
        self.source.store(connected, Ordering::SeqCst);
    }

    pub fn source_connected(&self) -> bool {
        self.source.load(Ordering::SeqCst)
    }

    /// The reasons the service is not ready; empty when it is.
    pub fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.tenant.load(Ordering::SeqCst) {
            reasons.push("no Management API token or policy roles not resolved yet".to_owned());
        }
        if !self.source_connected() {
            reasons.push(self.source_kind.not_connected().to_owned());
        }
        if let Some(client) = self.client.get() {
            if let Some((blocked, said)) = client.blocked() {
                reasons.push(format!(
                    "the tenant refuses the service ({}): {said}; to fix: {} (events wait, intake paused, nothing lost)",
                    blocked.as_str(),
                    blocked.advice()
                ));
            } else if client.is_failing() {
                reasons.push(
                    "Management API calls failing (retrying; intake paused, nothing lost)"
                        .to_owned(),
                );
            }
        }
        if let Some(said) = self.ledger.get().and_then(|l| l.fault().blocked()) {
            reasons.push(format!(
                "the ledger fails: {said}; to fix: bring its database back or fix [ledger] url (events wait, intake paused, nothing lost)"
            ));
        }
        for probe in self.probes() {
            reasons.extend(probe.not_ready());
        }
        reasons
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
