//! The way back from a failure, through `ingest` in direct mode (the webhook receiver assigning
//! in-process) against the simulated tenant over HTTP: a policy role deleted and re-created
//! while events arrive fails nobody; revoked credentials cost a handful of token requests
//! however many events wait; a 429 storm is paced, never reported as a failing tenant; a client
//! secret rotated in its file is used without a restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use auth0_default_roles::generate::{self, Record};
use mgmt_sim::{ControlRequest, RunningSimulator, SeedRole};
use test_harness::*;

const TOKEN: &str = "Bearer recovery-token";

/// `ingest` in direct mode on the demo policy, answering 503 after `deadline_seconds`.
fn start_direct(dir: &Path, running: &RunningSimulator, deadline_seconds: u64) -> (Service, u16) {
    start_direct_with(dir, running, deadline_seconds, None)
}

/// [`start_direct`], the client secret read from `secret_file` (`AUTH0_CLIENT_SECRET` empty)
/// when one is given.
fn start_direct_with(
    dir: &Path,
    running: &RunningSimulator,
    deadline_seconds: u64,
    secret_file: Option<&Path>,
) -> (Service, u16) {
    let (port, metrics) = (free_port(), free_port());
    let secret_key = secret_file
        .map(|f| format!("client_secret_file = \"{}\"\n", f.display()))
        .unwrap_or_default();
    let policy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        r#"[ingest]
mode = "direct"
listen = "127.0.0.1:{port}"
direct_deadline_seconds = {deadline_seconds}

[auth0]
domain = "sim.auth0.local"
client_id = "sim-client"
base_url = "{base}"
requests_per_second = 1000
burst = 200
batch_window_ms = 20
{secret_key}
[metrics]
listen = "127.0.0.1:{metrics}"

{policy}
"#,
        base = running.base_url,
    );
    let config: PathBuf = dir.join("ingest.toml");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("ingest.log");
    let service = match secret_file {
        None => Service::start_ingest(&config, port, metrics, log, TOKEN),
        Some(_) => {
            let env = [("AUTH0_WEBHOOK_TOKEN", TOKEN), ("AUTH0_CLIENT_SECRET", "")];
            let service = Service::start_command("ingest", &config, metrics, log, &env);
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            assert!(
                wait_listening(addr, Duration::from_secs(30)),
                "ingest did not listen\n{}",
                service.log_text()
            );
            service
        }
    };
    (service, port)
}

/// One log-stream delivery (JSON Lines), as Auth0 sends it: the HTTP status.
fn deliver(port: u16, records: &[Record]) -> u16 {
    post_log_delivery(port, TOKEN, records)
}

/// A fault of the tenant never fails an event.
fn assert_nobody_failed(service: &Service) {
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"failed\""
        ),
        0.0,
        "an event was failed for the tenant's fault\n{}",
        service.log_text()
    );
}

#[test]
fn a_policy_role_deleted_and_recreated_while_events_arrive_fails_nobody() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("recovery-role");
    let (service, port) = start_direct(&dir, &running, 2);
    service.wait_ready();
    let stream = generate::mixed(41, 120, 0);
    let old_id = sim.role_id("Viewer");
    assert!(sim.delete_role("Viewer"), "the demo tenant has Viewer");
    // Auth0 delivers while the role is gone: the events wait (503, Auth0 sends them again).
    assert_eq!(
        deliver(port, &stream.records),
        503,
        "{}",
        service.log_text()
    );
    service.assert_not_ready_because("role_missing");
    assert!(
        service
            .get("/readyz")
            .is_some_and(|(_, body)| body.contains("Viewer")),
        "/readyz names the role: {:?}",
        service.get("/readyz")
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_mgmt_api_blocked",
            "reason=\"role_missing\""
        ),
        1.0
    );
    // The admin creates it again a few seconds later: a new id.
    std::thread::sleep(Duration::from_secs(4));
    let new_id = sim.add_role(SeedRole::named("Viewer"));
    assert_ne!(Some(new_id), old_id);
    assert!(
        wait_for(Duration::from_secs(60), || {
            deliver(port, &stream.records) == 200 && sim.role_sets() == stream.expected
        }),
        "not recovered: {} of {} users right\n{}",
        sim.role_sets()
            .iter()
            .filter(|(u, r)| stream.expected.get(*u) == Some(*r))
            .count(),
        stream.expected.len(),
        service.log_text()
    );
    assert_nobody_failed(&service);
    assert_eq!(
        service.metric(
            "auth0_default_roles_mgmt_api_blocked",
            "reason=\"role_missing\""
        ),
        0.0
    );
    assert_eq!(service.get("/readyz").map(|(s, _)| s), Some(200));
    rt.block_on(running.shutdown());
}

#[test]
fn revoked_credentials_with_events_waiting_cost_one_token_request_a_second_at_most() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("recovery-token");
    let (service, port) = start_direct(&dir, &running, 1);
    service.wait_ready();
    let stream = generate::mixed(42, 200, 0);
    let tokens_before = sim.stats().calls_of("token");
    sim.apply_control(&ControlRequest {
        credentials_revoked: Some(true),
        ..Default::default()
    });
    let revoked_at = Instant::now();
    // 15 s of revocation while Auth0 keeps delivering (and retrying) batches: many events wait.
    let mut deliveries = 0;
    for chunk in stream.records.chunks(20).cycle() {
        if revoked_at.elapsed() >= Duration::from_secs(15) {
            break;
        }
        assert_eq!(deliver(port, chunk), 503, "{}", service.log_text());
        deliveries += 1;
    }
    let during = sim.stats().calls_of("token") - tokens_before;
    sim.apply_control(&ControlRequest {
        credentials_revoked: Some(false),
        ..Default::default()
    });
    eprintln!(
        "{during} token requests during 15 s of revoked credentials, {deliveries} deliveries"
    );
    assert!(deliveries >= 5, "{deliveries} deliveries");
    assert!(
        during <= 16,
        "{during} token requests in 15 s of revocation (at most one a second)\n{}",
        service.log_text()
    );
    assert!(during >= 1, "the refusal was noticed");
    // Back: the pace has grown, so recovery waits for the next allowed request (< 1 min).
    assert!(
        wait_for(Duration::from_secs(120), || {
            deliver(port, &stream.records) == 200 && sim.role_sets() == stream.expected
        }),
        "not recovered\n{}",
        service.log_text()
    );
    let refused = service.metric(
        "auth0_default_roles_mgmt_api_token_requests_total",
        "outcome=\"refused\"",
    );
    let issued = service.metric(
        "auth0_default_roles_mgmt_api_token_requests_total",
        "outcome=\"issued\"",
    );
    assert!((1.0..=16.0).contains(&refused), "refused {refused}");
    assert!(issued >= 2.0, "issued {issued}: at start and after the fix");
    assert_nobody_failed(&service);
    rt.block_on(running.shutdown());
}

#[test]
fn a_client_secret_rotated_in_its_file_is_used_without_a_restart() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("recovery-rotation");
    let secret_file = dir.join("client-secret");
    std::fs::write(&secret_file, "sim-secret\n").unwrap_or_else(|e| panic!("{e}"));
    let (service, port) = start_direct_with(&dir, &running, 1, Some(&secret_file));
    service.wait_ready();
    let pid = service.pid();
    // The tenant rotates the secret and the service's token goes: the file's secret is refused.
    sim.apply_control(&ControlRequest {
        client_secret: Some("rotated-secret".to_owned()),
        revoke_tokens: Some(true),
        ..Default::default()
    });
    let stream = generate::mixed(44, 120, 0);
    assert!(
        wait_for(Duration::from_secs(30), || deliver(
            port,
            &stream.records[..10]
        ) == 503),
        "the refused secret was not noticed\n{}",
        service.log_text()
    );
    assert!(
        service.metric(
            "auth0_default_roles_mgmt_api_token_requests_total",
            "outcome=\"refused\""
        ) >= 1.0
    );
    // The operator writes the new secret into the file; nobody restarts the service.
    std::fs::write(&secret_file, "rotated-secret\n").unwrap_or_else(|e| panic!("{e}"));
    assert!(
        wait_for(Duration::from_secs(120), || {
            deliver(port, &stream.records) == 200 && sim.role_sets() == stream.expected
        }),
        "not recovered with the rotated secret\n{}",
        service.log_text()
    );
    assert_eq!(service.pid(), pid, "the same process");
    assert!(
        service.log_text().contains("its file holds a new one"),
        "{}",
        service.log_text()
    );
    assert!(!service.log_text().contains("rotated-secret"));
    assert_nobody_failed(&service);
    assert_eq!(service.get("/readyz").map(|(s, _)| s), Some(200));
    rt.block_on(running.shutdown());
}

#[test]
fn a_429_storm_paces_calls_without_pausing_intake_or_readiness() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("recovery-429");
    let (service, port) = start_direct(&dir, &running, 30);
    service.wait_ready();
    // A tight bucket: most calls of a burst meet a 429.
    sim.set_rate_limit(5.0, 2);
    let stream = generate::mixed(43, 150, 0);
    let reader = {
        let metrics_port = service.metrics_port;
        std::thread::spawn(move || {
            // /readyz while the storm lasts: 429s are flow control, never "not ready".
            let mut not_ready = 0;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(8) {
                if http_get(metrics_port, "/readyz").is_some_and(|(s, _)| s != 200) {
                    not_ready += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            not_ready
        })
    };
    let status = deliver(port, &stream.records);
    let not_ready = reader.join().unwrap_or(usize::MAX);
    assert_eq!(status, 200, "{}", service.log_text());
    assert_eq!(sim.role_sets(), stream.expected);
    let stats = sim.stats();
    eprintln!(
        "429 storm: {} requests, {} answered 429",
        stats.total_requests, stats.rate_limited
    );
    assert!(stats.rate_limited > 0, "the storm happened");
    assert_eq!(
        not_ready,
        0,
        "429s turned /readyz to 503\n{}",
        service.log_text()
    );
    assert_eq!(
        service.metric("auth0_default_roles_mgmt_api_failing", ""),
        0.0
    );
    rt.block_on(running.shutdown());
}

#[test]
fn a_scope_granted_again_is_used_within_seconds_even_by_a_token_issued_without_it() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let write_scopes = || {
        ["create:role_members", "update:users", "update:roles"]
            .map(str::to_owned)
            .to_vec()
    };
    // The service starts while the write scope is missing: its token lacks it for good.
    sim.apply_control(&ControlRequest {
        denied_scopes: Some(write_scopes()),
        ..Default::default()
    });
    let dir = temp_dir("recovery-scope");
    let (service, port) = start_direct(&dir, &running, 1);
    service.wait_ready();
    let stream = generate::mixed(44, 80, 0);
    assert_eq!(
        deliver(port, &stream.records),
        503,
        "{}",
        service.log_text()
    );
    service.assert_not_ready_because("scope");
    let tokens_before_fix = sim.stats().calls_of("token");
    sim.apply_control(&ControlRequest {
        denied_scopes: Some(Vec::new()),
        ..Default::default()
    });
    let fixed_at = Instant::now();
    // Only a new token carries the scope: it is due 10 s into the refusal, not 5 minutes.
    assert!(
        wait_for(Duration::from_secs(60), || {
            deliver(port, &stream.records) == 200 && sim.role_sets() == stream.expected
        }),
        "the re-granted scope was not used within 60 s\n{}",
        service.log_text()
    );
    eprintln!(
        "scope used again {:.1} s after it was granted",
        fixed_at.elapsed().as_secs_f64()
    );
    let tokens = sim.stats().calls_of("token") - tokens_before_fix;
    assert!(tokens <= 3, "{tokens} token requests to pick the scope up");
    assert_nobody_failed(&service);
    rt.block_on(running.shutdown());
}
