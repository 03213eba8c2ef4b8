//! Organizations in the Management API: member role writes
//! (`POST /api/v2/organizations/{id}/members/{user_id}/roles`, one call per member for all its
//! roles) through a limiter of their own (Auth0 gives "Write Organization Member Roles" its own
//! bucket: burst 20, 200 per minute) and the tenant's, and the checkpoint-paged listings of
//! organizations and their members with roles (`reconcile`).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::Method;
use serde::Deserialize;

use super::RoleDirectory;
use super::{encode_path_segment, expect_status, lock, MgmtClient, MgmtError, Operation};

/// The default of `[auth0] organization_roles_per_minute` (Auth0's published limit).
pub const DEFAULT_ORGANIZATION_ROLES_PER_MINUTE: u32 = 200;
/// The default of `[auth0] organization_roles_burst` (Auth0's published burst).
pub const DEFAULT_ORGANIZATION_ROLES_BURST: u32 = 20;

/// The organization member roles bucket's configured ceiling (a 429 from it holds member role
/// writes only: their class in the learning limiter).
pub(super) struct OrganizationBucket {
    limiter: Mutex<Arc<DefaultDirectRateLimiter>>,
}

fn limiter(per_minute: u32, burst: u32) -> Arc<DefaultDirectRateLimiter> {
    let per_minute = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(
        Quota::per_minute(per_minute).allow_burst(burst),
    ))
}

impl OrganizationBucket {
    pub(super) fn new() -> Self {
        OrganizationBucket {
            limiter: Mutex::new(limiter(
                DEFAULT_ORGANIZATION_ROLES_PER_MINUTE,
                DEFAULT_ORGANIZATION_ROLES_BURST,
            )),
        }
    }

    /// Takes a place in this bucket's limiter.
    pub(super) async fn until_ready(&self) {
        let limiter = Arc::clone(&lock(&self.limiter));
        limiter.until_ready().await;
    }
}

impl MgmtClient {
    /// Sets the organization member roles limiter (`[auth0] organization_roles_per_minute`,
    /// `organization_roles_burst`); the client starts with Auth0's published 200/min, burst 20.
    pub fn set_organization_limit(&self, per_minute: u32, burst: u32) {
        *lock(&self.inner.organizations.limiter) = limiter(per_minute, burst);
    }

    /// Waits for the organization bucket (before the tenant's limiter) and records the wait.
    pub(super) async fn wait_for_organization_bucket(&self) {
        // governor paces on its own clock, the wall clock: the wait is measured on it too.
        #[allow(clippy::disallowed_types)]
        let waited = std::time::Instant::now();
        self.inner.organizations.until_ready().await;
        self.inner
            .metrics
            .organization_rate_limiter_wait
            .observe(waited.elapsed().as_secs_f64());
    }

    /// `POST /api/v2/organizations/{id}/members/{user_id}/roles` `{"roles": [ids]}` (204).
    pub async fn assign_organization_member_roles(
        &self,
        organization_id: &str,
        user_id: &str,
        role_ids: &[String],
    ) -> Result<(), MgmtError> {
        let path = format!(
            "/api/v2/organizations/{}/members/{}/roles",
            encode_path_segment(organization_id),
            encode_path_segment(user_id)
        );
        let body = serde_json::json!({ "roles": role_ids });
        let operation = Operation::AssignOrganizationMemberRoles;
        let answer = self
            .request(operation, Method::POST, &path, Some(&body))
            .await?;
        expect_status(operation, answer.status, &[204, 200, 201])
    }

    /// One page of `GET /api/v2/organizations` in checkpoint form (`from`, `take`).
    pub async fn organizations_page(
        &self,
        from: Option<&str>,
        take: usize,
    ) -> Result<OrganizationsPage, MgmtError> {
        let mut path = format!("/api/v2/organizations?take={take}");
        if let Some(from) = from {
            path.push_str(&format!("&from={}", encode_path_segment(from)));
        }
        let operation = Operation::GetOrganizations;
        let answer = self.request(operation, Method::GET, &path, None).await?;
        serde_json::from_slice(&answer.body).map_err(|e| MgmtError::Undecodable {
            operation: operation.as_str(),
            source: e.into(),
        })
    }

    /// One page of an organization's members with their roles
    /// (`GET /api/v2/organizations/{id}/members?fields=user_id,roles`, checkpoint form).
    pub async fn organization_members_page(
        &self,
        organization_id: &str,
        from: Option<&str>,
        take: usize,
    ) -> Result<MembersPage, MgmtError> {
        let mut path = format!(
            "/api/v2/organizations/{}/members?fields=user_id,roles&include_fields=true&take={take}",
            encode_path_segment(organization_id)
        );
        if let Some(from) = from {
            path.push_str(&format!("&from={}", encode_path_segment(from)));
        }
        let operation = Operation::GetOrganizationMembers;
        let answer = self.request(operation, Method::GET, &path, None).await?;
        serde_json::from_slice(&answer.body).map_err(|e| MgmtError::Undecodable {
            operation: operation.as_str(),
            source: e.into(),
        })
    }
}

/// A page of organizations: `{"organizations": [...], "next": "..."}` (no `next` on the last).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OrganizationsPage {
    pub organizations: Vec<Organization>,
    pub next: Option<String>,
}

/// An organization as listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Organization {
    pub id: String,
    pub name: Option<String>,
}

/// A page of members: `{"members": [...], "next": "..."}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MembersPage {
    pub members: Vec<Member>,
    pub next: Option<String>,
}

/// A member with the roles it holds in the organization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Member {
    pub user_id: String,
    pub roles: Vec<OrganizationMemberRole>,
}

/// A role of a member (`{id, name}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct OrganizationMemberRole {
    pub id: String,
    pub name: String,
}

/// Whether a member role write failed because the member is gone: the user left the
/// organization, was deleted, or the organization was deleted before the write (Auth0 answers
/// 404, or 400 for a user that is not a member). That member alone fails.
pub fn is_member_gone(err: &MgmtError) -> bool {
    matches!(
        err,
        MgmtError::Permanent {
            status: 400 | 404,
            ..
        }
    ) && !is_role_gone(err)
}

/// Gives `user_id` the roles named `roles` as its roles in `organization_id`: one call for all
/// of them. Names resolve through the policy's role directory (a policy role missing in the
/// tenant is the service fault every other write meets); a permanent refusal (the member
/// removed before the write) is returned for this member alone.
pub async fn assign_member_roles(
    client: &MgmtClient,
    directory: &RoleDirectory,
    organization_id: &str,
    user_id: &str,
    roles: &[String],
) -> Result<(), MgmtError> {
    if roles.is_empty() {
        return Ok(());
    }
    let mut attempt = 0;
    loop {
        let seen = directory.generation();
        let mut ids = Vec::with_capacity(roles.len());
        let mut missing = Vec::new();
        for name in roles {
            match directory.id(name) {
                Some(id) => ids.push(id),
                None => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(MgmtError::MissingRoles(missing));
        }
        match client
            .assign_organization_member_roles(organization_id, user_id, &ids)
            .await
        {
            // A role deleted (and maybe re-created with a new id) since it was resolved: resolve
            // the names again and write again, as a user's write does.
            Err(err) if is_role_gone(&err) && attempt < ROLE_RETRIES => {
                tracing::warn!(error = %err, "a role id was not found: resolving role names again");
                directory.resolve_again(client, seen).await?;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// How many times a write answered "the role does not exist" is sent again after the names
/// resolved again.
const ROLE_RETRIES: u32 = 3;

/// A 404 that names the role (not the member, the user or the organization).
fn is_role_gone(err: &MgmtError) -> bool {
    matches!(err, MgmtError::Permanent { status: 404, message, .. } if message.to_ascii_lowercase().contains("role"))
}

#[cfg(test)]
mod tests {
    use super::super::RateClass;
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_429_on_a_member_role_write_holds_member_role_writes_only() {
        let client = MgmtClient::for_tests();
        let metrics = std::sync::Arc::clone(&client.inner.metrics);
        let classes = &client.inner.classes;
        classes.rate_limited(
            RateClass::OrganizationMemberRoles,
            &reqwest::header::HeaderMap::new(),
            Some(Duration::from_secs(3)),
            &metrics,
        );
        // The tenant's other calls are not held: their bucket is another one.
        let started = tokio::time::Instant::now();
        classes.until_ready(RateClass::RoleWrites, &metrics).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Member role writes wait out the hold.
        classes
            .until_ready(RateClass::OrganizationMemberRoles, &metrics)
            .await;
        assert!(
            started.elapsed() >= Duration::from_millis(2900),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn member_role_writes_get_their_burst_then_their_rate() {
        // governor keeps its own (real) clock: no paused time here, and the wall clock measures.
        let client = MgmtClient::for_tests();
        client.set_organization_limit(60, 2);
        #[allow(clippy::disallowed_types)]
        let started = std::time::Instant::now();
        for _ in 0..2 {
            client.inner.organizations.until_ready().await;
        }
        let burst = started.elapsed();
        client.inner.organizations.until_ready().await;
        // Two at once, the third a second later (60 per minute): a lower bound only.
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "burst {burst:?}, third {:?}",
            started.elapsed()
        );
    }
}
