//! `ingest`: receives Auth0's Custom Webhook log stream over HTTP.
//!
//! Auth0 has no native Kafka sink; this is the receiver in front of it. Each delivery (JSON
//! Lines, JSON Array, JSON Object `{"logs": [...]}`, or one EventBridge event from an API
//! destination) is split into records, and then either
//! - **bridged** into `[kafka] topic`, keyed by `user_id` (one user's events stay in one
//!   partition, in order), with an idempotent `acks=all` producer: 200 only once the broker
//!   acknowledged every record, else 503 so Auth0 retries the batch; a record the topic
//!   refuses for good (too large, not authorized) goes to the dead-letter topic instead of
//!   failing every retry; or
//! - **processed directly** by the pipeline: 200 once every event reached a final outcome
//!   within the deadline, else 503.
//!
//! Authorization: Auth0 sends the configured token verbatim in `Authorization`; it is compared
//! in constant time, and anything else gets a bare 401 before the body is read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer as _};
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use crate::event::{decode, Decoded};
use crate::metrics::Metrics;
use crate::pipeline::{Outcome, Pipeline};
use crate::server::Health;
use crate::settings::{read_secret, ConfigError, Secret};
use crate::shutdown::Shutdown;
use crate::source::kafka::{KafkaSettings, Producer, ProducerCtx};
use crate::source::sequencer::Sequencer;
use crate::source::{users_of, QuietLog};

use std::net::SocketAddr;
use std::path::PathBuf;

/// Environment variable holding the webhook's Authorization token.
pub const WEBHOOK_TOKEN_ENV: &str = "AUTH0_WEBHOOK_TOKEN";

/// What `ingest` does with the records it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestMode {
    /// Produce each record to `[kafka] topic`, keyed by user id (the bridge).
    Kafka,
    /// Run the pipeline in-process.
    Direct,
}

/// Validated `[ingest]` settings (the token is read separately, see [`IngestSettings::token`]).
#[derive(Debug, Clone, PartialEq)]
pub struct IngestSettings {
    pub listen: SocketAddr,
    pub path: String,
    pub mode: IngestMode,
    pub token_file: Option<PathBuf>,
    pub max_body_bytes: usize,
    /// Direct mode: how long a delivery may wait for its events before answering 503.
    pub direct_deadline: Duration,
    /// Direct mode: events in flight at most; a delivery that would exceed it gets 503 at once.
    pub max_inflight: usize,
    /// A connection that has not sent its request headers within this is closed.
    pub header_read_timeout: Duration,
    /// A request whose body has not fully arrived within this gets 408.
    pub body_read_timeout: Duration,
    /// Open connections at most; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// How long shutdown waits for open requests before dropping their connections.
    pub shutdown_grace: Duration,
}

impl IngestSettings {
    /// The expected `Authorization` header value: `AUTH0_WEBHOOK_TOKEN`, else `token_file`.
    pub fn token(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, ConfigError> {
        read_secret(env, WEBHOOK_TOKEN_ENV, self.token_file.as_deref())?.ok_or_else(|| {
            ConfigError::Invalid {
                key: "ingest.token_file",
                problem: format!("no webhook token: set {WEBHOOK_TOKEN_ENV} or ingest.token_file (the Authorization Token configured in the Auth0 log stream)"),
            }
        })
    }
}

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot create the Kafka producer: {0}")]
    Producer(rdkafka::error::KafkaError),
    #[error("cannot listen on {addr} ([ingest] listen): {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Where records go.
pub enum Backend {
    Bridge(Arc<Bridge>),
    Direct(Direct),
}

/// The Kafka bridge: an idempotent producer.
pub struct Bridge {
    /// Replaced when librdkafka reports a fatal error (an idempotent producer whose state the
    /// broker no longer knows cannot recover by itself).
    producer: std::sync::Mutex<Producer>,
    /// Keeps producer replacements at least 10 s apart.
    replaced: QuietLog,
    config: rdkafka::ClientConfig,
    topic: String,
    dead_letter_topic: Option<String>,
}

/// The in-process pipeline, ordered per user.
pub struct Direct {
    pipeline: Arc<Pipeline>,
    sequencer: Arc<Sequencer>,
    deadline: Duration,
    /// `max_inflight` permits: each event in flight holds one, until its outcome (even after
    /// a 503 answered its delivery).
    room: Arc<tokio::sync::Semaphore>,
}

impl Direct {
    pub fn new(pipeline: Arc<Pipeline>, deadline: Duration, max_inflight: usize) -> Direct {
        Direct {
            pipeline,
            sequencer: Arc::new(Sequencer::default()),
            deadline,
            room: Arc::new(tokio::sync::Semaphore::new(max_inflight)),
        }
    }
}

/// The bridge producer's configuration: `[kafka.properties]` (producer-relevant ones), then
/// idempotence and `acks=all`. Deliveries wait at most `message.timeout.ms` (10 s unless set)
/// so Auth0 gets its 503 well before it gives up on the request.
pub fn bridge_config(kafka: &KafkaSettings) -> rdkafka::ClientConfig {
    let mut config = crate::source::kafka::producer_config(kafka);
    if !kafka.properties.contains_key("message.timeout.ms") {
        config.set("message.timeout.ms", "10000");
    }
    if !kafka.properties.contains_key("linger.ms") {
        config.set("linger.ms", "5");
    }
    config.set("client.id", "auth0-default-roles-ingest");
    config
}

impl Bridge {
    pub fn new(kafka: &KafkaSettings) -> Result<Bridge, IngestError> {
        let config = bridge_config(kafka);
        let producer = config
            .create_with_context(ProducerCtx::default())
            .map_err(|e| IngestError::Producer(crate::source::kafka::redact(e)))?;
        Ok(Bridge {
            producer: std::sync::Mutex::new(producer),
            replaced: QuietLog::default(),
            config,
            topic: kafka.topics.first().cloned().unwrap_or_default(),
            dead_letter_topic: kafka.dead_letter_topic.clone(),
        })
    }

    fn producer(&self) -> Producer {
        self.producer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a delivery failed, starts over with a new producer (at most every 10 s). An
    /// idempotent producer whose id the broker no longer knows (a cluster rebuilt, a
    /// transaction-state loss) keeps failing with `UNKNOWN_PRODUCER_ID` or ends in a fatal
    /// error; a fresh producer gets a new id. Records the old one still held fail, so their
    /// deliveries get 503 and Auth0 sends them again: nothing is lost.
    fn recover(&self) {
        {
            if !self.replaced.allow("replace") {
                return;
            }
        }
        let fresh = match self.config.create_with_context(ProducerCtx::default()) {
            Ok(fresh) => fresh,
            Err(err) => {
                let err = crate::source::kafka::redact(err);
                tracing::error!(%err, "cannot recreate the bridge producer");
                return;
            }
        };
        let old = {
            let mut current = self.producer.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((code, reason)) = current.client().fatal_error() {
                tracing::warn!(?code, reason, "bridge producer hit a fatal error");
            }
            std::mem::replace(&mut *current, fresh)
        };
        tracing::info!("bridge producer replaced after failed deliveries");
        // Dropping a producer purges and flushes for up to 500 ms: not on a runtime worker.
        tokio::task::spawn_blocking(move || drop(old));
    }

    /// Checks the broker answers, every 5 s, into `health.source`.
    pub fn spawn_readiness(self: &Arc<Self>, health: Arc<Health>) {
        let bridge = Arc::clone(self);
        let topic = self.topic.clone();
        tokio::spawn(async move {
            loop {
                let producer = bridge.producer();
                let topic = topic.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    producer
                        .client()
                        .fetch_metadata(Some(&topic), Duration::from_secs(3))
                        .map(|m| m.topics().iter().any(|t| t.error().is_none()))
                        .unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                health.set_source_connected(ok);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }

    /// Waits for every queued message to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(err) = self.producer().flush(timeout) {
            tracing::warn!(%err, "bridge producer: not every message was flushed");
        }
    }
}

/// Everything a request needs.
pub struct IngestState {
    token: Secret,
    metrics: Arc<Metrics>,
    backend: Backend,
    max_body_bytes: usize,
    body_read_timeout: Duration,
}

impl IngestState {
    pub fn new(
        settings: &IngestSettings,
        token: Secret,
        metrics: Arc<Metrics>,
        backend: Backend,
    ) -> Arc<IngestState> {
        Arc::new(IngestState {
            token,
            metrics,
            backend,
            max_body_bytes: settings.max_body_bytes,
            body_read_timeout: settings.body_read_timeout,
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}

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

/// Binds `[ingest] listen` and serves until `shutdown`, on an accept loop of its own: a
/// connection that does not send its headers within `header_read_timeout` is closed, at most
/// `max_connections` are open (more are closed at once), and shutdown waits at most
/// `shutdown_grace` for open requests.
pub async fn serve(
    settings: &IngestSettings,
    state: Arc<IngestState>,
    shutdown: Shutdown,
) -> Result<(), IngestError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| IngestError::Listen {
            addr: settings.listen,
            source,
        })?;
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
fn acceptable_content_type(headers: &HeaderMap) -> bool {
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
struct Answer {
    records: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    produced: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    processed: Option<usize>,
    invalid: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<usize>,
    /// Bridge mode with a dead-letter topic: records kept there (invalid or refused for good).
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_lettered: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn json(status: StatusCode, answer: &Answer) -> Response {
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

/// A record the bridge could not put into `[kafka] topic` and keeps in the dead-letter topic.
struct Letter<'a> {
    key: Option<&'a str>,
    log_id: Option<&'a str>,
    bytes: &'a [u8],
    /// `invalid` (not a record) or `failed` (the topic refuses it for good).
    reason: &'static str,
    error: String,
}

/// A record of a delivery, keyed by its user.
struct Keyed {
    key: Option<String>,
    log_id: Option<String>,
    bytes: Vec<u8>,
}

/// Produces one record to `topic` and waits for the broker's acknowledgement.
async fn produce(
    producer: &Producer,
    topic: &str,
    key: Option<&str>,
    bytes: &[u8],
) -> Result<(), KafkaError> {
    let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(bytes);
    if let Some(k) = key {
        record = record.key(k);
    }
    producer
        .send(record, Duration::from_secs(5))
        .await
        .map(|_| ())
        .map_err(|(err, _)| err)
}

/// Whether the topic refuses this record for good: no retry of the same bytes can succeed (too
/// large, an invalid record), so answering 503 would make Auth0 resend it forever. Refusals of
/// every record (authorization, policy, an invalid topic) are the deployment's fault, not the
/// record's: they stay 503, so Auth0 keeps the delivery until the permission is fixed.
fn refused_for_good(err: &KafkaError) -> Option<RDKafkaErrorCode> {
    match err {
        KafkaError::MessageProduction(
            code @ (RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord),
        ) => Some(*code),
        _ => None,
    }
}

/// Sends `letter` to the dead-letter topic `dlq`; one too large for it too is sent again cut
/// to its first 64 KiB, with `dlq.truncated` and `dlq.original.size`.
async fn dead_letter(
    producer: &Producer,
    dlq: &str,
    letter: &Letter<'_>,
) -> Result<(), KafkaError> {
    use crate::source::kafka::TRUNCATED_DEAD_LETTER;
    let size = letter.bytes.len().to_string();
    let mut keep = letter.bytes.len();
    loop {
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "dlq.reason",
                value: Some(letter.reason),
            })
            .insert(Header {
                key: "dlq.error",
                value: Some(letter.error.as_str()),
            })
            .insert(Header {
                key: "dlq.original.source",
                value: Some("ingest"),
            });
        if keep < letter.bytes.len() {
            headers = crate::source::kafka::mark_truncated(headers, &size);
        }
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(dlq)
            .payload(&letter.bytes[..keep])
            .headers(headers);
        if let Some(key) = letter.key {
            record = record.key(key);
        }
        match producer.send(record, Duration::from_secs(5)).await {
            Ok(_) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))
                if keep > TRUNCATED_DEAD_LETTER =>
            {
                keep = TRUNCATED_DEAD_LETTER;
            }
            Err((err, _)) => return Err(err),
        }
    }
}

/// Produces a delivery's records; answers 200 once each is produced or kept in the
/// dead-letter topic, 503 (Auth0 resends the delivery) while any failed for a reason that may
/// pass (a broker down, a timeout).
///
/// A record the topic refuses for good (too large, not authorized, invalid) would fail every
/// resend: it goes to the dead-letter topic (`dlq.reason=failed`) like an invalid one
/// (`dlq.reason=invalid`). Without a dead-letter topic, or when that topic refuses it too, it
/// is counted (`ingest_records{outcome="failed"}`; `dead_letters{reason="not_delivered"}`
/// when the dead-letter topic refused it) and logged at error with its `log_id`, and the
/// delivery is still answered 200: a 503 would only
/// make Auth0 resend the same batch until it suspends the stream, losing everything after it.
async fn bridge_records(
    bridge: &Bridge,
    m: &Metrics,
    total: usize,
    good: Vec<(Vec<u8>, Vec<Decoded>)>,
    invalid: Vec<(Vec<u8>, String)>,
) -> Response {
    let keyed: Vec<Keyed> = good
        .into_iter()
        .map(|(bytes, events)| {
            let ok = || events.iter().filter_map(|e| e.as_ref().ok());
            Keyed {
                key: ok().find_map(|e| e.user()).map(str::to_owned),
                log_id: ok().find_map(|e| e.log_id.clone()),
                bytes,
            }
        })
        .collect();
    let producer = bridge.producer();
    let results = futures_util::future::join_all(
        keyed
            .iter()
            .map(|r| produce(&producer, &bridge.topic, r.key.as_deref(), &r.bytes)),
    )
    .await;
    let mut produced = 0usize;
    let mut transient: Vec<String> = Vec::new();
    let mut letters: Vec<Letter<'_>> = Vec::new();
    for (record, first) in keyed.iter().zip(results) {
        let mut outcome = first;
        // A batch is refused as a whole: alone, the record may fit after all.
        if outcome
            .as_ref()
            .is_err_and(|err| refused_for_good(err).is_some())
        {
            outcome = produce(
                &producer,
                &bridge.topic,
                record.key.as_deref(),
                &record.bytes,
            )
            .await;
        }
        let err = match outcome {
            Ok(()) => {
                produced += 1;
                continue;
            }
            Err(err) if refused_for_good(&err).is_none() => {
                transient.push(err.to_string());
                continue;
            }
            Err(err) => err,
        };
        letters.push(Letter {
            key: record.key.as_deref(),
            log_id: record.log_id.as_deref(),
            bytes: &record.bytes,
            reason: "failed",
            error: format!(
                "the topic `{}` refuses this record for good: {err}",
                bridge.topic
            ),
        });
    }
    let refused = letters.len();
    letters.extend(
        invalid
            .iter()
            .filter(|(b, _)| !b.is_empty())
            .map(|(bytes, reason)| Letter {
                key: None,
                log_id: None,
                bytes,
                reason: "invalid",
                error: reason.clone(),
            }),
    );
    let mut dead_lettered = 0usize;
    let mut lost: Vec<(&Letter<'_>, String)> = Vec::new();
    match &bridge.dead_letter_topic {
        Some(dlq) => {
            let sent = futures_util::future::join_all(
                letters.iter().map(|l| dead_letter(&producer, dlq, l)),
            )
            .await;
            for (letter, result) in letters.iter().zip(sent) {
                match result {
                    Ok(()) => {
                        dead_lettered += 1;
                        m.dead_letters.with_label_values(&[letter.reason]).inc();
                        if letter.reason == "failed" {
                            tracing::warn!(
                                log_id = letter.log_id.unwrap_or("-"), user_id = letter.key.unwrap_or("-"),
                                size = letter.bytes.len(), error = %letter.error, dead_letter_topic = %dlq,
                                "record sent to the dead-letter topic"
                            );
                        }
                    }
                    Err(err) if refused_for_good(&err).is_some() => {
                        lost.push((
                            letter,
                            format!("the dead-letter topic refuses it too: {err}"),
                        ));
                    }
                    Err(err) => transient.push(err.to_string()),
                }
            }
        }
        None => lost.extend(
            letters
                .iter()
                .filter(|l| l.reason == "failed")
                .map(|l| (l, "no dead-letter topic".to_owned())),
        ),
    }
    for (letter, why) in &lost {
        if bridge.dead_letter_topic.is_some() {
            m.dead_letters.with_label_values(&["not_delivered"]).inc();
        }
        tracing::error!(
            log_id = letter.log_id.unwrap_or("-"), user_id = letter.key.unwrap_or("-"),
            size = letter.bytes.len(), reason = letter.reason, error = %letter.error, kept_nowhere = %why,
            "a record of a delivery cannot be kept in Kafka and is not retried (the same bytes fail every time): find the event in the tenant's logs by its log_id"
        );
    }
    m.ingest_records
        .with_label_values(&["failed"])
        .inc_by(refused as u64);
    let dead_lettered = bridge.dead_letter_topic.as_ref().map(|_| dead_lettered);
    if transient.is_empty() {
        m.ingest_records
            .with_label_values(&["produced"])
            .inc_by(produced as u64);
        json(
            StatusCode::OK,
            &Answer {
                records: total,
                produced: Some(produced),
                invalid: invalid.len(),
                failed: Some(refused),
                dead_lettered,
                ..Answer::default()
            },
        )
    } else {
        bridge.recover();
        m.ingest_records
            .with_label_values(&["unacknowledged"])
            .inc_by(transient.len() as u64);
        tracing::warn!(
            unacknowledged = transient.len(),
            error = %transient[0],
            "the broker did not acknowledge every record: answering 503 so Auth0 retries the delivery"
        );
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Answer {
                records: total,
                produced: Some(produced),
                invalid: invalid.len(),
                failed: Some(refused),
                dead_lettered,
                error: Some("the Kafka broker did not acknowledge every record; retry".to_owned()),
                ..Answer::default()
            },
        )
    }
}

async fn direct_records(
    direct: &Direct,
    m: &Metrics,
    total: usize,
    good: Vec<(Vec<u8>, Vec<Decoded>)>,
    invalid: usize,
) -> Response {
    let count: usize = good.iter().map(|(_, events)| events.len()).sum();
    // Room for every event of the delivery, or none: a delivery beyond `max_inflight` (Auth0
    // retrying batches during an outage) is answered 503 at once instead of queueing copies.
    let mut permits = match u32::try_from(count)
        .ok()
        .and_then(|n| Arc::clone(&direct.room).try_acquire_many_owned(n).ok())
    {
        Some(permits) => permits,
        None => {
            m.ingest_records
                .with_label_values(&["unacknowledged"])
                .inc_by(count as u64);
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &Answer {
                    records: total,
                    invalid,
                    error: Some(
                        "too many events in flight ([ingest] max_inflight); retry later".to_owned(),
                    ),
                    ..Answer::default()
                },
            );
        }
    };
    let mut handles = Vec::new();
    for (record, events) in good {
        // One delivery per record (its events in order): a lost task runs again from the
        // record's bytes, then ends `failed`.
        let mut turn = direct.sequencer.enter(users_of(&events));
        let pipeline = Arc::clone(&direct.pipeline);
        let permit = permits.split(events.len());
        // The task outlives a 503: the work finishes, and Auth0's retry is deduplicated.
        handles.push(tokio::spawn(async move {
            turn.wait().await;
            let mut outcomes = Vec::with_capacity(events.len());
            let again = || crate::event::decode(&record);
            pipeline
                .deliver(events, Some(again), |report| outcomes.push(report.outcome))
                .await;
            drop(permit);
            outcomes
        }));
    }
    let n = handles.len();
    match tokio::time::timeout(direct.deadline, futures_util::future::join_all(handles)).await {
        Ok(results) if results.iter().any(Result::is_err) => {
            // A task died (a bug): its event is not done, so Auth0 must send the batch again.
            let lost = results.iter().filter(|r| r.is_err()).count();
            tracing::error!(
                lost,
                "event tasks of a delivery ended abnormally: answering 503 so Auth0 retries"
            );
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &Answer {
                    records: total,
                    invalid,
                    error: Some("internal error; retry later".to_owned()),
                    ..Answer::default()
                },
            )
        }
        Ok(results) => {
            let reports: Vec<Outcome> = results
                .into_iter()
                .filter_map(Result::ok)
                .flatten()
                .collect();
            let failed = reports.iter().filter(|o| **o == Outcome::Failed).count();
            let bad = reports.iter().filter(|o| **o == Outcome::Invalid).count();
            m.ingest_records
                .with_label_values(&["processed"])
                .inc_by((reports.len() - failed - bad) as u64);
            m.ingest_records
                .with_label_values(&["failed"])
                .inc_by(failed as u64);
            m.ingest_records
                .with_label_values(&["invalid"])
                .inc_by(bad as u64);
            json(
                StatusCode::OK,
                &Answer {
                    records: total,
                    processed: Some(reports.len() - failed - bad),
                    invalid: invalid + bad,
                    failed: Some(failed),
                    ..Answer::default()
                },
            )
        }
        Err(_) => {
            tracing::warn!(
                events = n,
                deadline = ?direct.deadline,
                "delivery not finished within the deadline (Management API slow or failing): answering 503 so Auth0 retries"
            );
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &Answer {
                    records: total,
                    invalid,
                    error: Some("still processing; retry later".to_owned()),
                    ..Answer::default()
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_record_s_own_faults_are_refused_for_good() {
        let refused = |code| refused_for_good(&KafkaError::MessageProduction(code));
        assert!(refused(RDKafkaErrorCode::MessageSizeTooLarge).is_some());
        assert!(refused(RDKafkaErrorCode::InvalidRecord).is_some());
        // Every record would be refused: the deployment's fault, answered 503 (kept by Auth0).
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::ClusterAuthorizationFailed,
            RDKafkaErrorCode::PolicyViolation,
            RDKafkaErrorCode::InvalidTopic,
            RDKafkaErrorCode::MessageTimedOut,
        ] {
            assert!(refused(code).is_none(), "{code:?}");
        }
    }

    fn ok_count(r: &[RawRecord]) -> usize {
        r.iter().filter(|x| x.is_ok()).count()
    }

    #[test]
    fn splits_every_content_format() {
        let rec = r#"{"log_id":"1","data":{"type":"ss","user_id":"auth0|a"}}"#;
        let lines = format!("{rec}\n{rec}\n\n{rec}\n");
        assert_eq!(
            ok_count(&split_records(lines.as_bytes()).unwrap_or_default()),
            3
        );
        let array = format!("[{rec},{rec}]");
        assert_eq!(
            ok_count(&split_records(array.as_bytes()).unwrap_or_default()),
            2
        );
        let object = format!("{{\"logs\":[{rec},{rec},{rec},{rec}]}}");
        assert_eq!(
            ok_count(&split_records(object.as_bytes()).unwrap_or_default()),
            4
        );
        let single = split_records(rec.as_bytes()).unwrap_or_default();
        assert_eq!(ok_count(&single), 1);
        let eventbridge = r#"{"version":"0","detail-type":"Auth0 log","source":"aws.partner/auth0.com/t/auth0.logs","detail":{"log_id":"1","data":{"type":"ss"}}}"#;
        assert_eq!(
            ok_count(&split_records(eventbridge.as_bytes()).unwrap_or_default()),
            1
        );
    }

    #[test]
    fn a_broken_line_costs_one_record() {
        let body = "{\"log_id\":\"1\",\"data\":{}}\n{\"log_id\": \"2\", \"da\n{\"log_id\":\"3\",\"data\":{}}\n";
        let r = split_records(body.as_bytes()).unwrap_or_default();
        assert_eq!(r.len(), 3);
        assert_eq!(ok_count(&r), 2);
        assert!(r[1]
            .as_ref()
            .err()
            .is_some_and(|e| e.reason.starts_with("line 2") && !e.bytes.is_empty()));
    }

    #[test]
    fn not_json_is_refused() {
        assert!(split_records(b"").is_err());
        assert!(split_records(b"  \n ").is_err());
        assert!(split_records(b"hello").is_err());
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(acceptable_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(acceptable_content_type(&h));
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data"
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(!acceptable_content_type(&h));
    }
}
