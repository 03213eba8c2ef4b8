//! The messages in flight and the calls on them: tracking each received message, deleting
//! the finished ones in batches, extending the visibility of those still running, and making
//! the lost ones visible again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, QueueAttributeName,
};
use aws_sdk_sqs::Client;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::server::Health;
use crate::shutdown::Shutdown;
use crate::source::{Intake, QuietLog};

/// Most entries in one SQS batch call.
pub(super) const BATCH_MAX: usize = 10;
/// How long a delete waits for others to share its `DeleteMessageBatch` call.
const DELETE_WINDOW: Duration = Duration::from_millis(100);

/// A message received and not yet deleted or released.
pub(super) struct Tracked {
    pub(super) receipt: String,
    pub(super) message_id: String,
    /// When its visibility is extended next.
    pub(super) extend_at: Instant,
    /// Handed to the deleter: no more extensions.
    pub(super) deleting: bool,
    /// Its task ended without a verdict (it panicked or was aborted): no more extensions; the
    /// visibility keeper makes it visible again and forgets it.
    pub(super) lost: bool,
    /// Its place under `max_inflight`, given back when the entry goes.
    pub(super) _permit: OwnedSemaphorePermit,
}

/// What the receive loops, the message tasks, the deleter and the visibility keeper share.
pub(super) struct Queue {
    pub(super) client: Client,
    pub(super) queue_url: String,
    pub(super) visibility_timeout: i32,
    /// How often an in-flight message's visibility is extended (half the timeout).
    pub(super) extend_every: Duration,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Arc<Health>,
    pub(super) tracked: Mutex<HashMap<u64, Tracked>>,
    pub(super) next_key: AtomicU64,
    /// Paused while the Management API fails (`max_inflight` is held by the `room` permits).
    pub(super) intake: Intake,
    pub(super) received: AtomicU64,
    pub(super) deleted: AtomicU64,
    pub(super) left: AtomicU64,
    pub(super) quiet: QuietLog,
}

impl Queue {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<u64, Tracked>> {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tracks a received message. `requested_at` is when its ReceiveMessage was sent: SQS
    /// started its visibility timeout somewhere between then and the answer, so counting from
    /// the request keeps the first extension early even when the answer was slow.
    pub(super) fn track(
        &self,
        receipt: String,
        message_id: String,
        requested_at: Instant,
        permit: OwnedSemaphorePermit,
    ) -> u64 {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let mut tracked = self.lock();
        tracked.insert(
            key,
            Tracked {
                receipt,
                message_id,
                extend_at: requested_at + self.extend_every,
                deleting: false,
                lost: false,
                _permit: permit,
            },
        );
        self.metrics
            .sqs_inflight_messages
            .set(i64::try_from(tracked.len()).unwrap_or(i64::MAX));
        key
    }

    /// Marks a message whose task ended without a verdict (see [`Tracked::lost`]).
    pub(super) fn mark_lost(&self, key: u64) {
        if let Some(t) = self.lock().get_mut(&key) {
            t.lost = true;
        }
    }

    /// Makes the lost messages visible again and forgets them (their permits go back).
    pub(super) async fn release_lost(&self) -> usize {
        let lost: Vec<(u64, String)> = self
            .lock()
            .iter()
            .filter(|(_, t)| t.lost)
            .map(|(k, t)| (*k, t.receipt.clone()))
            .collect();
        if lost.is_empty() {
            return 0;
        }
        for chunk in lost.chunks(BATCH_MAX) {
            self.change_visibility(chunk, 0, "release").await;
        }
        let keys: Vec<u64> = lost.iter().map(|(k, _)| *k).collect();
        self.untrack(&keys);
        tracing::warn!(
            messages = keys.len(),
            "message tasks ended without a verdict: their messages are visible again"
        );
        keys.len()
    }

    /// Stops extending a finished message whose delete is pending.
    pub(super) fn mark_deleting(&self, key: u64) {
        if let Some(t) = self.lock().get_mut(&key) {
            t.deleting = true;
        }
    }

    pub(super) fn untrack(&self, keys: &[u64]) {
        let mut tracked = self.lock();
        for key in keys {
            tracked.remove(key);
        }
        self.metrics
            .sqs_inflight_messages
            .set(i64::try_from(tracked.len()).unwrap_or(i64::MAX));
    }

    /// Logs the queue's set-up once at start; the queue answering makes the source ready.
    pub(super) async fn check_queue(&self) {
        let result = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await;
        let attributes = match result {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(err) => {
                tracing::warn!(error = %DisplayErrorContext(&err), queue_url = %self.queue_url,
                    "cannot read the queue's attributes (needs sqs:GetQueueAttributes); receiving anyway");
                return;
            }
        };
        self.health.set_source_connected(true);
        let get = |name: QueueAttributeName| attributes.get(&name).map(String::as_str);
        let redrive = get(QueueAttributeName::RedrivePolicy);
        tracing::info!(
            queue_url = %self.queue_url,
            queue_visibility_timeout = get(QueueAttributeName::VisibilityTimeout).unwrap_or("-"),
            messages_visible = get(QueueAttributeName::ApproximateNumberOfMessages).unwrap_or("-"),
            messages_in_flight = get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible).unwrap_or("-"),
            redrive_policy = redrive.unwrap_or("-"),
            "queue answered"
        );
        if redrive.is_none() {
            tracing::warn!(
                queue_url = %self.queue_url,
                "the queue has no redrive policy: invalid and failed messages will be received again \
                 and again until the retention period ends; give it a dead-letter queue"
            );
        }
    }

    /// Deletes finished messages (at most 10), then forgets them whatever the result: a
    /// message whose delete failed comes back and its events are `already_done`.
    pub(super) async fn delete_batch(&self, keys: Vec<u64>) {
        let mut message_ids: HashMap<String, String> = HashMap::new();
        let entries: Vec<DeleteMessageBatchRequestEntry> = {
            let tracked = self.lock();
            keys.iter()
                .filter_map(|key| {
                    let t = tracked.get(key)?;
                    message_ids.insert(key.to_string(), t.message_id.clone());
                    DeleteMessageBatchRequestEntry::builder()
                        .id(key.to_string())
                        .receipt_handle(&t.receipt)
                        .build()
                        .ok()
                })
                .collect()
        };
        if entries.is_empty() {
            return;
        }
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let result = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries.clone()))
                .send()
                .await;
            match result {
                Ok(out) => {
                    let n = out.successful.len() as u64;
                    tracing::debug!(
                        deleted = n,
                        refused = out.failed.len(),
                        message_ids = ?message_ids.values().collect::<Vec<_>>(),
                        "DeleteMessageBatch answered"
                    );
                    self.metrics.sqs_messages_deleted.inc_by(n);
                    self.deleted.fetch_add(n, Ordering::Relaxed);
                    for failed in &out.failed {
                        tracing::warn!(
                            message_id = message_ids.get(&failed.id).map(String::as_str).unwrap_or("-"),
                            code = %failed.code, message = failed.message.as_deref().unwrap_or("-"),
                            "delete refused; the message will be received again and its events found already done"
                        );
                    }
                    break;
                }
                Err(err) if attempt < 3 => {
                    tracing::debug!(error = %DisplayErrorContext(&err), attempt, "DeleteMessageBatch failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(err) => {
                    tracing::warn!(error = %DisplayErrorContext(&err), messages = entries.len(),
                        "DeleteMessageBatch failed (needs sqs:DeleteMessage); the messages will be received again and their events found already done");
                    break;
                }
            }
        }
        self.untrack(&keys);
    }

    /// Extends the visibility of the in-flight messages that are due; returns how many.
    pub(super) async fn extend_due(&self) -> usize {
        let now = Instant::now();
        let due: Vec<(u64, String)> = {
            let tracked = self.lock();
            tracked
                .iter()
                .filter(|(_, t)| !t.deleting && !t.lost && t.extend_at <= now)
                .map(|(k, t)| (*k, t.receipt.clone()))
                .collect()
        };
        // Batches in parallel: one slow answer must not make the others late.
        let calls = due
            .chunks(BATCH_MAX)
            .map(|chunk| self.change_visibility(chunk, self.visibility_timeout, "extend"));
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .sum()
    }

    /// Sets the visibility timeout of `messages`; returns how many succeeded.
    pub(super) async fn change_visibility(
        &self,
        messages: &[(u64, String)],
        timeout: i32,
        why: &'static str,
    ) -> usize {
        let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = messages
            .iter()
            .filter_map(|(key, receipt)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(key.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(timeout)
                    .build()
                    .ok()
            })
            .collect();
        let result = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        // Failed or not, try again a little later rather than at the next tick.
        let retry_at = Instant::now() + self.extend_every.min(Duration::from_secs(1)) / 2;
        match result {
            Ok(out) => {
                let next = Instant::now() + self.extend_every;
                let mut tracked = self.lock();
                for ok in &out.successful {
                    if let Some(t) = ok.id.parse().ok().and_then(|k: u64| tracked.get_mut(&k)) {
                        t.extend_at = next;
                    }
                }
                for failed in &out.failed {
                    if let Some(t) = failed
                        .id
                        .parse()
                        .ok()
                        .and_then(|k: u64| tracked.get_mut(&k))
                    {
                        t.extend_at = retry_at;
                    }
                }
                drop(tracked);
                if let Some(failed) = out.failed.first() {
                    if self.quiet.allow(why) {
                        tracing::warn!(
                            why, code = %failed.code, message = failed.message.as_deref().unwrap_or("-"),
                            failures = out.failed.len(),
                            "visibility change refused (repeats within 10 s are counted in library_errors_total, not logged)"
                        );
                    }
                }
                out.successful.len()
            }
            Err(err) => {
                {
                    let mut tracked = self.lock();
                    for (key, _) in messages {
                        if let Some(t) = tracked.get_mut(key) {
                            t.extend_at = retry_at;
                        }
                    }
                }
                if self.quiet.allow(why) {
                    tracing::warn!(why, error = %DisplayErrorContext(&err),
                        "ChangeMessageVisibilityBatch failed (needs sqs:ChangeMessageVisibility; repeats within 10 s are counted in library_errors_total, not logged)");
                }
                0
            }
        }
    }
}

/// Batches deletes: up to 10 receipt handles, or whatever arrived within 100 ms of the first.
/// Ends when every sender is gone, after flushing.
pub(super) async fn delete_loop(shared: Arc<Queue>, mut rx: mpsc::UnboundedReceiver<u64>) {
    while let Some(first) = rx.recv().await {
        let mut keys = vec![first];
        let deadline = Instant::now() + DELETE_WINDOW;
        while keys.len() < BATCH_MAX {
            tokio::select! {
                key = rx.recv() => match key {
                    Some(key) => keys.push(key),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        shared.delete_batch(keys).await;
    }
}

/// Extends the visibility of in-flight messages at half the visibility timeout until stopped.
pub(super) async fn visibility_loop(shared: Arc<Queue>, stop: Shutdown) {
    let period = (shared.extend_every / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait() => return,
            _ = tick.tick() => {}
        }
        shared.release_lost().await;
        let extended = shared.extend_due().await;
        if extended > 0 {
            shared
                .metrics
                .sqs_visibility_extensions
                .inc_by(extended as u64);
            tracing::debug!(extended, "visibility extended");
        }
    }
}
