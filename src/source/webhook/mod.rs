//! `ingest`: receives Auth0's Custom Webhook log stream over HTTP (the `webhook` source).
//!
//! Auth0 has no native Kafka sink; this is the receiver in front of it. Each delivery (JSON
//! Lines, JSON Array, JSON Object `{"logs": [...]}`, or one EventBridge event from an API
//! destination) is split into records, and then either
//! - **bridged** into `[kafka] topic`, keyed by `user_id` (one user's events stay in one
//!   partition, in order), with an idempotent `acks=all` producer: 200 only once the broker
//!   acknowledged every record, else 503 so Auth0 retries the batch; a record the topic
//!   refuses for good (too large, not authorized) goes to the dead-letter topic instead of
//!   failing every retry; or
//! - **processed directly** by the pipeline: 200 once every event reached a final outcome
//!   within the deadline, else 503.
//!
//! Authorization: Auth0 sends the configured token verbatim in `Authorization`; it is compared
//! in constant time, and anything else gets a bare 401 before the body is read.

mod bridge;
mod direct;
mod http;

pub use bridge::{bridge_config, Bridge};
pub use direct::Direct;
pub use http::{bind, router, serve, serve_on, split_records, InvalidRecord, RawRecord};

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::settings::{ConfigError, ResolvedSecret, Secret};

use std::net::SocketAddr;

pub use crate::settings::WEBHOOK_TOKEN_ENV;

/// What `ingest` does with the records it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestMode {
    /// Produce each record to `[kafka] topic`, keyed by user id (the bridge).
    Kafka,
    /// Run the pipeline in-process.
    Direct,
}

/// Validated `[ingest]` settings, the webhook token resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestSettings {
    pub listen: SocketAddr,
    pub path: String,
    pub mode: IngestMode,
    /// The expected `Authorization` header, resolved at load from `AUTH0_WEBHOOK_TOKEN` or
    /// `token_file`.
    pub token: ResolvedSecret,
    pub max_body_bytes: usize,
    /// Direct mode: how long a delivery may wait for its events before answering 503.
    pub direct_deadline: Duration,
    /// Direct mode: events in flight at most; a delivery that would exceed it gets 503 at once.
    pub max_inflight: usize,
    /// A connection that has not sent its request headers within this is closed.
    pub header_read_timeout: Duration,
    /// A request whose body has not fully arrived within this gets 408.
    pub body_read_timeout: Duration,
    /// Open connections at most; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// How long shutdown waits for open requests before dropping their connections.
    pub shutdown_grace: Duration,
}

impl IngestSettings {
    /// The expected `Authorization` header value, or the error naming `AUTH0_WEBHOOK_TOKEN`
    /// and `ingest.token_file`.
    pub fn token(&self) -> Result<Secret, ConfigError> {
        self.token.get().cloned()
    }
}

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot create the Kafka producer: {0}")]
    Producer(rdkafka::error::KafkaError),
    #[error("cannot listen on {addr} ([ingest] listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Where records go.
pub enum Backend {
    Bridge(Arc<Bridge>),
    Direct(Direct),
}

/// Everything a request needs.
pub struct IngestState {
    token: Secret,
    metrics: Arc<Metrics>,
    backend: Backend,
    max_body_bytes: usize,
    body_read_timeout: Duration,
}

impl IngestState {
    pub fn new(
        settings: &IngestSettings,
        token: Secret,
        metrics: Arc<Metrics>,
        backend: Backend,
    ) -> Arc<IngestState> {
        Arc::new(IngestState {
            token,
            metrics,
            backend,
            max_body_bytes: settings.max_body_bytes,
            body_read_timeout: settings.body_read_timeout,
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}

#[cfg(test)]
mod tests;
