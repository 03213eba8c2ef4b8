//! Per-client token quotas (Auth0 Early Access): token answers carry
//! `Auth0-Client-Quota-Limit: b=per_hour;q=100;r=99;t=3600` (one entry per bucket, comma
//! separated: the bucket, its quota, what remains, seconds to its reset), and a token request
//! past it answers 429 `Client quota exceeded`. Management API tokens themselves do not count
//! toward the tenant's machine-to-machine token quota (an internal Auth0 audience); a per-client
//! quota set on this application does. Pure parsing.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// The header Auth0 sends on token answers when the application has a client quota.
pub const HEADER: &str = "auth0-client-quota-limit";

/// One bucket of a client quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaBucket {
    /// `per_hour`, `per_day`.
    pub bucket: String,
    pub quota: u64,
    pub remaining: u64,
    /// Until the bucket resets.
    pub reset: Duration,
}

/// Every bucket the header lists (entries that do not parse are left out).
pub fn parse(headers: &HeaderMap) -> Vec<QuotaBucket> {
    headers
        .get_all(HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse_bucket)
        .collect()
}

fn parse_bucket(entry: &str) -> Option<QuotaBucket> {
    let (mut bucket, mut quota, mut remaining, mut reset) = (None, None, None, None);
    for part in entry.split(';') {
        let (key, value) = part.trim().split_once('=')?;
        let value = value.trim();
        match key.trim() {
            "b" => bucket = Some(value.to_owned()),
            "q" => quota = value.parse().ok(),
            "r" => remaining = value.parse().ok(),
            "t" => reset = value.parse::<u64>().ok().map(Duration::from_secs),
            _ => {}
        }
    }
    Some(QuotaBucket {
        bucket: bucket.unwrap_or_default(),
        quota: quota?,
        remaining: remaining?,
        reset: reset.unwrap_or_default(),
    })
}

/// A token 429 that is the client quota, not a rate limit: its body says `Client quota
/// exceeded`, or its header shows a bucket with nothing remaining. `Some(wait)`: until the
/// exhausted bucket resets (at least a second; an hour when the answer does not say).
pub fn exhausted(headers: &HeaderMap, body: &[u8]) -> Option<Duration> {
    let said = String::from_utf8_lossy(body)
        .to_ascii_lowercase()
        .contains("client quota exceeded");
    let empty = parse(headers)
        .into_iter()
        .filter(|b| b.remaining == 0)
        .map(|b| b.reset)
        .max();
    match (said, empty) {
        (_, Some(reset)) => Some(reset.max(Duration::from_secs(1))),
        (true, None) => Some(Duration::from_secs(3600)),
        (false, None) => None,
    }
}

/// The advice for an exhausted client quota.
pub const ADVICE: &str = "this application's per-client token quota (Auth0-Client-Quota-Limit) is used up: the service waits for the quota's reset; raise the application's quota (Dashboard → Applications → the application → Token quota) or find what else requests tokens with these credentials (every process shares them)";

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HEADER,
            HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
        );
        h
    }

    #[test]
    fn buckets_parse_and_an_empty_bucket_or_the_body_is_the_quota() {
        let h = headers("b=per_hour;q=100;r=0;t=1200,b=per_day;q=1000;r=900;t=80000");
        assert_eq!(
            parse(&h),
            vec![
                QuotaBucket {
                    bucket: "per_hour".into(),
                    quota: 100,
                    remaining: 0,
                    reset: Duration::from_secs(1200)
                },
                QuotaBucket {
                    bucket: "per_day".into(),
                    quota: 1000,
                    remaining: 900,
                    reset: Duration::from_secs(80000)
                },
            ]
        );
        assert_eq!(exhausted(&h, b""), Some(Duration::from_secs(1200)));
        let plenty = headers("b=per_hour;q=100;r=7;t=30");
        assert_eq!(
            exhausted(&plenty, b"{\"error\":\"too_many_requests\"}"),
            None
        );
        assert_eq!(
            exhausted(
                &HeaderMap::new(),
                br#"{"error":"too_many_requests","error_description":"Client quota exceeded"}"#
            ),
            Some(Duration::from_secs(3600))
        );
        assert!(parse(&headers("garbage")).is_empty());
    }
}
