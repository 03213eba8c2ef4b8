//! The ledger's service-fault state: set when a statement fails (the database is down, or
//! refuses writes), cleared when a ping answers again. While set, events wait (nothing is
//! acknowledged), sources pause intake and `/readyz` names the ledger.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Whether the ledger is failing now, and why.
#[derive(Debug, Default)]
pub struct LedgerFault {
    failing: AtomicBool,
    said: Mutex<Option<String>>,
}

impl LedgerFault {
    /// Whether the ledger is failing now.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// What the last failure said, while failing.
    pub fn blocked(&self) -> Option<String> {
        if !self.is_failing() {
            return None;
        }
        self.said
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A statement failed: returns whether this starts a failing period.
    pub fn set_failing(&self, said: String) -> bool {
        *self
            .said
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(said);
        !self.failing.swap(true, Ordering::SeqCst)
    }

    /// The database answered: returns whether this ends a failing period.
    pub fn set_ok(&self) -> bool {
        self.failing.swap(false, Ordering::SeqCst)
    }
}

/// What a failed statement means, from the database's own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The database refuses this statement for the data it carries (PostgreSQL SQLSTATE
    /// classes 22 data exception, 23 integrity constraint, 54 program limit; SQLite TOOBIG,
    /// CONSTRAINT, MISMATCH): no retry can fix it. The item fails, never the service.
    Refused,
    /// A conflict with a concurrent transaction (PostgreSQL 40001 serialization failure,
    /// 40P01 deadlock; SQLite BUSY, LOCKED): retried quietly, no fault.
    Conflict,
    /// The database itself fails (connection lost or refused, pool timeout, TLS, protocol,
    /// PostgreSQL classes 08, 53, 57P, a missing table, …): the service fault.
    Unavailable,
}

/// PostgreSQL SQLSTATE classes of a refusal (see [`FailureKind::Refused`]).
const PG_REFUSED_CLASSES: [&str; 3] = ["22", "23", "54"];
/// PostgreSQL SQLSTATEs of a conflict (see [`FailureKind::Conflict`]).
const PG_CONFLICTS: [&str; 2] = ["40001", "40P01"];
/// SQLite primary result codes of a refusal: TOOBIG, CONSTRAINT, MISMATCH.
const SQLITE_REFUSED: [i64; 3] = [18, 19, 20];
/// SQLite primary result codes of a conflict: BUSY, LOCKED.
const SQLITE_CONFLICTS: [i64; 2] = [5, 6];

/// What the failure of a statement means.
pub fn classify(err: &sqlx::Error) -> FailureKind {
    let sqlx::Error::Database(db) = err else {
        // I/O, pool timed out or closed, TLS, protocol, decoding a row, …
        return FailureKind::Unavailable;
    };
    let Some(code) = db.code() else {
        return FailureKind::Unavailable;
    };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        classify_sqlite(&code)
    } else {
        classify_sqlstate(&code)
    }
}

/// [`classify`] of a PostgreSQL SQLSTATE.
pub fn classify_sqlstate(sqlstate: &str) -> FailureKind {
    if PG_CONFLICTS.contains(&sqlstate) {
        FailureKind::Conflict
    } else if PG_REFUSED_CLASSES.iter().any(|c| sqlstate.starts_with(c)) {
        FailureKind::Refused
    } else {
        FailureKind::Unavailable
    }
}

/// [`classify`] of an SQLite (extended) result code, as sqlx gives it (decimal text).
pub fn classify_sqlite(code: &str) -> FailureKind {
    let Ok(extended) = code.parse::<i64>() else {
        return FailureKind::Unavailable;
    };
    let primary = extended & 0xff;
    if SQLITE_CONFLICTS.contains(&primary) {
        FailureKind::Conflict
    } else if SQLITE_REFUSED.contains(&primary) {
        FailureKind::Refused
    } else {
        FailureKind::Unavailable
    }
}

/// The ledger's say on `/readyz`: not ready while its database fails.
impl crate::server::ReadinessProbe for super::Ledger {
    fn not_ready(&self) -> Vec<String> {
        match self.fault().blocked() {
            Some(said) => vec![format!(
                "the ledger fails: {said}; to fix: bring its database back or fix [ledger] url (events wait, intake paused, nothing lost)"
            )],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgresql_refusals_conflicts_and_outages_are_told_apart() {
        // Data the database cannot take: a NUL (22021), a value too long (22001), a bad
        // number (22003), a constraint (23505), an index row too large (54000).
        for code in [
            "22021", "22001", "22003", "23505", "23502", "54000", "54001",
        ] {
            assert_eq!(classify_sqlstate(code), FailureKind::Refused, "{code}");
        }
        for code in ["40001", "40P01"] {
            assert_eq!(classify_sqlstate(code), FailureKind::Conflict, "{code}");
        }
        // Connection, resources, shutdown, a missing table, a read-only replica, an
        // authentication failure: the database or the deployment, not the record.
        for code in [
            "08006", "08001", "53300", "53100", "57P01", "57P03", "42P01", "25006", "28P01",
            "40003", "XX000",
        ] {
            assert_eq!(classify_sqlstate(code), FailureKind::Unavailable, "{code}");
        }
    }

    #[test]
    fn sqlite_refusals_conflicts_and_outages_are_told_apart() {
        // TOOBIG, CONSTRAINT (and CONSTRAINT_UNIQUE 2067, CONSTRAINT_NOTNULL 1299), MISMATCH.
        for code in ["18", "19", "2067", "1299", "20"] {
            assert_eq!(classify_sqlite(code), FailureKind::Refused, "{code}");
        }
        // BUSY, BUSY_SNAPSHOT (517), LOCKED, LOCKED_SHAREDCACHE (262).
        for code in ["5", "517", "6", "262"] {
            assert_eq!(classify_sqlite(code), FailureKind::Conflict, "{code}");
        }
        // IOERR (10, IOERR_WRITE 778), CORRUPT, FULL, CANTOPEN, READONLY, not a number.
        for code in ["10", "778", "11", "13", "14", "8", "x"] {
            assert_eq!(classify_sqlite(code), FailureKind::Unavailable, "{code}");
        }
    }

    #[test]
    fn errors_without_a_database_code_are_outages() {
        assert_eq!(
            classify(&sqlx::Error::PoolTimedOut),
            FailureKind::Unavailable
        );
        assert_eq!(classify(&sqlx::Error::PoolClosed), FailureKind::Unavailable);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(classify(&sqlx::Error::Io(io)), FailureKind::Unavailable);
    }
}
