//! Applications' `client_metadata`, read for `assign_client_metadata` rules
//! (`GET /api/v2/clients/{id}`, scope `read:clients`) and kept for a while: a burst of first
//! logins through one application costs one read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use super::{MgmtClient, MgmtError};

/// How long an application's metadata is kept: an edit in the dashboard is seen within it.
pub const CLIENT_METADATA_TTL: Duration = Duration::from_secs(600);

/// How long a warning about an (application, role name) pair is not repeated.
const WARNED_TTL: Duration = Duration::from_secs(86_400);

/// The `client_metadata` of applications, cached. Cheap to clone.
#[derive(Clone)]
pub struct Applications {
    metadata: Cache<String, Arc<BTreeMap<String, String>>>,
    warned: Cache<(String, String), ()>,
}

impl Default for Applications {
    fn default() -> Self {
        Applications::new(CLIENT_METADATA_TTL)
    }
}

impl Applications {
    pub fn new(ttl: Duration) -> Self {
        Applications {
            metadata: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            warned: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(WARNED_TTL)
                .build(),
        }
    }

    /// The application's `client_metadata` (string values). An application that no longer
    /// exists (404) has none.
    pub async fn metadata(
        &self,
        client: &MgmtClient,
        client_id: &str,
    ) -> Result<Arc<BTreeMap<String, String>>, MgmtError> {
        if let Some(known) = self.metadata.get(client_id) {
            return Ok(known);
        }
        let metadata = match client.get_client_metadata(client_id).await {
            Ok(metadata) => metadata,
            Err(MgmtError::Permanent { status: 404, .. }) => {
                tracing::warn!(
                    client_id,
                    "the event's application does not exist (404): its client_metadata names no role"
                );
                BTreeMap::new()
            }
            Err(err) => return Err(err),
        };
        let metadata = Arc::new(metadata);
        self.metadata
            .insert(client_id.to_owned(), Arc::clone(&metadata));
        Ok(metadata)
    }

    /// Whether this is the first time (within a day) that `client_id` names `role`, which the
    /// tenant does not have: the caller warns only then.
    pub fn first_unknown(&self, client_id: &str, role: &str) -> bool {
        let key = (client_id.to_owned(), role.to_owned());
        if self.warned.contains_key(&key) {
            return false;
        }
        self.warned.insert(key, ());
        true
    }
}
