//! The EventBridge → SQS source behind `run`: long-polling receive loops; a message is deleted
//! once its events reached a final outcome, its visibility is extended while they wait, and
//! what cannot be handled is left to the queue's redrive policy (its dead-letter queue).
//!
//! - `concurrency` loops call `ReceiveMessage` (long polling, up to `max_messages` each). A loop
//!   receives only when a whole batch fits under `max_inflight` and the Management API is not
//!   failing, so an outage stops intake instead of piling messages up.
//! - Each message becomes a task. A user's events run in receive order (the [`Sequencer`]),
//!   other users' in parallel.
//! - Deletes go through one task that batches receipt handles (`DeleteMessageBatch`, 10 handles
//!   or 100 ms). A message is deleted only when every event of it reached a final outcome other
//!   than `invalid` or `failed`.
//! - `invalid` messages (not an Auth0 log) and `failed` ones (a permanent Management API error)
//!   are not deleted: they come back after the visibility timeout and, after the queue's
//!   `maxReceiveCount`, SQS moves them to the dead-letter queue. Nothing is dropped silently.
//! - Every in-flight message's visibility is extended (`ChangeMessageVisibilityBatch`) at half
//!   the visibility timeout, so events held by Management API retries are not redelivered (and
//!   not pushed towards the dead-letter queue) meanwhile.
//! - Shutdown: receiving stops, in-flight messages get `shutdown_grace` to finish, pending
//!   deletes are flushed, and unfinished messages are made visible again at once for the next
//!   consumer.

mod client;
mod queue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::event::{decode, Decoded};
use crate::pipeline::{Pipeline, Verdict};
use crate::server::Health;
use crate::shutdown::Shutdown;
use crate::source::sequencer::Sequencer;
use crate::source::{users_of, ConsumerSummary, Dispatch, Intake, QuietLog};
pub use client::{client, https_client, region_from_queue_url, SqsRunError, SqsSettings};
use queue::{delete_loop, visibility_loop, Queue, BATCH_MAX};

/// Consumes until `shutdown`, then drains within the grace, flushes deletes and returns.
pub async fn run(
    settings: SqsSettings,
    pipeline: Arc<Pipeline>,
    health: Arc<Health>,
    shutdown: Shutdown,
) -> Result<ConsumerSummary, SqsRunError> {
    let client = client(&settings).await?;
    let metrics = Arc::clone(pipeline.metrics());
    let shared = Arc::new(Queue {
        client,
        queue_url: settings.queue_url.clone(),
        visibility_timeout: settings.visibility_timeout_seconds,
        extend_every: Duration::from_secs(
            u64::try_from(settings.visibility_timeout_seconds).unwrap_or(60),
        ) / 2,
        quiet: QuietLog::counting(&metrics, "aws_sdk"),
        metrics,
        health,
        tracked: Mutex::new(HashMap::new()),
        next_key: AtomicU64::new(1),
        intake: Intake::new(settings.max_inflight),
        received: AtomicU64::new(0),
        deleted: AtomicU64::new(0),
        left: AtomicU64::new(0),
    });
    shared.check_queue().await;
    tracing::info!(
        queue_url = %settings.queue_url, concurrency = settings.concurrency,
        max_messages = settings.max_messages, wait_time_seconds = settings.wait_time_seconds,
        visibility_timeout_seconds = settings.visibility_timeout_seconds,
        max_inflight = settings.max_inflight, "consuming"
    );

    let (delete_tx, delete_rx) = mpsc::unbounded_channel();
    let deleter = tokio::spawn(delete_loop(Arc::clone(&shared), delete_rx));
    let keeper_stop = Shutdown::new();
    let keeper = tokio::spawn(visibility_loop(Arc::clone(&shared), keeper_stop.clone()));

    let ctx = Arc::new(LoopContext {
        shared: Arc::clone(&shared),
        pipeline,
        sequencer: Arc::new(Sequencer::default()),
        room: Arc::new(Semaphore::new(settings.max_inflight)),
        settings,
    });
    let mut loops = JoinSet::new();
    for index in 0..ctx.settings.concurrency {
        loops.spawn(receive_loop(
            index,
            Arc::clone(&ctx),
            delete_tx.clone(),
            shutdown.clone(),
        ));
    }
    drop(delete_tx);
    let mut summary = ConsumerSummary::default();
    while let Some(result) = loops.join_next().await {
        match result {
            Ok(abandoned) => summary.abandoned += abandoned,
            Err(err) => tracing::error!(%err, "a receive loop ended abnormally"),
        }
    }
    // Every task is done or aborted, so every sender is gone: the deleter flushes and ends.
    if deleter.await.is_err() {
        tracing::error!("the delete task ended abnormally");
    }
    keeper_stop.trigger();
    let _ = keeper.await;

    // What is still tracked was abandoned: make it visible again for the next consumer.
    let abandoned: Vec<(u64, String)> = shared
        .lock()
        .iter()
        .map(|(k, t)| (*k, t.receipt.clone()))
        .collect();
    if !abandoned.is_empty() {
        let mut released = 0;
        for chunk in abandoned.chunks(BATCH_MAX) {
            released += shared.change_visibility(chunk, 0, "release").await;
        }
        tracing::warn!(
            abandoned = abandoned.len(),
            released,
            "shutdown grace over: unfinished messages were not deleted and are visible again"
        );
        let keys: Vec<u64> = abandoned.iter().map(|(k, _)| *k).collect();
        shared.untrack(&keys);
    }
    summary.messages = shared.received.load(Ordering::Relaxed);
    let deleted = shared.deleted.load(Ordering::Relaxed);
    summary.acknowledged = Some(deleted);
    summary.dead_lettered = shared.left.load(Ordering::Relaxed);
    tracing::info!(messages = summary.messages, deleted, "SQS consumer stopped");
    Ok(summary)
}

/// What every receive loop needs.
struct LoopContext {
    shared: Arc<Queue>,
    pipeline: Arc<Pipeline>,
    sequencer: Arc<Sequencer>,
    /// `max_inflight` permits: a receive reserves a whole batch, each message keeps one.
    room: Arc<Semaphore>,
    settings: SqsSettings,
}

/// Receives until `stop`, then waits for its messages' tasks until the grace ends. Returns how
/// many tasks it had to abort.
async fn receive_loop(
    index: usize,
    ctx: Arc<LoopContext>,
    delete_tx: mpsc::UnboundedSender<u64>,
    shutdown: Shutdown,
) -> usize {
    let shared = &ctx.shared;
    let settings = &ctx.settings;
    let batch = u32::try_from(settings.max_messages).unwrap_or(10);
    let mut dispatch: Dispatch<()> = Dispatch::with_sequencer(Arc::clone(&ctx.sequencer));
    let mut backoff = Duration::from_secs(1);
    loop {
        for lost in dispatch.lost() {
            tracing::error!(error = %crate::exit::cause_chain(&lost), "a message task failed; the message is not deleted and will be received again");
        }
        let mut permits = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            permits = Arc::clone(&ctx.room).acquire_many_owned(batch) => match permits {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        shared.intake.update_waiting(
            0,
            ctx.pipeline.waiting(),
            dispatch.queued(),
            dispatch.blocked(),
            ctx.pipeline.is_tenant_failing(),
        );
        if shared.intake.is_paused() {
            drop(permits);
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
            }
        }
        let requested_at = Instant::now();
        let request = shared
            .client
            .receive_message()
            .queue_url(&settings.queue_url)
            .max_number_of_messages(settings.max_messages)
            .wait_time_seconds(settings.wait_time_seconds)
            .visibility_timeout(settings.visibility_timeout_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send();
        // A receive cut short by the stop leaves its messages invisible until the timeout.
        let received = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            received = request => received,
        };
        let messages = match received {
            Ok(out) => {
                backoff = Duration::from_secs(1);
                shared.health.set_source_connected(true);
                out.messages.unwrap_or_default()
            }
            Err(err) => {
                if shared.quiet.allow("receive") {
                    tracing::warn!(error = %DisplayErrorContext(&err), retry_in = ?backoff, loop_index = index,
                        "ReceiveMessage failed (needs sqs:ReceiveMessage; repeats within 10 s are counted in library_errors_total, not logged)");
                }
                drop(permits);
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        for message in messages {
            let Some(permit) = permits.split(1) else {
                // SQS never returns more than asked for; nothing to hold this one with.
                tracing::warn!(
                    "more messages than asked for; the extra one will be received again"
                );
                continue;
            };
            shared.metrics.sqs_messages_received.inc();
            shared.received.fetch_add(1, Ordering::Relaxed);
            let Some(receipt) = message.receipt_handle else {
                continue;
            };
            let message_id = message.message_id.unwrap_or_default();
            let receive_count: u32 = message
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            tracing::debug!(%message_id, receive_count, loop_index = index, "message received");
            let body = message.body.unwrap_or_default();
            let items = decode(body.as_bytes());
            let users = users_of(&items);
            let key = shared.track(receipt, message_id.clone(), requested_at, permit);
            let pipeline = Arc::clone(&ctx.pipeline);
            let shared = Arc::clone(shared);
            let delete_tx = delete_tx.clone();
            dispatch.spawn(users, move || {
                handle_message(
                    shared,
                    pipeline,
                    Delivery {
                        key,
                        message_id,
                        receive_count,
                        items,
                        body,
                    },
                    delete_tx,
                )
            });
        }
        // Unused permits of the batch go back here.
        drop(permits);
    }

    // Stopped: let this loop's messages finish within the grace.
    if !dispatch.is_empty() {
        tracing::info!(
            loop_index = index,
            in_flight = dispatch.len(),
            grace_seconds = settings.shutdown_grace.as_secs_f64(),
            "shutting down: receiving stopped, draining"
        );
    }
    dispatch
        .drain(settings.shutdown_grace, std::future::pending::<()>)
        .await
}

/// One received message, decoded.
struct Delivery {
    key: u64,
    message_id: String,
    receive_count: u32,
    items: Vec<Decoded>,
    /// The message's body, kept while in flight (moved, not copied): a lost task decodes it
    /// again.
    body: String,
}

/// Marks its message lost when dropped armed: the task ended without a verdict.
struct VerdictGuard {
    shared: Arc<Queue>,
    key: u64,
    armed: bool,
}

impl Drop for VerdictGuard {
    fn drop(&mut self) {
        if self.armed {
            self.shared.mark_lost(self.key);
        }
    }
}

async fn handle_message(
    shared: Arc<Queue>,
    pipeline: Arc<Pipeline>,
    delivery: Delivery,
    delete_tx: mpsc::UnboundedSender<u64>,
) {
    let mut guard = VerdictGuard {
        shared: Arc::clone(&shared),
        key: delivery.key,
        armed: true,
    };
    let body = delivery.body;
    let again = || decode(body.as_bytes());
    let verdict = pipeline.deliver(delivery.items, Some(again), |_| {}).await;
    guard.armed = false;
    let rejected = match verdict {
        Verdict::Done => {
            shared.mark_deleting(delivery.key);
            if delete_tx.send(delivery.key).is_err() {
                // Only after shutdown: the message comes back and its events are already done.
                shared.untrack(&[delivery.key]);
            }
            return;
        }
        Verdict::DeadLetter(rejected) => rejected,
        Verdict::Retry(why) => {
            tracing::warn!(message_id = %delivery.message_id, reason = %why, "message left for redelivery");
            shared.mark_lost(delivery.key);
            return;
        }
    };
    // Left as it is: a failed event is not remembered, so every redelivery (the visibility
    // timeout, or a redrive from the DLQ with a new message id) is processed again, and the
    // queue's maxReceiveCount ends a message that keeps failing in its DLQ.
    let reason = rejected.reason();
    shared.untrack(&[delivery.key]);
    shared
        .metrics
        .sqs_messages_left
        .with_label_values(&[reason])
        .inc();
    shared.left.fetch_add(1, Ordering::Relaxed);
    let error: String = rejected.error.chars().take(300).collect();
    tracing::warn!(
        message_id = %delivery.message_id,
        approximate_receive_count = delivery.receive_count,
        reason,
        error = %error,
        "message not deleted: it will be received again, and moved to the dead-letter queue after the queue's maxReceiveCount"
    );
}
