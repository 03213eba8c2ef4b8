//! The client's settings: `[auth0]` validated (`Auth0Settings`), what the client is built
//! from (`ClientSettings`), how it retries (`RetrySettings`), and the fixed intervals.

use std::time::Duration;

use crate::settings::{ConfigError, ResolvedSecret, Secret};

/// Validated `[auth0]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth0Settings {
    /// Tenant host, e.g. `example.eu.auth0.com`.
    pub domain: String,
    pub client_id: String,
    /// The client secret, resolved at load from `AUTH0_CLIENT_SECRET` or
    /// `client_secret_file` (a file is read again when the tenant refuses the secret).
    pub secret: ResolvedSecret,
    /// Where token and API requests go: `https://{domain}` unless `base_url` is set.
    pub base_url: String,
    /// The most this client sends per second; with `"auto"` ([`auto_share`](Self::auto_share)
    /// set) only the pace before the tenant's headers taught the limiter anything.
    pub requests_per_second: f64,
    pub burst: u32,
    /// `requests_per_second = "auto"`: the share (0 < share ≤ 1) of the learned rate used.
    pub auto_share: Option<f64>,
    /// Timeout of every Management API request.
    pub timeout: Duration,
    /// How long pending assignments wait to be coalesced into bulk calls.
    pub batch_window: Duration,
    /// Most users in one bulk call.
    pub batch_max_users: usize,
    /// Read the user's roles first and assign only the missing ones.
    pub read_user_roles: bool,
    /// Count roles held through groups (`GET /users/{id}/effective-roles`) wherever the user's
    /// roles are read: `has_roles` and the read before a write.
    pub count_group_roles: bool,
    /// The name of the tenant's log stream this service consumes (`doctor` judges it,
    /// `setup log-stream` creates it); `None`: the default name `setup` gives.
    pub log_stream: Option<String>,
    /// How long a one-shot command (and the start of `run`/`ingest`) waits for a tenant that
    /// does not answer at all (`--timeout`); the running service waits for ever.
    pub give_up_after: Duration,
    /// Organization member role writes per minute (their own bucket at Auth0).
    pub organization_roles_per_minute: u32,
    /// Burst of organization member role writes.
    pub organization_roles_burst: u32,
}

impl Auth0Settings {
    /// The Management API audience: always `https://{domain}/api/v2/`.
    pub fn audience(&self) -> String {
        format!("https://{}/api/v2/", self.domain)
    }

    /// The client secret, or the error of a command that needs it (naming `AUTH0_CLIENT_SECRET`
    /// and `auth0.client_secret_file`).
    pub fn client_secret(&self) -> Result<Secret, ConfigError> {
        self.secret.get().cloned()
    }
}

/// How the client retries transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetrySettings {
    pub base: Duration,
    pub cap: Duration,
    /// Floor of a wait computed from `x-ratelimit-reset` (which may equal "now").
    pub reset_floor: Duration,
    /// While a call is refused for a missing scope, a new token (which carries the scopes
    /// granted now) is fetched at most this often.
    pub scope_token_refresh: Duration,
    /// How long calls must keep failing (5xx, timeouts, resets) before intake pauses and
    /// `/readyz` says so. A 429 never counts: it is flow control, paced by the limiter and the
    /// tenant's reset. Service faults pause at once.
    pub sustained: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(60),
            reset_floor: Duration::from_secs(1),
            scope_token_refresh: SCOPE_TOKEN_REFRESH,
            sustained: SUSTAINED_FAILURE,
        }
    }
}

/// Everything the client needs; built from `[auth0]` and the secret.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub base_url: String,
    pub audience: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub requests_per_second: f64,
    pub burst: u32,
    /// `"auto"`: the share of the learned rate used (`None`: `requests_per_second` is the
    /// ceiling).
    pub auto_share: Option<f64>,
    pub timeout: Duration,
    pub retry: RetrySettings,
}

impl ClientSettings {
    pub fn from_config(auth0: &Auth0Settings, secret: Secret) -> Self {
        ClientSettings {
            base_url: auth0.base_url.clone(),
            audience: auth0.audience(),
            client_id: auth0.client_id.clone(),
            client_secret: secret,
            requests_per_second: auth0.requests_per_second,
            burst: auth0.burst,
            auto_share: auth0.auto_share,
            timeout: auth0.timeout,
            retry: RetrySettings::default(),
        }
    }
}

/// How long a one-shot command waits for a tenant that does not answer at all (`--timeout`).
pub const ONE_SHOT_PATIENCE: Duration = Duration::from_secs(60);

/// While a call is refused for a missing scope, a new token (which carries the scopes granted
/// now) is fetched at most this often.
pub const SCOPE_TOKEN_REFRESH: Duration = Duration::from_secs(300);

/// How often the policy's role names are resolved again.
pub const ROLE_REFRESH: Duration = Duration::from_secs(3600);

/// How often the role names are resolved again while a policy role is missing.
pub const ROLE_MISSING_RETRY: Duration = Duration::from_secs(3);

/// How long calls must keep failing before intake pauses (see [`RetrySettings::sustained`]).
pub const SUSTAINED_FAILURE: Duration = Duration::from_secs(5);
