//! The tenant's Logs API (`GET /api/v2/logs`, scope `read:logs`) and one log stream's status
//! (`GET /api/v2/log-streams/{id}`, scope `read:log_streams`), through the client's token,
//! limiter, retries and fault model: checkpoint pages (`from`, `take` ≤ 100, the `Link` header's
//! `rel="next"`), the newest log in id order (the search form without `sort`) and the oldest
//! by date (`sort=date:1`); and what a log id says of time (`id_time`, `synthetic_from`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

use crate::mgmt::log_streams::LogStream;
use crate::mgmt::{encode_path_segment, MgmtClient, MgmtError, Operation, RequestOptions};

/// Most logs one checkpoint page holds (Auth0's cap on `take`).
pub const MAX_TAKE: usize = 100;

/// The path every Logs API request goes to.
const LOGS_PATH: &str = "/api/v2/logs";

/// One checkpoint page: the logs in `log_id` order and the request for the page after it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub logs: Vec<Value>,
    /// Path and query of the next page (`Link: <…>; rel="next"`, kept on this tenant's base
    /// URL), or `None` when the answer had no usable link.
    pub next: Option<String>,
}

/// Reads the Logs API, optionally at a share of the client's rate and without pausing the
/// service on a refused scope (the backstop's and the health check's reads).
pub struct LogsApi {
    client: MgmtClient,
    pace: Option<DefaultDirectRateLimiter>,
    auxiliary: bool,
}

impl LogsApi {
    /// Reads as any other call of the client does (the `auth0_logs` source: a refused scope is a
    /// service fault, like for every call of the only source).
    pub fn primary(client: MgmtClient) -> LogsApi {
        LogsApi {
            client,
            pace: None,
            auxiliary: false,
        }
    }

    /// Reads at most `share` (0 < share ≤ 1) of the client's `requests_per_second` (burst 1),
    /// every attempt included, so the assignments keep the rest; a 403 is an error for the
    /// caller, not a pause of the whole service.
    pub fn auxiliary(client: MgmtClient, share: f64) -> LogsApi {
        let rate = client.requests_per_second() * share.clamp(0.000_1, 1.0);
        let period = std::time::Duration::from_secs_f64(1.0 / rate.max(0.000_1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN))
            .allow_burst(std::num::NonZeroU32::MIN);
        LogsApi {
            client,
            pace: Some(RateLimiter::direct(quota)),
            auxiliary: true,
        }
    }

    pub fn client(&self) -> &MgmtClient {
        &self.client
    }

    fn options(&self) -> RequestOptions<'_> {
        RequestOptions {
            pace: self.pace.as_ref(),
            refusal_is_error: self.auxiliary,
            lost_answer_is_error: false,
        }
    }

    async fn get(&self, operation: Operation, path: &str) -> Result<(Value, HeaderMap), MgmtError> {
        let answer = self
            .client
            .request_with(operation, Method::GET, path, None, self.options())
            .await?;
        let value = serde_json::from_slice(&answer.body).map_err(|e| MgmtError::Undecodable {
            operation: operation.as_str(),
            source: e.into(),
        })?;
        Ok((value, answer.headers))
    }

    /// The checkpoint page after `from`: `GET /api/v2/logs?from={from}&take={take}`.
    pub async fn page_after(&self, from: &str, take: usize) -> Result<LogPage, MgmtError> {
        let take = take.clamp(1, MAX_TAKE);
        let path = format!("{LOGS_PATH}?from={}&take={take}", encode_path_segment(from));
        self.page(&path).await
    }

    /// A page by the path and query a previous page's `next` gave.
    pub async fn page(&self, path_and_query: &str) -> Result<LogPage, MgmtError> {
        let (value, headers) = self.get(Operation::GetLogs, path_and_query).await?;
        let Value::Array(logs) = value else {
            return Err(MgmtError::Protocol {
                operation: Operation::GetLogs.as_str(),
                detail: "the checkpoint form did not answer a JSON array".to_owned(),
            });
        };
        Ok(LogPage {
            logs,
            next: next_link(&headers),
        })
    }

    /// The newest log the tenant keeps in `log_id` (checkpoint) order: the search form without
    /// `sort` (`per_page=1&page=0`) answers newest first by id (the recorded pages show it;
    /// `sort=date:-1` would give the newest *event*, whose id may be below others). `None` for
    /// a tenant without logs.
    pub async fn newest(&self) -> Result<Option<Value>, MgmtError> {
        self.first_of(&format!("{LOGS_PATH}?per_page=1&page=0"))
            .await
    }

    /// The oldest log the tenant still keeps *by date* (`sort=date:1&per_page=1`): not the
    /// first in id order, but the one whose date bounds every kept log's (see
    /// [`synthetic_from`]).
    pub async fn oldest(&self) -> Result<Option<Value>, MgmtError> {
        self.first_of(&format!("{LOGS_PATH}?sort=date:1&per_page=1&page=0"))
            .await
    }

    /// The first log after `from` in id order (a checkpoint page of one).
    pub async fn first_after(&self, from: &str) -> Result<Option<Value>, MgmtError> {
        Ok(self.page_after(from, 1).await?.logs.into_iter().next())
    }

    async fn first_of(&self, path: &str) -> Result<Option<Value>, MgmtError> {
        let (value, _) = self.get(Operation::GetLogs, path).await?;
        match value {
            Value::Array(mut logs) => Ok((!logs.is_empty()).then(|| logs.swap_remove(0))),
            _ => Err(MgmtError::Protocol {
                operation: Operation::GetLogs.as_str(),
                detail: "the search form did not answer a JSON array".to_owned(),
            }),
        }
    }

    /// `GET /api/v2/log-streams/{id}`.
    pub async fn log_stream(&self, id: &str) -> Result<LogStream, MgmtError> {
        let path = format!("/api/v2/log-streams/{}", encode_path_segment(id));
        let (value, _) = self.get(Operation::GetLogStream, &path).await?;
        serde_json::from_value(value).map_err(|e| MgmtError::Undecodable {
            operation: Operation::GetLogStream.as_str(),
            source: e.into(),
        })
    }
}

/// The `rel="next"` target of a `Link` header, as a path and query under `/api/v2/logs` (its
/// scheme and host are dropped: the request stays on the configured tenant, with its token).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (target, params) = part.trim().split_once(';')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if !is_next {
                return None;
            }
            let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            let path = match url.find("://") {
                Some(at) => {
                    let rest = &url[at + 3..];
                    &rest[rest.find('/')?..]
                }
                None => url,
            };
            (path.starts_with(&format!("{LOGS_PATH}?")) && !path.contains(char::is_whitespace))
                .then(|| path.to_owned())
        })
}

/// A log's id: `log_id`, or `_id` (the Management API gives both).
pub fn log_id_of(log: &Value) -> Option<&str> {
    log.get("log_id")
        .or_else(|| log.get("_id"))
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
}

/// A log's `date` as an instant (`None` when absent or not RFC 3339).
pub fn date_of(log: &Value) -> Option<SystemTime> {
    let text = log.get("date").and_then(Value::as_str)?;
    humantime::parse_rfc3339(text)
        .or_else(|_| humantime::parse_rfc3339_weak(text.trim_end_matches('Z')))
        .ok()
}

/// Compares two log ids as Auth0 orders them: decimal strings of equal width, so by length,
/// then by text.
pub fn log_id_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Digits before the time in a log id: `900` in every recorded id, in Auth0's docs and in
/// Elastic's Auth0 integration (which starts from `"900" + YYYYMMDDhhmmss + zeros`).
pub const ID_PREFIX_DIGITS: usize = 3;
/// `YYYYMMDDhhmmss`, UTC.
const ID_TIME_DIGITS: usize = 14;
/// The first second RFC 3339 cannot write (year 10000).
const YEAR_10000: u64 = 253_402_300_800;

/// The ingestion time a log id encodes (`YYYYMMDDhhmmss` after the prefix), to the second;
/// `None` when the id does not hold a time there.
pub fn id_time(id: &str) -> Option<SystemTime> {
    let digits = id.get(ID_PREFIX_DIGITS..ID_PREFIX_DIGITS + ID_TIME_DIGITS)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &digits[0..4],
        &digits[4..6],
        &digits[6..8],
        &digits[8..10],
        &digits[10..12],
        &digits[12..14]
    );
    humantime::parse_rfc3339(&text).ok()
}

/// A checkpoint `from` below every log id (of `reference`'s prefix and width) whose time is at
/// or after `at`: `reference`'s prefix, the second before `at`'s, zeros to `reference`'s
/// width. The checkpoint form takes any `from` (it orders by id; Auth0's docs do not require
/// an existing id, and Elastic's integration starts with such a one). `None` when `reference`
/// holds no time or `at` cannot be written (before 1970, after 9999).
pub fn synthetic_from(reference: &str, at: SystemTime) -> Option<String> {
    use std::fmt::Write;
    id_time(reference)?;
    let secs = at
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs()
        .checked_sub(1)?;
    if secs >= YEAR_10000 {
        return None;
    }
    let mut text = String::new();
    write!(
        text,
        "{}",
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
    )
    .ok()?;
    let mut id = reference.get(..ID_PREFIX_DIGITS)?.to_owned();
    id.extend(text.chars().filter(char::is_ascii_digit));
    if id.len() != ID_PREFIX_DIGITS + ID_TIME_DIGITS || id.len() > reference.len() {
        return None;
    }
    id.extend(std::iter::repeat_n('0', reference.len() - id.len()));
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, LINK};

    fn link(value: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")),
        );
        next_link(&headers)
    }

    #[test]
    fn the_next_link_keeps_the_path_and_query_on_the_configured_tenant() {
        assert_eq!(
            link("<https://acme.auth0.com/api/v2/logs?from=900&take=100>; rel=\"next\""),
            Some("/api/v2/logs?from=900&take=100".to_owned())
        );
        assert_eq!(
            link("<https://a/api/v2/logs?from=1&take=5>; rel=\"prev\", <https://a/api/v2/logs?from=9&take=5>; rel=\"next\""),
            Some("/api/v2/logs?from=9&take=5".to_owned())
        );
        assert_eq!(link("<https://a/api/v2/users?x=1>; rel=\"next\""), None);
        assert_eq!(link("garbage"), None);
    }

    #[test]
    fn log_ids_order_by_width_then_text_and_dates_parse() {
        use std::cmp::Ordering;
        assert_eq!(log_id_order("99", "100"), Ordering::Less);
        assert_eq!(log_id_order("900", "901"), Ordering::Less);
        let log = serde_json::json!({"_id": "9", "date": "2026-11-23T10:00:00.120Z"});
        assert_eq!(log_id_of(&log), Some("9"));
        assert!(date_of(&log).is_some());
        assert!(date_of(&serde_json::json!({"date": "yesterday"})).is_none());
    }

    /// The recorded ids (go-auth0's `TestLogManager_CheckpointPagination`) hold their ingestion
    /// time after `900`.
    #[test]
    fn a_log_id_holds_its_ingestion_time_and_a_synthetic_from_sorts_below_it() {
        let id = "90020230602105805996607000000000000001223372045029306413";
        let at = id_time(id).unwrap_or_else(|| panic!("no time"));
        assert_eq!(
            humantime::format_rfc3339_seconds(at).to_string(),
            "2023-06-02T10:58:05Z"
        );
        let from = synthetic_from(id, at).unwrap_or_else(|| panic!("no from"));
        assert_eq!(
            from,
            "90020230602105804000000000000000000000000000000000000000"
        );
        assert_eq!(log_id_order(&from, id), std::cmp::Ordering::Less);
        assert_eq!(id_time("900abc"), None);
        assert_eq!(synthetic_from("42", at), None);
        assert_eq!(synthetic_from(id, UNIX_EPOCH), None);
    }

    mod synthetic {
        use super::super::*;
        use proptest::prelude::*;

        /// A 56-digit id at `at` (seconds and microseconds) with a sequence.
        fn id_at(at: u64, micros: u32, sequence: u64) -> String {
            let time: String =
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at))
                    .to_string()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect();
            format!("900{time}{micros:06}{sequence:033}")
        }

        proptest! {
            /// Logs ingested (their ids) at most `margin` before or any time after their date:
            /// a `from` built for `wanted - margin` starts below every log dated `wanted` or
            /// later, whatever the skew and the order of ids and dates.
            #[test]
            fn a_synthetic_from_never_starts_after_a_log_dated_at_or_after_the_wanted_time(
                base in 1_600_000_000u64..4_000_000_000,
                logs in proptest::collection::vec((0u64..600_000, -60_000i64..600_000, 0u32..1_000_000), 1..60),
                wanted_offset in 0u64..600_000,
                margin_ms in 60_000u64..120_000,
            ) {
                let margin = Duration::from_millis(margin_ms);
                // (date, id): the id's time is the date plus a skew of at least -margin.
                let logs: Vec<(SystemTime, String)> = logs
                    .iter()
                    .enumerate()
                    .map(|(i, &(date_ms, skew_ms, micros))| {
                        let date = UNIX_EPOCH + Duration::from_millis(base * 1000 + date_ms);
                        let skew = skew_ms.max(-(margin_ms as i64));
                        let ingested_ms = (base * 1000 + date_ms).saturating_add_signed(skew);
                        (date, id_at(ingested_ms / 1000, micros, i as u64 + 1))
                    })
                    .collect();
                let wanted = UNIX_EPOCH + Duration::from_millis(base * 1000 + wanted_offset);
                let from = synthetic_from(&logs[0].1, wanted - margin);
                prop_assert!(from.is_some());
                let from = from.unwrap_or_default();
                for (date, id) in &logs {
                    if *date >= wanted {
                        prop_assert_eq!(log_id_order(&from, id), std::cmp::Ordering::Less, "{} {}", from, id);
                    }
                }
                // `earliest`: wanted is the oldest date: every log is read.
                let oldest = logs.iter().map(|(d, _)| *d).min().unwrap_or(wanted);
                let from = synthetic_from(&logs[0].1, oldest - margin).unwrap_or_default();
                for (_, id) in &logs {
                    prop_assert_eq!(log_id_order(&from, id), std::cmp::Ordering::Less);
                }
            }
        }
    }
}
