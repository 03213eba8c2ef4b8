//! What each event ends with (`Outcome`, its `Report`) and each delivery gets (`Verdict`,
//! `Rejected`).

use serde::Serialize;

use crate::event::{LogEvent, Trigger};

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
/// `replay` acknowledges nothing: each event is a delivery and its line the report the verdict
/// came with (never `Retry`: it keeps the bytes to run a lost task again).
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
    /// A report of `outcome` that names no event and lists nothing: the base the others fill in.
    pub fn with_outcome(outcome: Outcome) -> Report {
        Report {
            log_id: None,
            event_type: None,
            user_id: None,
            trigger: None,
            outcome,
            roles: Vec::new(),
            organization: None,
            organization_roles: Vec::new(),
            rules: Vec::new(),
            skipped: Vec::new(),
            created_by: None,
            error: None,
        }
    }

    pub(super) fn for_event(
        event: &LogEvent,
        trigger: Option<Trigger>,
        outcome: Outcome,
    ) -> Report {
        Report {
            log_id: event.log_id.clone(),
            event_type: Some(event.event_type.clone()),
            user_id: event.user().map(str::to_owned),
            trigger,
            created_by: trigger
                .and_then(|t| crate::policy::creation::creation_of(event, &[t], false))
                .map(|c| c.as_str()),
            ..Report::with_outcome(outcome)
        }
    }
}
