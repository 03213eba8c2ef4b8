//! `reconcile --revoke`: which of a user's standing ledger grants the current policy no longer
//! gives (pure), and the removals that take them back (`DELETE /api/v2/users/{id}/roles`, one
//! call per user). Only roles the ledger says this service granted are ever judged; a rule left
//! undecided for the user (fields only a login knows, the login's application) keeps its roles.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio::task::JoinSet;

use super::members::{self, Memberships, UserSet};
use super::{is_service_fault, Summary, FAILED_SHOWN, WRITERS};
use crate::app::StartError;
use crate::ledger::{Ledger, Revocation};
use crate::mgmt::{MgmtClient, MgmtError};
use crate::policy::{Evaluation, Policy};
use crate::progress::Progress;
use crate::shutdown::Shutdown;

/// One user's removal: the user, what was planned, how it ended, and whether the run must stop
/// (a fault of the service or of the ledger).
type RemovalDone = (String, Vec<Removal>, Result<(), String>, bool);

/// A grant the ledger holds for a user and nobody revoked since, as reconcile judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub role_id: String,
    pub role_name: String,
    /// The rule that granted it.
    pub rule: String,
}

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

/// Judges `grants` (a user's standing grants of tenant roles) against `evaluation`, the current
/// policy's verdict on the user's profile. `holds` tells whether the user still holds a grant's
/// role (by its id).
pub fn judge(
    policy: &Policy,
    evaluation: &Evaluation,
    grants: &[Standing],
    holds: impl Fn(&Standing) -> bool,
) -> Judged {
    let (given, matched, undecided): (&[String], &[String], &[crate::policy::Undecided]) =
        match evaluation {
            Evaluation::Assign(decision) => (&decision.roles, &decision.rules, &decision.skipped),
            Evaluation::NoRule(skipped) | Evaluation::NeedsProfile(skipped) => {
                (&[], &[], skipped.as_slice())
            }
        };
    // Roles a rule could still give once the undecided fields were known, with the
    // `rule.key` that stayed undecided.
    let mut undecided_roles: Vec<(&str, String)> = Vec::new();
    for u in undecided {
        if let Some(rule) = policy.rules().iter().find(|r| r.name == u.rule) {
            undecided_roles.extend(rule.assign.iter().map(|role| (role.as_str(), u.label())));
        }
    }
    let mut judged = Judged::default();
    for grant in grants {
        if given.contains(&grant.role_name) {
            continue;
        }
        let rule = policy.rules().iter().find(|r| r.name == grant.rule);
        // A rule that names its role from the login's application: reconcile has no login, so
        // while the rule still matches the user, whatever it gave stands.
        if rule.is_some_and(|r| r.assign_client_metadata.is_some()) && matched.contains(&grant.rule)
        {
            judged
                .kept_undecided
                .push(format!("{}.assign_client_metadata", grant.rule));
            continue;
        }
        if let Some((_, label)) = undecided_roles
            .iter()
            .find(|(role, _)| *role == grant.role_name)
        {
            judged.kept_undecided.push(label.clone());
            continue;
        }
        if !holds(grant) {
            judged.already_gone += 1;
            continue;
        }
        let reason = match rule {
            None => format!("rule {} was removed from the policy", grant.rule),
            Some(rule)
                if !rule.assign.contains(&grant.role_name)
                    && rule.assign_client_metadata.is_none() =>
            {
                format!("rule {} no longer assigns {}", grant.rule, grant.role_name)
            }
            Some(_) => format!(
                "the user's profile no longer matches rule {} (nor any other rule giving {})",
                grant.rule, grant.role_name
            ),
        };
        judged.removals.push(Removal {
            role_id: grant.role_id.clone(),
            role: grant.role_name.clone(),
            rule: grant.rule.clone(),
            reason,
        });
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
) -> Result<(), StartError> {
    let policy_ids: BTreeSet<&String> = role_ids.values().collect();
    let roles = ledger
        .standing_roles()
        .await
        .map_err(|e| StartError::Reconcile(format!("the ledger: {e}")))?;
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
            Err(err) => return Err(StartError::Mgmt(err)),
        };
        memberships
            .by_role_id
            .insert(role_id, UserSet::from_fingerprints(fingerprints));
    }
    Ok(())
}

/// Removes the planned roles (one `DELETE /api/v2/users/{id}/roles` per user, [`WRITERS`] at
/// once) and records each revocation once Auth0 accepted it. A user deleted since the export
/// (404) is forgotten by the ledger. The ledger is the journal: a removal recorded is not
/// planned again, and one done but not recorded (a crash between) is repeated (idempotent).
pub(super) async fn apply_removals(
    client: &MgmtClient,
    ledger: &Ledger,
    removals: Vec<(String, Vec<Removal>)>,
    shutdown: &Shutdown,
    summary: &mut Summary,
) -> Result<(), StartError> {
    let mut tasks: JoinSet<RemovalDone> = JoinSet::new();
    let mut pending = removals.into_iter();
    loop {
        while tasks.len() < WRITERS && !shutdown.is_triggered() {
            let Some((user, planned)) = pending.next() else {
                break;
            };
            let (client, ledger) = (client.clone(), ledger.clone());
            tasks.spawn(async move {
                let ids: Vec<String> = planned.iter().map(|r| r.role_id.clone()).collect();
                match client.remove_user_roles(&user, &ids).await {
                    Ok(()) => {
                        let at = crate::ledger::now_millis();
                        let revocations: Vec<Revocation> = planned
                            .iter()
                            .map(|r| Revocation {
                                user_id: user.clone(),
                                role_id: r.role_id.clone(),
                                role_name: r.role.clone(),
                                organization_id: None,
                                by: "reconcile --revoke".to_owned(),
                                reason: r.reason.clone(),
                                at,
                            })
                            .collect();
                        let recorded = ledger
                            .record_revocations(&revocations)
                            .await
                            .map_err(|e| format!("the ledger: {e}"));
                        let fatal = recorded.is_err();
                        (user, planned, recorded, fatal)
                    }
                    Err(err) if err.is_user_not_found() => {
                        let forgotten = ledger.forget_user(&user).await;
                        let fatal = forgotten.is_err();
                        let said = match forgotten {
                            Ok(()) => {
                                "the user no longer exists (forgotten by the ledger)".to_owned()
                            }
                            Err(e) => format!("the user no longer exists; the ledger: {e}"),
                        };
                        (user, planned, Err(said), fatal)
                    }
                    Err(err) => {
                        let fatal = is_service_fault(&err);
                        (user, planned, Err(err.to_string()), fatal)
                    }
                }
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (user, planned, result, fatal) = joined.map_err(|e| {
            StartError::Reconcile(format!("a removal's task ended without a result: {e}"))
        })?;
        match result {
            Ok(()) => count_removed(summary, &user, &planned),
            Err(error) => {
                tracing::warn!(user_id = %user, error = %error, "reconcile: could not take roles back");
                if fatal {
                    summary.interrupted = true;
                    summary.stopped_with.get_or_insert(error.clone());
                }
                summary.failed_total += planned.len() as u64;
                if summary.removal_failed.len() < FAILED_SHOWN {
                    summary.removal_failed.push((user, error));
                }
            }
        }
        if summary.interrupted {
            // What is in flight finishes; nothing new starts.
            while let Some(joined) = tasks.join_next().await {
                if let Ok((user, planned, Ok(()), _)) = joined {
                    count_removed(summary, &user, &planned);
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

/// Counts (and logs) the roles taken back from `user`.
fn count_removed(summary: &mut Summary, user: &str, removed: &[Removal]) {
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
pub(super) async fn require_remove_scope(client: &MgmtClient) -> Result<(), StartError> {
    let Some(scopes) = client.granted_scopes().await.map_err(StartError::Mgmt)? else {
        return Ok(());
    };
    if scopes
        .iter()
        .any(|s| s == "delete:role_members" || s == "update:users")
    {
        return Ok(());
    }
    Err(StartError::Mgmt(MgmtError::Auth(
        "the application is not granted delete:role_members, which --revoke --apply needs to take roles back (grant it: Dashboard → Applications → APIs → Auth0 Management API → Machine To Machine Applications; run without --apply to plan)".to_owned(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Identity, Profile};
    use crate::policy::PolicyConfig;

    fn policy(toml_text: &str) -> Policy {
        let config: PolicyConfig = match toml::from_str(toml_text) {
            Ok(config) => config,
            Err(err) => panic!("bad test policy: {err}"),
        };
        match Policy::from_config(&config) {
            Ok(policy) => policy,
            Err(err) => panic!("bad test policy: {err:?}"),
        }
    }

    fn profile(email: &str, connection: &str) -> Profile {
        Profile {
            email: Some(email.to_owned()),
            email_verified: Some(true),
            identities: vec![Identity {
                connection: Some(connection.to_owned()),
                provider: Some("auth0".to_owned()),
                ..Identity::default()
            }],
            ..Profile::default()
        }
    }

    fn grant(role: &str, rule: &str) -> Standing {
        Standing {
            role_id: format!("rol_{role}"),
            role_name: role.to_owned(),
            rule: rule.to_owned(),
        }
    }

    const POLICY: &str = r#"
        events = ["signup"]
        [[rules]]
        name = "everyone"
        assign = ["member"]
        [[rules]]
        name = "staff"
        when = { email_domain = ["example.com"] }
        assign = ["staff"]
        [[rules]]
        name = "from-app"
        when = { client_id = ["app1"] }
        assign = ["app-user"]
    "#;

    /// The grants of a database user of `email` judged against [`POLICY`].
    fn judged_for(email: &str, grants: &[Standing], holds: bool) -> Judged {
        let policy = policy(POLICY);
        let user = profile(email, "Username-Password-Authentication");
        let evaluation = policy.evaluate_existing("auth0|a", &user);
        judge(&policy, &evaluation, grants, |_| holds)
    }

    #[test]
    fn a_grant_the_policy_still_gives_is_kept() {
        let judged = judged_for(
            "a@example.com",
            &[grant("member", "everyone"), grant("staff", "staff")],
            true,
        );
        assert_eq!(judged, Judged::default());
    }

    #[test]
    fn a_profile_that_no_longer_matches_removes_that_rules_role_only() {
        let judged = judged_for(
            "a@other.org",
            &[grant("member", "everyone"), grant("staff", "staff")],
            true,
        );
        assert_eq!(judged.removals.len(), 1, "{judged:?}");
        assert_eq!(judged.removals[0].role, "staff");
        assert_eq!(judged.removals[0].rule, "staff");
        assert!(
            judged.removals[0].reason.contains("no longer matches"),
            "{}",
            judged.removals[0].reason
        );
    }

    #[test]
    fn a_removed_rule_and_a_rule_that_no_longer_assigns_are_named_as_the_reason() {
        let judged = judged_for(
            "a@example.com",
            &[grant("beta", "beta-testers"), grant("editor", "staff")],
            true,
        );
        let reasons: Vec<&str> = judged.removals.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "rule beta-testers was removed from the policy",
                "rule staff no longer assigns editor"
            ]
        );
    }

    #[test]
    fn a_rule_only_a_login_can_decide_never_causes_a_removal() {
        let judged = judged_for("a@example.com", &[grant("app-user", "from-app")], true);
        assert!(judged.removals.is_empty(), "{judged:?}");
        assert_eq!(judged.kept_undecided, ["from-app.client_id"]);
    }

    #[test]
    fn a_role_the_user_no_longer_holds_is_not_removed_again() {
        let judged = judged_for("a@other.org", &[grant("staff", "staff")], false);
        assert!(judged.removals.is_empty());
        assert_eq!(judged.already_gone, 1);
    }
}
