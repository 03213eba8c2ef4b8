//! What went wrong with the ledger (`LedgerError`): each names the database (without
//! password) and the step.

use super::fault;

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
