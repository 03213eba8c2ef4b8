//! The Management API client against the simulator over real HTTP: tokens, role resolution,
//! rate limits, outages, permanent failures, bulk coalescing and id encoding.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use auth0_default_roles::config::Secret;
use auth0_default_roles::metrics::Metrics;
use auth0_default_roles::mgmt::{
    encode_path_segment, AssignOutcome, BatchSettings, Blocked, ClientSettings, MgmtClient,
    MgmtError, RetrySettings, RoleAssigner, RoleDirectory,
};
use mgmt_sim::{RunningSimulator, Seed, SeedRole, SeedUser, SimConfig, Simulator};

const ROLES: [&str; 5] = [
    "Viewer",
    "SuperViewer",
    "viewer-legacy",
    "CUSTOMER",
    "PARTNER",
];

async fn start(config: SimConfig, users: &[&str]) -> (Simulator, RunningSimulator) {
    let seed = Seed {
        roles: ROLES.iter().map(|r| SeedRole::named(*r)).collect(),
        users: users.iter().map(|u| SeedUser::new(*u)).collect(),
        ..Seed::default()
    };
    let sim = Simulator::new(config, seed);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
    let running = sim
        .start(addr)
        .await
        .unwrap_or_else(|e| panic!("sim start: {e}"));
    (sim, running)
}

fn settings(running: &RunningSimulator, sim: &Simulator, secret: &str) -> ClientSettings {
    ClientSettings {
        base_url: running.base_url.clone(),
        audience: sim.audience(),
        client_id: sim.config().client_id,
        client_secret: Secret::new(secret),
        requests_per_second: 1000.0,
        burst: 1000,
        auto_share: None,
        timeout: Duration::from_secs(2),
        retry: RetrySettings {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(300),
            reset_floor: Duration::from_secs(1),
            scope_token_refresh: Duration::from_millis(500),
            sustained: Duration::ZERO,
        },
    }
}

fn client(running: &RunningSimulator, sim: &Simulator) -> MgmtClient {
    let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
    MgmtClient::new(settings(running, sim, &sim.config().client_secret), metrics)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn roles(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn assigner(client: &MgmtClient, window_ms: u64) -> RoleAssigner {
    let directory = RoleDirectory::resolve(client, names(&["Viewer", "CUSTOMER", "PARTNER"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    RoleAssigner::start(
        client.clone(),
        Arc::new(directory),
        BatchSettings {
            window: Duration::from_millis(window_ms),
            max_users: 50,
            read_user_roles: false,
            count_group_roles: false,
        },
    )
}

type AssignTask = tokio::task::JoinHandle<(String, Result<AssignOutcome, MgmtError>)>;

/// Starts one concurrent assignment per user, all for the same roles.
fn spawn_assignments(
    assigner: &RoleAssigner,
    users: &[String],
    role_names: &[&str],
) -> Vec<AssignTask> {
    users
        .iter()
        .map(|u| {
            let assigner = assigner.clone();
            let u = u.clone();
            let wanted = roles(role_names);
            tokio::spawn(async move {
                let outcome = assigner.assign(&u, &wanted, false).await;
                (u, outcome)
            })
        })
        .collect()
}

/// Waits for every assignment of `spawn_assignments`.
async fn outcomes(tasks: Vec<AssignTask>) -> Vec<(String, Result<AssignOutcome, MgmtError>)> {
    let mut all = Vec::with_capacity(tasks.len());
    for task in tasks {
        all.push(task.await.unwrap_or_else(|e| panic!("{e}")));
    }
    all
}

#[test]
fn path_segments_are_percent_encoded() {
    assert_eq!(encode_path_segment("auth0|abc"), "auth0%7Cabc");
    assert_eq!(
        encode_path_segment("samlp|corp/alice"),
        "samlp%7Ccorp%2Falice"
    );
    assert_eq!(encode_path_segment("rol_AbC-1_2.3~"), "rol_AbC-1_2.3~");
}

#[tokio::test]
async fn token_is_cached_and_refreshed_once_after_401() {
    let (sim, running) = start(SimConfig::default(), &["auth0|a"]).await;
    let client = client(&running, &sim);
    client
        .get_user("auth0|a")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .get_user("auth0|a")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sim.stats().calls_of("token"), 1);
    sim.revoke_tokens();
    client
        .get_user("auth0|a")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sim.stats().calls_of("token"), 2);
    assert_eq!(
        sim.stats().calls_of("get_user"),
        4,
        "the rejected call is sent once more"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn token_refreshes_before_expiry() {
    let config = SimConfig {
        token_expires_in: 2,
        ..SimConfig::default()
    };
    let (sim, running) = start(config, &["auth0|a"]).await;
    let client = client(&running, &sim);
    client
        .get_user("auth0|a")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client
        .get_user("auth0|a")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stats = sim.stats();
    assert_eq!(stats.calls_of("token"), 2);
    assert_eq!(
        stats.unauthorized, 0,
        "the client refreshed ahead of expiry"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn bad_credentials_and_audience_are_explained() {
    let (sim, running) = start(SimConfig::default(), &[]).await;
    let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
    let wrong = MgmtClient::new(
        settings(&running, &sim, "wrong-secret"),
        Arc::clone(&metrics),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    match wrong.ensure_token().await {
        Err(MgmtError::Auth(message)) => {
            assert!(message.contains("401"), "{message}");
            assert!(
                message.contains("client id or secret is wrong"),
                "{message}"
            );
            assert!(
                !message.contains("wrong-secret"),
                "never print the secret: {message}"
            );
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    let mut other_tenant = settings(&running, &sim, &sim.config().client_secret);
    other_tenant.audience = "https://other.auth0.com/api/v2/".into();
    let client = MgmtClient::new(other_tenant, metrics).unwrap_or_else(|e| panic!("{e}"));
    match client.ensure_token().await {
        Err(MgmtError::Auth(message)) => assert!(
            message.contains("not authorized for the Management API"),
            "{message}"
        ),
        other => panic!("expected an auth error, got {other:?}"),
    }
    running.shutdown().await;
}

#[tokio::test]
async fn role_names_resolve_exactly_despite_substring_filtering() {
    let (sim, running) = start(SimConfig::default(), &[]).await;
    let client = client(&running, &sim);
    let directory = RoleDirectory::resolve(&client, names(&["Viewer", "CUSTOMER"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(directory.id("Viewer"), sim.role_id("Viewer"));
    assert_ne!(directory.id("Viewer"), sim.role_id("SuperViewer"));
    assert_eq!(directory.id("CUSTOMER"), sim.role_id("CUSTOMER"));
    match RoleDirectory::resolve(&client, names(&["Nope", "Viewer", "Gone", "VIEWER"])).await {
        Err(MgmtError::MissingRoles(missing)) => assert_eq!(missing, ["Gone", "Nope", "VIEWER"]),
        Err(other) => panic!("expected missing roles, got {other}"),
        Ok(_) => panic!("expected missing roles"),
    }
    running.shutdown().await;
}

#[tokio::test]
async fn rate_limit_429_waits_for_the_reset_then_succeeds() {
    let config = SimConfig {
        rate_per_second: 1.0,
        burst: 1,
        ..SimConfig::default()
    };
    let (sim, running) = start(config, &["auth0|a", "auth0|b", "auth0|c"]).await;
    let client = client(&running, &sim);
    let viewer = sim.role_id("Viewer").unwrap_or_default();
    let started = Instant::now();
    for user in ["auth0|a", "auth0|b", "auth0|c"] {
        client
            .assign_user_roles(user, std::slice::from_ref(&viewer))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited for the bucket: {:?}",
        started.elapsed()
    );
    let stats = sim.stats();
    assert_eq!(stats.calls_of("assign_user_roles"), 3 + stats.rate_limited);
    // The floor of 1 s per 429 keeps retries rare: no more than one 429 per success.
    assert!(stats.rate_limited <= 2, "{stats:?}");
    assert_eq!(client.stats().rate_limited, stats.rate_limited);
    for user in ["auth0|a", "auth0|b", "auth0|c"] {
        assert_eq!(sim.user_role_names(user), ["Viewer"]);
    }
    running.shutdown().await;
}

#[tokio::test]
async fn retry_after_and_reset_equal_to_now_are_honoured() {
    for (retry_after, reset_equals_now) in [(true, false), (false, true)] {
        let config = SimConfig {
            rate_per_second: 1.0,
            burst: 1,
            retry_after,
            reset_equals_now,
            ..SimConfig::default()
        };
        let (sim, running) = start(config, &["auth0|a", "auth0|b"]).await;
        // Two instances share the tenant's bucket: the first spends it, so the second's first
        // call (sent alone, as the limiter sends a first call) meets the 429 whose headers it
        // must honour. One client alone would not meet it: its answer said the bucket is empty.
        let first = client(&running, &sim);
        let second = client(&running, &sim);
        let viewer = sim.role_id("Viewer").unwrap_or_default();
        first
            .assign_user_roles("auth0|a", std::slice::from_ref(&viewer))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        second
            .assign_user_roles("auth0|b", &[viewer])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let stats = sim.stats();
        assert!(
            stats.rate_limited >= 1,
            "the second call met a 429: {stats:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "waited at least the floor"
        );
        assert!(stats.rate_limited <= 2, "no retry storm: {stats:?}");
        assert_eq!(sim.user_role_names("auth0|b"), ["Viewer"]);
        running.shutdown().await;
    }
}

#[tokio::test]
async fn full_outage_then_every_assignment_lands_once() {
    let users: Vec<String> = (0..10).map(|i| format!("auth0|out{i}")).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let (sim, running) = start(SimConfig::default(), &user_refs).await;
    let client = client(&running, &sim);
    let assigner = assigner(&client, 20).await;
    sim.set_down(true);
    let tasks = spawn_assignments(&assigner, &users, &["Viewer", "CUSTOMER"]);
    // A 10 s full outage.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        sim.users_with_roles().is_empty(),
        "nothing can land while down"
    );
    assert_eq!(client.metrics().mgmt_failing.get(), 1);
    sim.set_down(false);
    for (_, outcome) in outcomes(tasks).await {
        assert!(matches!(outcome, Ok(AssignOutcome::Assigned { .. })));
    }
    for u in &users {
        assert_eq!(sim.user_role_names(u), ["CUSTOMER", "Viewer"]);
    }
    assert_eq!(
        sim.stats().duplicate_assignments,
        0,
        "no role was written twice"
    );
    assert_eq!(client.metrics().mgmt_failing.get(), 0);
    running.shutdown().await;
}

#[tokio::test]
async fn storms_of_500_and_503_lose_nothing() {
    let users: Vec<String> = (0..20).map(|i| format!("auth0|storm{i}")).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let (sim, running) = start(SimConfig::default(), &user_refs).await;
    let client = client(&running, &sim);
    let viewer = sim.role_id("Viewer").unwrap_or_default();
    sim.set_error_rate(0.6);
    let tasks: Vec<_> = users
        .iter()
        .map(|u| {
            // One call per user: 20 calls at a 60 % fault rate all meet faults.
            let client = client.clone();
            let u = u.clone();
            let viewer = viewer.clone();
            tokio::spawn(async move { client.assign_user_roles(&u, &[viewer]).await })
        })
        .collect();
    for task in tasks {
        let done = task.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(done.is_ok(), "{done:?}");
    }
    assert_eq!(sim.users_with_roles().len(), 20);
    assert!(sim.stats().faults_served > 0);
    running.shutdown().await;
}

#[tokio::test]
async fn an_application_role_deleted_after_its_lookup_is_left_out_and_the_policy_roles_given() {
    let (sim, running) = start(SimConfig::default(), &["auth0|ok"]).await;
    let client = client(&running, &sim);
    let assigner = assigner(&client, 0).await;
    // "SuperViewer" is not a policy role: an application's client_metadata named it.
    let found = assigner
        .directory()
        .lookup(&client, "SuperViewer")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(found.is_some());
    assert!(sim.delete_role("SuperViewer"));
    let outcome = assigner
        .assign("auth0|ok", &roles(&["Viewer", "SuperViewer"]), false)
        .await;
    assert!(
        matches!(outcome, Ok(AssignOutcome::Assigned { .. })),
        "{outcome:?}"
    );
    assert_eq!(sim.user_role_names("auth0|ok"), ["Viewer"]);
    assert_eq!(client.metrics().client_metadata_unknown_roles.get(), 1);
    assert!(client.blocked().is_none(), "not a fault of the service");
    running.shutdown().await;
}

#[tokio::test]
async fn unknown_user_fails_permanently_and_others_are_unaffected() {
    let (sim, running) = start(SimConfig::default(), &["auth0|ok"]).await;
    let client = client(&running, &sim);
    match client.get_user("auth0|ghost").await {
        Err(err) => {
            assert!(err.is_user_not_found(), "{err}");
            assert!(
                err.to_string().contains("The user does not exist."),
                "{err}"
            );
            assert!(err.to_string().contains("inexistent_user"), "{err}");
        }
        Ok(_) => panic!("a missing user must fail"),
    }
    let assigner = assigner(&client, 0).await;
    let ghost = assigner
        .assign("auth0|ghost", &roles(&["Viewer"]), false)
        .await;
    assert!(
        matches!(&ghost, Err(e) if e.is_user_not_found()),
        "{ghost:?}"
    );
    assert!(matches!(
        assigner
            .assign("auth0|ok", &roles(&["Viewer"]), false)
            .await,
        Ok(AssignOutcome::Assigned { .. })
    ));
    assert_eq!(sim.user_role_names("auth0|ok"), ["Viewer"]);
    running.shutdown().await;
}

#[tokio::test]
async fn bulk_batch_with_a_deleted_user_falls_back_to_per_user_calls() {
    let users: Vec<String> = (0..6).map(|i| format!("auth0|bulk{i}")).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let (sim, running) = start(SimConfig::default(), &user_refs).await;
    sim.delete_user("auth0|bulk3");
    let client = client(&running, &sim);
    let assigner = assigner(&client, 200).await;
    let tasks = spawn_assignments(&assigner, &users, &["Viewer", "CUSTOMER"]);
    for (user, outcome) in outcomes(tasks).await {
        if user == "auth0|bulk3" {
            assert!(
                matches!(&outcome, Err(e) if e.is_user_not_found()),
                "{outcome:?}"
            );
        } else {
            assert!(
                matches!(outcome, Ok(AssignOutcome::Assigned { .. })),
                "{user}"
            );
            assert_eq!(sim.user_role_names(&user), ["CUSTOMER", "Viewer"]);
        }
    }
    let stats = sim.stats();
    assert_eq!(
        stats.calls_of("assign_role_users"),
        2,
        "one bulk call per role: {stats:?}"
    );
    assert_eq!(
        stats.calls_of("assign_user_roles"),
        6,
        "then one call per user of the failed batch: {stats:?}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn bulk_assignment_spends_one_call_per_role() {
    let users: Vec<String> = (0..40).map(|i| format!("auth0|many{i}")).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let (sim, running) = start(SimConfig::default(), &user_refs).await;
    let client = client(&running, &sim);
    let assigner = assigner(&client, 200).await;
    let tasks = spawn_assignments(&assigner, &users, &["Viewer"]);
    for (_, outcome) in outcomes(tasks).await {
        assert!(matches!(outcome, Ok(AssignOutcome::Assigned { .. })));
    }
    let stats = sim.stats();
    assert_eq!(stats.calls_of("assign_role_users"), 1, "{stats:?}");
    assert_eq!(stats.calls_of("assign_user_roles"), 0, "{stats:?}");
    assert_eq!(sim.users_with_roles().len(), 40);
    running.shutdown().await;
}

#[tokio::test]
async fn ids_with_pipes_and_slashes_reach_the_right_user() {
    let (sim, running) = start(SimConfig::default(), &["samlp|corp/alice", "auth0|x"]).await;
    let client = client(&running, &sim);
    let assigner = assigner(&client, 0).await;
    assert!(matches!(
        assigner
            .assign("samlp|corp/alice", &roles(&["PARTNER"]), false)
            .await,
        Ok(AssignOutcome::Assigned { .. })
    ));
    assert_eq!(sim.user_role_names("samlp|corp/alice"), ["PARTNER"]);
    client
        .get_user("samlp|corp/alice")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    running.shutdown().await;
}

#[tokio::test]
async fn read_user_roles_skips_users_that_hold_every_role() {
    let (sim, running) = start(SimConfig::default(), &["auth0|held"]).await;
    let client = client(&running, &sim);
    let directory = RoleDirectory::resolve(&client, names(&["Viewer"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let assigner = RoleAssigner::start(
        client.clone(),
        Arc::new(directory),
        BatchSettings {
            window: Duration::ZERO,
            max_users: 50,
            read_user_roles: true,
            count_group_roles: false,
        },
    );
    assert!(matches!(
        assigner
            .assign("auth0|held", &roles(&["Viewer"]), false)
            .await,
        Ok(AssignOutcome::Assigned { .. })
    ));
    let again = assigner
        .assign("auth0|held", &roles(&["Viewer"]), false)
        .await;
    assert!(matches!(again, Ok(AssignOutcome::AlreadyHeld)), "{again:?}");
    assert_eq!(sim.stats().calls_of("assign_user_roles"), 1);
    running.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn role_ids_are_resolved_again_periodically() {
    let (sim, running) = start(SimConfig::default(), &[]).await;
    let client = client(&running, &sim);
    let directory = Arc::new(
        RoleDirectory::resolve(&client, names(&["Viewer"]))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let calls = sim.stats().calls_of("get_roles");
    directory.spawn_refresh(client.clone(), Duration::from_secs(3600));
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        if sim.stats().calls_of("get_roles") > calls {
            break;
        }
    }
    assert!(
        sim.stats().calls_of("get_roles") > calls,
        "the hourly refresh ran"
    );
    assert_eq!(directory.id("Viewer"), sim.role_id("Viewer"));
    running.shutdown().await;
}

#[tokio::test]
async fn a_scope_granted_again_is_used_once_a_new_token_carries_it() {
    // The token is issued while the assignment scopes are denied: like a real access token, it
    // keeps lacking them after they are granted again.
    let denied = ["create:role_members", "update:users", "update:roles"].map(str::to_owned);
    let (sim, running) = start(
        SimConfig {
            denied_scopes: denied.to_vec(),
            ..SimConfig::default()
        },
        &["auth0|waiting"],
    )
    .await;
    let client = client(&running, &sim);
    let assigner = assigner(&client, 0).await;
    client.start_serving();
    let task = {
        let assigner = assigner.clone();
        tokio::spawn(async move {
            assigner
                .assign("auth0|waiting", &roles(&["Viewer"]), false)
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!task.is_finished(), "a missing scope makes the call wait");
    assert!(client.is_failing());
    assert!(matches!(client.blocked(), Some((Blocked::Scope, _))));
    let tokens_before = sim.stats().calls_of("token");
    sim.apply_control(&mgmt_sim::ControlRequest {
        denied_scopes: Some(Vec::new()),
        ..Default::default()
    });
    let outcome = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap_or_else(|_| panic!("still waiting after the scope was granted again"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(outcome, Ok(AssignOutcome::Assigned { .. })));
    assert_eq!(sim.user_role_names("auth0|waiting"), ["Viewer"]);
    assert!(!client.is_failing());
    // New tokens only every `scope_token_refresh` (0.5 s here) while refused: a handful.
    let tokens = sim.stats().calls_of("token");
    assert!(
        tokens > tokens_before,
        "a new token was fetched after the grant"
    );
    assert!(tokens <= 6, "{tokens} tokens for about a second of refusal");
    running.shutdown().await;
}

/// `reconcile`'s checkpoint listing goes on past a page emptied by deletions: only a page
/// without `next` is the last, so no surviving member is missed (and judged role-less).
#[tokio::test]
async fn a_member_listing_goes_on_past_pages_emptied_by_deletions() {
    let users: Vec<String> = (0..250).map(|i| format!("auth0|m{i:03}")).collect();
    let seed = Seed {
        roles: vec![SeedRole::named("Viewer")],
        users: users
            .iter()
            .map(|u| {
                let mut user = SeedUser::new(u.clone());
                user.roles = vec!["Viewer".to_owned()];
                user
            })
            .collect(),
        ..Seed::default()
    };
    let sim = Simulator::new(SimConfig::default(), seed);
    let running = sim
        .start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = client(&running, &sim);
    let directory = RoleDirectory::resolve(&client, names(&["Viewer"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let role = directory.all().remove("Viewer").unwrap_or_default();
    let mut pages = 0;
    let listed = auth0_default_roles::reconcile::members::list_role(&client, &role, |_| {
        pages += 1;
        if pages == 1 {
            // The second page's members (the listing is in user id order) go away meanwhile.
            for user in &users[100..200] {
                sim.delete_user(user);
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pages, 3, "the empty second page is not the last");
    let expected: BTreeSet<u128> = users[..100]
        .iter()
        .chain(&users[200..])
        .map(|u| auth0_default_roles::reconcile::members::fingerprint(u))
        .collect();
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), expected);
    running.shutdown().await;
}
