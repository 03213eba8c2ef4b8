//! The grants ledger's cost: `cargo bench --bench ledger`.
//!
//! 1. Consume throughput, two streams (about 5 % of users new, as in `benches/consume.rs`;
//!    then 60 % new, the ledger's worst case) on a local tansu broker, each consumed three
//!    times by the service binary (`run`, a consumer group each) against the in-process
//!    simulator: without a ledger, with an SQLite ledger, with a PostgreSQL ledger (a real
//!    server started for the bench). Rates
//!    count from the first message received to the last one finished; peak RSS is VmHWM.
//!    Targets: SQLite ≥ 0.9×, PostgreSQL ≥ 0.8× of the run without a ledger.
//!    Both streams are dated days ago (no signup is fresh: with a ledger every write reads the
//!    user's roles first, the worst case). Each run prints the Management API calls per user
//!    given roles, and the reads of users' roles among them.
//! 2. Bytes per grant on disk: 100,000 grants written in batches of 500 (the library, as the
//!    pipeline writes them), then the SQLite file (after a checkpoint) and the PostgreSQL
//!    tables with their indexes measured.
//!
//! `LEDGER_BENCH_EVENTS` (default 100,000) and `LEDGER_BENCH_GRANTS` (default 100,000) change
//! the sizes; `LEDGER_BENCH_INFLIGHT` the consumer's `max_inflight` (default 100,000, a stress
//! setting: the service's default is 1,000). Profiling aids: `LEDGER_BENCH_SCENARIOS` (e.g. `1`:
//! the worst case only), `LEDGER_BENCH_RUNS` (any of `none,sqlite,postgres`) and
//! `SERVICE_WRAPPER` (see `crates/test-harness`); the ratio is against the first run kept.

// A bench's figures are wall-clock time (clippy.toml bans `std::time::Instant` and
// `std::thread::sleep` where tokio's clock is meant): here the wall clock is meant.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use auth0_default_roles::generate;
use auth0_default_roles::ledger::{Grant, Ledger, LedgerSettings};
use mgmt_sim::SimConfig;
use test_harness::*;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events: usize = env_number("LEDGER_BENCH_EVENTS", 100_000);
    let grants: usize = env_number("LEDGER_BENCH_GRANTS", 100_000);
    let server = test_harness::pg::PgServer::start("bench");
    let dir = temp_dir("bench-ledger");
    let broker = Broker::start(&dir);
    let rt = runtime();
    let scenarios = [
        (
            "mostly returning users, 5 % new",
            generate::mostly_noise(42, events, 5),
        ),
        (
            "mixed, 60 % new: the ledger's worst case",
            generate::mixed(7, events, 0),
        ),
    ];
    let only = std::env::var("LEDGER_BENCH_SCENARIOS").unwrap_or_default();
    for (s, (title, stream)) in scenarios.iter().enumerate() {
        if !only.is_empty() && !only.split(',').any(|n| n.trim() == s.to_string()) {
            continue;
        }
        throughput(&rt, &server, &dir, &broker, s, title, stream);
    }

    println!("== bytes per grant ({grants} grants, batches of 500)");
    let sqlite = LedgerSettings {
        url: format!("sqlite://{}", dir.join("size.db").display()),
    };
    let postgres = LedgerSettings {
        url: server.database("size"),
    };
    let sizes = if grants == 0 {
        Vec::new()
    } else {
        vec![("SQLite", sqlite), ("PostgreSQL", postgres)]
    };
    for (name, settings) in sizes {
        let (bytes, seconds) = rt.block_on(fill(&settings, grants));
        let per = bytes as f64 / grants as f64;
        println!(
            "{name}: {grants} grants in {seconds:.1} s ({:.0} grants/s), {:.1} MB on disk = {per:.0} bytes per grant; 10 million grants ≈ {:.1} GB",
            grants as f64 / seconds,
            bytes as f64 / 1e6,
            per * 1e7 / 1e9
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One scenario: its stream on a topic of its own, consumed without a ledger, with SQLite and
/// with PostgreSQL.
fn throughput(
    rt: &tokio::runtime::Runtime,
    server: &test_harness::pg::PgServer,
    dir: &std::path::Path,
    broker: &Broker,
    scenario: usize,
    title: &str,
    stream: &generate::Stream,
) {
    println!(
        "== consume throughput: {title} ({} events)",
        stream.records.len()
    );
    let topic = format!("auth0-logs-ledger-bench-{scenario}");
    let topic = topic.as_str();
    broker.create_topic(topic, 3);
    let records: Vec<(Option<String>, Vec<u8>)> = stream
        .records
        .iter()
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect();
    // The worst case makes intake pause (assignments wait for the tenant's rate), and tansu
    // cannot resume a fetch in the middle of a record batch (it skips to the next batch: see
    // docs/testing.md): one record per batch there, 1,000 for the stream that never pauses.
    // At a `max_inflight` below the stream's size the 5 % stream pauses too (in flight).
    let inflight = env_number("LEDGER_BENCH_INFLIGHT", 100_000);
    let per_batch = if scenario == 0 && inflight >= records.len() {
        1000
    } else {
        1
    };
    let _ = produce_batched(&broker.bootstrap(), topic, &records, per_batch);
    let pairs: usize = stream.expected.values().map(|r| r.len()).sum();
    println!(
        "produced {} events, {} users to get roles ({pairs} grants)",
        records.len(),
        stream.expected.len()
    );
    let sqlite_url = format!(
        "sqlite://{}",
        dir.join(format!("consume{scenario}.db")).display()
    );
    let pg_url = server.database("consume");
    let runs = [
        ("none", "no ledger", String::new()),
        ("sqlite", "SQLite ledger", sqlite_url),
        ("postgres", "PostgreSQL ledger", pg_url),
    ];
    let kept = std::env::var("LEDGER_BENCH_RUNS").unwrap_or_default();
    let mut base = None;
    for (i, (key, name, url)) in runs.iter().enumerate() {
        if !kept.is_empty() && !kept.split(',').any(|k| k.trim() == *key) {
            continue;
        }
        let run = scenario * 10 + i;
        let (rate, hwm, calls) = consume(rt, dir, broker, topic, records.len(), run, url, stream);
        let ratio = base.map_or(1.0, |b: f64| rate / b);
        base.get_or_insert(rate);
        println!(
            "{name}: {rate:.0} events/s (ratio {ratio:.2}), peak RSS {hwm}, {:.3} calls per user given roles ({:.3} role reads)",
            calls.total, calls.role_reads
        );
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One consume run by a fresh consumer group; (events/s, peak RSS).
#[allow(clippy::too_many_arguments)]
fn consume(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    broker: &Broker,
    topic: &str,
    n: usize,
    run: usize,
    ledger_url: &str,
    stream: &generate::Stream,
) -> (f64, String, CallsPerUser) {
    let (sim, running) = start_tenant(
        rt,
        SimConfig {
            accept_any_user: true,
            ..SimConfig::default()
        },
        Vec::new(),
    );
    let port = free_port();
    let config = write_config(
        dir,
        &format!("run{run}"),
        &running.base_url,
        &broker.bootstrap(),
        topic,
        &format!("bench-ledger-{run}"),
        None,
        port,
        &format!(
            "max_inflight = {}",
            env_number("LEDGER_BENCH_INFLIGHT", 100_000)
        ),
    );
    if !ledger_url.is_empty() {
        let mut text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
        text.push_str(&format!("\n[ledger]\nurl = \"{ledger_url}\"\n"));
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut service = Service::start(&config, port, dir.join(format!("run{run}.log")));
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut processed = 0.0;
    while Instant::now() < deadline {
        let body = service.get("/metrics").map(|(_, b)| b).unwrap_or_default();
        if first.is_none()
            && metric_sum(&body, "auth0_default_roles_events_received_total", "") > 0.0
        {
            first = Some(Instant::now());
        }
        processed = metric_sum(&body, "auth0_default_roles_events_processed_total", "");
        if processed as usize >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    assert_eq!(
        processed as usize,
        n,
        "service did not finish: {}",
        service.log_text()
    );
    assert_eq!(
        sim.role_sets(),
        stream.expected,
        "every user exactly their roles"
    );
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", service.pid())).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    service.signal("TERM");
    let _ = service.wait_exit(Duration::from_secs(30));
    let log = service.log_text();
    let most = ["most_in_process", "most_queued", "most_blocked"]
        .map(|key| logged_number(&log, "left the consumer group", key).unwrap_or(0));
    println!(
        "  at most {} events in process, {} messages queued ({} behind their user) at once",
        most[0], most[1], most[2]
    );
    rt.block_on(running.shutdown());
    let stats = sim.stats();
    let calls = CallsPerUser {
        total: stats.total_requests as f64 / stream.expected.len().max(1) as f64,
        role_reads: stats.calls_of("get_user_roles") as f64 / stream.expected.len().max(1) as f64,
    };
    (n as f64 / elapsed, hwm, calls)
}

/// Management API requests per user given roles: all of them, and the reads of users' roles
/// (the ledger's read before a write).
struct CallsPerUser {
    total: f64,
    role_reads: f64,
}

/// Writes `n` grants (users of 3 roles each, realistic ids) in batches of 500; (bytes on disk,
/// seconds).
async fn fill(settings: &LedgerSettings, n: usize) -> (u64, f64) {
    let ledger = Ledger::open(settings, "bench-host:4242")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let roles = [
        ("rol_vZbjLsYMB2YSxt4N", "Viewer", "everyone"),
        ("rol_ArxnHRbyw16pLAs6", "CUSTOMER", "customers"),
        ("rol_LHRrFy8HSdY9tAHe", "PARTNER", "verified-partners"),
    ];
    let started = Instant::now();
    let grants: Vec<Grant> = (0..n)
        .map(|i| {
            let (role_id, role_name, rule) = roles[i % 3];
            Grant {
                user_id: format!("auth0|{:024x}", i / 3),
                role_id: role_id.to_owned(),
                role_name: role_name.to_owned(),
                organization_id: None,
                rule: rule.to_owned(),
                trigger: "signup".to_owned(),
                event_id: format!(
                    "9002021110400250246311541862174085693426033603{:010}",
                    i / 3
                ),
                policy_fingerprint: "c62e969388d82159".to_owned(),
                instance: "bench-host:4242".to_owned(),
                at: 1_764_633_600_000 + i as i64,
                event_at: None,
            }
        })
        .collect();
    for batch in grants.chunks(500) {
        ledger
            .record_grants(batch)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = ledger.size_bytes().await.unwrap_or_else(|e| panic!("{e}"));
    (bytes, seconds)
}
