//! auth0-default-roles: gives Auth0 users their default roles from the tenant's log stream,
//! outside the login path.
//!
//! # Layout
//! Dependencies flow one way:
//! `commands → app → source → pipeline → {policy, dedup, mgmt, ledger} → event`.
//! - [`commands`]: one module per command of the binary (`check`, `action`, `serve` for
//!   `run`/`ingest`, `demo`, `replay`, `reconcile`, `explain`, `sim`, `doctor`, `setup`), each
//!   with its arguments, its `run` and its error type with its exit status; the one reporter
//!   that prints an error's cause chain (`src/main.rs` parses and dispatches).
//! - [`app`]: [`App::build`](app::App::build) wires config, metrics, health, endpoints, pipeline
//!   and source once for `run`, `ingest`, `demo` and the tests; its [`StartError`](app::StartError).
//! - [`exit`]: the documented exit statuses and the trait each error maps itself onto them with.
//! - [`shutdown`]: the one stop request every loop and background task waits on.
//! - [`config`]: the TOML configuration and its validation: the file as written (`sections`),
//!   read into settings (`auth0`, `sources`, the rest in `mod.rs`), secrets resolved, the rules
//!   between sections (`rules`); the only reader of the environment below `main` and `commands`.
//! - [`settings`]: what config and the components share, below both: [`Secret`](settings::Secret),
//!   the [`ResolvedSecret`](settings::ResolvedSecret) the loader makes of each secret,
//!   [`ConfigError`](settings::ConfigError).
//! - [`event`]: Auth0 log events and CloudEvents: the model, envelope detection, the one-pass
//!   reader, trigger selection (pure).
//! - [`policy`]: the default-role rules, the `[policy]` section read, their evaluation (pure).
//! - [`dedup`]: handled `log_id`s and roles already given, in bounded TTL caches.
//! - [`ledger`]: what the service granted, revoked and failed (SQLite or PostgreSQL), and the
//!   readers' leases in a PostgreSQL ledger.
//! - [`mgmt`]: the Management API client (token, roles, users, assignment, retries, failing).
//! - [`pipeline`]: the pure decisions, the outcome of each event and the verdict of each
//!   delivery, profile reads, the roles written, the ledger link; `Pipeline::deliver`.
//! - [`source`]: a folder per transport (`kafka` with the one dead-letter producer the webhook
//!   bridge shares, `sqs`, `webhook` — the `ingest` command —, `auth0_logs` with its Logs API
//!   client, `auth0_events`) and `replay` (files), and what they share: per-user order, the
//!   in-flight cap, pause/resume, drain, quiet logs, the consumers' run summary, and the lease
//!   that keeps one tenant reader active across replicas (`source::lease`) with the reader's
//!   checkpoint in the ledger, handed to it by the wiring (`source::ledger_checkpoint`).
//! - [`progress`]: the progress line of `reconcile` and `replay` (a spinner on a terminal).
//! - [`metrics`]: the Prometheus metrics, each declared once.
//! - [`server`]: `/metrics`, `/healthz`, `/readyz` and the health they report: the source's
//!   connection and the readiness probes the wiring registers (it names no subsystem).
//! - [`generate`]: a reproducible Auth0 log stream with known expected roles (`demo`, benches).
//! - [`reconcile`]: the engine of the `reconcile` command (export, memberships, writes).
//! - [`supervise`]: helper tasks beside the source (the backstop, the log stream's watcher):
//!   failures logged, counted, degraded on `/readyz`, retried with backoff.

#![forbid(unsafe_code)]
// Input reaches the service from the network and files: no unwrap/expect outside tests.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod commands;
pub mod config;
pub mod dedup;
pub mod event;
pub mod exit;
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
pub mod shutdown;
pub mod source;
pub mod supervise;
