//! Three-valued evaluation: the facts an event (and, when read, the user's profile) gives, each
//! condition tested against them, the rules applied in order (`Evaluation`).

use crate::event::{email_domain, Identity, LogEvent, Trigger};

use super::creation::creation_of;
use super::*;

impl Policy {
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
    pub(super) fn identity(&self) -> Option<&'a Identity> {
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
    pub(super) fn field(&self, field: Field) -> Result<&'a str, Missing> {
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

    pub(super) fn client_metadata(&self, key: &str) -> ClientMetadata<'a> {
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

    pub(super) fn test(&self, condition: &Condition) -> Truth {
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
