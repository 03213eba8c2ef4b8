//! Typed configuration: one TOML file plus environment overrides, validated at load with errors
//! that name the key. Secrets come only from the environment or a `*_file` path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::dedup::DedupSettings;
use crate::policy::{Policy, PolicyConfig, PolicyError};

/// Environment variable holding the Management API client secret.
pub const SECRET_ENV: &str = "AUTH0_CLIENT_SECRET";
/// Environment variables that override `[auth0]` keys of the file.
pub const DOMAIN_ENV: &str = "AUTH0_DOMAIN";
pub const CLIENT_ID_ENV: &str = "AUTH0_CLIENT_ID";
pub const BASE_URL_ENV: &str = "AUTH0_BASE_URL";

/// A configuration problem. Each names the file or key at fault and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{key}: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error("no [auth0] section: this command needs `domain` and `client_id` (or {DOMAIN_ENV} and {CLIENT_ID_ENV})")]
    NoAuth0,
    #[error(
        "the Management API client secret is missing: set {SECRET_ENV} or auth0.client_secret_file"
    )]
    NoSecret,
    #[error("cannot read auth0.client_secret_file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// The file as written. Unknown keys are rejected by serde (with line and column).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    auth0: Option<Auth0Section>,
    #[serde(default)]
    policy: PolicyConfig,
    #[serde(default)]
    dedup: DedupSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Auth0Section {
    domain: Option<String>,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    /// Present only to give a helpful error: secrets never live in the file.
    client_secret: Option<toml::Value>,
    base_url: Option<String>,
    requests_per_second: Option<f64>,
    burst: Option<u32>,
    timeout_seconds: Option<f64>,
    batch_window_ms: Option<u64>,
    batch_max_users: Option<usize>,
    read_user_roles: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DedupSection {
    ttl_seconds: Option<u64>,
    max_entries: Option<u64>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None` when the file has no `[auth0]` section (enough for `replay --offline`).
    pub auth0: Option<Auth0Settings>,
    pub policy: Policy,
    pub dedup: DedupSettings,
}

/// Validated `[auth0]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth0Settings {
    /// Tenant host, e.g. `example.eu.auth0.com`.
    pub domain: String,
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    /// Where token and API requests go: `https://{domain}` unless `base_url` is set.
    pub base_url: String,
    pub requests_per_second: f64,
    pub burst: u32,
    /// Timeout of every Management API request.
    pub timeout: Duration,
    /// How long pending assignments wait to be coalesced into bulk calls.
    pub batch_window: Duration,
    /// Most users in one bulk call.
    pub batch_max_users: usize,
    /// Read the user's roles first and assign only the missing ones.
    pub read_user_roles: bool,
}

impl Auth0Settings {
    /// The Management API audience: always `https://{domain}/api/v2/`.
    pub fn audience(&self) -> String {
        format!("https://{}/api/v2/", self.domain)
    }

    /// The client secret from `AUTH0_CLIENT_SECRET`, else from `client_secret_file`.
    pub fn client_secret(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secret, ConfigError> {
        if let Some(secret) = env(SECRET_ENV).filter(|s| !s.is_empty()) {
            return Ok(Secret(secret));
        }
        let path = self
            .client_secret_file
            .as_ref()
            .ok_or(ConfigError::NoSecret)?;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
            path: path.clone(),
            source,
        })?;
        let secret = text.trim_end_matches(['\n', '\r']).to_owned();
        if secret.is_empty() {
            return Err(ConfigError::NoSecret);
        }
        Ok(Secret(secret))
    }
}

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Reads the process environment (the default for `Config::load`).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Loads and validates a config file, applying environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path, &process_env)
    }

    /// Parses and validates config text. `path` only labels errors; `env` supplies overrides.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let policy = Policy::from_config(&file.policy)?;
        let auth0 = auth0_settings(file.auth0, env)?;
        let dedup = DedupSettings {
            ttl: Duration::from_secs(match file.dedup.ttl_seconds {
                Some(0) => return Err(invalid("dedup.ttl_seconds", "must be at least 1")),
                Some(s) => s,
                None => DedupSettings::default().ttl.as_secs(),
            }),
            max_entries: match file.dedup.max_entries {
                Some(0) => return Err(invalid("dedup.max_entries", "must be at least 1")),
                Some(n) => n,
                None => DedupSettings::default().max_entries,
            },
        };
        Ok(Config {
            auth0,
            policy,
            dedup,
        })
    }

    /// The `[auth0]` settings, or an error saying what is missing.
    pub fn require_auth0(&self) -> Result<&Auth0Settings, ConfigError> {
        self.auth0.as_ref().ok_or(ConfigError::NoAuth0)
    }
}

fn auth0_settings(
    section: Option<Auth0Section>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Auth0Settings>, ConfigError> {
    let env_domain = env(DOMAIN_ENV).filter(|s| !s.is_empty());
    let env_client = env(CLIENT_ID_ENV).filter(|s| !s.is_empty());
    let env_base = env(BASE_URL_ENV).filter(|s| !s.is_empty());
    let section = match section {
        Some(s) => s,
        None if env_domain.is_some() || env_client.is_some() => Auth0Section::default(),
        None => return Ok(None),
    };
    if section.client_secret.is_some() {
        return Err(invalid(
            "auth0.client_secret",
            format!(
                "secrets never go in the config file: set {SECRET_ENV} or auth0.client_secret_file"
            ),
        ));
    }
    let domain = env_domain
        .or(section.domain)
        .ok_or_else(|| invalid("auth0.domain", format!("missing (or set {DOMAIN_ENV})")))?;
    let domain = domain.trim().trim_end_matches('/').to_owned();
    if domain.is_empty() || domain.contains("://") || domain.contains('/') || domain.contains(' ') {
        return Err(invalid(
            "auth0.domain",
            format!("`{domain}` is not a host name: write the tenant host only, e.g. example.eu.auth0.com"),
        ));
    }
    let client_id = env_client
        .or(section.client_id)
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            invalid(
                "auth0.client_id",
                format!("missing (or set {CLIENT_ID_ENV})"),
            )
        })?;
    let base_url = match env_base.or(section.base_url) {
        None => format!("https://{domain}"),
        Some(url) => {
            let url = url.trim().trim_end_matches('/').to_owned();
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                return Err(invalid(
                    "auth0.base_url",
                    format!("`{url}` is not an http(s) URL, e.g. http://127.0.0.1:8080"),
                ));
            }
            url
        }
    };
    let requests_per_second = section.requests_per_second.unwrap_or(2.0);
    if !(requests_per_second.is_finite() && requests_per_second > 0.0) {
        return Err(invalid(
            "auth0.requests_per_second",
            "must be a positive number (your tenant's sustained Management API rate)",
        ));
    }
    let burst = section.burst.unwrap_or(2);
    if burst == 0 {
        return Err(invalid("auth0.burst", "must be at least 1"));
    }
    let timeout = section.timeout_seconds.unwrap_or(10.0);
    if !(timeout.is_finite() && timeout > 0.0 && timeout <= 300.0) {
        return Err(invalid(
            "auth0.timeout_seconds",
            "must be between 0 and 300",
        ));
    }
    let batch_window_ms = section.batch_window_ms.unwrap_or(100);
    if batch_window_ms > 10_000 {
        return Err(invalid("auth0.batch_window_ms", "must be at most 10000"));
    }
    let batch_max_users = section.batch_max_users.unwrap_or(50);
    if !(1..=1000).contains(&batch_max_users) {
        return Err(invalid(
            "auth0.batch_max_users",
            "must be between 1 and 1000 (the bulk endpoint's limit)",
        ));
    }
    Ok(Some(Auth0Settings {
        domain,
        client_id,
        client_secret_file: section.client_secret_file,
        base_url,
        requests_per_second,
        burst,
        timeout: Duration::from_secs_f64(timeout),
        batch_window: Duration::from_millis(batch_window_ms),
        batch_max_users,
        read_user_roles: section.read_user_roles.unwrap_or(false),
    }))
}
