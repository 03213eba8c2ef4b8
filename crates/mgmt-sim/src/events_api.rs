//! `GET /api/v2/events`: the Events API as Auth0 documents it (scope `read:events`): a
//! Server-Sent Events stream opening with `:connected` and `retry:`, each event as
//! `event: <type>` / `id: <offset>` / `data: {"offset", "event"}`, an `offset-only` marker with
//! a `: heartbeat` comment at every heartbeat, `event_type` filters (repeated), `from` or the
//! `Last-Event-ID` header (which wins) to resume after an offset, `from_timestamp` (at most 20
//! characters) to start at a time, the newest event without either; 400 for a bad offset, a
//! bad time or an unknown type; 410 for an offset whose next event has expired; 403 when the
//! plan's concurrent connections are taken (the missing scope is the gate's 403). Connections
//! are closed by the server after `cycle_after_events` events or `cycle_after_ms`, as Auth0
//! cycles them every few minutes; with `error_after_events`, a connection ends after that many
//! events with an `event: error` message (no `id`) instead.
//!
//! Tests append events with `POST /sim/events` (CloudEvents, or `{"raw_data", "type"}` for a
//! `data:` sent as is) and steer the stream with `POST /sim/events/control`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::error::ApiError;
use super::state::{lock, Shared};
use super::wire::{json_response, parse_form};
use super::Simulator;

/// The event types the catalog lists (`event_type` accepts these).
const KNOWN_TYPES: [&str; 18] = [
    "user.created",
    "user.updated",
    "user.deleted",
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organization.member.added",
    "organization.member.deleted",
    "organization.member.role.assigned",
    "organization.member.role.deleted",
    "organization.connection.added",
    "organization.connection.updated",
    "organization.connection.removed",
    "group.created",
    "group.updated",
    "group.deleted",
    "group.member.added",
    "group.member.deleted",
];

/// The Events API's settings, changed with `POST /sim/events/control`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsControl {
    /// The server closes a connection after this many events (`None`: never).
    pub cycle_after_events: Option<u64>,
    /// The server closes a connection after this long (`None`: never).
    pub cycle_after_ms: Option<u64>,
    /// The server ends a connection after this many events with an `event: error` message
    /// (`data: {"message": …}`, no `id`), then closes it (`None`: never).
    pub error_after_events: Option<u64>,
    /// Between heartbeats (each with an `offset-only` marker).
    pub heartbeat_ms: u64,
    /// The `retry:` sent at the start of each connection.
    pub retry_ms: u64,
    /// The plan's concurrent connections (Free 1, self-service 4, Enterprise 8).
    pub max_connections: usize,
    /// Expire every event stored so far (an offset before the next one answers 410).
    pub expire_all: bool,
    /// Close every open connection now.
    pub close_all: bool,
}

impl Default for EventsControl {
    fn default() -> Self {
        EventsControl {
            cycle_after_events: None,
            cycle_after_ms: None,
            error_after_events: None,
            heartbeat_ms: 1000,
            retry_ms: 2000,
            max_connections: 8,
            expire_all: false,
            close_all: false,
        }
    }
}

/// One stored event.
#[derive(Debug)]
struct Stored {
    event_type: String,
    time: SystemTime,
    /// The `data:` payload (one line).
    data: String,
}

/// The stream's events and connections.
#[derive(Debug, Default)]
pub(crate) struct EventsApi {
    events: BTreeMap<u64, Stored>,
    /// The sequence of the next event (the first is 1).
    next_seq: u64,
    /// Events below this sequence have expired.
    expired_before: u64,
    open: usize,
    opened: u64,
    /// `event: error` messages sent.
    errors_sent: u64,
    /// Bumped by `close_all`: connections of an older generation end.
    generation: u64,
    control: EventsControl,
}

/// The Events API state and the signal of an append.
#[derive(Debug, Default)]
pub(crate) struct EventsApiState {
    inner: Mutex<EventsApi>,
    changed: Notify,
}

/// An offset: opaque to clients (base16 of `ev:<seq>`), as Auth0's are opaque.
fn offset_of(seq: u64) -> String {
    format!("ev:{seq:012}")
        .bytes()
        .map(|b| format!("{b:02X}"))
        .collect()
}

fn seq_of(offset: &str) -> Option<u64> {
    if offset.len() % 2 != 0 || !offset.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..offset.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&offset[i..i + 2], 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    text.strip_prefix("ev:")?.parse().ok()
}

/// `com.auth0.user.created` and `user.created` are the same type.
fn plain_type(kind: &str) -> &str {
    kind.strip_prefix("com.auth0.").unwrap_or(kind)
}

impl EventsApi {
    fn first_kept(&self) -> u64 {
        self.expired_before.max(1)
    }

    fn append(&mut self, items: Vec<Value>) -> Result<Vec<String>, String> {
        let mut offsets = Vec::new();
        for item in items {
            if self.next_seq == 0 {
                self.next_seq = 1;
            }
            let seq = self.next_seq;
            let offset = offset_of(seq);
            let (event_type, time, data) = match item {
                Value::Object(mut fields) if fields.contains_key("raw_data") => {
                    let data = fields
                        .remove("raw_data")
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .ok_or("raw_data must be a string")?;
                    if data.contains(['\n', '\r']) {
                        return Err("raw_data must be one line".to_owned());
                    }
                    let kind = fields
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("user.created")
                        .to_owned();
                    (kind, SystemTime::now(), data)
                }
                Value::Object(event) => {
                    let kind = event
                        .get("type")
                        .and_then(Value::as_str)
                        .ok_or("an event without type")?
                        .to_owned();
                    let time = event
                        .get("time")
                        .and_then(Value::as_str)
                        .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
                        .unwrap_or_else(SystemTime::now);
                    let data = json!({"offset": offset, "event": Value::Object(event)});
                    (kind, time, data.to_string())
                }
                _ => return Err("each event is an object".to_owned()),
            };
            self.events.insert(
                seq,
                Stored {
                    event_type,
                    time,
                    data,
                },
            );
            self.next_seq += 1;
            offsets.push(offset);
        }
        Ok(offsets)
    }

    fn newest(&self) -> Option<u64> {
        self.next_seq.checked_sub(1).filter(|s| *s >= 1)
    }
}

impl EventsApiState {
    fn with<T>(&self, f: impl FnOnce(&mut EventsApi) -> T) -> T {
        f(&mut lock(&self.inner))
    }
}

/// Decrements the open connections when the response body is dropped.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .events_api
            .with(|api| api.open = api.open.saturating_sub(1));
    }
}

/// One connection's place in the stream.
struct Connection {
    shared: Arc<Shared>,
    cursor: u64,
    types: Vec<String>,
    sent: u64,
    opened: Instant,
    next_heartbeat: Instant,
    greeted: bool,
    /// The `event: error` was sent: the connection closes.
    errored: bool,
    generation: u64,
    control: EventsControl,
    _guard: OpenGuard,
}

fn bad_request(message: &str) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, message).into_response()
}

/// `GET /api/v2/events`.
pub(crate) async fn subscribe(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = parse_form(query.as_deref().unwrap_or(""));
    let mut types = Vec::new();
    let (mut from, mut from_timestamp) = (None, None);
    for (key, value) in params {
        match key.as_str() {
            "event_type" => {
                if !KNOWN_TYPES.contains(&value.as_str()) {
                    return bad_request("Unsupported event type.");
                }
                types.push(value);
            }
            "from" => from = Some(value),
            "from_timestamp" => from_timestamp = Some(value),
            _ => return bad_request("Invalid request query string."),
        }
    }
    if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        from = Some(id.to_owned());
    }
    if from.is_some() && from_timestamp.is_some() && headers.get("last-event-id").is_none() {
        return bad_request(
            "Invalid request query string. from and from_timestamp are mutually exclusive.",
        );
    }
    let at =
        match from_timestamp {
            Some(text) if text.len() > 20 => {
                return bad_request(
                    "Invalid request query string. from_timestamp is longer than 20 characters.",
                )
            }
            Some(text) => match humantime::parse_rfc3339(&text) {
                Ok(at) => Some(at),
                Err(_) => return bad_request(
                    "Invalid request query string. from_timestamp is not an RFC-3339 timestamp.",
                ),
            },
            None => None,
        };
    let after = match from.as_deref().filter(|f| !f.is_empty()) {
        Some(offset) => match seq_of(offset) {
            Some(seq) => Some(seq),
            None => return bad_request("Invalid cursor format."),
        },
        None => None,
    };
    let opened = shared.events_api.with(|api| {
        if api.next_seq == 0 {
            api.next_seq = 1;
        }
        let cursor = match (after, at) {
            (Some(seq), _) => {
                if seq + 1 < api.first_kept() {
                    return Err(ApiError::new(
                        StatusCode::GONE,
                        "Cursor points to data no longer available in the stream.",
                    ));
                }
                seq + 1
            }
            (None, Some(at)) => api
                .events
                .range(api.first_kept()..)
                .find(|(_, e)| e.time >= at)
                .map(|(seq, _)| *seq)
                .unwrap_or(api.next_seq),
            (None, None) => api.next_seq,
        };
        if api.open >= api.control.max_connections {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Maximum concurrent event stream connections reached. Please close existing connections.",
            ));
        }
        api.open += 1;
        api.opened += 1;
        Ok((cursor, api.generation, api.control.clone()))
    });
    let (cursor, generation, control) = match opened {
        Ok(opened) => opened,
        Err(err) => return err.into_response(),
    };
    let now = Instant::now();
    let connection = Connection {
        shared: Arc::clone(&shared),
        cursor,
        types,
        sent: 0,
        opened: now,
        next_heartbeat: now + Duration::from_millis(control.heartbeat_ms.max(1)),
        greeted: false,
        errored: false,
        generation,
        control,
        _guard: OpenGuard(shared),
    };
    let stream = futures_util::stream::unfold(connection, |mut c| async move {
        let frame = c.next_frame().await?;
        Some((Ok::<Bytes, Infallible>(Bytes::from(frame)), c))
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

impl Connection {
    /// The next bytes to send, or `None` when the server closes the connection.
    async fn next_frame(&mut self) -> Option<String> {
        if !self.greeted {
            self.greeted = true;
            return Some(format!(
                ":connected\n\nretry: {}\n\n",
                self.control.retry_ms
            ));
        }
        loop {
            if self.errored
                || self
                    .control
                    .cycle_after_events
                    .is_some_and(|n| self.sent >= n)
            {
                return None;
            }
            if self
                .control
                .error_after_events
                .is_some_and(|n| self.sent >= n)
            {
                self.errored = true;
                self.shared.events_api.with(|api| api.errors_sent += 1);
                return Some(
                    "event: error\ndata: {\"message\":\"An internal error occurred. Please reconnect.\"}\n\n"
                        .to_owned(),
                );
            }
            let deadline = self
                .control
                .cycle_after_ms
                .map(|ms| self.opened + Duration::from_millis(ms));
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            let state = &self.shared.events_api;
            let changed = state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let next = state.with(|api| {
                if api.generation != self.generation {
                    return Err(());
                }
                let start = self.cursor.max(api.first_kept());
                let found = api
                    .events
                    .range(start..)
                    .find(|(_, e)| {
                        self.types.is_empty()
                            || self.types.iter().any(|t| t == plain_type(&e.event_type))
                    })
                    .map(|(seq, e)| (*seq, e.event_type.clone(), e.data.clone()));
                Ok((found, api.newest()))
            });
            let Ok((found, newest)) = next else {
                return None;
            };
            if let Some((seq, kind, data)) = found {
                self.cursor = seq + 1;
                self.sent += 1;
                return Some(format!(
                    "event: {kind}\nid: {}\ndata: {data}\n\n",
                    offset_of(seq)
                ));
            }
            if let Some(newest) = newest {
                self.cursor = self.cursor.max(newest + 1);
            }
            let wake = match deadline {
                Some(d) => d.min(self.next_heartbeat),
                None => self.next_heartbeat,
            };
            tokio::select! {
                _ = changed => continue,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if Instant::now() >= self.next_heartbeat {
                self.next_heartbeat =
                    Instant::now() + Duration::from_millis(self.control.heartbeat_ms.max(1));
                let marker = self.cursor.checked_sub(1).filter(|s| *s >= 1);
                return Some(match marker {
                    Some(seq) => {
                        let offset = offset_of(seq);
                        format!("event: offset-only\nid: {offset}\ndata: {{\"offset\":\"{offset}\"}}\n\n: heartbeat\n\n")
                    }
                    None => ": heartbeat\n\n".to_owned(),
                });
            }
        }
    }
}

/// What `GET /sim/events/state` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsState {
    pub open_connections: usize,
    pub connections_opened: u64,
    pub events: usize,
    /// `event: error` messages sent (`error_after_events`).
    #[serde(default)]
    pub errors_sent: u64,
    /// The offset of the newest event stored.
    pub newest_offset: Option<String>,
}

impl Simulator {
    /// Appends events to the Events API (CloudEvents, or `{"raw_data", "type"}`); returns their
    /// offsets.
    pub fn append_events(&self, events: Vec<Value>) -> Result<Vec<String>, String> {
        let state = &self.shared.events_api;
        let offsets = state.with(|api| api.append(events))?;
        state.changed.notify_waiters();
        Ok(offsets)
    }

    /// Changes the Events API's settings (`expire_all` and `close_all` act once).
    pub fn control_events(&self, control: EventsControl) {
        let state = &self.shared.events_api;
        state.with(|api| {
            if control.expire_all {
                api.expired_before = api.next_seq.max(1);
                api.events.clear();
            }
            if control.close_all {
                api.generation += 1;
            }
            api.control = EventsControl {
                expire_all: false,
                close_all: false,
                ..control
            };
        });
        state.changed.notify_waiters();
    }

    /// The Events API's settings now.
    pub fn events_control(&self) -> EventsControl {
        self.shared.events_api.with(|api| api.control.clone())
    }

    pub fn events_state(&self) -> EventsState {
        self.shared.events_api.with(|api| EventsState {
            open_connections: api.open,
            connections_opened: api.opened,
            events: api.events.len(),
            errors_sent: api.errors_sent,
            newest_offset: api.newest().map(offset_of),
        })
    }
}

/// `/sim/events`, `/sim/events/control`, `/sim/events/state`.
pub(crate) fn admin_routes() -> Router<Simulator> {
    Router::new()
        .route("/sim/events", post(append))
        .route("/sim/events/control", post(control))
        .route("/sim/events/state", get(state))
}

async fn append(State(sim): State<Simulator>, body: Bytes) -> Response {
    let events = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(events)) => events,
        Ok(_) => return bad_request("expected an array of events"),
        Err(err) => return bad_request(&err.to_string()),
    };
    match sim.append_events(events) {
        Ok(offsets) => json_response(StatusCode::CREATED, &json!({ "offsets": offsets })),
        Err(err) => bad_request(&err),
    }
}

async fn control(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<EventsControl>(&body) {
        Ok(control) => {
            sim.control_events(control);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(err) => bad_request(&err.to_string()),
    }
}

async fn state(State(sim): State<Simulator>) -> Response {
    json_response(StatusCode::OK, &json!(sim.events_state()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_opaque_and_read_back() {
        assert_eq!(seq_of(&offset_of(42)), Some(42));
        assert_eq!(seq_of("xyz"), None);
        assert_eq!(seq_of(""), None);
    }
}
