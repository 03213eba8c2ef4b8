//! The default-role policy: rules read from the `[policy]` config section, validated at load,
//! and evaluated against an event (and, only when a rule needs it, the user's profile).
//! Pure: no I/O, no async.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::event::Trigger;

mod config;
pub mod creation;
mod evaluate;
pub mod standing;
mod strategies;

pub use config::{PolicyConfig, PolicyError, RuleConfig, CONDITION_KEYS};
pub use evaluate::{ClientRole, Decision, Evaluation, Undecided, ASSIGN_CLIENT_METADATA};
pub use strategies::{strategy_type_of, ENTERPRISE_STRATEGIES, SOCIAL_STRATEGIES};

use creation::Creation;

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
    /// The triggers this policy acts on.
    pub fn events(&self) -> impl Iterator<Item = Trigger> + '_ {
        self.events.iter().copied()
    }

    /// Whether this policy acts on `trigger` at all.
    pub fn handles(&self, trigger: Trigger) -> bool {
        self.events.contains(&trigger)
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
}

pub use crate::event::Profile;

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
