//! The `check` and `replay --offline` commands, run as a user runs them.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    if let Some(input) = stdin {
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(input.as_bytes())
                .unwrap_or_else(|e| panic!("stdin: {e}"));
        }
    } else {
        drop(child.stdin.take());
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_prints_the_rules() {
    let out = run(&["check", "--config", "config/example.toml"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("config OK"), "{stdout}");
    assert!(stdout.contains("1. rule \"internal\" (final)"), "{stdout}");
    assert!(
        stdout.contains("policy: roles CUSTOMER, INTERNAL, PARTNER, Viewer"),
        "{stdout}"
    );
    // email_domain and email_verified may need a profile read; nothing reads roles or clients.
    assert!(
        stdout.contains(
            "auth0: scopes this config needs: read:roles create:role_members read:users\n"
        ),
        "{stdout}"
    );
}

#[test]
fn check_warns_when_the_domain_looks_like_a_custom_domain() {
    let dir = std::env::temp_dir().join(format!("adr-check-domain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let check = |domain: &str| {
        let path = dir.join("domain.toml");
        std::fs::write(
            &path,
            format!("[auth0]\ndomain = \"{domain}\"\nclient_id = \"c\"\n\n[[policy.rules]]\nname = \"everyone\"\nassign = [\"Viewer\"]\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = run(
            &["check", "--config", path.to_str().unwrap_or_default()],
            None,
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let custom = check("login.acme.example");
    assert!(
        custom.contains("warning: auth0.domain login.acme.example looks like a custom domain"),
        "{custom}"
    );
    for canonical in ["acme.eu.auth0.com", "Acme.EU.Auth0.com"] {
        let out = check(canonical);
        assert!(!out.contains("custom domain"), "{canonical}: {out}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_rejects_a_bad_config_with_exit_2() {
    let dir = std::env::temp_dir().join(format!("adr-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[policy.rules]]\nname = \"x\"\nwhen = { domain = \"a.com\" }\nassign = [\"A\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = run(
        &["check", "--config", path.to_str().unwrap_or_default()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("policy rule \"x\": unknown condition key `domain`"),
        "{stderr}"
    );
    let missing = run(&["check", "--config", "/nonexistent/config.toml"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read config file"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn replay_offline_classifies_the_mixed_fixture() {
    let out = run(
        &[
            "replay",
            "--config",
            "config/example.toml",
            "--offline",
            "--output",
            "jsonl",
            "tests/fixtures/mixed.jsonl",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let records: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // 17 lines, one of them malformed: every line yields exactly one record, in input order.
    assert_eq!(records.len(), 17);
    let by_id = |suffix: &str| -> &serde_json::Value {
        records
            .iter()
            .find(|r| {
                r["log_id"]
                    .as_str()
                    .is_some_and(|id| id.ends_with(suffix) && id.len() == 56)
            })
            .unwrap_or_else(|| panic!("no record for log id ending {suffix}"))
    };
    let outcome = |r: &serde_json::Value| r["outcome"].as_str().unwrap_or_default().to_owned();
    // Alice (partner.example) signs up: the partner rule needs her profile offline.
    assert_eq!(outcome(&records[0]), "needs_profile");
    assert_eq!(records[0]["trigger"], "signup");
    // Her email_verified event decides everything.
    let sv = by_id("0003");
    assert_eq!(outcome(sv), "would_assign");
    assert_eq!(
        sv["roles"],
        serde_json::json!(["CUSTOMER", "Viewer", "PARTNER"])
    );
    assert_eq!(sv["rules"], serde_json::json!(["customers", "partners"]));
    // Later and SSO logins are not eligible.
    assert_eq!(outcome(by_id("0004")), "not_eligible");
    assert_eq!(outcome(by_id("0005")), "not_eligible");
    // Social first login without a signup event.
    let google = by_id("0006");
    assert_eq!(outcome(google), "would_assign");
    assert_eq!(google["trigger"], "first_login");
    assert_eq!(google["roles"], serde_json::json!(["CUSTOMER", "Viewer"]));
    // Enterprise first login inside an EventBridge event: the final internal rule.
    let carol = by_id("0007");
    assert_eq!(carol["roles"], serde_json::json!(["INTERNAL"]));
    // Look-alike codes.
    for id in ["0020", "0021", "0022", "0023", "0024"] {
        assert_eq!(outcome(by_id(id)), "not_eligible", "{id}");
    }
    // The malformed line.
    let invalid: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["outcome"] == "invalid")
        .collect();
    assert_eq!(invalid.len(), 1);
    assert!(invalid[0]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("line 13"));
    // Login right after signup with the count only in prompts and no connection.
    assert_eq!(outcome(by_id("0008")), "needs_profile");
    // Null count and a failed login.
    assert_eq!(outcome(by_id("0009")), "not_eligible");
    assert_eq!(outcome(by_id("0010")), "not_eligible");
}

#[test]
fn replay_dedups_redeliveries_and_repeat_triggers() {
    let policy = "[[policy.rules]]\nname = \"everyone\"\nassign = [\"Viewer\"]\n";
    let dir = std::env::temp_dir().join(format!("adr-dedup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let config = dir.join("c.toml");
    std::fs::write(&config, policy).unwrap_or_else(|e| panic!("{e}"));
    let ss = r#"{"log_id":"1","data":{"type":"ss","user_id":"auth0|a","connection":"db"}}"#;
    let first_login = r#"{"log_id":"2","data":{"type":"s","user_id":"auth0|a","details":{"stats":{"loginsCount":1}}}}"#;
    let other_user = r#"{"log_id":"3","data":{"type":"ss","user_id":"auth0|b"}}"#;
    let input = format!("{ss}\n{ss}\n{first_login}\n{other_user}\n");
    let out = run(
        &[
            "replay",
            "--config",
            config.to_str().unwrap_or_default(),
            "--offline",
            "--output",
            "jsonl",
        ],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let outcomes: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        outcomes,
        [
            "would_assign",
            "already_done",
            "already_done",
            "would_assign"
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn replay_summary_counts_outcomes_and_roles() {
    let out = run(
        &[
            "replay",
            "--config",
            "config/example.toml",
            "--offline",
            "-",
        ],
        Some(&std::fs::read_to_string("tests/fixtures/mixed.jsonl").unwrap_or_default()),
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let counts: BTreeMap<String, u64> = stdout
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let key = parts.next()?;
            let n = parts.next()?.parse().ok()?;
            Some((key.to_owned(), n))
        })
        .collect();
    assert_eq!(counts.get("events:"), Some(&17), "{stdout}");
    assert_eq!(counts.get("would_assign"), Some(&3), "{stdout}");
    assert_eq!(counts.get("not_eligible"), Some(&9), "{stdout}");
    assert_eq!(counts.get("needs_profile"), Some(&4), "{stdout}");
    assert_eq!(counts.get("invalid"), Some(&1), "{stdout}");
    assert_eq!(counts.get("INTERNAL"), Some(&1), "{stdout}");
}

fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = bin();
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap_or_else(|e| panic!("run: {e}"))
}

fn live_config(dir: &std::path::Path, base_url: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string("config/example.toml").unwrap_or_default();
    let policy = &example[example.find("[policy]").unwrap_or(0)..];
    let text = format!(
        "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{base_url}\"\nrequests_per_second = 50\nburst = 20\nbatch_window_ms = 20\n\n{policy}"
    );
    let path = dir.join("live.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn replay_assigns_through_the_management_api_and_dry_run_writes_nothing() {
    use mgmt_sim::{Seed, SeedRole, SeedUser, SimConfig, Simulator};
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let mut alice = SeedUser::new("auth0|6551a0000000000000000001");
    alice.email = Some("alice@partner.example".into());
    alice.email_verified = Some(true);
    let mut dave = SeedUser::new("auth0|6551a0000000000000000002");
    dave.connection = Some("Username-Password-Authentication".into());
    let seed = Seed {
        roles: ["INTERNAL", "CUSTOMER", "Viewer", "PARTNER", "Viewer-Legacy"]
            .iter()
            .map(|r| SeedRole::named(*r))
            .collect(),
        users: vec![
            alice,
            dave,
            SeedUser::new("google-oauth2|111025433877931430949"),
            SeedUser::new("waad|Zx3eW9corpCarol"),
        ],
        ..Seed::default()
    };
    let sim = Simulator::new(SimConfig::default(), seed);
    let running = runtime
        .block_on(sim.start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))))
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("adr-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let config = live_config(&dir, &running.base_url);
    let config = config.to_str().unwrap_or_default();
    let secret = [("AUTH0_CLIENT_SECRET", "sim-secret")];

    let dry = run_with_env(
        &[
            "replay",
            "--config",
            config,
            "--dry-run",
            "--output",
            "jsonl",
            "tests/fixtures/mixed.jsonl",
        ],
        &secret,
    );
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    assert!(sim.users_with_roles().is_empty(), "dry run writes nothing");
    assert!(
        sim.stats().calls_of("get_user") >= 1,
        "dry run reads profiles"
    );
    assert!(!text(&dry.stdout).contains("needs_profile"));

    let live = run_with_env(
        &["replay", "--config", config, "tests/fixtures/mixed.jsonl"],
        &secret,
    );
    assert_eq!(live.status.code(), Some(0), "{}", text(&live.stderr));
    let summary = text(&live.stdout);
    assert!(summary.contains("management API calls:"), "{summary}");
    assert!(summary.contains("429 answers"), "{summary}");
    let users = sim.users_with_roles();
    assert_eq!(
        users
            .get("auth0|6551a0000000000000000001")
            .cloned()
            .unwrap_or_default(),
        ["CUSTOMER", "PARTNER", "Viewer"]
    );
    assert_eq!(
        users
            .get("auth0|6551a0000000000000000002")
            .cloned()
            .unwrap_or_default(),
        ["CUSTOMER", "Viewer"]
    );
    assert_eq!(
        users
            .get("google-oauth2|111025433877931430949")
            .cloned()
            .unwrap_or_default(),
        ["CUSTOMER", "Viewer"]
    );
    assert_eq!(
        users
            .get("waad|Zx3eW9corpCarol")
            .cloned()
            .unwrap_or_default(),
        ["INTERNAL"]
    );
    assert_eq!(users.len(), 4);

    // A user deleted from the tenant: outcome failed, exit 3, the others unaffected.
    sim.delete_user("google-oauth2|111025433877931430949");
    let failed = run_with_env(
        &[
            "replay",
            "--config",
            config,
            "--output",
            "jsonl",
            "tests/fixtures/mixed.jsonl",
        ],
        &secret,
    );
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed.stderr));
    let out = text(&failed.stdout);
    let failed_line = out
        .lines()
        .find(|l| l.contains("\"failed\""))
        .unwrap_or_default();
    assert!(
        failed_line.contains("google-oauth2|111025433877931430949"),
        "{out}"
    );
    assert!(
        failed_line.contains("The user does not exist."),
        "{failed_line}"
    );

    // Wrong secret: a configuration error, exit 2, with advice.
    let wrong = run_with_env(
        &["replay", "--config", config, "tests/fixtures/mixed.jsonl"],
        &[("AUTH0_CLIENT_SECRET", "nope")],
    );
    assert_eq!(wrong.status.code(), Some(2));
    assert!(text(&wrong.stderr).contains("client id or secret is wrong"));
    // A policy role the tenant does not have.
    std::fs::write(
        dir.join("live.toml"),
        std::fs::read_to_string(config)
            .unwrap_or_default()
            .replace("\"PARTNER\"", "\"PARTNERS\""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let missing = run_with_env(
        &["replay", "--config", config, "tests/fixtures/mixed.jsonl"],
        &secret,
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("PARTNERS"),
        "{}",
        text(&missing.stderr)
    );
    runtime.block_on(running.shutdown());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn replay_reports_unreadable_input_and_missing_secret() {
    let missing = run(
        &[
            "replay",
            "--config",
            "config/example.toml",
            "--offline",
            "/nonexistent.jsonl",
        ],
        None,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read /nonexistent.jsonl"));
    let no_secret = run_with_env(
        &[
            "replay",
            "--config",
            "config/example.toml",
            "tests/fixtures/mixed.jsonl",
        ],
        &[("AUTH0_CLIENT_SECRET", "")],
    );
    assert_eq!(no_secret.status.code(), Some(2));
    assert!(text(&no_secret.stderr).contains("AUTH0_CLIENT_SECRET"));
}

/// A simulated tenant and a config pointing at it, for `replay` runs against it.
struct LiveReplay {
    runtime: tokio::runtime::Runtime,
    sim: mgmt_sim::Simulator,
    running: mgmt_sim::RunningSimulator,
    dir: std::path::PathBuf,
    config: std::path::PathBuf,
}

impl LiveReplay {
    /// Starts a simulator with `seed` and writes a config with `policy` (TOML rules).
    fn start(name: &str, seed: mgmt_sim::Seed, policy: &str) -> LiveReplay {
        let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
        let sim = mgmt_sim::Simulator::new(mgmt_sim::SimConfig::default(), seed);
        let running = runtime
            .block_on(sim.start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))))
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!("adr-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{}\"\nrequests_per_second = 100\nburst = 100\n\n{policy}",
                running.base_url
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        LiveReplay {
            runtime,
            sim,
            running,
            dir,
            config,
        }
    }

    /// `replay --output jsonl --concurrency 1 [extra] FILE` over `events` (JSON Lines), with
    /// the client secret in the environment.
    fn replay(&self, events: &[String], extra: &[&str]) -> Output {
        let input = self.dir.join("events.jsonl");
        std::fs::write(&input, events.join("\n")).unwrap_or_else(|e| panic!("{e}"));
        let config = self.config.to_string_lossy().into_owned();
        let input = input.to_string_lossy().into_owned();
        let mut args = vec!["replay", "--config", &config, "--output", "jsonl"];
        args.extend(["--concurrency", "1"]);
        args.extend(extra);
        args.push(&input);
        run_with_env(&args, &[("AUTH0_CLIENT_SECRET", "sim-secret")])
    }

    fn finish(self) {
        self.runtime.block_on(self.running.shutdown());
    }
}

/// One event in the `{log_id, data}` shape of a log stream.
fn log_record(id: u32, data: &str) -> String {
    format!(r#"{{"log_id":"{id:056}","data":{data}}}"#)
}

#[test]
fn has_roles_gives_the_default_role_only_to_users_without_any_role() {
    use mgmt_sim::{Seed, SeedRole, SeedUser};
    let mut holder = SeedUser::new("auth0|holder");
    holder.roles = vec!["PARTNER".to_owned()];
    let seed = Seed {
        roles: vec![SeedRole::named("Viewer"), SeedRole::named("PARTNER")],
        users: vec![
            holder,
            SeedUser::new("auth0|fresh"),
            SeedUser::new("auth0|twice"),
        ],
        ..Seed::default()
    };
    let live = LiveReplay::start(
        "has-roles",
        seed,
        "[[policy.rules]]\nname = \"default-viewer\"\nunless = { has_roles = true }\nassign = [\"Viewer\"]\n",
    );
    let event = |id: u32, user: &str, kind: &str, count: &str| {
        log_record(
            id,
            &format!(
                r#"{{"type":"{kind}","user_id":"{user}","connection":"Username-Password-Authentication","details":{{"stats":{{"loginsCount":{count}}}}}}}"#
            ),
        )
    };
    let out = live.replay(
        &[
            event(1, "auth0|holder", "ss", "null"),
            event(2, "auth0|fresh", "ss", "null"),
            event(3, "auth0|twice", "ss", "null"),
            event(4, "auth0|twice", "s", "1"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sim = &live.sim;
    let users = sim.users_with_roles();
    assert_eq!(
        users.get("auth0|holder"),
        Some(&vec!["PARTNER".to_owned()]),
        "{users:?}"
    );
    assert_eq!(users.get("auth0|fresh"), Some(&vec!["Viewer".to_owned()]));
    assert_eq!(users.get("auth0|twice"), Some(&vec!["Viewer".to_owned()]));
    let lines = text(&out.stdout);
    assert_eq!(
        lines.matches("\"no_rule\"").count(),
        2,
        "holder's signup, twice's login: {lines}"
    );
    // One roles read per user; the second trigger of `twice` knows from what it was given.
    assert_eq!(
        sim.stats().calls_of("get_user_roles"),
        3,
        "{:?}",
        sim.stats()
    );
    assert_eq!(
        sim.stats().calls_of("get_user"),
        0,
        "has_roles needs no profile read"
    );
    live.finish();
}

#[test]
fn roles_named_by_the_application_are_assigned_and_an_unknown_name_adds_nothing_else() {
    use mgmt_sim::{Seed, SeedApplication, SeedRole, SeedUser};
    let app = |id: &str, role: Option<&str>| SeedApplication {
        client_id: id.to_owned(),
        name: format!("App {id}"),
        client_metadata: role
            .map(|r| {
                [("default_role".to_owned(), r.to_owned())]
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default(),
    };
    let seed = Seed {
        roles: vec![SeedRole::named("Viewer"), SeedRole::named("Store-Customer")],
        users: ["auth0|a", "auth0|b", "auth0|c", "auth0|d", "auth0|e"]
            .iter()
            .map(|u| SeedUser::new(*u))
            .collect(),
        applications: vec![
            app("store", Some("Store-Customer")),
            app("typo", Some("Store-Custmer")),
            app("plain", None),
        ],
    };
    let live = LiveReplay::start(
        "client-roles",
        seed,
        r#"[[policy.rules]]
name = "application-role"
when = { event = "first_login" }
assign_client_metadata = "default_role"

[[policy.rules]]
name = "viewer"
when = { event = "first_login" }
assign = ["Viewer"]
"#,
    );
    let login = |id: u32, user: &str, client: &str| {
        log_record(
            id,
            &format!(
                r#"{{"type":"s","user_id":"{user}","client_id":"{client}","connection":"Username-Password-Authentication","details":{{"stats":{{"loginsCount":1}}}}}}"#
            ),
        )
    };
    let out = live.replay(
        &[
            login(1, "auth0|a", "store"),
            login(2, "auth0|b", "store"),
            login(3, "auth0|c", "typo"),
            login(4, "auth0|d", "plain"),
            login(5, "auth0|e", "gone"),
        ],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let users = live.sim.users_with_roles();
    let both = Some(vec!["Store-Customer".to_owned(), "Viewer".to_owned()]);
    assert_eq!(users.get("auth0|a").cloned(), both, "{users:?}");
    assert_eq!(users.get("auth0|b").cloned(), both);
    // A name that is not a role, an application without the key, a deleted application: the
    // other roles are still given.
    for user in ["auth0|c", "auth0|d", "auth0|e"] {
        assert_eq!(
            users.get(user),
            Some(&vec!["Viewer".to_owned()]),
            "{user}: {users:?}"
        );
    }
    assert_eq!(
        stderr
            .matches("names a role the tenant does not have")
            .count(),
        1,
        "warned once, naming the application: {stderr}"
    );
    assert!(
        stderr.contains("Store-Custmer") && stderr.contains("typo"),
        "{stderr}"
    );
    // One read per application (the second login through `store` is cached).
    assert_eq!(
        live.sim.stats().calls_of("get_client"),
        4,
        "{:?}",
        live.sim.stats()
    );
    live.finish();
}

#[test]
fn a_strategy_type_the_log_omits_is_read_from_the_profile_so_enterprise_users_stay_excluded() {
    use mgmt_sim::{Seed, SeedRole, SeedUser};
    let mut carol = SeedUser::new("waad|carol");
    carol.connection = Some("corp-azure-ad".into());
    let seed = Seed {
        roles: vec![SeedRole::named("CUSTOMER")],
        users: vec![
            carol,
            SeedUser::new("google-oauth2|dan"),
            SeedUser::new("auth0|erin"),
        ],
        ..Seed::default()
    };
    let live = LiveReplay::start(
        "strategy-type",
        seed,
        "[[policy.rules]]\nname = \"customers\"\nunless = { strategy_type = \"enterprise\" }\nassign = [\"CUSTOMER\"]\n",
    );
    // First logins whose log carries no connection, strategy or strategy type, and a signup
    // that names its strategy type (no read needed).
    let first_login = |id: u32, user: &str| {
        log_record(
            id,
            &format!(
                r#"{{"type":"s","user_id":"{user}","details":{{"stats":{{"loginsCount":1}}}}}}"#
            ),
        )
    };
    let events = [
        first_login(1, "waad|carol"),
        first_login(2, "google-oauth2|dan"),
        log_record(
            3,
            r#"{"type":"ss","user_id":"auth0|erin","connection":"Username-Password-Authentication","strategy":"auth0","strategy_type":"database"}"#,
        ),
    ];
    // Offline, nothing can tell: needs_profile, never "not enterprise".
    let offline = live.replay(&events, &["--offline"]);
    let lines = text(&offline.stdout);
    assert_eq!(lines.matches("\"needs_profile\"").count(), 2, "{lines}");
    assert!(lines.contains("customers.strategy_type"), "{lines}");
    let out = live.replay(&events, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let users = live.sim.users_with_roles();
    assert_eq!(
        users.get("waad|carol"),
        None,
        "enterprise: excluded: {users:?}"
    );
    assert_eq!(
        users.get("google-oauth2|dan"),
        Some(&vec!["CUSTOMER".to_owned()])
    );
    assert_eq!(users.get("auth0|erin"), Some(&vec!["CUSTOMER".to_owned()]));
    assert_eq!(
        live.sim.stats().calls_of("get_user"),
        2,
        "{:?}",
        live.sim.stats()
    );
    live.finish();
}

/// The example's forum policy, live: real-shaped tenant logs (a database signup, first logins
/// through an application naming its role, an Azure AD login, a verified company address) on a
/// tenant where one user already holds a role. `has_roles` and the application are read in the
/// same pass, so a user's application role is given whatever the rules before it need.
#[test]
fn the_forum_policy_gives_what_the_forum_asked_for_live() {
    use mgmt_sim::{Seed, SeedApplication, SeedRole, SeedUser};
    let user = |id: &str, email: &str, connection: Option<&str>, roles: &[&str]| {
        let mut u = SeedUser::new(id);
        u.email = Some(email.to_owned());
        u.email_verified = Some(true);
        u.connection = connection.map(str::to_owned);
        u.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        u
    };
    let seed = Seed {
        roles: ["Viewer", "INTERNAL", "CUSTOMER", "Store-User", "PARTNER"]
            .into_iter()
            .map(SeedRole::named)
            .collect(),
        users: vec![
            user("auth0|customer", "c@shop.example", None, &[]),
            user("waad|staff", "s@corp.example", Some("corp-azure-ad"), &[]),
            user("auth0|holder", "h@shop.example", None, &["PARTNER"]),
            user("auth0|verified", "v@corp.example", None, &[]),
        ],
        applications: vec![SeedApplication {
            client_id: "store".to_owned(),
            name: "Store".to_owned(),
            client_metadata: [("default_role".to_owned(), "Store-User".to_owned())]
                .into_iter()
                .collect(),
        }],
    };
    let live = LiveReplay::start("forum", seed, &test_harness::forum_policy());
    let login = |id: u32, user: &str, name: &str, connection: &str, strategy: &str| {
        log_record(
            id,
            &format!(
                r#"{{"type":"s","user_id":"{user}","user_name":"{name}","client_id":"store","client_name":"Store","connection":"{connection}","strategy":"{strategy}","details":{{"stats":{{"loginsCount":1}}}}}}"#
            ),
        )
    };
    let out = live.replay(
        &[
            log_record(
                1,
                r#"{"type":"ss","user_id":"auth0|customer","user_name":"c@shop.example","client_id":"store","client_name":"Store","connection":"Username-Password-Authentication","strategy":"auth0","details":{"body":{"email":"c@shop.example"}}}"#,
            ),
            login(2, "auth0|customer", "c@shop.example", "Username-Password-Authentication", "auth0"),
            login(3, "waad|staff", "s@corp.example", "corp-azure-ad", "waad"),
            login(4, "auth0|holder", "h@shop.example", "Username-Password-Authentication", "auth0"),
            log_record(
                5,
                r#"{"type":"sv","user_id":"auth0|verified","user_name":"v@corp.example","client_id":"global-client","client_name":"All Applications","connection":"Username-Password-Authentication","details":{"email":"v@corp.example"}}"#,
            ),
        ],
        &[],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let users = live.sim.users_with_roles();
    let names = |list: &[&str]| Some(list.iter().map(|r| (*r).to_owned()).collect::<Vec<_>>());
    assert_eq!(
        users.get("auth0|customer").cloned(),
        names(&["CUSTOMER", "Store-User", "Viewer"]),
        "{users:?}\n{stderr}"
    );
    assert_eq!(
        users.get("waad|staff").cloned(),
        names(&["INTERNAL", "Store-User", "Viewer"]),
        "staff get no CUSTOMER: {users:?}"
    );
    assert_eq!(
        users.get("auth0|holder").cloned(),
        names(&["CUSTOMER", "PARTNER", "Store-User"]),
        "a user with a role gets no Viewer, but still the application's role: {users:?}"
    );
    assert_eq!(
        users.get("auth0|verified").cloned(),
        names(&["INTERNAL", "Viewer"]),
        "{users:?}"
    );
    // The store application is read once (cached), not per login.
    assert_eq!(
        live.sim.stats().calls_of("get_client"),
        1,
        "{:?}",
        live.sim.stats()
    );
    live.finish();
}

/// A JSON Lines file of `n` signups (about 330 bytes each), in a fresh temporary folder.
fn signups_file(name: &str, n: u32) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("adr-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            r#"{{"log_id":"{}","data":{{"type":"ss","user_id":"auth0|u{i}","connection":"Username-Password-Authentication","strategy":"auth0","strategy_type":"database","details":{{"body":{{"email":"u{i}@example.com"}}}},"description":"a signup record padded to a realistic size ........................................................"}}}}"#,
            90_000_000_000_000_000_000u128 + u128::from(i)
        ));
        text.push('\n');
    }
    let path = dir.join("signups.jsonl");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

const SIGNUP_SUMMARY: &str = "outcomes:\n  would_assign   15000\nroles (events that assign or would assign them):\n  CUSTOMER       15000\n  Viewer         15000\n";

#[test]
fn replay_of_a_large_input_into_a_pipe_prints_the_summary_and_no_progress() {
    let input = signups_file("replay-pipe", 15_000);
    let size = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0);
    assert!(size > 4 << 20, "more than one 4 MiB chunk: {size} bytes");
    let path = input.display().to_string();
    let out = run(
        &[
            "replay",
            "--config",
            "config/example.toml",
            "--offline",
            &path,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("events: 15000\n{SIGNUP_SUMMARY}"),
        "stdout holds the summary, nothing else"
    );
    assert_eq!(
        text(&out.stderr),
        "",
        "no progress line when stderr is a pipe"
    );
    let _ = std::fs::remove_dir_all(input.parent().unwrap_or(&input));
}

/// Runs the binary with stdin, stdout and stderr on one pseudo-terminal (util-linux `script`);
/// `None` when `script` is not installed.
fn run_on_terminal(args: &[&str]) -> Option<(Option<i32>, String)> {
    let mut command = vec![env!("CARGO_BIN_EXE_auth0-default-roles").to_owned()];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    let out = Command::new("script")
        .args(["-qec", &command.join(" "), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    // `script` exits with the command's status (-e); the terminal turns \n into \r\n.
    Some((out.status.code(), text(&out.stdout).replace("\r\n", "\n")))
}

#[test]
fn replay_on_a_terminal_shows_progress_for_a_large_input_only() {
    let input = signups_file("replay-terminal", 15_000);
    let path = input.display().to_string();
    let Some((code, screen)) = run_on_terminal(&[
        "replay",
        "--config",
        "config/example.toml",
        "--offline",
        &path,
    ]) else {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    };
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains(&format!("events replayed ({path})")),
        "a large input shows its progress: {screen}"
    );
    assert!(
        screen.ends_with(&format!("events: 15000\n{SIGNUP_SUMMARY}")),
        "the spinner is cleared before the summary: {screen}"
    );

    // A small input finishes before it is worth a progress line.
    let small = run_on_terminal(&[
        "replay",
        "--config",
        "config/example.toml",
        "--offline",
        "tests/fixtures/mixed.jsonl",
    ]);
    let (code, screen) = small.unwrap_or_default();
    assert_eq!(code, Some(0), "{screen}");
    // (Its invalid event is warned about on the same terminal.)
    assert!(screen.contains("\nevents: 17\n"), "{screen}");
    assert!(!screen.contains("events replayed"), "{screen}");

    // Records on the terminal: no spinner between them.
    let records = run_on_terminal(&[
        "replay",
        "--config",
        "config/example.toml",
        "--offline",
        "--output",
        "jsonl",
        &path,
    ]);
    let (code, screen) = records.unwrap_or_default();
    assert_eq!(code, Some(0));
    assert_eq!(screen.lines().count(), 15_000);
    assert!(!screen.contains("events replayed"));
    let _ = std::fs::remove_dir_all(input.parent().unwrap_or(&input));
}

/// "Users that sign up with my application": an `ss` is logged for users an admin creates too
/// (the Management API's carries `details.body.is_signup: false`, the Dashboard's is logged
/// against "All Applications"). `created_by` tells them apart from a signup form's `ss`, and an
/// `ss` that tells neither leaves the rule undecided (skipped, no role from it).
#[test]
fn created_by_tells_an_admin_created_signup_from_a_self_signup_offline() {
    let dir = std::env::temp_dir().join(format!("adr-created-by-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let config = dir.join("created-by.toml");
    std::fs::write(
        &config,
        r#"[policy]
[[policy.rules]]
name = "signed-up"
when = { event = "signup", created_by = "self_signup" }
assign = ["Member"]

[[policy.rules]]
name = "staff-made"
when = { event = "signup", created_by = "admin" }
assign = ["Invited"]
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ss = |id: u32, user: &str, client: &str, body: &str| {
        format!(
            r#"{{"log_id":"{id:056}","data":{{"type":"ss","user_id":"auth0|{user}","client_name":"{client}","connection":"Username-Password-Authentication","strategy":"auth0","strategy_type":"database","details":{{"body":{body}}}}}}}"#
        )
    };
    let input = [
        // The Management API (the recorded one: is_signup false, client "Auth0 CLI").
        ss(1, "api", "Auth0 CLI", r#"{"email":"a@example.com","password":"*****","is_signup":false,"connection":"Username-Password-Authentication"}"#),
        // The Dashboard: "All Applications", the body without a form's fields.
        ss(2, "dash", "All Applications", r#"{"email":"d@example.com","password":"*****","connection":"Username-Password-Authentication"}"#),
        // Universal Login's signup form.
        ss(3, "self", "My App", r#"{"email":"s@example.com","password":"*****","transaction":{"id":"t1"},"request_language":"en"}"#),
        // Nothing tells: undecided.
        ss(4, "unknown", "My App", r#"{"email":"u@example.com","password":"*****"}"#),
    ]
    .join("\n");
    let config_arg = config.to_string_lossy().into_owned();
    let out = run(
        &[
            "replay",
            "--config",
            &config_arg,
            "--offline",
            "--output",
            "jsonl",
        ],
        Some(&input),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}{stdout}", text(&out.stderr));
    let records: BTreeMap<String, serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| Some((r["user_id"].as_str()?.to_owned(), r)))
        .collect();
    let field = |user: &str, key: &str| records[&format!("auth0|{user}")][key].clone();
    assert_eq!(
        field("api", "roles"),
        serde_json::json!(["Invited"]),
        "{stdout}"
    );
    assert_eq!(field("api", "created_by"), serde_json::json!("admin"));
    assert_eq!(
        field("dash", "roles"),
        serde_json::json!(["Invited"]),
        "{stdout}"
    );
    assert_eq!(
        field("self", "roles"),
        serde_json::json!(["Member"]),
        "{stdout}"
    );
    assert_eq!(
        field("self", "created_by"),
        serde_json::json!("self_signup")
    );
    assert_eq!(
        field("unknown", "outcome"),
        serde_json::json!("no_rule"),
        "{stdout}"
    );
    assert_eq!(
        field("unknown", "skipped"),
        serde_json::json!(["signed-up.created_by", "staff-made.created_by"]),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Organization-owned roles (`type: "organization"`, `owner_id`) may share a name with a tenant
/// role: a plain policy name is the tenant role, even when an organization's role of that name
/// is listed first; `org_ID/NAME` names the organization's. Two tenant roles of one name stop
/// the run at start (exit 2), naming the name.
#[test]
fn a_policy_role_name_shared_with_an_organization_role_resolves_to_the_tenant_role() {
    use mgmt_sim::{Seed, SeedRole, SeedUser};
    let seed = Seed {
        roles: vec![
            SeedRole {
                id: Some("rol_0000000000000org".into()),
                ..SeedRole::owned_by("org_acme", "Viewer")
            },
            SeedRole {
                id: Some("rol_1111111111111org".into()),
                ..SeedRole::owned_by("org_beta", "Viewer")
            },
            SeedRole {
                id: Some("rol_zzzzzzzzzztenant".into()),
                ..SeedRole::named("Viewer")
            },
        ],
        users: vec![SeedUser::new("auth0|u1")],
        ..Seed::default()
    };
    let live = LiveReplay::start(
        "org-owned-roles",
        seed,
        "[[policy.rules]]\nname = \"everyone\"\nassign = [\"Viewer\"]\n",
    );
    let signup = log_record(
        1,
        r#"{"type":"ss","user_id":"auth0|u1","connection":"Username-Password-Authentication"}"#,
    );
    let out = live.replay(std::slice::from_ref(&signup), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        live.sim.user_role_ids("auth0|u1"),
        vec!["rol_zzzzzzzzzztenant".to_owned()],
        "the tenant role, not an organization's: {}",
        text(&out.stdout)
    );
    // Two tenant roles named Viewer: which one the policy means is unknowable.
    live.sim.add_role(SeedRole {
        id: Some("rol_yyyyyyyyyytenant".into()),
        ..SeedRole::named("Viewer")
    });
    let out = live.replay(&[signup], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("several tenant roles") && stderr.contains("Viewer"),
        "{stderr}"
    );
    live.finish();
}

/// `replay --offline --output jsonl FILE` with `env` (the test-only panic hook).
fn replay_records(path: &str, env: &[(&str, &str)]) -> Output {
    run_with_env(
        &[
            "replay",
            "--config",
            "config/example.toml",
            "--offline",
            "--output",
            "jsonl",
            path,
        ],
        env,
    )
}

#[test]
fn a_replayed_event_whose_task_is_lost_once_runs_again_and_ends_as_in_a_clean_run() {
    // 15,000 signups span several 4 MiB chunks: the lost event is in a later one, so running it
    // again decodes the right event of the right chunk.
    let input = signups_file("replay-lost-once", 15_000);
    let path = input.display().to_string();
    let clean = replay_records(&path, &[]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stderr));
    let lost_id = format!("{}", 90_000_000_000_000_000_000u128 + 14_000);
    assert!(
        text(&clean.stdout).contains(&lost_id),
        "the event is replayed"
    );
    let lost_once = replay_records(
        &path,
        &[
            ("AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID", lost_id.as_str()),
            ("AUTH0_DEFAULT_ROLES_TEST_PANIC_TIMES", "1"),
        ],
    );
    let stderr = text(&lost_once.stderr);
    assert_eq!(
        stderr.matches("processing an event panicked").count(),
        1,
        "the task was lost once: {stderr}"
    );
    assert_eq!(lost_once.status.code(), Some(0), "{stderr}");
    assert!(
        lost_once.stdout == clean.stdout,
        "every line as in the clean run, the lost event's included"
    );
    let _ = std::fs::remove_dir_all(input.parent().unwrap_or(&input));
}

#[test]
fn a_replayed_event_whose_task_is_lost_every_time_ends_failed_after_three_losses_and_its_neighbours_are_replayed(
) {
    let fixture = "tests/fixtures/mixed.jsonl";
    let clean = replay_records(fixture, &[]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stderr));
    let clean = text(&clean.stdout);
    let lost_id = clean
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["outcome"] == "would_assign")
        .and_then(|r| r["log_id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no eligible event: {clean}"));
    let lost = replay_records(
        fixture,
        &[("AUTH0_DEFAULT_ROLES_TEST_PANIC_LOG_ID", lost_id.as_str())],
    );
    let stderr = text(&lost.stderr);
    assert_eq!(lost.status.code(), Some(3), "an event failed: {stderr}");
    assert_eq!(
        stderr.matches("processing an event panicked").count(),
        3,
        "run three times: {stderr}"
    );
    let lines = text(&lost.stdout);
    assert_eq!(lines.lines().count(), clean.lines().count());
    for (got, want) in lines.lines().zip(clean.lines()) {
        let record: serde_json::Value =
            serde_json::from_str(got).unwrap_or_else(|e| panic!("{e}: {got}"));
        if record["log_id"] == lost_id.as_str() {
            assert_eq!(record["outcome"], "failed", "{got}");
            let error = record["error"].as_str().unwrap_or_default();
            assert!(error.contains("lost its task 3 times in a row"), "{error}");
        } else {
            assert_eq!(got, want, "a neighbour as in the clean run");
        }
    }
}
