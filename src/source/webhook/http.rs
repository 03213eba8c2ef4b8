//! The HTTP side: the router, the token check, the content types, the split of a delivery into
//! records and the answer (200 or 503).

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use crate::event::{decode, Decoded};
use crate::shutdown::Shutdown;
use crate::source::QuietLog;

/// Environment variable holding the webhook's Authorization token.
use super::bridge::bridge_records;
use super::direct::direct_records;
use super::*;

/// The receiver's routes: `POST {path}`.
pub fn router(settings: &IngestSettings, state: Arc<IngestState>) -> Router {
    Router::new()
        .route(&settings.path, post(receive))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize,
        ))
        .route_layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), observe))
        .with_state(state)
}

/// Binds `[ingest] listen` (port 0: one the system picks; the listener's `local_addr` says
/// which).
pub async fn bind(settings: &IngestSettings) -> Result<tokio::net::TcpListener, IngestError> {
    tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| IngestError::Listen {
            addr: settings.listen,
            source,
        })
}

/// Binds `[ingest] listen` and serves until `shutdown`: [`bind`], then [`serve_on`].
pub async fn serve(
    settings: &IngestSettings,
    state: Arc<IngestState>,
    shutdown: Shutdown,
) -> Result<(), IngestError> {
    let listener = bind(settings).await?;
    serve_on(listener, settings, state, shutdown).await
}

/// Serves on `listener` until `shutdown`, on an accept loop of its own: a connection that does
/// not send its headers within `header_read_timeout` is closed, at most `max_connections` are
/// open (more are closed at once), and shutdown waits at most `shutdown_grace` for open
/// requests.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    settings: &IngestSettings,
    state: Arc<IngestState>,
    shutdown: Shutdown,
) -> Result<(), IngestError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let addr = listener.local_addr().map_err(IngestError::Serve)?;
    tracing::info!(%addr, path = %settings.path, "receiving the Auth0 log stream");
    let metrics = Arc::clone(&state.metrics);
    let app = router(settings, state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    let room = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    let quiet = QuietLog::default();
    loop {
        let stream = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, typically: wait a little, never spin.
                    if quiet.allow("accept") {
                        tracing::warn!(%err, "cannot accept a connection (repeats within 10 s are not logged)");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = Arc::clone(&room).try_acquire_owned() else {
            metrics
                .ingest_requests
                .with_label_values(&["connection_refused"])
                .inc();
            if quiet.allow("connections") {
                tracing::warn!(max_connections = settings.max_connections, "connection limit reached: closing new connections (repeats within 10 s are not logged)");
            }
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let stop = shutdown.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.wait() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(permit);
        });
    }
    // Open requests finish within the grace; whatever is left is dropped (Auth0 retries).
    let deadline = tokio::time::sleep(settings.shutdown_grace);
    tokio::pin!(deadline);
    while !connections.is_empty() {
        tokio::select! {
            _ = connections.join_next() => {}
            _ = &mut deadline => {
                tracing::warn!(open = connections.len(), "shutdown grace over: closing the open connections");
                connections.abort_all();
                break;
            }
        }
    }
    Ok(())
}

/// Counts every answer (401 and 413 included) and times it.
async fn observe(State(state): State<Arc<IngestState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let m = &state.metrics;
    m.ingest_requests
        .with_label_values(&[response.status().as_str()])
        .inc();
    m.ingest_request_duration
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The whole `Authorization` header must equal the token; the body is not read otherwise.
async fn authorize(
    State(state): State<Arc<IngestState>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let expected = state.token.expose().as_bytes();
    if bool::from(given.ct_eq(expected)) {
        next.run(request).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

/// Content types Auth0 (and EventBridge API destinations) send; a missing one is accepted.
pub(super) fn acceptable_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let value = value.to_str().unwrap_or_default().to_ascii_lowercase();
    let essence = value.split(';').next().unwrap_or_default().trim();
    matches!(
        essence,
        "application/json"
            | "application/x-ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/json-seq"
            | "text/plain"
            | ""
    )
}

/// One record of a delivery: its bytes, or why it is not a record.
pub type RawRecord = Result<Vec<u8>, InvalidRecord>;

/// A record of a delivery that is not JSON: its raw bytes (for the dead-letter topic) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRecord {
    pub bytes: Vec<u8>,
    pub reason: String,
}

#[derive(serde::Deserialize)]
struct Logs<'a> {
    #[serde(borrow)]
    logs: Vec<&'a RawValue>,
}

/// Splits a delivery into records: a JSON array, `{"logs": [...]}`, a single object (a
/// webhook record, a bare log or an EventBridge event), or JSON Lines. `Err` when the body is
/// none of these at all.
pub fn split_records(body: &[u8]) -> Result<Vec<RawRecord>, &'static str> {
    let trimmed = body.trim_ascii();
    match trimmed.first() {
        None => Err("empty body"),
        Some(b'[') => match serde_json::from_slice::<Vec<&RawValue>>(trimmed) {
            Ok(items) => Ok(items
                .into_iter()
                .map(|r| Ok(r.get().as_bytes().to_vec()))
                .collect()),
            Err(_) => Ok(json_lines(trimmed)),
        },
        Some(b'{') => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_err() {
                return Ok(json_lines(trimmed));
            }
            match serde_json::from_slice::<Logs<'_>>(trimmed) {
                Ok(logs) => Ok(logs
                    .logs
                    .into_iter()
                    .map(|r| Ok(r.get().as_bytes().to_vec()))
                    .collect()),
                Err(_) => Ok(vec![Ok(trimmed.to_vec())]),
            }
        }
        Some(_) => Err("not JSON: send JSON Lines, a JSON array or a JSON object"),
    }
}

fn json_lines(body: &[u8]) -> Vec<RawRecord> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .map(|(i, line)| {
            let line = line.trim_ascii();
            match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                Ok(_) => Ok(line.to_vec()),
                Err(e) => Err(InvalidRecord {
                    bytes: line.to_vec(),
                    reason: format!("line {}: invalid JSON ({})", i + 1, json_error_kind(&e)),
                }),
            }
        })
        .collect()
}

/// A PII-free name for what is wrong with a line (the error's text may quote it).
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "io",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "data error",
        serde_json::error::Category::Eof => "truncated",
    }
}

/// What a delivery's records became, returned as the 200/503 body.
#[derive(Debug, Default, serde::Serialize)]
pub(super) struct Answer {
    pub(super) records: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) produced: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) processed: Option<usize>,
    pub(super) invalid: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) failed: Option<usize>,
    /// Bridge mode with a dead-letter topic: records kept there (invalid or refused for good).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) dead_lettered: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

pub(super) fn json(status: StatusCode, answer: &Answer) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(answer).unwrap_or_default(),
    )
        .into_response()
}

/// Reads the body within `body_read_timeout` (408 past it) and `max_body_bytes` (413 past it).
async fn read_body(state: &IngestState, request: Request) -> Result<Bytes, Response> {
    let limit = state.max_body_bytes;
    let read = axum::body::to_bytes(request.into_body(), limit);
    match tokio::time::timeout(state.body_read_timeout, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(err)) => {
            let too_large = std::error::Error::source(&err)
                .map(|e| e.to_string())
                .unwrap_or_else(|| err.to_string())
                .contains("length limit");
            Err(if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body over {limit} bytes\n"),
                )
                    .into_response()
            } else {
                (StatusCode::BAD_REQUEST, "the body could not be read\n").into_response()
            })
        }
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time\n",
        )
            .into_response()),
    }
}

async fn receive(State(state): State<Arc<IngestState>>, request: Request) -> Response {
    let headers = request.headers().clone();
    if !acceptable_content_type(&headers) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json (JSON Lines, JSON Array or JSON Object)\n",
        )
            .into_response();
    }
    let body = match read_body(&state, request).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let records = match split_records(&body) {
        Ok(r) => r,
        Err(reason) => return (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response(),
    };
    // Decode each record once: the bridge needs the key, the direct path the events.
    let mut good: Vec<(Vec<u8>, Vec<Decoded>)> = Vec::with_capacity(records.len());
    let mut invalid: Vec<(Vec<u8>, String)> = Vec::new();
    let total = records.len();
    for record in records {
        match record {
            Err(InvalidRecord { bytes, reason }) => invalid.push((bytes, reason)),
            Ok(bytes) => {
                let events = decode(&bytes);
                match events.iter().find_map(|e| e.as_ref().err()) {
                    Some(err) if events.len() == 1 => {
                        let reason = err.reason.clone();
                        invalid.push((bytes, reason));
                    }
                    _ if events.is_empty() => invalid.push((bytes, "no event".to_owned())),
                    _ => good.push((bytes, events)),
                }
            }
        }
    }
    let m = &state.metrics;
    if !invalid.is_empty() {
        m.ingest_records
            .with_label_values(&["invalid"])
            .inc_by(invalid.len() as u64);
        for (_, reason) in &invalid {
            tracing::warn!(reason = %reason, "invalid record in a log-stream delivery (counted, not processed)");
        }
    }
    let dead_lettered =
        matches!(&state.backend, Backend::Bridge(b) if b.dead_letter_topic.is_some());
    if good.is_empty() && !dead_lettered {
        // Without a dead-letter topic nothing would keep them: refused, and counted.
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "no decodable Auth0 log record in the body ({} invalid)\n",
                invalid.len()
            ),
        )
            .into_response();
    }
    match &state.backend {
        Backend::Bridge(bridge) => bridge_records(bridge, m, total, good, invalid).await,
        Backend::Direct(direct) => direct_records(direct, m, total, good, invalid.len()).await,
    }
}
