//! A crash between an accepted role write and its record, with the real binary: the service
//! consumes Kafka (tansu) with a PostgreSQL ledger whose `grants` another session holds locked,
//! so the grant's record waits while the simulated tenant has accepted the role write; the
//! service is killed (SIGKILL) there and started again once the lock goes. The grant was
//! journaled (pending) before the write: the redelivered event's read finds the roles held and
//! records them as the service's grants, so an admin's later removal of one is not undone by
//! the user's next trigger. Before the journal the redelivery recorded nothing (it took the
//! roles for someone else's) and the next trigger gave the removed role back.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use sqlx::Connection;

use test_harness::*;

const USER: &str = "auth0|crash-1";

fn event(log_id: u64, kind: &str, date: &str) -> (Option<String>, Vec<u8>) {
    let mut data = json!({"type": kind, "date": date, "user_id": USER,
        "connection": "Username-Password-Authentication", "strategy": "auth0",
        "details": {"body": {"email": "crash-1@example.com"}}});
    if kind == "s" {
        data["client_id"] = json!("app");
        data["details"] = json!({"stats": {"loginsCount": 1}});
    }
    let line = json!({"log_id": format!("900202612{log_id:047}"), "data": data});
    (Some(USER.to_owned()), line.to_string().into_bytes())
}

fn processed(service: &Service) -> f64 {
    service.metric("auth0_default_roles_events_processed_total", "")
}

#[test]
fn a_grant_accepted_before_a_crash_is_recorded_as_the_services_after_the_restart() {
    let server = test_harness::pg::shared();
    let url = server.database("crash");
    let db = url.rsplit('/').next().unwrap_or_default().to_owned();
    let psql = |sql: &str| server.psql(&db, sql).unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("ledger-crash");
    let broker = Broker::start(&dir);
    let topic = "auth0-logs-ledger-crash";
    broker.create_topic(topic, 1);
    let port = free_port();
    let config = write_config(
        &dir,
        "crash",
        &running.base_url,
        &broker.bootstrap(),
        topic,
        "adr-ledger-crash",
        None,
        port,
        "",
    );
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&config, format!("{text}\n[ledger]\nurl = \"{url}\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut service = Service::start(&config, port, dir.join("service.log"));
    service.wait_ready();

    // Another session locks the grants against writes: the record of a grant waits.
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

    // A signup read a day late (not a fresh account: the user's roles are read first).
    let day_ago = humantime::format_rfc3339_millis(
        std::time::SystemTime::now() - Duration::from_secs(86_400),
    )
    .to_string();
    let _ = produce(&broker.bootstrap(), topic, &[event(1, "ss", &day_ago)]);
    let given: BTreeSet<String> = ["Viewer", "CUSTOMER"].map(str::to_owned).into();
    let held = || -> BTreeSet<String> { sim.user_role_names(USER).into_iter().collect() };
    assert!(
        wait_for(Duration::from_secs(30), || held() == given),
        "the tenant accepted the role write (holds {:?})\n{}",
        held(),
        service.log_text()
    );
    // The record waits for the lock: the service dies before it.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(processed(&service), 0.0, "the event is still in process");
    service.signal("KILL");
    assert!(service.wait_exit(Duration::from_secs(10)).is_some());
    rt.block_on(async { sqlx::query("COMMIT").execute(&mut locker).await })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        psql("SELECT count(*) FROM grants"),
        "0",
        "nothing recorded before the crash"
    );

    // Started again: the event was never acknowledged, so it is delivered again.
    let service = Service::start(&config, port, dir.join("service-2.log"));
    service.wait_ready();
    assert!(
        wait_for(Duration::from_secs(60), || processed(&service) >= 1.0),
        "the event is redelivered\n{}",
        service.log_text()
    );
    let standing = psql(
        "SELECT string_agg(role_name || ' ' || event_id, ',' ORDER BY role_name) FROM grants WHERE revoked = 0",
    );
    let event_id = format!("900202612{:047}", 1);
    assert_eq!(
        standing,
        format!("CUSTOMER {event_id},Viewer {event_id}"),
        "the roles the crashed write added are recorded as the service's grants, by their event\n{}",
        service.log_text()
    );
    assert_eq!(psql("SELECT count(*) FROM pending_grants"), "0");

    // An admin removes Viewer; the user's next trigger does not give it back.
    sim.remove_by_hand(USER, &["Viewer"]);
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let _ = produce(&broker.bootstrap(), topic, &[event(2, "s", &now)]);
    assert!(
        wait_for(Duration::from_secs(60), || processed(&service) >= 2.0),
        "the login is processed\n{}",
        service.log_text()
    );
    assert_eq!(
        held(),
        ["CUSTOMER".to_owned()].into(),
        "the admin's removal of the service's grant stands\n{}",
        service.log_text()
    );
    drop(service);
    rt.block_on(running.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}
