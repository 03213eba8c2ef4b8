//! The dead-letter topic: checked at start (described, then written a probe record), and the
//! one producer of dead letters, for the consumer and the webhook bridge alike.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer as _};

use super::client_context::{Producer, ProducerCallbacks};
use super::settings::{producer_config, redact, KafkaSettings};
use crate::metrics::Metrics;
use crate::pipeline::Rejected;

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
pub const TRUNCATED_DEAD_LETTER: usize = 64 * 1024;

/// A message that needs a dead letter: its bytes and where it came from.
pub(super) struct Original {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Vec<u8>,
}

/// Sends to the dead-letter topic until the broker acknowledges.
pub(super) struct DeadLetters {
    pub(super) producer: Producer,
    pub(super) topic: String,
    pub(super) metrics: Arc<Metrics>,
}

impl DeadLetters {
    pub(super) async fn send(&self, original: &Original, rejected: &Rejected) {
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
