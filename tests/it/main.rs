//! The service's integration tests, one binary with a module per capability; the
//! `test-harness` crate (`crates/test-harness`, shared with the benches) holds what several
//! modules share (free ports, the tansu broker, PostgreSQL, moto, the service as a child
//! process, the simulated tenant). One module: `cargo test --test it kafka::`. The simulator's
//! own tests are in `crates/mgmt-sim/tests`.

// The wall clock (clippy.toml bans `std::time::Instant` and `std::thread::sleep` where tokio's
// time is meant): these modules wait on and time separate processes (the service binary, tansu,
// PostgreSQL, moto) from the test's thread, which tokio's clock neither sees nor pauses.

mod action;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod auth0_events;
mod auth0_logs;
mod auth0_logs_order;
mod config;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod config_rules;
mod conformance;
mod decode;
mod demo_cli;
mod deploy_files;
mod docs;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod doctor;
mod event_streams;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod ingest;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod kafka;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod ledger;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod ledger_backpressure;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod ledger_crash;
mod ledger_model;
mod ledger_truth;
mod mgmt;
mod ops;
mod organizations;
mod policy;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod rate_limits;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod reader_lease;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod reconcile;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod recovery;
mod replay_cli;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod sqs;
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
mod supervision;
