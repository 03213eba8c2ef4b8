//! Listings over many users: `GET /api/v2/roles/{id}/users` in offset form (`page`,
//! `per_page`, refused beyond 1,000 results) and checkpoint form (`take` ≤ 100, `from` = the
//! previous page's `next`, no `next` on the last page), and `GET /api/v2/users` with its
//! 1,000-result cap.
//!
//! A checkpoint sweep reads a snapshot of the role's members taken by its first page (no
//! `from`), so a sweep of a large role costs one sort, not one per page.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{RawPathParams, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::{lock, Shared};
use super::wire::{decode_path_segment, json_response, parse_form};

/// Results offset paging reaches at most.
pub(crate) const OFFSET_LIMIT: usize = 1000;
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 50;
/// Snapshots kept at most (the oldest is dropped).
const SNAPSHOTS_MAX: usize = 64;

/// Member snapshots by id (the id travels inside `next`).
#[derive(Debug, Default)]
pub(crate) struct Listings {
    snapshots: HashMap<u64, Arc<Vec<String>>>,
    next_id: u64,
}

impl Listings {
    fn store(&mut self, members: Vec<String>) -> (u64, Arc<Vec<String>>) {
        if self.snapshots.len() >= SNAPSHOTS_MAX {
            if let Some(oldest) = self.snapshots.keys().min().copied() {
                self.snapshots.remove(&oldest);
            }
        }
        self.next_id += 1;
        let members = Arc::new(members);
        self.snapshots.insert(self.next_id, Arc::clone(&members));
        (self.next_id, members)
    }
}

#[derive(Debug, Default)]
struct Query {
    page: Option<usize>,
    per_page: Option<usize>,
    include_totals: bool,
    from: Option<String>,
    take: Option<usize>,
}

fn number(key: &str, value: &str) -> Result<usize, ApiError> {
    value.parse().map_err(|_| {
        ApiError::invalid_query(format!(
            "'Expected type integer but found type string' on property {key} ({value})"
        ))
    })
}

fn page_size(key: &str, value: &str) -> Result<usize, ApiError> {
    let n = number(key, value)?;
    if !(1..=MAX_PAGE).contains(&n) {
        return Err(ApiError::invalid_query(format!(
            "'Value {n} is greater than maximum {MAX_PAGE}' on property {key}"
        )));
    }
    Ok(n)
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut query = Query::default();
        for (key, value) in parse_form(raw.unwrap_or("")) {
            match key.as_str() {
                "page" => query.page = Some(number("page", &value)?),
                "per_page" => query.per_page = Some(page_size("per_page", &value)?),
                "take" => query.take = Some(page_size("take", &value)?),
                "from" if !value.is_empty() => query.from = Some(value),
                "include_totals" => query.include_totals = value == "true",
                _ => {}
            }
        }
        Ok(query)
    }

    fn checkpoint(&self) -> bool {
        self.from.is_some() || self.take.is_some()
    }

    /// The offset window, refused beyond the first 1,000 results with `refusal`.
    fn window(&self, refusal: impl FnOnce(usize) -> ApiError) -> Result<(usize, usize), ApiError> {
        let page = self.page.unwrap_or(0);
        let per_page = self.per_page.unwrap_or(DEFAULT_PAGE);
        let start = page.saturating_mul(per_page);
        if start.saturating_add(per_page) > OFFSET_LIMIT {
            return Err(refusal(page));
        }
        Ok((start, per_page))
    }
}

fn role_id(params: &RawPathParams) -> Result<String, ApiError> {
    let raw = params
        .iter()
        .find(|(key, _)| *key == "id")
        .map(|(_, value)| value)
        .unwrap_or("");
    decode_path_segment(raw)
}

/// `next` = `<snapshot>.<offset>`: opaque to clients.
fn encode_next(snapshot: u64, offset: usize) -> String {
    format!("{snapshot:x}.{offset:x}")
}

fn decode_next(next: &str) -> Option<(u64, usize)> {
    let (snapshot, offset) = next.split_once('.')?;
    Some((
        u64::from_str_radix(snapshot, 16).ok()?,
        usize::from_str_radix(offset, 16).ok()?,
    ))
}

/// `GET /api/v2/roles/{id}/users`.
pub(crate) async fn role_users(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let role = role_id(&params)?;
    let query = Query::parse(raw.as_deref())?;
    if query.checkpoint() {
        let take = query.take.unwrap_or(DEFAULT_PAGE);
        let (snapshot, members, offset) = match &query.from {
            None => {
                let members = lock(&shared.tenant)
                    .member_ids(&role)
                    .ok_or_else(|| ApiError::role_not_found(StatusCode::NOT_FOUND))?;
                let (id, members) = lock(&shared.listings).store(members);
                (id, members, 0)
            }
            Some(from) => {
                let (id, offset) = decode_next(from).ok_or_else(|| {
                    ApiError::invalid_query(format!("'{from}' is not a valid checkpoint"))
                })?;
                let members = lock(&shared.listings)
                    .snapshots
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::invalid_query("the checkpoint expired; start over without 'from'")
                    })?;
                (id, members, offset)
            }
        };
        let end = offset.saturating_add(take).min(members.len());
        let tenant = lock(&shared.tenant);
        let users: Vec<Value> = members
            .get(offset..end)
            .unwrap_or_default()
            .iter()
            .filter_map(|id| tenant.member_json(id))
            .collect();
        let mut body = json!({ "users": users });
        if end < members.len() {
            body["next"] = json!(encode_next(snapshot, end));
        }
        return Ok(json_response(StatusCode::OK, &body));
    }
    let (start, per_page) = query.window(|page| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Requesting page {page} exceeds the allowed maximum of {OFFSET_LIMIT} records. To fetch results beyond {OFFSET_LIMIT}, use the checkpoint pagination method."),
        )
    })?;
    let tenant = lock(&shared.tenant);
    let members = tenant
        .member_ids(&role)
        .ok_or_else(|| ApiError::role_not_found(StatusCode::NOT_FOUND))?;
    let users: Vec<Value> = members
        .iter()
        .skip(start)
        .take(per_page)
        .filter_map(|id| tenant.member_json(id))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &if query.include_totals {
            json!({"users": users, "start": start, "limit": per_page, "total": members.len()})
        } else {
            Value::Array(users)
        },
    ))
}

/// `GET /api/v2/users`: offset paging over the first 1,000 users only.
pub(crate) async fn list_users(
    State(shared): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref())?;
    let (start, per_page) = query.window(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "You can only page through the first 1000 records. See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation",
        )
        .with_code("invalid_paging")
    })?;
    let tenant = lock(&shared.tenant);
    let ids = tenant.user_ids();
    let users: Vec<Value> = ids
        .iter()
        .skip(start)
        .take(per_page)
        .filter_map(|id| tenant.existing_user_json(id))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &if query.include_totals {
            json!({"users": users, "start": start, "limit": per_page, "length": users.len(), "total": ids.len()})
        } else {
            Value::Array(users)
        },
    ))
}
