//! Organizations: their members and each member's roles, the member role write
//! (`POST /api/v2/organizations/{id}/members/{user_id}/roles`, set semantics, 204) behind a
//! bucket of its own (Auth0's "Write Organization Member Roles": burst 20, 200 per minute), and
//! the checkpoint listings of organizations and of an organization's members with their roles.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawPathParams, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};

use super::api::{id_list, ROLES_PROPERTY};
use super::error::ApiError;
use super::state::{lock, Shared};
use super::wire::{decode_path_segment, empty_response, json_response, parse_form};

const MAX_TAKE: usize = 100;
const DEFAULT_TAKE: usize = 50;

#[derive(Debug, Clone, Default)]
struct Organization {
    name: String,
    /// Member → the ids of its roles in the organization.
    members: BTreeMap<String, BTreeSet<String>>,
}

/// Every organization of the tenant, by id.
#[derive(Debug, Default)]
pub(crate) struct Organizations {
    by_id: BTreeMap<String, Organization>,
}

impl Organizations {
    /// Creates an organization (an `org_` + 16 alphanumerics id unless given); an existing id
    /// keeps its members and takes the new name.
    pub(crate) fn add(&mut self, id: Option<String>, name: &str) -> String {
        let id = id.filter(|i| !i.is_empty()).unwrap_or_else(|| {
            let suffix: String = rand::rng()
                .sample_iter(&Alphanumeric)
                .take(16)
                .map(char::from)
                .collect();
            format!("org_{suffix}")
        });
        self.by_id.entry(id.clone()).or_default().name = name.to_owned();
        id
    }

    /// Adds members (no roles); false when there is no such organization.
    pub(crate) fn add_members(&mut self, id: &str, users: &[String]) -> bool {
        let Some(org) = self.by_id.get_mut(id) else {
            return false;
        };
        for user in users {
            org.members.entry(user.clone()).or_default();
        }
        true
    }

    /// Removes a member and its roles; false when it was not one.
    pub(crate) fn remove_member(&mut self, id: &str, user: &str) -> bool {
        self.by_id
            .get_mut(id)
            .is_some_and(|org| org.members.remove(user).is_some())
    }

    /// Removes roles from a member (nothing for a non-member).
    pub(crate) fn remove_roles(&mut self, id: &str, user: &str, role_ids: &[String]) {
        if let Some(roles) = self.by_id.get_mut(id).and_then(|o| o.members.get_mut(user)) {
            for role in role_ids {
                roles.remove(role);
            }
        }
    }

    /// Adds roles to a member (nothing for a non-member).
    pub(crate) fn add_roles(&mut self, id: &str, user: &str, role_ids: &[String]) {
        if let Some(roles) = self.by_id.get_mut(id).and_then(|o| o.members.get_mut(user)) {
            roles.extend(role_ids.iter().cloned());
        }
    }

    /// A member's role ids (empty for a non-member).
    pub(crate) fn role_ids(&self, id: &str, user: &str) -> Vec<String> {
        self.by_id
            .get(id)
            .and_then(|org| org.members.get(user))
            .map(|roles| roles.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Organization id → member → role ids.
    pub(crate) fn all(&self) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
        self.by_id
            .iter()
            .map(|(id, org)| {
                let members = org
                    .members
                    .iter()
                    .map(|(user, roles)| (user.clone(), roles.iter().cloned().collect()))
                    .collect();
                (id.clone(), members)
            })
            .collect()
    }
}

fn param(params: &RawPathParams, name: &str) -> Result<String, ApiError> {
    let raw = params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .unwrap_or("");
    let value = decode_path_segment(raw)?;
    if value.is_empty() {
        return Err(ApiError::invalid_uri(format!(
            "'String is too short (0 chars), minimum 1' on property {name}"
        )));
    }
    Ok(value)
}

pub(crate) fn organization_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "No organization found by that id.")
}

pub(crate) fn not_a_member() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "The user is not a member of the organization.",
    )
}

/// `POST /api/v2/organizations/{id}/members/{user_id}/roles` → 204. Unknown organization or
/// a user who is not a member: 404; an unknown role id: 404 "The role does not exist.".
pub(crate) async fn assign_member_roles(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    body: Bytes,
) -> Result<Response, ApiError> {
    let org_id = param(&params, "id")?;
    let user_id = param(&params, "user_id")?;
    let role_ids = id_list(&body, &ROLES_PROPERTY)?;
    {
        let tenant = lock(&shared.tenant);
        if role_ids.iter().any(|id| tenant.role_name(id).is_none()) {
            return Err(ApiError::role_not_found(StatusCode::NOT_FOUND));
        }
    }
    let (added, duplicates) = {
        let mut orgs = lock(&shared.organizations);
        let org = orgs
            .by_id
            .get_mut(&org_id)
            .ok_or_else(organization_not_found)?;
        let roles = org.members.get_mut(&user_id).ok_or_else(not_a_member)?;
        let limit = lock(&shared.config).member_role_limit;
        let new = role_ids.iter().filter(|id| !roles.contains(*id)).count();
        if limit > 0 && roles.len() + new > limit {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "No more roles can be assigned to this organization member",
            ));
        }
        let mut added = 0;
        for id in &role_ids {
            if roles.insert(id.clone()) {
                added += 1;
            }
        }
        (added, role_ids.len() as u64 - added)
    };
    shared.count(|s| {
        s.organization_role_assignments += added;
        s.duplicate_assignments += duplicates;
    });
    tracing::debug!(
        org_id,
        user_id,
        ?role_ids,
        added,
        "sim: organization member roles assigned"
    );
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `DELETE /api/v2/organizations/{id}/members/{user_id}/roles` `{"roles": [ids]}` → 204 (also
/// for roles the member does not hold). Unknown organization or not a member: 404.
pub(crate) async fn remove_member_roles(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    body: Bytes,
) -> Result<Response, ApiError> {
    let org_id = param(&params, "id")?;
    let user_id = param(&params, "user_id")?;
    let role_ids = id_list(&body, &ROLES_PROPERTY)?;
    let mut orgs = lock(&shared.organizations);
    let org = orgs
        .by_id
        .get_mut(&org_id)
        .ok_or_else(organization_not_found)?;
    let roles = org.members.get_mut(&user_id).ok_or_else(not_a_member)?;
    for id in &role_ids {
        roles.remove(id);
    }
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `from` (the last id of the previous page) and `take` (1..=100).
fn checkpoint(raw: Option<&str>) -> Result<(Option<String>, usize), ApiError> {
    let mut from = None;
    let mut take = DEFAULT_TAKE;
    for (key, value) in parse_form(raw.unwrap_or("")) {
        match key.as_str() {
            "from" if !value.is_empty() => from = Some(value),
            "take" => {
                take = value.parse().map_err(|_| {
                    ApiError::invalid_query(format!(
                        "'Expected type integer but found type string' on property take ({value})"
                    ))
                })?;
                if !(1..=MAX_TAKE).contains(&take) {
                    return Err(ApiError::invalid_query(format!(
                        "'Value {take} is greater than maximum {MAX_TAKE}' on property take"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok((from, take))
}

/// The page of `keys` (sorted) after `from`, and the `next` checkpoint when more remain.
fn page<'a>(
    keys: impl Iterator<Item = &'a String>,
    from: Option<&str>,
    take: usize,
) -> (Vec<&'a String>, Option<String>) {
    let mut rest = keys
        .filter(|k| from.is_none_or(|f| k.as_str() > f))
        .peekable();
    let mut items = Vec::with_capacity(take);
    while items.len() < take {
        match rest.next() {
            Some(k) => items.push(k),
            None => break,
        }
    }
    let next = rest.peek().and_then(|_| items.last().map(|k| (*k).clone()));
    (items, next)
}

/// `GET /api/v2/organizations` (checkpoint form): `{"organizations": [{id, name}], "next"}`.
pub(crate) async fn list_organizations(
    State(shared): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (from, take) = checkpoint(raw.as_deref())?;
    let orgs = lock(&shared.organizations);
    let (ids, next) = page(orgs.by_id.keys(), from.as_deref(), take);
    let items: Vec<Value> = ids
        .into_iter()
        .map(|id| {
            let name = orgs
                .by_id
                .get(id)
                .map(|o| o.name.clone())
                .unwrap_or_default();
            json!({ "id": id, "name": name, "display_name": name })
        })
        .collect();
    let mut body = json!({ "organizations": items });
    if let Some(next) = next {
        body["next"] = json!(next);
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /api/v2/organizations/{id}/members` (checkpoint form): `{"members": [{user_id, roles:
/// [{id, name}]}], "next"}`; roles only when `fields` asks for them.
pub(crate) async fn list_members(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let org_id = param(&params, "id")?;
    let (from, take) = checkpoint(raw.as_deref())?;
    let with_roles = parse_form(raw.as_deref().unwrap_or(""))
        .iter()
        .any(|(k, v)| k == "fields" && v.split(',').any(|f| f.trim() == "roles"));
    let orgs = lock(&shared.organizations);
    let org = orgs.by_id.get(&org_id).ok_or_else(organization_not_found)?;
    // Members end differently from organizations (as the recordings show): a `next` on every
    // non-empty page, the walk ending with an empty page that has none.
    let (users, _) = page(org.members.keys(), from.as_deref(), take);
    let next = users.last().map(|u| (*u).clone());
    let tenant = lock(&shared.tenant);
    let items: Vec<Value> = users
        .into_iter()
        .map(|user| {
            let mut member = json!({ "user_id": user });
            if with_roles {
                let roles: Vec<Value> = org
                    .members
                    .get(user)
                    .into_iter()
                    .flatten()
                    .map(|id| json!({ "id": id, "name": tenant.role_name(id).unwrap_or_default() }))
                    .collect();
                member["roles"] = Value::Array(roles);
            }
            member
        })
        .collect();
    let mut body = json!({ "members": items });
    if let Some(next) = next {
        body["next"] = json!(next);
    }
    Ok(json_response(StatusCode::OK, &body))
}
