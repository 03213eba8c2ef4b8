//! The two error bodies the simulator sends: the Management API's
//! `{"statusCode","error","message"[,"errorCode"]}` and the token endpoint's OAuth
//! `{"error","error_description"[,"error_uri"]}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::wire::json_response;

/// A Management API error answer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub error_code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            error_code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.error_code = Some(code);
        self
    }

    /// 400 `invalid_body`; `detail` follows "Payload validation error: ".
    pub fn invalid_body(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Payload validation error: {detail}"),
        )
        .with_code("invalid_body")
    }

    /// 400 `invalid_query_string`; `detail` follows "Query validation error: ".
    pub fn invalid_query(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Query validation error: {detail}"),
        )
        .with_code("invalid_query_string")
    }

    /// 400 `invalid_uri`; `detail` follows "Path validation error: ".
    pub fn invalid_uri(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Path validation error: {detail}"),
        )
        .with_code("invalid_uri")
    }

    pub fn user_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "The user does not exist.").with_code("inexistent_user")
    }

    pub fn users_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "One or more of the users do not exist.",
        )
        .with_code("inexistent_user")
    }

    /// Unknown role: no `errorCode`, as recorded from the real API.
    /// 404 for `GET /api/v2/clients/{id}` of an application that does not exist.
    pub fn client_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "The client does not exist").with_code("inexistent_client")
    }

    pub fn role_not_found(status: StatusCode) -> Self {
        Self::new(status, "The role does not exist.")
    }

    /// 403 for a token lacking every scope that accepts the call.
    pub fn insufficient_scope(accepted: &[&str]) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Insufficient scope, expected any of: {}",
                accepted.join(",")
            ),
        )
        .with_code("insufficient_scope")
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn too_many_requests() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Global limit has been reached",
        )
        .with_code("too_many_requests")
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    }

    pub fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
    }

    pub fn not_found_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found")
    }

    /// The JSON body Auth0 sends for this error.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("statusCode".into(), json!(self.status.as_u16()));
        body.insert(
            "error".into(),
            json!(self.status.canonical_reason().unwrap_or("Error")),
        );
        body.insert("message".into(), json!(self.message));
        if let Some(code) = self.error_code {
            body.insert("errorCode".into(), json!(code));
        }
        Value::Object(body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body())
    }
}

/// An `/oauth/token` error answer.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{status}: {error}: {description}")]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    pub uri: Option<&'static str>,
}

impl OAuthError {
    pub fn invalid_request(description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            description: description.into(),
            uri: None,
        }
    }

    pub fn bad_credentials() -> Self {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "access_denied",
            description: "Unauthorized".into(),
            uri: None,
        }
    }

    pub fn grant_not_allowed(grant_type: &str) -> Self {
        OAuthError {
            status: StatusCode::FORBIDDEN,
            error: "unauthorized_client",
            description: format!("Grant type '{grant_type}' not allowed for the client."),
            uri: Some("https://auth0.com/docs/clients/client-grant-types"),
        }
    }

    pub fn audience_not_granted(audience: &str) -> Self {
        OAuthError {
            status: StatusCode::FORBIDDEN,
            error: "access_denied",
            description: format!(
                "Client is not authorized to access \"{audience}\". You need to create a \
                 \"client-grant\" associated to this API. See: \
                 https://auth0.com/docs/api/v2#!/Client_Grants/post_client_grants"
            ),
            uri: None,
        }
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.error));
        body.insert("error_description".into(), json!(self.description));
        if let Some(uri) = self.uri {
            body.insert("error_uri".into(), json!(uri));
        }
        Value::Object(body)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body())
    }
}
