//! What the ledger says is true, with the real binary (`replay`, `reconcile`, `explain`) and the
//! simulated tenant over HTTP: the documented "users without roles" default survives
//! `reconcile --revoke`; a role an admin gave by hand is neither recorded nor revoked, with
//! `read_user_roles` on and off; a user deleted and re-created with the same id gets its roles
//! again (a social user by its first login, a database user by its signup); a database user's
//! first login after its own signup is not a re-creation; a deletion that arrives late does
//! not wipe what the re-created account received since.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mgmt_sim::{SeedUser, SimConfig, Simulator};
use serde_json::json;

use test_harness::{runtime, start_tenant, temp_dir};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(args)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .env("RUST_LOG", "info")
        .env_remove("LEDGER_URL")
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A config for the simulator at `base_url`, with `policy` and an SQLite ledger in `dir`.
fn config(dir: &Path, name: &str, base_url: &str, auth0_extra: &str, policy: &str) -> PathBuf {
    let text = format!(
        "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{base_url}\"\nrequests_per_second = 1000\nburst = 200\nbatch_window_ms = 5\n{auth0_extra}\n\n[ledger]\nurl = \"sqlite://{}\"\n\n{policy}\n",
        dir.join("ledger.db").display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// Replays `events` (one JSON object each) live; panics unless it exits 0.
fn replay(config: &Path, name: &str, events: &[serde_json::Value]) -> String {
    let dir = config.parent().unwrap_or(Path::new("/tmp"));
    let file = dir.join(format!("{name}.jsonl"));
    let lines: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
    let out = bin(&[
        "replay",
        "--config",
        config.to_str().unwrap_or_default(),
        file.to_str().unwrap_or_default(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    text(&out)
}

fn reconcile(config: &Path, args: &[&str]) -> Output {
    let mut all = vec!["reconcile", "--config", config.to_str().unwrap_or_default()];
    all.extend_from_slice(args);
    bin(&all)
}

fn explain(config: &Path, user: &str) -> String {
    let out = bin(&[
        "explain",
        "--config",
        config.to_str().unwrap_or_default(),
        user,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    text(&out)
}

fn signup(log_id: u64, user: &str, email: &str, date: &str) -> serde_json::Value {
    json!({"log_id": format!("900202612{log_id:047}"), "data": {"type": "ss", "date": date,
        "user_id": user, "connection": "Username-Password-Authentication", "strategy": "auth0",
        "details": {"body": {"email": email}}}})
}

fn verified(log_id: u64, user: &str, email: &str, date: &str) -> serde_json::Value {
    json!({"log_id": format!("900202612{log_id:047}"), "data": {"type": "sv", "date": date,
        "user_id": user, "connection": "Username-Password-Authentication", "strategy": "auth0",
        "details": {"body": {"email": email}}}})
}

fn first_login(log_id: u64, user: &str, connection: &str, date: &str) -> serde_json::Value {
    json!({"log_id": format!("900202612{log_id:047}"), "data": {"type": "s", "date": date,
        "user_id": user, "connection": connection, "strategy": connection,
        "client_id": "app", "details": {"stats": {"loginsCount": 1}}}})
}

fn deletion(log_id: u64, user: &str, date: &str) -> serde_json::Value {
    json!({"log_id": format!("900202612{log_id:047}"), "data": {"type": "sdu", "date": date,
        "user_id": user, "description": "Deleted user"}})
}

fn user(id: &str, email: &str, roles: &[&str]) -> SeedUser {
    SeedUser {
        email: Some(email.to_owned()),
        email_verified: Some(true),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        ..SeedUser::new(id)
    }
}

fn held(sim: &Simulator, user: &str) -> BTreeSet<String> {
    sim.user_role_names(user).into_iter().collect()
}

fn roles(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// docs/policy.md's "users without roles" rule: the role it gives is a role the user holds.
const NO_ROLES_DEFAULT: &str = r#"
[policy]
events = ["signup"]

[[policy.rules]]
name = "default"
unless = { has_roles = true }
assign = ["Viewer"]
"#;

#[test]
fn the_users_without_roles_default_survives_revoke() {
    let rt = runtime();
    let (sim, running) = start_tenant(
        &rt,
        SimConfig::default(),
        vec![
            user("auth0|plain", "plain@example.com", &[]),
            user("auth0|staffer", "staffer@example.com", &["INTERNAL"]),
        ],
    );
    let dir = temp_dir("truth-has-roles");
    let config = config(&dir, "t", &running.base_url, "", NO_ROLES_DEFAULT);
    replay(
        &config,
        "signups",
        &[
            signup(
                1,
                "auth0|plain",
                "plain@example.com",
                "2026-11-28T10:00:00.000Z",
            ),
            signup(
                2,
                "auth0|staffer",
                "staffer@example.com",
                "2026-11-28T10:00:01.000Z",
            ),
        ],
    );
    assert_eq!(held(&sim, "auth0|plain"), roles(&["Viewer"]));
    assert_eq!(held(&sim, "auth0|staffer"), roles(&["INTERNAL"]));

    let plan = reconcile(&config, &["--revoke", "--output", "jsonl"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert!(
        !String::from_utf8_lossy(&plan.stdout).contains("\"remove\""),
        "nothing to take back:\n{}",
        text(&plan)
    );
    let applied = reconcile(&config, &["--revoke", "--apply"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    assert_eq!(sim.stats().calls_of("remove_user_roles"), 0);
    assert_eq!(held(&sim, "auth0|plain"), roles(&["Viewer"]));

    let explained = explain(&config, "auth0|plain");
    assert!(
        explained
            .contains("Viewer (rule default): undecided, never taken back (default.has_roles)"),
        "{explained}"
    );
    assert!(!explained.contains("no longer gives"), "{explained}");
    rt.block_on(running.shutdown());
}

const PARTNERS: &str = r#"
[policy]
events = ["signup", "email_verified"]

[[policy.rules]]
name = "everyone"
assign = ["Viewer"]

[[policy.rules]]
name = "partners"
when = { email_domain = ["partner.example"] }
assign = ["PARTNER"]
"#;

const EVERYONE_ONLY: &str = r#"
[policy]
events = ["signup", "email_verified"]

[[policy.rules]]
name = "everyone"
assign = ["Viewer"]
"#;

/// An admin gave PARTNER by hand before the service saw the user: the ledger records only
/// Viewer, and once the policy drops its partners rule, `--revoke --apply` leaves PARTNER.
fn a_hand_given_role_is_neither_recorded_nor_revoked(read_user_roles: bool) {
    let rt = runtime();
    let (sim, running) = start_tenant(
        &rt,
        SimConfig::default(),
        vec![user("auth0|p1", "p1@partner.example", &["PARTNER"])],
    );
    let dir = temp_dir(&format!("truth-by-hand-{read_user_roles}"));
    let extra = format!("read_user_roles = {read_user_roles}");
    let with_partners = config(&dir, "partners", &running.base_url, &extra, PARTNERS);
    let out = replay(
        &with_partners,
        "verified",
        &[verified(
            1,
            "auth0|p1",
            "p1@partner.example",
            "2026-11-28T10:00:00.000Z",
        )],
    );
    assert_eq!(
        held(&sim, "auth0|p1"),
        roles(&["PARTNER", "Viewer"]),
        "{out}"
    );
    let explained = explain(&with_partners, "auth0|p1");
    assert!(explained.contains("granted Viewer"), "{explained}");
    assert!(
        !explained.contains("granted PARTNER"),
        "the ledger claims the admin's grant:\n{explained}"
    );

    let dropped = config(&dir, "dropped", &running.base_url, &extra, EVERYONE_ONLY);
    let applied = reconcile(&dropped, &["--revoke", "--apply"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    assert_eq!(
        held(&sim, "auth0|p1"),
        roles(&["PARTNER", "Viewer"]),
        "an admin's grant is never taken back:\n{}",
        text(&applied)
    );
    assert_eq!(sim.stats().calls_of("remove_user_roles"), 0);
    rt.block_on(running.shutdown());
}

#[test]
fn a_hand_given_role_is_neither_recorded_nor_revoked_by_default() {
    a_hand_given_role_is_neither_recorded_nor_revoked(false);
}

#[test]
fn a_hand_given_role_is_neither_recorded_nor_revoked_with_read_user_roles() {
    a_hand_given_role_is_neither_recorded_nor_revoked(true);
}

const SOCIAL_AND_DATABASE: &str = r#"
[policy]
events = ["signup", "first_login", "email_verified"]

[[policy.rules]]
name = "everyone"
assign = ["Viewer"]
"#;

#[test]
fn a_re_created_social_user_gets_its_role_again_at_its_first_login() {
    let rt = runtime();
    let social = "google-oauth2|112233445566778899";
    let (sim, running) = start_tenant(
        &rt,
        SimConfig::default(),
        vec![user(social, "s@gmail.example", &[])],
    );
    let dir = temp_dir("truth-recreated-social");
    let config = config(&dir, "t", &running.base_url, "", SOCIAL_AND_DATABASE);
    replay(
        &config,
        "first",
        &[first_login(
            1,
            social,
            "google-oauth2",
            "2026-11-28T10:00:00.000Z",
        )],
    );
    assert_eq!(held(&sim, social), roles(&["Viewer"]));

    // Deleted in the Dashboard (the log names the admin, not the user: no deletion reaches the
    // service), then signed in again with the same Google account: a new account, same id.
    sim.delete_user(social);
    sim.add_user(user(social, "s@gmail.example", &[]));
    assert!(held(&sim, social).is_empty());
    let reads_before = sim.stats().calls_of("get_user");
    replay(
        &config,
        "again",
        &[first_login(
            2,
            social,
            "google-oauth2",
            "2026-12-01T10:00:00.000Z",
        )],
    );
    assert_eq!(
        held(&sim, social),
        roles(&["Viewer"]),
        "the re-created account gets its role"
    );
    assert_eq!(
        sim.stats().calls_of("get_user") - reads_before,
        1,
        "one profile read tells the account's creation"
    );
    let explained = explain(&config, social);
    assert!(explained.contains("re-created"), "{explained}");
    rt.block_on(running.shutdown());
}

#[test]
fn a_re_created_database_user_signs_up_again_and_its_own_first_login_is_no_re_creation() {
    let rt = runtime();
    let id = "auth0|imported-7";
    let (sim, running) = start_tenant(
        &rt,
        SimConfig::default(),
        vec![user(id, "i7@example.com", &[])],
    );
    let dir = temp_dir("truth-recreated-db");
    let config = config(&dir, "t", &running.base_url, "", SOCIAL_AND_DATABASE);
    replay(
        &config,
        "signup",
        &[signup(1, id, "i7@example.com", "2026-11-28T10:00:00.000Z")],
    );
    assert_eq!(held(&sim, id), roles(&["Viewer"]));
    // Its own first login, an hour later: no profile read, no write.
    let before = sim.stats();
    let out = replay(
        &config,
        "login",
        &[first_login(
            2,
            id,
            "Username-Password-Authentication",
            "2026-11-28T11:00:00.000Z",
        )],
    );
    let after = sim.stats();
    assert_eq!(
        after.calls_of("get_user"),
        before.calls_of("get_user"),
        "{out}"
    );
    assert_eq!(
        after.calls_of("assign_user_roles") + after.calls_of("assign_role_users"),
        before.calls_of("assign_user_roles") + before.calls_of("assign_role_users"),
        "{out}"
    );

    // Deleted and imported again with the same id: its signup gives the role again.
    sim.delete_user(id);
    sim.add_user(user(id, "i7@example.com", &[]));
    replay(
        &config,
        "again",
        &[signup(3, id, "i7@example.com", "2026-11-30T10:00:00.000Z")],
    );
    assert_eq!(held(&sim, id), roles(&["Viewer"]));
    rt.block_on(running.shutdown());
}

#[test]
fn a_late_deletion_does_not_wipe_a_newer_grant_and_an_admins_later_removal_stands() {
    let rt = runtime();
    let id = "auth0|late-1";
    let (sim, running) = start_tenant(
        &rt,
        SimConfig::default(),
        vec![user(id, "l1@example.com", &[])],
    );
    let dir = temp_dir("truth-late-deletion");
    let config = config(&dir, "t", &running.base_url, "", SOCIAL_AND_DATABASE);
    replay(
        &config,
        "first",
        &[signup(1, id, "l1@example.com", "2026-11-28T10:00:00.000Z")],
    );
    // Deleted at 11:00 and re-created at 12:00; the deletion's log is read late.
    sim.delete_user(id);
    sim.add_user(user(id, "l1@example.com", &[]));
    replay(
        &config,
        "again",
        &[signup(3, id, "l1@example.com", "2026-11-28T12:00:00.000Z")],
    );
    assert_eq!(held(&sim, id), roles(&["Viewer"]));
    // An admin then takes Viewer away from the new account.
    sim.remove_by_hand(id, &["Viewer"]);
    let out = replay(
        &config,
        "late",
        &[
            deletion(2, id, "2026-11-28T11:00:00.000Z"),
            verified(4, id, "l1@example.com", "2026-11-28T13:00:00.000Z"),
        ],
    );
    assert!(
        held(&sim, id).is_empty(),
        "the admin's removal stands after a late deletion:\n{out}"
    );
    let explained = explain(&config, id);
    assert!(
        explained.contains("Viewer (rule everyone)"),
        "the new account's grant is still on record:\n{explained}"
    );
    rt.block_on(running.shutdown());
}

#[test]
fn a_deletion_of_an_older_account_read_late_leaves_the_new_accounts_grant() {
    let rt = runtime();
    let id = "samlp|corp|late-2";
    let (sim, running) = start_tenant(
        &rt,
        SimConfig::default(),
        vec![user(id, "l2@example.com", &[])],
    );
    let dir = temp_dir("truth-late-deletion-only");
    let config = config(&dir, "t", &running.base_url, "", SOCIAL_AND_DATABASE);
    // The service first meets the account re-created at 12:00 (the old one was deleted at
    // 11:00 and that log has not been read yet).
    replay(
        &config,
        "signup",
        &[signup(1, id, "l2@example.com", "2026-11-28T12:00:00.000Z")],
    );
    sim.remove_by_hand(id, &["Viewer"]);
    let out = replay(
        &config,
        "late",
        &[
            deletion(2, id, "2026-11-28T11:00:00.000Z"),
            verified(3, id, "l2@example.com", "2026-11-28T13:00:00.000Z"),
        ],
    );
    assert!(
        held(&sim, id).is_empty(),
        "a deletion of the old account does not make the service fight the admin:\n{out}"
    );
    rt.block_on(running.shutdown());
}

/// Users without roles get Viewer at their verification (not a fresh account: the ledger's
/// read before the write happens).
const NO_ROLES_AT_VERIFICATION: &str = r#"
[policy]
events = ["email_verified"]

[[policy.rules]]
name = "default"
unless = { has_roles = true }
assign = ["Viewer"]
"#;

const EVERYONE_AT_VERIFICATION: &str = r#"
[policy]
events = ["email_verified"]

[[policy.rules]]
name = "everyone"
assign = ["Viewer"]
"#;

/// A user who holds `group_roles` only through a group (an Enterprise Group with roles).
fn grouped(id: &str, email: &str, group_roles: &[&str]) -> SeedUser {
    SeedUser {
        group_roles: group_roles.iter().map(|r| (*r).to_owned()).collect(),
        ..user(id, email, &[])
    }
}

fn check_out(config: &Path) -> String {
    let out = bin(&["check", "--config", config.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    text(&out)
}

/// `has_roles` and a role held only through a group: with `count_group_roles` off (the
/// default) the user has no roles and gets Viewer; on, the group's INTERNAL counts and nothing
/// is written. `check` lists `read:user_effective_roles` only when the switch is on.
fn has_roles_and_a_role_held_through_a_group(count_group_roles: bool) {
    let rt = runtime();
    let (sim, running) = start_tenant(
        &rt,
        SimConfig::default(),
        vec![grouped("auth0|g1", "g1@example.com", &["INTERNAL"])],
    );
    let dir = temp_dir(&format!("truth-group-has-roles-{count_group_roles}"));
    let extra = format!("count_group_roles = {count_group_roles}");
    let config = config(
        &dir,
        "t",
        &running.base_url,
        &extra,
        NO_ROLES_AT_VERIFICATION,
    );
    let checked = check_out(&config);
    assert_eq!(
        checked.contains("read:user_effective_roles"),
        count_group_roles,
        "{checked}"
    );
    let out = replay(
        &config,
        "verified",
        &[verified(
            1,
            "auth0|g1",
            "g1@example.com",
            "2026-11-28T10:00:00.000Z",
        )],
    );
    let stats = sim.stats();
    if count_group_roles {
        assert_eq!(held(&sim, "auth0|g1"), roles(&[]), "{out}");
        assert!(stats.calls_of("get_user_effective_roles") >= 1, "{out}");
        assert_eq!(stats.calls_of("assign_user_roles"), 0, "{out}");
        assert_eq!(stats.calls_of("assign_role_users"), 0, "{out}");
    } else {
        assert_eq!(held(&sim, "auth0|g1"), roles(&["Viewer"]), "{out}");
        assert_eq!(stats.calls_of("get_user_effective_roles"), 0, "{out}");
    }
    rt.block_on(running.shutdown());
}

#[test]
fn has_roles_ignores_a_role_held_through_a_group_by_default() {
    has_roles_and_a_role_held_through_a_group(false);
}

#[test]
fn has_roles_counts_a_role_held_through_a_group_with_count_group_roles() {
    has_roles_and_a_role_held_through_a_group(true);
}

/// The ledger's read before a write and Viewer held only through a group: off (the default)
/// Viewer is written directly and recorded; on, it counts as held and is not written again.
fn the_held_roles_read_and_a_role_held_through_a_group(count_group_roles: bool) {
    let rt = runtime();
    let (sim, running) = start_tenant(
        &rt,
        SimConfig::default(),
        vec![grouped("auth0|g2", "g2@example.com", &["Viewer"])],
    );
    let dir = temp_dir(&format!("truth-group-held-{count_group_roles}"));
    let extra = format!("count_group_roles = {count_group_roles}");
    let config = config(
        &dir,
        "t",
        &running.base_url,
        &extra,
        EVERYONE_AT_VERIFICATION,
    );
    let out = replay(
        &config,
        "verified",
        &[verified(
            1,
            "auth0|g2",
            "g2@example.com",
            "2026-11-28T10:00:00.000Z",
        )],
    );
    let stats = sim.stats();
    let explained = explain(&config, "auth0|g2");
    if count_group_roles {
        assert_eq!(held(&sim, "auth0|g2"), roles(&[]), "{out}");
        assert!(stats.calls_of("get_user_effective_roles") >= 1, "{out}");
        assert_eq!(stats.calls_of("get_user_roles"), 0, "{out}");
        assert_eq!(stats.calls_of("assign_user_roles"), 0, "{out}");
        assert_eq!(stats.calls_of("assign_role_users"), 0, "{out}");
        assert!(!explained.contains("granted Viewer"), "{explained}");
    } else {
        assert_eq!(held(&sim, "auth0|g2"), roles(&["Viewer"]), "{out}");
        assert_eq!(stats.calls_of("get_user_effective_roles"), 0, "{out}");
        assert!(explained.contains("granted Viewer"), "{explained}");
    }
    rt.block_on(running.shutdown());
}

#[test]
fn a_role_held_through_a_group_is_written_directly_by_default() {
    the_held_roles_read_and_a_role_held_through_a_group(false);
}

#[test]
fn a_role_held_through_a_group_is_not_written_with_count_group_roles() {
    the_held_roles_read_and_a_role_held_through_a_group(true);
}
