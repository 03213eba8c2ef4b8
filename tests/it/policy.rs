//! The default-role policy: evaluation semantics and load-time validation.

use std::path::Path;

use auth0_default_roles::config::{Config, ConfigError};
use auth0_default_roles::event::{decode, LogEvent, Trigger};
use auth0_default_roles::policy::{Decision, Evaluation, Policy, PolicyError, Profile};

fn policy(toml_text: &str) -> Result<Policy, ConfigError> {
    Config::from_toml(toml_text, Path::new("test.toml"), &|_| None).map(|c| c.policy)
}

fn must(toml_text: &str) -> Policy {
    policy(toml_text).unwrap_or_else(|e| panic!("policy should load: {e}"))
}

fn event(json: &str) -> LogEvent {
    decode(json.as_bytes())
        .remove(0)
        .unwrap_or_else(|e| panic!("fixture must decode: {e}"))
}

const SEED: &str = r#"
[[policy.rules]]
name = "internal"
when = { connection = ["corp-azure-ad"] }
assign = ["INTERNAL"]
final = true

[[policy.rules]]
name = "customers"
assign = ["CUSTOMER", "Viewer"]

[[policy.rules]]
name = "partners"
when = { email_domain = ["partner.example"], email_verified = true }
unless = { client_id = ["legacy-app"] }
assign = ["PARTNER"]
"#;

fn assign(roles: &[&str], rules: &[&str]) -> Evaluation {
    Evaluation::Assign(Decision {
        roles: roles.iter().map(|s| s.to_string()).collect(),
        organization_roles: Vec::new(),
        rules: rules.iter().map(|s| s.to_string()).collect(),
        client_roles: Vec::new(),
        skipped: Vec::new(),
    })
}

fn signup(connection: &str, email: &str) -> LogEvent {
    event(&format!(
        r#"{{"type":"ss","connection":"{connection}","user_id":"auth0|1","client_id":"store","details":{{"body":{{"email":"{email}"}}}}}}"#
    ))
}

#[test]
fn final_rule_stops_and_roles_are_unioned() {
    let p = must(SEED);
    let internal = signup("corp-azure-ad", "carol@corp.example");
    assert_eq!(
        p.evaluate(Trigger::Signup, &internal, None),
        assign(&["INTERNAL"], &["internal"])
    );
    let customer = signup("Username-Password-Authentication", "bob@gmail.com");
    assert_eq!(
        p.evaluate(Trigger::Signup, &customer, None),
        assign(&["CUSTOMER", "Viewer"], &["customers"])
    );
}

#[test]
fn signup_with_connection_rule_needs_no_profile() {
    let p = must(
        r#"
[[policy.rules]]
name = "db"
when = { connection = ["Username-Password-Authentication"], event = "signup" }
assign = ["DB"]
"#,
    );
    let e = signup("Username-Password-Authentication", "x@y.example");
    assert_eq!(
        p.evaluate(Trigger::Signup, &e, None),
        assign(&["DB"], &["db"])
    );
}

#[test]
fn verified_partner_needs_profile_only_when_the_domain_matches() {
    let p = must(SEED);
    let partner = signup("Username-Password-Authentication", "Alice@PARTNER.example");
    match p.evaluate(Trigger::Signup, &partner, None) {
        Evaluation::NeedsProfile(undecided) => {
            assert_eq!(undecided.len(), 1);
            assert_eq!(undecided[0].rule, "partners");
            assert_eq!(undecided[0].key, "email_verified");
        }
        other => panic!("expected NeedsProfile, got {other:?}"),
    }
    let verified = Profile {
        email: Some("alice@partner.example".into()),
        email_verified: Some(true),
        ..Profile::default()
    };
    assert_eq!(
        p.evaluate(Trigger::Signup, &partner, Some(&verified)),
        assign(
            &["CUSTOMER", "Viewer", "PARTNER"],
            &["customers", "partners"]
        )
    );
    let unverified = Profile {
        email_verified: Some(false),
        ..Profile::default()
    };
    assert_eq!(
        p.evaluate(Trigger::Signup, &partner, Some(&unverified)),
        assign(&["CUSTOMER", "Viewer"], &["customers"])
    );
    // Another domain: the rule is decided false without any read.
    let other = signup("Username-Password-Authentication", "bob@gmail.com");
    assert!(matches!(
        p.evaluate(Trigger::Signup, &other, None),
        Evaluation::Assign(_)
    ));
}

#[test]
fn email_verified_event_decides_verification() {
    let p = must(SEED);
    let sv = event(
        r#"{"type":"sv","connection":"Username-Password-Authentication","user_id":"auth0|1","client_id":"store","details":{"email":"alice@partner.example"}}"#,
    );
    assert_eq!(
        p.evaluate(Trigger::EmailVerified, &sv, None),
        assign(
            &["CUSTOMER", "Viewer", "PARTNER"],
            &["customers", "partners"]
        )
    );
    let legacy = event(
        r#"{"type":"sv","connection":"Username-Password-Authentication","user_id":"auth0|1","client_id":"legacy-app","details":{"email":"alice@partner.example"}}"#,
    );
    assert_eq!(
        p.evaluate(Trigger::EmailVerified, &legacy, None),
        assign(&["CUSTOMER", "Viewer"], &["customers"])
    );
}

#[test]
fn domains_are_case_insensitive_with_subdomain_wildcards() {
    let p = must(
        r#"
[[policy.rules]]
name = "staff"
when = { email_domain = ["*.Example.com", "exact.org"], event = ["email_verified"] }
assign = ["STAFF"]
"#,
    );
    let check = |email: &str| {
        let e = event(&format!(
            r#"{{"type":"sv","user_id":"auth0|1","details":{{"email":"{email}"}}}}"#
        ));
        matches!(
            p.evaluate(Trigger::EmailVerified, &e, None),
            Evaluation::Assign(_)
        )
    };
    assert!(check("a@eu.EXAMPLE.com"));
    assert!(check("a@deep.eu.example.com"));
    assert!(!check("a@example.com"));
    assert!(!check("a@badexample.com"));
    assert!(check("a@EXACT.org"));
    assert!(!check("a@sub.exact.org"));
}

#[test]
fn masked_email_matches_no_domain_rule_and_asks_for_the_profile() {
    let p = must(SEED);
    let masked = signup("Username-Password-Authentication", "a****@p******.example");
    assert!(matches!(
        p.evaluate(Trigger::Signup, &masked, None),
        Evaluation::NeedsProfile(_)
    ));
    let profile = Profile {
        email: Some("a****@p******.example".into()),
        email_verified: Some(true),
        ..Profile::default()
    };
    assert_eq!(
        p.evaluate(Trigger::Signup, &masked, Some(&profile)),
        assign(&["CUSTOMER", "Viewer"], &["customers"])
    );
}

#[test]
fn all_condition_keys() {
    let p = must(
        r#"
[[policy.rules]]
name = "everything"
when = { event = "first_login", connection = "google-oauth2", connection_id = "con_g", strategy = "google-oauth2", strategy_type = "social", client_id = "app", client_name = "Store", organization_id = "org_1", provider = "google-oauth2" }
assign = ["ALL"]

[[policy.rules]]
name = "pro"
when = { app_metadata = { plan = "pro" } }
assign = ["PRO"]
"#,
    );
    let e = event(
        r#"{"type":"s","connection":"google-oauth2","connection_id":"con_g","strategy":"google-oauth2","strategy_type":"social","client_id":"app","client_name":"Store","organization_id":"org_1","user_id":"google-oauth2|1","details":{"stats":{"loginsCount":1}}}"#,
    );
    let mut metadata = serde_json::Map::new();
    metadata.insert("plan".into(), serde_json::json!("pro"));
    let profile = Profile {
        app_metadata: Some(metadata),
        ..Profile::default()
    };
    assert_eq!(
        p.evaluate(Trigger::FirstLogin, &e, Some(&profile)),
        assign(&["ALL", "PRO"], &["everything", "pro"])
    );
    assert!(matches!(
        p.evaluate(Trigger::FirstLogin, &e, None),
        Evaluation::NeedsProfile(_)
    ));
    let other_org = event(
        r#"{"type":"s","connection":"google-oauth2","connection_id":"con_g","strategy":"google-oauth2","strategy_type":"social","client_id":"app","client_name":"Store","organization_id":"org_2","user_id":"google-oauth2|1","details":{"stats":{"loginsCount":1}}}"#,
    );
    assert_eq!(
        p.evaluate(Trigger::FirstLogin, &other_org, Some(&Profile::default())),
        Evaluation::NoRule(Vec::new())
    );
}

#[test]
fn missing_connection_is_read_from_the_profile() {
    let p = must(SEED);
    let post_signup = event(
        r#"{"type":"s","connection_id":"","user_id":"waad|carol","details":{"prompts":[{"stats":{"loginsCount":1}}]}}"#,
    );
    assert!(matches!(
        p.evaluate(Trigger::FirstLogin, &post_signup, None),
        Evaluation::NeedsProfile(_)
    ));
    let profile = Profile {
        identities: vec![auth0_default_roles::event::Identity {
            connection: Some("corp-azure-ad".into()),
            provider: Some("waad".into()),
            is_social: Some(false),
        }],
        ..Profile::default()
    };
    assert_eq!(
        p.evaluate(Trigger::FirstLogin, &post_signup, Some(&profile)),
        assign(&["INTERNAL"], &["internal"])
    );
}

#[test]
fn no_rule_and_events_filter() {
    let p = must(
        r#"
[policy]
events = ["signup"]

[[policy.rules]]
name = "only-google"
when = { provider = "google-oauth2" }
assign = ["G"]
"#,
    );
    assert!(p.handles(Trigger::Signup));
    assert!(!p.handles(Trigger::FirstLogin));
    let e = signup("Username-Password-Authentication", "a@b.example");
    assert_eq!(
        p.evaluate(Trigger::Signup, &e, None),
        Evaluation::NoRule(Vec::new())
    );
}

fn policy_error(toml_text: &str) -> PolicyError {
    match policy(toml_text) {
        Err(ConfigError::Policy(e)) => e,
        other => panic!("expected a policy error, got {other:?}"),
    }
}

#[test]
fn validation_names_the_rule_and_the_key() {
    let cases = [
        (
            "[[policy.rules]]\nname = \"a\"\nassign = []\n",
            "policy rule \"a\": `assign` is missing or empty",
        ),
        ("[[policy.rules]]\nname = \"a\"\n", "policy rule \"a\": `assign` is missing or empty"),
        (
            "[[policy.rules]]\nname = \"a\"\nasign = [\"X\"]\nassign = [\"X\"]\n",
            "policy rule \"a\": unknown key `asign`",
        ),
        (
            "[[policy.rules]]\nname = \"a\"\nwhen = { conection = \"x\" }\nassign = [\"X\"]\n",
            "policy rule \"a\": unknown condition key `conection` in `when`",
        ),
        (
            "[[policy.rules]]\nname = \"a\"\nunless = { event = \"login\" }\nassign = [\"X\"]\n",
            "policy rule \"a\": `unless.event`: unknown event `login`",
        ),
        (
            "[[policy.rules]]\nname = \"a\"\nassign = [\"X\"]\n[[policy.rules]]\nname = \"a\"\nassign = [\"Y\"]\n",
            "policy rule \"a\": duplicate rule name",
        ),
        ("[policy]\nevents = [\"signin\"]\n", "policy.events: unknown event `signin`"),
        ("[[policy.rules]]\nassign = [\"X\"]\n", "policy.rules[0]: missing `name`"),
        (
            "[[policy.rules]]\nname = \"a\"\nwhen = { email_verified = \"yes\" }\nassign = [\"X\"]\n",
            "policy rule \"a\": `when.email_verified`: expected true or false",
        ),
        (
            "[[policy.rules]]\nname = \"a\"\nwhen = { email_domain = \"@\" }\nassign = [\"X\"]\n",
            "policy rule \"a\": `when.email_domain`",
        ),
        (
            "[[policy.rules]]\nname = \"a\"\nwhen = { connection = [] }\nassign = [\"X\"]\n",
            "policy rule \"a\": `when.connection`: the list is empty",
        ),
        ("[policy]\nrulez = []\n", "unknown key `rulez` in [policy]"),
    ];
    for (text, expected) in cases {
        let message = policy_error(text).to_string();
        assert!(
            message.starts_with(expected) || message.contains(expected),
            "{text}\n→ {message}\nexpected {expected}"
        );
    }
}

#[test]
fn role_names_and_display() {
    let p = must(SEED);
    let names: Vec<String> = p.role_names().into_iter().collect();
    assert_eq!(names, ["CUSTOMER", "INTERNAL", "PARTNER", "Viewer"]);
    let text = p.rules()[2].to_string();
    assert!(text.contains("rule \"partners\""), "{text}");
    assert!(
        text.contains("unless: client_id is any of [legacy-app]"),
        "{text}"
    );
    assert!(p.rules()[2].may_need_profile());
    assert!(!p.rules()[1].may_need_profile());
}

#[test]
fn check_warns_about_untrusted_domains_client_rules_on_verifications_and_final_shadowing() {
    let policy = must(
        r#"
[[policy.rules]]
name = "staff"
when = { email_domain = ["corp.example"] }
assign = ["INTERNAL"]
final = true

[[policy.rules]]
name = "app-users"
when = { client_id = ["app1"] }
assign = ["APP"]

[[policy.rules]]
name = "partners"
when = { email_domain = ["partner.example"], email_verified = true }
assign = ["PARTNER"]

[[policy.rules]]
name = "not-legacy"
unless = { client_id = ["legacy"] }
assign = ["MODERN"]

[[policy.rules]]
name = "app-role"
assign_client_metadata = "default_role"

[[policy.rules]]
name = "app-role-at-login"
when = { event = "first_login", organization_id = "org_1" }
assign_client_metadata = "default_role"

[[policy.rules]]
name = "outside-acme"
unless = { organization_id = "org_acme" }
assign = ["PUBLIC"]
"#,
    );
    let warnings = policy.warnings();
    let about = |rule: &str, words: &str| {
        warnings
            .iter()
            .any(|w| w.contains(&format!("\"{rule}\"")) && w.contains(words))
    };
    assert!(about("staff", "without email_verified"), "{warnings:?}");
    assert!(
        about(
            "staff",
            "final: users it matches get none of the later rules (app-users, partners, not-legacy, app-role, app-role-at-login, outside-acme)"
        ),
        "{warnings:?}"
    );
    assert!(
        about(
            "app-users",
            "All Applications\" with no organization: there a `when` on the application does not match"
        ),
        "{warnings:?}"
    );
    assert!(
        about(
            "not-legacy",
            "an `unless` on the application excludes nobody"
        ),
        "{warnings:?}"
    );
    assert!(
        about("app-role", "assign_client_metadata adds nothing"),
        "{warnings:?}"
    );
    // Only first logins: no email_verified event reaches it.
    assert!(
        !about("app-role-at-login", "All Applications"),
        "{warnings:?}"
    );
    assert!(
        about(
            "outside-acme",
            "an organization condition is undecided, so the rule is not applied"
        ),
        "{warnings:?}"
    );
    assert!(!about("partners", "without email_verified"), "{warnings:?}");
    assert_eq!(warnings.len(), 6, "{warnings:?}");
}

fn identity(
    connection: &str,
    provider: &str,
    social: bool,
) -> auth0_default_roles::event::Identity {
    auth0_default_roles::event::Identity {
        connection: Some(connection.into()),
        provider: Some(provider.into()),
        is_social: Some(social),
    }
}

fn undecided(rule: &str, key: &'static str) -> auth0_default_roles::policy::Undecided {
    auth0_default_roles::policy::Undecided {
        rule: rule.into(),
        key,
    }
}

const EXCLUDE_ENTERPRISE: &str = r#"
[[policy.rules]]
name = "customers"
unless = { strategy_type = "enterprise" }
assign = ["CUSTOMER"]
"#;

#[test]
fn a_strategy_type_the_event_lacks_is_read_from_the_login_identity_not_taken_as_false() {
    let p = must(EXCLUDE_ENTERPRISE);
    // Login fields only inside the prompts are read from there.
    let in_prompts = event(
        r#"{"type":"s","user_id":"waad|c","details":{"prompts":[{"name":"prompt-authenticate","connection":"corp","strategy":"waad","strategy_type":"enterprise","stats":{"loginsCount":1}}]}}"#,
    );
    assert_eq!(
        p.evaluate(Trigger::FirstLogin, &in_prompts, None),
        Evaluation::NoRule(Vec::new())
    );
    // Nowhere in the event: undecided, so the profile is read (never silently "not enterprise").
    let bare = event(r#"{"type":"s","user_id":"waad|c","details":{"stats":{"loginsCount":1}}}"#);
    assert_eq!(
        p.evaluate(Trigger::FirstLogin, &bare, None),
        Evaluation::NeedsProfile(vec![undecided("customers", "strategy_type")])
    );
    let enterprise = Profile {
        identities: vec![identity("corp", "waad", false)],
        ..Profile::default()
    };
    assert_eq!(
        p.evaluate(Trigger::FirstLogin, &bare, Some(&enterprise)),
        Evaluation::NoRule(Vec::new())
    );
    let social = Profile {
        identities: vec![identity("google-oauth2", "google-oauth2", true)],
        ..Profile::default()
    };
    assert_eq!(
        p.evaluate(Trigger::FirstLogin, &bare, Some(&social)),
        assign(&["CUSTOMER"], &["customers"])
    );
    // A profile without identities cannot tell: the rule is not applied, and says why.
    assert_eq!(
        p.evaluate(Trigger::FirstLogin, &bare, Some(&Profile::default())),
        Evaluation::NoRule(vec![undecided("customers", "strategy_type")])
    );
}

#[test]
fn the_connection_comes_from_the_identity_of_this_login_else_the_primary_one() {
    let p = must(SEED);
    let linked = Profile {
        identities: vec![
            identity("Username-Password-Authentication", "auth0", false),
            identity("corp-azure-ad", "waad", false),
        ],
        ..Profile::default()
    };
    // The login names its strategy: the waad identity is this login's.
    let via_waad = event(
        r#"{"type":"s","user_id":"auth0|1","strategy":"waad","details":{"stats":{"loginsCount":1}}}"#,
    );
    assert_eq!(
        p.evaluate(Trigger::FirstLogin, &via_waad, Some(&linked)),
        assign(&["INTERNAL"], &["internal"])
    );
    // Nothing names it: the primary identity (a database one), not "any linked identity".
    let unnamed =
        event(r#"{"type":"s","user_id":"auth0|1","details":{"stats":{"loginsCount":1}}}"#);
    match p.evaluate(Trigger::FirstLogin, &unnamed, Some(&linked)) {
        Evaluation::Assign(d) => assert_eq!(d.rules, vec!["customers".to_owned()]),
        other => panic!("expected the customers rule, got {other:?}"),
    }
}

#[test]
fn a_condition_only_a_login_knows_skips_its_rule_and_later_rules_still_apply() {
    let p = must(
        r#"
[[policy.rules]]
name = "store-staff"
when = { client_id = "store" }
assign = ["STAFF"]
final = true

[[policy.rules]]
name = "everyone"
assign = ["Viewer"]
"#,
    );
    // `sv` is logged against "All Applications": no client_id.
    let verified = event(r#"{"type":"sv","user_id":"auth0|1","details":{"email":"a@b.example"}}"#);
    match p.evaluate(Trigger::EmailVerified, &verified, None) {
        Evaluation::Assign(d) => {
            assert_eq!(d.roles, vec!["Viewer".to_owned()]);
            assert_eq!(d.skipped, vec![undecided("store-staff", "client_id")]);
        }
        other => panic!("expected Viewer with a skipped rule, got {other:?}"),
    }
}

const CLIENT_ROLES: &str = r#"
[[policy.rules]]
name = "app-role"
assign_client_metadata = "default_role"

[[policy.rules]]
name = "viewer"
assign = ["Viewer"]
"#;

#[test]
fn assign_client_metadata_reads_the_application_and_adds_the_role_it_names() {
    let p = must(CLIENT_ROLES);
    let login = event(
        r#"{"type":"s","user_id":"auth0|1","client_id":"app_1","client_name":"Store","details":{"stats":{"loginsCount":1}}}"#,
    );
    assert_eq!(
        p.evaluate(Trigger::FirstLogin, &login, None),
        Evaluation::NeedsProfile(vec![undecided("app-role", "assign_client_metadata")])
    );
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("default_role".to_owned(), " Store-Customer ".to_owned());
    let read = Profile {
        client_metadata: Some(metadata),
        ..Profile::default()
    };
    match p.evaluate(Trigger::FirstLogin, &login, Some(&read)) {
        Evaluation::Assign(d) => {
            assert_eq!(d.roles, vec!["Viewer".to_owned()]);
            assert_eq!(d.client_roles.len(), 1);
            assert_eq!(d.client_roles[0].name, "Store-Customer");
            assert_eq!(d.rules, vec!["app-role".to_owned(), "viewer".to_owned()]);
        }
        other => panic!("expected the application's role, got {other:?}"),
    }
    // An application without the key adds nothing; an event without an application reads nothing.
    let empty = Profile {
        client_metadata: Some(std::collections::BTreeMap::new()),
        ..Profile::default()
    };
    assert_eq!(
        p.evaluate(Trigger::FirstLogin, &login, Some(&empty)),
        assign(&["Viewer"], &["app-role", "viewer"])
    );
    let signup_without_app =
        event(r#"{"type":"ss","user_id":"auth0|1","details":{"body":{"email":"a@b.example"}}}"#);
    assert_eq!(
        p.evaluate(Trigger::Signup, &signup_without_app, None),
        assign(&["Viewer"], &["app-role", "viewer"])
    );
}

#[test]
fn assign_client_metadata_is_validated() {
    let err = policy_error("[[policy.rules]]\nname = \"a\"\nassign_client_metadata = \"\"\n");
    assert!(
        err.to_string()
            .contains("`assign_client_metadata` must name a client_metadata key"),
        "{err}"
    );
    let err = policy_error("[[policy.rules]]\nname = \"a\"\nassign_client_metadata = 3\n");
    assert!(err.to_string().contains("assign_client_metadata"), "{err}");
    let p = must("[[policy.rules]]\nname = \"a\"\nassign_client_metadata = \"role\"\n");
    assert!(p.uses_client_metadata());
    assert!(p.role_names().is_empty());
}

#[test]
fn existing_users_are_judged_as_if_each_trigger_had_happened() {
    let p = must(
        r#"
[[policy.rules]]
name = "internal"
when = { connection = "corp-azure-ad" }
assign = ["INTERNAL"]
final = true

[[policy.rules]]
name = "verified-partners"
when = { event = "email_verified", email_domain = "partner.example" }
assign = ["PARTNER"]

[[policy.rules]]
name = "store"
when = { client_id = "store" }
assign = ["STORE"]

[[policy.rules]]
name = "first-role"
unless = { has_roles = true }
assign = ["Viewer"]
"#,
    );
    let corp = Profile {
        identities: vec![identity("corp-azure-ad", "waad", false)],
        roles: Some(Vec::new()),
        ..Profile::default()
    };
    assert_eq!(
        p.evaluate_existing("waad|1", &corp),
        assign(&["INTERNAL"], &["internal"])
    );
    let partner = |verified: bool, roles: Vec<String>| Profile {
        email: Some("p@partner.example".into()),
        email_verified: Some(verified),
        identities: vec![identity("Username-Password-Authentication", "auth0", false)],
        roles: Some(roles),
        ..Profile::default()
    };
    let judged = |profile: &Profile| match p.evaluate_existing("auth0|2", profile) {
        Evaluation::Assign(d) => {
            assert_eq!(d.skipped, vec![undecided("store", "client_id")]);
            d.roles
        }
        other => panic!("expected roles, got {other:?}"),
    };
    assert_eq!(
        judged(&partner(true, Vec::new())),
        vec!["PARTNER", "Viewer"]
    );
    // Never verified: the email_verified trigger never happened for them.
    assert_eq!(judged(&partner(false, Vec::new())), vec!["Viewer"]);
    assert_eq!(
        judged(&partner(true, vec!["rol_x".into()])),
        vec!["PARTNER"]
    );
    let skipped = p.skipped_for_existing_users();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, "store");
    assert!(skipped[0].1.contains("client_id"), "{skipped:?}");
    assert!(p.uses_has_roles());
}
