//! Bridge mode: each record produced into `[kafka] topic`, keyed by `user_id`, with an
//! idempotent `acks=all` producer; a record the topic refuses for good goes to the dead-letter
//! topic.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureRecord, Producer as _};

use crate::event::Decoded;
use crate::metrics::Metrics;
use crate::server::Health;
use crate::source::kafka::dead_letter::{DeadLetter, DeadLetterProducer, LetterOrigin};
use crate::source::kafka::{KafkaSettings, Producer, ProducerCallbacks};
use crate::source::QuietLog;

/// Environment variable holding the webhook's Authorization token.
use super::http::{json, Answer};
use super::*;

/// The Kafka bridge: an idempotent producer.
pub struct Bridge {
    /// Replaced when librdkafka reports a fatal error (an idempotent producer whose state the
    /// broker no longer knows cannot recover by itself).
    producer: std::sync::Mutex<Producer>,
    /// Keeps producer replacements at least 10 s apart.
    replaced: QuietLog,
    config: rdkafka::ClientConfig,
    topic: String,
    pub(super) dead_letter_topic: Option<String>,
    /// Replacement producers count their library errors here too.
    metrics: Arc<Metrics>,
}

/// The bridge producer's configuration: `[kafka.properties]` (producer-relevant ones), then
/// idempotence and `acks=all`. Deliveries wait at most `message.timeout.ms` (10 s unless set)
/// so Auth0 gets its 503 well before it gives up on the request.
pub fn bridge_config(kafka: &KafkaSettings) -> rdkafka::ClientConfig {
    let mut config = crate::source::kafka::producer_config(kafka);
    if !kafka.properties.contains_key("message.timeout.ms") {
        config.set("message.timeout.ms", "10000");
    }
    if !kafka.properties.contains_key("linger.ms") {
        config.set("linger.ms", "5");
    }
    config.set("client.id", "auth0-default-roles-ingest");
    config
}

impl Bridge {
    pub fn new(kafka: &KafkaSettings, metrics: &Arc<Metrics>) -> Result<Bridge, IngestError> {
        let config = bridge_config(kafka);
        let producer = config
            .create_with_context(ProducerCallbacks::counting(metrics))
            .map_err(|e| IngestError::Producer(crate::source::kafka::redact(e)))?;
        Ok(Bridge {
            producer: std::sync::Mutex::new(producer),
            replaced: QuietLog::default(),
            config,
            topic: kafka.topics.first().cloned().unwrap_or_default(),
            dead_letter_topic: kafka.dead_letter_topic.clone(),
            metrics: Arc::clone(metrics),
        })
    }

    pub(super) fn producer(&self) -> Producer {
        self.producer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a delivery failed, starts over with a new producer (at most every 10 s). An
    /// idempotent producer whose id the broker no longer knows (a cluster rebuilt, a
    /// transaction-state loss) keeps failing with `UNKNOWN_PRODUCER_ID` or ends in a fatal
    /// error; a fresh producer gets a new id. Records the old one still held fail, so their
    /// deliveries get 503 and Auth0 sends them again: nothing is lost.
    fn recover(&self) {
        {
            if !self.replaced.allow("replace") {
                return;
            }
        }
        let fresh = match self
            .config
            .create_with_context(ProducerCallbacks::counting(&self.metrics))
        {
            Ok(fresh) => fresh,
            Err(err) => {
                let err = crate::source::kafka::redact(err);
                tracing::error!(%err, "cannot recreate the bridge producer");
                return;
            }
        };
        let old = {
            let mut current = self.producer.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((code, reason)) = current.client().fatal_error() {
                tracing::warn!(?code, reason, "bridge producer hit a fatal error");
            }
            std::mem::replace(&mut *current, fresh)
        };
        tracing::info!("bridge producer replaced after failed deliveries");
        // Dropping a producer purges and flushes for up to 500 ms: not on a runtime worker.
        tokio::task::spawn_blocking(move || drop(old));
    }

    /// Checks the broker answers, every 5 s, into `health.source`.
    pub fn spawn_readiness(self: &Arc<Self>, health: Arc<Health>) {
        let bridge = Arc::clone(self);
        let topic = self.topic.clone();
        tokio::spawn(async move {
            loop {
                let producer = bridge.producer();
                let topic = topic.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    producer
                        .client()
                        .fetch_metadata(Some(&topic), Duration::from_secs(3))
                        .map(|m| m.topics().iter().any(|t| t.error().is_none()))
                        .unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                health.set_source_connected(ok);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }

    /// Waits for every queued message to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(err) = self.producer().flush(timeout) {
            tracing::warn!(%err, "bridge producer: not every message was flushed");
        }
    }
}

/// A record the bridge could not put into `[kafka] topic` and keeps in the dead-letter topic.
struct Letter<'a> {
    key: Option<&'a str>,
    log_id: Option<&'a str>,
    bytes: &'a [u8],
    /// `invalid` (not a record) or `failed` (the topic refuses it for good).
    reason: &'static str,
    error: String,
}

impl Letter<'_> {
    /// The dead-letter record of this letter.
    fn dead_letter(&self) -> DeadLetter<'_> {
        DeadLetter {
            origin: LetterOrigin::Ingest,
            key: self.key.map(str::as_bytes),
            payload: self.bytes,
            reason: self.reason,
            error: &self.error,
        }
    }
}

/// A record of a delivery, keyed by its user.
struct Keyed {
    key: Option<String>,
    log_id: Option<String>,
    bytes: Vec<u8>,
}

/// Produces one record to `topic` and waits for the broker's acknowledgement.
async fn produce(
    producer: &Producer,
    topic: &str,
    key: Option<&str>,
    bytes: &[u8],
) -> Result<(), KafkaError> {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(bytes);
    if let Some(k) = key {
        record = record.key(k);
    }
    producer
        .send(record, Duration::from_secs(5))
        .await
        .map(|_| ())
        .map_err(|(err, _)| err)
}

/// Whether the topic refuses this record for good: no retry of the same bytes can succeed (too
/// large, an invalid record), so answering 503 would make Auth0 resend it forever. Refusals of
/// every record (authorization, policy, an invalid topic) are the deployment's fault, not the
/// record's: they stay 503, so Auth0 keeps the delivery until the permission is fixed.
pub(super) fn refused_for_good(err: &KafkaError) -> Option<RDKafkaErrorCode> {
    match err {
        KafkaError::MessageProduction(
            code @ (RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord),
        ) => Some(*code),
        _ => None,
    }
}

/// Produces a delivery's records; answers 200 once each is produced or kept in the
/// dead-letter topic, 503 (Auth0 resends the delivery) while any failed for a reason that may
/// pass (a broker down, a timeout).
///
/// A record the topic refuses for good (too large, not authorized, invalid) would fail every
/// resend: it goes to the dead-letter topic (`dlq.reason=failed`) like an invalid one
/// (`dlq.reason=invalid`). Without a dead-letter topic, or when that topic refuses it too, it
/// is counted (`ingest_records{outcome="failed"}`; `dead_letters{reason="not_delivered"}`
/// when the dead-letter topic refused it) and logged at error with its `log_id`, and the
/// delivery is still answered 200: a 503 would only
/// make Auth0 resend the same batch until it suspends the stream, losing everything after it.
pub(super) async fn bridge_records(
    bridge: &Bridge,
    m: &Metrics,
    total: usize,
    good: Vec<(Vec<u8>, Vec<Decoded>)>,
    invalid: Vec<(Vec<u8>, String)>,
) -> Response {
    let keyed: Vec<Keyed> = good
        .into_iter()
        .map(|(bytes, events)| {
            let ok = || events.iter().filter_map(|e| e.as_ref().ok());
            Keyed {
                key: ok().find_map(|e| e.user()).map(str::to_owned),
                log_id: ok().find_map(|e| e.log_id.clone()),
                bytes,
            }
        })
        .collect();
    let producer = bridge.producer();
    let results = futures_util::future::join_all(
        keyed
            .iter()
            .map(|r| produce(&producer, &bridge.topic, r.key.as_deref(), &r.bytes)),
    )
    .await;
    let mut produced = 0usize;
    let mut transient: Vec<String> = Vec::new();
    let mut letters: Vec<Letter<'_>> = Vec::new();
    for (record, first) in keyed.iter().zip(results) {
        let mut outcome = first;
        // A batch is refused as a whole: alone, the record may fit after all.
        if outcome
            .as_ref()
            .is_err_and(|err| refused_for_good(err).is_some())
        {
            outcome = produce(
                &producer,
                &bridge.topic,
                record.key.as_deref(),
                &record.bytes,
            )
            .await;
        }
        let err = match outcome {
            Ok(()) => {
                produced += 1;
                continue;
            }
            Err(err) if refused_for_good(&err).is_none() => {
                transient.push(err.to_string());
                continue;
            }
            Err(err) => err,
        };
        letters.push(Letter {
            key: record.key.as_deref(),
            log_id: record.log_id.as_deref(),
            bytes: &record.bytes,
            reason: "failed",
            error: format!(
                "the topic `{}` refuses this record for good: {err}",
                bridge.topic
            ),
        });
    }
    let refused = letters.len();
    letters.extend(
        invalid
            .iter()
            .filter(|(b, _)| !b.is_empty())
            .map(|(bytes, reason)| Letter {
                key: None,
                log_id: None,
                bytes,
                reason: "invalid",
                error: reason.clone(),
            }),
    );
    let mut dead_lettered = 0usize;
    let mut lost: Vec<(&Letter<'_>, String)> = Vec::new();
    match &bridge.dead_letter_topic {
        Some(dlq) => {
            let dead_letters =
                DeadLetterProducer::new(producer.clone(), dlq.clone(), Duration::from_secs(5));
            let sent = futures_util::future::join_all(
                letters
                    .iter()
                    .map(|l| async { dead_letters.send(&l.dead_letter()).await }),
            )
            .await;
            for (letter, result) in letters.iter().zip(sent) {
                match result {
                    Ok(()) => {
                        dead_lettered += 1;
                        m.dead_letters.with_label_values(&[letter.reason]).inc();
                        if letter.reason == "failed" {
                            tracing::warn!(
                                log_id = letter.log_id.unwrap_or("-"), user_id = letter.key.unwrap_or("-"),
                                size = letter.bytes.len(), error = %letter.error, dead_letter_topic = %dlq,
                                "record sent to the dead-letter topic"
                            );
                        }
                    }
                    Err(err) if refused_for_good(&err).is_some() => {
                        lost.push((
                            letter,
                            format!("the dead-letter topic refuses it too: {err}"),
                        ));
                    }
                    Err(err) => transient.push(err.to_string()),
                }
            }
        }
        None => lost.extend(
            letters
                .iter()
                .filter(|l| l.reason == "failed")
                .map(|l| (l, "no dead-letter topic".to_owned())),
        ),
    }
    for (letter, why) in &lost {
        if bridge.dead_letter_topic.is_some() {
            m.dead_letters.with_label_values(&["not_delivered"]).inc();
        }
        tracing::error!(
            log_id = letter.log_id.unwrap_or("-"), user_id = letter.key.unwrap_or("-"),
            size = letter.bytes.len(), reason = letter.reason, error = %letter.error, kept_nowhere = %why,
            "a record of a delivery cannot be kept in Kafka and is not retried (the same bytes fail every time): find the event in the tenant's logs by its log_id"
        );
    }
    m.ingest_records
        .with_label_values(&["failed"])
        .inc_by(refused as u64);
    let dead_lettered = bridge.dead_letter_topic.as_ref().map(|_| dead_lettered);
    if transient.is_empty() {
        m.ingest_records
            .with_label_values(&["produced"])
            .inc_by(produced as u64);
        json(
            StatusCode::OK,
            &Answer {
                records: total,
                produced: Some(produced),
                invalid: invalid.len(),
                failed: Some(refused),
                dead_lettered,
                ..Answer::default()
            },
        )
    } else {
        bridge.recover();
        m.ingest_records
            .with_label_values(&["unacknowledged"])
            .inc_by(transient.len() as u64);
        tracing::warn!(
            unacknowledged = transient.len(),
            error = %transient[0],
            "the broker did not acknowledge every record: answering 503 so Auth0 retries the delivery"
        );
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Answer {
                records: total,
                produced: Some(produced),
                invalid: invalid.len(),
                failed: Some(refused),
                dead_lettered,
                error: Some("the Kafka broker did not acknowledge every record; retry".to_owned()),
                ..Answer::default()
            },
        )
    }
}
