//! Event Streams as the tenant shows them: `POST /event-streams` (201, the webhook token
//! write-only), `GET /event-streams`, and `POST /event-streams/{id}/test` (202 with the
//! CloudEvent it generates: `a0purpose: "test"` and a fixed sample user the tenant does not
//! hold). [`test_event`] builds that CloudEvent for tests that deliver it themselves.

use serde_json::{json, Value};

/// The sample user every test event carries (the tenant does not hold it).
pub const TEST_EVENT_USER: &str = "auth0|507f1f77bcf86cd799439020";

/// The CloudEvent `POST /event-streams/{stream_id}/test` generates for `event_type` on the tenant
/// `domain`, as the recorded exchanges show it (`specversion` 1.0, an `evt_` id, the source
/// `urn:auth0:<domain>.sus.auth0.com`, the sample user in `data.object`, `a0purpose: "test"`,
/// `a0stream`, `a0tenant`).
pub fn test_event(domain: &str, stream_id: &str, event_type: &str, id: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("urn:auth0:{domain}.sus.auth0.com"),
        "type": event_type,
        "time": "2026-02-01T12:34:56.000Z",
        "data": {"object": {
            "user_id": TEST_EVENT_USER,
            "email": "john.doe@gmail.com",
            "email_verified": false,
            "username": "johndoe",
            "created_at": "2025-02-01T12:34:56Z",
            "updated_at": "2025-02-01T12:34:56Z",
            "identities": [{
                "provider": "auth0",
                "isSocial": false,
                "connection": "Username-Password-Authentication",
                "user_id": "507f1f77bcf86cd799439020",
            }],
            "app_metadata": {"plan": "pro"},
            "user_metadata": {"hobby": "skydiving"},
            "name": "John Doe",
            "logins_count": 42,
            "blocked": false,
        }},
        "a0purpose": "test",
        "a0stream": stream_id,
        "a0tenant": domain,
    })
}

/// The tenant's Event Streams (as created), in creation order.
#[derive(Debug, Default)]
pub(crate) struct EventStreams {
    streams: Vec<Value>,
}

/// `POST /api/v2/event-streams` → **201** (log streams answer 200) with the stream; the webhook
/// token is write-only (the answer shows `{"method": "bearer"}`).
pub(crate) async fn create(
    axum::extract::State(shared): axum::extract::State<std::sync::Arc<super::state::Shared>>,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, super::error::ApiError> {
    let mut stream: Value = serde_json::from_slice(&body)
        .map_err(|e| super::error::ApiError::invalid_body(format!("Invalid JSON: {e}")))?;
    if !stream.is_object() || stream.get("name").and_then(Value::as_str).is_none() {
        return Err(super::error::ApiError::invalid_body(
            "Payload validation error: 'Missing required property: name'",
        ));
    }
    let id = format!(
        "est_{}",
        rand::Rng::sample_iter(rand::rng(), &rand::distr::Alphanumeric)
            .take(22)
            .map(char::from)
            .collect::<String>()
    );
    stream["id"] = json!(id);
    stream["status"] = stream.get("status").cloned().unwrap_or(json!("enabled"));
    if let Some(auth) = stream.pointer_mut("/destination/configuration/webhook_authorization") {
        if let Some(map) = auth.as_object_mut() {
            map.remove("token");
        }
    }
    super::state::lock(&shared.event_streams)
        .streams
        .push(stream.clone());
    Ok(super::wire::json_response(
        axum::http::StatusCode::CREATED,
        &stream,
    ))
}

/// `POST /api/v2/event-streams/{id}/test` `{"event_type"}` → 202 with the delivery and the
/// CloudEvent it generates ([`test_event`]); 404 for an unknown stream.
pub(crate) async fn test(
    axum::extract::State(shared): axum::extract::State<std::sync::Arc<super::state::Shared>>,
    params: axum::extract::RawPathParams,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, super::error::ApiError> {
    let id = params
        .iter()
        .find(|(k, _)| *k == "id")
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default();
    let known = super::state::lock(&shared.event_streams)
        .streams
        .iter()
        .any(|s| s["id"] == json!(id));
    if !known {
        return Err(super::error::ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "The event stream does not exist.",
        ));
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let kind = request["event_type"]
        .as_str()
        .unwrap_or("user.created")
        .to_owned();
    let domain = super::state::lock(&shared.config).domain.clone();
    let event_id = format!(
        "evt_{}",
        rand::Rng::sample_iter(rand::rng(), &rand::distr::Alphanumeric)
            .take(22)
            .map(char::from)
            .collect::<String>()
    );
    let event = test_event(&domain, &id, &kind, &event_id);
    let answer = json!({
        "id": event_id,
        "event_stream_id": id,
        "event_type": kind,
        "status": "pending",
        "attempts": [],
        "event": event,
    });
    Ok(super::wire::json_response(
        axum::http::StatusCode::ACCEPTED,
        &answer,
    ))
}
