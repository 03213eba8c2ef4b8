//! Helper tasks and the Logs API reader seen and healed, with the real binary against the
//! simulator: a backstop refused `read:logs` from the start shows within 30 s (metric and
//! `/readyz`, still 200) and recovers every user once the scope is granted, without a restart;
//! a checkpoint that cannot be written is reported and heals; a reader stalled past the
//! tenant's retention reports the gap when it resumes; a record whose task panics every time
//! ends in the dead letters after three lost tasks while its neighbours are processed.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::auth0_logs::{
    auth0_section, checkpoint, demo_policy, eligible, log_id, source_config,
    start_until_checkpoint, tenant_logs, user, user_boundary, TOKEN,
};
use auth0_default_roles::generate;
use test_harness::*;

fn deny(sim: &mgmt_sim::Simulator, scopes: &[&str]) {
    sim.apply_control(&mgmt_sim::ControlRequest {
        denied_scopes: Some(scopes.iter().map(|s| (*s).to_owned()).collect()),
        ..Default::default()
    });
}

fn degraded_naming(service: &Service, helper: &str) -> bool {
    service.get("/readyz").is_some_and(|(status, body)| {
        status == 200 && body.contains("degraded") && body.contains(helper)
    })
}

#[test]
fn a_backstop_refused_read_logs_from_the_start_is_seen_within_30_s_and_recovers_every_user_once_granted(
) {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    // The application lacks the Logs API's scopes (either one would do).
    deny(&sim, &["read:logs", "read:logs_users"]);
    let dir = temp_dir("helper-backstop-scope");
    let stream = generate::mixed(41, 120, 0);
    let logs = tenant_logs(&stream);
    // The stream delivers nothing: the backstop is the only way the users get their roles.
    sim.append_logs(logs.clone());
    let (port, metrics) = (free_port(), free_port());
    let text = format!(
        "[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:{port}\"\n\n{}\n[backstop]\nstart = \"earliest\"\ncheckpoint_file = \"{}\"\nlag_seconds = 1\npoll_interval_seconds = 0.2\nrate_share = 0.5\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{}\n",
        auth0_section(&running.base_url),
        dir.join("backstop.checkpoint").display(),
        demo_policy()
    );
    let config = dir.join("ingest-backstop.toml");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    let failures = |s: &Service| {
        s.metric(
            "auth0_default_roles_helper_failures_total",
            "helper=\"backstop\"",
        )
    };
    let up = |s: &Service| s.metric("auth0_default_roles_helper_up", "helper=\"backstop\"");
    assert!(
        wait_for(Duration::from_secs(30), || failures(&service) >= 1.0
            && degraded_naming(&service, "backstop")),
        "the refused backstop is not visible: {:?}\n{}",
        service.get("/readyz"),
        service.log_text()
    );
    assert_eq!(up(&service), 0.0);
    assert!(
        service.log_text().contains("read:logs"),
        "{}",
        service.log_text()
    );
    assert!(sim.role_sets().is_empty());

    deny(&sim, &[]);
    assert!(
        wait_for(Duration::from_secs(150), || sim.role_sets()
            == stream.expected),
        "the backstop did not recover once granted: {:?}\n{}",
        service.get("/readyz"),
        service.log_text()
    );
    assert!(wait_for(Duration::from_secs(30), || up(&service) == 1.0
        && service.get("/readyz").is_some_and(
            |(s, body)| s == 200 && !body.contains("degraded")
        )));
    assert_tenant_holds_exactly(&sim, &stream.expected, &[&service]);
    rt.block_on(running.shutdown());
}

#[test]
fn a_checkpoint_that_cannot_be_written_is_reported_and_heals_once_it_can() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("helper-checkpoint");
    let stream = generate::mixed(43, 120, 0);
    let logs = tenant_logs(&stream);
    sim.append_logs(logs.clone());
    // The checkpoint's temporary file is a directory: every save fails (root or not).
    let blocker = dir.join("logs.checkpoint.tmp");
    std::fs::create_dir_all(&blocker).unwrap_or_else(|e| panic!("{e}"));
    let metrics = free_port();
    let config = source_config(&dir, &running.base_url, metrics, "");
    let service = Service::start(&config, metrics, dir.join("run-1.log"));
    service.wait_ready();
    let failures = |s: &Service| {
        s.metric(
            "auth0_default_roles_helper_failures_total",
            "helper=\"auth0_logs\"",
        )
    };
    assert!(
        wait_for(Duration::from_secs(30), || failures(&service) >= 1.0
            && degraded_naming(&service, "checkpoint")),
        "the unwritable checkpoint is not visible: {:?}\n{}",
        service.get("/readyz"),
        service.log_text()
    );
    assert_eq!(checkpoint(&dir), None);
    std::fs::remove_dir(&blocker).unwrap_or_else(|e| panic!("{e}"));
    let last = log_id(&logs[logs.len() - 1]);
    assert!(
        wait_for(Duration::from_secs(60), || checkpoint(&dir).as_deref()
            == Some(last.as_str())),
        "the checkpoint never healed: {:?}\n{}",
        checkpoint(&dir),
        service.log_text()
    );
    assert!(wait_for(Duration::from_secs(30), || {
        service
            .get("/readyz")
            .is_some_and(|(s, body)| s == 200 && !body.contains("degraded"))
    }));
    assert_eq!(sim.role_sets(), stream.expected);
    rt.block_on(running.shutdown());
}

#[test]
fn a_reader_stalled_past_the_retention_reports_the_gap_when_it_resumes() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("helper-stall");
    let stream = generate::mixed(47, 200, 0);
    let logs = tenant_logs(&stream);
    let split = user_boundary(&logs);
    let (first, second) = logs.split_at(split);
    sim.append_logs(first.to_vec());
    let metrics = free_port();
    let config = source_config(&dir, &running.base_url, metrics, "");
    let service = start_until_checkpoint(&config, metrics, &dir, first);
    let gaps = |s: &Service| {
        s.metric(
            "auth0_default_roles_auth0_logs_retention_gaps_total",
            "reader=\"source\"",
        )
    };
    assert_eq!(gaps(&service), 0.0);
    // A long fault: the Logs API answers 5xx (the client waits it out inside); meanwhile new
    // logs come and the oldest of them pass the retention.
    let logs_errors = |rate: f64| {
        sim.apply_control(&mgmt_sim::ControlRequest {
            logs_error_rate: Some(rate),
            ..Default::default()
        })
    };
    logs_errors(1.0);
    std::thread::sleep(Duration::from_secs(15));
    sim.append_logs(second.to_vec());
    assert!(sim.purge_logs_before(&log_id(&second[5])) >= 5);
    logs_errors(0.0);
    assert!(
        wait_for(Duration::from_secs(90), || gaps(&service) == 1.0),
        "the gap was not reported\n{}",
        service.log_text()
    );
    assert!(service
        .log_text()
        .contains("older than the tenant's log retention"));
    let last = log_id(&logs[logs.len() - 1]);
    assert!(wait_for(Duration::from_secs(60), || checkpoint(&dir)
        .as_deref()
        == Some(last.as_str())));
    rt.block_on(running.shutdown());
}

#[test]
fn a_log_whose_task_panics_every_time_is_dead_lettered_after_three_lost_tasks_and_its_neighbours_are_processed(
) {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("helper-panic-logs");
    let stream = generate::mixed(53, 120, 0);
    let logs = tenant_logs(&stream);
    let poisoned: &Value = logs
        .iter()
        .skip(logs.len() / 2)
        .find(|l| eligible(l))
        .unwrap_or_else(|| panic!("no eligible log"));
    let poisoned_id = log_id(poisoned);
    let poisoned_user = user(poisoned);
    sim.append_logs(logs.clone());
    let metrics = free_port();
    let config = source_config(&dir, &running.base_url, metrics, "");
    let service = Service::start_command(
        "run",
        &config,
        metrics,
        dir.join("run-1.log"),
        &[(
            "AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID",
            poisoned_id.as_str(),
        )],
    );
    service.wait_ready();
    let last = log_id(&logs[logs.len() - 1]);
    assert!(
        wait_for(Duration::from_secs(60), || checkpoint(&dir).as_deref()
            == Some(last.as_str())),
        "the reader is held by the poisoned log: {:?}\n{}",
        checkpoint(&dir),
        service.log_text()
    );
    let dead: Vec<Value> = std::fs::read_to_string(dir.join("logs.checkpoint.dead-letters.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["log_id"], json!(poisoned_id));
    assert_eq!(dead[0]["reason"], json!("failed"));
    assert_eq!(
        service.metric(
            "auth0_default_roles_task_panics_total",
            "source=\"auth0_logs\""
        ),
        3.0,
        "the task is retried before the log is dead-lettered\n{}",
        service.log_text()
    );
    // Every other user holds the roles; the poisoned user's other events may give theirs.
    let roles = sim.role_sets();
    let others: BTreeSet<&String> = stream
        .expected
        .keys()
        .filter(|u| **u != poisoned_user)
        .collect();
    for user in others {
        assert_eq!(roles.get(user), stream.expected.get(user), "{user}");
    }
    rt.block_on(running.shutdown());
}

/// An eligible log of `stream` that appears in exactly one record, away from the start: the
/// record the tests make panic. (log_id, user)
pub(crate) fn poisoned_record(stream: &generate::Stream) -> (String, String) {
    let logs: Vec<Value> = stream
        .records
        .iter()
        .filter_map(crate::auth0_logs::log_of)
        .collect();
    logs.iter()
        .skip(logs.len() / 2)
        .find(|l| eligible(l) && logs.iter().filter(|o| log_id(o) == log_id(l)).count() == 1)
        .map(|l| (log_id(l), user(l)))
        .unwrap_or_else(|| panic!("no eligible log appears once"))
}

/// Every user but `except` holds exactly the expected roles.
pub(crate) fn others_hold_their_roles(
    roles: &std::collections::BTreeMap<String, BTreeSet<String>>,
    stream: &generate::Stream,
    except: &str,
) -> bool {
    stream
        .expected
        .iter()
        .filter(|(u, _)| u.as_str() != except)
        .all(|(u, expected)| roles.get(u) == Some(expected))
}

/// `ingest` in direct mode with the demo policy against the tenant at `base_url`, with `env`,
/// once it listens: (the service, its webhook port).
fn start_direct(dir: &std::path::Path, base_url: &str, env: &[(&str, &str)]) -> (Service, u16) {
    let (port, metrics) = (free_port(), free_port());
    let text = format!(
        "[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:{port}\"\n\n{}\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{}\n",
        auth0_section(base_url),
        demo_policy()
    );
    let config = dir.join("ingest-direct.toml");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let service = Service::start_command("ingest", &config, metrics, dir.join("ingest.log"), env);
    assert!(wait_listening(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(30)
    ));
    (service, port)
}

#[test]
fn a_webhook_record_whose_task_panics_every_time_ends_failed_after_three_lost_tasks_and_its_neighbours_are_processed(
) {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("helper-panic-webhook");
    let stream = generate::mixed(59, 200, 0);
    let (poisoned, poisoned_user) = poisoned_record(&stream);
    let (service, port) = start_direct(
        &dir,
        &running.base_url,
        &[
            ("AUTH0_WEBHOOK_TOKEN", TOKEN),
            ("AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID", poisoned.as_str()),
        ],
    );
    let mut failed = 0;
    for batch in stream.records.chunks(50) {
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
        )
        .unwrap_or_else(|| panic!("no answer"));
        assert_eq!(answer.0, 200, "{answer:?}\n{}", service.log_text());
        let said: Value = serde_json::from_str(&answer.1).unwrap_or_default();
        failed += said["failed"].as_u64().unwrap_or(0);
    }
    assert_eq!(failed, 1, "{}", service.log_text());
    assert_eq!(
        service.metric("auth0_default_roles_task_panics_total", "source=\"http\""),
        3.0,
        "the record's task is run again before it ends failed\n{}",
        service.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(30), || others_hold_their_roles(
            &sim.role_sets(),
            &stream,
            &poisoned_user
        )),
        "{}",
        service.log_text()
    );
    rt.block_on(running.shutdown());
}

/// A webhook record holding several events whose second event's task is lost once: the
/// delivery runs again from the lost event, so the answer counts each event once (the run
/// again used to report the first event a second time: 3 processed for 2 events).
#[test]
fn a_webhook_record_whose_second_task_is_lost_once_counts_each_event_once() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("helper-lost-once-webhook");
    let stream = generate::mixed(61, 200, 0);
    let logs = tenant_logs(&stream);
    let eligible_logs: Vec<&Value> = logs.iter().filter(|l| eligible(l)).take(2).collect();
    assert_eq!(eligible_logs.len(), 2);
    let lost = log_id(eligible_logs[1]);
    let (service, port) = start_direct(
        &dir,
        &running.base_url,
        &[
            ("AUTH0_WEBHOOK_TOKEN", TOKEN),
            ("AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID", lost.as_str()),
            ("AUTH0_DEFAULT_ROLES_TEST_PANIC_TIMES", "1"),
        ],
    );
    // One record holding both logs: a delivery that is an array of one record, itself an
    // array of the two logs.
    let body = serde_json::to_vec(&[&eligible_logs]).unwrap_or_else(|e| panic!("{e}"));
    let answer = http_post(
        port,
        "/auth0/logs",
        &[
            ("Authorization", TOKEN),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
    .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(answer.0, 200, "{answer:?}\n{}", service.log_text());
    let said: Value = serde_json::from_str(&answer.1).unwrap_or_default();
    assert_eq!(
        said["processed"],
        json!(2),
        "{said}\n{}",
        service.log_text()
    );
    assert_eq!(said["failed"], json!(0), "{said}");
    assert_eq!(
        service.metric("auth0_default_roles_task_panics_total", "source=\"http\""),
        1.0,
        "{}",
        service.log_text()
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_ingest_records_total",
            "outcome=\"processed\""
        ),
        2.0
    );
    for l in eligible_logs {
        let user = user(l);
        assert!(
            wait_for(Duration::from_secs(10), || sim
                .role_sets()
                .get(&user)
                .is_some_and(|r| !r.is_empty())),
            "{user} got no role\n{}",
            service.log_text()
        );
    }
    rt.block_on(running.shutdown());
}
