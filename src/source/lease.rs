//! One active reader per tenant across replicas sharing a PostgreSQL ledger: a reader (the
//! Events API source, the Logs API source, the backstop) reads only while this process holds
//! its lease ([`crate::ledger::lease`]), stands by otherwise, and takes over when the holder
//! stops renewing. Without a PostgreSQL ledger there is no lease: the checkpoint file's lock
//! keeps one reader (an SQLite ledger is one host's).
//!
//! [`ReaderLease::run`] cycles through two states:
//! - **standby**: tries to take the lease every [`acquire_interval`] (a third of the ttl, at
//!   most 5 s); `/readyz` answers 200 and says so, `reader_lease_held{reader}` is 0. A ledger
//!   that fails meanwhile is the ledger's outage (logged, `/readyz` names it, retried with
//!   backoff), never a crash.
//! - **active**: the reader runs under a stop of its own; the lease is renewed every third of
//!   the ttl. A renewal that fails, that finds another holder, or that has not answered by the
//!   lease's local deadline (its send time plus the ttl) ends the holding at once: the reader
//!   stops reading, abandons what is in flight and writes no checkpoint (the ledger refuses a
//!   checkpoint write by a holder that lost its lease anyway), and goes back to standby. A clean
//!   stop keeps renewing while the reader drains (its last checkpoint write needs the lease),
//!   then releases the lease, so a standby takes over at its next try.
//!
//! A standby takes over within the ttl plus one acquire interval of the holder's last renewal
//! ([`takeover_bound`]: 20 s at the default 15 s ttl), then resumes from the checkpoint of
//! record, the one in the ledger.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::exit::cause_chain;
use crate::ledger::lease::{Acquisition, Lease, LeaseError};
use crate::metrics::Metrics;
use crate::server::{Health, ReadinessProbe};
use crate::shutdown::Shutdown;
use crate::source::QuietLog;

/// The default `[ledger] lease_ttl_seconds`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);
/// The longest wait between two tries of a standby while the ledger fails.
const MAX_FAILING_WAIT: Duration = Duration::from_secs(30);
/// How long a clean stop waits for the release.
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);

/// How often a standby tries to take the lease: a third of the ttl, between 0.5 and 5 s.
pub fn acquire_interval(ttl: Duration) -> Duration {
    (ttl / 3).clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// How long after the holder's last renewal a standby has taken over, at the latest (the
/// database answering): the ttl plus one acquire interval.
pub fn takeover_bound(ttl: Duration) -> Duration {
    ttl + acquire_interval(ttl)
}

/// Where this process stands with the lease.
#[derive(Default)]
struct Standing {
    /// Holding it: the reader runs.
    held: bool,
    /// The holding's stop (triggered when the lease is lost).
    stop: Option<Shutdown>,
    /// The other holder, as last seen by a standby.
    other: Option<String>,
    /// A standby tried at least once.
    tried: bool,
}

/// A reader's lease as the reader uses it: standby and takeover, renewal, the fenced
/// checkpoint write, its metric and its say on `/readyz`.
pub struct ReaderLease {
    lease: Lease,
    /// The `reader` label: `auth0_events`, `auth0_logs`, `backstop`.
    reader: &'static str,
    metrics: Arc<Metrics>,
    standing: Mutex<Standing>,
    quiet: QuietLog,
}

impl ReaderLease {
    pub fn new(lease: Lease, reader: &'static str, metrics: Arc<Metrics>) -> ReaderLease {
        metrics
            .reader_lease_held
            .with_label_values(&[reader])
            .set(0);
        metrics.reader_lease_lost.with_label_values(&[reader]);
        ReaderLease {
            lease,
            reader,
            metrics,
            standing: Mutex::new(Standing::default()),
            quiet: QuietLog::every(Duration::from_secs(60)),
        }
    }

    fn standing(&self) -> std::sync::MutexGuard<'_, Standing> {
        self.standing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this process holds the lease now (the reader may read and save).
    pub fn is_held(&self) -> bool {
        self.standing().held
    }

    pub fn name(&self) -> &str {
        self.lease.name()
    }

    /// Runs `active` (the reader, under the stop it is given) whenever this process holds the
    /// lease, and stands by otherwise, until `shutdown`. `health`: the source's, set connected
    /// while standing by (a standby is ready: it does not read, by design).
    pub async fn run<F, Fut>(
        self: Arc<Self>,
        shutdown: Shutdown,
        health: Option<Arc<Health>>,
        mut active: F,
    ) where
        F: FnMut(Shutdown) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let Some(valid_until) = self.stand_by(&shutdown, health.as_deref()).await else {
                return;
            };
            let stop = shutdown.child();
            {
                let mut standing = self.standing();
                standing.held = true;
                standing.stop = Some(stop.clone());
                standing.other = None;
            }
            self.metrics
                .reader_lease_held
                .with_label_values(&[self.reader])
                .set(1);
            // Renewed until the reader has returned, its drain at the shutdown included (the
            // final checkpoint write needs the lease), unless lost first.
            let renewal = tokio::spawn(Arc::clone(&self).renew(valid_until));
            active(stop.clone()).await;
            stop.trigger();
            renewal.abort();
            let _ = renewal.await;
            let still_held = {
                let mut standing = self.standing();
                standing.stop = None;
                std::mem::take(&mut standing.held)
            };
            self.metrics
                .reader_lease_held
                .with_label_values(&[self.reader])
                .set(0);
            if still_held {
                self.release().await;
            }
            if shutdown.is_triggered() {
                return;
            }
        }
    }

    /// Tries to take the lease every [`acquire_interval`] until it is this process's (its
    /// local deadline returned) or the shutdown (`None`).
    async fn stand_by(&self, shutdown: &Shutdown, health: Option<&Health>) -> Option<Instant> {
        let interval = acquire_interval(self.lease.ttl());
        let mut wait = interval;
        loop {
            if shutdown.is_triggered() {
                return None;
            }
            let sent = Instant::now();
            let acquired = tokio::select! {
                acquired = self.lease.acquire() => acquired,
                _ = shutdown.wait() => return None,
            };
            self.standing().tried = true;
            match acquired {
                Ok(Acquisition::Held { previous }) => {
                    self.ledger_answered();
                    self.taken(previous);
                    return Some(sent + self.lease.ttl());
                }
                Ok(Acquisition::Taken { holder }) => {
                    self.ledger_answered();
                    self.standing_by(holder);
                    if let Some(health) = health {
                        health.set_source_connected(true);
                    }
                    wait = interval;
                }
                Err(err) => {
                    self.ledger_failed(&err);
                    wait = (wait * 2).min(MAX_FAILING_WAIT.max(interval));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => return None,
            }
        }
    }

    /// Logs the lease taken (or taken over).
    fn taken(&self, previous: Option<String>) {
        let (name, reader) = (self.lease.name(), self.reader);
        match previous {
            Some(other) if other != self.lease.holder() => tracing::info!(
                reader,
                lease = name,
                previous = %other,
                holder = self.lease.holder(),
                "took over the reader's lease (the previous holder released it or stopped renewing): reading from the checkpoint of record in the ledger"
            ),
            _ => tracing::info!(
                reader,
                lease = name,
                holder = self.lease.holder(),
                ttl_seconds = self.lease.ttl().as_secs_f64(),
                "took the reader's lease: this replica reads"
            ),
        }
    }

    /// A standby saw `holder` hold the lease: logged when it changes.
    fn standing_by(&self, holder: Option<String>) {
        let changed = {
            let mut standing = self.standing();
            let changed = standing.other != holder;
            standing.other = holder.clone();
            changed
        };
        if changed {
            tracing::info!(
                reader = self.reader,
                lease = self.lease.name(),
                holder = holder.as_deref().unwrap_or("-"),
                takeover_within_seconds = takeover_bound(self.lease.ttl()).as_secs_f64(),
                "another replica holds the reader's lease: standing by (ready; this one takes over if it stops renewing)"
            );
        }
    }

    /// Renews every third of the ttl while the reader runs (until aborted); the first renewal
    /// that fails, finds another holder or is late ends the holding ([`ReaderLease::lose`]).
    async fn renew(self: Arc<Self>, mut valid_until: Instant) {
        let ttl = self.lease.ttl();
        loop {
            tokio::time::sleep(ttl / 3).await;
            if !self.is_held() {
                return;
            }
            let sent = Instant::now();
            match tokio::time::timeout_at(valid_until, self.lease.acquire()).await {
                Ok(Ok(Acquisition::Held { .. })) => valid_until = sent + ttl,
                Ok(Ok(Acquisition::Taken { holder })) => {
                    let other = holder.unwrap_or_else(|| "none".to_owned());
                    self.lose(&format!("another replica ({other}) holds it"));
                    return;
                }
                Ok(Err(err)) => {
                    self.metrics.ledger_errors.inc();
                    self.lose(&format!("a renewal failed: {}", cause_chain(&err)));
                    return;
                }
                Err(_) => {
                    self.lose("no renewal answered before the lease would expire");
                    return;
                }
            }
        }
    }

    /// The lease is no longer this process's: the reader stops at once (its stop triggered)
    /// and the process stands by. Once per holding.
    pub fn lose(&self, why: &str) {
        let stop = {
            let mut standing = self.standing();
            if !std::mem::take(&mut standing.held) {
                return;
            }
            standing.stop.clone()
        };
        self.metrics
            .reader_lease_held
            .with_label_values(&[self.reader])
            .set(0);
        self.metrics
            .reader_lease_lost
            .with_label_values(&[self.reader])
            .inc();
        tracing::info!(
            reader = self.reader,
            lease = self.lease.name(),
            reason = why,
            "lost the reader's lease: stopped reading at once (events in flight are left to the next holder, no checkpoint is written); standing by"
        );
        if let Some(stop) = stop {
            stop.trigger();
        }
    }

    /// Saves a checkpoint in the ledger, fenced by the lease: `true` once written; `false`
    /// when the lease is lost (the ledger refused the write: the holding ends) or the holding
    /// ends while the ledger fails.
    pub async fn save_checkpoint(&self, name: &str, value: &str) -> bool {
        let mut wait = Duration::from_millis(200);
        loop {
            let stop = {
                let standing = self.standing();
                match (&standing.stop, standing.held) {
                    (Some(stop), true) => stop.clone(),
                    _ => return false,
                }
            };
            // A write still waiting for the database when the holding ends is dropped: the
            // reader stops at once (the ledger keeps a write only while the lease is live).
            let written = tokio::select! {
                written = self.lease.save_checkpoint(name, value) => written,
                _ = stop.wait() => return false,
            };
            match written {
                Ok(true) => return true,
                Ok(false) => {
                    self.lose("the ledger refused its checkpoint write: the lease is not this replica's any more");
                    return false;
                }
                Err(err) => {
                    self.metrics.ledger_errors.inc();
                    if self.quiet.allow("save") {
                        tracing::warn!(reader = self.reader, error = %cause_chain(&err), "the reader's checkpoint cannot be saved in the ledger; trying again while the lease holds");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.wait() => return false,
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// A clean stop: the lease is given up, so a standby takes over at its next try.
    async fn release(&self) {
        match tokio::time::timeout(RELEASE_PATIENCE, self.lease.release()).await {
            Ok(Ok(_)) => tracing::info!(
                reader = self.reader,
                lease = self.lease.name(),
                "released the reader's lease"
            ),
            Ok(Err(err)) => {
                tracing::warn!(reader = self.reader, error = %cause_chain(&err), "the reader's lease could not be released: a standby takes over once it expires")
            }
            Err(_) => tracing::warn!(
                reader = self.reader,
                "the ledger did not answer the release: a standby takes over once the lease expires"
            ),
        }
    }

    fn ledger_answered(&self) {
        let ledger = self.lease.ledger();
        if ledger.fault().set_ok() {
            self.metrics.ledger_unreachable.set(0);
            tracing::info!(ledger = %ledger.describe(), "ledger answering again; resuming");
        }
    }

    fn ledger_failed(&self, err: &LeaseError) {
        self.metrics.ledger_errors.inc();
        let said = cause_chain(err);
        if self.lease.ledger().fault().set_failing(said.clone()) {
            self.metrics.ledger_unreachable.set(1);
        }
        if self.quiet.allow("acquire") {
            tracing::warn!(reader = self.reader, lease = self.lease.name(), error = %said, "the reader's lease cannot be taken: the ledger fails; trying again with backoff");
        }
    }
}

impl ReadinessProbe for ReaderLease {
    fn notes(&self) -> Vec<String> {
        let standing = self.standing();
        if standing.held {
            return Vec::new();
        }
        let within = takeover_bound(self.lease.ttl()).as_secs_f64();
        vec![match (&standing.other, standing.tried) {
            (_, false) => format!("standby: {} taking its lease", self.reader),
            (Some(other), true) => format!(
                "standby: another replica ({other}) reads {} (lease {}); this one takes over within {within} s if it stops renewing",
                self.reader,
                self.lease.name()
            ),
            (None, true) => format!(
                "standby: {} between holders (lease {})",
                self.reader,
                self.lease.name()
            ),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_takeover_bound_is_the_ttl_and_one_acquire_interval() {
        assert_eq!(acquire_interval(DEFAULT_TTL), Duration::from_secs(5));
        assert_eq!(takeover_bound(DEFAULT_TTL), Duration::from_secs(20));
        assert_eq!(
            acquire_interval(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(
            acquire_interval(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(
            takeover_bound(Duration::from_secs(60)),
            Duration::from_secs(65)
        );
    }
}
