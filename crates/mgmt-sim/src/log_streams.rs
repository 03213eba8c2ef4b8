//! `GET/POST /api/v2/log-streams` and `GET/PATCH/DELETE /api/v2/log-streams/{id}`: the tenant's
//! log streams with their type, status, sink, category filters and PII settings, validated as
//! Auth0 documents them (the type and an EventBridge stream's account and region are set at
//! creation only; Auth0 fills `awsPartnerEventSource`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawPathParams, State};
use axum::http::StatusCode;
use axum::response::Response;
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::state::{lock, Shared};
use super::wire::{decode_path_segment, empty_response, json_response};

/// Stream types Auth0 accepts.
const TYPES: [&str; 8] = [
    "http",
    "eventbridge",
    "eventgrid",
    "datadog",
    "splunk",
    "sumo",
    "segment",
    "mixpanel",
];

/// The category filter names Auth0 accepts.
const CATEGORIES: [&str; 22] = [
    "auth.ancillary.fail",
    "auth.ancillary.success",
    "auth.login.fail",
    "auth.login.notification",
    "auth.login.success",
    "auth.logout.fail",
    "auth.logout.success",
    "auth.signup.fail",
    "auth.signup.success",
    "auth.silent_auth.fail",
    "auth.silent_auth.success",
    "auth.token_exchange.fail",
    "auth.token_exchange.success",
    "management.fail",
    "management.success",
    "scim.event",
    "system.notification",
    "user.fail",
    "user.notification",
    "user.success",
    "actions",
    "other",
];

const STATUSES: [&str; 3] = ["active", "paused", "suspended"];
const CONTENT_FORMATS: [&str; 3] = ["JSONLINES", "JSONARRAY", "JSONOBJECT"];
const PII_FIELDS: [&str; 6] = [
    "first_name",
    "last_name",
    "username",
    "email",
    "phone",
    "address",
];

/// The filters of a prioritized stream: the security category only.
fn security_only() -> Value {
    json!([{"type": "category", "name": "security"}])
}

/// The tenant's streams, in creation order.
#[derive(Debug, Default)]
pub(crate) struct LogStreams {
    streams: Vec<Map<String, Value>>,
}

impl LogStreams {
    pub(crate) fn all(&self) -> Vec<Value> {
        self.streams.iter().cloned().map(Value::Object).collect()
    }

    /// Validates a creation body and stores the stream; returns it as Auth0 answers.
    pub(crate) fn create(&mut self, body: &Value, domain: &str) -> Result<Value, ApiError> {
        let Value::Object(fields) = body else {
            return Err(ApiError::invalid_body(
                "Payload validation error: 'Expected type object but found type array'",
            ));
        };
        for key in fields.keys() {
            if ![
                "name",
                "type",
                "sink",
                "filters",
                "pii_config",
                "isPriority",
                "status",
                "startFrom",
            ]
            .contains(&key.as_str())
            {
                return Err(ApiError::invalid_body(format!(
                    "Payload validation error: 'Additional properties not allowed: {key}'"
                )));
            }
        }
        let name = required_string(fields, "name")?;
        let kind = required_string(fields, "type")?;
        if !TYPES.contains(&kind.as_str()) {
            return Err(ApiError::invalid_body(format!(
                "Payload validation error: 'No enum match for: \"{kind}\"' on property type"
            )));
        }
        let Some(Value::Object(sink)) = fields.get("sink") else {
            return Err(ApiError::invalid_body(
                "Payload validation error: 'Missing required property: sink'",
            ));
        };
        let mut sink = sink.clone();
        validate_sink(&kind, &sink, true)?;
        if kind == "eventbridge" {
            let suffix: String = random_alphanumeric(8).to_ascii_lowercase();
            sink.insert(
                "awsPartnerEventSource".to_owned(),
                json!(format!(
                    "aws.partner/auth0.com/{domain}-{suffix}/auth0.logs"
                )),
            );
        }
        let mut stream = Map::new();
        stream.insert(
            "id".to_owned(),
            json!(format!("lst_{}", random_alphanumeric(16))),
        );
        stream.insert("name".to_owned(), json!(name));
        stream.insert("type".to_owned(), json!(kind));
        let status = match fields.get("status") {
            Some(status) => validate_status(status)?,
            None => "active".to_owned(),
        };
        stream.insert("status".to_owned(), json!(status));
        stream.insert("sink".to_owned(), Value::Object(sink));
        let priority = fields
            .get("isPriority")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(filters) = fields.get("filters") {
            validate_filters(filters)?;
            stream.insert("filters".to_owned(), filters.clone());
        }
        if priority {
            // A prioritized stream carries security events only, whatever was asked.
            stream.insert("filters".to_owned(), security_only());
        }
        if let Some(pii) = fields.get("pii_config") {
            validate_pii(pii)?;
            stream.insert("pii_config".to_owned(), pii.clone());
        }
        stream.insert("isPriority".to_owned(), json!(priority));
        if let Some(start) = fields.get("startFrom") {
            // A point in time the new stream delivers from (not echoed back).
            if !start.is_string() {
                return Err(ApiError::invalid_body(
                    "Payload validation error: 'Expected type string' on property startFrom",
                ));
            }
        }
        self.streams.push(stream.clone());
        Ok(Value::Object(stream))
    }

    pub(crate) fn get(&self, id: &str) -> Option<Value> {
        self.streams
            .iter()
            .find(|s| s.get("id").and_then(Value::as_str) == Some(id))
            .cloned()
            .map(Value::Object)
    }

    /// Applies a `PATCH` body; `None` when there is no such stream.
    pub(crate) fn update(&mut self, id: &str, body: &Value) -> Result<Option<Value>, ApiError> {
        let Value::Object(fields) = body else {
            return Err(ApiError::invalid_body(
                "Payload validation error: 'Expected type object'",
            ));
        };
        let Some(stream) = self
            .streams
            .iter_mut()
            .find(|s| s.get("id").and_then(Value::as_str) == Some(id))
        else {
            return Ok(None);
        };
        let kind = stream
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut updated = stream.clone();
        for (key, value) in fields {
            match key.as_str() {
                "name" => match value.as_str() {
                    Some(name) if !name.is_empty() => {
                        updated.insert("name".to_owned(), json!(name));
                    }
                    _ => return Err(ApiError::invalid_body("Payload validation error: 'name'")),
                },
                "status" => {
                    let status = validate_status(value)?;
                    updated.insert("status".to_owned(), json!(status));
                }
                "filters" => {
                    validate_filters(value)?;
                    // Answered 200 and ignored on a prioritized stream (security only).
                    if updated.get("isPriority") != Some(&json!(true)) {
                        updated.insert("filters".to_owned(), value.clone());
                    }
                }
                "pii_config" => {
                    if value.is_null() {
                        updated.remove("pii_config");
                    } else {
                        validate_pii(value)?;
                        updated.insert("pii_config".to_owned(), value.clone());
                    }
                }
                // `false` is accepted and changes nothing (a prioritized stream stays one);
                // anything else is refused.
                "isPriority" if value == &json!(false) => {}
                "isPriority" => {
                    return Err(ApiError::invalid_body(
                        "Payload validation error: isPriority can only be set at creation",
                    ))
                }
                "sink" => {
                    let Value::Object(changes) = value else {
                        return Err(ApiError::invalid_body(
                            "Payload validation error: 'sink' must be an object",
                        ));
                    };
                    validate_sink(&kind, changes, false)?;
                    let mut sink = updated
                        .get("sink")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    for (k, v) in changes {
                        sink.insert(k.clone(), v.clone());
                    }
                    updated.insert("sink".to_owned(), Value::Object(sink));
                }
                other => {
                    return Err(ApiError::invalid_body(format!(
                        "Payload validation error: 'Additional properties not allowed: {other}'"
                    )))
                }
            }
        }
        *stream = updated.clone();
        Ok(Some(Value::Object(updated)))
    }

    pub(crate) fn delete(&mut self, id: &str) -> bool {
        let before = self.streams.len();
        self.streams
            .retain(|s| s.get("id").and_then(Value::as_str) != Some(id));
        self.streams.len() != before
    }

    /// Sets a stream's status as Auth0 itself does (e.g. `suspended`); false if unknown.
    pub(crate) fn set_status(&mut self, id: &str, status: &str) -> bool {
        match self
            .streams
            .iter_mut()
            .find(|s| s.get("id").and_then(Value::as_str) == Some(id))
        {
            Some(stream) => {
                stream.insert("status".to_owned(), json!(status));
                true
            }
            None => false,
        }
    }
}

fn random_alphanumeric(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn required_string(fields: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match fields.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(ApiError::invalid_body(format!(
            "Payload validation error: 'Expected type string' on property {key}"
        ))),
        None => Err(ApiError::invalid_body(format!(
            "Payload validation error: 'Missing required property: {key}'"
        ))),
    }
}

fn validate_status(value: &Value) -> Result<String, ApiError> {
    match value.as_str() {
        Some(s) if STATUSES.contains(&s) => Ok(s.to_owned()),
        _ => Err(ApiError::invalid_body(format!(
            "Payload validation error: 'No enum match for: {value}' on property status"
        ))),
    }
}

fn validate_filters(value: &Value) -> Result<(), ApiError> {
    let Some(filters) = value.as_array() else {
        return Err(ApiError::invalid_body(
            "Payload validation error: 'Expected type array' on property filters",
        ));
    };
    for filter in filters {
        let kind = filter.get("type").and_then(Value::as_str);
        let name = filter.get("name").and_then(Value::as_str);
        match (kind, name) {
            (Some("category"), Some(name)) if CATEGORIES.contains(&name) => {}
            _ => {
                return Err(ApiError::invalid_body(format!(
                    "Payload validation error: invalid filter {filter}"
                )))
            }
        }
    }
    Ok(())
}

fn validate_pii(value: &Value) -> Result<(), ApiError> {
    let fields = value.get("log_fields").and_then(Value::as_array);
    let ok_fields = fields.is_some_and(|f| {
        !f.is_empty()
            && f.iter()
                .all(|v| v.as_str().is_some_and(|s| PII_FIELDS.contains(&s)))
    });
    let ok_method = value
        .get("method")
        .is_none_or(|m| matches!(m.as_str(), Some("mask" | "hash")));
    if ok_fields && ok_method {
        Ok(())
    } else {
        Err(ApiError::invalid_body(format!(
            "Payload validation error: invalid pii_config {value}"
        )))
    }
}

/// The sink of a stream of `kind`; `creating` requires the mandatory fields.
fn validate_sink(kind: &str, sink: &Map<String, Value>, creating: bool) -> Result<(), ApiError> {
    let string = |key: &str| sink.get(key).and_then(Value::as_str);
    match kind {
        "http" => {
            if creating && string("httpEndpoint").is_none_or(str::is_empty) {
                return Err(ApiError::invalid_body(
                    "Payload validation error: 'Missing required property: httpEndpoint'",
                ));
            }
            if let Some(endpoint) = string("httpEndpoint") {
                if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
                    return Err(ApiError::invalid_body(
                        "Payload validation error: httpEndpoint must be a URL",
                    ));
                }
            }
            if let Some(format) = sink.get("httpContentFormat") {
                if !format
                    .as_str()
                    .is_some_and(|f| CONTENT_FORMATS.contains(&f))
                {
                    return Err(ApiError::invalid_body(format!(
                        "Payload validation error: 'No enum match for: {format}' on property httpContentFormat"
                    )));
                }
            }
        }
        "eventbridge" => {
            if creating {
                for key in ["awsAccountId", "awsRegion"] {
                    if string(key).is_none_or(str::is_empty) {
                        return Err(ApiError::invalid_body(format!(
                            "Payload validation error: 'Missing required property: {key}'"
                        )));
                    }
                }
            } else if ["awsAccountId", "awsRegion", "awsPartnerEventSource"]
                .iter()
                .any(|k| sink.contains_key(*k))
            {
                return Err(ApiError::invalid_body(
                    "Payload validation error: the AWS account and region of an eventbridge stream cannot be changed",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn stream_id(params: &RawPathParams) -> Result<String, ApiError> {
    let raw = params
        .iter()
        .find(|(key, _)| *key == "id")
        .map(|(_, value)| value)
        .unwrap_or("");
    decode_path_segment(raw)
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid_body(format!("Invalid JSON: {e}")))
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "The log stream does not exist.")
        .with_code("inexistent_log_stream")
}

/// `GET /api/v2/log-streams` → every stream (an array, no paging).
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Response {
    json_response(
        StatusCode::OK,
        &Value::Array(lock(&shared.log_streams).all()),
    )
}

/// `POST /api/v2/log-streams` → 200 with the stream.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = parse_body(&body)?;
    let domain = lock(&shared.config).domain.clone();
    let created = lock(&shared.log_streams).create(&body, &domain)?;
    tracing::debug!(id = ?created.get("id"), "sim: log stream created");
    Ok(json_response(StatusCode::OK, &created))
}

/// `GET /api/v2/log-streams/{id}`.
pub(crate) async fn get_one(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
) -> Result<Response, ApiError> {
    let id = stream_id(&params)?;
    let stream = lock(&shared.log_streams).get(&id).ok_or_else(not_found)?;
    Ok(json_response(StatusCode::OK, &stream))
}

/// `PATCH /api/v2/log-streams/{id}` → 200 with the stream as it is now.
pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = stream_id(&params)?;
    let body = parse_body(&body)?;
    let updated = lock(&shared.log_streams)
        .update(&id, &body)?
        .ok_or_else(not_found)?;
    Ok(json_response(StatusCode::OK, &updated))
}

/// `DELETE /api/v2/log-streams/{id}` → 204.
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    params: RawPathParams,
) -> Result<Response, ApiError> {
    let id = stream_id(&params)?;
    if lock(&shared.log_streams).delete(&id) {
        Ok(empty_response(StatusCode::NO_CONTENT))
    } else {
        Err(not_found())
    }
}
