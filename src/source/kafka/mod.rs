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

mod client_context;
pub mod client_log;
pub mod dead_letter;
pub mod offsets;
mod partitions;
pub mod settings;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use crate::event::{decode, DecodeError, Decoded};
use crate::pipeline::{panic_message, Outcome, Pipeline, Rejected, SourceKind, Verdict};
use crate::server::Health;
use crate::shutdown::Shutdown;
use crate::source::{users_of, ConsumerSummary, Dispatch, Intake, IntakeLoad, QuietLog, ShortStop};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;

pub use client_context::{Producer, ProducerCallbacks};
pub use dead_letter::{
    check_dead_letter_topic, DeadLetterTopicError, DEAD_LETTER_PROBE_HEADER, TRUNCATED_DEAD_LETTER,
};
use dead_letter::{DeadLetter, DeadLetterProducer, LetterOrigin};
use partitions::{
    pause_partitions, ConsumerCallbacks, Consumption, OffsetSlot, Partitions, Position,
};
pub use settings::{consumer_config, producer_config, redact, KafkaSettings, DEFAULT_GROUP_ID};

/// Why the consumer could not run.
#[derive(Debug, thiserror::Error)]
pub enum KafkaRunError {
    #[error("cannot create the Kafka consumer")]
    Consumer(#[source] KafkaError),
    #[error("cannot subscribe to {topics}: {source}")]
    Subscribe { topics: String, source: KafkaError },
    #[error("cannot create the dead-letter producer")]
    Producer(#[source] KafkaError),
    #[error("cannot start the consumer thread")]
    Thread(#[source] std::io::Error),
    #[error("the consumer thread panicked")]
    ThreadPanicked,
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
) -> Result<ConsumerSummary, KafkaRunError> {
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kafka-consumer".to_owned())
        .spawn(move || {
            let result = handle.block_on(consume(settings, pipeline, health, shutdown));
            let _ = tx.send(result);
        })
        .map_err(KafkaRunError::Thread)?;
    rx.await.map_err(|_| KafkaRunError::ThreadPanicked)?
}

async fn consume(
    settings: KafkaSettings,
    pipeline: Arc<Pipeline>,
    health: Arc<Health>,
    shutdown: Shutdown,
) -> Result<ConsumerSummary, KafkaRunError> {
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
        quiet: QuietLog::counting(&metrics, "librdkafka"),
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
        Some(topic) => Some(Arc::new(DeadLetterProducer::new(
            producer_config(&settings)
                .create_with_context(ProducerCallbacks::counting(&metrics))
                .map_err(|e| KafkaRunError::Producer(redact(e)))?,
            topic.clone(),
            Duration::from_secs(30),
        ))),
        None => None,
    };
    tracing::info!(
        topics = %settings.topics.join(","), group_id = %settings.group_id,
        max_inflight = settings.max_inflight, "consuming"
    );

    let dead_letter_count = Arc::new(AtomicU64::new(0));
    let mut dispatch: Dispatch<()> = Dispatch::default();
    let mut summary = ConsumerSummary::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let quiet = QuietLog::counting(&metrics, "librdkafka");
    let mut most = crate::source::MostWaiting::default();
    let mut short_stop = ShortStop::default();
    // One wait for the whole loop, not one registered and dropped per message.
    let stopping = shutdown.wait();
    tokio::pin!(stopping);

    loop {
        for lost in dispatch.lost() {
            // A panic inside a task is caught there (see `settle`); this is a panic while
            // finishing its offset: that offset stays unstored (redelivered later).
            tracing::error!(error = %crate::exit::cause_chain(&lost), "a message task failed while storing its offset; it is not committed");
        }
        let in_process = pipeline.waiting().max(dispatch.started());
        let (queued, blocked) = (dispatch.queued(), dispatch.blocked());
        most.note(in_process, queued, blocked);
        let load = IntakeLoad {
            inflight: dispatch.len(),
            in_process,
            queued,
            blocked,
        };
        let step = shared.intake.step(
            &mut short_stop,
            load,
            pipeline.is_tenant_failing(),
            tokio::time::Instant::now(),
        );
        if let Some(pause) = step.changed {
            pause_partitions(&shared, consumer.as_ref(), pause);
        }
        // Stopped short (full, not paused yet: see `SHORT_STOP_GRACE`), the consumer is not
        // read and its prefetch is kept; the room the tasks make is looked at every
        // `ROOM_RECHECK` (a wake-up per finished task cost this thread a futex each: +20 % CPU).
        tokio::select! {
            biased;
            _ = &mut stopping => break,
            _ = tick.tick() => {}
            // In a block: made (and the clock read) only when the branch is polled.
            _ = async { tokio::time::sleep(ROOM_RECHECK).await }, if !step.receive => {}
            message = consumer.recv(), if step.receive => match message {
                Err(err) => {
                    if quiet.allow("consume") {
                        tracing::warn!(%err, "Kafka consume error (librdkafka retries by itself; repeats within 10 s are counted in library_errors_total, not logged)");
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
    summary.dead_lettered = dead_letter_count.load(Ordering::Relaxed);
    // Dropping the last reference closes the consumer: final revoke, commit, LeaveGroup.
    drop(consumer);
    tracing::info!(
        messages = summary.messages,
        most_in_process = most.in_process,
        most_queued = most.queued,
        most_blocked = most.blocked,
        intake_short_stops = short_stop.stops(),
        "left the consumer group"
    );
    Ok(summary)
}

/// How often a short stop looks for room again: at 15,000 messages a second a millisecond
/// frees about 15 slots of the thousands `max_inflight` allows, and librdkafka's prefetch
/// refills them at once.
const ROOM_RECHECK: Duration = Duration::from_millis(1);

/// One message's work: its events through the pipeline, a dead letter when one was rejected,
/// then its offset finished.
struct MessageTask {
    pipeline: Arc<Pipeline>,
    shared: Arc<Consumption>,
    consumer: Weak<StreamConsumer<ConsumerCallbacks>>,
    dead_letters: Option<Arc<DeadLetterProducer>>,
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
        let metrics = Arc::clone(&shared.metrics);
        let work = async {
            // With a dead-letter topic the payload is kept already: a lost task runs again from
            // it. Without, nothing is kept (no copy per message in flight): a loss holds it.
            let again = original
                .as_ref()
                .map(|o| move || decode_message(&o.payload));
            let verdict = pipeline.deliver(items, again, |_| {}).await;
            match (verdict, dlq, original.as_ref()) {
                (Verdict::DeadLetter(rejected), Some(dlq), Some(original)) => {
                    let letter = original.letter(&rejected);
                    // Boxed, as below: the send's future is about 8 KB, and a message's task
                    // future holding it inline was 21 KB, copied several times on every
                    // spawn and held by every message waiting in line (most are never
                    // dead-lettered).
                    Box::pin(dlq.send_until_acknowledged(&letter, &metrics)).await;
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
    dead_letters: Option<&DeadLetterProducer>,
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
    let panicked = ended.err().map(|p| panic_message(p.as_ref()));
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
                let letter = original.letter(&rejected);
                let send = std::panic::AssertUnwindSafe(Box::pin(
                    dlq.send_until_acknowledged(&letter, &slot.shared.metrics),
                ));
                match send
                    .catch_unwind()
                    .await
                    .map_err(|p| panic_message(p.as_ref()))
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

/// A message kept for its dead letter: its bytes and where it came from.
struct Original {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

impl Original {
    /// Its dead-letter record, for `rejected`.
    fn letter<'a>(&'a self, rejected: &'a Rejected) -> DeadLetter<'a> {
        DeadLetter {
            origin: LetterOrigin::Topic {
                topic: &self.topic,
                partition: self.partition,
                offset: self.offset,
            },
            key: self.key.as_deref(),
            payload: &self.payload,
            reason: rejected.reason(),
            error: &rejected.error,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::offsets::PartitionOffsets;
    use super::partitions::{OwnedPartition, TopicPartition};
    use super::*;
    use crate::metrics::Metrics;

    fn shared_for_test() -> Arc<Consumption> {
        Arc::new(Consumption {
            state: Mutex::new(Partitions::default()),
            finished: Condvar::new(),
            metrics: Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}"))),
            health: Health::new(SourceKind::Kafka.not_connected()),
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
        let tp: TopicPartition = ("t".to_owned(), 0);
        {
            let mut state = shared.lock();
            let mut offsets = PartitionOffsets::default();
            for o in 0..3 {
                offsets.begin(o);
            }
            state.owned.insert(
                tp.clone(),
                OwnedPartition {
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
