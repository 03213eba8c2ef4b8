//! End-to-end tests of the Management API simulator over real HTTP (reqwest against a server
//! bound to 127.0.0.1:0).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mgmt_sim::{RunningSimulator, Seed, SeedRole, SeedUser, SimConfig, SimStats, Simulator};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

const MEMBER: &str = "rol_member0000000001";
const ADMIN: &str = "rol_admin00000000001";

fn seed() -> Seed {
    Seed {
        roles: vec![
            SeedRole {
                id: Some(MEMBER.into()),
                name: "member".into(),
                description: Some("Default role".into()),
                owner_id: None,
            },
            SeedRole {
                id: Some(ADMIN.into()),
                name: "admin".into(),
                description: None,
                owner_id: None,
            },
            SeedRole::named("Premium Member"),
        ],
        users: vec![
            SeedUser {
                user_id: "auth0|abc".into(),
                email: Some("abc@example.com".into()),
                email_verified: Some(true),
                connection: None,
                app_metadata: Some(json!({"plan": "pro"})),
                roles: Vec::new(),
                group_roles: Vec::new(),
                created_at: None,
            },
            SeedUser::new("auth0|def"),
            SeedUser {
                user_id: "samlp|corp/alice".into(),
                email: Some("alice@corp.example".into()),
                email_verified: Some(false),
                connection: Some("corp-saml".into()),
                app_metadata: None,
                roles: Vec::new(),
                group_roles: Vec::new(),
                created_at: None,
            },
        ],
        applications: vec![mgmt_sim::SeedApplication {
            client_id: "app_store".into(),
            name: "Store".into(),
            client_metadata: [("default_role".to_owned(), "member".to_owned())]
                .into_iter()
                .collect(),
        }],
    }
}

struct Harness {
    sim: Simulator,
    server: RunningSimulator,
    http: Client,
    config: SimConfig,
}

impl Harness {
    async fn start(config: SimConfig) -> Harness {
        let sim = Simulator::new(config.clone(), seed());
        let server = sim
            .start("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("start simulator");
        Harness {
            sim,
            server,
            http: Client::new(),
            config,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url)
    }

    fn token_body(&self) -> Value {
        json!({
            "grant_type": "client_credentials",
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            "audience": format!("https://{}/api/v2/", self.config.domain),
        })
    }

    async fn token(&self) -> String {
        let resp = self
            .http
            .post(self.url("/oauth/token"))
            .json(&self.token_body())
            .send()
            .await
            .expect("token request");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("token json");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    async fn get(&self, token: &str, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("POST")
    }

    /// `POST /api/v2/jobs/users-exports` with `body`.
    async fn create_export(&self, token: &str, body: Value) -> Response {
        self.post(token, "/api/v2/jobs/users-exports", body).await
    }

    /// `GET /api/v2/jobs/{id}`, as JSON.
    async fn read_job(&self, token: &str, id: &str) -> Value {
        json_of(self.get(token, &format!("/api/v2/jobs/{id}")).await).await
    }
    async fn sim_state(&self) -> Value {
        self.http
            .get(self.url("/sim/state"))
            .send()
            .await
            .expect("state")
            .json()
            .await
            .expect("state json")
    }

    async fn control(&self, body: Value) -> StatusCode {
        self.http
            .post(self.url("/sim/control"))
            .json(&body)
            .send()
            .await
            .expect("control")
            .status()
    }
}

async fn json_of(resp: Response) -> Value {
    resp.json().await.expect("json body")
}

fn header_u64(resp: &Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn limited(rate: f64, burst: u32) -> SimConfig {
    SimConfig {
        rate_per_second: rate,
        burst,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn token_accepts_json_and_form_and_rejects_bad_requests() {
    let h = Harness::start(SimConfig::default()).await;

    let resp = h
        .http
        .post(h.url("/oauth/token"))
        .json(&h.token_body())
        .send()
        .await
        .expect("json token");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json_of(resp).await;
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() >= 32));
    assert_eq!(body["expires_in"], 86_400);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["scope"]
        .as_str()
        .is_some_and(|s| s.split(' ').any(|x| x == "update:users")));

    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "sim-client"),
        ("client_secret", "sim-secret"),
        ("audience", "https://sim.auth0.local/api/v2/"),
    ];
    let resp = h
        .http
        .post(h.url("/oauth/token"))
        .form(&form)
        .send()
        .await
        .expect("form token");
    assert_eq!(resp.status(), StatusCode::OK);
    let form_token = json_of(resp).await["access_token"]
        .as_str()
        .map(str::to_owned)
        .expect("token");
    assert_eq!(
        h.get(&form_token, "/api/v2/roles").await.status(),
        StatusCode::OK
    );

    let mut bad_secret = h.token_body();
    bad_secret["client_secret"] = json!("wrong");
    let resp = h
        .http
        .post(h.url("/oauth/token"))
        .json(&bad_secret)
        .send()
        .await
        .expect("bad secret");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(resp).await,
        json!({"error": "access_denied", "error_description": "Unauthorized"})
    );

    let resp = h
        .http
        .post(h.url("/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sim-client"),
            ("client_secret", "sim-secret"),
            ("audience", "https://other.example/api/v2/"),
        ])
        .send()
        .await
        .expect("bad audience");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = json_of(resp).await;
    assert_eq!(body["error"], "access_denied");
    assert!(body["error_description"]
        .as_str()
        .is_some_and(|d| d.starts_with(
            "Client is not authorized to access \"https://other.example/api/v2/\". You need to create a \"client-grant\""
        )));

    let mut wrong_grant = h.token_body();
    wrong_grant["grant_type"] = json!("password");
    let resp = h
        .http
        .post(h.url("/oauth/token"))
        .json(&wrong_grant)
        .send()
        .await
        .expect("wrong grant");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = json_of(resp).await;
    assert_eq!(body["error"], "unauthorized_client");
    assert_eq!(
        body["error_description"],
        "Grant type 'password' not allowed for the client."
    );

    let resp = h
        .http
        .post(h.url("/oauth/token"))
        .json(&json!({"grant_type": "client_credentials", "client_id": "sim-client"}))
        .send()
        .await
        .expect("missing secret");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(resp).await["error"], "invalid_request");

    assert_eq!(h.sim.stats().calls_of("token"), 6);
    h.server.shutdown().await;
}

#[tokio::test]
async fn api_calls_require_a_valid_bearer_token() {
    let h = Harness::start(SimConfig::default()).await;
    let resp = h
        .http
        .get(h.url("/api/v2/roles"))
        .send()
        .await
        .expect("no auth");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(resp).await["statusCode"], 401);

    let resp = h.get("not-a-token", "/api/v2/users/auth0%7Cabc").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(resp).await,
        json!({"statusCode": 401, "error": "Unauthorized", "message": "Invalid token"})
    );

    let resp = h
        .post(
            "bogus",
            "/api/v2/users/auth0%7Cabc/roles",
            json!({"roles": [MEMBER]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(h.sim.user_role_names("auth0|abc").is_empty());

    let token = h.token().await;
    assert_eq!(
        h.get(&token, "/api/v2/roles").await.status(),
        StatusCode::OK
    );
    let stats = h.sim.stats();
    assert_eq!(stats.unauthorized, 3);
    assert_eq!(stats.calls_of("get_roles"), 2);
    assert_eq!(stats.calls_of("assign_user_roles"), 1);
    h.server.shutdown().await;
}

#[tokio::test]
async fn roles_listing_is_a_case_insensitive_substring_filter() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;

    let resp = h.get(&token, "/api/v2/roles?name_filter=MEMBER").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json; charset=utf-8")
    );
    let body = json_of(resp).await;
    let names: Vec<&str> = body
        .as_array()
        .expect("bare array")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, vec!["Premium Member", "member"]);
    let member = body
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "member"))
        .cloned();
    assert_eq!(
        member,
        Some(json!({"id": MEMBER, "name": "member", "description": "Default role"}))
    );

    let body = json_of(
        h.get(
            &token,
            "/api/v2/roles?name_filter=member&include_totals=true",
        )
        .await,
    )
    .await;
    assert_eq!(body["start"], 0);
    assert_eq!(body["limit"], 50);
    assert_eq!(body["total"], 2);
    assert_eq!(body["roles"].as_array().map(Vec::len), Some(2));

    let body = json_of(
        h.get(
            &token,
            "/api/v2/roles?include_totals=true&per_page=1&page=1",
        )
        .await,
    )
    .await;
    assert_eq!(body["start"], 1);
    assert_eq!(body["limit"], 1);
    assert_eq!(body["total"], 3);
    assert_eq!(body["roles"][0]["name"], "admin");

    let resp = h
        .get(&token, "/api/v2/roles?name_filter=nothing+like+this")
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_of(resp).await, json!([]));
    let body = json_of(
        h.get(
            &token,
            "/api/v2/roles?name_filter=zzz&include_totals=true&per_page=100",
        )
        .await,
    )
    .await;
    assert_eq!(
        body,
        json!({"roles": [], "start": 0, "limit": 100, "total": 0})
    );

    let resp = h.get(&token, "/api/v2/roles?per_page=101").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(resp).await["errorCode"], "invalid_query_string");
    h.server.shutdown().await;
}

#[tokio::test]
async fn user_ids_are_percent_decoded_per_segment() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;

    for path in ["/api/v2/users/auth0%7Cabc", "/api/v2/users/auth0|abc"] {
        let resp = h.get(&token, path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let user = json_of(resp).await;
        assert_eq!(user["user_id"], "auth0|abc");
        assert_eq!(user["email"], "abc@example.com");
        assert_eq!(user["email_verified"], true);
        assert_eq!(user["app_metadata"], json!({"plan": "pro"}));
        assert_eq!(
            user["identities"],
            json!([{
                "connection": "Username-Password-Authentication",
                "user_id": "abc",
                "provider": "auth0",
                "isSocial": false
            }])
        );
        assert!(user["created_at"]
            .as_str()
            .is_some_and(|t| t.len() == 24 && t.ends_with('Z')));
        assert!(user.get("logins_count").is_none());
    }

    let resp = h.get(&token, "/api/v2/users/samlp%7Ccorp%2Falice").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let user = json_of(resp).await;
    assert_eq!(user["user_id"], "samlp|corp/alice");
    assert_eq!(user["identities"][0]["connection"], "corp-saml");
    assert_eq!(user["identities"][0]["user_id"], "corp/alice");
    assert!(user.get("app_metadata").is_none());

    // `%2F` stays inside the id segment: the /roles sub-route is still matched.
    let resp = h
        .post(
            &token,
            "/api/v2/users/samlp%7Ccorp%2Falice/roles",
            json!({"roles": [MEMBER]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.sim.user_role_names("samlp|corp/alice"), vec!["member"]);
    let roles = json_of(
        h.get(&token, "/api/v2/users/samlp%7Ccorp%2Falice/roles")
            .await,
    )
    .await;
    assert_eq!(roles[0]["id"], MEMBER);

    // An id with an encoded slash is one user id, not a longer path.
    let resp = h.get(&token, "/api/v2/users/auth0%2Fabc/roles").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(resp).await["errorCode"], "inexistent_user");
    h.sim.add_user(SeedUser::new("auth0/abc"));
    let resp = h.get(&token, "/api/v2/users/auth0%2Fabc/roles").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_of(resp).await, json!([]));
    h.server.shutdown().await;
}

#[tokio::test]
async fn unknown_user_is_404_inexistent_user() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    let expected = json!({
        "statusCode": 404,
        "error": "Not Found",
        "message": "The user does not exist.",
        "errorCode": "inexistent_user"
    });
    let resp = h.get(&token, "/api/v2/users/auth0%7Cnobody").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(resp).await, expected);
    let resp = h
        .post(
            &token,
            "/api/v2/users/auth0%7Cnobody/roles",
            json!({"roles": [MEMBER]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(resp).await, expected);
    assert!(h.sim.users_with_roles().is_empty());
    h.server.shutdown().await;
}

#[tokio::test]
async fn per_user_assignment_is_204_and_idempotent() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    let path = "/api/v2/users/auth0%7Cabc/roles";

    for _ in 0..2 {
        let resp = h.post(&token, path, json!({"roles": [MEMBER]})).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(resp.bytes().await.expect("body").len(), 0);
    }
    assert_eq!(h.sim.user_role_names("auth0|abc"), vec!["member"]);
    let resp = h
        .post(&token, path, json!({"roles": [ADMIN, MEMBER]}))
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let body = json_of(h.get(&token, &format!("{path}?include_totals=true")).await).await;
    assert_eq!(body["total"], 2);
    let names: Vec<&str> = body["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, vec!["admin", "member"]);

    let stats = h.sim.stats();
    assert_eq!(stats.role_assignments, 2);
    assert_eq!(stats.duplicate_assignments, 2);
    assert_eq!(stats.calls_of("assign_user_roles"), 3);

    // Body validation.
    for bad in [json!({"roles": []}), json!({}), json!({"roles": [7]})] {
        let resp = h.post(&token, path, bad).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = json_of(resp).await;
        assert_eq!(body["errorCode"], "invalid_body");
        assert!(body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Payload validation error: ")));
    }

    // Unknown role id: 404 by default, nothing assigned.
    let resp = h
        .post(
            &token,
            "/api/v2/users/auth0%7Cdef/roles",
            json!({"roles": [MEMBER, "rol_doesnotexist0000"]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(resp).await,
        json!({"statusCode": 404, "error": "Not Found", "message": "The role does not exist."})
    );
    assert!(h.sim.user_role_names("auth0|def").is_empty());
    h.server.shutdown().await;
}

#[tokio::test]
async fn unknown_role_status_and_accept_any_user_are_configurable() {
    let h = Harness::start(SimConfig {
        nonexistent_role_status: 400,
        accept_any_user: true,
        ..SimConfig::default()
    })
    .await;
    let token = h.token().await;
    let resp = h
        .post(
            &token,
            "/api/v2/users/auth0%7Cabc/roles",
            json!({"roles": ["rol_doesnotexist0000"]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(resp).await["error"], "Bad Request");

    let resp = h
        .post(
            &token,
            "/api/v2/users/auth0%7Cnew/roles",
            json!({"roles": [MEMBER]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.sim.user_role_names("auth0|new"), vec!["member"]);
    let resp = h.get(&token, "/api/v2/users/google-oauth2%7C1234").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let user = json_of(resp).await;
    assert_eq!(user["identities"][0]["provider"], "google-oauth2");
    assert_eq!(user["identities"][0]["isSocial"], true);
    h.server.shutdown().await;
}

#[tokio::test]
async fn bulk_assignment_is_all_or_nothing() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;

    let resp = h
        .post(
            &token,
            &format!("/api/v2/roles/{MEMBER}/users"),
            json!({"users": ["auth0|abc", "auth0|def"]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_of(resp).await, json!({}));
    assert_eq!(h.sim.user_role_names("auth0|abc"), vec!["member"]);
    assert_eq!(h.sim.user_role_names("auth0|def"), vec!["member"]);

    let resp = h
        .post(
            &token,
            &format!("/api/v2/roles/{ADMIN}/users"),
            json!({"users": ["auth0|abc", "auth0|ghost", "samlp|corp/alice"]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(resp).await,
        json!({
            "statusCode": 404,
            "error": "Not Found",
            "message": "One or more of the users do not exist.",
            "errorCode": "inexistent_user"
        })
    );
    assert_eq!(h.sim.user_role_names("auth0|abc"), vec!["member"]);
    assert!(h.sim.user_role_names("samlp|corp/alice").is_empty());

    let resp = h
        .post(
            &token,
            "/api/v2/roles/rol_missing000000000/users",
            json!({"users": ["auth0|abc"]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(resp).await,
        json!({"statusCode": 404, "error": "Not Found", "message": "The role does not exist."})
    );

    let too_many: Vec<String> = (0..1001).map(|i| format!("auth0|u{i}")).collect();
    let resp = h
        .post(
            &token,
            &format!("/api/v2/roles/{MEMBER}/users"),
            json!({"users": too_many}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(resp).await["errorCode"], "invalid_body");

    let stats = h.sim.stats();
    assert_eq!(stats.role_assignments, 2);
    assert_eq!(stats.calls_of("assign_role_users"), 4);
    h.server.shutdown().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers() {
    let h = Harness::start(limited(1.0, 2)).await;
    let token = h.token().await; // the token endpoint does not use the bucket
    let before = now_secs();

    let first = h.get(&token, "/api/v2/roles").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header_u64(&first, "x-ratelimit-limit"), Some(2));
    assert_eq!(header_u64(&first, "x-ratelimit-remaining"), Some(1));
    assert!(header_u64(&first, "x-ratelimit-reset").is_some_and(|r| r >= before));
    let second = h.get(&token, "/api/v2/roles").await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(header_u64(&second, "x-ratelimit-remaining"), Some(0));

    let third = h.get(&token, "/api/v2/roles").await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_u64(&third, "x-ratelimit-limit"), Some(2));
    assert_eq!(header_u64(&third, "x-ratelimit-remaining"), Some(0));
    let reset = header_u64(&third, "x-ratelimit-reset").expect("reset header");
    assert!(reset > before, "reset {reset} should be after now {before}");
    assert!(reset <= now_secs() + 2);
    assert!(third.headers().get("retry-after").is_none());
    assert_eq!(
        json_of(third).await,
        json!({
            "statusCode": 429,
            "error": "Too Many Requests",
            "message": "Global limit has been reached",
            "errorCode": "too_many_requests"
        })
    );
    assert_eq!(h.sim.stats().rate_limited, 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        h.get(&token, "/api/v2/roles").await.status(),
        StatusCode::OK
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn reset_equals_now_mode() {
    let h = Harness::start(SimConfig {
        reset_equals_now: true,
        ..limited(0.5, 1)
    })
    .await;
    let token = h.token().await;
    assert_eq!(
        h.get(&token, "/api/v2/roles").await.status(),
        StatusCode::OK
    );
    let before = now_secs();
    let resp = h.get(&token, "/api/v2/roles").await;
    let after = now_secs();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let reset = header_u64(&resp, "x-ratelimit-reset").expect("reset");
    assert!(
        (before..=after).contains(&reset),
        "{before} <= {reset} <= {after}"
    );
    assert!(resp.headers().get("retry-after").is_none());
    h.server.shutdown().await;
}

#[tokio::test]
async fn retry_after_mode() {
    let h = Harness::start(SimConfig {
        retry_after: true,
        ..limited(0.5, 1)
    })
    .await;
    let token = h.token().await;
    let ok = h.get(&token, "/api/v2/roles").await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(ok.headers().get("retry-after").is_none());
    let resp = h.get(&token, "/api/v2/roles").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = header_u64(&resp, "retry-after").expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    h.server.shutdown().await;
}

#[tokio::test]
async fn down_answers_503_until_up_again() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    h.sim.set_down(true);
    let expected = json!({"statusCode": 503, "error": "Service Unavailable", "message": "Service Unavailable"});
    let resp = h.get(&token, "/api/v2/users/auth0%7Cabc").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(resp).await, expected);
    let resp = h
        .http
        .post(h.url("/oauth/token"))
        .json(&h.token_body())
        .send()
        .await
        .expect("token while down");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Down comes before auth: even a bad token gets 503.
    assert_eq!(
        h.get("bogus", "/api/v2/roles").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // The admin API keeps working.
    assert_eq!(h.sim_state().await["stats"]["down_served"], 3);

    h.sim.set_down(false);
    assert_eq!(
        h.get(&token, "/api/v2/users/auth0%7Cabc").await.status(),
        StatusCode::OK
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn error_rate_one_faults_every_call() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    h.sim.set_error_rate(1.0);
    let mut statuses = BTreeSet::new();
    for _ in 0..24 {
        let resp = h
            .post(
                &token,
                "/api/v2/users/auth0%7Cabc/roles",
                json!({"roles": [MEMBER]}),
            )
            .await;
        let status = resp.status();
        let body = json_of(resp).await;
        assert_eq!(body["statusCode"], status.as_u16());
        match status {
            StatusCode::INTERNAL_SERVER_ERROR => assert_eq!(body["error"], "Internal Server Error"),
            StatusCode::SERVICE_UNAVAILABLE => assert_eq!(body["error"], "Service Unavailable"),
            other => panic!("unexpected status {other}"),
        }
        statuses.insert(status.as_u16());
    }
    assert_eq!(statuses, BTreeSet::from([500, 503]));
    assert!(h.sim.user_role_names("auth0|abc").is_empty());
    let resp = h
        .http
        .post(h.url("/oauth/token"))
        .json(&h.token_body())
        .send()
        .await
        .expect("token");
    assert!(resp.status().is_server_error());
    assert_eq!(h.sim.stats().faults_served, 25);

    h.sim.set_error_rate(0.0);
    assert_eq!(
        h.get(&token, "/api/v2/roles").await.status(),
        StatusCode::OK
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn expired_token_is_401() {
    let h = Harness::start(SimConfig {
        token_expires_in: 1,
        ..SimConfig::default()
    })
    .await;
    let token = h.token().await;
    assert_eq!(
        h.get(&token, "/api/v2/roles").await.status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = h.get(&token, "/api/v2/roles").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(resp).await,
        json!({
            "statusCode": 401,
            "error": "Unauthorized",
            "message": "Expired token received for JSON Web Token validation"
        })
    );
    let fresh = h.token().await;
    assert_eq!(
        h.get(&fresh, "/api/v2/roles").await.status(),
        StatusCode::OK
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn revoked_tokens_are_401() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    assert_eq!(
        h.get(&token, "/api/v2/roles").await.status(),
        StatusCode::OK
    );
    h.sim.revoke_tokens();
    let resp = h.get(&token, "/api/v2/roles").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(resp).await["message"], "Invalid token");
    let fresh = h.token().await;
    assert_eq!(
        h.get(&fresh, "/api/v2/roles").await.status(),
        StatusCode::OK
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn admin_api_inspects_and_steers() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    assert_eq!(
        h.post(
            &token,
            "/api/v2/users/auth0%7Cabc/roles",
            json!({"roles": [MEMBER]})
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );

    let state = h.sim_state().await;
    assert_eq!(state["users"], json!({"auth0|abc": ["member"]}));
    let stats: SimStats = serde_json::from_value(state["stats"].clone()).expect("stats");
    assert_eq!(stats.calls_of("token"), 1);
    assert_eq!(stats.calls_of("assign_user_roles"), 1);
    assert_eq!(stats.role_assignments, 1);
    assert_eq!(stats.total_requests, 2);
    for key in [
        "token",
        "get_roles",
        "get_user",
        "get_user_roles",
        "assign_user_roles",
        "assign_role_users",
    ] {
        assert!(stats.calls.contains_key(key), "{key}");
    }

    // Users.
    let resp = h
        .http
        .post(h.url("/sim/users"))
        .json(&json!({"user_id": "auth0|added", "email": "added@example.com"}))
        .send()
        .await
        .expect("add user");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = h.get(&token, "/api/v2/users/auth0%7Cadded").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_of(resp).await["email"], "added@example.com");
    let resp = h
        .http
        .delete(h.url("/sim/users/auth0%7Cadded"))
        .send()
        .await
        .expect("delete user");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        h.get(&token, "/api/v2/users/auth0%7Cadded").await.status(),
        StatusCode::NOT_FOUND
    );

    // Control: down, error rate, rate limit, revoke, latency.
    assert_eq!(
        h.control(json!({"down": true})).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.get(&token, "/api/v2/roles").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        h.control(json!({"down": false, "error_rate": 1.0})).await,
        StatusCode::NO_CONTENT
    );
    assert!(h
        .get(&token, "/api/v2/roles")
        .await
        .status()
        .is_server_error());
    assert_eq!(
        h.control(json!({"error_rate": 0.0, "rate_per_second": 0.5, "burst": 1}))
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.get(&token, "/api/v2/roles").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        h.get(&token, "/api/v2/roles").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        h.control(json!({"rate_per_second": 0.0, "revoke_tokens": true, "latency_ms": 150}))
            .await,
        StatusCode::NO_CONTENT
    );
    let started = tokio::time::Instant::now();
    let resp = h.get(&token, "/api/v2/roles").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.control(json!({"latency_ms": 0})).await,
        StatusCode::NO_CONTENT
    );
    let fresh = h.token().await;
    assert_eq!(
        h.get(&fresh, "/api/v2/roles").await.status(),
        StatusCode::OK
    );

    assert_eq!(
        h.control(json!({"no_such_knob": 1})).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(h.sim.stats().rate_limited, 1);
    h.server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let h = Harness::start(SimConfig::default()).await;
    let url = h.url("/sim/state");
    assert_eq!(
        h.http.get(&url).send().await.expect("state").status(),
        StatusCode::OK
    );
    h.server.shutdown().await;
    assert!(Client::new().get(&url).send().await.is_err());
}

#[tokio::test]
async fn seed_and_config_read_from_json() {
    let config: SimConfig =
        serde_json::from_value(json!({"domain": "t.example", "burst": 3})).expect("config");
    assert_eq!(config.domain, "t.example");
    assert_eq!(config.burst, 3);
    assert_eq!(config.client_id, "sim-client");
    assert_eq!(config.nonexistent_role_status, 404);
    let seed: Seed = serde_json::from_value(json!({
        "roles": [{"name": "member"}],
        "users": [{"user_id": "auth0|x", "email_verified": true}]
    }))
    .expect("seed");
    let sim = Simulator::new(config, seed);
    let id = sim.role_id("member").expect("role id");
    assert!(id.starts_with("rol_") && id.len() == 20);
    assert_eq!(sim.add_role(SeedRole::named("member")), id);
}

/// A tenant of `n` users `auth0|u0000`...; every third holds `member` (users added with their
/// roles through `/sim/users`).
async fn add_members(h: &Harness, n: usize) {
    for i in 0..n {
        let roles = if i % 3 == 0 { vec!["member"] } else { vec![] };
        let resp = h
            .http
            .post(h.url("/sim/users"))
            .json(&json!({"user_id": format!("auth0|u{i:04}"), "email": format!("u{i}@example.com"), "roles": roles}))
            .send()
            .await
            .expect("add user");
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
}

fn gunzip_lines(bytes: &[u8]) -> Vec<Value> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("gzip");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[tokio::test]
async fn an_export_location_expires_and_each_job_read_signs_a_fresh_one() {
    let h = Harness::start(SimConfig {
        export_location_ttl_millis: 200,
        ..SimConfig::default()
    })
    .await;
    let token = h.token().await;
    let created = h
        .create_export(
            &token,
            json!({"format": "json", "fields": [{"name": "user_id"}]}),
        )
        .await;
    let id = json_of(created).await["id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let read = || async {
        let job = h.read_job(&token, &id).await;
        assert_eq!(job["status"], "completed", "{job}");
        job["location"].as_str().expect("location").to_owned()
    };
    let first = read().await;
    assert_eq!(
        h.http.get(&first).send().await.expect("get").status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let expired = h.http.get(&first).send().await.expect("get");
    assert_eq!(expired.status(), StatusCode::FORBIDDEN);
    let fresh = read().await;
    assert_ne!(fresh, first);
    assert_eq!(
        h.http.get(&fresh).send().await.expect("get").status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_export_job_goes_pending_processing_completed_and_serves_gzipped_ndjson_without_auth() {
    let h = Harness::start(SimConfig {
        export_job_millis: 400,
        ..SimConfig::default()
    })
    .await;
    let token = h.token().await;
    let created = h.create_export(&token, json!({"format": "json", "fields": [{"name": "user_id"}, {"name": "email"}, {"name": "identities"}]})).await;
    // Auth0 answers 200 (not 201), as the recorded exchange and the OAS show.
    assert_eq!(created.status(), StatusCode::OK);
    let job = json_of(created).await;
    assert_eq!(job["status"], "pending");
    assert_eq!(job["type"], "users_export");
    let id = job["id"].as_str().expect("job id").to_owned();
    assert!(id.starts_with("job_"));
    let first = h.read_job(&token, &id).await;
    assert_eq!(first["status"], "pending");
    assert!(first.get("location").is_none());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let middle = h.read_job(&token, &id).await;
    assert_eq!(middle["status"], "processing");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = h.read_job(&token, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let location = done["location"].as_str().expect("location").to_owned();
    assert!(location.starts_with(&h.server.base_url), "{location}");
    // A pre-signed URL: no Authorization header.
    let file = h.http.get(&location).send().await.expect("download");
    assert_eq!(file.status(), StatusCode::OK);
    let lines = gunzip_lines(&file.bytes().await.expect("bytes"));
    assert_eq!(lines.len(), 3);
    let alice = lines
        .iter()
        .find(|l| l["user_id"] == "samlp|corp/alice")
        .expect("alice exported");
    assert_eq!(alice["identities"][0]["connection"], "corp-saml");
    assert!(
        alice.get("created_at").is_none(),
        "only the fields asked for"
    );
    let guessed = h
        .http
        .get(h.url("/exports/not-a-token/users.json.gz"))
        .send()
        .await
        .expect("guess");
    assert_eq!(guessed.status(), StatusCode::FORBIDDEN);
    let stats = h.sim.stats();
    assert_eq!(stats.calls_of("create_export_job"), 1);
    assert_eq!(stats.calls_of("get_job"), 3);
    assert_eq!(stats.export_downloads, 1);
    let unknown = h.get(&token, "/api/v2/jobs/job_nope").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_export_job_fails_with_its_reason_when_switched_to() {
    let h = Harness::start(SimConfig::default()).await;
    assert_eq!(
        h.control(json!({"export_job_failure": "Export failed: storage unavailable"}))
            .await,
        StatusCode::NO_CONTENT
    );
    let token = h.token().await;
    let job = json_of(h.create_export(&token, json!({"format": "json"})).await).await;
    let id = job["id"].as_str().expect("id");
    let got = h.read_job(&token, id).await;
    assert_eq!(got["status"], "failed");
    assert_eq!(got["status_details"], "Export failed: storage unavailable");
    assert!(got.get("location").is_none());
    let csv = h.create_export(&token, json!({"format": "xml"})).await;
    assert_eq!(csv.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn role_members_page_by_checkpoint_past_1000_while_offset_paging_is_refused_there() {
    let h = Harness::start(SimConfig::default()).await;
    add_members(&h, 3300).await; // 1,100 members
    let token = h.token().await;
    let mut seen = BTreeSet::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &from {
            None => format!("/api/v2/roles/{MEMBER}/users?take=100"),
            Some(next) => format!("/api/v2/roles/{MEMBER}/users?take=100&from={next}"),
        };
        let page = json_of(h.get(&token, &path).await).await;
        pages += 1;
        for user in page["users"].as_array().expect("users") {
            assert!(seen.insert(user["user_id"].as_str().expect("user_id").to_owned()));
        }
        match page.get("next").and_then(Value::as_str) {
            Some(next) => from = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1100);
    assert_eq!(pages, 11);
    assert!(seen.iter().all(|id| {
        let n: usize = id.trim_start_matches("auth0|u").parse().expect("n");
        n % 3 == 0
    }));
    let too_big = h
        .get(&token, &format!("/api/v2/roles/{MEMBER}/users?take=101"))
        .await;
    assert_eq!(too_big.status(), StatusCode::BAD_REQUEST);
    let ok = json_of(
        h.get(
            &token,
            &format!("/api/v2/roles/{MEMBER}/users?page=9&per_page=100&include_totals=true"),
        )
        .await,
    )
    .await;
    assert_eq!(ok["total"], 1100);
    assert_eq!(ok["users"].as_array().map(Vec::len), Some(100));
    let refused = h
        .get(
            &token,
            &format!("/api/v2/roles/{MEMBER}/users?page=10&per_page=100"),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body = json_of(refused).await;
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("use the checkpoint pagination method")));
    let unknown = h.get(&token, "/api/v2/roles/rol_nope/users?take=10").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // Users listed past 1,000 are refused the same way.
    let users = json_of(
        h.get(
            &token,
            "/api/v2/users?page=9&per_page=100&include_totals=true",
        )
        .await,
    )
    .await;
    assert_eq!(users["total"], 3303);
    let capped = h.get(&token, "/api/v2/users?page=10&per_page=100").await;
    assert_eq!(capped.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(capped).await["errorCode"], "invalid_paging");
    assert_eq!(h.sim.stats().calls_of("get_role_users"), 15);
    assert_eq!(h.sim.stats().calls_of("get_users"), 2);
}

#[tokio::test]
async fn reconcile_calls_need_their_documented_scopes() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    h.control(json!({"denied_scopes": ["read:users"]})).await;
    let export = h.create_export(&token, json!({"format": "json"})).await;
    assert_eq!(export.status(), StatusCode::FORBIDDEN);
    // Reading a job is also allowed by create:users; listing members by read:roles.
    let job = h.get(&token, "/api/v2/jobs/job_x").await;
    assert_eq!(job.status(), StatusCode::NOT_FOUND);
    let members = h
        .get(&token, &format!("/api/v2/roles/{MEMBER}/users?take=10"))
        .await;
    assert_eq!(members.status(), StatusCode::OK);
    h.control(json!({"denied_scopes": ["read:users", "create:users"]}))
        .await;
    let job = h.get(&token, "/api/v2/jobs/job_x").await;
    assert_eq!(job.status(), StatusCode::FORBIDDEN);
    let body = json_of(job).await;
    assert_eq!(
        body["message"],
        "Insufficient scope, expected any of: create:users,read:users"
    );
    let state = h.sim_state().await;
    assert!(state["stats"]["calls"]["get_job"].as_u64().is_some());
}

#[tokio::test]
async fn clients_answer_with_the_fields_asked_for_and_404_for_an_unknown_application() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    let resp = h
        .get(
            &token,
            "/api/v2/clients/app_store?fields=client_metadata&include_fields=true",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body, json!({"client_metadata": {"default_role": "member"}}));
    let whole: Value = h
        .get(&token, "/api/v2/clients/app_store")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(whole["name"], "Store");
    let missing = h.get(&token, "/api/v2/clients/app_gone").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["errorCode"], "inexistent_client");
    let denied = Harness::start(SimConfig {
        denied_scopes: vec![
            "read:clients".into(),
            "read:client_keys".into(),
            "read:client_credentials".into(),
            "read:client_summary".into(),
        ],
        ..SimConfig::default()
    })
    .await;
    let token = denied.token().await;
    let refused = denied.get(&token, "/api/v2/clients/app_store").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}

/// The payload of a JWT-shaped token (unpadded base64url, decoded by hand).
fn jwt_payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWT has a payload");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut bytes = Vec::new();
    for c in part.bytes() {
        let v = alphabet.iter().position(|a| *a == c).expect("base64url") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            bytes.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    serde_json::from_slice(&bytes).expect("JSON payload")
}

#[tokio::test]
async fn the_token_carries_the_client_grants_scopes_less_the_denied_ones() {
    let h = Harness::start(SimConfig {
        denied_scopes: vec!["read:users".into()],
        ..SimConfig::default()
    })
    .await;
    let resp = h
        .http
        .post(h.url("/oauth/token"))
        .json(&h.token_body())
        .send()
        .await
        .expect("token");
    let body = json_of(resp).await;
    let claims = jwt_payload(body["access_token"].as_str().expect("token"));
    assert_eq!(claims["scope"], body["scope"]);
    assert_eq!(claims["sub"], "sim-client@clients");
    assert_eq!(claims["aud"], "https://sim.auth0.local/api/v2/");
    let scopes: BTreeSet<&str> = claims["scope"]
        .as_str()
        .expect("scope")
        .split(' ')
        .collect();
    assert!(!scopes.contains("read:users"));
    for s in [
        "read:roles",
        "create:role_members",
        "read:log_streams",
        "create:log_streams",
        "update:log_streams",
    ] {
        assert!(scopes.contains(s), "{s} in {scopes:?}");
    }
}

#[tokio::test]
async fn log_streams_are_created_listed_patched_and_deleted_with_their_scopes() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    let body = json!({
        "name": "roles",
        "type": "http",
        "sink": {"httpEndpoint": "https://example.com/auth0", "httpContentFormat": "JSONLINES",
                 "httpContentType": "application/json", "httpAuthorization": "Bearer t0k"},
        "filters": [{"type": "category", "name": "auth.signup.success"}],
    });
    let resp = h.post(&token, "/api/v2/log-streams", body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let created = json_of(resp).await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("lst_"), "{id}");
    assert_eq!(created["status"], "active");

    // Validation: an unknown category, an unknown type, an EventBridge stream without region.
    for bad in [
        json!({"name": "x", "type": "http", "sink": {"httpEndpoint": "https://e"}, "filters": [{"type": "category", "name": "auth.everything"}]}),
        json!({"name": "x", "type": "carrier-pigeon", "sink": {}}),
        json!({"name": "x", "type": "eventbridge", "sink": {"awsAccountId": "123456789012"}}),
    ] {
        let resp = h.post(&token, "/api/v2/log-streams", bad).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
    let eb = json_of(
        h.post(
            &token,
            "/api/v2/log-streams",
            json!({"name": "eb", "type": "eventbridge", "sink": {"awsAccountId": "123456789012", "awsRegion": "eu-west-1"}}),
        )
        .await,
    )
    .await;
    assert!(eb["sink"]["awsPartnerEventSource"]
        .as_str()
        .is_some_and(|s| s.starts_with("aws.partner/auth0.com/")));

    let resp = h
        .http
        .patch(h.url(&format!("/api/v2/log-streams/{id}")))
        .bearer_auth(&token)
        .json(&json!({"status": "paused", "filters": [{"type": "category", "name": "user.success"}], "sink": {"httpEndpoint": "https://example.com/new"}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::OK);
    let listed = json_of(h.get(&token, "/api/v2/log-streams").await).await;
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), 2);
    let ours = listed
        .iter()
        .find(|s| s["id"] == id.as_str())
        .expect("ours");
    assert_eq!(ours["status"], "paused");
    assert_eq!(
        ours["filters"],
        json!([{"type": "category", "name": "user.success"}])
    );
    assert_eq!(ours["sink"]["httpEndpoint"], "https://example.com/new");
    assert_eq!(ours["sink"]["httpAuthorization"], "Bearer t0k");

    assert!(h.sim.set_log_stream_status(&id, "suspended"));
    let one = json_of(h.get(&token, &format!("/api/v2/log-streams/{id}")).await).await;
    assert_eq!(one["status"], "suspended");

    let resp = h
        .http
        .delete(h.url(&format!("/api/v2/log-streams/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.sim.log_streams().len(), 1);
    let resp = h.get(&token, &format!("/api/v2/log-streams/{id}")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    h.control(json!({"denied_scopes": ["create:log_streams"]}))
        .await;
    let resp = h
        .post(
            &token,
            "/api/v2/log-streams",
            json!({"name": "y", "type": "http", "sink": {"httpEndpoint": "https://e"}}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(json_of(resp).await["message"]
        .as_str()
        .is_some_and(|m| m.contains("create:log_streams")));
    let stats = h.sim.stats();
    assert_eq!(stats.calls_of("create_log_stream"), 6);
    assert_eq!(stats.calls_of("update_log_stream"), 1);
}

#[tokio::test]
async fn tenant_logs_page_by_checkpoint_with_link_cap_take_sort_by_date_and_purge() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    // Appended through the admin API: ids given are kept, missing ones encode the ingestion
    // time, which lags the date by up to 5 s (and never goes back).
    let resp = h
        .http
        .post(h.url("/sim/logs"))
        .json(&json!([
            {"log_id": "90020261201000000000000000000000000000000000000000000010", "type": "ss", "date": "2026-12-01T10:00:00.000Z"},
            {"type": "s", "date": "2026-12-01T10:00:02.000Z"},
            {"type": "f", "date": "2026-12-01T10:00:01.000Z"},
        ]))
        .send()
        .await
        .expect("append");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let ids: Vec<String> = json_of(resp).await["log_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(ids.iter().all(|id| id.len() == 56), "{ids:?}");
    assert!(ids[0] < ids[1] && ids[0] < ids[2], "{ids:?}");
    // Each ingested its date plus a lag of at most 5 s (in that order, whatever the order
    // given).
    assert!(
        ("20261201100002"..="20261201100007").contains(&&ids[1][3..17]),
        "{ids:?}"
    );
    assert!(
        ("20261201100001"..="20261201100006").contains(&&ids[2][3..17]),
        "{ids:?}"
    );
    let newest_type = if ids[2] > ids[1] { "f" } else { "s" };

    // In id order from here on.
    let mut ids = ids;
    ids.sort();
    let first = h.get(&token, "/api/v2/logs?from=0&take=2").await;
    assert_eq!(first.status(), StatusCode::OK);
    let link = first
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        link.ends_with(&format!(
            "/api/v2/logs?from={}&take=2>; rel=\"next\"",
            ids[1]
        )),
        "{link}"
    );
    let page = json_of(first).await;
    assert_eq!(page.as_array().map(Vec::len), Some(2));
    assert_eq!(page[0]["_id"], json!(ids[0]));
    let rest = json_of(
        h.get(&token, &format!("/api/v2/logs?from={}&take=2", ids[1]))
            .await,
    )
    .await;
    assert_eq!(rest.as_array().map(Vec::len), Some(1));
    // Caught up: an empty page whose next link repeats the request.
    let empty = h
        .get(&token, &format!("/api/v2/logs?from={}&take=2", ids[2]))
        .await;
    let link = empty
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(link.contains(&format!("from={}&take=2", ids[2])), "{link}");
    assert_eq!(json_of(empty).await, json!([]));
    assert_eq!(
        h.get(&token, "/api/v2/logs?from=0&take=101").await.status(),
        StatusCode::BAD_REQUEST
    );
    // The newest by date, the oldest by date; without `sort`, the newest by id.
    let newest = json_of(h.get(&token, "/api/v2/logs?sort=date:-1&per_page=1").await).await;
    assert_eq!(newest[0]["type"], json!("s"));
    let oldest = json_of(h.get(&token, "/api/v2/logs?sort=date:1&per_page=1").await).await;
    assert_eq!(oldest[0]["type"], json!("ss"));
    let by_id = json_of(h.get(&token, "/api/v2/logs?per_page=1&page=0").await).await;
    assert_eq!(by_id[0]["type"], json!(newest_type));
    // Retention: the first two are gone.
    assert_eq!(h.sim.purge_logs_before(&ids[2]), 2);
    let kept = json_of(h.get(&token, "/api/v2/logs?from=0&take=100").await).await;
    assert_eq!(kept.as_array().map(Vec::len), Some(1));
    // Faults on this endpoint alone.
    h.sim.rate_limit_log_reads(1);
    assert_eq!(
        h.get(&token, "/api/v2/logs?from=0&take=1").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        h.get(&token, "/api/v2/logs?from=0&take=1").await.status(),
        StatusCode::OK
    );
    assert_eq!(h.sim.stats().calls_of("get_logs"), 10);
}

#[tokio::test]
async fn tenant_logs_without_ids_are_ingested_in_id_order_with_dates_lagging_out_of_it() {
    let h = Harness::start(SimConfig::default()).await;
    // Without a date: ingested now, dated up to 5 s before.
    let before = std::time::SystemTime::now();
    let ids = h
        .sim
        .append_logs((0..200).map(|i| json!({"type": "s", "n": i})).collect());
    let logs = h.sim.tenant_logs();
    assert_eq!(logs.len(), 200);
    let mut out_of_order = 0;
    let mut last_date = String::new();
    for (log, id) in logs.iter().zip(&ids) {
        assert_eq!(log["log_id"].as_str(), Some(id.as_str()));
        let date = log["date"].as_str().unwrap_or_default().to_owned();
        let at = humantime::parse_rfc3339(&date).expect("an RFC 3339 date");
        assert!(at + std::time::Duration::from_secs(1) >= before - mgmt_sim::MAX_DATE_LAG);
        // The date never follows the ingestion time written in the id.
        let ingested = &id[3..17];
        let dated: String = date.chars().filter(char::is_ascii_digit).take(14).collect();
        assert!(dated.as_str() <= ingested, "{date} {id}");
        if date < last_date {
            out_of_order += 1;
        }
        last_date = date;
    }
    assert!(
        out_of_order > 20,
        "{out_of_order} of 200 dated before the previous id"
    );
    // A log given with an old date after newer ones (an import): a newer id, its old date.
    let imported = h.sim.append_logs(vec![
        json!({"type": "ss", "date": "2020-01-01T00:00:00.000Z"}),
    ]);
    assert!(imported[0] > ids[199]);
    let kept = h.sim.tenant_logs();
    assert_eq!(kept[200]["date"], json!("2020-01-01T00:00:00.000Z"));
}

#[tokio::test]
async fn an_event_stream_is_created_201_and_its_test_button_answers_202_with_a_test_event() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    let created = h
        .post(
            &token,
            "/api/v2/event-streams",
            json!({"name": "roles", "subscriptions": [{"event_type": "user.created"}], "destination": {"type": "webhook", "configuration": {"webhook_endpoint": "https://roles.example.com/auth0/logs", "webhook_authorization": {"method": "bearer", "token": "secret"}}}}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let stream = json_of(created).await;
    assert_eq!(
        stream["destination"]["configuration"]["webhook_authorization"],
        json!({"method": "bearer"}),
        "the token is write-only"
    );
    let id = stream["id"].as_str().unwrap_or_default().to_owned();
    let tested = h
        .post(
            &token,
            &format!("/api/v2/event-streams/{id}/test"),
            json!({"event_type": "user.created"}),
        )
        .await;
    assert_eq!(tested.status(), StatusCode::ACCEPTED);
    let delivery = json_of(tested).await;
    assert_eq!(delivery["event"]["a0purpose"], json!("test"));
    assert_eq!(delivery["event"]["a0stream"], json!(id));
    assert_eq!(
        delivery["event"]["data"]["object"]["user_id"],
        json!(mgmt_sim::event_streams::TEST_EVENT_USER)
    );
}

/// A role held through a group: `GET /users/{id}/roles` lists direct roles only,
/// `GET /users/{id}/effective-roles` both, each with its sources, paged by `from`/`take`.
#[tokio::test]
async fn effective_roles_add_roles_held_through_a_group() {
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    h.sim.grant_by_hand("auth0|abc", &["member"]);
    h.sim.grant_through_group("auth0|abc", &["admin", "member"]);

    let direct = json_of(h.get(&token, "/api/v2/users/auth0%7Cabc/roles").await).await;
    let names: Vec<&str> = direct
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["member"]);

    let resp = h
        .get(&token, "/api/v2/users/auth0%7Cabc/effective-roles")
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json_of(resp).await;
    assert!(body.get("next").is_none(), "{body}");
    let mut roles: Vec<(String, Value)> = body["roles"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or("").to_owned(),
                        r["sources"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        roles,
        vec![
            ("admin".to_owned(), json!(["groups"])),
            ("member".to_owned(), json!(["direct", "groups"])),
        ]
    );

    let first = json_of(
        h.get(&token, "/api/v2/users/auth0%7Cabc/effective-roles?take=1")
            .await,
    )
    .await;
    assert_eq!(first["roles"].as_array().map(Vec::len), Some(1));
    let next = first["next"].as_str().unwrap_or_default().to_owned();
    assert!(!next.is_empty(), "{first}");
    let second = json_of(
        h.get(
            &token,
            &format!("/api/v2/users/auth0%7Cabc/effective-roles?take=1&from={next}"),
        )
        .await,
    )
    .await;
    assert_eq!(second["roles"][0]["id"], next.as_str());
    assert!(second.get("next").is_none(), "{second}");

    let unknown = h
        .get(&token, "/api/v2/users/auth0%7Cnobody/effective-roles")
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

/// Reads an SSE body until `until` appears in it or 5 s pass.
async fn read_stream_until(resp: &mut Response, until: &str) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !text.contains(until) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            _ => break,
        }
    }
    text
}

#[tokio::test]
async fn the_events_api_streams_offsets_markers_filters_and_refusals_as_auth0_documents() {
    use mgmt_sim::events_api::EventsControl;
    let h = Harness::start(SimConfig::default()).await;
    let token = h.token().await;
    h.sim.control_events(EventsControl {
        heartbeat_ms: 100,
        retry_ms: 1500,
        max_connections: 1,
        ..EventsControl::default()
    });
    let event = |id: &str, kind: &str, time: &str| {
        json!({"specversion": "1.0", "id": id, "type": kind, "time": time,
               "data": {"object": {"user_id": format!("auth0|{id}")}}})
    };
    let offsets = h
        .sim
        .append_events(vec![
            event("e1", "user.created", "2026-12-01T00:00:00Z"),
            event("e2", "user.deleted", "2026-12-02T00:00:00Z"),
            event("e3", "user.updated", "2026-12-03T00:00:00Z"),
            event("e4", "user.created", "2026-12-04T00:00:00Z"),
        ])
        .expect("append");
    // From a time, user.created only: e1 and e4.
    let mut resp = h
        .get(
            &token,
            "/api/v2/events?event_type=user.created&from_timestamp=2026-01-01T00:00:00Z",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().ok(),
        Some("text/event-stream")
    );
    // A second connection while the only one is open: the limit.
    let limited = h.get(&token, "/api/v2/events").await;
    assert_eq!(limited.status(), StatusCode::FORBIDDEN);
    assert!(json_of(limited).await["message"]
        .as_str()
        .is_some_and(|m| m.contains("Maximum concurrent event stream connections")));
    let text = read_stream_until(&mut resp, &format!("id: {}\n", offsets[3])).await;
    assert!(text.starts_with(":connected\n\nretry: 1500\n\n"), "{text}");
    assert!(text.contains(&format!(
        "event: user.created\nid: {}\ndata: {{",
        offsets[0]
    )));
    assert!(text.contains(&format!("id: {}\n", offsets[3])));
    assert!(!text.contains("e3") && !text.contains("e2"), "{text}");
    drop(resp);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Resuming after e2 with Last-Event-ID (it wins over `from`), every type, 2 events per
    // connection: e3 and e4, then the server closes the connection.
    h.sim.control_events(EventsControl {
        cycle_after_events: Some(2),
        ..h.sim.events_control()
    });
    let mut resp = h
        .http
        .get(h.url(&format!("/api/v2/events?from={}", offsets[3])))
        .bearer_auth(&token)
        .header("Last-Event-ID", offsets[1].clone())
        .send()
        .await
        .expect("GET");
    let text = read_stream_until(&mut resp, "\u{0}the end").await;
    assert!(text.contains("event: user.updated"), "{text}");
    assert!(text.contains(&format!("id: {}\n", offsets[3])), "{text}");
    assert!(
        matches!(resp.chunk().await, Ok(None)),
        "closed after 2 events"
    );
    drop(resp);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A connection ended by the server's `event: error` after one event: no `id`, then closed.
    h.sim.control_events(EventsControl {
        cycle_after_events: None,
        error_after_events: Some(1),
        ..h.sim.events_control()
    });
    let mut resp = h
        .get(&token, &format!("/api/v2/events?from={}", offsets[1]))
        .await;
    let text = read_stream_until(&mut resp, "\u{0}the end").await;
    assert!(text.contains(&format!("id: {}\n", offsets[2])), "{text}");
    assert!(!text.contains(&format!("id: {}\n", offsets[3])), "{text}");
    assert!(
        text.ends_with("event: error\ndata: {\"message\":\"An internal error occurred. Please reconnect.\"}\n\n"),
        "{text}"
    );
    assert!(
        matches!(resp.chunk().await, Ok(None)),
        "closed after the error"
    );
    assert_eq!(h.sim.events_state().errors_sent, 1);
    h.sim.control_events(EventsControl {
        error_after_events: None,
        ..h.sim.events_control()
    });
    drop(resp);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Caught up: heartbeats carry the newest offset as a marker.
    let mut resp = h
        .get(&token, &format!("/api/v2/events?from={}", offsets[3]))
        .await;
    let text = read_stream_until(&mut resp, ": heartbeat").await;
    assert!(
        text.contains(&format!("event: offset-only\nid: {}\n", offsets[3])),
        "{text}"
    );
    drop(resp);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Refusals: a bad offset, a long from_timestamp, an unknown type; an expired offset.
    for (path, status) in [
        ("/api/v2/events?from=zz", StatusCode::BAD_REQUEST),
        (
            "/api/v2/events?from_timestamp=2026-12-01T00:00:00.000Z",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v2/events?event_type=user.logged_in",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        assert_eq!(h.get(&token, path).await.status(), status, "{path}");
    }
    h.sim.control_events(EventsControl {
        expire_all: true,
        ..h.sim.events_control()
    });
    h.sim
        .append_events(vec![event("e5", "user.created", "2026-12-05T00:00:00Z")])
        .expect("append");
    let gone = h
        .get(&token, &format!("/api/v2/events?from={}", offsets[0]))
        .await;
    assert_eq!(gone.status(), StatusCode::GONE);
    // Without read:events: the gate's 403 names the scope.
    h.control(json!({"denied_scopes": ["read:events"]})).await;
    let denied = h.get(&token, "/api/v2/events").await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert!(json_of(denied).await["message"]
        .as_str()
        .is_some_and(|m| m.contains("read:events")));
    h.server.shutdown().await;
}
