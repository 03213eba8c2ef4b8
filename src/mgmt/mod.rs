//! The Auth0 Management API client: token cache, client-side rate limiter, requests with
//! retries that never give up on a transient error, role-name resolution, user reads, and role
//! assignment per user and in bulk (see `assigner`).

pub(crate) mod assigner;
pub mod client_quota;
mod clients;
mod error;
mod faults;
mod limiter;
pub mod log_streams;
pub mod organizations;
mod roles;
mod settings;
pub(crate) mod stream;
mod token;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

pub use assigner::{AssignOutcome, BatchSettings, BeforeWrite, RoleAssigner, WAITING_MAX};
pub use clients::{Applications, CLIENT_METADATA_TTL};
use error::code_suffix;
pub use error::{CallStats, MgmtError, Operation};
pub use faults::Blocked;
use faults::Transient;
pub use limiter::{RateClass, AUTO_INITIAL_RATE};
pub use roles::RoleDirectory;
pub use settings::{
    Auth0Settings, ClientSettings, RetrySettings, ONE_SHOT_PATIENCE, ROLE_MISSING_RETRY,
    ROLE_REFRESH, SCOPE_TOKEN_REFRESH, SUSTAINED_FAILURE,
};
use token::TokenCache;

use crate::metrics::Metrics;
use crate::policy::Profile;
use crate::settings::Secret;

/// Characters kept as-is in a path segment (RFC 3986 unreserved); everything else, `|` and `/`
/// included, is percent-encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a user or role id for a URL path (`auth0|abc` → `auth0%7Cabc`).
pub fn encode_path_segment(id: &str) -> String {
    utf8_percent_encode(id, PATH_SEGMENT).to_string()
}

/// A response the caller handles: status and body of a 2xx or permanent error.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: bytes::Bytes,
    /// The response headers (the Logs API's `Link`).
    pub(crate) headers: HeaderMap,
}

/// How one request differs from the default (see [`MgmtClient::request_with`]).
#[derive(Default, Clone, Copy)]
pub(crate) struct RequestOptions<'a> {
    /// A limiter of the caller's own, waited on before the client's (the backstop's share of
    /// the rate): every attempt, retries included, passes both.
    pub(crate) pace: Option<&'a DefaultDirectRateLimiter>,
    /// A 403 is returned as [`MgmtError::Auth`] instead of being waited out as a service
    /// fault: for auxiliary reads (the backstop, the stream's health) whose missing scope must
    /// not pause the assignments.
    pub(crate) refusal_is_error: bool,
    /// A call that may have reached the tenant and lost its answer returns
    /// [`MgmtError::AnswerLost`] instead of being sent again: for creations that are not
    /// idempotent (a log stream), whose caller lists before retrying.
    pub(crate) lost_answer_is_error: bool,
}

/// The Management API client. Cheap to clone: clones share the token, limiter and counters.
#[derive(Clone)]
pub struct MgmtClient {
    inner: Arc<ClientCore>,
}

struct ClientCore {
    http: reqwest::Client,
    settings: ClientSettings,
    token: TokenCache,
    limiter: DefaultDirectRateLimiter,
    /// The learning limiter: one bucket model per Auth0 limit class, fed by the tenant's
    /// `x-ratelimit-*` headers; a 429 holds only its class.
    classes: limiter::LearningLimiter,
    /// Organization member role writes: their own limiter and 429 hold.
    organizations: organizations::OrganizationBucket,
    metrics: Arc<Metrics>,
    stats: Mutex<CallStats>,
    /// Set while calls fail transiently and are being retried; cleared by the next answer.
    failing: AtomicBool,
    /// Since when calls have been failing (with `failing`).
    failing_since: Mutex<Option<Instant>>,
    /// Policy roles the tenant no longer has (deleted, maybe being re-created): a service
    /// fault cleared only when the role directory resolves every name again.
    roles_missing: Mutex<Option<Vec<String>>>,
    /// The service fault in force, with what the tenant said and the operation refused;
    /// cleared by the next answer (a scope fault only by an answer to that operation).
    blocked: Mutex<Option<(Blocked, String, Operation)>>,
    /// Every operation refused for a missing scope and not answered since.
    scope_refused: Mutex<std::collections::BTreeSet<Operation>>,
    /// Set once `connect` finished: from then on service faults make calls wait instead of
    /// failing (at start-up they stop the service with the explanation).
    serving: AtomicBool,
    /// A probe task is running while calls fail (see `probe`).
    probing: AtomicBool,
    /// When the last "still failing" warning was logged (one per minute at most).
    last_warning: Mutex<Option<Instant>>,
    /// Since when no request got any answer (connection refused, DNS, TLS, timeouts).
    unanswered_since: Mutex<Option<Instant>>,
    /// How long that may last before calls fail with [`MgmtError::Unreachable`] (`None`: for
    /// ever, the running service).
    give_up_after: Mutex<Option<Duration>>,
    /// Wakes the calls waiting out a backoff when the tenant answers again (the probe or
    /// another call proved it), so intake does not resume while they still sleep.
    recovered: tokio::sync::Notify,
}

/// The body of a Management API error.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorBody {
    message: Option<String>,
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Lock a std mutex, recovering the data if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MgmtClient {
    /// A client of a tenant that does not answer (port 9), 10 requests/s, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests() -> MgmtClient {
        let metrics =
            std::sync::Arc::new(crate::metrics::Metrics::new().unwrap_or_else(|e| panic!("{e}")));
        let settings = ClientSettings {
            base_url: "http://127.0.0.1:9".to_owned(),
            audience: "https://t.example/api/v2/".to_owned(),
            client_id: "c".to_owned(),
            client_secret: crate::settings::Secret::new("s"),
            requests_per_second: 10.0,
            burst: 10,
            auto_share: None,
            timeout: Duration::from_secs(1),
            retry: RetrySettings::default(),
        };
        MgmtClient::new(settings, metrics).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn new(settings: ClientSettings, metrics: Arc<Metrics>) -> Result<MgmtClient, MgmtError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("auth0-default-roles/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| MgmtError::HttpClient(std::sync::Arc::new(e)))?;
        let period = Duration::from_secs_f64(1.0 / settings.requests_per_second.max(0.001));
        let burst =
            std::num::NonZeroU32::new(settings.burst.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        let quota = match settings.auto_share {
            // "auto": no ceiling but the learned one.
            Some(_) => Quota::per_second(std::num::NonZeroU32::MAX),
            None => Quota::with_period(period)
                .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MAX))
                .allow_burst(burst),
        };
        let classes = limiter::LearningLimiter::new(limiter::ClassSettings {
            ceiling: match settings.auto_share {
                Some(_) => f64::INFINITY,
                None => settings.requests_per_second.max(0.001),
            },
            share: settings.auto_share.unwrap_or(1.0).clamp(0.001, 1.0),
            initial_rate: settings.requests_per_second.max(0.001),
            initial_burst: settings.burst.max(1),
        });
        Ok(MgmtClient {
            inner: Arc::new(ClientCore {
                http,
                token: TokenCache::new(settings.client_secret.clone()),
                limiter: RateLimiter::direct(quota),
                classes,
                organizations: organizations::OrganizationBucket::new(),
                metrics,
                stats: Mutex::new(CallStats::default()),
                failing: AtomicBool::new(false),
                failing_since: Mutex::new(None),
                roles_missing: Mutex::new(None),
                blocked: Mutex::new(None),
                scope_refused: Mutex::new(std::collections::BTreeSet::new()),
                serving: AtomicBool::new(false),
                probing: AtomicBool::new(false),
                last_warning: Mutex::new(None),
                recovered: tokio::sync::Notify::new(),
                unanswered_since: Mutex::new(None),
                give_up_after: Mutex::new(Some(ONE_SHOT_PATIENCE)),
                settings,
            }),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The configured `requests_per_second` (what a reader at a share of the rate divides).
    pub(crate) fn requests_per_second(&self) -> f64 {
        self.inner.settings.requests_per_second
    }

    /// The scopes the current token grants, as the token response listed them (`None` when it
    /// did not). A token is obtained when none is cached.
    pub async fn granted_scopes(&self) -> Result<Option<Vec<String>>, MgmtError> {
        Ok(self
            .inner
            .token
            .scopes(self)
            .await?
            .map(|scopes| scopes.to_vec()))
    }

    /// From now on, service faults make calls wait (and retry) instead of returning errors,
    /// and a tenant that does not answer is waited for without a limit.
    pub fn start_serving(&self) {
        self.inner.serving.store(true, Ordering::SeqCst);
        *lock(&self.inner.give_up_after) = None;
    }

    /// How long calls wait for a tenant that does not answer at all before failing with
    /// [`MgmtError::Unreachable`] (`None`: for ever). Until [`start_serving`](Self::start_serving)
    /// the client gives up after [`ONE_SHOT_PATIENCE`].
    pub fn give_up_after(&self, patience: Option<Duration>) {
        *lock(&self.inner.give_up_after) = patience;
    }

    /// Some answer arrived (whatever its status): the tenant is there.
    fn heard_from_tenant(&self) {
        *lock(&self.inner.unanswered_since) = None;
    }

    /// A request got no answer for `why`: the error to return once the tenant has not answered
    /// for the patience.
    fn unanswered(&self, why: &Transient) -> Option<MgmtError> {
        let cause = match why {
            Transient::Timeout => format!("no answer within {:?}", self.inner.settings.timeout),
            Transient::Connection(chain) | Transient::Refused(Blocked::Transport, chain) => {
                chain.clone()
            }
            _ => return None,
        };
        let patience = (*lock(&self.inner.give_up_after))?;
        let since = *lock(&self.inner.unanswered_since).get_or_insert_with(Instant::now);
        let waited = since.elapsed();
        (waited >= patience).then(|| MgmtError::Unreachable {
            host: host_of(&self.inner.settings.base_url),
            cause,
            waited_seconds: waited.as_secs(),
        })
    }

    fn is_serving(&self) -> bool {
        self.inner.serving.load(Ordering::SeqCst)
    }

    /// A copy of the call counters.
    pub fn stats(&self) -> CallStats {
        lock(&self.inner.stats).clone()
    }

    /// Obtains a token now (fails fast on bad credentials).
    pub async fn ensure_token(&self) -> Result<(), MgmtError> {
        self.inner.token.get(self).await.map(|_| ())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.settings.base_url, path)
    }

    fn count(&self, operation: Operation, status: &str, elapsed: Duration) {
        let m = &self.inner.metrics;
        m.mgmt_requests
            .with_label_values(&[operation.as_str(), status])
            .inc();
        m.mgmt_request_duration
            .with_label_values(&[operation.as_str()])
            .observe(elapsed.as_secs_f64());
        *lock(&self.inner.stats).calls.entry(operation).or_default() += 1;
    }

    /// Sends one API request until it succeeds or fails permanently. Transient failures are
    /// retried without a limit; a 401 refreshes the token once.
    pub(crate) async fn request(
        &self,
        operation: Operation,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, MgmtError> {
        self.request_with(operation, method, path, body, RequestOptions::default())
            .await
    }

    /// [`request`](Self::request) with [`RequestOptions`].
    pub(crate) async fn request_with(
        &self,
        operation: Operation,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        options: RequestOptions<'_>,
    ) -> Result<Answer, MgmtError> {
        let mut backoff = self.backoff();
        let mut refreshed = false;
        let url = self.url(path);
        loop {
            let token = match self.inner.token.get(self).await {
                Ok(token) => token,
                Err(MgmtError::Auth(said)) if self.is_serving() => {
                    let why = Transient::Refused(Blocked::Credentials, said);
                    self.wait_before_retry(operation, why, &mut backoff).await;
                    continue;
                }
                Err(err) => return Err(err),
            };
            if operation == Operation::AssignOrganizationMemberRoles {
                self.wait_for_organization_bucket().await;
            }
            let class = RateClass::of(operation);
            let waited = Instant::now();
            if let Some(pace) = options.pace {
                pace.until_ready().await;
            }
            self.inner.limiter.until_ready().await;
            let seq = self
                .inner
                .classes
                .until_ready(class, &self.inner.metrics)
                .await;
            self.inner
                .metrics
                .rate_limiter_wait
                .observe(waited.elapsed().as_secs_f64());
            let mut builder = self
                .inner
                .http
                .request(method.clone(), &url)
                .bearer_auth(&*token);
            if let Some(body) = body {
                builder = builder.json(body);
            }
            let started = Instant::now();
            let response = builder.send().await;
            let response = match response {
                Ok(r) => r,
                Err(err) => {
                    self.count(operation, "error", started.elapsed());
                    let why = Transient::from_transport(&err);
                    if options.lost_answer_is_error && !err.is_connect() {
                        return Err(faults::answer_lost(operation, &err));
                    }
                    if let Some(gave_up) = self.unanswered(&why) {
                        return Err(gave_up);
                    }
                    self.wait_before_retry(operation, why, &mut backoff).await;
                    continue;
                }
            };
            self.heard_from_tenant();
            let status = response.status();
            let headers = response.headers().clone();
            let body = match response.bytes().await {
                Ok(b) => b,
                Err(err) => {
                    self.count(operation, "error", started.elapsed());
                    if options.lost_answer_is_error {
                        return Err(faults::answer_lost(operation, &err));
                    }
                    let why = Transient::from_transport(&err);
                    self.wait_before_retry(operation, why, &mut backoff).await;
                    continue;
                }
            };
            self.count(operation, status.as_str(), started.elapsed());
            if status != StatusCode::TOO_MANY_REQUESTS {
                // An answer that carries the bucket's count was admitted by it.
                let admitted = headers.contains_key("x-ratelimit-remaining");
                self.inner
                    .classes
                    .answered(seq, &headers, admitted, &self.inner.metrics);
            } else {
                // No longer in flight: the 429's hold is set below.
                drop(seq);
            }
            // A member role write's headers describe its own bucket, not the tenant's.
            let tenant_bucket = operation != Operation::AssignOrganizationMemberRoles;
            if let Some(remaining) = tenant_bucket
                .then_some(&headers)
                .and_then(|headers| headers.get("x-ratelimit-remaining"))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
            {
                self.inner.metrics.mgmt_rate_limit_remaining.set(remaining);
            }
            if status.is_success() {
                self.inner.token.prove();
                self.answered(Some(operation));
                return Ok(Answer {
                    status,
                    body,
                    headers,
                });
            }
            match status.as_u16() {
                401 if !refreshed => {
                    refreshed = true;
                    self.inner.token.invalidate(&token).await;
                    continue;
                }
                401 => {
                    let said = format!(
                        "{}: a fresh token was rejected with 401: {}",
                        operation.as_str(),
                        error_text(&body)
                    );
                    if !self.is_serving() {
                        return Err(MgmtError::Auth(said));
                    }
                    // Wait, then start over with a new token.
                    self.inner.token.invalidate(&token).await;
                    refreshed = false;
                    let why = Transient::Refused(Blocked::Credentials, said);
                    self.wait_before_retry(operation, why, &mut backoff).await;
                }
                403 => {
                    let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
                    let said = format!(
                        "{}: HTTP 403{}: {}",
                        operation.as_str(),
                        code_suffix(&parsed.error_code.or(parsed.error)),
                        parsed.message.unwrap_or_else(|| error_text(&body))
                    );
                    if options.refusal_is_error && self.is_serving() {
                        // An auxiliary read (the backstop) is retried by its supervisor: the
                        // scope granted meanwhile must reach a token, as for the other calls.
                        self.inner
                            .token
                            .invalidate_for_scope(
                                &token,
                                self.inner.settings.retry.scope_token_refresh,
                            )
                            .await;
                    }
                    if !self.is_serving() || options.refusal_is_error {
                        return Err(MgmtError::Auth(format!(
                            "{said}; to fix: {}",
                            Blocked::Scope.advice()
                        )));
                    }
                    // A scope granted again is only in a token issued since: a new token
                    // 10 s into the refusal, then at twice the age each time, at most every
                    // `scope_token_refresh`.
                    self.inner
                        .token
                        .invalidate_for_scope(&token, self.inner.settings.retry.scope_token_refresh)
                        .await;
                    let why = Transient::Refused(Blocked::Scope, said);
                    self.wait_before_retry(operation, why, &mut backoff).await;
                }
                429 => {
                    let hint = self.rate_limit_wait(&headers);
                    let hold =
                        self.inner
                            .classes
                            .rate_limited(class, &headers, hint, &self.inner.metrics);
                    // The class's hold is waited out in its limiter, with every other call of
                    // the class, and ends early when one of them succeeds.
                    self.wait_before_retry(
                        operation,
                        Transient::RateLimited(Some(hold)),
                        &mut backoff,
                    )
                    .await;
                }
                408 | 500..=599 => {
                    self.wait_before_retry(
                        operation,
                        Transient::Status(status.as_u16()),
                        &mut backoff,
                    )
                    .await;
                }
                code => {
                    self.answered(Some(operation));
                    let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
                    return Err(MgmtError::Permanent {
                        operation: operation.as_str(),
                        status: code,
                        message: parsed
                            .message
                            .or(parsed.error_description)
                            .unwrap_or_else(|| error_text(&body)),
                        error_code: parsed.error_code.or(parsed.error),
                    });
                }
            }
        }
    }

    /// `GET /api/v2/users/{id}`: what the policy needs of the user.
    pub async fn get_user(&self, user_id: &str) -> Result<Profile, MgmtError> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct User {
            email: Option<String>,
            email_verified: Option<bool>,
            identities: Vec<crate::event::Identity>,
            app_metadata: Option<serde_json::Map<String, serde_json::Value>>,
            created_at: Option<String>,
        }
        let path = format!("/api/v2/users/{}", encode_path_segment(user_id));
        let answer = self
            .request(Operation::GetUser, Method::GET, &path, None)
            .await?;
        let user: User =
            serde_json::from_slice(&answer.body).map_err(|e| MgmtError::Undecodable {
                operation: Operation::GetUser.as_str(),
                source: e.into(),
            })?;
        Ok(Profile {
            email: user.email,
            email_verified: user.email_verified,
            identities: user.identities,
            app_metadata: user.app_metadata,
            roles: None,
            client_metadata: None,
            created_at: user.created_at,
        })
    }

    /// `GET /api/v2/users/{id}/roles`: the ids of the roles the user holds.
    pub async fn get_user_role_ids(&self, user_id: &str) -> Result<Vec<String>, MgmtError> {
        let path = format!("/api/v2/users/{}/roles?", encode_path_segment(user_id));
        let roles = self.list_roles(Operation::GetUserRoles, &path).await?;
        Ok(roles.into_iter().map(|r| r.id).collect())
    }

    /// `GET /api/v2/users/{id}/effective-roles`: the ids of the roles the user holds, directly
    /// or through a group (`{"roles": [{id, name, description, sources}], "next"}`, paged by
    /// the `next` cursor passed back as `from`).
    pub async fn get_user_effective_role_ids(
        &self,
        user_id: &str,
    ) -> Result<Vec<String>, MgmtError> {
        #[derive(Deserialize)]
        struct Page {
            roles: Vec<RoleEntry>,
            #[serde(default)]
            next: Option<String>,
        }
        let operation = Operation::GetUserEffectiveRoles;
        let base = format!(
            "/api/v2/users/{}/effective-roles?take=100",
            encode_path_segment(user_id)
        );
        let mut ids = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let path = match &from {
                Some(from) => format!("{base}&from={}", encode_path_segment(from)),
                None => base.clone(),
            };
            let answer = self.request(operation, Method::GET, &path, None).await?;
            let parsed: Page =
                serde_json::from_slice(&answer.body).map_err(|e| MgmtError::Undecodable {
                    operation: operation.as_str(),
                    source: e.into(),
                })?;
            let empty = parsed.roles.is_empty();
            ids.extend(parsed.roles.into_iter().map(|r| r.id));
            match parsed.next.filter(|next| !next.is_empty()) {
                // A cursor that does not move would loop forever: stop there.
                Some(next) if !empty && from.as_deref() != Some(next.as_str()) => from = Some(next),
                _ => break,
            }
        }
        Ok(ids)
    }

    /// The ids of the roles the user holds: direct roles only, or also those held through
    /// groups when `count_group_roles` is set (`[auth0] count_group_roles`).
    pub async fn get_held_role_ids(
        &self,
        user_id: &str,
        count_group_roles: bool,
    ) -> Result<Vec<String>, MgmtError> {
        if count_group_roles {
            self.get_user_effective_role_ids(user_id).await
        } else {
            self.get_user_role_ids(user_id).await
        }
    }

    /// Every page of a roles listing (`{"roles": [...], "total": n}` with `include_totals`).
    async fn list_roles(
        &self,
        operation: Operation,
        path_and_query: &str,
    ) -> Result<Vec<RoleEntry>, MgmtError> {
        #[derive(Deserialize)]
        struct Page {
            roles: Vec<RoleEntry>,
            #[serde(default)]
            total: usize,
        }
        let mut roles = Vec::new();
        for page in 0.. {
            let path = format!("{path_and_query}&per_page=100&page={page}&include_totals=true");
            let answer = self.request(operation, Method::GET, &path, None).await?;
            let parsed: Page =
                serde_json::from_slice(&answer.body).map_err(|e| MgmtError::Undecodable {
                    operation: operation.as_str(),
                    source: e.into(),
                })?;
            let n = parsed.roles.len();
            roles.extend(parsed.roles);
            if n == 0 || roles.len() >= parsed.total {
                break;
            }
        }
        Ok(roles)
    }

    /// `POST /api/v2/users/{id}/roles` with every role at once (204).
    pub async fn assign_user_roles(
        &self,
        user_id: &str,
        role_ids: &[String],
    ) -> Result<(), MgmtError> {
        let path = format!("/api/v2/users/{}/roles", encode_path_segment(user_id));
        let body = serde_json::json!({ "roles": role_ids });
        let answer = self
            .request(Operation::AssignUserRoles, Method::POST, &path, Some(&body))
            .await?;
        expect_status(Operation::AssignUserRoles, answer.status, &[204, 200])
    }

    /// `DELETE /api/v2/users/{id}/roles` with every role at once (204, also for roles the user
    /// does not hold: the call is idempotent); a 404 means the user does not exist.
    pub async fn remove_user_roles(
        &self,
        user_id: &str,
        role_ids: &[String],
    ) -> Result<(), MgmtError> {
        let path = format!("/api/v2/users/{}/roles", encode_path_segment(user_id));
        let body = serde_json::json!({ "roles": role_ids });
        let answer = self
            .request(
                Operation::RemoveUserRoles,
                Method::DELETE,
                &path,
                Some(&body),
            )
            .await?;
        expect_status(Operation::RemoveUserRoles, answer.status, &[204, 200])
    }

    /// `POST /api/v2/roles/{id}/users` (200 `{}`); a 404 means some user does not exist and
    /// nobody was assigned.
    pub async fn assign_role_users(
        &self,
        role_id: &str,
        user_ids: &[String],
    ) -> Result<(), MgmtError> {
        let path = format!("/api/v2/roles/{}/users", encode_path_segment(role_id));
        let body = serde_json::json!({ "users": user_ids });
        let answer = self
            .request(Operation::AssignRoleUsers, Method::POST, &path, Some(&body))
            .await?;
        expect_status(Operation::AssignRoleUsers, answer.status, &[200, 201, 204])
    }

    /// `GET /api/v2/clients/{id}` with only `client_metadata`: its string values by key (Auth0
    /// allows only strings there). A 404 (the application was deleted) is an error the caller
    /// may treat as "no metadata".
    pub async fn get_client_metadata(
        &self,
        client_id: &str,
    ) -> Result<BTreeMap<String, String>, MgmtError> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Client {
            client_metadata: Option<serde_json::Map<String, serde_json::Value>>,
        }
        let path = format!(
            "/api/v2/clients/{}?fields=client_metadata&include_fields=true",
            encode_path_segment(client_id)
        );
        let answer = self
            .request(Operation::GetClient, Method::GET, &path, None)
            .await?;
        let client: Client =
            serde_json::from_slice(&answer.body).map_err(|e| MgmtError::Undecodable {
                operation: Operation::GetClient.as_str(),
                source: e.into(),
            })?;
        Ok(client
            .client_metadata
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect())
    }

    /// `GET /api/v2/roles?name_filter=`: every role whose name contains `name` (any case).
    pub(crate) async fn find_roles(&self, name: &str) -> Result<Vec<(String, String)>, MgmtError> {
        let path = format!("/api/v2/roles?name_filter={}", encode_path_segment(name));
        let roles = self.list_roles(Operation::GetRoles, &path).await?;
        Ok(roles.into_iter().map(|r| (r.name, r.id)).collect())
    }

    /// `GET /api/v2/roles?name_filter=`: every role whose name contains `name` (any case), with
    /// its `type` and `owner_id` (organization-owned roles).
    pub(crate) async fn find_role_entries(&self, name: &str) -> Result<Vec<RoleEntry>, MgmtError> {
        let path = format!("/api/v2/roles?name_filter={}", encode_path_segment(name));
        self.list_roles(Operation::GetRoles, &path).await
    }
}

/// A role in a listing.
#[derive(Deserialize, Debug, Clone)]
pub(crate) struct RoleEntry {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
    /// `tenant` (or absent) for a tenant role; `organization` for an organization-owned role.
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    /// The organization owning an organization-owned role.
    #[serde(default)]
    pub(crate) owner_id: Option<String>,
}

fn expect_status(operation: Operation, status: StatusCode, ok: &[u16]) -> Result<(), MgmtError> {
    if ok.contains(&status.as_u16()) {
        Ok(())
    } else {
        Err(MgmtError::Protocol {
            operation: operation.as_str(),
            detail: format!("HTTP {status}"),
        })
    }
}

/// A header read as a finite number of seconds; `None` when absent, not a number, NaN or
/// infinite.
fn header_seconds(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// `secs` as a wait when it lies within [0, 1 h]; anything else is not a usable hint.
fn seconds_within_an_hour(secs: f64) -> Option<Duration> {
    if (0.0..=3600.0).contains(&secs) {
        Duration::try_from_secs_f64(secs).ok()
    } else {
        None
    }
}

/// A short, safe rendering of an error body (first 200 characters).
fn error_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text.chars().take(200).collect()
    }
}

/// The host (and port) of a base URL, for errors: `https://x.auth0.com/` → `x.auth0.com`.
fn host_of(base_url: &str) -> String {
    reqwest::Url::parse(base_url)
        .ok()
        .and_then(|url| {
            url.host_str().map(|host| match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            })
        })
        .unwrap_or_else(|| base_url.to_owned())
}

/// Everything needed to assign roles, ready: a client holding a token, and the policy's role
/// names resolved to ids.
pub async fn connect(
    auth0: &Auth0Settings,
    secret: Secret,
    role_names: std::collections::BTreeSet<String>,
    metrics: Arc<Metrics>,
) -> Result<(MgmtClient, RoleAssigner), MgmtError> {
    let client = MgmtClient::new(ClientSettings::from_config(auth0, secret), metrics)?;
    client.give_up_after(Some(auth0.give_up_after));
    client.set_organization_limit(
        auth0.organization_roles_per_minute,
        auth0.organization_roles_burst,
    );
    client.ensure_token().await?;
    let directory = Arc::new(RoleDirectory::resolve(&client, role_names).await?);
    directory.wait_while_missing();
    directory.spawn_refresh(client.clone(), ROLE_REFRESH);
    client.start_serving();
    let assigner = RoleAssigner::start(
        client.clone(),
        directory,
        BatchSettings {
            window: auth0.batch_window,
            max_users: auth0.batch_max_users,
            read_user_roles: auth0.read_user_roles,
            count_group_roles: auth0.count_group_roles,
        },
    );
    Ok((client, assigner))
}
