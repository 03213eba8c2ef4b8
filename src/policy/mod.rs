//! The default-role policy: rules read from the `[policy]` config section, validated at load,
//! and evaluated against an event (and, only when a rule needs it, the user's profile).
//! Pure: no I/O, no async.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use crate::event::{email_domain, Identity, LogEvent, Trigger};

pub mod creation;
pub mod standing;

use creation::{creation_of, Creation};

/// A policy from the text of a `[policy]` section's contents, for unit tests (panics on a bad
/// one: the text is the test's own).
#[cfg(test)]
pub(crate) fn policy_for_tests(toml_text: &str) -> Policy {
    let config: PolicyConfig = match toml::from_str(toml_text) {
        Ok(config) => config,
        Err(err) => panic!("bad test policy: {err}"),
    };
    match Policy::from_config(&config) {
        Ok(policy) => policy,
        Err(err) => panic!("bad test policy: {err:?}"),
    }
}

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

/// A validated policy, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    events: BTreeSet<Trigger>,
    rules: Vec<Rule>,
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub when: Vec<Condition>,
    pub unless: Vec<Condition>,
    /// Roles named in the policy (resolved at start-up).
    pub assign: Vec<String>,
    /// Tenant roles given as the member's roles in the event's organization
    /// (`POST /api/v2/organizations/{id}/members/{user_id}/roles`). Only events that name an
    /// organization can give them; a rule with nothing else does not apply to other events.
    pub assign_in_organization: Vec<String>,
    /// The key of the event application's `client_metadata` whose value names a role to give.
    pub assign_client_metadata: Option<String>,
    pub is_final: bool,
}

/// One condition: a key and what it accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Event(Vec<Trigger>),
    /// A string field of the event, compared exactly (Auth0 names are case-sensitive).
    Field(Field, Vec<String>),
    /// Lowercased domains; a leading `*.` matches any subdomain.
    EmailDomain(Vec<String>),
    EmailVerified(bool),
    /// Whether the user holds any role at all (`GET /api/v2/users/{id}/roles` when a rule
    /// needs it; roles this service gave the user count).
    HasRoles(bool),
    /// `app_metadata.<key>` of the user's profile equals the given JSON value.
    AppMetadata(BTreeMap<String, serde_json::Value>),
    /// How the user was created (`self_signup`, `admin`), as the event tells it
    /// ([`creation::creation_of`]); undecided when it does not.
    CreatedBy(Vec<Creation>),
}

/// Event fields a condition can test by exact string equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Connection,
    ConnectionId,
    Strategy,
    StrategyType,
    ClientId,
    ClientName,
    OrganizationId,
    OrganizationName,
    Provider,
}

impl Field {
    fn key(self) -> &'static str {
        match self {
            Field::Connection => "connection",
            Field::ConnectionId => "connection_id",
            Field::Strategy => "strategy",
            Field::StrategyType => "strategy_type",
            Field::ClientId => "client_id",
            Field::ClientName => "client_name",
            Field::OrganizationId => "organization_id",
            Field::OrganizationName => "organization_name",
            Field::Provider => "provider",
        }
    }

    fn from_key(key: &str) -> Option<Field> {
        [
            Field::Connection,
            Field::ConnectionId,
            Field::Strategy,
            Field::StrategyType,
            Field::ClientId,
            Field::ClientName,
            Field::OrganizationId,
            Field::OrganizationName,
            Field::Provider,
        ]
        .into_iter()
        .find(|f| f.key() == key)
    }
}

impl Condition {
    /// The config key of this condition.
    pub fn key(&self) -> &'static str {
        match self {
            Condition::Event(_) => "event",
            Condition::Field(field, _) => field.key(),
            Condition::EmailDomain(_) => "email_domain",
            Condition::EmailVerified(_) => "email_verified",
            Condition::HasRoles(_) => "has_roles",
            Condition::AppMetadata(_) => "app_metadata",
            Condition::CreatedBy(_) => "created_by",
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Event(events) => {
                let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
                write!(f, "event is any of [{}]", names.join(", "))
            }
            Condition::Field(field, values) => {
                write!(f, "{} is any of [{}]", field.key(), values.join(", "))
            }
            Condition::EmailDomain(domains) => {
                write!(f, "email domain is any of [{}]", domains.join(", "))
            }
            Condition::EmailVerified(v) => write!(f, "email_verified is {v}"),
            Condition::HasRoles(v) => write!(f, "has_roles is {v}"),
            Condition::AppMetadata(pairs) => {
                let parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                write!(f, "app_metadata has {}", parts.join(", "))
            }
            Condition::CreatedBy(origins) => {
                let names: Vec<&str> = origins.iter().map(|c| c.as_str()).collect();
                write!(f, "created_by is any of [{}]", names.join(", "))
            }
        }
    }
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

    /// The triggers this policy acts on.
    pub fn events(&self) -> impl Iterator<Item = Trigger> + '_ {
        self.events.iter().copied()
    }

    /// Whether this policy acts on `trigger` at all.
    pub fn handles(&self, trigger: Trigger) -> bool {
        self.events.contains(&trigger)
    }

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

    /// The rules in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every role name the policy itself names (`assign`), sorted and unique. Roles named by
    /// an application's `client_metadata` are looked up when first seen.
    pub fn role_names(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.assign.iter().chain(&r.assign_in_organization).cloned())
            .collect()
    }

    /// Whether some rule gives roles in an organization (`assign_in_organization`): the
    /// service then writes organization member roles, and `reconcile` reads organizations.
    pub fn uses_organizations(&self) -> bool {
        self.rules
            .iter()
            .any(|r| !r.assign_in_organization.is_empty())
    }

    /// Whether some rule gives the role an application's `client_metadata` names (the service
    /// then needs `read:clients`).
    pub fn uses_client_metadata(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.assign_client_metadata.is_some())
    }

    /// Whether some rule tests `has_roles` (which needs every role a user holds).
    pub fn uses_has_roles(&self) -> bool {
        self.rules.iter().any(|r| {
            r.when
                .iter()
                .chain(&r.unless)
                .any(|c| matches!(c, Condition::HasRoles(_)))
        })
    }

    /// Evaluates the rules for an event.
    ///
    /// A condition on something the event lacks is undecided, never false. Without `profile`,
    /// when a read can decide it (the user's profile, their roles, the application), the
    /// result is `NeedsProfile`: the caller reads what the undecided keys need and evaluates
    /// again with `Some(profile)`. A rule that stays undecided (the event lacks a login field
    /// no read can give, such as `client_id`) is not applied: it is listed in `skipped` and
    /// later rules are evaluated as if it did not match.
    pub fn evaluate(
        &self,
        trigger: Trigger,
        event: &LogEvent,
        profile: Option<&Profile>,
    ) -> Evaluation {
        let read_done = profile.is_some();
        // An event that carries the profile (Event Streams) needs no user read.
        let profile = profile.or(event.profile.as_deref());
        let facts = Facts {
            triggers: vec![trigger],
            event,
            profile,
            read_done,
            existing: false,
        };
        self.evaluate_facts(&facts)
    }

    /// Judges an existing user (`reconcile`) as if each trigger the policy handles had
    /// happened: `event` conditions hold (`email_verified` only when the profile's email is
    /// verified), connection, strategy and provider come from the primary identity, the rest
    /// from the profile. Conditions only a login knows (`client_id`, `client_name`,
    /// `organization_id`, `connection_id`) make their rule not apply (listed in `skipped`), and
    /// `assign_client_metadata` adds nothing. `profile.roles` must be set when the policy
    /// uses `has_roles`.
    pub fn evaluate_existing(&self, user_id: &str, profile: &Profile) -> Evaluation {
        let triggers: Vec<Trigger> = self
            .events
            .iter()
            .copied()
            .filter(|t| *t != Trigger::EmailVerified || profile.email_verified == Some(true))
            .collect();
        if triggers.is_empty() {
            return Evaluation::NoRule(Vec::new());
        }
        let event = LogEvent {
            event_type: String::new(),
            user_id: Some(user_id.to_owned()),
            ..LogEvent::default()
        };
        let facts = Facts {
            triggers,
            event: &event,
            profile: Some(profile),
            read_done: true,
            existing: true,
        };
        self.evaluate_facts(&facts)
    }

    /// Judges an existing member of an organization (`reconcile`) as if each trigger the policy
    /// handles that can name an organization (`first_login`, `organization_member_added`) had
    /// happened in it: like [`Policy::evaluate_existing`], but `organization_id` and
    /// `organization_name` are known. Only the decision's `organization_roles` concern the
    /// membership (tenant roles are the users' pass).
    pub fn evaluate_member(
        &self,
        user_id: &str,
        profile: &Profile,
        organization_id: &str,
        organization_name: Option<&str>,
    ) -> Evaluation {
        let triggers: Vec<Trigger> = self
            .events
            .iter()
            .copied()
            .filter(|t| t.may_carry_organization())
            .collect();
        if triggers.is_empty() {
            return Evaluation::NoRule(Vec::new());
        }
        let event = LogEvent {
            event_type: String::new(),
            user_id: Some(user_id.to_owned()),
            organization_id: Some(organization_id.to_owned()),
            organization_name: organization_name.map(str::to_owned),
            ..LogEvent::default()
        };
        let facts = Facts {
            triggers,
            event: &event,
            profile: Some(profile),
            read_done: true,
            existing: true,
        };
        self.evaluate_facts(&facts)
    }

    /// The rules `reconcile` does not apply to existing users, and why (`check` prints them).
    pub fn skipped_for_existing_users(&self) -> Vec<(String, String)> {
        let mut skipped = Vec::new();
        for rule in &self.rules {
            let login_keys: Vec<&str> = rule
                .when
                .iter()
                .chain(&rule.unless)
                .filter(|c| c.login_only())
                .map(Condition::key)
                .collect();
            if !login_keys.is_empty() {
                skipped.push((
                    rule.name.clone(),
                    format!(
                        "tests {}, which only a login knows",
                        login_keys.join(" and ")
                    ),
                ));
            } else if rule.assign.is_empty() && !rule.assign_in_organization.is_empty() {
                skipped.push((
                    rule.name.clone(),
                    "gives roles only in an organization (reconcile judges each organization's members for it)"
                        .to_owned(),
                ));
            } else if rule.assign_client_metadata.is_some() && rule.assign.is_empty() {
                skipped.push((
                    rule.name.clone(),
                    "assigns only from the login's application (assign_client_metadata)".to_owned(),
                ));
            }
        }
        skipped
    }

    fn evaluate_facts(&self, facts: &Facts<'_>) -> Evaluation {
        let mut roles: Vec<String> = Vec::new();
        let mut organization_roles: Vec<String> = Vec::new();
        let mut client_roles: Vec<ClientRole> = Vec::new();
        let mut matched = Vec::new();
        let mut pending: Vec<Undecided> = Vec::new();
        let mut skipped: Vec<Undecided> = Vec::new();
        let undecided = |rule: &Rule, keys: &[Missing]| -> Vec<Undecided> {
            keys.iter()
                .map(|m| Undecided {
                    rule: rule.name.clone(),
                    key: m.key,
                })
                .collect()
        };
        let client_unread = |rule: &Rule| -> Option<Undecided> {
            let key = rule.assign_client_metadata.as_deref()?;
            matches!(facts.client_metadata(key), ClientMetadata::Unread).then(|| Undecided {
                rule: rule.name.clone(),
                key: ASSIGN_CLIENT_METADATA,
            })
        };
        let in_organization = facts.event.organization().is_some();
        for rule in &self.rules {
            // A rule that only gives roles in an organization does not apply to an event that
            // names none (a signup, a login outside any organization): not even as final.
            if !in_organization
                && rule.assign.is_empty()
                && rule.assign_client_metadata.is_none()
                && !rule.assign_in_organization.is_empty()
            {
                continue;
            }
            match rule.matches(facts) {
                Truth::False => {}
                Truth::Unknown(keys) => {
                    let unreadable: Vec<Missing> =
                        keys.iter().copied().filter(|m| !m.readable).collect();
                    if !unreadable.is_empty() || facts.read_done {
                        let keys = if unreadable.is_empty() {
                            keys
                        } else {
                            unreadable
                        };
                        skipped.extend(undecided(rule, &keys));
                    } else {
                        pending.extend(undecided(rule, &keys));
                        // If the read shows the rule applies, its application is needed too:
                        // read both at once, or the second evaluation could not tell it.
                        pending.extend(client_unread(rule));
                    }
                }
                Truth::True => {
                    if !pending.is_empty() {
                        // An earlier undecided rule may or may not apply (and may be final):
                        // keep looking only for more undecided conditions, this rule's
                        // application among them.
                        pending.extend(client_unread(rule));
                        continue;
                    }
                    if let Some(key) = &rule.assign_client_metadata {
                        match facts.client_metadata(key) {
                            ClientMetadata::Named(name) => client_roles.push(ClientRole {
                                rule: rule.name.clone(),
                                key: key.clone(),
                                name: name.to_owned(),
                            }),
                            ClientMetadata::Nothing => {}
                            ClientMetadata::Unread => {
                                pending.push(Undecided {
                                    rule: rule.name.clone(),
                                    key: ASSIGN_CLIENT_METADATA,
                                });
                                continue;
                            }
                        }
                    }
                    matched.push(rule.name.clone());
                    for role in &rule.assign {
                        if !roles.contains(role) {
                            roles.push(role.clone());
                        }
                    }
                    if in_organization {
                        for role in &rule.assign_in_organization {
                            if !organization_roles.contains(role) {
                                organization_roles.push(role.clone());
                            }
                        }
                    }
                    if rule.is_final {
                        break;
                    }
                }
            }
        }
        if !pending.is_empty() {
            return Evaluation::NeedsProfile(pending);
        }
        if matched.is_empty() {
            Evaluation::NoRule(skipped)
        } else {
            Evaluation::Assign(Decision {
                roles,
                organization_roles,
                rules: matched,
                client_roles,
                skipped,
            })
        }
    }
}

/// The key an undecided `assign_client_metadata` is reported under: the event's application
/// must be read (`GET /api/v2/clients/{id}`).
pub const ASSIGN_CLIENT_METADATA: &str = "assign_client_metadata";

/// What the policy decided for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluation {
    /// Roles to assign, and the names of the rules that matched (the audit trail).
    Assign(Decision),
    /// No rule matched; the rules not applied because they stayed undecided.
    NoRule(Vec<Undecided>),
    /// Some conditions need a read: the user's profile (`GET /api/v2/users/{id}`), their
    /// roles (`has_roles`) or the application (`assign_client_metadata`).
    NeedsProfile(Vec<Undecided>),
}

/// Roles and the rules that produced them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Roles the policy names.
    pub roles: Vec<String>,
    /// Roles to give as the member's roles in the event's organization
    /// (`assign_in_organization`; empty when the event names no organization).
    pub organization_roles: Vec<String>,
    pub rules: Vec<String>,
    /// Role names read from the application's `client_metadata`: the caller checks that the
    /// tenant has them before assigning.
    pub client_roles: Vec<ClientRole>,
    /// Rules not applied because they stayed undecided.
    pub skipped: Vec<Undecided>,
}

/// A role named by the event application's `client_metadata[key]`, for `rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRole {
    pub rule: String,
    pub key: String,
    pub name: String,
}

/// A condition (or `assign_client_metadata`) that could not be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    pub rule: String,
    pub key: &'static str,
}

impl Undecided {
    /// `rule.key`, as reports print it.
    pub fn label(&self) -> String {
        format!("{}.{}", self.rule, self.key)
    }
}

pub use crate::event::Profile;

/// The strategy type of a strategy, as Auth0 classifies connections (`database`, `social`,
/// `enterprise`, `passwordless`). `is_social` is the identity's `isSocial` when known.
/// Unknown strategies without `is_social` give `None`.
pub fn strategy_type_of(strategy: &str, is_social: Option<bool>) -> Option<&'static str> {
    match strategy {
        "auth0" => return Some("database"),
        "email" | "sms" => return Some("passwordless"),
        _ => {}
    }
    match is_social {
        Some(true) => Some("social"),
        Some(false) => Some("enterprise"),
        None if ENTERPRISE_STRATEGIES.contains(&strategy) => Some("enterprise"),
        None if SOCIAL_STRATEGIES.contains(&strategy) => Some("social"),
        None => None,
    }
}

/// Enterprise connection strategies (Auth0's catalogue).
pub const ENTERPRISE_STRATEGIES: [&str; 13] = [
    "ad",
    "adfs",
    "auth0-adldap",
    "google-apps",
    "ip",
    "office365",
    "oidc",
    "okta",
    "pingfederate",
    "samlp",
    "sharepoint",
    "waad",
    "custom",
];

/// Common social connection strategies (Auth0's catalogue; custom social is `oauth2`).
pub const SOCIAL_STRATEGIES: [&str; 22] = [
    "amazon",
    "apple",
    "baidu",
    "bitbucket",
    "box",
    "dropbox",
    "dwolla",
    "evernote",
    "exact",
    "facebook",
    "github",
    "google-oauth2",
    "instagram",
    "line",
    "linkedin",
    "oauth2",
    "paypal",
    "salesforce",
    "shopify",
    "twitter",
    "windowslive",
    "yahoo",
];

/// A key a condition could not decide; `readable` when a read (profile, roles, application)
/// can decide it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Missing {
    key: &'static str,
    readable: bool,
}

/// Three-valued truth: a condition may be undecidable from what is known.
#[derive(Debug, PartialEq)]
enum Truth {
    True,
    False,
    Unknown(Vec<Missing>),
}

/// What `client_metadata[key]` of the event's application says.
enum ClientMetadata<'a> {
    Named(&'a str),
    /// No application, no such key, or an empty value: nothing to add.
    Nothing,
    /// The application has not been read yet.
    Unread,
}

/// What the conditions are evaluated against.
struct Facts<'a> {
    /// The trigger of the event (or, for an existing user, every trigger that applies).
    triggers: Vec<Trigger>,
    event: &'a LogEvent,
    profile: Option<&'a Profile>,
    /// Whether every read has been made: what is still unknown stays unknown.
    read_done: bool,
    /// Judging an existing user, not an event.
    existing: bool,
}

impl<'a> Facts<'a> {
    fn event_field(&self, field: Field) -> Option<&'a str> {
        let e = self.event;
        let value = match field {
            Field::Connection => e.connection.as_deref(),
            Field::ConnectionId => e.connection_id.as_deref(),
            Field::Strategy => e.strategy.as_deref(),
            Field::StrategyType => e.strategy_type.as_deref(),
            Field::ClientId => e.client_id.as_deref(),
            Field::ClientName => e.client_name.as_deref(),
            Field::OrganizationId => e.organization_id.as_deref(),
            Field::OrganizationName => e.organization_name.as_deref(),
            Field::Provider => e.provider(),
        };
        value.filter(|v| !v.is_empty())
    }

    /// The identity of this login: the one whose connection (else strategy) the event names,
    /// else the primary one (`identities[0]`).
    fn identity(&self) -> Option<&'a Identity> {
        let identities = &self.profile?.identities;
        let e = self.event;
        let named = |wanted: Option<&str>, of: fn(&Identity) -> Option<&str>| {
            wanted
                .filter(|w| !w.is_empty())
                .and_then(|w| identities.iter().find(|i| of(i) == Some(w)))
        };
        named(e.connection.as_deref(), |i| i.connection.as_deref())
            .or_else(|| named(e.strategy.as_deref(), |i| i.provider.as_deref()))
            .or_else(|| identities.first())
    }

    /// A field's value: from the event, else (for what a profile knows) from the identity of
    /// this login. `Err` when unknown, with whether a read could tell it.
    fn field(&self, field: Field) -> Result<&'a str, Missing> {
        let login_only = matches!(
            field,
            Field::ConnectionId
                | Field::ClientId
                | Field::ClientName
                | Field::OrganizationId
                | Field::OrganizationName
        );
        // An existing user has no login: only the user id (the provider) is known, and, for a
        // member of an organization, the organization.
        if !self.existing
            || matches!(
                field,
                Field::Provider | Field::OrganizationId | Field::OrganizationName
            )
        {
            if let Some(value) = self.event_field(field) {
                return Ok(value);
            }
        }
        let missing = Missing {
            key: field.key(),
            readable: !login_only && (self.profile.is_none() || !self.read_done),
        };
        if login_only {
            return Err(missing);
        }
        let identity = self.identity().ok_or(missing)?;
        let strategy = || {
            self.event_field(Field::Strategy)
                .filter(|_| !self.existing)
                .or(identity.provider.as_deref())
        };
        let value = match field {
            Field::Connection => identity.connection.as_deref(),
            Field::Strategy | Field::Provider => strategy(),
            Field::StrategyType => strategy().and_then(|s| strategy_type_of(s, identity.is_social)),
            _ => None,
        };
        value.filter(|v| !v.is_empty()).ok_or(missing)
    }

    fn client_metadata(&self, key: &str) -> ClientMetadata<'a> {
        // An `sv` is logged against "All Applications" (the tenant's global client), not the
        // application the user signed up through: it names no role.
        let verification = self.triggers == [Trigger::EmailVerified];
        if self.existing || verification || self.event_field(Field::ClientId).is_none() {
            return ClientMetadata::Nothing;
        }
        match self.profile.and_then(|p| p.client_metadata.as_ref()) {
            Some(metadata) => match metadata.get(key).map(|v| v.trim()) {
                Some(name) if !name.is_empty() => ClientMetadata::Named(name),
                _ => ClientMetadata::Nothing,
            },
            None if self.read_done => ClientMetadata::Nothing,
            None => ClientMetadata::Unread,
        }
    }

    fn test(&self, condition: &Condition) -> Truth {
        let decided = |b: bool| if b { Truth::True } else { Truth::False };
        let unknown = |key: &'static str| {
            Truth::Unknown(vec![Missing {
                key,
                readable: self.profile.is_none() || !self.read_done,
            }])
        };
        match condition {
            Condition::Event(events) => decided(self.triggers.iter().any(|t| events.contains(t))),
            Condition::Field(field, values) => match self.field(*field) {
                Ok(actual) => decided(values.iter().any(|v| v == actual)),
                Err(missing) => Truth::Unknown(vec![missing]),
            },
            Condition::EmailDomain(domains) => {
                let domain = match self.event.email() {
                    Some(email) => email_domain(email),
                    None => match self.profile {
                        Some(p) => p.email.as_deref().and_then(email_domain),
                        None => return unknown("email_domain"),
                    },
                };
                decided(domain.is_some_and(|d| domains.iter().any(|p| domain_matches(p, &d))))
            }
            Condition::EmailVerified(wanted) => {
                let verified = if !self.existing && self.triggers == [Trigger::EmailVerified] {
                    Some(true)
                } else {
                    self.profile.map(|p| p.email_verified.unwrap_or(false))
                };
                match verified {
                    Some(v) => decided(v == *wanted),
                    None => unknown("email_verified"),
                }
            }
            Condition::HasRoles(wanted) => match self.profile.and_then(|p| p.roles.as_ref()) {
                Some(roles) => decided(roles.is_empty() != *wanted),
                None => unknown("has_roles"),
            },
            Condition::CreatedBy(origins) => {
                match creation_of(self.event, &self.triggers, self.existing) {
                    Some(origin) => decided(origins.contains(&origin)),
                    // Only the event tells it: no read can.
                    None => Truth::Unknown(vec![Missing {
                        key: "created_by",
                        readable: false,
                    }]),
                }
            }
            Condition::AppMetadata(pairs) => match self.profile {
                None => unknown("app_metadata"),
                Some(p) => decided(pairs.iter().all(|(key, wanted)| {
                    p.app_metadata
                        .as_ref()
                        .and_then(|m| m.get(key))
                        .is_some_and(|actual| actual == wanted)
                })),
            },
        }
    }
}

impl Condition {
    /// Whether only a login can tell this condition (no profile read can).
    pub fn login_only(&self) -> bool {
        matches!(self, Condition::CreatedBy(_))
            || matches!(
                self,
                Condition::Field(
                    Field::ConnectionId
                        | Field::ClientId
                        | Field::ClientName
                        | Field::OrganizationId
                        | Field::OrganizationName,
                    _
                )
            )
    }
}

impl Rule {
    /// `when` (all must hold) and not `unless` (any holds), in three-valued logic.
    fn matches(&self, facts: &Facts<'_>) -> Truth {
        let mut unknown = Vec::new();
        for condition in &self.when {
            match facts.test(condition) {
                Truth::False => return Truth::False,
                Truth::Unknown(keys) => unknown.extend(keys),
                Truth::True => {}
            }
        }
        let mut unless_unknown = Vec::new();
        for condition in &self.unless {
            match facts.test(condition) {
                Truth::True => return Truth::False,
                Truth::Unknown(keys) => unless_unknown.extend(keys),
                Truth::False => {}
            }
        }
        unknown.extend(unless_unknown);
        if unknown.is_empty() {
            Truth::True
        } else {
            Truth::Unknown(unknown)
        }
    }

    /// Whether a `when` condition needs what only a login knows (the application or the
    /// organization): such a rule never fires on Event Streams events, which carry neither.
    pub fn needs_login_context(&self) -> bool {
        self.when.iter().any(|c| {
            matches!(
                c,
                Condition::Field(
                    Field::ClientId
                        | Field::ClientName
                        | Field::OrganizationId
                        | Field::OrganizationName,
                    _
                )
            )
        })
    }

    /// Whether any condition of this rule may need a read (the user's profile or roles, or
    /// the application).
    pub fn may_need_profile(&self) -> bool {
        self.assign_client_metadata.is_some()
            || self.when.iter().chain(&self.unless).any(|c| {
                matches!(
                    c,
                    Condition::EmailDomain(_)
                        | Condition::EmailVerified(_)
                        | Condition::AppMetadata(_)
                        | Condition::HasRoles(_)
                        | Condition::Field(
                            Field::Connection
                                | Field::Strategy
                                | Field::StrategyType
                                | Field::Provider,
                            _
                        )
                )
            })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule \"{}\"", self.name)?;
        if self.is_final {
            f.write_str(" (final)")?;
        }
        writeln!(f)?;
        if self.when.is_empty() {
            writeln!(f, "  when:   every eligible event")?;
        }
        for (i, c) in self.when.iter().enumerate() {
            let lead = if i == 0 { "when:  " } else { "and:   " };
            writeln!(f, "  {lead} {c}")?;
        }
        for (i, c) in self.unless.iter().enumerate() {
            let lead = if i == 0 { "unless:" } else { "or:    " };
            writeln!(f, "  {lead} {c}")?;
        }
        let mut parts = Vec::new();
        if !self.assign.is_empty() {
            parts.push(self.assign.join(", "));
        }
        if let Some(key) = &self.assign_client_metadata {
            parts.push(format!(
                "the role the application's client_metadata.{key} names"
            ));
        }
        if !self.assign_in_organization.is_empty() {
            parts.push(format!(
                "in the event's organization: {}",
                self.assign_in_organization.join(", ")
            ));
        }
        write!(f, "  assign: {}", parts.join(" + "))
    }
}

/// `pattern` is a lowercased domain, or `*.domain` for any subdomain (not the domain itself).
fn domain_matches(pattern: &str, domain: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => domain
            .strip_suffix(parent)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => pattern == domain,
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
