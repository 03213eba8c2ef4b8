//! Typed configuration: one TOML file plus environment overrides, validated at load with errors
//! that name the key. Secrets come only from the environment or a `*_file` path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::dedup::DedupSettings;
pub use crate::ledger::{LedgerSettings, LEDGER_URL_ENV};
pub use crate::mgmt::Auth0Settings;
use crate::policy::{Policy, PolicyConfig};
pub use crate::settings::{
    is_secret_key, read_secret, redact_secret_lines, ConfigError, Secret, BASE_URL_ENV,
    CLIENT_ID_ENV, DOMAIN_ENV, SECRET_ENV,
};
use crate::source::auth0_events::EventsSection;
pub use crate::source::auth0_events::EventsSettings;
pub use crate::source::auth0_logs::LogsSettings;
use crate::source::auth0_logs::{Role, Start};
pub use crate::source::kafka::{KafkaSettings, DEFAULT_GROUP_ID};
pub use crate::source::sqs::SqsSettings;
pub use crate::source::webhook::{IngestMode, IngestSettings, WEBHOOK_TOKEN_ENV};

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// The file as written. Unknown keys are rejected by serde (with line and column).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    auth0: Option<Auth0Section>,
    #[serde(default)]
    policy: PolicyConfig,
    #[serde(default)]
    dedup: DedupSection,
    source: Option<SourceSection>,
    kafka: Option<KafkaSection>,
    sqs: Option<SqsSection>,
    #[serde(default)]
    metrics: MetricsSection,
    ingest: Option<IngestSection>,
    auth0_logs: Option<LogsSection>,
    auth0_events: Option<EventsSection>,
    backstop: Option<LogsSection>,
    ledger: Option<LedgerSection>,
}

/// `[auth0_logs]` (the source) and `[backstop]`: the same keys, `lag_seconds` and
/// `rate_share` only in `[backstop]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsSection {
    start: Option<String>,
    checkpoint_file: Option<PathBuf>,
    poll_interval_seconds: Option<f64>,
    take: Option<i64>,
    log_stream_id: Option<String>,
    log_stream_check_seconds: Option<f64>,
    lag_seconds: Option<f64>,
    rate_share: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerSection {
    url: Option<String>,
    lease_ttl_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestSection {
    listen: Option<String>,
    path: Option<String>,
    mode: Option<String>,
    token_file: Option<PathBuf>,
    /// Present only to give a helpful error: the token never lives in the file.
    token: Option<toml::Value>,
    max_body_bytes: Option<usize>,
    direct_deadline_seconds: Option<f64>,
    max_inflight: Option<i64>,
    header_read_timeout_seconds: Option<i64>,
    body_read_timeout_seconds: Option<i64>,
    max_connections: Option<i64>,
    shutdown_grace_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSection {
    #[serde(rename = "type")]
    kind: String,
}

/// `brokers` may be one comma-separated string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s.split(',').map(|p| p.trim().to_owned()).collect(),
            OneOrMany::Many(v) => v.into_iter().map(|p| p.trim().to_owned()).collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaSection {
    brokers: Option<OneOrMany>,
    topic: Option<String>,
    topics: Option<Vec<String>>,
    group_id: Option<String>,
    dead_letter_topic: Option<String>,
    max_inflight: Option<usize>,
    commit_interval_ms: Option<u64>,
    shutdown_grace_seconds: Option<f64>,
    rebalance_drain_seconds: Option<f64>,
    #[serde(default)]
    properties: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqsSection {
    queue_url: Option<String>,
    max_messages: Option<i64>,
    wait_time_seconds: Option<i64>,
    visibility_timeout_seconds: Option<i64>,
    concurrency: Option<i64>,
    max_inflight: Option<i64>,
    shutdown_grace_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Auth0Section {
    domain: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    /// Present only to give a helpful error: secrets never live in the file.
    client_secret: Option<toml::Value>,
    base_url: Option<String>,
    requests_per_second: Option<RequestRate>,
    /// With `requests_per_second = "auto"`: the share of the learned rate used.
    auto_share: Option<f64>,
    burst: Option<u32>,
    timeout_seconds: Option<f64>,
    batch_window_ms: Option<u64>,
    batch_max_users: Option<usize>,
    read_user_roles: Option<bool>,
    count_group_roles: Option<bool>,
    log_stream: Option<String>,
    organization_roles_per_minute: Option<u32>,
    organization_roles_burst: Option<u32>,
}

/// `requests_per_second`: a number, or `"auto"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RequestRate {
    Number(f64),
    Word(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DedupSection {
    ttl_seconds: Option<u64>,
    user_roles_ttl_seconds: Option<u64>,
    max_entries: Option<u64>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None` when the file has no `[auth0]` section (enough for `replay --offline`).
    pub auth0: Option<Auth0Settings>,
    pub policy: Policy,
    pub dedup: DedupSettings,
    /// Where `run` reads events from (`None` when the file has no `[source]`).
    pub source: Option<SourceSettings>,
    /// `[metrics] listen`: where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_listen: SocketAddr,
    /// `[ingest]`: the HTTP receiver of Auth0's Custom Webhook log stream.
    pub ingest: Option<IngestSettings>,
    /// `[backstop]`: the tenant's Logs API read behind the source.
    pub backstop: Option<LogsSettings>,
    /// `[ledger]` (or `LEDGER_URL`): what the service granted, in SQLite or PostgreSQL.
    pub ledger: Option<LedgerSettings>,
    /// `[ledger] lease_ttl_seconds`: how long a reader's lease in a PostgreSQL ledger lasts
    /// without renewal (one active reader across replicas; unused with SQLite).
    pub lease_ttl: Duration,
    /// The fingerprint of the `[policy]` section as written, recorded with each grant.
    pub policy_fingerprint: String,
}

/// The default `[metrics] listen` address.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9464";

/// Where `run` consumes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSettings {
    Kafka(KafkaSettings),
    Sqs(SqsSettings),
    /// The tenant's Logs API (`[auth0_logs]`).
    Auth0Logs(LogsSettings),
    /// The tenant's Events API (`[auth0_events]`).
    Auth0Events(EventsSettings),
}

/// librdkafka properties the service owns: setting them in `[kafka.properties]` would break
/// at-least-once delivery or duplicate a `[kafka]` key.
const OWNED_PROPERTIES: [(&str, &str); 5] = [
    ("bootstrap.servers", "use kafka.brokers"),
    ("group.id", "use kafka.group_id"),
    (
        "enable.auto.offset.store",
        "the service stores an offset only once its event reached a final outcome",
    ),
    (
        "enable.auto.commit",
        "the service commits stored offsets every kafka.commit_interval_ms",
    ),
    ("auto.commit.interval.ms", "use kafka.commit_interval_ms"),
];

/// Reads the process environment (the default for `Config::load`).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Loads and validates a config file, applying environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path, &process_env)
    }

    /// Parses and validates config text. `path` only labels errors; `env` supplies overrides.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            // The message quotes the offending line: never a secret's value.
            message: redact_secret_lines(e.to_string().trim_end()),
        })?;
        let policy = Policy::from_config(&file.policy)?;
        let auth0 = auth0_settings(file.auth0, env)?;
        let dedup = DedupSettings {
            ttl: Duration::from_secs(match file.dedup.ttl_seconds {
                Some(0) => return Err(invalid("dedup.ttl_seconds", "must be at least 1")),
                Some(s) => s,
                None => DedupSettings::default().ttl.as_secs(),
            }),
            user_roles_ttl: Duration::from_secs(match file.dedup.user_roles_ttl_seconds {
                Some(0) => {
                    return Err(invalid(
                        "dedup.user_roles_ttl_seconds",
                        "must be at least 1",
                    ))
                }
                Some(s) => s,
                None => DedupSettings::default().user_roles_ttl.as_secs(),
            }),
            max_entries: match file.dedup.max_entries {
                Some(0) => return Err(invalid("dedup.max_entries", "must be at least 1")),
                Some(n) => n,
                None => DedupSettings::default().max_entries,
            },
        };
        let lease_ttl = lease_ttl(file.ledger.as_ref().and_then(|l| l.lease_ttl_seconds))?;
        let ledger = ledger_settings(file.ledger, env)?;
        let events = (file.auth0_events, &policy, ledger.is_some());
        let source = source_settings(file.source, file.kafka, file.sqs, file.auth0_logs, events)?;
        let backstop = file
            .backstop
            .map(|b| logs_settings(Role::Backstop, b))
            .transpose()?;
        if let Some(b) = &backstop {
            if b.lag >= dedup.ttl {
                return Err(invalid(
                    "backstop.lag_seconds",
                    format!("must be shorter than dedup.ttl_seconds ({} s): events the stream delivered must still be remembered when the backstop reads them, or they cost calls again", dedup.ttl.as_secs()),
                ));
            }
        }
        let listen = file
            .metrics
            .listen
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
        let metrics_listen = listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "metrics.listen",
                format!("`{listen}` is not an address:port, e.g. 0.0.0.0:9464"),
            )
        })?;
        let ingest = file.ingest.map(ingest_settings).transpose()?;
        Ok(Config {
            auth0,
            policy,
            dedup,
            source,
            metrics_listen,
            ingest,
            backstop,
            ledger,
            lease_ttl,
            policy_fingerprint: crate::ledger::policy_fingerprint_of_config(text),
        })
    }

    /// The `[auth0]` settings, or an error saying what is missing.
    pub fn require_auth0(&self) -> Result<&Auth0Settings, ConfigError> {
        self.auth0.as_ref().ok_or(ConfigError::NoAuth0)
    }
}

/// `[ledger] lease_ttl_seconds`: 1 s to 1 h, 15 s when absent.
fn lease_ttl(seconds: Option<f64>) -> Result<Duration, ConfigError> {
    let Some(seconds) = seconds else {
        return Ok(crate::source::lease::DEFAULT_TTL);
    };
    let max = crate::ledger::lease::MAX_TTL.as_secs_f64();
    if !(seconds.is_finite() && (1.0..=max).contains(&seconds)) {
        return Err(invalid(
            "ledger.lease_ttl_seconds",
            format!("must be between 1 and {max} seconds (a standby takes over within it and a third of it, at most 5 s, after the active reader stops renewing)"),
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `[ledger] url`, overridden by `LEDGER_URL` (which alone turns the ledger on). A password
/// belongs in `LEDGER_URL` or `PGPASSWORD`, never in the file.
fn ledger_settings(
    section: Option<LedgerSection>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<LedgerSettings>, ConfigError> {
    let from_env = env(LEDGER_URL_ENV).filter(|s| !s.trim().is_empty());
    let from_file = section.map(|s| s.url);
    let url = match (from_env, from_file) {
        (Some(url), _) => url,
        (None, Some(Some(url))) => {
            let settings = LedgerSettings { url: url.clone() };
            if settings.has_password() {
                return Err(invalid(
                    "ledger.url",
                    format!("holds a password: give the whole URL in {LEDGER_URL_ENV} (from a secret) or the password in PGPASSWORD, and keep `url = \"{}\"` without it", settings.describe()),
                ));
            }
            url
        }
        (None, Some(None)) => {
            return Err(invalid(
                "ledger.url",
                "missing: sqlite:///ABSOLUTE/PATH or postgres://USER@HOST:PORT/DATABASE",
            ))
        }
        (None, None) => return Ok(None),
    };
    let settings = LedgerSettings { url };
    settings
        .validate()
        .map_err(|problem| invalid("ledger.url", problem))?;
    Ok(Some(settings))
}

fn auth0_settings(
    section: Option<Auth0Section>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Auth0Settings>, ConfigError> {
    let env_domain = env(DOMAIN_ENV).filter(|s| !s.is_empty());
    let env_client = env(CLIENT_ID_ENV).filter(|s| !s.is_empty());
    let env_base = env(BASE_URL_ENV).filter(|s| !s.is_empty());
    let section = match section {
        Some(s) => s,
        None if env_domain.is_some() || env_client.is_some() => Auth0Section::default(),
        None => return Ok(None),
    };
    if section.client_secret.is_some() {
        return Err(invalid(
            "auth0.client_secret",
            format!(
                "secrets never go in the config file: set {SECRET_ENV} or auth0.client_secret_file"
            ),
        ));
    }
    let domain = env_domain
        .or(section.domain)
        .ok_or_else(|| invalid("auth0.domain", format!("missing (or set {DOMAIN_ENV})")))?;
    let domain = domain.trim().trim_end_matches('/').to_owned();
    let is_host = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && reqwest::Url::parse(&format!("https://{domain}/")).is_ok_and(|u| {
            u.host_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(&domain))
        });
    if !is_host {
        return Err(invalid(
            "auth0.domain",
            format!("`{domain}` is not a host name: write the tenant host only, e.g. example.eu.auth0.com"),
        ));
    }
    let client_id = env_client
        .or(section.client_id)
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            invalid(
                "auth0.client_id",
                format!("missing (or set {CLIENT_ID_ENV})"),
            )
        })?;
    let base_url = match env_base.or(section.base_url) {
        None => format!("https://{domain}"),
        Some(url) => {
            let url = url.trim().trim_end_matches('/').to_owned();
            let usable = reqwest::Url::parse(&url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty())
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && !url.contains(char::is_whitespace)
            });
            if !usable {
                return Err(invalid(
                    "auth0.base_url",
                    format!("`{url}` is not an http(s) URL, e.g. http://127.0.0.1:8080"),
                ));
            }
            url
        }
    };
    let (requests_per_second, auto_share) = match section.requests_per_second {
        None => (crate::mgmt::AUTO_INITIAL_RATE, Some(1.0)),
        Some(RequestRate::Word(word)) if word == "auto" => {
            (crate::mgmt::AUTO_INITIAL_RATE, Some(1.0))
        }
        Some(RequestRate::Word(_)) => {
            return Err(invalid(
                "auth0.requests_per_second",
                "must be \"auto\" (learned from the tenant) or a positive number (the most this service sends per second)",
            ))
        }
        Some(RequestRate::Number(rate)) => (rate, None),
    };
    if !(requests_per_second.is_finite() && requests_per_second > 0.0) {
        return Err(invalid(
            "auth0.requests_per_second",
            "must be \"auto\" or a positive number (the most this service sends per second)",
        ));
    }
    let auto_share =
        match (auto_share, section.auto_share) {
            (_, Some(share)) if !(share > 0.0 && share <= 1.0) => return Err(invalid(
                "auth0.auto_share",
                "must be above 0 and at most 1 (the share of the learned rate this service uses)",
            )),
            (Some(_), Some(share)) => Some(share),
            (auto, _) => auto,
        };
    let burst = section.burst.unwrap_or(2);
    if burst == 0 {
        return Err(invalid("auth0.burst", "must be at least 1"));
    }
    let timeout = section.timeout_seconds.unwrap_or(10.0);
    if !(timeout.is_finite() && timeout > 0.0 && timeout <= 300.0) {
        return Err(invalid(
            "auth0.timeout_seconds",
            "must be between 0 and 300",
        ));
    }
    let batch_window_ms = section.batch_window_ms.unwrap_or(100);
    if batch_window_ms > 10_000 {
        return Err(invalid("auth0.batch_window_ms", "must be at most 10000"));
    }
    let batch_max_users = section.batch_max_users.unwrap_or(50);
    if !(1..=1000).contains(&batch_max_users) {
        return Err(invalid(
            "auth0.batch_max_users",
            "must be between 1 and 1000 (the bulk endpoint's limit)",
        ));
    }
    let log_stream = match section.log_stream.map(|n| n.trim().to_owned()) {
        Some(name) if name.is_empty() => {
            return Err(invalid(
                "auth0.log_stream",
                "must name the tenant's log stream (or leave the key out)",
            ))
        }
        other => other,
    };
    let organization_roles_per_minute = section
        .organization_roles_per_minute
        .unwrap_or(crate::mgmt::organizations::DEFAULT_ORGANIZATION_ROLES_PER_MINUTE);
    if organization_roles_per_minute == 0 {
        return Err(invalid(
            "auth0.organization_roles_per_minute",
            "must be at least 1 (Auth0's published limit is 200 organization member role writes per minute)",
        ));
    }
    let organization_roles_burst = section
        .organization_roles_burst
        .unwrap_or(crate::mgmt::organizations::DEFAULT_ORGANIZATION_ROLES_BURST);
    if organization_roles_burst == 0 {
        return Err(invalid(
            "auth0.organization_roles_burst",
            "must be at least 1 (Auth0's published burst is 20)",
        ));
    }
    Ok(Some(Auth0Settings {
        domain,
        client_id,
        client_secret_file: section.client_secret_file,
        base_url,
        requests_per_second,
        burst,
        auto_share,
        give_up_after: crate::mgmt::ONE_SHOT_PATIENCE,
        timeout: Duration::from_secs_f64(timeout),
        batch_window: Duration::from_millis(batch_window_ms),
        batch_max_users,
        read_user_roles: section.read_user_roles.unwrap_or(false),
        count_group_roles: section.count_group_roles.unwrap_or(false),
        log_stream,
        organization_roles_per_minute,
        organization_roles_burst,
    }))
}

fn source_settings(
    source: Option<SourceSection>,
    kafka: Option<KafkaSection>,
    sqs: Option<SqsSection>,
    auth0_logs: Option<LogsSection>,
    (auth0_events, policy, ledger): (Option<EventsSection>, &Policy, bool),
) -> Result<Option<SourceSettings>, ConfigError> {
    let kind = match (&source, &kafka, &sqs) {
        (Some(s), _, _) => s.kind.trim().to_ascii_lowercase(),
        // A [kafka] or [sqs] section alone is clear enough.
        (None, Some(_), None) => "kafka".to_owned(),
        (None, None, Some(_)) => "sqs".to_owned(),
        (None, Some(_), Some(_)) => {
            return Err(invalid(
                "source.type",
                "missing: both [kafka] and [sqs] are present, say which one `run` consumes",
            ))
        }
        (None, None, None) => return Ok(None),
    };
    match kind.as_str() {
        "kafka" => {
            let kafka = kafka.ok_or_else(|| {
                invalid(
                    "kafka",
                    "source.type is \"kafka\" but there is no [kafka] section",
                )
            })?;
            Ok(Some(SourceSettings::Kafka(kafka_settings(kafka)?)))
        }
        "sqs" => {
            let sqs = sqs.ok_or_else(|| {
                invalid(
                    "sqs",
                    "source.type is \"sqs\" but there is no [sqs] section",
                )
            })?;
            Ok(Some(SourceSettings::Sqs(sqs_settings(sqs)?)))
        }
        "auth0_logs" => {
            let section = auth0_logs.ok_or_else(|| {
                invalid(
                    "auth0_logs",
                    "source.type is \"auth0_logs\" but there is no [auth0_logs] section (checkpoint_file at least)",
                )
            })?;
            Ok(Some(SourceSettings::Auth0Logs(logs_settings(
                Role::Source,
                section,
            )?)))
        }
        "auth0_events" => {
            let section = auth0_events.ok_or_else(|| {
                invalid(
                    "auth0_events",
                    "source.type is \"auth0_events\" but there is no [auth0_events] section (checkpoint_file at least)",
                )
            })?;
            Ok(Some(SourceSettings::Auth0Events(
                EventsSettings::from_section(section, policy, ledger)?,
            )))
        }
        other => Err(invalid(
            "source.type",
            format!("`{other}` is not a source: use \"kafka\" or \"sqs\" (a stream), \"auth0_logs\" (the tenant's Logs API) or \"auth0_events\" (the tenant's Events API)"),
        )),
    }
}

/// `[auth0_logs]` or `[backstop]`.
fn logs_settings(role: Role, section: LogsSection) -> Result<LogsSettings, ConfigError> {
    let backstop = role == Role::Backstop;
    let key =
        |name: &'static str, source_key: &'static str| if backstop { name } else { source_key };
    if !backstop && (section.lag_seconds.is_some() || section.rate_share.is_some()) {
        return Err(invalid(
            "auth0_logs",
            "lag_seconds and rate_share belong in [backstop]: the auth0_logs source reads as soon as the tenant logs",
        ));
    }
    let start_text = section.start.unwrap_or_else(|| "latest".to_owned());
    let start = Start::parse(&start_text).ok_or_else(|| {
        invalid(
            key("backstop.start", "auth0_logs.start"),
            format!("`{start_text}` is not \"earliest\", \"latest\", a log_id (digits) or an RFC 3339 time with its offset (e.g. 2026-11-23T10:00:00Z)"),
        )
    })?;
    let checkpoint_file = section
        .checkpoint_file
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            invalid(
                key("backstop.checkpoint_file", "auth0_logs.checkpoint_file"),
                "missing: a file the reader keeps its place in (on a persistent volume), e.g. /var/lib/auth0-default-roles/logs.checkpoint",
            )
        })?;
    let seconds = |name: &'static str, value: Option<f64>, default: f64, min: f64, max: f64| {
        let v = value.unwrap_or(default);
        if v.is_finite() && (min..=max).contains(&v) {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(invalid(
                name,
                format!("must be between {min} and {max} seconds"),
            ))
        }
    };
    let poll_interval = seconds(
        key(
            "backstop.poll_interval_seconds",
            "auth0_logs.poll_interval_seconds",
        ),
        section.poll_interval_seconds,
        10.0,
        0.1,
        3600.0,
    )?;
    let log_stream_check = seconds(
        key(
            "backstop.log_stream_check_seconds",
            "auth0_logs.log_stream_check_seconds",
        ),
        section.log_stream_check_seconds,
        60.0,
        0.1,
        3600.0,
    )?;
    let lag = seconds(
        "backstop.lag_seconds",
        section.lag_seconds,
        if backstop { 300.0 } else { 0.0 },
        0.0,
        7.0 * 86_400.0,
    )?;
    let take = int_in(
        key("backstop.take", "auth0_logs.take"),
        section.take,
        100,
        1..=100,
        " (the Logs API's limit)",
    )?;
    let rate_share = section
        .rate_share
        .unwrap_or(if backstop { 0.1 } else { 1.0 });
    if !(rate_share.is_finite() && rate_share > 0.0 && rate_share <= 1.0) {
        return Err(invalid(
            "backstop.rate_share",
            "must be above 0 and at most 1 (the share of auth0.requests_per_second the backstop's reads may use)",
        ));
    }
    let log_stream_id = match section.log_stream_id.map(|s| s.trim().to_owned()) {
        Some(id) if id.is_empty() || id.contains(char::is_whitespace) => {
            return Err(invalid(
                key("backstop.log_stream_id", "auth0_logs.log_stream_id"),
                "must be a log stream id such as lst_0000000000012345 (or leave the key out)",
            ))
        }
        other => other,
    };
    Ok(LogsSettings {
        role,
        start,
        checkpoint_file,
        poll_interval,
        lag,
        rate_share,
        log_stream_id,
        log_stream_check,
        take: usize::try_from(take).unwrap_or(100),
    })
}

/// An integer key within `range`, or its default.
fn int_in(
    key: &'static str,
    value: Option<i64>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
    why: &str,
) -> Result<i64, ConfigError> {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            key,
            format!("must be between {} and {}{why}", range.start(), range.end()),
        ))
    }
}

fn sqs_settings(q: SqsSection) -> Result<SqsSettings, ConfigError> {
    let queue_url = q
        .queue_url
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            invalid(
                "sqs.queue_url",
                "missing: the URL of the queue EventBridge delivers to, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/auth0-logs",
            )
        })?;
    let rest = queue_url
        .strip_prefix("https://")
        .or_else(|| queue_url.strip_prefix("http://"));
    let well_formed = rest.is_some_and(|rest| {
        let mut parts = rest.splitn(2, '/');
        let host = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default().trim_end_matches('/');
        !host.is_empty() && !path.is_empty() && !rest.contains(char::is_whitespace)
    });
    if !well_formed {
        return Err(invalid(
            "sqs.queue_url",
            format!("`{queue_url}` is not an http(s) queue URL, e.g. https://sqs.eu-west-1.amazonaws.com/123456789012/auth0-logs"),
        ));
    }
    let max_messages = int_in(
        "sqs.max_messages",
        q.max_messages,
        10,
        1..=10,
        " (SQS returns at most 10 messages per receive)",
    )?;
    let wait_time_seconds = int_in(
        "sqs.wait_time_seconds",
        q.wait_time_seconds,
        20,
        0..=20,
        " (the SQS long-polling limit)",
    )?;
    let visibility_timeout_seconds = int_in(
        "sqs.visibility_timeout_seconds",
        q.visibility_timeout_seconds,
        60,
        1..=43_200,
        " (12 hours, the SQS limit)",
    )?;
    let concurrency = int_in("sqs.concurrency", q.concurrency, 2, 1..=50, "")?;
    let max_inflight = int_in("sqs.max_inflight", q.max_inflight, 100, 1..=100_000, "")?;
    if max_inflight < max_messages {
        return Err(invalid(
            "sqs.max_inflight",
            format!("must be at least sqs.max_messages ({max_messages}): a receive reserves room for a full batch"),
        ));
    }
    let grace = q.shutdown_grace_seconds.unwrap_or(20.0);
    if !(grace.is_finite() && (0.0..=3600.0).contains(&grace)) {
        return Err(invalid(
            "sqs.shutdown_grace_seconds",
            "must be between 0 and 3600 seconds",
        ));
    }
    // The ranges above keep every value within i32 and usize.
    Ok(SqsSettings {
        queue_url,
        max_messages: i32::try_from(max_messages).unwrap_or(10),
        wait_time_seconds: i32::try_from(wait_time_seconds).unwrap_or(20),
        visibility_timeout_seconds: i32::try_from(visibility_timeout_seconds).unwrap_or(60),
        concurrency: usize::try_from(concurrency).unwrap_or(2),
        max_inflight: usize::try_from(max_inflight).unwrap_or(100),
        shutdown_grace: Duration::from_secs_f64(grace),
    })
}

fn kafka_settings(k: KafkaSection) -> Result<KafkaSettings, ConfigError> {
    let brokers: Vec<String> = k
        .brokers
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .filter(|b| !b.is_empty())
        .collect();
    if brokers.is_empty() {
        return Err(invalid(
            "kafka.brokers",
            "missing: list the bootstrap brokers, e.g. \"kafka-1:9092,kafka-2:9092\"",
        ));
    }
    if let Some(bad) = brokers
        .iter()
        .find(|b| b.contains("://") || b.contains(' '))
    {
        return Err(invalid(
            "kafka.brokers",
            format!("`{bad}` is not host:port (no scheme, no spaces)"),
        ));
    }
    let topics = match (k.topic, k.topics) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "kafka.topics",
                "set either kafka.topic or kafka.topics, not both",
            ))
        }
        (Some(t), None) => vec![t],
        (None, Some(ts)) => ts,
        (None, None) => Vec::new(),
    };
    let topics: Vec<String> = topics.into_iter().map(|t| t.trim().to_owned()).collect();
    if topics.is_empty() || topics.iter().any(String::is_empty) {
        return Err(invalid(
            "kafka.topic",
            "missing: name the topic Auth0 logs arrive on",
        ));
    }
    let group_id = match k.group_id.map(|g| g.trim().to_owned()) {
        None => DEFAULT_GROUP_ID.to_owned(),
        Some(g) if g.is_empty() => return Err(invalid("kafka.group_id", "must not be empty")),
        Some(g) => g,
    };
    let dead_letter_topic = k.dead_letter_topic.map(|t| t.trim().to_owned());
    if let Some(t) = &dead_letter_topic {
        if t.is_empty() || topics.contains(t) {
            return Err(invalid(
                "kafka.dead_letter_topic",
                "must be a topic name different from the consumed topics",
            ));
        }
    }
    let max_inflight = k.max_inflight.unwrap_or(1000);
    if !(1..=100_000).contains(&max_inflight) {
        return Err(invalid(
            "kafka.max_inflight",
            "must be between 1 and 100000",
        ));
    }
    let commit_interval_ms = k.commit_interval_ms.unwrap_or(5000);
    if !(100..=600_000).contains(&commit_interval_ms) {
        return Err(invalid(
            "kafka.commit_interval_ms",
            "must be between 100 and 600000",
        ));
    }
    let seconds = |key: &'static str, value: Option<f64>, default: f64| {
        let v = value.unwrap_or(default);
        if v.is_finite() && (0.0..=3600.0).contains(&v) {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(invalid(key, "must be between 0 and 3600 seconds"))
        }
    };
    let shutdown_grace = seconds(
        "kafka.shutdown_grace_seconds",
        k.shutdown_grace_seconds,
        20.0,
    )?;
    let mut properties = std::collections::BTreeMap::new();
    for (key, value) in k.properties {
        if let Some((_, why)) = OWNED_PROPERTIES.iter().find(|(p, _)| *p == key) {
            return Err(ConfigError::Invalid {
                key: "kafka.properties",
                problem: format!("`{key}` cannot be set here: {why}"),
            });
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError::Invalid {
                    key: "kafka.properties",
                    problem: format!("`{key}` must be a string, number or boolean"),
                })
            }
        };
        properties.insert(key, value);
    }
    // The revoke drain must end well before the group evicts this member.
    let session_ms: f64 = match properties.get("session.timeout.ms") {
        Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
            key: "kafka.properties",
            problem: format!("session.timeout.ms = `{v}` is not a number of milliseconds"),
        })?,
        None => 45_000.0,
    };
    let session = Duration::from_secs_f64(session_ms / 1000.0);
    let rebalance_drain = seconds(
        "kafka.rebalance_drain_seconds",
        k.rebalance_drain_seconds,
        (session_ms / 2000.0).min(10.0),
    )?;
    if rebalance_drain >= session {
        return Err(invalid(
            "kafka.rebalance_drain_seconds",
            format!(
                "must be shorter than session.timeout.ms ({} s), or the group evicts the member while it drains",
                session.as_secs_f64()
            ),
        ));
    }
    Ok(KafkaSettings {
        brokers,
        topics,
        group_id,
        dead_letter_topic,
        max_inflight,
        commit_interval: Duration::from_millis(commit_interval_ms),
        shutdown_grace,
        rebalance_drain,
        properties,
    })
}

fn ingest_settings(section: IngestSection) -> Result<IngestSettings, ConfigError> {
    if section.token.is_some() {
        return Err(invalid(
            "ingest.token",
            format!("the webhook token never goes in the config file: set {WEBHOOK_TOKEN_ENV} or ingest.token_file"),
        ));
    }
    let listen = section.listen.unwrap_or_else(|| "0.0.0.0:8080".to_owned());
    let listen = listen.parse::<SocketAddr>().map_err(|_| {
        invalid(
            "ingest.listen",
            format!("`{listen}` is not an address:port, e.g. 0.0.0.0:8080"),
        )
    })?;
    let path = section.path.unwrap_or_else(|| "/auth0/logs".to_owned());
    if !path.starts_with('/') || path.contains(' ') || path.contains('{') {
        return Err(invalid(
            "ingest.path",
            format!("`{path}` is not a URL path such as /auth0/logs"),
        ));
    }
    let mode = match section.mode.as_deref().map(str::trim) {
        Some("kafka") => IngestMode::Kafka,
        Some("direct") => IngestMode::Direct,
        Some(other) => {
            return Err(invalid(
                "ingest.mode",
                format!("`{other}` is not a mode: use \"kafka\" (bridge into [kafka] topic) or \"direct\" (assign in-process)"),
            ))
        }
        None => {
            return Err(invalid(
                "ingest.mode",
                "missing: \"kafka\" (bridge into [kafka] topic) or \"direct\" (assign in-process)",
            ))
        }
    };
    let max_body_bytes = section.max_body_bytes.unwrap_or(5 * 1024 * 1024);
    if !(1024..=100 * 1024 * 1024).contains(&max_body_bytes) {
        return Err(invalid(
            "ingest.max_body_bytes",
            "must be between 1024 and 104857600",
        ));
    }
    let deadline = section.direct_deadline_seconds.unwrap_or(10.0);
    if !(deadline.is_finite() && deadline > 0.0 && deadline <= 120.0) {
        return Err(invalid(
            "ingest.direct_deadline_seconds",
            "must be between 0 and 120 (Auth0 gives up on slow answers)",
        ));
    }
    let count = |v: i64| usize::try_from(v).unwrap_or(1);
    let seconds = |v: i64| Duration::from_secs(u64::try_from(v).unwrap_or(1));
    Ok(IngestSettings {
        listen,
        path,
        mode,
        token_file: section.token_file,
        max_body_bytes,
        direct_deadline: Duration::from_secs_f64(deadline),
        max_inflight: count(int_in(
            "ingest.max_inflight",
            section.max_inflight,
            1000,
            1..=1_000_000,
            " (direct mode: events in flight; a delivery beyond it gets 503)",
        )?),
        header_read_timeout: seconds(int_in(
            "ingest.header_read_timeout_seconds",
            section.header_read_timeout_seconds,
            10,
            1..=30,
            "",
        )?),
        body_read_timeout: seconds(int_in(
            "ingest.body_read_timeout_seconds",
            section.body_read_timeout_seconds,
            30,
            1..=300,
            "",
        )?),
        max_connections: count(int_in(
            "ingest.max_connections",
            section.max_connections,
            1024,
            1..=100_000,
            "",
        )?),
        shutdown_grace: seconds(int_in(
            "ingest.shutdown_grace_seconds",
            section.shutdown_grace_seconds,
            20,
            1..=600,
            "",
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_error_on_a_secret_line_does_not_quote_its_value() {
        let text = "[kafka]\nbrokers = \"b:9092\"\ntopic = \"t\"\n[kafka.properties]\n\"sasl.passwrd\" = \"hunter2-very-secret\n";
        let err = Config::from_toml(text, Path::new("x.toml"), &|_| None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("x.toml"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
