//! `cargo bench --bench reconcile`: the real binary's `reconcile` against the simulator.
//!
//! 1. `--apply` on 100,000 existing users (a third already right, a fifth holding part of their
//!    roles, the rest nothing; every 50th holding a role outside the policy) at Auth0
//!    Enterprise's 16 requests/s, burst 50, with a users-export job that takes 5 s: API calls
//!    against the floor (export + membership pages + ⌈pairs / batch⌉ writes), time against
//!    calls ÷ rate, write calls per user fixed, the child's peak RSS, and whether the tenant
//!    matches afterwards.
//! 2. Plan mode on 1,000,000 users read from a generated gzipped export (`--users FILE`), with
//!    an unthrottled simulator: the peak RSS.
//!
//! `RECONCILE_BENCH_USERS` and `RECONCILE_BENCH_PLAN_USERS` change the sizes.

// A bench's figures are wall-clock time (clippy.toml bans `std::time::Instant` and
// `std::thread::sleep` where tokio's clock is meant): here the wall clock is meant.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mgmt_sim::{Seed, SeedRole, SeedUser, SimConfig, Simulator};

const RATE: f64 = 16.0;
const BURST: u32 = 50;
const BATCH: usize = 1000;
const ROLES: [&str; 4] = ["Viewer", "CUSTOMER", "INTERNAL", "PARTNER"];
const LEGACY: &str = "Legacy";

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
"#;

/// User `i`: its seed (with the roles it already holds) and the policy roles it must hold.
fn user(i: usize) -> (SeedUser, Vec<&'static str>) {
    let corp = i % 10 == 0;
    let partner = i % 20 == 0;
    let verified = i % 40 == 0 || i % 3 == 0;
    let mut expected = vec!["Viewer", if corp { "INTERNAL" } else { "CUSTOMER" }];
    if partner && verified {
        expected.push("PARTNER");
    }
    let mut held: Vec<String> = match i % 15 {
        0..=4 => expected.iter().map(|r| (*r).to_owned()).collect(),
        5..=7 => vec!["Viewer".to_owned()],
        _ => Vec::new(),
    };
    if i % 50 == 0 {
        held.push(LEGACY.to_owned());
    }
    let seed = SeedUser {
        user_id: format!(
            "auth0|{i:08x}{:08x}",
            i.wrapping_mul(2_654_435_761) & 0xffff_ffff
        ),
        email: Some(if partner {
            format!("user{i}@partner.example")
        } else {
            format!("user{i}@example.com")
        }),
        email_verified: Some(verified),
        connection: corp.then(|| "corp-azure-ad".to_owned()),
        app_metadata: None,
        roles: held,
        group_roles: Vec::new(),
        created_at: None,
    };
    (seed, expected)
}

struct Tenant {
    sim: Simulator,
    base_url: String,
    /// Missing pairs per role at the start.
    pairs: BTreeMap<&'static str, usize>,
    users_missing: usize,
    /// Members per policy role at the start.
    members: BTreeMap<&'static str, usize>,
    /// Users whose roles must change, with the full set they must end with.
    expected_after: BTreeMap<String, BTreeSet<String>>,
}

fn tenant(rt: &tokio::runtime::Runtime, n: usize, config: SimConfig) -> Tenant {
    let mut seeds = Vec::with_capacity(n);
    let mut pairs = BTreeMap::new();
    let mut members: BTreeMap<&'static str, usize> = ROLES.iter().map(|r| (*r, 0)).collect();
    let mut users_missing = 0;
    let mut expected_after = BTreeMap::new();
    for i in 0..n {
        let (seed, expected) = user(i);
        let mut missing = 0;
        for role in &expected {
            if !seed.roles.iter().any(|h| h == role) {
                *pairs.entry(*role).or_insert(0) += 1;
                missing += 1;
            }
        }
        for held in &seed.roles {
            if let Some(count) = members.get_mut(held.as_str()) {
                *count += 1;
            }
        }
        if missing > 0 {
            users_missing += 1;
            let mut after: BTreeSet<String> = seed.roles.iter().cloned().collect();
            after.extend(expected.iter().map(|r| (*r).to_owned()));
            expected_after.insert(seed.user_id.clone(), after);
        }
        seeds.push(seed);
    }
    let mut roles: Vec<SeedRole> = ROLES.iter().map(|r| SeedRole::named(*r)).collect();
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
        .block_on(sim.start("127.0.0.1:0".parse().expect("addr")))
        .expect("simulator");
    let base_url = server.base_url.clone();
    // Serve until the process ends.
    std::mem::forget(server);
    Tenant {
        sim,
        base_url,
        pairs,
        users_missing,
        members,
        expected_after,
    }
}

fn config(dir: &Path, base_url: &str, rate: f64, burst: u32) -> PathBuf {
    let path = dir.join("reconcile.toml");
    let text = format!(
        "[auth0]\ndomain = \"sim.auth0.local\"\nclient_id = \"sim-client\"\nbase_url = \"{base_url}\"\nrequests_per_second = {rate}\nburst = {burst}\nbatch_max_users = {BATCH}\n{POLICY}"
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// Runs the binary; returns its stdout, exit code, wall time and peak RSS (VmHWM, KiB).
fn run(config: &Path, args: &[&str]) -> (String, Option<i32>, Duration, u64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_auth0-default-roles"))
        .arg("reconcile")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("AUTH0_CLIENT_SECRET", "sim-secret")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let status_path = format!("/proc/{}/status", child.id());
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut out) = stdout {
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
        }
        text
    });
    let mut peak = 0;
    let code = loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    (reader.join().unwrap_or_default(), code, elapsed, peak)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("reconcile-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    apply(&rt, &dir, env_usize("RECONCILE_BENCH_USERS", 100_000));
    plan(
        &rt,
        &dir,
        env_usize("RECONCILE_BENCH_PLAN_USERS", 1_000_000),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn apply(rt: &tokio::runtime::Runtime, dir: &Path, n: usize) {
    println!(
        "== reconcile --apply: {n} users, {RATE} requests/s, burst {BURST}, batches of {BATCH}"
    );
    let setup = Instant::now();
    let t = tenant(
        rt,
        n,
        SimConfig {
            rate_per_second: RATE,
            burst: BURST,
            export_job_millis: 5_000,
            ..SimConfig::default()
        },
    );
    println!("   tenant seeded in {:.1} s", setup.elapsed().as_secs_f64());
    let config = config(dir, &t.base_url, RATE, BURST);
    let (stdout, code, elapsed, peak_kib) = run(&config, &["--apply"]);
    let stats = t.sim.stats();
    let calls = stats.total_requests - stats.calls_of("token");
    let pages: usize = t.members.values().map(|m| m.div_ceil(100).max(1)).sum();
    let writes_floor: usize = t.pairs.values().map(|p| p.div_ceil(BATCH)).sum();
    let export_floor = 2; // create the job, read it once completed
    let lookups = ROLES.len(); // resolving the policy's role names
    let floor = lookups + export_floor + pages + writes_floor;
    let writes = stats.calls_of("assign_role_users") + stats.calls_of("assign_user_roles");
    let pairs: usize = t.pairs.values().sum();
    let held = t.sim.role_sets();
    let wrong = t
        .expected_after
        .iter()
        .filter(|(u, r)| held.get(*u) != Some(r))
        .count();
    println!("{stdout}");
    println!("   exit status:            {code:?}");
    println!(
        "   users missing roles:    {} ({} pairs: {:?})",
        t.users_missing, pairs, t.pairs
    );
    println!(
        "   API calls:              {calls} (floor {floor} = {lookups} role lookups + {export_floor} export + {pages} membership pages + {writes_floor} writes); export job polls {}, 429s {}",
        stats.calls_of("get_job"),
        stats.rate_limited
    );
    let ideal = (calls.saturating_sub(u64::from(BURST))) as f64 / RATE;
    println!(
        "   time:                   {:.1} s (calls ÷ rate after the burst: {:.1} s)",
        elapsed.as_secs_f64(),
        ideal
    );
    println!(
        "   write calls per user fixed: {:.4} ({writes} writes / {} users)",
        writes as f64 / t.users_missing.max(1) as f64,
        t.users_missing
    );
    println!(
        "   peak RSS (VmHWM):       {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
    println!("   users still wrong:      {wrong}");
}

fn plan(rt: &tokio::runtime::Runtime, dir: &Path, n: usize) {
    println!("== reconcile (plan) with --users FILE: {n} users, unthrottled simulator");
    let setup = Instant::now();
    let t = tenant(rt, n, SimConfig::default());
    let file = dir.join("users.json.gz");
    {
        let out = std::fs::File::create(&file).expect("export file");
        let mut gz = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(out),
            flate2::Compression::fast(),
        );
        for i in 0..n {
            let (seed, _) = user(i);
            let line = serde_json::json!({
                "user_id": seed.user_id,
                "email": seed.email,
                "email_verified": seed.email_verified,
                "identities": [{
                    "connection": seed.connection.unwrap_or_else(|| "Username-Password-Authentication".to_owned()),
                    "provider": "auth0",
                    "isSocial": false,
                }],
                "created_at": "2024-01-01T00:00:00.000Z",
                "logins_count": 3,
            });
            serde_json::to_writer(&mut gz, &line).expect("write");
            gz.write_all(b"\n").expect("write");
        }
        gz.finish().expect("gzip").flush().expect("flush");
    }
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "   tenant seeded and export written ({:.1} MiB gzipped) in {:.1} s",
        size as f64 / (1024.0 * 1024.0),
        setup.elapsed().as_secs_f64()
    );
    let config = config(dir, &t.base_url, 10_000.0, 1_000);
    let path = file.to_str().unwrap_or_default().to_owned();
    let (stdout, code, elapsed, peak_kib) = run(&config, &["--users", &path]);
    let pairs: usize = t.pairs.values().sum();
    println!("{stdout}");
    println!("   exit status:            {code:?}");
    println!("   pairs expected:         {pairs}");
    println!("   time:                   {:.1} s", elapsed.as_secs_f64());
    println!(
        "   peak RSS (VmHWM):       {:.1} MiB (target ≤ 256 MiB)",
        peak_kib as f64 / 1024.0
    );
}
