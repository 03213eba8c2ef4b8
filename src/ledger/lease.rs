//! Leases in a PostgreSQL ledger: which process is the one active reader of a stream
//! (`auth0_events`, `auth0_logs:source`, `auth0_logs:backstop`) among the replicas sharing the
//! ledger, and the checkpoint writes only that holder may make. Storage only: the readers
//! decide what to do with a lease (`crate::source::lease`).
//!
//! A lease is a row of `leases(name, holder, expires_at)` (migration 0005). [`Lease::acquire`]
//! takes it or renews it in one statement on the database's clock: the row is written when it
//! is missing, already this holder's, or expired, and `expires_at` becomes `now() + ttl`.
//! [`Lease::release`] deletes it on a clean stop (only when it is still this holder's).
//! [`Lease::save_checkpoint`] writes a checkpoint only while this holder's lease is unexpired,
//! in the same statement that checks it (the lease row locked `FOR SHARE`, so a takeover waits
//! for a write that passed the check, and a write after a takeover sees the new holder).
//!
//! Invariants (the model test in `tests/it/reader_lease.rs` checks them against PostgreSQL):
//! - **At most one holder at any database time.** A row has one holder; it changes only when
//!   the lease is missing or expired (`expires_at < now()`), so two holders' unexpired leases
//!   never overlap.
//! - **A holder that stops renewing loses the lease after its ttl.** Nothing but its own
//!   [`Lease::acquire`] moves `expires_at` on; once past it, any other holder's acquire wins.
//! - **A holder that lost the lease stops before writing its checkpoint.** The reader stops
//!   when a renewal fails or finds the lease taken, and at the latest when its local deadline
//!   (the renewal's send time plus the ttl, which the database's `now() + ttl` never precedes)
//!   passes; and whatever it still tries to write is refused by [`Lease::save_checkpoint`]. The
//!   next holder resumes from the checkpoint of record in the ledger.
//!
//! An SQLite ledger has the table (both backends stay at the same schema version) but no
//! leases: it is one host's, and the checkpoint file's lock already keeps one reader.

use std::sync::OnceLock;
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::Row;

use super::store::Backend;
use super::{now_millis, Ledger, LedgerError};

/// Why a lease cannot be used or a statement on it failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Leases live in a PostgreSQL ledger only.
    #[error("ledger {ledger}: leases need a PostgreSQL ledger (an SQLite ledger is one host's: the checkpoint file's lock keeps one reader)")]
    NotShared { ledger: String },
    /// A ttl outside what the statement can take.
    #[error("lease {name}: the ttl must be between 1 s and 1 h, not {ttl:?}")]
    Ttl { name: String, ttl: Duration },
    /// The database failed or refused the statement (an outage of the ledger).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// What [`Lease::acquire`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    /// This holder holds the lease until the ttl after the statement (database time).
    /// `previous`: the row's holder before (`None`: no row; this holder: a renewal; another: a
    /// lease it released or let expire).
    Held { previous: Option<String> },
    /// Another holder holds it, unexpired (`None` when it was released meanwhile).
    Taken { holder: Option<String> },
}

/// One named lease, as one holder sees it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lease {
    ledger: Ledger,
    name: String,
    holder: String,
    ttl: Duration,
}

/// The longest ttl accepted.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// The holder id of this process's `instance` (its host and pid, `Config::instance`): the
/// instance and a random suffix drawn once per process, so that a process that restarts with
/// the same pid (a container's pid 1) is a new holder.
pub fn holder_id(instance: &str) -> String {
    static SUFFIX: OnceLock<u32> = OnceLock::new();
    format!("{instance}:{:08x}", SUFFIX.get_or_init(rand::random::<u32>))
}

impl Lease {
    /// The lease `name` as `holder` takes it, for `ttl` at a time. Refused on an SQLite ledger.
    pub fn new(
        ledger: &Ledger,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, LeaseError> {
        if !ledger.is_shared() {
            return Err(LeaseError::NotShared {
                ledger: ledger.describe(),
            });
        }
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            return Err(LeaseError::Ttl {
                name: name.to_owned(),
                ttl,
            });
        }
        Ok(Lease {
            ledger: ledger.clone(),
            name: name.to_owned(),
            holder: holder.to_owned(),
            ttl,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn pool(&self) -> Result<&PgPool, LeaseError> {
        match &self.ledger.inner.backend {
            Backend::Postgres(pool, _) => Ok(pool),
            Backend::Sqlite(..) => Err(LeaseError::NotShared {
                ledger: self.ledger.describe(),
            }),
        }
    }

    fn failed(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> LeaseError + '_ {
        move |source| {
            LeaseError::from(LedgerError::of_statement(
                &self.ledger.inner.described,
                what,
                source,
            ))
        }
    }

    /// Takes the lease, or renews it when it is already this holder's: one statement, on the
    /// database's clock. The row is written only when it is missing, this holder's, or expired.
    pub async fn acquire(&self) -> Result<Acquisition, LeaseError> {
        let row = sqlx::query(
            "WITH prior AS (SELECT holder FROM leases WHERE name = $1), \
             taken AS ( \
                 INSERT INTO leases (name, holder, expires_at) \
                 VALUES ($1, $2, now() + make_interval(secs => $3::float8)) \
                 ON CONFLICT (name) DO UPDATE \
                     SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE leases.holder = excluded.holder OR leases.expires_at < now() \
                 RETURNING holder) \
             SELECT (SELECT holder FROM taken) AS taken, (SELECT holder FROM prior) AS prior",
        )
        .bind(&self.name)
        .bind(&self.holder)
        .bind(self.ttl.as_secs_f64())
        .fetch_one(self.pool()?)
        .await
        .map_err(self.failed("take or renew a reader's lease"))?;
        let taken: Option<String> = row
            .try_get("taken")
            .map_err(self.failed("read a reader's lease"))?;
        let prior: Option<String> = row
            .try_get("prior")
            .map_err(self.failed("read a reader's lease"))?;
        Ok(match taken {
            Some(holder) if holder == self.holder => Acquisition::Held { previous: prior },
            _ => Acquisition::Taken { holder: prior },
        })
    }

    /// Gives the lease up (a clean stop): deleted when it is still this holder's, so a standby
    /// takes it at its next try instead of after the ttl. Whether it was this holder's.
    pub async fn release(&self) -> Result<bool, LeaseError> {
        let done = sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(&self.name)
            .bind(&self.holder)
            .execute(self.pool()?)
            .await
            .map_err(self.failed("release a reader's lease"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Saves the checkpoint `name` (its JSON) only while this holder's lease is unexpired, in
    /// one statement: `false` (nothing written) when the lease is not this holder's any more.
    pub async fn save_checkpoint(&self, name: &str, value: &str) -> Result<bool, LeaseError> {
        let done = sqlx::query(
            "INSERT INTO checkpoints (name, value, at_ms) \
             SELECT $1, $2, $3 WHERE EXISTS ( \
                 SELECT 1 FROM leases \
                 WHERE name = $4 AND holder = $5 AND expires_at > now() FOR SHARE) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, at_ms = excluded.at_ms",
        )
        .bind(name)
        .bind(value)
        .bind(now_millis())
        .bind(&self.name)
        .bind(&self.holder)
        .execute(self.pool()?)
        .await
        .map_err(self.failed("save a reader's checkpoint under its lease"))?;
        Ok(done.rows_affected() > 0)
    }
}
