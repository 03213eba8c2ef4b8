//! auth0-default-roles: gives Auth0 users their default roles from the tenant's log stream,
//! outside the login path.
//!
//! # Layout
//! Dependencies flow one way: `app → source → pipeline → {policy, dedup, mgmt} → event`.
//! - [`app`]: [`App::build`](app::App::build) wires config, metrics, health, endpoints, pipeline
//!   and source once for `run`, `ingest`, `demo` and the tests; `replay`'s wiring.
//! - [`cli`]: each command of the binary, its arguments and wiring (`src/main.rs` dispatches).
//! - [`shutdown`]: the one stop request every loop and background task waits on.
//! - [`config`]: the TOML configuration and its validation (raw sections → settings).
//! - [`settings`]: what config and the components share, below both: [`Secret`](settings::Secret),
//!   the one secret reader, [`ConfigError`](settings::ConfigError).
//! - [`check`]: the readable form of a configuration (`check`).
//! - [`action`]: the policy compiled into a post-login Action (`action`), for the first token.
//! - [`event`]: Auth0 log events and CloudEvents: the model, envelope detection, the one-pass
//!   reader, trigger selection (pure).
//! - [`policy`]: the default-role rules, the `[policy]` section read, their evaluation (pure).
//! - [`dedup`]: handled `log_id`s and roles already given, in bounded TTL caches.
//! - [`ledger`]: what the service granted, revoked and failed (SQLite or PostgreSQL); `explain`.
//! - [`mgmt`]: the Management API client (token, roles, users, assignment, retries, failing).
//! - [`pipeline`]: the pure decisions, the outcome of each event and the verdict of each
//!   delivery, profile reads, the roles written, the ledger link; `Pipeline::deliver`.
//! - [`source`]: a folder per transport (`kafka`, `sqs`, `webhook` — the `ingest` command —,
//!   `auth0_logs` with its Logs API client) and `replay` (files), and what they share: per-user
//!   order, the in-flight cap, pause/resume, drain, quiet logs.
//! - [`progress`]: the progress line of `reconcile` and `replay` (a spinner on a terminal).
//! - [`metrics`]: the Prometheus metrics, each declared once.
//! - [`server`]: `/metrics`, `/healthz`, `/readyz` and the health they report.
//! - [`demo`]: the `demo` command (mock Kafka cluster + simulator + the real `run` path).
//! - [`generate`]: a reproducible Auth0 log stream with known expected roles.
//! - [`sim_command`]: the `sim` command (the simulator of `crates/mgmt-sim` as a stand-in tenant).
//! - [`supervise`]: helper tasks beside the source (the backstop, the log stream's watcher):
//!   failures logged, counted, degraded on `/readyz`, retried with backoff.

pub mod action;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod dedup;
pub mod demo;
pub mod doctor;
pub mod event;
pub mod generate;
pub mod ledger;
pub mod metrics;
pub mod mgmt;
pub mod pipeline;
pub mod policy;
pub mod progress;
pub mod reconcile;
pub mod server;
pub mod settings;
pub mod setup;
pub mod shutdown;
pub mod sim_command;
pub mod source;
pub mod supervise;
