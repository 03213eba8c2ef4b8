//! `GET /api/v2/logs`: the tenant's logs in checkpoint form (`from` a `log_id`, `take` ≤ 100,
//! ordered by `log_id`, a `Link` header with `rel="next"`; an empty page when caught up, whose
//! `next` repeats the request) and in search form (`sort=date:1|-1`, `page`, `per_page` ≤ 100),
//! with retention (logs purged before a `log_id`) and faults of their own (a 429 storm, a share
//! of 5xx) on this endpoint only.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use super::state::{lock, Shared};
use super::wire::{json_response, parse_form};

const MAX_TAKE: usize = 100;
const DEFAULT_TAKE: usize = 50;

/// Logs ordered by `log_id` (equal-width decimal strings: by width, then text).
#[derive(Debug, Default)]
pub(crate) struct TenantLogs {
    logs: BTreeMap<(usize, String), Value>,
    /// The next this many calls answer 429.
    pub(crate) rate_limited_calls: u64,
    /// Probability (0..=1) that a call answers 500 or 503.
    pub(crate) error_rate: f64,
}

/// The first id the simulator generates (56 digits, like Auth0's).
const FIRST_ID: &str = "90020261201000000000000000000000000000000000000000000001";

/// `id` + 1, in decimal.
fn increment(id: &str) -> String {
    let mut digits: Vec<u8> = id.bytes().collect();
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return String::from_utf8(digits).unwrap_or_default();
        }
    }
    format!("1{}", String::from_utf8(digits).unwrap_or_default())
}

fn key(id: &str) -> (usize, String) {
    (id.len(), id.to_owned())
}

impl TenantLogs {
    /// Stores logs (a given `log_id`/`_id` is kept, a missing one generated after the last);
    /// returns their ids in order. A log id stored again replaces the log.
    pub(crate) fn append(&mut self, logs: Vec<Value>) -> Vec<String> {
        let mut ids = Vec::with_capacity(logs.len());
        for mut log in logs {
            let given = log
                .get("log_id")
                .or_else(|| log.get("_id"))
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
                .map(str::to_owned);
            let id = match given {
                Some(id) => id,
                None => match self.logs.keys().next_back() {
                    Some((_, last)) => increment(last),
                    None => FIRST_ID.to_owned(),
                },
            };
            if let Value::Object(fields) = &mut log {
                fields.insert("log_id".to_owned(), Value::from(id.clone()));
                fields.insert("_id".to_owned(), Value::from(id.clone()));
            }
            self.logs.insert(key(&id), log);
            ids.push(id);
        }
        ids
    }

    /// Removes every log whose id is below `log_id` (the retention period passed them).
    pub(crate) fn purge_before(&mut self, log_id: &str) -> usize {
        let keep = self.logs.split_off(&key(log_id));
        let purged = self.logs.len();
        self.logs = keep;
        purged
    }

    pub(crate) fn len(&self) -> usize {
        self.logs.len()
    }

    fn after(&self, from: &str, take: usize) -> Vec<Value> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.logs
            .range((Excluded(key(from)), Unbounded))
            .take(take)
            .map(|(_, log)| log.clone())
            .collect()
    }

    fn by_date(&self, ascending: bool, page: usize, per_page: usize) -> Vec<Value> {
        let mut all: Vec<(&str, &(usize, String), &Value)> = self
            .logs
            .iter()
            .map(|(k, log)| {
                (
                    log.get("date").and_then(Value::as_str).unwrap_or(""),
                    k,
                    log,
                )
            })
            .collect();
        all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        if !ascending {
            all.reverse();
        }
        all.into_iter()
            .skip(page.saturating_mul(per_page))
            .take(per_page)
            .map(|(_, _, log)| log.clone())
            .collect()
    }
}

fn number(key: &str, value: &str, max: usize) -> Result<usize, ApiError> {
    let n: usize = value.parse().map_err(|_| {
        ApiError::invalid_query(format!(
            "'Expected type integer but found type string' on property {key} ({value})"
        ))
    })?;
    if n > max {
        return Err(ApiError::invalid_query(format!(
            "'Value {n} is greater than maximum {max}' on property {key}"
        )));
    }
    Ok(n)
}

/// `GET /api/v2/logs`.
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match answer(&shared, query.as_deref().unwrap_or(""), &headers) {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

fn answer(shared: &Shared, query: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    {
        let mut logs = lock(&shared.tenant_logs);
        if logs.rate_limited_calls > 0 {
            logs.rate_limited_calls -= 1;
            drop(logs);
            shared.count(|s| s.rate_limited += 1);
            let mut response = ApiError::too_many_requests().into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(response);
        }
        let p = logs.error_rate;
        if p > 0.0 && rand::random::<f64>() < p {
            drop(logs);
            shared.count(|s| s.faults_served += 1);
            return Err(if rand::random::<bool>() {
                ApiError::internal()
            } else {
                ApiError::unavailable()
            });
        }
    }
    let form = parse_form(query);
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let from = get("from").filter(|f| !f.is_empty());
    let take = get("take")
        .map(|t| number("take", &t, MAX_TAKE))
        .transpose()?;
    if from.is_some() || take.is_some() {
        // Checkpoint form: every other parameter is ignored.
        let from = from.unwrap_or_default();
        let take = take.unwrap_or(DEFAULT_TAKE).max(1);
        let page = lock(&shared.tenant_logs).after(&from, take);
        let last = page
            .last()
            .and_then(|l| l.get("log_id"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or(from);
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let link = format!("<http://{host}/api/v2/logs?from={last}&take={take}>; rel=\"next\"");
        let mut response = json_response(StatusCode::OK, &Value::Array(page));
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
        return Ok(response);
    }
    let per_page = get("per_page")
        .map(|v| number("per_page", &v, MAX_TAKE))
        .transpose()?
        .unwrap_or(DEFAULT_TAKE);
    let page = get("page")
        .map(|v| number("page", &v, usize::MAX))
        .transpose()?
        .unwrap_or(0);
    if page.saturating_add(1).saturating_mul(per_page) > 1000 {
        return Err(ApiError::invalid_query(
            "You can only page through the first 1000 records. See https://auth0.com/docs/logs/retrieve-log-events-using-mgmt-api",
        ));
    }
    let ascending = match get("sort").as_deref() {
        None | Some("date:-1") => false,
        Some("date:1") => true,
        Some(other) => {
            return Err(ApiError::invalid_query(format!(
                "'sort' must be date:1 or date:-1 here (got {other})"
            )))
        }
    };
    let logs = lock(&shared.tenant_logs).by_date(ascending, page, per_page);
    Ok(json_response(StatusCode::OK, &Value::Array(logs)))
}
