//! The source sections read into their settings: `[source]` picks one of `[kafka]`, `[sqs]`,
//! `[auth0_logs]` or `[auth0_events]`; `[backstop]` shares the Logs API reader's keys;
//! `[ingest]` configures the webhook receiver.

use std::net::SocketAddr;
use std::time::Duration;

use super::sections::{
    IngestSection, KafkaSection, LogsSection, OneOrMany, SourceSection, SqsSection,
};
use super::{
    invalid, ConfigError, Env, ResolvedSecret, SecretKind, SourceSettings, KAFKA_SASL_PASSWORD_ENV,
};
use crate::policy::Policy;
use crate::source::auth0_events::{EventsSection, EventsSettings};
use crate::source::auth0_logs::{LogsSettings, Role, Start};
use crate::source::kafka::{KafkaSettings, DEFAULT_GROUP_ID};
use crate::source::sqs::SqsSettings;
use crate::source::webhook::{IngestMode, IngestSettings, WEBHOOK_TOKEN_ENV};

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

pub(super) fn source_settings(
    source: Option<SourceSection>,
    kafka: Option<KafkaSection>,
    sqs: Option<SqsSection>,
    auth0_logs: Option<LogsSection>,
    (auth0_events, policy, ledger): (Option<EventsSection>, &Policy, bool),
    env: Env<'_>,
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
            Ok(Some(SourceSettings::Kafka(kafka_settings(kafka, env)?)))
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
pub(super) fn logs_settings(role: Role, section: LogsSection) -> Result<LogsSettings, ConfigError> {
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

fn kafka_settings(k: KafkaSection, env: Env<'_>) -> Result<KafkaSettings, ConfigError> {
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
        if key == "sasl.password" {
            return Err(ConfigError::Invalid {
                key: "kafka.properties",
                problem: format!("`sasl.password`: secrets never go in the config file: set {KAFKA_SASL_PASSWORD_ENV} or kafka.sasl_password_file"),
            });
        }
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
    // Resolved only when given: a broker without SASL needs no password.
    let sasl_password = match (
        env(KAFKA_SASL_PASSWORD_ENV).filter(|s| !s.is_empty()),
        &k.sasl_password_file,
    ) {
        (None, None) => None,
        (_, file) => Some(ResolvedSecret::resolve(
            SecretKind::KafkaSaslPassword,
            env,
            file.as_deref(),
        )),
    };
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
        sasl_password,
    })
}

pub(super) fn ingest_settings(
    section: IngestSection,
    env: Env<'_>,
) -> Result<IngestSettings, ConfigError> {
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
        token: ResolvedSecret::resolve(
            SecretKind::WebhookToken,
            env,
            section.token_file.as_deref(),
        ),
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
