//! The `/sim/*` admin API that lets out-of-process tests inspect and steer the simulator; it is
//! never slowed, faulted, rate limited or authenticated.

use axum::body::Bytes;
use axum::extract::{RawPathParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use super::config::{SeedRole, SeedUser};
use super::wire::{decode_path_segment, json_response};
use super::Simulator;

/// Body of `POST /sim/control`: every field optional, unknown fields refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    pub down: Option<bool>,
    pub error_rate: Option<f64>,
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub revoke_tokens: Option<bool>,
    pub latency_ms: Option<u64>,
    pub reset_equals_now: Option<bool>,
    pub retry_after: Option<bool>,
    pub accept_any_user: Option<bool>,
    pub nonexistent_role_status: Option<u16>,
    pub credentials_revoked: Option<bool>,
    /// Rotates the application's client secret (tokens already issued stay valid, as at
    /// Auth0; add `revoke_tokens` to make the service ask for a new one).
    pub client_secret: Option<String>,
    /// Replaces the denied scopes (`[]` gives every scope back).
    pub denied_scopes: Option<Vec<String>>,
    /// `""` switches garbage headers off.
    pub garbage_rate_limit_headers: Option<String>,
    pub cut_body_rate: Option<f64>,
    /// The next this many log stream creations lose their answer (the stream is created).
    pub lose_log_stream_creation_answers: Option<u32>,
    /// How long export jobs take to complete.
    pub export_job_millis: Option<u64>,
    /// Export jobs fail with this reason (`""` lets them succeed again).
    pub export_job_failure: Option<String>,
    /// Probability that `GET /api/v2/logs` answers 500/503.
    pub logs_error_rate: Option<f64>,
    /// The next this many `GET /api/v2/logs` calls answer 429.
    pub logs_rate_limited_calls: Option<u64>,
    /// Logs below this `log_id` are purged (the retention period passed them).
    pub logs_purge_before: Option<String>,
    /// The organization member roles bucket: refill per minute.
    pub organization_roles_per_minute: Option<f64>,
    /// The organization member roles bucket: size.
    pub organization_roles_burst: Option<u32>,
}

pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/sim/state", get(state))
        .route("/sim/control", post(control))
        .route("/sim/users", post(add_user))
        .route("/sim/users/{id}", delete(delete_user))
        .route("/sim/roles", post(add_role))
        .route("/sim/logs", post(append_logs))
        .route("/sim/log-streams/{id}/status", post(set_log_stream_status))
        .route("/sim/organizations", post(add_organization))
        .route("/sim/organizations/{id}/members", post(add_members))
        .route(
            "/sim/organizations/{id}/members/{user_id}",
            delete(remove_member),
        )
}

/// Body of `POST /sim/organizations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrganization {
    #[serde(default)]
    id: Option<String>,
    name: String,
}

/// `POST /sim/organizations` `{"name", "id"?}` → 201 `{"id": ...}`.
async fn add_organization(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<NewOrganization>(&body) {
        Ok(org) if !org.name.is_empty() => {
            let id = sim.add_organization(org.id.as_deref(), &org.name);
            json_response(StatusCode::CREATED, &json!({ "id": id }))
        }
        Ok(_) => bad_request("name must not be empty"),
        Err(err) => bad_request(err),
    }
}

/// Body of `POST /sim/organizations/{id}/members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMembers {
    members: Vec<String>,
}

fn raw_param(params: &RawPathParams, name: &str) -> Result<String, super::ApiError> {
    let raw = params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .unwrap_or("");
    decode_path_segment(raw)
}

/// `POST /sim/organizations/{id}/members` `{"members": [user ids]}` → 204 (404: no such
/// organization). Members are added without roles, as auto-membership and the Management API do.
async fn add_members(State(sim): State<Simulator>, params: RawPathParams, body: Bytes) -> Response {
    let org = match raw_param(&params, "id") {
        Ok(org) => org,
        Err(err) => return err.into_response(),
    };
    match serde_json::from_slice::<NewMembers>(&body) {
        Ok(new) if sim.add_members(&org, &new.members) => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => StatusCode::NOT_FOUND.into_response(),
        Err(err) => bad_request(err),
    }
}

/// `DELETE /sim/organizations/{id}/members/{user_id}` → 204 (404: not a member).
async fn remove_member(State(sim): State<Simulator>, params: RawPathParams) -> Response {
    let (org, user) = match (raw_param(&params, "id"), raw_param(&params, "user_id")) {
        (Ok(org), Ok(user)) => (org, user),
        (Err(err), _) | (_, Err(err)) => return err.into_response(),
    };
    if sim.remove_member(&org, &user) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

fn bad_request(err: impl std::fmt::Display) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({ "error": "bad_request", "message": err.to_string() }),
    )
}

/// `GET /sim/state` → `{"users": {user_id: [role names]}, "organizations": {org_id: {user_id:
/// [role names]}}, "stats": SimStats}`.
async fn state(State(sim): State<Simulator>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "users": sim.users_with_roles(),
            "organizations": sim.organization_roles(),
            "stats": sim.stats(),
        }),
    )
}

/// `POST /sim/control` → 204.
async fn control(State(sim): State<Simulator>, body: Bytes) -> Response {
    let request: ControlRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return bad_request(err),
    };
    sim.apply_control(&request);
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /sim/users` (a [`SeedUser`]) → 201.
async fn add_user(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<SeedUser>(&body) {
        Ok(user) if !user.user_id.is_empty() => {
            sim.add_user(user);
            StatusCode::CREATED.into_response()
        }
        Ok(_) => bad_request("user_id must not be empty"),
        Err(err) => bad_request(err),
    }
}

/// `DELETE /sim/users/{id}` (percent-encoded id) → 204.
async fn delete_user(State(sim): State<Simulator>, params: RawPathParams) -> Response {
    let raw = params
        .iter()
        .find(|(key, _)| *key == "id")
        .map(|(_, value)| value)
        .unwrap_or("");
    match decode_path_segment(raw) {
        Ok(user_id) => {
            sim.delete_user(&user_id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(err) => err.into_response(),
    }
}

/// `POST /sim/roles` (a [`SeedRole`]) → 201 `{"id": ...}`.
async fn add_role(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<SeedRole>(&body) {
        Ok(role) if !role.name.is_empty() => {
            let id = sim.add_role(role);
            json_response(StatusCode::CREATED, &json!({ "id": id }))
        }
        Ok(_) => bad_request("name must not be empty"),
        Err(err) => bad_request(err),
    }
}

/// `POST /sim/logs` (a JSON array of log objects, or `{"logs": [...]}`) → 201 `{"log_ids": [...]}`.
async fn append_logs(State(sim): State<Simulator>, body: Bytes) -> Response {
    let logs = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(logs)) => logs,
        Ok(serde_json::Value::Object(mut fields)) => match fields.remove("logs") {
            Some(serde_json::Value::Array(logs)) => logs,
            _ => return bad_request("expected an array of logs or {\"logs\": [...]}"),
        },
        Ok(_) => return bad_request("expected an array of logs or {\"logs\": [...]}"),
        Err(err) => return bad_request(err),
    };
    let ids = sim.append_logs(logs);
    json_response(StatusCode::CREATED, &json!({ "log_ids": ids }))
}

/// `POST /sim/log-streams/{id}/status` (`{"status": "suspended"}`) → 204, or 404.
async fn set_log_stream_status(
    State(sim): State<Simulator>,
    params: RawPathParams,
    body: Bytes,
) -> Response {
    let raw = params
        .iter()
        .find(|(key, _)| *key == "id")
        .map(|(_, value)| value)
        .unwrap_or("");
    let id = match decode_path_segment(raw) {
        Ok(id) => id,
        Err(err) => return err.into_response(),
    };
    let status = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("status")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        });
    match status {
        Some(status) if sim.set_log_stream_status(&id, &status) => {
            StatusCode::NO_CONTENT.into_response()
        }
        Some(_) => StatusCode::NOT_FOUND.into_response(),
        None => bad_request("expected {\"status\": \"active|paused|suspended\"}"),
    }
}
