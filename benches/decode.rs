//! `cargo bench --bench decode`: decoding a realistic mix of Auth0 log records (most not
//! eligible), against merely validating the same bytes with `serde::de::IgnoredAny`.
//! Target: decode throughput ≥ 0.5 × validation throughput.

// A bench's figures are wall-clock time (clippy.toml bans `std::time::Instant` and
// `std::thread::sleep` where tokio's clock is meant): here the wall clock is meant.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use auth0_default_roles::event::decode;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// One webhook record per line, like a Kafka topic fed by a log-stream bridge.
fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let log_id = format!("9002026110100000000000000000000000000000000000{i:010}");
            let user = format!("auth0|6551a{i:019}");
            let data = match i % 20 {
                0 => format!(
                    r#"{{"date":"2026-11-01T10:00:00.100Z","type":"ss","description":"","connection":"Username-Password-Authentication","connection_id":"con_1a5wCUmAs6VOU17n","client_id":"aI61p8I8aFjmYRliLWgvM9ev97kCCNDB","client_name":"Storefront","ip":"203.0.113.7","user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","details":{{"body":{{"tenant":"acme","connection":"Username-Password-Authentication","email":"user{i}@example.com","password":"*****","client_id":"aI61p8I8aFjmYRliLWgvM9ev97kCCNDB","transaction":{{"id":"tx{i}","locale":"en","protocol":"oidc-basic-profile"}},"request_language":"en-US,en;q=0.9"}}}},"user_id":"{user}","user_name":"user{i}@example.com","strategy":"auth0","strategy_type":"database","log_id":"{log_id}"}}"#
                ),
                1..=12 => {
                    let count = if i % 20 == 1 { 1 } else { 2 + i % 50 };
                    format!(
                        r#"{{"date":"2026-11-01T10:00:05.000Z","type":"s","connection":"Username-Password-Authentication","connection_id":"con_1a5wCUmAs6VOU17n","client_id":"aI61p8I8aFjmYRliLWgvM9ev97kCCNDB","client_name":"Storefront","ip":"203.0.113.7","user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36","details":{{"prompts":[{{"name":"prompt-authenticate","completedAt":1761991205000,"connection":"Username-Password-Authentication","connection_id":"con_1a5wCUmAs6VOU17n","strategy":"auth0","identity":"6551a{i:019}","stats":{{"loginsCount":{count}}},"elapsedTime":null}},{{"name":"login","flow":"universal-login","initiatedAt":1761991200000,"completedAt":1761991205000,"timers":{{"rules":4}},"user_id":"{user}","user_name":"user{i}@example.com","elapsedTime":5000}}],"initiatedAt":1761991200000,"completedAt":1761991205100,"elapsedTime":5100,"session_id":"m5SgtzMKxmeNBxj_kCfUUJhzrSdfvLFu","stats":{{"loginsCount":{count}}}}},"hostname":"acme.eu.auth0.com","user_id":"{user}","user_name":"user{i}@example.com","strategy":"auth0","strategy_type":"database","log_id":"{log_id}"}}"#
                    )
                }
                13 => format!(
                    r#"{{"date":"2026-11-01T10:01:00.000Z","type":"sv","description":"Your email was verified. You can continue using the application.","connection":"Username-Password-Authentication","connection_id":"con_1a5wCUmAs6VOU17n","client_id":"aI61p8I8aFjmYRliLWgvM9ev97kCCNDB","client_name":"Storefront","ip":"203.0.113.7","user_agent":"Mozilla/5.0","details":{{"query":{{"user_id":"{user}","email":"user{i}@example.com"}},"email":"user{i}@example.com"}},"user_id":"{user}","user_name":"user{i}@example.com","strategy":"auth0","strategy_type":"database","log_id":"{log_id}"}}"#
                ),
                _ => {
                    let kind = ["seacft", "ssa", "sapi", "f", "slo", "mgmt_api_read"][i % 6];
                    format!(
                        r#"{{"date":"2026-11-01T10:02:00.000Z","type":"{kind}","description":"","connection_id":"","client_id":"aI61p8I8aFjmYRliLWgvM9ev97kCCNDB","client_name":"Storefront","ip":"203.0.113.7","user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36","details":{{"code":"*************xyz","audience":"https://acme.eu.auth0.com/api/v2/"}},"hostname":"acme.eu.auth0.com","user_id":"{user}","user_name":"user{i}@example.com","audience":"https://acme.eu.auth0.com/api/v2/","scope":"openid profile email","log_id":"{log_id}"}}"#
                    )
                }
            };
            format!(r#"{{"log_id":"{log_id}","data":{data}}}"#).into_bytes()
        })
        .collect()
}

fn decode_all(records: &[Vec<u8>]) -> usize {
    records.iter().map(|r| decode(black_box(r)).len()).sum()
}

fn validate_all(records: &[Vec<u8>]) -> usize {
    records
        .iter()
        .filter(|r| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(r)).is_ok())
        .count()
}

fn events_per_second(f: impl Fn() -> usize, n: usize, budget: Duration) -> f64 {
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < budget {
        black_box(f());
        rounds += 1;
    }
    (rounds as f64 * n as f64) / start.elapsed().as_secs_f64()
}

fn bench_decode(c: &mut Criterion) {
    let input = records(2_000);
    let bytes: usize = input.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(input.len() as u64));
    group.bench_function("auth0_decode", |b| b.iter(|| decode_all(&input)));
    group.bench_function("ignored_any_validate", |b| b.iter(|| validate_all(&input)));
    group.finish();

    let decode_rate = events_per_second(|| decode_all(&input), input.len(), Duration::from_secs(2));
    let validate_rate =
        events_per_second(|| validate_all(&input), input.len(), Duration::from_secs(2));
    println!(
        "decode summary: {} records, mean {} bytes; decode {:.0} events/s ({:.1} MB/s); IgnoredAny {:.0} events/s; ratio {:.2} (target >= 0.5)",
        input.len(),
        bytes / input.len(),
        decode_rate,
        decode_rate * (bytes / input.len()) as f64 / 1e6,
        validate_rate,
        decode_rate / validate_rate
    );

    // A JSON Lines export (one body, as `replay` reads it) clean, then with 10 % garbage lines:
    // events/s must stay within 2x of the clean case (line numbers are counted incrementally).
    let clean: Vec<u8> = input
        .iter()
        .flat_map(|r| r.iter().chain(b"\n"))
        .copied()
        .collect();
    let mut dirty = Vec::new();
    for (i, r) in input.iter().enumerate() {
        if i % 10 == 0 {
            dirty.extend_from_slice(
                b"{\"log_id\": \"1\", \"data\": {\"type\": \"ss\", \"user_id\": \n",
            );
        }
        dirty.extend_from_slice(r);
        dirty.push(b'\n');
    }
    let lines = input.len() + input.len() / 10;
    let clean_rate = events_per_second(
        || decode(black_box(&clean)).len(),
        input.len(),
        Duration::from_secs(2),
    );
    let dirty_rate = events_per_second(
        || decode(black_box(&dirty)).len(),
        lines,
        Duration::from_secs(2),
    );
    println!(
        "json lines summary: clean {:.0} lines/s; 10 % garbage lines {:.0} lines/s; ratio {:.2} (target >= 0.5)",
        clean_rate,
        dirty_rate,
        dirty_rate / clean_rate
    );
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
