//! The Kafka source behind `run`: an at-least-once consumer-group member.
//!
//! - One thread reads the consumer (and so serves rebalance, commit and statistics callbacks);
//!   each message becomes a task. Tasks of the same user run in arrival order (the
//!   [`Sequencer`]), others in parallel, at most `max_inflight` before fetching pauses.
//! - An offset is stored only when every message below it in its partition reached a final
//!   outcome ([`offsets::PartitionOffsets`]); librdkafka commits stored offsets every
//!   `commit_interval`, on revoke and on close. A crash therefore only redelivers, and
//!   redeliveries are absorbed by dedup on `log_id` and by the idempotent Management API.
//! - `invalid` and `failed` messages go to the dead-letter topic (when set) before their offset
//!   is stored; a failed dead-letter produce is retried, never dropped.
//! - Each message is one delivery of [`Pipeline::deliver`]: a task lost inside the pipeline (a
//!   panic) runs again from the payload kept for the dead-letter topic, and after three losses
//!   in a row is dead-lettered as `failed`; without a dead-letter topic (no payload kept) the
//!   message is held at its first loss: its offset is never stored (counted in
//!   `deliveries_held_total`), so it is redelivered after a restart or rebalance, never dropped.
//! - A task that panics outside the pipeline (in the dead-letter send) still releases its
//!   offset: dead-lettered as `failed`, or logged where it lies ([`settle`]); a task aborted at
//!   shutdown leaves its offset unstored.
//! - A revoke waits (bounded by `rebalance_drain`) for the revoked partitions' in-flight
//!   messages; completions for partitions no longer owned, or owned again under a new
//!   assignment, are dropped.

pub mod client_log;
pub mod offsets;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::event::{decode, DecodeError, Decoded};
use crate::metrics::Metrics;
use crate::pipeline::{Outcome, Pipeline, Rejected, SourceKind, Verdict};
use crate::server::Health;
use crate::shutdown::Shutdown;
use crate::source::{users_of, Dispatch, Intake, QuietLog};
use offsets::PartitionOffsets;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// The consumer group when `[kafka] group_id` is not set.
pub const DEFAULT_GROUP_ID: &str = "auth0-default-roles";

/// Validated `[kafka]` settings.
#[derive(Debug, Clone, PartialEq)]
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
}

/// Why the consumer could not run.
#[derive(Debug, thiserror::Error)]
pub enum KafkaRunError {
    #[error("cannot create the Kafka consumer: {0}")]
    Consumer(KafkaError),
    #[error("cannot subscribe to {topics}: {source}")]
    Subscribe { topics: String, source: KafkaError },
    #[error("cannot create the dead-letter producer: {0}")]
    Producer(KafkaError),
    #[error("the consumer thread failed: {0}")]
    Thread(String),
}

/// What a run did, for the exit log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KafkaSummary {
    /// Messages taken from the broker.
    pub messages: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Messages still in flight when the shutdown grace ran out (they will be redelivered).
    pub abandoned: usize,
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
    config
        .set("bootstrap.servers", settings.brokers.join(","))
        .set("enable.idempotence", "true")
        .set("acks", "all");
    config
}

/// One owned partition: its assignment generation and its in-flight offsets.
struct Owned {
    generation: u64,
    offsets: PartitionOffsets,
    paused: bool,
}

type Tp = (String, i32);

#[derive(Default)]
struct Partitions {
    owned: HashMap<Tp, Owned>,
    next_generation: u64,
    /// Set once shutdown drained: the final revoke does not wait again.
    closing: bool,
}

/// What the consumer thread, the callbacks and the tasks share.
struct Consumption {
    state: Mutex<Partitions>,
    /// Signalled whenever a message finishes (the revoke drain waits on it).
    finished: Condvar,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    drain: Duration,
    /// Intake is paused (in-flight full, Management API failing, or shutting down); newly
    /// assigned partitions are paused as they arrive.
    intake: Intake,
}

impl Consumption {
    fn lock(&self) -> MutexGuard<'_, Partitions> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update_partition_gauges(&self, state: &Partitions) {
        let m = &self.metrics;
        m.kafka_assigned_partitions
            .set(i64::try_from(state.owned.len()).unwrap_or(i64::MAX));
        let paused = state.owned.values().filter(|o| o.paused).count();
        m.kafka_paused_partitions
            .set(i64::try_from(paused).unwrap_or(i64::MAX));
    }
}

/// Stores `position` (the next offset to consume) for one partition. `store_offsets` stores
/// the position as given, unlike `store_offset`, which adds one.
fn store_position<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    topic: &str,
    partition: i32,
    position: i64,
) {
    let mut tpl = TopicPartitionList::new();
    if let Err(err) = tpl.add_partition_offset(topic, partition, Offset::Offset(position)) {
        tracing::warn!(%err, topic, partition, "cannot build the offset to store");
        return;
    }
    if let Err(err) = consumer.store_offsets(&tpl) {
        // __STATE: the partition was revoked meanwhile; its new owner redelivers.
        tracing::debug!(%err, topic, partition, position, "offset not stored");
    }
}

/// Logs librdkafka's warnings and errors at warn, at most once per 10 s; the rest at debug.
/// While a broker is down, librdkafka repeats its connection errors every few hundred
/// milliseconds.
pub fn log_librdkafka(
    quiet: &QuietLog,
    level: rdkafka::config::RDKafkaLogLevel,
    fac: &str,
    message: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    let serious = matches!(
        level,
        L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
    );
    if serious && quiet.allow("librdkafka") {
        tracing::warn!(
            facility = fac,
            "librdkafka: {message} (repeats within 10 s are not logged)"
        );
    } else {
        tracing::debug!(facility = fac, "librdkafka: {message}");
    }
}

/// The header of the record [`check_dead_letter_topic`] writes into the dead-letter topic at
/// start (empty value, no key): whoever reads the dead letters (to produce them back, say)
/// skips records carrying it.
pub const DEAD_LETTER_PROBE_HEADER: &str = "dlq.probe";

/// Checks at start that `settings.dead_letter_topic` exists and may be written: a missing or
/// forbidden topic would hold every poison message's offset forever. The topic is described,
/// then written: one probe record with an empty value and the header `dlq.probe=true` (only
/// a write proves write access; describing needs a different permission). An unreachable
/// broker is not an error here (the consumer waits for it); a topic the broker says does not
/// exist, that this client may not describe, or that refuses the probe for good is (`Err`
/// with the reason).
pub async fn check_dead_letter_topic(settings: &KafkaSettings) -> Result<(), String> {
    let Some(topic) = settings.dead_letter_topic.clone() else {
        return Ok(());
    };
    let config = producer_config(settings);
    let described = {
        let (config, topic) = (config.clone(), topic.clone());
        tokio::task::spawn_blocking(move || describe_dead_letter_topic(&config, &topic)).await
    };
    match described {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Ok(()),
        Ok(Err(err)) => return Err(err),
        Err(e) => return Err(format!("checking the dead-letter topic failed: {e}")),
    }
    let mut config = config;
    config
        .set("message.timeout.ms", "10000")
        .set("client.id", "auth0-default-roles-dlq-probe");
    let producer: Producer = config
        .create_with_context(ProducerCallbacks::default())
        .map_err(|e| redact(e).to_string())?;
    let probe = FutureRecord::<'_, [u8], [u8]>::to(&topic)
        .payload(&b""[..])
        .headers(OwnedHeaders::new().insert(Header {
            key: DEAD_LETTER_PROBE_HEADER,
            value: Some("true"),
        }));
    let sent = producer.send(probe, Duration::from_secs(10)).await;
    // Dropping a producer flushes for a while: not on a runtime worker.
    tokio::task::spawn_blocking(move || drop(producer));
    match sent {
        Ok(_) => {
            tracing::info!(dead_letter_topic = %topic, "the dead-letter topic takes writes (a `dlq.probe` record was written)");
            Ok(())
        }
        Err((KafkaError::MessageProduction(code), _)) if never_accepted(code) => Err(format!(
            "kafka.dead_letter_topic `{topic}` refuses this client's records: {code} (grant it write access, or remove the key)"
        )),
        Err((err, _)) => {
            tracing::warn!(%err, topic, "cannot write the dead-letter topic now (broker unreachable?); going on");
            Ok(())
        }
    }
}

/// The metadata part of [`check_dead_letter_topic`]: `Ok(true)` when the topic exists with
/// partitions, `Ok(false)` when the broker cannot be asked now.
fn describe_dead_letter_topic(config: &ClientConfig, topic: &str) -> Result<bool, String> {
    let producer: rdkafka::producer::BaseProducer<ProducerCallbacks> = config
        .create_with_context(ProducerCallbacks::default())
        .map_err(|e| redact(e).to_string())?;
    let metadata = match producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
    {
        Ok(metadata) => metadata,
        Err(err) => {
            tracing::warn!(%err, topic, "cannot check the dead-letter topic now (broker unreachable?); going on");
            return Ok(false);
        }
    };
    match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) => match t.error() {
            None if !t.partitions().is_empty() => Ok(true),
            None => Err(format!("kafka.dead_letter_topic `{topic}` has no partitions")),
            Some(code) => Err(format!(
                "kafka.dead_letter_topic `{topic}`: {} (create it, or grant this client write access)",
                RDKafkaErrorCode::from(code)
            )),
        },
        None => Err(format!(
            "kafka.dead_letter_topic `{topic}` does not exist: create it (1 partition is enough) or remove the key"
        )),
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

/// Logs a client error reported by librdkafka at most once per 10 s.
fn log_client_error(quiet: &QuietLog, client: &str, error: &KafkaError, reason: &str) {
    if quiet.allow("client-error") {
        tracing::warn!(%error, reason, "Kafka {client} error (librdkafka retries by itself; repeats within 10 s are not logged)");
    }
}

/// The context of the service's producers (dead letters, the `ingest` bridge): quiet logs.
#[derive(Default)]
pub struct ProducerCallbacks {
    quiet: QuietLog,
}

impl ClientContext for ProducerCallbacks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(&self.quiet, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&self.quiet, "producer", &error, reason);
    }
}

impl rdkafka::producer::ProducerContext for ProducerCallbacks {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// A producer with the service's quiet logging.
pub type Producer = FutureProducer<ProducerCallbacks>;

/// The librdkafka callbacks: rebalances, commits, statistics, errors.
pub struct ConsumerCallbacks {
    shared: Arc<Consumption>,
    /// Rate-limits repeated client errors (a dead broker reports every few seconds).
    quiet: QuietLog,
}

impl ClientContext for ConsumerCallbacks {
    fn stats(&self, statistics: Statistics) {
        let state = self.shared.lock();
        let lag = &self.shared.metrics.kafka_consumer_lag;
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                if *id < 0 || p.consumer_lag < 0 {
                    continue;
                }
                if state.owned.contains_key(&(topic.clone(), *id)) {
                    lag.with_label_values(&[topic.as_str(), id.to_string().as_str()])
                        .set(p.consumer_lag);
                }
            }
        }
    }

    /// librdkafka's own log; its connection failures are also reported through `error`.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(&self.quiet, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&self.quiet, "consumer", &error, reason);
    }
}

impl ConsumerContext for ConsumerCallbacks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let parts: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let lost = consumer.assignment_lost();
        let deadline = Instant::now() + self.shared.drain;
        let mut state = self.shared.lock();
        // Drain: wait for the revoked partitions' in-flight messages. Their offsets are stored
        // as they finish; librdkafka commits them when it unassigns.
        loop {
            let pending: usize = parts
                .iter()
                .filter_map(|p| state.owned.get(p))
                .map(|o| o.offsets.in_flight())
                .sum();
            if pending == 0 || lost || state.closing {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    pending,
                    drain_seconds = self.shared.drain.as_secs_f64(),
                    "revoke: drain deadline reached; unfinished messages will be redelivered to the partitions' next owner"
                );
                break;
            }
            state = self
                .shared
                .finished
                .wait_timeout(state, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        for (topic, partition) in &parts {
            state.owned.remove(&(topic.clone(), *partition));
            let _ = self
                .shared
                .metrics
                .kafka_consumer_lag
                .remove_label_values(&[topic.as_str(), partition.to_string().as_str()]);
        }
        self.shared.update_partition_gauges(&state);
        let kind = if lost { "lost" } else { "revoke" };
        self.shared
            .metrics
            .kafka_rebalances
            .with_label_values(&[kind])
            .inc();
        tracing::info!(partitions = ?parts, lost, "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut state = self.shared.lock();
                let pause = self.shared.intake.is_paused();
                let mut parts = Vec::new();
                for e in tpl.elements() {
                    state.next_generation += 1;
                    let generation = state.next_generation;
                    parts.push((e.topic().to_owned(), e.partition()));
                    state.owned.insert(
                        (e.topic().to_owned(), e.partition()),
                        Owned {
                            generation,
                            offsets: PartitionOffsets::default(),
                            paused: pause,
                        },
                    );
                }
                if pause && tpl.count() > 0 {
                    if let Err(err) = consumer.pause(tpl) {
                        tracing::warn!(%err, "cannot pause newly assigned partitions");
                    }
                }
                self.shared.update_partition_gauges(&state);
                drop(state);
                self.shared.health.set_source_connected(true);
                self.shared
                    .metrics
                    .kafka_rebalances
                    .with_label_values(&["assign"])
                    .inc();
                tracing::info!(partitions = ?parts, "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(err) => {
                self.shared
                    .metrics
                    .kafka_rebalances
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(%err, "rebalance error");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        let commits = &self.shared.metrics.kafka_offset_commits;
        match result {
            Ok(()) => commits.with_label_values(&["ok"]).inc(),
            // Nothing new was stored since the last commit.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => {
                commits.with_label_values(&["error"]).inc();
                tracing::warn!(%err, "offset commit failed (the next commit carries the same offsets)");
            }
        }
    }
}

/// Broker answers that no retry of the same record can change (authorization, policy, an
/// invalid record): the dead-letter produce gives up instead of holding the partition.
pub(crate) fn never_accepted(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::UnsupportedForMessageFormat
    )
}

/// The headers that say a dead letter was cut to [`TRUNCATED_DEAD_LETTER`] bytes of
/// `original_size`.
pub(crate) fn mark_truncated(headers: OwnedHeaders, original_size: &str) -> OwnedHeaders {
    headers
        .insert(Header {
            key: "dlq.truncated",
            value: Some("true"),
        })
        .insert(Header {
            key: "dlq.original.size",
            value: Some(original_size),
        })
}

/// What is kept of a dead letter the topic refuses as too large (headers mark it truncated).
pub(crate) const TRUNCATED_DEAD_LETTER: usize = 64 * 1024;

/// A message that needs a dead letter: its bytes and where it came from.
struct Original {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

/// Sends to the dead-letter topic until the broker acknowledges.
struct DeadLetters {
    producer: Producer,
    topic: String,
    metrics: Arc<Metrics>,
}

impl DeadLetters {
    async fn send(&self, original: &Original, rejected: &Rejected) {
        let reason = rejected.reason();
        let mut delay = Duration::from_millis(500);
        let error: String = rejected.error.chars().take(500).collect();
        let partition = original.partition.to_string();
        let offset = original.offset.to_string();
        let original_size = original.payload.len().to_string();
        // After "message too large", the payload is cut to this (and the headers say so).
        let mut keep = original.payload.len();
        loop {
            let truncated = keep < original.payload.len();
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: "dlq.original.topic",
                    value: Some(original.topic.as_bytes()),
                })
                .insert(Header {
                    key: "dlq.original.partition",
                    value: Some(partition.as_bytes()),
                })
                .insert(Header {
                    key: "dlq.original.offset",
                    value: Some(offset.as_bytes()),
                })
                .insert(Header {
                    key: "dlq.reason",
                    value: Some(reason.as_bytes()),
                })
                .insert(Header {
                    key: "dlq.error",
                    value: Some(error.as_bytes()),
                });
            if truncated {
                headers = mark_truncated(headers, &original_size);
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .payload(&original.payload[..keep])
                .headers(headers);
            if let Some(key) = &original.key {
                record = record.key(&key[..]);
            }
            match self.producer.send(record, Duration::from_secs(30)).await {
                Ok(_) => {
                    self.metrics.dead_letters.with_label_values(&[reason]).inc();
                    tracing::warn!(
                        topic = %original.topic, partition = original.partition, offset = original.offset,
                        reason, dead_letter_topic = %self.topic, "message sent to the dead-letter topic"
                    );
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))
                    if keep > TRUNCATED_DEAD_LETTER =>
                {
                    // The same bytes would fail forever: keep the beginning, say so.
                    tracing::warn!(
                        size = original.payload.len(),
                        kept = TRUNCATED_DEAD_LETTER,
                        "dead letter too large for the topic: sending it truncated"
                    );
                    keep = TRUNCATED_DEAD_LETTER;
                }
                Err((KafkaError::MessageProduction(code), _)) if never_accepted(code) => {
                    // Retrying cannot help and would hold the partition forever. The message
                    // stays in its source topic (until retention): this line says where.
                    self.metrics
                        .dead_letters
                        .with_label_values(&["not_delivered"])
                        .inc();
                    tracing::error!(
                        error = %code, topic = %original.topic, partition = original.partition,
                        offset = original.offset, reason, dead_letter_topic = %self.topic,
                        "the dead-letter topic refuses this record for good; not retried: find it at this offset of the source topic"
                    );
                    return;
                }
                Err((err, _)) => {
                    tracing::warn!(%err, retry_in = ?delay, "dead-letter produce failed; retrying (the offset waits)");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Consumes until `shutdown`, then drains, commits and leaves the group.
///
/// The consumer is read on a thread of its own: librdkafka runs the rebalance callback on the
/// reading thread, and the revoke drain blocks it (never a runtime worker).
pub async fn run(
    settings: KafkaSettings,
    pipeline: Arc<Pipeline>,
    health: Arc<Health>,
    shutdown: Shutdown,
) -> Result<KafkaSummary, KafkaRunError> {
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kafka-consumer".to_owned())
        .spawn(move || {
            let result = handle.block_on(consume(settings, pipeline, health, shutdown));
            let _ = tx.send(result);
        })
        .map_err(|e| KafkaRunError::Thread(e.to_string()))?;
    rx.await
        .map_err(|_| KafkaRunError::Thread("the consumer thread panicked".to_owned()))?
}

/// Where a message task reports: its partition, generation and offset.
struct Position {
    tp: Tp,
    generation: u64,
    offset: i64,
}

async fn consume(
    settings: KafkaSettings,
    pipeline: Arc<Pipeline>,
    health: Arc<Health>,
    shutdown: Shutdown,
) -> Result<KafkaSummary, KafkaRunError> {
    let metrics = Arc::clone(pipeline.metrics());
    let shared = Arc::new(Consumption {
        state: Mutex::new(Partitions::default()),
        finished: Condvar::new(),
        metrics: Arc::clone(&metrics),
        health,
        drain: settings.rebalance_drain,
        intake: Intake::new(settings.max_inflight),
    });
    let context = ConsumerCallbacks {
        shared: Arc::clone(&shared),
        quiet: QuietLog::default(),
    };
    let consumer: Arc<StreamConsumer<ConsumerCallbacks>> = Arc::new(
        consumer_config(&settings)
            .create_with_context(context)
            .map_err(|e| KafkaRunError::Consumer(redact(e)))?,
    );
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| KafkaRunError::Subscribe {
            topics: settings.topics.join(","),
            source,
        })?;
    let dead_letters = match &settings.dead_letter_topic {
        Some(topic) => Some(Arc::new(DeadLetters {
            producer: producer_config(&settings)
                .create_with_context(ProducerCallbacks::default())
                .map_err(|e| KafkaRunError::Producer(redact(e)))?,
            topic: topic.clone(),
            metrics: Arc::clone(&metrics),
        })),
        None => None,
    };
    tracing::info!(
        topics = %settings.topics.join(","), group_id = %settings.group_id,
        max_inflight = settings.max_inflight, "consuming"
    );

    let dead_letter_count = Arc::new(AtomicU64::new(0));
    let mut dispatch: Dispatch<()> = Dispatch::default();
    let mut summary = KafkaSummary::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let quiet = QuietLog::default();

    loop {
        for lost in dispatch.finished().into_iter().filter_map(Result::err) {
            // A panic inside a task is caught there (see `settle`); this is a panic while
            // finishing its offset: that offset stays unstored (redelivered later).
            tracing::error!(%lost, "a message task failed while storing its offset; it is not committed");
        }
        if let Some(pause) = shared.intake.update_waiting(
            dispatch.len(),
            pipeline.waiting() + dispatch.queued(),
            pipeline.is_tenant_failing(),
        ) {
            pause_partitions(&shared, consumer.as_ref(), pause);
        }
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            _ = tick.tick() => {}
            message = consumer.recv() => match message {
                Err(err) => {
                    if quiet.allow("consume") {
                        tracing::warn!(%err, "Kafka consume error (librdkafka retries by itself; repeats within 10 s are not logged)");
                    }
                }
                Ok(message) => {
                    let tp = (message.topic().to_owned(), message.partition());
                    let offset = message.offset();
                    let generation = {
                        let mut state = shared.lock();
                        match state.owned.get_mut(&tp) {
                            Some(owned) => {
                                owned.offsets.begin(offset);
                                owned.generation
                            }
                            None => {
                                tracing::debug!(topic = %tp.0, partition = tp.1, offset, "message of a partition not owned; left to its owner");
                                continue;
                            }
                        }
                    };
                    summary.messages += 1;
                    let payload = message.payload().unwrap_or_default();
                    let items = decode_message(payload);
                    let original = dead_letters.as_ref().map(|_| Original {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        offset,
                        key: message.key().map(<[u8]>::to_vec),
                        payload: payload.to_vec(),
                    });
                    drop(message);
                    let users = users_of(&items);
                    let task = MessageTask {
                        pipeline: Arc::clone(&pipeline),
                        shared: Arc::clone(&shared),
                        consumer: Arc::downgrade(&consumer),
                        dead_letters: dead_letters.clone(),
                        dead_letter_count: Arc::clone(&dead_letter_count),
                        items,
                        original,
                        position: Position { tp, generation, offset },
                    };
                    dispatch.spawn(users, move || task.run());
                }
            },
        }
    }

    // Shutdown: stop fetching, drain within the grace period, commit, leave the group.
    tracing::info!(
        in_flight = dispatch.len(),
        grace_seconds = settings.shutdown_grace.as_secs_f64(),
        "shutting down: intake stopped, draining"
    );
    shared.intake.stop();
    pause_partitions(&shared, consumer.as_ref(), true);
    // Keep serving the group while draining; messages read now are not taken (not begun, not
    // stored).
    summary.abandoned = dispatch
        .drain(settings.shutdown_grace, || async {
            let _ = consumer.recv().await;
        })
        .await;
    if summary.abandoned > 0 {
        tracing::warn!(
            abandoned = summary.abandoned,
            "shutdown grace over: unfinished messages are left uncommitted and will be redelivered"
        );
    }
    shared.lock().closing = true;
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => metrics
            .kafka_offset_commits
            .with_label_values(&["ok"])
            .inc(),
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(err) => {
            metrics
                .kafka_offset_commits
                .with_label_values(&["error"])
                .inc();
            tracing::warn!(%err, "final offset commit failed; the last periodic commit stands");
        }
    }
    summary.dead_letters = dead_letter_count.load(Ordering::Relaxed);
    // Dropping the last reference closes the consumer: final revoke, commit, LeaveGroup.
    drop(consumer);
    tracing::info!(messages = summary.messages, "left the consumer group");
    Ok(summary)
}

/// One message's work: its events through the pipeline, a dead letter when one was rejected,
/// then its offset finished.
struct MessageTask {
    pipeline: Arc<Pipeline>,
    shared: Arc<Consumption>,
    consumer: Weak<StreamConsumer<ConsumerCallbacks>>,
    dead_letters: Option<Arc<DeadLetters>>,
    dead_letter_count: Arc<AtomicU64>,
    items: Vec<Decoded>,
    original: Option<Original>,
    position: Position,
}

/// What a message task does with its offset slot once its work ended.
enum Ack {
    /// The offset is finished (stored once every offset below it is).
    Release,
    /// Kept unacknowledged: the message's task was lost and it has no dead-letter topic to go
    /// to; the partition's watermark stays before it until a restart or rebalance. Why.
    Hold(String),
}

impl MessageTask {
    async fn run(self) {
        let MessageTask {
            pipeline,
            shared,
            consumer,
            dead_letters,
            dead_letter_count,
            items,
            original,
            position,
        } = self;
        let dlq = dead_letters.as_deref();
        let work = async {
            // With a dead-letter topic the payload is kept already: a lost task runs again from
            // it. Without, nothing is kept (no copy per message in flight): a loss holds it.
            let again = original
                .as_ref()
                .map(|o| move || decode_message(&o.payload));
            let verdict = pipeline.deliver(items, again, |_| {}).await;
            match (verdict, dlq, original.as_ref()) {
                (Verdict::DeadLetter(rejected), Some(dlq), Some(original)) => {
                    dlq.send(original, &rejected).await;
                    dead_letter_count.fetch_add(1, Ordering::Relaxed);
                    Ack::Release
                }
                (Verdict::Retry(why), _, _) => Ack::Hold(why),
                _ => Ack::Release,
            }
        };
        let slot = OffsetSlot {
            shared,
            consumer,
            position,
        };
        settle(work, slot, dlq, original.as_ref(), &dead_letter_count).await;
    }
}

/// A message's place in its partition's watermark, released by [`OffsetSlot::finish`].
struct OffsetSlot {
    shared: Arc<Consumption>,
    consumer: Weak<StreamConsumer<ConsumerCallbacks>>,
    position: Position,
}

impl OffsetSlot {
    /// The message reached its end: its offset is finished, and the partition's new
    /// watermark stored (unless the partition was revoked or assigned again meanwhile).
    fn finish(self) {
        let Position {
            tp,
            generation,
            offset,
        } = self.position;
        {
            let mut state = self.shared.lock();
            if let Some(owned) = state.owned.get_mut(&tp) {
                if owned.generation == generation {
                    if let Some(position) = owned.offsets.finish(offset) {
                        if let Some(consumer) = self.consumer.upgrade() {
                            store_position(consumer.as_ref(), &tp.0, tp.1, position);
                        }
                    }
                }
            }
        }
        self.shared.finished.notify_all();
    }
}

/// Runs a message's `work`, then releases its offset slot.
///
/// A panic outside `Pipeline::process` (which catches its own), in the dead-letter send for
/// example, must not hold the partition's watermark forever (nothing after the message would
/// ever be committed). A panicking message is dead-lettered as `failed` with an "internal
/// error" (a bug is deterministic: redelivering it would panic again and hold the partition
/// again); without a dead-letter topic, or when dead-lettering panics too, its offset is
/// finished with an error log naming its topic, partition and offset. A task aborted at
/// shutdown never gets past its `work`: its offset stays unfinished, and the message is
/// redelivered.
async fn settle<F: std::future::Future<Output = Ack>>(
    work: F,
    slot: OffsetSlot,
    dead_letters: Option<&DeadLetters>,
    original: Option<&Original>,
    dead_letter_count: &AtomicU64,
) {
    use futures_util::FutureExt as _;
    let ended = std::panic::AssertUnwindSafe(work).catch_unwind().await;
    if let Ok(Ack::Hold(why)) = &ended {
        slot.shared
            .metrics
            .deliveries_held
            .with_label_values(&[SourceKind::Kafka.as_str()])
            .inc();
        let (tp, offset) = (&slot.position.tp, slot.position.offset);
        tracing::error!(
            topic = %tp.0, partition = tp.1, offset, reason = %why,
            "a message's task was lost and there is no dead-letter topic: its offset is kept unacknowledged (the partition commits no further until a restart or rebalance redelivers it)"
        );
        return;
    }
    let panicked = ended.err().map(|p| panic_text(p.as_ref()));
    if let Some(what) = panicked {
        slot.shared
            .metrics
            .task_panics
            .with_label_values(&[SourceKind::Kafka.as_str()])
            .inc();
        let (topic, partition, offset) = (
            slot.position.tp.0.as_str(),
            slot.position.tp.1,
            slot.position.offset,
        );
        let rejected = Rejected {
            outcome: Outcome::Failed,
            error: format!("internal error (a panic in the Kafka consumer): {what}"),
        };
        let sent = match (dead_letters, original) {
            (Some(dlq), Some(original)) => {
                tracing::error!(
                    topic, partition, offset, panic = %what,
                    "a message task panicked: the message is dead-lettered as failed and its offset stored"
                );
                let send = std::panic::AssertUnwindSafe(dlq.send(original, &rejected));
                match send
                    .catch_unwind()
                    .await
                    .map_err(|p| panic_text(p.as_ref()))
                {
                    Ok(()) => {
                        dead_letter_count.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(again) => {
                        tracing::error!(topic, partition, offset, panic = %again, "dead-lettering the message panicked too");
                        false
                    }
                }
            }
            _ => false,
        };
        if !sent {
            tracing::error!(
                topic, partition, offset, panic = %what,
                "a message task panicked and the message cannot be dead-lettered: its offset is stored anyway so the partition is not held forever; the message is not processed again: find it at this offset of the source topic"
            );
        }
    }
    slot.finish();
}

/// A message's events: at least one (an empty value is one invalid event).
fn decode_message(payload: &[u8]) -> Vec<Decoded> {
    let mut items: Vec<Decoded> = decode(payload);
    if items.is_empty() {
        items.push(Err(DecodeError::new(
            "message holds no event (empty value)",
            None,
        )));
    }
    items
}

/// What a caught panic said.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Pauses or resumes every owned partition.
fn pause_partitions(
    shared: &Consumption,
    consumer: &StreamConsumer<ConsumerCallbacks>,
    pause: bool,
) {
    let mut state = shared.lock();
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), owned) in state.owned.iter_mut() {
        if owned.paused != pause {
            tpl.add_partition(topic, *partition);
            owned.paused = pause;
        }
    }
    if tpl.count() > 0 {
        let result = if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        if let Err(err) = result {
            tracing::warn!(%err, pause, "cannot pause/resume partitions");
        }
    }
    shared.update_partition_gauges(&state);
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn shared_for_test() -> Arc<Consumption> {
        Arc::new(Consumption {
            state: Mutex::new(Partitions::default()),
            finished: Condvar::new(),
            metrics: Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}"))),
            health: Health::new(SourceKind::Kafka),
            drain: Duration::from_secs(1),
            intake: Intake::new(10),
        })
    }

    /// The pending offsets of partition `t`/0.
    fn pending(shared: &Consumption) -> Vec<i64> {
        shared
            .lock()
            .owned
            .get(&("t".to_owned(), 0))
            .map(|o| o.offsets.pending().collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_task_that_panics_releases_its_offset_and_an_aborted_one_does_not() {
        let shared = shared_for_test();
        let tp: Tp = ("t".to_owned(), 0);
        {
            let mut state = shared.lock();
            let mut offsets = PartitionOffsets::default();
            for o in 0..3 {
                offsets.begin(o);
            }
            state.owned.insert(
                tp.clone(),
                Owned {
                    generation: 1,
                    offsets,
                    paused: false,
                },
            );
        }
        let slot = |offset| OffsetSlot {
            shared: Arc::clone(&shared),
            consumer: Weak::new(),
            position: Position {
                tp: tp.clone(),
                generation: 1,
                offset,
            },
        };
        let count = Arc::new(AtomicU64::new(0));

        // Offset 0 panics after processing (where the dead-letter send runs).
        let (s, c) = (slot(0), Arc::clone(&count));
        let joined = tokio::spawn(async move {
            let work = async {
                if c.load(Ordering::Relaxed) == 0 {
                    panic!("boom in the dead-letter send");
                }
                Ack::Release
            };
            settle(work, s, None, None, &c).await;
        })
        .await;
        assert!(joined.is_ok(), "the panic is caught in the task");
        assert_eq!(pending(&shared), vec![1, 2], "offset 0 released");
        assert_eq!(
            shared
                .metrics
                .task_panics
                .with_label_values(&["kafka"])
                .get(),
            1
        );

        // Offset 1 is aborted (shutdown grace over): it stays pending, redelivered.
        let (s, c) = (slot(1), Arc::clone(&count));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let aborted = tokio::spawn(async move {
            let work = async {
                let _ = started_tx.send(());
                std::future::pending::<()>().await;
                Ack::Release
            };
            settle(work, s, None, None, &c).await;
        });
        let _ = started_rx.await;
        aborted.abort();
        assert!(aborted.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(
            pending(&shared),
            vec![1, 2],
            "an aborted task keeps its offset"
        );

        // Offset 2 ends normally; the watermark stops at the aborted offset 1.
        settle(async { Ack::Release }, slot(2), None, None, &count).await;
        assert_eq!(pending(&shared), vec![1]);
        let watermark = shared
            .lock()
            .owned
            .get(&tp)
            .and_then(|o| o.offsets.watermark());
        assert_eq!(watermark, Some(1), "0 is committable, 1 is not");
        assert_eq!(count.load(Ordering::Relaxed), 0, "no dead-letter topic");
    }
}
