//! Auth0 tenant-log events: the lenient `LogEvent` model, envelope detection for every delivery
//! shape (bare log, `{log_id, data}` record, EventBridge event, array, `{"logs": [...]}`, JSON
//! Lines) and trigger selection (`ss`, first `s`, `sv`). Pure: no I/O, no async.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

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

/// The user of a CloudEvent's `data.object` (lenient: fields of another type read as absent).
#[derive(Default, Deserialize)]
#[serde(default)]
struct CloudUser {
    #[serde(deserialize_with = "lenient")]
    user_id: Option<String>,
    #[serde(deserialize_with = "lenient")]
    email: Option<String>,
    #[serde(deserialize_with = "lenient")]
    email_verified: Option<bool>,
    #[serde(deserialize_with = "lenient")]
    identities: Vec<CloudIdentity>,
    #[serde(deserialize_with = "lenient")]
    app_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(deserialize_with = "lenient")]
    created_at: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CloudIdentity {
    #[serde(deserialize_with = "lenient")]
    connection: Option<String>,
    #[serde(deserialize_with = "lenient")]
    provider: Option<String>,
    #[serde(rename = "isSocial", deserialize_with = "lenient")]
    is_social: Option<bool>,
}

/// The `data.object` of an `organization.member.*` CloudEvent: `{organization: {id, name},
/// user: {user_id, ...}}` (lenient: fields of another type read as absent).
#[derive(Default, Deserialize)]
#[serde(default)]
struct CloudMembership {
    #[serde(deserialize_with = "lenient")]
    organization: CloudOrganization,
    #[serde(deserialize_with = "lenient")]
    user: CloudMember,
    /// `organization.member.role.*`: the role.
    #[serde(deserialize_with = "lenient")]
    role: CloudOrganization,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CloudOrganization {
    #[serde(deserialize_with = "lenient")]
    id: Option<String>,
    #[serde(deserialize_with = "lenient")]
    name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CloudMember {
    #[serde(deserialize_with = "lenient")]
    user_id: Option<String>,
}

/// An `organization.member.added` (or `.deleted`, ...) CloudEvent: the member's user id and
/// the organization, no profile (the policy reads `GET /api/v2/users/{id}` when a rule needs it).
fn membership_event(
    kind: String,
    id: Option<String>,
    time: Option<String>,
    object: Option<&RawValue>,
) -> Decoded {
    let Some(raw) = object else {
        return Err(DecodeError::new(
            format!("CloudEvent {kind} without data.object"),
            id,
        ));
    };
    let membership = match serde_json::from_str::<CloudMembership>(raw.get()) {
        Ok(membership) => membership,
        Err(err) => {
            return Err(DecodeError::new(
                format!("CloudEvent {kind}: data.object is not a membership: {err}"),
                id,
            ))
        }
    };
    let present = |v: Option<String>| v.filter(|v| !v.is_empty());
    let Some(user_id) = present(membership.user.user_id) else {
        return Err(DecodeError::new(
            format!("CloudEvent {kind} without data.object.user.user_id"),
            id,
        ));
    };
    let Some(organization_id) = present(membership.organization.id) else {
        return Err(DecodeError::new(
            format!("CloudEvent {kind} without data.object.organization.id"),
            id,
        ));
    };
    let member_role = present(membership.role.id).map(|id| MemberRole {
        id,
        name: present(membership.role.name),
    });
    Ok(LogEvent {
        log_id: id,
        date: time,
        user_id: Some(user_id),
        organization_id: Some(organization_id),
        organization_name: present(membership.organization.name),
        event_type: kind,
        member_role,
        ..LogEvent::default()
    })
}

/// Any JSON value; one of the wrong type reads as the default.
fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
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

/// Why one value of a delivery could not become a `LogEvent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    /// Short, PII-free reason (safe to log and to put in a dead-letter header).
    pub reason: String,
    /// The log id, when it could be read despite the error.
    pub log_id: Option<String>,
}

impl DecodeError {
    pub fn new(reason: impl Into<String>, log_id: Option<String>) -> Self {
        DecodeError {
            reason: reason.into(),
            log_id,
        }
    }
}

/// One item of a decoded delivery.
pub type Decoded = Result<LogEvent, DecodeError>;

/// Decodes the bytes of one delivery (a Kafka record, an SQS body, a file, a webhook body) into
/// its events, in input order. Never panics and never drops a value silently: every value that
/// is not an Auth0 log becomes a `DecodeError`.
///
/// Two layouts are told apart by the first value:
/// - **JSON Lines** (the first value fits on its first line, or does not parse): every line
///   stands alone. A malformed line yields exactly one `invalid` item naming its line, whatever
///   follows it (indented records, bare strings, numbers), and every other line is decoded.
/// - **Documents** (the first value spans lines: a pretty-printed object or array): values are
///   read one after another; after a syntax error, reading resumes at the next line that opens a
///   value.
pub fn decode(bytes: &[u8]) -> Vec<Decoded> {
    let mut out = Vec::new();
    if decode_lines(bytes, 1, &mut out) == Layout::Document {
        // The first line opens a value it does not close: a pretty-printed document when
        // that value parses across lines, else a truncated first line of JSON Lines.
        out = if first_value_parses(bytes) {
            let mut documents = Vec::new();
            decode_documents(bytes, &mut documents);
            documents
        } else {
            decode_json_lines(bytes, 1)
        };
    }
    if out.is_empty() {
        out.push(Err(DecodeError::new("empty payload: no JSON value", None)));
    }
    out.into_iter().map(checked_ids).collect()
}

/// Whether the first JSON value of `bytes` parses.
fn first_value_parses(bytes: &[u8]) -> bool {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<de::IgnoredAny>();
    matches!(values.next(), Some(Ok(_)))
}

/// The lines of `bytes` (without their `\n`), found with SIMD `memchr`: a one-record Kafka
/// message costs one fast scan, not a byte-by-byte split.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', bytes);
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match ends.next() {
            Some(end) => {
                let line = &bytes[start..end];
                start = end + 1;
                Some(line)
            }
            None => {
                done = true;
                Some(&bytes[start..])
            }
        }
    })
}

/// What the first non-blank line says of an input's layout.
#[derive(Debug, PartialEq, Eq)]
enum Layout {
    JsonLines,
    /// Its first value goes on past the first line: a pretty-printed document or array.
    Document,
}

/// Whether `line`, the first non-blank line of an input, stands alone: every value on it
/// parses, or it is broken beyond repair. `false` when a value starts on it and goes on past its
/// end (a pretty-printed document), which only the whole input can decode.
pub fn first_line_stands_alone(line: &[u8]) -> bool {
    let mut values = serde_json::Deserializer::from_slice(line).into_iter::<de::IgnoredAny>();
    loop {
        match values.next() {
            None => return true,
            Some(Ok(_)) => {}
            Some(Err(err)) => return !err.is_eof(),
        }
    }
}

/// Decodes complete JSON Lines (each non-blank line on its own); `first_line` is the number of
/// the first line of `bytes` in its input, for error messages. For inputs read in chunks.
pub fn decode_json_lines(bytes: &[u8], first_line: usize) -> Vec<Decoded> {
    let mut out = Vec::new();
    let mut seen_a_line = true;
    decode_lines_after(bytes, first_line, &mut out, &mut seen_a_line);
    out.into_iter().map(checked_ids).collect()
}

/// The longest user id or event id accepted, in bytes. Auth0 publishes no maximum for user
/// ids (its OpenAPI description names a `user-id-with-max-length` format without a number);
/// real ones are `provider|id`, well under 200 bytes. 1 KB is generous and keeps a record far
/// from the database's limits (PostgreSQL refuses index entries past about 2.7 KB).
pub const MAX_ID_BYTES: usize = 1024;

/// The longest organization id accepted, in characters: Auth0's OpenAPI description of
/// organizations gives ids at most 50 characters (`org_` and 16 characters in practice).
pub const MAX_ORGANIZATION_ID_CHARS: usize = 50;

/// An event whose ids the ledger or the Management API could not take is `invalid` here, at
/// decode time: a `user_id`, `organization_id` or event id with a control character (a NUL
/// makes every PostgreSQL statement naming it fail) or past its length limit
/// ([`MAX_ID_BYTES`], [`MAX_ORGANIZATION_ID_CHARS`]). The reason names the field, never the
/// value.
fn checked_ids(decoded: Decoded) -> Decoded {
    let event = decoded?;
    let problem = id_problem("user_id", event.user_id.as_deref(), MAX_ID_BYTES, false)
        .or_else(|| {
            id_problem(
                "organization_id",
                event.organization_id.as_deref(),
                MAX_ORGANIZATION_ID_CHARS,
                true,
            )
        })
        .or_else(|| id_problem("the event id", event.log_id.as_deref(), MAX_ID_BYTES, false));
    match problem {
        None => Ok(event),
        Some(reason) => {
            // The id itself may be the problem: it goes into the dead letter only when clean.
            let log_id = event
                .log_id
                .filter(|id| id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control));
            Err(DecodeError::new(reason, log_id))
        }
    }
}

/// What is wrong with an id, if anything (`chars`: the limit counts characters, else bytes).
fn id_problem(field: &str, id: Option<&str>, limit: usize, chars: bool) -> Option<String> {
    let id = id?;
    if id.chars().any(char::is_control) {
        return Some(format!("{field} holds a control character"));
    }
    let (length, unit) = if chars {
        (id.chars().count(), "characters")
    } else {
        (id.len(), "bytes")
    };
    (length > limit).then(|| format!("{field} is {length} {unit} long, past the limit of {limit}"))
}

/// JSON Lines: each non-blank line is decoded on its own (one parse per line). Stops at once
/// with `Layout::Document`, having decoded nothing, when the first non-blank line holds the
/// beginning of a value that goes on past it.
fn decode_lines(bytes: &[u8], first_line: usize, out: &mut Vec<Decoded>) -> Layout {
    let mut seen_a_line = false;
    decode_lines_after(bytes, first_line, out, &mut seen_a_line)
}

fn decode_lines_after(
    bytes: &[u8],
    first_line: usize,
    out: &mut Vec<Decoded>,
    seen_a_line: &mut bool,
) -> Layout {
    for (index, line) in lines(bytes).enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let first = !*seen_a_line;
        *seen_a_line = true;
        let mut values = serde_json::Deserializer::from_slice(line).into_iter::<TopLevel>();
        let mut items = Vec::new();
        let failed = loop {
            match values.next() {
                None => break None,
                Some(Ok(value)) => value.push_items(&mut items),
                Some(Err(err)) => break Some(err),
            }
        };
        match failed {
            Some(err) if first && err.is_eof() => return Layout::Document,
            None => out.append(&mut items),
            Some(err) => out.push(Err(DecodeError::new(
                syntax_reason(&err, first_line + index),
                None,
            ))),
        }
    }
    Layout::JsonLines
}

/// Documents: a stream of values; after a syntax error, on from the next line opening a value.
/// Line numbers are counted incrementally (each byte is looked at once).
fn decode_documents(bytes: &[u8], out: &mut Vec<Decoded>) {
    let mut lines = LineCounter::default();
    let mut start = 0usize;
    while start < bytes.len() {
        let rest = &bytes[start..];
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<TopLevel>();
        loop {
            match stream.next() {
                None => {
                    start = bytes.len();
                    break;
                }
                Some(Ok(value)) => value.push_items(out),
                Some(Err(err)) => {
                    let offset = stream.byte_offset();
                    let value_start = start + skip_whitespace(rest, offset);
                    let line = lines.line_of(bytes, value_start);
                    out.push(Err(DecodeError::new(syntax_reason(&err, line), None)));
                    start += resume_point(rest, offset);
                    break;
                }
            }
        }
    }
}

/// The line of a byte position, for positions asked in increasing order.
#[derive(Default)]
struct LineCounter {
    position: usize,
    line: usize,
}

impl LineCounter {
    fn line_of(&mut self, bytes: &[u8], position: usize) -> usize {
        let position = position.min(bytes.len());
        if position >= self.position {
            self.line += bytes[self.position..position]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            self.position = position;
        }
        self.line + 1
    }
}

fn syntax_reason(err: &serde_json::Error, line: usize) -> String {
    let kind = match err.classify() {
        serde_json::error::Category::Eof => "truncated JSON",
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Data => "unexpected JSON value",
        serde_json::error::Category::Io => "unreadable input",
    };
    format!("{kind} in the value starting on line {line}")
}

fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// After a syntax error in a document stream, where to start again: the first line after the
/// start of the broken value whose first byte opens a JSON value.
fn resume_point(rest: &[u8], stream_offset: usize) -> usize {
    let mut i = skip_whitespace(rest, stream_offset);
    while i < rest.len() {
        if rest[i] == b'\n' && matches!(rest.get(i + 1), Some(b'{' | b'[')) {
            return i + 1;
        }
        i += 1;
    }
    rest.len()
}

/// A top-level JSON value of a delivery: one object or an array of values.
enum TopLevel<'a> {
    Object(Box<RawLog<'a>>),
    Array(Vec<ArrayItem<'a>>),
    Other(&'static str),
}

impl TopLevel<'_> {
    fn push_items(self, out: &mut Vec<Decoded>) {
        match self {
            TopLevel::Object(raw) => raw.push_items(out, 0),
            TopLevel::Array(items) => {
                if items.is_empty() {
                    return;
                }
                for item in items {
                    match item {
                        ArrayItem::Object(raw) => raw.push_items(out, 1),
                        ArrayItem::Other(kind) => out.push(Err(DecodeError::new(
                            format!("array item is {kind}, not an object"),
                            None,
                        ))),
                    }
                }
            }
            TopLevel::Other(kind) => out.push(Err(DecodeError::new(
                format!("JSON value is {kind}, not an Auth0 log object"),
                None,
            ))),
        }
    }
}

enum ArrayItem<'a> {
    Object(Box<RawLog<'a>>),
    Other(&'static str),
}

fn kind_of_scalar<E>(kind: &'static str) -> Result<&'static str, E> {
    Ok(kind)
}

/// Visits any JSON value; objects are read as `RawLog`, arrays as items, scalars are named.
macro_rules! scalar_visits {
    ($wrap:path) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            kind_of_scalar("a boolean").map($wrap)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            kind_of_scalar("a number").map($wrap)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            kind_of_scalar("a number").map($wrap)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            kind_of_scalar("a number").map($wrap)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            kind_of_scalar("a string").map($wrap)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            kind_of_scalar("null").map($wrap)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            kind_of_scalar("null").map($wrap)
        }
    };
}

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TopVisitor;
        impl<'de> Visitor<'de> for TopVisitor {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object or array")
            }
            scalar_visits!(TopLevel::Other);
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TopLevel<'de>, A::Error> {
                RawLog::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|raw| TopLevel::Object(Box::new(raw)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element::<ArrayItem>()? {
                    items.push(item);
                }
                Ok(TopLevel::Array(items))
            }
        }
        deserializer.deserialize_any(TopVisitor)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ArrayItem<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ItemVisitor<'a> {
            type Value = ArrayItem<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            scalar_visits!(ArrayItem::Other);
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ArrayItem<'a>, A::Error> {
                RawLog::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|raw| ArrayItem::Object(Box::new(raw)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArrayItem<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ArrayItem::Other("an array"))
            }
        }
        deserializer.deserialize_any(ItemVisitor(std::marker::PhantomData))
    }
}

/// Any JSON object of a delivery, read in one pass: the fields of a bare log and those of every
/// wrapper (`data`, `detail`, `detail-type`, `logs`). Every field is lenient: a value of an
/// unexpected JSON type reads as absent, so only JSON syntax errors fail a whole delivery.
#[derive(Default)]
struct RawLog<'a> {
    log_id: Option<Text<'a>>,
    underscore_id: Option<Text<'a>>,
    event_type: Option<Text<'a>>,
    date: Option<Text<'a>>,
    user_id: Option<Text<'a>>,
    user_name: Option<Text<'a>>,
    connection: Option<Text<'a>>,
    connection_id: Option<Text<'a>>,
    strategy: Option<Text<'a>>,
    strategy_type: Option<Text<'a>>,
    client_id: Option<Text<'a>>,
    client_name: Option<Text<'a>>,
    organization_id: Option<Text<'a>>,
    organization_name: Option<Text<'a>>,
    details: LenientMap<Details<'a>>,
    /// `{log_id, data}` record (webhook) or the record inside an EventBridge `detail`.
    data: LenientMap<Box<RawLog<'a>>>,
    /// EventBridge: the record (or, after an input transformer, the bare log).
    detail: LenientMap<Box<RawLog<'a>>>,
    /// EventBridge: must be `"Auth0 log"` (a string or, in some samples, a one-item list).
    detail_type: Option<DetailType>,
    /// Custom Webhook "JSON Object" format: `{"logs": [...]}`.
    logs: LenientSeq<ArrayItem<'a>>,
    /// CloudEvent (Auth0 Event Streams): `id` (`evt_...`).
    id: Option<Text<'a>>,
    /// CloudEvent: `specversion` or `spec_version` was present.
    cloud_event: bool,
    /// CloudEvent: when it happened.
    time: Option<Text<'a>>,
    /// CloudEvent `data.object`: the user profile, kept raw until the envelope is known.
    object: Option<&'a RawValue>,
    /// CloudEvent `a0purpose` (`"test"` for test events).
    purpose: Option<Text<'a>>,
}

#[derive(Default)]
struct Details<'a> {
    body: LenientMap<Body<'a>>,
    email: Option<Text<'a>>,
    stats: LenientMap<Stats>,
    /// Kept raw: read only when `stats` has no count (most logins carry one at top level).
    prompts: Option<&'a RawValue>,
}

#[derive(Default)]
struct Body<'a> {
    email: Option<Text<'a>>,
    /// `is_signup`, when a boolean.
    is_signup: Option<bool>,
    /// `transaction` or `request_language` present (not null): a signup form's request.
    signup_request: bool,
}

#[derive(Default)]
struct Stats {
    logins_count: Option<u64>,
}

#[derive(Default)]
struct Prompt {
    stats: LenientMap<Stats>,
    connection: Option<String>,
    connection_id: Option<String>,
    strategy: Option<String>,
    strategy_type: Option<String>,
}

/// Reads one known field of a JSON object; `Ok(false)` means "not mine, skip the value".
/// Hand-written rather than derived so keys are matched as raw bytes (no UTF-8 pass per key)
/// and values that cannot matter are skipped unparsed.
trait Fields<'de>: Default {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error>;
}

struct FieldsVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Fields<'de>> Visitor<'de> for FieldsVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut value = T::default();
        while let Some(key) = map.next_key::<Key>()? {
            if !value.field(&key.0, &mut map)? {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(value)
    }
}

/// An object key as bytes (borrowed when it has no escapes).
struct Key<'a>(Cow<'a, [u8]>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_vec())))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.as_bytes().to_vec())))
            }
        }
        deserializer.deserialize_bytes(KeyVisitor(std::marker::PhantomData))
    }
}

macro_rules! deserialize_with_fields {
    ($($ty:ty),*) => {$(
        impl<'de: 'a, 'a> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map(FieldsVisitor(std::marker::PhantomData))
            }
        }
    )*};
}
deserialize_with_fields!(RawLog<'a>, Details<'a>, Body<'a>);

impl<'de> Deserialize<'de> for Stats {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor(std::marker::PhantomData))
    }
}

fn text<'de: 'a, 'a, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Text<'a>>, A::Error> {
    map.next_value::<LenientString<'a>>().map(|s| s.0)
}

impl<'de: 'a, 'a> Fields<'de> for RawLog<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"log_id" => self.log_id = text(map)?,
            b"_id" => self.underscore_id = text(map)?,
            b"type" => self.event_type = text(map)?,
            b"date" => self.date = text(map)?,
            b"user_id" => self.user_id = text(map)?,
            b"user_name" => self.user_name = text(map)?,
            b"connection" => self.connection = text(map)?,
            b"connection_id" => self.connection_id = text(map)?,
            b"strategy" => self.strategy = text(map)?,
            b"strategy_type" => self.strategy_type = text(map)?,
            b"client_id" => self.client_id = text(map)?,
            b"client_name" => self.client_name = text(map)?,
            b"organization_id" => self.organization_id = text(map)?,
            b"organization_name" => self.organization_name = text(map)?,
            b"details" => {
                // `type` precedes `details` in Auth0's records: when it says the event can never
                // trigger, the details are skipped unparsed.
                if self
                    .event_type
                    .as_deref()
                    .is_some_and(|t| !is_trigger_type(t))
                {
                    return Ok(false);
                }
                self.details = map.next_value()?;
            }
            b"data" => self.data = map.next_value()?,
            b"detail" => self.detail = map.next_value()?,
            b"detail-type" => self.detail_type = map.next_value()?,
            b"logs" => self.logs = map.next_value()?,
            b"id" => self.id = text(map)?,
            b"specversion" | b"spec_version" => {
                map.next_value::<IgnoredAny>()?;
                self.cloud_event = true;
            }
            b"time" => self.time = text(map)?,
            b"object" => self.object = map.next_value::<Option<&'a RawValue>>()?,
            b"a0purpose" => self.purpose = text(map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de: 'a, 'a> Fields<'de> for Details<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"body" => self.body = map.next_value()?,
            b"email" => self.email = text(map)?,
            b"stats" => self.stats = map.next_value()?,
            b"prompts" => self.prompts = map.next_value::<Option<&'a RawValue>>()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de: 'a, 'a> Fields<'de> for Body<'a> {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"email" => self.email = text(map)?,
            b"is_signup" => {
                self.is_signup = match map.next_value::<Option<&'a RawValue>>()?.map(|r| r.get()) {
                    Some("true") => Some(true),
                    Some("false") => Some(false),
                    _ => None,
                }
            }
            b"transaction" | b"request_language" => {
                let value = map.next_value::<Option<&'a RawValue>>()?;
                self.signup_request |= value.is_some_and(|r| r.get() != "null");
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> Fields<'de> for Stats {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"loginsCount" => self.logins_count = map.next_value::<Count>()?.0,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl<'de> Fields<'de> for Prompt {
    fn field<A: MapAccess<'de>>(&mut self, key: &[u8], map: &mut A) -> Result<bool, A::Error> {
        match key {
            b"stats" => self.stats = map.next_value()?,
            b"connection" => self.connection = text(map)?.map(Cow::into_owned),
            b"connection_id" => self.connection_id = text(map)?.map(Cow::into_owned),
            b"strategy" => self.strategy = text(map)?.map(Cow::into_owned),
            b"strategy_type" => self.strategy_type = text(map)?.map(Cow::into_owned),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The type codes that can trigger an assignment.
fn is_trigger_type(code: &str) -> bool {
    matches!(code, "ss" | "s" | "sv" | "scoa" | "sens")
}

/// Login type codes that carry logins counts (Login - Success).
fn is_login_type(code: &str) -> bool {
    matches!(code, "s" | "scoa" | "sens")
}

/// The login fields of the first prompt naming a connection: some tenants log `connection`,
/// `connection_id`, `strategy` and `strategy_type` only inside `details.prompts[]`.
///
/// `known` is what the top level already says of this login (connection, connection id,
/// strategy): the prompt must agree with each, so fields of two connections are never mixed.
fn prompt_login_fields(prompts: Option<&RawValue>, known: [Option<&str>; 3]) -> Option<Prompt> {
    let raw = prompts?;
    let agrees = |have: Option<&str>, want: Option<&str>| {
        want.is_none_or(|w| w.is_empty() || have == Some(w))
    };
    serde_json::from_str::<LenientSeq<LenientMap<Prompt>>>(raw.get())
        .ok()
        .and_then(|list| list.0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.0)
        .filter(|p| p.connection.as_deref().is_some_and(|c| !c.is_empty()))
        .find(|p| {
            agrees(p.connection.as_deref(), known[0])
                && agrees(p.connection_id.as_deref(), known[1])
                && agrees(p.strategy.as_deref(), known[2])
        })
}

/// The login counts of `details.prompts[]`, in order (null and odd values skipped).
fn prompt_counts(prompts: Option<&RawValue>) -> Vec<u64> {
    let Some(raw) = prompts else {
        return Vec::new();
    };
    serde_json::from_str::<LenientSeq<LenientMap<Prompt>>>(raw.get())
        .ok()
        .and_then(|list| list.0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.0.and_then(|p| p.stats.0).and_then(|s| s.logins_count))
        .collect()
}

/// `detail-type`: a string, or a list of strings.
#[derive(Default)]
struct DetailType(Vec<String>);

impl<'de> Deserialize<'de> for DetailType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DetailTypeVisitor;
        impl<'de> Visitor<'de> for DetailTypeVisitor {
            type Value = DetailType;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E>(self, v: &str) -> Result<DetailType, E> {
                Ok(DetailType(vec![v.to_owned()]))
            }
            fn visit_bool<E>(self, _: bool) -> Result<DetailType, E> {
                Ok(DetailType::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<DetailType, E> {
                Ok(DetailType::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<DetailType, E> {
                Ok(DetailType::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<DetailType, E> {
                Ok(DetailType::default())
            }
            fn visit_unit<E>(self) -> Result<DetailType, E> {
                Ok(DetailType::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DetailType, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(DetailType::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DetailType, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<LenientString>()? {
                    names.extend(name.0.map(Cow::into_owned));
                }
                Ok(DetailType(names))
            }
        }
        deserializer.deserialize_any(DetailTypeVisitor)
    }
}

impl RawLog<'_> {
    fn has_any_log_field(&self) -> bool {
        self.event_type.is_some() || self.log_id.is_some() || self.underscore_id.is_some()
    }

    /// Classifies this object and appends what it holds to `out`. `depth` bounds recursion
    /// through wrappers (a record inside an EventBridge event inside a `logs` list is depth 3).
    fn push_items(self, out: &mut Vec<Decoded>, depth: u8) {
        if depth > 4 {
            out.push(Err(DecodeError::new("wrappers nested too deeply", None)));
            return;
        }
        if self.cloud_event {
            out.push(self.into_cloud_event());
            return;
        }
        if let Some(detail_type) = self.detail_type {
            let carries_cloud_event = self.detail.0.as_ref().is_some_and(|d| d.cloud_event);
            if !carries_cloud_event && !detail_type.0.iter().any(|t| t == "Auth0 log") {
                out.push(Err(DecodeError::new(
                    "EventBridge event whose detail-type is not \"Auth0 log\"",
                    None,
                )));
                return;
            }
            match self.detail.0 {
                Some(detail) => detail.push_items(out, depth + 1),
                None => out.push(Err(DecodeError::new(
                    "EventBridge event without a detail object",
                    None,
                ))),
            }
            return;
        }
        if let Some(data) = self.data.0 {
            let first = out.len();
            data.push_items(out, depth + 1);
            let outer_id = self.log_id.or(self.underscore_id);
            for item in &mut out[first..] {
                let log_id = match item {
                    Ok(event) => &mut event.log_id,
                    Err(err) => &mut err.log_id,
                };
                if log_id.is_none() {
                    *log_id = outer_id.as_deref().map(str::to_owned);
                }
            }
            return;
        }
        if let Some(logs) = self.logs.0 {
            for item in logs {
                match item {
                    ArrayItem::Object(raw) => raw.push_items(out, depth + 1),
                    ArrayItem::Other(kind) => out.push(Err(DecodeError::new(
                        format!("logs item is {kind}, not an object"),
                        None,
                    ))),
                }
            }
            return;
        }
        if self.detail.0.is_some() && !self.has_any_log_field() {
            out.push(Err(DecodeError::new(
                "object with a detail but no detail-type \"Auth0 log\"",
                None,
            )));
            return;
        }
        out.push(self.into_event());
    }

    /// An Auth0 Event Streams CloudEvent: `user.created`, `user.updated`, `user.deleted` (or
    /// `com.auth0.user.*`), its profile in `data.object`.
    fn into_cloud_event(self) -> Decoded {
        let id = self.id.map(Cow::into_owned);
        let Some(kind) = self.event_type.filter(|t| !t.is_empty()) else {
            return Err(DecodeError::new("CloudEvent without a type", id));
        };
        let kind = kind.strip_prefix("com.auth0.").unwrap_or(&kind).to_owned();
        let object = self.data.0.and_then(|data| data.object);
        if self.purpose.as_deref() == Some("test") {
            // Decided here, whatever its object holds: the sample user is not the tenant's.
            let user_id = object
                .and_then(|raw| serde_json::from_str::<CloudUser>(raw.get()).ok())
                .and_then(|user| user.user_id);
            return Ok(LogEvent {
                log_id: id,
                date: self.time.map(Cow::into_owned),
                user_id,
                event_type: kind,
                purpose: Some("test".to_owned()),
                ..LogEvent::default()
            });
        }
        if kind.starts_with("organization.member.") {
            return membership_event(kind, id, self.time.map(Cow::into_owned), object);
        }
        let profile = match object.map(|raw| serde_json::from_str::<CloudUser>(raw.get())) {
            Some(Ok(user)) => user,
            Some(Err(err)) => {
                return Err(DecodeError::new(
                    format!("CloudEvent {kind}: data.object is not a user: {err}"),
                    id,
                ))
            }
            None if kind.starts_with("user.") => {
                return Err(DecodeError::new(
                    format!("CloudEvent {kind} without data.object"),
                    id,
                ))
            }
            None => CloudUser::default(),
        };
        if kind.starts_with("user.") && profile.user_id.as_deref().is_none_or(str::is_empty) {
            return Err(DecodeError::new(
                format!("CloudEvent {kind} without data.object.user_id"),
                id,
            ));
        }
        let primary = profile.identities.first();
        Ok(LogEvent {
            log_id: id,
            date: self.time.map(Cow::into_owned),
            user_id: profile.user_id.clone(),
            connection: primary.and_then(|i| i.connection.clone()),
            strategy: primary.and_then(|i| i.provider.clone()),
            event_type: kind,
            profile: Some(Box::new(Profile {
                email: profile.email,
                email_verified: profile.email_verified,
                identities: profile
                    .identities
                    .into_iter()
                    .map(|i| Identity {
                        connection: i.connection,
                        provider: i.provider,
                        is_social: i.is_social,
                    })
                    .collect(),
                app_metadata: profile.app_metadata,
                roles: None,
                client_metadata: None,
                created_at: profile.created_at,
            })),
            ..LogEvent::default()
        })
    }

    fn into_event(self) -> Decoded {
        let log_id = self.log_id.or(self.underscore_id).map(Cow::into_owned);
        let Some(event_type) = self.event_type.filter(|t| !t.is_empty()) else {
            let reason = if log_id.is_some() {
                "log without a type"
            } else {
                "not an Auth0 log: no type, log_id, data, detail or logs"
            };
            return Err(DecodeError::new(reason, log_id));
        };
        let owned = |text: Option<Text<'_>>| text.map(Cow::into_owned);
        let details = self.details.0.unwrap_or_default();
        let logins_count = details.stats.0.and_then(|s| s.logins_count);
        let login = is_login_type(&event_type);
        let prompt_logins_counts = if logins_count.is_some() || !login {
            Vec::new()
        } else {
            prompt_counts(details.prompts)
        };
        let through_organization = self
            .organization_id
            .as_deref()
            .is_some_and(|o| !o.is_empty());
        let may_trigger = match event_type.as_ref() {
            "ss" | "sv" => true,
            // A later login through an organization may be a membership the ledger has not seen
            // (`LogEvent::organization_login`): it keeps its fields.
            code if is_login_type(code) => {
                through_organization
                    || logins_count.or(prompt_logins_counts.first().copied()) == Some(1)
            }
            _ => false,
        };
        if !may_trigger {
            // Events that cannot trigger (most of a stream) keep only what identifies them and
            // decides their selection: no policy reads the rest.
            return Ok(LogEvent {
                log_id,
                event_type: event_type.into_owned(),
                date: owned(self.date),
                user_id: owned(self.user_id),
                logins_count,
                prompt_logins_counts,
                ..LogEvent::default()
            });
        }
        let present = |text: &Option<Text<'_>>| text.as_deref().is_some_and(|t| !t.is_empty());
        // Each field the top level lacks comes from the first prompt naming a connection that
        // agrees with what the top level says (its connection, connection id, strategy).
        let lacks_any = [
            &self.connection,
            &self.connection_id,
            &self.strategy,
            &self.strategy_type,
        ]
        .into_iter()
        .any(|t| !present(t));
        let from_prompt = if login && lacks_any {
            prompt_login_fields(
                details.prompts,
                [
                    self.connection.as_deref(),
                    self.connection_id.as_deref(),
                    self.strategy.as_deref(),
                ],
            )
            .unwrap_or_default()
        } else {
            Prompt::default()
        };
        let or_prompt = |top: Option<Text<'_>>, prompt: Option<String>| {
            top.filter(|t| !t.is_empty())
                .map(Cow::into_owned)
                .or(prompt)
        };
        Ok(LogEvent {
            log_id,
            event_type: event_type.into_owned(),
            date: owned(self.date),
            user_id: owned(self.user_id),
            user_name: owned(self.user_name),
            connection: or_prompt(self.connection, from_prompt.connection),
            connection_id: or_prompt(self.connection_id, from_prompt.connection_id),
            strategy: or_prompt(self.strategy, from_prompt.strategy),
            strategy_type: or_prompt(self.strategy_type, from_prompt.strategy_type),
            client_id: owned(self.client_id),
            client_name: owned(self.client_name),
            organization_id: owned(self.organization_id),
            organization_name: owned(self.organization_name),
            body_is_signup: details.body.0.as_ref().and_then(|b| b.is_signup),
            body_signup_request: details.body.0.as_ref().is_some_and(|b| b.signup_request),
            body_email: owned(details.body.0.and_then(|b| b.email)),
            details_email: owned(details.email),
            logins_count,
            prompt_logins_counts,
            profile: None,
            member_role: None,
            purpose: None,
        })
    }
}

/// Generates the visits that make a lenient reader treat unexpected scalars as absent.
macro_rules! absent_scalars {
    ($value:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// An object read leniently: `Some` for a JSON object, `None` for null or any other type
/// (which is skipped).
struct LenientMap<T>(Option<T>);

impl<T> Default for LenientMap<T> {
    fn default() -> Self {
        LenientMap(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for LenientMap<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
            type Value = LenientMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            absent_scalars!(LenientMap(None));
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LenientMap<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|v| LenientMap(Some(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LenientMap<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LenientMap(None))
            }
        }
        deserializer.deserialize_any(MapVisitor(std::marker::PhantomData))
    }
}

/// A list read leniently: `Some` for a JSON array (each item read as `T`, which must itself be
/// lenient), `None` for null or any other type.
struct LenientSeq<T>(Option<Vec<T>>);

impl<T> Default for LenientSeq<T> {
    fn default() -> Self {
        LenientSeq(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for LenientSeq<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqVisitor<T> {
            type Value = LenientSeq<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array")
            }
            absent_scalars!(LenientSeq(None));
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LenientSeq<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LenientSeq(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LenientSeq<T>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element::<T>()? {
                    items.push(item);
                }
                Ok(LenientSeq(Some(items)))
            }
        }
        deserializer.deserialize_any(SeqVisitor(std::marker::PhantomData))
    }
}

/// Text borrowed from the input where it has no escapes.
type Text<'a> = Cow<'a, str>;

/// A string read leniently: numbers become their decimal text (`identity` may be either), any
/// other type reads as absent. Borrows from the input when it can.
struct LenientString<'a>(Option<Text<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for LenientString<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for StringVisitor<'a> {
            type Value = LenientString<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(LenientString(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LenientString(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(LenientString(Some(Cow::Owned(v))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(LenientString(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(LenientString(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(LenientString(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(LenientString(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(LenientString(None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(LenientString(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(LenientString(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(LenientString(None))
            }
        }
        deserializer.deserialize_any(StringVisitor(std::marker::PhantomData))
    }
}

/// A count read leniently: a non-negative integer (or an integral float, or a numeric string);
/// `null` and anything else mean "unknown".
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        lenient_count(deserializer).map(Count)
    }
}

fn lenient_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct CountVisitor;
    impl<'de> Visitor<'de> for CountVisitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a count")
        }
        fn visit_u64<E>(self, v: u64) -> Result<Option<u64>, E> {
            Ok(Some(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Option<u64>, E> {
            Ok(u64::try_from(v).ok())
        }
        fn visit_f64<E>(self, v: f64) -> Result<Option<u64>, E> {
            Ok((v.fract() == 0.0 && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64))
        }
        fn visit_str<E>(self, v: &str) -> Result<Option<u64>, E> {
            Ok(v.trim().parse().ok())
        }
        fn visit_bool<E>(self, _: bool) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<u64>, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<u64>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    deserializer.deserialize_any(CountVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(i: usize) -> String {
        format!(
            r#"{{"log_id":"{i:056}","data":{{"type":"ss","user_id":"auth0|u{i}","connection":"Username-Password-Authentication"}}}}"#
        )
    }

    fn ok_ids(items: &[Decoded]) -> Vec<String> {
        items
            .iter()
            .filter_map(|i| i.as_ref().ok().and_then(|e| e.log_id.clone()))
            .collect()
    }

    fn errors(items: &[Decoded]) -> Vec<String> {
        items
            .iter()
            .filter_map(|i| i.as_ref().err().map(|e| e.reason.clone()))
            .collect()
    }

    #[test]
    fn an_indented_record_after_a_garbage_line_is_decoded() {
        let body = format!("not json at all\n   {}\n\t{}\n", record(1), record(2));
        let items = decode(body.as_bytes());
        assert_eq!(
            ok_ids(&items),
            vec![format!("{:056}", 1), format!("{:056}", 2)]
        );
        assert_eq!(errors(&items).len(), 1);
        assert!(errors(&items)[0].contains("line 1"), "{:?}", errors(&items));
    }

    #[test]
    fn a_truncated_object_costs_only_its_own_line() {
        let body = format!(
            "{}\n{{\"log_id\": \"1\", \"data\": {{\"type\": \"ss\", \"user_id\": \n  {}\n\"a bare string\"\n42\n",
            record(1),
            record(2)
        );
        let items = decode(body.as_bytes());
        assert_eq!(
            ok_ids(&items),
            vec![format!("{:056}", 1), format!("{:056}", 2)]
        );
        let errors = errors(&items);
        assert_eq!(
            errors.len(),
            3,
            "the truncated line, the string, the number: {errors:?}"
        );
        assert!(errors[0].contains("truncated JSON") && errors[0].contains("line 2"));
        assert!(errors[1].contains("string"), "{errors:?}");
        assert!(errors[2].contains("number"), "{errors:?}");
    }

    #[test]
    fn a_truncated_first_line_costs_only_itself() {
        let body = format!(
            "{{\"log_id\": \"1\", \"data\": {{\"type\": \"ss\", \"user_id\": \n  {}\n",
            record(2)
        );
        let items = decode(body.as_bytes());
        assert_eq!(ok_ids(&items), vec![format!("{:056}", 2)]);
        assert_eq!(errors(&items).len(), 1, "{:?}", errors(&items));
    }

    #[test]
    fn pretty_printed_documents_and_arrays_still_decode() {
        let pretty = format!(
            "{{\n  \"logs\": [\n    {},\n    {}\n  ]\n}}\n",
            record(1),
            record(2)
        );
        let array = format!("[\n  {},\n  {}\n]\n", record(3), record(4));
        for (body, want) in [(pretty, [1, 2]), (array, [3, 4])] {
            let items = decode(body.as_bytes());
            let want: Vec<String> = want.iter().map(|i| format!("{i:056}")).collect();
            assert_eq!(ok_ids(&items), want, "{body}");
            assert!(errors(&items).is_empty(), "{:?}", errors(&items));
        }
    }

    #[test]
    fn line_numbers_of_many_bad_lines_are_right() {
        let mut body = String::new();
        for i in 0..1000 {
            body.push_str(if i % 2 == 0 { "garbage\n" } else { "{\"a\":\n" });
        }
        let errors = errors(&decode(body.as_bytes()));
        assert_eq!(errors.len(), 1000);
        assert!(errors[999].ends_with("line 1000"), "{}", errors[999]);
    }

    #[test]
    fn cloud_events_decode_with_their_profile_in_every_envelope_and_spelling() {
        let created = r#"{"id":"evt_1","spec_version":"1.0","type":"com.auth0.user.created","time":"2026-11-28T10:00:00Z","source":"urn:auth0:acme:users","data":{"object":{"user_id":"google-oauth2|1","email":"a@b.example","email_verified":true,"identities":[{"connection":"google-oauth2","provider":"google-oauth2"}],"app_metadata":{"plan":"pro"}}}}"#;
        let bridged = format!(
            r#"{{"version":"0","detail-type":"anything","source":"aws.partner/auth0.com/acme/auth0.events","detail":{created}}}"#
        );
        for body in [created.to_owned(), bridged, format!("[{created}]")] {
            let items = decode(body.as_bytes());
            let Some(Ok(event)) = items.first() else {
                panic!("{body}: {items:?}");
            };
            assert_eq!(
                event.log_id.as_deref(),
                Some("evt_1"),
                "the CloudEvent id dedups"
            );
            assert_eq!(event.event_type, "user.created");
            assert_eq!(
                event.user(),
                Some("google-oauth2|1"),
                "the bridge keys by it"
            );
            assert_eq!(event.connection.as_deref(), Some("google-oauth2"));
            assert_eq!(event.email(), Some("a@b.example"));
            assert_eq!(event.selection(), Selection::Eligible(Trigger::Signup));
            let profile = event.profile.as_deref().map(|p| p.email_verified);
            assert_eq!(profile, Some(Some(true)));
        }
        let update = |verified: bool| {
            format!(
                r#"{{"id":"evt_2","specversion":"1.0","type":"user.updated","data":{{"object":{{"user_id":"auth0|2","email_verified":{verified}}}}}}}"#
            )
        };
        let selection = |body: String| match decode(body.as_bytes()).first() {
            Some(Ok(event)) => event.selection(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            selection(update(true)),
            Selection::Eligible(Trigger::EmailVerified)
        );
        assert!(matches!(
            selection(update(false)),
            Selection::NotEligible(_)
        ));
        let broken = r#"{"id":"evt_3","specversion":"1.0","type":"user.created","data":{"object":{"email":"x@y.z"}}}"#;
        assert!(matches!(decode(broken.as_bytes()).first(), Some(Err(_))));
    }

    #[test]
    fn organization_member_added_decodes_in_every_envelope_and_spelling() {
        let added = |spelling: &str, version: &str| {
            format!(
                r#"{{"id":"evt_m1","{version}":"1.0","type":"{spelling}","time":"2026-12-01T10:00:00Z","source":"urn:auth0:acme:organizations","data":{{"object":{{"organization":{{"id":"org_abc","name":"acme"}},"user":{{"user_id":"samlp|acme|7"}}}}}}}}"#
            )
        };
        let plain = added("organization.member.added", "specversion");
        let prefixed = added("com.auth0.organization.member.added", "spec_version");
        let bridged = format!(
            r#"{{"version":"0","detail-type":"organization.member.added","source":"aws.partner/auth0.com/acme/auth0.events","detail":{plain}}}"#
        );
        let lines = format!("{plain}\n{prefixed}\n");
        for body in [
            plain.clone(),
            prefixed.clone(),
            bridged,
            format!("[{plain}]"),
            lines,
        ] {
            let items = decode(body.as_bytes());
            assert!(!items.is_empty(), "{body}");
            for item in items {
                let Ok(event) = item else {
                    panic!("{body}: {item:?}");
                };
                assert_eq!(event.log_id.as_deref(), Some("evt_m1"));
                assert_eq!(event.event_type, "organization.member.added");
                assert_eq!(event.user(), Some("samlp|acme|7"));
                assert_eq!(event.organization(), Some("org_abc"));
                assert_eq!(event.organization_name.as_deref(), Some("acme"));
                assert!(event.is_cloud_event());
                assert!(
                    event.profile.is_none(),
                    "no profile: read when a rule needs it"
                );
                assert_eq!(
                    event.selection(),
                    Selection::Eligible(Trigger::OrganizationMemberAdded)
                );
            }
        }
        let removed = plain.replace("member.added", "member.deleted");
        match decode(removed.as_bytes()).first() {
            Some(Ok(event)) => assert!(matches!(event.selection(), Selection::NotEligible(_))),
            other => panic!("{other:?}"),
        }
        for broken in [
            r#"{"id":"evt_m2","specversion":"1.0","type":"organization.member.added","data":{"object":{"organization":{"id":"org_abc"}}}}"#,
            r#"{"id":"evt_m3","specversion":"1.0","type":"organization.member.added","data":{"object":{"user":{"user_id":"auth0|1"}}}}"#,
            r#"{"id":"evt_m4","specversion":"1.0","type":"organization.member.added"}"#,
        ] {
            match decode(broken.as_bytes()).first() {
                Some(Err(err)) => assert!(err.log_id.is_some(), "{err:?}"),
                other => panic!("{broken}: {other:?}"),
            }
        }
    }

    #[test]
    fn first_logins_of_every_login_success_type_and_fields_only_in_prompts() {
        let login = |code: &str, count: u64| {
            format!(
                r#"{{"log_id":"1","data":{{"type":"{code}","user_id":"auth0|1","connection_id":"","details":{{"prompts":[{{"name":"prompt-authenticate","connection":"corp-azure-ad","connection_id":"con_1","strategy":"waad","strategy_type":"enterprise","stats":{{"loginsCount":{count}}}}}]}}}}}}"#
            )
        };
        for code in ["s", "scoa", "sens"] {
            let items = decode(login(code, 1).as_bytes());
            let Some(Ok(event)) = items.first() else {
                panic!("{code}: {items:?}");
            };
            assert_eq!(
                event.selection(),
                Selection::Eligible(Trigger::FirstLogin),
                "{code}"
            );
            assert_eq!(event.connection.as_deref(), Some("corp-azure-ad"), "{code}");
            assert_eq!(event.connection_id.as_deref(), Some("con_1"));
            assert_eq!(event.strategy.as_deref(), Some("waad"));
            assert_eq!(event.strategy_type.as_deref(), Some("enterprise"));
            let later = decode(login(code, 2).as_bytes());
            assert!(
                matches!(later.first(), Some(Ok(e)) if e.selection() == Selection::NotEligible("later login"))
            );
        }
        // A top-level connection without the strategy: the strategy comes from the prompt of
        // that connection, never from a prompt naming another one.
        let partial = |connection: &str| {
            format!(
                r#"{{"log_id":"1","data":{{"type":"s","user_id":"waad|1","connection":"{connection}","details":{{"stats":{{"loginsCount":1}},"prompts":[{{"name":"prompt-authenticate","connection":"corp-azure-ad","connection_id":"con_1","strategy":"waad","strategy_type":"enterprise"}}]}}}}}}"#
            )
        };
        let Some(Ok(same)) = decode(partial("corp-azure-ad").as_bytes()).pop() else {
            panic!("no event");
        };
        assert_eq!(same.strategy.as_deref(), Some("waad"));
        assert_eq!(same.strategy_type.as_deref(), Some("enterprise"));
        let two_prompts = r#"{"log_id":"1","data":{"type":"s","user_id":"waad|1","connection":"corp-azure-ad","details":{"stats":{"loginsCount":1},"prompts":[{"name":"lock-password-authenticate","connection":"Username-Password-Authentication","strategy":"auth0","strategy_type":"database"},{"name":"prompt-authenticate","connection":"corp-azure-ad","strategy":"waad","strategy_type":"enterprise"}]}}}"#;
        let Some(Ok(second)) = decode(two_prompts.as_bytes()).pop() else {
            panic!("no event");
        };
        assert_eq!(
            second.strategy.as_deref(),
            Some("waad"),
            "the prompt of this connection"
        );
        assert_eq!(second.strategy_type.as_deref(), Some("enterprise"));
        let Some(Ok(other)) = decode(partial("other-idp").as_bytes()).pop() else {
            panic!("no event");
        };
        assert_eq!(other.connection.as_deref(), Some("other-idp"));
        assert_eq!(other.strategy, None);
        assert_eq!(other.strategy_type, None);
    }

    proptest! {
        #[test]
        fn every_valid_record_decodes_and_every_garbage_line_is_reported_once(
            lines in proptest::collection::vec(
                prop_oneof![
                    (0usize..1000).prop_map(Some),
                    Just(None),
                ],
                1..40,
            ),
            garbage in "#[ -~]{0,30}",
            indent in "[ \t]{0,3}",
        ) {
            let mut body = String::new();
            let mut want = Vec::new();
            let mut bad = 0;
            for line in &lines {
                match line {
                    Some(i) => {
                        body.push_str(&indent);
                        body.push_str(&record(*i));
                        want.push(format!("{i:056}"));
                    }
                    None => {
                        body.push_str(&garbage);
                        bad += 1;
                    }
                }
                body.push('\n');
            }
            let items = decode(body.as_bytes());
            prop_assert_eq!(ok_ids(&items), want);
            prop_assert_eq!(errors(&items).len(), bad);
        }
    }

    #[test]
    fn ids_with_control_characters_or_past_their_limit_are_invalid_and_name_the_field() {
        let signup = |user: &str, org: &str| {
            serde_json::json!({"log_id": "900201", "data": {"type": "ss", "user_id": user, "organization_id": org}})
                .to_string()
        };
        let one = |text: String| decode(text.as_bytes()).remove(0);
        let nul = one(signup("auth0|a\u{0}b", "")).unwrap_err();
        assert_eq!(nul.reason, "user_id holds a control character");
        assert_eq!(nul.log_id.as_deref(), Some("900201"));
        let newline = one(signup("auth0|a\nb", "")).unwrap_err();
        assert_eq!(newline.reason, "user_id holds a control character");
        let long = one(signup(&format!("auth0|{}", "x".repeat(MAX_ID_BYTES)), "")).unwrap_err();
        assert_eq!(
            long.reason,
            format!(
                "user_id is {} bytes long, past the limit of 1024",
                MAX_ID_BYTES + 6
            )
        );
        assert!(one(signup(
            &format!("auth0|{}", "x".repeat(MAX_ID_BYTES - 6)),
            ""
        ))
        .is_ok());
        let org = one(signup("auth0|a", &format!("org_{}", "y".repeat(47)))).unwrap_err();
        assert_eq!(
            org.reason,
            "organization_id is 51 characters long, past the limit of 50"
        );
        assert!(one(signup("auth0|a", "org_W5ymkTLcdzUJqQ3c")).is_ok());
        // Unicode ids are fine; the event id is checked too, and a bad one is not repeated.
        assert!(one(signup("oidc|Ünïcødé-ユーザー", "")).is_ok());
        let bad_id = one(
            serde_json::json!({"log_id": "9002\u{0}", "data": {"type": "s", "user_id": "auth0|a"}})
                .to_string(),
        )
        .unwrap_err();
        assert_eq!(bad_id.reason, "the event id holds a control character");
        assert_eq!(bad_id.log_id, None);
        // Every layout goes through the check: JSON Lines and CloudEvents too.
        let lines = format!(
            "{}\n{}\n",
            signup("auth0|ok", ""),
            signup("auth0|\u{7}", "")
        );
        let items = decode_json_lines(lines.as_bytes(), 1);
        assert!(items[0].is_ok() && items[1].is_err(), "{items:?}");
        let cloud = serde_json::json!({"specversion": "1.0", "id": "evt_1", "type": "user.created", "source": "urn:auth0:t:users", "data": {"object": {"user_id": "auth0|\u{0}"}}});
        assert!(one(cloud.to_string()).is_err());
    }

    #[test]
    fn test_events_are_decided_at_decode_whatever_their_object_and_signup_bodies_tell_their_origin()
    {
        let one = |text: String| decode(text.as_bytes()).remove(0);
        // The Dashboard's test button: a0purpose "test", the sample user; also a test of a type
        // whose object the service does not read.
        for (kind, object) in [
            (
                "user.created",
                r#"{"user_id":"auth0|507f1f77bcf86cd799439020"}"#,
            ),
            ("organization.member.added", r#"{"unexpected":true}"#),
        ] {
            let raw = format!(
                r#"{{"specversion":"1.0","id":"evt_t","type":"{kind}","source":"urn:auth0:t.sus.auth0.com","data":{{"object":{object}}},"a0purpose":"test","a0stream":"est_1","a0tenant":"t"}}"#
            );
            let event = one(raw).unwrap_or_else(|e| panic!("{e:?}"));
            assert!(event.is_test());
            assert_eq!(event.selection(), Selection::NotEligible(TEST_EVENT));
        }
        let admin = r#"{"log_id":"1","type":"ss","user_id":"auth0|a","client_name":"Auth0 CLI","details":{"body":{"email":"a@example.com","is_signup":false,"password":"*****"}}}"#;
        let event = one(admin.to_owned()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(event.body_is_signup, Some(false));
        assert!(!event.body_signup_request);
        let form = r#"{"log_id":"2","type":"ss","user_id":"auth0|b","details":{"body":{"email":"b@example.com","transaction":{"id":"x"},"request_language":"en"}}}"#;
        let event = one(form.to_owned()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(event.body_is_signup, None);
        assert!(event.body_signup_request);
    }
}
