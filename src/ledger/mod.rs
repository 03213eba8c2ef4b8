//! The grants ledger: what this service granted, what was revoked and which users' events failed
//! for good, in SQLite (one instance) or PostgreSQL (several instances share it). The pipeline
//! asks it before granting (a role it granted is never granted again) and writes to it after
//! the Management API accepted a grant; `explain` reads it.
//!
//! [`Ledger`] is the API; [`store`] holds the SQL of both backends, [`fault`] the service-fault
//! state the pipeline and `/readyz` read (the `explain` report is `commands::explain::report`),
//! [`lease`] the readers' leases in a PostgreSQL ledger (one active reader across replicas).

pub mod fault;
pub mod lease;
pub mod link;
mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;

pub use fault::LedgerFault;
pub use link::LedgerLink;
use store::Backend;

/// The `checkpoints` row that records when a user's deletion last reached the service (its
/// value: unix milliseconds). `doctor` warns when a ledger never saw one.
pub const DELETIONS_SEEN: &str = "deletions:last_seen";

/// Environment variable that overrides `[ledger] url` (the whole URL, which may carry the
/// PostgreSQL password: give it from a Secret, never in the file).
pub const LEDGER_URL_ENV: &str = "LEDGER_URL";

/// `[ledger]`: where the ledger lives.
#[derive(Clone, PartialEq, Eq)]
pub struct LedgerSettings {
    /// `sqlite:///ABSOLUTE/PATH` (the file is created if missing) or `postgres://…`.
    pub url: String,
}

/// The URL without its password (`LEDGER_URL` may carry one).
impl std::fmt::Debug for LedgerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerSettings")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

/// What a ledger URL names, validated (see [`LedgerSettings::target`]).
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Sqlite(PathBuf),
    Postgres(Box<PgConnectOptions>),
}

impl LedgerSettings {
    /// Checks the URL without connecting: the problem, in words, when it cannot work (the
    /// config loader turns it into an error naming `ledger.url`).
    pub fn validate(&self) -> Result<(), String> {
        self.target().map(|_| ())
    }

    pub(crate) fn target(&self) -> Result<Target, String> {
        let url = self.url.trim();
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let path = rest.split('?').next().unwrap_or_default();
            if !path.starts_with('/') {
                return Err(format!(
                    "`{}` is not sqlite:///ABSOLUTE/PATH (three slashes: the path must be absolute)",
                    redact_url(url)
                ));
            }
            if path.len() < 2 || path.ends_with('/') {
                return Err(format!("`{}` names a folder, not a file", redact_url(url)));
            }
            return Ok(Target::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return PgConnectOptions::from_str(url)
                .map(|o| Target::Postgres(Box::new(o)))
                .map_err(|e| format!("`{}` is not a PostgreSQL URL: {e}", redact_url(url)));
        }
        Err(format!(
            "`{}` is neither sqlite:///ABSOLUTE/PATH nor postgres://USER@HOST:PORT/DATABASE",
            redact_url(url)
        ))
    }

    /// Whether the URL carries a password anywhere: in the user info (`user:password@`) or
    /// as a query parameter (`?password=…`, `sslpassword=…`, as libpq reads them).
    pub fn has_password(&self) -> bool {
        let url = self.url.trim();
        let in_userinfo = url.split_once("://").is_some_and(|(_, rest)| {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            authority
                .rsplit_once('@')
                .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        });
        in_userinfo
            || url
                .split_once('?')
                .is_some_and(|(_, query)| query.split('&').any(is_password_parameter))
    }

    /// Whether the URL names PostgreSQL (a ledger several hosts share: readers take a lease).
    pub fn is_postgres(&self) -> bool {
        matches!(self.target(), Ok(Target::Postgres(_)))
    }

    /// The URL without its password, for messages.
    pub fn describe(&self) -> String {
        match self.target() {
            Ok(Target::Sqlite(path)) => format!("sqlite://{}", path.display()),
            Ok(Target::Postgres(o)) => describe_pg(&o),
            Err(_) => redact_url(self.url.trim()),
        }
    }
}

fn describe_pg(o: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or(o.get_username())
    )
}

/// Whether a query parameter (`key=value`) carries a password.
fn is_password_parameter(parameter: &str) -> bool {
    let key = parameter.split('=').next().unwrap_or_default().trim();
    PASSWORD_PARAMETERS
        .iter()
        .any(|p| key.eq_ignore_ascii_case(p))
}

/// The URL query parameters that carry a secret (libpq's `password`, `sslpassword`).
const PASSWORD_PARAMETERS: [&str; 2] = ["password", "sslpassword"];

/// A URL with any `user:password@` reduced to `user@` and any password parameter of its query
/// left out, for messages.
fn redact_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((base, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !is_password_parameter(p))
                .collect();
            (base, kept.join("&"))
        }
        None => (url, String::new()),
    };
    let query = if query.is_empty() {
        query
    } else {
        format!("?{query}")
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url}{query}");
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}{tail}{query}")
        }
        None => format!("{url}{query}"),
    }
}

/// What went wrong with the ledger. Each names the database (without password) and the step.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The URL or the place it names cannot work (exit 2): fix the configuration.
    #[error("ledger {url}: {problem}")]
    Config { url: String, problem: String },
    /// The database does not answer, or fails (a service fault: events wait).
    #[error("ledger {url}: cannot {what}: {source}")]
    Unreachable {
        url: String,
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The database refuses this statement for the data it carries (a NUL in a text, a value
    /// past a limit, a constraint): no retry can fix it, so the item fails, not the service.
    #[error("ledger {url}: cannot {what}: the database refuses this record: {source}")]
    Refused {
        url: String,
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A conflict with a concurrent transaction (serialization failure, deadlock, SQLite
    /// busy): retried at once, no fault.
    #[error("ledger {url}: cannot {what}: a concurrent transaction conflicts: {source}")]
    Conflict {
        url: String,
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("ledger {url}: cannot migrate the schema: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

impl LedgerError {
    /// Whether the configuration is at fault (exit 2), not the database's availability.
    pub fn is_config(&self) -> bool {
        matches!(self, LedgerError::Config { .. })
    }

    /// Whether the database refused this item's data (retrying cannot help; the item fails).
    pub fn is_refused(&self) -> bool {
        matches!(self, LedgerError::Refused { .. })
    }

    /// Whether a concurrent transaction conflicted (retry at once, no fault).
    pub fn is_conflict(&self) -> bool {
        matches!(self, LedgerError::Conflict { .. })
    }

    /// The error a failed statement is, from what the database said (see
    /// [`fault::classify`]).
    pub(crate) fn of_statement(url: &str, what: &'static str, source: sqlx::Error) -> LedgerError {
        let url = url.to_owned();
        match fault::classify(&source) {
            fault::FailureKind::Refused => LedgerError::Refused { url, what, source },
            fault::FailureKind::Conflict => LedgerError::Conflict { url, what, source },
            fault::FailureKind::Unavailable => LedgerError::Unreachable { url, what, source },
        }
    }
}

/// One role this service gave one user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    pub user_id: String,
    pub role_id: String,
    pub role_name: String,
    /// The organization of a member role; `None` for a tenant role.
    pub organization_id: Option<String>,
    /// The policy rule that gave it.
    pub rule: String,
    /// The trigger (`signup`, `first_login`, `user_created`, … or `reconcile`).
    pub trigger: String,
    /// The event's id: `log_id` or the CloudEvent id.
    pub event_id: String,
    /// [`policy_fingerprint`] of the `[policy]` in force.
    pub policy_fingerprint: String,
    /// Which service instance wrote it.
    pub instance: String,
    /// Unix milliseconds: when the grant was recorded.
    pub at: i64,
    /// Unix milliseconds: when the event that gave it happened (its `date`), when it said.
    /// A signup dated after it means the account was re-created; a deletion dated after it
    /// ends it.
    pub event_at: Option<i64>,
}

impl Grant {
    /// The grant as the policy judges it ([`crate::policy::standing::judge_standing`]).
    pub fn standing(&self) -> crate::policy::standing::StandingGrant {
        crate::policy::standing::StandingGrant {
            role_id: self.role_id.clone(),
            role_name: self.role_name.clone(),
            rule: self.rule.clone(),
            organization_id: self.organization_id.clone(),
        }
    }
}

/// A role taken back from a user (it ends the standing grant of that role).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Revocation {
    pub user_id: String,
    pub role_id: String,
    pub role_name: String,
    pub organization_id: Option<String>,
    /// The instance, or `reconcile --revoke`.
    pub by: String,
    pub reason: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// A user whose last event failed for good (until a later one succeeds).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    pub user_id: String,
    pub event_id: String,
    pub reason: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// One entry of a user's history, in time order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryEntry {
    Grant(Grant),
    Revocation(Revocation),
}

impl HistoryEntry {
    pub fn at(&self) -> i64 {
        match self {
            HistoryEntry::Grant(g) => g.at,
            HistoryEntry::Revocation(r) => r.at,
        }
    }
}

/// Everything the ledger holds about one user (`explain`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UserHistory {
    /// Every grant and revocation, oldest first.
    pub entries: Vec<HistoryEntry>,
    /// The grants in force (granted and not revoked since).
    pub standing: Vec<Grant>,
    pub failure: Option<Failure>,
    /// Revocations journaled before their DELETE and not recorded yet (a run interrupted in
    /// between): the next `reconcile --apply` finishes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Revocation>,
    /// Member roles an admin removed (`organization.member.role.deleted`): not given again by
    /// a trigger.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_role_removals: Vec<Revocation>,
}

impl UserHistory {
    /// Whether the ledger has never seen this user.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.failure.is_none()
            && self.pending.is_empty()
            && self.member_role_removals.is_empty()
    }
}

/// The ledger: a connection pool to SQLite or PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    described: String,
    instance: String,
    fault: LedgerFault,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("url", &self.inner.described)
            .finish()
    }
}

impl Ledger {
    /// Connects once (creating an SQLite file if missing) and runs the embedded migrations.
    pub async fn open(settings: &LedgerSettings, instance: &str) -> Result<Ledger, LedgerError> {
        let described = settings.describe();
        let target = settings.target().map_err(|problem| LedgerError::Config {
            url: described.clone(),
            problem,
        })?;
        let backend = Backend::connect(target, &described, false).await?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                backend,
                described,
                instance: instance.to_owned(),
                fault: LedgerFault::default(),
            }),
        })
    }

    /// Opens an existing ledger as it is, for reading (`explain`, `doctor`): an SQLite file
    /// read-only and never created (a missing file is a configuration error naming the path),
    /// no migration on either backend.
    pub async fn open_existing(
        settings: &LedgerSettings,
        instance: &str,
    ) -> Result<Ledger, LedgerError> {
        let described = settings.describe();
        let target = settings.target().map_err(|problem| LedgerError::Config {
            url: described.clone(),
            problem,
        })?;
        let backend = Backend::connect(target, &described, true).await?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                backend,
                described,
                instance: instance.to_owned(),
                fault: LedgerFault::default(),
            }),
        })
    }

    /// The database in use, without password (`sqlite:///var/lib/x/ledger.db`,
    /// `postgres://user@host:5432/db`).
    pub fn describe(&self) -> String {
        self.inner.described.clone()
    }

    /// Whether several hosts can share it (PostgreSQL): readers then take a [`lease::Lease`]
    /// instead of relying on the checkpoint file's lock.
    pub fn is_shared(&self) -> bool {
        matches!(self.inner.backend, Backend::Postgres(..))
    }

    /// This instance's name, as written in its grants.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The fault state (unreachable database) the pipeline, the sources and `/readyz` read.
    pub fn fault(&self) -> &LedgerFault {
        &self.inner.fault
    }

    /// The standing grants of these users (granted and not revoked since), one query.
    pub async fn granted(
        &self,
        user_ids: &[&str],
    ) -> Result<HashMap<String, Vec<Grant>>, LedgerError> {
        self.inner.backend.granted(user_ids).await
    }

    /// Records grants in one transaction. A grant of a (user, role, organization) that is
    /// already standing is kept as it was (the first grant stays the one explained). A grant
    /// is a success: the standing failures of its users are cleared in the same transaction.
    pub async fn record_grants(&self, grants: &[Grant]) -> Result<(), LedgerError> {
        self.inner.backend.record_grants(grants).await
    }

    /// Records revocations in one transaction; each ends the standing grant of its role.
    pub async fn record_revocations(&self, revocations: &[Revocation]) -> Result<(), LedgerError> {
        self.inner.backend.record_revocations(revocations).await
    }

    /// Journals revocations before their DELETE is sent (one transaction): a run interrupted
    /// between the DELETE and [`Ledger::record_revocations`] (which clears them) leaves them
    /// pending, and the next run finishes them instead of taking them for an admin's removal.
    pub async fn begin_revocations(&self, revocations: &[Revocation]) -> Result<(), LedgerError> {
        self.inner.backend.begin_revocations(revocations).await
    }

    /// Drops pending revocations whose DELETE was refused (nothing was removed).
    pub async fn cancel_revocations(&self, revocations: &[Revocation]) -> Result<(), LedgerError> {
        self.inner.backend.cancel_revocations(revocations).await
    }

    /// Every revocation journaled and not recorded yet.
    pub async fn pending_revocations(&self) -> Result<Vec<Revocation>, LedgerError> {
        self.inner.backend.pending_revocations().await
    }

    /// Records that an admin removed the member role `removal` names (its user, role and
    /// organization; `at`), told by the event `event_id`: a trigger never gives it back.
    pub async fn record_member_role_removal(
        &self,
        removal: &Revocation,
        event_id: &str,
    ) -> Result<(), LedgerError> {
        self.inner
            .backend
            .record_member_role_removal(removal, event_id)
            .await
    }

    /// The ids of the member roles an admin removed from the user in the organization.
    pub async fn removed_member_roles(
        &self,
        user_id: &str,
        organization_id: &str,
    ) -> Result<Vec<String>, LedgerError> {
        self.inner
            .backend
            .removed_member_roles(user_id, organization_id)
            .await
    }

    /// The member roles an admin removed from these users, by user: (organization, role id).
    pub async fn member_role_removals_of(
        &self,
        user_ids: &[&str],
    ) -> Result<HashMap<String, Vec<(String, String)>>, LedgerError> {
        self.inner.backend.member_role_removals_of(user_ids).await
    }

    /// The user left the organization at `left_at` (unix milliseconds): its standing grants
    /// there from before then end (revocations `by`, `reason`) and an admin's removals there
    /// are forgotten, so a member added again gets its roles again. Returns the grants ended.
    pub async fn end_membership(
        &self,
        user_id: &str,
        organization_id: &str,
        left_at: i64,
        by: &str,
        reason: &str,
    ) -> Result<u64, LedgerError> {
        self.inner
            .backend
            .end_membership(user_id, organization_id, left_at, by, reason)
            .await
    }

    /// Records that this user's event failed for good (replacing an earlier failure).
    pub async fn record_failure(
        &self,
        user_id: &str,
        event_id: &str,
        reason: &str,
    ) -> Result<(), LedgerError> {
        self.inner
            .backend
            .record_failure(user_id, event_id, reason, now_millis())
            .await
    }

    /// Clears the standing failures of these users (a later event succeeded).
    pub async fn clear_failures(&self, user_ids: &[&str]) -> Result<(), LedgerError> {
        self.inner.backend.clear_failures(user_ids).await
    }

    /// The user was deleted at `deleted_at` (unix milliseconds; `None`: now): their grants,
    /// revocations and failure from before then are erased (privacy), so a re-created user
    /// with the same id starts anew. A deletion that arrives late (a log read behind) leaves
    /// what the re-created account received since.
    pub async fn forget_user(
        &self,
        user_id: &str,
        deleted_at: Option<i64>,
    ) -> Result<(), LedgerError> {
        self.inner
            .backend
            .forget_user(user_id, deleted_at.unwrap_or_else(now_millis))
            .await
    }

    /// Every grant and revocation of the user in time order, the standing grants and failure.
    pub async fn history(&self, user_id: &str) -> Result<UserHistory, LedgerError> {
        self.inner.backend.history(user_id).await
    }

    /// One round trip to the database (the fault probe).
    /// The roles (id, name) of every standing grant of a tenant role (`reconcile --revoke`
    /// lists their members).
    pub async fn standing_roles(&self) -> Result<Vec<(String, String)>, LedgerError> {
        self.inner.backend.standing_roles().await
    }

    /// The checkpoint a Logs API reader saved under `name` (its JSON), if any.
    pub async fn load_checkpoint(&self, name: &str) -> Result<Option<String>, LedgerError> {
        self.inner.backend.load_checkpoint(name).await
    }

    /// Saves a Logs API reader's checkpoint (its JSON) under `name`, replacing the last one.
    pub async fn save_checkpoint(&self, name: &str, value: &str) -> Result<(), LedgerError> {
        self.inner
            .backend
            .save_checkpoint(name, value, now_millis())
            .await
    }

    pub async fn ping(&self) -> Result<(), LedgerError> {
        self.inner.backend.ping().await
    }

    /// Bytes the ledger occupies on disk (the SQLite file and its WAL, or the PostgreSQL
    /// tables with their indexes): the bench's bytes per grant.
    pub async fn size_bytes(&self) -> Result<u64, LedgerError> {
        self.inner.backend.size_bytes().await
    }
}

/// Now, in unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A stable fingerprint of the `[policy]` section: SHA-256 of its canonical JSON (tables with
/// sorted keys, so formatting, comments and key order do not change it), first 16 hex digits.
/// SHA-256 rather than a fast non-cryptographic hash: it is computed once per start, and its
/// output is stable across Rust versions and platforms (std's `DefaultHasher` is not).
/// An absent section fingerprints as an empty table.
pub fn policy_fingerprint(policy_section: &toml::Value) -> String {
    let canonical = serde_json::to_string(&canonical_json(policy_section)).unwrap_or_default();
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn canonical_json(value: &toml::Value) -> serde_json::Value {
    match value {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(canonical_json).collect())
        }
        toml::Value::Table(table) => {
            let sorted: std::collections::BTreeMap<&String, serde_json::Value> =
                table.iter().map(|(k, v)| (k, canonical_json(v))).collect();
            serde_json::Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
    }
}

/// The `[policy]` fingerprint of a whole config file's text (an empty table when it has none
/// or does not parse).
pub fn policy_fingerprint_of_config(text: &str) -> String {
    let policy = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|mut t| t.remove("policy"))
        .unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
    policy_fingerprint(&policy)
}

/// This process's instance name: the host name and the process id.
pub fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{}:{}", host.trim(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated_and_described_without_password() {
        let ok = LedgerSettings {
            url: "sqlite:///var/lib/x/ledger.db".into(),
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.describe(), "sqlite:///var/lib/x/ledger.db");
        let relative = LedgerSettings {
            url: "sqlite://ledger.db".into(),
        };
        assert!(relative.validate().unwrap_err().contains("absolute"));
        let pg = LedgerSettings {
            url: "postgres://svc:s3cret@db.internal:6543/roles".into(),
        };
        assert!(pg.validate().is_ok());
        assert_eq!(pg.describe(), "postgres://svc@db.internal:6543/roles");
        assert!(!pg.describe().contains("s3cret"));
        // A password in the query is a password too: seen, and never printed.
        for url in [
            "postgres://svc@db.internal:6543/roles?password=s3cret",
            "postgres://svc@db.internal/roles?sslmode=require&PASSWORD=s3cret",
            "postgresql://svc@db.internal/roles?sslpassword=s3cret&sslmode=verify-full",
            "postgres://svc:s3cret@db.internal/roles?sslmode=require",
            "sqlite:///var/lib/x/ledger.db?password=s3cret",
        ] {
            let settings = LedgerSettings { url: url.into() };
            assert!(settings.has_password(), "{url}");
            assert!(!settings.describe().contains("s3cret"), "{url}");
            assert!(!redact_url(url).contains("s3cret"), "{}", redact_url(url));
        }
        assert_eq!(
            redact_url("postgres://svc@h/roles?sslmode=require&password=s3cret&x=1"),
            "postgres://svc@h/roles?sslmode=require&x=1"
        );
        let bad = LedgerSettings {
            url: "postgres://svc@h:notaport/roles?password=s3cret".into(),
        };
        let problem = bad.validate().unwrap_err();
        assert!(!problem.contains("s3cret"), "{problem}");
        for url in [
            "postgres://svc@db.internal/roles?sslmode=require&passfile=/run/pgpass",
            "sqlite:///var/lib/x/ledger.db",
            "postgres://svc@db.internal/roles",
        ] {
            assert!(!LedgerSettings { url: url.into() }.has_password(), "{url}");
        }
        let other = LedgerSettings {
            url: "mysql://u:pw@h/db".into(),
        };
        let problem = other.validate().unwrap_err();
        assert!(problem.contains("neither"), "{problem}");
        assert!(!problem.contains("pw"), "{problem}");
    }

    #[test]
    fn the_policy_fingerprint_ignores_formatting_and_key_order() {
        let a = "[policy]\nevents = [\"ss\"]\n[[policy.rules]]\nname = \"a\"\nassign = [\"x\"]\nwhen = { email_domain = \"e.com\", connection = \"c\" }\n";
        let b = "# comment\n[auth0]\ndomain = \"t\"\n[policy]\nevents = [ \"ss\" ]\n\n[[policy.rules]]\nassign = [\"x\"]\nname = \"a\"\n[policy.rules.when]\nconnection = \"c\"\nemail_domain = \"e.com\"\n";
        let c = "[policy]\nevents = [\"ss\"]\n[[policy.rules]]\nname = \"a\"\nassign = [\"y\"]\n";
        assert_eq!(
            policy_fingerprint_of_config(a),
            policy_fingerprint_of_config(b)
        );
        assert_ne!(
            policy_fingerprint_of_config(a),
            policy_fingerprint_of_config(c)
        );
        assert_eq!(policy_fingerprint_of_config(a).len(), 16);
    }
}

#[cfg(test)]
mod sqlite_tests {
    use super::*;

    fn grant(user: &str, role: &str, at: i64) -> Grant {
        Grant {
            user_id: user.into(),
            role_id: format!("rol_{role}"),
            role_name: role.into(),
            organization_id: None,
            rule: "staff".into(),
            trigger: "signup".into(),
            event_id: format!("log_{user}_{role}_{at}"),
            policy_fingerprint: "f00d".into(),
            instance: "test:1".into(),
            at,
            event_at: Some(at),
        }
    }

    #[tokio::test]
    async fn grants_revocations_failures_and_forgetting_on_an_sqlite_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let settings = LedgerSettings {
            url: format!("sqlite://{}", path.display()),
        };
        let ledger = Ledger::open(&settings, "test:1").await.unwrap();
        assert!(path.exists(), "the file is created");
        ledger.ping().await.unwrap();
        ledger
            .record_grants(&[
                grant("u1", "a", 1),
                grant("u1", "b", 2),
                grant("u2", "a", 3),
            ])
            .await
            .unwrap();
        // A second grant of a standing (user, role) keeps the first.
        ledger.record_grants(&[grant("u1", "a", 9)]).await.unwrap();
        let standing = ledger.granted(&["u1", "u2", "u3"]).await.unwrap();
        assert_eq!(standing["u1"].len(), 2);
        assert_eq!(standing["u2"].len(), 1);
        assert!(!standing.contains_key("u3"));
        assert_eq!(
            standing["u1"]
                .iter()
                .find(|g| g.role_name == "a")
                .unwrap()
                .at,
            1
        );
        ledger
            .record_revocations(&[Revocation {
                user_id: "u1".into(),
                role_id: "rol_a".into(),
                role_name: "a".into(),
                organization_id: None,
                by: "admin".into(),
                reason: "removed by hand".into(),
                at: 10,
            }])
            .await
            .unwrap();
        let standing = ledger.granted(&["u1"]).await.unwrap();
        assert_eq!(standing["u1"].len(), 1);
        assert_eq!(standing["u1"][0].role_name, "b");
        ledger.record_failure("u1", "log_x", "404").await.unwrap();
        let history = ledger.history("u1").await.unwrap();
        assert_eq!(history.entries.len(), 3);
        assert!(matches!(history.entries[2], HistoryEntry::Revocation(_)));
        assert_eq!(history.standing.len(), 1);
        assert_eq!(history.failure.as_ref().unwrap().event_id, "log_x");
        ledger.clear_failures(&["u1"]).await.unwrap();
        assert!(ledger.history("u1").await.unwrap().failure.is_none());
        // After a revocation the role may be granted again (reconcile --restore).
        ledger.record_grants(&[grant("u1", "a", 11)]).await.unwrap();
        assert_eq!(ledger.granted(&["u1"]).await.unwrap()["u1"].len(), 2);
        ledger.forget_user("u1", None).await.unwrap();
        assert!(ledger.history("u1").await.unwrap().is_empty());
        assert_eq!(ledger.granted(&["u2"]).await.unwrap()["u2"].len(), 1);
        assert!(ledger.size_bytes().await.unwrap() > 0);
        // Opening again runs no migration twice.
        drop(ledger);
        let again = Ledger::open(&settings, "test:2").await.unwrap();
        assert_eq!(again.granted(&["u2"]).await.unwrap()["u2"].len(), 1);
    }

    /// A rolling upgrade or a rollback: a newer version migrated the ledger with a migration
    /// this one does not know (here: version 9000, a new table and a new nullable column).
    /// This version still opens it, runs no migration twice, and writes and reads as before.
    #[tokio::test]
    async fn a_ledger_migrated_by_a_newer_version_opens_and_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let settings = LedgerSettings {
            url: format!("sqlite://{}", path.display()),
        };
        let ledger = Ledger::open(&settings, "old:1").await.unwrap();
        ledger.record_grants(&[grant("u1", "a", 1)]).await.unwrap();
        drop(ledger);
        // What a newer version's migration would leave: its own row in _sqlx_migrations, a
        // new table and a new nullable column.
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        for statement in [
            "CREATE TABLE future_things (id INTEGER PRIMARY KEY, what TEXT)",
            "ALTER TABLE grants ADD COLUMN future_note TEXT",
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) VALUES (9000, 'from the future', CURRENT_TIMESTAMP, 1, x'00', 1)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let again = Ledger::open(&settings, "old:2")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        again.record_grants(&[grant("u2", "b", 2)]).await.unwrap();
        let standing = again.granted(&["u1", "u2"]).await.unwrap();
        assert_eq!(standing.len(), 2);
        // Read-only opening (explain, doctor) works on it too.
        let read = Ledger::open_existing(&settings, "explain").await.unwrap();
        assert_eq!(read.history("u2").await.unwrap().standing.len(), 1);
    }

    #[tokio::test]
    async fn opening_an_existing_ledger_never_creates_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mistyped.db");
        let settings = LedgerSettings {
            url: format!("sqlite://{}", path.display()),
        };
        let err = Ledger::open_existing(&settings, "explain")
            .await
            .unwrap_err();
        assert!(err.is_config(), "{err}");
        assert!(
            err.to_string().contains("there is no ledger file at"),
            "{err}"
        );
        assert!(!path.exists());
        // An existing one opens read-only: a write is refused by SQLite, not done.
        drop(Ledger::open(&settings, "t").await.unwrap());
        let read = Ledger::open_existing(&settings, "explain").await.unwrap();
        assert!(read.record_grants(&[grant("u1", "a", 1)]).await.is_err());
    }

    #[tokio::test]
    async fn pending_revocations_member_role_removals_and_a_members_departure() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LedgerSettings {
            url: format!("sqlite://{}", dir.path().join("ledger.db").display()),
        };
        let ledger = Ledger::open(&settings, "test:1").await.unwrap();
        ledger.record_grants(&[grant("u1", "a", 1)]).await.unwrap();
        let revocation = Revocation {
            user_id: "u1".into(),
            role_id: "rol_a".into(),
            role_name: "a".into(),
            organization_id: None,
            by: "reconcile --revoke".into(),
            reason: "r".into(),
            at: 2,
        };
        // Journaled, then recorded: the journal is cleared with the record.
        ledger
            .begin_revocations(std::slice::from_ref(&revocation))
            .await
            .unwrap();
        assert_eq!(ledger.pending_revocations().await.unwrap().len(), 1);
        assert_eq!(ledger.history("u1").await.unwrap().pending.len(), 1);
        ledger
            .record_revocations(std::slice::from_ref(&revocation))
            .await
            .unwrap();
        assert!(ledger.pending_revocations().await.unwrap().is_empty());
        assert!(!ledger.granted(&["u1"]).await.unwrap().contains_key("u1"));
        // A refused DELETE cancels.
        ledger
            .begin_revocations(std::slice::from_ref(&revocation))
            .await
            .unwrap();
        ledger.cancel_revocations(&[revocation]).await.unwrap();
        assert!(ledger.pending_revocations().await.unwrap().is_empty());
        // A member's grant, an admin's removal, then the member leaves.
        let mut member = grant("u2", "m", 10);
        member.organization_id = Some("org_x".into());
        ledger.record_grants(&[member]).await.unwrap();
        let removal = Revocation {
            user_id: "u2".into(),
            role_id: "rol_n".into(),
            role_name: "n".into(),
            organization_id: Some("org_x".into()),
            by: "an admin".into(),
            reason: "organization.member.role.deleted".into(),
            at: 11,
        };
        ledger
            .record_member_role_removal(&removal, "evt_1")
            .await
            .unwrap();
        assert_eq!(
            ledger.removed_member_roles("u2", "org_x").await.unwrap(),
            ["rol_n"]
        );
        assert_eq!(
            ledger.member_role_removals_of(&["u2"]).await.unwrap()["u2"],
            [("org_x".to_owned(), "rol_n".to_owned())]
        );
        let ended = ledger
            .end_membership("u2", "org_x", 12, "organization.member.deleted", "left")
            .await
            .unwrap();
        assert_eq!(ended, 1);
        assert!(!ledger.granted(&["u2"]).await.unwrap().contains_key("u2"));
        assert!(ledger
            .removed_member_roles("u2", "org_x")
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_missing_folder_is_a_configuration_error() {
        let settings = LedgerSettings {
            url: "sqlite:///nonexistent-folder-for-ledger/ledger.db".into(),
        };
        let err = Ledger::open(&settings, "t").await.unwrap_err();
        assert!(err.is_config(), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
