//! The stages every source shares: decode → select → dedup → policy, producing either a final
//! outcome or an assignment to make; and the outcome record each event ends with.
//!
//! - `processor`: the pure decisions (`Processor`, `Step`, `Assignment`);
//! - `outcome`: `Outcome`, `Report`, and the `Verdict` a delivery gets (`Rejected`);
//! - `profile`: the reads a rule's undecided conditions need (user, roles, application);
//! - `assign`: the roles written, the outcome counted;
//! - `recording`: the ledger link (what this service granted, re-created users, memberships)
//!   and the record of each outcome;
//! - `dispatch`: `Pipeline::deliver`, the one delivery path every source takes;
//! - `admission`: the bound on the events being processed at once (their deep path);
//! - here: `Pipeline` (act), its wiring, the run of one event and a lost task's outcome.

mod admission;
mod assign;
mod counters;
pub mod dispatch;
mod outcome;
mod processor;
mod profile;
mod recording;

pub use admission::PROCESSING_MAX;
pub use outcome::{Outcome, Rejected, Report, Verdict};
pub use processor::{
    Assignment, MemberAssignment, Processor, Step, FRESH_SIGNUP, RECREATION_MARGIN,
};

use std::sync::Arc;

use futures_util::FutureExt;

use crate::event::{Decoded, Selection};
use crate::ledger::link::is_user_deletion;
use crate::ledger::LedgerLink;
use crate::metrics::Metrics;
use crate::mgmt::{Applications, CallStats, MgmtClient, RoleAssigner};
use recording::{ledger_refused, refusal_reason};

/// Where events come from: the `source` label of the event metrics and the subject of the
/// source line of `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// The Kafka consumer of `run`.
    Kafka,
    /// The EventBridge → SQS consumer of `run`.
    Sqs,
    /// `ingest` in direct mode: the webhook receiver assigns in-process.
    Http,
    /// `ingest` in bridge mode: the webhook receiver produces into Kafka (no tenant needed).
    KafkaBridge,
    /// `replay` (files, stdin).
    Replay,
    /// The tenant's Logs API as the source of `run` (`[source] type = "auth0_logs"`).
    Auth0Logs,
    /// The backstop: the Logs API read behind another source (`[backstop]`).
    Backstop,
    /// The tenant's Events API as the source of `run` (`[source] type = "auth0_events"`).
    Auth0Events,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Kafka => "kafka",
            SourceKind::Sqs => "sqs",
            SourceKind::Http => "http",
            SourceKind::KafkaBridge => "kafka-bridge",
            SourceKind::Replay => "replay",
            SourceKind::Auth0Logs => "auth0_logs",
            SourceKind::Backstop => "backstop",
            SourceKind::Auth0Events => "auth0_events",
        }
    }

    /// Whether this source needs the Management API (all but the bridge).
    pub fn needs_tenant(self) -> bool {
        self != SourceKind::KafkaBridge
    }

    /// What `/readyz` says while the source is not connected.
    pub fn not_connected(self) -> &'static str {
        match self {
            SourceKind::Kafka => "not a member of the consumer group yet",
            SourceKind::Sqs => "the SQS queue has not answered yet",
            SourceKind::Http => "not listening yet",
            SourceKind::KafkaBridge => "the Kafka broker does not answer",
            SourceKind::Replay => "replay source not open yet",
            SourceKind::Auth0Logs | SourceKind::Backstop => {
                "the tenant's Logs API has not answered yet"
            }
            SourceKind::Auth0Events => "the tenant's Events API stream is not open yet",
        }
    }
}

/// How far the pipeline goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No network: profile-dependent events give `needs_profile`; assignments `would_assign`.
    Offline,
    /// Every read (token, roles, profiles), no write: assignments `would_assign`.
    DryRun,
    /// Reads and writes.
    Live,
}

/// The full per-event pipeline: the pure stages, then profile reads and assignments through the
/// Management API, one event per user at a time. Shared by every source.
pub struct Pipeline {
    processor: Processor,
    mode: Mode,
    client: Option<MgmtClient>,
    assigner: Option<RoleAssigner>,
    applications: Applications,
    metrics: Arc<Metrics>,
    source: SourceKind,
    /// The grants ledger (`[ledger]`), when configured.
    ledger: Option<LedgerLink>,
    /// The events being processed, bounded (shared with relabelled copies).
    admission: Arc<admission::Admission>,
    /// This source's event counters, kept once looked up.
    counters: counters::EventCounters,
}

/// The Management API calls a pipeline made, as a source reports them (`replay`'s summary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiCalls {
    /// Requests sent, by operation name, in the order the operations are declared.
    pub by_operation: Vec<(&'static str, u64)>,
    /// 429 answers received.
    pub rate_limited: u64,
    /// Retries after transient failures (429 included).
    pub retries: u64,
    /// Calls that wrote role assignments.
    pub writes: u64,
}

impl ApiCalls {
    pub fn total(&self) -> u64 {
        self.by_operation.iter().map(|(_, n)| n).sum()
    }
}

impl From<CallStats> for ApiCalls {
    fn from(stats: CallStats) -> Self {
        ApiCalls {
            by_operation: stats
                .calls
                .iter()
                .map(|(op, n)| (op.as_str(), *n))
                .collect(),
            rate_limited: stats.rate_limited,
            retries: stats.retries,
            writes: stats.writes(),
        }
    }
}

impl Pipeline {
    /// An offline pipeline (no client needed).
    pub fn offline(processor: Processor, metrics: Arc<Metrics>, source: SourceKind) -> Self {
        // At 0 from the start, so the first panic shows as an increase (alerts).
        metrics.task_panics.with_label_values(&[source.as_str()]);
        Pipeline {
            processor,
            mode: Mode::Offline,
            client: None,
            assigner: None,
            applications: Applications::default(),
            metrics,
            source,
            ledger: None,
            admission: Arc::new(admission::Admission::new(PROCESSING_MAX)),
            counters: counters::EventCounters::new(source),
        }
    }

    /// A pipeline that reads through `assigner`'s client, and writes unless `mode` is `DryRun`.
    pub fn online(
        processor: Processor,
        assigner: RoleAssigner,
        client: MgmtClient,
        mode: Mode,
        source: SourceKind,
    ) -> Self {
        let metrics = Arc::clone(client.metrics());
        metrics.task_panics.with_label_values(&[source.as_str()]);
        Pipeline {
            processor,
            mode,
            client: Some(client),
            assigner: Some(assigner),
            applications: Applications::default(),
            metrics,
            source,
            ledger: None,
            admission: Arc::new(admission::Admission::new(PROCESSING_MAX)),
            counters: counters::EventCounters::new(source),
        }
    }

    /// The same pipeline asking and writing the grants ledger: a role it shows this service
    /// granted is never granted again; grants are recorded before the verdict.
    pub fn with_ledger(mut self, ledger: LedgerLink) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// The grants ledger, when configured.
    pub fn ledger(&self) -> Option<&LedgerLink> {
        self.ledger.as_ref()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The same pipeline (policy, dedup, client, assigner: work done by one is known to the
    /// other) labelled as another source: the backstop beside the stream's source.
    pub fn relabelled(&self, source: SourceKind) -> Pipeline {
        self.metrics
            .task_panics
            .with_label_values(&[source.as_str()]);
        Pipeline {
            processor: self.processor.clone(),
            mode: self.mode,
            client: self.client.clone(),
            assigner: self.assigner.clone(),
            applications: self.applications.clone(),
            metrics: Arc::clone(&self.metrics),
            source,
            ledger: self.ledger.clone(),
            admission: Arc::clone(&self.admission),
            counters: counters::EventCounters::new(source),
        }
    }

    pub fn client(&self) -> Option<&MgmtClient> {
        self.client.as_ref()
    }

    /// The Management API calls made so far (`None` offline), for a source's summary.
    pub fn api_calls(&self) -> Option<ApiCalls> {
        self.client
            .as_ref()
            .map(|client| ApiCalls::from(client.stats()))
    }

    /// Events waiting now: those being processed (for a profile or role read, the ledger, a
    /// role write, their grants' commit, or for room among the [`PROCESSING_MAX`] processed at
    /// once), and role assignments waiting for the tenant (shared with other users of the
    /// assigner). Sources pause their intake at [`PROCESSING_MAX`].
    pub fn waiting(&self) -> usize {
        self.admission
            .in_process()
            .max(self.assigner.as_ref().map_or(0, RoleAssigner::waiting))
    }

    /// Events holding their deep path now (at most [`PROCESSING_MAX`]).
    pub fn processing(&self) -> usize {
        self.admission.holding(PROCESSING_MAX)
    }

    /// Whether Management API calls are failing now, or the ledger is (sources pause intake
    /// meanwhile).
    pub fn is_tenant_failing(&self) -> bool {
        self.client.as_ref().is_some_and(MgmtClient::is_failing)
            || self
                .ledger
                .as_ref()
                .is_some_and(|l| l.ledger().fault().is_failing())
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// Takes one decoded item to its final outcome. Transient Management API failures are
    /// waited out inside; the returned report is final. Callers keep each user's events in
    /// order (the sources' `Sequencer`). A panic ends the event `failed` at once: sources
    /// deliver through [`Pipeline::deliver`], which retries a lost task instead.
    pub async fn process(&self, item: Decoded) -> Report {
        match self.attempt(item).await {
            Ok(report) => report,
            Err(lost) => self.give_up(lost),
        }
    }

    /// One attempt at an item: its recorded report, or the task's loss (a panic, a bug: the
    /// event is not done, no dedup mark) with the `failed` report it ends with if given up.
    pub(crate) async fn attempt(&self, item: Decoded) -> Result<Report, LostTask> {
        let started = tokio::time::Instant::now();
        let input = match &item {
            Ok(event) if event.is_test() => "test",
            Ok(event) if event.is_cloud_event() => "event_stream",
            Ok(_) => "log",
            Err(_) => "invalid",
        };
        self.counters.received(&self.metrics.events_received, input);
        self.metrics.inflight_events.inc();
        let email_domain = item
            .as_ref()
            .ok()
            .and_then(|e| e.email())
            .and_then(crate::event::email_domain);
        // When the event happened, for its age once processed (read now: no copy of the date
        // kept beside the event).
        let happened = item
            .as_ref()
            .ok()
            .and_then(|e| e.date.as_deref())
            .and_then(recording::happened_at);
        let user = item.as_ref().ok().and_then(|e| e.user()).map(str::to_owned);
        let log_id = item.as_ref().ok().and_then(|e| e.log_id.clone());
        let trigger = item.as_ref().ok().and_then(|e| match e.selection() {
            Selection::Eligible(trigger) => Some(trigger),
            Selection::NotEligible(_) => None,
        });
        // Boxed: a task in flight holds this small future until it runs; the event's whole
        // path (several KB of state) is allocated only while it is being processed, by at
        // most `PROCESSING_MAX` events at once (the others wait for room here, counted).
        // The wait for room boxed too: a message in flight holds only a pointer to it.
        let _admitted = Box::pin(self.admission.enter()).await;
        // Boxed in a statement of its own: a temporary in the `match` below would live until
        // its end, across the await, and the compiler kept room for the whole unboxed run
        // (3.6 KB) in this future as well (4.7 KB, moved on every call).
        let run = Box::pin(self.run(item));
        match std::panic::AssertUnwindSafe(run).catch_unwind().await {
            Ok(report) => {
                self.record(&report, started, happened, email_domain.as_deref());
                Ok(report)
            }
            Err(panic) => {
                self.metrics.inflight_events.dec();
                let what = panic_message(panic.as_ref());
                self.metrics
                    .task_panics
                    .with_label_values(&[self.source.as_str()])
                    .inc();
                tracing::error!(log_id = log_id.as_deref().unwrap_or("-"), panic = %what, "processing an event panicked");
                Err(LostTask {
                    report: Report {
                        log_id,
                        user_id: user,
                        trigger,
                        error: Some(format!("internal error (panic): {what}")),
                        ..Report::with_outcome(Outcome::Failed)
                    },
                    started,
                })
            }
        }
    }

    /// Ends a lost event `failed`: recorded (metrics, log) like any outcome.
    pub(crate) fn give_up(&self, lost: LostTask) -> Report {
        // `record` counts the event out of the in-flight gauge again.
        self.metrics.inflight_events.inc();
        self.record(&lost.report, lost.started, None, None);
        lost.report
    }

    /// [`Pipeline::decide_and_act`], with the ledger around it: a deleted user is forgotten
    /// first, an event failed for good is recorded after.
    async fn run(&self, item: Decoded) -> Report {
        #[cfg(debug_assertions)]
        test_panic::on(&item);
        let Some(link) = self.ledger.as_ref().filter(|_| self.mode == Mode::Live) else {
            return self.decide_and_act(item).await;
        };
        if let Some(event) = item.as_ref().ok().filter(|e| is_user_deletion(e)) {
            // Once per deletion (a redelivery is skipped); only what came before it.
            let redelivered = event
                .log_id
                .as_deref()
                .is_some_and(|id| self.processor.dedup().log_seen(id));
            if let (Some(user), false) = (event.user(), redelivered) {
                let deleted_at = event.date.as_deref().and_then(crate::event::unix_millis);
                if let Err(refused) =
                    Box::pin(link.forget_user(&self.metrics, user, deleted_at)).await
                {
                    let report = Report::for_event(event, None, Outcome::Failed);
                    return ledger_refused(report, &refused);
                }
            }
        }
        if let Ok(event) = item.as_ref() {
            if let Err(refused) = Box::pin(self.follow_membership(link, event)).await {
                let report = Report::for_event(event, None, Outcome::Failed);
                return ledger_refused(report, &refused);
            }
        }
        let report = self.decide_and_act(item).await;
        if report.outcome == Outcome::Failed {
            if let Some(user) = &report.user_id {
                // Refused: logged by the link; the event is failed already.
                let _ = Box::pin(link.record_failure(
                    &self.metrics,
                    user,
                    report.log_id.as_deref().unwrap_or("-"),
                    report.error.as_deref().unwrap_or("-"),
                ))
                .await;
            }
        }
        report
    }

    async fn decide_and_act(&self, item: Decoded) -> Report {
        let seen = match self.seen_in_organization(&item).await {
            Some(Err(refused)) => {
                if let Ok(event) = &item {
                    let report = Report::for_event(event, None, Outcome::Failed);
                    return ledger_refused(report, &refused);
                }
                None
            }
            Some(Ok(seen)) => Some(seen),
            None => None,
        };
        let membership = match (seen, &item) {
            (Some(false), Ok(event)) => event
                .user()
                .zip(event.organization())
                .map(|(u, o)| (u.to_owned(), o.to_owned())),
            _ => None,
        };
        let report = self.decide_and_act_seen(item, seen).await;
        // A later login through an organization judged for a membership the ledger had not
        // seen: that decision is kept (one profile read per membership and policy, not one per
        // login). Member roles it gave are in the ledger anyway; when it gave none, the next
        // logins are not judged again until `organization.member.deleted`, a restart with another
        // policy, or a day passes.
        if let (Some((user, organization)), Some(link)) = (membership, &self.ledger) {
            if !matches!(report.outcome, Outcome::Failed | Outcome::Invalid) {
                link.mark_quiet_membership(&user, &organization);
            }
        }
        report
    }

    async fn decide_and_act_seen(&self, item: Decoded, seen: Option<bool>) -> Report {
        let step = match self.processor.start_seen(item, seen) {
            Step::NeedsProfile {
                event,
                trigger,
                undecided,
            } => match (&self.client, self.mode) {
                (Some(client), Mode::DryRun | Mode::Live) => {
                    match Box::pin(self.read_profile(client, &event, &undecided)).await {
                        Ok(profile) => self
                            .processor
                            .decide_with_profile(&event, trigger, &profile),
                        Err(err) => {
                            let mut report =
                                Report::for_event(&event, Some(trigger), Outcome::Failed);
                            report.error = Some(err.to_string());
                            // Not remembered: the user may exist by the next delivery.
                            return report;
                        }
                    }
                }
                _ => {
                    return self
                        .processor
                        .needs_profile_report(&event, trigger, &undecided)
                }
            },
            step => step,
        };
        match step {
            Step::Done(report) => report,
            Step::NeedsProfile {
                event,
                trigger,
                undecided,
            } => self
                .processor
                .needs_profile_report(&event, trigger, &undecided),
            Step::Assign(assignment) if self.ledger.is_some() && self.mode != Mode::Offline => {
                let assignment = match Box::pin(self.without_granted(assignment)).await {
                    Ok(assignment) => assignment,
                    Err((assignment, refused)) => {
                        return self.processor.finish(
                            assignment,
                            Outcome::Failed,
                            Some(refusal_reason(&refused)),
                        )
                    }
                };
                if assignment.missing.is_empty() && assignment.organization.is_none() {
                    return self
                        .processor
                        .finish(assignment, Outcome::AlreadyDone, None);
                }
                Box::pin(self.assign(assignment)).await
            }
            Step::Assign(assignment) => Box::pin(self.assign(assignment)).await,
        }
    }
}

/// What a caught panic said.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// An event whose task was lost (it panicked): the `failed` report it ends with when given up.
#[derive(Debug)]
pub struct LostTask {
    pub report: Report,
    started: tokio::time::Instant,
}

/// Test-only fault injection, compiled into debug builds only (release builds, the ones
/// deployed, have none): the binary's edge reads `AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID` (a
/// `log_id` whose processing panics, so the integration tests can see a lost task handled) and
/// `AUTH0_DEFAULT_ROLES_TEST_PANIC_TIMES` (only the first N times in the process: a task lost
/// once and then run again) and hands them to [`arm_test_panic`].
#[cfg(debug_assertions)]
pub use test_panic::arm as arm_test_panic;

#[cfg(debug_assertions)]
mod test_panic {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    use crate::event::Decoded;

    /// The `log_id` whose processing panics, and how many times (every time when `None`).
    static ARMED: OnceLock<(String, Option<u64>)> = OnceLock::new();
    /// Panics injected so far in this process.
    static PANICKED: AtomicU64 = AtomicU64::new(0);

    /// Makes the processing of `log_id` panic, every time or the first `times` times in the
    /// process. The first call wins.
    pub fn arm(log_id: String, times: Option<u64>) {
        let _ = ARMED.set((log_id, times));
    }

    pub(super) fn on(item: &Decoded) {
        let Some((armed, times)) = ARMED.get() else {
            return;
        };
        let Some(id) = item.as_ref().ok().and_then(|e| e.log_id.as_deref()) else {
            return;
        };
        if id != armed {
            return;
        }
        if times.is_none_or(|times| PANICKED.fetch_add(1, Ordering::SeqCst) < times) {
            panic!("test-only panic on log_id {id} (AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::{Dedup, DedupSettings};
    use crate::policy::{Policy, PolicyConfig};

    #[test]
    fn a_tenant_log_user_deletion_drops_the_users_earlier_work_like_user_deleted_does() {
        let config: PolicyConfig = match toml::from_str(
            "events = [\"signup\"]\n[[rules]]\nname = \"everyone\"\nassign = [\"Viewer\"]\n",
        ) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        let policy = match Policy::from_config(&config) {
            Ok(policy) => policy,
            Err(err) => panic!("{err}"),
        };
        let processor = Processor::new(policy, Dedup::new(DedupSettings::default()));
        let deletion = br#"{"log_id":"900200000000000000000000000000000000000000000000000001","data":{"type":"sdu","date":"2026-12-01T10:00:00.000Z","user_id":"auth0|gone","description":"Deleted user"}}"#;
        for item in crate::event::decode(deletion) {
            match processor.start(item) {
                Step::Done(report) => assert_eq!(report.outcome, Outcome::NotEligible),
                other => panic!("{other:?}"),
            }
        }
        assert!(processor
            .dedup()
            .user_deleted("auth0|gone", Some("2026-12-01T09:59:00Z")));
        assert!(!processor
            .dedup()
            .user_deleted("auth0|other", Some("2026-12-01T09:59:00Z")));
    }
}
/// What an event waiting for its turn costs: a source holds one `deliver` future per
/// message in flight (up to `max_inflight` of them), so its size is the service's memory per
/// message in flight. The deep path (profile reads, the ledger, role writes) is boxed where it
/// starts, so only the events taking it pay for it, and only while they run.
#[cfg(test)]
mod in_flight_size {
    use super::*;
    use crate::dedup::{Dedup, DedupSettings};
    use crate::policy::{Policy, PolicyConfig};

    #[test]
    fn a_message_in_flight_holds_a_small_future() {
        let config: PolicyConfig = match toml::from_str(
            "events = [\"signup\"]\n[[rules]]\nname = \"everyone\"\nassign = [\"Viewer\"]\n",
        ) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        let policy = match Policy::from_config(&config) {
            Ok(policy) => policy,
            Err(err) => panic!("{err}"),
        };
        let metrics = match Metrics::new() {
            Ok(metrics) => Arc::new(metrics),
            Err(err) => panic!("{err}"),
        };
        let processor = Processor::new(policy, Dedup::new(DedupSettings::default()));
        let pipeline = Pipeline::offline(processor, metrics, SourceKind::Replay);
        let message = std::mem::size_of_val(&pipeline.deliver(
            Vec::new(),
            None::<fn() -> Vec<Decoded>>,
            |_: Report| {},
        ));
        let event = std::mem::size_of_val(
            &pipeline.process(Err(crate::event::DecodeError::new("x", None))),
        );
        // 9,136 (`process_all`, the one before `deliver`) and 8,568 bytes (debug build) before
        // the deep path was boxed.
        assert!(message <= 2048, "deliver future: {message} bytes");
        assert!(event <= 2048, "process future: {event} bytes");
    }
}
