//! A local stand-in for the Auth0 Management API (client-credentials token, role lookup, user
//! read, role assignment per user and in bulk) with Auth0's rate limiting, outages and injected
//! faults, plus a `/sim/*` admin API; used by tests, benches and the demo.
//!
//! Clocks: token expiry and the rate-limit bucket run on `tokio::time::Instant`, so a test that
//! pauses tokio's clock controls them; epoch values in headers and `created_at` come from the wall
//! clock (`SystemTime`).

#![forbid(unsafe_code)]

mod admin;
mod api;
mod config;
mod error;
pub mod event_streams;
pub mod events_api;
mod gate;
mod jobs;
mod log_streams;
mod members;
mod oauth;
mod organizations;
mod rate_limit;
mod state;
mod stats;
mod tenant;
mod tenant_logs;
mod wire;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use admin::ControlRequest;
pub use config::{Seed, SeedApplication, SeedRole, SeedUser, SimConfig};
pub use error::{ApiError, OAuthError};
pub use stats::SimStats;
pub use tenant_logs::MAX_DATE_LAG;

use state::{lock, Shared};

/// How long [`RunningSimulator::shutdown`] waits for open connections before aborting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A simulated Auth0 tenant. Cheap to clone: clones share the same state.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl FromRef<Simulator> for Arc<Shared> {
    fn from_ref(sim: &Simulator) -> Arc<Shared> {
        Arc::clone(&sim.shared)
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("config", &*lock(&self.shared.config))
            .field("down", &self.shared.is_down())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    pub fn new(config: SimConfig, seed: Seed) -> Simulator {
        tracing::debug!(
            domain = %config.domain,
            roles = seed.roles.len(),
            users = seed.users.len(),
            "sim: created"
        );
        Simulator {
            shared: Arc::new(Shared::new(config, seed)),
        }
    }

    /// The whole HTTP app: `/oauth/token`, `/api/v2/*` and the `/sim/*` admin routes.
    pub fn router(&self) -> Router {
        let tenant = Router::new()
            .route("/oauth/token", post(oauth::issue_token))
            .route("/api/v2/roles", get(api::list_roles))
            .route("/api/v2/roles/{id}/users", post(api::assign_role_users))
            .route("/api/v2/users/{id}", get(api::get_user))
            .route("/api/v2/clients/{id}", get(api::get_client))
            .route("/api/v2/roles/{id}/users", get(members::role_users))
            .route("/api/v2/users", get(members::list_users))
            .route("/api/v2/jobs/users-exports", post(jobs::create_export))
            .route("/api/v2/jobs/{id}", get(jobs::get_job))
            .route("/api/v2/logs", get(tenant_logs::list))
            .route("/api/v2/events", get(events_api::subscribe))
            .route(
                "/api/v2/log-streams",
                get(log_streams::list).post(log_streams::create),
            )
            .route(
                "/api/v2/log-streams/{id}",
                get(log_streams::get_one)
                    .patch(log_streams::update)
                    .delete(log_streams::delete),
            )
            .route("/api/v2/event-streams", post(event_streams::create))
            .route("/api/v2/event-streams/{id}/test", post(event_streams::test))
            .route(
                "/api/v2/organizations",
                get(organizations::list_organizations),
            )
            .route(
                "/api/v2/organizations/{id}/members",
                get(organizations::list_members),
            )
            .route(
                "/api/v2/organizations/{id}/members/{user_id}/roles",
                post(organizations::assign_member_roles).delete(organizations::remove_member_roles),
            )
            .route(
                "/api/v2/users/{id}/effective-roles",
                get(api::get_user_effective_roles),
            )
            .route(
                "/api/v2/users/{id}/roles",
                get(api::get_user_roles)
                    .post(api::assign_user_roles)
                    .delete(api::remove_user_roles),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&self.shared),
                gate::gate,
            ));
        tenant
            .merge(admin::routes())
            .merge(events_api::admin_routes())
            .route("/exports/{token}/{file}", get(jobs::download))
            .fallback(gate::fallback)
            .with_state(self.clone())
    }

    /// Binds `addr` (port 0 picks a free port) and serves [`Simulator::router`] until
    /// [`RunningSimulator::shutdown`] or until the handle is dropped.
    pub async fn start(&self, addr: SocketAddr) -> std::io::Result<RunningSimulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // A send or a dropped sender both mean "stop".
                    let _ = stopped.await;
                })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "sim: server failed");
            }
        });
        let host = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let base_url = format!("http://{}", SocketAddr::new(host, addr.port()));
        tracing::info!(%base_url, "sim: Management API simulator listening");
        Ok(RunningSimulator {
            addr,
            base_url,
            stop,
            task,
        })
    }

    /// The config as it is now (including changes made through the control methods).
    pub fn config(&self) -> SimConfig {
        lock(&self.shared.config).clone()
    }

    /// `https://{domain}/api/v2/`, the audience to ask a token for.
    pub fn audience(&self) -> String {
        lock(&self.shared.config).audience()
    }

    /// A user's role names, sorted (empty for an unknown user).
    pub fn user_role_names(&self, user_id: &str) -> Vec<String> {
        lock(&self.shared.tenant).role_names_of(user_id)
    }

    /// A user's role ids, sorted by role name (empty for an unknown user).
    pub fn user_role_ids(&self, user_id: &str) -> Vec<String> {
        lock(&self.shared.tenant)
            .roles_of(user_id, false)
            .map(|roles| roles.into_iter().map(|r| r.id).collect())
            .unwrap_or_default()
    }

    /// Every user holding at least one role → their sorted role names.
    pub fn users_with_roles(&self) -> BTreeMap<String, Vec<String>> {
        lock(&self.shared.tenant).users_with_roles()
    }

    /// [`users_with_roles`](Self::users_with_roles) with each user's roles as a set, the shape
    /// expected roles are written in.
    pub fn role_sets(&self) -> BTreeMap<String, std::collections::BTreeSet<String>> {
        self.users_with_roles()
            .into_iter()
            .map(|(user, roles)| (user, roles.into_iter().collect()))
            .collect()
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.shared.stats).clone()
    }

    /// While down, every route but `/sim/*` answers 503.
    pub fn set_down(&self, down: bool) {
        tracing::info!(down, "sim: outage switched");
        self.shared.set_down(down);
    }

    /// Probability (clamped to 0..=1) that a call answers 500/503.
    pub fn set_error_rate(&self, p: f64) {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        lock(&self.shared.config).error_rate = p;
    }

    /// New bucket parameters; the bucket starts full. `rate_per_second <= 0` means unlimited.
    pub fn set_rate_limit(&self, rate_per_second: f64, burst: u32) {
        {
            let mut config = lock(&self.shared.config);
            config.rate_per_second = rate_per_second;
            config.burst = burst;
        }
        lock(&self.shared.bucket).reconfigure(rate_per_second, burst, Instant::now());
    }

    /// Latency added to `/oauth/token` only (a slow token endpoint).
    pub fn set_token_latency_ms(&self, latency_ms: u64) {
        lock(&self.shared.config).token_latency_ms = latency_ms;
    }

    pub fn set_latency_ms(&self, latency_ms: u64) {
        lock(&self.shared.config).latency_ms = latency_ms;
    }

    /// Every token issued so far becomes invalid (401 "Invalid token").
    pub fn revoke_tokens(&self) {
        lock(&self.shared.tokens).revoke_all();
    }

    /// Creates a user or replaces an existing user's profile (its roles are kept, and the
    /// roles it names are added).
    pub fn add_user(&self, user: SeedUser) {
        let mut tenant = lock(&self.shared.tenant);
        let (user_id, roles) = (user.user_id.clone(), user.roles.clone());
        let group_roles = user.group_roles.clone();
        tenant.upsert_user(user);
        tenant.grant_named(&user_id, &roles);
        tenant.grant_through_group(&user_id, &group_roles);
    }

    /// An admin gives roles by hand (the Dashboard): no API call is counted.
    pub fn grant_by_hand(&self, user_id: &str, role_names: &[&str]) {
        let names: Vec<String> = role_names.iter().map(|n| (*n).to_owned()).collect();
        lock(&self.shared.tenant).grant_named(user_id, &names);
    }

    /// The user holds these roles through a group (an Enterprise Group with roles attached):
    /// `GET /users/{id}/effective-roles` lists them, `GET /users/{id}/roles` does not.
    pub fn grant_through_group(&self, user_id: &str, role_names: &[&str]) {
        let names: Vec<String> = role_names.iter().map(|n| (*n).to_owned()).collect();
        lock(&self.shared.tenant).grant_through_group(user_id, &names);
    }

    /// An admin gives roles by hand right after the user's roles are next read
    /// (`GET /api/v2/users/{id}/roles`): a grant racing a read-then-write.
    pub fn grant_by_hand_after_next_role_read(&self, user_id: &str, role_names: &[&str]) {
        let names: Vec<String> = role_names.iter().map(|n| (*n).to_owned()).collect();
        lock(&self.shared.tenant).grant_after_next_read(user_id, names);
    }

    /// An admin removes roles by hand (the Dashboard): no API call is counted.
    pub fn remove_by_hand(&self, user_id: &str, role_names: &[&str]) {
        let mut tenant = lock(&self.shared.tenant);
        let ids: Vec<String> = role_names
            .iter()
            .filter_map(|n| tenant.role_id(n))
            .collect();
        let _ = tenant.remove_roles_from_user(user_id, &ids, false);
    }

    pub fn delete_user(&self, user_id: &str) {
        lock(&self.shared.tenant).remove_user(user_id);
    }

    /// Deletes the role with exactly this name (and its memberships); false if there is none.
    pub fn delete_role(&self, name: &str) -> bool {
        lock(&self.shared.tenant).remove_role(name)
    }

    /// Adds a role and returns its id (the existing id if a role of that name exists and no id
    /// is given).
    pub fn add_role(&self, role: SeedRole) -> String {
        lock(&self.shared.tenant).add_role(role)
    }

    /// The id of the role with exactly this name.
    pub fn role_id(&self, name: &str) -> Option<String> {
        lock(&self.shared.tenant).role_id(name)
    }

    /// Creates an organization (an `org_…` id unless `id` is given) and returns its id.
    pub fn add_organization(&self, id: Option<&str>, name: &str) -> String {
        lock(&self.shared.organizations).add(id.map(str::to_owned), name)
    }

    /// Adds members (with no roles) to an organization; false when there is none of that id.
    pub fn add_members(&self, organization_id: &str, user_ids: &[String]) -> bool {
        lock(&self.shared.organizations).add_members(organization_id, user_ids)
    }

    /// Removes a member (and its roles there); false when it was not one.
    pub fn remove_member(&self, organization_id: &str, user_id: &str) -> bool {
        lock(&self.shared.organizations).remove_member(organization_id, user_id)
    }

    /// An admin removes a member's roles in an organization by hand (the Dashboard): no API
    /// call is counted.
    pub fn remove_member_roles_by_hand(
        &self,
        organization_id: &str,
        user_id: &str,
        role_names: &[&str],
    ) {
        let ids: Vec<String> = {
            let tenant = lock(&self.shared.tenant);
            role_names
                .iter()
                .filter_map(|n| tenant.role_id(n))
                .collect()
        };
        lock(&self.shared.organizations).remove_roles(organization_id, user_id, &ids);
    }

    /// An admin gives a member roles in an organization by hand (an invitation, the
    /// Dashboard): no API call is counted.
    pub fn grant_member_roles_by_hand(
        &self,
        organization_id: &str,
        user_id: &str,
        role_names: &[&str],
    ) {
        let ids: Vec<String> = {
            let tenant = lock(&self.shared.tenant);
            role_names
                .iter()
                .filter_map(|n| tenant.role_id(n))
                .collect()
        };
        lock(&self.shared.organizations).add_roles(organization_id, user_id, &ids);
    }

    /// Holds the answer of each `DELETE /api/v2/users/{id}/roles` this long after applying it.
    pub fn set_removal_answer_delay_ms(&self, delay_ms: u64) {
        lock(&self.shared.config).removal_answer_delay_ms = delay_ms;
    }

    /// Holds the answer of each role write (`POST /api/v2/users/{id}/roles`,
    /// `POST /api/v2/roles/{id}/users`) this long after applying it.
    pub fn set_assignment_answer_delay_ms(&self, delay_ms: u64) {
        lock(&self.shared.config).assignment_answer_delay_ms = delay_ms;
    }

    /// A member's role names in an organization, sorted (empty for a non-member).
    pub fn member_role_names(&self, organization_id: &str, user_id: &str) -> Vec<String> {
        let ids = lock(&self.shared.organizations).role_ids(organization_id, user_id);
        let tenant = lock(&self.shared.tenant);
        let mut names: Vec<String> = ids.iter().filter_map(|id| tenant.role_name(id)).collect();
        names.sort();
        names
    }

    /// Organization id → member → its sorted role names there (members without roles included).
    pub fn organization_roles(&self) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
        let all = lock(&self.shared.organizations).all();
        let tenant = lock(&self.shared.tenant);
        all.into_iter()
            .map(|(org, members)| {
                let members = members
                    .into_iter()
                    .map(|(user, ids)| {
                        let mut names: Vec<String> =
                            ids.iter().filter_map(|id| tenant.role_name(id)).collect();
                        names.sort();
                        (user, names)
                    })
                    .collect();
                (org, members)
            })
            .collect()
    }

    /// New organization member roles bucket (per minute, burst); the bucket starts full.
    pub fn set_organization_rate_limit(&self, per_minute: f64, burst: u32) {
        {
            let mut config = lock(&self.shared.config);
            config.organization_roles_per_minute = per_minute;
            config.organization_roles_burst = burst;
        }
        lock(&self.shared.organization_bucket).reconfigure(
            per_minute / 60.0,
            burst,
            Instant::now(),
        );
    }

    /// Every log stream of the tenant, as `GET /api/v2/log-streams` answers.
    pub fn log_streams(&self) -> Vec<serde_json::Value> {
        lock(&self.shared.log_streams).all()
    }

    /// Creates a log stream as `POST /api/v2/log-streams` would (the same validation) and
    /// returns its id; `status` may be given (e.g. a stream someone paused).
    pub fn add_log_stream(&self, body: &serde_json::Value) -> Result<String, ApiError> {
        let domain = lock(&self.shared.config).domain.clone();
        let created = lock(&self.shared.log_streams).create(body, &domain)?;
        Ok(created
            .get("id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// Sets a stream's status as Auth0 does by itself (`suspended` after days of failed
    /// deliveries); false if there is no such stream.
    pub fn set_log_stream_status(&self, id: &str, status: &str) -> bool {
        lock(&self.shared.log_streams).set_status(id, status)
    }

    /// Appends tenant logs (as `GET /api/v2/logs` returns them); a missing `log_id` is
    /// generated from the log's ingestion time, which lags its `date` by up to 5 s (a missing
    /// `date` is set that long before now). Returns the ids in order.
    pub fn append_logs(&self, logs: Vec<serde_json::Value>) -> Vec<String> {
        lock(&self.shared.tenant_logs).append(logs)
    }

    /// Every log the tenant keeps, in `log_id` order, with the ids and dates it was given.
    pub fn tenant_logs(&self) -> Vec<serde_json::Value> {
        lock(&self.shared.tenant_logs).all()
    }

    /// Logs the tenant keeps.
    pub fn log_count(&self) -> usize {
        lock(&self.shared.tenant_logs).len()
    }

    /// The retention period passed: every log below `log_id` is gone. Returns how many.
    pub fn purge_logs_before(&self, log_id: &str) -> usize {
        lock(&self.shared.tenant_logs).purge_before(log_id)
    }

    /// The next `calls` calls to `GET /api/v2/logs` answer 429 (`Retry-After: 1`).
    pub fn rate_limit_log_reads(&self, calls: u64) {
        lock(&self.shared.tenant_logs).rate_limited_calls = calls;
    }

    /// The next `calls` calls to `GET /api/v2/logs` answer 429 with `Retry-After:
    /// retry_after_seconds` (the Logs API's own bucket, as on Essentials).
    pub fn rate_limit_log_reads_for(&self, calls: u64, retry_after_seconds: u64) {
        let mut logs = lock(&self.shared.tenant_logs);
        logs.rate_limited_calls = calls;
        logs.rate_limited_retry_after = retry_after_seconds;
    }

    /// The next `n` log stream creations create the stream and lose the answer (the body stops
    /// after its first bytes and the connection breaks), as a reset connection or a timeout
    /// after the request reached the tenant would.
    pub fn lose_log_stream_creation_answers(&self, n: u32) {
        lock(&self.shared.config).lose_log_stream_creation_answers = n;
    }

    /// Probability (0..=1) that a call to `GET /api/v2/logs` answers 500 or 503.
    pub fn set_logs_error_rate(&self, p: f64) {
        lock(&self.shared.tenant_logs).error_rate =
            if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
    }

    /// Applies a `/sim/control` request (fields left out are unchanged).
    pub fn apply_control(&self, control: &ControlRequest) {
        if let Some(down) = control.down {
            self.set_down(down);
        }
        if let Some(p) = control.error_rate {
            self.set_error_rate(p);
        }
        if let Some(p) = control.logs_error_rate {
            self.set_logs_error_rate(p);
        }
        if let Some(n) = control.logs_rate_limited_calls {
            self.rate_limit_log_reads(n);
        }
        if let Some(id) = &control.logs_purge_before {
            self.purge_logs_before(id);
        }
        if control.rate_per_second.is_some() || control.burst.is_some() {
            let (rate, burst) = {
                let config = lock(&self.shared.config);
                (
                    control.rate_per_second.unwrap_or(config.rate_per_second),
                    control.burst.unwrap_or(config.burst),
                )
            };
            self.set_rate_limit(rate, burst);
        }
        if control.revoke_tokens == Some(true) {
            self.revoke_tokens();
        }
        if let Some(latency_ms) = control.latency_ms {
            self.set_latency_ms(latency_ms);
        }
        if control.organization_roles_per_minute.is_some()
            || control.organization_roles_burst.is_some()
        {
            let (per_minute, burst) = {
                let config = lock(&self.shared.config);
                (
                    control
                        .organization_roles_per_minute
                        .unwrap_or(config.organization_roles_per_minute),
                    control
                        .organization_roles_burst
                        .unwrap_or(config.organization_roles_burst),
                )
            };
            self.set_organization_rate_limit(per_minute, burst);
        }
        let mut config = lock(&self.shared.config);
        if let Some(v) = control.reset_equals_now {
            config.reset_equals_now = v;
        }
        if let Some(v) = control.retry_after {
            config.retry_after = v;
        }
        if let Some(v) = control.accept_any_user {
            config.accept_any_user = v;
        }
        if let Some(v) = control.nonexistent_role_status {
            config.nonexistent_role_status = v;
        }
        if let Some(secret) = &control.client_secret {
            tracing::info!("sim: client secret rotated");
            config.client_secret = secret.clone();
        }
        if let Some(v) = control.credentials_revoked {
            tracing::info!(revoked = v, "sim: credentials switched");
            config.credentials_revoked = v;
        }
        if let Some(v) = &control.denied_scopes {
            tracing::info!(denied = ?v, "sim: scopes switched");
            config.denied_scopes = v.clone();
        }
        if let Some(v) = &control.garbage_rate_limit_headers {
            config.garbage_rate_limit_headers = (!v.is_empty()).then(|| v.clone());
        }
        if let Some(p) = control.cut_body_rate {
            config.cut_body_rate = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        }
        if let Some(n) = control.lose_log_stream_creation_answers {
            config.lose_log_stream_creation_answers = n;
        }
        if let Some(ms) = control.export_job_millis {
            config.export_job_millis = ms;
        }
        if let Some(reason) = &control.export_job_failure {
            config.export_job_failure = (!reason.is_empty()).then(|| reason.clone());
        }
    }
}

/// A simulator serving on a socket. Dropping it also stops serving (without waiting).
#[derive(Debug)]
pub struct RunningSimulator {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` (loopback even when bound to an unspecified address).
    pub base_url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningSimulator {
    /// `base_url` + `path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops accepting connections and waits (up to 5 s) for open ones to finish.
    pub async fn shutdown(self) {
        let RunningSimulator { stop, task, .. } = self;
        let _ = stop.send(());
        let abort = task.abort_handle();
        if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
            tracing::warn!("sim: connections still open after grace period, aborting");
            abort.abort();
        }
        tracing::info!("sim: stopped");
    }
}
