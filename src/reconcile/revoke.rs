//! `reconcile --revoke`: which of a user's standing ledger grants the current policy no longer
//! gives (pure), and the removals that take them back (`DELETE /api/v2/users/{id}/roles`, one
//! call per user). Only roles the ledger says this service granted are ever judged; a rule left
//! undecided for the user (fields only a login knows, the login's application) keeps its roles.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio::task::JoinSet;

use super::error::{RemovalError, StopCause};
use super::members::{self, Memberships, UserSet};
use super::ReconcileError;
use super::{is_service_fault, Summary, FAILED_SHOWN, WRITERS};
use crate::exit::cause_chain;
use crate::ledger::{Ledger, Revocation};
use crate::mgmt::{MgmtClient, MgmtError};
use crate::policy::standing::{judge_standing, GrantVerdict, StandingGrant};
use crate::policy::{Policy, Profile};
use crate::progress::Progress;
use crate::shutdown::Shutdown;

/// One user's removal: the user, what was planned, how it ended, and whether the run must stop
/// (a fault of the service or of the ledger).
type RemovalDone = (String, Vec<Removal>, Result<(), RemovalError>, bool);

/// A standing grant to take back, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    pub role_id: String,
    pub role: String,
    /// The rule that had granted it.
    pub rule: String,
    pub reason: String,
}

/// How the standing grants of one user were judged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Judged {
    /// Grants the policy no longer gives and the user still holds.
    pub removals: Vec<Removal>,
    /// Grants kept only because a rule that could give the role stayed undecided (by
    /// `rule.key`, the way reports print it).
    pub kept_undecided: Vec<String>,
    /// Grants the policy no longer gives that the user does not hold any more (taken away by
    /// someone else): nothing to remove.
    pub already_gone: usize,
}

/// Turns the policy's verdicts on a user's standing grants ([`judge_standing`], the judgement
/// `explain` prints too) into removals. `holds` tells whether the user still holds a grant's
/// role (by its id).
pub fn judge(
    policy: &Policy,
    user_id: &str,
    profile: &Profile,
    grants: &[StandingGrant],
    holds: impl Fn(&StandingGrant) -> bool,
) -> Judged {
    let mut judged = Judged::default();
    for (grant, verdict) in grants
        .iter()
        .zip(judge_standing(policy, user_id, profile, grants))
    {
        match verdict {
            GrantVerdict::Given => {}
            GrantVerdict::Kept { because } => judged.kept_undecided.push(because),
            GrantVerdict::NoLongerGiven { .. } if !holds(grant) => judged.already_gone += 1,
            GrantVerdict::NoLongerGiven { reason } => judged.removals.push(Removal {
                role_id: grant.role_id.clone(),
                role: grant.role_name.clone(),
                rule: grant.rule.clone(),
                reason,
            }),
        }
    }
    judged
}

/// Lists the members of the roles the ledger holds standing grants of that the policy no
/// longer names (their grants may be taken back by `--revoke`). A role deleted from the tenant
/// has no members.
pub(super) async fn list_ledger_roles(
    client: &MgmtClient,
    ledger: &Ledger,
    role_ids: &BTreeMap<String, String>,
    memberships: &mut Memberships,
    progress: &mut Progress,
) -> Result<(), ReconcileError> {
    let policy_ids: BTreeSet<&String> = role_ids.values().collect();
    let roles = ledger
        .standing_roles()
        .await
        .map_err(ReconcileError::Ledger)?;
    for (role_id, name) in roles {
        if policy_ids.contains(&role_id) {
            continue;
        }
        let listed = members::list_role(client, &role_id, |n| {
            progress.update(|| format!("listing members of {name}, granted before: {n}"));
        })
        .await;
        let fingerprints = match listed {
            Ok(listed) => listed,
            Err(err) if err.is_role_not_found() => {
                tracing::info!(role = %name, role_id = %role_id, "a role the ledger granted no longer exists: nothing to take back");
                Vec::new()
            }
            Err(err) => return Err(ReconcileError::Mgmt(err)),
        };
        memberships
            .by_role_id
            .insert(role_id, UserSet::from_fingerprints(fingerprints));
    }
    Ok(())
}

/// Who `reconcile --revoke` revocations are by.
pub(super) const REVOKED_BY: &str = "reconcile --revoke";

/// Removes the planned roles (one `DELETE /api/v2/users/{id}/roles` per user, [`WRITERS`] at
/// once). Each user's revocations are journaled in the ledger before the DELETE (pending) and
/// recorded once Auth0 accepted it, in the transaction that clears them from the journal: a
/// run interrupted in between leaves them pending, and the next apply finishes them
/// ([`finish_pending`]) instead of taking the missing role for an admin's removal. A DELETE
/// refused drops its pending rows (nothing was removed); a user deleted since the export
/// (404) is forgotten by the ledger. `finishing`: these are pending revocations of an earlier
/// run (counted apart).
pub(super) async fn apply_removals(
    client: &MgmtClient,
    ledger: &Ledger,
    removals: Vec<(String, Vec<Removal>)>,
    shutdown: &Shutdown,
    summary: &mut Summary,
    finishing: bool,
) -> Result<(), ReconcileError> {
    let mut tasks: JoinSet<RemovalDone> = JoinSet::new();
    let mut pending = removals.into_iter();
    loop {
        while tasks.len() < WRITERS && !shutdown.is_triggered() {
            let Some((user, planned)) = pending.next() else {
                break;
            };
            let (client, ledger) = (client.clone(), ledger.clone());
            tasks.spawn(async move {
                let done = remove_one(&client, &ledger, &user, &planned).await;
                let (result, fatal) = done;
                (user, planned, result, fatal)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (user, planned, result, fatal) = joined.map_err(ReconcileError::RemovalTask)?;
        match result {
            Ok(()) => count_removed(summary, &user, &planned, finishing),
            Err(error) => {
                let reason = cause_chain(&error);
                tracing::warn!(user_id = %user, error = %reason, "reconcile: could not take roles back");
                if fatal {
                    summary.interrupted = true;
                    if summary.stopped_with.is_none() {
                        summary.stopped_with = Some(StopCause::Removal(error));
                    }
                }
                summary.failed_total += planned.len() as u64;
                if summary.removal_failed.len() < FAILED_SHOWN {
                    summary.removal_failed.push((user, reason));
                }
            }
        }
        if summary.interrupted {
            // What is in flight finishes; nothing new starts.
            while let Some(joined) = tasks.join_next().await {
                if let Ok((user, planned, Ok(()), _)) = joined {
                    count_removed(summary, &user, &planned, finishing);
                }
            }
            break;
        }
    }
    if shutdown.is_triggered() && pending.next().is_some() {
        summary.interrupted = true;
    }
    Ok(())
}

/// One user's removal: journal, DELETE, record (or cancel). The result, and whether the run
/// must stop (a fault of the service or of the ledger).
async fn remove_one(
    client: &MgmtClient,
    ledger: &Ledger,
    user: &str,
    planned: &[Removal],
) -> (Result<(), RemovalError>, bool) {
    let at = crate::ledger::now_millis();
    let revocations: Vec<Revocation> = planned
        .iter()
        .map(|r| Revocation {
            user_id: user.to_owned(),
            role_id: r.role_id.clone(),
            role_name: r.role.clone(),
            organization_id: None,
            by: REVOKED_BY.to_owned(),
            reason: r.reason.clone(),
            at,
        })
        .collect();
    // Journaled before the DELETE: a crash after Auth0 applied it is finished next time.
    if let Err(e) = ledger.begin_revocations(&revocations).await {
        return (Err(RemovalError::Ledger(e)), true);
    }
    let ids: Vec<String> = planned.iter().map(|r| r.role_id.clone()).collect();
    match client.remove_user_roles(user, &ids).await {
        Ok(()) => match ledger.record_revocations(&revocations).await {
            Ok(()) => (Ok(()), false),
            Err(e) => (Err(RemovalError::Ledger(e)), true),
        },
        Err(err) if err.is_user_not_found() => match ledger.forget_user(user, None).await {
            Ok(()) => (Err(RemovalError::UserGone), false),
            Err(e) => (Err(RemovalError::UserGoneLedger(e)), true),
        },
        Err(err) => {
            // Refused: nothing was removed, so nothing is pending.
            let fatal = is_service_fault(&err);
            match ledger.cancel_revocations(&revocations).await {
                Ok(()) => (Err(RemovalError::Refused(err)), fatal),
                Err(ledger) => (
                    Err(RemovalError::RefusedLedger {
                        refused: err,
                        ledger,
                    }),
                    true,
                ),
            }
        }
    }
}

/// Finishes the revocations an interrupted `--revoke --apply` journaled and did not record:
/// the DELETE again (idempotent: Auth0 answers 204 for a role already gone), then the record.
pub(super) async fn finish_pending(
    client: &MgmtClient,
    ledger: &Ledger,
    pending: &[Revocation],
    shutdown: &Shutdown,
    summary: &mut Summary,
) -> Result<(), ReconcileError> {
    let mut by_user: BTreeMap<String, Vec<Removal>> = BTreeMap::new();
    for p in pending.iter().filter(|p| p.organization_id.is_none()) {
        by_user.entry(p.user_id.clone()).or_default().push(Removal {
            role_id: p.role_id.clone(),
            role: p.role_name.clone(),
            rule: String::new(),
            reason: p.reason.clone(),
        });
    }
    tracing::info!(
        users = by_user.len(),
        pairs = pending.len(),
        "reconcile: finishing the revocations an interrupted run began"
    );
    apply_removals(
        client,
        ledger,
        by_user.into_iter().collect(),
        shutdown,
        summary,
        true,
    )
    .await
}

/// Counts (and logs) the roles taken back from `user`.
fn count_removed(summary: &mut Summary, user: &str, removed: &[Removal], finishing: bool) {
    if finishing {
        summary.pending_finished += removed.len() as u64;
        for removal in removed {
            tracing::info!(user_id = %user, role = %removal.role, reason = %removal.reason, "reconcile: a pending revocation finished");
        }
        return;
    }
    for removal in removed {
        tracing::info!(user_id = %user, role = %removal.role, reason = %removal.reason, "reconcile: role taken back");
        *summary
            .removed_by_role
            .entry(removal.role.clone())
            .or_default() += 1;
    }
}

/// `--revoke --apply` removes roles: without `delete:role_members` (or the broader
/// `update:users`) every removal would be refused. A token that lists its scopes and lacks
/// both stops the run here (exit 2).
pub(super) async fn require_remove_scope(client: &MgmtClient) -> Result<(), ReconcileError> {
    let Some(scopes) = client.granted_scopes().await? else {
        return Ok(());
    };
    if scopes
        .iter()
        .any(|s| s == "delete:role_members" || s == "update:users")
    {
        return Ok(());
    }
    Err(ReconcileError::Mgmt(MgmtError::Auth(
        "the application is not granted delete:role_members, which --revoke --apply needs to take roles back (grant it: Dashboard → Applications → APIs → Auth0 Management API → Machine To Machine Applications; run without --apply to plan)".to_owned(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Identity;

    fn policy(toml_text: &str) -> Policy {
        crate::policy::policy_for_tests(toml_text)
    }

    fn grant(role: &str, rule: &str) -> StandingGrant {
        StandingGrant {
            role_id: format!("rol_{role}"),
            role_name: role.to_owned(),
            rule: rule.to_owned(),
            organization_id: None,
        }
    }

    /// The grants of a database user of `email` judged against a policy giving `staff` to
    /// example.com and `app-user` by application.
    fn judged_for(email: &str, grants: &[StandingGrant], holds: bool) -> Judged {
        let policy = policy(
            r#"
            events = ["signup"]
            [[rules]]
            name = "staff"
            when = { email_domain = ["example.com"] }
            assign = ["staff"]
            [[rules]]
            name = "from-app"
            when = { client_id = ["app1"] }
            assign = ["app-user"]
            "#,
        );
        let user = Profile {
            email: Some(email.to_owned()),
            email_verified: Some(true),
            identities: vec![Identity {
                connection: Some("Username-Password-Authentication".to_owned()),
                provider: Some("auth0".to_owned()),
                ..Identity::default()
            }],
            ..Profile::default()
        };
        judge(&policy, "auth0|a", &user, grants, |_| holds)
    }

    #[test]
    fn removals_come_from_the_policys_verdicts_and_only_for_roles_still_held() {
        let judged = judged_for(
            "a@other.org",
            &[grant("staff", "staff"), grant("app-user", "from-app")],
            true,
        );
        assert_eq!(judged.removals.len(), 1, "{judged:?}");
        assert_eq!(judged.removals[0].role, "staff");
        assert_eq!(judged.kept_undecided, ["from-app.client_id"]);
        let gone = judged_for("a@other.org", &[grant("staff", "staff")], false);
        assert!(gone.removals.is_empty());
        assert_eq!(gone.already_gone, 1);
    }
}
