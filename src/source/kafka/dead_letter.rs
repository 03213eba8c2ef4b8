//! The dead-letter topic: checked at start (described, then written a probe record), and the
//! one producer of dead letters, for the consumer and the webhook bridge alike.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer as _};

use super::client_context::{Producer, ProducerCallbacks};
use super::settings::{producer_config, redact, KafkaSettings};
use crate::metrics::Metrics;

/// The header of the record [`check_dead_letter_topic`] writes into the dead-letter topic at
/// start (empty value, no key): whoever reads the dead letters (to produce them back, say)
/// skips records carrying it.
pub const DEAD_LETTER_PROBE_HEADER: &str = "dlq.probe";

/// Why the dead-letter topic cannot be used (start refuses, exit 2).
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterTopicError {
    #[error("kafka.dead_letter_topic: cannot create the client that checks it")]
    Client(#[source] KafkaError),
    #[error("checking the dead-letter topic failed")]
    Check(#[source] tokio::task::JoinError),
    #[error("kafka.dead_letter_topic `{topic}` does not exist: create it (1 partition is enough) or remove the key")]
    Missing { topic: String },
    #[error("kafka.dead_letter_topic `{topic}` has no partitions")]
    NoPartitions { topic: String },
    #[error(
        "kafka.dead_letter_topic `{topic}`: {code} (create it, or grant this client write access)"
    )]
    Described {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("kafka.dead_letter_topic `{topic}` refuses this client's records: {code} (grant it write access, or remove the key)")]
    Refused {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// Checks at start that `settings.dead_letter_topic` exists and may be written: a missing or
/// forbidden topic would hold every poison message's offset forever. The topic is described,
/// then written: one probe record with an empty value and the header `dlq.probe=true` (only
/// a write proves write access; describing needs a different permission). An unreachable
/// broker is not an error here (the consumer waits for it); a topic the broker says does not
/// exist, that this client may not describe, or that refuses the probe for good is (`Err`
/// with the reason).
pub async fn check_dead_letter_topic(settings: &KafkaSettings) -> Result<(), DeadLetterTopicError> {
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
        Err(e) => return Err(DeadLetterTopicError::Check(e)),
    }
    let mut config = config;
    config
        .set("message.timeout.ms", "10000")
        .set("client.id", "auth0-default-roles-dlq-probe");
    let producer: Producer = config
        .create_with_context(ProducerCallbacks::default())
        .map_err(|e| DeadLetterTopicError::Client(redact(e)))?;
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
        Err((KafkaError::MessageProduction(code), _)) if never_accepted(code) => {
            Err(DeadLetterTopicError::Refused { topic, code })
        }
        Err((err, _)) => {
            tracing::warn!(%err, topic, "cannot write the dead-letter topic now (broker unreachable?); going on");
            Ok(())
        }
    }
}

/// The metadata part of [`check_dead_letter_topic`]: `Ok(true)` when the topic exists with
/// partitions, `Ok(false)` when the broker cannot be asked now.
fn describe_dead_letter_topic(
    config: &ClientConfig,
    topic: &str,
) -> Result<bool, DeadLetterTopicError> {
    let producer: rdkafka::producer::BaseProducer<ProducerCallbacks> = config
        .create_with_context(ProducerCallbacks::default())
        .map_err(|e| DeadLetterTopicError::Client(redact(e)))?;
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
            None => Err(DeadLetterTopicError::NoPartitions {
                topic: topic.to_owned(),
            }),
            Some(code) => Err(DeadLetterTopicError::Described {
                topic: topic.to_owned(),
                code: RDKafkaErrorCode::from(code),
            }),
        },
        None => Err(DeadLetterTopicError::Missing {
            topic: topic.to_owned(),
        }),
    }
}

/// Broker answers that no retry of the same record can change (authorization, policy, an
/// invalid record): the dead-letter produce gives up instead of holding the partition.
pub fn never_accepted(code: RDKafkaErrorCode) -> bool {
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

/// What is kept of a dead letter the topic refuses as too large (headers mark it truncated).
pub const TRUNCATED_DEAD_LETTER: usize = 64 * 1024;

/// How much of a rejection's error text a dead letter's `dlq.error` header keeps.
const ERROR_HEADER_CHARS: usize = 500;

/// Where a dead letter came from.
#[derive(Debug, Clone, Copy)]
pub enum LetterOrigin<'a> {
    /// A message of a consumed topic: `dlq.original.topic`, `.partition` and `.offset`.
    Topic {
        topic: &'a str,
        partition: i32,
        offset: i64,
    },
    /// A record of a webhook delivery the bridge could not produce:
    /// `dlq.original.source=ingest`.
    Ingest,
}

/// One record for the dead-letter topic: the original bytes and key, where they came from,
/// and why they could not be handled.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    pub origin: LetterOrigin<'a>,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// `invalid` or `failed` (`dlq.reason`).
    pub reason: &'a str,
    /// What went wrong (`dlq.error`, its first 500 characters).
    pub error: &'a str,
}

impl DeadLetter<'_> {
    /// The record's headers: where it came from, `dlq.reason`, `dlq.error`, and, when its
    /// payload was cut to [`TRUNCATED_DEAD_LETTER`] bytes, `dlq.truncated=true` and
    /// `dlq.original.size`.
    fn headers(&self, truncated: bool) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new();
        match self.origin {
            LetterOrigin::Topic {
                topic,
                partition,
                offset,
            } => {
                headers = headers
                    .insert(Header {
                        key: "dlq.original.topic",
                        value: Some(topic),
                    })
                    .insert(Header {
                        key: "dlq.original.partition",
                        value: Some(&partition.to_string()),
                    })
                    .insert(Header {
                        key: "dlq.original.offset",
                        value: Some(&offset.to_string()),
                    });
            }
            LetterOrigin::Ingest => {
                headers = headers.insert(Header {
                    key: "dlq.original.source",
                    value: Some("ingest"),
                });
            }
        }
        let error: String = self.error.chars().take(ERROR_HEADER_CHARS).collect();
        headers = headers
            .insert(Header {
                key: "dlq.reason",
                value: Some(self.reason),
            })
            .insert(Header {
                key: "dlq.error",
                value: Some(&error),
            });
        if truncated {
            headers = headers
                .insert(Header {
                    key: "dlq.truncated",
                    value: Some("true"),
                })
                .insert(Header {
                    key: "dlq.original.size",
                    value: Some(&self.payload.len().to_string()),
                });
        }
        headers
    }
}

/// The producer of dead letters, for the consumer (each `invalid`/`failed` message) and the
/// webhook bridge (each record its topic refuses for good, each invalid one) alike: the one
/// place a dead-letter record is built and cut to size.
#[derive(Clone)]
pub struct DeadLetterProducer {
    producer: Producer,
    topic: String,
    /// How long a send may wait for room in the producer's queue.
    queue_timeout: Duration,
}

impl DeadLetterProducer {
    /// Dead letters into `topic` through `producer`.
    pub fn new(producer: Producer, topic: String, queue_timeout: Duration) -> DeadLetterProducer {
        DeadLetterProducer {
            producer,
            topic,
            queue_timeout,
        }
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces `letter` and waits for the broker's acknowledgement. A letter too large for
    /// the topic is sent again cut to its first [`TRUNCATED_DEAD_LETTER`] bytes (the same
    /// bytes would fail forever), its headers saying so; any other failure is returned.
    pub async fn send(&self, letter: &DeadLetter<'_>) -> Result<(), KafkaError> {
        let mut keep = letter.payload.len();
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .payload(&letter.payload[..keep])
                .headers(letter.headers(keep < letter.payload.len()));
            if let Some(key) = letter.key {
                record = record.key(key);
            }
            match self.producer.send(record, self.queue_timeout).await {
                Ok(_) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))
                    if keep > TRUNCATED_DEAD_LETTER =>
                {
                    tracing::warn!(
                        size = letter.payload.len(),
                        kept = TRUNCATED_DEAD_LETTER,
                        dead_letter_topic = %self.topic,
                        "dead letter too large for the topic: sending it truncated"
                    );
                    keep = TRUNCATED_DEAD_LETTER;
                }
                Err((err, _)) => return Err(err),
            }
        }
    }

    /// Sends `letter` until the broker acknowledges it (the consumer's offset waits
    /// meanwhile), counted in `dead_letters{reason}`. A refusal no retry can change
    /// ([`never_accepted`]) gives up instead of holding the partition forever, counted as
    /// `not_delivered` and logged with where the message lies.
    pub async fn send_until_acknowledged(&self, letter: &DeadLetter<'_>, metrics: &Metrics) {
        let mut delay = Duration::from_millis(500);
        loop {
            match self.send(letter).await {
                Ok(()) => {
                    metrics
                        .dead_letters
                        .with_label_values(&[letter.reason])
                        .inc();
                    match letter.origin {
                        LetterOrigin::Topic {
                            topic,
                            partition,
                            offset,
                        } => tracing::warn!(
                            topic, partition, offset, reason = letter.reason,
                            dead_letter_topic = %self.topic, "message sent to the dead-letter topic"
                        ),
                        LetterOrigin::Ingest => tracing::warn!(
                            reason = letter.reason, dead_letter_topic = %self.topic,
                            "record sent to the dead-letter topic"
                        ),
                    }
                    return;
                }
                Err(KafkaError::MessageProduction(code)) if never_accepted(code) => {
                    // Retrying cannot help and would hold the partition forever. The message
                    // stays in its source topic (until retention): this line says where.
                    metrics
                        .dead_letters
                        .with_label_values(&["not_delivered"])
                        .inc();
                    let (topic, partition, offset) = match letter.origin {
                        LetterOrigin::Topic {
                            topic,
                            partition,
                            offset,
                        } => (topic, partition, offset),
                        LetterOrigin::Ingest => ("-", -1, -1),
                    };
                    tracing::error!(
                        error = %code, topic, partition, offset, reason = letter.reason,
                        dead_letter_topic = %self.topic,
                        "the dead-letter topic refuses this record for good; not retried: find it at this offset of the source topic"
                    );
                    return;
                }
                Err(err) => {
                    tracing::warn!(%err, retry_in = ?delay, "dead-letter produce failed; retrying (the offset waits)");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}
