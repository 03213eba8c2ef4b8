//! auth0-default-roles: gives Auth0 users their default roles from the tenant's log stream,
//! outside the login path.
//!
//! # Layout
//! - [`demo`]: the `demo` command (mock Kafka cluster + simulator + the real `run` path).
//! - [`event`]: Auth0 log events, envelope detection, trigger selection (pure).
//! - [`policy`]: the default-role rules and their evaluation (pure).
//! - [`config`]: the TOML configuration and its validation.
//! - [`dedup`]: handled `log_id`s and roles already given, in bounded TTL caches.
//! - [`mgmt`]: the Management API client (token, roles, users, assignment, retries).
//! - [`metrics`]: the Prometheus metrics.
//! - [`pipeline`]: the stages every source shares and the outcome of each event.
//! - [`replay`]: the `replay` command (backfill from files or stdin).
//! - [`generate`]: a reproducible Auth0 log stream with known expected roles.
//! - [`ingest`]: the `ingest` command (Auth0 Custom Webhook receiver: Kafka bridge or direct).
//! - [`kafka`]: the Kafka consumer behind `run` (at-least-once, ordered per user).
//! - [`sqs`]: the EventBridge → SQS consumer behind `run` (delete after the outcome, redrive).
//! - [`sequencer`]: per-user ordering for concurrent sources.
//! - [`server`]: `/metrics`, `/healthz`, `/readyz`.

pub mod config;
pub mod dedup;
pub mod demo;
pub mod event;
pub mod generate;
pub mod ingest;
pub mod kafka;
pub mod metrics;
pub mod mgmt;
pub mod pipeline;
pub mod policy;
pub mod replay;
pub mod sequencer;
pub mod server;
pub mod sqs;
