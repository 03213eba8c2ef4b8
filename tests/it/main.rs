//! The service's integration tests, one binary with a module per capability; [`harness`] holds
//! what several modules share (free ports, the tansu broker, the service as a child process, the
//! simulated tenant). One module: `cargo test --test it kafka::`. The simulator's own tests are
//! in `crates/mgmt-sim/tests`.

mod harness;

mod action;
mod auth0_events;
mod auth0_logs;
mod auth0_logs_order;
mod config;
mod config_rules;
mod conformance;
mod decode;
mod demo_cli;
mod deploy_files;
mod docs;
mod doctor;
mod event_streams;
mod ingest;
mod kafka;
mod ledger;
mod ledger_backpressure;
mod ledger_model;
mod ledger_truth;
mod mgmt;
mod ops;
mod organizations;
mod pg;
mod policy;
mod rate_limits;
mod reader_lease;
mod reconcile;
mod recovery;
mod replay_cli;
mod sqs;
mod supervision;
