//! The grants ledger: what this service granted, what was revoked and which users' events failed
//! for good, in SQLite (one instance) or PostgreSQL (several instances share it). The pipeline
//! asks it before granting (a role it granted is never granted again) and writes to it after
//! the Management API accepted a grant; `explain` reads it.
//!
//! [`Ledger`] is the API; [`store`] holds the SQL of both backends, [`fault`] the service-fault
//! state the pipeline and `/readyz` read (the `explain` report is `commands::explain::report`),
//! [`lease`] the readers' leases in a PostgreSQL ledger (one active reader across replicas).

mod error;
pub mod fault;
pub mod lease;
pub mod link;
mod migrations;
mod records;
mod rows;
mod settings;
mod store;

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use error::LedgerError;
pub use fault::LedgerFault;
pub use link::LedgerLink;
pub use records::{Failure, Grant, HistoryEntry, Revocation, UserHistory};
#[cfg(test)]
use settings::redact_url;
pub use settings::LedgerSettings;
pub(crate) use settings::Target;
use store::Backend;
pub use store::GrantWrites;

/// The `checkpoints` row that records when a user's deletion last reached the service (its
/// value: unix milliseconds). `doctor` warns when a ledger never saw one.
pub const DELETIONS_SEEN: &str = "deletions:last_seen";

/// Environment variable that overrides `[ledger] url` (the whole URL, which may carry the
/// PostgreSQL password: give it from a Secret, never in the file).
pub const LEDGER_URL_ENV: &str = "LEDGER_URL";

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

    /// Settles, journals and records grants in one transaction ([`GrantWrites`]): returns how
    /// many pending grants were settled as this service's grants (their role found held).
    pub async fn write_grants(&self, writes: &GrantWrites) -> Result<u64, LedgerError> {
        self.inner.backend.write_grants(writes).await
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
    async fn pending_grants_are_settled_by_the_next_read_and_ended_by_their_record() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LedgerSettings {
            url: format!("sqlite://{}", dir.path().join("ledger.db").display()),
        };
        let ledger = Ledger::open(&settings, "test:1").await.unwrap();
        let journal = |grants: Vec<Grant>| GrantWrites {
            journal: grants,
            ..GrantWrites::default()
        };
        // Journaled, then recorded: nothing pending, one standing grant.
        ledger
            .write_grants(&journal(vec![grant("u1", "a", 1)]))
            .await
            .unwrap();
        assert!(
            ledger.granted(&["u1"]).await.unwrap().is_empty(),
            "pending is no grant"
        );
        assert_eq!(ledger.history("u1").await.unwrap().pending_grants.len(), 1);
        ledger.record_grants(&[grant("u1", "a", 1)]).await.unwrap();
        let history = ledger.history("u1").await.unwrap();
        assert!(history.pending_grants.is_empty());
        assert_eq!(history.standing.len(), 1);
        // Journaled, then a crash: the next read finds b held (recorded as this service's, by
        // the journaled event) and c not held (dropped); d is journaled anew by that delivery.
        ledger
            .write_grants(&journal(vec![grant("u2", "b", 2), grant("u2", "c", 2)]))
            .await
            .unwrap();
        let completed = ledger
            .write_grants(&GrantWrites {
                settle: vec![("u2".into(), vec!["rol_b".into(), "rol_other".into()])],
                journal: vec![grant("u2", "d", 3)],
                record: Vec::new(),
            })
            .await
            .unwrap();
        assert_eq!(completed, 1);
        let standing = ledger.granted(&["u2"]).await.unwrap();
        assert_eq!(standing["u2"].len(), 1);
        assert_eq!(standing["u2"][0].event_id, "log_u2_b_2");
        let pending = ledger.history("u2").await.unwrap().pending_grants;
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].role_name, "d");
        // A deletion forgets pending grants too.
        ledger.forget_user("u2", Some(10)).await.unwrap();
        assert!(ledger.history("u2").await.unwrap().is_empty());
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
