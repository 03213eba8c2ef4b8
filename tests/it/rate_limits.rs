//! Rate limits learned from the tenant, through `ingest` in direct mode (the real binary) against
//! the simulated tenant: a storm of 429s without usable reset headers ends within seconds of the
//! tenant's limit coming back (no minute-long idle), and a log read's 429 holds log reads only,
//! never a role write.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use auth0_default_roles::generate::{self, Record};
use mgmt_sim::{RunningSimulator, SimConfig};
use test_harness::*;

const TOKEN: &str = "Bearer rate-limits-token";

/// `ingest` in direct mode on the demo policy, with `extra` sections.
fn start_direct(dir: &Path, running: &RunningSimulator, extra: &str) -> (Service, u16) {
    let (port, metrics) = (free_port(), free_port());
    let policy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        r#"[ingest]
mode = "direct"
listen = "127.0.0.1:{port}"
direct_deadline_seconds = 110

[auth0]
domain = "sim.auth0.local"
client_id = "sim-client"
base_url = "{base}"
batch_window_ms = 20

{extra}

[metrics]
listen = "127.0.0.1:{metrics}"

{policy}
"#,
        base = running.base_url,
    );
    let config: PathBuf = dir.join("ingest.toml");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    (service, port)
}

/// One log-stream delivery (JSON Lines): the HTTP status once every event is done.
fn deliver(port: u16, records: &[Record]) -> u16 {
    post_log_delivery(port, TOKEN, records)
}

#[test]
fn a_storm_without_reset_headers_resumes_within_seconds_of_the_limit_coming_back() {
    let rt = runtime();
    let (sim, running) = start_tenant(
        &rt,
        SimConfig {
            accept_any_user: true,
            garbage_rate_limit_headers: Some("NaN".to_owned()),
            ..SimConfig::default()
        },
        Vec::new(),
    );
    let dir = temp_dir("rate-limits-storm");
    let (service, port) = start_direct(&dir, &running, "");
    service.wait_ready();
    // The tenant grants nearly nothing, and its 429s carry no usable reset.
    sim.set_rate_limit(0.001, 1);
    let stream = generate::mixed(7, 12, 0);
    let delivery = std::thread::spawn(move || {
        let status = deliver(port, &stream.records);
        (status, Instant::now(), stream.expected)
    });
    // Long enough for a doubling backoff to reach half a minute.
    std::thread::sleep(Duration::from_secs(35));
    assert!(sim.stats().rate_limited >= 5, "the storm happened");
    sim.set_rate_limit(0.0, 10);
    let recovered = Instant::now();
    let (status, done, expected) = delivery.join().unwrap_or_else(|_| panic!("delivery"));
    let idle = done.saturating_duration_since(recovered);
    assert_eq!(status, 200, "{}", service.log_text());
    assert_eq!(sim.role_sets(), expected);
    // Without a reset, a class is held 8 s at most (plus jitter); then a success frees all.
    assert!(
        idle <= Duration::from_secs(13),
        "the events finished {idle:?} after the limit came back\n{}",
        service.log_text()
    );
    rt.block_on(running.shutdown());
}

#[test]
fn a_log_read_429_does_not_hold_role_writes() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("rate-limits-classes");
    // The Logs API answers 429 asking for 60 s, for every read.
    sim.rate_limit_log_reads_for(1_000_000, 60);
    let backstop = format!(
        "[backstop]\nstart = \"earliest\"\ncheckpoint_file = \"{}\"\nlag_seconds = 1\npoll_interval_seconds = 0.2\nrate_share = 0.5\n",
        dir.join("backstop.checkpoint").display()
    );
    let (service, port) = start_direct(&dir, &running, &backstop);
    service.wait_ready();
    assert!(
        wait_for(Duration::from_secs(20), || sim.stats().rate_limited >= 1),
        "the backstop read the logs\n{}",
        service.log_text()
    );
    let stream = generate::mixed(11, 20, 0);
    let started = Instant::now();
    let status = deliver(port, &stream.records);
    let took = started.elapsed();
    assert_eq!(status, 200, "{}", service.log_text());
    assert_eq!(sim.role_sets(), stream.expected);
    assert!(
        took < Duration::from_secs(20),
        "role writes waited {took:?} behind the Logs API's 429\n{}",
        service.log_text()
    );
    rt.block_on(running.shutdown());
}

#[test]
fn a_token_refresh_during_a_slow_token_endpoint_does_not_stall_calls_holding_a_valid_token() {
    use auth0_default_roles::config::Secret;
    use auth0_default_roles::metrics::Metrics;
    use auth0_default_roles::mgmt::{ClientSettings, MgmtClient, RetrySettings};
    use std::sync::Arc;

    let rt = runtime();
    // 8 s tokens: refreshed 2 s ahead of expiry.
    let (sim, running) = start_tenant(
        &rt,
        SimConfig {
            accept_any_user: true,
            token_expires_in: 8,
            ..SimConfig::default()
        },
        Vec::new(),
    );
    let client = MgmtClient::new(
        ClientSettings {
            base_url: running.base_url.clone(),
            audience: sim.audience(),
            client_id: sim.config().client_id,
            client_secret: Secret::new(sim.config().client_secret),
            requests_per_second: 100.0,
            burst: 10,
            auto_share: None,
            timeout: Duration::from_secs(10),
            retry: RetrySettings::default(),
        },
        Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}"))),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        client
            .get_user("auth0|slow-token")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The token endpoint now takes 4 s to answer.
        sim.set_token_latency_ms(4000);
        tokio::time::sleep(Duration::from_millis(6300)).await;
        // Past the refresh point, 1.7 s before expiry: the call goes on with the valid token.
        let started = Instant::now();
        client
            .get_user("auth0|slow-token")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "a call holding a valid token waited {took:?} for the refresh"
        );
        // The refresh lands in the background; the next token serves the next calls.
        tokio::time::sleep(Duration::from_millis(4500)).await;
        client
            .get_user("auth0|slow-token")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
    let stats = sim.stats();
    assert_eq!(stats.calls_of("token"), 2, "{stats:?}");
    assert_eq!(stats.unauthorized, 0, "no call used an expired token");
    rt.block_on(running.shutdown());
}

#[test]
fn replay_against_a_closed_port_exits_1_within_its_timeout_naming_the_host() {
    let dir = temp_dir("rate-limits-unreachable");
    let port = free_port();
    let policy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
    let config = dir.join("replay.toml");
    std::fs::write(
        &config,
        format!("[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"http://127.0.0.1:{port}\"\n\n{policy}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let events = dir.join("events.jsonl");
    let stream = generate::mixed(3, 4, 0);
    let mut body = Vec::new();
    for r in &stream.records {
        body.extend_from_slice(&r.value);
        body.push(b'\n');
    }
    std::fs::write(&events, body).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .args(["--timeout", "5"])
        .arg(&events)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|child| {
            let pid = child.id();
            // A hang must not hang the test run: the child is killed after a minute.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(60));
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
            });
            child.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("replay: {e}"));
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(30), "{took:?}\n{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("did not answer"),
        "{stderr}"
    );
}
