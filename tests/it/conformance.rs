//! Conformance with the recorded exchanges of real tenants (`../shared/reference/
//! mgmt-api-recordings/`: Auth0's own SDK and Terraform provider tests, see PROVENANCE.md).
//! For every recorded exchange of a call this service makes:
//! - the recorded answer decodes with the service's own client and types (the answer is served
//!   to the real `MgmtClient` by a stub that plays it back);
//! - the simulator, seeded with the recording's users, roles and organizations, answers the
//!   recorded request with the recorded status and the fields the service reads.
//!
//! When the folder is absent (a plain clone without `../shared`), the module says so once and
//! passes: the project's own fixtures (the simulator's tests and the other modules), written from
//! what the recordings show, still cover every shape.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use auth0_default_roles::config::Secret;
use auth0_default_roles::metrics::Metrics;
use auth0_default_roles::mgmt::{ClientSettings, MgmtClient, MgmtError, RetrySettings};
use mgmt_sim::{Seed, SeedRole, SeedUser, SimConfig, Simulator};
use serde_json::Value;

/// One recorded request and its answer.
#[derive(Debug, Clone)]
struct Exchange {
    source: String,
    method: String,
    /// Path and query, without the tenant's host.
    path: String,
    body: String,
    code: u16,
    response: String,
}

impl Exchange {
    fn route(&self) -> Route {
        Route::of(&self.method, self.path.split('?').next().unwrap_or(""))
    }

    fn response_json(&self) -> Value {
        serde_json::from_str(&self.response).unwrap_or(Value::Null)
    }

    fn request_json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The decoded `{id}`-like path segments.
    fn segments(&self) -> Vec<String> {
        self.path
            .split('?')
            .next()
            .unwrap_or("")
            .split('/')
            .map(percent_decode)
            .collect()
    }
}

fn percent_decode(s: &str) -> String {
    s.replace("%7C", "|").replace("%7c", "|")
}

/// The calls this service makes, by method and path shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    GetUser,
    GetUserRoles,
    AssignUserRoles,
    RemoveUserRoles,
    AssignRoleUsers,
    FindRoles,
    CreateExport,
    ListLogStreams,
    CreateLogStream,
    UpdateLogStream,
    GetLogs,
    ListOrganizations,
    ListMembers,
    AssignMemberRoles,
    Other,
}

impl Route {
    fn of(method: &str, path: &str) -> Route {
        let parts: Vec<&str> = path.trim_start_matches("/api/v2/").split('/').collect();
        match (method, parts.as_slice()) {
            ("GET", ["users", _]) => Route::GetUser,
            ("GET", ["users", _, "roles"]) => Route::GetUserRoles,
            ("POST", ["users", _, "roles"]) => Route::AssignUserRoles,
            ("DELETE", ["users", _, "roles"]) => Route::RemoveUserRoles,
            ("POST", ["roles", _, "users"]) => Route::AssignRoleUsers,
            ("GET", ["roles"]) => Route::FindRoles,
            ("POST", ["jobs", "users-exports"]) => Route::CreateExport,
            ("GET", ["log-streams"]) => Route::ListLogStreams,
            ("POST", ["log-streams"]) => Route::CreateLogStream,
            ("PATCH", ["log-streams", _]) => Route::UpdateLogStream,
            ("GET", ["logs"]) => Route::GetLogs,
            ("GET", ["organizations"]) => Route::ListOrganizations,
            ("GET", ["organizations", _, "members"]) => Route::ListMembers,
            ("POST", ["organizations", _, "members", _, "roles"]) => Route::AssignMemberRoles,
            _ => Route::Other,
        }
    }
}

/// The recordings folder, or `None` (said once) when this clone has no `../shared`.
fn recordings() -> Option<PathBuf> {
    static SAID: Once = Once::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/mgmt-api-recordings");
    if dir.is_dir() {
        return Some(dir);
    }
    SAID.call_once(|| {
        eprintln!(
            "conformance: {} is absent (a clone without ../shared): the recorded exchanges are not replayed; the project's own fixtures cover their shapes",
            dir.display()
        );
    });
    None
}

/// Every exchange of every go-vcr cassette under `dir`.
fn exchanges(dir: &Path) -> Vec<Exchange> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = ["go-auth0", "terraform-provider-auth0"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(dir.join(sub)).into_iter().flatten())
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let Ok(doc) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) else {
            continue;
        };
        let source = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for interaction in doc["interactions"].as_sequence().into_iter().flatten() {
            let request = &interaction["request"];
            let response = &interaction["response"];
            let url = request["url"].as_str().unwrap_or("");
            let path = url
                .find("/api/v2/")
                .map(|i| url[i..].to_owned())
                .unwrap_or_default();
            if path.is_empty() {
                continue;
            }
            out.push(Exchange {
                source: source.clone(),
                method: request["method"].as_str().unwrap_or("").to_owned(),
                path,
                body: request["body"].as_str().unwrap_or("").to_owned(),
                code: response["code"].as_u64().unwrap_or(0) as u16,
                response: response["body"].as_str().unwrap_or("").to_owned(),
            });
        }
    }
    out
}

/// A tenant that answers every Management API call with `answer` (status, body): the recorded
/// answer played back to the service's own client.
struct Playback {
    answer: Arc<Mutex<(u16, String)>>,
    base_url: String,
}

async fn playback() -> Playback {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let answer = Arc::new(Mutex::new((200u16, String::new())));
    let state = Arc::clone(&answer);
    let app = axum::Router::new()
        .route(
            "/oauth/token",
            axum::routing::post(|| async {
                (
                    [("content-type", "application/json")],
                    r#"{"access_token":"playback","expires_in":86400,"token_type":"Bearer"}"#,
                )
            }),
        )
        .fallback(move || {
            let state = Arc::clone(&state);
            async move {
                let (code, body) = state.lock().map(|a| a.clone()).unwrap_or_default();
                (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
                    [("content-type", "application/json; charset=utf-8")],
                    body,
                )
                    .into_response()
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Playback {
        answer,
        base_url: format!("http://{addr}"),
    }
}

fn client(base_url: &str, audience: &str) -> MgmtClient {
    let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
    MgmtClient::new(
        ClientSettings {
            base_url: base_url.to_owned(),
            audience: audience.to_owned(),
            client_id: "sim-client".to_owned(),
            client_secret: Secret::new("sim-secret"),
            requests_per_second: 1000.0,
            auto_share: None,
            burst: 1000,
            timeout: Duration::from_secs(5),
            retry: RetrySettings {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(50),
                ..RetrySettings::default()
            },
        },
        metrics,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// What the service made of one played-back answer: `Ok` with a short summary, or the error.
async fn through_the_client(client: &MgmtClient, x: &Exchange) -> Result<String, String> {
    let seg = x.segments();
    let id = |i: usize| seg.get(i).cloned().unwrap_or_default();
    let request = x.request_json();
    let show = |e: MgmtError| e.to_string();
    match x.route() {
        Route::GetUser => client
            .get_user(&id(4))
            .await
            .map(|p| format!("profile with {} identities", p.identities.len()))
            .map_err(show),
        Route::GetUserRoles => client
            .get_user_role_ids(&id(4))
            .await
            .map(|ids| ids.join(","))
            .map_err(show),
        Route::AssignUserRoles => client
            .assign_user_roles(&id(4), &strings(&request["roles"]))
            .await
            .map(|()| "assigned".to_owned())
            .map_err(show),
        Route::RemoveUserRoles => client
            .remove_user_roles(&id(4), &strings(&request["roles"]))
            .await
            .map(|()| "removed".to_owned())
            .map_err(show),
        Route::AssignRoleUsers => client
            .assign_role_users(&id(4), &strings(&request["users"]))
            .await
            .map(|()| "assigned".to_owned())
            .map_err(show),
        Route::CreateExport => auth0_default_roles::reconcile::export::create_job(client)
            .await
            .map_err(|e| e.to_string()),
        Route::ListLogStreams => client
            .list_log_streams()
            .await
            .map(|s| format!("{} streams", s.len()))
            .map_err(show),
        Route::CreateLogStream => client
            .create_log_stream(&request)
            .await
            .map(|s| format!("{} priority={}", s.id, s.is_priority))
            .map_err(show),
        Route::UpdateLogStream => client
            .update_log_stream(&id(4), &request)
            .await
            .map(|s| format!("{} priority={}", s.id, s.is_priority))
            .map_err(show),
        Route::ListOrganizations => client
            .organizations_page(None, 2)
            .await
            .map(|p| format!("{} organizations next={:?}", p.organizations.len(), p.next))
            .map_err(show),
        Route::ListMembers => client
            .organization_members_page(&id(4), None, 2)
            .await
            .map(|p| format!("{} members next={:?}", p.members.len(), p.next))
            .map_err(show),
        Route::AssignMemberRoles => client
            .assign_organization_member_roles(&id(4), &id(6), &strings(&request["roles"]))
            .await
            .map(|()| "assigned".to_owned())
            .map_err(show),
        Route::GetLogs => {
            let items = auth0_default_roles::event::decode(x.response.as_bytes());
            match items.iter().find_map(|i| i.as_ref().err()) {
                Some(err) => Err(err.reason.clone()),
                None => Ok(format!("{} logs", items.len())),
            }
        }
        Route::FindRoles | Route::Other => Ok(String::new()),
    }
}

#[test]
fn recorded_answers_decode_with_the_services_own_client_and_types() {
    let Some(dir) = recordings() else { return };
    let all = exchanges(&dir);
    assert!(all.len() > 100, "cassettes read: {}", all.len());
    let rt = test_harness::runtime();
    rt.block_on(async {
        let stub = playback().await;
        let client = client(&stub.base_url, "https://playback/api/v2/");
        let mut seen: BTreeMap<Route, usize> = BTreeMap::new();
        for x in all
            .iter()
            .filter(|x| !matches!(x.route(), Route::Other | Route::FindRoles))
        {
            // Rate-limit answers are never recorded; 5xx neither. Everything else is final.
            *stub.answer.lock().unwrap_or_else(|p| p.into_inner()) = (x.code, x.response.clone());
            let outcome =
                tokio::time::timeout(Duration::from_secs(10), through_the_client(&client, x))
                    .await
                    .unwrap_or_else(|_| {
                        panic!("{} {} {}: the client waited", x.source, x.method, x.path)
                    });
            if (200..300).contains(&x.code) {
                let summary = outcome.unwrap_or_else(|e| {
                    panic!(
                        "{} {} {} ({}): {e}\n{}",
                        x.source, x.method, x.path, x.code, x.response
                    )
                });
                if x.route() == Route::CreateLogStream || x.route() == Route::UpdateLogStream {
                    let recorded = x.response_json()["isPriority"] == Value::Bool(true);
                    assert!(
                        summary.ends_with(&format!("priority={recorded}")),
                        "{} {summary}",
                        x.source
                    );
                }
            } else {
                // A 404 user is a permanent failure naming Auth0's message, never a success.
                let err = outcome.err().unwrap_or_else(|| {
                    panic!(
                        "{} {} {} answered {} but the client took it as a success",
                        x.source, x.method, x.path, x.code
                    )
                });
                let message = x.response_json()["message"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                assert!(
                    err.contains(&message),
                    "{}: {err} lacks {message}",
                    x.source
                );
            }
            *seen.entry(x.route()).or_default() += 1;
        }
        eprintln!("conformance: recorded answers decoded per call: {seen:?}");
        for route in [
            Route::GetUser,
            Route::GetUserRoles,
            Route::AssignUserRoles,
            Route::RemoveUserRoles,
            Route::AssignRoleUsers,
            Route::CreateExport,
            Route::CreateLogStream,
            Route::UpdateLogStream,
            Route::GetLogs,
            Route::ListOrganizations,
            Route::ListMembers,
            Route::AssignMemberRoles,
        ] {
            assert!(
                seen.contains_key(&route),
                "no recording of {route:?}: {seen:?}"
            );
        }
    });
}

/// A simulator seeded with what the recordings name: every user in a path of a successful
/// exchange, every role (id and name) a successful exchange names, every organization and its
/// members, so a recorded request means the same to it as to the recorded tenant.
fn seeded(all: &[Exchange]) -> Simulator {
    let mut users: BTreeMap<String, ()> = BTreeMap::new();
    let mut roles: BTreeMap<String, String> = BTreeMap::new();
    let mut organizations: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for x in all.iter().filter(|x| (200..300).contains(&x.code)) {
        let seg = x.segments();
        let response = x.response_json();
        match x.route() {
            Route::GetUser
            | Route::GetUserRoles
            | Route::AssignUserRoles
            | Route::RemoveUserRoles => {
                users.insert(seg[4].clone(), ());
            }
            _ => {}
        }
        if x.route() == Route::AssignMemberRoles || x.route() == Route::ListMembers {
            let members = organizations.entry(seg[4].clone()).or_default();
            if let Some(user) = seg.get(6) {
                members.push(user.clone());
                users.insert(user.clone(), ());
            }
            for m in response["members"].as_array().into_iter().flatten() {
                if let Some(u) = m["user_id"].as_str() {
                    members.push(u.to_owned());
                    users.insert(u.to_owned(), ());
                }
            }
        }
        for role in response["roles"].as_array().into_iter().flatten() {
            if let (Some(id), Some(name)) = (role["id"].as_str(), role["name"].as_str()) {
                roles.insert(id.to_owned(), name.to_owned());
            }
        }
        for id in strings(&x.request_json()["roles"]) {
            roles
                .entry(id.clone())
                .or_insert_with(|| format!("recorded-{id}"));
        }
        if x.route() == Route::AssignRoleUsers {
            roles
                .entry(seg[4].clone())
                .or_insert_with(|| format!("recorded-{}", seg[4]));
            for u in strings(&x.request_json()["users"]) {
                users.insert(u, ());
            }
        }
    }
    let seed = Seed {
        roles: roles
            .into_iter()
            .map(|(id, name)| SeedRole {
                id: Some(id),
                ..SeedRole::named(name)
            })
            .collect(),
        users: users.into_keys().map(SeedUser::new).collect(),
        ..Seed::default()
    };
    let sim = Simulator::new(SimConfig::default(), seed);
    for (org, members) in organizations {
        sim.add_organization(Some(&org), &org);
        sim.add_members(&org, &members);
    }
    sim
}

/// The top-level fields of a recorded answer the service reads, which the simulator's answer
/// must carry too.
const READ_FIELDS: [&str; 12] = [
    "roles",
    "users",
    "members",
    "id",
    "user_id",
    "status",
    "statusCode",
    "message",
    "filters",
    "isPriority",
    "type",
    "next",
];

#[test]
fn the_simulator_answers_recorded_requests_with_the_recorded_status_and_read_fields() {
    let Some(dir) = recordings() else { return };
    let all = exchanges(&dir);
    let rt = test_harness::runtime();
    rt.block_on(async {
        // Each cassette against a tenant of its own, in recorded order: a cassette's later
        // requests see what its earlier ones did (a role removed, a stream created).
        let mut by_source: BTreeMap<String, Vec<Exchange>> = BTreeMap::new();
        for x in &all {
            by_source.entry(x.source.clone()).or_default().push(x.clone());
        }
        let http = reqwest::Client::new();
        let mut checked = 0;
        for (source, exchanges) in by_source {
            let wanted: Vec<&Exchange> = exchanges
                .iter()
                .filter(|x| {
                    matches!(
                        x.route(),
                        Route::GetUser
                            | Route::GetUserRoles
                            | Route::AssignUserRoles
                            | Route::RemoveUserRoles
                            | Route::AssignRoleUsers
                            | Route::CreateExport
                            | Route::CreateLogStream
                            | Route::UpdateLogStream
                            | Route::AssignMemberRoles
                    )
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let sim = seeded(&exchanges);
            let running = sim
                .start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let token: Value = http
                .post(running.url("/oauth/token"))
                .json(&serde_json::json!({"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "sim-secret", "audience": sim.audience()}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .json()
                .await
                .unwrap_or_default();
            let token = token["access_token"].as_str().unwrap_or_default().to_owned();
            let mut streams: BTreeMap<String, String> = BTreeMap::new();
            for x in exchanges.iter() {
                // A log stream's recorded id is the recorded tenant's: use the simulator's.
                let mut path = x.path.clone();
                for (recorded, ours) in &streams {
                    path = path.replace(recorded, ours);
                }
                let method = reqwest::Method::from_bytes(x.method.as_bytes())
                    .unwrap_or(reqwest::Method::GET);
                let mut request = http.request(method, running.url(&path)).bearer_auth(&token);
                if !x.body.trim().is_empty() {
                    request = request
                        .header("content-type", "application/json")
                        .body(x.body.trim().to_owned());
                }
                let answer = request.send().await.unwrap_or_else(|e| panic!("{e}"));
                let code = answer.status().as_u16();
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                if x.route() == Route::CreateLogStream {
                    if let (Some(recorded), Some(ours)) =
                        (x.response_json()["id"].as_str(), body["id"].as_str())
                    {
                        streams.insert(recorded.to_owned(), ours.to_owned());
                    }
                }
                if !wanted.iter().any(|w| std::ptr::eq(*w, x)) {
                    continue;
                }
                assert_eq!(
                    code, x.code,
                    "{source}: {} {} answered {code}, recorded {}\nsimulator: {body}\nrecorded: {}",
                    x.method, x.path, x.code, x.response
                );
                let recorded = x.response_json();
                if let Some(fields) = recorded.as_object() {
                    for key in READ_FIELDS.iter().filter(|k| fields.contains_key(**k)) {
                        assert!(
                            body.get(*key).is_some(),
                            "{source}: {} {}: the simulator's answer lacks `{key}`\nsimulator: {body}\nrecorded: {recorded}",
                            x.method,
                            x.path
                        );
                    }
                    if fields.get("isPriority") == Some(&Value::Bool(true)) {
                        assert_eq!(body["filters"], recorded["filters"], "{source}");
                    }
                }
                checked += 1;
            }
            running.shutdown().await;
        }
        eprintln!("conformance: {checked} recorded requests answered alike by the simulator");
        assert!(checked > 20, "exchanges checked: {checked}");
    });
}
