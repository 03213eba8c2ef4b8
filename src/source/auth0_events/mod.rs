//! The tenant's Events API (`GET /api/v2/events`: Server-Sent Events of Event Streams'
//! CloudEvents) as the source of `run` (`[source] type = "auth0_events"`): one long-lived
//! connection, reopened whenever the server closes it, each event taken through the one
//! delivery path, and the offset kept in a checkpoint file.
//!
//! At-least-once, by [`checkpoint::Progress`]: the checkpoint moves past an event only once it
//! reached its verdict (`Done`; `DeadLetter` once the message is in the dead-letter file beside
//! the checkpoint, `<checkpoint>.dead-letters.jsonl`, fsynced), and past an `offset-only`
//! marker only when nothing before it is pending. It is written atomically at most every
//! [`SAVE_EVERY`] and at the end, then in the ledger when one is configured (a reader without
//! its file resumes from there); a restart resumes after it (some events read twice: dedup and
//! the policy make them harmless). Within a run, a reconnection resumes after the last offset
//! *received* (what is still in flight settles meanwhile). One reader per checkpoint file (its
//! lock); with a PostgreSQL ledger, one reader per tenant across replicas (a lease,
//! [`crate::source::lease`]): the ledger's checkpoint is then the one of record, read first and
//! written only while the lease holds, and a reader that loses its lease stops at once.
//!
//! Reconnecting is normal: Auth0 closes these connections every few minutes. A closed
//! connection, a broken one, or one silent for `idle_timeout_seconds` is opened again after the
//! server's `retry:` delay. Refusals are in [`client`]. An expired offset (410, or an
//! `event: error` saying so) is counted in `auth0_events_gaps_total`, logged with the time from
//! which events may be lost and the `reconcile` advice, and reading resumes by
//! `from_timestamp` at the last settled event's time (or `earliest_hours` back, when no event
//! was settled yet).
//!
//! Each message's `data` is `{"offset": …, "event": <CloudEvent>}`; the CloudEvent goes through
//! `event::decode` as the webhook's do (a missing `specversion` is added: the stream carries
//! nothing else, and Auth0's own example omits it). A `data` that is not JSON, has no event or
//! is over 1 MiB is `invalid` and dead-lettered; its neighbours go on.

pub mod checkpoint;
pub mod client;
mod ledger_copy;
pub mod settings;
pub mod sse;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::event::{decode, DecodeError, Decoded};
use crate::metrics::Metrics;
use crate::mgmt::MgmtClient;
use crate::pipeline::{Pipeline, Rejected, Verdict};
use crate::server::Health;
use crate::shutdown::Shutdown;
use crate::source::auth0_logs::{CheckpointError, DeadLetterFile};
use crate::source::lease::ReaderLease;
use crate::source::ledger_checkpoint::LedgerCheckpoint;
use crate::source::{users_of, Dispatch, Intake, QuietLog, TaskLost};
use crate::supervise::HelperStatus;
use checkpoint::{from_timestamp, parse_time, EventsCheckpointFile, Progress};
use client::{EventsApi, OpenError, OpenReport, Opened, Resume};
pub use ledger_copy::LEDGER_NAME;
pub use settings::{EventsSection, EventsSettings, EventsStart};
use sse::{SseItem, SseMessage, SseParser};

/// The scope `GET /api/v2/events` needs.
pub const SCOPE: &str = "read:events";

/// How often a checkpoint that moved is written.
pub const SAVE_EVERY: Duration = Duration::from_millis(200);
/// The reconnection delay until the server sends `retry:`.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// The longest `retry:` delay followed.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// How long events in flight may finish after the stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The pause before a delivery whose task was lost is delivered again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The longest wait between two tries of a dead-letter write that fails.
const WRITE_RETRY_MAX: Duration = Duration::from_secs(10);

/// Why the reader stopped abnormally (its supervisor starts it again).
#[derive(Debug, thiserror::Error)]
pub enum EventsRunError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the tenant's Events API: {0}")]
    Open(#[from] OpenError),
    #[error("an event's task was lost (reading starts again from the checkpoint)")]
    Lost(#[from] TaskLost),
}

/// Counts of a reader's run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventsSummary {
    pub events: u64,
    pub markers: u64,
    pub connections: u64,
}

/// The Events API reader.
pub struct EventsReader {
    settings: EventsSettings,
    api: EventsApi,
    pipeline: Arc<Pipeline>,
    store: EventsCheckpointFile,
    dead_letters: Arc<DeadLetterFile>,
    metrics: Arc<Metrics>,
    status: Option<HelperStatus>,
    quiet: QuietLog,
    /// With a ledger: its copy of the checkpoint (under a lease, the one of record).
    ledger: Option<LedgerCheckpoint>,
}

/// What one connection ended with.
enum Ended {
    /// The server closed it (normal: Auth0 cycles connections).
    Closed,
    /// It broke, or stayed silent past the idle timeout.
    Broken(String),
    /// `event: error`: the server ended it with this.
    StreamError(String),
    Stopped,
}

impl EventsReader {
    /// A reader keeping its checkpoint in `store` and, with a ledger, in `ledger` too (under
    /// a lease the ledger's is the one of record).
    pub fn new(
        settings: EventsSettings,
        client: MgmtClient,
        pipeline: Arc<Pipeline>,
        store: EventsCheckpointFile,
        ledger: Option<LedgerCheckpoint>,
    ) -> Result<EventsReader, crate::mgmt::MgmtError> {
        let metrics = Arc::clone(pipeline.metrics());
        for reason in ["server_closed", "broken", "stream_error"] {
            metrics.auth0_events_reconnects.with_label_values(&[reason]);
        }
        let dead_letters = Arc::new(DeadLetterFile::new(store.dead_letter_path()));
        Ok(EventsReader {
            api: EventsApi::new(client, settings.event_types.clone())?,
            settings,
            pipeline,
            store,
            dead_letters,
            metrics,
            status: None,
            quiet: QuietLog::every(Duration::from_secs(60)),
            ledger,
        })
    }

    /// The lease this reader runs under (replicas sharing a PostgreSQL ledger).
    pub fn lease(&self) -> Option<&Arc<ReaderLease>> {
        self.ledger.as_ref().and_then(LedgerCheckpoint::lease)
    }

    /// Whether the lease this reader runs under was lost: it stops at once, saves nothing.
    fn lease_lost(&self) -> bool {
        self.ledger
            .as_ref()
            .is_some_and(LedgerCheckpoint::lease_lost)
    }

    /// The same reader, reporting its failures through `status` (`/readyz` degraded).
    pub fn with_status(mut self, status: HelperStatus) -> EventsReader {
        self.status = Some(status);
        self
    }

    fn failed(&self, said: &str) {
        if let Some(status) = &self.status {
            status.failed(said);
        }
    }

    fn healthy(&self) {
        if let Some(status) = &self.status {
            status.healthy();
        }
    }

    /// Where reading starts: after the checkpoint, else at `start`.
    /// `place`: where the checkpoint was read (the file, or the ledger).
    fn resume_from(
        &self,
        checkpoint: Option<&checkpoint::EventsCheckpoint>,
        place: &str,
    ) -> Resume {
        if let Some(checkpoint) = checkpoint {
            tracing::info!(offset = %checkpoint.offset, checkpoint = %place, "resuming after the checkpoint");
            return Resume::After(checkpoint.offset.clone());
        }
        let at = match self.settings.start {
            EventsStart::Latest => {
                tracing::info!("no checkpoint yet: starting at the newest event");
                return Resume::Newest;
            }
            EventsStart::Earliest => SystemTime::now()
                .checked_sub(self.settings.earliest)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            EventsStart::At(at) => at,
        };
        let time = from_timestamp(at).unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned());
        tracing::info!(from_timestamp = %time, "no checkpoint yet: starting at a time");
        Resume::At(time)
    }

    /// Reads until `shutdown`.
    pub async fn run(
        &self,
        health: Option<Arc<Health>>,
        shutdown: Shutdown,
    ) -> Result<EventsSummary, EventsRunError> {
        // Under a lease the checkpoint of record is the ledger's (this replica's file may be
        // behind what another replica read while it stood by); else the file's, or the
        // ledger's copy when there is no file. `None`: stopped meanwhile.
        let of_record = self
            .ledger
            .as_ref()
            .is_some_and(LedgerCheckpoint::is_of_record);
        let (saved, in_ledger) = if of_record {
            match self.ledger_checkpoint_until(&shutdown).await {
                None => return Ok(EventsSummary::default()),
                Some(Some(saved)) => (Some(saved), true),
                Some(None) => (self.store.load()?, false),
            }
        } else {
            match self.store.load()? {
                Some(saved) => (Some(saved), false),
                None => match self.ledger_checkpoint_until(&shutdown).await {
                    None => return Ok(EventsSummary::default()),
                    Some(saved) => (saved, true),
                },
            }
        };
        let place = if in_ledger {
            "the ledger".to_owned()
        } else {
            self.store.describe()
        };
        let progress = Arc::new(Mutex::new(Progress::from_checkpoint(saved.as_ref())));
        let mut resume = self.resume_from(saved.as_ref(), &place);
        let mut summary = EventsSummary::default();
        let mut dispatch: Dispatch<()> = Dispatch::default();
        let intake = Intake::new(self.settings.max_inflight);
        let mut retry = DEFAULT_RETRY;
        // After an expired offset: the time from which events may be lost, until the first
        // event read again bounds the gap.
        let mut gap_from: Option<String> = None;
        let outcome = loop {
            if shutdown.is_triggered() {
                break Ok(());
            }
            self.save(&progress).await;
            let asked_at = SystemTime::now();
            let opened = match self.api.open(&resume, self, &shutdown).await {
                Ok(opened) => opened,
                Err(OpenError::Stopped) => break Ok(()),
                Err(err) => break Err(EventsRunError::from(err)),
            };
            let response = match opened {
                Opened::Stream(response) => response,
                Opened::Expired(said) => {
                    let (next, from) = self.expired(&resume, &progress, &said);
                    resume = next;
                    gap_from = Some(from);
                    continue;
                }
            };
            summary.connections += 1;
            self.metrics.auth0_events_connections.inc();
            if let Some(health) = &health {
                health.set_source_connected(true);
            }
            self.healthy();
            tracing::debug!(resume = %resume.describe(), "Events API connection open");
            let mut reading = Connection {
                response,
                parser: SseParser::new(),
                last_offset: None,
                retry: &mut retry,
                gap_from: &mut gap_from,
            };
            let ended = self
                .read(
                    &mut reading,
                    &progress,
                    &mut dispatch,
                    &intake,
                    &mut summary,
                    &shutdown,
                )
                .await;
            match reading.last_offset.take() {
                Some(offset) => resume = Resume::After(offset),
                // Opened at the newest event and ended before any offset (not even a
                // marker): the next connection starts at the time this one was asked for, so
                // nothing sent between the two is skipped (what is read twice is dedup's).
                None if resume == Resume::Newest => {
                    if let Some(time) = asked_at
                        .checked_sub(Duration::from_secs(1))
                        .and_then(from_timestamp)
                    {
                        resume = Resume::At(time);
                    }
                }
                None => {}
            }
            let ended = match ended {
                Ok(ended) => ended,
                Err(err) => break Err(err),
            };
            let reason = match &ended {
                Ended::Stopped => break Ok(()),
                Ended::Closed => "server_closed",
                Ended::Broken(why) => {
                    if self.quiet.allow("broken") {
                        tracing::warn!(error = %why, "the Events API connection broke; reconnecting");
                    }
                    "broken"
                }
                Ended::StreamError(said) => {
                    if expired_error(said) {
                        let (next, from) = self.expired(&resume, &progress, said);
                        resume = next;
                        gap_from = Some(from);
                    } else {
                        tracing::error!(said = %said, "the Events API ended the stream with an error; reconnecting");
                    }
                    "stream_error"
                }
            };
            self.metrics
                .auth0_events_reconnects
                .with_label_values(&[reason])
                .inc();
            self.save(&progress).await;
            tracing::debug!(reason, retry_ms = retry.as_millis() as u64, resume = %resume.describe(), "reconnecting to the Events API");
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = shutdown.wait() => break Ok(()),
            }
        };
        if let Some(health) = &health {
            health.set_source_connected(false);
        }
        if self.lease_lost() {
            // Another replica reads now: nothing of this one's is finished or saved.
            let abandoned = dispatch
                .drain(Duration::ZERO, std::future::pending::<()>)
                .await;
            tracing::info!(
                abandoned,
                "the lease is lost: events in flight abandoned, the next holder reads them again from the ledger's checkpoint"
            );
            return outcome.map(|()| summary);
        }
        let abandoned = dispatch
            .drain(SHUTDOWN_GRACE, std::future::pending::<()>)
            .await;
        if abandoned > 0 {
            tracing::info!(
                abandoned,
                "stopped with events in flight: the checkpoint stays before them, they are read again at the next start"
            );
        }
        self.save(&progress).await;
        outcome.map(|()| summary)
    }

    /// Reads one connection until it ends.
    async fn read(
        &self,
        connection: &mut Connection<'_>,
        progress: &Arc<Mutex<Progress>>,
        dispatch: &mut Dispatch<()>,
        intake: &Intake,
        summary: &mut EventsSummary,
        shutdown: &Shutdown,
    ) -> Result<Ended, EventsRunError> {
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            for finished in dispatch.finished() {
                finished?;
            }
            intake.update_waiting(
                dispatch.len(),
                self.pipeline.waiting().max(dispatch.started()),
                dispatch.queued(),
                dispatch.blocked(),
                self.api.client().is_failing(),
            );
            let paused = intake.is_paused();
            let chunk = tokio::select! {
                _ = shutdown.wait() => return Ok(Ended::Stopped),
                _ = tick.tick() => {
                    self.save(progress).await;
                    continue;
                }
                Some(finished) = dispatch.next(), if paused && !dispatch.is_empty() => {
                    finished?;
                    continue;
                }
                chunk = tokio::time::timeout(self.settings.idle_timeout, connection.response.chunk()), if !paused => chunk,
            };
            let bytes = match chunk {
                Err(_) => {
                    return Ok(Ended::Broken(format!(
                        "nothing received for {} s (not even a heartbeat)",
                        self.settings.idle_timeout.as_secs_f64()
                    )))
                }
                Ok(Err(err)) => {
                    return Ok(Ended::Broken(crate::mgmt::stream::error_chain(&err)));
                }
                Ok(Ok(None)) => {
                    connection.parser.finish();
                    return Ok(Ended::Closed);
                }
                Ok(Ok(Some(bytes))) => bytes,
            };
            for item in connection.parser.feed(&bytes) {
                match item {
                    SseItem::Comment(_) => {}
                    SseItem::Retry(ms) => {
                        *connection.retry = Duration::from_millis(ms).min(MAX_RETRY);
                    }
                    SseItem::Message(message) => {
                        if let Some(said) =
                            self.message(message, connection, progress, dispatch, summary)
                        {
                            return Ok(Ended::StreamError(said));
                        }
                    }
                }
            }
        }
    }

    /// Takes one message: a marker moves the progress, an event is dispatched, an
    /// `event: error` ends the connection (its text returned).
    fn message(
        &self,
        message: SseMessage,
        connection: &mut Connection<'_>,
        progress: &Arc<Mutex<Progress>>,
        dispatch: &mut Dispatch<()>,
        summary: &mut EventsSummary,
    ) -> Option<String> {
        let offset = message
            .id
            .clone()
            .filter(|id| checkpoint::usable_offset(id));
        if let Some(offset) = &offset {
            connection.last_offset = Some(offset.clone());
        }
        match message.event.as_deref() {
            Some("offset-only") => {
                if let Some(offset) = offset {
                    summary.markers += 1;
                    lock(progress).marker(offset);
                }
                None
            }
            Some("error") => Some(message.data.chars().take(500).collect()),
            _ => {
                summary.events += 1;
                let decoded = EventMessage::decode(&message);
                if let Some(from) = connection.gap_from.take() {
                    tracing::warn!(
                        gap_from = %from,
                        first_event_time = decoded.time.as_deref().unwrap_or("-"),
                        "events between these times may have been lost to the expired offset: run `reconcile` to give the users of that time their roles"
                    );
                }
                let seq = lock(progress).event(offset.clone(), decoded.time.clone());
                self.dispatch(decoded, message, seq, offset, progress, dispatch);
                None
            }
        }
    }

    fn dispatch(
        &self,
        decoded: EventMessage,
        message: SseMessage,
        seq: u64,
        offset: Option<String>,
        progress: &Arc<Mutex<Progress>>,
        dispatch: &mut Dispatch<()>,
    ) {
        let item = decoded.item();
        let users = users_of(std::slice::from_ref(&item));
        let pipeline = Arc::clone(&self.pipeline);
        let metrics = Arc::clone(&self.metrics);
        let dead_letters = Arc::clone(&self.dead_letters);
        let progress = Arc::clone(progress);
        let status = self.status.clone();
        dispatch.spawn(users, move || async move {
            let mut item = Some(item);
            loop {
                let items = vec![item.take().unwrap_or_else(|| decoded.item())];
                let verdict = pipeline
                    .deliver(items, Some(|| vec![decoded.item()]), |_| {})
                    .await;
                match verdict {
                    Verdict::Done => break,
                    Verdict::DeadLetter(rejected) => {
                        write_dead_letter(
                            &dead_letters,
                            &message,
                            offset.as_deref(),
                            &rejected,
                            &metrics,
                            status.as_ref(),
                        )
                        .await;
                        break;
                    }
                    Verdict::Retry(why) => {
                        tracing::warn!(reason = %why, "an event's delivery is run again");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
            lock(&progress).resolve(seq);
        });
    }

    /// Writes the checkpoint when it moved (the file, then the ledger when one is configured);
    /// a file write that fails is reported and tried at the next tick (a restart meanwhile
    /// reads some events again, nothing is skipped).
    async fn save(&self, progress: &Arc<Mutex<Progress>>) {
        if self.lease_lost() {
            return;
        }
        let (unsaved, pending) = {
            let mut progress = lock(progress);
            (progress.take_unsaved(), progress.pending())
        };
        self.metrics
            .auth0_events_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        let Some(checkpoint) = unsaved else {
            return;
        };
        match self.store.save(&checkpoint) {
            Ok(()) => {
                self.save_in_ledger(&checkpoint).await;
                if let Some(at) = checkpoint.time.as_deref().and_then(parse_time) {
                    let lag = SystemTime::now()
                        .duration_since(at)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    self.metrics.auth0_events_lag.set(lag);
                }
            }
            Err(err) => {
                lock(progress).unsaved_again();
                self.failed(&format!(
                    "the checkpoint cannot be written ({err}); tried again, a restart meanwhile reads some events again"
                ));
            }
        }
    }

    /// An expired offset: counted, logged with what may be lost, and where reading resumes.
    fn expired(
        &self,
        resume: &Resume,
        progress: &Arc<Mutex<Progress>>,
        said: &str,
    ) -> (Resume, String) {
        self.metrics.auth0_events_gaps.inc();
        let last_time = lock(progress).last_event_time().map(str::to_owned);
        let at = last_time
            .as_deref()
            .and_then(parse_time)
            .unwrap_or_else(|| {
                SystemTime::now()
                    .checked_sub(self.settings.earliest)
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            });
        let time = from_timestamp(at).unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned());
        tracing::error!(
            resume = %resume.describe(),
            last_event_time = last_time.as_deref().unwrap_or("-"),
            gap_from = %time,
            said = %said,
            "the Events API offset has expired: events from gap_from to the oldest the stream still keeps can no longer be read (the end of the gap is logged with the first event read); resuming by from_timestamp at the last processed event's time; run `reconcile` to give the users of that gap their roles"
        );
        (Resume::At(time.clone()), time)
    }
}

impl OpenReport for EventsReader {
    fn connection_limit(&self, said: &str) {
        self.metrics.auth0_events_connection_limit_waits.inc();
        let message = "the plan's concurrent Events API connections are all taken (another reader holds them: Free 1, self-service 4, Enterprise 8): waiting and trying again";
        if self.quiet.allow("connection_limit") {
            tracing::warn!(said = %said, "{message}");
        }
        self.failed(message);
    }
}

/// One connection being read.
struct Connection<'a> {
    response: reqwest::Response,
    parser: SseParser,
    /// The last offset received on it.
    last_offset: Option<String>,
    retry: &'a mut Duration,
    gap_from: &'a mut Option<String>,
}

/// Whether an `event: error` says the offset expired.
fn expired_error(said: &str) -> bool {
    let lower = said.to_ascii_lowercase();
    lower.contains("expired") || lower.contains("410") || lower.contains("no longer available")
}

fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(|p| p.into_inner())
}

/// An event message's CloudEvent, ready to decode (again).
struct EventMessage {
    /// The CloudEvent's bytes, or why there is none.
    bytes: Result<Vec<u8>, String>,
    /// Its `time`.
    time: Option<String>,
    offset: Option<String>,
}

impl EventMessage {
    fn decode(message: &SseMessage) -> EventMessage {
        let offset = message.id.clone();
        let (bytes, time) = cloud_event(message);
        EventMessage {
            bytes,
            time,
            offset,
        }
    }

    /// The decoded event (one; anything else is one invalid event).
    fn item(&self) -> Decoded {
        match &self.bytes {
            Ok(bytes) => {
                let mut items = decode(bytes);
                if items.len() == 1 {
                    items.remove(0)
                } else {
                    Err(DecodeError::new(
                        "an Events API message that is not one CloudEvent",
                        self.offset.clone(),
                    ))
                }
            }
            Err(why) => Err(DecodeError::new(why.clone(), self.offset.clone())),
        }
    }
}

/// The CloudEvent of a message's `data` (`{"offset", "event"}`), with `specversion` added when
/// missing, and its `time`.
fn cloud_event(message: &SseMessage) -> (Result<Vec<u8>, String>, Option<String>) {
    if message.oversized {
        return (
            Err(format!(
                "an Events API message with a line over {} bytes",
                sse::MAX_LINE
            )),
            None,
        );
    }
    let value: Value = match serde_json::from_str(&message.data) {
        Ok(value) => value,
        Err(err) => return (Err(format!("the message's data is not JSON: {err}")), None),
    };
    let mut event = match value {
        Value::Object(mut fields) => match fields.remove("event") {
            Some(Value::Object(event)) => event,
            _ if fields.contains_key("type") => fields,
            _ => {
                return (
                    Err("the message's data holds no event object".to_owned()),
                    None,
                )
            }
        },
        _ => {
            return (
                Err("the message's data is not a JSON object".to_owned()),
                None,
            )
        }
    };
    if !event.contains_key("specversion") && !event.contains_key("spec_version") {
        event.insert("specversion".to_owned(), Value::from("1.0"));
    }
    let time = event.get("time").and_then(Value::as_str).map(str::to_owned);
    match serde_json::to_vec(&Value::Object(event)) {
        Ok(bytes) => (Ok(bytes), time),
        Err(err) => (Err(err.to_string()), time),
    }
}

/// Appends a dead-lettered message (its type, offset, the reason and the `data` as received),
/// trying again with backoff until it is written: the checkpoint cannot pass it before.
async fn write_dead_letter(
    file: &DeadLetterFile,
    message: &SseMessage,
    offset: Option<&str>,
    rejected: &Rejected,
    metrics: &Metrics,
    status: Option<&HelperStatus>,
) {
    let line = serde_json::json!({
        "reason": rejected.reason(),
        "error": rejected.error,
        "offset": offset,
        "event_type": message.event,
        "data": message.data,
    });
    let mut wait = Duration::from_millis(500);
    loop {
        match file.append_value(&line) {
            Ok(()) => break,
            Err(err) => {
                if let Some(status) = status {
                    status.failed(&format!(
                        "the dead-letter file cannot be written ({err}): the checkpoint waits"
                    ));
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(WRITE_RETRY_MAX);
            }
        }
    }
    metrics
        .dead_letters
        .with_label_values(&[rejected.reason()])
        .inc();
    tracing::warn!(
        offset = offset.unwrap_or("-"),
        reason = rejected.reason(),
        file = %file.path().display(),
        "dead-lettered"
    );
}
