//! The pure decisions: `Processor` takes an event through selection, dedup and the policy to an
//! outcome or an `Assignment` to make, with no I/O.

use crate::dedup::Dedup;
use crate::event::{Decoded, LogEvent, Selection, Trigger};
use crate::ledger::link::is_user_deletion;
use crate::policy::{Evaluation, Policy, Profile, Undecided};

use super::*;

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
pub(super) fn is_fresh_account(assignment: &Assignment) -> bool {
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
                    error: Some(err.reason),
                    ..Report::with_outcome(Outcome::Invalid)
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
