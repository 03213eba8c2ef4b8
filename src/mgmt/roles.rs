//! Role names of the policy resolved to Auth0 role ids, with an exact name match (the API's
//! `name_filter` is case-insensitive and may match substrings). A plain name is a tenant role
//! (`type` absent or `tenant`): organization-owned roles (`type: "organization"`, `owner_id`)
//! may share it and are never taken for it; `org_ID/NAME` names the role `NAME` that
//! organization `org_ID` owns. A name that matches several roles stops the service at start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use super::{MgmtClient, MgmtError, RoleEntry, ROLE_MISSING_RETRY};

/// What a policy role name resolves to among the roles `name_filter` listed.
#[derive(Debug, PartialEq, Eq)]
enum Pick {
    One(String),
    None,
    /// Several roles match: their ids.
    Several(Vec<String>),
}

/// `org_ID/NAME`: the organization and the role name of an organization-owned role.
fn organization_role(name: &str) -> Option<(&str, &str)> {
    let (owner, role) = name.split_once('/')?;
    (owner.starts_with("org_") && !role.is_empty()).then_some((owner, role))
}

/// The role name to ask `name_filter` for.
fn filter_name(name: &str) -> &str {
    organization_role(name).map_or(name, |(_, role)| role)
}

/// The roles `name` means among `found`: a plain name, the tenant roles (`type` absent or
/// `tenant`) of exactly that name; `org_ID/NAME`, the role of that name `org_ID` owns.
fn pick(name: &str, found: &[RoleEntry]) -> Pick {
    let ids: Vec<String> = match organization_role(name) {
        Some((owner, role)) => found
            .iter()
            .filter(|r| {
                r.name == role
                    && r.kind.as_deref() == Some("organization")
                    && r.owner_id.as_deref() == Some(owner)
            })
            .map(|r| r.id.clone())
            .collect(),
        None => found
            .iter()
            .filter(|r| r.name == name && r.kind.as_deref().is_none_or(|k| k == "tenant"))
            .map(|r| r.id.clone())
            .collect(),
    };
    match ids.len() {
        0 => Pick::None,
        1 => Pick::One(ids.into_iter().next().unwrap_or_default()),
        _ => Pick::Several(ids),
    }
}

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
        let mut ambiguous = Vec::new();
        for name in &self.names {
            let found = client.find_role_entries(filter_name(name)).await?;
            match pick(name, &found) {
                Pick::One(id) => {
                    ids.insert(name.clone(), id);
                }
                Pick::None => missing.push(name.clone()),
                Pick::Several(several) => {
                    ambiguous.push(format!("{name} ({})", several.join(", ")));
                }
            }
        }
        if !ambiguous.is_empty() {
            return Err(MgmtError::AmbiguousRoles(ambiguous));
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
            let id = match pick(&name, &client.find_role_entries(filter_name(&name)).await?) {
                Pick::One(id) => Some(id),
                Pick::None | Pick::Several(_) => None,
            };
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
        // An application names a tenant role; several of one name name none (ambiguous).
        let found = match pick(name, &client.find_role_entries(filter_name(name)).await?) {
            Pick::One(id) => Some(id),
            Pick::None | Pick::Several(_) => None,
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn role(id: &str, name: &str, kind: Option<&str>, owner: Option<&str>) -> RoleEntry {
        RoleEntry {
            id: id.to_owned(),
            name: name.to_owned(),
            kind: kind.map(str::to_owned),
            owner_id: owner.map(str::to_owned),
        }
    }

    #[test]
    fn a_plain_name_is_the_tenant_role_and_org_slash_name_an_organizations_own() {
        let found = [
            role("rol_org1", "Support", Some("organization"), Some("org_1")),
            role("rol_tenant", "Support", None, None),
            role("rol_org2", "Support", Some("organization"), Some("org_2")),
            role("rol_sub", "Support Lead", Some("tenant"), None),
        ];
        assert_eq!(pick("Support", &found), Pick::One("rol_tenant".into()));
        assert_eq!(pick("org_2/Support", &found), Pick::One("rol_org2".into()));
        assert_eq!(pick("org_3/Support", &found), Pick::None);
        assert_eq!(pick("support", &found), Pick::None);
        let twice = [
            role("rol_a", "Support", Some("tenant"), None),
            role("rol_b", "Support", None, None),
        ];
        assert_eq!(
            pick("Support", &twice),
            Pick::Several(vec!["rol_a".into(), "rol_b".into()])
        );
        assert_eq!(filter_name("org_2/Support"), "Support");
        assert_eq!(filter_name("a/b"), "a/b");
    }
}
