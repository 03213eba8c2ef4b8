//! The tenant's Events API (`GET /api/v2/events`) as the source of `run`, with the real binary
//! against the simulator's Server-Sent Events stream: every user gets their roles through
//! server-closed connections while events keep arriving; a SIGKILL and restart re-read only what
//! the checkpoint had not passed; an expired offset is counted and logged with the gap; a
//! removed `read:events` pauses and its return resumes; a 403 for the connection limit is
//! waited out, not taken for the scope; an `event: error` is logged, counted and reconnected
//! from with nothing lost; a malformed `data:` is dead-lettered while its neighbours are
//! processed; a second reader of the checkpoint is refused. Replicas sharing a PostgreSQL
//! ledger (the lease) are in `reader_lease.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::auth0_logs::{auth0_section, demo_policy, now_rfc3339};
use crate::event_streams::{cloud_stream, MALFORMED};
use mgmt_sim::events_api::EventsControl;
use mgmt_sim::{ControlRequest, Simulator};
use test_harness::*;

pub(crate) type Expected = BTreeMap<String, BTreeSet<String>>;

pub(crate) const RECEIVED: &str = "auth0_default_roles_events_received_total";
pub(crate) const SOURCE: &str = "source=\"auth0_events\"";

/// A simulator stream that cycles connections quickly: heartbeats every 200 ms, `retry: 50`.
pub(crate) fn fast_stream(sim: &Simulator, cycle_after_events: Option<u64>) {
    sim.control_events(EventsControl {
        cycle_after_events,
        heartbeat_ms: 200,
        retry_ms: 50,
        ..EventsControl::default()
    });
}

/// A `run` config with the `auth0_events` source.
pub(crate) fn events_config(dir: &Path, base_url: &str, metrics: u16, extra: &str) -> PathBuf {
    let text = format!(
        "{}\n[source]\ntype = \"auth0_events\"\n\n[auth0_events]\nstart = \"earliest\"\ncheckpoint_file = \"{}\"\nidle_timeout_seconds = 5\n{extra}\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{}\n",
        auth0_section(base_url),
        dir.join("events.checkpoint").display(),
        demo_policy()
    );
    let path = dir.join("auth0-events.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn checkpoint(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("events.checkpoint")).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    value
        .get("offset")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn user_of(event: &Value) -> Option<String> {
    event["data"]["object"]["user_id"]
        .as_str()
        .map(str::to_owned)
}

/// `users` users' CloudEvents (with duplicates, both spellings) dated now, split into `parts`
/// batches at user boundaries, and the roles each user must end with. The `user.deleted` of an
/// unknown user is left out (the demo policy's types do not include it).
pub(crate) fn batches(users: usize, parts: usize) -> (Vec<Vec<Value>>, Expected) {
    let (events, expected) = cloud_stream(users);
    let now = now_rfc3339();
    let events: Vec<Value> = events
        .into_iter()
        .filter(|e| e["type"] != "user.deleted")
        .map(|mut e| {
            e["time"] = json!(now);
            e
        })
        .collect();
    let per = users.div_ceil(parts).max(1);
    let mut out: Vec<Vec<Value>> = vec![Vec::new(); parts];
    let mut order: Vec<String> = Vec::new();
    for event in events {
        let user = user_of(&event).unwrap_or_default();
        if !order.contains(&user) {
            order.push(user.clone());
        }
        let index = order.iter().position(|u| *u == user).unwrap_or(0) / per;
        out[index.min(parts - 1)].push(event);
    }
    (out, expected)
}

/// The expected roles of the users of `events` only.
pub(crate) fn expected_of(events: &[Value], expected: &Expected) -> Expected {
    let users: BTreeSet<String> = events.iter().filter_map(user_of).collect();
    expected
        .iter()
        .filter(|(u, _)| users.contains(*u))
        .map(|(u, r)| (u.clone(), r.clone()))
        .collect()
}

pub(crate) fn append(sim: &Simulator, events: &[Value]) -> Vec<String> {
    sim.append_events(events.to_vec())
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn wait_roles(
    sim: &Simulator,
    expected: &Expected,
    service: &Service,
    within: Duration,
) {
    assert!(
        wait_for(within, || sim.role_sets() == *expected),
        "roles differ: {} users hold roles, {} expected\n{}",
        sim.role_sets().len(),
        expected.len(),
        service.log_text()
    );
}

/// A simulated tenant whose stream cycles fast, and a folder for one test.
struct Scene {
    rt: tokio::runtime::Runtime,
    sim: Simulator,
    running: mgmt_sim::RunningSimulator,
    dir: PathBuf,
}

impl Scene {
    fn new(name: &str, cycle_after_events: Option<u64>) -> Scene {
        let rt = runtime();
        let (sim, running) = open_tenant(&rt);
        fast_stream(&sim, cycle_after_events);
        Scene {
            rt,
            sim,
            running,
            dir: temp_dir(name),
        }
    }

    /// A config with `extra` in `[auth0_events]` and a metrics port of its own.
    fn config(&self, extra: &str) -> (PathBuf, u16) {
        let metrics = free_port();
        (
            events_config(&self.dir, &self.running.base_url, metrics, extra),
            metrics,
        )
    }

    /// `run` on a config of [`Scene::config`], logging to `<dir>/<log>`.
    fn start(&self, config: &(PathBuf, u16), log: &str) -> Service {
        Service::start(&config.0, config.1, self.dir.join(log))
    }

    /// Asserts the tenant holds exactly `expected`, then stops the simulator.
    fn end(self, expected: &Expected, service: &Service) {
        assert_tenant_holds_exactly(&self.sim, expected, &[service]);
        self.rt.block_on(self.running.shutdown());
    }
}

#[test]
fn every_user_gets_their_roles_through_server_closed_connections_while_events_arrive() {
    let scene = Scene::new("events-source", Some(25));
    let (sim, dir) = (&scene.sim, &scene.dir);
    let (parts, expected) = batches(240, 4);
    let mut offsets = append(sim, &parts[0]);
    let config = scene.config("");
    let service = scene.start(&config, "run-1.log");
    service.wait_ready();
    for part in &parts[1..] {
        std::thread::sleep(Duration::from_millis(300));
        offsets.extend(append(sim, part));
    }
    wait_roles(sim, &expected, &service, Duration::from_secs(90));
    let newest = offsets.last().cloned();
    assert!(
        wait_for(Duration::from_secs(20), || checkpoint(dir) == newest),
        "the checkpoint never reached the newest offset: {:?}\n{}",
        checkpoint(dir),
        service.log_text()
    );
    let closed = service.metric(
        "auth0_default_roles_auth0_events_reconnects_total",
        "reason=\"server_closed\"",
    );
    let events: usize = parts.iter().map(Vec::len).sum();
    assert!(
        closed >= (events / 25 - 1) as f64,
        "{closed} server-closed connections for {events} events at 25 per connection"
    );
    assert!(
        service.metric("auth0_default_roles_auth0_events_connections_total", "") >= closed,
        "every reconnection opened a connection"
    );
    assert_eq!(
        service.metric(RECEIVED, SOURCE) as usize,
        events,
        "each event once: every reconnection resumed after the last offset"
    );
    assert_eq!(sim.stats().duplicate_assignments, 0);
    assert_eq!(
        service.metric("auth0_default_roles_dead_letters_total", ""),
        0.0
    );
    scene.end(&expected, &service);
}

#[test]
fn a_sigkill_and_restart_re_read_only_what_the_checkpoint_had_not_passed() {
    let scene = Scene::new("events-kill", Some(40));
    let (sim, dir) = (&scene.sim, &scene.dir);
    // A slow tenant and few events in flight: the kill lands while events are in flight.
    // (A bucket of 2, as Auth0's smallest plan has: a bucket of 1 tells the limiter nothing
    // about its refill, so it sends one call per stated reset, a second at most.)
    sim.apply_control(&ControlRequest {
        rate_per_second: Some(4.0),
        burst: Some(2),
        latency_ms: Some(100),
        ..ControlRequest::default()
    });
    let (parts, expected) = batches(300, 1);
    let events = &parts[0];
    let offsets = append(sim, events);
    let config = scene.config("max_inflight = 20");
    let mut service = scene.start(&config, "run-1.log");
    assert!(
        wait_for(Duration::from_secs(60), || checkpoint(dir).is_some()
            && sim.role_sets().len() >= expected.len() / 4),
        "no progress\n{}",
        service.log_text()
    );
    service.signal("KILL");
    assert!(service.wait_exit(Duration::from_secs(10)).is_some());
    let at_kill = checkpoint(dir).unwrap_or_default();
    let passed = offsets
        .iter()
        .position(|o| *o == at_kill)
        .unwrap_or_else(|| panic!("the checkpoint {at_kill} is no offset of the stream"));
    let unacknowledged = events.len() - passed - 1;
    assert!(
        unacknowledged > 0,
        "the kill came after everything settled: nothing to prove"
    );
    let before = sim.stats();
    sim.apply_control(&ControlRequest {
        rate_per_second: Some(1000.0),
        burst: Some(200),
        latency_ms: Some(0),
        ..ControlRequest::default()
    });
    let service = scene.start(&config, "run-2.log");
    wait_roles(sim, &expected, &service, Duration::from_secs(120));
    assert!(wait_for(
        Duration::from_secs(20),
        || service.metric(RECEIVED, SOURCE) as usize >= unacknowledged
    ));
    assert_eq!(
        service.metric(RECEIVED, SOURCE) as usize,
        unacknowledged,
        "the restart read exactly the events after the checkpoint"
    );
    let repeated = sim.stats().duplicate_assignments - before.duplicate_assignments;
    assert!(
        repeated <= unacknowledged as u64,
        "{repeated} repeated writes for {unacknowledged} unacknowledged events"
    );
    scene.end(&expected, &service);
}

#[test]
fn an_expired_checkpoint_is_counted_and_logged_with_the_gap_and_reading_resumes_by_time() {
    let scene = Scene::new("events-expired", None);
    let (sim, dir) = (&scene.sim, &scene.dir);
    let (parts, all) = batches(90, 3);
    append(sim, &parts[0]);
    let config = scene.config("");
    let mut service = scene.start(&config, "run-1.log");
    wait_roles(
        sim,
        &expected_of(&parts[0], &all),
        &service,
        Duration::from_secs(60),
    );
    service.signal("TERM");
    assert!(service.wait_exit(Duration::from_secs(30)).is_some());
    assert!(checkpoint(dir).is_some());
    // While the reader is down, events arrive and expire before it is back (the gap: their
    // users are `reconcile`'s), then new ones arrive.
    append(sim, &parts[1]);
    sim.control_events(EventsControl {
        expire_all: true,
        ..sim.events_control()
    });
    append(sim, &parts[2]);
    let mut expected = expected_of(&parts[0], &all);
    expected.extend(expected_of(&parts[2], &all));
    let service = scene.start(&config, "run-2.log");
    wait_roles(sim, &expected, &service, Duration::from_secs(60));
    assert_eq!(
        service.metric("auth0_default_roles_auth0_events_gaps_total", ""),
        1.0
    );
    let log = service.log_text();
    assert!(
        log.contains("offset has expired")
            && log.contains("gap_from=")
            && log.contains("reconcile"),
        "{log}"
    );
    assert!(
        log.contains("events between these times may have been lost"),
        "the end of the gap is logged with the first event read: {log}"
    );
    scene.end(&expected, &service);
}

#[test]
fn read_events_removed_pauses_the_source_and_granted_back_resumes_it() {
    let scene = Scene::new("events-scope", Some(20));
    let sim = &scene.sim;
    let (parts, expected) = batches(40, 2);
    append(sim, &parts[0]);
    let config = scene.config("");
    let service = scene.start(&config, "run-1.log");
    wait_roles(
        sim,
        &expected_of(&parts[0], &expected),
        &service,
        Duration::from_secs(60),
    );
    sim.apply_control(&ControlRequest {
        denied_scopes: Some(vec!["read:events".to_owned()]),
        ..ControlRequest::default()
    });
    sim.control_events(EventsControl {
        close_all: true,
        ..sim.events_control()
    });
    append(sim, &parts[1]);
    service.assert_not_ready_because("scope");
    assert!(
        wait_for(Duration::from_secs(10), || service.metric(
            "auth0_default_roles_mgmt_api_blocked",
            "reason=\"scope\""
        ) == 1.0),
        "{}",
        service.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sim.role_sets(),
        expected_of(&parts[0], &expected),
        "nothing read while the scope is missing"
    );
    assert!(service.log_text().contains("read:events"));
    sim.apply_control(&ControlRequest {
        denied_scopes: Some(Vec::new()),
        ..ControlRequest::default()
    });
    wait_roles(sim, &expected, &service, Duration::from_secs(90));
    service.wait_ready();
    scene.end(&expected, &service);
}

#[test]
fn a_403_for_the_connection_limit_is_waited_out_and_not_taken_for_a_missing_scope() {
    let scene = Scene::new("events-limit", None);
    let sim = &scene.sim;
    // Another reader holds the plan's only connection.
    sim.control_events(EventsControl {
        max_connections: 0,
        ..sim.events_control()
    });
    let (parts, expected) = batches(20, 1);
    append(sim, &parts[0]);
    let config = scene.config("");
    let service = scene.start(&config, "run-1.log");
    let waits = |s: &Service| {
        s.metric(
            "auth0_default_roles_auth0_events_connection_limit_waits_total",
            "",
        )
    };
    assert!(
        wait_for(Duration::from_secs(30), || waits(&service) >= 2.0),
        "{}",
        service.log_text()
    );
    assert_eq!(
        service.metric("auth0_default_roles_mgmt_api_blocked", "reason=\"scope\""),
        0.0,
        "the connection limit is not the scope"
    );
    let ready = service.get("/readyz").map(|(_, b)| b).unwrap_or_default();
    assert!(!ready.contains("scope"), "{ready}");
    assert!(
        service
            .log_text()
            .contains("concurrent Events API connections are all taken"),
        "{}",
        service.log_text()
    );
    assert!(sim.role_sets().is_empty());
    // The other reader lets go.
    sim.control_events(EventsControl {
        max_connections: 1,
        ..sim.events_control()
    });
    wait_roles(sim, &expected, &service, Duration::from_secs(60));
    service.wait_ready();
    scene.end(&expected, &service);
}

/// The server ends connections with `event: error` (every 7 events here): each is logged with
/// what it said, counted as a `stream_error` reconnection, and the next connection resumes
/// after the last offset received: every event is read once and every user gets their roles.
#[test]
fn an_event_error_message_is_logged_counted_and_reconnected_from_losing_nothing() {
    let scene = Scene::new("events-error", None);
    let (sim, dir) = (&scene.sim, &scene.dir);
    sim.control_events(EventsControl {
        error_after_events: Some(7),
        ..sim.events_control()
    });
    let (parts, expected) = batches(60, 2);
    let mut offsets = append(sim, &parts[0]);
    let config = scene.config("");
    let service = scene.start(&config, "run-1.log");
    service.wait_ready();
    offsets.extend(append(sim, &parts[1]));
    wait_roles(sim, &expected, &service, Duration::from_secs(90));
    let newest = offsets.last().cloned();
    assert!(
        wait_for(Duration::from_secs(20), || checkpoint(dir) == newest),
        "the checkpoint never reached the newest offset: {:?}\n{}",
        checkpoint(dir),
        service.log_text()
    );
    let events = offsets.len();
    let errors = sim.events_state().errors_sent;
    assert!(
        errors >= (events / 7) as u64 - 1,
        "{errors} `event: error` messages for {events} events at one per 7"
    );
    let stream_errors = |s: &Service| {
        s.metric(
            "auth0_default_roles_auth0_events_reconnects_total",
            "reason=\"stream_error\"",
        )
    };
    assert!(
        wait_for(Duration::from_secs(10), || stream_errors(&service)
            == errors as f64),
        "each `event: error` is counted once: {} counted, {errors} sent",
        stream_errors(&service)
    );
    assert_eq!(
        service.metric(RECEIVED, SOURCE) as usize,
        events,
        "each event once: every reconnection resumed after the last offset received"
    );
    let log = service.log_text();
    assert!(
        log.contains("the Events API ended the stream with an error; reconnecting")
            && log.contains("An internal error occurred"),
        "{log}"
    );
    assert_eq!(sim.stats().duplicate_assignments, 0);
    assert_eq!(
        service.metric("auth0_default_roles_dead_letters_total", ""),
        0.0
    );
    scene.end(&expected, &service);
}

#[test]
fn a_malformed_data_line_is_dead_lettered_while_its_neighbours_are_processed() {
    let scene = Scene::new("events-malformed", None);
    let (sim, dir) = (&scene.sim, &scene.dir);
    let (parts, expected) = batches(6, 2);
    let mut malformed: Value = serde_json::from_str(MALFORMED).unwrap_or_else(|e| panic!("{e}"));
    malformed["time"] = json!(now_rfc3339());
    let mut offsets = append(sim, &parts[0]);
    offsets.extend(append(
        sim,
        &[
            json!({"raw_data": "{\"offset\": not json", "type": "user.created"}),
            malformed,
        ],
    ));
    offsets.extend(append(sim, &parts[1]));
    let config = scene.config("");
    let service = scene.start(&config, "run-1.log");
    wait_roles(sim, &expected, &service, Duration::from_secs(60));
    let newest = offsets.last().cloned();
    assert!(
        wait_for(Duration::from_secs(20), || checkpoint(dir) == newest),
        "the checkpoint passes the dead letters once they are written: {:?}",
        checkpoint(dir)
    );
    let text = std::fs::read_to_string(dir.join("events.checkpoint.dead-letters.jsonl"))
        .unwrap_or_default();
    let mut lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // Events without a user run in parallel: their dead letters in offset order.
    lines.sort_by_key(|l| l["offset"].as_str().unwrap_or_default().to_owned());
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["reason"], "invalid");
    assert_eq!(lines[0]["data"], "{\"offset\": not json");
    assert_eq!(
        lines[0]["offset"].as_str(),
        Some(offsets[parts[0].len()].as_str())
    );
    assert!(lines[1]["data"]
        .as_str()
        .is_some_and(|d| d.contains("evt_broken")));
    assert_eq!(
        service.metric("auth0_default_roles_dead_letters_total", ""),
        2.0
    );
    // One reader per checkpoint: a second is refused (exit 2).
    let config = scene.config("");
    let mut second = scene.start(&config, "run-2.log");
    let status = second.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "{}",
        second.log_text()
    );
    assert!(second
        .log_text()
        .contains("another reader holds the checkpoint"));
    scene.end(&expected, &service);
}

#[test]
fn a_reader_that_lost_its_checkpoint_file_resumes_from_the_ledgers_copy() {
    let scene = Scene::new("events-ledger", None);
    let (sim, dir) = (&scene.sim, &scene.dir);
    let (parts, all) = batches(30, 2);
    let offsets = append(sim, &parts[0]);
    let (path, metrics) = scene.config("");
    let ledger = format!(
        "\n[ledger]\nurl = \"sqlite://{}\"\n",
        dir.join("ledger.db").display()
    );
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, format!("{text}{ledger}")).unwrap_or_else(|e| panic!("{e}"));
    let config = (path, metrics);
    let mut service = scene.start(&config, "run-1.log");
    wait_roles(
        sim,
        &expected_of(&parts[0], &all),
        &service,
        Duration::from_secs(60),
    );
    let newest = offsets.last().cloned();
    assert!(wait_for(Duration::from_secs(20), || checkpoint(dir) == newest));
    service.signal("TERM");
    assert!(service.wait_exit(Duration::from_secs(30)).is_some());
    // A new volume: the file is gone, the ledger still knows the place.
    std::fs::remove_file(dir.join("events.checkpoint")).unwrap_or_else(|e| panic!("{e}"));
    append(sim, &parts[1]);
    let service = scene.start(&config, "run-2.log");
    wait_roles(sim, &all, &service, Duration::from_secs(60));
    assert_eq!(
        service.metric(RECEIVED, SOURCE) as usize,
        parts[1].len(),
        "only the events after the ledger's checkpoint\n{}",
        service.log_text()
    );
    assert!(service
        .log_text()
        .contains("resuming from the checkpoint the ledger keeps"));
    scene.end(&all, &service);
}
