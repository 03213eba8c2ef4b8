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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use prometheus::IntCounterVec;
use tokio::task::JoinSet;

use crate::event::Decoded;
use crate::metrics::Metrics;
use crate::pipeline::panic_message;
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
pub struct TaskLost(#[source] pub LostCause);

/// What ended a task without its result.
#[derive(Debug, thiserror::Error)]
pub enum LostCause {
    /// Its runtime task panicked or was aborted.
    #[error(transparent)]
    Joined(tokio::task::JoinError),
    /// It panicked at its first poll, run at once by [`Dispatch::spawn`] (no runtime task).
    #[error("panicked at its first poll with message {0:?}")]
    Panicked(String),
}

impl From<tokio::task::JoinError> for TaskLost {
    fn from(joined: tokio::task::JoinError) -> Self {
        TaskLost(LostCause::Joined(joined))
    }
}

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
///
/// Invariants (the model test `dispatch_follows_its_model` checks them):
/// - every piece of work handed to [`Dispatch::spawn`] yields exactly one result (its output,
///   or [`TaskLost`] when it panicked or was aborted), through [`Dispatch::next`],
///   [`Dispatch::finished`] or [`Dispatch::lost`], unless [`Dispatch::drain`] abandons it;
/// - work of one user begins only after every earlier work of that user ended;
/// - work counts in [`Dispatch::len`] from `spawn` until its result is taken.
pub struct Dispatch<T> {
    sequencer: Arc<Sequencer>,
    tasks: JoinSet<T>,
    /// Results of work that ended at its first poll, run at once by `spawn`, not taken yet.
    ended_at_once: VecDeque<Result<T, TaskLost>>,
}

impl<T: Send + 'static> Default for Dispatch<T> {
    fn default() -> Self {
        Dispatch::with_sequencer(Arc::new(Sequencer::default()))
    }
}

impl<T: Send + 'static> Dispatch<T> {
    /// A dispatcher whose order is shared with others (SQS receive loops share one sequencer).
    pub fn with_sequencer(sequencer: Arc<Sequencer>) -> Self {
        Dispatch {
            sequencer,
            tasks: JoinSet::new(),
            ended_at_once: VecDeque::new(),
        }
    }

    /// Runs the future `work` makes once every earlier task of the same `users` finished.
    /// Must be called in arrival order: the place in line is taken here, not when the task
    /// starts. The future is made and boxed only when the turn comes, so a task waiting in
    /// line holds only what `work` captures (its message), not the state of a run.
    ///
    /// When no earlier work of its users is unfinished, the work is polled once here, at
    /// once: work that needs nothing it would wait for (an event no rule acts on: most of a
    /// log stream) ends there, with no runtime task, no wake-up of a worker thread and no
    /// move of its future into one. Work still pending after that poll goes on as a task (its
    /// next poll registers the task's waker: the first one had none).
    pub fn spawn<W, F>(&mut self, users: Vec<String>, work: W)
    where
        W: FnOnce() -> F + Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let mut turn = self.sequencer.enter(users);
        if !turn.is_free() {
            self.tasks.spawn(async move {
                turn.wait().await;
                let out = Box::pin(work()).await;
                drop(turn);
                out
            });
            return;
        }
        turn.begin();
        let mut run = Box::pin(work());
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        // Unconstrained: the caller's cooperative budget (a source's loop taking many
        // messages in one poll) must not make this first poll return pending by itself.
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::pin::Pin::new(&mut tokio::task::unconstrained(run.as_mut())).poll(&mut context)
        }));
        match first {
            Ok(std::task::Poll::Ready(out)) => {
                drop(run);
                drop(turn);
                self.ended_at_once.push_back(Ok(out));
            }
            Ok(std::task::Poll::Pending) => {
                self.tasks.spawn(async move {
                    let out = run.await;
                    drop(turn);
                    out
                });
            }
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                // A future that panicked may panic again in its drop: caught too.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(run)));
                drop(turn);
                self.ended_at_once
                    .push_back(Err(TaskLost(LostCause::Panicked(what))));
            }
        }
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

    /// Work queued, running, or ended with its result not taken yet.
    pub fn len(&self) -> usize {
        self.tasks.len() + self.ended_at_once.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.ended_at_once.is_empty()
    }

    /// The next result of work that ended, without waiting.
    fn try_next(&mut self) -> Option<Result<T, TaskLost>> {
        self.ended_at_once.pop_front().or_else(|| {
            self.tasks
                .try_join_next()
                .map(|joined| joined.map_err(TaskLost::from))
        })
    }

    /// The results of the work that ended, without waiting.
    pub fn finished(&mut self) -> Vec<Result<T, TaskLost>> {
        std::iter::from_fn(|| self.try_next()).collect()
    }

    /// Takes the results of the work that ended, without waiting, and yields the lost ones (a
    /// panic, an abort) as it goes: no vector per call (the Kafka consumer calls it for every
    /// message). Takes every result once iterated to its end.
    pub fn lost(&mut self) -> impl Iterator<Item = TaskLost> + '_ {
        std::iter::from_fn(move || self.try_next()).filter_map(Result::err)
    }

    /// The next result (`None` when no work is left).
    pub async fn next(&mut self) -> Option<Result<T, TaskLost>> {
        if let Some(ended) = self.ended_at_once.pop_front() {
            return Some(ended);
        }
        self.tasks
            .join_next()
            .await
            .map(|joined| joined.map_err(TaskLost::from))
    }

    /// Lets the work still running go on unwatched, its results dropped (the webhook answers
    /// 503 at its deadline while the work finishes: Auth0's retry is deduplicated).
    pub fn detach(&mut self) {
        self.tasks.detach_all();
        self.ended_at_once.clear();
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
        self.ended_at_once.clear();
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

    /// A work of the model: what it does when run.
    #[derive(Debug, Clone, Copy)]
    enum Work {
        /// Ends at its first poll.
        AtOnce,
        /// Waits until the test releases it (by its id).
        Held,
        /// Panics at its first poll.
        Panics,
        /// Yields to the runtime once, then ends.
        Yields,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Spawn {
            user: u8,
            work: Work,
        },
        /// Releases the `n`-th held work not released yet (modulo their count).
        Release(usize),
        /// Lets the runtime run the tasks for a moment.
        Run,
        /// Takes the results that ended.
        Take,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u8..3, prop_oneof![
                3 => Just(Work::AtOnce),
                2 => Just(Work::Held),
                1 => Just(Work::Panics),
                1 => Just(Work::Yields),
            ]).prop_map(|(user, work)| Op::Spawn { user, work }),
            2 => (0usize..8).prop_map(Op::Release),
            1 => Just(Op::Run),
            1 => Just(Op::Take),
        ]
    }

    /// What the model saw happen to a work: it began, it ended.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Seen {
        Began(usize),
        Ended(usize),
    }

    /// Runs `ops` against a real `Dispatch` and checks its invariants against the plain model
    /// (per user, the works in spawn order): every work yields exactly one result (its id, or
    /// lost when it panicked); a user's work begins only after the user's previous work ended
    /// and in spawn order; `len` is the works spawned minus the results taken.
    fn check_dispatch(ops: &[Op]) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
            let mut dispatch: Dispatch<usize> = Dispatch::default();
            let mut held: Vec<(usize, tokio::sync::oneshot::Sender<()>)> = Vec::new();
            // The model: each work's user and whether it panics.
            let mut works: Vec<(u8, Work)> = Vec::new();
            let mut results: Vec<Result<usize, String>> = Vec::new();
            let take = |dispatch: &mut Dispatch<usize>,
                        results: &mut Vec<Result<usize, String>>| {
                for r in dispatch.finished() {
                    results.push(r.map_err(|lost| crate::exit::cause_chain(&lost)));
                }
            };
            for op in ops {
                match *op {
                    Op::Spawn { user, work } => {
                        let id = works.len();
                        works.push((user, work));
                        let seen = Arc::clone(&seen);
                        let release = if let Work::Held = work {
                            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                            held.push((id, tx));
                            Some(rx)
                        } else {
                            None
                        };
                        dispatch.spawn(vec![format!("user-{user}")], move || async move {
                            seen.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(Seen::Began(id));
                            match work {
                                Work::Panics => panic!("work {id} panics"),
                                Work::Yields => tokio::task::yield_now().await,
                                Work::Held => {
                                    if let Some(rx) = release {
                                        let _ = rx.await;
                                    }
                                }
                                Work::AtOnce => {}
                            }
                            seen.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(Seen::Ended(id));
                            id
                        });
                    }
                    Op::Release(n) if !held.is_empty() => {
                        let (_, tx) = held.remove(n % held.len());
                        let _ = tx.send(());
                    }
                    Op::Release(_) => {}
                    Op::Run => {
                        for _ in 0..4 {
                            tokio::task::yield_now().await;
                        }
                    }
                    Op::Take => take(&mut dispatch, &mut results),
                }
                if dispatch.len() != works.len() - results.len() {
                    return Err(format!(
                        "len {} after {op:?}: {} spawned, {} taken",
                        dispatch.len(),
                        works.len(),
                        results.len()
                    ));
                }
            }
            for (_, tx) in held.drain(..) {
                let _ = tx.send(());
            }
            while let Some(r) = dispatch.next().await {
                results.push(r.map_err(|lost| crate::exit::cause_chain(&lost)));
            }
            // Exactly one result per work: its id, or lost for the ones that panic.
            let mut ended: Vec<usize> = results
                .iter()
                .filter_map(|r| r.as_ref().ok().copied())
                .collect();
            ended.sort_unstable();
            let want: Vec<usize> = (0..works.len())
                .filter(|id| !matches!(works[*id].1, Work::Panics))
                .collect();
            if ended != want {
                return Err(format!("results {ended:?}, want {want:?}"));
            }
            let lost = results.iter().filter(|r| r.is_err()).count();
            if lost != works.len() - want.len() {
                return Err(format!("{lost} lost, want {}", works.len() - want.len()));
            }
            if let Some(Err(chain)) = results.iter().find(|r| r.is_err()) {
                if !chain.starts_with("message task ended abnormally: ")
                    || !chain.contains("panics")
                {
                    return Err(format!("lost work said {chain:?}"));
                }
            }
            // Per user: begun in spawn order, each after the previous one's end (a panic ends
            // a work too: its turn is released).
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for user in 0..3u8 {
                let of_user: Vec<usize> =
                    (0..works.len()).filter(|id| works[*id].0 == user).collect();
                let began: Vec<usize> = seen
                    .iter()
                    .filter_map(|s| match s {
                        Seen::Began(id) if works[*id].0 == user => Some(*id),
                        _ => None,
                    })
                    .collect();
                if began != of_user {
                    return Err(format!("user {user} began {began:?}, spawned {of_user:?}"));
                }
                for pair in of_user.windows(2) {
                    let (earlier, later) = (pair[0], pair[1]);
                    let begin_later = seen.iter().position(|s| *s == Seen::Began(later));
                    let end_earlier = seen.iter().position(|s| *s == Seen::Ended(earlier));
                    let panicked = matches!(works[earlier].1, Work::Panics);
                    let ok = match (end_earlier, begin_later) {
                        (Some(e), Some(b)) => e < b,
                        (None, Some(_)) => panicked,
                        _ => false,
                    };
                    if !ok {
                        return Err(format!(
                            "user {user}: work {later} began before work {earlier} ended: {seen:?}"
                        ));
                    }
                }
            }
            Ok(())
        })
    }

    proptest::proptest! {
        #[test]
        fn dispatch_follows_its_model(ops in proptest::collection::vec(op(), 1..40)) {
            // The panics of `Work::Panics` are expected: keep their messages off the output.
            let result = check_dispatch(&ops);
            proptest::prop_assert!(result.is_ok(), "{:?}", result);
        }
    }

    #[tokio::test]
    async fn detached_work_goes_on_to_its_end() {
        let mut dispatch: Dispatch<()> = Dispatch::default();
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let (ended, ended_rx) = tokio::sync::oneshot::channel::<()>();
        dispatch.spawn(vec!["u".to_owned()], || async move {
            let _ = held.await;
            let _ = ended.send(());
        });
        dispatch.detach();
        assert!(dispatch.is_empty());
        drop(dispatch);
        let _ = release.send(());
        assert!(ended_rx.await.is_ok(), "the detached work ran to its end");
    }

    /// The outputs of the work that ended, without waiting (`None` for a lost one).
    fn ended<T: Send + 'static>(dispatch: &mut Dispatch<T>) -> Vec<Option<T>> {
        dispatch.finished().into_iter().map(Result::ok).collect()
    }

    #[tokio::test]
    async fn work_that_needs_no_wait_ends_in_spawn_and_later_work_of_its_user_waits_for_held_work()
    {
        let mut dispatch: Dispatch<&'static str> = Dispatch::default();
        dispatch.spawn(vec!["a".to_owned()], || async { "at once" });
        // Ended in `spawn` itself: its result is there before the runtime ran anything.
        assert_eq!(ended(&mut dispatch), vec![Some("at once")]);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        dispatch.spawn(vec!["a".to_owned()], || async move {
            let _ = rx.await;
            "held"
        });
        dispatch.spawn(vec!["a".to_owned()], || async { "after held" });
        dispatch.spawn(vec!["b".to_owned()], || async { "other user" });
        // The other user's work is not behind the held one.
        assert_eq!(ended(&mut dispatch), vec![Some("other user")]);
        tokio::task::yield_now().await;
        assert!(
            dispatch.finished().is_empty(),
            "the user's later work waits for the held one"
        );
        assert_eq!(dispatch.len(), 2);
        let _ = tx.send(());
        let mut rest = Vec::new();
        while let Some(r) = dispatch.next().await {
            rest.extend(r.ok());
        }
        assert_eq!(rest, vec!["held", "after held"]);
    }
}
