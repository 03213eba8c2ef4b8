//! The Events API reader's checkpoint in the ledger, when one is configured: a copy a reader
//! without its file resumes from, and, under a lease (replicas sharing a PostgreSQL ledger),
//! the checkpoint of record: read first, and written only while the lease holds.

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
        let link = self.pipeline.ledger()?;
        let saved = link
            .until_ok(
                &self.metrics,
                "read the reader's checkpoint",
                |l| async move { l.load_checkpoint(LEDGER_NAME).await },
            )
            .await
            .ok()??;
        match serde_json::from_str::<checkpoint::EventsCheckpoint>(&saved) {
            Ok(checkpoint) if checkpoint::usable_offset(&checkpoint.offset) => {
                if self.lease.is_some() {
                    tracing::info!(offset = %checkpoint.offset, ledger = %link.ledger().describe(), "holding the lease: resuming from the checkpoint of record in the ledger");
                } else {
                    tracing::info!(offset = %checkpoint.offset, ledger = %link.ledger().describe(), "no checkpoint file: resuming from the checkpoint the ledger keeps");
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

    /// With a ledger: the checkpoint is saved there too, after the file. Waits while the
    /// ledger fails (a service fault: nothing further is read meanwhile). Under a lease, only
    /// while it holds (a refused write ends the holding).
    pub(super) async fn save_in_ledger(&self, checkpoint: &checkpoint::EventsCheckpoint) {
        let Some(link) = self.pipeline.ledger() else {
            return;
        };
        let Ok(value) = serde_json::to_string(checkpoint) else {
            return;
        };
        if let Some(lease) = &self.lease {
            lease.save_checkpoint(LEDGER_NAME, &value).await;
            return;
        }
        link.until_ok(&self.metrics, "save the reader's checkpoint", |l| {
            let value = value.clone();
            async move { l.save_checkpoint(LEDGER_NAME, &value).await }
        })
        .await
        // Refused (logged by the link): the file keeps the checkpoint.
        .ok();
    }
}
