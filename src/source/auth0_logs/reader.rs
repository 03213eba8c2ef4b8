//! The reader: checkpoint pages of the Logs API through the pipeline, the checkpoint advanced
//! past logs that reached a final verdict, stalls and retention gaps reported.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::client::{date_of, log_id_of, log_id_order, MAX_TAKE};
use crate::event::{decode, DecodeError};
use crate::metrics::Metrics;
use crate::mgmt::MgmtError;
use crate::pipeline::{Outcome, Pipeline, Report, Verdict};
use crate::server::Health;
use crate::shutdown::Shutdown;
use crate::source::lease::ReaderLease;
use crate::source::ledger_checkpoint::LedgerCheckpoint;
use crate::source::{users_of, Dispatch};
use crate::supervise::HelperStatus;

use super::*;

/// Why a reader stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum LogsRunError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the tenant's Logs API: {0}")]
    Mgmt(#[from] MgmtError),
}

/// Counts of a reader's run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReaderSummary {
    /// Logs taken through the pipeline (a batch read again counts again).
    pub events: u64,
    pub pages: u64,
    pub dead_letters: u64,
    /// Batches left unfinished (shutdown or a lost task): read again.
    pub unfinished_batches: u64,
}

/// A Logs API reader: the `auth0_logs` source or the backstop.
pub struct LogsReader {
    settings: LogsSettings,
    api: LogsApi,
    pipeline: Arc<Pipeline>,
    store: Box<dyn CheckpointStore>,
    dead_letters: DeadLetterFile,
    metrics: Arc<Metrics>,
    /// Where its failures are reported (`/readyz` degraded, `helper_failures_total`).
    status: Option<HelperStatus>,
    /// With a ledger: its copy of the checkpoint (under a lease, the one of record).
    ledger: Option<LedgerCheckpoint>,
}

/// A read that took this long (the client waiting out a fault inside) is a stall: the
/// retention is checked before its page is used.
const STALL_READ: Duration = Duration::from_secs(10);
/// Reads further apart than the poll interval and this (a batch held by a long service
/// fault) are a stall too.
const STALL_BETWEEN_READS: Duration = Duration::from_secs(60);
/// The longest wait between two tries of a checkpoint write that fails.
const SAVE_RETRY_MAX: Duration = Duration::from_secs(10);

/// How long a reader waits after an error it cannot fix by retrying at once.
const ERROR_PAUSE: Duration = Duration::from_secs(5);
/// How long tasks of a batch may finish after the stop before they are abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl LogsReader {
    /// A reader keeping its checkpoint in `store` and, with a ledger, in `ledger` too (under
    /// a lease the ledger's is the one of record); `dead_letters` its dead-letter file.
    pub fn new(
        settings: LogsSettings,
        api: LogsApi,
        pipeline: Arc<Pipeline>,
        store: Box<dyn CheckpointStore>,
        ledger: Option<LedgerCheckpoint>,
        dead_letters: DeadLetterFile,
    ) -> LogsReader {
        let metrics = Arc::clone(pipeline.metrics());
        let reader = settings.role.as_str();
        metrics.auth0_logs_lag.with_label_values(&[reader]);
        metrics
            .auth0_logs_retention_gaps
            .with_label_values(&[reader]);
        metrics.auth0_logs_read_errors.with_label_values(&[reader]);
        if settings.role == Role::Backstop {
            for trigger in ["signup", "first_login", "email_verified"] {
                metrics.backstop_recovered.with_label_values(&[trigger]);
            }
        }
        LogsReader {
            settings,
            api,
            pipeline,
            store,
            dead_letters,
            metrics,
            status: None,
            ledger,
        }
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

    /// The name of this reader's checkpoint in the ledger, and of its lease.
    pub fn ledger_name_of(role: Role) -> String {
        format!("auth0_logs:{}", role.as_str())
    }

    /// The same reader, reporting its failures (and its recovery) through `status`.
    pub fn with_status(mut self, status: HelperStatus) -> LogsReader {
        self.status = Some(status);
        self
    }

    pub(super) fn failed(&self, said: &str) {
        if let Some(status) = &self.status {
            status.failed(said);
        }
    }

    pub(super) fn healthy(&self) {
        if let Some(status) = &self.status {
            status.healthy();
        }
    }

    /// Saves the checkpoint, trying again (with backoff, reported) until it is written or
    /// the shutdown: `false` when stopped before it was written.
    async fn save_checkpoint(&self, checkpoint: &Checkpoint, shutdown: &Shutdown) -> bool {
        let mut wait = Duration::from_millis(500);
        loop {
            match self.store.save(checkpoint) {
                Ok(()) => {
                    self.healthy();
                    return true;
                }
                Err(err) => self.failed(&format!(
                    "the checkpoint cannot be written ({err}); reading waits, nothing is skipped"
                )),
            }
            if shutdown.is_triggered() {
                return false;
            }
            sleep_or_stop(wait, shutdown).await;
            wait = (wait * 2).min(SAVE_RETRY_MAX);
        }
    }

    pub(super) fn reader(&self) -> &'static str {
        self.settings.role.as_str()
    }

    fn read_error(&self, err: &MgmtError, what: &str) {
        self.metrics
            .auth0_logs_read_errors
            .with_label_values(&[self.reader()])
            .inc();
        tracing::error!(reader = self.reader(), error = %err, "{what}");
    }

    /// With a ledger: the checkpoint saved there (a reader that lost its file, such as a new
    /// pod without the old volume, resumes from it). Waits while the ledger fails.
    async fn ledger_checkpoint(&self) -> Option<Checkpoint> {
        let ledger = self.ledger.as_ref()?;
        match ledger.load::<Checkpoint>().await? {
            Ok(checkpoint) => {
                if ledger.is_of_record() {
                    tracing::info!(reader = self.reader(), log_id = %checkpoint.log_id, ledger = %ledger.describe(), "holding the lease: resuming from the checkpoint of record in the ledger");
                } else {
                    tracing::info!(reader = self.reader(), log_id = %checkpoint.log_id, ledger = %ledger.describe(), "no checkpoint file: resuming from the checkpoint the ledger keeps");
                }
                Some(checkpoint)
            }
            Err(err) => {
                tracing::error!(reader = self.reader(), error = %err, "the ledger's checkpoint is not readable: starting from `start`");
                None
            }
        }
    }

    /// With a ledger: the checkpoint is saved there too, after the file
    /// ([`LedgerCheckpoint::save`]): `false` when the lease is lost (the reader stops).
    async fn save_in_ledger(&self, checkpoint: &Checkpoint) -> bool {
        match &self.ledger {
            Some(ledger) => ledger.save(checkpoint).await,
            None => true,
        }
    }

    /// Where to start: the checkpoint, else `start` (the rules are in the module's doc).
    /// Returns the `from` of the first checkpoint request.
    async fn resolve_start(&self) -> Result<String, LogsRunError> {
        // Under a lease the checkpoint of record is the ledger's (this replica's file may be
        // behind what another replica read while it stood by); else the file's, or the
        // ledger's copy when there is no file.
        let of_record = self
            .ledger
            .as_ref()
            .is_some_and(LedgerCheckpoint::is_of_record);
        let (checkpoint, in_ledger) = if of_record {
            match self.ledger_checkpoint().await {
                Some(checkpoint) => (Some(checkpoint), true),
                None => (self.store.load()?, false),
            }
        } else {
            match self.store.load()? {
                Some(checkpoint) => (Some(checkpoint), false),
                None => (self.ledger_checkpoint().await, true),
            }
        };
        if let Some(checkpoint) = checkpoint {
            let place = if in_ledger {
                "the ledger".to_owned()
            } else {
                self.store.describe()
            };
            tracing::info!(reader = self.reader(), log_id = %checkpoint.log_id, checkpoint = %place, "resuming from the checkpoint");
            self.check_retention(&checkpoint.log_id).await?;
            return Ok(checkpoint.log_id);
        }
        let from = match &self.settings.start {
            Start::After(id) => {
                tracing::info!(reader = self.reader(), log_id = %id, "no checkpoint yet: starting after the configured log_id");
                self.check_retention(id).await?;
                id.clone()
            }
            Start::Latest => {
                let newest = self.api.newest().await?;
                match newest.as_ref().and_then(log_id_of) {
                    Some(id) => {
                        tracing::info!(reader = self.reader(), log_id = %id, "no checkpoint yet: starting after the newest log (in id order)");
                        id.to_owned()
                    }
                    None => self.start_of_empty_tenant(),
                }
            }
            Start::Earliest => match self.api.oldest().await? {
                Some(oldest) => self.start_below_date(&oldest, None),
                None => self.start_of_empty_tenant(),
            },
            Start::At(at) => match self.api.oldest().await? {
                Some(oldest) => self.start_below_date(&oldest, Some(*at)),
                None => self.start_of_empty_tenant(),
            },
        };
        Ok(from)
    }

    /// A tenant without logs: the first log will come after id 0.
    fn start_of_empty_tenant(&self) -> String {
        tracing::info!(
            reader = self.reader(),
            "no checkpoint yet and the tenant has no logs: starting from the first"
        );
        "0".to_owned()
    }

    /// The synthetic `from` for the logs dated at or after `at` (`None`: the oldest log's
    /// date, for `earliest`), with the oldest log by date as the id reference.
    fn start_below_date(&self, oldest: &Value, at: Option<SystemTime>) -> String {
        let reference = log_id_of(oldest).unwrap_or_default();
        let oldest_date = date_of(oldest);
        let wanted = at.or(oldest_date);
        if let (Some(at), Some(date)) = (at, oldest_date) {
            if date > at {
                tracing::warn!(
                    reader = self.reader(),
                    start = %rfc3339(at),
                    oldest_kept = %rfc3339(date),
                    "the oldest log the tenant keeps is dated after `start`: logs between may be past the retention; run `reconcile` for the users of that time"
                );
            }
        }
        match wanted.and_then(|w| from_for(reference, w)) {
            Some(from) => {
                tracing::info!(reader = self.reader(), from = %from, wanted = %wanted.map(rfc3339).unwrap_or_default(), margin_seconds = START_MARGIN.as_secs(), "no checkpoint yet: starting from a log id below every log dated from the wanted time on (its time less the margin)");
                from
            }
            None => {
                // The ids hold no time where Auth0's do, or the log no date: from the start.
                let from = zeros_like(reference);
                tracing::warn!(reader = self.reader(), reference, "no checkpoint yet, and the oldest log's id or date cannot place the start: reading from the first log kept");
                from
            }
        }
    }

    /// A checkpoint below the first log the tenant keeps (in id order): the logs between may
    /// be gone. Reported (metric, error), never skipped silently; reading goes on after the
    /// checkpoint, which is the first log kept.
    async fn check_retention(&self, from: &str) -> Result<(), LogsRunError> {
        let Some(oldest) = self.api.oldest().await? else {
            return Ok(());
        };
        let Some(oldest_id) = log_id_of(&oldest) else {
            return Ok(());
        };
        // At or above a kept log's id: every log after the checkpoint is still kept.
        if log_id_order(from, oldest_id) != std::cmp::Ordering::Less {
            return Ok(());
        }
        // The oldest by date is not the first by id: the first log after a synthetic id below
        // every kept log is.
        let below = date_of(&oldest).and_then(|date| from_for(oldest_id, date));
        let first = match below {
            Some(below) => self.api.first_after(&below).await?,
            None => None,
        };
        let first_id = first
            .as_ref()
            .and_then(log_id_of)
            .filter(|id| log_id_order(id, oldest_id) == std::cmp::Ordering::Less)
            .unwrap_or(oldest_id);
        if log_id_order(from, first_id) == std::cmp::Ordering::Less {
            self.metrics
                .auth0_logs_retention_gaps
                .with_label_values(&[self.reader()])
                .inc();
            tracing::error!(
                reader = self.reader(),
                checkpoint = from,
                oldest_kept = first_id,
                oldest_date = oldest.get("date").and_then(serde_json::Value::as_str).unwrap_or("-"),
                "the checkpoint is older than the tenant's log retention: logs between it and the oldest log kept may be lost to this reader; reading goes on from the oldest kept; run `reconcile` to give the users of the gap their roles"
            );
        }
        Ok(())
    }

    /// Reads until `shutdown`.
    ///
    /// Stalls: the retention is checked again whenever reading resumes after one (a read
    /// that failed or took [`STALL_READ`], or reads [`STALL_BETWEEN_READS`] apart beyond
    /// the poll interval), against the position reading resumes from.
    pub async fn run(
        &self,
        health: Option<Arc<Health>>,
        shutdown: Shutdown,
    ) -> Result<ReaderSummary, LogsRunError> {
        let mut summary = ReaderSummary::default();
        let mut position = tokio::select! {
            started = self.resolve_start() => started?,
            _ = shutdown.wait() => return Ok(summary),
        };
        let mut next = page_path(&position, self.settings.take);
        self.healthy();
        if let Some(health) = &health {
            health.set_source_connected(true);
        }
        let mut stalled = false;
        let mut last_read = tokio::time::Instant::now();
        let mut buffer: VecDeque<Value> = VecDeque::new();
        let reader = self.reader();
        while !shutdown.is_triggered() {
            if buffer.is_empty() {
                let asked = tokio::time::Instant::now();
                if asked.duration_since(last_read)
                    > self.settings.poll_interval + STALL_BETWEEN_READS
                {
                    stalled = true;
                }
                let page = tokio::select! {
                    page = self.api.page(&next) => page,
                    _ = shutdown.wait() => break,
                };
                summary.pages += 1;
                if asked.elapsed() >= STALL_READ {
                    stalled = true;
                }
                match page {
                    Ok(page) => {
                        last_read = tokio::time::Instant::now();
                        if std::mem::take(&mut stalled) {
                            // Resuming after a stall: logs past the retention meanwhile are
                            // reported, never skipped silently.
                            if let Err(err) = self.check_retention(&position).await {
                                self.metrics
                                    .auth0_logs_read_errors
                                    .with_label_values(&[reader])
                                    .inc();
                                tracing::error!(reader, error = %err, "checking the retention after a stall failed; checked again at the next read");
                                stalled = true;
                            }
                        }
                        if self.settings.role == Role::Backstop {
                            self.healthy();
                        }
                        let last = page.logs.last().and_then(log_id_of).map(str::to_owned);
                        if page.logs.is_empty() {
                            self.metrics
                                .auth0_logs_lag
                                .with_label_values(&[reader])
                                .set(0.0);
                            if let Some(link) = page.next {
                                next = link;
                            }
                            sleep_or_stop(self.settings.poll_interval, &shutdown).await;
                            continue;
                        }
                        next = page
                            .next
                            .filter(|link| last.as_deref().is_some_and(|l| link.contains(l)))
                            .or_else(|| last.as_deref().map(|l| page_path(l, self.settings.take)))
                            .unwrap_or(next);
                        if let Some(last) = last {
                            position = last;
                        }
                        buffer.extend(page.logs);
                    }
                    Err(err) => {
                        stalled = true;
                        self.read_error(&err, "reading the tenant's logs failed; retrying");
                        if self.settings.role == Role::Backstop {
                            self.failed(&format!("reading the tenant's logs fails: {err}"));
                        }
                        sleep_or_stop(ERROR_PAUSE.max(self.settings.poll_interval), &shutdown)
                            .await;
                        continue;
                    }
                }
            }
            let batch = self.ready_batch(&mut buffer);
            if batch.is_empty() {
                // The backstop: the next log is younger than the lag.
                let wait = buffer
                    .front()
                    .and_then(date_of)
                    .and_then(|d| {
                        (d + self.settings.lag)
                            .duration_since(SystemTime::now())
                            .ok()
                    })
                    .unwrap_or(Duration::from_millis(200))
                    .clamp(
                        Duration::from_millis(50),
                        self.settings.poll_interval.max(Duration::from_millis(50)),
                    );
                sleep_or_stop(wait, &shutdown).await;
                continue;
            }
            let count = batch.len();
            match self.process(&batch, &mut summary, &shutdown).await {
                Ok(true) => {
                    summary.events += count as u64;
                    if let Some(last) = batch.last() {
                        let checkpoint = Checkpoint {
                            log_id: log_id_of(last).unwrap_or_default().to_owned(),
                            date: last.get("date").and_then(Value::as_str).map(str::to_owned),
                        };
                        // Under a lease that is lost, nothing is saved: another reads now.
                        if !checkpoint.log_id.is_empty()
                            && (self.lease_lost()
                                || !self.save_checkpoint(&checkpoint, &shutdown).await
                                || !self.save_in_ledger(&checkpoint).await)
                        {
                            break;
                        }
                        let lag = date_of(last)
                            .and_then(|d| SystemTime::now().duration_since(d).ok())
                            .map(|d| d.as_secs_f64())
                            .unwrap_or(0.0);
                        self.metrics
                            .auth0_logs_lag
                            .with_label_values(&[reader])
                            .set(lag);
                    }
                }
                Ok(false) => {
                    // Not every event is final: the batch goes back, the checkpoint stays.
                    summary.unfinished_batches += 1;
                    for log in batch.into_iter().rev() {
                        buffer.push_front(log);
                    }
                    if !shutdown.is_triggered() {
                        sleep_or_stop(Duration::from_millis(500), &shutdown).await;
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(summary)
    }

    /// Up to `take` logs from the front of the buffer, those at least `lag` old (all of them
    /// for the source; a log without a date counts as old enough).
    fn ready_batch(&self, buffer: &mut VecDeque<Value>) -> Vec<Value> {
        let horizon = SystemTime::now()
            .checked_sub(self.settings.lag)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut batch = Vec::new();
        while batch.len() < self.settings.take {
            let ready = match buffer.front() {
                None => false,
                Some(log) => {
                    self.settings.lag.is_zero() || date_of(log).is_none_or(|d| d <= horizon)
                }
            };
            if !ready {
                break;
            }
            if let Some(log) = buffer.pop_front() {
                batch.push(log);
            }
        }
        batch
    }

    /// Takes a batch through the pipeline (per-user order, users in parallel). `Ok(true)` when
    /// every event reached a final verdict and the dead letters are written.
    pub(super) async fn process(
        &self,
        batch: &[Value],
        summary: &mut ReaderSummary,
        shutdown: &Shutdown,
    ) -> Result<bool, LogsRunError> {
        let mut dispatch: Dispatch<(usize, Verdict)> = Dispatch::default();
        for (index, log) in batch.iter().enumerate() {
            let bytes = serde_json::to_vec(log).unwrap_or_default();
            let id = log_id_of(log).map(str::to_owned);
            let item = decode_log(&bytes, id.clone());
            let users = users_of(std::slice::from_ref(&item));
            let pipeline = Arc::clone(&self.pipeline);
            let metrics = Arc::clone(&self.metrics);
            let backstop = self.settings.role == Role::Backstop;
            dispatch.spawn(users, move || async move {
                let again = || vec![decode_log(&bytes, id.clone())];
                let verdict = pipeline
                    .deliver(vec![item], Some(again), |report| {
                        if backstop {
                            count_recovered(&metrics, &report);
                        }
                    })
                    .await;
                (index, verdict)
            });
        }
        let mut final_count = 0;
        let mut dead = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let joined = match deadline {
                None => tokio::select! {
                    joined = dispatch.next() => joined,
                    _ = shutdown.wait() => {
                        // Stopping: the batch may finish within the grace period (none when
                        // the lease is lost: another replica reads it now).
                        let grace = if self.lease_lost() { Duration::ZERO } else { SHUTDOWN_GRACE };
                        deadline = Some(tokio::time::Instant::now() + grace);
                        continue;
                    }
                },
                Some(at) => tokio::select! {
                    joined = dispatch.next() => joined,
                    _ = tokio::time::sleep_until(at) => {
                        let abandoned = dispatch.drain(Duration::ZERO, std::future::pending::<()>).await;
                        tracing::info!(reader = self.reader(), abandoned, "stopped within a batch: its checkpoint is not advanced, the batch is read again at the next start");
                        return Ok(false);
                    }
                },
            };
            let Some(joined) = joined else { break };
            match joined {
                Ok((index, verdict)) => {
                    final_count += 1;
                    match verdict {
                        Verdict::Done => {}
                        Verdict::DeadLetter(rejected) => dead.push((index, rejected)),
                        // Not final: the batch is read again.
                        Verdict::Retry(_) => final_count -= 1,
                    }
                }
                Err(lost) => {
                    tracing::warn!(reader = self.reader(), error = %lost, "an event's task was lost: the batch is read again");
                }
            }
        }
        if final_count < batch.len() {
            return Ok(false);
        }
        dead.sort_by_key(|(index, _)| *index);
        for (index, rejected) in dead {
            if let Some(log) = batch.get(index) {
                self.dead_letters.append(log, &rejected)?;
                summary.dead_letters += 1;
                self.metrics
                    .dead_letters
                    .with_label_values(&[rejected.reason()])
                    .inc();
                tracing::warn!(
                    reader = self.reader(),
                    log_id = log_id_of(log).unwrap_or("-"),
                    reason = rejected.reason(),
                    file = %self.dead_letters.path().display(),
                    "dead-lettered"
                );
            }
        }
        Ok(true)
    }
}

/// A Logs API entry as one decoded event: a log object decodes to one event; anything else is
/// one invalid event.
fn decode_log(bytes: &[u8], log_id: Option<String>) -> crate::event::Decoded {
    let mut items = decode(bytes);
    if items.len() == 1 {
        items.remove(0)
    } else {
        Err(DecodeError::new(
            "a Logs API entry that is not one log object",
            log_id,
        ))
    }
}

/// The backstop's count of an eligible event the stream had not delivered here: not a
/// `log_id` seen before.
fn count_recovered(metrics: &Metrics, report: &Report) {
    let Some(trigger) = report.trigger else {
        return;
    };
    let recovered = match report.outcome {
        Outcome::Assigned | Outcome::WouldAssign | Outcome::NoRule => true,
        // Roles already given (by a later event of the user): still an event the stream
        // did not deliver. A `log_id` seen before has no rules.
        Outcome::AlreadyDone => !report.rules.is_empty(),
        _ => false,
    };
    if recovered {
        metrics
            .backstop_recovered
            .with_label_values(&[trigger.as_str()])
            .inc();
        tracing::info!(
            log_id = report.log_id.as_deref().unwrap_or("-"),
            trigger = trigger.as_str(),
            outcome = report.outcome.as_str(),
            "backstop: an event the stream did not deliver"
        );
    }
}

/// The checkpoint request after `from`.
pub fn page_path(from: &str, take: usize) -> String {
    format!(
        "/api/v2/logs?from={}&take={}",
        crate::mgmt::encode_path_segment(from),
        take.clamp(1, MAX_TAKE)
    )
}

async fn sleep_or_stop(duration: Duration, shutdown: &Shutdown) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.wait() => {}
    }
}
