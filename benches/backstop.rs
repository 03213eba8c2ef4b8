//! What the backstop costs: `cargo bench --bench backstop`.
//!
//! `ingest` in direct mode with `[backstop]` behind it, against the simulator. A mature
//! tenant's log (10 % new users, the rest returning users and noise; `BACKSTOP_BENCH_EVENTS`,
//! default 10,000) is delivered by the webhook (all of it, then with a quarter of the eligible
//! records dropped), and logged by the tenant; the backstop reads it `lag_seconds` later.
//! Printed: Logs API calls per 100 tenant log events against the floor (one page per 100),
//! polls per idle minute, the assignment calls the stream made (the floor) and those the
//! backstop added, and the recovered count.

// A bench's figures are wall-clock time (clippy.toml bans `std::time::Instant` and
// `std::thread::sleep` where tokio's clock is meant): here the wall clock is meant.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use auth0_default_roles::event::{decode, Selection};
use auth0_default_roles::generate::{self, Record};
use serde_json::{json, Value};
use test_harness::*;

const TOKEN: &str = "Bearer bench-token";
const POLL_SECONDS: f64 = 1.0;

fn log_of(record: &Record) -> Option<Value> {
    let value: Value = serde_json::from_slice(&record.value).ok()?;
    match value.get("data") {
        Some(data) if data.is_object() => Some(data.clone()),
        _ => Some(value),
    }
}

fn log_id(log: &Value) -> String {
    log.get("log_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn eligible(log: &Value) -> bool {
    let bytes = serde_json::to_vec(log).unwrap_or_default();
    decode(&bytes)
        .first()
        .and_then(|d| d.as_ref().ok())
        .is_some_and(|e| matches!(e.selection(), Selection::Eligible(_)))
}

fn writes(stats: &mgmt_sim::SimStats) -> u64 {
    stats.calls_of("assign_user_roles") + stats.calls_of("assign_role_users")
}

fn scenario(events: usize, drop_every: Option<usize>) {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("bench-backstop");
    let stream = generate::mostly_noise(61, events, 10);
    let mut seen = BTreeSet::new();
    let logs: Vec<Value> = stream
        .records
        .iter()
        .filter_map(log_of)
        .filter(|l| seen.insert(log_id(l)))
        .collect();
    let mut dropped = BTreeSet::new();
    if let Some(every) = drop_every {
        for (i, log) in logs.iter().filter(|l| eligible(l)).enumerate() {
            if i % every == 0 {
                dropped.insert(log_id(log));
            }
        }
    }
    let policy = std::fs::read_to_string("config/demo.toml").unwrap_or_else(|e| panic!("{e}"));
    let (port, metrics) = (free_port(), free_port());
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:{port}\"\n\n[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{}\"\nrequests_per_second = 1000\nburst = 200\n\n[backstop]\nstart = \"earliest\"\ncheckpoint_file = \"{}\"\nlag_seconds = 1\npoll_interval_seconds = {POLL_SECONDS}\nrate_share = 0.5\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{policy}\n",
            running.base_url,
            dir.join("backstop.checkpoint").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let service = Service::start_command(
        "ingest",
        &config,
        metrics,
        dir.join("ingest.log"),
        &[("AUTH0_WEBHOOK_TOKEN", TOKEN), ("RUST_LOG", "warn")],
    );
    assert!(wait_listening(
        format!("127.0.0.1:{port}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
        Duration::from_secs(30)
    ));
    let delivered: Vec<&Record> = stream
        .records
        .iter()
        .filter(|r| log_of(r).is_some_and(|l| !dropped.contains(&log_id(&l))))
        .collect();
    for batch in delivered.chunks(100) {
        let mut body = Vec::new();
        for r in batch {
            body.extend_from_slice(&r.value);
            body.push(b'\n');
        }
        let answer = http_post(port, "/auth0/logs", &[("Authorization", TOKEN)], &body);
        assert_eq!(answer.map(|(s, _)| s), Some(200));
    }
    let after_stream = sim.stats();
    let date = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    sim.append_logs(
        logs.iter()
            .cloned()
            .map(|mut l| {
                l["date"] = json!(date);
                l
            })
            .collect(),
    );
    let last = log_id(&logs[logs.len() - 1]);
    let started = Instant::now();
    assert!(
        wait_for(Duration::from_secs(300), || std::fs::read_to_string(
            dir.join("backstop.checkpoint")
        )
        .unwrap_or_default()
        .contains(&last)),
        "{}",
        service.log_text()
    );
    let caught_up = started.elapsed();
    let after_backstop = sim.stats();
    // Idle: only polls.
    let idle = Duration::from_secs(30);
    std::thread::sleep(idle);
    let after_idle = sim.stats();
    assert_eq!(sim.role_sets(), stream.expected, "{}", service.log_text());
    let recovered = service.metric("auth0_default_roles_backstop_recovered_total", "");
    let reads = after_backstop.calls_of("get_logs") - after_stream.calls_of("get_logs");
    let floor = logs.len().div_ceil(100);
    let polls = after_idle.calls_of("get_logs") - after_backstop.calls_of("get_logs");
    println!(
        "backstop ({}): {} tenant log events ({} eligible, {} dropped by the stream), {} users to get roles",
        if drop_every.is_some() { "a quarter of the eligible records dropped" } else { "the stream delivered everything" },
        logs.len(),
        logs.iter().filter(|l| eligible(l)).count(),
        dropped.len(),
        stream.expected.len()
    );
    println!(
        "  Logs API reads while catching up: {reads} ({:.2} per 100 log events; floor {floor} pages = 1.00, the rest are polls while the logs aged {:.1} s: lag 1 s, poll {POLL_SECONDS} s)",
        reads as f64 * 100.0 / logs.len() as f64,
        caught_up.as_secs_f64()
    );
    println!(
        "  idle: {polls} reads in {} s ({:.0} per hour at poll_interval_seconds = {POLL_SECONDS})",
        idle.as_secs(),
        polls as f64 * 3600.0 / idle.as_secs_f64()
    );
    println!(
        "  assignment calls: the stream {} (the floor of a lossless stream is about the same), the backstop {} more; recovered {recovered}",
        writes(&after_stream),
        writes(&after_backstop) - writes(&after_stream),
    );
    drop(service);
    rt.block_on(running.shutdown());
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events: usize = std::env::var("BACKSTOP_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    scenario(events, None);
    scenario(events, Some(4));
}
