//! The events waiting are bounded, with a ledger too: the real binary consuming Kafka (tansu)
//! with `max_inflight = 100000` and a PostgreSQL ledger whose `grants` table another session
//! holds locked, so every event that wrote its roles waits for its grants' commit. At most
//! [`PROCESSING_MAX`] events may be in process at once (intake pauses there), whatever
//! `max_inflight` allows; once the lock goes, intake resumes and nothing is lost: every user
//! ends with exactly its roles, every grant recorded.

use std::time::{Duration, Instant};

use auth0_default_roles::generate;
use auth0_default_roles::pipeline::PROCESSING_MAX;
use sqlx::Connection;

use test_harness::*;

/// Events in process now: received minus finished (both counted by the pipeline, before and
/// after an event's whole path).
fn in_process(service: &Service) -> (f64, f64) {
    let body = service.get("/metrics").map(|(_, b)| b).unwrap_or_default();
    let received = metric_sum(&body, "auth0_default_roles_events_received_total", "");
    let processed = metric_sum(&body, "auth0_default_roles_events_processed_total", "");
    (received - processed, processed)
}

#[test]
fn intake_pauses_at_the_bound_while_events_wait_for_their_commit_and_loses_nothing() {
    let server = test_harness::pg::shared();
    let url = server.database("backpressure");
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("ledger-backpressure");
    let broker = Broker::start(&dir);
    let topic = "auth0-logs-ledger-backpressure";
    broker.create_topic(topic, 3);
    let port = free_port();
    let config = write_config(
        &dir,
        "backpressure",
        &running.base_url,
        &broker.bootstrap(),
        topic,
        "adr-ledger-backpressure",
        None,
        port,
        "max_inflight = 100000",
    );
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&config, format!("{text}\n[ledger]\nurl = \"{url}\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let service = Service::start(&config, port, dir.join("service.log"));
    assert!(
        wait_for(Duration::from_secs(30), || service
            .get("/readyz")
            .is_some_and(|(status, _)| status == 200)),
        "service not ready\n{}",
        service.log_text()
    );

    // Another session locks the grants against writes (reads go on): commits wait.
    let mut locker = rt
        .block_on(sqlx::PgConnection::connect(&url))
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        sqlx::query("BEGIN").execute(&mut locker).await?;
        sqlx::query("LOCK TABLE grants IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut locker)
            .await
    })
    .unwrap_or_else(|e| panic!("{e}"));

    let stream = generate::mixed(11, 12_000, 0);
    let records: Vec<(Option<String>, Vec<u8>)> = stream
        .records
        .iter()
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect();
    // One record per batch: tansu cannot resume a paused fetch inside a batch (docs/testing.md).
    let _ = produce_batched(&broker.bootstrap(), topic, &records, 1);

    // The consumer decides per message, so a few may come in past the bound before the pause
    // takes: a tenth of it.
    let bound = (PROCESSING_MAX + PROCESSING_MAX / 10) as f64;
    let mut most = 0.0_f64;
    let locked_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < locked_until {
        most = most.max(in_process(&service).0);
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("while locked: at most {most} events in process at once (bound {bound})");
    assert!(
        most <= bound,
        "at most {bound} events in process at once, saw {most}"
    );
    assert!(
        most >= (PROCESSING_MAX / 2) as f64,
        "the events reached the bound while their commits waited (saw {most}): the test tests nothing otherwise"
    );
    assert!(
        service.log_text().contains("intake paused"),
        "intake paused at the bound\n{}",
        service.log_text()
    );

    rt.block_on(async { sqlx::query("COMMIT").execute(&mut locker).await })
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut processed = 0.0;
    while Instant::now() < deadline {
        let (now, done) = in_process(&service);
        most = most.max(now);
        processed = done;
        if processed as usize >= records.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        processed as usize,
        records.len(),
        "every event processed once the lock went\n{}",
        service.log_text()
    );
    assert!(
        most <= bound,
        "at most {bound} in process after, saw {most}"
    );
    assert!(service.log_text().contains("intake resumed"));
    assert_eq!(
        sim.role_sets(),
        stream.expected,
        "every user exactly its roles"
    );
    let pairs: usize = stream.expected.values().map(|r| r.len()).sum();
    let granted = server
        .psql(
            url.rsplit('/').next().unwrap_or_default(),
            "SELECT count(*) FROM grants WHERE revoked = 0",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(granted, pairs.to_string(), "every grant recorded");
    drop(service);
    rt.block_on(running.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}
