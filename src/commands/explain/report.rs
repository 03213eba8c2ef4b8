//! `explain`'s report: a user's ledger history, each grant judged against the current policy,
//! and (when the tenant answers) what the policy would give the user now from their profile,
//! with the difference. Pure: the command (`commands/explain/mod.rs`) does the reads.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::ledger::{HistoryEntry, UserHistory};
use crate::policy::standing::{judge_standing, GrantVerdict, StandingGrant};
use crate::policy::{Evaluation, Policy, Profile};

/// The user as the tenant shows them now: the profile (`GET /users/{id}`) and, when read, the
/// ids of the roles they hold (`GET /users/{id}/roles`).
#[derive(Debug, Clone, Default)]
pub struct UserNow {
    pub profile: Profile,
    pub held_role_ids: Option<Vec<String>>,
}

/// What the current policy gives the user now, from their profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GivenNow {
    /// Role names the policy gives.
    pub roles: Vec<String>,
    /// The rules that give them.
    pub rules: Vec<String>,
    /// Rules not judged: a condition only a login knows (never a reason to take a role back).
    pub undecided: Vec<String>,
    /// The ids of the roles the user holds now (`GET /users/{id}/roles`), when read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_role_ids: Option<Vec<String>>,
}

impl GivenNow {
    /// Evaluates `policy` for an existing user with this profile.
    pub fn evaluate(policy: &Policy, user_id: &str, profile: &Profile) -> GivenNow {
        match policy.evaluate_existing(user_id, profile) {
            Evaluation::Assign(decision) => GivenNow {
                roles: decision.roles,
                rules: decision.rules,
                undecided: unique(decision.skipped.iter().map(|u| u.rule.clone())),
                held_role_ids: None,
            },
            Evaluation::NoRule(skipped) => GivenNow {
                undecided: unique(skipped.iter().map(|u| u.rule.clone())),
                ..GivenNow::default()
            },
            Evaluation::NeedsProfile(undecided) => GivenNow {
                undecided: unique(undecided.iter().map(|u| u.rule.clone())),
                ..GivenNow::default()
            },
        }
    }
}

fn unique(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    names.filter(|n| seen.insert(n.clone())).collect()
}

/// Whether the current policy still gives a standing grant's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StillGiven {
    /// The policy gives the role to this user now.
    Yes,
    /// The policy no longer gives it (rule removed or changed, or the profile no longer
    /// matches): what `reconcile --revoke` would take back.
    No,
    /// A rule that could give it stays undecided (a field only a login knows, the user's
    /// roles, the login's application) or it is a member role: never taken back.
    Undecided,
    /// The tenant was not reached: only whether the rule still exists and assigns the role is
    /// known (`rule_still_assigns`).
    Unknown,
}

/// One standing grant, judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantJudged {
    pub role_name: String,
    pub rule: String,
    /// The rule still exists in `[policy]` and assigns this role.
    pub rule_still_assigns: bool,
    /// The grant was made under the `[policy]` in force now.
    pub same_policy: bool,
    pub still_given: StillGiven,
    /// Why (`reconcile --revoke`'s reason for `no`, what stays undecided for `undecided`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
    /// Whether the user holds the role now (`None`: the user's roles were not read). A grant
    /// not held was removed outside this service (an admin): it is not given again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<bool>,
    /// A revocation of it was journaled and not recorded (a `reconcile --revoke --apply`
    /// interrupted after sending its DELETE): being taken back, not an admin's removal.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending_revocation: bool,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub user_id: String,
    pub ledger: String,
    pub policy_fingerprint: String,
    pub history: UserHistory,
    pub standing: Vec<GrantJudged>,
    /// `None` when the tenant was not reached (`tenant_error` says why).
    pub given_now: Option<GivenNow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_error: Option<String>,
    /// Roles the policy gives now that the ledger shows no standing grant of: never granted
    /// by this service, or granted and revoked since (an admin's removal stands).
    pub given_now_not_granted: Vec<String>,
    /// Standing grants the policy no longer gives (`reconcile --revoke` would take them back).
    pub granted_no_longer_given: Vec<String>,
}

impl Explanation {
    pub fn new(
        user_id: &str,
        ledger: String,
        policy: &Policy,
        policy_fingerprint: &str,
        history: UserHistory,
        now: Result<UserNow, String>,
    ) -> Explanation {
        let (now, tenant_error) = match now {
            Ok(now) => (Some(now), None),
            Err(err) => (None, Some(err)),
        };
        let grants: Vec<StandingGrant> = history.standing.iter().map(|g| g.standing()).collect();
        // The one judgement `reconcile --revoke` makes too.
        let verdicts = now
            .as_ref()
            .map(|now| judge_standing(policy, user_id, &now.profile, &grants));
        let given_now = now.as_ref().map(|now| {
            let mut profile = now.profile.clone();
            if policy.uses_has_roles() {
                profile.roles.clone_from(&now.held_role_ids);
            }
            let mut given = GivenNow::evaluate(policy, user_id, &profile);
            given.held_role_ids.clone_from(&now.held_role_ids);
            given
        });
        let standing: Vec<GrantJudged> = history
            .standing
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let rule_still_assigns = policy
                    .rules()
                    .iter()
                    .any(|r| r.name == g.rule && r.assign.iter().any(|a| a == &g.role_name));
                let (still_given, because) = match verdicts.as_ref().and_then(|v| v.get(i)) {
                    Some(GrantVerdict::Given) => (StillGiven::Yes, None),
                    Some(GrantVerdict::Kept { because }) => {
                        (StillGiven::Undecided, Some(because.clone()))
                    }
                    Some(GrantVerdict::NoLongerGiven { reason }) => {
                        (StillGiven::No, Some(reason.clone()))
                    }
                    None => (StillGiven::Unknown, None),
                };
                let held = given_now
                    .as_ref()
                    .and_then(|now| now.held_role_ids.as_ref())
                    .map(|ids| ids.contains(&g.role_id));
                GrantJudged {
                    role_name: g.role_name.clone(),
                    rule: g.rule.clone(),
                    rule_still_assigns,
                    same_policy: g.policy_fingerprint == policy_fingerprint,
                    still_given,
                    because,
                    held,
                    pending_revocation: history
                        .pending
                        .iter()
                        .any(|p| p.role_id == g.role_id && p.organization_id == g.organization_id),
                }
            })
            .collect();
        let given_now_not_granted = given_now
            .as_ref()
            .map(|now| {
                now.roles
                    .iter()
                    .filter(|r| !history.standing.iter().any(|g| &g.role_name == *r))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let granted_no_longer_given = standing
            .iter()
            .filter(|g| g.still_given == StillGiven::No)
            .map(|g| g.role_name.clone())
            .collect();
        Explanation {
            user_id: user_id.to_owned(),
            ledger,
            policy_fingerprint: policy_fingerprint.to_owned(),
            history,
            standing,
            given_now,
            tenant_error,
            given_now_not_granted,
            granted_no_longer_given,
        }
    }

    /// The human report.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "user {} (ledger {})", self.user_id, self.ledger);
        if self.history.is_empty() {
            let _ = writeln!(
                t,
                "never seen: the ledger holds no grant, revocation or failure for this user"
            );
        }
        if !self.history.entries.is_empty() {
            let _ = writeln!(t, "history:");
        }
        for entry in &self.history.entries {
            match entry {
                HistoryEntry::Grant(g) => {
                    let _ = writeln!(
                        t,
                        "  {}  granted {} ({}) by rule {}, trigger {}, event {}, policy {}, instance {}",
                        time_text(g.at),
                        g.role_name,
                        g.role_id,
                        g.rule,
                        g.trigger,
                        g.event_id,
                        g.policy_fingerprint,
                        g.instance
                    );
                }
                HistoryEntry::Revocation(r) => {
                    let _ = writeln!(
                        t,
                        "  {}  revoked {} ({}) by {}: {}",
                        time_text(r.at),
                        r.role_name,
                        r.role_id,
                        r.by,
                        r.reason
                    );
                }
            }
        }
        if !self.standing.is_empty() {
            let _ = writeln!(
                t,
                "standing grants (current policy {}):",
                self.policy_fingerprint
            );
        }
        for g in &self.standing {
            let verdict = match g.still_given {
                StillGiven::Yes => "the current policy still gives it",
                StillGiven::No => "the current policy no longer gives it",
                StillGiven::Undecided => "undecided, never taken back",
                StillGiven::Unknown => {
                    if g.rule_still_assigns {
                        "rule still assigns it (profile not read)"
                    } else {
                        "rule no longer assigns it (profile not read)"
                    }
                }
            };
            let policy = if g.same_policy {
                ""
            } else {
                ", granted under another policy"
            };
            let held = match g.held {
                _ if g.pending_revocation => {
                    "; pending revocation: reconcile --revoke --apply began taking it back and was interrupted (the next reconcile --apply finishes it)"
                }
                Some(false) => {
                    "; not held now: removed outside this service (an admin), so never given again"
                }
                _ => "",
            };
            let because = g
                .because
                .as_ref()
                .map(|b| format!(" ({b})"))
                .unwrap_or_default();
            let _ = writeln!(
                t,
                "  {} (rule {}): {verdict}{because}{policy}{held}",
                g.role_name, g.rule
            );
        }
        for p in &self.history.pending {
            let _ = writeln!(
                t,
                "pending revocation: {} ({}) by {} at {}: {} (journaled before its DELETE, not recorded yet: the next reconcile --apply finishes it)",
                p.role_name,
                p.role_id,
                p.by,
                time_text(p.at),
                p.reason
            );
        }
        for p in &self.history.pending_grants {
            let _ = writeln!(
                t,
                "pending grant: {} ({}) by rule {}, event {}, journaled at {}: not a grant of this service (never taken back, not shown above) until the user's next delivery settles it: its role write was about to be sent, or sent and not confirmed (the process stopped before recording it); the role held at that delivery's read is recorded as this service's grant, else it is written again or dropped",
                p.role_name,
                p.role_id,
                p.rule,
                p.event_id,
                time_text(p.at)
            );
        }
        for r in &self.history.member_role_removals {
            let _ = writeln!(
                t,
                "member role removed by an admin: {} ({}) in organization {} at {} ({}): not given again by a trigger (reconcile --restore gives it back)",
                r.role_name,
                r.role_id,
                r.organization_id.as_deref().unwrap_or("-"),
                time_text(r.at),
                r.reason
            );
        }
        if let Some(f) = &self.history.failure {
            let _ = writeln!(
                t,
                "standing failure: event {} at {}: {}",
                f.event_id,
                time_text(f.at),
                f.reason
            );
        }
        match (&self.given_now, &self.tenant_error) {
            (Some(now), _) => {
                let roles = if now.roles.is_empty() {
                    "no role".to_owned()
                } else {
                    now.roles.join(", ")
                };
                let rules = if now.rules.is_empty() {
                    String::new()
                } else {
                    format!(" (rules {})", now.rules.join(", "))
                };
                let _ = writeln!(t, "policy now, from the profile: {roles}{rules}");
                if !now.undecided.is_empty() {
                    let _ = writeln!(
                        t,
                        "  not judged (a field only a login knows): {}",
                        now.undecided.join(", ")
                    );
                }
                if self.given_now_not_granted.is_empty() && self.granted_no_longer_given.is_empty()
                {
                    let _ = writeln!(t, "difference: none");
                } else {
                    if !self.given_now_not_granted.is_empty() {
                        let _ = writeln!(
                            t,
                            "difference: given now, no standing grant: {} (never granted by this service, or revoked since: an admin's removal stands)",
                            self.given_now_not_granted.join(", ")
                        );
                    }
                    if !self.granted_no_longer_given.is_empty() {
                        let _ = writeln!(
                            t,
                            "difference: granted, no longer given: {} (reconcile --revoke would take them back)",
                            self.granted_no_longer_given.join(", ")
                        );
                    }
                }
            }
            (None, Some(err)) => {
                let _ = writeln!(t, "policy now: tenant not reached ({err})");
            }
            (None, None) => {}
        }
        t
    }
}

/// Unix milliseconds as RFC 3339 UTC.
pub fn time_text(millis: i64) -> String {
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}
