//! `action`: the generated post-login Action, run in `node` against a table of Action events,
//! must give the claim the Rust policy gives each one (`Policy::evaluate` for `signup` on database
//! connections, then `first_login`, the user's roles as `has_roles` sees them by then). Also the
//! command's refusals (exit 2).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use auth0_default_roles::config::Config;
use auth0_default_roles::event::{Identity, LogEvent, Trigger};
use auth0_default_roles::policy::{Evaluation, Policy, Profile};

use test_harness::temp_dir;

const NAMESPACE: &str = "https://example.com/";
const CLAIM: &str = "https://example.com/roles";

/// The forum's policy (Viewer for users without roles, the application's role from its
/// metadata, INTERNAL for one Azure AD connection or a verified company address, CUSTOMER
/// otherwise) and rules on every other condition key; one rule with names that try to break out
/// of strings and comments.
const POLICY: &str = r#"
[policy]
events = ["signup", "first_login", "email_verified"]

[[policy.rules]]
name = "viewer-for-users-without-roles"
unless = { has_roles = true }
assign = ["Viewer"]

[[policy.rules]]
name = "application-role"
when = { event = "first_login" }
assign_client_metadata = "default_role"

[[policy.rules]]
name = "database-signup"
when = { event = "signup" }
assign = ["Database User"]

[[policy.rules]]
name = "newcomer"
when = { event = "first_login", has_roles = false }
assign = ["Newcomer"]

[[policy.rules]]
name = "acme-members"
when = { organization_id = "org_acme" }
assign = ["ACME"]

[[policy.rules]]
name = "internal-by-connection"
when = { connection = "corp-azure-ad" }
unless = { connection_id = "con_suspended" }
assign = ["INTERNAL"]
final = true

[[policy.rules]]
name = "internal-by-domain"
when = { email_domain = ["corp.example", "*.corp.example"], email_verified = true }
assign = ["INTERNAL"]
final = true

[[policy.rules]]
name = "enterprise-partners"
when = { strategy_type = "enterprise" }
assign = ["PARTNER"]

[[policy.rules]]
name = "social-developers"
when = { strategy_type = "social", provider = ["github", "google-oauth2"] }
unless = { strategy = "google-oauth2", email_verified = false }
assign = ["DEVELOPER"]

[[policy.rules]]
name = "passwordless"
when = { strategy_type = "passwordless" }
assign = ["PASSWORDLESS"]

[[policy.rules]]
name = "store-staff"
when = { client_id = "store-client", app_metadata = { staff = true, team = { name = "ops", floors = [1, 2] } } }
assign = ["Store Staff"]

[[policy.rules]]
name = "console"
when = { client_name = "Admin Console" }
unless = { app_metadata = { plan = "free" } }
assign = ["CONSOLE"]

[[policy.rules]]
name = "proto-admins"
when = { app_metadata = { "__proto__" = { admin = true } } }
assign = ["PROTO"]

[[policy.rules]]
name = "verified-partners"
when = { event = "email_verified", email_domain = "partner.example" }
assign = ["PARTNER-VERIFIED"]

[[policy.rules]]
name = "a \"nasty\" */ name\nwith a line\u2028break"
when = { connection = "weird\"conn\u2029</script>" }
assign = ["R\\ole \"quoted\"\u2028"]
assign_client_metadata = "extra\"key"

[[policy.rules]]
name = "unverified-database-users"
when = { strategy = "auth0", email_verified = false }
assign = ["UNVERIFIED"]

[[policy.rules]]
name = "organization-members"
when = { event = "first_login" }
assign_in_organization = ["Org Member"]

[[policy.rules]]
name = "acme-staff"
when = { organization_name = "acme" }
assign = ["ACME Tenant"]
assign_in_organization = ["ACME Staff"]

[[policy.rules]]
name = "customers"
assign = ["CUSTOMER"]
"#;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `NODE_BIN` (set by `scripts/test.sh`, which installs Node.js: then it must work), else
/// `node` on PATH; `None` (the test skips, saying why) only when neither is there.
fn node() -> Option<String> {
    if let Ok(bin) = std::env::var("NODE_BIN") {
        return Some(bin);
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => Some("node".to_owned()),
        _ => {
            eprintln!(
                "SKIPPED: `node` is not on PATH, so the generated Action cannot be run (install Node.js 18+, or run scripts/test.sh, which installs it)"
            );
            None
        }
    }
}

/// The value at one key of `value`, an index when `value` is an array.
fn step<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    match (value.is_array(), key.parse::<usize>()) {
        (true, Ok(index)) => &mut value[index],
        _ => &mut value[key],
    }
}

/// `value` with `path` (dotted; numbers index arrays) set.
fn set(mut value: Value, path: &str, new: Value) -> Value {
    let mut at = &mut value;
    for key in path.split('.') {
        at = step(at, key);
    }
    *at = new;
    value
}

/// `value` without the last key of `path`.
fn del(mut value: Value, path: &str) -> Value {
    let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut at = &mut value;
    for key in parent.split('.').filter(|k| !k.is_empty()) {
        at = step(at, key);
    }
    if let Some(map) = at.as_object_mut() {
        map.remove(last);
    }
    value
}

fn login(connection: Value, user: Value) -> Value {
    json!({
        "stats": { "logins_count": 1 },
        "connection": connection,
        "client": {
            "client_id": "store-client",
            "name": "Store",
            "metadata": { "default_role": "Store Customer" }
        },
        "organization": { "id": "org_other", "name": "other" },
        "user": user,
        "authorization": { "roles": [] },
        "request": { "ip": "203.0.113.7" },
        "transaction": { "protocol": "oidc-basic-profile" }
    })
}

fn database() -> Value {
    login(
        json!({ "id": "con_db", "name": "Username-Password-Authentication", "strategy": "auth0" }),
        json!({
            "user_id": "auth0|ann",
            "email": "ann@customer.example",
            "email_verified": false,
            "identities": [{ "connection": "Username-Password-Authentication", "provider": "auth0", "isSocial": false, "user_id": "ann" }],
            "app_metadata": {}
        }),
    )
}

fn social(strategy: &str, is_social: Value) -> Value {
    login(
        json!({ "id": "con_soc", "name": strategy, "strategy": strategy }),
        json!({
            "user_id": format!("{strategy}|1234"),
            "email": "bob@gmail.com",
            "email_verified": true,
            "identities": [{ "connection": strategy, "provider": strategy, "isSocial": is_social, "user_id": "1234" }]
        }),
    )
}

fn enterprise(connection: &str, strategy: &str) -> Value {
    login(
        json!({ "id": "con_ent", "name": connection, "strategy": strategy }),
        json!({
            "user_id": format!("{strategy}|carol"),
            "email": "carol@corp.example",
            "email_verified": true,
            "identities": [{ "connection": connection, "provider": strategy, "isSocial": false }]
        }),
    )
}

struct Case {
    name: &'static str,
    event: Value,
    /// The Action must fail open: no claim at all.
    throws: bool,
}

fn ok(name: &'static str, event: Value) -> Case {
    Case {
        name,
        event,
        throws: false,
    }
}

fn throws(name: &'static str, event: Value) -> Case {
    Case {
        name,
        event,
        throws: true,
    }
}

fn cases() -> Vec<Case> {
    let db = database;
    vec![
        ok("database signup and first login, no roles yet", db()),
        ok(
            "database, logins_count 0",
            set(db(), "stats.logins_count", json!(0)),
        ),
        ok(
            "database, later login keeps the roles held",
            set(
                set(db(), "stats.logins_count", json!(5)),
                "authorization.roles",
                json!(["Viewer", "CUSTOMER"]),
            ),
        ),
        ok(
            "later login without authorization",
            del(set(db(), "stats.logins_count", json!(2)), "authorization"),
        ),
        ok(
            "first login without a count",
            del(db(), "stats.logins_count"),
        ),
        ok(
            "database, already holds a role (invited user)",
            set(db(), "authorization.roles", json!(["Admin"])),
        ),
        ok(
            "database, no authorization at all",
            del(db(), "authorization"),
        ),
        ok(
            "database, verified email",
            set(db(), "user.email_verified", json!(true)),
        ),
        ok("application without metadata", del(db(), "client.metadata")),
        ok(
            "application metadata with spaces around the name",
            set(
                db(),
                "client.metadata.default_role",
                json!("  Editor \u{a0}\u{2003}"),
            ),
        ),
        ok(
            "application metadata with only spaces",
            set(db(), "client.metadata.default_role", json!(" \t ")),
        ),
        ok(
            "application metadata not a string",
            set(db(), "client.metadata.default_role", json!(7)),
        ),
        ok(
            "application metadata but no client_id",
            del(db(), "client.client_id"),
        ),
        ok("no application at all", del(db(), "client")),
        ok(
            "admin console, free plan",
            set(
                set(db(), "client.name", json!("Admin Console")),
                "user.app_metadata",
                json!({ "plan": "free" }),
            ),
        ),
        ok(
            "admin console, pro plan",
            set(
                set(db(), "client.name", json!("Admin Console")),
                "user.app_metadata",
                json!({ "plan": "pro" }),
            ),
        ),
        ok(
            "admin console, app_metadata not an object",
            set(
                set(db(), "client.name", json!("Admin Console")),
                "user.app_metadata",
                json!("free"),
            ),
        ),
        ok(
            "store staff, nested metadata in another key order",
            set(
                db(),
                "user.app_metadata",
                json!({ "team": { "floors": [1, 2], "name": "ops" }, "staff": true, "other": 1 }),
            ),
        ),
        ok(
            "store staff, list in another order",
            set(
                db(),
                "user.app_metadata",
                json!({ "team": { "floors": [2, 1], "name": "ops" }, "staff": true }),
            ),
        ),
        ok(
            "store staff through another application",
            set(
                set(db(), "client.client_id", json!("other-client")),
                "user.app_metadata",
                json!({ "team": { "floors": [1, 2], "name": "ops" }, "staff": true }),
            ),
        ),
        ok(
            "store staff without an application (client_id undecided)",
            set(
                del(db(), "client"),
                "user.app_metadata",
                json!({ "team": { "floors": [1, 2], "name": "ops" }, "staff": true }),
            ),
        ),
        ok(
            "app_metadata with an own __proto__ key",
            set(
                db(),
                "user.app_metadata",
                json!({ "__proto__": { "admin": true } }),
            ),
        ),
        ok(
            "organization acme",
            set(db(), "organization.id", json!("org_acme")),
        ),
        ok("no organization", del(db(), "organization")),
        ok(
            "through the organization named acme",
            set(
                set(db(), "organization.id", json!("org_acme")),
                "organization.name",
                json!("acme"),
            ),
        ),
        ok(
            "social first login through acme",
            set(
                social("github", json!(true)),
                "organization.name",
                json!("acme"),
            ),
        ),
        ok(
            "organization without a name",
            del(db(), "organization.name"),
        ),
        ok("organization null", set(db(), "organization", Value::Null)),
        ok(
            "social google, verified",
            social("google-oauth2", json!(true)),
        ),
        ok(
            "social google, unverified",
            set(
                social("google-oauth2", json!(true)),
                "user.email_verified",
                json!(false),
            ),
        ),
        ok("social github", social("github", json!(true))),
        ok(
            "social github without isSocial (table)",
            del(social("github", json!(true)), "user.identities.0.isSocial"),
        ),
        ok(
            "custom social strategy with isSocial",
            set(
                social("custom-social", json!(true)),
                "user.user_id",
                json!("github|99"),
            ),
        ),
        ok(
            "unknown strategy without isSocial (strategy type undecided)",
            del(social("mystery", json!(true)), "user.identities.0.isSocial"),
        ),
        ok(
            "social, already holds a role",
            set(
                social("google-oauth2", json!(true)),
                "authorization.roles",
                json!(["Beta"]),
            ),
        ),
        ok(
            "enterprise Azure AD (final)",
            enterprise("corp-azure-ad", "waad"),
        ),
        ok(
            "enterprise Azure AD, suspended connection id",
            set(
                enterprise("corp-azure-ad", "waad"),
                "connection.id",
                json!("con_suspended"),
            ),
        ),
        ok(
            "enterprise Azure AD without connection id (unless undecided)",
            del(enterprise("corp-azure-ad", "waad"), "connection.id"),
        ),
        ok(
            "enterprise Azure AD, unverified outside address",
            set(
                set(
                    enterprise("corp-azure-ad", "waad"),
                    "user.email",
                    json!("c@else.example"),
                ),
                "user.email_verified",
                json!(false),
            ),
        ),
        ok(
            "enterprise samlp, no isSocial (table)",
            set(
                del(
                    enterprise("partner-saml", "samlp"),
                    "user.identities.0.isSocial",
                ),
                "user.email",
                json!("pat@partner.example"),
            ),
        ),
        ok(
            "unknown strategy with isSocial false",
            set(
                enterprise("my-idp", "mystery-idp"),
                "user.email",
                json!("m@else.example"),
            ),
        ),
        ok(
            "enterprise okta",
            set(
                enterprise("okta-partner", "okta"),
                "user.email",
                json!("oli@partner.example"),
            ),
        ),
        ok(
            "verified subdomain address",
            set(
                set(db(), "user.email", json!("dan@eu.corp.example")),
                "user.email_verified",
                json!(true),
            ),
        ),
        ok(
            "verified uppercase address",
            set(
                set(db(), "user.email", json!("Dan@CORP.Example")),
                "user.email_verified",
                json!(true),
            ),
        ),
        ok(
            "verified address of a look-alike domain",
            set(
                set(
                    set(
                        social("github", json!(true)),
                        "user.email",
                        json!("eve@corp.example.org"),
                    ),
                    "user.email_verified",
                    json!(true),
                ),
                "user.identities",
                json!([{ "connection": "github", "provider": "github", "isSocial": true }]),
            ),
        ),
        ok(
            "unverified company address",
            set(db(), "user.email", json!("dan@corp.example")),
        ),
        ok(
            "masked company address",
            set(
                set(db(), "user.email", json!("d***@corp.example")),
                "user.email_verified",
                json!(true),
            ),
        ),
        ok(
            "two @ in the address",
            set(
                set(db(), "user.email", json!("a@b@corp.example")),
                "user.email_verified",
                json!(true),
            ),
        ),
        ok(
            "no email",
            del(del(db(), "user.email"), "user.email_verified"),
        ),
        ok(
            "passwordless email",
            set(
                set(
                    set(
                        db(),
                        "connection",
                        json!({ "id": "con_pl", "name": "email", "strategy": "email" }),
                    ),
                    "user.user_id",
                    json!("email|6f1"),
                ),
                "user.identities",
                json!([{ "connection": "email", "provider": "email", "isSocial": false }]),
            ),
        ),
        ok(
            "passwordless sms",
            set(
                set(
                    set(
                        social("sms", json!(false)),
                        "user.user_id",
                        json!("sms|6f1"),
                    ),
                    "user.email",
                    Value::Null,
                ),
                "connection.name",
                json!("sms"),
            ),
        ),
        ok(
            "no connection: the primary identity tells it",
            set(
                del(enterprise("corp-azure-ad", "waad"), "connection"),
                "user.email",
                json!("c@else.example"),
            ),
        ),
        ok(
            "connection without a name: the identity of this strategy",
            set(
                set(
                    del(enterprise("corp-azure-ad", "waad"), "connection.name"),
                    "user.identities",
                    json!([
                        { "connection": "Username-Password-Authentication", "provider": "auth0", "isSocial": false },
                        { "connection": "corp-azure-ad", "provider": "waad", "isSocial": false }
                    ]),
                ),
                "user.email_verified",
                json!(false),
            ),
        ),
        ok(
            "linked identities: the one of this connection",
            set(
                social("github", json!(true)),
                "user.identities",
                json!([
                    { "connection": "Username-Password-Authentication", "provider": "auth0", "isSocial": false },
                    { "connection": "github", "provider": "github", "isSocial": true }
                ]),
            ),
        ),
        ok(
            "no connection and no identities: undecided",
            del(
                del(enterprise("corp-azure-ad", "waad"), "connection"),
                "user.identities",
            ),
        ),
        ok(
            "user id with an empty provider prefix",
            set(
                social("github", json!(true)),
                "user.user_id",
                json!("|1234"),
            ),
        ),
        ok(
            "user id with nothing after the prefix",
            set(
                social("github", json!(true)),
                "user.user_id",
                json!("samlp|"),
            ),
        ),
        ok(
            "user id without a provider prefix",
            set(social("github", json!(true)), "user.user_id", json!("1234")),
        ),
        ok(
            "names that try to break out of strings",
            set(
                set(
                    db(),
                    "connection.name",
                    json!("weird\"conn\u{2029}</script>"),
                ),
                "client.metadata",
                json!({ "extra\"key": "Extra \"Role\"", "default_role": "Store Customer" }),
            ),
        ),
        throws("no user", del(db(), "user")),
        throws("user null", set(db(), "user", Value::Null)),
        throws(
            "authorization.roles not a list",
            set(db(), "authorization.roles", json!("Admin")),
        ),
        throws(
            "authorization.roles not names",
            set(db(), "authorization.roles", json!([{ "name": "Admin" }])),
        ),
        throws("no stats", del(db(), "stats")),
    ]
}

fn string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// The log event Auth0 would record for this login and trigger.
fn log_event(event: &Value, trigger: Trigger) -> LogEvent {
    let signup = trigger == Trigger::Signup;
    LogEvent {
        event_type: if signup { "ss" } else { "s" }.to_owned(),
        user_id: string(&event["user"]["user_id"]),
        connection: string(&event["connection"]["name"]),
        connection_id: string(&event["connection"]["id"]),
        strategy: string(&event["connection"]["strategy"]),
        client_id: string(&event["client"]["client_id"]),
        client_name: string(&event["client"]["name"]),
        organization_id: string(&event["organization"]["id"]),
        organization_name: string(&event["organization"]["name"]),
        // What Auth0 logs as the login name: the address, for database and social logins.
        user_name: if signup {
            None
        } else {
            string(&event["user"]["email"])
        },
        body_email: if signup {
            string(&event["user"]["email"])
        } else {
            None
        },
        logins_count: event["stats"]["logins_count"].as_u64(),
        ..LogEvent::default()
    }
}

/// What the service reads: the user (`GET /users/{id}`), the roles they hold by then, and the
/// application's `client_metadata` (string values only).
fn profile(event: &Value, held: &[String]) -> Profile {
    // Without `event.authorization` the Action cannot know the roles held: the service would,
    // but the two must agree, so has_roles is undecided unless this login gave roles.
    let known = event["authorization"]["roles"].is_array() || !held.is_empty();
    let user = &event["user"];
    let identities = user["identities"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|i| Identity {
                    connection: string(&i["connection"]),
                    provider: string(&i["provider"]),
                    is_social: i["isSocial"].as_bool(),
                })
                .collect()
        })
        .unwrap_or_default();
    Profile {
        email: string(&user["email"]),
        email_verified: user["email_verified"].as_bool(),
        identities,
        app_metadata: user["app_metadata"].as_object().cloned(),
        roles: known.then(|| held.to_vec()),
        client_metadata: event["client"]["metadata"].as_object().map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect::<BTreeMap<_, _>>()
        }),
        created_at: string(&user["created_at"]),
    }
}

/// What the policy says the claim of this login is, and the rules applied and left undecided.
struct Expected {
    claim: Vec<String>,
    applied: Vec<String>,
    undecided: Vec<String>,
}

fn expected(policy: &Policy, event: &Value) -> Expected {
    let mut claim: Vec<String> = Vec::new();
    let add = |claim: &mut Vec<String>, role: &str| {
        if !claim.iter().any(|r| r == role) {
            claim.push(role.to_owned());
        }
    };
    for role in event["authorization"]["roles"]
        .as_array()
        .into_iter()
        .flatten()
    {
        add(&mut claim, role.as_str().unwrap_or_default());
    }
    let mut applied = Vec::new();
    let mut undecided = Vec::new();
    let first_login = event["stats"]["logins_count"]
        .as_f64()
        .is_some_and(|n| n <= 1.0);
    if !first_login {
        return Expected {
            claim,
            applied,
            undecided,
        };
    }
    let database = event["connection"]["strategy"] == "auth0";
    for trigger in [Trigger::Signup, Trigger::FirstLogin] {
        if !policy.handles(trigger) || (trigger == Trigger::Signup && !database) {
            continue;
        }
        let logged = log_event(event, trigger);
        let evaluation = policy.evaluate(trigger, &logged, Some(&profile(event, &claim)));
        let mut roles = Vec::new();
        match evaluation {
            Evaluation::Assign(decision) => {
                for name in &decision.rules {
                    applied.push(name.clone());
                    let rule = policy
                        .rules()
                        .iter()
                        .find(|r| &r.name == name)
                        .unwrap_or_else(|| panic!("rule {name}"));
                    roles.extend(rule.assign.iter().cloned());
                    // A login through an organization also shows the member roles there.
                    if logged.organization().is_some() {
                        roles.extend(rule.assign_in_organization.iter().cloned());
                    }
                    roles.extend(
                        decision
                            .client_roles
                            .iter()
                            .filter(|c| &c.rule == name)
                            .map(|c| c.name.clone()),
                    );
                }
                undecided.extend(decision.skipped.iter().map(|u| u.label()));
            }
            Evaluation::NoRule(skipped) => undecided.extend(skipped.iter().map(|u| u.label())),
            Evaluation::NeedsProfile(pending) => {
                panic!("with the profile given, nothing may be pending: {pending:?}")
            }
        }
        for role in roles {
            add(&mut claim, &role);
        }
    }
    Expected {
        claim,
        applied,
        undecided,
    }
}

/// Runs every event through the Action in one `node` process: per event the claims each token
/// got, whether the login was denied, whether the handler rejected, network calls and logs.
const DRIVER: &str = r#"
"use strict";
const fs = require("fs");
const [actionPath, casesPath] = process.argv.slice(2);
const logs = [];
console.log = (...args) => logs.push(args.map(String).join(" "));
let fetches = 0;
globalThis.fetch = async () => {
  fetches += 1;
  throw new Error("an Action test has no network");
};
const action = require(actionPath);
const events = JSON.parse(fs.readFileSync(casesPath, "utf8"));
(async () => {
  const results = [];
  for (const event of events) {
    const id = {};
    const access = {};
    let denied = false;
    let rejected = null;
    logs.length = 0;
    fetches = 0;
    const api = {
      idToken: { setCustomClaim: (name, value) => { id[name] = value; } },
      accessToken: { setCustomClaim: (name, value) => { access[name] = value; } },
      access: { deny: () => { denied = true; } },
    };
    try {
      await action.onExecutePostLogin(event, api);
    } catch (err) {
      rejected = String(err);
    }
    results.push({ id, access, denied, rejected, fetches, logs: [...logs] });
  }
  process.stdout.write(JSON.stringify(results));
})();
"#;

fn generate(dir: &Path, policy_toml: &str, namespace: &str) -> Output {
    let config = dir.join("policy.toml");
    std::fs::write(&config, policy_toml).unwrap_or_else(|e| panic!("{e}"));
    bin()
        .arg("action")
        .arg("--config")
        .arg(&config)
        .args(["--claim-namespace", namespace])
        .output()
        .unwrap_or_else(|e| panic!("cannot run the binary: {e}"))
}

#[test]
fn action_agrees_with_the_policy_on_every_login() {
    let Some(node) = node() else {
        return;
    };
    let dir = temp_dir("action");
    let out = generate(&dir, POLICY, NAMESPACE);
    assert!(out.status.success(), "action failed: {}", text(&out.stderr));
    let js = text(&out.stdout);
    assert!(js.starts_with("// Auth0 post-login Action generated by auth0-default-roles"));
    assert!(js.contains("exports.onExecutePostLogin = async (event, api) =>"));
    assert!(!js.contains("require("), "the Action must need no module");
    assert!(
        text(&out.stderr).contains("rule \"verified-partners\" fires on no login"),
        "{}",
        text(&out.stderr)
    );
    let action = dir.join("action.js");
    std::fs::write(&action, &js).unwrap_or_else(|e| panic!("{e}"));

    let policy = Config::load(&dir.join("policy.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .policy;
    let cases = cases();
    assert!(cases.len() >= 30);
    let events: Vec<&Value> = cases.iter().map(|c| &c.event).collect();
    let events_file = dir.join("events.json");
    std::fs::write(
        &events_file,
        serde_json::to_string(&events).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let driver = dir.join("driver.js");
    std::fs::write(&driver, DRIVER).unwrap_or_else(|e| panic!("{e}"));
    let run = Command::new(&node)
        .arg(&driver)
        .arg(&action)
        .arg(&events_file)
        .output()
        .unwrap_or_else(|e| panic!("node: {e}"));
    assert!(
        run.status.success(),
        "node failed: {}\n{}",
        text(&run.stderr),
        text(&run.stdout)
    );
    let results: Vec<Value> = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&run.stdout)));
    assert_eq!(results.len(), cases.len());

    let mut mismatches = Vec::new();
    let mut applied = BTreeSet::new();
    let mut undecided = BTreeSet::new();
    for (case, result) in cases.iter().zip(&results) {
        let context = format!("{}: {result}", case.name);
        assert_eq!(result["denied"], false, "{context}");
        assert_eq!(result["rejected"], Value::Null, "{context}");
        assert_eq!(result["fetches"], 0, "{context}");
        if case.throws {
            assert_eq!(result["id"], json!({}), "fails open: {context}");
            assert_eq!(result["access"], json!({}), "fails open: {context}");
            assert!(
                result["logs"].to_string().contains("no roles claim"),
                "{context}"
            );
            continue;
        }
        let want = expected(&policy, &case.event);
        applied.extend(want.applied.iter().cloned());
        undecided.extend(want.undecided.iter().cloned());
        let want_claims = json!({ CLAIM: want.claim });
        if result["id"] != want_claims || result["access"] != want_claims {
            mismatches.push(format!(
                "{}\n  event:  {}\n  policy: {}\n  action: id {} access {}\n  rules:  {:?} undecided {:?}",
                case.name,
                case.event,
                want_claims,
                result["id"],
                result["access"],
                want.applied,
                want.undecided
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "the Action and the policy disagree on {} of {} logins:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );

    // The table exercises every rule a login can fire, and undecided conditions.
    let login_rules: BTreeSet<String> = policy
        .rules()
        .iter()
        .map(|r| r.name.clone())
        .filter(|n| n != "verified-partners")
        .collect();
    let missing: Vec<&String> = login_rules.difference(&applied).collect();
    assert!(missing.is_empty(), "rules never applied: {missing:?}");
    assert!(!applied.contains("verified-partners"));
    for label in [
        "acme-members.organization_id",
        "acme-staff.organization_name",
        "internal-by-connection.connection_id",
        "internal-by-connection.connection",
        "enterprise-partners.strategy_type",
        "store-staff.client_id",
        "console.client_name",
    ] {
        assert!(
            undecided.contains(label),
            "no case leaves {label} undecided: {undecided:?}"
        );
    }
}

#[test]
fn action_refuses_what_it_cannot_compile_with_exit_2() {
    let dir = temp_dir("action-refusals");
    for (namespace, why) in [
        ("https://tenant.auth0.com/", "own domains"),
        ("https://x.webtask.run", "own domains"),
        ("example.com/roles", "not a URL"),
        ("ftp://example.com/", "http:// or https://"),
    ] {
        let out = generate(&dir, POLICY, namespace);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{namespace}: {stderr}");
        assert!(stderr.contains(why), "{namespace}: {stderr}");
        assert!(out.stdout.is_empty());
    }

    let out = generate(
        &dir,
        "[[policy.rules]]\nname = \"seats\"\nwhen = { app_metadata = { seats = 5.0 } }\nassign = [\"A\"]\n",
        NAMESPACE,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("policy rule \"seats\"") && stderr.contains("when.app_metadata"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let out = generate(
        &dir,
        "[[policy.rules]]\nname = \"x\"\nwhen = { colour = \"red\" }\nassign = [\"A\"]\n",
        NAMESPACE,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("colour"));
}
