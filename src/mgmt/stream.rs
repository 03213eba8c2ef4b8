//! What a long-lived request needs of the client when its caller reads the answer itself (the
//! Events API's Server-Sent Events stream, whose client lives with its source): the token, the
//! tenant's limiter, the counters, and the client's fault model — a rejected token, a refused
//! scope (a service fault: intake pauses, `/readyz` names it), a transient failure waited out
//! with backoff, a 429's wait, and the answer that clears them.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;

use super::faults::{cause_chain, Blocked, Transient};
use super::{MgmtClient, MgmtError, Operation};

/// Why a streaming request is retried (what [`MgmtClient::stream_wait`] logs and counts).
#[derive(Debug, Clone)]
pub enum StreamFault {
    /// A 5xx or 408.
    Status(u16),
    /// No (complete) answer.
    Transport(String),
    /// No byte for the idle timeout.
    Timeout,
}

impl MgmtClient {
    /// The bearer token for a streaming request. While serving, a refused credential is waited
    /// out as a service fault (with the other calls) instead of being returned.
    pub(crate) async fn stream_token(&self, operation: Operation) -> Result<Arc<str>, MgmtError> {
        let mut backoff = self.backoff();
        loop {
            match self.inner.token.get(self).await {
                Ok(token) => {
                    self.inner.limiter.until_ready().await;
                    return Ok(token);
                }
                Err(MgmtError::Auth(said)) if self.is_serving() => {
                    let why = Transient::Refused(Blocked::Credentials, said);
                    self.wait_before_retry(operation, why, &mut backoff).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Counts one streaming request (`mgmt_requests_total`, the duration until its headers).
    pub(crate) fn stream_count(&self, operation: Operation, status: &str, elapsed: Duration) {
        self.count(operation, status, elapsed);
    }

    /// The tenant answered (any status): it is reachable.
    pub(crate) fn stream_heard(&self) {
        self.heard_from_tenant();
    }

    /// The stream was opened: the token works, and a scope fault of `operation` is over.
    pub(crate) fn stream_opened(&self, operation: Operation) {
        self.inner.token.prove();
        self.answered(Some(operation));
    }

    /// A 401: drops `token` (the next [`MgmtClient::stream_token`] fetches another). A
    /// second 401 in a row is the credentials' service fault, waited out with backoff.
    pub(crate) async fn stream_unauthorized(
        &self,
        operation: Operation,
        token: &Arc<str>,
        again: bool,
        said: String,
        backoff: &mut impl Iterator<Item = Duration>,
    ) {
        self.inner.token.invalidate(token).await;
        if again {
            let said = format!(
                "{}: a fresh token was rejected with 401: {said}",
                operation.as_str()
            );
            self.wait_before_retry(
                operation,
                Transient::Refused(Blocked::Credentials, said),
                backoff,
            )
            .await;
        }
    }

    /// A 403 for a missing scope: the service fault (intake paused, `/readyz` says `scope`),
    /// a new token when the refused one is old enough (a scope granted again is only in a new
    /// token), then the backoff's wait.
    pub(crate) async fn stream_scope_refused(
        &self,
        operation: Operation,
        token: &Arc<str>,
        said: String,
        backoff: &mut impl Iterator<Item = Duration>,
    ) {
        self.inner
            .token
            .invalidate_for_scope(token, self.inner.settings.retry.scope_token_refresh)
            .await;
        self.wait_before_retry(operation, Transient::Refused(Blocked::Scope, said), backoff)
            .await;
    }

    /// A transient failure of a streaming request: counted, logged at most once a minute,
    /// waited out with backoff (intake pauses once it lasts).
    pub(crate) async fn stream_wait(
        &self,
        operation: Operation,
        fault: StreamFault,
        backoff: &mut impl Iterator<Item = Duration>,
    ) {
        let why = match fault {
            StreamFault::Status(status) => Transient::Status(status),
            StreamFault::Transport(chain) => Transient::Connection(chain),
            StreamFault::Timeout => Transient::Timeout,
        };
        self.wait_before_retry(operation, why, backoff).await;
    }

    /// How long a 429 asks to wait (`Retry-After`, else the reset, at least the floor).
    pub(crate) fn stream_rate_limit_wait(&self, headers: &HeaderMap) -> Duration {
        self.rate_limit_wait(headers)
            .unwrap_or(self.inner.settings.retry.reset_floor)
    }

    /// The client's retry backoff (exponential with jitter, capped).
    pub(crate) fn stream_backoff(&self) -> impl Iterator<Item = Duration> {
        self.backoff()
    }

    /// Where requests go (`https://{domain}` or `[auth0] base_url`).
    pub(crate) fn base_url(&self) -> &str {
        &self.inner.settings.base_url
    }

    /// The connect timeout for a streaming client: the client's request timeout, at most 5 s.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.inner.settings.timeout.min(Duration::from_secs(5))
    }
}

/// An error and its causes, `: `-separated.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    cause_chain(err)
}
