//! Event → role latency per source, and the Events API reader's cost: `cargo bench --bench latency`.
//!
//! One simulated tenant (no rate limit), the demo policy, the release binary. For each source,
//! `LATENCY_BENCH_USERS` (default 300) new users sign up at `LATENCY_BENCH_RATE` events/s
//! (default 20), and the bench records, per user, the time from the event being made available
//! (appended to the Events API stream, POSTed to the webhook, appended to the tenant's logs) to
//! the tenant holding the user's role (polled every 5 ms, so figures carry ±5 ms):
//! 1. the Events API reader (`[source] type = "auth0_events"`, Server-Sent Events);
//! 2. the webhook in direct mode (`ingest`, Event Streams' CloudEvents by HTTP POST, one event
//!    per request, as an array of one: the floor, since the answer waits for the assignment);
//! 3. the Logs API reader (`[source] type = "auth0_logs"`) at its default 10 s poll interval.
//!
//! Then the cost at `LATENCY_BENCH_LOAD_RATE` events/s (default 1,000) for
//! `LATENCY_BENCH_LOAD_SECONDS` (default 30), in chunks of 50 (one append, or one POST of a
//! JSON array), the tenant polled every 100 ms (the p50/p99 there carry ±100 ms): the Events
//! API reader's CPU time and peak RSS,
//! beside the webhook's at the same rate (the same pipeline behind another transport: the
//! baseline). Every user must end with their role, or the bench panics.

// A bench's figures are wall-clock time (clippy.toml bans `std::time::Instant` and
// `std::thread::sleep` where tokio's clock is meant): here the wall clock is meant.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mgmt_sim::events_api::EventsControl;
use mgmt_sim::Simulator;
use serde_json::{json, Value};
use test_harness::*;

const TOKEN: &str = "Bearer bench-token";

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let users: usize = env_number("LATENCY_BENCH_USERS", 300);
    let rate: f64 = env_number("LATENCY_BENCH_RATE", 20.0);
    let load_rate: f64 = env_number("LATENCY_BENCH_LOAD_RATE", 1000.0);
    let load_seconds: f64 = env_number("LATENCY_BENCH_LOAD_SECONDS", 30.0);
    println!("== event -> role latency: {users} new users at {rate} events/s per source");
    println!("| source | p50 | p99 | max | users |");
    println!("|---|---|---|---|---|");
    for source in [Source::Events, Source::Webhook, Source::Logs] {
        let latencies = latency_run(source, "lat", users, rate);
        let (p50, p99, max) = percentiles(&latencies);
        println!(
            "| {} | {p50:.3} s | {p99:.3} s | {max:.3} s | {} |",
            source.name(),
            latencies.len()
        );
    }
    println!(
        "== cost at {load_rate} events/s for {load_seconds} s (every event a new user's signup)"
    );
    println!("| source | events/s reached | CPU s per 1,000 events | CPU share of one core | peak RSS | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|");
    for source in [Source::Webhook, Source::Events] {
        let cost = load_run(source, load_rate, load_seconds);
        println!(
            "| {} | {:.0} | {:.3} | {:.1} % | {:.1} MB | {:.3} s | {:.3} s |",
            source.name(),
            cost.rate,
            cost.cpu_seconds / cost.events as f64 * 1000.0,
            cost.cpu_seconds / cost.wall_seconds * 100.0,
            cost.peak_rss_kb as f64 / 1024.0,
            cost.p50,
            cost.p99
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Events,
    Webhook,
    Logs,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Events => "Events API (SSE)",
            Source::Webhook => "webhook, direct",
            Source::Logs => "Logs API, 10 s poll",
        }
    }
}

/// The `[auth0]` section for the simulator and the demo policy.
fn common(base_url: &str, metrics: u16) -> String {
    let policy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
    format!(
        "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{base_url}\"\nrequests_per_second = 2000\nburst = 500\nbatch_window_ms = 20\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{policy}\n"
    )
}

/// A started service of `source` and the port to POST to (webhook only).
fn start(source: Source, dir: &Path, base_url: &str) -> (Service, u16) {
    let (port, metrics) = (free_port(), free_port());
    let text = match source {
        Source::Events => format!(
            "[source]\ntype = \"auth0_events\"\n\n[auth0_events]\nstart = \"earliest\"\ncheckpoint_file = \"{}\"\n\n{}",
            dir.join("events.checkpoint").display(),
            common(base_url, metrics)
        ),
        Source::Logs => format!(
            "[source]\ntype = \"auth0_logs\"\n\n[auth0_logs]\nstart = \"earliest\"\ncheckpoint_file = \"{}\"\n\n{}",
            dir.join("logs.checkpoint").display(),
            common(base_url, metrics)
        ),
        Source::Webhook => format!(
            "[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:{port}\"\n\n{}",
            common(base_url, metrics)
        ),
    };
    let config = dir.join("latency.toml");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join("service.log");
    let service = match source {
        Source::Webhook => Service::start_ingest(&config, port, metrics, log, TOKEN),
        _ => Service::start(&config, metrics, log),
    };
    service.wait_ready();
    (service, port)
}

/// User `i`'s signup, as an Event Streams CloudEvent and as a tenant log (`ss`).
fn signup(prefix: &str, i: usize) -> (String, Value, Value) {
    let user_id = format!("auth0|{prefix}{i:07}");
    let email = format!("{prefix}{i}@example.com");
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let cloud = json!({
        "id": format!("evt_{prefix}{i:07}"),
        "specversion": "1.0",
        "source": "urn:auth0:acme:users",
        "type": "user.created",
        "time": now,
        "data": {"object": {
            "user_id": user_id,
            "email": email,
            "email_verified": false,
            "identities": [{"connection": "Username-Password-Authentication", "provider": "auth0", "user_id": format!("{prefix}{i:07}"), "isSocial": false}],
            "app_metadata": {},
            "created_at": now,
        }},
    });
    let log = json!({
        "date": now,
        "type": "ss",
        "description": "",
        "connection": "Username-Password-Authentication",
        "connection_id": "con_auth0",
        "client_id": "bench-app",
        "client_name": "Bench",
        "details": {"body": {"email": email, "connection": "Username-Password-Authentication", "client_id": "bench-app"}},
        "user_id": user_id,
        "user_name": email,
        "strategy": "auth0",
        "strategy_type": "database",
        "log_id": format!("9000{i:012}"),
    });
    (user_id, cloud, log)
}

/// Watches the tenant: the first time each user holds a role.
struct Watcher {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Polls every `every` (5 ms while measuring latency; longer under load, where the poll's
    /// own CPU would compete with the service's on a 2-core machine).
    fn start(sim: &Simulator, every: Duration) -> Watcher {
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sim, seen, stop) = (sim.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let holders = sim.role_sets();
                    let now = Instant::now();
                    if let Ok(mut seen) = seen.lock() {
                        for user in holders.keys() {
                            seen.entry(user.clone()).or_insert(now);
                        }
                    }
                    std::thread::sleep(every);
                }
            })
        };
        Watcher {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    fn finish(mut self) -> HashMap<String, Instant> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn latency_run(source: Source, prefix: &str, users: usize, rate: f64) -> Vec<f64> {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    sim.control_events(EventsControl::default());
    let dir = temp_dir("bench-latency");
    let (service, port) = start(source, &dir, &running.base_url);
    let (latencies, _) = offer_and_measure(
        source,
        &sim,
        port,
        (prefix, users, rate),
        1,
        Duration::from_millis(5),
        &service,
    );
    drop(service);
    rt.block_on(running.shutdown());
    latencies
}

struct Cost {
    events: usize,
    rate: f64,
    wall_seconds: f64,
    cpu_seconds: f64,
    peak_rss_kb: u64,
    p50: f64,
    p99: f64,
}

/// The process's CPU time so far (user + system), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (in parentheses): utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn load_run(source: Source, rate: f64, seconds: f64) -> Cost {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    sim.control_events(EventsControl::default());
    let dir: PathBuf = temp_dir("bench-latency-load");
    let (service, port) = start(source, &dir, &running.base_url);
    let pid = service.pid();
    let events = (rate * seconds) as usize;
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let (latencies, offered_for) = offer_and_measure(
        source,
        &sim,
        port,
        ("load", events, rate),
        50,
        Duration::from_millis(100),
        &service,
    );
    let wall = started.elapsed().as_secs_f64();
    let cost = Cost {
        events,
        rate: events as f64 / offered_for.as_secs_f64().max(0.001),
        wall_seconds: wall,
        cpu_seconds: cpu_seconds(pid) - cpu_before,
        peak_rss_kb: peak_rss_kb(pid),
        p50: percentiles(&latencies).0,
        p99: percentiles(&latencies).1,
    };
    drop(service);
    rt.block_on(running.shutdown());
    cost
}

/// Offers `events` signups (user ids prefixed `prefix`) at `rate`/s in chunks of `chunk` (one
/// append, or one POST of a JSON array, each), watching the tenant every `poll`, and returns
/// each user's event → role latency (seconds) and how long the offering took.
fn offer_and_measure(
    source: Source,
    sim: &Simulator,
    port: u16,
    (prefix, events, rate): (&str, usize, f64),
    chunk: usize,
    poll: Duration,
    service: &Service,
) -> (Vec<f64>, Duration) {
    let watcher = Watcher::start(sim, poll);
    let mut offered: Vec<(String, Instant)> = Vec::with_capacity(events);
    let started = Instant::now();
    let mut posts = Vec::new();
    for chunk_start in (0..events).step_by(chunk.max(1)) {
        let due = started + Duration::from_secs_f64(chunk_start as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let end = (chunk_start + chunk.max(1)).min(events);
        let made: Vec<(String, Value, Value)> =
            (chunk_start..end).map(|i| signup(prefix, i)).collect();
        let now = Instant::now();
        offered.extend(made.iter().map(|(u, _, _)| (u.clone(), now)));
        match source {
            Source::Events => {
                sim.append_events(made.iter().map(|(_, c, _)| c.clone()).collect())
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            Source::Logs => {
                sim.append_logs(made.iter().map(|(_, _, l)| l.clone()).collect());
            }
            Source::Webhook => {
                let array: Vec<&Value> = made.iter().map(|(_, c, _)| c).collect();
                let body = serde_json::to_vec(&array).unwrap_or_default();
                posts.push(std::thread::spawn(move || {
                    http_post(
                        port,
                        "/auth0/logs",
                        &[
                            ("Content-Type", "application/json"),
                            ("Authorization", TOKEN),
                        ],
                        &body,
                    )
                    .map_or(0, |(status, _)| status)
                }));
            }
        }
    }
    let offered_for = started.elapsed();
    assert!(
        wait_for(Duration::from_secs(180), || watcher.count() >= events),
        "{}: {} of {events} users got their role\n{}",
        source.name(),
        watcher.count(),
        service.log_text()
    );
    for post in posts {
        let status = post.join().unwrap_or(0);
        assert_eq!(status, 200, "a webhook delivery was refused");
    }
    let seen = watcher.finish();
    let latencies = offered
        .iter()
        .map(|(user, at)| {
            seen.get(user)
                .map(|held| held.saturating_duration_since(*at).as_secs_f64())
                .unwrap_or_else(|| panic!("{user} never held a role"))
        })
        .collect();
    (latencies, offered_for)
}

/// p50, p99 and max of `values` (seconds).
fn percentiles(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    (at(0.5), at(0.99), sorted.last().copied().unwrap_or(0.0))
}
