//! What users hold: every member of the policy's roles (and, when a rule tests `has_roles`, of
//! every other role) listed with `GET /api/v2/roles/{id}/users` and checkpoint pagination, kept
//! as sorted 128-bit fingerprints of the user ids: 16 bytes per member, whatever the id's
//! length.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use reqwest::Method;
use serde::Deserialize;

use crate::mgmt::{encode_path_segment, MgmtClient, MgmtError, Operation};

/// Members per page (Auth0's maximum for `take`).
pub const PAGE: usize = 100;

/// A user id's fingerprint: two independent 64-bit SipHashes. Two of a million ids share one
/// with a probability near 10⁻²⁷.
pub fn fingerprint(user_id: &str) -> u128 {
    // Fingerprints live only in memory (the state file keeps user ids), so the hasher's
    // algorithm may change between builds.
    let half = |salt: u64| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut hasher);
        user_id.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(0x5eed_0001)) << 64) | u128::from(half(0x5eed_0002))
}

/// A set of users, as sorted fingerprints.
#[derive(Debug, Default, Clone)]
pub struct UserSet {
    sorted: Vec<u128>,
}

impl UserSet {
    pub fn from_fingerprints(mut fingerprints: Vec<u128>) -> UserSet {
        fingerprints.sort_unstable();
        fingerprints.dedup();
        fingerprints.shrink_to_fit();
        UserSet {
            sorted: fingerprints,
        }
    }

    pub fn contains(&self, user_id: &str) -> bool {
        self.sorted.binary_search(&fingerprint(user_id)).is_ok()
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Bytes held by the set.
    pub fn bytes(&self) -> usize {
        self.sorted.capacity() * std::mem::size_of::<u128>()
    }
}

/// Who holds what: each policy role's members by role name, and the users holding some other
/// role (read only when a rule tests `has_roles`).
#[derive(Debug, Default)]
pub struct Memberships {
    pub by_role: BTreeMap<String, UserSet>,
    pub others: Option<UserSet>,
    /// Members of the roles the ledger holds grants of that the policy no longer names, by
    /// role id (read only for `--revoke`).
    pub by_role_id: BTreeMap<String, UserSet>,
}

impl Memberships {
    pub fn holds(&self, user_id: &str, role: &str) -> bool {
        self.by_role
            .get(role)
            .is_some_and(|set| set.contains(user_id))
    }

    /// The ids of the roles `user_id` holds, for `has_roles`: the policy roles held, plus
    /// `rol_(other)` standing for any role outside the policy (`has_roles` tests only
    /// whether the list is empty).
    pub fn held_role_ids(&self, user_id: &str, ids: &BTreeMap<String, String>) -> Vec<String> {
        let mut held: Vec<String> = self
            .by_role
            .iter()
            .filter(|(_, set)| set.contains(user_id))
            .filter_map(|(name, _)| ids.get(name).cloned())
            .collect();
        if self
            .others
            .as_ref()
            .is_some_and(|set| set.contains(user_id))
        {
            held.push(OTHER_ROLE.to_owned());
        }
        held
    }

    /// Whether `user_id` holds the role of id `role_id` named `name`: through the policy's
    /// role of that name when it still has that id, else through the roles listed by id.
    pub fn holds_id(
        &self,
        user_id: &str,
        role_id: &str,
        name: &str,
        ids: &BTreeMap<String, String>,
    ) -> bool {
        if ids.get(name).is_some_and(|id| id == role_id) {
            return self.holds(user_id, name);
        }
        self.by_role_id
            .get(role_id)
            .is_some_and(|set| set.contains(user_id))
    }

    /// Members counted over every set.
    pub fn members(&self) -> usize {
        self.by_role.values().map(UserSet::len).sum::<usize>()
            + self.others.as_ref().map_or(0, UserSet::len)
            + self.by_role_id.values().map(UserSet::len).sum::<usize>()
    }

    /// Bytes held by every set.
    pub fn bytes(&self) -> usize {
        self.by_role.values().map(UserSet::bytes).sum::<usize>()
            + self.others.as_ref().map_or(0, UserSet::bytes)
            + self.by_role_id.values().map(UserSet::bytes).sum::<usize>()
    }
}

/// Stands for "some role outside the policy" in [`Memberships::held_role_ids`].
pub const OTHER_ROLE: &str = "rol_(other)";

#[derive(Deserialize, Default)]
#[serde(default)]
struct Page {
    users: Vec<Member>,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Member {
    user_id: String,
}

/// Every member of `role_id`, a checkpoint page (`take=100`, `from=next`) at a time; `on_page`
/// sees the running count after each page.
pub async fn list_role(
    client: &MgmtClient,
    role_id: &str,
    mut on_page: impl FnMut(usize),
) -> Result<Vec<u128>, MgmtError> {
    let base = format!(
        "/api/v2/roles/{}/users?take={PAGE}",
        encode_path_segment(role_id)
    );
    let mut members = Vec::new();
    let mut from: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        let path = match &from {
            None => base.clone(),
            Some(next) => format!("{base}&from={}", encode_path_segment(next)),
        };
        let answer = client
            .request(Operation::GetRoleUsers, Method::GET, &path, None)
            .await?;
        let page: Page =
            serde_json::from_slice(&answer.body).map_err(|e| MgmtError::Undecodable {
                operation: Operation::GetRoleUsers.as_str(),
                source: e.into(),
            })?;
        members.extend(
            page.users
                .iter()
                .filter(|m| !m.user_id.is_empty())
                .map(|m| fingerprint(&m.user_id)),
        );
        on_page(members.len());
        // Only a page without `next` is the last: a page can come back empty or thinned (its
        // members deleted meanwhile) while more follow. A checkpoint seen before would loop.
        match page.next {
            Some(next) if !next.is_empty() => {
                if !seen.insert(next.clone()) {
                    return Err(MgmtError::Protocol {
                        operation: Operation::GetRoleUsers.as_str(),
                        detail:
                            "the role members' `next` checkpoint repeats: the listing would loop"
                                .to_owned(),
                    });
                }
                from = Some(next)
            }
            _ => return Ok(members),
        }
    }
}

/// Every role of the tenant (`GET /api/v2/roles`, paged): (name, id).
pub async fn all_roles(client: &MgmtClient) -> Result<Vec<(String, String)>, MgmtError> {
    client.find_roles("").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_answer_membership_by_fingerprint() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("auth0|{i:06}")).collect();
        let set =
            UserSet::from_fingerprints(ids.iter().step_by(2).map(|id| fingerprint(id)).collect());
        assert_eq!(set.len(), 5_000);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(set.contains(id), i % 2 == 0, "{id}");
        }
        assert_eq!(set.bytes(), 5_000 * 16);
        assert_eq!(fingerprint("auth0|x"), fingerprint("auth0|x"));
        assert_ne!(fingerprint("auth0|x"), fingerprint("auth0|y"));
    }
}
