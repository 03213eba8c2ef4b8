//! `POST /oauth/token` (client-credentials grant, JSON or form body) and the store of issued
//! opaque access tokens, which expire on `tokio::time::Instant` time and can all be revoked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::error::OAuthError;
use super::state::{lock, Shared};
use super::wire::{json_response, parse_form};

/// The scopes of the application's client grant: every token gets them, less the denied ones.
pub(crate) const GRANTED_SCOPES: &str =
    "read:users read:roles update:users create:role_members read:role_members update:roles read:clients read:log_streams create:log_streams update:log_streams delete:log_streams read:organizations read:organization_members read:organization_member_roles create:organization_member_roles";

/// Expired tokens are remembered this long (to answer "Expired token") before being dropped.
const EXPIRED_MEMORY: Duration = Duration::from_secs(3600);

/// Issued tokens and when each expires (`None`: beyond what `Instant` can represent).
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    /// Each token's expiry, and the scopes denied when it was issued: like a real access
    /// token, it keeps lacking them after they are granted again.
    tokens: HashMap<String, (Option<Instant>, Vec<String>)>,
}

/// What a presented token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenStatus {
    Valid,
    Expired,
    Unknown,
}

impl TokenStore {
    /// A new token, shaped like Auth0's (a JWT whose payload carries `claims`, the `scope`
    /// claim among them; the signature is random bytes: nothing verifies it).
    pub(crate) fn issue(
        &mut self,
        lifetime: Duration,
        now: Instant,
        denied: Vec<String>,
        claims: &Value,
    ) -> String {
        self.tokens.retain(|_, (expiry, _)| {
            expiry
                .and_then(|e| e.checked_add(EXPIRED_MEMORY))
                .is_none_or(|forget_at| forget_at > now)
        });
        let signature: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": "sim"});
        let token = format!(
            "{}.{}.{signature}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        self.tokens
            .insert(token.clone(), (now.checked_add(lifetime), denied));
        token
    }

    pub(crate) fn check(&self, token: &str, now: Instant) -> TokenStatus {
        match self.tokens.get(token) {
            None => TokenStatus::Unknown,
            Some((Some(expiry), _)) if *expiry <= now => TokenStatus::Expired,
            Some(_) => TokenStatus::Valid,
        }
    }

    /// The scopes that were denied when `token` was issued.
    pub(crate) fn denied_at_issue(&self, token: &str) -> Vec<String> {
        self.tokens
            .get(token)
            .map(|(_, denied)| denied.clone())
            .unwrap_or_default()
    }

    pub(crate) fn revoke_all(&mut self) {
        self.tokens.clear();
    }
}

/// Unpadded base64url (RFC 4648 §5), as JWTs use.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

/// The fields of a token request that the simulator looks at.
#[derive(Debug, Default)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    audience: Option<String>,
}

impl TokenRequest {
    fn set(&mut self, key: &str, value: String) {
        let slot = match key {
            "grant_type" => &mut self.grant_type,
            "client_id" => &mut self.client_id,
            "client_secret" => &mut self.client_secret,
            "audience" => &mut self.audience,
            _ => return,
        };
        *slot = Some(value);
    }

    /// JSON when the content type says so, otherwise `application/x-www-form-urlencoded`.
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, OAuthError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut request = TokenRequest::default();
        if content_type.contains("json") {
            let value: Value = serde_json::from_slice(body)
                .map_err(|_| OAuthError::invalid_request("Invalid JSON body"))?;
            let Value::Object(fields) = value else {
                return Err(OAuthError::invalid_request("Invalid JSON body"));
            };
            for (key, value) in fields {
                match value {
                    Value::String(s) => request.set(&key, s),
                    Value::Null => {}
                    _ => {
                        return Err(OAuthError::invalid_request(format!(
                            "Invalid parameter type: {key}"
                        )))
                    }
                }
            }
        } else {
            for (key, value) in parse_form(&String::from_utf8_lossy(body)) {
                request.set(&key, value);
            }
        }
        Ok(request)
    }
}

fn required(value: Option<String>, name: &str) -> Result<String, OAuthError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::invalid_request(format!("Missing required parameter: {name}")))
}

/// `POST /oauth/token`.
pub(crate) async fn issue_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let request = TokenRequest::parse(&headers, &body)?;
    let (client_id, client_secret, audience, lifetime) = {
        let config = lock(&shared.config);
        (
            config.client_id.clone(),
            config.client_secret.clone(),
            config.audience(),
            config.token_expires_in,
        )
    };
    let grant_type = required(request.grant_type, "grant_type")?;
    let given_id = required(request.client_id, "client_id")?;
    if grant_type != "client_credentials" {
        return Err(OAuthError::grant_not_allowed(&grant_type));
    }
    let given_secret = required(request.client_secret, "client_secret")?;
    if given_id != client_id || given_secret != client_secret {
        tracing::debug!(client_id = %given_id, "sim: token refused: bad client credentials");
        return Err(OAuthError::bad_credentials());
    }
    if lock(&shared.config).credentials_revoked {
        tracing::debug!("sim: token refused: credentials revoked");
        return Err(OAuthError::bad_credentials());
    }
    let given_audience = required(request.audience, "audience")?;
    if given_audience != audience {
        return Err(OAuthError::audience_not_granted(&given_audience));
    }
    let denied = shared.knobs().denied_scopes;
    let scope: Vec<&str> = GRANTED_SCOPES
        .split(' ')
        .filter(|s| !denied.iter().any(|d| d == s))
        .collect();
    let scope = scope.join(" ");
    let issued_at = super::wire::epoch_seconds() as u64;
    let claims = json!({
        "iss": format!("https://{}/", lock(&shared.config).domain),
        "sub": format!("{client_id}@clients"),
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at.saturating_add(lifetime),
        "scope": scope,
        "gty": "client-credentials",
        "azp": client_id,
    });
    let token = lock(&shared.tokens).issue(
        Duration::from_secs(lifetime),
        Instant::now(),
        denied,
        &claims,
    );
    tracing::debug!(expires_in = lifetime, "sim: issued access token");
    let mut response = json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "expires_in": lifetime,
            "scope": scope,
            "token_type": "Bearer",
        }),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokens_expire_on_tokio_time() {
        let mut store = TokenStore::default();
        let token = store.issue(
            Duration::from_secs(10),
            Instant::now(),
            Vec::new(),
            &json!({}),
        );
        assert_eq!(store.check(&token, Instant::now()), TokenStatus::Valid);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.check(&token, Instant::now()), TokenStatus::Expired);
        assert_eq!(store.check("nope", Instant::now()), TokenStatus::Unknown);
        store.revoke_all();
        assert_eq!(store.check(&token, Instant::now()), TokenStatus::Unknown);
    }

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64url(plain.as_bytes()), encoded);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
