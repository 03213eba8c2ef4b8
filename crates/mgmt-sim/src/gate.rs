//! The checks every simulated-tenant request passes before its handler, in this order: added
//! latency, outage (503), bearer token (401), rate limit (429), injected fault (500/503). It also
//! counts requests and puts the `x-ratelimit-*` headers on every answer that reached the bucket.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::error::ApiError;
use super::oauth::TokenStatus;
use super::rate_limit::{Admission, RateHeaders};
use super::state::{lock, Knobs, Shared};
use super::stats::Operation;
use super::wire::epoch_seconds;

/// Middleware on every tenant route (`/oauth/token` and `/api/v2/*`).
pub(crate) async fn gate(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let op = Operation::classify(request.method(), &route);
    let is_api = op.map_or_else(|| route.starts_with("/api/v2/"), Operation::is_api);
    shared.count(|s| s.record_call(op));
    let knobs = shared.knobs();

    if op == Some(Operation::Token) {
        let token_latency_ms = lock(&shared.config).token_latency_ms;
        if token_latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(token_latency_ms)).await;
        }
    }
    if let Some(refusal) = refuse_before_auth(&shared, &knobs).await {
        return refusal;
    }
    let mut rate_headers = None;
    if is_api {
        let authorized = if knobs.credentials_revoked {
            Err(ApiError::unauthorized("Invalid token"))
        } else {
            authorize(&shared, request.headers())
        };
        let mut denied = match authorized {
            Ok(denied_at_issue) => denied_at_issue,
            Err(err) => {
                shared.count(|s| s.unauthorized += 1);
                return err.into_response();
            }
        };
        // Denied now, or when the token was issued (a scope granted again needs a new token).
        denied.extend(knobs.denied_scopes.iter().cloned());
        if let Some(refusal) = op.and_then(|op| missing_scope(op, &denied)) {
            shared.count(|s| s.forbidden += 1);
            return refusal.into_response();
        }
        let (headers, limited) = admit(&shared, &knobs);
        if limited {
            shared.count(|s| s.rate_limited += 1);
            tracing::debug!(route, "sim: rate limited");
            let mut response =
                with_headers(ApiError::too_many_requests().into_response(), Some(headers));
            if let Some(garbage) = &knobs.garbage_rate_limit_headers {
                if let Ok(value) = HeaderValue::from_str(garbage) {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, value.clone());
                    response.headers_mut().insert("x-ratelimit-reset", value);
                }
            }
            return response;
        }
        rate_headers = Some(headers);
        if op == Some(Operation::AssignOrganizationMemberRoles) {
            // A bucket of its own, on top of the tenant's: its headers are the ones answered.
            let (headers, limited) = admit_organization(&shared, &knobs);
            if limited {
                shared.count(|s| {
                    s.rate_limited += 1;
                    s.organization_rate_limited += 1;
                });
                tracing::debug!(route, "sim: organization member roles rate limited");
                return with_headers(ApiError::too_many_requests().into_response(), Some(headers));
            }
            rate_headers = Some(headers);
        }
    }
    if let Some(fault) = roll_fault(knobs.error_rate) {
        shared.count(|s| s.faults_served += 1);
        tracing::debug!(route, status = %fault.status, "sim: injected fault");
        return with_headers(fault.into_response(), rate_headers);
    }
    let response = with_headers(next.run(request).await, rate_headers);
    if response.status().is_success()
        && op == Some(Operation::CreateLogStream)
        && lose_answer(&shared)
    {
        shared.count(|s| s.bodies_cut += 1);
        tracing::debug!(route, "sim: log stream created, its answer lost");
        return cut_body(response).await;
    }
    if response.status().is_success() && roll(knobs.cut_body_rate) {
        shared.count(|s| s.bodies_cut += 1);
        return cut_body(response).await;
    }
    response
}

/// The scopes that each accept an operation ("expected any of"), as Auth0's API reference
/// lists them.
fn accepted_scopes(op: Operation) -> &'static [&'static str] {
    match op {
        Operation::Token => &[],
        Operation::GetRoles => &["read:roles"],
        Operation::GetUser => &["read:users", "read:current_user", "read:user_idp_tokens"],
        Operation::GetUserRoles => &["read:users", "read:roles", "read:role_members"],
        Operation::GetUserEffectiveRoles => &["read:user_effective_roles"],
        Operation::GetClient => &[
            "read:clients",
            "read:client_keys",
            "read:client_credentials",
            "read:client_summary",
        ],
        Operation::AssignUserRoles => &["update:users", "create:role_members"],
        Operation::RemoveUserRoles => &["update:users", "delete:role_members"],
        Operation::AssignRoleUsers => &["update:roles", "create:role_members"],
        Operation::CreateExportJob => &["read:users"],
        Operation::GetJob => &["create:users", "read:users"],
        Operation::GetRoleUsers => &["read:users", "read:roles", "read:role_members"],
        Operation::GetUsers => &["read:users", "read:user_idp_tokens"],
        Operation::GetLogStreams | Operation::GetLogStream => &["read:log_streams"],
        Operation::CreateLogStream => &["create:log_streams"],
        Operation::UpdateLogStream => &["update:log_streams"],
        Operation::DeleteLogStream => &["delete:log_streams"],
        Operation::GetLogs => &["read:logs", "read:logs_users"],
        Operation::AssignOrganizationMemberRoles => &["create:organization_member_roles"],
        Operation::RemoveOrganizationMemberRoles => &["delete:organization_member_roles"],
        Operation::GetOrganizations => &["read:organizations"],
        Operation::GetOrganizationMembers => &["read:organization_members"],
        Operation::SubscribeEvents => &["read:events"],
    }
}

/// A 403 `insufficient_scope` when every scope accepting `op` is denied.
fn missing_scope(op: Operation, denied: &[String]) -> Option<ApiError> {
    let accepted = accepted_scopes(op);
    if accepted.is_empty() || !accepted.iter().all(|s| denied.iter().any(|d| d == s)) {
        return None;
    }
    Some(ApiError::insufficient_scope(accepted))
}

/// Takes one of the log stream creation answers to lose, if any is left.
fn lose_answer(shared: &Shared) -> bool {
    let mut config = lock(&shared.config);
    let lose = config.lose_log_stream_creation_answers > 0;
    if lose {
        config.lose_log_stream_creation_answers -= 1;
    }
    lose
}

fn roll(p: f64) -> bool {
    p > 0.0 && rand::random::<f64>() < p
}

/// The same answer, but its body stops after the first bytes and the connection breaks.
async fn cut_body(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
        Ok(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sim: body cut off",
        )),
    ];
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
    )
}

/// Unknown routes: still slowed down and still down during an outage, then 404.
pub(crate) async fn fallback(State(shared): State<Arc<Shared>>) -> Response {
    shared.count(|s| s.record_call(None));
    let knobs = shared.knobs();
    if let Some(refusal) = refuse_before_auth(&shared, &knobs).await {
        return refusal;
    }
    ApiError::not_found_route().into_response()
}

/// Latency, then the outage check.
async fn refuse_before_auth(shared: &Shared, knobs: &Knobs) -> Option<Response> {
    if knobs.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.latency_ms)).await;
    }
    if shared.is_down() {
        shared.count(|s| s.down_served += 1);
        return Some(ApiError::unavailable().into_response());
    }
    None
}

/// Checks the bearer token; returns the scopes it lacks (those denied when it was issued).
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<Vec<String>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized("Missing authentication"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| ApiError::unauthorized("Invalid token"))?;
    let tokens = lock(&shared.tokens);
    match tokens.check(token, Instant::now()) {
        TokenStatus::Valid => Ok(tokens.denied_at_issue(token)),
        TokenStatus::Expired => Err(ApiError::unauthorized(
            "Expired token received for JSON Web Token validation",
        )),
        TokenStatus::Unknown => Err(ApiError::unauthorized("Invalid token")),
    }
}

/// Takes a token from the bucket; returns the headers and whether the request is refused.
fn admit(shared: &Shared, knobs: &Knobs) -> (RateHeaders, bool) {
    let (admission, burst) = {
        let mut bucket = lock(&shared.bucket);
        (bucket.admit(Instant::now()), bucket.burst())
    };
    let headers = RateHeaders::for_admission(admission, burst, epoch_seconds(), knobs.header_style);
    (headers, matches!(admission, Admission::Limited { .. }))
}

/// Takes a token from the organization member roles bucket.
fn admit_organization(shared: &Shared, knobs: &Knobs) -> (RateHeaders, bool) {
    let (admission, burst) = {
        let mut bucket = lock(&shared.organization_bucket);
        (bucket.admit(Instant::now()), bucket.burst())
    };
    let headers = RateHeaders::for_admission(admission, burst, epoch_seconds(), knobs.header_style);
    (headers, matches!(admission, Admission::Limited { .. }))
}

/// With probability `error_rate`, a 500 or a 503 (even odds).
fn roll_fault(error_rate: f64) -> Option<ApiError> {
    if error_rate.is_nan() || error_rate <= 0.0 || rand::random::<f64>() >= error_rate {
        return None;
    }
    Some(if rand::random::<bool>() {
        ApiError::internal()
    } else {
        ApiError::unavailable()
    })
}

fn with_headers(mut response: Response, headers: Option<RateHeaders>) -> Response {
    if let Some(headers) = headers {
        headers.apply(response.headers_mut());
    }
    response
}
