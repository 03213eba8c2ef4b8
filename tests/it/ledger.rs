//! The grants ledger with the real binary and the simulator over HTTP: `explain` after a live
//! replay (SQLite file created), an admin's removal standing after a later `user.updated`, a
//! deleted user forgotten, two instances sharing PostgreSQL (Kafka on tansu) making no repeated
//! call, PostgreSQL stopped mid-run losing nothing, and the configuration errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use auth0_default_roles::generate;
use test_harness::pg::{self, PgServer};
use test_harness::*;

const TOKEN: &str = "Bearer ledger-test-token";

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(args)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .env_remove("LEDGER_URL")
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn demo_policy() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A config for the simulator at `base_url` with the demo policy and `extra` sections.
fn tenant_config(dir: &Path, name: &str, base_url: &str, extra: &str) -> PathBuf {
    let text = format!(
        "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{base_url}\"\nrequests_per_second = 1000\nburst = 200\nbatch_window_ms = 20\n\n{extra}\n\n{}\n",
        demo_policy()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn signup(log_id: &str, user: &str, email: &str) -> String {
    json!({"log_id": log_id, "data": {"type": "ss", "date": "2026-11-28T10:00:00.000Z", "user_id": user, "connection": "Username-Password-Authentication", "strategy": "auth0", "details": {"body": {"email": email}}}}).to_string()
}

fn explain(config: &Path, user: &str, json_output: bool) -> (Option<i32>, String, String) {
    let config = config.to_str().unwrap_or_default();
    let mut args = vec!["explain", "--config", config, user];
    if json_output {
        args.extend(["--output", "json"]);
    }
    let out = bin(&args);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn explain_without_a_ledger_exits_2_and_says_what_to_add() {
    let dir = temp_dir("ledger-none");
    let config = tenant_config(&dir, "none", "http://127.0.0.1:9", "");
    let (code, _, stderr) = explain(&config, "auth0|x", false);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("[ledger] url"), "{stderr}");
    let check = bin(&["check", "--config", config.to_str().unwrap_or_default()]);
    assert!(
        text(&check.stdout).contains("ledger: none"),
        "{}",
        text(&check.stdout)
    );
}

#[test]
fn a_bad_ledger_url_or_a_missing_folder_stops_with_exit_2() {
    let dir = temp_dir("ledger-bad");
    for (url, says) in [
        ("sqlite://relative/ledger.db", "ledger.url"),
        ("mysql://u@h/db", "ledger.url"),
        ("postgres://svc:hunter2@127.0.0.1:5432/db", "LEDGER_URL"),
        (
            "sqlite:///nonexistent-adr-folder/ledger.db",
            "no ledger file at /nonexistent-adr-folder/ledger.db",
        ),
    ] {
        let config = tenant_config(
            &dir,
            "bad",
            "http://127.0.0.1:9",
            &format!("[ledger]\nurl = \"{url}\"\n"),
        );
        let (code, _, stderr) = explain(&config, "auth0|x", false);
        assert_eq!(code, Some(2), "{url}: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[test]
fn a_live_replay_then_explain_names_the_rule_and_the_role_and_a_stranger_is_never_seen() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("ledger-replay");
    let db = dir.join("state").join("ledger.db");
    std::fs::create_dir_all(dir.join("state")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!db.exists());
    let config = tenant_config(
        &dir,
        "replay",
        &running.base_url,
        &format!("[ledger]\nurl = \"sqlite://{}\"\n", db.display()),
    );
    let check = bin(&["check", "--config", config.to_str().unwrap_or_default()]);
    assert!(
        text(&check.stdout).contains(&format!("ledger: sqlite://{}", db.display())),
        "{}",
        text(&check.stdout)
    );
    // With a ledger every write reads the user's roles first: the scopes say so.
    let needs = text(&check.stdout)
        .lines()
        .find(|l| l.contains("scopes this config needs:"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        needs.contains("read:role_members") && needs.contains("read:users"),
        "{needs}"
    );
    let events = dir.join("events.jsonl");
    let log_id = "90020211104002502463115418621740818569342603360399786034";
    std::fs::write(
        &events,
        format!("{}\n", signup(log_id, "auth0|ledger-a", "a@example.com")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = bin(&[
        "replay",
        "--config",
        config.to_str().unwrap_or_default(),
        events.to_str().unwrap_or_default(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(db.exists(), "the SQLite file is created");
    assert_eq!(
        sim.user_role_names("auth0|ledger-a"),
        vec!["CUSTOMER".to_owned(), "Viewer".to_owned()]
    );

    let (code, stdout, stderr) = explain(&config, "auth0|ledger-a", false);
    assert_eq!(code, Some(0), "{stderr}");
    for needle in [
        "granted Viewer",
        "by rule everyone",
        "granted CUSTOMER",
        "by rule customers",
        "trigger signup",
        &format!("event {log_id}"),
        "Viewer (rule everyone): the current policy still gives it",
        "policy now, from the profile: Viewer, CUSTOMER",
        "difference: none",
    ] {
        assert!(stdout.contains(needle), "no `{needle}` in:\n{stdout}");
    }
    let (code, stdout, _) = explain(&config, "auth0|ledger-a", true);
    assert_eq!(code, Some(0));
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["standing"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["history"]["entries"][0]["kind"], "grant");
    assert_eq!(report["history"]["entries"][0]["event_id"], log_id);
    assert_eq!(
        report["history"]["entries"][0]["policy_fingerprint"],
        report["policy_fingerprint"]
    );

    let (code, stdout, stderr) = explain(&config, "auth0|stranger", false);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("never seen"), "{stdout}");
    rt.block_on(running.shutdown());
}

fn cloud_event(id: &str, kind: &str, user: &str, email: &str, verified: bool) -> Value {
    json!({
        "id": id, "specversion": "1.0", "type": kind,
        "source": "urn:auth0:acme:users", "time": "2026-11-28T10:00:00.000Z",
        "data": {"object": {
            "user_id": user, "email": email, "email_verified": verified,
            "identities": [{"connection": "Username-Password-Authentication", "provider": "auth0", "isSocial": false}],
        }},
    })
}

fn post(port: u16, event: &Value) {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", TOKEN),
    ];
    let (status, answer) =
        http_post(port, "/auth0/logs", &headers, &body).unwrap_or_else(|| panic!("no answer"));
    assert_eq!(status, 200, "{answer}");
}

fn ingest(dir: &Path, name: &str, base_url: &str, ledger: &str) -> (Service, u16) {
    let (port, metrics) = (free_port(), free_port());
    let config = tenant_config(
        dir,
        name,
        base_url,
        &format!(
            "[ingest]\nmode = \"direct\"\nlisten = \"127.0.0.1:{port}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n[ledger]\nurl = \"{ledger}\"\n"
        ),
    );
    let service = Service::start_ingest(
        &config,
        port,
        metrics,
        dir.join(format!("{name}.log")),
        TOKEN,
    );
    (service, port)
}

#[test]
fn an_admins_removal_stands_after_a_later_user_updated_and_a_deleted_user_is_forgotten() {
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("ledger-admin");
    sim.add_user(mgmt_sim::SeedUser {
        email: Some("p1@partner.example".to_owned()),
        email_verified: Some(false),
        ..mgmt_sim::SeedUser::new("auth0|partner-1")
    });
    let url = format!("sqlite://{}", dir.join("ledger.db").display());
    let user = "auth0|partner-1";
    let email = "p1@partner.example";

    let (first, port) = ingest(&dir, "first", &running.base_url, &url);
    post(
        port,
        &cloud_event("evt_c1", "user.created", user, email, false),
    );
    assert_eq!(
        sim.user_role_names(user),
        vec!["CUSTOMER".to_owned(), "Viewer".to_owned()]
    );
    drop(first);

    // Days later an admin removes Viewer in the Dashboard; the user then verifies their email
    // (a new process: nothing in memory remembers the first grant).
    sim.remove_by_hand(user, &["Viewer"]);
    sim.add_user(mgmt_sim::SeedUser {
        email: Some(email.to_owned()),
        email_verified: Some(true),
        ..mgmt_sim::SeedUser::new(user)
    });
    let (second, port) = ingest(&dir, "second", &running.base_url, &url);
    let writes_before = sim.stats().role_assignments;
    post(
        port,
        &cloud_event("evt_u1", "user.updated", user, email, true),
    );
    assert_eq!(
        sim.user_role_names(user),
        vec!["CUSTOMER".to_owned(), "PARTNER".to_owned()],
        "Viewer stays removed; the new rule's role is given\n{}",
        second.log_text()
    );
    assert_eq!(sim.stats().role_assignments, writes_before + 1);
    assert_eq!(
        second.metric("auth0_default_roles_ledger_roles_not_regranted_total", ""),
        2.0,
        "Viewer and CUSTOMER were granted before"
    );
    assert_eq!(
        second.metric("auth0_default_roles_ledger_writes_total", "kind=\"grant\""),
        1.0
    );
    let config = dir.join("second.toml");
    let (code, stdout, stderr) = explain(&config, user, false);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("granted PARTNER"), "{stdout}");
    assert!(stdout.contains("by rule verified-partners"), "{stdout}");
    assert!(stdout.contains("trigger email_verified"), "{stdout}");
    assert!(stdout.contains("event evt_u1"), "{stdout}");
    assert!(
        stdout.contains("policy now, from the profile: Viewer, CUSTOMER, PARTNER"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Viewer (rule everyone): the current policy still gives it; not held now: removed outside this service"),
        "{stdout}"
    );

    // No deletion has reached the service yet: doctor says what that means.
    let doctor = |config: &Path| {
        let out = bin(&["doctor", "--config", config.to_str().unwrap_or_default()]);
        text(&out.stdout)
    };
    let report = doctor(&dir.join("second.toml"));
    assert!(
        report.contains("ledger: no user's deletion has reached the service yet"),
        "{report}"
    );

    // Deleted, then created again with the same id: a new user, given every role again.
    sim.delete_user(user);
    post(
        port,
        &cloud_event("evt_d1", "user.deleted", user, email, true),
    );
    let report = doctor(&dir.join("second.toml"));
    assert!(
        report.contains("ok   ledger: users' deletions reach the service (the last at "),
        "{report}"
    );
    assert_eq!(
        second.metric("auth0_default_roles_ledger_writes_total", "kind=\"forget\""),
        1.0
    );
    let (_, stdout, _) = explain(&config, user, false);
    assert!(stdout.contains("never seen"), "{stdout}");
    drop(second);
    rt.block_on(running.shutdown());
}

/// A Kafka `run` config for the simulator with a ledger.
#[allow(clippy::too_many_arguments)]
fn kafka_config(
    dir: &Path,
    name: &str,
    base_url: &str,
    bootstrap: &str,
    topic: &str,
    group: &str,
    metrics: u16,
    ledger: &str,
) -> PathBuf {
    let path = write_config(
        dir, name, base_url, bootstrap, topic, group, None, metrics, "",
    );
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    text.push_str(&format!("\n[ledger]\nurl = \"{ledger}\"\n"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn records(stream: &[generate::Record]) -> Vec<(Option<String>, Vec<u8>)> {
    stream
        .iter()
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect()
}

fn ends_of(all: &mut BTreeMap<i32, i64>, ends: BTreeMap<i32, i64>) -> Vec<i64> {
    for (p, end) in ends {
        let e = all.entry(p).or_insert(0);
        *e = (*e).max(end);
    }
    (0..3).map(|p| all.get(&p).copied().unwrap_or(-1)).collect()
}

#[test]
fn an_instance_sharing_postgresql_repeats_no_call_another_one_made() {
    let server = pg::shared();
    let url = server.database("two_instances");
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("ledger-two");
    let broker = Broker::start(&dir);
    let topic = "auth0-logs-ledger-two";
    broker.create_topic(topic, 3);
    let stream = generate::mixed(23, 600, 0);
    let mut all = BTreeMap::new();
    let ends = ends_of(
        &mut all,
        produce(&broker.bootstrap(), topic, &records(&stream.records)),
    );

    let port_a = free_port();
    let config_a = kafka_config(
        &dir,
        "a",
        &running.base_url,
        &broker.bootstrap(),
        topic,
        "adr-ledger-a",
        port_a,
        &url,
    );
    let a = Service::start(&config_a, port_a, dir.join("a.log"));
    assert!(
        wait_for(Duration::from_secs(90), || sim.role_sets()
            == stream.expected
            && committed(&broker.bootstrap(), "adr-ledger-a", topic, 3)
                == ends),
        "a did not finish\n{}\n{}",
        a.snapshot(),
        a.log_text()
    );
    assert_tenant_holds_exactly(&sim, &stream.expected, &[&a]);
    let pairs: usize = stream.expected.values().map(|r| r.len()).sum();
    let granted = server
        .psql(
            &url_db(&url),
            "SELECT count(*) FROM grants WHERE revoked = 0",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        granted,
        pairs.to_string(),
        "one ledger row per (user, role)"
    );
    drop(a);

    // Another instance reads the whole topic again (as it would after a rebalance that
    // redelivers uncommitted work): the ledger shows every grant, so it writes nothing.
    let before = sim.stats();
    let port_b = free_port();
    let config_b = kafka_config(
        &dir,
        "b",
        &running.base_url,
        &broker.bootstrap(),
        topic,
        "adr-ledger-b",
        port_b,
        &url,
    );
    let b = Service::start(&config_b, port_b, dir.join("b.log"));
    assert!(
        wait_for(Duration::from_secs(90), || committed(
            &broker.bootstrap(),
            "adr-ledger-b",
            topic,
            3
        ) == ends),
        "b did not finish\n{}\n{}",
        b.snapshot(),
        b.log_text()
    );
    let after = sim.stats();
    let writes =
        |s: &mgmt_sim::SimStats| s.calls_of("assign_user_roles") + s.calls_of("assign_role_users");
    assert_eq!(
        writes(&after),
        writes(&before),
        "no assignment call repeated\n{}",
        b.log_text()
    );
    assert_eq!(after.duplicate_assignments, before.duplicate_assignments);
    // Every (user, role) pair at least once (a user's later triggers ask again).
    assert!(b.metric("auth0_default_roles_ledger_roles_not_regranted_total", "") as usize >= pairs);
    assert_tenant_holds_exactly(&sim, &stream.expected, &[&b]);
    drop(b);
    rt.block_on(running.shutdown());
}

/// The database name of a `postgres://…/DB` URL.
fn url_db(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

#[test]
fn postgresql_stopped_mid_run_makes_events_wait_and_loses_nothing() {
    let server = PgServer::start("outage");
    let url = server.database("outage");
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("ledger-outage");
    let broker = Broker::start(&dir);
    let topic = "auth0-logs-ledger-outage";
    broker.create_topic(topic, 3);
    let group = "adr-ledger-outage";
    let stream = generate::mixed(29, 800, 0);
    let (first, second) = stream.records.split_at(stream.records.len() / 2);

    let port = free_port();
    let config = kafka_config(
        &dir,
        "svc",
        &running.base_url,
        &broker.bootstrap(),
        topic,
        group,
        port,
        &url,
    );
    let service = Service::start(&config, port, dir.join("svc.log"));
    service.wait_ready();
    let mut all = BTreeMap::new();
    let ends = ends_of(
        &mut all,
        produce(&broker.bootstrap(), topic, &records(first)),
    );
    assert!(
        wait_for(Duration::from_secs(90), || committed(
            &broker.bootstrap(),
            group,
            topic,
            3
        ) == ends),
        "first half not done\n{}",
        service.log_text()
    );

    server.stop();
    let ends = ends_of(
        &mut all,
        produce(&broker.bootstrap(), topic, &records(second)),
    );
    service.assert_not_ready_because("the ledger fails");
    assert!(
        wait_for(Duration::from_secs(30), || service
            .metric("auth0_default_roles_ledger_unreachable", "")
            == 1.0),
        "{}",
        service.log_text()
    );
    // Events wait: the second half is not committed while the database is down.
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(committed(&broker.bootstrap(), group, topic, 3), ends);
    assert!(service.metric("auth0_default_roles_ledger_errors_total", "") >= 1.0);

    server.start_again();
    assert!(
        wait_for(Duration::from_secs(120), || sim.role_sets()
            == stream.expected
            && committed(&broker.bootstrap(), group, topic, 3) == ends),
        "not done after the database came back: {} of {} users\n{}\n{}",
        sim.role_sets().len(),
        stream.expected.len(),
        service.snapshot(),
        service.log_text()
    );
    assert_tenant_holds_exactly(&sim, &stream.expected, &[&service]);
    service.wait_ready();
    assert_eq!(
        service.metric("auth0_default_roles_ledger_unreachable", ""),
        0.0
    );
    // Every grant reached the ledger (those made while it was down were written after).
    let pairs: usize = stream.expected.values().map(|r| r.len()).sum();
    let granted = server
        .psql(
            &url_db(&url),
            "SELECT count(*) FROM grants WHERE revoked = 0",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(granted, pairs.to_string());
    assert!(service.log_text().contains("ledger answering again"));
    drop(service);
    rt.block_on(running.shutdown());
}

#[test]
fn doctor_opens_the_ledger_once_and_names_a_database_that_does_not_answer() {
    let rt = runtime();
    let (_sim, running) = open_tenant(&rt);
    let dir = temp_dir("ledger-doctor");
    let db = dir.join("ledger.db");
    let good = tenant_config(
        &dir,
        "good",
        &running.base_url,
        &format!("[ledger]\nurl = \"sqlite://{}\"\n", db.display()),
    );
    // Read as it is: a missing file is said, and not created.
    let out = bin(&["doctor", "--config", good.to_str().unwrap_or_default()]);
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!("ledger: no file at {} yet", db.display())),
        "{report}"
    );
    assert!(!db.exists(), "doctor created {}", db.display());
    rt.block_on(auth0_default_roles::ledger::Ledger::open(
        &auth0_default_roles::ledger::LedgerSettings {
            url: format!("sqlite://{}", db.display()),
        },
        "test:1",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let out = bin(&["doctor", "--config", good.to_str().unwrap_or_default()]);
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!(
            "ok   ledger: sqlite://{} answers (opened read-only: `run` migrates it at start)",
            db.display()
        )),
        "{report}"
    );
    let closed = free_port();
    let down = tenant_config(
        &dir,
        "down",
        &running.base_url,
        &format!("[ledger]\nurl = \"postgres://svc@127.0.0.1:{closed}/ledger\"\n"),
    );
    let out = bin(&["doctor", "--config", down.to_str().unwrap_or_default()]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(
        report.contains(&format!(
            "FAIL ledger: ledger postgres://svc@127.0.0.1:{closed}/ledger: cannot connect"
        )),
        "{report}"
    );
    rt.block_on(running.shutdown());
}

/// One bad record is that record's problem (issue 30): a signup whose `user_id` holds a NUL
/// (PostgreSQL refuses it in any statement, SQLSTATE 22021) used to stop the instance: its
/// lookup was retried forever as an outage, the batcher blocked every event behind it and
/// intake stayed paused. Now it is dead-lettered and every other user gets their roles.
#[test]
fn a_user_id_with_a_nul_through_kafka_with_postgresql_is_dead_lettered_and_others_get_their_roles()
{
    let server = pg::shared();
    let url = server.database("nul_user");
    let rt = runtime();
    let (sim, running) = open_tenant(&rt);
    let dir = temp_dir("ledger-nul");
    let broker = Broker::start(&dir);
    let topic = "auth0-logs-ledger-nul";
    let dlq = "auth0-logs-ledger-nul-dlq";
    broker.create_topic(topic, 3);
    broker.create_topic(dlq, 1);
    let group = "adr-ledger-nul";
    let stream = generate::mixed(31, 400, 0);
    let bad_user = "auth0|bad\u{0}user";
    let mut all_records = records(&stream.records);
    let middle = all_records.len() / 2;
    all_records.insert(
        middle,
        (
            Some(bad_user.to_owned()),
            signup(
                "90020261128100000000000000000000000000000000000000000001",
                bad_user,
                "nul@example.com",
            )
            .into_bytes(),
        ),
    );
    let mut all = BTreeMap::new();
    let ends = ends_of(&mut all, produce(&broker.bootstrap(), topic, &all_records));

    let port = free_port();
    let config = write_config(
        &dir,
        "svc",
        &running.base_url,
        &broker.bootstrap(),
        topic,
        group,
        Some(dlq),
        port,
        "",
    );
    let mut text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    text.push_str(&format!("\n[ledger]\nurl = \"{url}\"\n"));
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let service = Service::start(&config, port, dir.join("svc.log"));
    assert!(
        wait_for(Duration::from_secs(90), || sim.role_sets()
            == stream.expected
            && committed(&broker.bootstrap(), group, topic, 3) == ends),
        "not done: {} of {} users hold roles\n{}\n{}",
        sim.role_sets().len(),
        stream.expected.len(),
        service.snapshot(),
        service.log_text()
    );
    assert_tenant_holds_exactly(&sim, &stream.expected, &[&service]);
    let dead = read_dead_letters(&broker.bootstrap(), dlq, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1, "{dead:?}\n{}", service.log_text());
    assert!(
        String::from_utf8_lossy(&dead[0].value).contains("bad\\u0000user"),
        "the dead letter is the bad record: {:?}",
        dead[0]
    );
    assert_eq!(
        service.metric("auth0_default_roles_ledger_unreachable", ""),
        0.0,
        "a bad record is no outage"
    );
    service.wait_ready();
    assert!(
        !service.log_text().contains("the ledger fails"),
        "{}",
        service.log_text()
    );
    let pairs: usize = stream.expected.values().map(|r| r.len()).sum();
    let granted = server
        .psql(
            &url_db(&url),
            "SELECT count(*) FROM grants WHERE revoked = 0",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(granted, pairs.to_string());
    drop(service);
    rt.block_on(running.shutdown());
}

fn grant(user: &str, role: &str) -> auth0_default_roles::ledger::Grant {
    auth0_default_roles::ledger::Grant {
        user_id: user.into(),
        role_id: format!("rol_{role}"),
        role_name: role.into(),
        organization_id: None,
        rule: "everyone".into(),
        trigger: "signup".into(),
        event_id: format!("log_{user}_{role}"),
        policy_fingerprint: "f00d".into(),
        instance: "test:1".into(),
        at: 1,
        event_at: Some(1),
    }
}

/// The ledger's error classes with PostgreSQL: concurrent writers whose grants go in one
/// transaction, one of them with a role name PostgreSQL refuses (a NUL: SQLSTATE 22021, past
/// the decode-time check since it is given to the link directly). The batch is written again
/// writer by writer and grant by grant: every other grant is recorded, that writer alone
/// hears of the refusal, and the ledger never counts as failing.
#[test]
fn a_batch_with_a_grant_postgresql_refuses_records_the_others_and_fails_only_that_one() {
    use auth0_default_roles::ledger::{Ledger, LedgerLink, LedgerSettings};
    let server = pg::shared();
    let url = server.database("refused_grant");
    let rt = runtime();
    rt.block_on(async {
        let ledger = Ledger::open(&LedgerSettings { url: url.clone() }, "test:1")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let metrics = std::sync::Arc::new(
            auth0_default_roles::metrics::Metrics::new().unwrap_or_else(|e| panic!("{e}")),
        );
        let link = LedgerLink::new(ledger.clone(), "f00d".into()).batched(metrics.clone());
        let writers: Vec<Vec<_>> = (0..40)
            .map(|i| {
                let user = format!("auth0|user{i}");
                if i == 17 {
                    vec![grant(&user, "Viewer"), grant(&user, "Bad\u{0}Role")]
                } else {
                    vec![grant(&user, "Viewer"), grant(&user, "CUSTOMER")]
                }
            })
            .collect();
        let results = tokio::time::timeout(
            Duration::from_secs(30),
            futures_util::future::join_all(
                writers
                    .into_iter()
                    .map(|grants| link.write_grants(&metrics, grants)),
            ),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the writers still wait after 30 s (ledger failing: {:?})",
                ledger.fault().blocked()
            )
        });
        for (i, result) in results.iter().enumerate() {
            if i == 17 {
                let refused = result.as_ref().err().map(ToString::to_string);
                assert!(
                    refused.as_deref().unwrap_or_default().contains("refuses"),
                    "{refused:?}"
                );
            } else {
                assert_eq!(result, &Ok(()), "writer {i}");
            }
        }
        assert!(
            !ledger.fault().is_failing(),
            "a refused record is no outage"
        );
        assert_eq!(metrics.ledger_unreachable.get(), 0);
        assert!(metrics.ledger_refused.get() >= 1);
        let users: Vec<String> = (0..40).map(|i| format!("auth0|user{i}")).collect();
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        let standing = ledger
            .granted(&users)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for (i, user) in users.iter().enumerate() {
            let roles: Vec<&str> = standing
                .get(*user)
                .map(|g| g.iter().map(|g| g.role_name.as_str()).collect())
                .unwrap_or_default();
            let want: &[&str] = if i == 17 {
                &["Viewer"]
            } else {
                &["Viewer", "CUSTOMER"]
            };
            let mut roles = roles;
            roles.sort_unstable();
            let mut want = want.to_vec();
            want.sort_unstable();
            assert_eq!(roles, want, "{user}");
        }
        // A lookup naming a user id PostgreSQL refuses fails that lookup only.
        let looked_up = futures_util::future::join_all(
            ["auth0|user1", "auth0|x\u{0}y", "auth0|user2"]
                .into_iter()
                .map(|u| link.seen_in_organization(&metrics, u, "org_1")),
        )
        .await;
        assert_eq!(looked_up[0], Ok(false));
        assert!(looked_up[1].is_err(), "{looked_up:?}");
        assert_eq!(looked_up[2], Ok(false));
        assert!(!ledger.fault().is_failing());
    });
}

/// `explain` reads an existing ledger as it is: a mistyped SQLite path is said (exit 2, the
/// path named) instead of creating an empty ledger and answering "never seen".
#[test]
fn explain_with_a_mistyped_sqlite_path_says_so_and_creates_nothing() {
    let dir = temp_dir("ledger-explain-missing");
    let db = dir.join("ledgr.db");
    let config = tenant_config(
        &dir,
        "missing",
        "http://127.0.0.1:9",
        &format!("[ledger]\nurl = \"sqlite://{}\"\n", db.display()),
    );
    let (code, stdout, stderr) = explain(&config, "auth0|someone", false);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("there is no ledger file at {}", db.display())),
        "{stderr}"
    );
    assert!(!stdout.contains("never seen"), "{stdout}");
    assert!(!db.exists(), "explain created {}", db.display());
}
