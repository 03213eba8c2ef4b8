//! The tenant's Logs API as the source of `run` and as the backstop behind a webhook stream,
//! with the real binary against the simulator over HTTP: every user gets their roles, a restart
//! resumes from the checkpoint without repeats, a 429 storm, 5xx answers and a kill lose
//! nothing, a second reader is refused, a checkpoint past the retention is reported, the
//! backstop recovers exactly what the stream dropped, and a suspended stream shows in the gauge.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use auth0_default_roles::event::{decode, Selection};
use auth0_default_roles::generate::{self, Record};
use test_harness::*;

pub(crate) const TOKEN: &str = "Bearer logs-test-token";

/// The log object of a generated record (`{log_id, data}` or bare), as the Logs API holds it.
pub(crate) fn log_of(record: &Record) -> Option<Value> {
    let value: Value = serde_json::from_slice(&record.value).ok()?;
    match value.get("data") {
        Some(data) if data.is_object() => Some(data.clone()),
        _ => Some(value),
    }
}

/// The stream's logs, each `log_id` once, in order (the tenant keeps one copy of each).
pub(crate) fn tenant_logs(stream: &generate::Stream) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    stream
        .records
        .iter()
        .filter_map(log_of)
        .filter(|log| {
            log.get("log_id")
                .and_then(Value::as_str)
                .is_some_and(|id| seen.insert(id.to_owned()))
        })
        .collect()
}

pub(crate) fn log_id(log: &Value) -> String {
    log.get("log_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub(crate) fn user(log: &Value) -> String {
    log.get("user_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Whether the demo policy acts on this log (`ss`, first `s`, `sv`).
pub(crate) fn eligible(log: &Value) -> bool {
    let bytes = serde_json::to_vec(log).unwrap_or_default();
    decode(&bytes)
        .first()
        .and_then(|d| d.as_ref().ok())
        .is_some_and(|e| matches!(e.selection(), Selection::Eligible(_)))
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub(crate) fn demo_policy() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn auth0_section(base_url: &str) -> String {
    format!(
        "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{base_url}\"\nrequests_per_second = 1000\nburst = 200\nbatch_window_ms = 20\n"
    )
}

/// A `run` config with the `auth0_logs` source.
pub(crate) fn source_config(dir: &Path, base_url: &str, metrics: u16, extra: &str) -> PathBuf {
    let text = format!(
        "{}\n[source]\ntype = \"auth0_logs\"\n\n[auth0_logs]\nstart = \"earliest\"\ncheckpoint_file = \"{}\"\npoll_interval_seconds = 0.2\n{extra}\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{}\n",
        auth0_section(base_url),
        dir.join("logs.checkpoint").display(),
        demo_policy()
    );
    let path = dir.join("auth0-logs.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

pub(crate) fn checkpoint(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("logs.checkpoint")).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    value
        .get("log_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Starts the service and waits until its checkpoint file names the last of `logs`.
pub(crate) fn start_until_checkpoint(
    config: &Path,
    metrics: u16,
    dir: &Path,
    logs: &[Value],
) -> Service {
    let service = Service::start(config, metrics, dir.join("run-1.log"));
    service.wait_ready();
    let last = logs.last().map(log_id).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(60), || checkpoint(dir).as_deref()
            == Some(last.as_str())),
        "the checkpoint never reached the last log: {:?}\n{}",
        checkpoint(dir),
        service.log_text()
    );
    service
}

/// A split index near the middle where a user's records do not straddle.
pub(crate) fn user_boundary(logs: &[Value]) -> usize {
    let mut at = logs.len() / 2;
    while at < logs.len() && user(&logs[at]) == user(&logs[at - 1]) {
        at += 1;
    }
    at
}

#[test]
fn the_source_gives_every_user_their_roles_and_resumes_from_its_checkpoint_without_repeats() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("logs-source");
    let stream = generate::mixed(31, 500, 0);
    let logs = tenant_logs(&stream);
    let split = user_boundary(&logs);
    let (first, second) = logs.split_at(split);
    sim.append_logs(first.to_vec());
    let metrics = free_port();
    let config = source_config(&dir, &running.base_url, metrics, "take = 40");
    let mut service = start_until_checkpoint(&config, metrics, &dir, first);
    let received = |s: &Service| {
        s.metric(
            "auth0_default_roles_events_received_total",
            "source=\"auth0_logs\"",
        ) as usize
    };
    assert_eq!(received(&service), first.len(), "each log once");
    service.signal("TERM");
    assert!(service.wait_exit(Duration::from_secs(30)).is_some());
    let before = sim.stats();

    // New logs while the service is down; the restart reads only those.
    sim.append_logs(second.to_vec());
    let service = Service::start(&config, metrics, dir.join("run-2.log"));
    service.wait_ready();
    assert!(
        wait_for(Duration::from_secs(60), || sim.role_sets()
            == stream.expected),
        "roles differ after the restart\n{}",
        service.log_text()
    );
    let last = log_id(&logs[logs.len() - 1]);
    assert!(wait_for(Duration::from_secs(30), || checkpoint(&dir)
        .as_deref()
        == Some(last.as_str())));
    assert_eq!(
        received(&service),
        second.len(),
        "the restart repeated nothing before its checkpoint"
    );
    let after = sim.stats();
    assert_eq!(
        after.duplicate_assignments, 0,
        "no role was asked for twice"
    );
    // Calls: one page per 40 logs (the last short page included), the empty polls while
    // caught up, and the start's oldest-log read (first run only) and retention check.
    let pages_needed = second.len().div_ceil(40) as u64;
    let log_calls = after.calls_of("get_logs") - before.calls_of("get_logs");
    assert!(
        log_calls >= pages_needed,
        "{log_calls} calls for {pages_needed} pages"
    );
    assert_tenant_holds_exactly(&sim, &stream.expected, &[&service]);
    rt.block_on(running.shutdown());
}

#[test]
fn a_429_storm_5xx_answers_and_a_kill_on_the_logs_endpoint_lose_nothing() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("logs-faults");
    let stream = generate::mixed(33, 600, 0);
    let logs = tenant_logs(&stream);
    sim.append_logs(logs.clone());
    sim.rate_limit_log_reads(12);
    sim.set_logs_error_rate(0.3);
    let metrics = free_port();
    let config = source_config(&dir, &running.base_url, metrics, "take = 25");
    let mut service = Service::start(&config, metrics, dir.join("run-1.log"));
    // Killed (no drain, no goodbye) once it made some progress.
    assert!(
        wait_for(Duration::from_secs(60), || checkpoint(&dir).is_some()),
        "no checkpoint\n{}",
        service.log_text()
    );
    service.signal("KILL");
    assert!(service.wait_exit(Duration::from_secs(10)).is_some());
    let at_kill = checkpoint(&dir);
    assert_ne!(
        at_kill.as_deref(),
        Some(log_id(&logs[logs.len() - 1]).as_str())
    );
    let service = Service::start(&config, metrics, dir.join("run-2.log"));
    assert!(
        wait_for(Duration::from_secs(120), || sim.role_sets()
            == stream.expected),
        "roles differ\n{}",
        service.log_text()
    );
    let stats = sim.stats();
    assert!(stats.rate_limited >= 12, "{stats:?}");
    assert!(stats.faults_served > 0, "{stats:?}");
    assert_tenant_holds_exactly(&sim, &stream.expected, &[&service]);
    rt.block_on(running.shutdown());
}

#[test]
fn a_second_reader_on_the_same_checkpoint_is_refused_and_a_checkpoint_past_retention_is_reported() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("logs-lock");
    let stream = generate::mixed(35, 120, 0);
    let logs = tenant_logs(&stream);
    sim.append_logs(logs.clone());
    // The checkpoint points at the fifth log; the first twenty are gone (retention).
    std::fs::write(
        dir.join("logs.checkpoint"),
        json!({"log_id": log_id(&logs[4])}).to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sim.purge_logs_before(&log_id(&logs[20])), 20);
    let metrics = free_port();
    let config = source_config(&dir, &running.base_url, metrics, "");
    let service = Service::start(&config, metrics, dir.join("run-1.log"));
    service.wait_ready();
    assert!(
        wait_for(Duration::from_secs(30), || service.metric(
            "auth0_default_roles_auth0_logs_retention_gaps_total",
            "reader=\"source\""
        ) == 1.0),
        "{}",
        service.log_text()
    );
    assert!(service
        .log_text()
        .contains("older than the tenant's log retention"));

    let other_metrics = free_port();
    let other_config = dir.join("second.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap_or_default()
        .replace(&format!(":{metrics}\""), &format!(":{other_metrics}\""));
    std::fs::write(&other_config, text).unwrap_or_else(|e| panic!("{e}"));
    let mut second = Service::start(&other_config, other_metrics, dir.join("run-2.log"));
    let status = second
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the second reader kept running\n{}", second.log_text()));
    assert_eq!(status.code(), Some(2), "{}", second.log_text());
    assert!(
        second
            .log_text()
            .contains("another reader holds the checkpoint"),
        "{}",
        second.log_text()
    );
    rt.block_on(running.shutdown());
}

#[test]
fn a_backstop_behind_a_webhook_that_drops_a_quarter_of_the_eligible_records_recovers_exactly_those()
{
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("logs-backstop");
    let stream_id = sim
        .add_log_stream(&json!({
            "name": "auth0-default-roles",
            "type": "http",
            "sink": {"httpEndpoint": "https://roles.example/auth0/logs", "httpAuthorization": TOKEN, "httpContentFormat": "JSONLINES"},
        }))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let stream = generate::mixed(37, 500, 0);
    let logs = tenant_logs(&stream);
    // Every fourth eligible log never reaches the webhook (every copy of it).
    let mut dropped = BTreeSet::new();
    for (i, log) in logs.iter().filter(|l| eligible(l)).enumerate() {
        if i % 4 == 0 {
            dropped.insert(log_id(log));
        }
    }
    let (port, metrics) = (free_port(), free_port());
    let text = format!(
        "[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:{port}\"\n\n{}\n[backstop]\nstart = \"earliest\"\ncheckpoint_file = \"{}\"\nlag_seconds = 1\npoll_interval_seconds = 0.2\nrate_share = 0.5\nlog_stream_id = \"{stream_id}\"\nlog_stream_check_seconds = 0.3\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{}\n",
        auth0_section(&running.base_url),
        dir.join("backstop.checkpoint").display(),
        demo_policy()
    );
    let config = dir.join("ingest-backstop.toml");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    let gauge = |s: &Service| {
        s.metric(
            "auth0_default_roles_log_stream_active",
            &format!("stream=\"{stream_id}\""),
        )
    };
    assert_eq!(gauge(&service), 1.0, "{}", service.log_text());

    // The stream delivers what it does not drop, in JSON Lines batches of 50 records.
    let delivered: Vec<&Record> = stream
        .records
        .iter()
        .filter(|r| log_of(r).is_some_and(|l| !dropped.contains(&log_id(&l))))
        .collect();
    for batch in delivered.chunks(50) {
        let mut body = Vec::new();
        for r in batch {
            body.extend_from_slice(&r.value);
            body.push(b'\n');
        }
        let answer = http_post(
            port,
            "/auth0/logs",
            &[
                ("Authorization", TOKEN),
                ("Content-Type", "application/json"),
            ],
            &body,
        );
        assert_eq!(
            answer.as_ref().map(|(s, _)| *s),
            Some(200),
            "{answer:?}\n{}",
            service.log_text()
        );
    }
    let assign_calls =
        |s: &mgmt_sim::SimStats| s.calls_of("assign_user_roles") + s.calls_of("assign_role_users");
    let before = sim.stats();
    // The tenant logged every event, the dropped ones too, as they happened (an event has one
    // date, in the stream and in the tenant's logs alike).
    sim.append_logs(logs.clone());
    let recovered = |s: &Service| s.metric("auth0_default_roles_backstop_recovered_total", "");
    assert!(
        wait_for(Duration::from_secs(60), || sim.role_sets()
            == stream.expected
            && recovered(&service) as usize == dropped.len()),
        "expected {} recovered, got {}; roles equal: {}\n{}",
        dropped.len(),
        recovered(&service),
        sim.role_sets() == stream.expected,
        service.log_text()
    );
    let last = log_id(&logs[logs.len() - 1]);
    assert!(wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(dir.join("backstop.checkpoint"))
            .unwrap_or_default()
            .contains(&last)
    }));
    assert_eq!(recovered(&service) as usize, dropped.len());
    let after = sim.stats();
    // The backstop's writes: only for users the stream missed entirely (a dropped signup whose
    // first login arrived costs nothing); never more calls than dropped events.
    assert!(assign_calls(&after) - assign_calls(&before) <= dropped.len() as u64);
    assert_eq!(after.duplicate_assignments, 0, "{after:?}");
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_received_total",
            "source=\"backstop\""
        ) as usize,
        logs.len()
    );
    assert_tenant_holds_exactly(&sim, &stream.expected, &[&service]);

    // Auth0 suspends the stream: the gauge says so, with a warning naming the status.
    assert!(sim.set_log_stream_status(&stream_id, "suspended"));
    assert!(
        wait_for(Duration::from_secs(20), || gauge(&service) == 0.0),
        "{}",
        service.log_text()
    );
    assert!(wait_for(Duration::from_secs(10), || service
        .log_text()
        .contains("status=\"suspended\"")
        || service.log_text().contains("status=suspended")));
    assert!(sim.set_log_stream_status(&stream_id, "active"));
    assert!(wait_for(Duration::from_secs(20), || gauge(&service) == 1.0));
    rt.block_on(running.shutdown());
}

#[test]
fn check_prints_the_scopes_the_checkpoint_and_the_calls_per_hour() {
    let dir = temp_dir("logs-check");
    let config = source_config(&dir, "http://127.0.0.1:9", free_port(), "");
    std::fs::write(
        dir.join("logs.checkpoint"),
        json!({"log_id": "90020261201000000000000000000000000000000000000000000042", "date": now_rfc3339()}).to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("read:logs"), "{text}");
    assert!(
        text.contains(
            "checkpoint at log_id 90020261201000000000000000000000000000000000000000000042"
        ),
        "{text}"
    );
    // 10,000 events an hour: 100 pages, plus a poll every 0.2 s (18,000).
    assert!(text.contains("10000 events/h → 18100 calls/h"), "{text}");
}

/// The commented `[name]` section of the example, uncommented.
fn example_section(name: &str) -> String {
    let example = std::fs::read_to_string("config/example.toml").unwrap_or_else(|e| panic!("{e}"));
    let header = format!("# [{name}]\n");
    let start = example
        .find(&header)
        .unwrap_or_else(|| panic!("no commented [{name}] in the example"));
    example[start..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with('[') || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn load(text: &str) -> Result<auth0_default_roles::config::Config, String> {
    auth0_default_roles::config::Config::from_toml(text, Path::new("t.toml"), &|_| None)
        .map_err(|e| e.to_string())
}

#[test]
fn the_commented_examples_load_and_bad_values_name_their_key() {
    use auth0_default_roles::config::SourceSettings;
    use auth0_default_roles::source::auth0_logs::Start;
    let source = format!(
        "[source]\ntype = \"auth0_logs\"\n{}\n",
        example_section("auth0_logs")
    );
    let config = load(&source).unwrap_or_else(|e| panic!("{e}\n{source}"));
    let Some(SourceSettings::Auth0Logs(logs)) = config.source else {
        panic!("auth0_logs source expected")
    };
    assert_eq!(logs.start, Start::Latest);
    assert_eq!(logs.poll_interval, Duration::from_secs(10));
    assert_eq!(logs.take, 100);
    assert_eq!(logs.log_stream_id.as_deref(), Some("lst_0000000000012345"));
    // The backstop runs beside a source that assigns (a lone one is refused at load).
    let backstop = format!(
        "[ingest]\nmode = \"direct\"\n{}",
        example_section("backstop")
    );
    let config = load(&backstop).unwrap_or_else(|e| panic!("{e}\n{backstop}"));
    let b = config.backstop.unwrap_or_else(|| panic!("a backstop"));
    assert_eq!(b.lag, Duration::from_secs(300));
    assert!((b.rate_share - 0.1).abs() < 1e-9);
    for (text, key) in [
        ("[backstop]\ncheckpoint_file = \"c\"\nrate_share = 0", "backstop.rate_share"),
        ("[backstop]\ncheckpoint_file = \"c\"\nrate_share = 1.5", "backstop.rate_share"),
        ("[backstop]\ncheckpoint_file = \"c\"\nlag_seconds = 90000", "backstop.lag_seconds"),
        ("[backstop]\nlag_seconds = 10", "backstop.checkpoint_file"),
        ("[backstop]\ncheckpoint_file = \"c\"\nstart = \"yesterday\"", "backstop.start"),
        ("[backstop]\ncheckpoint_file = \"c\"\nstart = \"2026-11-23 10:00\"", "backstop.start"),
        ("[source]\ntype = \"auth0_logs\"\n[auth0_logs]\ncheckpoint_file = \"c\"\nstart = \"2026-11-23T10:00:00\"", "auth0_logs.start"),
        ("[source]\ntype = \"auth0_logs\"\n[auth0_logs]\ncheckpoint_file = \"c\"\nlag_seconds = 5", "auth0_logs"),
        ("[source]\ntype = \"auth0_logs\"", "auth0_logs"),
        ("[source]\ntype = \"auth0_logs\"\n[auth0_logs]\ncheckpoint_file = \"c\"\ntake = 101", "auth0_logs.take"),
    ] {
        let err = load(text).err().unwrap_or_else(|| panic!("accepted: {text}"));
        assert!(err.contains(key), "{text}\n=> {err}");
    }
}

#[test]
fn the_backstop_deployment_runs_one_pod_with_its_checkpoint_on_a_volume() {
    use serde::Deserialize;
    let text =
        std::fs::read_to_string("deploy/backstop/backstop.yaml").unwrap_or_else(|e| panic!("{e}"));
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let deployment = of_kind("Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(1));
    assert_eq!(
        deployment["spec"]["strategy"]["type"].as_str(),
        Some("Recreate"),
        "a rollout must not run two backstops at once"
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0].as_str(), Some("ingest"));
    let mount = container["volumeMounts"]
        .as_sequence()
        .and_then(|m| m.iter().find(|m| m["name"].as_str() == Some("checkpoint")))
        .and_then(|m| m["mountPath"].as_str())
        .unwrap_or_else(|| panic!("no checkpoint volume mount"));
    let claim = of_kind("PersistentVolumeClaim")["metadata"]["name"].as_str();
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .and_then(|v| v.iter().find(|v| v["name"].as_str() == Some("checkpoint")))
        .and_then(|v| v["persistentVolumeClaim"]["claimName"].as_str());
    assert_eq!(volume, claim);
    let config = of_kind("ConfigMap")["data"]["config.toml"]
        .as_str()
        .unwrap_or_default();
    let config = load(config).unwrap_or_else(|e| panic!("{e}"));
    let backstop = config.backstop.unwrap_or_else(|| panic!("no [backstop]"));
    assert!(backstop.checkpoint_file.starts_with(mount));
    assert_eq!(
        config.ingest.map(|i| i.mode),
        Some(auth0_default_roles::config::IngestMode::Direct)
    );
}

#[test]
fn with_a_ledger_a_reader_that_lost_its_checkpoint_file_resumes_from_the_ledger() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("logs-ledger-checkpoint");
    let stream = generate::mixed(37, 400, 0);
    let logs = tenant_logs(&stream);
    let split = user_boundary(&logs);
    let (first, second) = logs.split_at(split);
    sim.append_logs(first.to_vec());
    let metrics = free_port();
    let config = source_config(&dir, &running.base_url, metrics, "take = 40");
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    let ledger = format!(
        "{text}\n[ledger]\nurl = \"sqlite://{}\"\n",
        dir.join("ledger.db").display()
    );
    std::fs::write(&config, ledger).unwrap_or_else(|e| panic!("{e}"));
    let mut service = start_until_checkpoint(&config, metrics, &dir, first);
    service.signal("TERM");
    assert!(service.wait_exit(Duration::from_secs(30)).is_some());

    // A new pod without the old volume: no checkpoint file.
    std::fs::remove_file(dir.join("logs.checkpoint")).unwrap_or_else(|e| panic!("{e}"));
    sim.append_logs(second.to_vec());
    let service = Service::start(&config, metrics, dir.join("run-2.log"));
    service.wait_ready();
    assert!(
        wait_for(Duration::from_secs(60), || sim.role_sets()
            == stream.expected),
        "roles differ after the restart\n{}",
        service.log_text()
    );
    let last = log_id(&logs[logs.len() - 1]);
    assert!(wait_for(Duration::from_secs(30), || checkpoint(&dir)
        .as_deref()
        == Some(last.as_str())));
    let received = service.metric(
        "auth0_default_roles_events_received_total",
        "source=\"auth0_logs\"",
    ) as usize;
    assert_eq!(
        received,
        second.len(),
        "resumed from the ledger's checkpoint, not from `start`\n{}",
        service.log_text()
    );
    assert_eq!(sim.stats().duplicate_assignments, 0);
    rt.block_on(running.shutdown());
}
