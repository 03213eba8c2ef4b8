//! The one judgement of a standing grant (a role this service gave and nobody took back) against
//! the current policy: whether the policy still gives it, keeps it undecided, or no longer gives
//! it. `reconcile --revoke` takes back only what this says is no longer given; `explain` prints
//! the same verdicts. Pure.
//!
//! A condition on the user's roles (`has_roles`) gates grants only: it decides whether a role is
//! given, never whether one is taken back (the role the service gave is itself one of the roles
//! the user holds, so "users without roles" would otherwise revoke its own default). Rules that
//! test it are judged undecided here. So is a rule that tests a field only a login knows, and a
//! rule that names its role from the login's application (`assign_client_metadata`). Member
//! roles in organizations are not judged here (`--revoke` takes back tenant roles only).

use serde::Serialize;

use super::{Evaluation, Policy, Profile};

/// A standing grant as the policy judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandingGrant {
    pub role_id: String,
    pub role_name: String,
    /// The rule that granted it.
    pub rule: String,
    /// The organization of a member role; `None` for a tenant role.
    pub organization_id: Option<String>,
}

/// What the current policy says of one standing grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum GrantVerdict {
    /// The policy gives the role to this user now.
    Given,
    /// Never taken back: a rule that could give it stays undecided (`because`: the `rule.key`
    /// that stayed undecided, `rule.assign_client_metadata`, or a member role's organization).
    Kept { because: String },
    /// The policy no longer gives it: what `reconcile --revoke` takes back if the user still
    /// holds it.
    NoLongerGiven { reason: String },
}

/// Judges a user's standing grants against the current policy, from the user's profile
/// (`profile.roles` is ignored: `has_roles` gates grants only). One verdict per grant, in order.
pub fn judge_standing(
    policy: &Policy,
    user_id: &str,
    profile: &Profile,
    grants: &[StandingGrant],
) -> Vec<GrantVerdict> {
    let without_roles = Profile {
        roles: None,
        ..profile.clone()
    };
    let evaluation = policy.evaluate_existing(user_id, &without_roles);
    let (given, matched, undecided): (&[String], &[String], &[super::Undecided]) = match &evaluation
    {
        Evaluation::Assign(decision) => (&decision.roles, &decision.rules, &decision.skipped),
        Evaluation::NoRule(skipped) | Evaluation::NeedsProfile(skipped) => {
            (&[], &[], skipped.as_slice())
        }
    };
    grants
        .iter()
        .map(|grant| {
            if let Some(organization) = &grant.organization_id {
                return GrantVerdict::Kept {
                    because: format!(
                        "a member role in organization {organization} (--revoke takes back tenant roles only)"
                    ),
                };
            }
            if given.contains(&grant.role_name) {
                return GrantVerdict::Given;
            }
            let rule = policy.rules().iter().find(|r| r.name == grant.rule);
            let client_metadata = rule.is_some_and(|r| r.assign_client_metadata.is_some());
            // A rule that names its role from the login's application: reconcile has no login,
            // so while the rule still matches the user (or stays undecided), what it gave stands.
            if client_metadata
                && (matched.contains(&grant.rule) || undecided.iter().any(|u| u.rule == grant.rule))
            {
                return GrantVerdict::Kept {
                    because: format!("{}.assign_client_metadata", grant.rule),
                };
            }
            // A rule that could still give the role once the undecided fields were known.
            let could_give = |rule_name: &str| {
                policy.rules().iter().any(|r| {
                    r.name == rule_name
                        && (r.assign.contains(&grant.role_name)
                            || (rule_name == grant.rule && r.assign_client_metadata.is_some()))
                })
            };
            if let Some(u) = undecided.iter().find(|u| could_give(&u.rule)) {
                return GrantVerdict::Kept { because: u.label() };
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
            GrantVerdict::NoLongerGiven { reason }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Identity;

    fn policy(toml_text: &str) -> Policy {
        crate::policy::policy_for_tests(toml_text)
    }

    fn profile(email: &str) -> Profile {
        Profile {
            email: Some(email.to_owned()),
            email_verified: Some(true),
            identities: vec![Identity {
                connection: Some("Username-Password-Authentication".to_owned()),
                provider: Some("auth0".to_owned()),
                ..Identity::default()
            }],
            ..Profile::default()
        }
    }

    fn grant(role: &str, rule: &str) -> StandingGrant {
        StandingGrant {
            role_id: format!("rol_{role}"),
            role_name: role.to_owned(),
            rule: rule.to_owned(),
            organization_id: None,
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

    fn judged(email: &str, grants: &[StandingGrant]) -> Vec<GrantVerdict> {
        judge_standing(&policy(POLICY), "auth0|a", &profile(email), grants)
    }

    #[test]
    fn a_grant_the_policy_still_gives_is_given() {
        assert_eq!(
            judged(
                "a@example.com",
                &[grant("member", "everyone"), grant("staff", "staff")]
            ),
            [GrantVerdict::Given, GrantVerdict::Given]
        );
    }

    #[test]
    fn a_profile_that_no_longer_matches_ends_that_rules_role_only() {
        let verdicts = judged(
            "a@other.org",
            &[grant("member", "everyone"), grant("staff", "staff")],
        );
        assert_eq!(verdicts[0], GrantVerdict::Given);
        assert!(
            matches!(&verdicts[1], GrantVerdict::NoLongerGiven { reason } if reason.contains("no longer matches")),
            "{verdicts:?}"
        );
    }

    #[test]
    fn a_removed_rule_and_a_rule_that_no_longer_assigns_are_named_as_the_reason() {
        let verdicts = judged(
            "a@example.com",
            &[grant("beta", "beta-testers"), grant("editor", "staff")],
        );
        assert_eq!(
            verdicts,
            [
                GrantVerdict::NoLongerGiven {
                    reason: "rule beta-testers was removed from the policy".into()
                },
                GrantVerdict::NoLongerGiven {
                    reason: "rule staff no longer assigns editor".into()
                }
            ]
        );
    }

    #[test]
    fn a_rule_only_a_login_can_decide_keeps_its_role() {
        assert_eq!(
            judged("a@example.com", &[grant("app-user", "from-app")]),
            [GrantVerdict::Kept {
                because: "from-app.client_id".into()
            }]
        );
    }

    #[test]
    fn the_users_without_roles_default_is_never_judged_against_its_own_grant() {
        // docs/policy.md's "users without roles" rule: the role it gave is a role the user
        // holds, so judging the rule on the user's roles would always take it back.
        let policy = policy(
            r#"
            events = ["signup"]
            [[rules]]
            name = "default"
            unless = { has_roles = true }
            assign = ["Viewer"]
            "#,
        );
        let mut user = profile("a@example.com");
        user.roles = Some(vec!["rol_Viewer".to_owned()]);
        let verdicts = judge_standing(&policy, "auth0|a", &user, &[grant("Viewer", "default")]);
        assert_eq!(
            verdicts,
            [GrantVerdict::Kept {
                because: "default.has_roles".into()
            }]
        );
    }

    #[test]
    fn an_undecided_client_metadata_rule_keeps_what_it_gave() {
        let policy = policy(
            r#"
            events = ["signup"]
            [[rules]]
            name = "per-app"
            when = { client_id = ["app1"] }
            assign_client_metadata = "default_role"
            "#,
        );
        let verdicts = judge_standing(
            &policy,
            "auth0|a",
            &profile("a@example.com"),
            &[grant("Partner", "per-app")],
        );
        assert_eq!(
            verdicts,
            [GrantVerdict::Kept {
                because: "per-app.assign_client_metadata".into()
            }]
        );
    }

    #[test]
    fn member_roles_are_not_judged_here() {
        let mut member = grant("staff", "staff");
        member.organization_id = Some("org_1".into());
        assert!(matches!(
            judged("a@other.org", &[member])[0],
            GrantVerdict::Kept { .. }
        ));
    }

    #[test]
    fn a_grant_of_a_rule_on_how_the_user_was_created_is_kept_never_revoked() {
        // Only the signup's `ss` tells how a user was created: reconcile has no event, so the
        // condition stays undecided and the grant stands (like a condition only a login knows).
        let policy = policy(
            r#"
            events = ["signup"]
            [[rules]]
            name = "signed-up"
            when = { created_by = "self_signup" }
            assign = ["member"]
            [[rules]]
            name = "not-staff-made"
            unless = { created_by = "admin" }
            assign = ["customer"]
        "#,
        );
        let verdicts = judge_standing(
            &policy,
            "auth0|a",
            &profile("a@example.com"),
            &[
                grant("member", "signed-up"),
                grant("customer", "not-staff-made"),
            ],
        );
        assert_eq!(
            verdicts,
            [
                GrantVerdict::Kept {
                    because: "signed-up.created_by".into()
                },
                GrantVerdict::Kept {
                    because: "not-staff-made.created_by".into()
                }
            ]
        );
    }
}
