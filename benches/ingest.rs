//! Bridge throughput: `cargo bench --bench ingest`.
//!
//! The `ingest` binary in bridge mode in front of a local tansu broker; 4 client threads POST
//! 100-record JSON Lines deliveries (as Auth0's Custom Webhook does) and each answer waits for
//! the broker's acknowledgement of every record (`acks=all`, idempotent producer).
//! `INGEST_BENCH_REQUESTS` changes the number of requests (default 400).

// A bench's figures are wall-clock time (clippy.toml bans `std::time::Instant` and
// `std::thread::sleep` where tokio's clock is meant): here the wall clock is meant.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth0_default_roles::generate;
use test_harness::*;

const TOKEN: &str = "Bearer bench-token";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let requests: usize = std::env::var("INGEST_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let dir = temp_dir("bench-ingest");
    let broker = Broker::start(&dir);
    let topic = "auth0-logs-ingest-bench";
    broker.create_topic(topic, 3);
    let (port, metrics) = (free_port(), free_port());
    let config = dir.join("ingest.toml");
    std::fs::write(
        &config,
        format!(
            "[ingest]\nmode = \"kafka\"\nlisten = \"127.0.0.1:{port}\"\n\n[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
            broker.bootstrap()
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
    // 100-record bodies cut from one generated stream.
    let stream = generate::mixed(7, 100 * 50, 0);
    let bodies: Vec<Vec<u8>> = stream
        .records
        .chunks(100)
        .filter(|c| c.len() == 100)
        .map(|chunk| {
            let mut body = Vec::new();
            for r in chunk {
                body.extend_from_slice(&r.value);
                body.push(b'\n');
            }
            body
        })
        .collect();
    let avg_body = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len();
    // Warm-up: the producer connects and learns the partitions.
    let (status, answer) = http_post(
        port,
        "/auth0/logs",
        &[
            ("Authorization", TOKEN),
            ("Content-Type", "application/json"),
        ],
        &bodies[0],
    )
    .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());

    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (bodies, next, latencies) = (
                Arc::clone(&bodies),
                Arc::clone(&next),
                Arc::clone(&latencies),
            );
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= requests {
                    break;
                }
                let t = Instant::now();
                let (status, answer) = http_post(
                    port,
                    "/auth0/logs",
                    &[
                        ("Authorization", TOKEN),
                        ("Content-Type", "application/json"),
                    ],
                    &bodies[i % bodies.len()],
                )
                .unwrap_or_else(|| panic!("no answer"));
                assert_eq!(status, 200, "{answer}");
                latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(t.elapsed().as_secs_f64());
            })
        })
        .collect();
    for t in threads {
        t.join()
            .unwrap_or_else(|_| panic!("client thread panicked"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] * 1000.0;
    println!(
        "ingest bridge: {requests} requests of 100 records (~{:.0} KB each), 4 clients: {:.1} s = {:.0} requests/s = {:.0} records/s; latency p50 {:.1} ms, p99 {:.1} ms",
        avg_body as f64 / 1000.0,
        elapsed,
        requests as f64 / elapsed,
        requests as f64 * 100.0 / elapsed,
        pct(0.5),
        pct(0.99)
    );
    let produced = service.metric(
        "auth0_default_roles_ingest_records_total",
        "outcome=\"produced\"",
    );
    assert_eq!(
        produced as usize,
        (requests + 1) * 100,
        "every record acknowledged"
    );
}
