//! `ingest`: the Custom Webhook receiver over real HTTP, in direct mode against the simulator
//! and as a Kafka bridge against the tansu broker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use auth0_default_roles::app::Command;
use auth0_default_roles::generate::{self, Record};
use test_harness::*;

const TOKEN: &str = "Bearer s3cret-token";

/// An `ingest` config; `backend` is the [auth0] or [kafka] part (port 0: one the system picks).
fn ingest_config(mode: &str, port: u16, metrics: u16, backend: &str, extra: &str) -> String {
    let policy =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
    format!(
        "[ingest]\nmode = \"{mode}\"\nlisten = \"127.0.0.1:{port}\"\n{extra}\n\n{backend}\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{policy}\n"
    )
}

/// Writes an `ingest` config for the binary.
fn write_ingest_config(
    dir: &Path,
    mode: &str,
    port: u16,
    metrics: u16,
    backend: &str,
    extra: &str,
) -> PathBuf {
    let path = dir.join(format!("ingest-{mode}.toml"));
    let text = ingest_config(mode, port, metrics, backend, extra);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// `ingest` built in this process, its ports picked by the system.
fn ingest_in_process(rt: &tokio::runtime::Runtime, backend: &str, extra: &str) -> InProcessApp {
    let config = ingest_config("direct", 0, 0, backend, extra);
    let env = [
        ("AUTH0_CLIENT_SECRET", "sim-secret"),
        ("AUTH0_WEBHOOK_TOKEN", TOKEN),
    ];
    InProcessApp::start(rt, &config, Command::Ingest, &env)
}

/// The `[auth0]` section for the simulator at `base_url` (direct mode).
fn auth0_section(base_url: &str) -> String {
    format!(
        "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{base_url}\"\nrequests_per_second = 1000\nburst = 200\nbatch_window_ms = 20"
    )
}

fn start_ingest(dir: &Path, config: &Path, port: u16, metrics: u16) -> Service {
    Service::start_ingest(config, port, metrics, dir.join("ingest.log"), TOKEN)
}

fn post(port: u16, body: &[u8], token: Option<&str>) -> (u16, String) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(t) = token {
        headers.push(("Authorization", t));
    }
    http_post(port, "/auth0/logs", &headers, body).unwrap_or_else(|| panic!("no HTTP answer"))
}

fn jsonl(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&r.value);
        out.push(b'\n');
    }
    out
}

fn array(records: &[Record]) -> Vec<u8> {
    let items: Vec<&str> = records
        .iter()
        .map(|r| std::str::from_utf8(&r.value).unwrap_or_default())
        .collect();
    format!("[{}]", items.join(",")).into_bytes()
}

#[test]
fn direct_mode_takes_every_content_format_and_assigns_the_roles() {
    // In process: nothing here needs the process boundary.
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let backend = auth0_section(&running.base_url);
    let service = ingest_in_process(&rt, &backend, "");
    let port = service.ingest_port();
    let stream = generate::mixed(21, 400, 0);
    let n = stream.records.len();
    let (a, rest) = stream.records.split_at(n / 4);
    let (b, rest) = rest.split_at(n / 4);
    let (c, d) = rest.split_at(n / 4);
    // JSON Lines, JSON Array, JSON Object.
    for (name, body) in [
        ("jsonl", jsonl(a)),
        ("array", array(b)),
        (
            "object",
            format!("{{\"logs\":{}}}", String::from_utf8_lossy(&array(c))).into_bytes(),
        ),
    ] {
        let (status, answer) = post(port, &body, Some(TOKEN));
        assert_eq!(status, 200, "{name}: {answer}");
        assert!(answer.contains("\"processed\""), "{name}: {answer}");
    }
    // EventBridge API destination: one event per request.
    for r in d {
        let event = format!(
            r#"{{"version":"0","id":"e-1","detail-type":"Auth0 log","source":"aws.partner/auth0.com/acme-1/auth0.logs","account":"123456789012","time":"2026-11-23T10:00:00Z","region":"eu-west-1","resources":[],"detail":{}}}"#,
            String::from_utf8_lossy(&r.value)
        );
        let (status, answer) = post(port, event.as_bytes(), Some(TOKEN));
        assert_eq!(status, 200, "eventbridge: {answer}");
    }
    assert_eq!(sim.role_sets(), stream.expected);
    assert_eq!(
        service.metric(
            "auth0_default_roles_ingest_requests_total",
            "status=\"200\""
        ) as usize,
        3 + d.len()
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_received_total",
            "source=\"http\""
        ) as usize,
        n
    );
    assert_eq!(service.get("/readyz").map(|(s, _)| s), Some(200));
    service.stop().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(running.shutdown());
}

#[test]
fn bad_tokens_oversized_bodies_and_malformed_records_are_refused_or_counted() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("ingest-refuse");
    let (port, metrics) = (free_port(), free_port());
    let backend = format!(
        "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{}\"\nrequests_per_second = 1000\nburst = 200",
        running.base_url
    );
    let config = write_ingest_config(
        &dir,
        "direct",
        port,
        metrics,
        &backend,
        "max_body_bytes = 16384",
    );
    let service = start_ingest(&dir, &config, port, metrics);
    let stream = generate::mixed(22, 12, 0);
    let body = jsonl(&stream.records[..4]);

    // Missing, wrong, and almost-right tokens: 401 with no detail, nothing assigned.
    for token in [
        None,
        Some("Bearer wrong"),
        Some("s3cret-token"),
        Some("Bearer s3cret-token2"),
    ] {
        let (status, answer) = post(port, &body, token);
        assert_eq!(status, 401, "{token:?}");
        assert!(answer.is_empty(), "401 must not explain: {answer}");
    }
    assert!(sim.users_with_roles().is_empty());
    assert_eq!(
        sim.stats()
            .calls
            .get("assign_user_roles")
            .copied()
            .unwrap_or(0),
        0
    );

    // Over max_body_bytes: 413.
    let big = jsonl(&generate::mixed(23, 60, 0).records);
    assert!(big.len() > 16384);
    assert_eq!(post(port, &big, Some(TOKEN)).0, 413);

    // One malformed line among good ones: the others are processed, the bad one counted.
    let mut mixed = jsonl(&stream.records[..3]);
    mixed.extend_from_slice(b"{\"log_id\": \"broken\", \"data\": {\n");
    mixed.extend_from_slice(&jsonl(&stream.records[3..6]));
    let (status, answer) = post(port, &mixed, Some(TOKEN));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"invalid\":1"), "{answer}");
    assert_eq!(
        service.metric(
            "auth0_default_roles_ingest_records_total",
            "outcome=\"invalid\""
        ),
        1.0
    );
    assert_eq!(
        service.metric("auth0_default_roles_events_received_total", "") as usize,
        6
    );

    // Nothing decodable: 400 with a short reason; a wrong content type: 415.
    let (status, answer) = post(port, b"hello", Some(TOKEN));
    assert_eq!(status, 400);
    assert!(answer.contains("not JSON"), "{answer}");
    let (status, _) = http_post(
        port,
        "/auth0/logs",
        &[
            ("Authorization", TOKEN),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"a=b",
    )
    .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(status, 415);
    assert_eq!(
        service.metric(
            "auth0_default_roles_ingest_requests_total",
            "status=\"401\""
        ),
        4.0
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_ingest_requests_total",
            "status=\"413\""
        ),
        1.0
    );
    let log = service.log_text();
    assert!(!log.contains("s3cret"), "the token leaked into the log");
    rt.block_on(running.shutdown());
}

#[test]
fn bridge_mode_produces_keyed_by_user_and_answers_503_while_the_broker_is_down() {
    let dir = temp_dir("ingest-bridge");
    let mut broker = Broker::start(&dir);
    let broker_port = broker.port;
    let topic = "auth0-logs-bridge";
    broker.create_topic(topic, 3);
    let (port, metrics) = (free_port(), free_port());
    let backend = format!(
        "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n[kafka.properties]\n\"message.timeout.ms\" = 3000\n\"batch.num.messages\" = 1",
        broker.bootstrap()
    );
    let config = write_ingest_config(&dir, "kafka", port, metrics, &backend, "");
    let service = start_ingest(&dir, &config, port, metrics);
    let stream = generate::mixed(24, 200, 0);
    let (status, answer) = post(port, &jsonl(&stream.records), Some(TOKEN));
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert!(
        answer.contains(&format!("\"produced\":{}", stream.records.len())),
        "{answer}"
    );

    let read = read_all(
        &broker.bootstrap(),
        topic,
        stream.records.len(),
        Duration::from_secs(30),
    );
    assert_eq!(read.len(), stream.records.len());
    let mut partitions: BTreeMap<Vec<u8>, BTreeSet<i32>> = BTreeMap::new();
    for m in &read {
        let events = auth0_default_roles::event::decode(&m.value);
        let user = events
            .first()
            .and_then(|e| e.as_ref().ok())
            .and_then(|e| e.user())
            .map(|u| u.as_bytes().to_vec());
        assert_eq!(m.key, user, "keyed by user_id");
        if let Some(k) = &m.key {
            partitions.entry(k.clone()).or_default().insert(m.partition);
        }
    }
    assert!(
        partitions.values().all(|p| p.len() == 1),
        "one user, one partition"
    );
    assert!(wait_for(Duration::from_secs(15), || service
        .get("/readyz")
        .is_some_and(|(s, _)| s == 200)));

    // The broker goes away: the delivery is answered 503 (Auth0 retries it later).
    broker.stop();
    let batch = generate::mixed(25, 30, 0);
    let (status, answer) = post(port, &jsonl(&batch.records), Some(TOKEN));
    assert_eq!(status, 503, "{answer}");
    assert!(wait_for(Duration::from_secs(20), || service
        .get("/readyz")
        .is_some_and(|(s, _)| s == 503)));

    // It comes back (empty: in-memory storage); Auth0's retries succeed and nothing of the
    // batch is missing.
    let broker = Broker::start_on(&dir, broker_port);
    broker.create_topic(topic, 3);
    let mut last = (0, String::new());
    assert!(
        wait_for(Duration::from_secs(60), || {
            last = post(port, &jsonl(&batch.records), Some(TOKEN));
            last.0 == 200
        }),
        "retries never succeeded: {last:?}\n{}",
        service.log_text()
    );
    let read = read_all(
        &broker.bootstrap(),
        topic,
        batch.records.len(),
        Duration::from_secs(30),
    );
    let got: BTreeSet<Vec<u8>> = read.into_iter().map(|m| m.value).collect();
    let sent: BTreeSet<Vec<u8>> = batch.records.iter().map(|r| r.value.clone()).collect();
    assert!(
        sent.is_subset(&got),
        "records of the retried batch are missing"
    );
    assert!(
        service.metric(
            "auth0_default_roles_ingest_requests_total",
            "status=\"503\""
        ) >= 1.0
    );
}

#[test]
fn direct_mode_answers_503_never_200_while_the_tenant_refuses_the_service() {
    // In process: nothing here needs the process boundary.
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let backend = auth0_section(&running.base_url);
    let service = ingest_in_process(&rt, &backend, "direct_deadline_seconds = 2");
    let port = service.ingest_port();
    let stream = generate::mixed(23, 60, 0);
    sim.apply_control(&mgmt_sim::ControlRequest {
        denied_scopes: Some(
            ["create:role_members", "update:users", "update:roles"]
                .map(str::to_owned)
                .to_vec(),
        ),
        ..Default::default()
    });
    let (status, answer) = post(port, &jsonl(&stream.records), Some(TOKEN));
    assert_eq!(
        status, 503,
        "refused writes must not be acknowledged: {answer}"
    );
    service.assert_not_ready_because("scope");
    assert!(sim.role_sets().is_empty());
    sim.apply_control(&mgmt_sim::ControlRequest {
        denied_scopes: Some(Vec::new()),
        ..Default::default()
    });
    // Auth0 retries the delivery; the events that waited meanwhile are done or finish now.
    assert!(
        wait_for(Duration::from_secs(90), || {
            post(port, &jsonl(&stream.records), Some(TOKEN)).0 == 200
                && sim.role_sets() == stream.expected
        }),
        "not recovered\n{}",
        service
            .get("/readyz")
            .map(|(_, body)| body)
            .unwrap_or_default()
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_events_processed_total",
            "outcome=\"failed\""
        ),
        0.0
    );
    service.stop().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(running.shutdown());
}

#[test]
fn stalled_connections_and_slow_bodies_are_cut_off_while_valid_deliveries_go_through() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("ingest-hostile");
    let (port, metrics) = (free_port(), free_port());
    let backend = auth0_section(&running.base_url);
    let config = write_ingest_config(
        &dir,
        "direct",
        port,
        metrics,
        &backend,
        "header_read_timeout_seconds = 1\nbody_read_timeout_seconds = 1",
    );
    let service = start_ingest(&dir, &config, port, metrics);
    // 300 clients that open a connection, send half a request line and stall.
    let stalled: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
            let _ = s.write_all(b"POST /auth0/lo");
            s
        })
        .collect();
    // A real delivery is still answered promptly.
    let stream = generate::mixed(24, 40, 0);
    let started = std::time::Instant::now();
    let (status, answer) = post(port, &jsonl(&stream.records), Some(TOKEN));
    assert_eq!(status, 200, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sim.role_sets(), stream.expected);
    // The stalled ones are closed by the server once the header timeout passed.
    std::thread::sleep(Duration::from_secs(2));
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a stalled connection was left open: {e}"),
        }
    }
    // A body that never completes gets 408 within the body timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    slow.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    let head = format!("POST /auth0/logs HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"log_id\":");
    slow.write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    rt.block_on(running.shutdown());
    drop(service);
}

#[test]
fn direct_mode_answers_503_at_once_beyond_max_inflight() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let backend = auth0_section(&running.base_url);
    // In this process: what is tested is the receiver's answers, not the process around it.
    let service = ingest_in_process(
        &rt,
        &backend,
        "direct_deadline_seconds = 1\nmax_inflight = 50",
    );
    let port = service.ingest_port();
    let stream = generate::mixed(25, 60, 0);
    let body = jsonl(&stream.records[..40]);
    sim.set_down(true);
    // The first delivery's events wait for the tenant (503 after the deadline) and hold their
    // places; Auth0's retry would exceed max_inflight and is refused at once.
    let (status, _) = post(port, &body, Some(TOKEN));
    assert_eq!(status, 503);
    let started = std::time::Instant::now();
    let (status, answer) = post(port, &body, Some(TOKEN));
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("max_inflight"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    sim.set_down(false);
    assert!(
        wait_for(Duration::from_secs(60), || post(port, &body, Some(TOKEN)).0
            == 200),
        "deliveries are still refused after the tenant came back"
    );
    service.stop().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(running.shutdown());
}

#[test]
fn bridge_mode_dead_letters_every_malformed_record_with_its_raw_bytes() {
    let dir = temp_dir("ingest-poison");
    let broker = Broker::start(&dir);
    let (topic, dlq) = ("auth0-logs-poison", "auth0-logs-poison-dlq");
    broker.create_topic(topic, 1);
    broker.create_topic(dlq, 1);
    let (port, metrics) = (free_port(), free_port());
    let backend = format!(
        "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\ndead_letter_topic = \"{dlq}\"\n[kafka.properties]\n\"message.timeout.ms\" = 3000\n\"batch.num.messages\" = 1",
        broker.bootstrap()
    );
    let config = write_ingest_config(&dir, "kafka", port, metrics, &backend, "");
    let service = start_ingest(&dir, &config, port, metrics);
    let stream = generate::mixed(26, 5, 0);
    let mut body = jsonl(&stream.records[..1]);
    body.extend_from_slice(b"not json at all\n");
    let (status, answer) = post(port, &body, Some(TOKEN));
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    // A body of nothing but poison (what an EventBridge API destination sends one at a time)
    // is kept too, not refused.
    let (status, answer) = post(
        port,
        b"{\"log_id\": \"1\", \"data\": {\"type\": \"ss\"",
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{answer}");
    let dead = read_dead_letters(&broker.bootstrap(), dlq, 2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2, "both malformed records dead-lettered");
    assert_eq!(dead[0].value, b"not json at all".to_vec());
    assert!(dead[1].value.starts_with(b"{\"log_id\": \"1\""));
    for m in &dead {
        assert_eq!(
            m.headers.get("dlq.reason").map(String::as_str),
            Some("invalid")
        );
        assert!(m.headers.contains_key("dlq.error"), "{:?}", m.headers);
    }
    assert_eq!(
        read_all(&broker.bootstrap(), topic, 1, Duration::from_secs(30)).len(),
        1
    );
}

/// A valid `ss` record of `user` whose description makes it `size` bytes or more.
fn oversized_record(user: &str, log_id: &str, size: usize) -> Vec<u8> {
    format!(
        r#"{{"log_id":"{log_id}","data":{{"type":"ss","date":"2026-11-23T10:00:00.000Z","connection":"Username-Password-Authentication","strategy":"auth0","strategy_type":"database","user_id":"{user}","log_id":"{log_id}","description":"{}"}}}}"#,
        "x".repeat(size)
    )
    .into_bytes()
}

#[test]
fn bridge_mode_dead_letters_a_record_the_topic_refuses_for_good_and_answers_200() {
    let dir = temp_dir("ingest-refused");
    let broker = Broker::start(&dir);
    let (topic, dlq) = ("auth0-logs-refused", "auth0-logs-refused-dlq");
    broker.create_topic(topic, 1);
    broker.create_topic(dlq, 1);
    // Records over 100 kB are refused for good (the producer's limit, as a topic's
    // `max.message.bytes` would).
    let kafka = |dead_letter_topic: &str| {
        format!(
            "[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n{dead_letter_topic}[kafka.properties]\n\"message.timeout.ms\" = 3000\n\"message.max.bytes\" = 100000",
            broker.bootstrap()
        )
    };
    let (port, metrics) = (free_port(), free_port());
    let config = write_ingest_config(
        &dir,
        "kafka",
        port,
        metrics,
        &kafka(&format!("dead_letter_topic = \"{dlq}\"\n")),
        "",
    );
    let service = start_ingest(&dir, &config, port, metrics);
    let stream = generate::mixed(27, 6, 0);
    let big = oversized_record("auth0|big", "90020261123big", 150_000);
    let mut body = jsonl(&stream.records[..3]);
    body.extend_from_slice(&big);
    body.push(b'\n');
    body.extend_from_slice(&jsonl(&stream.records[3..]));
    let good = stream.records.len();

    // Auth0 sends the delivery twice (a retry after a lost answer): 200 both times, never 503.
    for _ in 0..2 {
        let (status, answer) = post(port, &body, Some(TOKEN));
        assert_eq!(status, 200, "{answer}\n{}", service.log_text());
        assert!(answer.contains(&format!("\"produced\":{good}")), "{answer}");
        assert!(answer.contains("\"failed\":1"), "{answer}");
        assert!(answer.contains("\"dead_lettered\":1"), "{answer}");
    }
    let produced: BTreeSet<Vec<u8>> = read_all(
        &broker.bootstrap(),
        topic,
        2 * good,
        Duration::from_secs(30),
    )
    .into_iter()
    .map(|m| m.value)
    .collect();
    let sent: BTreeSet<Vec<u8>> = stream.records.iter().map(|r| r.value.clone()).collect();
    assert_eq!(
        produced, sent,
        "the good records are in the topic, the big one is not"
    );
    let dead = read_dead_letters(&broker.bootstrap(), dlq, 2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2, "one dead letter per delivery");
    for d in &dead {
        let h = |k: &str| d.headers.get(k).map(String::as_str);
        assert_eq!(h("dlq.reason"), Some("failed"), "{:?}", d.headers);
        assert_eq!(h("dlq.original.source"), Some("ingest"));
        assert!(
            h("dlq.error").is_some_and(|e| e.contains("size too large")),
            "{:?}",
            d.headers
        );
        // Too large for the dead-letter topic as well: its beginning, marked truncated.
        assert_eq!(h("dlq.truncated"), Some("true"));
        assert_eq!(h("dlq.original.size"), Some(big.len().to_string().as_str()));
        assert_eq!(d.value, big[..64 * 1024].to_vec());
        assert_eq!(d.key.as_deref(), Some(&b"auth0|big"[..]));
    }
    assert_eq!(
        service.metric(
            "auth0_default_roles_ingest_records_total",
            "outcome=\"failed\""
        ),
        2.0
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_dead_letters_total",
            "reason=\"failed\""
        ),
        2.0
    );
    assert_eq!(
        service.metric(
            "auth0_default_roles_ingest_requests_total",
            "status=\"503\""
        ),
        0.0
    );
    drop(service);

    // Without a dead-letter topic the record is kept nowhere: still 200 (a 503 would be
    // answered to every resend until Auth0 suspends the stream), counted, and logged with its
    // log_id so the event can be found in the tenant's logs.
    let dir = temp_dir("ingest-refused-no-dlq");
    let (port, metrics) = (free_port(), free_port());
    let config = write_ingest_config(&dir, "kafka", port, metrics, &kafka(""), "");
    let service = start_ingest(&dir, &config, port, metrics);
    let (status, answer) = post(port, &body, Some(TOKEN));
    assert_eq!(status, 200, "{answer}\n{}", service.log_text());
    assert!(answer.contains("\"failed\":1"), "{answer}");
    assert!(!answer.contains("dead_lettered"), "{answer}");
    assert_eq!(
        service.metric(
            "auth0_default_roles_ingest_records_total",
            "outcome=\"failed\""
        ),
        1.0
    );
    let log = service.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("cannot be kept") && l.contains("90020261123big")),
        "{log}"
    );
}
