//! What the configuration shares with the components it configures, below both: the
//! [`Secret`] that never prints itself, the one secret reader, and [`ConfigError`], the
//! configuration problem that names the key at fault.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::policy::PolicyError;

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

/// Whether a configuration key names a secret (a password, token, key material ...): its value
/// is never printed. Misspellings (`sasl.passwrd`) count too.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "passw",
        "secret",
        "token",
        "credential",
        "private",
        "key",
        "jaas",
        "auth",
    ]
    .iter()
    .any(|stem| key.contains(stem))
}

/// `text` with the value of every `key = value` or `"key" = value` line whose key names a
/// secret replaced by `***` (for TOML error messages, which quote the offending line).
pub fn redact_secret_lines(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once('=') {
            Some((left, _)) if is_secret_key(left.rsplit('|').next().unwrap_or(left)) => {
                format!("{left}= ***")
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one secret reader: the environment variable `var` when set and not empty, else the
/// contents of `file` (one trailing newline dropped). `None` when neither gives a value.
pub fn read_secret(
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(value) = env(var).filter(|s| !s.is_empty()) {
        return Ok(Some(Secret(value)));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        path: path.to_owned(),
        source,
    })?;
    let value = text.trim_end_matches(['\n', '\r']);
    Ok((!value.is_empty()).then(|| Secret(value.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised_misspelled_or_not() {
        for key in [
            "sasl.password",
            "sasl.passwrd",
            "ssl.key.password",
            "client_secret",
            "sasl.oauthbearer.client.secret",
            "token_file",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "bootstrap.servers",
            "group.id",
            "security.protocol",
            "sasl.mechanism",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }
}
