//! Typed configuration: one TOML file plus environment overrides, validated at load with errors
//! that name the key. The configuration arrives whole: secrets (only from the environment or a
//! `*_file` path) are resolved here into values that never print, and the rules between
//! sections are checked here (`rules.rs`), so components receive settings, never the
//! environment, and `check` refuses what `run` and `ingest` would.

mod auth0;
mod rules;
mod sections;
mod sources;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::dedup::DedupSettings;
pub use crate::ledger::{LedgerSettings, LEDGER_URL_ENV};
pub use crate::mgmt::Auth0Settings;
use crate::policy::Policy;
pub use crate::settings::{
    is_secret_key, redact_secret_lines, ConfigError, Env, ResolvedSecret, Secret, SecretKind,
    BASE_URL_ENV, CLIENT_ID_ENV, DOMAIN_ENV, KAFKA_SASL_PASSWORD_ENV, SECRET_ENV,
};
pub use crate::source::auth0_events::EventsSettings;
pub use crate::source::auth0_logs::LogsSettings;
use crate::source::auth0_logs::Role;
pub use crate::source::kafka::{KafkaSettings, DEFAULT_GROUP_ID};
pub use crate::source::sqs::SqsSettings;
pub use crate::source::webhook::{IngestMode, IngestSettings, WEBHOOK_TOKEN_ENV};
use auth0::auth0_settings;
pub(crate) use rules::bridge_without_kafka;
use sections::{ConfigFile, LedgerSection};
use sources::{ingest_settings, logs_settings, source_settings};

/// The error of a key whose value cannot work.
fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None` when the file has no `[auth0]` section (enough for `replay --offline`).
    pub auth0: Option<Auth0Settings>,
    pub policy: Policy,
    pub dedup: DedupSettings,
    /// Where `run` reads events from (`None` when the file has no `[source]`).
    pub source: Option<SourceSettings>,
    /// `[metrics] listen`: where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_listen: SocketAddr,
    /// `[ingest]`: the HTTP receiver of Auth0's Custom Webhook log stream.
    pub ingest: Option<IngestSettings>,
    /// `[backstop]`: the tenant's Logs API read behind the source.
    pub backstop: Option<LogsSettings>,
    /// `[ledger]` (or `LEDGER_URL`): what the service granted, in SQLite or PostgreSQL.
    pub ledger: Option<LedgerSettings>,
    /// `[ledger] lease_ttl_seconds`: how long a reader's lease in a PostgreSQL ledger lasts
    /// without renewal (one active reader across replicas; unused with SQLite).
    pub lease_ttl: Duration,
    /// The fingerprint of the `[policy]` section as written, recorded with each grant.
    pub policy_fingerprint: String,
    /// This process's name, as its grants in the ledger and its leases record it: the host
    /// (`HOSTNAME`, else `/etc/hostname`, else `localhost`) and the process id, resolved at load.
    pub instance: String,
}

/// The default `[metrics] listen` address.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9464";

/// Where `run` consumes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSettings {
    Kafka(KafkaSettings),
    Sqs(SqsSettings),
    /// The tenant's Logs API (`[auth0_logs]`).
    Auth0Logs(LogsSettings),
    /// The tenant's Events API (`[auth0_events]`).
    Auth0Events(EventsSettings),
}

/// Reads the process environment (the default for `Config::load`).
fn process_env(name: &str) -> Option<String> {
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

    /// Parses and validates config text. `path` only labels errors; `env` supplies overrides
    /// and secrets (the process environment for [`Config::load`], a map in tests).
    pub fn from_toml(text: &str, path: &Path, env: Env<'_>) -> Result<Config, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            // The message quotes the offending line: never a secret's value.
            message: redact_secret_lines(e.to_string().trim_end()),
        })?;
        let policy = Policy::from_config(&file.policy)?;
        let auth0 = auth0_settings(file.auth0, env)?;
        let dedup = DedupSettings {
            ttl: Duration::from_secs(match file.dedup.ttl_seconds {
                Some(0) => return Err(invalid("dedup.ttl_seconds", "must be at least 1")),
                Some(s) => s,
                None => DedupSettings::default().ttl.as_secs(),
            }),
            user_roles_ttl: Duration::from_secs(match file.dedup.user_roles_ttl_seconds {
                Some(0) => {
                    return Err(invalid(
                        "dedup.user_roles_ttl_seconds",
                        "must be at least 1",
                    ))
                }
                Some(s) => s,
                None => DedupSettings::default().user_roles_ttl.as_secs(),
            }),
            max_entries: match file.dedup.max_entries {
                Some(0) => return Err(invalid("dedup.max_entries", "must be at least 1")),
                Some(n) => n,
                None => DedupSettings::default().max_entries,
            },
        };
        let lease_ttl = lease_ttl(file.ledger.as_ref().and_then(|l| l.lease_ttl_seconds))?;
        let ledger = ledger_settings(file.ledger, env)?;
        let events = (file.auth0_events, &policy, ledger.is_some());
        let source = source_settings(
            file.source,
            file.kafka,
            file.sqs,
            file.auth0_logs,
            events,
            env,
        )?;
        let backstop = file
            .backstop
            .map(|b| logs_settings(Role::Backstop, b))
            .transpose()?;
        if let Some(b) = &backstop {
            if b.lag >= dedup.ttl {
                return Err(invalid(
                    "backstop.lag_seconds",
                    format!("must be shorter than dedup.ttl_seconds ({} s): events the stream delivered must still be remembered when the backstop reads them, or they cost calls again", dedup.ttl.as_secs()),
                ));
            }
        }
        let listen = file
            .metrics
            .listen
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
        let metrics_listen = listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "metrics.listen",
                format!("`{listen}` is not an address:port, e.g. 0.0.0.0:9464"),
            )
        })?;
        let ingest = file
            .ingest
            .map(|section| ingest_settings(section, env))
            .transpose()?;
        let config = Config {
            auth0,
            policy,
            dedup,
            source,
            metrics_listen,
            ingest,
            backstop,
            ledger,
            lease_ttl,
            policy_fingerprint: crate::ledger::policy_fingerprint_of_config(text),
            instance: instance_name(env),
        };
        config.check_sections()?;
        Ok(config)
    }

    /// The `[auth0]` settings, or an error saying what is missing.
    pub fn require_auth0(&self) -> Result<&Auth0Settings, ConfigError> {
        self.auth0.as_ref().ok_or(ConfigError::NoAuth0)
    }
}

/// This process's instance name: the host (`HOSTNAME` from `env`, else `/etc/hostname`, else
/// `localhost`) and the process id.
fn instance_name(env: Env<'_>) -> String {
    let host = env("HOSTNAME")
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

/// `[ledger] lease_ttl_seconds`: 1 s to 1 h, 15 s when absent.
fn lease_ttl(seconds: Option<f64>) -> Result<Duration, ConfigError> {
    let Some(seconds) = seconds else {
        return Ok(crate::source::lease::DEFAULT_TTL);
    };
    let max = crate::ledger::lease::MAX_TTL.as_secs_f64();
    if !(seconds.is_finite() && (1.0..=max).contains(&seconds)) {
        return Err(invalid(
            "ledger.lease_ttl_seconds",
            format!("must be between 1 and {max} seconds (a standby takes over within it and a third of it, at most 5 s, after the active reader stops renewing)"),
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `[ledger] url`, overridden by `LEDGER_URL` (which alone turns the ledger on). A password
/// belongs in `LEDGER_URL` or `PGPASSWORD`, never in the file.
fn ledger_settings(
    section: Option<LedgerSection>,
    env: Env<'_>,
) -> Result<Option<LedgerSettings>, ConfigError> {
    let from_env = env(LEDGER_URL_ENV).filter(|s| !s.trim().is_empty());
    let from_file = section.map(|s| s.url);
    let url = match (from_env, from_file) {
        (Some(url), _) => url,
        (None, Some(Some(url))) => {
            let settings = LedgerSettings { url: url.clone() };
            if settings.has_password() {
                return Err(invalid(
                    "ledger.url",
                    format!("holds a password: give the whole URL in {LEDGER_URL_ENV} (from a secret) or the password in PGPASSWORD, and keep `url = \"{}\"` without it", settings.describe()),
                ));
            }
            url
        }
        (None, Some(None)) => {
            return Err(invalid(
                "ledger.url",
                "missing: sqlite:///ABSOLUTE/PATH or postgres://USER@HOST:PORT/DATABASE",
            ))
        }
        (None, None) => return Ok(None),
    };
    let settings = LedgerSettings { url };
    settings
        .validate()
        .map_err(|problem| invalid("ledger.url", problem))?;
    Ok(Some(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_name_is_the_host_the_environment_names_and_the_process_id() {
        let text = "[policy]\nevents = [\"signup\"]\n";
        let load = |env: Env<'_>| match Config::from_toml(text, Path::new("x.toml"), env) {
            Ok(config) => config.instance,
            Err(err) => panic!("{err}"),
        };
        let pid = std::process::id();
        let named = load(&|name| (name == "HOSTNAME").then(|| " pod-7 ".to_owned()));
        assert_eq!(named, format!("pod-7:{pid}"));
        // An empty HOSTNAME is no name: the fallback (/etc/hostname or localhost) is used.
        let unnamed = load(&|name| (name == "HOSTNAME").then(String::new));
        let host = unnamed.strip_suffix(&format!(":{pid}")).unwrap_or_default();
        assert!(!host.is_empty() && host != "pod-7", "{unnamed}");
    }

    #[test]
    fn a_toml_error_on_a_secret_line_does_not_quote_its_value() {
        let text = "[kafka]\nbrokers = \"b:9092\"\ntopic = \"t\"\n[kafka.properties]\n\"sasl.passwrd\" = \"hunter2-very-secret\n";
        let err = Config::from_toml(text, Path::new("x.toml"), &|_| None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("x.toml"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_debug_form_of_a_loaded_config_shows_no_secret() {
        let temp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = temp.path().to_path_buf();
        let file = dir.join("client-secret");
        std::fs::write(&file, "client-secret-from-file\n").unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            "[auth0]\ndomain = \"t.auth0.com\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"\n[kafka]\nbrokers = \"b:9092\"\ntopic = \"t\"\n[kafka.properties]\n\"sasl.passwrd\" = \"misspelled-password\"\n[ingest]\nmode = \"kafka\"\n",
            file.display()
        );
        let env = |name: &str| match name {
            WEBHOOK_TOKEN_ENV => Some("Bearer webhook-token".to_owned()),
            KAFKA_SASL_PASSWORD_ENV => Some("sasl-password".to_owned()),
            LEDGER_URL_ENV => Some("postgres://svc:ledger-password@db:5432/ledger".to_owned()),
            _ => None,
        };
        let config =
            Config::from_toml(&text, Path::new("x.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{config:?}");
        for secret in [
            "client-secret-from-file",
            "misspelled-password",
            "webhook-token",
            "sasl-password",
            "ledger-password",
        ] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
        let given =
            |s: &Result<Secret, ConfigError>| s.as_ref().map(|s| s.expose().to_owned()).ok();
        let auth0 = config.require_auth0().map(|a| a.client_secret());
        assert_eq!(
            auth0.ok().as_ref().and_then(given).as_deref(),
            Some("client-secret-from-file")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
