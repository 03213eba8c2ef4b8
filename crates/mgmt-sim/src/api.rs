//! The Management API handlers: role lookup, user read, a user's roles, and role assignment per
//! user and in bulk, with Auth0's validation, pagination and answers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawPathParams, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::{lock, Shared};
use super::tenant::{Assigned, Role};
use super::wire::{decode_path_segment, empty_response, json_response, parse_form};

/// Most users one `POST /roles/{id}/users` call may carry.
pub(crate) const MAX_USERS_PER_CALL: usize = 1000;
const MAX_PER_PAGE: usize = 100;
const DEFAULT_PER_PAGE: usize = 50;

/// `{id}` from the route, split from the raw path before percent-decoding (so `%2F` stays
/// inside the id).
fn path_id(params: &RawPathParams) -> Result<String, ApiError> {
    let raw = params
        .iter()
        .find(|(key, _)| *key == "id")
        .map(|(_, value)| value)
        .ok_or_else(|| ApiError::invalid_uri("missing id"))?;
    let id = decode_path_segment(raw)?;
    if id.is_empty() {
        return Err(ApiError::invalid_uri(
            "'String is too short (0 chars), minimum 1' on property id",
        ));
    }
    Ok(id)
}

/// `page`, `per_page`, `include_totals` (+ `name_filter` where it applies).
#[derive(Debug)]
struct ListQuery {
    page: usize,
    per_page: usize,
    include_totals: bool,
    name_filter: Option<String>,
}

impl ListQuery {
    fn parse(raw: Option<&str>) -> Result<ListQuery, ApiError> {
        let mut query = ListQuery {
            page: 0,
            per_page: DEFAULT_PER_PAGE,
            include_totals: false,
            name_filter: None,
        };
        for (key, value) in parse_form(raw.unwrap_or("")) {
            match key.as_str() {
                "page" => {
                    query.page = value.parse().map_err(|_| {
                        ApiError::invalid_query(format!(
                            "'Expected type integer but found type string' on property page ({value})"
                        ))
                    })?;
                }
                "per_page" => {
                    let per_page: usize = value.parse().map_err(|_| {
                        ApiError::invalid_query(format!(
                            "'Expected type integer but found type string' on property per_page ({value})"
                        ))
                    })?;
                    if !(1..=MAX_PER_PAGE).contains(&per_page) {
                        return Err(ApiError::invalid_query(format!(
                            "'Value {per_page} is out of range (1..{MAX_PER_PAGE})' on property per_page"
                        )));
                    }
                    query.per_page = per_page;
                }
                "include_totals" => {
                    query.include_totals = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(ApiError::invalid_query(format!(
                                "'Expected type boolean but found type string' on property include_totals ({value})"
                            )))
                        }
                    };
                }
                "name_filter" if !value.is_empty() => query.name_filter = Some(value),
                _ => {}
            }
        }
        Ok(query)
    }

    /// One page of `roles`: a bare array, or `{"roles","start","limit","total"}` with totals.
    fn page_of(&self, roles: &[Role]) -> Result<Value, ApiError> {
        let start = self
            .page
            .checked_mul(self.per_page)
            .ok_or_else(|| ApiError::invalid_query("'page is too large' on property page"))?;
        let items: Vec<Value> = roles
            .iter()
            .skip(start)
            .take(self.per_page)
            .map(Role::to_json)
            .collect();
        Ok(if self.include_totals {
            json!({
                "roles": items,
                "start": start,
                "limit": self.per_page,
                "total": roles.len(),
            })
        } else {
            Value::Array(items)
        })
    }
}

/// `GET /api/v2/roles`: case-insensitive substring `name_filter`, sorted by name.
pub(crate) async fn list_roles(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = ListQuery::parse(query.as_deref())?;
    let roles = lock(&shared.tenant).roles_matching(query.name_filter.as_deref());
    Ok(json_response(StatusCode::OK, &query.page_of(&roles)?))
}

/// `GET /api/v2/users/{id}`.
pub(crate) async fn get_user(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
) -> Result<Response, ApiError> {
    let user_id = path_id(&params)?;
    let accept_any = shared.knobs().accept_any_user;
    let user = lock(&shared.tenant).user_json(&user_id, accept_any)?;
    Ok(json_response(StatusCode::OK, &user))
}

/// `GET /api/v2/clients/{id}` (`fields`, `include_fields` honoured).
pub(crate) async fn get_client(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let client_id = path_id(&params)?;
    let mut fields: Option<Vec<String>> = None;
    let mut include = true;
    for (key, value) in parse_form(query.as_deref().unwrap_or("")) {
        match key.as_str() {
            "fields" => fields = Some(value.split(',').map(|f| f.trim().to_owned()).collect()),
            "include_fields" => include = value != "false",
            _ => {}
        }
    }
    let client = {
        let tenant = lock(&shared.tenant);
        match (&fields, include) {
            (Some(fields), true) => {
                let names: Vec<&str> = fields.iter().map(String::as_str).collect();
                tenant.client_json(&client_id, Some(&names))?
            }
            (Some(fields), false) => {
                let mut all = tenant.client_json(&client_id, None)?;
                if let Value::Object(map) = &mut all {
                    map.retain(|k, _| !fields.iter().any(|f| f == k));
                }
                all
            }
            (None, _) => tenant.client_json(&client_id, None)?,
        }
    };
    Ok(json_response(StatusCode::OK, &client))
}

/// `GET /api/v2/users/{id}/roles`.
pub(crate) async fn get_user_roles(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let user_id = path_id(&params)?;
    let query = ListQuery::parse(query.as_deref())?;
    let accept_any = shared.knobs().accept_any_user;
    let mut tenant = lock(&shared.tenant);
    let roles = tenant.roles_of(&user_id, accept_any)?;
    tenant.fire_grant_after_read(&user_id);
    drop(tenant);
    Ok(json_response(StatusCode::OK, &query.page_of(&roles)?))
}

/// Most roles on one `effective-roles` page (Auth0's OAS gives only the default `take`, 50).
const EFFECTIVE_ROLES_TAKE: usize = 50;

/// `GET /api/v2/users/{id}/effective-roles` (`from`, `take`): the roles held directly and
/// through groups, `{"roles": [{id, name, description, sources}], "next"}`, the shape of
/// Auth0's OAS (`ListUserEffectiveRolesResponseContent`); `next` (the first role id of the next
/// page, passed back as `from`) only when more follow.
pub(crate) async fn get_user_effective_roles(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let user_id = path_id(&params)?;
    let mut from: Option<String> = None;
    let mut take = EFFECTIVE_ROLES_TAKE;
    for (key, value) in parse_form(query.as_deref().unwrap_or("")) {
        match key.as_str() {
            "from" if !value.is_empty() => from = Some(value),
            "take" => {
                take = value.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ApiError::invalid_query(format!(
                        "'Value {value} is out of range (1..)' on property take"
                    ))
                })?;
            }
            _ => {}
        }
    }
    let accept_any = shared.knobs().accept_any_user;
    let roles = lock(&shared.tenant).effective_roles_of(&user_id, accept_any)?;
    let mut rest = roles
        .into_iter()
        .skip_while(|(role, _)| from.as_ref().is_some_and(|from| role.id < *from));
    let items: Vec<Value> = rest
        .by_ref()
        .take(take)
        .map(|(role, sources)| {
            json!({
                "id": role.id,
                "name": role.name,
                "description": role.description.unwrap_or_default(),
                "sources": sources,
            })
        })
        .collect();
    let mut page = json!({ "roles": items });
    if let Some((next, _)) = rest.next() {
        page["next"] = Value::String(next.id);
    }
    Ok(json_response(StatusCode::OK, &page))
}

/// `POST /api/v2/users/{id}/roles` → 204.
pub(crate) async fn assign_user_roles(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    body: Bytes,
) -> Result<Response, ApiError> {
    let user_id = path_id(&params)?;
    let role_ids = id_list(&body, &ROLES_PROPERTY)?;
    let knobs = shared.knobs();
    let outcome = lock(&shared.tenant).assign_roles_to_user(
        &user_id,
        &role_ids,
        knobs.accept_any_user,
        knobs.unknown_role_status,
    )?;
    record(&shared, outcome);
    tracing::debug!(
        user_id,
        ?role_ids,
        added = outcome.added,
        "sim: roles assigned to user"
    );
    // Applied: the answer may still be held (a client crashing before it sees it).
    let delay = lock(&shared.config).assignment_answer_delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `DELETE /api/v2/users/{id}/roles` → 204, also for roles the user does not hold.
pub(crate) async fn remove_user_roles(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    body: Bytes,
) -> Result<Response, ApiError> {
    let user_id = path_id(&params)?;
    let role_ids = id_list(&body, &ROLES_PROPERTY)?;
    let accept_any = shared.knobs().accept_any_user;
    lock(&shared.tenant).remove_roles_from_user(&user_id, &role_ids, accept_any)?;
    // Applied: the answer may still be held (a client dying before it sees the 204).
    let delay = lock(&shared.config).removal_answer_delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    Ok(empty_response(StatusCode::NO_CONTENT))
}

/// `POST /api/v2/roles/{id}/users` → 200 `{}`; all users or none.
pub(crate) async fn assign_role_users(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    body: Bytes,
) -> Result<Response, ApiError> {
    let role_id = path_id(&params)?;
    let user_ids = id_list(&body, &USERS_PROPERTY)?;
    let accept_any = shared.knobs().accept_any_user;
    let outcome = lock(&shared.tenant).assign_role_to_users(&role_id, &user_ids, accept_any)?;
    record(&shared, outcome);
    tracing::debug!(
        role_id,
        users = user_ids.len(),
        added = outcome.added,
        "sim: role assigned to users"
    );
    // Applied: the answer may still be held (a client crashing before it sees it).
    let delay = lock(&shared.config).assignment_answer_delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    Ok(json_response(StatusCode::OK, &json!({})))
}

fn record(shared: &Shared, outcome: Assigned) {
    shared.count(|s| {
        s.role_assignments += outcome.added;
        s.duplicate_assignments += outcome.duplicates;
    });
}

/// The one array property a body must hold, and its schema limits.
pub(crate) struct IdListProperty {
    name: &'static str,
    description: &'static str,
    min_items: usize,
    max_items: usize,
}

pub(crate) const ROLES_PROPERTY: IdListProperty = IdListProperty {
    name: "roles",
    description: "List of roles IDs to associated with the user.",
    min_items: 1,
    max_items: usize::MAX,
};

const USERS_PROPERTY: IdListProperty = IdListProperty {
    name: "users",
    description: "user_id's of the users to assign the role to.",
    min_items: 0,
    max_items: MAX_USERS_PER_CALL,
};

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validates `{"<property>": ["non-empty string", ...]}` (no other keys) and returns the ids.
pub(crate) fn id_list(body: &[u8], property: &IdListProperty) -> Result<Vec<String>, ApiError> {
    let name = property.name;
    let desc = property.description;
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::invalid_body("'Invalid request payload JSON format'."))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::invalid_body(format!(
            "'Expected type object but found type {}'.",
            type_name(&value)
        )));
    };
    if let Some(extra) = fields.keys().find(|k| k.as_str() != name) {
        return Err(ApiError::invalid_body(format!(
            "'Additional properties not allowed: {extra}'."
        )));
    }
    let Some(list) = fields.remove(name) else {
        return Err(ApiError::invalid_body(format!(
            "'Missing required property: {name}'."
        )));
    };
    let Value::Array(items) = list else {
        return Err(ApiError::invalid_body(format!(
            "'Expected type array but found type {}' on property {name} ({desc}).",
            type_name(&list)
        )));
    };
    if items.len() < property.min_items {
        return Err(ApiError::invalid_body(format!(
            "'Array is too short ({}), minimum {}' on property {name} ({desc}).",
            items.len(),
            property.min_items
        )));
    }
    if items.len() > property.max_items {
        return Err(ApiError::invalid_body(format!(
            "'Array is too long ({}), maximum {}' on property {name} ({desc}).",
            items.len(),
            property.max_items
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) if !s.is_empty() => Ok(s),
            Value::String(_) => Err(ApiError::invalid_body(format!(
                "'String is too short (0 chars), minimum 1' on property {name}[{i}] ({desc})."
            ))),
            other => Err(ApiError::invalid_body(format!(
                "'Expected type string but found type {}' on property {name}[{i}] ({desc}).",
                type_name(&other)
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_list_validation() {
        assert_eq!(
            id_list(br#"{"roles":["rol_a","rol_b"]}"#, &ROLES_PROPERTY),
            Ok(vec!["rol_a".to_owned(), "rol_b".to_owned()])
        );
        for bad in [
            &br#"{"roles":[]}"#[..],
            br#"{}"#,
            br#"{"roles":[1]}"#,
            br#"{"roles":[""]}"#,
            br#"{"roles":"rol_a"}"#,
            br#"{"roles":["rol_a"],"x":1}"#,
            b"not json",
        ] {
            let err = id_list(bad, &ROLES_PROPERTY).err();
            assert_eq!(
                err.as_ref().map(|e| e.status),
                Some(StatusCode::BAD_REQUEST)
            );
            assert_eq!(err.and_then(|e| e.error_code), Some("invalid_body"));
        }
        let many = json!({ "users": vec!["auth0|x"; MAX_USERS_PER_CALL + 1] }).to_string();
        assert!(id_list(many.as_bytes(), &USERS_PROPERTY).is_err());
    }

    #[test]
    fn list_query_limits() {
        assert!(ListQuery::parse(Some("per_page=101")).is_err());
        assert!(ListQuery::parse(Some("per_page=0")).is_err());
        assert!(ListQuery::parse(Some("page=-1")).is_err());
        let q = ListQuery::parse(Some(
            "per_page=100&page=2&include_totals=true&name_filter=a+b",
        ));
        let q = q.ok();
        assert_eq!(
            q.as_ref().map(|q| (q.page, q.per_page, q.include_totals)),
            Some((2, 100, true))
        );
        assert_eq!(q.and_then(|q| q.name_filter), Some("a b".to_owned()));
    }
}
