//! `reconcile --revoke`: which of a user's standing ledger grants the current policy no longer
//! gives (pure), and the removals that take them back (`DELETE /api/v2/users/{id}/roles`, one
//! call per user). Only roles the ledger says this service granted are ever judged; a rule left
//! undecided for the user (fields only a login knows, the login's application) keeps its roles.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::policy::{Evaluation, Policy};

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
    // Roles a rule could still give once the undecided fields were known.
    let mut undecided_roles: BTreeSet<&str> = BTreeSet::new();
    let mut undecided_label: Vec<(&str, String)> = Vec::new();
    for u in undecided {
        if let Some(rule) = policy.rules().iter().find(|r| r.name == u.rule) {
            for role in &rule.assign {
                undecided_roles.insert(role.as_str());
                undecided_label.push((role.as_str(), u.label()));
            }
        }
    }
    let mut judged = Judged::default();
    for grant in grants {
        if given.iter().any(|r| *r == grant.role_name) {
            continue;
        }
        let rule = policy.rules().iter().find(|r| r.name == grant.rule);
        // A rule that names its role from the login's application: reconcile has no login, so
        // while the rule still matches the user, whatever it gave stands.
        if rule.is_some_and(|r| r.assign_client_metadata.is_some())
            && matched.iter().any(|m| *m == grant.rule)
        {
            judged
                .kept_undecided
                .push(format!("{}.assign_client_metadata", grant.rule));
            continue;
        }
        if undecided_roles.contains(grant.role_name.as_str()) {
            if let Some((_, label)) = undecided_label
                .iter()
                .find(|(role, _)| *role == grant.role_name)
            {
                judged.kept_undecided.push(label.clone());
            }
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

    #[test]
    fn a_grant_the_policy_still_gives_is_kept() {
        let policy = policy(POLICY);
        let user = profile("a@example.com", "Username-Password-Authentication");
        let evaluation = policy.evaluate_existing("auth0|a", &user);
        let judged = judge(
            &policy,
            &evaluation,
            &[grant("member", "everyone"), grant("staff", "staff")],
            |_| true,
        );
        assert_eq!(judged, Judged::default());
    }

    #[test]
    fn a_profile_that_no_longer_matches_removes_that_rules_role_only() {
        let policy = policy(POLICY);
        let user = profile("a@other.org", "Username-Password-Authentication");
        let evaluation = policy.evaluate_existing("auth0|a", &user);
        let judged = judge(
            &policy,
            &evaluation,
            &[grant("member", "everyone"), grant("staff", "staff")],
            |_| true,
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
        let policy = policy(POLICY);
        let user = profile("a@example.com", "Username-Password-Authentication");
        let evaluation = policy.evaluate_existing("auth0|a", &user);
        let judged = judge(
            &policy,
            &evaluation,
            &[grant("beta", "beta-testers"), grant("editor", "staff")],
            |_| true,
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
        let policy = policy(POLICY);
        let user = profile("a@example.com", "Username-Password-Authentication");
        let evaluation = policy.evaluate_existing("auth0|a", &user);
        let judged = judge(
            &policy,
            &evaluation,
            &[grant("app-user", "from-app")],
            |_| true,
        );
        assert!(judged.removals.is_empty(), "{judged:?}");
        assert_eq!(judged.kept_undecided, ["from-app.client_id"]);
    }

    #[test]
    fn a_role_the_user_no_longer_holds_is_not_removed_again() {
        let policy = policy(POLICY);
        let user = profile("a@other.org", "Username-Password-Authentication");
        let evaluation = policy.evaluate_existing("auth0|a", &user);
        let judged = judge(&policy, &evaluation, &[grant("staff", "staff")], |_| false);
        assert!(judged.removals.is_empty());
        assert_eq!(judged.already_gone, 1);
    }
}
