//! The `run` command against a real Kafka-protocol broker (tansu) and the Management API
//! simulator: delivery, crash recovery, consumer-group failover, dead letters, outages,
//! graceful shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use auth0_default_roles::generate::{self, Stream};
use mgmt_sim::{RunningSimulator, SeedUser, SimConfig, Simulator};
use test_harness::*;

const PARTITIONS: i32 = 3;

/// One test's world: a broker with its topics, a simulated tenant, a directory.
struct World {
    rt: tokio::runtime::Runtime,
    sim: Simulator,
    running: Option<RunningSimulator>,
    broker: Broker,
    dir: PathBuf,
    topic: String,
    dlq: String,
    group: String,
    /// One past the last offset produced, per partition.
    ends: std::sync::Mutex<BTreeMap<i32, i64>>,
}

impl World {
    fn new(name: &str, sim_config: SimConfig, seed_users: Vec<SeedUser>) -> World {
        let dir = temp_dir(name);
        let broker = Broker::start(&dir);
        let topic = format!("auth0-logs-{name}");
        let dlq = format!("{topic}-dlq");
        broker.create_topic(&topic, PARTITIONS as u32);
        broker.create_topic(&dlq, 1);
        let rt = runtime();
        let (sim, running) = start_tenant(&rt, sim_config, seed_users);
        World {
            rt,
            sim,
            running: Some(running),
            broker,
            dir,
            topic,
            dlq,
            group: format!("adr-{name}"),
            ends: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    fn sim_url(&self) -> String {
        self.running
            .as_ref()
            .map(|r| r.base_url.clone())
            .unwrap_or_default()
    }

    fn config(&self, name: &str, metrics_port: u16, dlq: bool, extra: &str) -> PathBuf {
        write_config(
            &self.dir,
            name,
            &self.sim_url(),
            &self.broker.bootstrap(),
            &self.topic,
            &self.group,
            dlq.then_some(self.dlq.as_str()),
            metrics_port,
            extra,
        )
    }

    fn service(&self, name: &str, dlq: bool, extra: &str) -> Service {
        let port = free_port();
        let config = self.config(name, port, dlq, extra);
        Service::start(&config, port, self.dir.join(format!("{name}.log")))
    }

    fn produce(&self, records: &[generate::Record]) {
        let records: Vec<(Option<String>, Vec<u8>)> = records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        let ends = produce(&self.broker.bootstrap(), &self.topic, &records);
        let mut all = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        for (p, end) in ends {
            let e = all.entry(p).or_insert(0);
            *e = (*e).max(end);
        }
    }

    /// One past the last offset produced, per partition (-1 where nothing was produced).
    fn ends(&self) -> Vec<i64> {
        let all = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        (0..PARTITIONS)
            .map(|p| all.get(&p).copied().unwrap_or(-1))
            .collect()
    }

    /// Users holding roles in the simulated tenant, as sets.
    fn tenant(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.sim.role_sets()
    }

    fn all_committed(&self) -> bool {
        let done = committed(
            &self.broker.bootstrap(),
            &self.group,
            &self.topic,
            PARTITIONS,
        );
        self.ends() == done
    }

    /// Waits until every eligible user holds exactly the expected roles and every offset is
    /// committed; panics with the state and the service's metrics and log otherwise.
    fn wait_done(&self, stream: &Stream, service: &Service) {
        self.wait_done_within(Duration::from_secs(90), stream, service);
    }

    /// [`World::wait_done`] with another patience.
    fn wait_done_within(&self, patience: Duration, stream: &Stream, service: &Service) {
        assert!(
            wait_for(patience, || self.tenant() == stream.expected
                && self.all_committed()),
            "not done: {} of {} users hold roles, committed {:?} of {:?}\n{}\n{}",
            self.tenant().len(),
            stream.expected.len(),
            committed(
                &self.broker.bootstrap(),
                &self.group,
                &self.topic,
                PARTITIONS
            ),
            self.ends(),
            service.snapshot(),
            service.log_text()
        );
    }

    fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown());
        }
    }
}

/// The addresses at `domain` that `log` writes in full: any `name@domain` but the redacted
/// `*@domain`, quoted or not.
fn leaked_addresses(log: &str, domain: &str) -> Vec<String> {
    let at = format!("@{domain}");
    log.match_indices(&at)
        .filter_map(|(i, _)| {
            let local: String = log[..i]
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || "._%+-*!#$&/?^`{|}~_".contains(*c))
                .collect::<Vec<char>>()
                .into_iter()
                .rev()
                .collect();
            (!local.is_empty() && local != "*").then(|| format!("{local}{at}"))
        })
        .collect()
}

#[test]
fn the_leak_check_catches_addresses_with_and_without_quotes() {
    let d = "partner.example";
    assert!(leaked_addresses("email=*@partner.example roles", d).is_empty());
    assert!(leaked_addresses("email=\"*@partner.example\"", d).is_empty());
    assert_eq!(
        leaked_addresses("user_name=bob_smith@partner.example x", d),
        ["bob_smith@partner.example"]
    );
    assert_eq!(
        leaked_addresses("user_name=\"a+b@partner.example\"", d),
        ["a+b@partner.example"]
    );
    assert_eq!(leaked_addresses("to bob@partner.example.", d).len(), 1);
}

fn sim_accepting_anyone() -> SimConfig {
    SimConfig {
        accept_any_user: true,
        ..SimConfig::default()
    }
}

#[test]
fn a_thousand_mixed_events_give_every_eligible_user_exactly_their_roles() {
    let world = World::new("thousand", sim_accepting_anyone(), Vec::new());
    let stream = generate::mixed(11, 1000, 2);
    world.produce(&stream.records);
    let mut service = world.service("svc", true, "");
    service.wait_ready();
    world.wait_done(&stream, &service);
    assert_tenant_holds_exactly(&world.sim, &stream.expected, &[&service]);

    // The two broken records went to the dead-letter topic with their origin.
    let dead = read_dead_letters(
        &world.broker.bootstrap(),
        &world.dlq,
        2,
        Duration::from_secs(20),
    );
    assert_eq!(dead.len(), 2, "dead letters: {dead:?}");
    for d in &dead {
        assert_eq!(
            d.headers.get("dlq.reason").map(String::as_str),
            Some("invalid")
        );
        assert_eq!(d.headers.get("dlq.original.topic"), Some(&world.topic));
        assert!(d.headers.contains_key("dlq.original.offset"));
        assert!(String::from_utf8_lossy(&d.value).starts_with("{\"log_id\": \"broken-"));
    }

    // Metrics tell the same story.
    let received = service.metric(
        "auth0_default_roles_events_received_total",
        "source=\"kafka\"",
    );
    assert_eq!(received as usize, stream.records.len());
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"invalid\""
        ),
        2.0
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_dead_letters_total",
            "reason=\"invalid\""
        ),
        2.0
    );
    assert_eq!(
        service.metric("auth0_default_roles_kafka_assigned_partitions", ""),
        3.0
    );
    assert!(
        service.metric(
            "auth0_default_roles_kafka_offset_commits_total",
            "result=\"ok\""
        ) >= 1.0
    );
    let assigned = service.metric("auth0_default_roles_role_assignments_total", "");
    let expected_pairs: usize = stream.expected.values().map(BTreeSet::len).sum();
    assert_eq!(assigned as usize, expected_pairs, "each role given once");
    let metrics = service.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    assert!(
        metrics.contains("auth0_default_roles_kafka_consumer_lag{"),
        "{metrics}"
    );
    // The audit trail: one info line per assignment, email redacted to its domain.
    let log = service.log_text();
    assert!(log.contains("roles assigned"), "{log}");
    let leaked = leaked_addresses(&log, "partner.example");
    assert!(leaked.is_empty(), "emails leaked into the log: {leaked:?}");
    assert!(log.contains("*@partner.example"));

    service.signal("TERM");
    let status = service.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        service.log_text()
    );
    world.shutdown();
}

#[test]
fn sigkill_mid_run_then_restart_loses_no_user() {
    // A slow tenant keeps work in flight when the process dies.
    let world = World::new(
        "sigkill",
        SimConfig {
            latency_ms: 15,
            ..sim_accepting_anyone()
        },
        Vec::new(),
    );
    let stream = generate::mixed(12, 1000, 0);
    world.produce(&stream.records);
    let first = world.service("first", false, "max_inflight = 50");
    assert!(
        wait_for(Duration::from_secs(60), || world.tenant().len()
            >= stream.expected.len() / 5),
        "no progress before the kill\n{}\n{}",
        first.snapshot(),
        first.log_text()
    );
    let before = world.tenant().len();
    first.signal("KILL");
    drop(first);
    assert!(
        before < stream.expected.len(),
        "the run finished before the kill; the test proves nothing"
    );
    let second = world.service("second", false, "");
    world.wait_done(&stream, &second);
    assert_tenant_holds_exactly(&world.sim, &stream.expected, &[&second]);
    // The restart redelivered what the killed process had not committed: dedup in the new
    // process cannot know it, so the tenant saw some repeated (idempotent) assignments at most.
    world.shutdown();
}

#[test]
fn two_consumers_split_the_partitions_and_one_takes_over_when_the_other_stops() {
    let world = World::new("twogroup", sim_accepting_anyone(), Vec::new());
    let stream = generate::mixed(13, 1200, 0);
    let (first_half, second_half) = stream.records.split_at(stream.records.len() / 2);
    let mut a = world.service("a", false, "");
    let mut b = world.service("b", false, "");
    a.wait_ready();
    b.wait_ready();
    assert!(
        wait_for(Duration::from_secs(60), || {
            let pa = a.metric("auth0_default_roles_kafka_assigned_partitions", "");
            let pb = b.metric("auth0_default_roles_kafka_assigned_partitions", "");
            pa >= 1.0 && pb >= 1.0 && pa + pb == 3.0
        }),
        "partitions not split: a={} b={}\n{}\n----\n{}",
        a.metric("auth0_default_roles_kafka_assigned_partitions", ""),
        b.metric("auth0_default_roles_kafka_assigned_partitions", ""),
        a.log_text(),
        b.log_text()
    );
    world.produce(first_half);
    assert!(
        wait_for(Duration::from_secs(60), || {
            let got = a.metric("auth0_default_roles_events_received_total", "")
                + b.metric("auth0_default_roles_events_received_total", "");
            got as usize == first_half.len() && world.all_committed()
        }),
        "first half not consumed by the pair"
    );
    let by_a = a.metric("auth0_default_roles_events_received_total", "");
    let by_b = b.metric("auth0_default_roles_events_received_total", "");
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "both members work: a={by_a} b={by_b}"
    );

    // B leaves cleanly; A takes all partitions and the rest of the stream.
    b.signal("TERM");
    assert_eq!(
        b.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()),
        Some(0)
    );
    world.produce(second_half);
    world.wait_done(&stream, &a);
    assert_eq!(
        a.metric("auth0_default_roles_kafka_assigned_partitions", ""),
        3.0
    );
    assert!(
        a.metric(
            "auth0_default_roles_kafka_rebalances_total",
            "kind=\"assign\""
        ) >= 2.0
    );
    assert_tenant_holds_exactly(&world.sim, &stream.expected, &[&a]);
    a.signal("TERM");
    assert_eq!(
        a.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()),
        Some(0)
    );
    world.shutdown();
}

#[test]
fn poison_and_permanently_failing_events_go_to_the_dead_letter_topic_and_consumption_goes_on() {
    // A strict tenant: only the seeded users exist, so an unknown user is a permanent 404.
    let stream = generate::mixed(14, 300, 1);
    let seeded: Vec<SeedUser> = stream.expected.keys().map(SeedUser::new).collect();
    let world = World::new("poison", SimConfig::default(), seeded);
    let ghost = br#"{"log_id":"90020261123ghost","data":{"type":"ss","date":"2026-11-23T10:00:00.000Z","connection":"Username-Password-Authentication","strategy":"auth0","strategy_type":"database","user_id":"auth0|ghost","user_name":"ghost@mail.example","log_id":"90020261123ghost"}}"#;
    let mut records = vec![generate::Record {
        key: Some("auth0|ghost".to_owned()),
        value: ghost.to_vec(),
    }];
    records.extend(stream.records.iter().cloned());
    world.produce(&records);
    let service = world.service("svc", true, "");
    world.wait_done(&stream, &service);
    let dead = read_dead_letters(
        &world.broker.bootstrap(),
        &world.dlq,
        2,
        Duration::from_secs(20),
    );
    let reasons: BTreeSet<String> = dead
        .iter()
        .filter_map(|d| d.headers.get("dlq.reason").cloned())
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(reasons, ["failed", "invalid"].map(String::from).into());
    let failed = dead
        .iter()
        .find(|d| d.headers.get("dlq.reason").map(String::as_str) == Some("failed"))
        .unwrap_or_else(|| panic!("no failed dead letter"));
    assert_eq!(failed.key.as_deref(), Some(&b"auth0|ghost"[..]));
    assert_eq!(failed.value, ghost.to_vec(), "the original bytes");
    assert!(failed
        .headers
        .get("dlq.error")
        .is_some_and(|e| !e.is_empty()));
    assert_eq!(
        service.metric(
            "auth0_default_roles_dead_letters_total",
            "reason=\"failed\""
        ),
        1.0
    );
    world.shutdown();
}

#[test]
fn a_ten_second_tenant_outage_pauses_intake_shows_in_readiness_and_loses_nothing() {
    let world = World::new("outage", sim_accepting_anyone(), Vec::new());
    let stream = generate::mixed(15, 600, 0);
    let (first, rest) = stream.records.split_at(100);
    let service = world.service("svc", false, "max_inflight = 100");
    service.wait_ready();
    world.produce(first);
    assert!(wait_for(Duration::from_secs(60), || world.all_committed()));
    world.sim.set_down(true);
    world.produce(rest);
    assert!(
        wait_for(Duration::from_secs(20), || {
            service.metric("auth0_default_roles_mgmt_api_failing", "") == 1.0
                && service.metric("auth0_default_roles_kafka_paused_partitions", "") == 3.0
        }),
        "no pause during the outage\n{}",
        service.log_text()
    );
    service.assert_not_ready_because("Management API");
    // Paused: once what was already fetched is in, nothing more comes in during the outage.
    std::thread::sleep(Duration::from_secs(1));
    let during = service.metric("auth0_default_roles_events_received_total", "");
    std::thread::sleep(Duration::from_secs(7));
    let later = service.metric("auth0_default_roles_events_received_total", "");
    assert_eq!(during, later, "intake was not paused");
    assert!(
        (later as usize) < stream.records.len(),
        "everything was taken despite the pause"
    );
    world.sim.set_down(false);
    world.wait_done(&stream, &service);
    assert_eq!(service.get("/readyz").map(|(s, _)| s), Some(200));
    assert_eq!(
        service.metric("auth0_default_roles_kafka_paused_partitions", ""),
        0.0
    );
    assert!(service.metric("auth0_default_roles_mgmt_api_retries_total", "") > 0.0);
    world.shutdown();
}

/// Four messages in flight at most and every tenant call 20 ms: intake is full most of the
/// time, for a few milliseconds each. The consumer stops reading for those moments (librdkafka
/// keeps its prefetch) instead of pausing its partitions, which would throw the prefetch away
/// (`SHORT_STOP_GRACE`); it counts the stops in its exit log.
#[test]
fn a_full_intake_that_keeps_moving_stops_reading_for_a_moment_and_pauses_no_partition() {
    let world = World::new(
        "short-stop",
        SimConfig {
            latency_ms: 20,
            ..sim_accepting_anyone()
        },
        Vec::new(),
    );
    let stream = generate::mixed(17, 400, 0);
    world.produce(&stream.records);
    let mut service = world.service("svc", false, "max_inflight = 4");
    world.wait_done(&stream, &service);
    assert_eq!(
        service.metric("auth0_default_roles_kafka_paused_partitions", ""),
        0.0
    );
    service.signal("TERM");
    let status = service.wait_exit(Duration::from_secs(20));
    let log = service.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    let stops = logged_number(&log, "left the consumer group", "intake_short_stops");
    assert!(
        stops.is_some_and(|n| n >= 10),
        "short stops {stops:?}: {log}"
    );
    // The shutdown pauses for good; any other pause is one for fullness. One is allowed: a
    // machine loaded by a parallel test run can stall the tasks for the whole grace.
    let pauses = log
        .lines()
        .filter(|l| l.contains("intake paused") && !l.contains("shutting down"))
        .count();
    assert!(pauses <= 1, "{pauses} pauses: {log}");
    world.shutdown();
}

#[test]
fn sigterm_finishes_in_flight_work_commits_and_exits_zero() {
    let world = World::new(
        "sigterm",
        SimConfig {
            latency_ms: 20,
            ..sim_accepting_anyone()
        },
        Vec::new(),
    );
    let stream = generate::mixed(16, 800, 0);
    world.produce(&stream.records);
    let mut service = world.service("svc", false, "max_inflight = 40");
    assert!(wait_for(Duration::from_secs(60), || world.tenant().len() >= 30));
    service.signal("TERM");
    let status = service.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        service.log_text()
    );
    let log = service.log_text();
    assert!(log.contains("left the consumer group"), "{log}");
    assert_eq!(
        logged_number(&log, "stopped", "abandoned"),
        Some(0),
        "work abandoned within the grace: {log}"
    );
    // Progress was committed; what was not is picked up by the next member of the group.
    let done = committed(
        &world.broker.bootstrap(),
        &world.group,
        &world.topic,
        PARTITIONS,
    );
    assert!(done.iter().sum::<i64>() > 0, "nothing committed: {done:?}");
    let next = world.service("next", false, "");
    world.wait_done(&stream, &next);
    world.shutdown();
}

/// Switches the simulated tenant through its admin API's in-process form.
fn control(world: &World, control: mgmt_sim::ControlRequest) {
    world.sim.apply_control(&control);
}

/// Offsets committed so far, summed over the partitions (-1 counted as 0).
fn committed_total(world: &World) -> i64 {
    committed(
        &world.broker.bootstrap(),
        &world.group,
        &world.topic,
        PARTITIONS,
    )
    .into_iter()
    .map(|o| o.max(0))
    .sum()
}

#[test]
fn revoked_credentials_and_a_removed_scope_make_events_wait_then_every_user_gets_the_roles() {
    let world = World::new("service-faults", sim_accepting_anyone(), Vec::new());
    let stream = generate::mixed(31, 600, 0);
    let third = stream.records.len() / 3;
    let (first, rest) = stream.records.split_at(third);
    let (second, last) = rest.split_at(third);
    let service = world.service("svc", false, "max_inflight = 100");
    service.wait_ready();
    world.produce(first);
    assert!(wait_for(Duration::from_secs(60), || world.all_committed()));

    for (cause, switch_on, switch_off, records) in [
        (
            "credentials",
            mgmt_sim::ControlRequest {
                credentials_revoked: Some(true),
                ..Default::default()
            },
            mgmt_sim::ControlRequest {
                credentials_revoked: Some(false),
                ..Default::default()
            },
            second,
        ),
        (
            "scope",
            mgmt_sim::ControlRequest {
                denied_scopes: Some(
                    ["create:role_members", "update:users", "update:roles"]
                        .map(str::to_owned)
                        .to_vec(),
                ),
                ..Default::default()
            },
            mgmt_sim::ControlRequest {
                denied_scopes: Some(Vec::new()),
                ..Default::default()
            },
            last,
        ),
    ] {
        let before = committed_total(&world);
        control(&world, switch_on);
        world.produce(records);
        let gauge = format!("reason=\"{cause}\"");
        assert!(
            wait_for(Duration::from_secs(30), || {
                service.metric("auth0_default_roles_mgmt_api_blocked", &gauge) == 1.0
            }),
            "{cause}: the service fault did not show\n{}\n{}",
            service.snapshot(),
            service.log_text()
        );
        service.assert_not_ready_because(cause);
        // The events wait: nothing past the first waiting one is committed while blocked.
        std::thread::sleep(Duration::from_secs(4));
        assert!(
            service.metric("auth0_default_roles_mgmt_api_blocked", &gauge) == 1.0,
            "{cause}: still refused, still blocked"
        );
        let during = committed_total(&world);
        assert!(
            during - before < records.len() as i64,
            "{cause}: {} of {} offsets committed while the tenant refused the service",
            during - before,
            records.len()
        );
        assert!(
            !world.all_committed(),
            "{cause}: everything committed while blocked"
        );
        control(&world, switch_off);
        assert!(
            wait_for(Duration::from_secs(90), || world.all_committed()),
            "{cause}: not resumed\n{}\n{}",
            service.snapshot(),
            service.log_text()
        );
        assert_eq!(
            service.metric("auth0_default_roles_mgmt_api_blocked", &gauge),
            0.0,
            "{cause}: cleared"
        );
    }
    world.wait_done(&stream, &service);
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"failed\""
        ),
        0.0,
        "a service fault never fails an event\n{}",
        service.snapshot()
    );
    assert_eq!(service.get("/readyz").map(|(s, _)| s), Some(200));
    assert!(
        service.log_text().contains("to fix"),
        "the warning says what to fix"
    );
    world.shutdown();
}

#[test]
fn garbage_rate_limit_headers_and_cut_off_bodies_never_panic_and_lose_no_user() {
    let world = World::new(
        "garbage",
        SimConfig {
            accept_any_user: true,
            rate_per_second: 20.0,
            burst: 5,
            garbage_rate_limit_headers: Some("NaN".to_owned()),
            ..SimConfig::default()
        },
        Vec::new(),
    );
    let stream = generate::mixed(32, 300, 0);
    let service = world.service("svc", false, "");
    service.wait_ready();
    // How many calls the service makes, and how close together, depends on batching and on the
    // machine; a bucket of one refilled every two seconds makes sure some of them meet a 429
    // with the garbage headers, and half of the bodies are cut off. Once both have happened,
    // the limit goes back to 20/s, burst 5, and one body in ten is cut: at one in two, a call
    // failing eight times in a row backs off past the test's patience (the cap is 60 s).
    control(
        &world,
        mgmt_sim::ControlRequest {
            rate_per_second: Some(0.5),
            burst: Some(1),
            cut_body_rate: Some(0.5),
            ..Default::default()
        },
    );
    world.produce(&stream.records);
    assert!(
        wait_for(Duration::from_secs(60), || {
            let stats = world.sim.stats();
            stats.rate_limited > 0 && stats.bodies_cut > 0
        }),
        "the faults happened: {:?}",
        world.sim.stats()
    );
    control(
        &world,
        mgmt_sim::ControlRequest {
            rate_per_second: Some(20.0),
            burst: Some(5),
            cut_body_rate: Some(0.1),
            ..Default::default()
        },
    );
    // A call that met several 429s without a usable reset header while the bucket was at one
    // call per 2 s has doubled its wait up to the 60 s cap; its event (and its partition's
    // offset) waits that long after the limit is back: more than wait_done's 90 s can hold.
    world.wait_done_within(Duration::from_secs(200), &stream, &service);
    assert_eq!(
        service.metric("auth0_default_roles_task_panics_total", ""),
        0.0
    );
    assert!(
        !service.log_text().contains("panicked"),
        "{}",
        service.log_text()
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"failed\""
        ),
        0.0
    );
    world.shutdown();
}

#[test]
fn at_start_up_revoked_credentials_or_a_missing_scope_stop_with_exit_2_and_the_reason() {
    let world = World::new("startup-faults", sim_accepting_anyone(), Vec::new());
    for (name, switch, words) in [
        (
            "revoked",
            mgmt_sim::ControlRequest {
                credentials_revoked: Some(true),
                ..Default::default()
            },
            "client id or secret is wrong",
        ),
        (
            "no-read-roles",
            mgmt_sim::ControlRequest {
                credentials_revoked: Some(false),
                denied_scopes: Some(vec!["read:roles".to_owned()]),
                ..Default::default()
            },
            "read:roles",
        ),
    ] {
        control(&world, switch);
        let mut service = world.service(name, false, "");
        let status = service.wait_exit(Duration::from_secs(30));
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "{name}\n{}",
            service.log_text()
        );
        assert!(
            service.log_text().contains(words),
            "{name}: {}",
            service.log_text()
        );
    }
    world.shutdown();
}

#[test]
fn a_missing_dead_letter_topic_stops_the_start_with_exit_2() {
    let world = World::new("no-dlq", sim_accepting_anyone(), Vec::new());
    let port = free_port();
    let config = write_config(
        &world.dir,
        "no-dlq",
        &world.sim_url(),
        &world.broker.bootstrap(),
        &world.topic,
        &world.group,
        Some("no-such-dead-letter-topic"),
        port,
        "",
    );
    let mut service = Service::start(&config, port, world.dir.join("no-dlq.log"));
    let status = service.wait_exit(Duration::from_secs(30));
    let log = service.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(log.contains("no-such-dead-letter-topic"), "{log}");
    world.shutdown();
}

/// A Kafka client librdkafka refuses to create (a property it does not know) stops the start,
/// and the error printed at the edge carries its whole cause chain: the service's words (which
/// client) and librdkafka's (which property). Without a dead-letter topic the consumer's
/// creation fails (exit 1); with one, the check of the topic's client, before (exit 2).
#[test]
fn a_kafka_client_librdkafka_refuses_stops_the_start_and_the_error_carries_its_cause_chain() {
    let world = World::new("bad-property", sim_accepting_anyone(), Vec::new());
    for (name, dlq, code, words) in [
        ("consumer", false, 1, "cannot create the Kafka consumer: "),
        (
            "dlq-client",
            true,
            2,
            "kafka.dead_letter_topic: cannot create the client that checks it: ",
        ),
    ] {
        let port = free_port();
        let config = world.config(name, port, dlq, "");
        let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
        let text = text.replace(
            "[kafka.properties]\n",
            "[kafka.properties]\n\"no.such.property\" = \"1\"\n",
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
        let mut service = Service::start(&config, port, world.dir.join(format!("{name}.log")));
        let status = service.wait_exit(Duration::from_secs(30));
        let log = service.log_text();
        assert_eq!(status.and_then(|s| s.code()), Some(code), "{name}: {log}");
        let line = log
            .lines()
            .find(|l| l.contains(words))
            .unwrap_or_else(|| panic!("{name}: no line with {words:?}: {log}"));
        // librdkafka's words follow the service's on the same line: the cause is kept.
        let cause = &line[line.find(words).unwrap_or_default() + words.len()..];
        assert!(cause.contains("no.such.property"), "{name}: {line}");
    }
    world.shutdown();
}

#[test]
fn a_dead_letter_too_large_for_the_topic_is_sent_truncated_and_consumption_goes_on() {
    let world = World::new("dlq-large", sim_accepting_anyone(), Vec::new());
    let stream = generate::mixed(33, 60, 0);
    // A dead-letter topic that takes at most 100 kB per record (the producer's limit).
    let port = free_port();
    let config = world.config("svc", port, true, "");
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    let text = text.replace(
        "[kafka.properties]\n",
        "[kafka.properties]\n\"message.max.bytes\" = \"100000\"\n",
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let service = Service::start(&config, port, world.dir.join("svc.log"));
    service.wait_ready();
    let mut poison = b"not an auth0 log: ".to_vec();
    poison.resize(150_000, b'x');
    world.produce(&[generate::Record {
        key: Some("auth0|poison".to_owned()),
        value: poison,
    }]);
    world.produce(&stream.records);
    world.wait_done(&stream, &service);
    let dead = read_dead_letters(
        &world.broker.bootstrap(),
        &world.dlq,
        1,
        Duration::from_secs(30),
    );
    assert_eq!(dead.len(), 1, "{}", service.log_text());
    assert_eq!(dead[0].value.len(), 64 * 1024);
    assert_eq!(
        dead[0].headers.get("dlq.truncated").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        dead[0].headers.get("dlq.original.size").map(String::as_str),
        Some("150000")
    );
    world.shutdown();
}

#[test]
fn dead_letters_of_users_created_later_are_processed_again_when_produced_back() {
    // A strict tenant that knows only half of the stream's new users: every eligible event of
    // the others is a permanent 404 and ends `failed`, in the dead-letter topic.
    let stream = generate::mixed(17, 300, 0);
    let users: Vec<String> = stream.expected.keys().cloned().collect();
    let (late, known) = users.split_at(users.len() / 2);
    assert!(!late.is_empty() && !known.is_empty());
    let seeded: Vec<SeedUser> = known.iter().map(SeedUser::new).collect();
    let world = World::new("redrive", SimConfig::default(), seeded);
    world.produce(&stream.records);
    let service = world.service("svc", true, "");
    let expected_known: BTreeMap<String, BTreeSet<String>> = stream
        .expected
        .iter()
        .filter(|(u, _)| known.contains(u))
        .map(|(u, r)| (u.clone(), r.clone()))
        .collect();
    let failed_metric = |s: &Service| {
        s.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"failed\"",
        ) as usize
    };
    assert!(
        wait_for(Duration::from_secs(90), || world.all_committed()
            && world.tenant() == expected_known),
        "first pass not done: {} users hold roles\n{}\n{}",
        world.tenant().len(),
        service.snapshot(),
        service.log_text()
    );
    let failed = failed_metric(&service);
    assert!(
        failed >= late.len(),
        "{failed} failed events for {} unknown users",
        late.len()
    );
    let dead = read_dead_letters(
        &world.broker.bootstrap(),
        &world.dlq,
        failed,
        Duration::from_secs(30),
    );
    assert_eq!(dead.len(), failed, "one dead letter per failed event");
    for d in &dead {
        assert_eq!(
            d.headers.get("dlq.reason").map(String::as_str),
            Some("failed"),
            "{d:?}"
        );
    }
    let dead_users: BTreeSet<String> = dead
        .iter()
        .filter_map(|d| d.key.as_ref())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(
        dead_users,
        late.iter().cloned().collect::<BTreeSet<_>>(),
        "the dead letters are the unknown users' events"
    );

    // The operator's fix: the users exist now, and the dead letters are produced back into the
    // source topic as they are (key and payload), in their order.
    for user in late {
        world.sim.add_user(SeedUser::new(user.as_str()));
    }
    let back: Vec<generate::Record> = dead
        .iter()
        .map(|d| generate::Record {
            key: d
                .key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: d.value.clone(),
        })
        .collect();
    world.produce(&back);

    // The same running service gives every one of them their roles, and fails nothing more.
    world.wait_done(&stream, &service);
    assert_tenant_holds_exactly(&world.sim, &stream.expected, &[&service]);
    assert_eq!(failed_metric(&service), failed, "{}", service.snapshot());
    assert_eq!(
        service.metric(
            "auth0_default_roles_dead_letters_total",
            "reason=\"failed\""
        ) as usize,
        failed
    );
    world.shutdown();
}

#[test]
fn at_start_up_the_dead_letter_topic_is_written_once_with_a_probe_record() {
    let world = World::new("dlq-probe", sim_accepting_anyone(), Vec::new());
    let service = world.service("svc", true, "");
    service.wait_ready();
    let read = read_all(
        &world.broker.bootstrap(),
        &world.dlq,
        1,
        Duration::from_secs(30),
    );
    assert_eq!(read.len(), 1, "{}", service.log_text());
    assert!(read[0].value.is_empty());
    assert_eq!(read[0].key, None);
    assert_eq!(
        read[0].headers.get("dlq.probe").map(String::as_str),
        Some("true")
    );
    assert!(read_dead_letters(
        &world.broker.bootstrap(),
        &world.dlq,
        1,
        Duration::from_secs(2)
    )
    .is_empty());
    world.shutdown();
}

/// Starts the service of `world` with the test-only panic on `log_id` (debug builds).
fn service_panicking_on(world: &World, name: &str, dlq: bool, log_id: &str) -> Service {
    let port = free_port();
    let config = world.config(name, port, dlq, "");
    Service::start_command(
        "run",
        &config,
        port,
        world.dir.join(format!("{name}.log")),
        &[("AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID", log_id)],
    )
}

#[test]
fn a_message_whose_task_panics_every_time_is_dead_lettered_after_three_lost_tasks_and_its_neighbours_are_processed(
) {
    let stream = generate::mixed(61, 300, 0);
    let (poisoned, poisoned_user) = crate::supervision::poisoned_record(&stream);
    let world = World::new("panic-dlq", sim_accepting_anyone(), Vec::new());
    world.produce(&stream.records);
    let service = service_panicking_on(&world, "svc", true, &poisoned);
    let dead = read_dead_letters(
        &world.broker.bootstrap(),
        &world.dlq,
        1,
        Duration::from_secs(90),
    );
    assert_eq!(dead.len(), 1, "{dead:?}\n{}", service.log_text());
    assert_eq!(
        dead[0].headers.get("dlq.reason").map(String::as_str),
        Some("failed")
    );
    assert!(String::from_utf8_lossy(&dead[0].value).contains(&poisoned));
    assert!(
        wait_for(
            Duration::from_secs(60),
            || crate::supervision::others_hold_their_roles(
                &world.tenant(),
                &stream,
                &poisoned_user
            ) && world.all_committed()
        ),
        "{}\n{}",
        service.snapshot(),
        service.log_text()
    );
    assert_eq!(
        service.metric("auth0_default_roles_task_panics_total", "source=\"kafka\""),
        3.0,
        "{}",
        service.log_text()
    );
    world.shutdown();
}

#[test]
fn without_a_dead_letter_topic_a_message_whose_task_panics_is_held_unacknowledged_and_counted() {
    let stream = generate::mixed(67, 300, 0);
    let (poisoned, poisoned_user) = crate::supervision::poisoned_record(&stream);
    let world = World::new("panic-held", sim_accepting_anyone(), Vec::new());
    world.produce(&stream.records);
    let service = service_panicking_on(&world, "svc", false, &poisoned);
    assert!(
        wait_for(
            Duration::from_secs(90),
            || crate::supervision::others_hold_their_roles(
                &world.tenant(),
                &stream,
                &poisoned_user
            ) && service.metric(
                "auth0_default_roles_deliveries_held_total",
                "source=\"kafka\""
            ) == 1.0
        ),
        "{}\n{}",
        service.snapshot(),
        service.log_text()
    );
    // Its partition commits no further than the held message: never dropped.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!world.all_committed(), "the held message was committed");
    world.shutdown();
}

/// A broker that is down makes librdkafka repeat its connection errors every few hundred
/// milliseconds. The long-running service logs the first of each kind and at most one per
/// 10 s after it, and counts every one in `library_errors_total{library="librdkafka"}`.
#[test]
fn a_dead_broker_is_logged_once_per_ten_seconds_and_every_error_is_counted() {
    let rt = runtime();
    let (_sim, running) = open_tenant(&rt);
    let dir = temp_dir("kafka-dead-broker");
    let metrics_port = free_port();
    let dead = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        &dir,
        "dead-broker",
        &running.base_url,
        &dead,
        "auth0-logs",
        "dead-broker",
        None,
        metrics_port,
        "",
    );
    let service = Service::start(&config, metrics_port, dir.join("service.log"));
    let started = std::time::Instant::now();
    let counted = || {
        service.metric(
            "auth0_default_roles_library_errors_total",
            "library=\"librdkafka\"",
        )
    };
    assert!(
        wait_for(Duration::from_secs(60), || counted() >= 20.0),
        "librdkafka's errors were not counted: {}\n{}",
        counted(),
        service.log_text()
    );
    // Long enough for a second window of 10 s to open.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(started.elapsed()));
    let elapsed = started.elapsed().as_secs_f64();
    let log = service.log_text();
    let windows = 1 + (elapsed / 10.0).floor() as usize;
    for kind in [
        "librdkafka: ",
        "Kafka consumer error",
        "Kafka consume error",
    ] {
        let logged = log.lines().filter(|l| l.contains(kind)).count();
        assert!(
            (1..=windows).contains(&logged),
            "{logged} lines of `{kind}` in {elapsed:.1} s (at most {windows}) for {} counted errors:\n{log}",
            counted()
        );
    }
    assert!(
        counted() > (3 * windows) as f64,
        "no more errors counted than logged: {}",
        counted()
    );
    assert!(
        log.contains("counted in library_errors_total"),
        "the log does not say where repeats are counted:\n{log}"
    );
}
