//! The tenant's own logs (`GET /api/v2/logs`, checkpoint form) as a source of `run`
//! (`[source] type = "auth0_logs"`) and as the backstop behind any stream (`[backstop]`): a
//! reader that takes each page through the shared pipeline, advances its checkpoint only past
//! events that all reached a final verdict, keeps one reader per checkpoint (a lock file), and
//! reports a checkpoint older than the tenant's retention; plus the log stream's health.
//!
//! Where a final verdict goes: `Done` advances the checkpoint; `DeadLetter` (an event ended
//! `invalid` or `failed`) appends the log and the reason to the dead-letter file next to the
//! checkpoint (`<checkpoint>.dead-letters.jsonl`, fsynced) before the checkpoint moves past it,
//! and counts it in `dead_letters_total`; a lost task (`Retry`) keeps the checkpoint where it is
//! and the batch is read again (what was done is `already_done` and costs no call).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{decode, DecodeError};
use crate::metrics::Metrics;
use crate::mgmt::logs::{date_of, log_id_of, log_id_order, LogsApi, MAX_TAKE};
use crate::mgmt::MgmtError;
use crate::pipeline::{Outcome, Pipeline, Report};
use crate::server::Health;
use crate::shutdown::Shutdown;
use crate::source::{users_of, Dispatch};

/// Where a reader without a checkpoint starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The oldest log the tenant still keeps.
    Earliest,
    /// After the newest log: only what happens from now on.
    Latest,
    /// After this `log_id`.
    After(String),
}

impl Start {
    /// `"earliest"`, `"latest"` or a `log_id` (digits).
    pub fn parse(text: &str) -> Option<Start> {
        match text.trim() {
            "earliest" => Some(Start::Earliest),
            "latest" => Some(Start::Latest),
            id if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) => {
                Some(Start::After(id.to_owned()))
            }
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Start::Earliest => "earliest".to_owned(),
            Start::Latest => "latest".to_owned(),
            Start::After(id) => format!("after log_id {id}"),
        }
    }
}

/// Which reader: the `auth0_logs` source, or the backstop behind another source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Backstop,
}

impl Role {
    /// The `reader` label of the Logs API metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Backstop => "backstop",
        }
    }
}

/// Validated `[auth0_logs]` or `[backstop]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LogsSettings {
    pub role: Role,
    pub start: Start,
    pub checkpoint_file: PathBuf,
    /// How long to wait before reading again once caught up.
    pub poll_interval: Duration,
    /// The backstop reads this far behind now (zero for the source).
    pub lag: Duration,
    /// The share of `auth0.requests_per_second` the reads may use (the backstop; 1 for the
    /// source, which shares the client's limiter).
    pub rate_share: f64,
    /// The log stream whose status is watched.
    pub log_stream_id: Option<String>,
    /// How often that status is read.
    pub log_stream_check: Duration,
    /// Logs per page (`take`, at most 100).
    pub take: usize,
}

/// Where a reader is: the last log every event up to which reached a final verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub log_id: String,
    /// The `date` of that log, when it had one (the lag and the retention check read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// Why a checkpoint could not be read, written or taken.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is not a checkpoint this service wrote ({detail}): move it away to start again from `start`")]
    Corrupt { path: PathBuf, detail: String },
    #[error("another reader holds the checkpoint {path} (lock {lock}): one reader per checkpoint; stop the other instance, or give this one a checkpoint_file of its own for another tenant")]
    Locked { path: PathBuf, lock: PathBuf },
}

/// Where checkpoints live: a file now; the ledger (issue 23) can implement it too.
pub trait CheckpointStore: Send + Sync {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError>;
    /// Durable when it returns.
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
    /// Where, for logs and `check`.
    fn describe(&self) -> String;
}

/// A checkpoint in a JSON file, replaced atomically (temp file, fsync, rename, fsync of the
/// directory), guarded by an exclusive lock on `<file>.lock` held as long as the value lives.
pub struct FileCheckpoint {
    path: PathBuf,
    _lock: File,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `<path><suffix>` next to the checkpoint.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl FileCheckpoint {
    /// Takes the lock; a second reader gets [`CheckpointError::Locked`].
    pub fn open(path: &Path) -> Result<FileCheckpoint, CheckpointError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let lock_path = beside(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        if !try_lock_exclusive(&lock).map_err(io_error(&lock_path))? {
            return Err(CheckpointError::Locked {
                path: path.to_owned(),
                lock: lock_path,
            });
        }
        Ok(FileCheckpoint {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The checkpoint in `path`, read without the lock (`check`).
    pub fn peek(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
        read_checkpoint(path)
    }

    /// The dead-letter file of this checkpoint.
    pub fn dead_letter_path(&self) -> PathBuf {
        beside(&self.path, ".dead-letters.jsonl")
    }
}

/// An exclusive, non-blocking `flock` on `file`: `Ok(false)` when another holds it. Released
/// when the file is closed (also when the process dies).
#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(errno) => Err(std::io::Error::from(errno)),
    }
}

/// Not enforced off Unix: one reader per checkpoint is the deployment's to keep.
#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> std::io::Result<bool> {
    tracing::warn!(
        "the checkpoint lock is not enforced on this platform: run one reader per checkpoint"
    );
    Ok(true)
}

fn read_checkpoint(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let checkpoint: Checkpoint =
        serde_json::from_str(&text).map_err(|e| CheckpointError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if checkpoint.log_id.is_empty() || !checkpoint.log_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(CheckpointError::Corrupt {
            path: path.to_owned(),
            detail: "log_id is not a log id".to_owned(),
        });
    }
    Ok(Some(checkpoint))
}

impl CheckpointStore for FileCheckpoint {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        read_checkpoint(&self.path)
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let tmp = beside(&self.path, ".tmp");
        let text = serde_json::to_vec(checkpoint).map_err(|e| CheckpointError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(&text).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io_error(&self.path))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename is durable once the directory is.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_error(dir))?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Appends dead-lettered logs (one JSON object a line, fsynced) next to the checkpoint.
pub struct DeadLetterFile {
    path: PathBuf,
}

impl DeadLetterFile {
    pub fn new(path: PathBuf) -> DeadLetterFile {
        DeadLetterFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, log: &Value, report: &Report) -> Result<(), CheckpointError> {
        let line = serde_json::json!({
            "reason": report.outcome.as_str(),
            "error": report.error,
            "log_id": report.log_id,
            "log": log,
        });
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_error(&self.path))?;
        file.write_all(&bytes).map_err(io_error(&self.path))?;
        file.sync_data().map_err(io_error(&self.path))
    }
}

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
}

/// How long a reader waits after an error it cannot fix by retrying at once.
const ERROR_PAUSE: Duration = Duration::from_secs(5);
/// How long tasks of a batch may finish after the stop before they are abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl LogsReader {
    pub fn new(
        settings: LogsSettings,
        api: LogsApi,
        pipeline: Arc<Pipeline>,
        store: Box<dyn CheckpointStore>,
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
        }
    }

    fn reader(&self) -> &'static str {
        self.settings.role.as_str()
    }

    fn read_error(&self, err: &MgmtError, what: &str) {
        self.metrics
            .auth0_logs_read_errors
            .with_label_values(&[self.reader()])
            .inc();
        tracing::error!(reader = self.reader(), error = %err, "{what}");
    }

    /// The name this reader's checkpoint has in the ledger.
    fn ledger_name(&self) -> String {
        format!("auth0_logs:{}", self.reader())
    }

    /// With a ledger: the checkpoint saved there (a reader that lost its file, such as a new
    /// pod without the old volume, resumes from it). Waits while the ledger fails.
    async fn ledger_checkpoint(&self) -> Option<Checkpoint> {
        let link = self.pipeline.ledger()?;
        let name = self.ledger_name();
        let saved = link
            .until_ok(&self.metrics, "read the reader's checkpoint", |l| {
                let name = name.clone();
                async move { l.load_checkpoint(&name).await }
            })
            .await
            .ok()??;
        match serde_json::from_str::<Checkpoint>(&saved) {
            Ok(checkpoint) => {
                tracing::info!(reader = self.reader(), log_id = %checkpoint.log_id, ledger = %link.ledger().describe(), "no checkpoint file: resuming from the checkpoint the ledger keeps");
                Some(checkpoint)
            }
            Err(err) => {
                tracing::error!(reader = self.reader(), error = %err, "the ledger's checkpoint is not readable: starting from `start`");
                None
            }
        }
    }

    /// With a ledger: the checkpoint is saved there too, after the file. Waits while the
    /// ledger fails (a service fault: nothing further is read meanwhile).
    async fn save_in_ledger(&self, checkpoint: &Checkpoint) {
        let Some(link) = self.pipeline.ledger() else {
            return;
        };
        let Ok(value) = serde_json::to_string(checkpoint) else {
            return;
        };
        let name = self.ledger_name();
        link.until_ok(&self.metrics, "save the reader's checkpoint", |l| {
            let (name, value) = (name.clone(), value.clone());
            async move { l.save_checkpoint(&name, &value).await }
        })
        .await
        // Refused (logged by the link): the file keeps the checkpoint.
        .ok();
    }

    /// Where to start: the checkpoint, else `start`. Returns the first request and logs to
    /// process before it (the oldest log, for `earliest`).
    async fn resolve_start(&self) -> Result<(String, Vec<Value>), LogsRunError> {
        let take = self.settings.take;
        let checkpoint = match self.store.load()? {
            Some(checkpoint) => Some(checkpoint),
            None => self.ledger_checkpoint().await,
        };
        if let Some(checkpoint) = checkpoint {
            tracing::info!(reader = self.reader(), log_id = %checkpoint.log_id, checkpoint = %self.store.describe(), "resuming from the checkpoint");
            self.check_retention(&checkpoint.log_id).await?;
            return Ok((page_path(&checkpoint.log_id, take), Vec::new()));
        }
        match &self.settings.start {
            Start::After(id) => {
                tracing::info!(reader = self.reader(), log_id = %id, "no checkpoint yet: starting after the configured log_id");
                self.check_retention(id).await?;
                Ok((page_path(id, take), Vec::new()))
            }
            Start::Latest => match self.api.latest().await? {
                Some(log) => {
                    let id = log_id_of(&log).unwrap_or_default().to_owned();
                    tracing::info!(reader = self.reader(), log_id = %id, "no checkpoint yet: starting after the newest log");
                    Ok((page_path(&id, take), Vec::new()))
                }
                None => self.start_at_oldest().await,
            },
            Start::Earliest => self.start_at_oldest().await,
        }
    }

    async fn start_at_oldest(&self) -> Result<(String, Vec<Value>), LogsRunError> {
        match self.api.oldest().await? {
            Some(log) => {
                let id = log_id_of(&log).unwrap_or_default().to_owned();
                tracing::info!(reader = self.reader(), log_id = %id, "no checkpoint yet: starting from the oldest log the tenant keeps");
                Ok((page_path(&id, take_of(&self.settings)), vec![log]))
            }
            None => {
                // A tenant without logs: the first log will come after id 0.
                Ok((page_path("0", take_of(&self.settings)), Vec::new()))
            }
        }
    }

    /// A checkpoint older than the oldest log the tenant keeps: the logs between are gone.
    /// Reported (metric, error), never skipped silently; reading goes on from what is kept.
    async fn check_retention(&self, from: &str) -> Result<(), LogsRunError> {
        let Some(oldest) = self.api.oldest().await? else {
            return Ok(());
        };
        let Some(oldest_id) = log_id_of(&oldest) else {
            return Ok(());
        };
        // The checkpoint's own log is no longer kept: it has passed the horizon, and logs
        // after it may have gone with it.
        if log_id_order(oldest_id, from) == std::cmp::Ordering::Greater {
            self.metrics
                .auth0_logs_retention_gaps
                .with_label_values(&[self.reader()])
                .inc();
            tracing::error!(
                reader = self.reader(),
                checkpoint = from,
                oldest_kept = oldest_id,
                oldest_date = oldest.get("date").and_then(serde_json::Value::as_str).unwrap_or("-"),
                "the checkpoint is older than the tenant's log retention: logs between it and the oldest log kept may be lost to this reader; reading goes on from the oldest kept; run `reconcile` to give the users of the gap their roles"
            );
        }
        Ok(())
    }

    /// Reads until `shutdown`.
    pub async fn run(
        self,
        health: Option<Arc<Health>>,
        shutdown: Shutdown,
    ) -> Result<ReaderSummary, LogsRunError> {
        let mut summary = ReaderSummary::default();
        let (mut next, first) = tokio::select! {
            started = self.resolve_start() => started?,
            _ = shutdown.wait() => return Ok(summary),
        };
        if let Some(health) = &health {
            health.set_source_connected(true);
        }
        let mut buffer: VecDeque<Value> = first.into();
        let reader = self.reader();
        while !shutdown.is_triggered() {
            if buffer.is_empty() {
                let page = tokio::select! {
                    page = self.api.page(&next) => page,
                    _ = shutdown.wait() => break,
                };
                summary.pages += 1;
                match page {
                    Ok(page) => {
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
                        buffer.extend(page.logs);
                    }
                    Err(err) => {
                        self.read_error(&err, "reading the tenant's logs failed; retrying");
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
                        if !checkpoint.log_id.is_empty() {
                            self.store.save(&checkpoint)?;
                            self.save_in_ledger(&checkpoint).await;
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
    async fn process(
        &self,
        batch: &[Value],
        summary: &mut ReaderSummary,
        shutdown: &Shutdown,
    ) -> Result<bool, LogsRunError> {
        let mut dispatch: Dispatch<(usize, Report)> = Dispatch::default();
        for (index, log) in batch.iter().enumerate() {
            let bytes = serde_json::to_vec(log).unwrap_or_default();
            let mut items = decode(&bytes);
            let item = if items.len() == 1 {
                items.remove(0)
            } else {
                // A log object decodes to one event; anything else is one invalid event.
                Err(DecodeError::new(
                    "a Logs API entry that is not one log object",
                    log_id_of(log).map(str::to_owned),
                ))
            };
            let users = users_of(std::slice::from_ref(&item));
            let pipeline = Arc::clone(&self.pipeline);
            dispatch.spawn(users, async move { (index, pipeline.process(item).await) });
        }
        let mut final_count = 0;
        let mut dead = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let joined = match deadline {
                None => tokio::select! {
                    joined = dispatch.next() => joined,
                    _ = shutdown.wait() => {
                        // Stopping: the batch may finish within the grace period.
                        deadline = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
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
                Ok((index, report)) => {
                    final_count += 1;
                    if self.settings.role == Role::Backstop {
                        self.count_recovered(&report);
                    }
                    if matches!(report.outcome, Outcome::Invalid | Outcome::Failed) {
                        dead.push((index, report));
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
        for (index, report) in dead {
            if let Some(log) = batch.get(index) {
                self.dead_letters.append(log, &report)?;
                summary.dead_letters += 1;
                self.metrics
                    .dead_letters
                    .with_label_values(&[report.outcome.as_str()])
                    .inc();
                tracing::warn!(
                    reader = self.reader(),
                    log_id = report.log_id.as_deref().unwrap_or("-"),
                    reason = report.outcome.as_str(),
                    file = %self.dead_letters.path().display(),
                    "dead-lettered"
                );
            }
        }
        Ok(true)
    }

    /// An eligible event the stream had not delivered here: not a `log_id` seen before.
    fn count_recovered(&self, report: &Report) {
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
            self.metrics
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
}

fn take_of(settings: &LogsSettings) -> usize {
    settings.take
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

/// Reads the stream's status now and every `every`: `log_stream_active{stream}` 1 when
/// `active`, 0 otherwise (and when it cannot be read), with a warning naming the status.
/// The first read happens before this returns; a read failing for good then (a missing
/// `read:log_streams`, an unknown id) is the caller's error.
pub async fn watch_log_stream(
    api: Arc<LogsApi>,
    stream_id: String,
    every: Duration,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, MgmtError> {
    let first = api.log_stream(&stream_id).await?;
    let mut warned =
        report_stream_status(&metrics, &stream_id, &first.name, &first.status, None, None);
    let handle = tokio::spawn(async move {
        let mut last = first.status;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait() => return,
            }
            let read = tokio::select! {
                read = api.log_stream(&stream_id) => read,
                _ = shutdown.wait() => return,
            };
            match read {
                Ok(stream) => {
                    warned = report_stream_status(
                        &metrics,
                        &stream_id,
                        &stream.name,
                        &stream.status,
                        Some(&last),
                        warned,
                    );
                    last = stream.status;
                }
                Err(err) => {
                    metrics
                        .log_stream_active
                        .with_label_values(&[&stream_id])
                        .set(0);
                    metrics
                        .auth0_logs_read_errors
                        .with_label_values(&["health"])
                        .inc();
                    tracing::warn!(stream = %stream_id, error = %err, "the log stream's status cannot be read");
                    last = String::new();
                }
            }
        }
    });
    Ok(handle)
}

/// While a stream stays inactive, the warning is repeated this often (not at every read).
const STATUS_WARNING_REPEAT: Duration = Duration::from_secs(600);

/// Sets the gauge and logs a change (a warning naming the status when not active, repeated
/// every 10 minutes while it lasts). Returns when the last warning was logged.
fn report_stream_status(
    metrics: &Metrics,
    id: &str,
    name: &str,
    status: &str,
    previous: Option<&str>,
    warned: Option<std::time::Instant>,
) -> Option<std::time::Instant> {
    let active = status == "active";
    metrics
        .log_stream_active
        .with_label_values(&[id])
        .set(i64::from(active));
    if active {
        if previous.is_some_and(|p| p != "active") {
            tracing::info!(stream = id, name, "the log stream is active again");
        }
        return None;
    }
    let changed = previous != Some(status);
    if !changed && warned.is_some_and(|at| at.elapsed() < STATUS_WARNING_REPEAT) {
        return warned;
    }
    tracing::warn!(
        stream = id,
        name,
        status,
        "the log stream is not active: Auth0 is not delivering it (a stream failing for 7 days is paused and must be resumed by hand: Dashboard → Monitoring → Streams); the backstop, if configured, gives the users their roles meanwhile"
    );
    Some(std::time::Instant::now())
}

/// Management API calls a reader spends per hour for `events_per_hour` tenant log events:
/// one call per `take` events, plus one poll per `poll_interval` when caught up.
pub fn calls_per_hour(events_per_hour: f64, take: usize, poll_interval: Duration) -> f64 {
    let pages = (events_per_hour.max(0.0) / take.clamp(1, MAX_TAKE) as f64).ceil();
    let polls = 3600.0 / poll_interval.as_secs_f64().max(0.001);
    pages + polls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_parses_the_three_forms() {
        assert_eq!(Start::parse("earliest"), Some(Start::Earliest));
        assert_eq!(Start::parse(" latest "), Some(Start::Latest));
        assert_eq!(
            Start::parse("900201"),
            Some(Start::After("900201".to_owned()))
        );
        assert_eq!(Start::parse("yesterday"), None);
        assert_eq!(Start::parse(""), None);
    }

    #[test]
    fn a_checkpoint_is_saved_atomically_and_a_second_reader_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("cp.json");
        let store = FileCheckpoint::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.load().ok().flatten(), None);
        let checkpoint = Checkpoint {
            log_id: "900".to_owned(),
            date: Some("2026-11-23T00:00:00.000Z".to_owned()),
        };
        store.save(&checkpoint).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.load().ok().flatten(), Some(checkpoint.clone()));
        assert!(!beside(&path, ".tmp").exists());
        assert!(matches!(
            FileCheckpoint::open(&path),
            Err(CheckpointError::Locked { .. })
        ));
        drop(store);
        let again = FileCheckpoint::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.load().ok().flatten(), Some(checkpoint));
        std::fs::write(&path, "{not json").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(again.load(), Err(CheckpointError::Corrupt { .. })));
    }

    #[test]
    fn calls_per_hour_are_pages_plus_polls() {
        let calls = calls_per_hour(10_000.0, 100, Duration::from_secs(10));
        assert_eq!(calls, 100.0 + 360.0);
    }
}
