//! How values travel over HTTP in the simulator: percent-decoding of path segments, query and
//! form strings, JSON responses with Auth0's content type, and Auth0-style timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::error::ApiError;

/// Auth0 sends this content type on every Management API answer, even on 204.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A JSON response with Auth0's content type.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(JSON_CONTENT_TYPE),
        )],
        bytes,
    )
        .into_response()
}

/// An empty-bodied response that still carries the JSON content type, as Auth0's 204s do.
pub(crate) fn empty_response(status: StatusCode) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(JSON_CONTENT_TYPE),
        )],
    )
        .into_response()
}

/// Decodes one raw (still percent-encoded) path segment: `auth0%7Cabc` → `auth0|abc`,
/// `corp%2Falice` → `corp/alice`; a raw `|` passes through unchanged.
pub(crate) fn decode_path_segment(raw: &str) -> Result<String, ApiError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::invalid_uri(format!("'{raw}' is not valid UTF-8 once decoded")))
}

/// Parses `a=1&b=x+y` (query strings and form bodies): `+` is a space, `%XX` is decoded,
/// invalid UTF-8 is replaced.
pub(crate) fn parse_form(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_form_component(key), decode_form_component(value))
        })
        .collect()
}

fn decode_form_component(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Seconds since the Unix epoch, with fractions, from the wall clock.
pub(crate) fn epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `2023-01-25T19:00:26.539Z`: RFC 3339 in UTC with milliseconds, as Auth0 writes `created_at`.
pub(crate) fn rfc3339_millis(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn decodes_encoded_pipe_and_slash() {
        assert_eq!(
            decode_path_segment("samlp%7Ccorp%2Falice").ok(),
            Some("samlp|corp/alice".to_owned())
        );
        assert_eq!(
            decode_path_segment("auth0|abc").ok(),
            Some("auth0|abc".to_owned())
        );
        assert!(decode_path_segment("%FF").is_err());
    }

    #[test]
    fn parses_forms() {
        assert_eq!(
            parse_form("a=1&name_filter=The+One%21&&flag"),
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("name_filter".to_owned(), "The One!".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn formats_timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_674_673_226_539);
        assert_eq!(rfc3339_millis(t), "2023-01-25T19:00:26.539Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
