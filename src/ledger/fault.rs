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

/// An error and its causes, `: `-separated (the database's own words at the end).
pub fn error_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
