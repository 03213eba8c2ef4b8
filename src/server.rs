//! The observability endpoints: `/metrics` (Prometheus text format), `/healthz` (the process
//! is alive) and `/readyz` (ready to do its job).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// What `/readyz` checks. Each flag is set by the part of the service it belongs to.
pub struct Health {
    metrics: Arc<Metrics>,
    /// A Management API token was obtained.
    pub token: AtomicBool,
    /// Every role the policy names was resolved to an id.
    pub roles: AtomicBool,
    /// The source is consuming (joined its consumer group, or the queue answered).
    pub source: AtomicBool,
    /// Which source, for the `/readyz` text.
    source_name: &'static str,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>, source_name: &'static str) -> Arc<Health> {
        Arc::new(Health {
            metrics,
            token: AtomicBool::new(false),
            roles: AtomicBool::new(false),
            source: AtomicBool::new(false),
            source_name,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The reasons the service is not ready; empty when it is.
    pub fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.token.load(Ordering::Relaxed) {
            reasons.push("no Management API token yet".to_owned());
        }
        if !self.roles.load(Ordering::Relaxed) {
            reasons.push("policy roles not resolved yet".to_owned());
        }
        if !self.source.load(Ordering::Relaxed) {
            reasons.push(match self.source_name {
                "kafka" => "not a member of the consumer group yet".to_owned(),
                "kafka-bridge" => "the Kafka broker does not answer".to_owned(),
                "http" => "not listening yet".to_owned(),
                other => format!("{other} source not connected yet"),
            });
        }
        if self.metrics.mgmt_failing.get() != 0 {
            reasons.push(
                "Management API calls failing (retrying; intake paused, nothing lost)".to_owned(),
            );
        }
        reasons
    }
}

/// The router serving the three endpoints.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        health.metrics.render(),
    )
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let reasons = health.not_ready();
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("; ")),
        )
    }
}

/// Binds `addr` and serves in the background. Fails when the address cannot be bound.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(health);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "metrics server stopped");
        }
    });
    Ok(local)
}
