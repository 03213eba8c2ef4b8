//! Role names of the policy resolved to Auth0 role ids, with an exact name match (the API's
//! `name_filter` is case-insensitive and may match substrings).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use super::{MgmtClient, MgmtError, ROLE_MISSING_RETRY};

/// The name → id map of every role the policy can assign, and of the roles applications'
/// `client_metadata` named (looked up when first seen; `None` when the tenant has no such role).
pub struct RoleDirectory {
    names: BTreeSet<String>,
    ids: RwLock<BTreeMap<String, String>>,
    others: RwLock<BTreeMap<String, Option<String>>>,
    /// Bumped by every refresh that resolved every name: a caller that saw a 404 for a role
    /// id can tell whether the names were resolved since.
    generation: AtomicU64,
    /// One re-resolution at a time, for every caller that saw the same stale id.
    resolving: tokio::sync::Mutex<()>,
    /// A missing policy role makes callers wait (the service) instead of returning
    /// `MissingRoles` (`reconcile`, which stops and resumes later).
    waits_while_missing: std::sync::atomic::AtomicBool,
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
            generation: AtomicU64::new(0),
            resolving: tokio::sync::Mutex::new(()),
            waits_while_missing: std::sync::atomic::AtomicBool::new(false),
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
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// From now on a missing policy role is waited out (see [`resolve_again`](Self::resolve_again)).
    pub fn wait_while_missing(&self) {
        self.waits_while_missing.store(true, Ordering::SeqCst);
    }

    /// Counts successful refreshes; pass the value read before a call to
    /// [`resolve_again`](Self::resolve_again).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// After a call answered 404 for a role id read at `seen`: resolves the names again, once
    /// for every caller that saw the same ids. While a policy role is missing in the tenant
    /// (deleted, not yet re-created) that is a service fault: the client reports it (intake
    /// paused, `/readyz` and `mgmt_api_blocked{reason="role_missing"}` name it) and the names
    /// are resolved again every few seconds; this returns once every name resolves, so the
    /// caller retries with the new id and nobody is failed. Other errors are returned.
    pub async fn resolve_again(&self, client: &MgmtClient, seen: u64) -> Result<(), MgmtError> {
        let _one = self.resolving.lock().await;
        if self.generation() != seen {
            return Ok(());
        }
        loop {
            match self.refresh(client).await {
                Ok(()) => {
                    client.set_roles_missing(None);
                    return Ok(());
                }
                Err(MgmtError::MissingRoles(names))
                    if client.is_serving() && self.waits_while_missing.load(Ordering::SeqCst) =>
                {
                    client.set_roles_missing(Some(names));
                    tokio::time::sleep(ROLE_MISSING_RETRY).await;
                }
                Err(err) => return Err(err),
            }
        }
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
                let seen = directory.generation();
                match directory.refresh(&client).await {
                    Ok(()) => {}
                    Err(MgmtError::MissingRoles(_)) => {
                        // Assignments to the old ids would fail: wait until the roles exist.
                        if let Err(err) = directory.resolve_again(&client, seen).await {
                            tracing::warn!(error = %err, "role refresh failed; keeping the known role ids");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "periodic role refresh failed; keeping the known role ids");
                    }
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

    /// Whether `name` is one of the policy's roles (not one an application's metadata named).
    pub fn is_policy_role(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Every (name, id) pair.
    pub fn all(&self) -> BTreeMap<String, String> {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
