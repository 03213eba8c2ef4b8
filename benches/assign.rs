//! `cargo bench --bench assign`: new users assigned through the client against the simulator
//! limited like an Enterprise tenant (16 requests/s, burst 50), client limiter set the same.
//! Prints wall time, assignments/s, achieved/allowed request rate, 429 share, calls per user.
//! Users: ASSIGN_BENCH_USERS (default 2000) in the burst scenario; ASSIGN_BENCH_SERIAL_USERS
//! (default 400) one at a time.

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

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let serial = env_usize("ASSIGN_BENCH_SERIAL_USERS", 400);
    let burst = env_usize("ASSIGN_BENCH_USERS", 2000);
    runtime.block_on(async {
        scenario("one by one (no coalescing)", serial, false, Duration::ZERO).await;
        scenario(
            "burst (bulk coalescing, 100 ms window)",
            burst,
            true,
            Duration::from_millis(100),
        )
        .await;
    });
}
