//! The stages every source shares: decode → select → dedup → policy, producing either a final
//! outcome or an assignment to make; and the outcome record each event ends with.

use serde::Serialize;

use crate::dedup::Dedup;
use crate::event::{Decoded, LogEvent, Selection, Trigger};
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
