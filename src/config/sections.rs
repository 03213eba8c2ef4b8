//! The configuration file as written: one serde type per section, unknown keys rejected
//! (with line and column). What the keys mean is checked where they become settings.

use std::path::PathBuf;

use serde::Deserialize;

use crate::policy::PolicyConfig;
use crate::source::auth0_events::EventsSection;

/// The file as written. Unknown keys are rejected by serde (with line and column).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    pub(super) auth0: Option<Auth0Section>,
    #[serde(default)]
    pub(super) policy: PolicyConfig,
    #[serde(default)]
    pub(super) dedup: DedupSection,
    pub(super) source: Option<SourceSection>,
    pub(super) kafka: Option<KafkaSection>,
    pub(super) sqs: Option<SqsSection>,
    #[serde(default)]
    pub(super) metrics: MetricsSection,
    pub(super) ingest: Option<IngestSection>,
    pub(super) auth0_logs: Option<LogsSection>,
    pub(super) auth0_events: Option<EventsSection>,
    pub(super) backstop: Option<LogsSection>,
    pub(super) ledger: Option<LedgerSection>,
}

/// `[auth0_logs]` (the source) and `[backstop]`: the same keys, `lag_seconds` and
/// `rate_share` only in `[backstop]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsSection {
    pub(super) start: Option<String>,
    pub(super) checkpoint_file: Option<PathBuf>,
    pub(super) poll_interval_seconds: Option<f64>,
    pub(super) take: Option<i64>,
    pub(super) log_stream_id: Option<String>,
    pub(super) log_stream_check_seconds: Option<f64>,
    pub(super) lag_seconds: Option<f64>,
    pub(super) rate_share: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LedgerSection {
    pub(super) url: Option<String>,
    pub(super) lease_ttl_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IngestSection {
    pub(super) listen: Option<String>,
    pub(super) path: Option<String>,
    pub(super) mode: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    /// Present only to give a helpful error: the token never lives in the file.
    pub(super) token: Option<toml::Value>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) direct_deadline_seconds: Option<f64>,
    pub(super) max_inflight: Option<i64>,
    pub(super) header_read_timeout_seconds: Option<i64>,
    pub(super) body_read_timeout_seconds: Option<i64>,
    pub(super) max_connections: Option<i64>,
    pub(super) shutdown_grace_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceSection {
    #[serde(rename = "type")]
    pub(super) kind: String,
}

/// `brokers` may be one comma-separated string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s.split(',').map(|p| p.trim().to_owned()).collect(),
            OneOrMany::Many(v) => v.into_iter().map(|p| p.trim().to_owned()).collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KafkaSection {
    pub(super) brokers: Option<OneOrMany>,
    pub(super) topic: Option<String>,
    pub(super) topics: Option<Vec<String>>,
    pub(super) group_id: Option<String>,
    pub(super) dead_letter_topic: Option<String>,
    pub(super) max_inflight: Option<usize>,
    pub(super) commit_interval_ms: Option<u64>,
    pub(super) shutdown_grace_seconds: Option<f64>,
    pub(super) rebalance_drain_seconds: Option<f64>,
    /// A file holding the SASL password (else `KAFKA_SASL_PASSWORD`).
    pub(super) sasl_password_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) properties: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SqsSection {
    pub(super) queue_url: Option<String>,
    pub(super) max_messages: Option<i64>,
    pub(super) wait_time_seconds: Option<i64>,
    pub(super) visibility_timeout_seconds: Option<i64>,
    pub(super) concurrency: Option<i64>,
    pub(super) max_inflight: Option<i64>,
    pub(super) shutdown_grace_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsSection {
    pub(super) listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Auth0Section {
    pub(super) domain: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret_file: Option<PathBuf>,
    /// Present only to give a helpful error: secrets never live in the file.
    pub(super) client_secret: Option<toml::Value>,
    pub(super) base_url: Option<String>,
    pub(super) requests_per_second: Option<RequestRate>,
    /// With `requests_per_second = "auto"`: the share of the learned rate used.
    pub(super) auto_share: Option<f64>,
    pub(super) burst: Option<u32>,
    pub(super) timeout_seconds: Option<f64>,
    pub(super) batch_window_ms: Option<u64>,
    pub(super) batch_max_users: Option<usize>,
    pub(super) read_user_roles: Option<bool>,
    pub(super) count_group_roles: Option<bool>,
    pub(super) log_stream: Option<String>,
    pub(super) organization_roles_per_minute: Option<u32>,
    pub(super) organization_roles_burst: Option<u32>,
}

/// `requests_per_second`: a number, or `"auto"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RequestRate {
    Number(f64),
    Word(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DedupSection {
    pub(super) ttl_seconds: Option<u64>,
    pub(super) user_roles_ttl_seconds: Option<u64>,
    pub(super) max_entries: Option<u64>,
}
