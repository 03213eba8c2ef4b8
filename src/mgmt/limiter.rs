//! The learning rate limiter: one bucket model per Auth0 limit class ([`RateClass`]), fed by
//! the tenant's `x-ratelimit-limit` / `-remaining` / `-reset` on every answer, so calls are paced
//! at the rate the tenant actually grants instead of the one an operator guessed.
//!
//! Per class ([`ClassBucket`], a pure state machine on a seconds clock, tested against a plain
//! model) it keeps:
//! - a *mirror* of the tenant's bucket: its size is the last `x-ratelimit-limit`, its content is
//!   set from each answer's `x-ratelimit-remaining` minus the calls sent since, and it refills at
//!   the pace below; a call is sent only while the mirror holds a token, so a burst the tenant
//!   still has is spent at once and an empty bucket is never drained further;
//! - the *refill* inferred from how `remaining` recovers between two answers (remaining after
//!   minus remaining before plus the calls admitted in between, over the time between), averaged;
//! - an AIMD *allowance*: cut by 30 % on a 429, raised by 5 % a second while calls succeed, never
//!   above the ceiling (`requests_per_second` as configured, or, with `"auto"`, unbounded);
//! - a *hold* after a 429: until its reset (or `Retry-After`) plus a little jitter, or, with no
//!   usable reset, 1 s doubling to [`NO_HINT_HOLD_CAP`]; a success of the class ends the hold at
//!   once, and waiting calls go on at the limiter's pace (recovery is immediate).
//!
//! The pace is `min(ceiling, allowance, refill × 0.95) × share` (share: `auto_share` with
//! `"auto"`, else 1). Several instances sharing one tenant each read the same headers: the
//! mirror keeps each from spending tokens the tenant says are gone, and the AIMD cut on a 429
//! and slow raise converge to a fair split of the refill (additive increase, multiplicative
//! decrease), with no static "divide by N".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

use super::{header_seconds, lock, Operation};
use crate::metrics::Metrics;

/// The Auth0 limit classes whose buckets the client tracks apart: a 429 holds only its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RateClass {
    /// `POST`/`DELETE /users/{id}/roles`, `POST /roles/{id}/users`.
    RoleWrites,
    /// `GET /roles`, `/users/{id}/roles`, `/roles/{id}/users`.
    RoleReads,
    /// `GET /users/{id}` (Essentials/Professional: Read Users, 40 burst, 500/min).
    UserReads,
    /// Organization member role writes (200/min, burst 20).
    OrganizationMemberRoles,
    /// `GET /logs` (Essentials: 100/min, burst 10).
    Logs,
    /// `POST /oauth/token`.
    Token,
    /// Everything else (clients, jobs, log streams, organization listings).
    Other,
}

impl RateClass {
    pub const ALL: [RateClass; 7] = [
        RateClass::RoleWrites,
        RateClass::RoleReads,
        RateClass::UserReads,
        RateClass::OrganizationMemberRoles,
        RateClass::Logs,
        RateClass::Token,
        RateClass::Other,
    ];

    /// The `class` label of the limiter's metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RateClass::RoleWrites => "role_writes",
            RateClass::RoleReads => "role_reads",
            RateClass::UserReads => "user_reads",
            RateClass::OrganizationMemberRoles => "organization_member_roles",
            RateClass::Logs => "logs",
            RateClass::Token => "token",
            RateClass::Other => "other",
        }
    }

    pub fn of(operation: Operation) -> RateClass {
        match operation {
            Operation::AssignUserRoles
            | Operation::AssignRoleUsers
            | Operation::RemoveUserRoles => RateClass::RoleWrites,
            Operation::GetRoles
            | Operation::GetUserRoles
            | Operation::GetUserEffectiveRoles
            | Operation::GetRoleUsers => RateClass::RoleReads,
            Operation::GetUser => RateClass::UserReads,
            Operation::AssignOrganizationMemberRoles => RateClass::OrganizationMemberRoles,
            Operation::GetLogs => RateClass::Logs,
            Operation::Token => RateClass::Token,
            Operation::GetClient
            | Operation::CreateExportJob
            | Operation::GetJob
            | Operation::GetLogStreams
            | Operation::CreateLogStream
            | Operation::UpdateLogStream
            | Operation::GetLogStream
            | Operation::GetOrganizations
            | Operation::GetOrganizationMembers
            | Operation::SubscribeEvents => RateClass::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The longest hold after a 429 that gave no usable reset (it doubles from 1 s).
pub const NO_HINT_HOLD_CAP: f64 = 8.0;
/// The pace before anything is learned with `"auto"`: Auth0's lowest published rate (Free).
pub const AUTO_INITIAL_RATE: f64 = 2.0;
/// The lowest pace AIMD cuts to.
const MIN_RATE: f64 = 0.05;
/// AIMD: the cut on a 429 and the raise per second of successes.
const DECREASE: f64 = 0.7;
const INCREASE_PER_SECOND: f64 = 0.05;
/// The share of the inferred refill paced at (the rest absorbs rounding of `remaining`).
const REFILL_MARGIN: f64 = 0.95;
/// How fast the refill estimate grows while the tenant's bucket is seen full, per second.
const PROBE_PER_SECOND: f64 = 0.03;
/// Jitter added to a hold, at most.
const HOLD_JITTER: f64 = 0.25;

/// What the tenant said about a class's bucket on one answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// `x-ratelimit-limit`.
    pub limit: Option<u32>,
    /// `x-ratelimit-remaining`.
    pub remaining: Option<u32>,
    /// `x-ratelimit-reset` minus now, in seconds (`None`: absent, garbage or over an hour).
    pub reset_in: Option<f64>,
}

impl Observation {
    pub fn from_headers(headers: &HeaderMap) -> Observation {
        let int = |name: &str| {
            header_seconds(headers, name)
                .filter(|v| (0.0..=f64::from(u32::MAX)).contains(v))
                .map(|v| v as u32)
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Observation {
            limit: int("x-ratelimit-limit").filter(|l| *l > 0),
            remaining: int("x-ratelimit-remaining"),
            reset_in: header_seconds(headers, "x-ratelimit-reset")
                .map(|reset| (reset - now).max(0.0))
                .filter(|secs| *secs <= 3600.0),
        }
    }
}

/// How a class is paced before and beyond what it learns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassSettings {
    /// The most this client sends per second (`f64::INFINITY` with `"auto"`).
    pub ceiling: f64,
    /// The share of the learned rate used (`auto_share`; 1 with a configured number).
    pub share: f64,
    /// The pace before anything is learned.
    pub initial_rate: f64,
    /// The bucket assumed before the tenant states its size.
    pub initial_burst: u32,
}

/// One class's bucket model. Time is seconds on any monotonic clock.
#[derive(Debug, Clone)]
pub struct ClassBucket {
    settings: ClassSettings,
    /// The tenant's bucket size, once stated.
    limit: Option<u32>,
    /// The last stated remaining.
    remaining: Option<u32>,
    /// The mirror's content.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: f64,
    /// The ceiling's own bucket (configured rate, configured burst): the mirror may let the
    /// tenant's burst be spent, never faster than the operator allowed.
    ceiling_tokens: f64,
    /// AIMD allowance.
    allowance: f64,
    /// When the allowance last grew.
    last_increase: f64,
    /// The inferred refill, requests per second.
    refill: Option<f64>,
    /// `refill` is only the reset's lower bound so far (no sample measured).
    seeded: bool,
    /// The observation refill samples start from: (time, remaining, admitted count).
    anchor: Option<(f64, u32, u64)>,
    /// The anchor was taken with the bucket (next to) full.
    full_seen: bool,
    /// The newest send whose answer set the mirror (older answers are stale).
    synced_seq: u64,
    /// No call before this time (a 429's hold).
    held_until: f64,
    /// 429s without a usable reset in a row (the hold doubles).
    strikes: u32,
    /// 429s answered to this class.
    pub rate_limited: u64,
}

impl ClassBucket {
    pub fn new(settings: ClassSettings, now: f64) -> ClassBucket {
        let allowance = settings.initial_rate.min(settings.ceiling).max(MIN_RATE);
        ClassBucket {
            settings,
            limit: None,
            remaining: None,
            tokens: f64::from(settings.initial_burst.max(1)),
            last: now,
            ceiling_tokens: f64::from(settings.initial_burst.max(1)),
            allowance,
            last_increase: now,
            refill: None,
            seeded: false,
            anchor: None,
            full_seen: false,
            synced_seq: 0,
            held_until: f64::NEG_INFINITY,
            strikes: 0,
            rate_limited: 0,
        }
    }

    /// The pace calls are sent at when the bucket is empty, requests per second.
    pub fn pace(&self) -> f64 {
        let learned = self
            .refill
            .map_or(self.allowance, |r| self.allowance.min(r * REFILL_MARGIN));
        (learned.min(self.settings.ceiling) * self.settings.share).max(MIN_RATE)
    }

    /// The mirror's size: the tenant's bucket, or the assumed one.
    fn capacity(&self) -> f64 {
        f64::from(self.limit.unwrap_or(self.settings.initial_burst).max(1))
    }

    pub fn limit(&self) -> Option<u32> {
        self.limit
    }

    pub fn remaining(&self) -> Option<u32> {
        self.remaining
    }

    #[cfg(test)]
    pub fn refill(&self) -> Option<f64> {
        self.refill
    }

    pub fn held_until(&self) -> f64 {
        self.held_until
    }

    fn ceiling_rate(&self) -> f64 {
        self.settings.ceiling * self.settings.share
    }

    fn bring_up_to(&mut self, now: f64) {
        if now > self.last {
            let elapsed = now - self.last;
            self.tokens = (self.tokens + elapsed * self.pace()).min(self.capacity());
            self.ceiling_tokens = (self.ceiling_tokens + elapsed * self.ceiling_rate())
                .min(f64::from(self.settings.initial_burst.max(1)));
            self.last = now;
        }
    }

    /// Takes a token for one call at `now`, or says how long to wait before asking again.
    pub fn try_acquire(&mut self, now: f64) -> Result<(), f64> {
        if now < self.held_until {
            return Err(self.held_until - now);
        }
        self.bring_up_to(now);
        if self.ceiling_tokens < 1.0 {
            return Err(((1.0 - self.ceiling_tokens) / self.ceiling_rate()).max(0.001));
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.ceiling_tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / self.pace()).max(0.001))
        }
    }

    /// A call of this class was answered (not 429) at `now`. `seq` numbers its send among the
    /// client's, `sent_since` counts the calls sent after it, `admitted` the answers accepted by
    /// the tenant so far (this one included).
    pub fn on_answer(
        &mut self,
        now: f64,
        observation: Observation,
        seq: u64,
        sent_since: u64,
        admitted: u64,
    ) {
        self.strikes = 0;
        if self.held_until > now {
            // The tenant accepts calls again: the waiting ones go on at the limiter's pace.
            self.held_until = now;
        }
        if now - self.last_increase >= 1.0 {
            let seconds = (now - self.last_increase).min(10.0);
            self.allowance = (self.allowance * (1.0 + INCREASE_PER_SECOND).powf(seconds))
                .min(self.settings.ceiling);
            // Never far above what the tenant is seen to refill.
            if let Some(refill) = self.refill {
                self.allowance = self.allowance.min(refill * 2.0).max(MIN_RATE);
            }
            self.last_increase = now;
        }
        if let Some(limit) = observation.limit {
            self.limit = Some(limit);
        }
        let Some(remaining) = observation.remaining else {
            return;
        };
        self.remaining = Some(remaining);
        if seq >= self.synced_seq {
            self.synced_seq = seq;
            self.bring_up_to(now);
            // The tenant's count, less what was sent since this call left.
            self.tokens = (f64::from(remaining) - sent_since as f64).clamp(0.0, self.capacity());
        }
        if let (true, Some(limit), Some(reset_in)) = (
            self.refill.is_none() || self.seeded,
            self.limit,
            observation.reset_in,
        ) {
            // Nothing measured yet: the reset (when the bucket is full again, rounded up to
            // the second) gives a lower bound of the refill; the best bound seen is kept.
            if remaining.saturating_add(1) < limit && reset_in > 0.0 {
                let bound = f64::from(limit - remaining - 1) / reset_in.max(1.0);
                if bound > self.refill.unwrap_or(0.0) {
                    self.refill = Some(bound);
                    self.seeded = true;
                }
            }
        }
        self.learn_refill(now, remaining, admitted);
    }

    /// Infers the refill from two observations while the bucket is not full: the tenant's
    /// count went from `r1` to `r2` while `n` calls were admitted, so it refilled
    /// `r2 - r1 + n` tokens.
    fn learn_refill(&mut self, now: f64, remaining: u32, admitted: u64) {
        let limit = self.limit.unwrap_or(u32::MAX);
        // At (or next to) full the bucket may have capped its refill: no sample, but the
        // tenant refills faster than this client spends: probe upwards, a little a second.
        if remaining.saturating_add(1) >= limit {
            if let (Some(refill), Some((t1, _, _))) = (self.refill.as_mut(), self.anchor) {
                *refill *= 1.0 + PROBE_PER_SECOND * (now - t1).min(10.0);
            }
            self.anchor = Some((now, remaining, admitted));
            self.full_seen = true;
            return;
        }
        if self.full_seen {
            // The last anchor was taken at full: a sample from it may hide a capped refill.
            self.full_seen = false;
            self.anchor = Some((now, remaining, admitted));
            return;
        }
        let Some((t1, r1, a1)) = self.anchor else {
            self.anchor = Some((now, remaining, admitted));
            return;
        };
        let window = (3.0 / self.pace()).clamp(1.0, 10.0);
        if now - t1 < window {
            return;
        }
        let refilled = f64::from(remaining) - f64::from(r1) + admitted.saturating_sub(a1) as f64;
        let sample = refilled / (now - t1);
        if sample > 0.0 && sample.is_finite() {
            self.refill = Some(match self.refill {
                Some(old) if !self.seeded => old * 0.5 + sample * 0.5,
                _ => sample,
            });
            self.seeded = false;
        }
        self.anchor = Some((now, remaining, admitted));
    }

    /// A call of this class was answered 429 at `now`; `hint` is the wait the tenant asked for
    /// (`Retry-After`, else the reset), `jitter` in [0, 1). Returns the hold.
    pub fn on_rate_limited(
        &mut self,
        now: f64,
        observation: Observation,
        hint: Option<f64>,
        jitter: f64,
    ) -> f64 {
        self.rate_limited += 1;
        if let Some(limit) = observation.limit {
            self.limit = Some(limit);
        }
        self.remaining = Some(0);
        self.bring_up_to(now);
        self.tokens = 0.0;
        self.anchor = None;
        // Multiplicative decrease, from the pace in force (not from an allowance above it),
        // never below the reset's lower bound of the refill (a bound, not a guess).
        let floor = if self.seeded {
            self.refill.unwrap_or(MIN_RATE)
        } else {
            MIN_RATE
        };
        self.allowance = (self.pace() / self.settings.share.max(0.001) * DECREASE).max(floor);
        if let (false, Some(refill)) = (self.seeded, self.refill.as_mut()) {
            *refill = (*refill * 0.85).max(MIN_RATE);
        }
        self.last_increase = now;
        let hold = match hint {
            Some(wait) => {
                self.strikes = 0;
                wait
            }
            None => {
                self.strikes = self.strikes.saturating_add(1);
                (2f64.powi(self.strikes.min(8) as i32 - 1)).min(NO_HINT_HOLD_CAP)
            }
        } + jitter.clamp(0.0, 1.0) * HOLD_JITTER;
        self.held_until = self.held_until.max(now + hold);
        hold
    }
}

/// Every class's bucket, shared by the client's tasks, and the metrics they publish.
pub(crate) struct LearningLimiter {
    buckets: Vec<Mutex<ClassBucket>>,
    /// Wakes a class's waiting calls when its hold ends early.
    wake: Vec<tokio::sync::Notify>,
    origin: tokio::time::Instant,
    /// Calls sent (all classes).
    sent: AtomicU64,
    /// Answers the tenant admitted (all classes but the token endpoint).
    admitted: AtomicU64,
}

impl LearningLimiter {
    pub(crate) fn new(settings: ClassSettings) -> LearningLimiter {
        let origin = tokio::time::Instant::now();
        LearningLimiter {
            buckets: RateClass::ALL
                .iter()
                .map(|class| {
                    let settings = match class {
                        // The token endpoint is not the Management API's bucket: learned alone.
                        RateClass::Token => ClassSettings {
                            ceiling: f64::INFINITY,
                            share: 1.0,
                            initial_rate: 10.0,
                            initial_burst: 10,
                        },
                        _ => settings,
                    };
                    Mutex::new(ClassBucket::new(settings, 0.0))
                })
                .collect(),
            wake: RateClass::ALL
                .iter()
                .map(|_| tokio::sync::Notify::new())
                .collect(),
            origin,
            sent: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
        }
    }

    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn bucket(&self, class: RateClass) -> std::sync::MutexGuard<'_, ClassBucket> {
        lock(&self.buckets[class.index()])
    }

    /// Waits for a token of `class`; returns the send's sequence number.
    pub(crate) async fn until_ready(&self, class: RateClass, metrics: &Metrics) -> u64 {
        let started = tokio::time::Instant::now();
        loop {
            let woken = self.wake[class.index()].notified();
            let wait = self.bucket(class).try_acquire(self.now());
            match wait {
                Ok(()) => break,
                Err(secs) => {
                    let wait = Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(1));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = woken => {}
                    }
                }
            }
        }
        let waited = started.elapsed().as_secs_f64();
        if waited > 0.0 {
            metrics
                .mgmt_class_wait
                .with_label_values(&[class.as_str()])
                .inc_by(waited);
        }
        self.sent.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A call sent as `seq` was answered with a status other than 429.
    pub(crate) fn answered(
        &self,
        class: RateClass,
        seq: u64,
        headers: &HeaderMap,
        admitted: bool,
        metrics: &Metrics,
    ) {
        let observation = Observation::from_headers(headers);
        let admitted_count = if admitted && class != RateClass::Token {
            self.admitted.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.admitted.load(Ordering::SeqCst)
        };
        let sent_since = self.sent.load(Ordering::SeqCst).saturating_sub(seq);
        let was_held = {
            let mut bucket = self.bucket(class);
            let was_held = bucket.held_until() > self.now();
            bucket.on_answer(self.now(), observation, seq, sent_since, admitted_count);
            self.publish(class, &bucket, metrics);
            was_held
        };
        if was_held {
            self.wake[class.index()].notify_waiters();
        }
    }

    /// A call of `class` was answered 429; `hint` is the wait the tenant asked for. Returns
    /// the hold.
    pub(crate) fn rate_limited(
        &self,
        class: RateClass,
        headers: &HeaderMap,
        hint: Option<Duration>,
        metrics: &Metrics,
    ) -> Duration {
        let observation = Observation::from_headers(headers);
        let jitter = f64::from(rand::random::<u16>()) / f64::from(u16::MAX);
        let mut bucket = self.bucket(class);
        let hold = bucket.on_rate_limited(
            self.now(),
            observation,
            hint.map(|h| h.as_secs_f64()),
            jitter,
        );
        metrics
            .mgmt_class_rate_limited
            .with_label_values(&[class.as_str()])
            .inc();
        self.publish(class, &bucket, metrics);
        Duration::try_from_secs_f64(hold).unwrap_or(Duration::from_secs(1))
    }

    fn publish(&self, class: RateClass, bucket: &ClassBucket, metrics: &Metrics) {
        let label = [class.as_str()];
        if let Some(limit) = bucket.limit() {
            metrics
                .mgmt_class_limit
                .with_label_values(&label)
                .set(i64::from(limit));
        }
        if let Some(remaining) = bucket.remaining() {
            metrics
                .mgmt_class_remaining
                .with_label_values(&label)
                .set(i64::from(remaining));
        }
        metrics
            .mgmt_class_rate
            .with_label_values(&label)
            .set(bucket.pace());
    }

    /// The pace and learned figures of a class (for summaries and tests).
    #[allow(dead_code)]
    pub(crate) fn snapshot(&self, class: RateClass) -> ClassBucket {
        self.bucket(class).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A plain model of the tenant: Auth0's token bucket, with the simulator's headers
    /// (`remaining` floored, `reset` the epoch second the bucket is full again, on a 429 the
    /// second the next token arrives).
    struct Tenant {
        rate: f64,
        burst: u32,
        tokens: f64,
        last: f64,
        /// Epoch seconds at model time 0 (a fraction, as a real clock has).
        epoch: f64,
    }

    enum Answer {
        Admitted(Observation),
        Limited(Observation, f64),
    }

    impl Tenant {
        fn new(rate: f64, burst: u32) -> Tenant {
            Tenant {
                rate,
                burst,
                tokens: f64::from(burst),
                last: 0.0,
                epoch: 1_000_000.37,
            }
        }

        fn call(&mut self, now: f64) -> Answer {
            let cap = f64::from(self.burst);
            self.tokens = (self.tokens + (now - self.last) * self.rate).min(cap);
            self.last = now;
            let epoch_now = self.epoch + now;
            let reset_in = |secs: f64| (epoch_now + secs).ceil() - epoch_now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                Answer::Admitted(Observation {
                    limit: Some(self.burst),
                    remaining: Some(self.tokens.floor() as u32),
                    reset_in: Some(reset_in((cap - self.tokens) / self.rate)),
                })
            } else {
                let next = reset_in((1.0 - self.tokens) / self.rate);
                Answer::Limited(
                    Observation {
                        limit: Some(self.burst),
                        remaining: Some(0),
                        reset_in: Some(next),
                    },
                    next.max(1.0),
                )
            }
        }
    }

    /// Runs a client that always has work for `seconds` against the tenant; returns (429
    /// share, admitted calls per second as a share of the tenant's rate after the burst).
    fn run(rate: f64, burst: u32, settings: ClassSettings, seconds: f64) -> (f64, f64) {
        let mut tenant = Tenant::new(rate, burst);
        let mut bucket = ClassBucket::new(settings, 0.0);
        let (mut now, mut seq, mut admitted, mut limited) = (0.0, 0u64, 0u64, 0u64);
        let mut jitter = 0.5;
        while now < seconds {
            match bucket.try_acquire(now) {
                Err(wait) => now += wait,
                Ok(()) => {
                    seq += 1;
                    match tenant.call(now) {
                        Answer::Admitted(observation) => {
                            admitted += 1;
                            bucket.on_answer(now, observation, seq, 0, admitted);
                        }
                        Answer::Limited(observation, hint) => {
                            limited += 1;
                            jitter = (jitter * 7.3) % 1.0;
                            bucket.on_rate_limited(now, observation, Some(hint), jitter);
                        }
                    }
                }
            }
        }
        let allowed = f64::from(burst) + rate * seconds;
        (
            limited as f64 / (admitted + limited).max(1) as f64,
            admitted as f64 / allowed,
        )
    }

    fn fixed(ceiling: f64, burst: u32) -> ClassSettings {
        ClassSettings {
            ceiling,
            share: 1.0,
            initial_rate: ceiling,
            initial_burst: burst,
        }
    }

    fn auto() -> ClassSettings {
        ClassSettings {
            ceiling: f64::INFINITY,
            share: 1.0,
            initial_rate: AUTO_INITIAL_RATE,
            initial_burst: 2,
        }
    }

    #[test]
    fn the_model_grid_stays_within_the_goals() {
        let mut misses = Vec::new();
        for (rate, burst) in [(2.0, 2), (2.5, 10), (16.0, 50)] {
            for factor in [0.5, 1.0, 2.0, 10.0, 0.0] {
                let settings = if factor == 0.0 {
                    auto()
                } else {
                    fixed(rate * factor, burst)
                };
                let (share_429, throughput) = run(rate, burst, settings, 300.0);
                let line = format!(
                    "{rate}/s burst {burst} at {}: 429 share {share_429:.3}, throughput {throughput:.3}",
                    if factor == 0.0 { "auto".to_owned() } else { format!("{factor}x") }
                );
                println!("{line}");
                let ok = if factor == 0.5 {
                    share_429 == 0.0 && throughput <= 0.55
                } else {
                    share_429 <= 0.01 && throughput >= 0.9
                };
                if !ok {
                    misses.push(line);
                }
            }
        }
        assert!(misses.is_empty(), "{misses:#?}");
    }

    #[test]
    fn a_success_ends_the_hold_of_its_class() {
        let mut bucket = ClassBucket::new(fixed(10.0, 5), 0.0);
        let none = Observation {
            limit: None,
            remaining: None,
            reset_in: None,
        };
        for strike in 0..6 {
            bucket.on_rate_limited(f64::from(strike), none, None, 0.0);
        }
        assert!(bucket.held_until() <= 5.0 + NO_HINT_HOLD_CAP + HOLD_JITTER);
        assert!(bucket.try_acquire(6.0).is_err());
        bucket.on_answer(6.0, none, 1, 0, 1);
        assert!(bucket.held_until() <= 6.0);
    }

    proptest! {
        /// Invariants against any sequence of answers: nothing is sent during a hold; a hold
        /// is never longer than the tenant's wait plus jitter (or the cap without one); the
        /// pace never exceeds the ceiling times the share; the mirror never holds more than
        /// the tenant's bucket.
        #[test]
        fn the_limiter_keeps_its_invariants(
            ceiling in 0.5f64..50.0,
            share in 0.1f64..=1.0,
            steps in proptest::collection::vec((0u8..3, 0.0f64..3.0, 0u32..60, 1u32..60, proptest::option::of(0.0f64..30.0), 0.0f64..1.0), 1..80),
        ) {
            let mut bucket = ClassBucket::new(ClassSettings { ceiling, share, initial_rate: ceiling, initial_burst: 5 }, 0.0);
            let mut now = 0.0;
            let mut seq = 0;
            for (kind, dt, remaining, limit, reset_in, jitter) in steps {
                now += dt;
                let observation = Observation { limit: Some(limit), remaining: Some(remaining.min(limit)), reset_in };
                match kind {
                    0 => {
                        let held = now < bucket.held_until();
                        let acquired = bucket.try_acquire(now);
                        prop_assert!(!(held && acquired.is_ok()));
                        if let Err(wait) = acquired { prop_assert!(wait > 0.0); }
                    }
                    1 => {
                        seq += 1;
                        bucket.on_answer(now, observation, seq, 0, seq);
                        prop_assert!(bucket.held_until() <= now || bucket.refill().is_none());
                        prop_assert!(bucket.tokens <= f64::from(limit) + 1e-9);
                    }
                    _ => {
                        let before = bucket.held_until();
                        let hold = bucket.on_rate_limited(now, observation, reset_in, jitter);
                        let bound = reset_in.unwrap_or(NO_HINT_HOLD_CAP) + HOLD_JITTER;
                        prop_assert!(hold <= bound + 1e-9, "{hold} > {bound}");
                        prop_assert!(bucket.held_until() <= before.max(now + bound) + 1e-9);
                    }
                }
                prop_assert!(bucket.pace() <= (ceiling * share).max(MIN_RATE) + 1e-9);
            }
        }
    }
}
