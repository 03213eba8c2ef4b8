//! Helper tasks: what the service runs beside its source (the backstop, the log stream's
//! watcher) and the steps of a reader that must not fail silently (its checkpoint writes).
//! Each reports through a [`HelperStatus`]; [`supervise`] runs a helper and retries it with
//! backoff when it fails or its task is lost, until the shutdown.
//!
//! Invariants:
//! - a failure is logged when it happens, counted in `helper_failures_total{helper}`, sets
//!   `helper_up{helper}` to 0 and shows on `/readyz` as degraded (the status stays 200: the
//!   assignments go on);
//! - a helper stays degraded until it reports itself healthy again (it got past the step that
//!   failed), not merely because it was started again; `helper_up` is 1 exactly then;
//! - a helper is retried until the shutdown, at most [`RETRY_MAX`] apart: granting a scope or
//!   freeing a disk heals it without a restart.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::server::ReadinessProbe;
use crate::shutdown::Shutdown;

/// The first wait before a failed helper is started again; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two attempts of a failing helper.
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// A helper that ran this long before it failed starts its backoff over.
const RAN_WELL: Duration = Duration::from_secs(60);

/// The helpers of the process and their failures: a readiness probe (degraded, never not
/// ready).
#[derive(Default)]
pub struct Helpers {
    /// The helpers failing now, with what they said.
    failing: Mutex<BTreeMap<&'static str, String>>,
}

impl Helpers {
    pub fn new() -> Arc<Helpers> {
        Arc::new(Helpers::default())
    }

    /// The status a helper named `name` reports through (its metrics start at up, 0 failures).
    pub fn status(self: &Arc<Self>, name: &'static str, metrics: &Arc<Metrics>) -> HelperStatus {
        metrics.helper_up.with_label_values(&[name]).set(1);
        metrics.helper_failures.with_label_values(&[name]);
        HelperStatus {
            name,
            helpers: Arc::clone(self),
            metrics: Arc::clone(metrics),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReadinessProbe for Helpers {
    fn degraded(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|(name, said)| format!("{name}: {said} (retrying; assignments go on)"))
            .collect()
    }
}

/// How one helper reports: [`failed`](HelperStatus::failed) and
/// [`healthy`](HelperStatus::healthy). Cheap to clone.
#[derive(Clone)]
pub struct HelperStatus {
    name: &'static str,
    helpers: Arc<Helpers>,
    metrics: Arc<Metrics>,
}

impl HelperStatus {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A failure: logged, counted, degraded until [`healthy`](HelperStatus::healthy).
    pub fn failed(&self, said: &str) {
        self.metrics
            .helper_failures
            .with_label_values(&[self.name])
            .inc();
        self.metrics
            .helper_up
            .with_label_values(&[self.name])
            .set(0);
        self.helpers.lock().insert(self.name, said.to_owned());
        tracing::error!(
            helper = self.name,
            error = said,
            "a helper task failed; it is retried with backoff (assignments go on)"
        );
    }

    /// The helper got past what failed (or never failed).
    pub fn healthy(&self) {
        if self.helpers.lock().remove(self.name).is_some() {
            tracing::info!(helper = self.name, "the helper task works again");
        }
        self.metrics
            .helper_up
            .with_label_values(&[self.name])
            .set(1);
    }

    /// Whether the helper is failing now.
    pub fn is_failing(&self) -> bool {
        self.helpers.lock().contains_key(self.name)
    }
}

/// Runs `attempt` as a task until `shutdown`: an attempt that fails (`Err`, reported with its
/// cause chain), panics or ends before the shutdown is reported through `status` and started
/// again after a backoff ([`RETRY_FIRST`] doubling to [`RETRY_MAX`], over again after an
/// attempt that ran well). The attempt reports [`HelperStatus::healthy`] itself once it works.
pub async fn supervise<F, Fut, E>(status: HelperStatus, shutdown: Shutdown, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let mut wait = RETRY_FIRST;
    while !shutdown.is_triggered() {
        let started = Instant::now();
        let ended = match tokio::spawn(attempt()).await {
            Ok(Ok(())) if shutdown.is_triggered() => return,
            Ok(Ok(())) => "it ended before the shutdown".to_owned(),
            Ok(Err(err)) => crate::exit::cause_chain(&err),
            Err(lost) => format!("its task was lost: {lost}"),
        };
        if shutdown.is_triggered() {
            return;
        }
        status.failed(&ended);
        if started.elapsed() >= RAN_WELL {
            wait = RETRY_FIRST;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait() => return,
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_failing_helper_is_counted_degraded_retried_and_heals() {
        let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
        let helpers = Helpers::new();
        let status = helpers.status("test_helper", &metrics);
        let shutdown = Shutdown::new();
        let tries = Arc::new(AtomicU32::new(0));
        let (attempt_status, attempt_tries, stop) =
            (status.clone(), Arc::clone(&tries), shutdown.clone());
        let task = tokio::spawn(supervise(status.clone(), shutdown.clone(), move || {
            let (status, tries, stop) = (
                attempt_status.clone(),
                Arc::clone(&attempt_tries),
                stop.clone(),
            );
            async move {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(std::io::Error::other("refused")),
                    1 => panic!("boom"),
                    _ => {
                        status.healthy();
                        stop.wait().await;
                        Ok(())
                    }
                }
            }
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tries.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            metrics
                .helper_failures
                .with_label_values(&["test_helper"])
                .get(),
            2
        );
        assert!(helpers.degraded().is_empty(), "{:?}", helpers.degraded());
        assert_eq!(
            metrics.helper_up.with_label_values(&["test_helper"]).get(),
            1
        );
        shutdown.trigger();
        task.await.unwrap_or_else(|e| panic!("{e}"));
    }
}
