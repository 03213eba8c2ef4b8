//! What the ledger holds, as its readers get it: grants, revocations, failures and a
//! user's history.

/// One role this service gave one user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    pub user_id: String,
    pub role_id: String,
    pub role_name: String,
    /// The organization of a member role; `None` for a tenant role.
    pub organization_id: Option<String>,
    /// The policy rule that gave it.
    pub rule: String,
    /// The trigger (`signup`, `first_login`, `user_created`, … or `reconcile`).
    pub trigger: String,
    /// The event's id: `log_id` or the CloudEvent id.
    pub event_id: String,
    /// [`policy_fingerprint`] of the `[policy]` in force.
    pub policy_fingerprint: String,
    /// Which service instance wrote it.
    pub instance: String,
    /// Unix milliseconds: when the grant was recorded.
    pub at: i64,
    /// Unix milliseconds: when the event that gave it happened (its `date`), when it said.
    /// A signup dated after it means the account was re-created; a deletion dated after it
    /// ends it.
    pub event_at: Option<i64>,
}

impl Grant {
    /// The grant as the policy judges it ([`crate::policy::standing::judge_standing`]).
    pub fn standing(&self) -> crate::policy::standing::StandingGrant {
        crate::policy::standing::StandingGrant {
            role_id: self.role_id.clone(),
            role_name: self.role_name.clone(),
            rule: self.rule.clone(),
            organization_id: self.organization_id.clone(),
        }
    }
}

/// A role taken back from a user (it ends the standing grant of that role).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Revocation {
    pub user_id: String,
    pub role_id: String,
    pub role_name: String,
    pub organization_id: Option<String>,
    /// The instance, or `reconcile --revoke`.
    pub by: String,
    pub reason: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// A user whose last event failed for good (until a later one succeeds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    pub user_id: String,
    pub event_id: String,
    pub reason: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// One entry of a user's history, in time order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryEntry {
    Grant(Grant),
    Revocation(Revocation),
}

impl HistoryEntry {
    pub fn at(&self) -> i64 {
        match self {
            HistoryEntry::Grant(g) => g.at,
            HistoryEntry::Revocation(r) => r.at,
        }
    }
}

/// Everything the ledger holds about one user (`explain`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UserHistory {
    /// Every grant and revocation, oldest first.
    pub entries: Vec<HistoryEntry>,
    /// The grants in force (granted and not revoked since).
    pub standing: Vec<Grant>,
    pub failure: Option<Failure>,
    /// Revocations journaled before their DELETE and not recorded yet (a run interrupted in
    /// between): the next `reconcile --apply` finishes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Revocation>,
    /// Grants journaled before their role write and not recorded (a crash between the write and
    /// its record, or a write still under way): never a grant; the user's next delivery settles
    /// them (the role held then: recorded as this service's grant; else dropped or written again).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending_grants: Vec<Grant>,
    /// Member roles an admin removed (`organization.member.role.deleted`): not given again by
    /// a trigger.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_role_removals: Vec<Revocation>,
}

impl UserHistory {
    /// Whether the ledger has never seen this user.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.failure.is_none()
            && self.pending.is_empty()
            && self.pending_grants.is_empty()
            && self.member_role_removals.is_empty()
    }
}
