//! Simulator settings ([`SimConfig`]) and the roles and users a simulated tenant starts with
//! ([`Seed`]); all of them can be read from JSON.

use serde::{Deserialize, Serialize};

/// How the simulated tenant behaves. Every field has a default, so `{}` is a valid JSON config.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct SimConfig {
    /// Tenant domain; the accepted audience is `https://{domain}/api/v2/`.
    pub domain: String,
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of issued access tokens, in seconds.
    pub token_expires_in: u64,
    /// Token-bucket refill rate over all `/api/v2` calls; `0.0` or negative means unlimited.
    pub rate_per_second: f64,
    /// Token-bucket size (`x-ratelimit-limit`); a bucket of 0 behaves as 1.
    pub burst: u32,
    /// On a 429, send `x-ratelimit-reset` = now (a real Auth0 quirk) instead of the time the
    /// next request is allowed.
    pub reset_equals_now: bool,
    /// Also send `Retry-After` (whole seconds, at least 1) on a 429.
    pub retry_after: bool,
    /// Probability (0..=1) that a call answers 500 or 503 (half each) before its handler runs.
    pub error_rate: f64,
    /// Latency added to every tenant request (not to `/sim/*`).
    pub latency_ms: u64,
    /// Unknown user ids are created on first use instead of answering 404.
    pub accept_any_user: bool,
    /// Status for a role id that does not exist in `POST /api/v2/users/{id}/roles`.
    pub nonexistent_role_status: u16,
    /// The application's credentials are revoked: `/oauth/token` answers 401 `access_denied`
    /// and every issued token is refused with 401 (a rotated secret, a deleted grant).
    pub credentials_revoked: bool,
    /// Scopes taken away from the application: a call whose every accepted scope is denied
    /// answers 403 `insufficient_scope` ("expected any of: ...").
    pub denied_scopes: Vec<String>,
    /// When set, 429s carry this text as `Retry-After` and `x-ratelimit-reset` (e.g. `NaN`).
    pub garbage_rate_limit_headers: Option<String>,
    /// Probability (0..=1) that a successful answer's body is cut off after its first bytes
    /// (the connection drops mid-body).
    pub cut_body_rate: f64,
    /// The next this many log stream creations (`POST /api/v2/log-streams`) create the stream
    /// and lose the answer: its body stops after the first bytes and the connection breaks.
    pub lose_log_stream_creation_answers: u32,
    /// How long a users-export job takes from creation to `completed` (a quarter of it
    /// `pending`, the rest `processing`).
    pub export_job_millis: u64,
    /// When set, export jobs end `failed` with this text as `status_details`.
    pub export_job_failure: Option<String>,
    /// How long a job's `location` can be downloaded after the job read that gave it (0: for
    /// ever). Auth0's pre-signed URLs last about a minute; each job read gives a fresh one.
    pub export_location_ttl_millis: u64,
    /// The first this many downloads answer 403 as an expired pre-signed URL does, whatever
    /// their age (a download that outlived its URL, deterministically).
    pub export_expired_downloads: u32,
    /// Refill of the organization member role writes bucket, per minute (Auth0: 200); `0.0` or
    /// negative means unlimited.
    pub organization_roles_per_minute: f64,
    /// Size of that bucket (Auth0: 20).
    pub organization_roles_burst: u32,
    /// `DELETE /api/v2/users/{id}/roles` applies the removal, then holds its answer this long
    /// (0: answers at once): the client may die between Auth0's commit and the answer, as a
    /// crash or a lost connection does.
    pub removal_answer_delay_ms: u64,
    /// `POST /api/v2/users/{id}/roles` and `POST /api/v2/roles/{id}/users` apply the write,
    /// then hold their answer this long (0: answer at once): the client may crash between
    /// Auth0's commit of a role write and its record of it.
    pub assignment_answer_delay_ms: u64,
    /// A member holds at most this many roles in an organization; a write past it answers 409
    /// "No more roles can be assigned to this organization member" (0: no limit).
    pub member_role_limit: usize,
    /// Latency added to `/oauth/token` only, on top of `latency_ms` (a slow token endpoint).
    pub token_latency_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            domain: "sim.auth0.local".to_owned(),
            client_id: "sim-client".to_owned(),
            client_secret: "sim-secret".to_owned(),
            token_expires_in: 86_400,
            rate_per_second: 0.0,
            burst: 10,
            reset_equals_now: false,
            retry_after: false,
            error_rate: 0.0,
            latency_ms: 0,
            accept_any_user: false,
            nonexistent_role_status: 404,
            credentials_revoked: false,
            denied_scopes: Vec::new(),
            garbage_rate_limit_headers: None,
            cut_body_rate: 0.0,
            lose_log_stream_creation_answers: 0,
            export_job_millis: 0,
            export_job_failure: None,
            export_location_ttl_millis: 0,
            export_expired_downloads: 0,
            organization_roles_per_minute: 200.0,
            organization_roles_burst: 20,
            removal_answer_delay_ms: 0,
            assignment_answer_delay_ms: 0,
            member_role_limit: 0,
            token_latency_ms: 0,
        }
    }
}

impl SimConfig {
    /// The only audience `/oauth/token` accepts: `https://{domain}/api/v2/`.
    pub fn audience(&self) -> String {
        format!("https://{}/api/v2/", self.domain)
    }
}

/// The tenant's initial content.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Seed {
    pub roles: Vec<SeedRole>,
    pub users: Vec<SeedUser>,
    /// Applications (`GET /api/v2/clients/{id}`), for policies that read `client_metadata`.
    pub applications: Vec<SeedApplication>,
}

impl Seed {
    /// A tenant with these roles and no users.
    pub fn with_roles<'a>(names: impl IntoIterator<Item = &'a str>) -> Seed {
        Seed {
            roles: names.into_iter().map(SeedRole::named).collect(),
            ..Seed::default()
        }
    }
}

/// An application (a client) of the tenant.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct SeedApplication {
    pub client_id: String,
    #[serde(default)]
    pub name: String,
    /// Auth0 allows only string values here.
    #[serde(default)]
    pub client_metadata: std::collections::BTreeMap<String, String>,
}

/// A role to create; without an `id` one is generated (`rol_` + 16 alphanumerics).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct SeedRole {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The organization owning an organization-owned role (listed with `type: "organization"`
    /// and `owner_id`; such roles may share a name with a tenant role and with each other).
    #[serde(default)]
    pub owner_id: Option<String>,
}

impl SeedRole {
    /// A role with this name, a generated id and no description.
    pub fn named(name: impl Into<String>) -> Self {
        SeedRole {
            id: None,
            name: name.into(),
            description: None,
            owner_id: None,
        }
    }

    /// An organization-owned role of `organization` with this name and a generated id.
    pub fn owned_by(organization: impl Into<String>, name: impl Into<String>) -> Self {
        SeedRole {
            owner_id: Some(organization.into()),
            ..SeedRole::named(name)
        }
    }
}

/// A user to create. The identity's provider is the part of `user_id` before the first `|`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct SeedUser {
    pub user_id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: Option<bool>,
    /// Connection name; when absent it is derived from the provider
    /// (`auth0` → `Username-Password-Authentication`, otherwise the provider itself).
    #[serde(default)]
    pub connection: Option<String>,
    #[serde(default)]
    pub app_metadata: Option<serde_json::Value>,
    /// Names of roles the user already holds (roles of the seed; unknown names are ignored).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Names of roles the user holds through a group (an Enterprise Group with roles attached):
    /// listed by `GET /users/{id}/effective-roles` (source `groups`), never by
    /// `GET /users/{id}/roles` (unknown names are ignored).
    #[serde(default)]
    pub group_roles: Vec<String>,
    /// The account's `created_at` (RFC 3339); when absent, the moment it is added.
    #[serde(default)]
    pub created_at: Option<String>,
}

impl SeedUser {
    /// A user with only an id.
    pub fn new(user_id: impl Into<String>) -> Self {
        SeedUser {
            user_id: user_id.into(),
            ..SeedUser::default()
        }
    }
}
