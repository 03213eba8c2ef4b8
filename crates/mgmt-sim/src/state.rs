//! The simulator's shared, lock-protected state: live settings, outage flag, tenant data, issued
//! tokens, the rate-limit bucket and the counters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::http::StatusCode;
use tokio::time::Instant;

use super::config::{Seed, SimConfig};
use super::oauth::TokenStore;
use super::rate_limit::{HeaderStyle, TokenBucket};
use super::stats::SimStats;
use super::tenant::Tenant;

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the state stays
/// usable: every critical section leaves it consistent or unchanged).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned: PoisonError<_>| {
        tracing::warn!("sim: recovering a poisoned lock");
        poisoned.into_inner()
    })
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Mutex<SimConfig>,
    pub down: AtomicBool,
    pub tenant: Mutex<Tenant>,
    pub tokens: Mutex<TokenStore>,
    pub bucket: Mutex<TokenBucket>,
    pub stats: Mutex<SimStats>,
    /// Users-export jobs and their files.
    pub jobs: Mutex<super::jobs::Jobs>,
    /// Snapshots of role memberships behind checkpoint pagination.
    pub listings: Mutex<super::members::Listings>,
    /// The tenant's log streams.
    pub log_streams: Mutex<super::log_streams::LogStreams>,
    /// The tenant's Event Streams.
    pub event_streams: Mutex<super::event_streams::EventStreams>,
    /// The Events API (`GET /api/v2/events`).
    pub events_api: super::events_api::EventsApiState,
    /// The tenant's logs (`GET /api/v2/logs`).
    pub tenant_logs: Mutex<super::tenant_logs::TenantLogs>,
    /// Organizations, their members and member roles.
    pub organizations: Mutex<super::organizations::Organizations>,
    /// The bucket of organization member role writes (their own at Auth0).
    pub organization_bucket: Mutex<TokenBucket>,
}

/// The settings a request needs, copied out of the config lock.
#[derive(Clone, Debug)]
pub(crate) struct Knobs {
    pub credentials_revoked: bool,
    pub denied_scopes: Vec<String>,
    pub garbage_rate_limit_headers: Option<String>,
    pub cut_body_rate: f64,
    pub latency_ms: u64,
    pub error_rate: f64,
    pub header_style: HeaderStyle,
    pub accept_any_user: bool,
    pub unknown_role_status: StatusCode,
}

impl Shared {
    pub(crate) fn new(config: SimConfig, seed: Seed) -> Self {
        let bucket = TokenBucket::new(config.rate_per_second, config.burst, Instant::now());
        let organization_bucket = TokenBucket::new(
            config.organization_roles_per_minute / 60.0,
            config.organization_roles_burst,
            Instant::now(),
        );
        Shared {
            down: AtomicBool::new(false),
            tenant: Mutex::new(Tenant::from_seed(seed)),
            tokens: Mutex::new(TokenStore::default()),
            bucket: Mutex::new(bucket),
            stats: Mutex::new(SimStats::default()),
            jobs: Mutex::new(Default::default()),
            listings: Mutex::new(Default::default()),
            log_streams: Mutex::new(Default::default()),
            event_streams: Mutex::new(Default::default()),
            events_api: Default::default(),
            tenant_logs: Mutex::new(Default::default()),
            organizations: Mutex::new(Default::default()),
            organization_bucket: Mutex::new(organization_bucket),
            config: Mutex::new(config),
        }
    }

    pub(crate) fn knobs(&self) -> Knobs {
        let config = lock(&self.config);
        Knobs {
            credentials_revoked: config.credentials_revoked,
            denied_scopes: config.denied_scopes.clone(),
            garbage_rate_limit_headers: config.garbage_rate_limit_headers.clone(),
            cut_body_rate: config.cut_body_rate,
            latency_ms: config.latency_ms,
            error_rate: config.error_rate,
            header_style: HeaderStyle {
                reset_equals_now: config.reset_equals_now,
                retry_after: config.retry_after,
            },
            accept_any_user: config.accept_any_user,
            unknown_role_status: StatusCode::from_u16(config.nonexistent_role_status)
                .unwrap_or(StatusCode::NOT_FOUND),
        }
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Applies `update` to the counters.
    pub(crate) fn count(&self, update: impl FnOnce(&mut SimStats)) {
        update(&mut lock(&self.stats));
    }
}
