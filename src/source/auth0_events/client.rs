//! Opening the tenant's Events API stream (`GET /api/v2/events`, scope `read:events`) through
//! the Management API client's token and fault model, and what each refusal means.
//!
//! Statuses (Auth0's page and the OpenAPI description of `/events`): 200 the stream; 401 a token
//! rejected (a new one, then the credentials' service fault); 403 either the missing scope
//! ("Insufficient scope; expected any of: read:events.") or the plan's concurrent connections
//! taken ("Maximum concurrent event stream connections reached. Please close existing
//! connections."), told apart by the body: a message or error code naming the scope is the
//! scope, one naming concurrent connections is the limit, and any other 403 counts as the scope
//! (a refusal of the service is never retried silently); 410 the offset expired; 429 wait for
//! `Retry-After`; 408 and 5xx transient; 400 the request is wrong (an offset the tenant cannot
//! read, an event type it does not know).

use std::time::Duration;
use tokio::time::Instant;

use reqwest::header::ACCEPT;

use crate::mgmt::stream::{error_chain, StreamFault};
use crate::mgmt::{encode_path_segment, MgmtClient, MgmtError, Operation};
use crate::shutdown::Shutdown;

const EVENTS_PATH: &str = "/api/v2/events";
const OPERATION: Operation = Operation::SubscribeEvents;
/// The longest wait between two tries while the plan's connections are taken.
const CONNECTION_LIMIT_WAIT_MAX: Duration = Duration::from_secs(30);

/// Where a connection starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// After this offset (`Last-Event-ID` and `from`).
    After(String),
    /// At this time (`from_timestamp`, `YYYY-MM-DDTHH:MM:SSZ`).
    At(String),
    /// At the newest event (neither).
    Newest,
}

impl Resume {
    pub fn describe(&self) -> String {
        match self {
            Resume::After(offset) => format!("after offset {offset}"),
            Resume::At(time) => format!("from_timestamp {time}"),
            Resume::Newest => "at the newest event".to_owned(),
        }
    }
}

/// What the tenant answered a connection request.
pub enum Opened {
    Stream(reqwest::Response),
    /// 410 (or an `event: error` naming it): the offset expired.
    Expired(String),
}

/// Why opening stops for good (the supervisor retries the reader later).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Mgmt(#[from] MgmtError),
    #[error("GET /api/v2/events refused the request (HTTP {status}): {said}; if it names the offset, the checkpoint file cannot be resumed from: move it away to start again from `start`")]
    Refused { status: u16, said: String },
    #[error("stopped")]
    Stopped,
}

/// How a 403 reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    Scope,
    ConnectionLimit,
}

/// Tells the two 403s apart from the body (see the module's doc).
pub fn forbidden_kind(body: &str) -> Forbidden {
    let lower = body.to_ascii_lowercase();
    if lower.contains("scope") {
        Forbidden::Scope
    } else if lower.contains("concurrent") || lower.contains("connections") {
        Forbidden::ConnectionLimit
    } else {
        Forbidden::Scope
    }
}

/// The request's path and query.
pub fn events_path(resume: &Resume, event_types: &[String]) -> String {
    let mut query: Vec<String> = event_types
        .iter()
        .map(|t| format!("event_type={}", encode_path_segment(t)))
        .collect();
    match resume {
        Resume::After(offset) => query.push(format!("from={}", encode_path_segment(offset))),
        Resume::At(time) => query.push(format!("from_timestamp={}", encode_path_segment(time))),
        Resume::Newest => {}
    }
    if query.is_empty() {
        EVENTS_PATH.to_owned()
    } else {
        format!("{EVENTS_PATH}?{}", query.join("&"))
    }
}

/// The Events API as the reader sees it.
pub struct EventsApi {
    client: MgmtClient,
    http: reqwest::Client,
    event_types: Vec<String>,
}

/// What the reader is told about waits it cannot fix (the metric and its log).
pub trait OpenReport: Sync {
    fn connection_limit(&self, said: &str);
}

impl EventsApi {
    pub fn new(client: MgmtClient, event_types: Vec<String>) -> Result<EventsApi, MgmtError> {
        // No total timeout: the body is a stream for minutes. Silence is the reader's idle
        // timeout.
        let http = reqwest::Client::builder()
            .user_agent(concat!("auth0-default-roles/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(client.connect_timeout())
            .build()
            .map_err(|e| MgmtError::HttpClient(std::sync::Arc::new(e)))?;
        Ok(EventsApi {
            client,
            http,
            event_types,
        })
    }

    pub fn client(&self) -> &MgmtClient {
        &self.client
    }

    pub fn event_types(&self) -> &[String] {
        &self.event_types
    }

    /// Opens the stream at `resume`, waiting out every refusal that may pass (see the
    /// module's doc) until `shutdown`.
    pub async fn open(
        &self,
        resume: &Resume,
        report: &dyn OpenReport,
        shutdown: &Shutdown,
    ) -> Result<Opened, OpenError> {
        tokio::select! {
            opened = self.open_until_answered(resume, report) => opened,
            _ = shutdown.wait() => Err(OpenError::Stopped),
        }
    }

    async fn open_until_answered(
        &self,
        resume: &Resume,
        report: &dyn OpenReport,
    ) -> Result<Opened, OpenError> {
        let url = format!(
            "{}{}",
            self.client.base_url(),
            events_path(resume, &self.event_types)
        );
        let mut backoff = self.client.stream_backoff();
        let mut limit_wait = Duration::from_secs(1);
        let mut rejected_before = false;
        loop {
            let token = self.client.stream_token(OPERATION).await?;
            let mut request = self
                .http
                .get(&url)
                .bearer_auth(&*token)
                .header(ACCEPT, "text/event-stream");
            if let Resume::After(offset) = resume {
                request = request.header("Last-Event-ID", offset.as_str());
            }
            let started = Instant::now();
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) => {
                    self.client
                        .stream_count(OPERATION, "error", started.elapsed());
                    let fault = if err.is_timeout() {
                        StreamFault::Timeout
                    } else {
                        StreamFault::Transport(error_chain(&err))
                    };
                    self.client
                        .stream_wait(OPERATION, fault, &mut backoff)
                        .await;
                    continue;
                }
            };
            let status = response.status();
            self.client.stream_heard();
            self.client
                .stream_count(OPERATION, status.as_str(), started.elapsed());
            if status.is_success() {
                self.client.stream_opened(OPERATION);
                return Ok(Opened::Stream(response));
            }
            let headers = response.headers().clone();
            let body = body_text(response).await;
            match status.as_u16() {
                401 => {
                    self.client
                        .stream_unauthorized(OPERATION, &token, rejected_before, body, &mut backoff)
                        .await;
                    rejected_before = true;
                    continue;
                }
                403 => match forbidden_kind(&body) {
                    Forbidden::ConnectionLimit => {
                        report.connection_limit(&body);
                        tokio::time::sleep(limit_wait).await;
                        limit_wait = (limit_wait * 2).min(CONNECTION_LIMIT_WAIT_MAX);
                    }
                    Forbidden::Scope => {
                        let said = format!(
                            "{}: HTTP 403: {body} (the Events API needs read:events)",
                            OPERATION.as_str()
                        );
                        self.client
                            .stream_scope_refused(OPERATION, &token, said, &mut backoff)
                            .await;
                    }
                },
                410 => return Ok(Opened::Expired(body)),
                429 => {
                    let wait = self.client.stream_rate_limit_wait(&headers);
                    tracing::debug!(
                        wait_ms = wait.as_millis() as u64,
                        "Events API: 429, waiting"
                    );
                    tokio::time::sleep(wait).await;
                }
                408 | 500..=599 => {
                    self.client
                        .stream_wait(
                            OPERATION,
                            StreamFault::Status(status.as_u16()),
                            &mut backoff,
                        )
                        .await;
                }
                code => {
                    return Err(OpenError::Refused {
                        status: code,
                        said: body,
                    })
                }
            }
            rejected_before = false;
        }
    }
}

/// The body of a refusal, at most 500 characters.
async fn body_text(response: reqwest::Response) -> String {
    let bytes = response.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_403s_are_told_apart_by_their_body() {
        assert_eq!(
            forbidden_kind(
                r#"{"statusCode":403,"error":"Forbidden","message":"Insufficient scope; expected any of: read:events.","errorCode":"insufficient_scope"}"#
            ),
            Forbidden::Scope
        );
        assert_eq!(
            forbidden_kind(
                r#"{"statusCode":403,"error":"Forbidden","message":"Maximum concurrent event stream connections reached. Please close existing connections."}"#
            ),
            Forbidden::ConnectionLimit
        );
        assert_eq!(forbidden_kind("Forbidden"), Forbidden::Scope);
    }

    #[test]
    fn the_path_names_every_type_and_the_place() {
        let types = vec!["user.created".to_owned(), "user.updated".to_owned()];
        assert_eq!(
            events_path(&Resume::After("ab+/=".to_owned()), &types),
            "/api/v2/events?event_type=user.created&event_type=user.updated&from=ab%2B%2F%3D"
        );
        assert_eq!(
            events_path(&Resume::At("2026-12-07T05:00:00Z".to_owned()), &[]),
            "/api/v2/events?from_timestamp=2026-12-07T05%3A00%3A00Z"
        );
        assert_eq!(events_path(&Resume::Newest, &[]), "/api/v2/events");
    }
}
