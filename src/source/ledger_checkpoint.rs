//! A tenant reader's checkpoint as the ledger keeps it (the Logs API reader, the backstop, the
//! Events API reader): a copy a reader without its file (a new pod without the old volume)
//! resumes from and, under a lease (replicas sharing a PostgreSQL ledger, [`super::lease`]),
//! the checkpoint of record: read first, and written only while the lease holds.
//!
//! The wiring hands each reader its [`LedgerCheckpoint`] at construction (none without a
//! ledger); the reader keeps its own file and its rules for what it resumes from.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::lease::ReaderLease;
use crate::ledger::LedgerLink;
use crate::metrics::Metrics;

/// A reader's checkpoint in the ledger, under `name`, and the lease the reader runs under.
pub struct LedgerCheckpoint {
    link: LedgerLink,
    /// The checkpoint's name in the ledger (and its lease's).
    name: String,
    metrics: Arc<Metrics>,
    /// With a PostgreSQL ledger: the lease that makes this the one active reader.
    lease: Option<Arc<ReaderLease>>,
}

impl LedgerCheckpoint {
    pub fn new(link: LedgerLink, name: impl Into<String>, metrics: Arc<Metrics>) -> Self {
        LedgerCheckpoint {
            link,
            name: name.into(),
            metrics,
            lease: None,
        }
    }

    /// The same checkpoint, of record: the reader reads only while it holds `lease`, and the
    /// checkpoint is written only while it does.
    pub fn with_lease(mut self, lease: Arc<ReaderLease>) -> Self {
        self.lease = Some(lease);
        self
    }

    pub fn lease(&self) -> Option<&Arc<ReaderLease>> {
        self.lease.as_ref()
    }

    /// Whether this is the checkpoint of record (a lease): read before the reader's file.
    pub fn is_of_record(&self) -> bool {
        self.lease.is_some()
    }

    /// Whether the lease the reader runs under was lost: it stops at once, saves nothing.
    pub fn lease_lost(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| !l.is_held())
    }

    /// The ledger, for logs (no password).
    pub fn describe(&self) -> String {
        self.link.ledger().describe()
    }

    /// The checkpoint kept, read as `T`: `None` when none is kept or the ledger refused the
    /// read (logged by the link), `Some(Err)` when what is kept does not read as `T`. Waits
    /// while the ledger fails.
    pub async fn load<T: DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        let name = self.name.as_str();
        let saved = self
            .link
            .until_ok(
                &self.metrics,
                "read the reader's checkpoint",
                |l| async move { l.load_checkpoint(name).await },
            )
            .await
            .ok()??;
        Some(serde_json::from_str(&saved))
    }

    /// Saves `checkpoint` (after the reader's file). Waits while the ledger fails (a service
    /// fault: nothing further is read meanwhile). Under a lease, only while it holds: `false`
    /// when the lease is lost (the reader stops). A write the ledger refuses is logged by the
    /// link: the file keeps the checkpoint.
    pub async fn save<T: Serialize>(&self, checkpoint: &T) -> bool {
        let Ok(value) = serde_json::to_string(checkpoint) else {
            return true;
        };
        if let Some(lease) = &self.lease {
            return lease.save_checkpoint(&self.name, &value).await;
        }
        let (name, value) = (self.name.as_str(), value.as_str());
        self.link
            .until_ok(
                &self.metrics,
                "save the reader's checkpoint",
                |l| async move { l.save_checkpoint(name, value).await },
            )
            .await
            .ok();
        true
    }
}
