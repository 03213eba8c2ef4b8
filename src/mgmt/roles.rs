//! Role names of the policy resolved to Auth0 role ids, with an exact name match (the API's
//! `name_filter` is case-insensitive and may match substrings).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use super::{MgmtClient, MgmtError};

/// The name → id map of every role the policy can assign.
pub struct RoleDirectory {
    names: BTreeSet<String>,
    ids: RwLock<BTreeMap<String, String>>,
}

impl RoleDirectory {
    /// Resolves every name; a name missing from the tenant is an error listing all of them.
    pub async fn resolve(
        client: &MgmtClient,
        names: BTreeSet<String>,
    ) -> Result<RoleDirectory, MgmtError> {
        let directory = RoleDirectory {
            names,
            ids: RwLock::new(BTreeMap::new()),
        };
        directory.refresh(client).await?;
        Ok(directory)
    }

    /// Looks every name up again (hourly, and after a 404 on a role id).
    pub async fn refresh(&self, client: &MgmtClient) -> Result<(), MgmtError> {
        let mut ids = BTreeMap::new();
        let mut missing = Vec::new();
        for name in &self.names {
            let found = client.find_roles(name).await?;
            match found.into_iter().find(|(n, _)| n == name) {
                Some((_, id)) => {
                    ids.insert(name.clone(), id);
                }
                None => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(MgmtError::MissingRoles(missing));
        }
        tracing::info!(roles = ids.len(), "policy roles resolved");
        *self.ids.write().unwrap_or_else(|p| p.into_inner()) = ids;
        Ok(())
    }

    /// Refreshes every `every` in the background (role ids change when a role is deleted and
    /// recreated). A failed refresh keeps the previous ids and is logged. The task ends when the
    /// directory is dropped.
    pub fn spawn_refresh(
        self: &std::sync::Arc<Self>,
        client: MgmtClient,
        every: std::time::Duration,
    ) {
        let directory = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                ticker.tick().await;
                let Some(directory) = directory.upgrade() else {
                    break;
                };
                if let Err(err) = directory.refresh(&client).await {
                    tracing::warn!(error = %err, "periodic role refresh failed; keeping the known role ids");
                }
            }
        });
    }

    /// The id of a role name of the policy.
    pub fn id(&self, name: &str) -> Option<String> {
        self.ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Every (name, id) pair.
    pub fn all(&self) -> BTreeMap<String, String> {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
