//! The event model: `LogEvent` (what a default-role policy can use of one log or CloudEvent),
//! the user `Profile`, trigger selection (`Trigger`, `Selection`) and the email helpers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an event can give a user their default roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `ss`: success signup.
    Signup,
    /// `s` with a logins count of exactly 1.
    FirstLogin,
    /// `sv`: the user verified their email.
    EmailVerified,
    /// Event Streams' `organization.member.added`: a user became a member of an organization
    /// (auto-membership, just-in-time provisioning, the Management API, an invitation).
    OrganizationMemberAdded,
}

impl Trigger {
    /// Every trigger, in the order the policy documents them.
    pub const ALL: [Trigger; 4] = [
        Trigger::Signup,
        Trigger::FirstLogin,
        Trigger::EmailVerified,
        Trigger::OrganizationMemberAdded,
    ];

    /// The triggers a policy acts on when `[policy] events` is left out: the tenant triggers.
    /// `organization_member_added` is opted into by naming it (an existing policy does not
    /// start acting on organization events it never asked for).
    pub const DEFAULT: [Trigger; 3] =
        [Trigger::Signup, Trigger::FirstLogin, Trigger::EmailVerified];

    /// The name used in config files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signup => "signup",
            Trigger::FirstLogin => "first_login",
            Trigger::EmailVerified => "email_verified",
            Trigger::OrganizationMemberAdded => "organization_member_added",
        }
    }

    /// Whether events of this trigger can name an organization (a login through one, a member
    /// added to one): only those can give roles in an organization.
    pub fn may_carry_organization(self) -> bool {
        matches!(self, Trigger::FirstLogin | Trigger::OrganizationMemberAdded)
    }

    /// Parses a config/output name (`signup`, `first_login`, `email_verified`,
    /// `organization_member_added`).
    pub fn from_name(name: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason a test event (`a0purpose: "test"`) is not processed.
pub const TEST_EVENT: &str = "test event (a0purpose \"test\"): acknowledged, not processed";

/// The result of trigger selection for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// The event can trigger a default-role assignment.
    Eligible(Trigger),
    /// The event is of no interest; the reason is short and static (safe for logs and metrics).
    NotEligible(&'static str),
}

/// What the policy may need of a user: `GET /api/v2/users/{id}`, or the profile an Event
/// Streams CloudEvent carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    /// `identities[]`, primary identity first.
    pub identities: Vec<Identity>,
    pub app_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The roles the user holds, when known: ids read with `GET /api/v2/users/{id}/roles`, or
    /// the names this service gave the user recently. Only `has_roles` reads it.
    pub roles: Option<Vec<String>>,
    /// The `client_metadata` of the event's application (`GET /api/v2/clients/{id}`), when a
    /// rule with `assign_client_metadata` matched. Only string values are kept.
    pub client_metadata: Option<std::collections::BTreeMap<String, String>>,
    /// When the account was created (RFC 3339), when known: a first login that finds grants
    /// older than the account's creation is the first login of a re-created user.
    pub created_at: Option<String>,
}

/// One identity of a user's profile (`identities[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Identity {
    pub connection: Option<String>,
    /// The strategy of the identity's connection (`auth0`, `google-oauth2`, `waad`, ...).
    pub provider: Option<String>,
    #[serde(rename = "isSocial")]
    pub is_social: Option<bool>,
}

/// One Auth0 tenant-log event, reduced to what a default-role policy can use.
///
/// Every field but `event_type` is optional: real logs omit almost everything at times.
/// Events that cannot trigger (other types, later or SSO logins) keep only `log_id`,
/// `event_type`, `date`, `user_id` and the login counts: nothing else reads them, and they are
/// most of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogEvent {
    /// 56-digit decimal id (kept as text: it overflows every integer type).
    pub log_id: Option<String>,
    /// The Auth0 type code (`ss`, `s`, `sv`, `ssa`, ...).
    pub event_type: String,
    /// RFC 3339 timestamp of the event.
    pub date: Option<String>,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub connection: Option<String>,
    pub connection_id: Option<String>,
    pub strategy: Option<String>,
    pub strategy_type: Option<String>,
    pub client_id: Option<String>,
    pub client_name: Option<String>,
    pub organization_id: Option<String>,
    /// The organization's name: `organization_name` of a login through an organization, or
    /// `data.object.organization.name` of an `organization.member.added`.
    pub organization_name: Option<String>,
    /// `details.body.email` (signups).
    pub body_email: Option<String>,
    /// `details.email` (email verifications).
    pub details_email: Option<String>,
    /// `details.stats.loginsCount`.
    pub logins_count: Option<u64>,
    /// `details.prompts[].stats.loginsCount`, in prompt order, where present and not null.
    pub prompt_logins_counts: Vec<u64>,
    /// The user's profile, when the event carries it (Event Streams CloudEvents): the policy
    /// reads it instead of calling `GET /api/v2/users/{id}`.
    pub profile: Option<Box<Profile>>,
    /// The role of an `organization.member.role.*` CloudEvent (`data.object.role`).
    pub member_role: Option<MemberRole>,
    /// A CloudEvent's `a0purpose`: `"test"` for the Dashboard's test button
    /// (`POST /event-streams/{id}/test`), absent for real events.
    pub purpose: Option<String>,
    /// `details.body.is_signup` of an `ss` (`false` on users created through the Management API
    /// or the Dashboard), when present as a boolean.
    pub body_is_signup: Option<bool>,
    /// Whether the `ss`'s `details.body` holds fields only a signup request sends
    /// (`transaction`, `request_language`: Universal Login's signup form).
    pub body_signup_request: bool,
}

/// A member role an `organization.member.role.*` event names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemberRole {
    pub id: String,
    pub name: Option<String>,
}

impl LogEvent {
    /// Exact type-code matching: `ss`, `s` with a first-login count, `sv`. Everything else,
    /// including look-alikes such as `ssa`, `sapi`, `seacft` and `ss_sso_*`, is not eligible.
    pub fn selection(&self) -> Selection {
        if self.is_test() {
            return Selection::NotEligible(TEST_EVENT);
        }
        match self.event_type.as_str() {
            "ss" => Selection::Eligible(Trigger::Signup),
            "sv" => Selection::Eligible(Trigger::EmailVerified),
            // Event Streams: every way a user comes to exist (signup, Management API, import,
            // SCIM, just-in-time) is a signup; an update that shows a verified email is the
            // email-verified trigger.
            "user.created" => Selection::Eligible(Trigger::Signup),
            "user.updated" => match self.profile.as_ref().and_then(|p| p.email_verified) {
                Some(true) => Selection::Eligible(Trigger::EmailVerified),
                _ => Selection::NotEligible("user update without a verified email"),
            },
            "user.deleted" => Selection::NotEligible("user deleted"),
            "organization.member.added" => Selection::Eligible(Trigger::OrganizationMemberAdded),
            // `scoa` (embedded cross-origin login) and `sens` (native social login) are filed
            // under Login - Success with the same counts: their first is a first login too.
            "s" | "scoa" | "sens" => match self.effective_logins_count() {
                Some(1) => Selection::Eligible(Trigger::FirstLogin),
                Some(_) => Selection::NotEligible("later login"),
                None => Selection::NotEligible("login without a count (SSO or silent)"),
            },
            _ => Selection::NotEligible("other event type"),
        }
    }

    /// A login through an organization that is not the user's first login (`s`, `scoa`, `sens`
    /// naming `organization_id`): with a ledger, the first such login the ledger has not seen for
    /// this (user, organization) is an `organization_member_added` (auto-membership at login
    /// gives no event otherwise). `seen_in_organization` is the ledger's answer; `None` (no
    /// ledger) means such a login triggers nothing. A first login is `first_login` already.
    pub fn organization_login(&self, seen_in_organization: Option<bool>) -> Option<Trigger> {
        let later_login =
            is_login_type(&self.event_type) && self.effective_logins_count() != Some(1);
        (later_login
            && self.organization().is_some()
            && self.user().is_some()
            && seen_in_organization == Some(false))
        .then_some(Trigger::OrganizationMemberAdded)
    }

    /// The login count: `details.stats.loginsCount`, else the first count found in the prompts.
    pub fn effective_logins_count(&self) -> Option<u64> {
        self.logins_count
            .or_else(|| self.prompt_logins_counts.first().copied())
    }

    /// The user's email as the event tells it, if it looks like a real (unmasked) email:
    /// `ss` → `details.body.email`, else `user_name`; `sv` → `details.email`, else `user_name`;
    /// anything else → `user_name`.
    pub fn email(&self) -> Option<&str> {
        let primary = match self.event_type.as_str() {
            "ss" => self.body_email.as_deref(),
            "sv" => self.details_email.as_deref(),
            _ => self.profile.as_ref().and_then(|p| p.email.as_deref()),
        };
        primary
            .filter(|e| looks_like_email(e))
            .or_else(|| self.user_name.as_deref().filter(|e| looks_like_email(e)))
    }

    /// The identity provider: the part of `user_id` before the first `|`.
    pub fn provider(&self) -> Option<&str> {
        let user_id = self.user_id.as_deref()?;
        let (provider, rest) = user_id.split_once('|')?;
        (!provider.is_empty() && !rest.is_empty()).then_some(provider)
    }

    /// Whether this is an Event Streams test event (`a0purpose: "test"`: the Dashboard's test
    /// button, a fixed sample user the tenant does not hold): answered as delivered, never
    /// processed.
    pub fn is_test(&self) -> bool {
        self.purpose.as_deref() == Some("test")
    }

    /// Whether this came from Auth0 Event Streams (a CloudEvent) rather than a tenant log.
    pub fn is_cloud_event(&self) -> bool {
        self.event_type.starts_with("user.") || self.event_type.starts_with("organization.")
    }

    /// The organization the event names (id), when present and not empty.
    pub fn organization(&self) -> Option<&str> {
        self.organization_id.as_deref().filter(|o| !o.is_empty())
    }

    /// The user id, when present and not empty (failures and M2M flows carry `""`).
    pub fn user(&self) -> Option<&str> {
        self.user_id.as_deref().filter(|u| !u.is_empty())
    }
}

/// True when `text` has the shape `local@domain.tld` with no masking characters (`*`) and no
/// whitespace. Hashed or masked emails (log-stream PII obfuscation) are rejected.
pub fn looks_like_email(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.len() >= 3
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.contains(['*', ' ', '\t', '\n', '\r'])
        && !local.contains('@')
}

/// An RFC 3339 time (`2026-12-01T10:00:00.123Z`, any offset and precision) in unix
/// milliseconds; `None` when it is not one.
pub fn unix_millis(text: &str) -> Option<i64> {
    let parsed =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The domain part of an email, lowercased.
pub fn email_domain(email: &str) -> Option<String> {
    looks_like_email(email)
        .then(|| email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()))
        .flatten()
}

/// The type codes that can trigger an assignment.
pub(super) fn is_trigger_type(code: &str) -> bool {
    matches!(code, "ss" | "s" | "sv" | "scoa" | "sens")
}

/// Login type codes that carry logins counts (Login - Success).
pub(super) fn is_login_type(code: &str) -> bool {
    matches!(code, "s" | "scoa" | "sens")
}
