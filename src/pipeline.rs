//! The stages every source shares: decode → select → dedup → policy, producing either a final
//! outcome or an assignment to make; and the outcome record each event ends with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::dedup::Dedup;
use crate::event::{Decoded, LogEvent, Selection, Trigger};
use crate::metrics::Metrics;
use crate::mgmt::{AssignOutcome, MgmtClient, RoleAssigner};
use crate::policy::{Evaluation, Policy, Profile, Undecided};

/// The one outcome each event ends in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Roles were assigned through the Management API.
    Assigned,
    /// Roles would be assigned (`--dry-run`, `--offline`).
    WouldAssign,
    /// Duplicate `log_id`, or the user already got these roles.
    AlreadyDone,
    /// Eligible event, but no rule matched.
    NoRule,
    /// Not a trigger (other type, later or SSO login, or a trigger the policy does not use).
    NotEligible,
    /// A rule needs the user's profile, which `--offline` cannot read.
    NeedsProfile,
    /// Could not be decoded, or an eligible event without a user id.
    Invalid,
    /// A permanent Management API error (404 user, unknown role, 400, 403).
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Assigned,
        Outcome::WouldAssign,
        Outcome::AlreadyDone,
        Outcome::NoRule,
        Outcome::NotEligible,
        Outcome::NeedsProfile,
        Outcome::Invalid,
        Outcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Assigned => "assigned",
            Outcome::WouldAssign => "would_assign",
            Outcome::AlreadyDone => "already_done",
            Outcome::NoRule => "no_rule",
            Outcome::NotEligible => "not_eligible",
            Outcome::NeedsProfile => "needs_profile",
            Outcome::Invalid => "invalid",
            Outcome::Failed => "failed",
        }
    }
}

/// What happened to one event: the audit record printed by `replay --output jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub log_id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub user_id: Option<String>,
    pub trigger: Option<Trigger>,
    pub outcome: Outcome,
    pub roles: Vec<String>,
    pub rules: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    fn for_event(event: &LogEvent, trigger: Option<Trigger>, outcome: Outcome) -> Report {
        Report {
            log_id: event.log_id.clone(),
            event_type: Some(event.event_type.clone()),
            user_id: event.user().map(str::to_owned),
            trigger,
            outcome,
            roles: Vec::new(),
            rules: Vec::new(),
            error: None,
        }
    }
}

/// The next thing to do for an event.
#[derive(Debug)]
pub enum Step {
    /// The event reached its outcome.
    Done(Report),
    /// The policy needs the user's profile; evaluate again with `Processor::decide_with_profile`.
    NeedsProfile {
        event: Box<LogEvent>,
        trigger: Trigger,
        undecided: Vec<Undecided>,
    },
    /// Assign `Assignment::missing` to the user, then call `Processor::finish`.
    Assign(Assignment),
}

/// Roles to give one user, and the record to complete once they are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub user_id: String,
    /// Roles the policy grants that this process has not given the user yet.
    pub missing: Vec<String>,
    /// The record of the event, with every granted role and the matching rules.
    pub report: Report,
}

/// Runs the pure stages with a policy and a dedup cache shared by all callers.
#[derive(Clone)]
pub struct Processor {
    policy: Policy,
    dedup: Dedup,
}

impl Processor {
    pub fn new(policy: Policy, dedup: Dedup) -> Self {
        Processor { policy, dedup }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    /// Decode result → select → dedup on `log_id` → policy (without a profile).
    pub fn start(&self, item: Decoded) -> Step {
        let event = match item {
            Ok(event) => event,
            Err(err) => {
                return Step::Done(Report {
                    log_id: err.log_id,
                    event_type: None,
                    user_id: None,
                    trigger: None,
                    outcome: Outcome::Invalid,
                    roles: Vec::new(),
                    rules: Vec::new(),
                    error: Some(err.reason),
                })
            }
        };
        let trigger = match event.selection() {
            Selection::Eligible(trigger) if self.policy.handles(trigger) => trigger,
            Selection::Eligible(_) | Selection::NotEligible(_) => {
                return Step::Done(Report::for_event(&event, None, Outcome::NotEligible))
            }
        };
        if event.user().is_none() {
            let mut report = Report::for_event(&event, Some(trigger), Outcome::Invalid);
            report.error = Some("eligible event without a user_id".to_owned());
            return Step::Done(report);
        }
        if let Some(log_id) = &event.log_id {
            if self.dedup.log_seen(log_id) {
                return Step::Done(Report::for_event(
                    &event,
                    Some(trigger),
                    Outcome::AlreadyDone,
                ));
            }
        }
        match self.policy.evaluate(trigger, &event, None) {
            Evaluation::NeedsProfile(undecided) => Step::NeedsProfile {
                event: Box::new(event),
                trigger,
                undecided,
            },
            evaluation => self.after_policy(&event, trigger, evaluation),
        }
    }

    /// Evaluates again with the user's profile (after `Step::NeedsProfile`).
    pub fn decide_with_profile(
        &self,
        event: &LogEvent,
        trigger: Trigger,
        profile: &Profile,
    ) -> Step {
        let evaluation = self.policy.evaluate(trigger, event, Some(profile));
        self.after_policy(event, trigger, evaluation)
    }

    /// The record for an event whose profile could not be read (`--offline`).
    pub fn needs_profile_report(
        &self,
        event: &LogEvent,
        trigger: Trigger,
        undecided: &[Undecided],
    ) -> Report {
        let mut report = Report::for_event(event, Some(trigger), Outcome::NeedsProfile);
        let mut rules: Vec<String> = undecided.iter().map(|u| u.rule.clone()).collect();
        rules.dedup();
        report.rules = rules;
        let keys: Vec<String> = undecided
            .iter()
            .map(|u| format!("{}.{}", u.rule, u.key))
            .collect();
        report.error = Some(format!("needs the user's profile for {}", keys.join(", ")));
        report
    }

    fn after_policy(&self, event: &LogEvent, trigger: Trigger, evaluation: Evaluation) -> Step {
        let decision = match evaluation {
            Evaluation::Assign(decision) => decision,
            Evaluation::NoRule => {
                let report = Report::for_event(event, Some(trigger), Outcome::NoRule);
                self.mark_done(&report);
                return Step::Done(report);
            }
            Evaluation::NeedsProfile(undecided) => {
                return Step::Done(self.needs_profile_report(event, trigger, &undecided))
            }
        };
        let user_id = event.user().unwrap_or_default().to_owned();
        let missing = self.dedup.missing_roles(&user_id, &decision.roles);
        let mut report = Report::for_event(event, Some(trigger), Outcome::AlreadyDone);
        report.roles = decision.roles;
        report.rules = decision.rules;
        if missing.is_empty() {
            self.mark_done(&report);
            return Step::Done(report);
        }
        Step::Assign(Assignment {
            user_id,
            missing,
            report,
        })
    }

    /// Completes an assignment with its outcome (`Assigned`, `WouldAssign` or `Failed`).
    /// Successful ones are remembered so the user's next trigger costs no call.
    pub fn finish(
        &self,
        assignment: Assignment,
        outcome: Outcome,
        error: Option<String>,
    ) -> Report {
        let mut report = assignment.report;
        report.outcome = outcome;
        report.error = error;
        if matches!(outcome, Outcome::Assigned | Outcome::WouldAssign) {
            self.dedup
                .mark_assigned(&assignment.user_id, &assignment.missing);
        }
        self.mark_done(&report);
        report
    }

    /// Records a final outcome's `log_id` so a redelivery is `already_done`.
    pub fn mark_done(&self, report: &Report) {
        if let Some(log_id) = &report.log_id {
            self.dedup.mark_log_done(log_id);
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
    locks: UserLocks,
    metrics: Arc<Metrics>,
    source: &'static str,
}

impl Pipeline {
    /// An offline pipeline (no client needed).
    pub fn offline(processor: Processor, metrics: Arc<Metrics>, source: &'static str) -> Self {
        Pipeline {
            processor,
            mode: Mode::Offline,
            client: None,
            assigner: None,
            locks: UserLocks::default(),
            metrics,
            source,
        }
    }

    /// Connects to the Management API (a token, every policy role resolved) and builds the
    /// pipeline `run`, `ingest`, `replay` and `demo` use. `health`, when given, learns that the
    /// token and the roles are there.
    pub async fn connect(
        config: &crate::config::Config,
        auth0: &crate::config::Auth0Settings,
        secret: crate::config::Secret,
        metrics: Arc<Metrics>,
        mode: Mode,
        source: &'static str,
        health: Option<&crate::server::Health>,
    ) -> Result<Pipeline, crate::mgmt::MgmtError> {
        let (client, assigner) =
            crate::mgmt::connect(auth0, secret, config.policy.role_names(), metrics).await?;
        if let Some(health) = health {
            use std::sync::atomic::Ordering;
            health.token.store(true, Ordering::SeqCst);
            health.roles.store(true, Ordering::SeqCst);
        }
        tracing::info!(
            tenant = %auth0.domain,
            roles = ?assigner.directory().all().keys().collect::<Vec<_>>(),
            "Management API ready"
        );
        let processor = Processor::new(config.policy.clone(), Dedup::new(config.dedup));
        Ok(Pipeline::online(processor, assigner, client, mode, source))
    }

    /// A pipeline that reads through `assigner`'s client, and writes unless `mode` is `DryRun`.
    pub fn online(
        processor: Processor,
        assigner: RoleAssigner,
        client: MgmtClient,
        mode: Mode,
        source: &'static str,
    ) -> Self {
        let metrics = Arc::clone(client.metrics());
        Pipeline {
            processor,
            mode,
            client: Some(client),
            assigner: Some(assigner),
            locks: UserLocks::default(),
            metrics,
            source,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn client(&self) -> Option<&MgmtClient> {
        self.client.as_ref()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// Takes the events of one message (a Kafka record, an SQS message) to their final
    /// outcomes, in order. Returns the first `invalid` or `failed` one as (reason, error), for
    /// the source's dead-letter handling.
    pub async fn process_all(&self, items: Vec<Decoded>) -> Option<(&'static str, String)> {
        let mut bad = None;
        for item in items {
            let report = self.process(item).await;
            let reason = match report.outcome {
                Outcome::Invalid => "invalid",
                Outcome::Failed => "failed",
                _ => continue,
            };
            if bad.is_none() {
                bad = Some((reason, report.error.unwrap_or_default()));
            }
        }
        bad
    }

    /// Takes one decoded item to its final outcome. Transient Management API failures are
    /// waited out inside; the returned report is final.
    pub async fn process(&self, item: Decoded) -> Report {
        let started = std::time::Instant::now();
        self.metrics
            .events_received
            .with_label_values(&[self.source])
            .inc();
        self.metrics.inflight_events.inc();
        let email_domain = item
            .as_ref()
            .ok()
            .and_then(|e| e.email())
            .and_then(crate::event::email_domain);
        let date = item.as_ref().ok().and_then(|e| e.date.clone());
        let user = item.as_ref().ok().and_then(|e| e.user()).map(str::to_owned);
        let _guard = match &user {
            Some(user) => Some(self.locks.lock(user).await),
            None => None,
        };
        let report = self.run(item).await;
        drop(_guard);
        self.record(&report, started, date.as_deref(), email_domain.as_deref());
        report
    }

    async fn run(&self, item: Decoded) -> Report {
        let step = match self.processor.start(item) {
            Step::NeedsProfile {
                event,
                trigger,
                undecided,
            } => match (&self.client, self.mode) {
                (Some(client), Mode::DryRun | Mode::Live) => {
                    let user = event.user().unwrap_or_default().to_owned();
                    match client.get_user(&user).await {
                        Ok(profile) => self
                            .processor
                            .decide_with_profile(&event, trigger, &profile),
                        Err(err) => {
                            let mut report =
                                Report::for_event(&event, Some(trigger), Outcome::Failed);
                            report.error = Some(err.to_string());
                            self.processor.mark_done(&report);
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
            Step::Assign(assignment) => match (&self.assigner, self.mode) {
                (Some(assigner), Mode::Live) => {
                    match assigner
                        .assign(&assignment.user_id, &assignment.missing)
                        .await
                    {
                        Ok(AssignOutcome::Assigned) => {
                            for role in &assignment.missing {
                                self.metrics
                                    .role_assignments
                                    .with_label_values(&[role])
                                    .inc();
                            }
                            self.processor.finish(assignment, Outcome::Assigned, None)
                        }
                        Ok(AssignOutcome::AlreadyHeld) => {
                            self.processor
                                .finish(assignment, Outcome::AlreadyDone, None)
                        }
                        Err(err) => self.processor.finish(
                            assignment,
                            Outcome::Failed,
                            Some(err.to_string()),
                        ),
                    }
                }
                _ => self
                    .processor
                    .finish(assignment, Outcome::WouldAssign, None),
            },
        }
    }

    fn record(
        &self,
        report: &Report,
        started: std::time::Instant,
        date: Option<&str>,
        email_domain: Option<&str>,
    ) {
        let m = &self.metrics;
        m.inflight_events.dec();
        let trigger = report.trigger.map(|t| t.as_str()).unwrap_or("none");
        m.events_processed
            .with_label_values(&[self.source, trigger, report.outcome.as_str()])
            .inc();
        m.event_processing_duration
            .observe(started.elapsed().as_secs_f64());
        let now = std::time::SystemTime::now();
        if let Some(at) =
            date.and_then(|d| humantime::parse_rfc3339_weak(d.trim_end_matches('Z')).ok())
        {
            if let Ok(age) = now.duration_since(at) {
                m.event_age.observe(age.as_secs_f64());
            }
        }
        if let Ok(t) = now.duration_since(std::time::UNIX_EPOCH) {
            m.last_processed_event_timestamp.set(t.as_secs_f64());
        }
        if report.outcome == Outcome::AlreadyDone {
            let kind = if report.rules.is_empty() {
                "log_id"
            } else {
                "user_roles"
            };
            m.dedup_hits.with_label_values(&[kind]).inc();
        }
        m.dedup_entries
            .set(i64::try_from(self.processor.dedup().entries()).unwrap_or(i64::MAX));
        let log_id = report.log_id.as_deref().unwrap_or("-");
        let user = report.user_id.as_deref().unwrap_or("-");
        let domain = email_domain
            .map(|d| format!("*@{d}"))
            .unwrap_or_else(|| "-".to_owned());
        match report.outcome {
            Outcome::Assigned => tracing::info!(
                log_id, user_id = user, email = %domain, trigger, roles = ?report.roles, rules = ?report.rules,
                "roles assigned"
            ),
            Outcome::WouldAssign => tracing::info!(
                log_id, user_id = user, email = %domain, trigger, roles = ?report.roles, rules = ?report.rules,
                "roles would be assigned"
            ),
            Outcome::Failed => tracing::warn!(
                log_id, user_id = user, trigger, roles = ?report.roles, error = report.error.as_deref().unwrap_or("-"),
                "assignment failed permanently"
            ),
            Outcome::Invalid => tracing::warn!(
                log_id,
                error = report.error.as_deref().unwrap_or("-"),
                "invalid event"
            ),
            other => tracing::debug!(log_id, trigger, outcome = other.as_str(), "event done"),
        }
    }
}

/// One lock per user id, so the events of a user are processed one after another while other
/// users proceed in parallel. Entries are removed when nobody holds or waits for them.
#[derive(Default)]
pub struct UserLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a user's lock; dropping it releases the user.
pub struct UserGuard<'a> {
    locks: &'a UserLocks,
    user: String,
    mutex: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl UserLocks {
    pub async fn lock(&self, user: &str) -> UserGuard<'_> {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(user.to_owned()).or_default())
        };
        let guard = Arc::clone(&mutex).lock_owned().await;
        UserGuard {
            locks: self,
            user: user.to_owned(),
            mutex,
            guard: Some(guard),
        }
    }

    /// Users currently locked or waited for.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for UserGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this guard hold the mutex: nobody waits for this user.
        if Arc::strong_count(&self.mutex) == 2 {
            map.remove(&self.user);
        }
    }
}
