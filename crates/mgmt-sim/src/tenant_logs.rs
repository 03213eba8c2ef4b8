//! `GET /api/v2/logs`: the tenant's logs in checkpoint form (`from` a `log_id`, `take` ≤ 100,
//! ordered by `log_id`, a `Link` header with `rel="next"`; an empty page when caught up, whose
//! `next` repeats the request) and in search form (`sort=date:1|-1`, `page`, `per_page` ≤ 100;
//! without `sort`, newest first by `log_id`), with retention (logs purged before a `log_id`)
//! and faults of their own (a 429 storm, a share of 5xx) on this endpoint only.
//!
//! Ids and dates as a real tenant has them (the recorded `GET /api/v2/logs` pages): a log
//! appended without an id gets one that encodes its *ingestion* time (`900`, `YYYYMMDDhhmmss`,
//! microseconds and a sequence: 56 digits), always above every id kept; its `date` is the
//! *event* time, which the ingestion lags by 0 to [`MAX_DATE_LAG`] (random), so dates are not
//! in id order. A log given with a `date` is ingested that long after it, one given without a
//! `date` is ingested now and dated that long before; the logs of one append are ingested in
//! that order, never before those of an earlier append (an imported or late log gets a recent
//! id and keeps its old date).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use super::state::{lock, Shared};
use super::wire::{json_response, parse_form};

const MAX_TAKE: usize = 100;
const DEFAULT_TAKE: usize = 50;

/// How far a log's ingestion (its id) may lag its `date`: the recordings show 1–4.5 s, the
/// shared samples up to 5 s.
pub const MAX_DATE_LAG: Duration = Duration::from_secs(5);

/// The prefix of the ids the simulator generates (Auth0's, in every recorded id).
const ID_PREFIX: &str = "900";
/// Digits of the sequence after the prefix, the time and the microseconds (56 in all).
const SEQUENCE_DIGITS: usize = 33;

/// Logs ordered by `log_id` (equal-width decimal strings: by width, then text).
#[derive(Debug, Default)]
pub(crate) struct TenantLogs {
    logs: BTreeMap<(usize, String), Value>,
    /// The ingestion time of the last generated id (the next is later).
    last_ingested: Option<SystemTime>,
    /// The sequence of the last generated id.
    sequence: u64,
    /// The next this many calls answer 429.
    pub(crate) rate_limited_calls: u64,
    /// Their `Retry-After`, in seconds (0: 1 s).
    pub(crate) rate_limited_retry_after: u64,
    /// Probability (0..=1) that a call answers 500 or 503.
    pub(crate) error_rate: f64,
}

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

/// A log's `date` as an instant, when it has one Auth0 would write.
fn date_of(log: &Value) -> Option<SystemTime> {
    let text = log.get("date").and_then(Value::as_str)?;
    humantime::parse_rfc3339(text)
        .or_else(|_| humantime::parse_rfc3339_weak(text.trim_end_matches('Z')))
        .ok()
}

/// A random lag in `0..=MAX_DATE_LAG`, to the microsecond.
fn random_lag() -> Duration {
    Duration::from_micros((rand::random::<f64>() * MAX_DATE_LAG.as_micros() as f64) as u64)
}

/// `900` + `YYYYMMDDhhmmss` + microseconds of `at` + `sequence` (33 digits); `None` for a
/// time RFC 3339 cannot write (before 1970, after 9999).
fn id_at(at: SystemTime, sequence: u64) -> Option<String> {
    use std::fmt::Write;
    at.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    let mut text = String::new();
    write!(text, "{}", humantime::format_rfc3339_micros(at)).ok()?;
    let time: String = text.chars().filter(char::is_ascii_digit).collect();
    Some(format!(
        "{ID_PREFIX}{time}{sequence:0width$}",
        width = SEQUENCE_DIGITS
    ))
}

impl TenantLogs {
    /// Stores logs (a given `log_id`/`_id` is kept, a missing one generated from the log's
    /// ingestion time, see the module's doc); returns their ids in the order given. Within
    /// one append, logs without an id are ingested in the order of their ingestion times (a
    /// log dated later may be ingested first); every append comes after the previous one. A
    /// log id stored again replaces the log.
    pub(crate) fn append(&mut self, logs: Vec<Value>) -> Vec<String> {
        let mut ids = vec![String::new(); logs.len()];
        let mut pending = Vec::new();
        for (index, log) in logs.into_iter().enumerate() {
            let given = log
                .get("log_id")
                .or_else(|| log.get("_id"))
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
                .map(str::to_owned);
            match given {
                Some(id) => {
                    self.store(&id, log);
                    ids[index] = id;
                }
                None => {
                    let (ingested, log) = self.ingestion(log);
                    pending.push((ingested, index, log));
                }
            }
        }
        pending.sort_by_key(|(ingested, index, _)| (*ingested, *index));
        for (ingested, index, log) in pending {
            let id = self.next_id(ingested);
            self.store(&id, log);
            ids[index] = id;
        }
        ids
    }

    fn store(&mut self, id: &str, mut log: Value) {
        if let Value::Object(fields) = &mut log {
            fields.insert("log_id".to_owned(), Value::from(id));
            fields.insert("_id".to_owned(), Value::from(id));
        }
        self.logs.insert(key(id), log);
    }

    /// When a log without an id is ingested (its date plus a lag; now, for a log without a
    /// date, which is then dated that lag before).
    fn ingestion(&self, mut log: Value) -> (SystemTime, Value) {
        let lag = random_lag();
        if let Some(date) = date_of(&log) {
            return (date.checked_add(lag).unwrap_or(date), log);
        }
        let ingested = SystemTime::now();
        // Now, minus at most 5 s: always a time RFC 3339 writes.
        let date = ingested.checked_sub(lag).unwrap_or(ingested);
        let mut text = String::new();
        if let (Value::Object(fields), Ok(())) = (
            &mut log,
            std::fmt::Write::write_fmt(
                &mut text,
                format_args!("{}", humantime::format_rfc3339_millis(date)),
            ),
        ) {
            fields.insert("date".to_owned(), Value::from(text));
        }
        (ingested, log)
    }

    /// The id of a log ingested at `ingested`: never before the previous one, and above
    /// every id kept (whatever ids were given before).
    fn next_id(&mut self, ingested: SystemTime) -> String {
        let ingested = match self.last_ingested {
            Some(last) => ingested.max(last.checked_add(Duration::from_micros(1)).unwrap_or(last)),
            None => ingested,
        };
        self.last_ingested = Some(ingested);
        self.sequence += 1;
        let last = self.logs.keys().next_back().map(|(_, id)| id.as_str());
        match (id_at(ingested, self.sequence), last) {
            (Some(id), Some(last)) if key(last) >= key(&id) => increment(last),
            (Some(id), _) => id,
            (None, Some(last)) => increment(last),
            (None, None) => id_at(SystemTime::now(), self.sequence).unwrap_or_default(),
        }
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

    /// The search form without `sort`: newest first by `log_id`.
    fn newest_by_id(&self, page: usize, per_page: usize) -> Vec<Value> {
        self.logs
            .values()
            .rev()
            .skip(page.saturating_mul(per_page))
            .take(per_page)
            .cloned()
            .collect()
    }

    /// Every log kept, in `log_id` order.
    pub(crate) fn all(&self) -> Vec<Value> {
        self.logs.values().cloned().collect()
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
            let retry_after = logs.rate_limited_retry_after.max(1);
            drop(logs);
            shared.count(|s| s.rate_limited += 1);
            let mut response = ApiError::too_many_requests().into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
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
        None => {
            let logs = lock(&shared.tenant_logs).newest_by_id(page, per_page);
            return Ok(json_response(StatusCode::OK, &Value::Array(logs)));
        }
        Some("date:-1") => false,
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
