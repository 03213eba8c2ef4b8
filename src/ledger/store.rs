//! The ledger's SQL on both backends: connecting, migrating (`migrations.rs` holds them), and
//! each statement (rows read back in `rows.rs`).
//! Queries are checked at run time (no database at build time); the statements are the same
//! text on SQLite and PostgreSQL (`$N` placeholders, `ON CONFLICT DO NOTHING`), built once per
//! backend by [`with_pool!`].

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use super::migrations::{Embedded, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use super::rows::{grant_from_row, removal_from_row, revocation_from_row};
use super::{Failure, Grant, HistoryEntry, LedgerError, Revocation, Target, UserHistory};

/// Rows per multi-row statement (12 binds each: well under SQLite's 32,766 and PostgreSQL's
/// 65,535 parameters).
///
/// A statement built for a number of rows or ids (every `QueryBuilder` here) is not kept
/// prepared (`persistent(false)`): each size is a statement text of its own, and sqlx's cache
/// kept up to 100 of them per connection, SQLite's compiled programs of a few hundred rows
/// weighing tens to hundreds of KB each (13.5 MB of heap at the ledger bench's peak, before).
const ROWS_PER_STATEMENT: usize = 500;
/// How long a statement waits for a connection (or SQLite's write lock) before the database
/// counts as unreachable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) enum Backend {
    Sqlite(SqlitePool, std::path::PathBuf, String),
    Postgres(PgPool, String),
}

/// Runs `$body` with `$pool` bound to the backend's pool and `$db` naming its database type.
macro_rules! with_pool {
    ($backend:expr, $pool:ident, $db:ident => $body:expr) => {
        match $backend {
            Backend::Sqlite($pool, _, _) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            Backend::Postgres($pool, _) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}

fn org_key(organization_id: &Option<String>) -> &str {
    organization_id.as_deref().unwrap_or("")
}

pub(super) fn org_value(stored: String) -> Option<String> {
    Some(stored).filter(|o| !o.is_empty())
}

// The organization membership statements, and the grants journaled before their write (use
// `with_pool!` above).
mod members;
mod pending;
pub use pending::GrantWrites;

impl Backend {
    fn url(&self) -> &str {
        match self {
            Backend::Sqlite(_, _, url) | Backend::Postgres(_, url) => url,
        }
    }

    /// The error of a failed statement: unreachable, refused (this record's data) or a
    /// conflict, from what the database said.
    fn unreachable(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> LedgerError + '_ {
        move |source| LedgerError::of_statement(self.url(), what, source)
    }

    /// Connects; `read_only` (`explain`, `doctor`): an existing ledger as it is (no file
    /// created, no migration, SQLite opened read-only), else created and migrated.
    pub(super) async fn connect(
        target: Target,
        url: &str,
        read_only: bool,
    ) -> Result<Backend, LedgerError> {
        let backend = match target {
            Target::Sqlite(path) if read_only => {
                if !path.is_file() {
                    return Err(LedgerError::Config {
                        url: url.to_owned(),
                        problem: format!(
                            "there is no ledger file at {} (read as it is, never created here: check the path; `run` creates it at start)",
                            path.display()
                        ),
                    });
                }
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .read_only(true)
                    .create_if_missing(false)
                    .busy_timeout(ACQUIRE_TIMEOUT);
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(|source| LedgerError::Config {
                        url: url.to_owned(),
                        problem: format!("cannot open the file read-only: {source}"),
                    })?;
                Backend::Sqlite(pool, path, url.to_owned())
            }
            Target::Sqlite(path) => {
                let folder = path.parent().unwrap_or(Path::new("/"));
                if !folder.is_dir() {
                    return Err(LedgerError::Config {
                        url: url.to_owned(),
                        problem: format!(
                            "the folder {} does not exist (the file is created, its folder is not)",
                            folder.display()
                        ),
                    });
                }
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    // WAL: readers never wait for the writer. NORMAL: a commit survives a
                    // crash of this process; a power loss may lose the last commits (see
                    // docs/ledger.md).
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(ACQUIRE_TIMEOUT);
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(|source| match &source {
                        sqlx::Error::Database(_) | sqlx::Error::Io(_) => LedgerError::Config {
                            url: url.to_owned(),
                            problem: format!("cannot open the file: {source}"),
                        },
                        _ => LedgerError::Unreachable {
                            url: url.to_owned(),
                            what: "open the file",
                            source,
                        },
                    })?;
                Backend::Sqlite(pool, path, url.to_owned())
            }
            Target::Postgres(options) => {
                // One plain connection first: the pool would hide the cause (refused, bad
                // password, no such database) behind its own acquire timeout.
                let probe =
                    <sqlx::postgres::PgConnection as sqlx::Connection>::connect_with(&options)
                        .await
                        .map_err(|source| LedgerError::Unreachable {
                            url: url.to_owned(),
                            what: "connect",
                            source,
                        })?;
                let _ = sqlx::Connection::close(probe).await;
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(*options)
                    .await
                    .map_err(|source| LedgerError::Unreachable {
                        url: url.to_owned(),
                        what: "connect",
                        source,
                    })?;
                Backend::Postgres(pool, url.to_owned())
            }
        };
        if !read_only {
            backend.migrate().await?;
        }
        Ok(backend)
    }

    async fn migrate(&self) -> Result<(), LedgerError> {
        let migrations = match self {
            Backend::Sqlite(..) => SQLITE_MIGRATIONS,
            Backend::Postgres(..) => POSTGRES_MIGRATIONS,
        };
        let mut migrator = Migrator::new(Embedded(migrations))
            .await
            .map_err(|source| LedgerError::Migrate {
                url: self.url().to_owned(),
                source,
            })?;
        // A newer version may have applied migrations this one does not know (a rolling
        // upgrade, a rollback): they are additive only (new tables, new nullable columns), so
        // this version's statements still work and it runs beside them.
        migrator.set_ignore_missing(true);
        // PostgreSQL: an advisory lock, so instances starting together migrate once.
        let run = with_pool!(self, pool, _Db => migrator.run(pool).await);
        run.map_err(|source| LedgerError::Migrate {
            url: self.url().to_owned(),
            source,
        })
    }

    pub(super) async fn ping(&self) -> Result<(), LedgerError> {
        with_pool!(self, pool, _Db => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
            .map_err(self.unreachable("answer a ping"))
    }

    pub(super) async fn granted(
        &self,
        user_ids: &[&str],
    ) -> Result<HashMap<String, Vec<Grant>>, LedgerError> {
        let mut out: HashMap<String, Vec<Grant>> = HashMap::new();
        for chunk in user_ids.chunks(ROWS_PER_STATEMENT * 10) {
            let rows = with_pool!(self, pool, Db => {
                let mut q = QueryBuilder::<Db>::new(
                    "SELECT user_id, role_id, role_name, organization_id, rule, trigger_name, event_id, policy_fingerprint, instance, at_ms, event_at_ms FROM grants WHERE revoked = 0 AND user_id IN (",
                );
                let mut list = q.separated(", ");
                for user in chunk {
                    list.push_bind(*user);
                }
                q.push(")");
                q.build()
                    .persistent(false)
                    .fetch_all(pool)
                    .await
                    .map_err(self.unreachable("look up standing grants"))?
                    .iter()
                    .map(grant_from_row)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(self.unreachable("read a standing grant"))?
            });
            for grant in rows {
                out.entry(grant.user_id.clone()).or_default().push(grant);
            }
        }
        Ok(out)
    }

    pub(super) async fn record_grants(&self, grants: &[Grant]) -> Result<(), LedgerError> {
        self.write_grants(&GrantWrites::record(grants))
            .await
            .map(|_| ())
    }

    pub(super) async fn record_revocations(
        &self,
        revocations: &[Revocation],
    ) -> Result<(), LedgerError> {
        if revocations.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool, Db => {
            let mut tx = pool.begin().await.map_err(self.unreachable("begin a transaction"))?;
            for r in revocations {
                sqlx::query::<Db>(
                    "UPDATE grants SET revoked = 1 WHERE user_id = $1 AND role_id = $2 AND organization_id = $3 AND revoked = 0",
                )
                .bind(r.user_id.as_str())
                .bind(r.role_id.as_str())
                .bind(org_key(&r.organization_id))
                .execute(&mut *tx)
                .await
                .map_err(self.unreachable("end a standing grant"))?;
                // A revocation journaled before its DELETE is done with its record.
                sqlx::query::<Db>(
                    "DELETE FROM pending_revocations WHERE user_id = $1 AND role_id = $2 AND organization_id = $3",
                )
                .bind(r.user_id.as_str())
                .bind(r.role_id.as_str())
                .bind(org_key(&r.organization_id))
                .execute(&mut *tx)
                .await
                .map_err(self.unreachable("finish a pending revocation"))?;
            }
            for chunk in revocations.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<Db>::new(
                    "INSERT INTO revocations (user_id, role_id, role_name, organization_id, revoked_by, reason, at_ms) ",
                );
                q.push_values(chunk, |mut row, r| {
                    row.push_bind(r.user_id.as_str())
                        .push_bind(r.role_id.as_str())
                        .push_bind(r.role_name.as_str())
                        .push_bind(org_key(&r.organization_id))
                        .push_bind(r.by.as_str())
                        .push_bind(r.reason.as_str())
                        .push_bind(r.at);
                });
                q.build()
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.unreachable("record revocations"))?;
            }
            tx.commit().await.map_err(self.unreachable("commit revocations"))
        })
    }

    pub(super) async fn record_failure(
        &self,
        user_id: &str,
        event_id: &str,
        reason: &str,
        at: i64,
    ) -> Result<(), LedgerError> {
        with_pool!(self, pool, Db => {
            sqlx::query::<Db>(
                "INSERT INTO failures (user_id, event_id, reason, at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET event_id = excluded.event_id, reason = excluded.reason, at_ms = excluded.at_ms",
            )
            .bind(user_id)
            .bind(event_id)
            .bind(reason)
            .bind(at)
            .execute(pool)
            .await
            .map(|_| ())
        })
        .map_err(self.unreachable("record a failure"))
    }

    pub(super) async fn clear_failures(&self, user_ids: &[&str]) -> Result<(), LedgerError> {
        for chunk in user_ids.chunks(ROWS_PER_STATEMENT * 10) {
            if chunk.is_empty() {
                continue;
            }
            with_pool!(self, pool, Db => {
                let mut q = QueryBuilder::<Db>::new("DELETE FROM failures WHERE user_id IN (");
                let mut list = q.separated(", ");
                for user in chunk {
                    list.push_bind(*user);
                }
                q.push(")");
                q.build()
                    .persistent(false)
                    .execute(pool)
                    .await
                    .map_err(self.unreachable("clear failures"))?;
            });
        }
        Ok(())
    }

    /// Erases what the ledger holds of `user_id` from before `deleted_at` (a grant by its
    /// event's time when known, else when it was recorded).
    pub(super) async fn forget_user(
        &self,
        user_id: &str,
        deleted_at: i64,
    ) -> Result<(), LedgerError> {
        with_pool!(self, pool, Db => {
            let mut tx = pool.begin().await.map_err(self.unreachable("begin a transaction"))?;
            for statement in [
                "DELETE FROM grants WHERE user_id = $1 AND COALESCE(event_at_ms, at_ms) <= $2",
                "DELETE FROM revocations WHERE user_id = $1 AND at_ms <= $2",
                "DELETE FROM failures WHERE user_id = $1 AND at_ms <= $2",
                "DELETE FROM pending_revocations WHERE user_id = $1 AND at_ms <= $2",
                "DELETE FROM pending_grants WHERE user_id = $1 AND COALESCE(event_at_ms, at_ms) <= $2",
                "DELETE FROM member_role_removals WHERE user_id = $1 AND at_ms <= $2",
            ] {
                sqlx::query::<Db>(statement)
                    .bind(user_id)
                    .bind(deleted_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.unreachable("forget a deleted user"))?;
            }
            tx.commit().await.map_err(self.unreachable("commit forgetting a user"))
        })
    }

    pub(super) async fn history(&self, user_id: &str) -> Result<UserHistory, LedgerError> {
        let (grants, standing, revocations, failure, pending, member_role_removals) = with_pool!(self, pool, Db => {
            let rows = sqlx::query::<Db>(
                "SELECT user_id, role_id, role_name, organization_id, rule, trigger_name, event_id, policy_fingerprint, instance, at_ms, event_at_ms, revoked FROM grants WHERE user_id = $1 ORDER BY at_ms, id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await
            .map_err(self.unreachable("read the user's grants"))?;
            let mut grants = Vec::new();
            let mut standing = Vec::new();
            for row in &rows {
                let grant = grant_from_row(row).map_err(self.unreachable("read a grant"))?;
                let revoked: i64 = match row.try_get::<i64, _>("revoked") {
                    Ok(v) => v,
                    Err(_) => i64::from(
                        row.try_get::<i16, _>("revoked")
                            .map_err(self.unreachable("read a grant"))?,
                    ),
                };
                if revoked == 0 {
                    standing.push(grant.clone());
                }
                grants.push(grant);
            }
            let revocations = sqlx::query::<Db>(
                "SELECT user_id, role_id, role_name, organization_id, revoked_by, reason, at_ms FROM revocations WHERE user_id = $1 ORDER BY at_ms, id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await
            .map_err(self.unreachable("read the user's revocations"))?
            .iter()
            .map(|row| -> Result<Revocation, sqlx::Error> {
                Ok(Revocation {
                    user_id: row.try_get("user_id")?,
                    role_id: row.try_get("role_id")?,
                    role_name: row.try_get("role_name")?,
                    organization_id: org_value(row.try_get("organization_id")?),
                    by: row.try_get("revoked_by")?,
                    reason: row.try_get("reason")?,
                    at: row.try_get("at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.unreachable("read a revocation"))?;
            let failure = sqlx::query::<Db>(
                "SELECT user_id, event_id, reason, at_ms FROM failures WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await
            .map_err(self.unreachable("read the user's failure"))?
            .map(|row| -> Result<Failure, sqlx::Error> {
                Ok(Failure {
                    user_id: row.try_get("user_id")?,
                    event_id: row.try_get("event_id")?,
                    reason: row.try_get("reason")?,
                    at: row.try_get("at_ms")?,
                })
            })
            .transpose()
            .map_err(self.unreachable("read a failure"))?;
            let pending = sqlx::query::<Db>(
                "SELECT user_id, role_id, role_name, organization_id, revoked_by, reason, at_ms FROM pending_revocations WHERE user_id = $1 ORDER BY at_ms, role_id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await
            .map_err(self.unreachable("read the user's pending revocations"))?
            .iter()
            .map(revocation_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.unreachable("read a pending revocation"))?;
            let removals = sqlx::query::<Db>(
                "SELECT user_id, role_id, role_name, organization_id, event_id, at_ms FROM member_role_removals WHERE user_id = $1 ORDER BY at_ms, role_id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await
            .map_err(self.unreachable("read the user's member role removals"))?
            .iter()
            .map(removal_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.unreachable("read a member role removal"))?;
            (grants, standing, revocations, failure, pending, removals)
        });
        let pending_grants = self.pending_grants(user_id).await?;
        let mut entries: Vec<HistoryEntry> = grants
            .into_iter()
            .map(HistoryEntry::Grant)
            .chain(revocations.into_iter().map(HistoryEntry::Revocation))
            .collect();
        // Stable: at equal times a grant stays before the revocation that ended it.
        entries.sort_by_key(HistoryEntry::at);
        Ok(UserHistory {
            entries,
            standing,
            failure,
            pending,
            pending_grants,
            member_role_removals,
        })
    }

    /// Journals revocations before their DELETE (one transaction); a row already pending stays.
    pub(super) async fn begin_revocations(
        &self,
        revocations: &[Revocation],
    ) -> Result<(), LedgerError> {
        if revocations.is_empty() {
            return Ok(());
        }
        with_pool!(self, pool, Db => {
            let mut tx = pool.begin().await.map_err(self.unreachable("begin a transaction"))?;
            for chunk in revocations.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<Db>::new(
                    "INSERT INTO pending_revocations (user_id, role_id, role_name, organization_id, revoked_by, reason, at_ms) ",
                );
                q.push_values(chunk, |mut row, r| {
                    row.push_bind(r.user_id.as_str())
                        .push_bind(r.role_id.as_str())
                        .push_bind(r.role_name.as_str())
                        .push_bind(org_key(&r.organization_id))
                        .push_bind(r.by.as_str())
                        .push_bind(r.reason.as_str())
                        .push_bind(r.at);
                });
                q.push(" ON CONFLICT DO NOTHING");
                q.build()
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.unreachable("journal revocations"))?;
            }
            tx.commit().await.map_err(self.unreachable("commit pending revocations"))
        })
    }

    /// Drops pending revocations whose DELETE was refused (nothing was removed).
    pub(super) async fn cancel_revocations(
        &self,
        revocations: &[Revocation],
    ) -> Result<(), LedgerError> {
        with_pool!(self, pool, Db => {
            let mut tx = pool.begin().await.map_err(self.unreachable("begin a transaction"))?;
            for r in revocations {
                sqlx::query::<Db>(
                    "DELETE FROM pending_revocations WHERE user_id = $1 AND role_id = $2 AND organization_id = $3",
                )
                .bind(r.user_id.as_str())
                .bind(r.role_id.as_str())
                .bind(org_key(&r.organization_id))
                .execute(&mut *tx)
                .await
                .map_err(self.unreachable("cancel a pending revocation"))?;
            }
            tx.commit().await.map_err(self.unreachable("commit cancelled revocations"))
        })
    }

    /// Every pending revocation, by user and time.
    pub(super) async fn pending_revocations(&self) -> Result<Vec<Revocation>, LedgerError> {
        with_pool!(self, pool, Db => {
            sqlx::query::<Db>(
                "SELECT user_id, role_id, role_name, organization_id, revoked_by, reason, at_ms FROM pending_revocations ORDER BY user_id, at_ms, role_id",
            )
            .fetch_all(pool)
            .await
            .map_err(self.unreachable("list pending revocations"))?
            .iter()
            .map(revocation_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.unreachable("read a pending revocation"))
        })
    }

    /// The distinct (role id, role name) of the standing grants of tenant roles.
    pub(super) async fn standing_roles(&self) -> Result<Vec<(String, String)>, LedgerError> {
        let rows = with_pool!(self, pool, Db => {
            sqlx::query(
                "SELECT role_id, MAX(role_name) AS role_name FROM grants WHERE revoked = 0 AND organization_id = '' GROUP BY role_id ORDER BY role_id",
            )
            .fetch_all(pool)
            .await
            .map_err(self.unreachable("list the roles granted"))?
            .iter()
            .map(|row| Ok((row.try_get("role_id")?, row.try_get("role_name")?)))
            .collect::<Result<Vec<(String, String)>, sqlx::Error>>()
            .map_err(self.unreachable("read a role granted"))?
        });
        Ok(rows)
    }

    /// The value saved under `name` by [`Backend::save_checkpoint`].
    pub(super) async fn load_checkpoint(&self, name: &str) -> Result<Option<String>, LedgerError> {
        with_pool!(self, pool, Db => {
            let row = sqlx::query::<Db>("SELECT value FROM checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(self.unreachable("read a checkpoint"))?;
            match row {
                Some(row) => row
                    .try_get::<String, _>("value")
                    .map(Some)
                    .map_err(self.unreachable("read a checkpoint")),
                None => Ok(None),
            }
        })
    }

    pub(super) async fn save_checkpoint(
        &self,
        name: &str,
        value: &str,
        at_ms: i64,
    ) -> Result<(), LedgerError> {
        with_pool!(self, pool, Db => {
            sqlx::query::<Db>(
                "INSERT INTO checkpoints (name, value, at_ms) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET value = excluded.value, at_ms = excluded.at_ms",
            )
            .bind(name)
            .bind(value)
            .bind(at_ms)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(self.unreachable("save a checkpoint"))
        })
    }

    pub(super) async fn size_bytes(&self) -> Result<u64, LedgerError> {
        match self {
            Backend::Sqlite(pool, path, _) => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(pool)
                    .await
                    .map_err(self.unreachable("checkpoint"))?;
                let mut total = 0;
                for suffix in ["", "-wal"] {
                    let mut name = path.clone().into_os_string();
                    name.push(suffix);
                    total += std::fs::metadata(&name).map(|m| m.len()).unwrap_or(0);
                }
                Ok(total)
            }
            Backend::Postgres(pool, _) => {
                let row = sqlx::query(
                    "SELECT (pg_total_relation_size('grants') + pg_total_relation_size('revocations') + pg_total_relation_size('failures'))::BIGINT AS bytes",
                )
                .fetch_one(pool)
                .await
                .map_err(self.unreachable("measure the tables"))?;
                let bytes: i64 = row.try_get("bytes").map_err(self.unreachable("measure"))?;
                Ok(u64::try_from(bytes).unwrap_or(0))
            }
        }
    }
}
