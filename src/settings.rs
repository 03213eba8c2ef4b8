//! What the configuration shares with the components it configures, below both: the
//! [`Secret`] that never prints itself, the [`ResolvedSecret`] the loader makes of each secret
//! (from its environment variable or its file), and [`ConfigError`], the configuration problem
//! that names the key at fault.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::policy::PolicyError;

/// Reads an environment variable: the process environment at the binary's edge, a test's map
/// otherwise. Only the configuration loader takes one; components receive settings.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

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
    /// A secret other than the client secret that neither its variable nor its file gave.
    #[error("{what} is missing: set {var} or {file_key}")]
    MissingSecret {
        what: &'static str,
        var: &'static str,
        file_key: &'static str,
    },
    #[error("cannot read {key} {path}: {source}")]
    SecretFile {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A secret string that never prints itself. One read from a file remembers the file, so the
/// value can be [read again](Secret::reread) when the tenant refuses it (a rotation of the
/// file needs no restart).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    file: Option<PathBuf>,
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret {
            value: value.into(),
            file: None,
        }
    }

    /// The contents of `path` (one trailing newline dropped); `None` when it is empty.
    pub fn from_file(path: &Path) -> std::io::Result<Option<Secret>> {
        let text = std::fs::read_to_string(path)?;
        let value = text.trim_end_matches(['\n', '\r']);
        Ok((!value.is_empty()).then(|| Secret {
            value: value.to_owned(),
            file: Some(path.to_owned()),
        }))
    }

    /// The secret, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The file the secret was read from (`None`: from the environment or the code).
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The file read again: `Some` with the new value when the file now holds another one;
    /// `None` when the secret has no file, or the file is unreadable, empty or unchanged.
    pub fn reread(&self) -> Option<Secret> {
        let path = self.file.as_deref()?;
        match Secret::from_file(path) {
            Ok(Some(fresh)) if fresh.value != self.value => Some(fresh),
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "cannot read the secret's file again");
                None
            }
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The secrets the configuration resolves, each from an environment variable or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// The Management API client secret (`[auth0]`).
    ClientSecret,
    /// The `Authorization` header the webhook receiver expects (`[ingest]`).
    WebhookToken,
    /// The Kafka SASL password (`[kafka]`).
    KafkaSaslPassword,
}

/// Environment variable holding the Kafka SASL password (else `kafka.sasl_password_file`).
pub const KAFKA_SASL_PASSWORD_ENV: &str = "KAFKA_SASL_PASSWORD";
/// Environment variable holding the webhook's `Authorization` header (else `ingest.token_file`).
pub const WEBHOOK_TOKEN_ENV: &str = "AUTH0_WEBHOOK_TOKEN";

impl SecretKind {
    /// The environment variable that gives it.
    pub fn var(self) -> &'static str {
        match self {
            SecretKind::ClientSecret => SECRET_ENV,
            SecretKind::WebhookToken => WEBHOOK_TOKEN_ENV,
            SecretKind::KafkaSaslPassword => KAFKA_SASL_PASSWORD_ENV,
        }
    }

    /// The key of the file alternative.
    pub fn file_key(self) -> &'static str {
        match self {
            SecretKind::ClientSecret => "auth0.client_secret_file",
            SecretKind::WebhookToken => "ingest.token_file",
            SecretKind::KafkaSaslPassword => "kafka.sasl_password_file",
        }
    }

    /// The error of a secret neither the variable nor the file gave.
    fn missing(self) -> ConfigError {
        match self {
            SecretKind::ClientSecret => ConfigError::NoSecret,
            SecretKind::WebhookToken => ConfigError::Invalid {
                key: "ingest.token_file",
                problem: format!("no webhook token: set {WEBHOOK_TOKEN_ENV} or ingest.token_file (the Authorization Token configured in the Auth0 log stream)"),
            },
            SecretKind::KafkaSaslPassword => ConfigError::MissingSecret {
                what: "the Kafka SASL password",
                var: KAFKA_SASL_PASSWORD_ENV,
                file_key: "kafka.sasl_password_file",
            },
        }
    }
}

/// Why a resolved secret has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unavailable {
    /// Neither the variable nor the file gave one.
    Unset,
    /// The file could not be read (kept as text: an I/O error is not `Clone`).
    Unreadable {
        path: PathBuf,
        kind: std::io::ErrorKind,
        message: String,
    },
}

/// A secret resolved when the configuration is loaded: the value (from the environment
/// variable when set and not empty, else from the file, which the [`Secret`] remembers), or why
/// there is none. A missing secret is not a load error (`check` warns: a deployment may inject
/// it at run time); the commands that send it ask for it with [`get`](Self::get).
#[derive(Clone, PartialEq, Eq)]
pub struct ResolvedSecret {
    kind: SecretKind,
    value: Result<Secret, Unavailable>,
}

impl ResolvedSecret {
    /// Resolves `kind` from `env` and `file`.
    pub fn resolve(kind: SecretKind, env: Env<'_>, file: Option<&Path>) -> ResolvedSecret {
        let value = match (env(kind.var()).filter(|s| !s.is_empty()), file) {
            (Some(value), _) => Ok(Secret::new(value)),
            (None, None) => Err(Unavailable::Unset),
            (None, Some(path)) => match Secret::from_file(path) {
                Ok(Some(secret)) => Ok(secret),
                Ok(None) => Err(Unavailable::Unset),
                Err(err) => Err(Unavailable::Unreadable {
                    path: path.to_owned(),
                    kind: err.kind(),
                    message: err.to_string(),
                }),
            },
        };
        ResolvedSecret { kind, value }
    }

    /// A secret given as it is (demos and tests that build settings in code).
    pub fn given(kind: SecretKind, secret: Secret) -> ResolvedSecret {
        ResolvedSecret {
            kind,
            value: Ok(secret),
        }
    }

    /// The secret, or the error of a command that needs it: the variable and the file named.
    pub fn get(&self) -> Result<&Secret, ConfigError> {
        match &self.value {
            Ok(secret) => Ok(secret),
            Err(Unavailable::Unset) => Err(self.kind.missing()),
            Err(Unavailable::Unreadable {
                path,
                kind,
                message,
            }) => Err(ConfigError::SecretFile {
                key: self.kind.file_key(),
                path: path.clone(),
                source: std::io::Error::new(*kind, message.clone()),
            }),
        }
    }

    pub fn kind(&self) -> SecretKind {
        self.kind
    }
}

impl fmt::Debug for ResolvedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.value {
            Ok(_) => "***",
            Err(Unavailable::Unset) => "missing",
            Err(Unavailable::Unreadable { .. }) => "unreadable",
        };
        write!(f, "ResolvedSecret({}: {state})", self.kind.var())
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

    #[test]
    fn a_secret_from_a_file_is_read_again_only_when_the_file_changed() {
        let temp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = temp.path().to_path_buf();
        let path = dir.join("secret");
        std::fs::write(&path, "first\n").unwrap_or_else(|e| panic!("{e}"));
        let resolved = ResolvedSecret::resolve(SecretKind::ClientSecret, &|_| None, Some(&path));
        let first = resolved.get().cloned().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.expose(), "first");
        assert_eq!(first.reread(), None, "unchanged");
        std::fs::write(&path, "second\n").unwrap_or_else(|e| panic!("{e}"));
        let second = first.reread().unwrap_or_else(|| panic!("changed"));
        assert_eq!(second.expose(), "second");
        assert_eq!(second.file(), Some(path.as_path()));
        // From the environment: nothing to read again, the file ignored.
        let env = ResolvedSecret::resolve(
            SecretKind::ClientSecret,
            &|_| Some("from-env".to_owned()),
            Some(&path),
        );
        let from_env = env.get().cloned().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from_env.expose(), "from-env");
        assert_eq!(from_env.reread(), None);
        assert_eq!(
            format!("{env:?}"),
            "ResolvedSecret(AUTH0_CLIENT_SECRET: ***)"
        );
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let gone = ResolvedSecret::resolve(SecretKind::WebhookToken, &|_| None, Some(&path));
        let err = gone
            .get()
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("cannot read ingest.token_file"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
