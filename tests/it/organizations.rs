//! Default roles for organization members (issue 25), with the real binary over real HTTP
//! against the simulated tenant: `organization.member.added` through the webhook receiver
//! (direct mode) and EventBridge → SQS (moto), a first login through an organization,
//! redeliveries that cost nothing, the organization member roles limit met without a lost write,
//! members added without an event given theirs by `reconcile --apply`; and the policy semantics
//! of `assign_in_organization` and `organization_name` (pure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use auth0_default_roles::event::{decode, LogEvent, Trigger};
use auth0_default_roles::policy::{Evaluation, Policy, PolicyConfig, PolicyError, Profile};
use mgmt_sim::{SeedUser, SimConfig, Simulator};
use serde_json::{json, Value};

use test_harness::*;

const TOKEN: &str = "Bearer org-webhook-token";
const ACME: &str = "org_acme0000000001";
const GLOBEX: &str = "org_globex00000001";

/// Every member added gets `Viewer` in its organization; members of (and logins through) the
/// organization named `acme` also get `INTERNAL` there. No tenant role at all.
const POLICY: &str = r#"
[policy]
events = ["signup", "first_login", "organization_member_added"]

[[policy.rules]]
name = "members"
when = { event = "organization_member_added" }
assign_in_organization = ["Viewer"]

[[policy.rules]]
name = "acme-staff"
when = { organization_name = "acme" }
assign_in_organization = ["INTERNAL"]
"#;

fn policy(text: &str) -> Result<Policy, PolicyError> {
    #[derive(serde::Deserialize)]
    struct File {
        policy: PolicyConfig,
    }
    let file: File = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    Policy::from_config(&file.policy)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// An `organization.member.added` CloudEvent; `variant` picks the spelling of `type` and of
/// the spec-version key.
fn member_added(id: &str, org: &str, org_name: &str, user: &str, variant: usize) -> Value {
    let kind = if variant % 2 == 0 {
        "organization.member.added"
    } else {
        "com.auth0.organization.member.added"
    };
    let spec = if variant % 3 == 0 {
        "spec_version"
    } else {
        "specversion"
    };
    let mut event = json!({
        "id": id,
        "source": "urn:auth0:acme-tenant:organizations",
        "type": kind,
        "time": "2026-12-01T10:00:00.000Z",
        "dataschema": "https://acme-tenant.auth0.com/api/v2/schemas/organization.member.added",
        "data": {"object": {
            "organization": {"id": org, "name": org_name},
            "user": {"user_id": user},
        }},
    });
    event[spec] = json!("1.0");
    event
}

/// A first login (`s`, loginsCount 1) through an organization, as a log stream's webhook sends it.
fn first_login_through(log_id: &str, org: &str, org_name: &str, user: &str) -> Value {
    json!({
        "log_id": log_id,
        "data": {
            "log_id": log_id,
            "type": "s",
            "date": "2026-12-01T10:01:00.000Z",
            "user_id": user,
            "user_name": "login@acme.example",
            "connection": "Username-Password-Authentication",
            "strategy": "auth0",
            "strategy_type": "database",
            "client_id": "app-client",
            "client_name": "App",
            "organization_id": org,
            "organization_name": org_name,
            "details": {"stats": {"loginsCount": 1}, "prompts": []},
        }
    })
}

/// The simulated tenant's two organizations with `acme` and `globex` members (no roles).
fn organizations(sim: &Simulator, acme: &[String], globex: &[String]) {
    assert_eq!(sim.add_organization(Some(ACME), "acme"), ACME);
    assert_eq!(sim.add_organization(Some(GLOBEX), "globex"), GLOBEX);
    assert!(sim.add_members(ACME, acme));
    assert!(sim.add_members(GLOBEX, globex));
}

fn ingest_config(dir: &Path, port: u16, metrics: u16, base_url: &str, auth0: &str) -> PathBuf {
    let text = format!(
        "[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:{port}\"\n\n[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{base_url}\"\nrequests_per_second = 1000\nburst = 200\nbatch_window_ms = 20\n{auth0}\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{POLICY}\n"
    );
    let path = dir.join("organizations.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// `config` with an SQLite ledger in `dir` added; also returns the text without it.
fn with_ledger(config: PathBuf, dir: &Path) -> (PathBuf, String) {
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    let ledger = format!(
        "[ledger]\nurl = \"sqlite://{}\"\n",
        dir.join("ledger.db").display()
    );
    std::fs::write(&config, format!("{text}\n{ledger}")).unwrap_or_else(|e| panic!("{e}"));
    (config, text)
}

fn post(port: u16, body: &Value) -> (u16, String) {
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", TOKEN),
    ];
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    http_post(port, "/auth0/logs", &headers, &bytes).unwrap_or_else(|| panic!("no answer"))
}

/// Organization → member → role names, the shape `Simulator::organization_roles` answers.
type OrgRoles = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("auth0|{prefix}{i:03}")).collect()
}

#[test]
fn member_added_for_two_organizations_over_the_webhook_gives_exactly_their_member_roles_once() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let acme = users("acme", 8);
    let globex = users("globex", 6);
    // One user in both organizations: one write in each, nothing shared.
    let both = acme[0].clone();
    let mut globex_members = globex.clone();
    globex_members.push(both.clone());
    // Added to acme and removed again before its event is processed: that member alone fails.
    let gone = "auth0|left-early".to_owned();
    let login = "auth0|login-through-acme".to_owned();
    let mut acme_members = acme.clone();
    acme_members.extend([gone.clone(), login.clone()]);
    organizations(&sim, &acme_members, &globex_members);
    assert!(sim.remove_member(ACME, &gone));

    let dir = temp_dir("organizations-webhook");
    let (port, metrics) = (free_port(), free_port());
    let config = ingest_config(&dir, port, metrics, &running.base_url, "");
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);

    let mut events: Vec<Value> = Vec::new();
    for (i, user) in acme.iter().enumerate() {
        events.push(member_added(&format!("evt_a{i}"), ACME, "acme", user, i));
    }
    for (i, user) in globex_members.iter().enumerate() {
        events.push(member_added(
            &format!("evt_g{i}"),
            GLOBEX,
            "globex",
            user,
            i,
        ));
    }
    events.push(first_login_through(
        "90020261201000000000000000000000000000000000000000000001",
        ACME,
        "acme",
        &login,
    ));
    // Every event one at a time (as Event Streams delivers), then all of them again in one
    // array (a redelivery after a lost answer).
    for event in &events {
        let (status, answer) = post(port, event);
        assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    }
    let (status, answer) = post(port, &Value::Array(events.clone()));
    assert_eq!(status, 200, "{answer}");
    let _ = post(port, &member_added("evt_gone", ACME, "acme", &gone, 0));

    let mut expected = OrgRoles::new();
    for user in &acme {
        expected
            .entry(ACME.to_owned())
            .or_default()
            .insert(user.clone(), strings(&["INTERNAL", "Viewer"]));
    }
    expected
        .entry(ACME.to_owned())
        .or_default()
        .insert(login.clone(), strings(&["INTERNAL"]));
    for user in &globex_members {
        expected
            .entry(GLOBEX.to_owned())
            .or_default()
            .insert(user.clone(), strings(&["Viewer"]));
    }
    assert_eq!(sim.organization_roles(), expected, "{}", service.log_text());
    assert!(
        sim.users_with_roles().is_empty(),
        "no tenant role: {:?}",
        sim.users_with_roles()
    );
    let stats = sim.stats();
    let members = acme.len() + globex_members.len() + 1;
    assert_eq!(
        stats.calls_of("assign_organization_member_roles"),
        members as u64 + 1,
        "one call per (member, organization) for all its roles, none for a redelivery, one for the member who left: {stats:?}"
    );
    assert_eq!(stats.duplicate_assignments, 0, "{stats:?}");
    assert_eq!(stats.calls_of("assign_user_roles"), 0);
    assert_eq!(stats.calls_of("get_user"), 0, "no rule reads the profile");
    let given = service.metric(
        "auth0_default_roles_role_assignments_total",
        "kind=\"organization\"",
    );
    assert_eq!(given as usize, acme.len() * 2 + globex_members.len() + 1);
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"failed\""
        ),
        1.0,
        "the member removed before the write fails alone"
    );
    assert!(
        service.log_text().contains("no longer a member"),
        "{}",
        service.log_text()
    );
    rt.block_on(running.shutdown());
}

/// 30 members added at once in one organization: `(per_minute, burst)` of the service's
/// limiter against the simulator's 200/min, burst 20. Returns the simulator's stats and the
/// service's organization limiter wait (seconds, summed).
fn thirty_members_at_once(name: &str, limits: &str) -> (mgmt_sim::SimStats, f64) {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let members = users("burst", 30);
    organizations(&sim, &members, &[]);
    let dir = temp_dir(&format!("organizations-{name}"));
    let (port, metrics) = (free_port(), free_port());
    let config = ingest_config(&dir, port, metrics, &running.base_url, limits);
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    let events: Vec<Value> = members
        .iter()
        .enumerate()
        .map(|(i, user)| member_added(&format!("evt_b{i}"), ACME, "acme", user, i))
        .collect();
    let (status, answer) = post(port, &Value::Array(events));
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    let roles = sim.organization_roles();
    for user in &members {
        assert_eq!(
            roles.get(ACME).and_then(|m| m.get(user)),
            Some(&strings(&["INTERNAL", "Viewer"])),
            "{user}: {roles:?}\n{}",
            service.log_text()
        );
    }
    let waited = service.metric(
        "auth0_default_roles_organization_rate_limiter_wait_seconds_sum",
        "",
    );
    let stats = sim.stats();
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"assigned\""
        ),
        30.0
    );
    rt.block_on(running.shutdown());
    (stats, waited)
}

#[test]
fn thirty_members_at_once_wait_for_the_organization_limiter_and_meet_no_429() {
    // A little under the tenant's 200/min: at exactly its rate, a write may meet the bucket a
    // hair before its token (a 429, retried: see the next test).
    let (stats, waited) = thirty_members_at_once("paced", "organization_roles_per_minute = 180");
    assert_eq!(stats.organization_rate_limited, 0, "{stats:?}");
    assert_eq!(stats.calls_of("assign_organization_member_roles"), 30);
    // 10 writes past the burst of 20, at 180/min: about 3.3 s of waiting between them.
    assert!(waited >= 2.0, "the limiter paced them: {waited} s");
}

#[test]
fn thirty_members_at_once_past_the_tenants_organization_limit_lose_no_write() {
    // The service's ceiling set above the tenant's bucket: the tenant answers 429 past 20
    // unless the learned limiter reads the bucket from the answers first (it sends the first
    // call alone, then what `remaining` says). Either way, within the webhook's 10 s deadline
    // (simultaneous 429s of one burst cut the pace once, not once each).
    let (stats, _) = thirty_members_at_once(
        "over",
        "organization_roles_per_minute = 60000\norganization_roles_burst = 100",
    );
    assert_eq!(
        stats.calls_of("assign_organization_member_roles"),
        30 + stats.organization_rate_limited,
        "every 429 retried, nothing else repeated: {stats:?}"
    );
    assert_eq!(stats.organization_role_assignments, 60);
    assert_eq!(stats.duplicate_assignments, 0);
}

fn reconcile(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .arg("reconcile")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"))
}

#[test]
fn members_added_without_an_event_get_theirs_from_reconcile_apply_and_a_second_plan_is_empty() {
    let rt = runtime();
    let acme = users("racme", 7);
    let globex = users("rglobex", 5);
    let seeds: Vec<SeedUser> = acme
        .iter()
        .chain(&globex)
        .map(|u| SeedUser {
            email: Some(format!("{}@example.com", u.replace('|', "-"))),
            email_verified: Some(true),
            ..SeedUser::new(u.clone())
        })
        .collect();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), seeds);
    organizations(&sim, &acme, &globex);
    // One acme member already holds Viewer there (given by hand): only INTERNAL is missing.
    let viewer = sim.role_id("Viewer").unwrap_or_default();
    let held = acme[0].clone();
    rt.block_on(async {
        let token: Value = reqwest::Client::new()
            .post(running.url("/oauth/token"))
            .json(&json!({"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "sim-secret", "audience": sim.audience()}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default();
        let status = reqwest::Client::new()
            .post(running.url(&format!(
                "/api/v2/organizations/{ACME}/members/{}/roles",
                held.replace('|', "%7C")
            )))
            .bearer_auth(token["access_token"].as_str().unwrap_or_default())
            .json(&json!({"roles": [viewer]}))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(status, 204);
    });
    let dir = temp_dir("organizations-reconcile");
    let config = dir.join("reconcile.toml");
    std::fs::write(
        &config,
        format!(
            "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{}\"\nrequests_per_second = 1000\nburst = 200\n\n{POLICY}\n",
            running.base_url
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let plan = reconcile(&config, &["--output", "jsonl"]);
    let stdout = String::from_utf8_lossy(&plan.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&plan.stderr).into_owned();
    assert!(plan.status.success(), "{stdout}\n{stderr}");
    let mut planned = OrgRoles::new();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let org = v["organization"]
            .as_str()
            .unwrap_or_else(|| panic!("{line}"));
        let user = v["user_id"].as_str().unwrap_or_default();
        let mut roles: Vec<String> = v["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect();
        roles.sort();
        assert!(
            v["rules"].as_array().is_some_and(|r| !r.is_empty()),
            "{line}"
        );
        planned
            .entry(org.to_owned())
            .or_default()
            .insert(user.to_owned(), roles);
    }
    let mut expected_plan = OrgRoles::new();
    for user in &acme {
        let roles = if *user == held {
            strings(&["INTERNAL"])
        } else {
            strings(&["INTERNAL", "Viewer"])
        };
        expected_plan
            .entry(ACME.to_owned())
            .or_default()
            .insert(user.clone(), roles);
    }
    for user in &globex {
        expected_plan
            .entry(GLOBEX.to_owned())
            .or_default()
            .insert(user.clone(), strings(&["Viewer"]));
    }
    assert_eq!(planned, expected_plan, "{stderr}");
    assert_eq!(
        sim.stats().calls_of("assign_organization_member_roles"),
        1,
        "a plan writes nothing"
    );

    let apply = reconcile(&config, &["--apply"]);
    let summary = String::from_utf8_lossy(&apply.stdout).into_owned();
    assert!(
        apply.status.success(),
        "{summary}\n{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let mut expected = OrgRoles::new();
    for user in &acme {
        expected
            .entry(ACME.to_owned())
            .or_default()
            .insert(user.clone(), strings(&["INTERNAL", "Viewer"]));
    }
    for user in &globex {
        expected
            .entry(GLOBEX.to_owned())
            .or_default()
            .insert(user.clone(), strings(&["Viewer"]));
    }
    assert_eq!(sim.organization_roles(), expected, "{summary}");
    assert!(sim.users_with_roles().is_empty(), "no tenant role");
    assert_eq!(
        sim.stats().calls_of("assign_organization_member_roles"),
        1 + (acme.len() + globex.len()) as u64,
        "one write per member missing roles: {summary}"
    );
    assert!(
        summary.contains(
            "organizations: 2 listed, 12 members; 12 (member, organization) missing 18 roles"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("added: 18 member roles; failed: 0 members"),
        "{summary}"
    );

    let again = reconcile(&config, &["--output", "jsonl"]);
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "",
        "a second plan is empty"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("0 (member, organization) missing 0 roles"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    rt.block_on(running.shutdown());
}

#[test]
fn member_added_through_eventbridge_and_sqs_gives_exactly_the_member_roles() {
    let dir = temp_dir("organizations-sqs");
    let moto = Moto::start(&dir);
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let acme = users("qacme", 6);
    let globex = users("qglobex", 6);
    organizations(&sim, &acme, &globex);
    let sqs = moto.sqs_client();
    let http = reqwest::Client::new();
    let events = |action: &str, body: Value| -> Value {
        rt.block_on(async {
            let r = http
                .post(moto.endpoint())
                .header("X-Amz-Target", format!("AWSEvents.{action}"))
                .header("Content-Type", "application/x-amz-json-1.1")
                .header(
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/events/aws4_request, SignedHeaders=host, Signature=0",
                )
                .body(body.to_string())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{action}: {e}"));
            assert!(r.status().is_success(), "{action}: {}", r.status());
            r.json().await.unwrap_or(Value::Null)
        })
    };
    let (url, arn) = rt.block_on(async {
        let url = sqs
            .create_queue()
            .queue_name("org-events")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .queue_url
            .unwrap_or_default();
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .unwrap_or_default();
        (url, arn)
    });
    let bus = "org-events-bus";
    events("CreateEventBus", json!({"Name": bus}));
    events(
        "PutRule",
        json!({
            "Name": "organization-members",
            "EventBusName": bus,
            "EventPattern": json!({"detail-type": ["organization.member.added"]}).to_string(),
            "State": "ENABLED",
        }),
    );
    events(
        "PutTargets",
        json!({"Rule": "organization-members", "EventBusName": bus, "Targets": [{"Id": "q", "Arn": arn}]}),
    );
    let mut entries = Vec::new();
    let mut expected = OrgRoles::new();
    for (org, name, members) in [(ACME, "acme", &acme), (GLOBEX, "globex", &globex)] {
        for (i, user) in members.iter().enumerate() {
            let event = member_added(&format!("evt_{name}_{i}"), org, name, user, i);
            let entry = json!({
                "Source": "aws.partner/auth0.com/acme-tenant/auth0.events",
                "DetailType": "organization.member.added",
                "Detail": event.to_string(),
                "EventBusName": bus,
            });
            entries.push(entry.clone());
            if i % 2 == 0 {
                // Event Streams delivers at least once.
                entries.push(entry);
            }
            let roles = if name == "acme" {
                strings(&["INTERNAL", "Viewer"])
            } else {
                strings(&["Viewer"])
            };
            expected
                .entry(org.to_owned())
                .or_default()
                .insert(user.clone(), roles);
        }
    }
    for chunk in entries.chunks(10) {
        let out = events("PutEvents", json!({"Entries": chunk}));
        assert_eq!(out["FailedEntryCount"], json!(0), "{out}");
    }
    let metrics = free_port();
    let config = dir.join("sqs.toml");
    std::fs::write(
        &config,
        format!(
            "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{}\"\nrequests_per_second = 1000\nburst = 200\nbatch_window_ms = 20\n\n[source]\ntype = \"sqs\"\n\n[sqs]\nqueue_url = \"{url}\"\nwait_time_seconds = 1\nshutdown_grace_seconds = 10\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{POLICY}\n",
            running.base_url
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let endpoint = moto.endpoint();
    let mut service = Service::start_command(
        "run",
        &config,
        metrics,
        dir.join("sqs.log"),
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL_SQS", endpoint.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ],
    );
    service.wait_ready();
    let depth = || {
        rt.block_on(async {
            sqs.get_queue_attributes()
                .queue_url(&url)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                )
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                )
                .send()
                .await
                .ok()
                .and_then(|o| o.attributes)
                .map(|a| {
                    a.values()
                        .filter_map(|v| v.parse::<u64>().ok())
                        .sum::<u64>()
                })
                .unwrap_or(u64::MAX)
        })
    };
    assert!(
        wait_for(Duration::from_secs(120), || sim.organization_roles()
            == expected
            && depth() == 0),
        "not done: {:?}, queue {}\n{}\n{}",
        sim.organization_roles(),
        depth(),
        service.snapshot(),
        service.log_text()
    );
    let stats = sim.stats();
    assert_eq!(
        stats.calls_of("assign_organization_member_roles"),
        (acme.len() + globex.len()) as u64,
        "duplicates cost nothing: {stats:?}"
    );
    assert!(sim.users_with_roles().is_empty());
    service.signal("TERM");
    assert!(service
        .wait_exit(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    rt.block_on(running.shutdown());
}

fn evaluate(p: &Policy, trigger: Trigger, event: &LogEvent) -> Evaluation {
    p.evaluate(trigger, event, Some(&Profile::default()))
}

fn decoded(body: &Value) -> LogEvent {
    match decode(body.to_string().as_bytes()).into_iter().next() {
        Some(Ok(event)) => event,
        other => panic!("{other:?}"),
    }
}

#[test]
fn assign_in_organization_applies_only_to_events_naming_an_organization() {
    let p = policy(
        r#"
[policy]
events = ["signup", "first_login", "organization_member_added"]

[[policy.rules]]
name = "tenant-and-org"
assign = ["Viewer"]
assign_in_organization = ["Member"]

[[policy.rules]]
name = "org-only-final"
assign_in_organization = ["Staff"]
final = true

[[policy.rules]]
name = "later"
assign = ["Later"]
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // A signup names no organization: the tenant part of the first rule, not the org-only rule
    // (not even as final), the later rule.
    let signup = LogEvent {
        event_type: "ss".to_owned(),
        user_id: Some("auth0|1".to_owned()),
        ..LogEvent::default()
    };
    match evaluate(&p, Trigger::Signup, &signup) {
        Evaluation::Assign(d) => {
            assert_eq!(d.roles, strings(&["Viewer", "Later"]));
            assert!(d.organization_roles.is_empty());
            assert_eq!(d.rules, strings(&["tenant-and-org", "later"]));
        }
        other => panic!("{other:?}"),
    }
    // A member added: both kinds, and the org-only rule is final.
    let added = decoded(&member_added("evt_1", ACME, "acme", "auth0|1", 0));
    match evaluate(&p, Trigger::OrganizationMemberAdded, &added) {
        Evaluation::Assign(d) => {
            assert_eq!(d.roles, strings(&["Viewer"]));
            assert_eq!(d.organization_roles, strings(&["Member", "Staff"]));
            assert_eq!(d.rules, strings(&["tenant-and-org", "org-only-final"]));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        p.role_names().len(),
        4,
        "organization roles are resolved too"
    );
    assert!(p.uses_organizations());
}

#[test]
fn organization_name_is_three_valued_and_only_a_login_or_a_membership_tells_it() {
    let p = policy(POLICY).unwrap_or_else(|e| panic!("{e}"));
    let login = |name: Option<&str>| LogEvent {
        event_type: "s".to_owned(),
        user_id: Some("auth0|1".to_owned()),
        organization_id: Some(ACME.to_owned()),
        organization_name: name.map(str::to_owned),
        logins_count: Some(1),
        ..LogEvent::default()
    };
    match evaluate(&p, Trigger::FirstLogin, &login(Some("acme"))) {
        Evaluation::Assign(d) => assert_eq!(d.organization_roles, strings(&["INTERNAL"])),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        evaluate(&p, Trigger::FirstLogin, &login(Some("globex"))),
        Evaluation::NoRule(skipped) if skipped.is_empty()
    ));
    // Absent: undecided (the rule is skipped and says so), never false.
    match evaluate(&p, Trigger::FirstLogin, &login(None)) {
        Evaluation::NoRule(skipped) => {
            let labels: Vec<String> = skipped.iter().map(|u| u.label()).collect();
            assert_eq!(labels, strings(&["acme-staff.organization_name"]));
        }
        other => panic!("{other:?}"),
    }
    // An existing user (reconcile's users pass) has no organization; a member has its own.
    let profile = Profile::default();
    assert!(matches!(
        p.evaluate_existing("auth0|1", &profile),
        Evaluation::NoRule(_)
    ));
    match p.evaluate_member("auth0|1", &profile, ACME, Some("acme")) {
        Evaluation::Assign(d) => {
            assert_eq!(d.organization_roles, strings(&["Viewer", "INTERNAL"]));
            assert!(d.roles.is_empty());
        }
        other => panic!("{other:?}"),
    }
    match p.evaluate_member("auth0|1", &profile, GLOBEX, None) {
        Evaluation::Assign(d) => assert_eq!(d.organization_roles, strings(&["Viewer"])),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_config_check_rejects_organization_rules_that_can_never_apply() {
    let rule = |events: &str, body: &str| {
        policy(&format!(
            "[policy]\n{events}\n[[policy.rules]]\nname = \"r\"\n{body}\n"
        ))
    };
    assert!(matches!(
        rule(
            "events = [\"signup\", \"email_verified\"]",
            "assign_in_organization = [\"Member\"]"
        ),
        Err(PolicyError::NoOrganizationEvent { .. })
    ));
    assert!(matches!(
        rule(
            "",
            "when = { event = \"signup\" }\nassign_in_organization = [\"Member\"]"
        ),
        Err(PolicyError::NoOrganizationEvent { .. })
    ));
    assert!(matches!(
        rule("", "assign_in_organization = []"),
        Err(PolicyError::EmptyOrganizationAssign { .. })
    ));
    assert!(matches!(
        rule("", "assign_in_organization = [\" \"]"),
        Err(PolicyError::EmptyRoleName { .. })
    ));
    assert!(matches!(
        rule(
            "events = [\"organization_member_joined\"]",
            "assign = [\"A\"]"
        ),
        Err(PolicyError::UnknownEvent(_))
    ));
    // Without `events`, the tenant triggers only: first logins through an organization give
    // member roles, and a warning says how members added otherwise get theirs.
    let default =
        rule("", "assign_in_organization = [\"Member\"]").unwrap_or_else(|e| panic!("{e}"));
    assert!(!default.handles(Trigger::OrganizationMemberAdded));
    assert!(default.handles(Trigger::FirstLogin));
    assert!(
        default
            .warnings()
            .iter()
            .any(|w| w.contains("organization_member_added is not in [policy] events")),
        "{:?}",
        default.warnings()
    );
}

#[test]
fn check_says_where_organization_member_added_comes_from_and_what_it_needs() {
    let dir = temp_dir("organizations-check");
    let config = dir.join("check.toml");
    std::fs::write(
        &config,
        format!("[auth0]\ndomain = \"acme.eu.auth0.com\"\nclient_id = \"abc\"\n\n{POLICY}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(["check", "--config"])
        .arg(&config)
        .env("AUTH0_CLIENT_SECRET", "x")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("policy: events signup, first_login, organization_member_added"),
        "{stdout}"
    );
    assert!(
        stdout.contains("comes from Auth0 Event Streams' organization.member.added"),
        "{stdout}"
    );
    assert!(
        stdout.contains("create:organization_member_roles"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "read:organizations read:organization_members read:organization_member_roles"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("200 per minute, burst 20"), "{stdout}");
}

#[test]
fn a_later_login_through_an_organization_triggers_only_when_a_ledger_has_not_seen_the_membership() {
    use auth0_default_roles::dedup::{Dedup, DedupSettings};
    use auth0_default_roles::pipeline::{Outcome, Processor, Step};
    let p = policy(POLICY).unwrap_or_else(|e| panic!("{e}"));
    let processor = Processor::new(p, Dedup::new(DedupSettings::default()));
    let mut login = first_login_through("1", ACME, "acme", "auth0|returning");
    login["data"]["details"]["stats"]["loginsCount"] = json!(7);
    let item = || decode(login.to_string().as_bytes()).remove(0);
    // No ledger (None) or a membership it has seen: a later login gives nothing.
    for seen in [None, Some(true)] {
        match processor.start_seen(item(), seen) {
            Step::Done(report) => assert_eq!(report.outcome, Outcome::NotEligible, "{seen:?}"),
            other => panic!("{seen:?}: {other:?}"),
        }
    }
    // Unseen: an organization_member_added in that organization, with the login's fields kept.
    match processor.start_seen(item(), Some(false)) {
        Step::Assign(assignment) => {
            assert_eq!(
                assignment.report.trigger,
                Some(Trigger::OrganizationMemberAdded)
            );
            assert!(assignment.missing.is_empty(), "no tenant role");
            let member = assignment
                .organization
                .unwrap_or_else(|| panic!("no member part"));
            assert_eq!(member.organization_id, ACME);
            assert_eq!(member.missing, strings(&["Viewer", "INTERNAL"]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_role_re_created_after_start_is_resolved_again_and_the_member_gets_it() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let member = "auth0|recreated-role".to_owned();
    organizations(&sim, std::slice::from_ref(&member), &[]);
    let dir = temp_dir("organizations-role-recreated");
    let (port, metrics) = (free_port(), free_port());
    let config = ingest_config(&dir, port, metrics, &running.base_url, "");
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    service.wait_ready();
    // Deleted and created again under the same name: a new id the service has not resolved.
    let old = sim.role_id("INTERNAL").unwrap_or_default();
    assert!(sim.delete_role("INTERNAL"));
    let new = sim.add_role(mgmt_sim::SeedRole::named("INTERNAL"));
    assert_ne!(old, new);
    let (status, answer) = post(port, &member_added("evt_r1", ACME, "acme", &member, 0));
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert_eq!(
        sim.member_role_names(ACME, &member),
        strings(&["INTERNAL", "Viewer"]),
        "{}",
        service.log_text()
    );
    assert_eq!(
        sim.stats().calls_of("assign_organization_member_roles"),
        2,
        "the write answered 404 for the old id, then the write with the new one"
    );
    rt.block_on(running.shutdown());
}

#[test]
fn with_a_ledger_member_roles_are_recorded_with_their_organization() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let member = "auth0|ledger-member".to_owned();
    organizations(&sim, std::slice::from_ref(&member), &[]);
    let dir = temp_dir("organizations-ledger");
    let (port, metrics) = (free_port(), free_port());
    let (config, _) = with_ledger(
        ingest_config(&dir, port, metrics, &running.base_url, ""),
        &dir,
    );
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    let (status, answer) = post(port, &member_added("evt_l1", ACME, "acme", &member, 0));
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert_eq!(
        sim.member_role_names(ACME, &member),
        strings(&["INTERNAL", "Viewer"])
    );
    let explain = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(["explain", "--output", "json", "--config"])
        .arg(&config)
        .arg(&member)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&explain.stdout).into_owned();
    assert!(
        stdout.contains(ACME) && stdout.contains("INTERNAL") && stdout.contains("acme-staff"),
        "the grants name their organization and rule: {stdout}\n{}",
        String::from_utf8_lossy(&explain.stderr)
    );
    rt.block_on(running.shutdown());
}

#[test]
fn with_a_ledger_a_later_login_through_an_organization_it_has_not_seen_gives_member_roles_once() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    // Became a member without any event this service saw (auto-membership, the Dashboard).
    let member = "auth0|joined-quietly".to_owned();
    organizations(&sim, std::slice::from_ref(&member), &[]);
    let dir = temp_dir("organizations-ledger-login");
    let (port, metrics) = (free_port(), free_port());
    let (config, text) = with_ledger(
        ingest_config(&dir, port, metrics, &running.base_url, ""),
        &dir,
    );
    let later_login = |log_id: &str| {
        let mut login = first_login_through(log_id, ACME, "acme", &member);
        login["data"]["details"]["stats"]["loginsCount"] = json!(12);
        login
    };
    let writes = || sim.stats().calls_of("assign_organization_member_roles");

    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    service.wait_ready();
    let (status, answer) = post(
        port,
        &later_login("90020261201000000000000000000000000000000000000001"),
    );
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert_eq!(
        sim.member_role_names(ACME, &member),
        strings(&["INTERNAL", "Viewer"]),
        "{}",
        service.log_text()
    );
    assert_eq!(writes(), 1);
    drop(service);

    // A new process (no memory of its own): the ledger has seen the membership, so the next
    // login through acme costs no write.
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest2.log"), TOKEN);
    service.wait_ready();
    let (status, answer) = post(
        port,
        &later_login("90020261201000000000000000000000000000000000000002"),
    );
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert_eq!(writes(), 1, "{}", service.log_text());

    // Without a ledger the same later login gives nothing (no memory of memberships to ask).
    drop(service);
    std::fs::write(&config, &text).unwrap_or_else(|e| panic!("{e}"));
    let other = "auth0|joined-quietly-too".to_owned();
    assert!(sim.add_members(ACME, std::slice::from_ref(&other)));
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest3.log"), TOKEN);
    service.wait_ready();
    let mut login = first_login_through(
        "90020261201000000000000000000000000000000000000003",
        ACME,
        "acme",
        &other,
    );
    login["data"]["details"]["stats"]["loginsCount"] = json!(12);
    let (status, answer) = post(port, &login);
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert_eq!(writes(), 1);
    assert!(sim.member_role_names(ACME, &other).is_empty());
    rt.block_on(running.shutdown());
}

/// An `organization.member.*` CloudEvent of `kind` (`deleted`, `role.deleted`) at `time`;
/// `role` (id, name) for the role events.
fn member_event(
    kind: &str,
    id: &str,
    time: &str,
    org: &str,
    user: &str,
    role: Option<(&str, &str)>,
) -> Value {
    let mut object = json!({
        "organization": {"id": org, "name": "acme"},
        "user": {"user_id": user},
    });
    if let Some((role_id, role_name)) = role {
        object["role"] = json!({"id": role_id, "name": role_name});
    }
    json!({
        "specversion": "1.0",
        "type": format!("organization.member.{kind}"),
        "source": "urn:auth0:acme-tenant:organizations",
        "id": id,
        "time": time,
        "data": {"object": object},
        "a0tenant": "acme-tenant",
        "a0stream": "est_test",
    })
}

fn explain_text(config: &Path, user: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(["explain", "--config"])
        .arg(config)
        .arg(user)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Member roles follow the tenant roles' rules: a member role this service granted and an admin
/// removed, and one an admin removed that the service never gave (an invitation's), are not
/// given again by a later `organization.member.added` or login, also in a new process.
#[test]
fn with_a_ledger_an_admins_member_role_removal_is_not_undone_by_a_later_trigger() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let granted = "auth0|admin-removes-granted".to_owned();
    let invited = "auth0|admin-removes-invited".to_owned();
    organizations(&sim, &[granted.clone(), invited.clone()], &[]);
    let dir = temp_dir("organizations-admin-removal");
    let (port, metrics) = (free_port(), free_port());
    let (config, _) = with_ledger(
        ingest_config(&dir, port, metrics, &running.base_url, ""),
        &dir,
    );
    let writes = || sim.stats().calls_of("assign_organization_member_roles");
    let internal = sim.role_id("INTERNAL").unwrap_or_default();
    let viewer = sim.role_id("Viewer").unwrap_or_default();

    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    let (status, answer) = post(port, &member_added("evt_ar1", ACME, "acme", &granted, 0));
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert_eq!(
        sim.member_role_names(ACME, &granted),
        strings(&["INTERNAL", "Viewer"])
    );
    // An admin removes INTERNAL from the first member; the second got Viewer by invitation,
    // which an admin removes too. Event Streams tells both.
    sim.remove_member_roles_by_hand(ACME, &granted, &["INTERNAL"]);
    sim.grant_member_roles_by_hand(ACME, &invited, &["Viewer"]);
    sim.remove_member_roles_by_hand(ACME, &invited, &["Viewer"]);
    for event in [
        member_event(
            "role.deleted",
            "evt_rd1",
            "2026-12-01T11:00:00.000Z",
            ACME,
            &granted,
            Some((&internal, "INTERNAL")),
        ),
        member_event(
            "role.deleted",
            "evt_rd2",
            "2026-12-01T11:00:00.000Z",
            ACME,
            &invited,
            Some((&viewer, "Viewer")),
        ),
    ] {
        let (status, answer) = post(port, &event);
        assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    }
    drop(service);

    // A new process (no memory of its own): later triggers for both members.
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest2.log"), TOKEN);
    for event in [
        member_added("evt_ar2", ACME, "acme", &granted, 1),
        member_added("evt_ar3", ACME, "acme", &invited, 2),
    ] {
        let (status, answer) = post(port, &event);
        assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    }
    let mut login = first_login_through(
        "90020261201000000000000000000000000000000000000000000077",
        ACME,
        "acme",
        &granted,
    );
    login["data"]["details"]["stats"]["loginsCount"] = json!(9);
    let (status, answer) = post(port, &login);
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert_eq!(
        sim.member_role_names(ACME, &granted),
        strings(&["Viewer"]),
        "an admin's removal of a role this service gave stands: {}",
        service.log_text()
    );
    assert_eq!(
        sim.member_role_names(ACME, &invited),
        strings(&["INTERNAL"]),
        "an admin's removal of a role this service never gave stands too: {}",
        service.log_text()
    );
    assert_eq!(
        writes(),
        2,
        "the first grant, then INTERNAL for the invited member"
    );
    let shown = explain_text(&config, &granted);
    assert!(shown.contains("removed by an admin"), "{shown}");
    rt.block_on(running.shutdown());
}

/// `organization.member.deleted` ends the member's grants in that organization: a member
/// removed and added again gets its roles again, in the same process and after a restart.
#[test]
fn with_a_ledger_a_member_deleted_and_added_again_gets_its_roles_again() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let member = "auth0|leaves-and-returns".to_owned();
    organizations(&sim, std::slice::from_ref(&member), &[]);
    let dir = temp_dir("organizations-member-deleted");
    let (port, metrics) = (free_port(), free_port());
    let (config, _) = with_ledger(
        ingest_config(&dir, port, metrics, &running.base_url, ""),
        &dir,
    );
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    let mut added = member_added("evt_md1", ACME, "acme", &member, 0);
    added["time"] = json!("2026-12-01T10:00:00.000Z");
    let (status, answer) = post(port, &added);
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert_eq!(
        sim.member_role_names(ACME, &member),
        strings(&["INTERNAL", "Viewer"])
    );
    // Removed from the organization (its roles there go with it), then added again.
    assert!(sim.remove_member(ACME, &member));
    let deleted = member_event(
        "deleted",
        "evt_md2",
        "2026-12-01T11:00:00.000Z",
        ACME,
        &member,
        None,
    );
    let (status, answer) = post(port, &deleted);
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert!(sim.add_members(ACME, std::slice::from_ref(&member)));
    let mut again = member_added("evt_md3", ACME, "acme", &member, 1);
    again["time"] = json!("2026-12-01T12:00:00.000Z");
    let (status, answer) = post(port, &again);
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert_eq!(
        sim.member_role_names(ACME, &member),
        strings(&["INTERNAL", "Viewer"]),
        "{}",
        service.log_text()
    );
    // Once more, across a restart.
    assert!(sim.remove_member(ACME, &member));
    let mut deleted = member_event(
        "deleted",
        "evt_md4",
        "2026-12-01T13:00:00.000Z",
        ACME,
        &member,
        None,
    );
    deleted["type"] = json!("com.auth0.organization.member.deleted");
    let (status, answer) = post(port, &deleted);
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    drop(service);
    assert!(sim.add_members(ACME, std::slice::from_ref(&member)));
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest2.log"), TOKEN);
    let mut third = member_added("evt_md5", ACME, "acme", &member, 2);
    third["time"] = json!("2026-12-01T14:00:00.000Z");
    let (status, answer) = post(port, &third);
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert_eq!(
        sim.member_role_names(ACME, &member),
        strings(&["INTERNAL", "Viewer"]),
        "{}",
        service.log_text()
    );
    assert_eq!(sim.stats().calls_of("assign_organization_member_roles"), 3);
    rt.block_on(running.shutdown());
}

/// `reconcile --apply`'s organization pass records what it grants: `explain` shows the member
/// grants, and a member role an admin then removes is left removed by the next run.
#[test]
fn reconciles_organization_pass_records_its_grants_in_the_ledger() {
    let rt = runtime();
    let members = users("rledger", 3);
    let seeds: Vec<SeedUser> = members
        .iter()
        .map(|u| SeedUser {
            email: Some(format!("{}@example.com", u.replace('|', "-"))),
            email_verified: Some(true),
            ..SeedUser::new(u.clone())
        })
        .collect();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), seeds);
    organizations(&sim, &members, &[]);
    let dir = temp_dir("organizations-reconcile-ledger");
    let config = dir.join("reconcile.toml");
    std::fs::write(
        &config,
        format!(
            "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{}\"\nrequests_per_second = 1000\nburst = 200\n\n{POLICY}\n[ledger]\nurl = \"sqlite://{}\"\n",
            running.base_url,
            dir.join("ledger.db").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let apply = reconcile(&config, &["--apply"]);
    assert!(
        apply.status.success(),
        "{}{}",
        String::from_utf8_lossy(&apply.stdout),
        String::from_utf8_lossy(&apply.stderr)
    );
    for member in &members {
        assert_eq!(
            sim.member_role_names(ACME, member),
            strings(&["INTERNAL", "Viewer"])
        );
    }
    let shown = explain_text(&config, &members[0]);
    assert!(
        shown.contains("granted INTERNAL")
            && shown.contains("granted Viewer")
            && shown.contains(ACME)
            && shown.contains("trigger reconcile"),
        "{shown}"
    );
    // An admin removes a member role the run gave: the next run leaves it removed.
    sim.remove_member_roles_by_hand(ACME, &members[1], &["INTERNAL"]);
    let plan = reconcile(&config, &["--output", "jsonl"]);
    assert!(
        String::from_utf8_lossy(&plan.stdout).trim().is_empty(),
        "{}{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );
    rt.block_on(running.shutdown());
}

/// A member no rule gives a role, logging in again and again through the organization: one
/// profile read decides it, not one per login (the negative decision is kept).
#[test]
fn repeated_logins_of_a_member_no_rule_gives_a_role_cost_one_profile_read() {
    let rt = runtime();
    let member = "auth0|nothing-for-me".to_owned();
    let seeds = vec![SeedUser {
        email: Some("someone@elsewhere.example".to_owned()),
        email_verified: Some(true),
        ..SeedUser::new(member.clone())
    }];
    let (sim, running) = start_tenant(&rt, SimConfig::default(), seeds);
    organizations(&sim, std::slice::from_ref(&member), &[]);
    let dir = temp_dir("organizations-negative");
    let (port, metrics) = (free_port(), free_port());
    let policy = r#"
[policy]
events = ["signup", "first_login", "organization_member_added"]

[[policy.rules]]
name = "acme-domain"
when = { event = "organization_member_added", email_domain = "acme.example" }
assign_in_organization = ["Viewer"]
"#;
    let text = format!(
        "[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:{port}\"\n\n[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{}\"\nrequests_per_second = 1000\nburst = 200\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{policy}\n[ledger]\nurl = \"sqlite://{}\"\n",
        running.base_url,
        dir.join("ledger.db").display()
    );
    let config = dir.join("negative.toml");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    for i in 0..4 {
        let mut login = first_login_through(
            &format!("9002026120100000000000000000000000000000000000000000010{i}"),
            ACME,
            "acme",
            &member,
        );
        // No email in the event: the rule reads the profile.
        login["data"].as_object_mut().map(|d| d.remove("user_name"));
        login["data"]["details"]["stats"]["loginsCount"] = json!(20 + i);
        let (status, answer) = post(port, &login);
        assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    }
    assert!(sim.member_role_names(ACME, &member).is_empty());
    assert_eq!(
        sim.stats().calls_of("get_user"),
        1,
        "one profile read decides the membership, not one per login: {}",
        service.log_text()
    );
    assert_eq!(sim.stats().calls_of("assign_organization_member_roles"), 0);
    rt.block_on(running.shutdown());
}

/// A member whose organization roles are full: Auth0 answers the member-role write 409 "No more
/// roles can be assigned to this organization member". That member alone ends `failed` with
/// Auth0's message; the other members of the same organization get their roles.
#[test]
fn a_member_role_409_fails_that_member_alone_and_the_others_get_their_roles() {
    let rt = runtime();
    let (sim, running) = start_tenant(
        &rt,
        SimConfig {
            accept_any_user: true,
            member_role_limit: 2,
            ..SimConfig::default()
        },
        Vec::new(),
    );
    let globex = users("full", 4);
    assert_eq!(sim.add_organization(Some(GLOBEX), "globex"), GLOBEX);
    assert!(sim.add_members(GLOBEX, &globex));
    // The first member already holds two roles in globex: the limit.
    sim.grant_member_roles_by_hand(GLOBEX, &globex[0], &["CUSTOMER", "PARTNER"]);
    let dir = temp_dir("organizations-409");
    let (port, metrics) = (free_port(), free_port());
    let config = ingest_config(&dir, port, metrics, &running.base_url, "");
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    for (i, user) in globex.iter().enumerate() {
        let (status, answer) = post(
            port,
            &member_added(&format!("evt_f{i}"), GLOBEX, "globex", user, i),
        );
        // The failed member is answered too (dead-lettered where the source has a dead-letter
        // destination; the webhook answers it as done after logging it).
        assert!(status == 200 || status == 422, "{status} {answer}");
    }
    let roles = sim.organization_roles();
    let held = &roles[GLOBEX];
    assert_eq!(
        held.get(&globex[0]),
        Some(&strings(&["CUSTOMER", "PARTNER"])),
        "the full member keeps what it held: {roles:?}"
    );
    for user in &globex[1..] {
        assert_eq!(held.get(user), Some(&strings(&["Viewer"])), "{roles:?}");
    }
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"failed\""
        ),
        1.0,
        "{}",
        service.log_text()
    );
    assert!(
        service
            .log_text()
            .contains("No more roles can be assigned to this organization member"),
        "{}",
        service.log_text()
    );
    rt.block_on(running.shutdown());
}

/// Organization members end with an empty page: every non-empty page answers a `next`, the last
/// (empty) one none. `reconcile` walks to it and judges every member once.
#[test]
fn reconcile_walks_organization_members_to_the_empty_last_page() {
    let rt = runtime();
    let acme = users("walk", 5);
    let seeds: Vec<SeedUser> = acme.iter().map(|u| SeedUser::new(u.clone())).collect();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), seeds);
    assert_eq!(sim.add_organization(Some(ACME), "acme"), ACME);
    assert!(sim.add_members(ACME, &acme));
    let dir = temp_dir("organizations-empty-last-page");
    let config = dir.join("reconcile.toml");
    std::fs::write(
        &config,
        format!(
            "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{}\"\nrequests_per_second = 1000\nburst = 200\n\n{POLICY}\n",
            running.base_url
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let plan = reconcile(&config, &["--output", "jsonl"]);
    let stdout = String::from_utf8_lossy(&plan.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&plan.stderr).into_owned();
    assert!(plan.status.success(), "{stdout}\n{stderr}");
    let planned: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["organization"] == json!(ACME))
        .filter_map(|v| v["user_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(planned, acme, "{stdout}");
    assert_eq!(
        sim.stats().calls_of("get_organization_members"),
        2,
        "a page of 5 with a next, then the empty last page: {:?}",
        sim.stats()
    );
    rt.block_on(running.shutdown());
}
