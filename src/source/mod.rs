//! Where events come from, and what every source shares.
//!
//! - [`kafka`] and [`sqs`] are the consumers behind `run`; [`ingest`] is the webhook receiver
//!   (`ingest`); [`replay`] reads files and stdin (`replay`); [`auth0_logs`] reads the tenant's
//!   Logs API (the `auth0_logs` source, and the backstop behind any other); [`auth0_events`]
//!   reads its Events API; [`lease`] keeps one of these readers active across replicas sharing
//!   a PostgreSQL ledger (the others stand by and take over); [`ledger_checkpoint`] is such a
//!   reader's checkpoint as the ledger keeps it (under a lease, the one of record), handed to
//!   the reader by the wiring.
//! - [`Dispatch`] runs each message as a task, in arrival order per user (the [`Sequencer`]),
//!   other users in parallel; a task that panics is reported, never lost. [`Dispatch::drain`]
//!   waits for the tasks until a deadline at shutdown.
//! - [`Intake`] (`intake.rs`) decides when intake pauses (too much in flight, the Management
//!   API failing) and resumes (below half, the API answering), and logs each change once; the
//!   Kafka consumer stops reading for a moment ([`ShortStop`]) before it pauses for fullness.
//! - [`QuietLog`] logs a repeated error at most once per interval.

pub mod auth0_events;
pub mod auth0_logs;
mod intake;
pub mod kafka;
pub mod lease;
pub mod ledger_checkpoint;
pub mod replay;
pub mod sequencer;
pub mod sqs;
pub mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use prometheus::IntCounterVec;
use tokio::task::JoinSet;

use crate::event::Decoded;
use crate::metrics::Metrics;
pub use crate::pipeline::SourceKind;
use sequencer::Sequencer;

pub use intake::{Intake, IntakeLoad, IntakeStep, PauseReason, ShortStop, SHORT_STOP_GRACE};

/// The user ids of a message's decoded events: the keys its turn waits on.
pub fn users_of(items: &[Decoded]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i.as_ref().ok().and_then(|e| e.user()).map(str::to_owned))
        .collect()
}

/// A task that ended without its result: it panicked, or it was aborted at shutdown (the
/// source says which, and the panic's message).
#[derive(Debug, thiserror::Error)]
#[error("message task ended abnormally")]
pub struct TaskLost(#[source] pub tokio::task::JoinError);

/// What a consumer's run did (Kafka, SQS), for the exit log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConsumerSummary {
    /// Messages taken from the transport (redeliveries included).
    pub messages: u64,
    /// Messages acknowledged one by one as done (SQS: deleted); `None` where the transport
    /// acknowledges a position instead (Kafka commits offsets).
    pub acknowledged: Option<u64>,
    /// Messages handed to the transport's dead-letter path: sent to the dead-letter topic
    /// (Kafka), left to the queue's redrive policy (SQS).
    pub dead_lettered: u64,
    /// Messages still in flight when the shutdown grace ran out (they will be redelivered).
    pub abandoned: usize,
}

/// The most events in process, messages queued (behind their user or not polled yet) and
/// messages blocked behind their user seen at once by a source's intake (its summary logs them:
/// the benches read them).
#[derive(Debug, Default, Clone, Copy)]
pub struct MostWaiting {
    pub in_process: usize,
    pub queued: usize,
    pub blocked: usize,
}

impl MostWaiting {
    pub fn note(&mut self, in_process: usize, queued: usize, blocked: usize) {
        self.in_process = self.in_process.max(in_process);
        self.queued = self.queued.max(queued);
        self.blocked = self.blocked.max(blocked);
    }
}

/// Message tasks of one source: per-user order, a join set, a drain with a deadline.
pub struct Dispatch<T> {
    sequencer: Arc<Sequencer>,
    tasks: JoinSet<T>,
}

impl<T: Send + 'static> Default for Dispatch<T> {
    fn default() -> Self {
        Dispatch {
            sequencer: Arc::new(Sequencer::default()),
            tasks: JoinSet::new(),
        }
    }
}

impl<T: Send + 'static> Dispatch<T> {
    /// A dispatcher whose order is shared with others (SQS receive loops share one sequencer).
    pub fn with_sequencer(sequencer: Arc<Sequencer>) -> Self {
        Dispatch {
            sequencer,
            tasks: JoinSet::new(),
        }
    }

    /// Runs the future `work` makes once every earlier task of the same `users` finished.
    /// Must be called in arrival order: the place in line is taken here, not when the task
    /// starts. The future is made and boxed only when the turn comes, so a task waiting in
    /// line holds only what `work` captures (its message), not the state of a run.
    pub fn spawn<W, F>(&mut self, users: Vec<String>, work: W)
    where
        W: FnOnce() -> F + Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let mut turn = self.sequencer.enter(users);
        self.tasks.spawn(async move {
            turn.wait().await;
            let out = Box::pin(work()).await;
            drop(turn);
            out
        });
    }

    /// Tasks waiting in line behind an earlier task of one of their users (see
    /// [`Sequencer::queued`]; shared by the dispatchers of one sequencer).
    pub fn queued(&self) -> usize {
        self.sequencer.queued()
    }

    /// Tasks that were queued behind an earlier task of one of their users when spawned and
    /// have not begun (see [`Sequencer::blocked`]).
    pub fn blocked(&self) -> usize {
        self.sequencer.blocked()
    }

    /// Tasks past their user's line: running, or spawned and not polled yet (the pipeline
    /// counts an event in process only once its task runs: a source taking messages faster
    /// than its tasks start counts these too, so its pause is not overshot).
    pub fn started(&self) -> usize {
        self.len().saturating_sub(self.queued())
    }

    /// Tasks queued or running.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The results of the tasks that finished, without waiting.
    pub fn finished(&mut self) -> Vec<Result<T, TaskLost>> {
        let mut done = Vec::new();
        while let Some(joined) = self.tasks.try_join_next() {
            done.push(joined.map_err(TaskLost));
        }
        done
    }

    /// Joins the tasks that finished, without waiting, and yields the lost ones (a panic, an
    /// abort) as it goes: no vector per call (the Kafka consumer calls it for every message).
    /// Drains every finished task once iterated to its end.
    pub fn lost(&mut self) -> impl Iterator<Item = TaskLost> + '_ {
        std::iter::from_fn(move || self.tasks.try_join_next())
            .filter_map(|joined| joined.err().map(TaskLost))
    }

    /// The next result (`None` when no task is left).
    pub async fn next(&mut self) -> Option<Result<T, TaskLost>> {
        self.tasks
            .join_next()
            .await
            .map(|joined| joined.map_err(TaskLost))
    }

    /// Waits for the tasks until `grace` has passed, calling `serve` meanwhile (a consumer
    /// must keep being polled to stay in its group), then aborts the rest. Returns how many
    /// were abandoned.
    pub async fn drain<F, Fut>(&mut self, grace: Duration, mut serve: F) -> usize
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.tasks.is_empty() {
            tokio::select! {
                _ = self.tasks.join_next() => {}
                _ = tokio::time::sleep_until(deadline) => break,
                _ = serve() => {}
            }
        }
        let abandoned = self.tasks.len();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        abandoned
    }
}

/// Logs an error of one kind at most once per interval: a dead broker or queue repeats its
/// errors every few hundred milliseconds. A log [`counting`](QuietLog::counting) a library's
/// errors also counts every one (logged or not) in `library_errors_total{library, kind}`.
pub struct QuietLog {
    interval: Duration,
    last: Mutex<HashMap<&'static str, Instant>>,
    counted: Option<(IntCounterVec, &'static str)>,
}

impl Default for QuietLog {
    fn default() -> Self {
        QuietLog::every(Duration::from_secs(10))
    }
}

impl QuietLog {
    pub fn every(interval: Duration) -> QuietLog {
        QuietLog {
            interval,
            last: Mutex::new(HashMap::new()),
            counted: None,
        }
    }

    /// A quiet log (once per 10 s per kind) of `library`'s errors that counts every one in
    /// `library_errors_total`: the long-running service shows how often a library repeats
    /// itself without logging every repeat.
    pub fn counting(metrics: &Metrics, library: &'static str) -> QuietLog {
        QuietLog {
            counted: Some((metrics.library_errors.clone(), library)),
            ..QuietLog::default()
        }
    }

    /// True at most once per interval for each `kind`; every call is counted when the log
    /// is [`counting`](QuietLog::counting).
    pub fn allow(&self, kind: &'static str) -> bool {
        if let Some((counter, library)) = &self.counted {
            counter.with_label_values(&[library, kind]).inc();
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match last.get(kind) {
            Some(at) if now.duration_since(*at) < self.interval => false,
            _ => {
                last.insert(kind, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intake_pauses_when_full_or_failing_and_resumes_at_half_once_answering() {
        let intake = Intake::new(10);
        assert_eq!(intake.update(9, false), None);
        assert_eq!(intake.update(10, false), Some(true));
        assert_eq!(intake.update(6, false), None, "above half: still paused");
        assert_eq!(intake.update(5, false), Some(false));
        assert_eq!(intake.update(0, true), Some(true));
        assert_eq!(intake.update(0, true), None);
        assert_eq!(intake.update(0, false), Some(false));
        let waiting = crate::mgmt::WAITING_MAX;
        assert_eq!(intake.update_waiting(0, 0, waiting, 0, false), Some(true));
        assert_eq!(intake.update_waiting(0, 0, waiting / 2 + 1, 0, false), None);
        assert_eq!(
            intake.update_waiting(0, 0, waiting / 2, 0, false),
            Some(false)
        );
        let processing = crate::pipeline::PROCESSING_MAX;
        assert_eq!(
            intake.update_waiting(0, processing, 0, 0, false),
            Some(true)
        );
        assert_eq!(
            intake.update_waiting(0, processing / 2 + 1, 0, 0, false),
            None
        );
        assert_eq!(
            intake.update_waiting(0, processing / 2, 0, 0, false),
            Some(false)
        );
        // Messages queued behind an earlier one of their user count with the events in
        // process; those only not polled yet count towards WAITING_MAX alone.
        let half = processing / 2;
        assert_eq!(
            intake.update_waiting(0, half, half, half, false),
            Some(true)
        );
        assert_eq!(
            intake.update_waiting(0, half / 2, half, 0, false),
            Some(false)
        );
        assert_eq!(intake.update_waiting(0, half, half * 4, 0, false), None);
        assert!(intake.stop());
        assert!(intake.is_paused());
    }

    #[test]
    fn quiet_log_allows_each_kind_once_per_interval() {
        let log = QuietLog::every(Duration::from_secs(60));
        assert!(log.allow("a"));
        assert!(!log.allow("a"));
        assert!(log.allow("b"));
    }

    #[tokio::test]
    async fn dispatch_reports_a_panicked_task_and_drains_the_rest() {
        let mut dispatch: Dispatch<u32> = Dispatch::default();
        dispatch.spawn(vec!["u".to_owned()], || async { panic!("boom") });
        dispatch.spawn(vec!["u".to_owned()], || async { 7 });
        let mut results = Vec::new();
        while let Some(r) = dispatch.next().await {
            results.push(r);
        }
        let lost = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .unwrap_or_else(|| panic!("no lost task in {results:?}"));
        // The join error is kept as the source: the chain says it panicked, and with what.
        assert!(std::error::Error::source(lost).is_some(), "{lost:?}");
        let chain = crate::exit::cause_chain(lost);
        assert!(
            chain.starts_with("message task ended abnormally: ") && chain.contains("boom"),
            "{chain}"
        );
        assert!(
            results.iter().any(|r| matches!(r, Ok(7))),
            "the panic released the user's next turn"
        );
        dispatch.spawn(Vec::new(), std::future::pending);
        let abandoned = dispatch
            .drain(Duration::from_millis(50), std::future::pending::<()>)
            .await;
        assert_eq!(abandoned, 1);
    }
}
