//! Role names of the policy resolved to Auth0 role ids, with an exact name match (the API's
//! `name_filter` is case-insensitive and may match substrings).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use super::{MgmtClient, MgmtError};

/// The name → id map of every role the policy can assign, and of the roles applications'
/// `client_metadata` named (looked up when first seen; `None` when the tenant has no such role).
pub struct RoleDirectory {
    names: BTreeSet<String>,
    ids: RwLock<BTreeMap<String, String>>,
    others: RwLock<BTreeMap<String, Option<String>>>,
}

/// Names looked up outside the policy, remembered at most (then forgotten all at once).
const OTHERS_MAX: usize = 10_000;

impl RoleDirectory {
    /// Resolves every name; a name missing from the tenant is an error listing all of them.
    pub async fn resolve(
        client: &MgmtClient,
        names: BTreeSet<String>,
    ) -> Result<RoleDirectory, MgmtError> {
        let directory = RoleDirectory {
            names,
            ids: RwLock::new(BTreeMap::new()),
            others: RwLock::new(BTreeMap::new()),
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
        // Roles named outside the policy: those found are resolved again now (an assignment
        // may be about to use them); those not found are looked up again when next seen.
        let found: Vec<String> = self
            .others
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, id)| id.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        let mut others = BTreeMap::new();
        for name in found {
            let id = client
                .find_roles(&name)
                .await?
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, id)| id);
            if id.is_some() {
                others.insert(name, id);
            }
        }
        *self.others.write().unwrap_or_else(|p| p.into_inner()) = others;
        Ok(())
    }

    /// The id of a role named outside the policy (an application's `client_metadata`), with
    /// an exact name match; `None` when the tenant has no role of that name. Remembered until
    /// the next refresh.
    pub async fn lookup(
        &self,
        client: &MgmtClient,
        name: &str,
    ) -> Result<Option<String>, MgmtError> {
        if let Some(id) = self.id(name) {
            return Ok(Some(id));
        }
        if let Some(known) = self
            .others
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(known.clone());
        }
        let found = client
            .find_roles(name)
            .await?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id);
        let mut others = self.others.write().unwrap_or_else(|p| p.into_inner());
        if others.len() >= OTHERS_MAX {
            others.clear();
        }
        others.insert(name.to_owned(), found.clone());
        Ok(found)
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

    /// The id of a role name of the policy, or of one [`lookup`](Self::lookup) found.
    pub fn id(&self, name: &str) -> Option<String> {
        if let Some(id) = self.ids.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Some(id.clone());
        }
        self.others
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .flatten()
    }

    /// Every (name, id) pair.
    pub fn all(&self) -> BTreeMap<String, String> {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
