//! Auth0 Event Streams: `user.created` / `user.updated` CloudEvents over the webhook receiver
//! (direct mode, against the simulator), with duplicates, both spellings of `type` and of the
//! spec-version key; the profile they carry decides the policy without a single user read.
//! (The EventBridge → SQS path is in `sqs.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Value};

use mgmt_sim::SimConfig;
use test_harness::*;

const TOKEN: &str = "Bearer s3cret-token";

/// A stream of CloudEvents for `users` users and the roles the demo policy gives each:
/// Viewer; INTERNAL for `corp-azure-ad`, CUSTOMER otherwise; PARTNER for a partner-domain
/// user once a `user.updated` shows the email verified. Every third event is sent twice;
/// spellings alternate; a `user.deleted` of an unknown user and a malformed event are mixed in.
pub fn cloud_stream(users: usize) -> (Vec<Value>, BTreeMap<String, BTreeSet<String>>) {
    let mut events = Vec::new();
    let mut expected = BTreeMap::new();
    for i in 0..users {
        let user_id = format!("auth0|es{i:05}");
        let internal = i % 4 == 0;
        let partner = i % 3 == 0 && !internal;
        let connection = if internal {
            "corp-azure-ad"
        } else {
            "Username-Password-Authentication"
        };
        let provider = if internal { "waad" } else { "auth0" };
        let email = if partner {
            format!("p{i}@partner.example")
        } else {
            format!("u{i}@example.com")
        };
        let kind = |name: &str| {
            if i % 2 == 0 {
                format!("user.{name}")
            } else {
                format!("com.auth0.user.{name}")
            }
        };
        let spec = if i % 2 == 0 {
            "specversion"
        } else {
            "spec_version"
        };
        let user = |verified: bool| {
            json!({
                "user_id": user_id,
                "email": email,
                "email_verified": verified,
                "identities": [{"connection": connection, "provider": provider, "user_id": format!("es{i:05}"), "isSocial": false}],
                "app_metadata": {},
                "created_at": "2026-11-28T10:00:00.000Z",
            })
        };
        let envelope = |id: String, kind: String, time: &str, object: Value| {
            let mut event = json!({
                "id": id,
                "source": "urn:auth0:acme:users",
                "type": kind,
                "time": time,
                "dataschema": "https://acme.auth0.com/api/v2/schemas/user.created",
                "data": {"object": object},
            });
            event[spec] = json!("1.0");
            event
        };
        let created = envelope(
            format!("evt_c{i:05}"),
            kind("created"),
            "2026-11-28T10:00:00.000Z",
            user(false),
        );
        events.push(created.clone());
        if i % 3 == 1 {
            events.push(created);
        }
        let mut roles: BTreeSet<String> = ["Viewer".to_owned()].into_iter().collect();
        roles.insert(if internal { "INTERNAL" } else { "CUSTOMER" }.to_owned());
        if partner {
            let updated = envelope(
                format!("evt_u{i:05}"),
                kind("updated"),
                "2026-11-28T10:05:00.000Z",
                user(true),
            );
            events.push(updated.clone());
            events.push(updated);
            roles.insert("PARTNER".to_owned());
        }
        expected.insert(user_id, roles);
    }
    events.push(json!({
        "id": "evt_deleted", "specversion": "1.0", "type": "user.deleted",
        "source": "urn:auth0:acme:users", "time": "2026-11-28T11:00:00.000Z",
        "data": {"object": {"user_id": "auth0|never-created"}},
    }));
    (events, expected)
}

/// A CloudEvent that cannot be used: `user.created` without `data.object`.
pub const MALFORMED: &str = r#"{"id":"evt_broken","specversion":"1.0","type":"user.created","source":"urn:auth0:acme:users","time":"2026-11-28T10:00:00Z","data":{}}"#;

fn write_config(dir: &Path, port: u16, metrics: u16, base_url: &str) -> std::path::PathBuf {
    let policy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:{port}\"\n\n[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{base_url}\"\nrequests_per_second = 1000\nburst = 200\nbatch_window_ms = 20\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{policy}\n"
    );
    let path = dir.join("event-streams.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn cloud_events_over_the_webhook_give_every_user_exactly_their_roles_with_no_profile_read() {
    let rt = runtime();
    let (sim, running) = start_tenant(
        &rt,
        SimConfig {
            accept_any_user: true,
            ..SimConfig::default()
        },
        Vec::new(),
    );
    let dir = temp_dir("event-streams");
    let (port, metrics) = (free_port(), free_port());
    let config = write_config(&dir, port, metrics, &running.base_url);
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    let (events, expected) = cloud_stream(60);
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", TOKEN),
    ];
    // Half as arrays of events, half one event per request (as a webhook stream delivers).
    let (batch, singles) = events.split_at(events.len() / 2);
    for chunk in batch.chunks(10) {
        let body = serde_json::to_vec(chunk).unwrap_or_default();
        let (status, answer) =
            http_post(port, "/auth0/logs", &headers, &body).unwrap_or_else(|| panic!("no answer"));
        assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    }
    for event in singles {
        let body = serde_json::to_vec(event).unwrap_or_default();
        let (status, answer) =
            http_post(port, "/auth0/logs", &headers, &body).unwrap_or_else(|| panic!("no answer"));
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(sim.role_sets(), expected);
    assert_eq!(
        sim.stats().calls_of("get_user"),
        0,
        "the events carry the profile"
    );
    // Duplicates are absorbed: no user got a role twice.
    assert_eq!(sim.stats().duplicate_assignments, 0, "{:?}", sim.stats());
    let received = service.metric(
        "auth0_default_roles_events_received_total",
        "input=\"event_stream\"",
    );
    assert_eq!(received as usize, events.len());

    // A malformed CloudEvent is an invalid record, counted, and costs nothing else.
    let (status, answer) = http_post(port, "/auth0/logs", &headers, MALFORMED.as_bytes())
        .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(status, 400, "a body whose only record is invalid: {answer}");
    assert!(
        service.metric(
            "auth0_default_roles_ingest_records_total",
            "outcome=\"invalid\""
        ) >= 1.0
    );
    assert_eq!(sim.role_sets(), expected);
    rt.block_on(running.shutdown());
}

/// The Dashboard's test button (`POST /event-streams/{id}/test`) sends a `user.created` (or
/// `user.updated`) of a fixed sample user the tenant does not hold, with `a0purpose: "test"`:
/// answered as delivered, counted as `input="test"`, and never processed (no Management API
/// call, so no `failed` 404 on an operator's first test).
#[test]
fn a_test_event_through_the_webhook_is_acknowledged_and_counted_with_no_management_api_call() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("event-streams-test-button");
    let (port, metrics) = (free_port(), free_port());
    let config = write_config(&dir, port, metrics, &running.base_url);
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", TOKEN),
    ];
    let before = sim.stats().total_requests;
    for (i, kind) in ["user.created", "user.updated", "user.created"]
        .into_iter()
        .enumerate()
    {
        let event = mgmt_sim::event_streams::test_event(
            "sim.auth0.local",
            "est_test0000000000000001",
            kind,
            &format!("evt_test{i}"),
        );
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let (status, answer) =
            http_post(port, "/auth0/logs", &headers, &body).unwrap_or_else(|| panic!("no answer"));
        assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    }
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_received_total",
            "input=\"test\""
        ),
        3.0,
        "{}",
        service.log_text()
    );
    assert_eq!(
        sim.stats().total_requests,
        before,
        "a test event costs no Management API call: {:?}",
        sim.stats()
    );
    assert!(sim.role_sets().is_empty());
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"failed\""
        ),
        0.0
    );
    rt.block_on(running.shutdown());
}
