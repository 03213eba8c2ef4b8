//! The Management API access token: obtained with the client-credentials grant, cached until
//! shortly before it expires, refreshed then in the background while calls go on with the
//! still-valid token (only an expired or missing token makes calls wait, for one refresh), and
//! paced: a refusing token endpoint (or tokens rejected as soon as they are issued) costs one
//! request a second for the whole process, backing off to one a minute, however many calls
//! wait. Management API tokens do not count toward the tenant's machine-to-machine token quota
//! (an internal Auth0 audience), but a per-client quota (Early Access) does:
//! `Auth0-Client-Quota-Limit` on token answers is published as a gauge, and a 429 that is that
//! quota (see `client_quota`) is a service fault waiting for the quota's reset. A secret read
//! from a file is read again when the token endpoint refuses it (401), so a rotation of the
//! file needs no restart.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use reqwest::StatusCode;
use serde::Deserialize;

use super::{error_text, Blocked, ErrorBody, MgmtClient, MgmtError, Operation, Transient};
use crate::settings::Secret;

/// The longest a token is used, whatever `expires_in` says (Auth0 issues 24 h tokens).
const MAX_LIFETIME: Duration = Duration::from_secs(86_400);

/// Refresh this long before expiry (capped at a quarter of the token's lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

struct Cached {
    token: Arc<str>,
    /// The scopes the token grants (the response's `scope`), when it says.
    scopes: Option<Arc<[String]>>,
    obtained: Instant,
    refresh_at: Instant,
}

/// The first pause between two token requests that are not proven good (doubles each time).
pub(super) const TOKEN_PACE: Duration = Duration::from_secs(1);
/// How old a token refused for a missing scope must be before a new one is requested (the
/// first time in a refusal; doubles each time, up to `RetrySettings::scope_token_refresh`).
pub(super) const SCOPE_TOKEN_FIRST: Duration = Duration::from_secs(10);
/// The longest pause between two token requests while tokens are refused or rejected.
pub(super) const TOKEN_PACE_MAX: Duration = Duration::from_secs(60);

/// What the cache holds: the token, and how soon another may be requested.
#[derive(Default)]
struct Slot {
    cached: Option<Cached>,
    /// Token requests since an answer last proved a token good.
    unproven: u32,
    /// When the last token request ended.
    last_fetch: Option<Instant>,
    /// The token endpoint's refusal, returned without a request until the pace allows one.
    refused: Option<MgmtError>,
}

impl Slot {
    /// The pause due after the last request: none once a token was proven good, else
    /// 1 s, 2 s, 4 s ... up to a minute.
    fn pace(&self) -> Duration {
        match self.unproven {
            0 => Duration::ZERO,
            n => TOKEN_PACE
                .saturating_mul(1 << (n - 1).min(16))
                .min(TOKEN_PACE_MAX),
        }
    }
}

/// The cached token as calls read it without waiting for a refresh in progress.
struct Published {
    token: Arc<str>,
    refresh_at: Instant,
    expires_at: Instant,
}

/// One token shared by every task of the process.
pub(super) struct TokenCache {
    current: tokio::sync::Mutex<Slot>,
    /// A copy of the cached token, read without the slot's lock (which a refresh holds).
    published: std::sync::Mutex<Option<Published>>,
    /// A refresh ahead of expiry is running in the background.
    refreshing: Arc<AtomicBool>,
    /// Set when an API call answered with the current token (resets the pace).
    proven: AtomicBool,
    /// Tokens dropped for a missing scope since the refused operation was last answered.
    scope_refreshes: AtomicU32,
    /// The client secret sent; replaced when its file holds a new one after a refusal.
    secret: std::sync::Mutex<Secret>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
    /// Space-separated: the scopes actually granted.
    #[serde(default)]
    scope: Option<String>,
}

/// What a token request gave.
struct Issued {
    token: String,
    lifetime: Duration,
    scopes: Option<Arc<[String]>>,
}

impl TokenCache {
    pub(super) fn new(secret: Secret) -> Self {
        TokenCache {
            secret: std::sync::Mutex::new(secret),
            current: tokio::sync::Mutex::new(Slot::default()),
            published: std::sync::Mutex::new(None),
            refreshing: Arc::new(AtomicBool::new(false)),
            proven: AtomicBool::new(false),
            scope_refreshes: AtomicU32::new(0),
        }
    }

    /// The client secret a token request sends now.
    fn secret(&self) -> Secret {
        super::lock(&self.secret).clone()
    }

    /// After the token endpoint refused `refused`: its file read again. True when the file
    /// holds another secret (rotated), which replaces it for the next request.
    fn reread_secret(&self, refused: &Secret) -> bool {
        let Some(fresh) = refused.reread() else {
            return false;
        };
        tracing::info!(file = %fresh.file().map(|f| f.display().to_string()).unwrap_or_default(), "the client secret was refused and its file holds a new one: using it");
        *super::lock(&self.secret) = fresh;
        true
    }

    /// An API call answered with the current token: the next request (at expiry) needs no
    /// pause.
    pub(super) fn prove(&self) {
        if !self.proven.load(Ordering::Relaxed) {
            self.proven.store(true, Ordering::Relaxed);
        }
    }

    /// The cached token, or a new one. Concurrent callers wait for the one refresh. While
    /// the token endpoint refuses, its refusal is returned without a request until the pace
    /// allows the next one; a token dropped soon after it was issued (rejected with 401) is
    /// replaced no sooner than the pace allows either.
    pub(super) async fn get(&self, client: &MgmtClient) -> Result<Arc<str>, MgmtError> {
        let valid = {
            let published = super::lock(&self.published);
            let now = Instant::now();
            published.as_ref().and_then(|p| {
                (now < p.expires_at).then(|| (Arc::clone(&p.token), now >= p.refresh_at))
            })
        };
        if let Some((token, due)) = valid {
            if due && !self.refreshing.swap(true, Ordering::SeqCst) {
                // Ahead of expiry: refreshed in the background, calls go on meanwhile.
                let client = client.clone();
                // The flag clears however the task ends (a panic too): a later call starts the
                // next refresh, and an expired token makes calls fetch one themselves anyway.
                let done = RefreshDone(Arc::clone(&self.refreshing));
                tokio::spawn(async move {
                    let _done = done;
                    let cache = &client.inner.token;
                    if let Err(err) = cache.get_waiting(&client).await {
                        tracing::debug!(error = %err, "token refresh ahead of expiry failed; the current token is used until it expires");
                    }
                });
            }
            return Ok(token);
        }
        self.get_waiting(client).await
    }

    /// [`get`](Self::get) for a caller that waits for the one refresh in progress.
    async fn get_waiting(&self, client: &MgmtClient) -> Result<Arc<str>, MgmtError> {
        let mut slot = self.current.lock().await;
        if let Some(cached) = slot.cached.as_ref() {
            if Instant::now() < cached.refresh_at {
                return Ok(Arc::clone(&cached.token));
            }
        }
        if self.proven.swap(false, Ordering::Relaxed) {
            slot.unproven = 0;
        }
        if let Some(last) = slot.last_fetch {
            let due = last + slot.pace();
            if Instant::now() < due {
                if let Some(refused) = &slot.refused {
                    return Err(refused.clone());
                }
                // Others wait on the lock meanwhile: one request for all of them.
                tokio::time::sleep_until(due).await;
            }
        }
        let fetched = fetch(client).await;
        slot.last_fetch = Some(Instant::now());
        slot.unproven = slot.unproven.saturating_add(1);
        let Issued {
            token,
            lifetime,
            scopes,
        } = match fetched {
            Ok(issued) => {
                slot.refused = None;
                issued
            }
            Err(err) => {
                slot.refused = Some(err.clone());
                return Err(err);
            }
        };
        let margin = REFRESH_MARGIN.min(lifetime / 4);
        let token: Arc<str> = Arc::from(token);
        let now = Instant::now();
        // A lifetime too large for the clock (a garbage `expires_in`) refreshes in a day.
        let refresh_at = now
            .checked_add(lifetime.saturating_sub(margin))
            .unwrap_or_else(|| now + MAX_LIFETIME);
        slot.cached = Some(Cached {
            token: Arc::clone(&token),
            scopes,
            obtained: now,
            refresh_at,
        });
        *super::lock(&self.published) = Some(Published {
            token: Arc::clone(&token),
            refresh_at,
            expires_at: now.checked_add(lifetime).unwrap_or(refresh_at),
        });
        tracing::debug!(
            lifetime_s = lifetime.as_secs(),
            "Management API token obtained"
        );
        Ok(token)
    }

    /// The scopes the current token grants (a token is obtained if none is cached); `None`
    /// when the token response did not list them.
    pub(super) async fn scopes(
        &self,
        client: &MgmtClient,
    ) -> Result<Option<Arc<[String]>>, MgmtError> {
        self.get(client).await?;
        Ok(self
            .current
            .lock()
            .await
            .cached
            .as_ref()
            .and_then(|c| c.scopes.clone()))
    }

    /// After a 403 for a missing scope: drops `token` if it is still the cached one and is old
    /// enough. A token carries the scopes granted when it was issued, so only a new token can
    /// show that the scope was granted again. The first new token is due once the refused
    /// token is [`SCOPE_TOKEN_FIRST`] old, each next one at twice that age, at most `cap`: a
    /// scope removed for a few seconds is used again within seconds, and a long refusal costs
    /// one token per `cap` (a per-client token quota, where one is set, counts every token).
    pub(super) async fn invalidate_for_scope(&self, token: &Arc<str>, cap: Duration) {
        let mut slot = self.current.lock().await;
        let refreshed = self.scope_refreshes.load(Ordering::Relaxed);
        let age = SCOPE_TOKEN_FIRST
            .saturating_mul(1 << refreshed.min(16))
            .min(cap);
        if slot
            .cached
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.token, token) && c.obtained.elapsed() >= age)
        {
            tracing::debug!("dropping the token to get one with the scopes granted now");
            slot.cached = None;
            self.unpublish(token);
            self.scope_refreshes
                .store(refreshed.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// The refused operation was answered: the next scope fault starts its schedule over.
    pub(super) fn scope_fault_over(&self) {
        if self.scope_refreshes.load(Ordering::Relaxed) != 0 {
            self.scope_refreshes.store(0, Ordering::Relaxed);
        }
    }

    /// Drops `token` if it is still the cached one (after the API rejected it with 401).
    pub(super) async fn invalidate(&self, token: &Arc<str>) {
        let mut slot = self.current.lock().await;
        if slot
            .cached
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.token, token))
        {
            slot.cached = None;
        }
        self.unpublish(token);
    }

    /// Calls no longer get `token` without waiting (it was rejected or lacks a scope).
    fn unpublish(&self, token: &Arc<str>) {
        let mut published = super::lock(&self.published);
        if published
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(&p.token, token))
        {
            *published = None;
        }
    }
}

/// `POST {base}/oauth/token` with the client-credentials grant. Transient failures are retried
/// without a limit; 400/401/403 are configuration errors explained for a human.
async fn fetch(client: &MgmtClient) -> Result<Issued, MgmtError> {
    let inner = &client.inner;
    let settings = &inner.settings;
    let mut backoff = client.backoff();
    let url = client.url("/oauth/token");
    let class = super::RateClass::Token;
    loop {
        // The token endpoint's bucket is a class of its own: its 429s hold token requests only.
        let seq = inner.classes.until_ready(class, &inner.metrics).await;
        let secret = inner.token.secret();
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": settings.client_id,
            "client_secret": secret.expose(),
            "audience": settings.audience,
        });
        let started = Instant::now();
        let response = inner.http.post(&url).json(&body).send().await;
        let response = match response {
            Ok(r) => r,
            Err(err) => {
                client.count(Operation::Token, "error", started.elapsed());
                count_token(client, "transient");
                let why = Transient::from_transport(&err);
                if let Some(gave_up) = client.unanswered(&why) {
                    return Err(gave_up);
                }
                client
                    .wait_before_retry(Operation::Token, why, &mut backoff)
                    .await;
                continue;
            }
        };
        client.heard_from_tenant();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(err) => {
                // A body cut off by a reset connection: transient, like a failed request.
                client.count(Operation::Token, "error", started.elapsed());
                count_token(client, "transient");
                let why = Transient::from_transport(&err);
                client
                    .wait_before_retry(Operation::Token, why, &mut backoff)
                    .await;
                continue;
            }
        };
        client.count(Operation::Token, status.as_str(), started.elapsed());
        for bucket in super::client_quota::parse(&headers) {
            inner
                .metrics
                .mgmt_client_quota_remaining
                .with_label_values(&[bucket.bucket.as_str()])
                .set(i64::try_from(bucket.remaining).unwrap_or(i64::MAX));
        }
        if status != StatusCode::TOO_MANY_REQUESTS {
            inner.classes.answered(seq, &headers, true, &inner.metrics);
        } else {
            drop(seq);
        }
        if status.is_success() {
            let parsed: TokenResponse = match serde_json::from_slice(&bytes) {
                Ok(parsed) => parsed,
                Err(e) => {
                    count_token(client, "transient");
                    // A proxy's page or a truncated answer: retried, never a permanent failure.
                    let why = Transient::Connection(format!(
                        "token response is not {{access_token, expires_in}}: {e}"
                    ));
                    client
                        .wait_before_retry(Operation::Token, why, &mut backoff)
                        .await;
                    continue;
                }
            };
            let lifetime = Duration::from_secs(
                parsed
                    .expires_in
                    .unwrap_or(86_400)
                    .clamp(1, MAX_LIFETIME.as_secs()),
            );
            count_token(client, "issued");
            let scopes = parsed
                .scope
                .map(|s| s.split_whitespace().map(str::to_owned).collect());
            return Ok(Issued {
                token: parsed.access_token,
                lifetime,
                scopes,
            });
        }
        let transient = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error();
        count_token(client, if transient { "transient" } else { "refused" });
        match status {
            StatusCode::TOO_MANY_REQUESTS
                if super::client_quota::exhausted(&headers, &bytes).is_some() =>
            {
                // Not a rate limit: no token until the quota resets, whatever the pace.
                let wait = super::client_quota::exhausted(&headers, &bytes)
                    .unwrap_or(Duration::from_secs(3600));
                let detail = format!(
                    "token endpoint: HTTP 429 client quota exceeded; waiting {} s for its reset",
                    wait.as_secs()
                );
                tracing::warn!(
                    retry_in_s = wait.as_secs(),
                    advice = super::client_quota::ADVICE,
                    "{detail}"
                );
                client.set_failing(true);
                client.set_blocked(Some((
                    super::Blocked::ClientQuota,
                    detail,
                    Operation::Token,
                )));
                tokio::time::sleep(wait).await;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let hint = client.rate_limit_wait(&headers);
                let hold = inner
                    .classes
                    .rate_limited(class, &headers, hint, &inner.metrics);
                client
                    .wait_before_retry(
                        Operation::Token,
                        Transient::RateLimited(Some(hold)),
                        &mut backoff,
                    )
                    .await;
            }
            s if s == StatusCode::REQUEST_TIMEOUT || s.is_server_error() => {
                client
                    .wait_before_retry(
                        Operation::Token,
                        Transient::Status(s.as_u16()),
                        &mut backoff,
                    )
                    .await;
            }
            // A refused secret from a file: the file read again, a rotated one tried at once.
            StatusCode::UNAUTHORIZED if inner.token.reread_secret(&secret) => {}
            s => return Err(explain(s, &bytes, &settings.audience)),
        }
    }
}

fn count_token(client: &MgmtClient, outcome: &str) {
    client
        .inner
        .metrics
        .mgmt_token_requests
        .with_label_values(&[outcome])
        .inc();
}

/// Turns a rejected token request into what the operator must fix.
fn explain(status: StatusCode, body: &[u8], audience: &str) -> MgmtError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let error = parsed.error.unwrap_or_default();
    let description = parsed.error_description.unwrap_or_else(|| error_text(body));
    let advice = match (status.as_u16(), error.as_str()) {
        (401, _) => "the client id or secret is wrong: check auth0.client_id and AUTH0_CLIENT_SECRET (or client_secret_file)".to_owned(),
        (403, "unauthorized_client") => "the client_credentials grant is not enabled for this application: enable it in the Auth0 Dashboard under Applications → (your app) → Advanced Settings → Grant Types".to_owned(),
        (403, _) => format!("the application is not authorized for the Management API ({audience}): authorize it under Applications → APIs → Auth0 Management API → Machine To Machine Applications; {}", Blocked::Scope.advice()),
        (400, _) => "the token request was refused as invalid: check auth0.domain (the audience is https://{domain}/api/v2/)".to_owned(),
        _ => "unexpected answer from the token endpoint".to_owned(),
    };
    MgmtError::Auth(format!("HTTP {status} {error}: {description}; {advice}"))
}

/// Clears the background refresh's flag when dropped.
struct RefreshDone(Arc<AtomicBool>);

impl Drop for RefreshDone {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
