//! The client's fault state: why the tenant refuses the service ([`Blocked`]), why a request is
//! retried ([`Transient`]), the waits between retries (backoff, a 429's hold on every call), the
//! failing and blocked state sources and `/readyz` read, and the probe that clears it.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

use super::{header_seconds, lock, seconds_within_an_hour, MgmtClient, MgmtError, Operation};

/// Why the tenant refuses the service itself (a *service fault*): every event would fail the
/// same way, so events wait, intake pauses and `/readyz` names the cause until it clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Blocked {
    /// The token endpoint refuses the credentials, or a fresh token is rejected.
    Credentials,
    /// A call answered 403: the application lacks a scope (or is not authorized).
    Scope,
    /// The tenant cannot be reached for a reason retrying alone does not fix: DNS, TLS
    /// certificates, redirect loops.
    Transport,
    /// A role of the policy does not exist in the tenant (deleted; a re-created role gets a new
    /// id): the directory is resolved again every few seconds until it does.
    RoleMissing,
    /// The application's per-client token quota is used up (a token 429 `Client quota
    /// exceeded`): no token until the quota resets.
    ClientQuota,
}

impl Blocked {
    pub const ALL: [Blocked; 5] = [
        Blocked::Credentials,
        Blocked::Scope,
        Blocked::Transport,
        Blocked::RoleMissing,
        Blocked::ClientQuota,
    ];

    /// The `reason` label of `mgmt_api_blocked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Blocked::Credentials => "credentials",
            Blocked::Scope => "scope",
            Blocked::Transport => "transport",
            Blocked::RoleMissing => "role_missing",
            Blocked::ClientQuota => "client_quota",
        }
    }

    /// What the operator must do.
    pub fn advice(self) -> &'static str {
        match self {
            Blocked::Credentials => "check auth0.client_id and the secret (AUTH0_CLIENT_SECRET, read at start, or auth0.client_secret_file, read again on each refusal: a rotated secret written there is used without a restart), and that the application is still authorized for the Auth0 Management API with the Client Credentials grant",
            Blocked::Scope => "grant the scope named in the error to the application: Dashboard → Applications → APIs → Auth0 Management API → Machine To Machine Applications (`check` lists the scopes this config needs: create:role_members and read:roles, plus read:users when a rule reads profiles, read:role_members for read_user_roles or has_roles, read:clients for assign_client_metadata)",
            Blocked::Transport => "check auth0.domain / auth0.base_url, DNS and the TLS trust store of this host (the cause is in the error)",
            Blocked::ClientQuota => super::client_quota::ADVICE,
            Blocked::RoleMissing => "create the role again in the tenant (Dashboard → User Management → Roles) or remove it from [policy]; the service resolves role names every few seconds meanwhile and resumes by itself, events wait",
        }
    }
}

/// Why a request will be retried.
pub(super) enum Transient {
    RateLimited(Option<Duration>),
    Status(u16),
    Timeout,
    /// No complete answer: the error and its causes.
    Connection(String),
    /// A service fault, with what the tenant or the transport said.
    Refused(Blocked, String),
}

impl Transient {
    /// A request that got no (complete) answer. DNS, TLS and redirect failures are service
    /// faults; a refused or reset connection, a cut-off body are transient.
    pub(super) fn from_transport(err: &reqwest::Error) -> Transient {
        if err.is_timeout() {
            return Transient::Timeout;
        }
        let chain = cause_chain(err);
        // Judged on the causes only: reqwest's own message quotes the URL, whose host, role
        // names or ids may contain "tls" or "dns" by chance.
        let mut lower = String::new();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            lower.push_str(&cause.to_string().to_ascii_lowercase());
            lower.push(' ');
            source = cause.source();
        }
        let refused = err.is_redirect()
            || [
                "dns",
                "resolve",
                "lookup",
                "certificate",
                "tls",
                "handshake",
                "invalid peer",
            ]
            .iter()
            .any(|needle| lower.contains(needle));
        if refused {
            Transient::Refused(Blocked::Transport, chain)
        } else {
            Transient::Connection(chain)
        }
    }

    pub(super) fn reason(&self) -> &'static str {
        match self {
            Transient::RateLimited(_) => "rate_limited",
            Transient::Status(_) => "server_error",
            Transient::Timeout => "timeout",
            Transient::Connection(_) => "connection",
            Transient::Refused(blocked, _) => blocked.as_str(),
        }
    }
}

pub(super) use crate::exit::cause_chain;

impl MgmtClient {
    /// What `/readyz` says before the client is connected (its first token, the policy's roles
    /// resolved): see [`crate::server::Pending`].
    pub const NOT_CONNECTED: &'static str =
        "no Management API token or policy roles not resolved yet";

    /// Whether sources should pause intake: a service fault is in force, or calls have been
    /// failing for `sustained` (a passing error or a 429 does not pause anything).
    pub fn is_failing(&self) -> bool {
        if self.blocked().is_some() {
            return true;
        }
        self.failing_now()
            && lock(&self.inner.failing_since)
                .is_some_and(|since| since.elapsed() >= self.inner.settings.retry.sustained)
    }

    /// Whether some call is failing and being retried right now.
    pub(super) fn failing_now(&self) -> bool {
        self.inner.failing.load(Ordering::SeqCst)
    }

    /// The service fault in force (the tenant refuses the service), with its detail.
    pub fn blocked(&self) -> Option<(Blocked, String)> {
        if let Some(names) = lock(&self.inner.roles_missing).as_ref() {
            return Some((
                Blocked::RoleMissing,
                format!(
                    "these roles of the policy do not exist in the tenant: {}",
                    names.join(", ")
                ),
            ));
        }
        lock(&self.inner.blocked)
            .as_ref()
            .map(|(blocked, said, _)| (*blocked, said.clone()))
    }

    /// Sets (or, with `None`, clears) the policy roles the tenant lacks. While set, intake is
    /// paused and `/readyz` names them; only the role directory clears it.
    pub(crate) fn set_roles_missing(&self, names: Option<Vec<String>>) {
        let was = {
            let mut missing = lock(&self.inner.roles_missing);
            let was = missing.is_some();
            *missing = names;
            was
        };
        let now = lock(&self.inner.roles_missing).is_some();
        if was != now {
            if now {
                tracing::warn!(
                    "a policy role is missing in the tenant: events wait and intake is paused until it exists again; to fix: {}",
                    Blocked::RoleMissing.advice()
                );
            } else {
                tracing::info!("every policy role exists again; resuming");
            }
        }
        self.publish_blocked();
    }

    /// Whether a policy role is missing in the tenant right now.
    pub(crate) fn roles_missing(&self) -> bool {
        lock(&self.inner.roles_missing).is_some()
    }

    /// `operation` was answered: the failing state clears, unless a scope is still missing
    /// for another operation (a read succeeding says nothing about a refused write).
    /// Every refused operation is remembered until it is answered itself: granting one of two
    /// missing scopes leaves the fault on for the other (it does not clear and come back).
    pub(super) fn answered(&self, operation: Option<Operation>) {
        let scope_still_missing = {
            let mut refused = lock(&self.inner.scope_refused);
            if let Some(operation) = operation {
                refused.remove(&operation);
            }
            let missing = !refused.is_empty();
            if missing {
                // The fault names a refusal still in force.
                let mut blocked = lock(&self.inner.blocked);
                if let Some((Blocked::Scope, _, op)) = blocked.as_ref() {
                    if !refused.contains(op) {
                        if let Some(still) = refused.iter().next() {
                            let said = format!("{} is still refused", still.as_str());
                            *blocked = Some((Blocked::Scope, said, *still));
                        }
                    }
                }
            }
            missing
        };
        if !scope_still_missing {
            self.set_failing(false);
            self.inner.token.scope_fault_over();
        }
    }

    pub(super) fn set_failing(&self, failing: bool) {
        let was = self.inner.failing.swap(failing, Ordering::SeqCst);
        {
            let mut since = lock(&self.inner.failing_since);
            if !failing {
                *since = None;
            } else if since.is_none() {
                *since = Some(Instant::now());
            }
        }
        self.inner.metrics.mgmt_failing.set(i64::from(failing));
        if !failing {
            self.set_blocked(None);
            if was {
                tracing::info!("Management API answering again");
                self.inner.recovered.notify_waiters();
            }
        } else if !was && self.is_serving() && !self.inner.probing.swap(true, Ordering::SeqCst) {
            tokio::spawn(probe(self.clone()));
        }
    }

    pub(super) fn set_blocked(&self, blocked: Option<(Blocked, String, Operation)>) {
        *lock(&self.inner.blocked) = blocked;
        self.publish_blocked();
    }

    /// `mgmt_api_blocked{reason}` from the faults in force.
    pub(super) fn publish_blocked(&self) {
        let refused = lock(&self.inner.blocked).as_ref().map(|(b, _, _)| *b);
        let roles_missing = self.roles_missing();
        for b in Blocked::ALL {
            let on = refused == Some(b) || (b == Blocked::RoleMissing && roles_missing);
            self.inner
                .metrics
                .mgmt_blocked
                .with_label_values(&[b.as_str()])
                .set(i64::from(on));
        }
    }

    /// Waits after a transient failure: `Retry-After`, else the rate-limit reset (at least the
    /// floor), else the next exponential step. Logs a warning at most once a minute.
    pub(super) async fn wait_before_retry(
        &self,
        operation: Operation,
        why: Transient,
        backoff: &mut impl Iterator<Item = Duration>,
    ) {
        let retry = &self.inner.settings.retry;
        // The jitter may take a step past the cap: the cap holds.
        let next = backoff.next().unwrap_or(retry.cap).min(retry.cap);
        let delay = match &why {
            Transient::RateLimited(Some(hint)) => *hint,
            _ => next,
        };
        self.inner
            .metrics
            .mgmt_retries
            .with_label_values(&[operation.as_str(), why.reason()])
            .inc();
        // A 429 is flow control: its class's limiter holds the calls of that class (see
        // `limiter`), and nothing pauses or turns not ready.
        if !matches!(why, Transient::RateLimited(_)) {
            self.set_failing(true);
        }
        if let Transient::Refused(blocked, detail) = &why {
            if *blocked == Blocked::Scope {
                lock(&self.inner.scope_refused).insert(operation);
            }
            self.set_blocked(Some((*blocked, detail.clone(), operation)));
        }
        {
            let mut stats = lock(&self.inner.stats);
            stats.retries += 1;
            if matches!(why, Transient::RateLimited(_)) {
                stats.rate_limited += 1;
            }
        }
        let detail = match &why {
            Transient::Status(s) => format!("HTTP {s}"),
            Transient::Connection(chain) => format!("connection: {chain}"),
            Transient::Refused(blocked, said) => format!(
                "the tenant refuses the service ({}): {said}; to fix: {}",
                blocked.as_str(),
                blocked.advice()
            ),
            other => other.reason().to_owned(),
        };
        let warn = {
            let mut last = lock(&self.inner.last_warning);
            let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if warn {
            tracing::warn!(operation = operation.as_str(), reason = %detail, retry_in_ms = delay.as_millis() as u64,
                "Management API call failing; retrying until it succeeds (events wait, nothing is dropped)");
        } else {
            tracing::debug!(operation = operation.as_str(), reason = %detail, retry_in_ms = delay.as_millis() as u64, "retrying");
        }
        if matches!(why, Transient::RateLimited(_)) {
            // Waited out in the class's limiter, which a success of the class ends early.
        } else {
            let recovered = self.inner.recovered.notified();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = recovered => {}
            }
        }
    }

    pub(super) fn backoff(&self) -> impl Iterator<Item = Duration> {
        let retry = &self.inner.settings.retry;
        ExponentialBuilder::default()
            .with_min_delay(retry.base)
            .with_factor(2.0)
            .with_max_delay(retry.cap)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// The wait a 429 asks for: `Retry-After` (seconds), else `x-ratelimit-reset` (epoch
    /// seconds) minus now, never less than the floor.
    /// Values that are not finite numbers (`NaN`, `inf`, garbage) or lie outside [0, 1 h] are
    /// ignored, and the exponential backoff decides instead.
    pub(super) fn rate_limit_wait(&self, headers: &HeaderMap) -> Option<Duration> {
        let floor = self.inner.settings.retry.reset_floor;
        if let Some(wait) =
            header_seconds(headers, RETRY_AFTER.as_str()).and_then(seconds_within_an_hour)
        {
            return Some(wait.max(floor));
        }
        let reset = header_seconds(headers, "x-ratelimit-reset")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        seconds_within_an_hour((reset - now).max(0.0)).map(|d| d.max(floor))
    }
}

/// While calls fail, checks every backoff step (capped at the retry cap) whether the tenant
/// accepts the service again: a token, then one `GET /api/v2/roles` page. Success clears the
/// failing state (intake resumes) even when every other call is still waiting out its backoff.
pub(super) async fn probe(client: MgmtClient) {
    loop {
        probe_until_answered(&client).await;
        client.inner.probing.store(false, Ordering::SeqCst);
        // Failing again since the loop ended, and nobody else took over: go on probing.
        if !client.failing_now() || client.inner.probing.swap(true, Ordering::SeqCst) {
            return;
        }
    }
}

pub(super) async fn probe_until_answered(client: &MgmtClient) {
    let mut backoff = client.backoff();
    while client.failing_now() {
        let cap = client.inner.settings.retry.cap;
        let delay = backoff.next().unwrap_or(cap).min(cap);
        tokio::time::sleep(delay).await;
        if !client.failing_now() {
            break;
        }
        let Ok(token) = client.inner.token.get(client).await else {
            continue;
        };
        client.inner.limiter.until_ready().await;
        let seq = client
            .inner
            .classes
            .until_ready(super::RateClass::RoleReads, &client.inner.metrics)
            .await;
        let started = Instant::now();
        let sent = client
            .inner
            .http
            .get(client.url("/api/v2/roles?per_page=1&page=0"))
            .bearer_auth(&*token)
            .send()
            .await;
        let status = match sent {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                if status.as_u16() != 429 {
                    client.inner.classes.answered(
                        seq,
                        &headers,
                        headers.contains_key("x-ratelimit-remaining"),
                        &client.inner.metrics,
                    );
                }
                // The whole body must arrive: a cut-off answer is no proof.
                response.bytes().await.ok().map(|_| status)
            }
            Err(_) => None,
        };
        client.count(
            Operation::GetRoles,
            status.as_ref().map_or("error", StatusCode::as_str),
            started.elapsed(),
        );
        match status {
            Some(status) if status.is_success() => {
                client.inner.token.prove();
                // A missing scope is proven fixed only by the refused call itself (it retries
                // on its own); everything else clears here.
                client.answered(None);
                if !client.failing_now() {
                    tracing::info!("probe: the tenant accepts the service again; resuming");
                }
            }
            Some(status) if status.as_u16() == 401 => client.inner.token.invalidate(&token).await,
            _ => {}
        }
    }
}

/// The error of a call whose answer was lost after it may have reached the tenant.
pub(super) fn answer_lost(operation: Operation, err: &reqwest::Error) -> MgmtError {
    let cause = if err.is_timeout() {
        "no answer in time".to_owned()
    } else {
        cause_chain(err)
    };
    MgmtError::AnswerLost {
        operation: operation.as_str(),
        cause,
    }
}

/// The tenant's say on `/readyz`: not ready while it refuses the service (a service fault,
/// with its fix) or while calls keep failing.
impl crate::server::ReadinessProbe for MgmtClient {
    fn not_ready(&self) -> Vec<String> {
        if let Some((blocked, said)) = self.blocked() {
            vec![format!(
                "the tenant refuses the service ({}): {said}; to fix: {} (events wait, intake paused, nothing lost)",
                blocked.as_str(),
                blocked.advice()
            )]
        } else if self.is_failing() {
            vec!["Management API calls failing (retrying; intake paused, nothing lost)".to_owned()]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two scopes missing (a profile read and a role write refused), one granted: its call is
    /// answered, and the fault stays on for the other (seen flapping: only the last refused
    /// operation was remembered, so answering it cleared the fault).
    #[tokio::test(start_paused = true)]
    async fn granting_one_of_two_missing_scopes_keeps_the_fault_on() {
        let client = MgmtClient::for_tests();
        let mut backoff = client.backoff();
        for operation in [Operation::AssignRoleUsers, Operation::GetUser] {
            let why = Transient::Refused(Blocked::Scope, format!("{} refused", operation.as_str()));
            client.wait_before_retry(operation, why, &mut backoff).await;
        }
        assert!(client.failing_now());
        // read:users granted: the profile read is answered.
        client.answered(Some(Operation::GetUser));
        assert!(client.failing_now(), "the role write is still refused");
        client.answered(Some(Operation::GetRoles));
        assert!(
            client.failing_now(),
            "another call says nothing about the refused write"
        );
        // create:role_members granted too.
        client.answered(Some(Operation::AssignRoleUsers));
        assert!(!client.failing_now());
    }

    #[tokio::test]
    async fn the_clients_readiness_probe_names_the_refusal_and_its_fix() {
        use crate::server::ReadinessProbe;
        let client = MgmtClient::for_tests();
        assert!(client.not_ready().is_empty(), "a fresh client is ready");
        client.set_roles_missing(Some(vec!["Viewer".to_owned()]));
        let said = client.not_ready();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with("the tenant refuses the service (role_missing): these roles of the policy do not exist in the tenant: Viewer; to fix: "),
            "{said:?}"
        );
        client.set_roles_missing(None);
        assert!(client.not_ready().is_empty());
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_whatever_words_its_url_holds() {
        // A closed loopback port; the URL names a role "DNS Admins" and a "tls" path.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let url =
            format!("http://127.0.0.1:{port}/api/v2/roles?name_filter=DNS%20Admins&tls=handshake");
        let err = match reqwest::Client::new().get(&url).send().await {
            Err(err) => err,
            Ok(response) => panic!("nothing listens there: {}", response.status()),
        };
        assert!(
            matches!(Transient::from_transport(&err), Transient::Connection(_)),
            "{}",
            cause_chain(&err)
        );
    }
}
