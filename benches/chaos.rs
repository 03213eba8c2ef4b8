//! The chaos soak: `cargo bench --bench chaos`.
//!
//! 1. **Faults.** `run` on a local tansu broker (3 partitions) against the simulator, 50,000
//!    mixed events (about 3,000 users to get roles), while on a schedule: the consumer is
//!    SIGKILLed and restarted every 8 s, a second consumer joins and leaves, the credentials
//!    are revoked for 10 s, a scope is removed for 10 s; throughout, 5 % of calls answer 503
//!    and every 429 carries `Retry-After: NaN`. Prints users right (must be all), duplicate
//!    writes, panics (must be 0) and the time to recover after each service fault.
//! 2. **No faults at ~200 events/s.** Events are produced at a steady rate; prints p50/p99 of
//!    the time from an event's production to its user holding every expected role, and the
//!    service's peak RSS.
//!
//! `CHAOS_EVENTS` changes the size of the first run. Everything is bounded in time.

// A bench's figures are wall-clock time (clippy.toml bans `std::time::Instant` and
// `std::thread::sleep` where tokio's clock is meant): here the wall clock is meant.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use auth0_default_roles::generate;
use mgmt_sim::{ControlRequest, SimConfig, Simulator};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use test_harness::*;

const TOPIC: &str = "auth0-logs-chaos";
const GROUP: &str = "chaos";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    faults();
    steady();
}

/// A `run` config with the client's rate (the harness's fixed one would flood the tenant).
fn config(dir: &Path, name: &str, sim: &str, bootstrap: &str, port: u16, rps: f64) -> PathBuf {
    let policy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        r#"[auth0]
domain = "sim.auth0.local"
client_id = "sim-client"
base_url = "{sim}"
requests_per_second = {rps}
burst = {burst}
batch_window_ms = 100

[source]
type = "kafka"

[kafka]
brokers = "{bootstrap}"
topic = "{TOPIC}"
group_id = "{GROUP}"
commit_interval_ms = 300
shutdown_grace_seconds = 5
max_inflight = 2000

[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"statistics.interval.ms" = "1000"

[metrics]
listen = "127.0.0.1:{port}"

{policy}
"#,
        burst = (rps as u32).max(1)
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// A consumer process and the logs of all its incarnations.
struct Member {
    name: &'static str,
    service: Option<Service>,
    starts: usize,
    logs: Vec<PathBuf>,
    port: u16,
}

impl Member {
    fn new(name: &'static str) -> Member {
        Member {
            name,
            service: None,
            starts: 0,
            logs: Vec::new(),
            port: free_port(),
        }
    }

    fn start(&mut self, dir: &Path, sim: &str, bootstrap: &str) {
        // Above the tenant's 30 requests/s: 429s (with `Retry-After: NaN`) are part of the test.
        let config = config(dir, self.name, sim, bootstrap, self.port, 60.0);
        let log = dir.join(format!("{}-{}.log", self.name, self.starts));
        self.starts += 1;
        self.logs.push(log.clone());
        self.service = Some(Service::start(&config, self.port, log));
    }

    /// Signals the process unless it already exited (a restart while the credentials are
    /// revoked stops with exit 2, as start-up faults do).
    fn signal(&mut self, name: &str) {
        if let Some(service) = self.service.as_mut() {
            if service.wait_exit(Duration::from_millis(1)).is_none() {
                service.signal(name);
                let _ = service.wait_exit(Duration::from_secs(20));
            }
        }
        self.service = None;
    }

    fn metric(&self, name: &str, filter: &str) -> f64 {
        self.service
            .as_ref()
            .map_or(0.0, |s| s.metric(name, filter))
    }

    fn panics(&self) -> usize {
        self.logs
            .iter()
            .map(|l| {
                std::fs::read_to_string(l)
                    .unwrap_or_default()
                    .matches("panicked")
                    .count()
            })
            .sum()
    }
}

fn wait_blocked(member: &Member, reason: &str, cleared: bool, limit: Duration) -> Option<f64> {
    let started = Instant::now();
    let filter = format!("reason=\"{reason}\"");
    while started.elapsed() < limit {
        let value = member.metric("auth0_default_roles_mgmt_api_blocked", &filter);
        if (value == 0.0) == cleared {
            return Some(started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn missing(sim: &Simulator, expected: &BTreeMap<String, BTreeSet<String>>) -> usize {
    let held = sim.role_sets();
    expected
        .iter()
        .filter(|(user, roles)| held.get(*user) != Some(*roles))
        .count()
}

fn faults() {
    let events: usize = std::env::var("CHAOS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    println!("== chaos: {events} events under faults");
    let dir = temp_dir("bench-chaos");
    let broker = Broker::start(&dir);
    broker.create_topic(TOPIC, 3);
    let stream = generate::mostly_noise(77, events, 12);
    let records: Vec<(Option<String>, Vec<u8>)> = stream
        .records
        .iter()
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect();
    let rt = runtime();
    let (sim, running) = start_tenant(
        &rt,
        SimConfig {
            accept_any_user: true,
            rate_per_second: 30.0,
            burst: 10,
            error_rate: 0.05,
            garbage_rate_limit_headers: Some("NaN".to_owned()),
            ..SimConfig::default()
        },
        Vec::new(),
    );
    println!(
        "{} events ({} users to get roles), produced in six parts, one every 10 s, so every fault meets work in flight",
        records.len(),
        stream.expected.len(),
    );
    let parts: Vec<&[(Option<String>, Vec<u8>)]> =
        records.chunks(records.len().div_ceil(6)).collect();
    let mut next_part = 0;
    let (url, bootstrap) = (running.base_url.clone(), broker.bootstrap());
    let mut a = Member::new("a");
    let mut b = Member::new("b");
    a.start(&dir, &url, &bootstrap);
    let started = Instant::now();
    let at = |s: u64| started + Duration::from_secs(s);
    let mut kills = 0;
    let mut next_kill = at(8);
    let mut recovery = Vec::new();
    let schedule_end = at(60);
    let mut step = 0;
    while Instant::now() < schedule_end {
        let now = Instant::now();
        if next_part < parts.len() && now >= at(10 * next_part as u64) {
            let _ = produce(&bootstrap, TOPIC, parts[next_part]);
            next_part += 1;
        }
        if now >= next_kill {
            a.signal("KILL");
            a.start(&dir, &url, &bootstrap);
            kills += 1;
            next_kill = now + Duration::from_secs(8);
        }
        match step {
            0 if now >= at(10) => {
                b.start(&dir, &url, &bootstrap);
                step = 1;
            }
            1 if now >= at(14) => {
                sim.apply_control(&ControlRequest {
                    credentials_revoked: Some(true),
                    ..Default::default()
                });
                step = 2;
            }
            2 if now >= at(24) => {
                sim.apply_control(&ControlRequest {
                    credentials_revoked: Some(false),
                    ..Default::default()
                });
                let took = wait_blocked(&b, "credentials", true, Duration::from_secs(90));
                recovery.push(("credentials revoked 10 s", took));
                step = 3;
            }
            3 if now >= at(30) => {
                b.signal("TERM");
                sim.apply_control(&ControlRequest {
                    denied_scopes: Some(
                        ["create:role_members", "update:users", "update:roles"]
                            .map(str::to_owned)
                            .to_vec(),
                    ),
                    ..Default::default()
                });
                step = 4;
            }
            4 if now >= at(40) => {
                sim.apply_control(&ControlRequest {
                    denied_scopes: Some(Vec::new()),
                    ..Default::default()
                });
                let took = wait_blocked(&a, "scope", true, Duration::from_secs(90));
                recovery.push(("scope removed 10 s", took));
                step = 5;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Faults over: 503s and garbage headers stop too; wait for every user.
    sim.apply_control(&ControlRequest {
        error_rate: Some(0.0),
        garbage_rate_limit_headers: Some(String::new()),
        ..Default::default()
    });
    let done = Instant::now();
    while missing(&sim, &stream.expected) > 0 && done.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let wrong = missing(&sim, &stream.expected);
    let extra = sim
        .role_sets()
        .keys()
        .filter(|u| !stream.expected.contains_key(*u))
        .count();
    let stats = sim.stats();
    println!(
        "users right: {} of {} ({wrong} missing a role, {extra} with roles they should not have); caught up {:.1} s after the schedule ended",
        stream.expected.len() - wrong,
        stream.expected.len(),
        done.elapsed().as_secs_f64()
    );
    println!(
        "consumer SIGKILLed and restarted {kills} times; a second member joined and left; panics: {}",
        a.panics() + b.panics()
    );
    println!(
        "Management API: {} requests, {} 429 (Retry-After: NaN), {} injected 5xx, {} 401 while revoked, {} 403 while a scope was missing; duplicate write pairs (a role given twice): {}",
        stats.total_requests,
        stats.rate_limited,
        stats.faults_served,
        stats.unauthorized,
        stats.forbidden,
        stats.duplicate_assignments
    );
    println!(
        "token requests: {} (the service was started {} times: {kills} restarts, a second member); role lookups (GET /api/v2/roles): {}",
        stats.calls_of("token"),
        kills + 2,
        stats.calls_of("get_roles")
    );
    for (fault, took) in recovery {
        match took {
            Some(s) => println!("recovered from {fault}: blocked cleared {s:.1} s after the fix"),
            None => println!("recovered from {fault}: NOT within 90 s"),
        }
    }
    a.signal("TERM");
    rt.block_on(running.shutdown());
    assert_eq!(wrong, 0, "users left without their roles");
    assert_eq!(a.panics() + b.panics(), 0, "panics");
}

fn steady() {
    let rate = 200.0;
    let seconds = 30.0;
    println!("== steady: {rate} events/s for {seconds} s, no faults");
    let dir = temp_dir("bench-steady");
    let broker = Broker::start(&dir);
    broker.create_topic(TOPIC, 3);
    let stream = generate::mixed(78, (rate * seconds) as usize, 0);
    let rt = runtime();
    let (sim, running) = start_tenant(
        &rt,
        SimConfig {
            accept_any_user: true,
            rate_per_second: 50.0,
            burst: 50,
            ..SimConfig::default()
        },
        Vec::new(),
    );
    let mut member = Member::new("steady");
    member.start(&dir, &running.base_url, &broker.bootstrap());
    if let Some(service) = member.service.as_ref() {
        service.wait_ready();
    }
    // When each user's last eligible record (signup, first login, verification) was produced.
    let mut produced_at: BTreeMap<String, Instant> = BTreeMap::new();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    // Watches the tenant while the events are produced: when each user first holds every
    // expected role.
    let watcher = {
        let sim = sim.clone();
        let expected = stream.expected.clone();
        std::thread::spawn(move || {
            let mut assigned_at: BTreeMap<String, Instant> = BTreeMap::new();
            let limit = Instant::now() + Duration::from_secs(180);
            while assigned_at.len() < expected.len() && Instant::now() < limit {
                let held = sim.role_sets();
                for (user, roles) in &expected {
                    if held.get(user) == Some(roles) {
                        assigned_at.entry(user.clone()).or_insert_with(Instant::now);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assigned_at
        })
    };
    let started = Instant::now();
    for (i, record) in stream.records.iter().enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let eligible = auth0_default_roles::event::decode(&record.value)
            .first()
            .and_then(|e| e.as_ref().ok())
            .is_some_and(|e| {
                matches!(
                    e.selection(),
                    auth0_default_roles::event::Selection::Eligible(_)
                )
            });
        if let (Some(key), true) = (&record.key, eligible) {
            produced_at.insert(key.clone(), Instant::now());
        }
        let mut out: BaseRecord<'_, str, [u8]> = BaseRecord::to(TOPIC).payload(&record.value[..]);
        if let Some(key) = &record.key {
            out = out.key(key.as_str());
        }
        if let Err((err, _)) = producer.send(out) {
            panic!("produce: {err}");
        }
        producer.poll(Duration::ZERO);
    }
    let _ = producer.flush(Duration::from_secs(30));
    let assigned_at = watcher.join().unwrap_or_default();
    let mut latencies: Vec<f64> = assigned_at
        .iter()
        .filter_map(|(user, at)| {
            produced_at
                .get(user)
                .map(|p| at.saturating_duration_since(*p).as_secs_f64())
        })
        .collect();
    latencies.sort_by(|x, y| x.total_cmp(y));
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let hwm = member
        .service
        .as_ref()
        .and_then(|s| std::fs::read_to_string(format!("/proc/{}/status", s.pid())).ok())
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!(
        "{} events in {:.1} s; {} of {} users got their roles; a user's last eligible event produced → every role held: p50 {:.2} s, p99 {:.2} s (broker, consumer, the 100 ms coalescing window and the tenant's 50 requests/s included); peak RSS {hwm}",
        stream.records.len(),
        started.elapsed().as_secs_f64(),
        assigned_at.len(),
        stream.expected.len(),
        pick(0.5),
        pick(0.99),
    );
    member.signal("TERM");
    rt.block_on(running.shutdown());
}
