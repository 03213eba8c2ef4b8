//! `cargo bench --bench assign`: new users assigned through the client against the simulator
//! limited like an Enterprise tenant (16 requests/s, burst 50), client limiter set the same.
//! Prints wall time, assignments/s, achieved/allowed request rate, 429 share, calls per user.
//! Users: ASSIGN_BENCH_USERS (default 2000) in the burst scenario; ASSIGN_BENCH_SERIAL_USERS
//! (default 400) one at a time.
//!
//! Then the rate-limit grid: simulator buckets of 2/s (burst 2), 150/min (burst 10) and 16/s
//! (burst 50), the client at 0.5x, 1x, 2x, 10x of each and at `auto`, plus three instances at
//! `auto` sharing one simulated tenant; every user assigned with its own call (no coalescing),
//! more users waiting than the tenant allows. Each cell prints the share of requests answered
//! 429, the throughput as a share of the tenant's limit (its burst plus its rate over the wall
//! time) and the calls per assigned user. ASSIGN_BENCH_GRID_SECONDS (default 15) sets how long
//! each cell's work lasts at the tenant's rate; ASSIGN_BENCH_GRID=only skips the scenarios above,
//! ASSIGN_BENCH_GRID=off skips the grid; ASSIGN_BENCH_GRID_CELLS runs only the cells whose
//! "bucket client instances" contains it (e.g. `150/min, burst 10 auto 3`; alternatives
//! separated by `|`).

// A bench's figures are wall-clock time (clippy.toml bans `std::time::Instant` and
// `std::thread::sleep` where tokio's clock is meant): here the wall clock is meant.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth0_default_roles::config::Secret;
use auth0_default_roles::metrics::Metrics;
use auth0_default_roles::mgmt::{
    AssignOutcome, BatchSettings, ClientSettings, MgmtClient, RetrySettings, RoleAssigner,
    RoleDirectory,
};
use mgmt_sim::{Seed, SeedRole, SimConfig, Simulator};

const RATE: f64 = 16.0;
const BURST: u32 = 50;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn scenario(name: &str, users: usize, concurrent: bool, window: Duration) {
    let sim = Simulator::new(
        SimConfig {
            rate_per_second: RATE,
            burst: BURST,
            accept_any_user: true,
            ..SimConfig::default()
        },
        Seed {
            roles: ["CUSTOMER", "Viewer"]
                .iter()
                .map(|r| SeedRole::named(*r))
                .collect(),
            ..Seed::default()
        },
    );
    let running = match sim
        .start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("simulator: {e}"),
    };
    let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
    let client = MgmtClient::new(
        ClientSettings {
            base_url: running.base_url.clone(),
            audience: sim.audience(),
            client_id: sim.config().client_id,
            client_secret: Secret::new(sim.config().client_secret),
            requests_per_second: RATE,
            burst: BURST,
            auto_share: None,
            timeout: Duration::from_secs(10),
            retry: RetrySettings::default(),
        },
        metrics,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let names = ["CUSTOMER", "Viewer"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let directory = Arc::new(
        RoleDirectory::resolve(&client, names)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let assigner = RoleAssigner::start(
        client.clone(),
        directory,
        BatchSettings {
            window,
            max_users: 50,
            read_user_roles: false,
            count_group_roles: false,
        },
    );
    let before = sim.stats();
    let roles = vec!["CUSTOMER".to_string(), "Viewer".to_string()];
    let started = Instant::now();
    let mut ok = 0usize;
    if concurrent {
        let tasks: Vec<_> = (0..users)
            .map(|i| {
                let assigner = assigner.clone();
                let roles = roles.clone();
                tokio::spawn(async move {
                    assigner
                        .assign(&format!("auth0|bench{i}"), &roles, false)
                        .await
                })
            })
            .collect();
        for t in tasks {
            if matches!(t.await, Ok(Ok(AssignOutcome::Assigned { .. }))) {
                ok += 1;
            }
        }
    } else {
        for i in 0..users {
            if matches!(
                assigner
                    .assign(&format!("auth0|bench{i}"), &roles, false)
                    .await,
                Ok(AssignOutcome::Assigned { .. })
            ) {
                ok += 1;
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let after = sim.stats();
    let api_calls = (after.total_requests - before.total_requests) as f64;
    let rejected = (after.rate_limited - before.rate_limited) as f64;
    let with_roles = sim
        .users_with_roles()
        .values()
        .filter(|r| r.len() == 2)
        .count();
    // Allowed calls in `wall` seconds: the burst plus the sustained rate.
    let allowed = (BURST as f64 + RATE * wall).min(api_calls.max(1.0));
    let achieved_ratio = if api_calls > BURST as f64 {
        (api_calls - BURST as f64) / wall / RATE
    } else {
        api_calls / allowed
    };
    println!(
        "{name}: {users} users in {wall:.1} s = {:.1} assignments/s; API calls {api_calls:.0} ({:.3} per user); \
         429s {rejected:.0} ({:.2} % of calls); achieved/allowed rate {:.2}; users with both roles {with_roles}/{users}; ok {ok}",
        users as f64 / wall,
        api_calls / users as f64,
        100.0 * rejected / api_calls.max(1.0),
        achieved_ratio,
    );
    running.shutdown().await;
}

/// The client's setting in a grid cell.
#[derive(Clone, Copy)]
enum Setting {
    /// `requests_per_second` at this multiple of the tenant's rate.
    Times(f64),
    Auto,
}

impl Setting {
    fn label(self) -> String {
        match self {
            Setting::Times(f) => format!("{f}x"),
            Setting::Auto => "auto".to_owned(),
        }
    }
}

/// One grid cell: `instances` clients at `setting` against one tenant of `rate`/s, `burst`.
/// Returns (429 share, throughput share of the tenant's limit, calls per assigned user).
async fn grid_cell(
    rate: f64,
    burst: u32,
    setting: Setting,
    instances: usize,
    seconds: f64,
) -> (f64, f64, f64) {
    let sim = Simulator::new(
        SimConfig {
            rate_per_second: rate,
            burst,
            accept_any_user: true,
            ..SimConfig::default()
        },
        Seed {
            roles: vec![SeedRole::named("Viewer")],
            ..Seed::default()
        },
    );
    let running = match sim
        .start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
        .await
    {
        Ok(r) => r,
        Err(e) => panic!("simulator: {e}"),
    };
    let (requests_per_second, client_burst, auto_share) = match setting {
        Setting::Times(f) => (rate * f, burst, None),
        Setting::Auto => (2.0, 2, Some(1.0)),
    };
    // Enough users to keep the tenant busy for `seconds` (the client's pace when below it).
    let pace = match setting {
        Setting::Times(f) => rate * f.min(1.0),
        Setting::Auto => rate,
    };
    let users = (f64::from(burst) + pace * seconds).ceil() as usize;
    let mut assigners = Vec::new();
    for _ in 0..instances {
        let client = MgmtClient::new(
            ClientSettings {
                base_url: running.base_url.clone(),
                audience: sim.audience(),
                client_id: sim.config().client_id,
                client_secret: Secret::new(sim.config().client_secret),
                requests_per_second,
                burst: client_burst,
                auto_share,
                timeout: Duration::from_secs(10),
                retry: RetrySettings::default(),
            },
            Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}"))),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let directory = Arc::new(
            RoleDirectory::resolve(&client, ["Viewer".to_string()].into_iter().collect())
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        assigners.push(RoleAssigner::start(
            client,
            directory,
            BatchSettings {
                window: Duration::ZERO,
                max_users: 1,
                read_user_roles: false,
                count_group_roles: false,
            },
        ));
    }
    // The set-up (tokens, role names) spent part of the bucket: start from a full one.
    tokio::time::sleep(Duration::from_secs_f64(f64::from(burst) / rate)).await;
    let before = sim.stats();
    let started = Instant::now();
    // ASSIGN_BENCH_TRACE: print when the cell's 429s came (tenths of a second from its start).
    let trace = std::env::var_os("ASSIGN_BENCH_TRACE").map(|_| {
        let sim = sim.clone();
        tokio::spawn(async move {
            let mut seen = before.rate_limited;
            let mut at = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = sim.stats();
                if now.rate_limited > seen {
                    at.push(format!(
                        "{:.1}s({}/{})",
                        started.elapsed().as_secs_f64(),
                        now.rate_limited - seen,
                        now.total_requests - before.total_requests
                    ));
                    seen = now.rate_limited;
                    println!("  429s at {}", at.join(" "));
                }
            }
        })
    });
    let roles = vec!["Viewer".to_string()];
    let tasks: Vec<_> = (0..users)
        .map(|i| {
            let assigner = assigners[i % instances].clone();
            let roles = roles.clone();
            tokio::spawn(async move {
                assigner
                    .assign(&format!("auth0|grid{i}"), &roles, false)
                    .await
            })
        })
        .collect();
    let mut ok = 0usize;
    for t in tasks {
        if matches!(t.await, Ok(Ok(AssignOutcome::Assigned { .. }))) {
            ok += 1;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    if let Some(trace) = trace {
        trace.abort();
    }
    let after = sim.stats();
    let calls = (after.total_requests - before.total_requests) as f64;
    let limited = (after.rate_limited - before.rate_limited) as f64;
    let allowed = f64::from(burst) + rate * wall;
    running.shutdown().await;
    (
        limited / calls.max(1.0),
        (calls - limited) / allowed,
        calls / ok.max(1) as f64,
    )
}

async fn grid() {
    let seconds = std::env::var("ASSIGN_BENCH_GRID_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(15.0);
    // ASSIGN_BENCH_GRID_CELLS: only the cells whose "bucket client instances" contains it
    // (e.g. "150/min, burst 10 auto 3"; alternatives separated by '|').
    let only = std::env::var("ASSIGN_BENCH_GRID_CELLS").unwrap_or_default();
    println!("rate-limit grid ({seconds} s of work at the tenant's rate per cell)");
    println!(
        "| tenant bucket | client | instances | 429 share | throughput / limit | calls per user |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, rate, burst) in [
        ("2/s, burst 2", 2.0, 2),
        ("150/min, burst 10", 2.5, 10),
        ("16/s, burst 50", 16.0, 50),
    ] {
        let mut cells: Vec<(Setting, usize)> = [0.5, 1.0, 2.0, 10.0]
            .into_iter()
            .map(|f| (Setting::Times(f), 1))
            .collect();
        cells.push((Setting::Auto, 1));
        cells.push((Setting::Auto, 3));
        for (setting, instances) in cells {
            let cell = format!("{name} {} {instances}", setting.label());
            if !only.is_empty() && !only.split('|').any(|o| cell.contains(o)) {
                continue;
            }
            let (share_429, throughput, per_user) =
                grid_cell(rate, burst, setting, instances, seconds).await;
            println!(
                "| {name} | {} | {instances} | {:.2} % | {throughput:.2} | {per_user:.3} |",
                setting.label(),
                100.0 * share_429,
            );
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let serial = env_usize("ASSIGN_BENCH_SERIAL_USERS", 400);
    let burst = env_usize("ASSIGN_BENCH_USERS", 2000);
    let grid_mode = std::env::var("ASSIGN_BENCH_GRID").unwrap_or_default();
    runtime.block_on(async {
        if grid_mode != "only" {
            scenario("one by one (no coalescing)", serial, false, Duration::ZERO).await;
            scenario(
                "burst (bulk coalescing, 100 ms window)",
                burst,
                true,
                Duration::from_millis(100),
            )
            .await;
        }
        if grid_mode != "off" {
            grid().await;
        }
    });
}
