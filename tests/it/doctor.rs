//! `doctor` and `setup log-stream` against the simulated tenant over HTTP (the real binary):
//! a ready tenant passes with an unrelated paused stream, a deleted role, a missing scope, a
//! suspended stream and an unreachable broker each give exit 2 naming the problem; `setup`
//! creates one stream with exactly the policy's categories and the webhook token, and a second
//! run changes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mgmt_sim::{SimConfig, Simulator};
use serde_json::{json, Value};

use test_harness::{free_port, runtime, start_tenant, temp_dir, Moto};

const WEBHOOK_TOKEN: &str = "Bearer doctor-test-token-5f2c";
const DEMO_CATEGORIES: [&str; 3] = ["auth.login.success", "auth.signup.success", "user.success"];

/// A config for the simulator at `sim_url`: `[ingest]` in direct mode and `policy`.
fn write_config(dir: &Path, name: &str, sim_url: &str, extra: &str, policy: &str) -> PathBuf {
    let text = format!(
        r#"[auth0]
domain = "sim.auth0.local"
client_id = "sim-client"
base_url = "{sim_url}"

[ingest]
mode = "direct"
listen = "127.0.0.1:{port}"

{extra}

[metrics]
listen = "127.0.0.1:{metrics}"

{policy}
"#,
        port = free_port(),
        metrics = free_port(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn demo_policy() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn run(args: &[&str], config: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(args)
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .env("AUTH0_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `doctor`: its exit code and stdout.
fn doctor(config: &Path) -> (Option<i32>, String) {
    let out = run(&["doctor"], config, &[]);
    (out.status.code(), text(&out.stdout) + &text(&out.stderr))
}

fn setup(config: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    setup_to("https://roles.example.com/auth0/logs", config, extra)
}

fn setup_to(url: &str, config: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["--url", url];
    args.extend_from_slice(extra);
    let out = run(&["setup", "log-stream"], config, &args);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The FAIL lines of a checklist.
fn failures(report: &str) -> Vec<&str> {
    report.lines().filter(|l| l.starts_with("FAIL")).collect()
}

fn categories(stream: &Value) -> Vec<String> {
    let mut names: Vec<String> = stream["filters"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|f| f["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A stream of another purpose (a SIEM export someone paused): doctor must not judge it.
fn add_unrelated_paused_stream(sim: &Simulator) {
    sim.add_log_stream(&json!({
        "name": "siem-export",
        "type": "datadog",
        "status": "paused",
        "sink": {"datadogApiKey": "dd", "datadogRegion": "eu"},
        "filters": [{"type": "category", "name": "auth.login.fail"}],
    }))
    .unwrap_or_else(|e| panic!("{e:?}"));
}

#[test]
fn setup_twice_creates_one_stream_with_exactly_the_policys_categories_and_the_token() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("setup-twice");
    let config = write_config(&dir, "setup", &running.base_url, "", &demo_policy());

    // A dry run creates nothing and never shows the token.
    let (code, stdout, stderr) = setup(&config, &["--dry-run"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("would create"), "{stdout}");
    assert!(!stdout.contains("doctor-test-token") && !stderr.contains("doctor-test-token"));
    assert!(sim.log_streams().is_empty());

    let (code, stdout, stderr) = setup(&config, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("created the log stream \"auth0-default-roles\""),
        "{stdout}"
    );
    assert!(!stdout.contains("doctor-test-token") && !stderr.contains("doctor-test-token"));
    let (code, again, stderr) = setup(&config, &[]);
    assert_eq!(code, Some(0), "{again}{stderr}");
    assert!(again.contains("is as it should be"), "{again}");

    let streams = sim.log_streams();
    assert_eq!(streams.len(), 1, "{streams:?}");
    let stream = &streams[0];
    assert_eq!(stream["name"], "auth0-default-roles");
    assert_eq!(stream["type"], "http");
    assert_eq!(stream["status"], "active");
    assert_eq!(categories(stream), DEMO_CATEGORIES);
    assert_eq!(stream["filters"].as_array().map(Vec::len), Some(3));
    assert_eq!(stream["sink"]["httpAuthorization"], WEBHOOK_TOKEN);
    assert_eq!(stream["sink"]["httpContentFormat"], "JSONLINES");
    assert_eq!(
        stream["sink"]["httpEndpoint"],
        "https://roles.example.com/auth0/logs"
    );
    let stats = sim.stats();
    assert_eq!(stats.calls_of("create_log_stream"), 1);
    assert_eq!(stats.calls_of("update_log_stream"), 0);

    // Someone pauses it and the receiver moves: the next run changes exactly those, and says so.
    let id = stream["id"].as_str().unwrap_or_default().to_owned();
    assert!(sim.set_log_stream_status(&id, "paused"));
    let (code, changed, stderr) = setup_to("https://roles.example.com/v2", &config, &[]);
    assert_eq!(code, Some(0), "{changed}{stderr}");
    assert!(changed.contains("status: paused → active"), "{changed}");
    assert!(changed.contains("sink.httpEndpoint: https://roles.example.com/auth0/logs → https://roles.example.com/v2"), "{changed}");
    assert!(!changed.contains("filters"), "{changed}");
    assert!(!changed.contains("httpAuthorization"), "{changed}");
    let streams = sim.log_streams();
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0]["status"], "active");
    assert_eq!(sim.stats().calls_of("update_log_stream"), 1);
    drop(running);
}

#[test]
fn a_policy_without_email_verified_triggers_asks_for_two_categories() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("setup-two");
    let policy = "[policy]\nevents = [\"signup\", \"first_login\"]\n\n[[policy.rules]]\nname = \"everyone\"\nassign = [\"Viewer\"]\n";
    let config = write_config(&dir, "two", &running.base_url, "", policy);
    let (code, stdout, stderr) = setup(&config, &["--name", "roles-two"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let streams = sim.log_streams();
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0]["name"], "roles-two");
    assert_eq!(
        categories(&streams[0]),
        ["auth.login.success", "auth.signup.success"]
    );
    drop(running);
}

#[test]
fn setup_eventbridge_creates_the_partner_source_and_a_missing_create_scope_exits_2() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("setup-eb");
    let config = write_config(&dir, "eb", &running.base_url, "", &demo_policy());
    let eb = [
        "--eventbridge",
        "--aws-account-id",
        "123456789012",
        "--aws-region",
        "eu-west-1",
    ];
    let out = run(&["setup", "log-stream"], &config, &eb);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("aws.partner/auth0.com/"),
        "{}",
        text(&out.stdout)
    );
    let streams = sim.log_streams();
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0]["type"], "eventbridge");
    assert_eq!(categories(&streams[0]), DEMO_CATEGORIES);

    sim.apply_control(
        &serde_json::from_value(json!({"denied_scopes": ["create:log_streams"]}))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let (code, stdout, stderr) = setup(&config, &["--name", "another"]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("create:log_streams"), "{stderr}");
    assert_eq!(sim.log_streams().len(), 1);
    drop(running);
}

#[test]
fn doctor_passes_a_ready_tenant_with_an_unrelated_paused_stream() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("doctor-ready");
    let config = write_config(&dir, "ready", &running.base_url, "", &demo_policy());
    add_unrelated_paused_stream(&sim);
    let (code, stdout, stderr) = setup(&config, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    let (code, report) = doctor(&config);
    assert_eq!(code, Some(0), "{report}");
    assert!(failures(&report).is_empty(), "{report}");
    for expected in [
        "ok   auth0: the client secret works",
        "ok   auth0: the token's scopes cover this config (read:roles create:role_members read:users)",
        "ok   policy roles exist in the tenant: CUSTOMER, INTERNAL, PARTNER, Viewer",
        "is active and delivers auth.login.success, auth.signup.success, user.success",
        "not judged: \"siem-export\" (datadog, paused)",
        "ok   ingest: the webhook token is set",
        "skip ledger: no ledger configured",
        "result: the service can run",
    ] {
        assert!(report.contains(expected), "{expected}\n{report}");
    }
    drop(running);
}

#[test]
fn doctor_names_a_deleted_role_a_missing_scope_and_its_suspended_stream() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("doctor-faults");
    let config = write_config(&dir, "faults", &running.base_url, "", &demo_policy());
    add_unrelated_paused_stream(&sim);
    let (code, stdout, stderr) = setup(&config, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, report) = doctor(&config);
    assert_eq!(code, Some(0), "{report}");

    // A deleted policy role.
    assert!(sim.delete_role("PARTNER"));
    let (code, report) = doctor(&config);
    assert_eq!(code, Some(2), "{report}");
    assert_eq!(
        failures(&report),
        ["FAIL policy roles missing in the tenant: PARTNER"],
        "{report}"
    );
    sim.add_role(mgmt_sim::SeedRole::named("PARTNER"));

    // A scope the config needs, taken away.
    let deny = |scopes: Vec<&str>| {
        sim.apply_control(
            &serde_json::from_value(json!({ "denied_scopes": scopes }))
                .unwrap_or_else(|e| panic!("{e}")),
        )
    };
    deny(vec!["read:users"]);
    let (code, report) = doctor(&config);
    assert_eq!(code, Some(2), "{report}");
    assert_eq!(
        failures(&report),
        ["FAIL auth0: the token lacks scopes this config needs: read:users"],
        "{report}"
    );
    assert!(report.contains("fix: grant read:users"), "{report}");
    deny(vec![]);

    // Auth0 suspends the service's stream; the other stream stays unjudged.
    let ours = sim
        .log_streams()
        .into_iter()
        .find(|s| s["name"] == "auth0-default-roles")
        .and_then(|s| s["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no stream"));
    assert!(sim.set_log_stream_status(&ours, "suspended"));
    let (code, report) = doctor(&config);
    assert_eq!(code, Some(2), "{report}");
    let fails = failures(&report);
    assert_eq!(fails.len(), 1, "{report}");
    assert!(
        fails[0].starts_with(&format!(
            "FAIL log stream \"auth0-default-roles\" ({ours}, http) is suspended"
        )),
        "{report}"
    );
    assert!(report.contains("not judged: \"siem-export\""), "{report}");

    // `setup` resumes it, and doctor is content again.
    let (code, stdout, _) = setup(&config, &[]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("status: suspended → active"), "{stdout}");
    let (code, report) = doctor(&config);
    assert_eq!(code, Some(0), "{report}");
    drop(running);
}

#[test]
fn doctor_reports_missing_categories_and_a_masked_email() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("doctor-filters");
    let config = write_config(&dir, "filters", &running.base_url, "", &demo_policy());
    sim.add_log_stream(&json!({
        "name": "auth0-default-roles",
        "type": "http",
        "sink": {"httpEndpoint": "https://roles.example.com/x", "httpAuthorization": WEBHOOK_TOKEN},
        "filters": [{"type": "category", "name": "auth.signup.success"}],
        "pii_config": {"log_fields": ["email"], "method": "hash"},
    }))
    .unwrap_or_else(|e| panic!("{e:?}"));
    let (code, report) = doctor(&config);
    assert_eq!(code, Some(2), "{report}");
    let fails = failures(&report);
    assert_eq!(fails.len(), 1, "{report}");
    assert!(
        fails[0].ends_with("does not deliver the categories the policy's triggers need: auth.login.success, user.success"),
        "{report}"
    );
    assert!(
        report.contains("obscures fields the policy's email_domain reads: email (hash)"),
        "{report}"
    );
    drop(running);
}

#[test]
fn doctor_reports_an_unreachable_broker_within_a_bounded_wait() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("doctor-kafka");
    // A closed loopback port: bound, then released.
    let port = free_port();
    let kafka = format!(
        "[source]\ntype = \"kafka\"\n\n[kafka]\nbrokers = \"127.0.0.1:{port}\"\ntopic = \"auth0-logs\"\ngroup_id = \"roles\"\n"
    );
    let config = write_config(&dir, "kafka", &running.base_url, &kafka, &demo_policy());
    let (code, stdout, stderr) = setup(&config, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let started = Instant::now();
    let (code, report) = doctor(&config);
    let took = started.elapsed();
    assert_eq!(code, Some(2), "{report}");
    let fails = failures(&report);
    assert_eq!(fails.len(), 1, "{report}");
    assert!(
        fails[0].starts_with(&format!("FAIL kafka: brokers 127.0.0.1:{port} unreachable")),
        "{report}"
    );
    // Bounded: the metadata request gives up after 5 s (generous margin for a loaded machine).
    assert!(took < Duration::from_secs(60), "{took:?}");
    drop((sim, running));
}

#[test]
fn doctor_reads_the_sqs_queue_and_names_one_that_does_not_exist() {
    let rt = runtime();
    let (_sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("doctor-sqs");
    let moto = Moto::start(&dir);
    let sqs = moto.sqs_client();
    let url = rt
        .block_on(sqs.create_queue().queue_name("doctor-logs").send())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .queue_url
        .unwrap_or_default();
    rt.block_on(sqs.send_message().queue_url(&url).message_body("{}").send())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let eb = [
        "--eventbridge",
        "--aws-account-id",
        "123456789012",
        "--aws-region",
        "us-east-1",
    ];
    let endpoint = moto.endpoint();
    let doctor_sqs = |queue: &str| {
        let source = format!("[source]\ntype = \"sqs\"\n\n[sqs]\nqueue_url = \"{queue}\"\n");
        let config = write_config(&dir, "sqs", &running.base_url, &source, &demo_policy());
        let out = run(&["setup", "log-stream"], &config, &eb);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let out = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
            .args(["doctor", "--config"])
            .arg(&config)
            .env("AUTH0_CLIENT_SECRET", "sim-secret")
            .env("AUTH0_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
            .env("RUST_LOG", "warn")
            .envs([
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ENDPOINT_URL_SQS", endpoint.as_str()),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("AWS_CONFIG_FILE", "/dev/null"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        (out.status.code(), text(&out.stdout) + &text(&out.stderr))
    };
    let (code, report) = doctor_sqs(&url);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains(&format!(
            "ok   sqs: queue {url} readable (ApproximateNumberOfMessages 1)"
        )),
        "{report}"
    );
    let missing = url.replace("doctor-logs", "no-such-queue");
    let (code, report) = doctor_sqs(&missing);
    assert_eq!(code, Some(2), "{report}");
    let fails = failures(&report);
    assert_eq!(fails.len(), 1, "{report}");
    assert!(
        fails[0].starts_with(&format!("FAIL sqs: queue {missing}")),
        "{report}"
    );
    drop(running);
}

#[test]
fn doctor_finds_the_brokers_topic_and_group_and_names_a_missing_dead_letter_topic() {
    let rt = runtime();
    let (_sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("doctor-kafka-ok");
    let broker = test_harness::Broker::start(&dir);
    broker.create_topic("doctor-logs", 3);
    let doctor_kafka = |dlq: &str| {
        let kafka = format!(
            "[source]\ntype = \"kafka\"\n\n[kafka]\nbrokers = \"{}\"\ntopic = \"doctor-logs\"\ngroup_id = \"doctor-group\"\n{dlq}\n",
            broker.bootstrap()
        );
        let config = write_config(&dir, "kafka-ok", &running.base_url, &kafka, &demo_policy());
        let (code, stdout, stderr) = setup(&config, &[]);
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        doctor(&config)
    };
    let (code, report) = doctor_kafka("");
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("ok   kafka: topic doctor-logs has 3 partitions"),
        "{report}"
    );
    assert!(
        report.contains("ok   kafka: group doctor-group reachable"),
        "{report}"
    );

    let (code, report) = doctor_kafka("dead_letter_topic = \"doctor-dead\"");
    assert_eq!(code, Some(2), "{report}");
    let fails = failures(&report);
    assert_eq!(fails.len(), 1, "{report}");
    assert!(
        fails[0].starts_with("FAIL kafka: dead-letter topic doctor-dead"),
        "{report}"
    );
    drop(running);
}

#[test]
fn the_stream_named_in_the_config_is_the_one_setup_creates_and_doctor_judges() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("doctor-named");
    let config = write_config(&dir, "named", &running.base_url, "", &demo_policy());
    let body = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    let body = body.replacen(
        "client_id = \"sim-client\"\n",
        "client_id = \"sim-client\"\nlog_stream = \"roles-feed\"\n",
        1,
    );
    std::fs::write(&config, body).unwrap_or_else(|e| panic!("{e}"));
    // Before `setup`, the named stream does not exist: a problem, named.
    let (code, report) = doctor(&config);
    assert_eq!(code, Some(2), "{report}");
    assert!(report.contains("roles-feed"), "{report}");
    let (code, stdout, stderr) = setup(&config, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let names: Vec<String> = sim
        .log_streams()
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, ["roles-feed"], "setup used the configured name");
    let (code, report) = doctor(&config);
    assert_eq!(code, Some(0), "{report}");
    // The flag still wins over the config.
    let out = run(&["doctor", "--log-stream", "other-stream"], &config, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("other-stream"));
}

/// A prioritized stream (`isPriority: true`) carries security events only: Auth0 forces its
/// filters and ignores changes. Under the service's name it is a blocker (exit 2, named, with the
/// fix: a normal stream); a prioritized stream of another purpose is not judged.
#[test]
fn a_prioritized_stream_under_the_services_name_is_a_blocker_and_others_are_not_judged() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("doctor-priority");
    let config = write_config(&dir, "priority", &running.base_url, "", &demo_policy());
    for name in ["auth0-default-roles", "siem-priority"] {
        sim.add_log_stream(&json!({
            "name": name,
            "type": "http",
            "isPriority": true,
            "sink": {"httpEndpoint": "https://roles.example.com/auth0/logs", "httpContentType": "application/json", "httpContentFormat": "JSONLINES", "httpAuthorization": WEBHOOK_TOKEN},
            "filters": DEMO_CATEGORIES.iter().map(|c| json!({"type": "category", "name": c})).collect::<Vec<_>>(),
        }))
        .unwrap_or_else(|e| panic!("{e:?}"));
    }
    let streams = sim.log_streams();
    assert!(
        streams.iter().all(|s| categories(s) == ["security"]),
        "the tenant forces a prioritized stream's filters: {streams:?}"
    );
    let (code, report) = doctor(&config);
    assert_eq!(code, Some(2), "{report}");
    let failed = failures(&report);
    assert!(
        failed
            .iter()
            .any(|l| l.contains("\"auth0-default-roles\"") && l.contains("prioritized")),
        "{report}"
    );
    assert!(report.contains("create a normal stream"), "{report}");
    assert!(
        !failed.iter().any(|l| l.contains("siem-priority")),
        "a prioritized stream of another purpose is not judged: {report}"
    );
    drop(running);
}

/// `setup log-stream --start-from` creates a stream that also delivers the recent past (Auth0's
/// `startFrom`, which the tenant accepts at creation), reads a change back, and refuses to
/// "change" a prioritized stream whose filters the tenant would ignore.
#[test]
fn setup_starts_a_new_stream_from_a_point_in_time_and_refuses_a_prioritized_one() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("setup-start-from");
    let config = write_config(&dir, "start-from", &running.base_url, "", &demo_policy());
    let (code, stdout, stderr) = setup(&config, &["--start-from", "2026-12-01T00:00:00Z"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("created the log stream"), "{stdout}");
    // A change is read back.
    let (code, stdout, stderr) = setup_to("https://roles.example.com/v2", &config, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("read back: the tenant kept every change"),
        "{stdout}"
    );

    let config = write_config(&dir, "prioritized", &running.base_url, "", &demo_policy());
    sim.add_log_stream(&json!({
        "name": "prioritized-roles",
        "type": "http",
        "isPriority": true,
        "sink": {"httpEndpoint": "https://roles.example.com/auth0/logs", "httpContentType": "application/json", "httpContentFormat": "JSONLINES", "httpAuthorization": WEBHOOK_TOKEN},
    }))
    .unwrap_or_else(|e| panic!("{e:?}"));
    let (code, stdout, stderr) = setup(&config, &["--name", "prioritized-roles"]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        (stdout.clone() + &stderr).contains("prioritized stream (isPriority)"),
        "{stdout}{stderr}"
    );
    drop(running);
}

#[test]
fn setup_whose_creation_answer_is_lost_creates_one_stream() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("setup-lost-answer");
    let config = write_config(&dir, "setup", &running.base_url, "", &demo_policy());
    // The tenant creates the stream, and the connection breaks before its answer arrives.
    sim.lose_log_stream_creation_answers(1);
    let (code, stdout, stderr) = setup(&config, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("created the log stream \"auth0-default-roles\""),
        "{stdout}"
    );
    let streams = sim.log_streams();
    assert_eq!(
        streams.len(),
        1,
        "a retried creation made a second stream: {streams:?}"
    );
    assert_eq!(sim.stats().calls_of("create_log_stream"), 1);
    assert_eq!(categories(&streams[0]), DEMO_CATEGORIES);
    // The next run finds it as it should be.
    let (code, again, stderr) = setup(&config, &[]);
    assert_eq!(code, Some(0), "{again}{stderr}");
    assert!(again.contains("is as it should be"), "{again}");
    drop(running);
}

/// A checklist line of `doctor`'s report.
fn is_checklist(line: &str) -> bool {
    ["ok ", "OK ", "FAIL", "WARN", "warn ", "skip", "SKIP", "  "]
        .iter()
        .any(|p| line.starts_with(p))
}

#[test]
fn doctor_with_the_brokers_down_prints_its_checklist_and_few_lines_besides() {
    let rt = runtime();
    let (sim, running) = start_tenant(&rt, SimConfig::default(), Vec::new());
    let dir = temp_dir("doctor-quiet");
    // A closed loopback port: bound, then released.
    let port = free_port();
    let kafka = format!(
        "[source]\ntype = \"kafka\"\n\n[kafka]\nbrokers = \"127.0.0.1:{port}\"\ntopic = \"auth0-logs\"\ngroup_id = \"roles\"\n"
    );
    let config = write_config(&dir, "kafka", &running.base_url, &kafka, &demo_policy());
    let (code, stdout, stderr) = setup(&config, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    // As a newcomer runs it: no RUST_LOG.
    let out = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(["doctor", "--config"])
        .arg(&config)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .env("AUTH0_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let fails = failures(&stdout);
    assert_eq!(fails.len(), 1, "{stdout}");
    assert!(
        fails[0].starts_with(&format!("FAIL kafka: brokers 127.0.0.1:{port} unreachable")),
        "{stdout}"
    );
    let besides: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| !l.trim().is_empty() && !is_checklist(l))
        .collect();
    assert!(
        besides.len() <= 4,
        "{} lines besides the checklist:\n{}",
        besides.len(),
        besides.join("\n")
    );
    drop((sim, running));
}

#[test]
fn setup_errors_print_their_whole_cause_chain_and_exit_2() {
    // No tenant is reached: each error stops `setup` before its first call, and the reporter
    // at the edge prints it with every cause it keeps, on one line.
    let dir = temp_dir("setup-chain");
    let config = write_config(&dir, "chain", "http://127.0.0.1:9", "", &demo_policy());
    let (code, stdout, stderr) = setup_to("not a url", &config, &[]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("error: --url not a url is not a URL: relative URL without a base"),
        "{stderr}"
    );
    // The client secret's file is a directory (and no variable overrides it): the file
    // system's words end the line.
    let secret_dir = dir.join("secret-dir");
    std::fs::create_dir_all(&secret_dir).unwrap_or_else(|e| panic!("{e}"));
    let edited = std::fs::read_to_string(&config)
        .unwrap_or_else(|e| panic!("{e}"))
        .replace(
            "client_id = \"sim-client\"",
            &format!(
                "client_id = \"sim-client\"\nclient_secret_file = \"{}\"",
                secret_dir.display()
            ),
        );
    std::fs::write(&config, edited).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args([
            "setup",
            "log-stream",
            "--url",
            "https://roles.example.com/auth0/logs",
        ])
        .arg("--config")
        .arg(&config)
        .env_remove("AUTH0_CLIENT_SECRET")
        .env("AUTH0_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!(
        "error: cannot read auth0.client_secret_file {}: Is a directory",
        secret_dir.display()
    );
    assert!(stderr.contains(&expected), "{expected}\n{stderr}");
}
