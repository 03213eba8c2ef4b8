//! The stages every source shares: decode → select → dedup → policy, producing either a final
//! outcome or an assignment to make; and the outcome record each event ends with.

pub mod dispatch;

use std::sync::Arc;

use futures_util::FutureExt;
use serde::Serialize;

use crate::dedup::Dedup;
use crate::event::{Decoded, LogEvent, Selection, Trigger};
use crate::ledger::link::is_user_deletion;
use crate::ledger::link::{GrantOrigin, Refused};
use crate::ledger::{Grant, LedgerLink};
use crate::metrics::Metrics;
use crate::mgmt::{Applications, AssignOutcome, CallStats, MgmtClient, RoleAssigner};
use crate::policy::{Evaluation, Policy, Profile, Undecided, ASSIGN_CLIENT_METADATA};

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

/// An event of a message that ended `invalid` or `failed`: what a source dead-letters or
/// leaves for the queue's redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// `Outcome::Invalid` or `Outcome::Failed`.
    pub outcome: Outcome,
    pub error: String,
}

impl Rejected {
    /// The reason as labelled in metrics and dead-letter headers (`invalid`, `failed`).
    pub fn reason(&self) -> &'static str {
        self.outcome.as_str()
    }
}

/// The one verdict a message gets, decided by the pipeline; the source maps it to its transport
/// and keeps no memory of its own that overrides it.
///
/// Every source gets it from [`Pipeline::deliver`] (`dispatch.rs`), the one delivery path.
///
/// | verdict | Kafka | SQS | webhook (`ingest`) | Logs API reader |
/// |---|---|---|---|---|
/// | `Done` | offset stored | message deleted | 200 | checkpoint advances |
/// | `DeadLetter` | dead-letter topic, then offset stored | left; the queue's `maxReceiveCount` moves it to its DLQ | 200, counted `failed`/`invalid` | dead-letter file, then the checkpoint advances |
/// | `Retry` | not stored: held, counted (`deliveries_held_total`) | left, visible again | 503 | checkpoint kept, batch read again |
///
/// Only `Done` is remembered (dedup on `log_id`): a dead-lettered event produced back, redriven
/// or resent after the operator's fix is processed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every event reached a final outcome other than `invalid` or `failed`: acknowledge.
    Done,
    /// An event ended `invalid` or `failed` (the first one): dead-letter the message.
    DeadLetter(Rejected),
    /// The message's work was lost (its task died and cannot run again here): leave it
    /// unacknowledged for redelivery.
    Retry(String),
}

impl Verdict {
    /// Whether the message may be acknowledged.
    pub fn is_done(&self) -> bool {
        matches!(self, Verdict::Done)
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
    /// The organization whose member roles the event gives (`assign_in_organization`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The roles given as the member's roles in `organization`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub organization_roles: Vec<String>,
    pub rules: Vec<String>,
    /// Rules not applied because a condition stayed undecided (`rule.key`): the event lacks a
    /// login field no read can give.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// How the user was created, when the event tells it (`self_signup`, `admin`: the
    /// `created_by` condition's table, `crate::policy::creation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<&'static str>,
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
            organization: None,
            organization_roles: Vec::new(),
            rules: Vec::new(),
            skipped: Vec::new(),
            created_by: trigger
                .and_then(|t| crate::policy::creation::creation_of(event, &[t], false))
                .map(|c| c.as_str()),
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
    /// Roles to give as the user's member roles in the event's organization that this process
    /// has not given yet (`assign_in_organization`).
    pub organization: Option<MemberAssignment>,
    /// The record of the event, with every granted role and the matching rules.
    pub report: Report,
    /// When the event happened (its `date`, unix milliseconds), recorded with its grants.
    pub event_at: Option<i64>,
    /// When the user's account was created (unix milliseconds), when the event carries the
    /// profile (Event Streams).
    pub created_at: Option<i64>,
    /// The event is the account's creation: a signup, or a social user's first login (a social
    /// account exists only from its first login: it cannot be created ahead through the
    /// Management API or imported).
    pub creates_account: bool,
}

/// How far apart a signup (or an account's creation) must be from the event of a standing
/// grant for the account to count as re-created with the same id: absorbs the clock skew
/// between the tenant and this service, and the same signup arriving as both `ss` and
/// `user.created`. An account deleted and re-created within it keeps its old grants.
pub const RECREATION_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

/// An account's creation (a signup, a social user's first login) this recent is taken for an
/// account created moments ago, holding no role yet: its roles are written without reading the
/// user's roles first. Older ones (a replay, the backstop reading behind) are read first like
/// every other trigger.
pub const FRESH_SIGNUP: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether the assignment comes from the account's creation (a signup, a social user's first
/// login) dated within [`FRESH_SIGNUP`] of now (before or after): the account was created moments
/// ago and holds no role yet.
fn is_fresh_account(assignment: &Assignment) -> bool {
    if !assignment.creates_account {
        return false;
    }
    let Some(at) = assignment.event_at else {
        return false;
    };
    let now = crate::ledger::now_millis();
    let fresh = i64::try_from(FRESH_SIGNUP.as_millis()).unwrap_or(i64::MAX);
    // Within the window either way: a tenant clock a little ahead still counts as fresh.
    (-fresh..=fresh).contains(&now.saturating_sub(at))
}

/// Whether the event's connection is a social one (its `strategy_type`, else its strategy).
fn is_social(event: &LogEvent) -> bool {
    match event.strategy_type.as_deref() {
        Some(kind) => kind == "social",
        None => {
            event
                .strategy
                .as_deref()
                .and_then(|s| crate::policy::strategy_type_of(s, None))
                == Some("social")
        }
    }
}

/// Unix milliseconds as a time.
fn system_time(millis: i64) -> Option<std::time::SystemTime> {
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(
        u64::try_from(millis).ok()?,
    ))
}

/// Member roles to give in one organization: one write for all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAssignment {
    pub organization_id: String,
    pub missing: Vec<String>,
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
        self.start_seen(item, None)
    }

    /// [`Processor::start`], with the ledger's answer for a login through an organization that
    /// is not a first login: `Some(false)` (the ledger has not seen this user in this
    /// organization) makes it an `organization_member_added`; `None` (no ledger) or `Some(true)`
    /// leave it not eligible. The caller asks the ledger for (`event.user()`,
    /// `event.organization()`) before calling (see `LogEvent::organization_login`).
    pub fn start_seen(&self, item: Decoded, seen_in_organization: Option<bool>) -> Step {
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
                    organization: None,
                    organization_roles: Vec::new(),
                    rules: Vec::new(),
                    skipped: Vec::new(),
                    created_by: None,
                    error: Some(err.reason),
                })
            }
        };
        let selection = match (
            event.selection(),
            event.organization_login(seen_in_organization),
        ) {
            (Selection::NotEligible(_), Some(trigger)) => Selection::Eligible(trigger),
            (selection, _) => selection,
        };
        let trigger = match selection {
            Selection::Eligible(trigger) if self.policy.handles(trigger) => trigger,
            Selection::NotEligible(reason) => {
                // Event Streams' `user.deleted` or the tenant log's user deletion (`sdu`).
                if is_user_deletion(&event) {
                    if let Some(user) = event.user() {
                        // Work still to come for this user is dropped, not failed.
                        self.dedup.mark_user_deleted(user, event.date.as_deref());
                    }
                }
                let mut report = Report::for_event(&event, None, Outcome::NotEligible);
                if event.is_cloud_event() {
                    report.error = Some(reason.to_owned());
                }
                return Step::Done(report);
            }
            Selection::Eligible(_) => {
                return Step::Done(Report::for_event(&event, None, Outcome::NotEligible))
            }
        };
        if event.user().is_none() {
            let mut report = Report::for_event(&event, Some(trigger), Outcome::Invalid);
            report.error = Some("eligible event without a user_id".to_owned());
            return Step::Done(report);
        }
        if event
            .user()
            .is_some_and(|u| self.dedup.user_deleted(u, event.date.as_deref()))
        {
            let mut report = Report::for_event(&event, Some(trigger), Outcome::NotEligible);
            report.error = Some("the user was deleted (user.deleted received)".to_owned());
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
        report.error = Some(format!(
            "needs a Management API read (the user's profile, roles or application) for {}",
            keys.join(", ")
        ));
        report
    }

    fn after_policy(&self, event: &LogEvent, trigger: Trigger, evaluation: Evaluation) -> Step {
        let decision = match evaluation {
            Evaluation::Assign(decision) => decision,
            Evaluation::NoRule(skipped) => {
                let mut report = Report::for_event(event, Some(trigger), Outcome::NoRule);
                report.skipped = skipped.iter().map(Undecided::label).collect();
                self.mark_done(&report);
                return Step::Done(report);
            }
            Evaluation::NeedsProfile(undecided) => {
                return Step::Done(self.needs_profile_report(event, trigger, &undecided))
            }
        };
        let user_id = event.user().unwrap_or_default().to_owned();
        if matches!(trigger, Trigger::Signup | Trigger::FirstLogin) {
            if let Some(date) = &event.date {
                // Well after the roles remembered for this id: maybe a re-created account.
                self.dedup.forget_if_recreated(
                    &user_id,
                    date,
                    RECREATION_MARGIN,
                    trigger == Trigger::Signup,
                );
            }
        }
        let mut roles = decision.roles;
        for client_role in decision.client_roles {
            if !roles.contains(&client_role.name) {
                roles.push(client_role.name);
            }
        }
        let missing = self.dedup.missing_roles(&user_id, &roles);
        let mut report = Report::for_event(event, Some(trigger), Outcome::AlreadyDone);
        report.roles = roles;
        report.rules = decision.rules;
        report.skipped = decision.skipped.iter().map(Undecided::label).collect();
        let organization = match event.organization() {
            Some(org) if !decision.organization_roles.is_empty() => {
                report.organization = Some(org.to_owned());
                let missing =
                    self.dedup
                        .missing_member_roles(org, &user_id, &decision.organization_roles);
                report.organization_roles = decision.organization_roles;
                (!missing.is_empty()).then(|| MemberAssignment {
                    organization_id: org.to_owned(),
                    missing,
                })
            }
            _ => None,
        };
        if missing.is_empty() && organization.is_none() {
            self.mark_done(&report);
            return Step::Done(report);
        }
        Step::Assign(Assignment {
            user_id,
            missing,
            organization,
            report,
            event_at: event.date.as_deref().and_then(crate::event::unix_millis),
            created_at: event
                .profile
                .as_ref()
                .and_then(|p| p.created_at.as_deref())
                .and_then(crate::event::unix_millis),
            creates_account: trigger == Trigger::Signup
                || (trigger == Trigger::FirstLogin && is_social(event)),
        })
    }

    /// Completes an assignment with its outcome (`Assigned`, `WouldAssign`, `AlreadyDone` or
    /// `Failed`). Successful ones are remembered so the user's next trigger costs no call; a
    /// failed one is not (its redelivery after the operator's fix is processed again).
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
            if let Some(at) = assignment.event_at.and_then(system_time) {
                let signup = report.trigger == Some(Trigger::Signup);
                self.dedup.mark_event_time(&assignment.user_id, at, signup);
            }
            if let Some(member) = &assignment.organization {
                self.dedup.mark_member_assigned(
                    &member.organization_id,
                    &assignment.user_id,
                    &member.missing,
                );
            }
        }
        self.mark_done(&report);
        report
    }

    /// Records a done outcome's `log_id` so a redelivery is `already_done`. `failed` and
    /// `invalid` are never remembered.
    pub fn mark_done(&self, report: &Report) {
        if matches!(report.outcome, Outcome::Failed | Outcome::Invalid) {
            return;
        }
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
    applications: Applications,
    metrics: Arc<Metrics>,
    source: SourceKind,
    /// The grants ledger (`[ledger]`), when configured.
    ledger: Option<LedgerLink>,
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

    /// Role assignments waiting for the tenant now (0 offline): sources pause their intake at
    /// [`crate::mgmt::WAITING_MAX`].
    pub fn waiting(&self) -> usize {
        self.assigner.as_ref().map_or(0, RoleAssigner::waiting)
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
        let started = std::time::Instant::now();
        let input = match &item {
            Ok(event) if event.is_test() => "test",
            Ok(event) if event.is_cloud_event() => "event_stream",
            Ok(_) => "log",
            Err(_) => "invalid",
        };
        self.metrics
            .events_received
            .with_label_values(&[self.source.as_str(), input])
            .inc();
        self.metrics.inflight_events.inc();
        let email_domain = item
            .as_ref()
            .ok()
            .and_then(|e| e.email())
            .and_then(crate::event::email_domain);
        let date = item.as_ref().ok().and_then(|e| e.date.clone());
        let user = item.as_ref().ok().and_then(|e| e.user()).map(str::to_owned);
        let log_id = item.as_ref().ok().and_then(|e| e.log_id.clone());
        let trigger = item.as_ref().ok().and_then(|e| match e.selection() {
            Selection::Eligible(trigger) => Some(trigger),
            Selection::NotEligible(_) => None,
        });
        // Boxed: a task in flight holds this small future until it runs; the event's whole
        // path (several KB of state) is allocated only while it is being processed.
        match std::panic::AssertUnwindSafe(Box::pin(self.run(item)))
            .catch_unwind()
            .await
        {
            Ok(report) => {
                self.record(&report, started, date.as_deref(), email_domain.as_deref());
                Ok(report)
            }
            Err(panic) => {
                self.metrics.inflight_events.dec();
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                self.metrics
                    .task_panics
                    .with_label_values(&[self.source.as_str()])
                    .inc();
                tracing::error!(log_id = log_id.as_deref().unwrap_or("-"), panic = %what, "processing an event panicked");
                Err(LostTask {
                    report: Report {
                        log_id,
                        event_type: None,
                        user_id: user,
                        trigger,
                        outcome: Outcome::Failed,
                        roles: Vec::new(),
                        organization: None,
                        organization_roles: Vec::new(),
                        rules: Vec::new(),
                        skipped: Vec::new(),
                        created_by: None,
                        error: Some(format!("internal error (panic): {what}")),
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

    /// Reads what the undecided conditions need, and only that: the user (`GET /users/{id}`)
    /// unless the event carries the profile or only `has_roles` is undecided; the user's roles
    /// (`GET /users/{id}/roles`, or `effective-roles` with `[auth0] count_group_roles`) for
    /// `has_roles`, unless this service gave the user roles
    /// recently (those count, and prove the answer).
    async fn read_profile(
        &self,
        client: &MgmtClient,
        event: &LogEvent,
        undecided: &[Undecided],
    ) -> Result<Profile, crate::mgmt::MgmtError> {
        let user = event.user().unwrap_or_default();
        let needs_roles = undecided.iter().any(|u| u.key == "has_roles");
        let needs_client = undecided.iter().any(|u| u.key == ASSIGN_CLIENT_METADATA);
        let needs_user = undecided
            .iter()
            .any(|u| u.key != "has_roles" && u.key != ASSIGN_CLIENT_METADATA);
        let mut profile = match (&event.profile, needs_user) {
            (Some(profile), _) => (**profile).clone(),
            (None, true) => client.get_user(user).await?,
            (None, false) => Profile::default(),
        };
        if needs_roles {
            let given = self.processor.dedup().given_roles(user);
            let count_group_roles = self
                .assigner
                .as_ref()
                .is_some_and(|a| a.count_group_roles());
            profile.roles = Some(if given.is_empty() {
                client.get_held_role_ids(user, count_group_roles).await?
            } else {
                given
            });
        }
        if needs_client {
            profile.client_metadata = Some(self.client_roles(client, event).await?);
        }
        Ok(profile)
    }

    /// The event application's `client_metadata`, reduced to the keys `assign_client_metadata`
    /// rules name whose value is a role of the tenant. A name the tenant lacks adds nothing:
    /// it is counted, and logged once a day per application and name.
    async fn client_roles(
        &self,
        client: &MgmtClient,
        event: &LogEvent,
    ) -> Result<std::collections::BTreeMap<String, String>, crate::mgmt::MgmtError> {
        let mut kept = std::collections::BTreeMap::new();
        let (Some(app), Some(assigner)) = (
            event.client_id.as_deref().filter(|c| !c.is_empty()),
            &self.assigner,
        ) else {
            return Ok(kept);
        };
        let metadata = self.applications.metadata(client, app).await?;
        let keys: std::collections::BTreeSet<&str> = self
            .processor
            .policy()
            .rules()
            .iter()
            .filter_map(|r| r.assign_client_metadata.as_deref())
            .collect();
        for key in keys {
            let Some(name) = metadata
                .get(key)
                .map(|n| n.trim())
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            if assigner.directory().lookup(client, name).await?.is_some() {
                kept.insert(key.to_owned(), name.to_owned());
            } else {
                self.metrics.client_metadata_unknown_roles.inc();
                if self.applications.first_unknown(app, name) {
                    tracing::warn!(
                        client_id = app,
                        client_name = event.client_name.as_deref().unwrap_or("-"),
                        key,
                        role = name,
                        "the application's client_metadata names a role the tenant does not have: nothing added for it (the event's other roles are still assigned)"
                    );
                }
            }
        }
        Ok(kept)
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

    /// Event Streams' membership events, in the ledger: `organization.member.role.deleted`
    /// records an admin's removal of a member role (never given back by a trigger);
    /// `organization.member.deleted` ends the member's grants there (added again, it gets them
    /// again), and what this process remembers of them.
    async fn follow_membership(&self, link: &LedgerLink, event: &LogEvent) -> Result<(), Refused> {
        let (Some(user), Some(organization)) = (event.user(), event.organization()) else {
            return Ok(());
        };
        let event_id = event.log_id.as_deref().unwrap_or("-");
        match event.event_type.as_str() {
            "organization.member.role.deleted" => {
                let Some(role) = &event.member_role else {
                    return Ok(());
                };
                let name = role
                    .name
                    .clone()
                    .or_else(|| {
                        self.assigner.as_ref().and_then(|a| {
                            a.directory()
                                .all()
                                .into_iter()
                                .find(|(_, id)| id == &role.id)
                                .map(|(name, _)| name)
                        })
                    })
                    .unwrap_or_else(|| role.id.clone());
                let removal = crate::ledger::Revocation {
                    user_id: user.to_owned(),
                    role_id: role.id.clone(),
                    role_name: name,
                    organization_id: Some(organization.to_owned()),
                    by: "an admin".to_owned(),
                    reason: event.event_type.clone(),
                    at: event
                        .date
                        .as_deref()
                        .and_then(crate::event::unix_millis)
                        .unwrap_or_else(crate::ledger::now_millis),
                };
                tracing::info!(user_id = user, organization, role = %removal.role_name, "a member role was removed by an admin: it is not given again");
                link.record_member_role_removal(&self.metrics, &removal, event_id)
                    .await?;
            }
            "organization.member.deleted" => {
                let left_at = event
                    .date
                    .as_deref()
                    .and_then(crate::event::unix_millis)
                    .unwrap_or_else(crate::ledger::now_millis);
                link.end_membership(&self.metrics, user, organization, left_at, event_id)
                    .await?;
                self.processor.dedup().forget_membership(organization, user);
            }
            _ => {}
        }
        Ok(())
    }

    /// Leaves out of an assignment the roles the ledger shows this service granted before (the
    /// user's tenant roles, and its member roles in the event's organization, where an admin's
    /// recorded removal counts too), after ending the grants of an account re-created since
    /// them. `Err` when the ledger refuses the user's records (an id it cannot take).
    async fn without_granted(
        &self,
        mut assignment: Assignment,
    ) -> Result<Assignment, (Assignment, Refused)> {
        let (Some(link), Some(assigner)) = (&self.ledger, &self.assigner) else {
            return Ok(assignment);
        };
        let mut standing = match link.standing(&self.metrics, &assignment.user_id).await {
            Ok(standing) => standing,
            Err(refused) => return Err((assignment, refused)),
        };
        if !standing.is_empty() && self.is_recreated(&assignment, &standing).await {
            tracing::info!(
                user_id = %assignment.user_id,
                log_id = assignment.report.log_id.as_deref().unwrap_or("-"),
                grants = standing.len(),
                "the user was re-created with the same id: the old account's grants end and the new account gets its roles"
            );
            if self.mode == Mode::Live {
                let ended = link
                    .end_recreated(
                        &self.metrics,
                        &standing,
                        assignment.report.log_id.as_deref().unwrap_or("-"),
                    )
                    .await;
                if let Err(refused) = ended {
                    return Err((assignment, refused));
                }
            }
            standing.clear();
        }
        if !assignment.missing.is_empty() {
            let held = link.already_granted(
                &self.metrics,
                assigner.directory(),
                &standing,
                &assignment.missing,
            );
            assignment.missing.retain(|role| !held.contains(role));
        }
        if let Some(member) = assignment.organization.as_mut() {
            let organization = member.organization_id.clone();
            let removed = match link
                .removed_member_roles(&self.metrics, &assignment.user_id, &organization)
                .await
            {
                Ok(removed) => removed,
                Err(refused) => return Err((assignment, refused)),
            };
            let kept = link.member_roles_kept_off(
                &self.metrics,
                assigner.directory(),
                &standing,
                &organization,
                &removed,
                &member.missing,
            );
            member.missing.retain(|role| !kept.contains(role));
            if member.missing.is_empty() {
                assignment.organization = None;
            }
        }
        Ok(assignment)
    }

    /// Whether the event shows the user's account was deleted and re-created with the same id
    /// since its `standing` grants (social and enterprise ids are stable): a signup (`ss`,
    /// `user.created`) dated after the event of every standing grant, or a first login of an
    /// account created after them (`created_at` from the event, else one profile read, only
    /// here). A redelivery of the event that gave a grant, and a database user's first login
    /// after its own signup, never are.
    async fn is_recreated(&self, assignment: &Assignment, standing: &[Grant]) -> bool {
        let event_id = assignment.report.log_id.as_deref();
        if standing
            .iter()
            .any(|g| Some(g.event_id.as_str()) == event_id)
        {
            return false;
        }
        let Some(newest) = standing.iter().map(|g| g.event_at.unwrap_or(g.at)).max() else {
            return false;
        };
        let margin = i64::try_from(RECREATION_MARGIN.as_millis()).unwrap_or(i64::MAX);
        let after = |at: i64| at.saturating_sub(newest) > margin;
        match assignment.report.trigger {
            Some(Trigger::Signup) => assignment.event_at.is_some_and(after),
            Some(Trigger::FirstLogin) => {
                // The account's own signup is on record: a re-created account logs a signup of
                // its own, judged above.
                if standing
                    .iter()
                    .any(|g| g.trigger == Trigger::Signup.as_str())
                {
                    return false;
                }
                let created_at = match assignment.created_at {
                    Some(at) => Some(at),
                    None => match &self.client {
                        Some(client) => match client.get_user(&assignment.user_id).await {
                            Ok(profile) => profile
                                .created_at
                                .as_deref()
                                .and_then(crate::event::unix_millis),
                            Err(err) => {
                                tracing::debug!(error = %err, "the profile read for the account's creation failed: taken for the same account");
                                None
                            }
                        },
                        None => None,
                    },
                };
                created_at.is_some_and(after)
            }
            _ => false,
        }
    }

    /// For a later login through an organization (with a ledger, in a live run, and a policy
    /// handling `organization_member_added`): whether the ledger holds a standing grant of
    /// this user in that organization. `None` otherwise: such a login triggers nothing.
    async fn seen_in_organization(&self, item: &Decoded) -> Option<Result<bool, Refused>> {
        let link = self.ledger.as_ref().filter(|_| self.mode == Mode::Live)?;
        if !self
            .processor
            .policy()
            .handles(Trigger::OrganizationMemberAdded)
        {
            return None;
        }
        let event = item.as_ref().ok()?;
        event.organization_login(Some(false))?;
        let (user, organization) = (event.user()?, event.organization()?);
        // Judged before under this policy and given no member role: taken as seen (no profile
        // read again for each login).
        if link.is_quiet_membership(user, organization) {
            return Some(Ok(true));
        }
        Some(Box::pin(link.seen_in_organization(&self.metrics, user, organization)).await)
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

    /// Gives the assignment's missing roles (live): the user's tenant roles (recorded in the
    /// ledger), then its member roles in the event's organization (through the organization
    /// limiter), and completes the record. Each part that succeeded is remembered, so a
    /// redelivery after a failure of the other costs only that one.
    async fn assign(&self, mut assignment: Assignment) -> Report {
        let assigner = match (&self.assigner, self.mode) {
            (Some(assigner), Mode::Live) => assigner,
            _ => {
                return self
                    .processor
                    .finish(assignment, Outcome::WouldAssign, None)
            }
        };
        let mut wrote = false;
        if !assignment.missing.is_empty() {
            // With a ledger, the roles the user holds are read before the write (the ledger
            // records only what the write added), except at a fresh account's creation: an
            // account created moments ago holds no role yet.
            let read_held = self.ledger.is_some() && !is_fresh_account(&assignment);
            match assigner
                .assign(&assignment.user_id, &assignment.missing, read_held)
                .await
            {
                Ok(AssignOutcome::Assigned { written }) => {
                    wrote = true;
                    // Remembered (dedup) and recorded: only what the write added. A role held
                    // already stays its holder's: an admin's later removal of it is not
                    // mistaken for a removal of this service's grant.
                    assignment.missing.retain(|role| written.contains(role));
                    for role in &written {
                        self.metrics
                            .role_assignments
                            .with_label_values(&[role, "tenant"])
                            .inc();
                    }
                    if let Some(link) = &self.ledger {
                        let report = &assignment.report;
                        let recorded = link
                            .record_grants(
                                &self.metrics,
                                self.processor.policy(),
                                assigner.directory(),
                                &assignment.user_id,
                                None,
                                &written,
                                &GrantOrigin::of(report, assignment.event_at),
                            )
                            .await;
                        if let Err(refused) = recorded {
                            return self.processor.finish(
                                assignment,
                                Outcome::Failed,
                                Some(refusal_reason(&refused)),
                            );
                        }
                    }
                }
                Ok(AssignOutcome::AlreadyHeld) => {
                    assignment.missing.clear();
                    // Held already (given by hand or by another tool): not this service's
                    // grant, so not recorded as one.
                    if let Some(link) = &self.ledger {
                        // Refused: logged by the link; the roles are held all the same.
                        let _ = link.clear_failure(&self.metrics, &assignment.user_id).await;
                    }
                }
                Err(err) => {
                    return self.processor.finish(
                        assignment,
                        Outcome::Failed,
                        Some(err.to_string()),
                    )
                }
            }
        }
        if let (Some(member), Some(client)) = (&assignment.organization, &self.client) {
            let written = crate::mgmt::organizations::assign_member_roles(
                client,
                assigner.directory(),
                &member.organization_id,
                &assignment.user_id,
                &member.missing,
            )
            .await;
            match written {
                Ok(()) => {
                    wrote = true;
                    for role in &member.missing {
                        self.metrics
                            .role_assignments
                            .with_label_values(&[role, "organization"])
                            .inc();
                    }
                    if let Some(link) = &self.ledger {
                        let report = &assignment.report;
                        let recorded = link
                            .record_grants(
                                &self.metrics,
                                self.processor.policy(),
                                assigner.directory(),
                                &assignment.user_id,
                                Some(&member.organization_id),
                                &member.missing,
                                &GrantOrigin::of(report, assignment.event_at),
                            )
                            .await;
                        if let Err(refused) = recorded {
                            return self.processor.finish(
                                assignment,
                                Outcome::Failed,
                                Some(refusal_reason(&refused)),
                            );
                        }
                    }
                }
                Err(err) => {
                    // The tenant part is done: remember it.
                    self.processor
                        .dedup()
                        .mark_assigned(&assignment.user_id, &assignment.missing);
                    let gone = if crate::mgmt::organizations::is_member_gone(&err) {
                        " (the user is no longer a member of the organization, or it was deleted)"
                    } else {
                        ""
                    };
                    let error = format!("{err}{gone}");
                    return self
                        .processor
                        .finish(assignment, Outcome::Failed, Some(error));
                }
            }
        }
        let outcome = if wrote {
            Outcome::Assigned
        } else {
            Outcome::AlreadyDone
        };
        self.processor.finish(assignment, outcome, None)
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
            .with_label_values(&[self.source.as_str(), trigger, report.outcome.as_str()])
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
        for label in &report.skipped {
            if let Some((rule, key)) = label.rsplit_once('.') {
                m.policy_rules_undecided
                    .with_label_values(&[rule, key])
                    .inc();
            }
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
                organization = report.organization.as_deref().unwrap_or("-"), organization_roles = ?report.organization_roles,
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

/// An event whose task was lost (it panicked): the `failed` report it ends with when given up.
#[derive(Debug)]
pub struct LostTask {
    pub report: Report,
    started: std::time::Instant,
}

/// Test-only fault injection, compiled into debug builds only (release builds, the ones
/// deployed, have none): `AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID` names a `log_id` whose
/// processing panics, every time, so the integration tests can see a lost task handled.
#[cfg(debug_assertions)]
mod test_panic {
    use crate::event::Decoded;

    pub(super) fn on(item: &Decoded) {
        let Some(id) = item.as_ref().ok().and_then(|e| e.log_id.as_deref()) else {
            return;
        };
        if std::env::var("AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID").is_ok_and(|told| told == id) {
            panic!("test-only panic on log_id {id} (AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID)");
        }
    }
}

/// The reason of an event failed because the ledger refused its record.
fn refusal_reason(refused: &Refused) -> String {
    format!("the ledger refuses this event's record (no retry can fix it): {refused}")
}

/// `report`, failed because the ledger refused its record.
fn ledger_refused(mut report: Report, refused: &Refused) -> Report {
    report.error = Some(refusal_reason(refused));
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::DedupSettings;
    use crate::policy::PolicyConfig;

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
    use crate::dedup::DedupSettings;
    use crate::policy::PolicyConfig;

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
            |_: &Report| {},
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
