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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::config::SharedHttpClient;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName,
};
use aws_sdk_sqs::Client;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::event::{decode, Decoded};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Verdict};
use crate::server::Health;
use crate::shutdown::Shutdown;
use crate::source::sequencer::Sequencer;
use crate::source::{users_of, Dispatch, Intake, QuietLog};

/// Validated `[sqs]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsSettings {
    /// The queue EventBridge delivers to, e.g. `https://sqs.eu-west-1.amazonaws.com/123456789012/auth0-logs`.
    pub queue_url: String,
    /// Messages asked for per `ReceiveMessage` (1-10).
    pub max_messages: i32,
    /// Long-polling wait per `ReceiveMessage` (0-20 s).
    pub wait_time_seconds: i32,
    /// Visibility timeout set on receive and on every extension (1-43200 s).
    pub visibility_timeout_seconds: i32,
    /// Concurrent receive loops.
    pub concurrency: usize,
    /// Most messages received and not yet finished; receiving waits beyond it.
    pub max_inflight: usize,
    /// How long SIGTERM/SIGINT waits for in-flight messages before flushing deletes and exiting.
    pub shutdown_grace: Duration,
}

/// Most entries in one SQS batch call.
const BATCH_MAX: usize = 10;
/// How long a delete waits for others to share its `DeleteMessageBatch` call.
const DELETE_WINDOW: Duration = Duration::from_millis(100);

/// Why the consumer could not run.
#[derive(Debug, thiserror::Error)]
pub enum SqsRunError {
    #[error("no AWS region: set AWS_REGION (or a region in the AWS profile), or use a queue URL of the form https://sqs.REGION.amazonaws.com/ACCOUNT/NAME")]
    NoRegion,
}

/// What a run did, for the exit log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SqsSummary {
    /// Messages received (redeliveries included).
    pub messages: u64,
    /// Messages deleted.
    pub deleted: u64,
    /// Messages left for redelivery and the redrive policy (`invalid`, `failed`).
    pub left: u64,
    /// Messages still in flight when the shutdown grace ran out (made visible again).
    pub abandoned: usize,
}

/// The region of an AWS queue URL: `https://sqs.eu-west-1.amazonaws.com/...` (or the legacy
/// `https://eu-west-1.queue.amazonaws.com/...`) gives `eu-west-1`; other hosts give `None`.
pub fn region_from_queue_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split('/').next()?.split(':').next()?;
    let labels: Vec<&str> = host.split('.').collect();
    let region = match labels.as_slice() {
        ["sqs", region, "amazonaws", ..] => *region,
        [region, "queue", "amazonaws", ..] => *region,
        _ => return None,
    };
    let plausible = region.contains('-')
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    plausible.then(|| region.to_owned())
}

/// The HTTP client of every AWS call: hyper with rustls and ring (the TLS stack reqwest already
/// brings), the platform's root certificates. Plain `http://` works too (emulators).
pub fn https_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The SQS client: credentials from the standard chain (environment, profile, web identity,
/// ECS/EKS, IMDS), `AWS_ENDPOINT_URL_SQS` honoured, HTTPS through [`https_client`]. The region
/// of an AWS queue URL wins (a queue lives in one region); otherwise the chain's region.
pub async fn client(settings: &SqsSettings) -> Result<Client, SqsRunError> {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await;
    let mut config = aws_sdk_sqs::config::Builder::from(&shared);
    let chain_region = shared.region().map(|r| r.as_ref().to_owned());
    let region = match (region_from_queue_url(&settings.queue_url), chain_region) {
        (Some(from_url), chain) => {
            if chain.as_deref().is_some_and(|c| c != from_url) {
                tracing::warn!(
                    queue_region = %from_url, configured_region = chain.as_deref().unwrap_or("-"),
                    "the queue URL names another region than the AWS configuration; using the queue's"
                );
            }
            config = config.region(Region::new(from_url.clone()));
            from_url
        }
        (None, Some(chain)) => chain,
        (None, None) => return Err(SqsRunError::NoRegion),
    };
    tracing::info!(%region, queue_url = %settings.queue_url, "SQS client ready");
    Ok(Client::from_conf(config.build()))
}

/// A message received and not yet deleted or released.
struct Tracked {
    receipt: String,
    message_id: String,
    /// When its visibility is extended next.
    extend_at: Instant,
    /// Handed to the deleter: no more extensions.
    deleting: bool,
    /// Its task ended without a verdict (it panicked or was aborted): no more extensions; the
    /// visibility keeper makes it visible again and forgets it.
    lost: bool,
    /// Its place under `max_inflight`, given back when the entry goes.
    _permit: OwnedSemaphorePermit,
}

/// What the receive loops, the message tasks, the deleter and the visibility keeper share.
struct Queue {
    client: Client,
    queue_url: String,
    visibility_timeout: i32,
    /// How often an in-flight message's visibility is extended (half the timeout).
    extend_every: Duration,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    tracked: Mutex<HashMap<u64, Tracked>>,
    next_key: AtomicU64,
    /// Paused while the Management API fails (`max_inflight` is held by the `room` permits).
    intake: Intake,
    received: AtomicU64,
    deleted: AtomicU64,
    left: AtomicU64,
    quiet: QuietLog,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Tracked>> {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tracks a received message. `requested_at` is when its ReceiveMessage was sent: SQS
    /// started its visibility timeout somewhere between then and the answer, so counting from
    /// the request keeps the first extension early even when the answer was slow.
    fn track(
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
    fn mark_lost(&self, key: u64) {
        if let Some(t) = self.lock().get_mut(&key) {
            t.lost = true;
        }
    }

    /// Makes the lost messages visible again and forgets them (their permits go back).
    async fn release_lost(&self) -> usize {
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
    fn mark_deleting(&self, key: u64) {
        if let Some(t) = self.lock().get_mut(&key) {
            t.deleting = true;
        }
    }

    fn untrack(&self, keys: &[u64]) {
        let mut tracked = self.lock();
        for key in keys {
            tracked.remove(key);
        }
        self.metrics
            .sqs_inflight_messages
            .set(i64::try_from(tracked.len()).unwrap_or(i64::MAX));
    }

    /// Logs the queue's set-up once at start; the queue answering makes the source ready.
    async fn check_queue(&self) {
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
    async fn delete_batch(&self, keys: Vec<u64>) {
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
    async fn extend_due(&self) -> usize {
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
    async fn change_visibility(
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
                            "visibility change refused (repeats within 10 s are not logged)"
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
                        "ChangeMessageVisibilityBatch failed (needs sqs:ChangeMessageVisibility; repeats within 10 s are not logged)");
                }
                0
            }
        }
    }
}

/// Consumes until `shutdown`, then drains within the grace, flushes deletes and returns.
pub async fn run(
    settings: SqsSettings,
    pipeline: Arc<Pipeline>,
    health: Arc<Health>,
    shutdown: Shutdown,
) -> Result<SqsSummary, SqsRunError> {
    let client = client(&settings).await?;
    let metrics = Arc::clone(pipeline.metrics());
    let shared = Arc::new(Queue {
        client,
        queue_url: settings.queue_url.clone(),
        visibility_timeout: settings.visibility_timeout_seconds,
        extend_every: Duration::from_secs(
            u64::try_from(settings.visibility_timeout_seconds).unwrap_or(60),
        ) / 2,
        metrics,
        health,
        tracked: Mutex::new(HashMap::new()),
        next_key: AtomicU64::new(1),
        intake: Intake::new(settings.max_inflight),
        received: AtomicU64::new(0),
        deleted: AtomicU64::new(0),
        left: AtomicU64::new(0),
        quiet: QuietLog::default(),
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
    let mut summary = SqsSummary::default();
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
    summary.deleted = shared.deleted.load(Ordering::Relaxed);
    summary.left = shared.left.load(Ordering::Relaxed);
    tracing::info!(
        messages = summary.messages,
        deleted = summary.deleted,
        "SQS consumer stopped"
    );
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
        for lost in dispatch.finished().into_iter().filter_map(Result::err) {
            tracing::error!(%lost, "a message task failed; the message is not deleted and will be received again");
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
            ctx.pipeline.waiting() + dispatch.queued(),
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
                        "ReceiveMessage failed (needs sqs:ReceiveMessage; repeats within 10 s are not logged)");
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

/// Batches deletes: up to 10 receipt handles, or whatever arrived within 100 ms of the first.
/// Ends when every sender is gone, after flushing.
async fn delete_loop(shared: Arc<Queue>, mut rx: mpsc::UnboundedReceiver<u64>) {
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
async fn visibility_loop(shared: Arc<Queue>, stop: Shutdown) {
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

#[cfg(test)]
mod tests {
    use super::region_from_queue_url;

    #[test]
    fn the_region_comes_from_aws_queue_urls_only() {
        assert_eq!(
            region_from_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/auth0-logs")
                .as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_from_queue_url("https://us-east-2.queue.amazonaws.com/123456789012/q")
                .as_deref(),
            Some("us-east-2")
        );
        assert_eq!(
            region_from_queue_url("https://sqs.cn-north-1.amazonaws.com.cn/1/q").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(
            region_from_queue_url("http://127.0.0.1:5055/123456789012/q"),
            None
        );
        assert_eq!(region_from_queue_url("https://sqs.amazonaws.com/1/q"), None);
    }
}
