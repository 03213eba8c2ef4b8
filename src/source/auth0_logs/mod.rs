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

mod checkpoint;
pub mod client;
mod reader;
mod stream;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointStore, DeadLetterFile, FileCheckpoint,
};
pub use client::LogsApi;
use client::{synthetic_from, MAX_TAKE};
pub use reader::{page_path, LogsReader, LogsRunError, ReaderSummary};
pub use stream::watch_log_stream;

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

/// Management API calls a reader spends per hour for `events_per_hour` tenant log events:
/// one call per `take` events, plus one poll per `poll_interval` when caught up.
pub fn calls_per_hour(events_per_hour: f64, take: usize, poll_interval: Duration) -> f64 {
    let pages = (events_per_hour.max(0.0) / take.clamp(1, MAX_TAKE) as f64).ceil();
    let polls = 3600.0 / poll_interval.as_secs_f64().max(0.001);
    pages + polls
}

#[cfg(test)]
mod tests {
    use super::checkpoint::beside;
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
        let refused = again.load();
        assert!(matches!(refused, Err(CheckpointError::Corrupt { .. })));
        // The JSON error is kept as the source: the chain says where the file stops making sense.
        if let Err(err) = refused {
            let chain = crate::exit::cause_chain(&err);
            assert!(chain.contains("line 1 column 2"), "{chain}");
        }
    }

    #[test]
    fn calls_per_hour_are_pages_plus_polls() {
        let calls = calls_per_hour(10_000.0, 100, Duration::from_secs(10));
        assert_eq!(calls, 100.0 + 360.0);
    }
}
