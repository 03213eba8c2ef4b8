//! What the consumer owns and when: its partitions (each with the generation of its
//! assignment and its in-flight offsets), the librdkafka callbacks that change them
//! (rebalances with the revoke drain, commits, statistics), pausing them, and a message's
//! slot in its partition's watermark, stored once every offset below it finished.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::client_context::{log_client_error, log_librdkafka};
use super::offsets::PartitionOffsets;
use crate::metrics::Metrics;
use crate::server::Health;
use crate::source::{Intake, QuietLog};

/// One owned partition: its assignment generation and its in-flight offsets.
pub(super) struct OwnedPartition {
    pub(super) generation: u64,
    pub(super) offsets: PartitionOffsets,
    pub(super) paused: bool,
}

/// A topic and one of its partitions.
pub(super) type TopicPartition = (String, i32);

/// The partitions the consumer owns now.
#[derive(Default)]
pub(super) struct Partitions {
    pub(super) owned: HashMap<TopicPartition, OwnedPartition>,
    pub(super) next_generation: u64,
    /// Set once shutdown drained: the final revoke does not wait again.
    pub(super) closing: bool,
    /// A revoke waits for its partitions' in-flight messages: finishing ones signal
    /// `Consumption::finished` (only then: a signal is a system call, per message otherwise).
    pub(super) draining: bool,
}

/// What the consumer thread, the callbacks and the tasks share.
pub(super) struct Consumption {
    pub(super) state: Mutex<Partitions>,
    /// Signalled when a message finishes while a revoke drains (the drain waits on it).
    pub(super) finished: Condvar,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Arc<Health>,
    pub(super) drain: Duration,
    /// Intake is paused (in-flight full, Management API failing, or shutting down); newly
    /// assigned partitions are paused as they arrive.
    pub(super) intake: Intake,
}

impl Consumption {
    pub(super) fn lock(&self) -> MutexGuard<'_, Partitions> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn update_partition_gauges(&self, state: &Partitions) {
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

/// The librdkafka callbacks: rebalances, commits, statistics, errors.
pub(super) struct ConsumerCallbacks {
    pub(super) shared: Arc<Consumption>,
    /// Rate-limits repeated client errors (a dead broker reports every few seconds).
    pub(super) quiet: QuietLog,
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
    // The Kafka consumer's own thread (never a runtime worker): the revoke drain blocks it on a
    // `Condvar`, whose timeout runs on the wall clock, so its deadline does too.
    #[allow(clippy::disallowed_types)]
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let parts: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let lost = consumer.assignment_lost();
        let deadline = std::time::Instant::now() + self.shared.drain;
        let mut state = self.shared.lock();
        // Drain: wait for the revoked partitions' in-flight messages. Their offsets are stored
        // as they finish; librdkafka commits them when it unassigns.
        state.draining = true;
        loop {
            let pending: usize = parts
                .iter()
                .filter_map(|p| state.owned.get(p))
                .map(|o| o.offsets.in_flight())
                .sum();
            if pending == 0 || lost || state.closing {
                break;
            }
            let now = std::time::Instant::now();
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
        state.draining = false;
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
                        OwnedPartition {
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

/// Where a message task reports: its partition, generation and offset.
pub(super) struct Position {
    pub(super) tp: TopicPartition,
    pub(super) generation: u64,
    pub(super) offset: i64,
}

/// A message's place in its partition's watermark, released by [`OffsetSlot::finish`].
pub(super) struct OffsetSlot {
    pub(super) shared: Arc<Consumption>,
    pub(super) consumer: Weak<StreamConsumer<ConsumerCallbacks>>,
    pub(super) position: Position,
}

impl OffsetSlot {
    /// The message reached its end: its offset is finished, and the partition's new
    /// watermark stored (unless the partition was revoked or assigned again meanwhile).
    pub(super) fn finish(self) {
        let Position {
            tp,
            generation,
            offset,
        } = self.position;
        let draining = {
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
            // Read under the lock the drain checks its condition under: no wake-up is lost.
            state.draining
        };
        if draining {
            self.shared.finished.notify_all();
        }
    }
}

/// Pauses or resumes every owned partition.
pub(super) fn pause_partitions(
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
