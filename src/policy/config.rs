//! The `[policy]` section read and validated: its keys, the rules and conditions parsed
//! (`Policy::from_config`), and the warnings an administrator should read.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::event::Trigger;

use super::creation::Creation;
use super::*;

/// The condition keys a rule may use in `when` and `unless`.
pub const CONDITION_KEYS: [&str; 15] = [
    "event",
    "connection",
    "connection_id",
    "strategy",
    "strategy_type",
    "client_id",
    "client_name",
    "organization_id",
    "organization_name",
    "provider",
    "email_domain",
    "email_verified",
    "app_metadata",
    "has_roles",
    "created_by",
];

/// The keys a rule may have.
const RULE_KEYS: [&str; 7] = [
    "name",
    "when",
    "unless",
    "assign",
    "assign_in_organization",
    "assign_client_metadata",
    "final",
];

/// A policy error found at load: it names the rule and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy: unknown key `{0}` in [policy] (expected `events` or `rules`)")]
    UnknownPolicyKey(String),
    #[error("policy.events: unknown event `{0}` (expected signup, first_login, email_verified or organization_member_added)")]
    UnknownEvent(String),
    #[error("policy.events: the list is empty, so no event could ever assign a role")]
    NoEvents,
    #[error("policy.rules[{index}]: missing `name`")]
    MissingName { index: usize },
    #[error("policy rule \"{rule}\": unknown key `{key}` (expected one of: {})", RULE_KEYS.join(", "))]
    UnknownRuleKey { rule: String, key: String },
    #[error("policy rule \"{rule}\": duplicate rule name (rule names must be unique)")]
    DuplicateName { rule: String },
    #[error("policy rule \"{rule}\": `assign` is missing or empty (give `assign`, `assign_in_organization`, `assign_client_metadata`, or several)")]
    EmptyAssign { rule: String },
    #[error("policy rule \"{rule}\": `assign_in_organization` is empty (name the roles to give in the event's organization, or leave the key out)")]
    EmptyOrganizationAssign { rule: String },
    #[error("policy rule \"{rule}\": `assign_in_organization` can never apply: {why} (only first_login through an organization and organization_member_added name one)")]
    NoOrganizationEvent { rule: String, why: String },
    #[error("policy rule \"{rule}\": `assign_client_metadata` must name a client_metadata key (a non-empty string)")]
    BadClientMetadataKey { rule: String },
    #[error("policy rule \"{rule}\": `assign` contains an empty role name")]
    EmptyRoleName { rule: String },
    #[error("policy rule \"{rule}\": unknown condition key `{key}` in `{clause}` (expected one of: {})", CONDITION_KEYS.join(", "))]
    UnknownCondition {
        rule: String,
        clause: &'static str,
        key: String,
    },
    #[error("policy rule \"{rule}\": `{clause}.{key}`: {problem}")]
    BadCondition {
        rule: String,
        clause: &'static str,
        key: String,
        problem: String,
    },
}

/// The `[policy]` section as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PolicyConfig {
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

/// One `[[policy.rules]]` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuleConfig {
    pub name: Option<String>,
    pub when: Option<BTreeMap<String, serde_json::Value>>,
    pub unless: Option<BTreeMap<String, serde_json::Value>>,
    pub assign: Option<Vec<String>>,
    pub assign_in_organization: Option<Vec<String>>,
    pub assign_client_metadata: Option<serde_json::Value>,
    #[serde(rename = "final")]
    pub is_final: Option<bool>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl Policy {
    /// Validates a `[policy]` section. Every problem names the rule and the key.
    pub fn from_config(config: &PolicyConfig) -> Result<Policy, PolicyError> {
        if let Some(key) = config.unknown.keys().next() {
            return Err(PolicyError::UnknownPolicyKey(key.clone()));
        }
        let events = match &config.events {
            None => Trigger::DEFAULT.into_iter().collect(),
            Some(names) => {
                let mut events = BTreeSet::new();
                for name in names {
                    let trigger = Trigger::from_name(name)
                        .ok_or_else(|| PolicyError::UnknownEvent(name.clone()))?;
                    events.insert(trigger);
                }
                if events.is_empty() {
                    return Err(PolicyError::NoEvents);
                }
                events
            }
        };
        let mut names = BTreeSet::new();
        let mut rules = Vec::with_capacity(config.rules.len());
        for (index, raw) in config.rules.iter().enumerate() {
            let name = raw
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .ok_or(PolicyError::MissingName { index })?;
            if let Some(key) = raw.unknown.keys().next() {
                return Err(PolicyError::UnknownRuleKey {
                    rule: name,
                    key: key.clone(),
                });
            }
            if !names.insert(name.clone()) {
                return Err(PolicyError::DuplicateName { rule: name });
            }
            let assign = raw.assign.clone().unwrap_or_default();
            let assign_client_metadata = match &raw.assign_client_metadata {
                None => None,
                Some(serde_json::Value::String(key)) if !key.trim().is_empty() => Some(key.clone()),
                Some(_) => return Err(PolicyError::BadClientMetadataKey { rule: name }),
            };
            let in_organization = match &raw.assign_in_organization {
                Some(roles) if roles.is_empty() => {
                    return Err(PolicyError::EmptyOrganizationAssign { rule: name })
                }
                Some(roles) => roles.clone(),
                None => Vec::new(),
            };
            if assign.is_empty() && assign_client_metadata.is_none() && in_organization.is_empty() {
                return Err(PolicyError::EmptyAssign { rule: name });
            }
            if assign
                .iter()
                .chain(&in_organization)
                .any(|r| r.trim().is_empty())
            {
                return Err(PolicyError::EmptyRoleName { rule: name });
            }
            let unique = |roles: Vec<String>| {
                let mut unique = Vec::with_capacity(roles.len());
                for role in roles {
                    if !unique.contains(&role) {
                        unique.push(role);
                    }
                }
                unique
            };
            let when = parse_conditions(&name, "when", raw.when.as_ref())?;
            let unless = parse_conditions(&name, "unless", raw.unless.as_ref())?;
            if !in_organization.is_empty() {
                let reachable: Vec<Trigger> = events
                    .iter()
                    .copied()
                    .filter(|t| {
                        when.iter().all(|c| match c {
                            Condition::Event(named) => named.contains(t),
                            _ => true,
                        })
                    })
                    .collect();
                if !reachable.iter().any(|t| t.may_carry_organization()) {
                    let why = if reachable.is_empty() {
                        "its `when.event` names no event of [policy] events".to_owned()
                    } else {
                        let names: Vec<&str> = reachable.iter().map(|t| t.as_str()).collect();
                        format!(
                            "it fires only on {}, which never name an organization",
                            names.join(", ")
                        )
                    };
                    return Err(PolicyError::NoOrganizationEvent { rule: name, why });
                }
            }
            rules.push(Rule {
                name,
                when,
                unless,
                assign: unique(assign),
                assign_in_organization: unique(in_organization),
                assign_client_metadata,
                is_final: raw.is_final.unwrap_or(false),
            });
        }
        Ok(Policy { events, rules })
    }
}

impl Policy {
    /// What an Auth0 administrator should know about this policy before trusting it: each
    /// warning is a sentence naming the rule. None of them stops the service.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let has = |f: &dyn Fn(&Condition) -> bool| rule.when.iter().any(f);
            if has(&|c| matches!(c, Condition::EmailDomain(_)))
                && !has(&|c| matches!(c, Condition::EmailVerified(true)))
                && !has(
                    &|c| matches!(c, Condition::Event(e) if e.as_slice() == [Trigger::EmailVerified]),
                )
            {
                warnings.push(format!(
                    "rule \"{}\" trusts email_domain without email_verified = true: anyone can sign up with an address of that domain",
                    rule.name
                ));
            }
            let fires_on_sv = self.handles(Trigger::EmailVerified)
                && rule.when.iter().all(|c| match c {
                    Condition::Event(e) => e.contains(&Trigger::EmailVerified),
                    _ => true,
                });
            let about_client = |c: &Condition| {
                matches!(c, Condition::Field(Field::ClientId | Field::ClientName, _))
            };
            let about_organization = |c: &Condition| {
                matches!(
                    c,
                    Condition::Field(Field::OrganizationId | Field::OrganizationName, _)
                )
            };
            let mut on_sv = Vec::new();
            if rule.when.iter().any(about_client) {
                on_sv.push("a `when` on the application does not match");
            }
            if rule.unless.iter().any(about_client) {
                on_sv.push("an `unless` on the application excludes nobody");
            }
            if rule.when.iter().chain(&rule.unless).any(about_organization) {
                on_sv.push("an organization condition is undecided, so the rule is not applied");
            }
            if rule.assign_client_metadata.is_some() {
                on_sv.push("assign_client_metadata adds nothing");
            }
            if fires_on_sv && !on_sv.is_empty() {
                warnings.push(format!(
                    "rule \"{}\" tests the application or organization but can fire on email_verified events, which Auth0 logs against \"All Applications\" with no organization: there {}",
                    rule.name,
                    on_sv.join(", ")
                ));
            }
            if !rule.assign_in_organization.is_empty()
                && !self.handles(Trigger::OrganizationMemberAdded)
            {
                warnings.push(format!(
                    "rule \"{}\" gives roles in an organization but organization_member_added is not in [policy] events: only first logins through an organization give them, members added otherwise (auto-membership, the Management API) get theirs from `reconcile`",
                    rule.name
                ));
            }
            let later: Vec<&str> = self.rules[i + 1..]
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            if rule.is_final && !later.is_empty() {
                warnings.push(format!(
                    "rule \"{}\" is final: users it matches get none of the later rules ({})",
                    rule.name,
                    later.join(", ")
                ));
            }
        }
        warnings
    }
}

fn parse_conditions(
    rule: &str,
    clause: &'static str,
    raw: Option<&BTreeMap<String, serde_json::Value>>,
) -> Result<Vec<Condition>, PolicyError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let bad = |key: &str, problem: String| PolicyError::BadCondition {
        rule: rule.to_owned(),
        clause,
        key: key.to_owned(),
        problem,
    };
    let mut conditions = Vec::with_capacity(raw.len());
    for (key, value) in raw {
        let condition = match key.as_str() {
            "event" => {
                let names = string_list(value).map_err(|p| bad(key, p))?;
                let mut events = Vec::new();
                for name in names {
                    let trigger = Trigger::from_name(&name).ok_or_else(|| {
                        bad(
                            key,
                            format!("unknown event `{name}` (expected signup, first_login or email_verified)"),
                        )
                    })?;
                    events.push(trigger);
                }
                Condition::Event(events)
            }
            "email_domain" => {
                let mut domains = Vec::new();
                for domain in string_list(value).map_err(|p| bad(key, p))? {
                    let domain = domain.trim().trim_start_matches('@').to_ascii_lowercase();
                    let bare = domain.strip_prefix("*.").unwrap_or(&domain);
                    if bare.is_empty() || bare.contains(['@', '*', ' ']) || !bare.contains('.') {
                        return Err(bad(
                            key,
                            format!("`{domain}` is not a domain (write `example.com` or `*.example.com`)"),
                        ));
                    }
                    domains.push(domain);
                }
                Condition::EmailDomain(domains)
            }
            "email_verified" => match value {
                serde_json::Value::Bool(b) => Condition::EmailVerified(*b),
                other => return Err(bad(key, format!("expected true or false, got {other}"))),
            },
            "created_by" => {
                let mut origins = Vec::new();
                for name in string_list(value).map_err(|p| bad(key, p))? {
                    origins.push(Creation::from_name(&name).ok_or_else(|| {
                        bad(
                            key,
                            format!("unknown origin `{name}` (expected self_signup or admin)"),
                        )
                    })?);
                }
                Condition::CreatedBy(origins)
            }
            "has_roles" => match value {
                serde_json::Value::Bool(b) => Condition::HasRoles(*b),
                other => return Err(bad(key, format!("expected true or false, got {other}"))),
            },
            "app_metadata" => match value {
                serde_json::Value::Object(map) if !map.is_empty() => Condition::AppMetadata(
                    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                ),
                _ => {
                    return Err(bad(
                        key,
                        "expected a table of key = value pairs, e.g. { plan = \"pro\" }".to_owned(),
                    ))
                }
            },
            other => match Field::from_key(other) {
                Some(field) => {
                    Condition::Field(field, string_list(value).map_err(|p| bad(key, p))?)
                }
                None => {
                    return Err(PolicyError::UnknownCondition {
                        rule: rule.to_owned(),
                        clause,
                        key: key.clone(),
                    })
                }
            },
        };
        conditions.push(condition);
    }
    Ok(conditions)
}

/// A condition value: a string or a non-empty list of non-empty strings.
fn string_list(value: &serde_json::Value) -> Result<Vec<String>, String> {
    let list = match value {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    serde_json::Value::String(s) => list.push(s.clone()),
                    other => return Err(format!("expected strings, got {other}")),
                }
            }
            list
        }
        other => {
            return Err(format!(
                "expected a string or a list of strings, got {other}"
            ))
        }
    };
    if list.is_empty() {
        return Err("the list is empty, so the condition could never hold".to_owned());
    }
    if list.iter().any(|s| s.is_empty()) {
        return Err("contains an empty string".to_owned());
    }
    Ok(list)
}
