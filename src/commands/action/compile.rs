//! `action`: compiles the policy into an Auth0 post-login Action (JavaScript for the Node 18+
//! runtime) that puts the roles a first login gets into the very first token, before the service
//! has assigned them. Pure: a [`Policy`] in, the Action's source text out.
//!
//! The Action mirrors [`Policy::evaluate`] for the triggers a login can be (`signup` on database
//! connections, then `first_login`), with the user's profile as the event carries it: rules in
//! order, `when` all hold and no `unless` holds, `final` stops, an undecided rule is not applied.
//! Every string reaches the JavaScript through `serde_json` (JSON is valid JavaScript).

use std::fmt::Write as _;

use serde_json::Value;

use crate::event::Trigger;
use crate::policy::{Condition, Field, Policy, Rule, ENTERPRISE_STRATEGIES, SOCIAL_STRATEGIES};

/// Domains on which Auth0 refuses custom claim namespaces.
pub const AUTH0_DOMAINS: [&str; 3] = ["auth0.com", "webtask.io", "webtask.run"];

/// The largest integer JavaScript numbers hold exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why no Action could be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("--claim-namespace {given:?}: {problem}")]
    Namespace { given: String, problem: String },
    #[error(
        "policy rule \"{rule}\": `{clause}.{key}` cannot be compiled into the Action: {problem}"
    )]
    Uncompilable {
        rule: String,
        clause: &'static str,
        key: &'static str,
        problem: String,
    },
}

/// The claim the Action sets: a namespace URL the tenant accepts, then `roles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNamespace {
    claim: String,
}

impl ClaimNamespace {
    /// Accepts an `http(s)://` URL outside Auth0's own domains, without query, fragment or
    /// credentials. The claim is the namespace as written, `/` added when it does not end with
    /// one, then `roles`: `https://example.com` and `https://example.com/` both give
    /// `https://example.com/roles`.
    pub fn parse(text: &str) -> Result<ClaimNamespace, ActionError> {
        let refuse = |problem: &str| ActionError::Namespace {
            given: text.to_owned(),
            problem: problem.to_owned(),
        };
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(refuse("contains whitespace or control characters"));
        }
        let url = reqwest::Url::parse(text).map_err(|_| {
            refuse("not a URL (a claim namespace is an http(s) URL you own, e.g. https://example.com/)")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refuse(
                "must be an http:// or https:// URL (e.g. https://example.com/)",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("must not contain credentials"));
        }
        if text.contains(['?', '#']) {
            return Err(refuse("must not have a query or a fragment"));
        }
        let host = url
            .host_str()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| refuse("has no host"))?;
        if AUTH0_DOMAINS
            .iter()
            .any(|d| host == *d || host.ends_with(&format!(".{d}")))
        {
            return Err(refuse(&format!(
                "Auth0 refuses claim namespaces on its own domains ({}): use a domain you own",
                AUTH0_DOMAINS.join(", ")
            )));
        }
        let slash = if text.ends_with('/') { "" } else { "/" };
        Ok(ClaimNamespace {
            claim: format!("{text}{slash}roles"),
        })
    }

    /// The claim name, e.g. `https://example.com/roles`.
    pub fn claim(&self) -> &str {
        &self.claim
    }
}

/// The triggers a login can be, in the order the service sees them, that `policy` acts on:
/// `signup` (database connections only; Auth0 logs `ss` for no other) and `first_login`.
pub fn login_triggers(policy: &Policy) -> Vec<Trigger> {
    [Trigger::Signup, Trigger::FirstLogin]
        .into_iter()
        .filter(|t| policy.handles(*t))
        .collect()
}

/// The rules no login can fire (their `event` condition names only `email_verified`, or the
/// policy acts on no login trigger): the Action leaves them to the service.
pub fn rules_left_to_service(policy: &Policy) -> Vec<&Rule> {
    let triggers = login_triggers(policy);
    policy
        .rules()
        .iter()
        .filter(|rule| !can_fire_on_login(rule, &triggers))
        .collect()
}

fn can_fire_on_login(rule: &Rule, triggers: &[Trigger]) -> bool {
    triggers.iter().any(|t| {
        rule.when.iter().all(|c| match c {
            Condition::Event(events) => events.contains(t),
            _ => true,
        })
    })
}

/// A string as a JavaScript string literal: JSON, with the two line separators JSON allows raw
/// escaped too, so that no string can end a line comment.
fn js_string(text: &str) -> String {
    Value::String(text.to_owned())
        .to_string()
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// A list of strings as a JavaScript array literal.
fn js_strings<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| js_string(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// `text` as `//` comment lines: every line break (including U+2028/U+2029) starts a new
/// comment line, so nothing in a name can leave the comment.
fn comment(out: &mut String, indent: &str, text: &str) {
    for line in text.split(['\n', '\r', '\u{2028}', '\u{2029}']) {
        let line = line.trim_end();
        if line.is_empty() {
            let _ = writeln!(out, "{indent}//");
        } else {
            let _ = writeln!(out, "{indent}// {line}");
        }
    }
}

/// The JavaScript expression for one condition: `true`, `false`, or `null` when the login
/// cannot tell (the rule is then not applied).
fn condition_js(
    rule: &Rule,
    clause: &'static str,
    condition: &Condition,
) -> Result<String, ActionError> {
    Ok(match condition {
        Condition::Event(events) => {
            let names: Vec<&str> = events.iter().map(|t| t.as_str()).collect();
            format!("oneOf(trigger, {})", js_strings(&names))
        }
        Condition::Field(field, values) => {
            let fact = match field {
                Field::Connection => "f.connection",
                Field::ConnectionId => "f.connectionId",
                Field::Strategy => "f.strategy",
                Field::StrategyType => "f.strategyType",
                Field::ClientId => "f.clientId",
                Field::ClientName => "f.clientName",
                Field::OrganizationId => "f.organizationId",
                Field::OrganizationName => "f.organizationName",
                Field::Provider => "f.provider",
            };
            format!("oneOf({fact}, {})", js_strings(values))
        }
        Condition::EmailDomain(domains) => {
            format!("domainIn(f.emailDomain, {})", js_strings(domains))
        }
        Condition::EmailVerified(wanted) => format!("f.emailVerified === {wanted}"),
        Condition::HasRoles(wanted) => format!("hasRoles(held, f.rolesKnown, {wanted})"),
        // Only the tenant log's `ss` tells how a user was created; a login cannot.
        Condition::CreatedBy(_) => "null".to_owned(),
        Condition::AppMetadata(pairs) => {
            for (key, value) in pairs {
                if let Some(problem) = inexact_in_javascript(value) {
                    return Err(ActionError::Uncompilable {
                        rule: rule.name.clone(),
                        clause,
                        key: condition.key(),
                        problem: format!("{key} = {value}: {problem}"),
                    });
                }
            }
            let pairs: Vec<Value> = pairs
                .iter()
                .map(|(k, v)| Value::Array(vec![Value::String(k.clone()), v.clone()]))
                .collect();
            // JSON.parse, not an object literal: a key such as `__proto__` stays a key.
            format!(
                "metadataHas(f.appMetadata, JSON.parse({}))",
                js_string(&Value::Array(pairs).to_string())
            )
        }
    })
}

/// Why a JSON value would compare differently in JavaScript than in the service, if it would.
fn inexact_in_javascript(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                (u > MAX_SAFE_INTEGER).then(|| {
                    format!(
                        "{u} is beyond the integers JavaScript holds exactly (±{MAX_SAFE_INTEGER})"
                    )
                })
            } else if let Some(i) = n.as_i64() {
                (i.unsigned_abs() > MAX_SAFE_INTEGER).then(|| {
                    format!(
                        "{i} is beyond the integers JavaScript holds exactly (±{MAX_SAFE_INTEGER})"
                    )
                })
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                (f.fract() == 0.0).then(|| {
                    format!(
                        "{n} is a float with an integer value, which JavaScript does not tell from the integer {f:.0} while the service does (Auth0 returns such numbers as integers): write {f:.0}"
                    )
                })
            }
        }
        Value::Array(items) => items.iter().find_map(inexact_in_javascript),
        Value::Object(map) => map.values().find_map(inexact_in_javascript),
        Value::Null | Value::Bool(_) | Value::String(_) => None,
    }
}

/// The Action's source for `policy`. `source` names the config file in the header comment.
/// Fails, naming the rule, when a rule has no exact JavaScript form.
pub fn compile(
    policy: &Policy,
    namespace: &ClaimNamespace,
    source: &str,
) -> Result<String, ActionError> {
    let triggers = login_triggers(policy);
    let left = rules_left_to_service(policy);
    let mut body = String::new();
    for (i, rule) in policy.rules().iter().enumerate() {
        let title = format!("{}. {}", i + 1, js_string(&rule.name));
        if left.iter().any(|r| r.name == rule.name) {
            comment(
                &mut body,
                "  ",
                &format!("{title}: fires on no login (only on email_verified or organization_member_added); its roles come later, through the service."),
            );
            continue;
        }
        let when = rule
            .when
            .iter()
            .map(|c| condition_js(rule, "when", c))
            .collect::<Result<Vec<_>, _>>()?;
        let unless = rule
            .unless
            .iter()
            .map(|c| condition_js(rule, "unless", c))
            .collect::<Result<Vec<_>, _>>()?;
        comment(&mut body, "  ", &title);
        // A rule that gives roles only in an organization does not apply to a login outside
        // one (not even as final), as in the service.
        let only_in_organization = rule.assign.is_empty()
            && rule.assign_client_metadata.is_none()
            && !rule.assign_in_organization.is_empty();
        let guard = if only_in_organization {
            "f.organizationId !== undefined && "
        } else {
            ""
        };
        let _ = writeln!(
            body,
            "  if ({guard}applies([{}], [{}])) {{",
            when.join(", "),
            unless.join(", ")
        );
        for role in &rule.assign {
            let _ = writeln!(body, "    give({});", js_string(role));
        }
        if !rule.assign_in_organization.is_empty() {
            let _ = writeln!(
                body,
                "    // assign_in_organization: the member's roles in this login's organization."
            );
            let _ = writeln!(
                body,
                "    if (f.organizationId !== undefined) {}.forEach(give);",
                js_strings(&rule.assign_in_organization)
            );
        }
        if let Some(key) = &rule.assign_client_metadata {
            let _ = writeln!(body, "    give(clientRole(f, {}));", js_string(key));
        }
        if rule.is_final {
            let _ = writeln!(body, "    return roles; // final");
        }
        let _ = writeln!(body, "  }}");
    }

    let mut out = String::new();
    let mut header = format!(
        "Auth0 post-login Action generated by auth0-default-roles {} from {} (Node 18+ runtime).\n\
         Regenerate it after changing the policy; do not edit it by hand.\n\
         \n\
         On a first login (event.stats.logins_count <= 1) it sets the claim {} on the ID and\n\
         access tokens to the roles the user holds (event.authorization.roles) and the roles the\n\
         policy gives this login (on a login through an organization, the roles\n\
         assign_in_organization gives the member there too); on later logins, to\n\
         event.authorization.roles. It never calls\n\
         the Management API and never denies a login; on any error it changes no claim.\n\
         auth0-default-roles still assigns the roles (from the tenant's log stream): this Action\n\
         only shows them in the very first token.\n\
         \n",
        env!("CARGO_PKG_VERSION"),
        js_string(source),
        js_string(namespace.claim()),
    );
    let names: Vec<&str> = triggers.iter().map(|t| t.as_str()).collect();
    if names.is_empty() {
        header.push_str(
            "The policy acts on neither signup nor first_login: the claim is always event.authorization.roles.\n",
        );
    } else {
        let _ = writeln!(
            header,
            "Triggers evaluated on a first login: {} (signup only on database connections,\nstrategy \"auth0\", the only ones Auth0 logs a signup for).",
            names.join(", then ")
        );
    }
    header.push_str(
        "Rules on email_verified fire on no login: their roles come later, through the service.\n\
         A role named by an application's client_metadata is not checked here: the service\n\
         assigns only names that are roles of the tenant.\n\nThe policy:\n",
    );
    for (i, rule) in policy.rules().iter().enumerate() {
        let _ = writeln!(header, "{}. {rule}", i + 1);
    }
    if policy.rules().is_empty() {
        header.push_str("(no rules)\n");
    }
    comment(&mut out, "", header.trim_end());
    out.push('\n');
    out.push_str("\"use strict\";\n\n");
    let _ = writeln!(out, "const CLAIM = {};", js_string(namespace.claim()));
    let _ = writeln!(out, "const TRIGGERS = {};", js_strings(&names));
    let _ = writeln!(
        out,
        "const ENTERPRISE_STRATEGIES = {};",
        js_strings(&ENTERPRISE_STRATEGIES)
    );
    let _ = writeln!(
        out,
        "const SOCIAL_STRATEGIES = {};",
        js_strings(&SOCIAL_STRATEGIES)
    );
    out.push_str(HELPERS);
    out.push_str(
        "\n// The roles the policy gives this login for `trigger`, in rule order. `held`: the roles the\n\
         // user holds by then (has_roles).\n\
         function rolesFor(trigger, f, held) {\n  \
         const roles = [];\n  \
         const give = (role) => {\n    \
         if (role !== undefined && !roles.includes(role)) roles.push(role);\n  \
         };\n",
    );
    out.push_str(&body);
    out.push_str("  return roles;\n}\n");
    out.push_str(ENTRY);
    Ok(out)
}

/// What every Action shares: reading the event as the policy does, and the condition helpers.
const HELPERS: &str = r#"
// Characters Rust's str::trim removes (Unicode White_Space), as the service trims role names.
const LEADING_SPACE = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;
const TRAILING_SPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/;

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// A non-empty string, else undefined (what the login does not tell).
function text(value) {
  return typeof value === "string" && value !== "" ? value : undefined;
}

// Three-valued, like the service: true, false, or null when the login cannot tell.
function oneOf(value, accepted) {
  return value === undefined ? null : accepted.includes(value);
}

// has_roles: certain when a role is held (or given by this login), or when the roles are known.
function hasRoles(held, known, wanted) {
  if (held.length > 0) return wanted === true;
  return known ? wanted === false : null;
}

// when: all hold, unless: none holds. A rule is applied only when that is certain; an undecided
// rule is not applied and later rules are evaluated as if it did not match.
function applies(when, unless) {
  let undecided = false;
  for (const holds of when) {
    if (holds === false) return false;
    if (holds === null) undecided = true;
  }
  for (const holds of unless) {
    if (holds === true) return false;
    if (holds === null) undecided = true;
  }
  return !undecided;
}

// Auth0's classification of a connection strategy (policy::strategy_type_of).
function strategyType(strategy, isSocial) {
  if (strategy === undefined) return undefined;
  if (strategy === "auth0") return "database";
  if (strategy === "email" || strategy === "sms") return "passwordless";
  if (isSocial === true) return "social";
  if (isSocial === false) return "enterprise";
  if (ENTERPRISE_STRATEGIES.includes(strategy)) return "enterprise";
  if (SOCIAL_STRATEGIES.includes(strategy)) return "social";
  return undefined;
}

// The lowercased domain of an address shaped local@domain.tld, without masking (*) or
// whitespace; undefined otherwise (event::email_domain).
function emailDomain(email) {
  if (typeof email !== "string") return undefined;
  const at = email.lastIndexOf("@");
  if (at < 0) return undefined;
  const local = email.slice(0, at);
  const domain = email.slice(at + 1);
  const shaped =
    local !== "" &&
    !local.includes("@") &&
    domain.length >= 3 &&
    domain.includes(".") &&
    !domain.startsWith(".") &&
    !domain.endsWith(".") &&
    !/[* \t\n\r]/.test(email);
  return shaped ? domain.replace(/[A-Z]+/g, (s) => s.toLowerCase()) : undefined;
}

// `*.example.com` matches subdomains of example.com, not example.com itself.
function domainIn(domain, patterns) {
  if (domain === undefined) return false;
  return patterns.some((pattern) => {
    if (!pattern.startsWith("*.")) return pattern === domain;
    const parent = pattern.slice(2);
    if (!domain.endsWith(parent)) return false;
    const sub = domain.slice(0, domain.length - parent.length);
    return sub.length > 1 && sub.endsWith(".");
  });
}

// JSON equality: arrays in order, objects whatever their key order.
function sameJson(a, b) {
  if (Array.isArray(a) || Array.isArray(b)) {
    return (
      Array.isArray(a) &&
      Array.isArray(b) &&
      a.length === b.length &&
      a.every((item, i) => sameJson(item, b[i]))
    );
  }
  if (isObject(a) || isObject(b)) {
    if (!isObject(a) || !isObject(b)) return false;
    const keys = Object.keys(b);
    return (
      Object.keys(a).length === keys.length &&
      keys.every((key) => Object.hasOwn(a, key) && sameJson(a[key], b[key]))
    );
  }
  return a === b;
}

function metadataHas(metadata, pairs) {
  return pairs.every(
    ([key, wanted]) =>
      metadata !== undefined && Object.hasOwn(metadata, key) && sameJson(metadata[key], wanted)
  );
}

// The role an application names in client_metadata[key] (trimmed), if any. Not checked against
// the tenant's roles: the service assigns only names that are roles.
function clientRole(f, key) {
  const metadata = f.clientMetadata;
  const value = metadata !== undefined && Object.hasOwn(metadata, key) ? metadata[key] : undefined;
  if (typeof value !== "string") return undefined;
  const name = value.replace(LEADING_SPACE, "").replace(TRAILING_SPACE, "");
  return name === "" ? undefined : name;
}

// The part of a user id before the first `|`.
function providerOf(userId) {
  if (typeof userId !== "string") return undefined;
  const bar = userId.indexOf("|");
  return bar > 0 && bar < userId.length - 1 ? userId.slice(0, bar) : undefined;
}

// What the policy can read of this login. The user's own fields (email, email_verified,
// app_metadata, roles) are the profile, so their absence is known; a login field the event lacks
// is undefined (undecided). Connection, strategy, strategy type and provider fall back to the
// identity of this login (the one of this connection, else of this strategy, else the primary).
function loginFacts(event) {
  const user = event.user;
  if (!isObject(user)) throw new TypeError("event.user is not an object");
  // Without event.authorization the roles held are unknown: has_roles is undecided (unless
  // this login gave some), never "no roles".
  const rolesKnown = event.authorization?.roles !== undefined;
  const held = event.authorization?.roles ?? [];
  if (!Array.isArray(held) || !held.every((role) => typeof role === "string")) {
    throw new TypeError("event.authorization.roles is not a list of role names");
  }
  const connection = isObject(event.connection) ? event.connection : {};
  const client = isObject(event.client) ? event.client : {};
  const organization = isObject(event.organization) ? event.organization : {};
  const identities = (Array.isArray(user.identities) ? user.identities : []).map((i) => ({
    connection: text(i?.connection),
    provider: text(i?.provider),
    isSocial: typeof i?.isSocial === "boolean" ? i.isSocial : undefined,
  }));
  const name = text(connection.name);
  const strategy = text(connection.strategy);
  const identity =
    (name && identities.find((i) => i.connection === name)) ||
    (strategy && identities.find((i) => i.provider === strategy)) ||
    identities[0];
  const identityStrategy = identity === undefined ? undefined : strategy ?? identity.provider;
  const clientId = text(client.client_id);
  return {
    databaseSignup: connection.strategy === "auth0",
    connection: name ?? identity?.connection,
    connectionId: text(connection.id),
    strategy: strategy ?? identity?.provider,
    strategyType: identity === undefined ? undefined : strategyType(identityStrategy, identity.isSocial),
    clientId,
    clientName: text(client.name),
    organizationId: text(organization.id),
    organizationName: text(organization.name),
    provider: providerOf(user.user_id) ?? identityStrategy,
    emailDomain: emailDomain(user.email),
    emailVerified: user.email_verified === true,
    appMetadata: isObject(user.app_metadata) ? user.app_metadata : undefined,
    clientMetadata: clientId !== undefined && isObject(client.metadata) ? client.metadata : undefined,
    held,
    rolesKnown,
  };
}
"#;

/// The entry point: first login or not, the claim, failing open.
const ENTRY: &str = r#"
// The claim: the roles held, then (first login only) those of each trigger in turn, without
// repeats. A signup's roles count as held for first_login, as they do in the service.
function claimRoles(event) {
  const f = loginFacts(event);
  const claim = [];
  const add = (role) => {
    if (!claim.includes(role)) claim.push(role);
  };
  f.held.forEach(add);
  const count = event.stats.logins_count;
  if (typeof count === "number" && count <= 1) {
    for (const trigger of TRIGGERS) {
      if (trigger === "signup" && !f.databaseSignup) continue;
      rolesFor(trigger, f, claim).forEach(add);
    }
  }
  return claim;
}

exports.onExecutePostLogin = async (event, api) => {
  try {
    const roles = claimRoles(event);
    api.idToken.setCustomClaim(CLAIM, roles);
    api.accessToken.setCustomClaim(CLAIM, roles);
  } catch (err) {
    // Fail open: the login goes on without the claim; the service still assigns the roles.
    try {
      console.log(`auth0-default-roles: no roles claim: ${err && err.message}`);
    } catch {
      // nothing more to do
    }
  }
};
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;

    fn policy(toml_text: &str) -> Policy {
        #[derive(serde::Deserialize)]
        struct File {
            policy: PolicyConfig,
        }
        let file: File = toml::from_str(toml_text).unwrap_or_else(|e| panic!("toml: {e}"));
        Policy::from_config(&file.policy).unwrap_or_else(|e| panic!("policy: {e}"))
    }

    fn namespace() -> ClaimNamespace {
        ClaimNamespace::parse("https://example.com/").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn action_namespace_gets_one_slash_then_roles() {
        for (given, claim) in [
            ("https://example.com/", "https://example.com/roles"),
            ("https://example.com", "https://example.com/roles"),
            ("http://example.com/app", "http://example.com/app/roles"),
            ("https://example.com/app/", "https://example.com/app/roles"),
            (
                "https://my-auth0.example/",
                "https://my-auth0.example/roles",
            ),
            ("https://notauth0.com/", "https://notauth0.com/roles"),
        ] {
            let ns = ClaimNamespace::parse(given).unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(ns.claim(), claim);
        }
    }

    #[test]
    fn action_namespace_refusals() {
        for (given, why) in [
            ("example.com", "not a URL"),
            ("roles", "not a URL"),
            ("", "not a URL"),
            ("ftp://example.com/", "http:// or https://"),
            ("urn:example:roles", "http:// or https://"),
            ("https://auth0.com/", "own domains"),
            ("https://AUTH0.COM/", "own domains"),
            ("https://tenant.eu.auth0.com/", "own domains"),
            ("https://auth0.com./", "own domains"),
            ("https://x.webtask.io/", "own domains"),
            ("https://webtask.run", "own domains"),
            ("https://example.com/?a=1", "query or a fragment"),
            ("https://example.com/#x", "query or a fragment"),
            ("https://user:pw@example.com/", "credentials"),
            ("https://example.com/ roles", "whitespace"),
            (" https://example.com/", "whitespace"),
        ] {
            match ClaimNamespace::parse(given) {
                Ok(ns) => panic!("{given:?} accepted as {}", ns.claim()),
                Err(err) => {
                    let text = err.to_string();
                    assert!(text.contains(why), "{given:?}: {text}");
                    assert!(text.contains("--claim-namespace"), "{text}");
                }
            }
        }
    }

    #[test]
    fn action_refuses_app_metadata_numbers_javascript_cannot_tell_apart() {
        for (value, why) in [
            ("1.0", "write 1"),
            ("{ n = [2.0] }", "write 2"),
            ("9007199254740993", "beyond the integers"),
            ("-9007199254740993", "beyond the integers"),
        ] {
            let p = policy(&format!(
                "[[policy.rules]]\nname = \"plan rule\"\nunless = {{ app_metadata = {{ seats = {value} }} }}\nassign = [\"A\"]\n"
            ));
            let err = compile(&p, &namespace(), "t.toml").err();
            let text = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(
                text.contains("policy rule \"plan rule\"")
                    && text.contains("unless.app_metadata")
                    && text.contains(why),
                "{value}: {text}"
            );
        }
        for value in [
            "1",
            "1.5",
            "9007199254740991",
            "\"1.0\"",
            "{ a = [1, true, \"x\"] }",
        ] {
            let p = policy(&format!(
                "[[policy.rules]]\nname = \"r\"\nwhen = {{ app_metadata = {{ seats = {value} }} }}\nassign = [\"A\"]\n"
            ));
            assert!(compile(&p, &namespace(), "t.toml").is_ok(), "{value}");
        }
    }

    #[test]
    fn action_strings_are_json_and_comments_cannot_be_left() {
        let p = policy(
            r#"
[[policy.rules]]
name = "a \"quoted\" */ name\nwith a line\u2028and a separator"
when = { connection = "x\"); evil(); (\"", client_name = "line\u2029sep" }
assign = ["R\\ole", "</script>"]
"#,
        );
        let js =
            compile(&p, &namespace(), "dir/it's \"here\".toml").unwrap_or_else(|e| panic!("{e}"));
        assert!(!js.contains('\u{2028}') && !js.contains('\u{2029}'), "{js}");
        assert!(js.contains(r#"give("R\\ole");"#), "{js}");
        assert!(
            js.contains(r#"oneOf(f.connection, ["x\"); evil(); (\""])"#),
            "{js}"
        );
        assert!(
            js.contains(r#"oneOf(f.clientName, ["line\u2029sep"])"#),
            "{js}"
        );
        // Every line before the code is a comment.
        let code_starts = js.find("\"use strict\";").unwrap_or(0);
        for line in js[..code_starts].lines().filter(|l| !l.is_empty()) {
            assert!(line.starts_with("//"), "{line:?}");
        }
        assert!(js.contains("dir/it's \\\"here\\\".toml"), "{js}");
        assert!(js.contains(env!("CARGO_PKG_VERSION")));
        assert!(!js.contains("require("));
    }

    #[test]
    fn action_leaves_email_verified_rules_to_the_service() {
        let p = policy(
            r#"
[[policy.rules]]
name = "on-verify"
when = { event = "email_verified", email_domain = "partner.example" }
assign = ["PARTNER"]

[[policy.rules]]
name = "everyone"
assign = ["Viewer"]
"#,
        );
        let left: Vec<&str> = rules_left_to_service(&p)
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(left, ["on-verify"]);
        let js = compile(&p, &namespace(), "t.toml").unwrap_or_else(|e| panic!("{e}"));
        assert!(!js.contains("give(\"PARTNER\")"), "{js}");
        assert!(js.contains("give(\"Viewer\")"), "{js}");
        assert!(js.contains("fires on no login"), "{js}");

        let p = policy("[policy]\nevents = [\"email_verified\"]\n[[policy.rules]]\nname = \"r\"\nassign = [\"A\"]\n");
        assert!(login_triggers(&p).is_empty());
        let js = compile(&p, &namespace(), "t.toml").unwrap_or_else(|e| panic!("{e}"));
        assert!(js.contains("const TRIGGERS = [];"), "{js}");
        assert!(js.contains("neither signup nor first_login"), "{js}");
    }
}
