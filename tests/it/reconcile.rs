//! `reconcile` run as a user runs it (the real binary) against the simulated tenant over HTTP:
//! plan, apply, a second run, an apply killed halfway and resumed, a user deleted between the
//! export and the apply, a failed export job, `--users FILE`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mgmt_sim::{RunningSimulator, Seed, SeedRole, SeedUser, SimConfig, Simulator};

use test_harness::{runtime, temp_dir, wait_for};

const CORP: &str = "corp-azure-ad";
/// A role outside the policy: reconcile must never touch it.
const LEGACY: &str = "Legacy";

/// The demo policy, plus a rule only a login can decide (skipped for existing users).
const POLICY: &str = r#"
[policy]
events = ["signup", "first_login", "email_verified"]

[[policy.rules]]
name = "everyone"
assign = ["Viewer"]

[[policy.rules]]
name = "internal"
when = { connection = ["corp-azure-ad"] }
assign = ["INTERNAL"]

[[policy.rules]]
name = "customers"
unless = { connection = ["corp-azure-ad"] }
assign = ["CUSTOMER"]

[[policy.rules]]
name = "verified-partners"
when = { event = "email_verified", email_domain = ["partner.example"] }
assign = ["PARTNER"]

[[policy.rules]]
name = "beta-app"
when = { client_id = ["beta-app-client"] }
assign = ["BETA"]
"#;

/// User `i` of a tenant: a third already right, a third holding only `Viewer`, a third nothing;
/// every fourth on the corporate connection, every fifth a partner (verified when even), every
/// seventh holding `Legacy`.
fn user(i: usize) -> (SeedUser, BTreeSet<String>) {
    let corp = i % 4 == 0;
    let partner = i % 5 == 0;
    let verified = i % 2 == 0;
    let mut expected: BTreeSet<String> = ["Viewer"].iter().map(|s| (*s).to_owned()).collect();
    expected.insert(if corp { "INTERNAL" } else { "CUSTOMER" }.to_owned());
    if partner && verified {
        expected.insert("PARTNER".to_owned());
    }
    let mut held: Vec<String> = match i % 3 {
        0 => expected.iter().cloned().collect(),
        1 => vec!["Viewer".to_owned()],
        _ => Vec::new(),
    };
    if i % 7 == 0 {
        held.push(LEGACY.to_owned());
    }
    let seed = SeedUser {
        user_id: format!("auth0|user{i:05}"),
        email: Some(if partner {
            format!("u{i}@partner.example")
        } else {
            format!("u{i}@example.com")
        }),
        email_verified: Some(verified),
        connection: corp.then(|| CORP.to_owned()),
        app_metadata: None,
        roles: held,
        group_roles: Vec::new(),
        created_at: None,
    };
    (seed, expected)
}

struct Tenant {
    /// Serves the simulator.
    _rt: tokio::runtime::Runtime,
    sim: Simulator,
    server: RunningSimulator,
    dir: PathBuf,
    /// user → the roles the policy says they must hold.
    expected: BTreeMap<String, BTreeSet<String>>,
    /// user → the roles they held at the start.
    initial: BTreeMap<String, BTreeSet<String>>,
}

impl Tenant {
    fn start(name: &str, users: usize, config: SimConfig) -> Tenant {
        let rt = runtime();
        let mut seeds = Vec::new();
        let mut expected = BTreeMap::new();
        for i in 0..users {
            let (seed, roles) = user(i);
            expected.insert(seed.user_id.clone(), roles);
            seeds.push(seed);
        }
        let mut roles: Vec<SeedRole> = auth0_default_roles::generate::DEMO_ROLES
            .iter()
            .map(|n| SeedRole::named(*n))
            .collect();
        roles.push(SeedRole::named("BETA"));
        roles.push(SeedRole::named(LEGACY));
        let sim = Simulator::new(
            config,
            Seed {
                roles,
                users: seeds,
                ..Seed::default()
            },
        );
        let server = rt
            .block_on(sim.start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"))))
            .unwrap_or_else(|e| panic!("{e}"));
        let initial = sim.role_sets();
        Tenant {
            _rt: rt,
            sim,
            server,
            dir: temp_dir(name),
            expected,
            initial,
        }
    }

    fn config(&self, requests_per_second: f64, batch_max_users: usize) -> PathBuf {
        self.config_with(requests_per_second, batch_max_users, POLICY)
    }

    fn config_with(
        &self,
        requests_per_second: f64,
        batch_max_users: usize,
        policy: &str,
    ) -> PathBuf {
        let text = format!(
            "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{}\"\nrequests_per_second = {requests_per_second}\nburst = 20\nbatch_max_users = {batch_max_users}\n{policy}",
            self.server.base_url
        );
        let path = self.dir.join("reconcile.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// The (user, role) pairs missing at the start.
    fn missing(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.expected
            .iter()
            .filter_map(|(user, want)| {
                let held = self.initial.get(user).cloned().unwrap_or_default();
                let missing: BTreeSet<String> = want.difference(&held).cloned().collect();
                (!missing.is_empty()).then(|| (user.clone(), missing))
            })
            .collect()
    }

    /// What every user must hold after an apply: the expected roles plus `Legacy` where held.
    fn after_apply(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut after = self.expected.clone();
        for (user, held) in &self.initial {
            if held.contains(LEGACY) {
                after
                    .entry(user.clone())
                    .or_default()
                    .insert(LEGACY.to_owned());
            }
        }
        after
    }

    /// Write calls floor: ⌈pairs of each role / batch⌉ summed.
    fn write_floor(&self, batch: usize) -> u64 {
        let mut per_role: BTreeMap<String, usize> = BTreeMap::new();
        for roles in self.missing().values() {
            for role in roles {
                *per_role.entry(role.clone()).or_default() += 1;
            }
        }
        per_role.values().map(|n| n.div_ceil(batch) as u64).sum()
    }

    fn writes(&self) -> u64 {
        let stats = self.sim.stats();
        stats.calls_of("assign_role_users") + stats.calls_of("assign_user_roles")
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"));
    command
        .arg("reconcile")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn reconcile(config: &Path, args: &[&str]) -> Output {
    command(config, args)
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The plan's lines: user → missing roles (and each line's rules are not empty).
fn plan_lines(stdout: &[u8]) -> BTreeMap<String, BTreeSet<String>> {
    text(stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(
                v["rules"].as_array().is_some_and(|r| !r.is_empty()),
                "{line}"
            );
            let roles = v["roles"]
                .as_array()
                .unwrap_or_else(|| panic!("roles: {line}"))
                .iter()
                .map(|r| r.as_str().unwrap_or_default().to_owned())
                .collect();
            (v["user_id"].as_str().unwrap_or_default().to_owned(), roles)
        })
        .collect()
}

#[test]
fn plan_lists_exactly_the_missing_pairs_and_writes_nothing() {
    let tenant = Tenant::start("reconcile-plan", 240, SimConfig::default());
    let config = tenant.config(500.0, 50);
    let out = reconcile(&config, &["--output", "jsonl"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let plan = plan_lines(&out.stdout);
    let missing = tenant.missing();
    assert!(missing.len() > 100, "the fixture misses many pairs");
    assert_eq!(plan, missing);
    assert!(plan
        .values()
        .all(|roles| !roles.contains(LEGACY) && !roles.contains("BETA")));
    assert_eq!(tenant.writes(), 0, "a plan writes nothing");
    assert_eq!(tenant.sim.role_sets(), tenant.initial);
    let stats = tenant.sim.stats();
    assert_eq!(stats.calls_of("create_export_job"), 1);
    assert!(stats.calls_of("get_job") >= 1);
    assert_eq!(stats.export_downloads, 1);
    // One checkpoint page per 100 members of each of the five policy roles (at least one).
    let pages: u64 = ["Viewer", "CUSTOMER", "INTERNAL", "PARTNER", "BETA"]
        .iter()
        .map(|role| {
            let members = tenant
                .initial
                .values()
                .filter(|r| r.contains(*role))
                .count();
            members.div_ceil(100).max(1) as u64
        })
        .sum();
    assert_eq!(stats.calls_of("get_role_users"), pages);
    let pairs: usize = missing.values().map(BTreeSet::len).sum();
    assert!(stderr.contains("users: 240 scanned"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "to add: {} users missing {pairs} (user, role) pairs",
            missing.len()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "rule skipped for existing users: beta-app (tests client_id, which only a login knows)"
        ),
        "{stderr}"
    );
    // `check` says the same.
    let check = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(["check", "--config"])
        .arg(&config)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        text(&check.stdout).contains("reconcile: rule beta-app is not applied to existing users"),
        "{}",
        text(&check.stdout)
    );
    assert!(
        text(&check.stdout).contains(
            "auth0: `reconcile` also needs: read:role_members (the users export and role members)"
        ),
        "{}",
        text(&check.stdout)
    );
}

#[test]
fn apply_makes_the_tenant_match_and_a_second_run_plans_nothing() {
    let tenant = Tenant::start("reconcile-apply", 300, SimConfig::default());
    let batch = 40;
    let config = tenant.config(500.0, batch);
    let out = reconcile(&config, &["--apply"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert_eq!(tenant.sim.role_sets(), tenant.after_apply());
    let floor = tenant.write_floor(batch);
    assert_eq!(tenant.writes(), floor, "one bulk call per batch: {stdout}");
    assert_eq!(tenant.sim.stats().calls_of("assign_user_roles"), 0);
    assert!(stdout.contains("added: "), "{stdout}");
    let again = reconcile(&config, &["--output", "jsonl"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(text(&again.stdout).is_empty(), "{}", text(&again.stdout));
    assert!(
        text(&again.stderr).contains("to add: 0 users missing 0 (user, role) pairs"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(tenant.writes(), floor, "nothing more written");
}

#[test]
fn an_apply_killed_halfway_resumes_without_repeating_finished_batches() {
    let tenant = Tenant::start("reconcile-resume", 600, SimConfig::default());
    let batch = 10;
    // 20 calls a second: the writes take several seconds.
    let config = tenant.config(20.0, batch);
    let state = tenant.dir.join("state.jsonl");
    let state_arg = state.to_str().unwrap_or_default().to_owned();
    let mut child = command(&config, &["--apply", "--state", &state_arg])
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let batches_recorded = || {
        std::fs::read_to_string(&state)
            .map(|t| t.matches(r#""kind":"batch""#).count())
            .unwrap_or(0)
    };
    let started = wait_for(Duration::from_secs(60), || batches_recorded() >= 5);
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    assert!(started, "no batch recorded before the kill");
    let written_before = tenant.writes();
    let floor = tenant.write_floor(batch);
    assert!(
        written_before < floor,
        "killed before the end ({written_before} of {floor})"
    );
    let finished = batches_recorded();
    let out = reconcile(&config, &["--apply", "--state", &state_arg]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert_eq!(tenant.sim.role_sets(), tenant.after_apply());
    let resumed_writes = tenant.writes() - written_before;
    assert!(
        resumed_writes + finished as u64 <= floor,
        "the finished batches were not repeated: {resumed_writes} written after the resume, {finished} finished before, floor {floor}"
    );
    assert!(
        tenant.writes() <= floor + 4,
        "at most the batches in flight at the kill are repeated: {} writes, floor {floor}",
        tenant.writes()
    );
    assert!(stdout.contains("resumed: "), "{stdout}");
    // The export downloaded before the kill was reused.
    assert_eq!(tenant.sim.stats().calls_of("create_export_job"), 1);
}

#[test]
fn a_user_deleted_between_export_and_apply_fails_alone() {
    let tenant = Tenant::start(
        "reconcile-deleted",
        90,
        SimConfig {
            export_job_millis: 1500,
            ..SimConfig::default()
        },
    );
    let config = tenant.config(500.0, 50);
    let victim = "auth0|user00002"; // holds nothing: missing every role
    assert!(tenant.missing().contains_key(victim));
    let child = command(&config, &["--apply"])
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let exported = wait_for(Duration::from_secs(30), || {
        tenant.sim.stats().calls_of("create_export_job") == 1
    });
    assert!(exported);
    tenant.sim.delete_user(victim);
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    let mut after = tenant.after_apply();
    after.remove(victim);
    assert_eq!(tenant.sim.role_sets(), after, "every other user was fixed");
    assert!(stdout.contains(&format!("user_id={victim}")), "{stdout}");
    assert!(
        stdout.contains("split to find the users a bulk call failed for"),
        "{stdout}"
    );
    // The victim's batches (of 50) are split in halves down to the victim: a handful of calls
    // per batch (about 2 × log₂ 50), not one per user of the batch.
    let roles_missing = tenant.missing()[victim].len() as u64;
    let extra = tenant.writes() - tenant.write_floor(50);
    assert!(extra > 0, "{:?}", tenant.sim.stats());
    assert!(
        extra <= 12 * roles_missing,
        "{extra} calls beyond the floor for {roles_missing} failing batches: {:?}",
        tenant.sim.stats()
    );
    assert_eq!(tenant.sim.stats().calls_of("assign_user_roles"), 0);
}

#[test]
fn a_failed_export_job_stops_with_its_reason() {
    let tenant = Tenant::start(
        "reconcile-failed-job",
        10,
        SimConfig {
            export_job_failure: Some("The export could not be written to storage".to_owned()),
            ..SimConfig::default()
        },
    );
    let config = tenant.config(500.0, 50);
    let out = reconcile(&config, &["--apply"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed: The export could not be written to storage"),
        "{stderr}"
    );
    assert_eq!(tenant.writes(), 0);
    // Without read:users the export job is refused at the start: exit 2 naming the scope.
    tenant.sim.apply_control(&mgmt_sim::ControlRequest {
        denied_scopes: Some(vec!["read:users".to_owned()]),
        ..Default::default()
    });
    let refused = reconcile(&config, &[]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("expected any of: read:users"), "{stderr}");
    let bad_share = reconcile(&config, &["--rate-share", "1.5"]);
    assert_eq!(bad_share.status.code(), Some(2));
    assert!(text(&bad_share.stderr).contains("--rate-share"));
}

/// User `i` as a line of Auth0's export.
fn export_line(i: usize) -> String {
    let (seed, _) = user(i);
    let identity = serde_json::json!({
        "connection": seed.connection.clone().unwrap_or_else(|| "Username-Password-Authentication".to_owned()),
        "provider": "auth0",
        "isSocial": false,
    });
    let line = serde_json::json!({
        "user_id": seed.user_id,
        "email": seed.email,
        "email_verified": seed.email_verified,
        "identities": [identity],
        "created_at": "2024-01-01T00:00:00.000Z",
    });
    format!("{line}\n")
}

#[test]
fn users_from_a_file_plain_or_gzipped_need_no_export_job() {
    let tenant = Tenant::start("reconcile-file", 60, SimConfig::default());
    let config = tenant.config(500.0, 50);
    // The export as Auth0 writes it, plus a line that is no user.
    let mut lines = String::new();
    for i in 0..60 {
        lines.push_str(&export_line(i));
        if i == 30 {
            lines.push_str("{\"email\": \"no-id@example.com\"}\n");
        }
    }
    let plain = tenant.dir.join("users.json");
    std::fs::write(&plain, &lines).unwrap_or_else(|e| panic!("{e}"));
    let gz = tenant.dir.join("users.json.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(lines.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&gz, encoder.finish().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    for file in [&plain, &gz] {
        let path = file.to_str().unwrap_or_default();
        let out = reconcile(&config, &["--users", path, "--output", "jsonl"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(plan_lines(&out.stdout), tenant.missing(), "{path}");
        assert!(stderr.contains("users: 60 scanned"), "{stderr}");
        assert!(
            stderr.contains("1 lines were not users and were skipped (lines 32)"),
            "{stderr}"
        );
    }
    let stats = tenant.sim.stats();
    assert_eq!(stats.calls_of("create_export_job"), 0);
    assert_eq!(stats.export_downloads, 0);
    assert_eq!(tenant.writes(), 0);
}

#[test]
fn an_error_from_deep_in_reconcile_prints_its_whole_cause_chain() {
    // `--users` names a directory: it opens, but reading it fails once the run is connected
    // and has listed the memberships. The error passes three hands (the file system's error,
    // the export reader's `cannot read PATH`, reconcile's own) and each keeps the one below
    // as its source: the reporter at the edge prints them all, on one line.
    let tenant = Tenant::start("reconcile-chain", 5, SimConfig::default());
    let config = tenant.config(500.0, 50);
    let dir = tenant.dir.join("not-an-export");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.to_str().unwrap_or_default();
    let out = reconcile(&config, &["--users", path]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!("error: reconcile: cannot read {path}: Is a directory");
    assert!(stderr.contains(&expected), "{expected}\n{stderr}");
    assert_eq!(tenant.writes(), 0);
}

/// An apply slow enough to act on mid-run (20 requests/s, small batches) with a state file.
struct SlowApply {
    config: PathBuf,
    state: PathBuf,
    state_arg: String,
    child: std::process::Child,
}

impl SlowApply {
    fn start(tenant: &Tenant, batch: usize) -> SlowApply {
        let config = tenant.config(20.0, batch);
        let state = tenant.dir.join("state.jsonl");
        let state_arg = state.to_str().unwrap_or_default().to_owned();
        let child = command(&config, &["--apply", "--state", &state_arg])
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        SlowApply {
            config,
            state,
            state_arg,
            child,
        }
    }
}

/// Waits (up to a minute) until the journal at `state` holds `n` batches.
fn slow_batches(state: &Path, n: usize) -> bool {
    wait_for(Duration::from_secs(60), || {
        std::fs::read_to_string(state)
            .unwrap_or_default()
            .matches(r#""kind":"batch""#)
            .count()
            >= n
    })
}

#[test]
fn sigterm_stops_an_apply_after_the_batches_in_flight_and_the_next_run_finishes_it() {
    let tenant = Tenant::start("reconcile-sigterm", 600, SimConfig::default());
    let batch = 10;
    let slow = SlowApply::start(&tenant, batch);
    let (config, state, state_arg, child) =
        (&slow.config, &slow.state, &slow.state_arg, slow.child);
    let journal = || std::fs::read_to_string(state).unwrap_or_default();
    let started = slow_batches(state, 3);
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(started && term.success());
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("interrupted: run the same command again"),
        "{stdout}"
    );
    assert!(!journal().contains(r#""kind":"done""#));
    let floor = tenant.write_floor(batch);
    assert!(tenant.writes() < floor, "stopped early");
    let again = reconcile(config, &["--apply", "--state", state_arg]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(tenant.sim.role_sets(), tenant.after_apply());
    assert_eq!(tenant.writes(), floor, "a clean stop repeats nothing");
    assert!(journal().ends_with("{\"kind\":\"done\"}\n"));
}

#[test]
fn an_expired_download_location_is_renewed_from_the_job() {
    let tenant = Tenant::start(
        "reconcile-expired-location",
        30,
        SimConfig {
            export_expired_downloads: 2,
            ..SimConfig::default()
        },
    );
    let config = tenant.config(500.0, 50);
    let out = reconcile(&config, &["--apply"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("asking the job for a fresh one").count(),
        2,
        "{stderr}"
    );
    assert!(
        !stderr.contains("/exports/"),
        "no location in the logs: {stderr}"
    );
    assert_eq!(tenant.sim.role_sets(), tenant.after_apply());
    assert_eq!(tenant.sim.stats().calls_of("create_export_job"), 1);
    // Each renewal read the job again (for a freshly signed location): at least 3 reads.
    assert!(
        tenant.sim.stats().calls_of("get_job") >= 3,
        "{:?}",
        tenant.sim.stats()
    );
    // A location that keeps expiring: the run stops (exit 1) saying why, after 3 renewals.
    let tenant = Tenant::start(
        "reconcile-expiring-location",
        5,
        SimConfig {
            export_expired_downloads: 10,
            ..SimConfig::default()
        },
    );
    let out = reconcile(&tenant.config(500.0, 50), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pre-signed URL expired"), "{stderr}");
}

#[test]
fn apply_without_the_write_scope_stops_at_once_and_plan_still_works() {
    let tenant = Tenant::start("reconcile-no-write-scope", 30, SimConfig::default());
    let config = tenant.config(500.0, 50);
    tenant.sim.apply_control(&mgmt_sim::ControlRequest {
        // update:roles would do too.
        denied_scopes: Some(vec![
            "create:role_members".to_owned(),
            "update:roles".to_owned(),
        ]),
        ..Default::default()
    });
    let out = reconcile(&config, &["--apply"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("create:role_members"), "{stderr}");
    let stats = tenant.sim.stats();
    assert_eq!(stats.calls_of("create_export_job"), 0, "{stats:?}");
    assert_eq!(tenant.writes(), 0);
    let plan = reconcile(&config, &[]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
}

/// A resumed apply trusts its journal: users a journaled batch added count as holding the role
/// and are not sent again. Here the journal claims a batch that never reached the tenant, so
/// the run must leave those two users without the role (what proves the journal was read).
#[test]
fn a_resumed_apply_never_resends_the_users_of_journaled_batches() {
    let tenant = Tenant::start("reconcile-journal", 30, SimConfig::default());
    let config = tenant.config(500.0, 50);
    let claimed = ["auth0|user00002", "auth0|user00005"];
    for user in claimed {
        assert!(
            tenant.missing()[user].contains("Viewer"),
            "{user} must miss Viewer"
        );
    }
    let state = tenant.dir.join("journal.jsonl");
    // An unfinished journal of another tenant is refused before anything is read or written.
    std::fs::write(
        &state,
        "{\"kind\":\"tenant\",\"domain\":\"other.eu.auth0.com\"}\n{\"kind\":\"batch\",\"role\":\"Viewer\",\"users\":[\"auth0|user00002\"]}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let other = reconcile(
        &config,
        &["--apply", "--state", state.to_str().unwrap_or_default()],
    );
    let stderr = text(&other.stderr);
    assert_eq!(other.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("belongs to an unfinished apply on tenant other.eu.auth0.com"),
        "{stderr}"
    );
    assert_eq!(tenant.writes(), 0);
    std::fs::write(
        &state,
        format!(
            "{}\n",
            serde_json::json!({"kind": "batch", "role": "Viewer", "users": claimed})
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = reconcile(
        &config,
        &["--apply", "--state", state.to_str().unwrap_or_default()],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("resumed: "), "{stdout}");
    let mut expected = tenant.after_apply();
    for user in claimed {
        if let Some(roles) = expected.get_mut(user) {
            roles.remove("Viewer");
        }
    }
    assert_eq!(tenant.sim.role_sets(), expected);
    // Finished: the journal says so, and the export copy next to it is gone.
    let journal = std::fs::read_to_string(&state).unwrap_or_default();
    assert!(
        journal.trim_end().ends_with(r#"{"kind":"done"}"#),
        "{journal}"
    );
    let mut kept = state.clone().into_os_string();
    kept.push(".export.json.gz");
    assert!(!std::path::Path::new(&kept).exists());
}

/// `has_roles` judges existing users by every role they hold, roles outside the policy
/// included: only users holding nothing at all get the default role.
#[test]
fn has_roles_counts_roles_outside_the_policy() {
    let tenant = Tenant::start("reconcile-has-roles", 60, SimConfig::default());
    let config = tenant.config_with(
        500.0,
        50,
        "[[policy.rules]]\nname = \"newcomers\"\nunless = { has_roles = true }\nassign = [\"Viewer\"]\n",
    );
    let expected: BTreeMap<String, BTreeSet<String>> = tenant
        .expected
        .keys()
        .filter(|user| tenant.initial.get(*user).is_none_or(BTreeSet::is_empty))
        .map(|user| (user.clone(), ["Viewer".to_owned()].into_iter().collect()))
        .collect();
    // Some users hold only the role outside the policy: they must not be planned.
    assert!(tenant
        .initial
        .values()
        .any(|roles| roles.len() == 1 && roles.contains(LEGACY)));
    let out = reconcile(&config, &["--output", "jsonl"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(plan_lines(&out.stdout), expected);
    let applied = reconcile(&config, &["--apply"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied.stderr));
    let again = reconcile(&config, &["--output", "jsonl"]);
    assert!(plan_lines(&again.stdout).is_empty());
}

/// A role deleted while an apply writes is a fault of the tenant, not of its users: the run
/// finishes the batches in flight, prints its summary and stops with exit 2 naming the role,
/// failing nobody; once the role exists again the same command resumes and finishes.
#[test]
fn a_role_deleted_during_an_apply_stops_it_without_failing_users_and_it_resumes() {
    let tenant = Tenant::start("reconcile-role-deleted", 600, SimConfig::default());
    let batch = 10;
    let slow = SlowApply::start(&tenant, batch);
    let (config, state, state_arg, child) =
        (&slow.config, &slow.state, &slow.state_arg, slow.child);
    let journal = || std::fs::read_to_string(state).unwrap_or_default();
    assert!(slow_batches(state, 2));
    assert!(tenant.sim.delete_role("CUSTOMER"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("CUSTOMER"), "{stderr}");
    assert!(
        stdout.contains("added: "),
        "the summary is printed: {stdout}"
    );
    assert!(!stdout.contains("failed: "), "nobody failed: {stdout}");
    assert!(!journal().contains(r#""kind":"failed""#), "{}", journal());
    assert!(!journal().contains(r#""kind":"done""#));
    assert!(tenant.writes() < tenant.write_floor(batch), "stopped early");
    // The fault stopped the reading of the export too (only the batches in flight finished):
    // the summary says how far it got, far short of the export's 600 users.
    assert!(
        users_scanned(&stdout) < 300,
        "read on after the fault: {stdout}"
    );
    assert!(
        stdout.contains("stopped by a fault of the tenant after"),
        "{stdout}"
    );
    tenant.sim.add_role(SeedRole::named("CUSTOMER"));
    let again = reconcile(config, &["--apply", "--state", state_arg]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    // The deleted role's members lost it with the role; the resumed run gives it back to
    // everyone the policy gives it to.
    assert_eq!(tenant.sim.role_sets(), tenant.after_apply());
}

/// The users a summary says were scanned.
fn users_scanned(summary: &str) -> u64 {
    summary
        .lines()
        .find_map(|line| line.strip_prefix("users: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `users:` line: {summary}"))
}

/// A policy giving everyone `Viewer` and nothing else.
const EVERYONE_VIEWER: &str = "[[policy.rules]]\nname = \"everyone\"\nassign = [\"Viewer\"]\n";

/// What the tenant holds once everyone but `except` was given `Viewer`.
fn with_viewer(tenant: &Tenant, except: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut after = tenant.initial.clone();
    for user in tenant.expected.keys() {
        if !except.contains(&user.as_str()) {
            after
                .entry(user.clone())
                .or_default()
                .insert("Viewer".to_owned());
        }
    }
    after
}

/// A SIGTERM while the tenant refuses the service (credentials revoked): the batches waiting
/// for it are abandoned (not journaled), the run ends saying so with exit 1, and once the
/// credentials work again the same command finishes the apply.
#[test]
fn sigterm_during_revoked_credentials_abandons_the_stuck_batches_and_the_next_run_finishes() {
    let tenant = Tenant::start("reconcile-revoked-sigterm", 600, SimConfig::default());
    let batch = 10;
    let slow = SlowApply::start(&tenant, batch);
    let (config, state, state_arg, mut child) =
        (&slow.config, &slow.state, &slow.state_arg, slow.child);
    let journal = || std::fs::read_to_string(state).unwrap_or_default();
    assert!(slow_batches(state, 3));
    tenant.sim.apply_control(&mgmt_sim::ControlRequest {
        credentials_revoked: Some(true),
        ..Default::default()
    });
    // The writes in flight are refused and wait for the credentials.
    assert!(wait_for(Duration::from_secs(30), || {
        tenant.sim.stats().unauthorized > 0
    }));
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(term.success());
    let exited = wait_for(Duration::from_secs(30), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(exited, "still running 30 s after SIGTERM: {stdout}{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("abandoned: "), "{stdout}");
    assert!(
        stdout.contains("interrupted: run the same command again"),
        "{stdout}"
    );
    assert!(!journal().contains(r#""kind":"done""#));
    tenant.sim.apply_control(&mgmt_sim::ControlRequest {
        credentials_revoked: Some(false),
        ..Default::default()
    });
    let again = reconcile(config, &["--apply", "--state", state_arg]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_eq!(tenant.sim.role_sets(), tenant.after_apply());
    assert!(journal().ends_with("{\"kind\":\"done\"}\n"));
}

/// Batches are written while the export is still being read, not only while the scan waits
/// for a writer. Nobody reads the plan at first: the scan blocks writing it once the pipe is
/// full (64 KiB plus an 8 KiB buffer: line ~1,070 of 3,000), after 3 batches of 300 were formed
/// (fewer than the 4 writers, so the scan never waited for one of them).
#[test]
fn batches_are_written_while_the_export_is_still_being_read() {
    let tenant = Tenant::start("reconcile-write-while-scanning", 9000, SimConfig::default());
    let batch = 300;
    let config = tenant.config_with(500.0, batch, EVERYONE_VIEWER);
    let mut child = command(&config, &["--apply", "--output", "jsonl"])
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let written = wait_for(Duration::from_secs(60), || tenant.writes() > 0);
    let scanning = matches!(child.try_wait(), Ok(None));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = text(&out.stderr);
    assert!(written, "nothing written while the scan was held: {stderr}");
    assert!(scanning, "the plan did not fill the pipe: {stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let plan = plan_lines(&out.stdout);
    assert_eq!(plan.len(), 3000);
    assert!(plan
        .values()
        .all(|roles| roles.len() == 1 && roles.contains("Viewer")));
    assert_eq!(tenant.sim.role_sets(), with_viewer(&tenant, &[]));
    assert_eq!(tenant.writes(), 3000 / batch as u64, "one call per batch");
}

/// A role deleted and created again while a batch is being written (here between the parts
/// of a batch split around a deleted user): each part is journaled under the id it was written
/// to, so a resumed run gives the role back to the users written under the old id (they lost
/// it with the old role).
#[test]
fn a_role_created_again_mid_batch_journals_each_part_under_its_id_and_a_resume_gives_it_back() {
    let tenant = Tenant::start(
        "reconcile-role-recreated",
        30,
        SimConfig {
            // Each call waits, so the role can be replaced while a call is on its way.
            latency_ms: 700,
            ..SimConfig::default()
        },
    );
    // Ten users miss Viewer (2, 5, ..., 29): one batch of 10. User 2 is deleted since the
    // export, so the batch splits: [all] 404, [2..14] 404, [2, 5] 404, [2] 404, [5] ok, then
    // [8, 11, 14] (the 6th call) and [17..29].
    let config = tenant.config_with(500.0, 10, EVERYONE_VIEWER);
    let victim = "auth0|user00002";
    let before = "auth0|user00005";
    let export = tenant.dir.join("users.json");
    std::fs::write(&export, (0..30).map(export_line).collect::<String>())
        .unwrap_or_else(|e| panic!("{e}"));
    tenant.sim.delete_user(victim);
    let state = tenant.dir.join("state.jsonl");
    let args = [
        "--apply",
        "--users",
        export.to_str().unwrap_or_default(),
        "--state",
        state.to_str().unwrap_or_default(),
    ];
    let child = command(&config, &args)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let sixth = wait_for(Duration::from_secs(60), || {
        tenant.sim.stats().calls_of("assign_role_users") >= 6
    });
    // The 6th call is in the simulator's latency: replace the role now.
    let has_viewer = |user: &str| {
        tenant
            .sim
            .user_role_names(user)
            .contains(&"Viewer".to_owned())
    };
    let in_window = has_viewer(before) && !has_viewer("auth0|user00008");
    let old_id = tenant.sim.role_id("Viewer").unwrap_or_default();
    assert!(tenant.sim.delete_role("Viewer"));
    let new_id = tenant.sim.add_role(SeedRole::named("Viewer"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stdout = text(&out.stdout);
    assert!(sixth && in_window, "{stdout}{}", text(&out.stderr));
    assert_ne!(old_id, new_id);
    assert_eq!(out.status.code(), Some(3), "{stdout}{}", text(&out.stderr));
    assert!(!has_viewer(before), "lost with the old role");
    // A kill right after the batch was journaled: the journal ends without `done`.
    let journal = std::fs::read_to_string(&state).unwrap_or_default();
    let cut = journal
        .strip_suffix("{\"kind\":\"done\"}\n")
        .unwrap_or_else(|| panic!("{journal}"));
    std::fs::write(&state, cut).unwrap_or_else(|e| panic!("{e}"));
    tenant.sim.set_latency_ms(0);
    let resumed = reconcile(&config, &args);
    let resumed_out = text(&resumed.stdout);
    assert_eq!(
        resumed.status.code(),
        Some(3),
        "{resumed_out}{}",
        text(&resumed.stderr)
    );
    assert!(resumed_out.contains("resumed: "), "{resumed_out}");
    let mut expected = with_viewer(&tenant, &[victim]);
    expected.remove(victim);
    assert_eq!(tenant.sim.role_sets(), expected, "{cut}");
    // The journal of the first run: user 5 under the old id, the rest under the new one.
    let mut by_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in cut.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if entry["kind"] == "batch" {
            let users = entry["users"].as_array().cloned().unwrap_or_default();
            by_id
                .entry(entry["role_id"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .extend(
                    users
                        .iter()
                        .map(|u| u.as_str().unwrap_or_default().to_owned()),
                );
        }
    }
    let later: BTreeSet<String> = (8..30)
        .step_by(3)
        .map(|i| format!("auth0|user{i:05}"))
        .collect();
    let expected_journal: BTreeMap<String, BTreeSet<String>> = [
        (old_id, [before.to_owned()].into_iter().collect()),
        (new_id, later),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_id, expected_journal, "{cut}");
}

/// The policy without its `customers` rule.
fn without_customers() -> String {
    let start = POLICY
        .find("[[policy.rules]]\nname = \"customers\"")
        .unwrap_or_else(|| panic!("the fixture policy has a customers rule"));
    let end = POLICY[start..]
        .find("\n\n")
        .map_or(POLICY.len(), |n| start + n + 2);
    format!("{}{}", &POLICY[..start], &POLICY[end..])
}

/// The plan's `remove` lists: user → roles to take back (each line naming the rules).
fn removal_lines(stdout: &[u8]) -> BTreeMap<String, BTreeSet<String>> {
    text(stdout)
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let remove: BTreeSet<String> = v["remove"]
                .as_array()?
                .iter()
                .map(|r| r.as_str().unwrap_or_default().to_owned())
                .collect();
            assert!(
                v["remove_rules"].as_array().is_some_and(|r| !r.is_empty()),
                "{line}"
            );
            Some((v["user_id"].as_str().unwrap_or_default().to_owned(), remove))
        })
        .collect()
}

#[test]
fn revoke_takes_back_only_what_the_dropped_rule_granted_and_never_fights_an_admin() {
    let tenant = Tenant::start("reconcile-revoke", 120, SimConfig::default());
    let ledger = format!(
        "\n[ledger]\nurl = \"sqlite://{}\"\n",
        tenant.dir.join("ledger.db").display()
    );
    let with_ledger = |policy: &str| {
        let path = tenant.config_with(500.0, 40, policy);
        let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        text.push_str(&ledger);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    };
    // Without a ledger, --revoke cannot know what this service granted.
    let no_ledger = tenant.config(500.0, 40);
    let refused = reconcile(&no_ledger, &["--revoke"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("[ledger]"),
        "{}",
        text(&refused.stderr)
    );

    let config = with_ledger(POLICY);
    let out = reconcile(&config, &["--apply"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(tenant.sim.role_sets(), tenant.after_apply());

    // An admin takes Viewer away from a user this run gave it to, and gives CUSTOMER by hand
    // to a corporate user (whom no rule gives it).
    let removed = "auth0|user00002";
    assert!(
        !tenant.initial.contains_key(removed),
        "user 2 started with nothing"
    );
    tenant.sim.remove_by_hand(removed, &["Viewer"]);
    let by_hand = "auth0|user00004";
    tenant.sim.grant_by_hand(by_hand, &["CUSTOMER"]);
    let before = tenant.sim.role_sets();

    // The same policy: the removal is respected, nothing is planned for that user.
    let plan = reconcile(&config, &["--output", "jsonl"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    assert!(text(&plan.stdout).is_empty(), "{}", text(&plan.stdout));
    assert!(
        text(&plan.stderr).contains("left removed: Viewer"),
        "{}",
        text(&plan.stderr)
    );

    // The customers rule dropped: exactly the users reconcile gave CUSTOMER to.
    let dropped = with_ledger(&without_customers());
    let expected: BTreeMap<String, BTreeSet<String>> = tenant
        .expected
        .iter()
        .filter(|(user, want)| {
            want.contains("CUSTOMER")
                && !tenant
                    .initial
                    .get(*user)
                    .is_some_and(|held| held.contains("CUSTOMER"))
        })
        .map(|(user, _)| (user.clone(), BTreeSet::from(["CUSTOMER".to_owned()])))
        .collect();
    assert!(expected.len() > 30, "the fixture grants CUSTOMER to many");
    let plan = reconcile(&dropped, &["--revoke", "--output", "jsonl"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    assert_eq!(removal_lines(&plan.stdout), expected);
    assert!(!removal_lines(&plan.stdout).contains_key(by_hand));
    assert!(
        text(&plan.stdout).contains("\"remove_rules\":[\"customers\"]"),
        "{}",
        text(&plan.stdout)
    );
    assert_eq!(tenant.sim.role_sets(), before, "a plan removes nothing");
    assert_eq!(tenant.sim.stats().calls_of("remove_user_roles"), 0);

    // More than --max-revocations: nothing removed, exit 2.
    let capped = reconcile(&dropped, &["--revoke", "--apply", "--max-revocations", "5"]);
    assert_eq!(capped.status.code(), Some(2), "{}", text(&capped.stdout));
    assert!(
        text(&capped.stderr).contains("--max-revocations 5"),
        "{}",
        text(&capped.stderr)
    );
    assert_eq!(tenant.sim.role_sets(), before);
    assert_eq!(tenant.sim.stats().calls_of("remove_user_roles"), 0);

    // Applied: one call per user, exactly those pairs gone.
    let applied = reconcile(
        &dropped,
        &["--revoke", "--apply", "--max-revocations", "1000"],
    );
    assert_eq!(
        applied.status.code(),
        Some(0),
        "{}{}",
        text(&applied.stdout),
        text(&applied.stderr)
    );
    assert_eq!(
        tenant.sim.stats().calls_of("remove_user_roles"),
        expected.len() as u64
    );
    let mut after = before.clone();
    for user in expected.keys() {
        if let Some(roles) = after.get_mut(user) {
            roles.remove("CUSTOMER");
        }
    }
    after.retain(|_, roles| !roles.is_empty());
    assert_eq!(tenant.sim.role_sets(), after);
    assert!(
        tenant
            .sim
            .user_role_names(by_hand)
            .contains(&"CUSTOMER".to_owned()),
        "a role given by hand is never removed"
    );

    // A second plan is empty.
    let again = reconcile(&dropped, &["--revoke", "--output", "jsonl"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(text(&again.stdout).is_empty(), "{}", text(&again.stdout));

    // --restore gives the admin's removal back on purpose.
    let restore = reconcile(&dropped, &["--restore", "--output", "jsonl"]);
    assert_eq!(restore.status.code(), Some(0), "{}", text(&restore.stderr));
    assert_eq!(
        plan_lines(&restore.stdout),
        BTreeMap::from([(removed.to_owned(), BTreeSet::from(["Viewer".to_owned()]))])
    );
}

/// `explain --output text` of `user` with `config`.
fn explain(config: &Path, user: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .args(["explain", "--config"])
        .arg(config)
        .arg(user)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// A crash between a removal Auth0 applied and its record (the process killed while the
/// DELETE's answer is on its way) leaves a pending revocation, journaled before the DELETE:
/// `explain` shows it, a plain `reconcile` does not call it an admin's removal, and the next
/// `--revoke --apply` finishes it (the DELETE again, then the record).
#[test]
fn a_crash_after_a_removals_delete_is_finished_by_the_next_run_not_taken_for_an_admins_removal() {
    let tenant = Tenant::start("reconcile-revoke-crash", 60, SimConfig::default());
    let ledger = format!(
        "\n[ledger]\nurl = \"sqlite://{}\"\n",
        tenant.dir.join("ledger.db").display()
    );
    let with_ledger = |policy: &str, name: &str| {
        let written = tenant.config_with(500.0, 40, policy);
        let mut text = std::fs::read_to_string(&written).unwrap_or_else(|e| panic!("{e}"));
        text.push_str(&ledger);
        let path = tenant.dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    };
    let full = with_ledger(POLICY, "full.toml");
    let dropped = with_ledger(&without_customers(), "dropped.toml");
    let out = reconcile(&full, &["--apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = tenant.sim.role_sets();
    let customers = |sets: &BTreeMap<String, BTreeSet<String>>| -> BTreeSet<String> {
        sets.iter()
            .filter(|(_, roles)| roles.contains("CUSTOMER"))
            .map(|(user, _)| user.clone())
            .collect()
    };
    // CUSTOMER held from the start (by hand) is never taken back; the rest this service gave.
    let by_hand = customers(&tenant.initial);
    let granted: BTreeSet<String> = customers(&before).difference(&by_hand).cloned().collect();
    assert!(granted.len() > 10, "{granted:?}");

    // The tenant applies each removal and holds its answer: the process is killed meanwhile.
    tenant.sim.set_removal_answer_delay_ms(600_000);
    let mut child = command(
        &dropped,
        &["--revoke", "--apply", "--max-revocations", "1000"],
    )
    .spawn()
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        wait_for(Duration::from_secs(60), || {
            customers(&tenant.sim.role_sets()).len() < customers(&before).len()
        }),
        "no removal reached the tenant"
    );
    // The other removals in flight reach the tenant too.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = child.wait();
    tenant.sim.set_removal_answer_delay_ms(0);
    let crashed: BTreeSet<String> = customers(&before)
        .difference(&customers(&tenant.sim.role_sets()))
        .cloned()
        .collect();
    assert!(!crashed.is_empty());
    let one = crashed.iter().next().cloned().unwrap_or_default();

    // A plain reconcile under the policy that gives CUSTOMER again: the removal the service
    // began is not an admin's.
    let plan = reconcile(&full, &["--output", "jsonl"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    assert!(
        !text(&plan.stderr).contains("left removed"),
        "a removal this service made is not an admin's: {}",
        text(&plan.stderr)
    );
    let shown = explain(&dropped, &one);
    assert!(
        shown.contains("pending revocation") && !shown.contains("removed outside this service"),
        "{shown}"
    );

    // The next apply finishes what was begun: the DELETE again (idempotent), then the record.
    let removals_before = tenant.sim.stats().calls_of("remove_user_roles");
    let applied = reconcile(
        &dropped,
        &["--revoke", "--apply", "--max-revocations", "1000"],
    );
    assert_eq!(
        applied.status.code(),
        Some(0),
        "{}{}",
        text(&applied.stdout),
        text(&applied.stderr)
    );
    assert!(
        text(&applied.stdout).contains("pending revocations finished"),
        "{}",
        text(&applied.stdout)
    );
    assert_eq!(customers(&tenant.sim.role_sets()), by_hand);
    assert_eq!(
        tenant.sim.stats().calls_of("remove_user_roles") - removals_before,
        granted.len() as u64,
        "one removal per user: the unfinished ones again, the others for the first time"
    );
    let shown = explain(&dropped, &one);
    assert!(
        shown.contains("revoked CUSTOMER") && shown.contains("reconcile --revoke"),
        "{shown}"
    );
    assert!(!shown.contains("pending revocation"), "{shown}");
    let again = reconcile(&dropped, &["--revoke", "--output", "jsonl"]);
    assert!(text(&again.stdout).is_empty(), "{}", text(&again.stdout));
    let plan = reconcile(&full, &["--output", "jsonl"]);
    assert!(
        !text(&plan.stderr).contains("left removed"),
        "{}",
        text(&plan.stderr)
    );
}
