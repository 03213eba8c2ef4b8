//! The Logs API readers on a tenant whose log dates are not in the order of their ids (issue
//! 36), with the real binary against the simulator: the simulator gives each log an id that
//! encodes its ingestion time and a date that lags it by up to 5 s, as a real tenant does. From
//! `earliest`, from `latest` with logs arriving after it, and from a time, the `auth0_logs`
//! source gives every user their roles and nobody else any; a restart repeats nothing; the
//! backstop behind a lossy webhook recovers every dropped event; the retention check reports a
//! real gap and no false one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::auth0_logs::*;
use auth0_default_roles::generate::{self, Record};
use mgmt_sim::Simulator;
use test_harness::*;

/// Appends `logs` as the tenant logs them: without their ids (the simulator gives ids that
/// encode the ingestion time) and, unless `keep_dates`, without their dates (the simulator
/// dates each up to 5 s before its ingestion). Returns the logs as kept, in id order.
fn ingest(sim: &Simulator, logs: &[Value], keep_dates: bool) -> Vec<Value> {
    ingest_mapped(sim, logs, keep_dates).0
}

/// [`ingest`], and each log as kept by its id in `logs`.
fn ingest_mapped(
    sim: &Simulator,
    logs: &[Value],
    keep_dates: bool,
) -> (Vec<Value>, BTreeMap<String, Value>) {
    let bare = logs
        .iter()
        .cloned()
        .map(|mut log| {
            if let Some(fields) = log.as_object_mut() {
                fields.remove("log_id");
                fields.remove("_id");
                if !keep_dates {
                    fields.remove("date");
                }
            }
            log
        })
        .collect();
    let ids = sim.append_logs(bare);
    let wanted: BTreeSet<&String> = ids.iter().collect();
    let kept: Vec<Value> = sim
        .tenant_logs()
        .into_iter()
        .filter(|log| wanted.contains(&log_id(log)))
        .collect();
    let by_id: BTreeMap<String, Value> = kept.iter().map(|l| (log_id(l), l.clone())).collect();
    let by_original = logs
        .iter()
        .map(log_id)
        .zip(&ids)
        .filter_map(|(original, id)| by_id.get(id).map(|l| (original, l.clone())))
        .collect();
    (kept, by_original)
}

fn date(log: &Value) -> String {
    log.get("date")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The logs are not in date order: the oldest by date is not the first by id, and some log is
/// dated before one with a smaller id (else the test would prove nothing).
fn assert_dates_out_of_id_order(logs: &[Value]) {
    let oldest = logs.iter().min_by_key(|l| date(l)).map(log_id);
    let later_dated_before = logs
        .windows(2)
        .filter(|w| date(&w[1]) < date(&w[0]))
        .count();
    assert!(
        oldest != logs.first().map(log_id) || later_dated_before > 0,
        "the simulated dates are in id order"
    );
}

/// What `stream` expects of the users of `logs` (a user's logs are never split).
fn expected_of(stream: &generate::Stream, logs: &[Value]) -> BTreeMap<String, BTreeSet<String>> {
    let users: BTreeSet<String> = logs.iter().map(user).collect();
    stream
        .expected
        .iter()
        .filter(|(u, _)| users.contains(*u))
        .map(|(u, roles)| (u.clone(), roles.clone()))
        .collect()
}

/// "right/expected users have their roles, others hold roles": for the failure messages.
fn roles_summary(sim: &Simulator, expected: &BTreeMap<String, BTreeSet<String>>) -> String {
    let held = sim.role_sets();
    let right = expected
        .iter()
        .filter(|(u, roles)| held.get(*u) == Some(*roles))
        .count();
    let others = held.keys().filter(|u| !expected.contains_key(*u)).count();
    format!(
        "{right}/{} users have their roles; {others} users who should hold none hold roles",
        expected.len()
    )
}

fn received(service: &Service, source: &str) -> usize {
    service.metric(
        "auth0_default_roles_events_received_total",
        &format!("source=\"{source}\""),
    ) as usize
}

/// Waits until the checkpoint names the last of `logs`.
fn wait_checkpoint(service: &Service, dir: &Path, logs: &[Value]) {
    let last = logs.last().map(log_id).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(60), || checkpoint(dir).as_deref()
            == Some(last.as_str())),
        "the checkpoint never reached the last log: {:?}\n{}",
        checkpoint(dir),
        service.log_text()
    );
}

fn set_start(config: &Path, start: &str) {
    let text = std::fs::read_to_string(config).unwrap_or_else(|e| panic!("{e}"));
    let text = text.replace("start = \"earliest\"", &format!("start = \"{start}\""));
    std::fs::write(config, text).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn from_earliest_every_user_gets_their_roles_and_a_restart_repeats_nothing() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("logs-order-earliest");
    let stream = generate::mixed(41, 500, 0);
    let logs = tenant_logs(&stream);
    let split = user_boundary(&logs);
    let first = ingest(&sim, &logs[..split], false);
    assert_dates_out_of_id_order(&first);
    let metrics = free_port();
    let config = source_config(&dir, &running.base_url, metrics, "take = 40");
    let mut service = Service::start(&config, metrics, dir.join("run-1.log"));
    service.wait_ready();
    wait_checkpoint(&service, &dir, &first);
    let expected = expected_of(&stream, &first);
    assert!(
        wait_for(Duration::from_secs(30), || sim.role_sets() == expected),
        "from earliest: {}\n{}",
        roles_summary(&sim, &expected),
        service.log_text()
    );
    assert_eq!(
        received(&service, "auth0_logs"),
        first.len(),
        "each log once"
    );
    service.signal("TERM");
    assert!(service.wait_exit(Duration::from_secs(30)).is_some());

    // New logs while it is down: the restart reads only those.
    let second = ingest(&sim, &logs[split..], false);
    let service = Service::start(&config, metrics, dir.join("run-2.log"));
    service.wait_ready();
    wait_checkpoint(&service, &dir, &second);
    assert!(
        wait_for(Duration::from_secs(30), || sim.role_sets()
            == stream.expected),
        "after the restart: {}\n{}",
        roles_summary(&sim, &stream.expected),
        service.log_text()
    );
    assert_eq!(
        received(&service, "auth0_logs"),
        second.len(),
        "the restart repeated nothing before its checkpoint"
    );
    assert_eq!(sim.stats().duplicate_assignments, 0);
    assert_tenant_holds_exactly(&sim, &stream.expected, &[&service]);
    rt.block_on(running.shutdown());
}

#[test]
fn from_latest_the_logs_arriving_after_the_start_and_only_those_are_read() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("logs-order-latest");
    let stream = generate::mixed(43, 400, 0);
    let logs = tenant_logs(&stream);
    let split = user_boundary(&logs);
    let before = ingest(&sim, &logs[..split], false);
    assert_dates_out_of_id_order(&before);
    let metrics = free_port();
    let config = source_config(&dir, &running.base_url, metrics, "take = 40");
    set_start(&config, "latest");
    let service = Service::start(&config, metrics, dir.join("run-1.log"));
    // Ready once it knows where it starts.
    service.wait_ready();
    let after = ingest(&sim, &logs[split..], false);
    wait_checkpoint(&service, &dir, &after);
    let expected = expected_of(&stream, &after);
    assert!(
        wait_for(Duration::from_secs(30), || sim.role_sets() == expected),
        "from latest: {}\n{}",
        roles_summary(&sim, &expected),
        service.log_text()
    );
    assert_eq!(
        received(&service, "auth0_logs"),
        after.len(),
        "only the logs after the start\n{}",
        service.log_text()
    );
    assert_tenant_holds_exactly(&sim, &expected, &[&service]);
    rt.block_on(running.shutdown());
}

/// `logs` dated from `from` on, keeping the generator's spacing (5–400 ms apart).
fn dated_from(logs: &[Value], from: SystemTime) -> Vec<Value> {
    let first = logs
        .first()
        .and_then(|l| humantime::parse_rfc3339(&date(l)).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    logs.iter()
        .cloned()
        .map(|mut log| {
            let at = humantime::parse_rfc3339(&date(&log)).unwrap_or(first);
            let offset = at.duration_since(first).unwrap_or_default();
            log["date"] = json!(humantime::format_rfc3339_millis(from + offset).to_string());
            log
        })
        .collect()
}

#[test]
fn from_a_time_the_logs_from_that_time_on_are_read() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("logs-order-time");
    let stream = generate::mixed(47, 400, 0);
    let logs = tenant_logs(&stream);
    let split = user_boundary(&logs);
    let now = SystemTime::now();
    // Logged 20 minutes ago (about a minute of events), and 2 minutes ago; ingested 0–5 s
    // after their dates, so their ids are not in date order.
    let old = ingest(
        &sim,
        &dated_from(&logs[..split], now - Duration::from_secs(1200)),
        true,
    );
    let recent = ingest(
        &sim,
        &dated_from(&logs[split..], now - Duration::from_secs(120)),
        true,
    );
    assert_dates_out_of_id_order(&recent);
    // Five minutes ago, written with an offset.
    let start = time::OffsetDateTime::from_unix_timestamp(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default()
            - 300,
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap_or_else(|e| panic!("{e}")));
    let start = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+02:00",
        start.year(),
        u8::from(start.month()),
        start.day(),
        start.hour(),
        start.minute(),
        start.second()
    );
    let metrics = free_port();
    let config = source_config(&dir, &running.base_url, metrics, "take = 40");
    set_start(&config, &start);
    let service = Service::start(&config, metrics, dir.join("run-1.log"));
    service.wait_ready();
    wait_checkpoint(&service, &dir, &recent);
    let expected = expected_of(&stream, &recent);
    assert!(
        wait_for(Duration::from_secs(30), || sim.role_sets() == expected),
        "from {start}: {}\n{}",
        roles_summary(&sim, &expected),
        service.log_text()
    );
    assert_eq!(received(&service, "auth0_logs"), recent.len());
    assert!(old.len() > 100);
    assert_tenant_holds_exactly(&sim, &expected, &[&service]);
    rt.block_on(running.shutdown());
}

/// A webhook record carrying the id and date the tenant gave its log.
fn redelivered(record: &Record, kept: &BTreeMap<String, Value>) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(&record.value).ok()?;
    let original = log_of(record).map(|l| log_id(&l))?;
    let log = kept.get(&original)?;
    let (id, date) = (log_id(log), date(log));
    if value.get("data").is_some_and(Value::is_object) {
        value["log_id"] = json!(id);
        value["data"]["log_id"] = json!(id);
        value["data"]["date"] = json!(date);
    } else {
        value["log_id"] = json!(id);
        value["date"] = json!(date);
    }
    serde_json::to_vec(&value).ok()
}

#[test]
fn from_earliest_the_backstop_behind_a_webhook_that_drops_a_quarter_of_the_users_recovers_them() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("logs-order-backstop");
    let stream = generate::mixed(53, 500, 0);
    let logs = tenant_logs(&stream);
    // The tenant logs every event before the service starts; the stream delivers them late.
    let (stored, kept) = ingest_mapped(&sim, &logs, false);
    assert_dates_out_of_id_order(&stored);
    // Every record of every fourth user with an eligible event never reaches the webhook.
    let mut eligible_users = Vec::new();
    for log in stored.iter().filter(|l| eligible(l)) {
        if !eligible_users.contains(&user(log)) {
            eligible_users.push(user(log));
        }
    }
    let lost_users: BTreeSet<String> = eligible_users.into_iter().step_by(4).collect();
    let dropped: BTreeSet<String> = stored
        .iter()
        .filter(|l| lost_users.contains(&user(l)))
        .map(log_id)
        .collect();
    let dropped_eligible = stored
        .iter()
        .filter(|l| eligible(l) && dropped.contains(&log_id(l)))
        .count();
    let (port, metrics) = (free_port(), free_port());
    // lag_seconds 20: the stream's deliveries (under a second) come well before the backstop
    // reads the same logs.
    let text = format!(
        "[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:{port}\"\n\n{}\n[backstop]\nstart = \"earliest\"\ncheckpoint_file = \"{}\"\nlag_seconds = 20\npoll_interval_seconds = 0.2\nrate_share = 0.5\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{}\n",
        auth0_section(&running.base_url),
        dir.join("backstop.checkpoint").display(),
        demo_policy()
    );
    let config = dir.join("ingest-backstop.toml");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let service = Service::start_ingest(&config, port, metrics, dir.join("ingest.log"), TOKEN);
    let delivered: Vec<Vec<u8>> = stream
        .records
        .iter()
        .filter_map(|r| redelivered(r, &kept))
        .filter(|v| {
            serde_json::from_slice::<Value>(v)
                .ok()
                .and_then(|v| v.get("log_id").and_then(Value::as_str).map(str::to_owned))
                .is_some_and(|id| !dropped.contains(&id))
        })
        .collect();
    for batch in delivered.chunks(50) {
        let mut body = Vec::new();
        for value in batch {
            body.extend_from_slice(value);
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
        assert_eq!(answer.as_ref().map(|(s, _)| *s), Some(200), "{answer:?}");
    }
    let recovered = |s: &Service| s.metric("auth0_default_roles_backstop_recovered_total", "");
    let last = log_id(&stored[stored.len() - 1]);
    assert!(
        wait_for(Duration::from_secs(90), || {
            std::fs::read_to_string(dir.join("backstop.checkpoint"))
                .unwrap_or_default()
                .contains(&last)
        }),
        "the backstop never reached the last log\n{}",
        service.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(30), || sim.role_sets()
            == stream.expected),
        "backstop from earliest: {}; {} of {} dropped eligible events recovered\n{}",
        roles_summary(&sim, &stream.expected),
        recovered(&service),
        dropped_eligible,
        service.log_text()
    );
    assert_eq!(recovered(&service) as usize, dropped_eligible);
    assert_eq!(received(&service, "backstop"), stored.len());
    assert_eq!(sim.stats().duplicate_assignments, 0);
    assert_tenant_holds_exactly(&sim, &stream.expected, &[&service]);
    rt.block_on(running.shutdown());
}

fn write_checkpoint(dir: &Path, log_id: &str) {
    std::fs::write(
        dir.join("logs.checkpoint"),
        json!({ "log_id": log_id }).to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_retention_check_reports_a_real_gap_and_no_false_one() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("logs-order-retention");
    let stream = generate::mixed(59, 120, 0);
    let logs = tenant_logs(&stream);
    // Ten minutes ago, 100 ms apart; the 21st dated 10 s later than its place (a late event
    // time): the oldest by date after it is the 22nd.
    let base = SystemTime::now() - Duration::from_secs(600);
    let dated: Vec<Value> = logs
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, mut log)| {
            let late = if i == 20 { 10_000 } else { 0 };
            let at = base + Duration::from_millis(100 * i as u64 + late);
            log["date"] = json!(humantime::format_rfc3339_millis(at).to_string());
            log
        })
        .collect();
    let stored = ingest(&sim, &dated, true);
    // Retention: the first twenty are gone; the 21st is the oldest kept by id, not by date.
    assert_eq!(sim.purge_logs_before(&log_id(&stored[20])), 20);
    let gaps = |s: &Service| {
        s.metric(
            "auth0_default_roles_auth0_logs_retention_gaps_total",
            "reader=\"source\"",
        )
    };

    // A checkpoint at the oldest log kept: nothing is lost, no gap.
    write_checkpoint(&dir, &log_id(&stored[20]));
    let metrics = free_port();
    let config = source_config(&dir, &running.base_url, metrics, "");
    let mut service = Service::start(&config, metrics, dir.join("run-1.log"));
    service.wait_ready();
    wait_checkpoint(&service, &dir, &stored);
    assert_eq!(
        gaps(&service),
        0.0,
        "a false gap at the retention edge\n{}",
        service.log_text()
    );
    assert!(!service
        .log_text()
        .contains("older than the tenant's log retention"));
    assert_eq!(received(&service, "auth0_logs"), stored.len() - 21);
    service.signal("TERM");
    assert!(service.wait_exit(Duration::from_secs(30)).is_some());

    // A checkpoint at the fifth, purged with the fifteen after it: a gap.
    write_checkpoint(&dir, &log_id(&stored[4]));
    let service = Service::start(&config, metrics, dir.join("run-2.log"));
    service.wait_ready();
    assert!(
        wait_for(Duration::from_secs(30), || gaps(&service) == 1.0),
        "the real gap was not reported\n{}",
        service.log_text()
    );
    assert!(service
        .log_text()
        .contains("older than the tenant's log retention"));
    rt.block_on(running.shutdown());
}
