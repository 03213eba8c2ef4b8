//! The Events API reader's checkpoint in the ledger, when one is configured (handed in as a
//! [`crate::source::ledger_checkpoint::LedgerCheckpoint`]): a copy a reader without its file
//! resumes from, and, under a lease (replicas sharing a PostgreSQL ledger), the checkpoint of
//! record: read first, and written only while the lease holds. What it may resume from (a
//! usable offset) is decided here.

use crate::shutdown::Shutdown;

use super::{checkpoint, EventsReader};

/// The checkpoint's name in the ledger (and its lease's).
pub const LEDGER_NAME: &str = "auth0_events";

impl EventsReader {
    /// [`EventsReader::ledger_checkpoint`], or `None` when `shutdown` comes first.
    pub(super) async fn ledger_checkpoint_until(
        &self,
        shutdown: &Shutdown,
    ) -> Option<Option<checkpoint::EventsCheckpoint>> {
        tokio::select! {
            saved = self.ledger_checkpoint() => Some(saved),
            _ = shutdown.wait() => None,
        }
    }

    /// With a ledger: the checkpoint kept there (a reader that lost its file, such as a new
    /// pod without the old volume, resumes from it). Waits while the ledger fails.
    async fn ledger_checkpoint(&self) -> Option<checkpoint::EventsCheckpoint> {
        let ledger = self.ledger.as_ref()?;
        match ledger.load::<checkpoint::EventsCheckpoint>().await? {
            Ok(checkpoint) if checkpoint::usable_offset(&checkpoint.offset) => {
                if ledger.is_of_record() {
                    tracing::info!(offset = %checkpoint.offset, ledger = %ledger.describe(), "holding the lease: resuming from the checkpoint of record in the ledger");
                } else {
                    tracing::info!(offset = %checkpoint.offset, ledger = %ledger.describe(), "no checkpoint file: resuming from the checkpoint the ledger keeps");
                }
                Some(checkpoint)
            }
            _ => {
                tracing::error!(
                    "the ledger's Events API checkpoint is not readable: starting from `start`"
                );
                None
            }
        }
    }

    /// With a ledger: the checkpoint is saved there too, after the file
    /// ([`crate::source::ledger_checkpoint::LedgerCheckpoint::save`]; a lost lease stops the
    /// reader through `lease_lost`).
    pub(super) async fn save_in_ledger(&self, checkpoint: &checkpoint::EventsCheckpoint) {
        if let Some(ledger) = &self.ledger {
            ledger.save(checkpoint).await;
        }
    }
}
