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
//!
//! Where a reader starts, and the retention check, go by `log_id` (the checkpoint order), never
//! by `date`: a log's id encodes its *ingestion* time (`900` + `YYYYMMDDhhmmss` + …), its `date`
//! is the *event* time, which the ingestion follows by seconds, so the two orders disagree. The
//! invariants (docs/auth0-logs.md, "Where it starts"):
//! - the checkpoint is always a `log_id` every log at or below which, in id order, reached a
//!   final verdict; reading resumes strictly after it;
//! - `earliest` starts below every kept log: from a synthetic id (the oldest-by-date log's
//!   prefix, its date less [`START_MARGIN`], zeros), which every log ingested at most
//!   `START_MARGIN` before its date sorts above;
//! - `latest` starts exactly after the newest log in id order: every log ingested later has a
//!   higher id;
//! - a time `T` starts from the synthetic id of `T - START_MARGIN`: no log dated `T` or later is
//!   skipped (some logged up to the margin before are read too);
//! - a retention gap is reported when the checkpoint is below the first log kept *in id order*
//!   (found from the synthetic id of the oldest date), and only then.

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
use crate::mgmt::logs::{date_of, log_id_of, log_id_order, synthetic_from, LogsApi, MAX_TAKE};
use crate::mgmt::MgmtError;
use crate::pipeline::{Outcome, Pipeline, Rejected, Report, Verdict};
use crate::server::Health;
use crate::shutdown::Shutdown;
use crate::source::{users_of, Dispatch};
use crate::supervise::HelperStatus;

/// How far before the wanted time a synthetic `from` goes. A log's id (ingestion time) follows
/// its `date` (event time) by 1–4.5 s in the recorded pages and up to 5 s in the samples, in
/// that direction only; a date *after* the ingestion takes clock skew between Auth0's servers.
/// A minute covers both many times over; the cost is re-reading up to a minute of logs before
/// a time start (dedup and the policy make them harmless), nothing for `earliest`.
pub const START_MARGIN: Duration = Duration::from_secs(60);

/// Where a reader without a checkpoint starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// The oldest log the tenant still keeps.
    Earliest,
    /// After the newest log: only what happens from now on.
    Latest,
    /// After this `log_id`.
    After(String),
    /// The logs dated at or after this time (and some up to [`START_MARGIN`] before).
    At(SystemTime),
}

impl Start {
    /// `"earliest"`, `"latest"`, a `log_id` (digits) or an RFC 3339 time (any offset).
    pub fn parse(text: &str) -> Option<Start> {
        match text.trim() {
            "earliest" => Some(Start::Earliest),
            "latest" => Some(Start::Latest),
            id if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) => {
                Some(Start::After(id.to_owned()))
            }
            time => parse_time(time).map(Start::At),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Start::Earliest => "earliest".to_owned(),
            Start::Latest => "latest".to_owned(),
            Start::After(id) => format!("after log_id {id}"),
            Start::At(at) => format!("from {}", rfc3339(*at)),
        }
    }
}

/// An RFC 3339 time with any offset, at or after 1970.
fn parse_time(text: &str) -> Option<SystemTime> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = u64::try_from(at.unix_timestamp_nanos()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// `at` in RFC 3339 (UTC, milliseconds), or `-` when it cannot be written.
fn rfc3339(at: SystemTime) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    if at < SystemTime::UNIX_EPOCH
        || write!(text, "{}", humantime::format_rfc3339_millis(at)).is_err()
    {
        return "-".to_owned();
    }
    text
}

/// A `from` below every log of the tenant's id width, for when no synthetic id can be built.
fn zeros_like(reference: &str) -> String {
    "0".repeat(reference.len().max(1))
}

/// The synthetic `from` for logs dated at or after `at` ([`START_MARGIN`] before it).
fn from_for(reference: &str, at: SystemTime) -> Option<String> {
    synthetic_from(reference, at.checked_sub(START_MARGIN)?)
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
        let text = serde_json::to_vec(checkpoint).map_err(|e| CheckpointError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        self.save_bytes(&text)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

impl FileCheckpoint {
    /// The file's text (`None` when there is none yet): for other checkpoint formats that
    /// share the file, lock and dead-letter handling (the Events API reader).
    pub(crate) fn read_text(&self) -> Result<Option<String>, CheckpointError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some(text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CheckpointError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the file's content atomically (temp file, fsync, rename, fsync of the
    /// directory): durable when it returns.
    pub(crate) fn save_bytes(&self, text: &[u8]) -> Result<(), CheckpointError> {
        let tmp = beside(&self.path, ".tmp");
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(text).map_err(io_error(&tmp))?;
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

    fn append(&self, log: &Value, rejected: &Rejected) -> Result<(), CheckpointError> {
        self.append_value(&serde_json::json!({
            "reason": rejected.reason(),
            "error": rejected.error,
            "log_id": log_id_of(log),
            "log": log,
        }))
    }

    /// Appends `line` as one JSON line, fsynced.
    pub(crate) fn append_value(&self, line: &Value) -> Result<(), CheckpointError> {
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
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
    /// Where its failures are reported (`/readyz` degraded, `helper_failures_total`).
    status: Option<HelperStatus>,
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
            status: None,
        }
    }

    /// The same reader, reporting its failures (and its recovery) through `status`.
    pub fn with_status(mut self, status: HelperStatus) -> LogsReader {
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

    /// Where to start: the checkpoint, else `start` (the rules are in the module's doc).
    /// Returns the `from` of the first checkpoint request.
    async fn resolve_start(&self) -> Result<String, LogsRunError> {
        let checkpoint = match self.store.load()? {
            Some(checkpoint) => Some(checkpoint),
            None => self.ledger_checkpoint().await,
        };
        if let Some(checkpoint) = checkpoint {
            tracing::info!(reader = self.reader(), log_id = %checkpoint.log_id, checkpoint = %self.store.describe(), "resuming from the checkpoint");
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
        let mut last_read = std::time::Instant::now();
        let mut buffer: VecDeque<Value> = VecDeque::new();
        let reader = self.reader();
        while !shutdown.is_triggered() {
            if buffer.is_empty() {
                let asked = std::time::Instant::now();
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
                        last_read = std::time::Instant::now();
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
                        if !checkpoint.log_id.is_empty() {
                            if !self.save_checkpoint(&checkpoint, &shutdown).await {
                                break;
                            }
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
        let mut dispatch: Dispatch<(usize, Verdict)> = Dispatch::default();
        for (index, log) in batch.iter().enumerate() {
            let bytes = serde_json::to_vec(log).unwrap_or_default();
            let id = log_id_of(log).map(str::to_owned);
            let item = decode_log(&bytes, id.clone());
            let users = users_of(std::slice::from_ref(&item));
            let pipeline = Arc::clone(&self.pipeline);
            let metrics = Arc::clone(&self.metrics);
            let backstop = self.settings.role == Role::Backstop;
            dispatch.spawn(users, async move {
                let again = || vec![decode_log(&bytes, id.clone())];
                let verdict = pipeline
                    .deliver(vec![item], Some(again), |report| {
                        if backstop {
                            count_recovered(&metrics, report);
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

/// Reads the stream's status now and every `every` until `shutdown`: `log_stream_active{stream}`
/// 1 when `active`, 0 otherwise (and when it cannot be read), with a warning naming the
/// status. A read that fails (a missing `read:log_streams`, an unknown id, no answer) is
/// reported through `status` (logged, counted, `/readyz` degraded) and tried again at the
/// next check; the next read that works clears it.
pub async fn watch_log_stream(
    api: Arc<LogsApi>,
    stream_id: String,
    every: Duration,
    metrics: Arc<Metrics>,
    status: HelperStatus,
    shutdown: Shutdown,
) {
    let mut last: Option<String> = None;
    let mut warned = None;
    loop {
        let read = tokio::select! {
            read = api.log_stream(&stream_id) => read,
            _ = shutdown.wait() => return,
        };
        match read {
            Ok(stream) => {
                status.healthy();
                warned = report_stream_status(
                    &metrics,
                    &stream_id,
                    &stream.name,
                    &stream.status,
                    last.as_deref(),
                    warned,
                );
                last = Some(stream.status);
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
                status.failed(&format!(
                    "the status of log stream {stream_id} cannot be read: {err}"
                ));
                last = Some(String::new());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return,
        }
    }
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
    fn start_parses_the_four_forms() {
        let at = |secs: u64| {
            Some(Start::At(
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            ))
        };
        assert_eq!(Start::parse("2026-11-23T10:00:00Z"), at(1_795_428_000));
        assert_eq!(Start::parse("2026-11-23T12:00:00+02:00"), at(1_795_428_000));
        assert_eq!(
            Start::parse("2026-11-23T10:00:00.5Z"),
            Some(Start::At(
                SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_428_000_500)
            ))
        );
        assert_eq!(Start::parse("2026-11-23"), None);
        assert_eq!(Start::parse("1969-12-31T23:59:59Z"), None);
        assert_eq!(Start::parse("2026-13-01T00:00:00Z"), None);
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
