//! The `[kafka]` settings and the librdkafka configurations built from them: the consumer's,
//! the producers' (dead letters, the webhook bridge), and the redaction of a secret property
//! librdkafka quotes in its errors.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

use crate::settings::{ConfigError, ResolvedSecret, Secret};

/// The consumer group when `[kafka] group_id` is not set.
pub const DEFAULT_GROUP_ID: &str = "auth0-default-roles";

/// Validated `[kafka]` settings.
#[derive(Clone, PartialEq)]
pub struct KafkaSettings {
    pub brokers: Vec<String>,
    pub topics: Vec<String>,
    pub group_id: String,
    pub dead_letter_topic: Option<String>,
    /// Most messages taken from the broker and not yet finished; fetching pauses beyond it.
    pub max_inflight: usize,
    pub commit_interval: Duration,
    /// How long SIGTERM/SIGINT waits for in-flight events before committing and leaving.
    pub shutdown_grace: Duration,
    /// How long a revoke waits for the revoked partitions' in-flight events (must stay below
    /// `session.timeout.ms`).
    pub rebalance_drain: Duration,
    /// Passed to librdkafka as-is (SASL, TLS, `client.id`, ...).
    pub properties: std::collections::BTreeMap<String, String>,
    /// `sasl.password`, resolved at load from `KAFKA_SASL_PASSWORD` or
    /// `kafka.sasl_password_file` (`None`: neither was given).
    pub sasl_password: Option<ResolvedSecret>,
}

impl KafkaSettings {
    /// The SASL password when one is configured, or the error naming its variable and file
    /// when it is configured but missing.
    pub fn sasl_password(&self) -> Result<Option<&Secret>, ConfigError> {
        self.sasl_password
            .as_ref()
            .map(ResolvedSecret::get)
            .transpose()
    }
}

/// The properties a secret-looking key (a misspelled password too) shown as `***`.
impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: std::collections::BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(key, value)| {
                let shown = if crate::settings::is_secret_key(key) {
                    "***"
                } else {
                    value.as_str()
                };
                (key.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("max_inflight", &self.max_inflight)
            .field("commit_interval", &self.commit_interval)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("rebalance_drain", &self.rebalance_drain)
            .field("properties", &properties)
            .field("sasl_password", &self.sasl_password)
            .finish()
    }
}

/// Properties the service sets unless `[kafka.properties]` overrides them.
const DEFAULT_PROPERTIES: [(&str, &str); 6] = [
    ("partition.assignment.strategy", "cooperative-sticky"),
    // librdkafka prefetches up to 64 MB by default; Auth0 log events are ~1 KB, so 16 MB
    // (~16,000 events) keeps every partition busy at a quarter of the memory.
    ("queued.max.messages.kbytes", "16384"),
    // A new group must not skip the events that arrived before it started.
    ("auto.offset.reset", "earliest"),
    ("statistics.interval.ms", "5000"),
    ("client.id", "auth0-default-roles"),
    ("enable.partition.eof", "false"),
];

/// Consumer-only properties that must not reach the dead-letter producer (librdkafka would warn).
const CONSUMER_ONLY_PREFIXES: [&str; 12] = [
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.partition.eof",
    "fetch.",
    "queued.",
    "group.",
    "isolation.level",
    "check.crcs",
    "allow.auto.create.topics",
];

/// The consumer's configuration: the service's settings, then the user's properties.
pub fn consumer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in DEFAULT_PROPERTIES {
        config.set(key, value);
    }
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    set_sasl_password(&mut config, settings);
    config
        .set("bootstrap.servers", settings.brokers.join(","))
        .set("group.id", &settings.group_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            settings.commit_interval.as_millis().to_string(),
        );
    config
}

/// The dead-letter producer's configuration: idempotent, `acks=all`.
pub fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("client.id", "auth0-default-roles-dlq");
    for (key, value) in &settings.properties {
        if !CONSUMER_ONLY_PREFIXES.iter().any(|p| key.starts_with(p)) {
            config.set(key, value);
        }
    }
    set_sasl_password(&mut config, settings);
    config
        .set("bootstrap.servers", settings.brokers.join(","))
        .set("enable.idempotence", "true")
        .set("acks", "all");
    config
}

/// `sasl.password` from the resolved secret, when there is one (a missing one is refused
/// before any client is built: [`KafkaSettings::sasl_password`]).
fn set_sasl_password(config: &mut ClientConfig, settings: &KafkaSettings) {
    if let Ok(Some(password)) = settings.sasl_password() {
        config.set("sasl.password", password.expose());
    }
}

/// `err` with the value of a secret property replaced: librdkafka reports a rejected or
/// misspelled property as "key value", and `"sasl.passwrd" = "..."` must not print a password.
pub fn redact(err: KafkaError) -> KafkaError {
    match err {
        KafkaError::ClientConfig(res, desc, key, value) if crate::settings::is_secret_key(&key) => {
            let desc = desc.replace(&value, "***");
            KafkaError::ClientConfig(res, desc, key, "***".to_owned())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::BaseConsumer;

    #[test]
    fn a_misspelled_secret_property_never_prints_its_value() {
        let settings = KafkaSettings {
            brokers: vec!["127.0.0.1:9".to_owned()],
            topics: vec!["t".to_owned()],
            group_id: "g".to_owned(),
            dead_letter_topic: None,
            max_inflight: 1,
            commit_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            rebalance_drain: Duration::from_secs(1),
            sasl_password: None,
            properties: [("sasl.passwrd".to_owned(), "hunter2-very-secret".to_owned())]
                .into_iter()
                .collect(),
        };
        let consumer: Result<BaseConsumer, _> = consumer_config(&settings).create();
        let producer: Result<rdkafka::producer::BaseProducer, _> =
            producer_config(&settings).create();
        for err in [consumer.err(), producer.err()] {
            let Some(err) = err else {
                panic!("librdkafka accepted an unknown property");
            };
            let raw = err.to_string();
            assert!(
                raw.contains("hunter2"),
                "librdkafka's own message quotes it: {raw}"
            );
            let text = redact(err).to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("sasl.passwrd"), "{text}");
        }
    }
}
