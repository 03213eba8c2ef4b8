//! The learning rate limiter: one bucket model per Auth0 limit class ([`RateClass`]), fed by
//! the tenant's `x-ratelimit-limit` / `-remaining` / `-reset` on every answer, so calls are paced
//! at the rate the tenant actually grants instead of the one an operator guessed.
//!
//! Per class ([`ClassBucket`], a pure state machine on a seconds clock, tested against a plain
//! model of the tenant with calls in flight and several instances) it keeps:
//! - a *mirror* of the tenant's bucket: the first call goes alone, and each answer sets the
//!   mirror from its `x-ratelimit-remaining` less the calls the tenant may have counted since
//!   (those still in flight, and those answered after it left: answers overtake each other),
//!   a quarter of that count at a time (at least one token while the bucket is not known to
//!   be shared), so a burst the tenant still has is spent within a few round trips, no token is
//!   spent twice, and instances that read the same count do not all spend it; by the answer's
//!   `x-ratelimit-reset` the bucket is full again (less what was sent since);
//! - the *refill* this client may spend: a lower bound learned from pairs of answers (the
//!   count's rise plus the calls certainly admitted between them, over the longest time they
//!   can span) and, until the bucket is seen shared (below), from the reset (the bucket
//!   refills `limit - remaining - 1` tokens within it); before anything is learned the mirror
//!   refills only from answers and resets, never at the configured ceiling;
//! - an AIMD *allowance*: cut by 30 % on a 429, raised by 5 % a second while calls succeed, never
//!   above the ceiling (`requests_per_second` as configured, or, with `"auto"`, unbounded);
//! - a *hold* after a 429: until its reset (or `Retry-After`) plus a little jitter, or, with no
//!   usable reset, 1 s doubling to [`NO_HINT_HOLD_CAP`]; a success of the class ends the hold at
//!   once, and waiting calls go on at the limiter's pace (recovery is immediate).
//!
//! The pace is `min(ceiling, allowance, refill × 0.95) × share` (share: `auto_share` with
//! `"auto"`, else 1). Several instances sharing one tenant each read the same headers. The
//! refill each learns from pairs of answers is what the others leave (their calls lower the
//! count between two of its answers). Once a 429, or a count that fell by more than this
//! client's calls explain, shows the bucket is shared, an instance stops trusting the reset (it
//! bounds the tenant's whole refill), paces at 90 % of what it learned, lets that grow only while
//! the bucket is seen at least half full, and follows a fall at once; after a 429's hold the
//! first call waits a random part of the spacing (holds that end at the same epoch second do not
//! fire together): no static "divide by N".

use std::collections::VecDeque;
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
/// The share of the learned refill paced at while the bucket is shared.
const SHARED_MARGIN: f64 = 0.9;
/// The share of the tenant's count the mirror takes at once (at least one token while the
/// bucket is not known to be shared).
const SHARED_SURPLUS: f64 = 0.25;
/// How fast the learned refill may grow while the bucket is shared, per second.
const SHARED_GROWTH_PER_SECOND: f64 = 0.08;
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

/// One answer the tenant admitted: when its call left, when the answer came, what remained.
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent: f64,
    received: f64,
    remaining: u32,
}

/// How many admitted answers a class keeps to learn its refill from.
const SAMPLES: usize = 64;

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
    /// The refill available to this client, requests per second: a lower bound (see `learn`).
    refill: Option<f64>,
    /// The reset's lower bound of the refill is trusted: it bounds the tenant's whole refill,
    /// which is this client's only while no other consumer spends it (a 429 says one may).
    trust_reset: bool,
    /// Another consumer spends this bucket: the tenant's count fell by more than this
    /// client's calls explain (or a 429 came). The mirror then only follows the tenant's
    /// count down; it fills at this client's pace.
    shared: bool,
    /// When the refill was last learned.
    last_learned: f64,
    /// The last admitted answers (oldest first).
    samples: VecDeque<Sample>,
    /// The last send's number, and the newest send whose answer set the mirror (older answers
    /// are stale).
    next_seq: u64,
    synced_seq: u64,
    /// Calls sent and not answered yet: the tenant may not have counted them in `remaining`.
    in_flight: u32,
    /// The answer that last set the mirror: when its call left, and the count it stated.
    synced: Option<(f64, u32)>,
    /// Calls sent since the mirror was last set from an answer (those in flight then included).
    sent_since_sync: u64,
    /// When the tenant said its bucket is full again (`x-ratelimit-reset`), if nothing is spent.
    full_at: Option<f64>,
    /// When the last call left.
    last_sent: f64,
    /// When the last answers (of any kind) came, oldest first.
    answered_at: VecDeque<f64>,
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
            // One call first: its answer says what the bucket holds.
            tokens: 1.0,
            last: now,
            ceiling_tokens: f64::from(settings.initial_burst.max(1)),
            allowance,
            last_increase: now,
            refill: None,
            trust_reset: true,
            shared: false,
            last_learned: now,
            samples: VecDeque::with_capacity(SAMPLES),
            next_seq: 0,
            synced_seq: 0,
            in_flight: 0,
            synced: None,
            sent_since_sync: 0,
            full_at: None,
            last_sent: f64::NEG_INFINITY,
            answered_at: VecDeque::with_capacity(SAMPLES),
            held_until: f64::NEG_INFINITY,
            strikes: 0,
            rate_limited: 0,
        }
    }

    /// The pace calls are sent at when the bucket is empty, requests per second.
    pub fn pace(&self) -> f64 {
        self.refill_rate().max(MIN_RATE)
    }

    /// How fast the mirror refills: the learned refill (with a margin), the AIMD allowance and
    /// the ceiling, times the share. Zero while the tenant stated its bucket but not yet how
    /// fast it refills: then only its answers and its reset refill the mirror.
    fn refill_rate(&self) -> f64 {
        let learned = match self.refill {
            Some(refill) if self.shared => self.allowance.min(refill * SHARED_MARGIN),
            Some(refill) => self.allowance.min(refill * REFILL_MARGIN),
            // Something will: the reset, or an answer still in flight.
            None if self.limit.is_some() && (self.full_at.is_some() || self.in_flight > 0) => {
                return 0.0
            }
            None => self.allowance,
        };
        learned.min(self.settings.ceiling) * self.settings.share
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

    pub fn held_until(&self) -> f64 {
        self.held_until
    }

    fn ceiling_rate(&self) -> f64 {
        self.settings.ceiling * self.settings.share
    }

    fn bring_up_to(&mut self, now: f64) {
        if now > self.last {
            let elapsed = now - self.last;
            self.tokens = (self.tokens + elapsed * self.refill_rate()).min(self.capacity());
            self.ceiling_tokens = (self.ceiling_tokens + elapsed * self.ceiling_rate())
                .min(f64::from(self.settings.initial_burst.max(1)));
            self.last = now;
        }
        if let Some(at) = self.full_at.filter(|at| now >= *at) {
            // The tenant's bucket is full by its reset, less what was spent since it said so.
            let full = self.capacity() - self.sent_since_sync as f64;
            self.tokens = self.tokens.max(full).min(self.capacity());
            self.full_at = None;
            self.last = self.last.max(at);
        }
    }

    /// Takes a token for one call at `now` (its send's number), or says how long to wait
    /// before asking again.
    pub fn try_acquire(&mut self, now: f64) -> Result<u64, f64> {
        if now < self.held_until {
            return Err(self.held_until - now);
        }
        self.bring_up_to(now);
        if self.ceiling_tokens < 1.0 {
            return Err(((1.0 - self.ceiling_tokens) / self.ceiling_rate()).max(0.001));
        }
        // Nothing learned, nothing in flight and a long reset: one call every so often asks
        // again (the limit may have come back before the reset).
        let probe = self.refill.is_none()
            && self.in_flight == 0
            && self.full_at.is_some()
            && now - self.last_sent >= NO_HINT_HOLD_CAP;
        if self.tokens >= 1.0 || probe {
            self.tokens = (self.tokens - 1.0).max(0.0);
            self.last_sent = now;
            self.ceiling_tokens -= 1.0;
            self.next_seq += 1;
            self.in_flight = self.in_flight.saturating_add(1);
            self.sent_since_sync += 1;
            Ok(self.next_seq)
        } else {
            let rate = self.refill_rate();
            let by_rate = if rate > 0.0 {
                (1.0 - self.tokens) / rate
            } else {
                f64::INFINITY
            };
            let by_reset = self.full_at.map_or(f64::INFINITY, |at| at - now);
            let by_probe = if self.refill.is_none() && self.in_flight == 0 && self.full_at.is_some()
            {
                self.last_sent + NO_HINT_HOLD_CAP - now
            } else {
                f64::INFINITY
            };
            let wait = by_rate.min(by_reset).min(by_probe);
            // Nothing refills the mirror but an answer still in flight: look again soon.
            Err(if wait.is_finite() { wait } else { 0.05 }.max(0.001))
        }
    }

    /// A call sent as `seq` at `sent` got no answer the tenant counted (a transport error, or
    /// the caller gave up): it is no longer in flight.
    pub fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// An answer came at `now` (whatever it said): remembered for [`Self::overtaken`].
    fn heard(&mut self, now: f64) {
        if self.answered_at.len() == SAMPLES {
            self.answered_at.pop_front();
        }
        self.answered_at.push_back(now);
    }

    /// The calls the tenant may have counted after a call sent at `sent`, so its `remaining`
    /// does not: those still in flight, and those answered since it left (answers overtake
    /// each other on separate connections).
    fn overtaken(&self, sent: f64) -> u64 {
        let answered = self.answered_at.iter().filter(|at| **at > sent).count();
        u64::from(self.in_flight) + answered as u64
    }

    /// The most calls of this client the tenant may have counted since it counted a call
    /// sent at `sent`, the call being answered now included (`None`: too many to tell).
    fn counted_since(&self, sent: f64) -> Option<u64> {
        let complete = self.answered_at.len() < SAMPLES
            || self.answered_at.front().is_some_and(|at| *at <= sent);
        complete.then(|| self.overtaken(sent) + 1)
    }

    /// Another consumer spends this bucket: the reset bounds the tenant's refill, not this
    /// client's, and the samples taken before may count what others no longer leave.
    fn seen_shared(&mut self) {
        if !self.shared {
            self.samples.clear();
        }
        self.trust_reset = false;
        self.shared = true;
    }

    /// A call of this class sent as `seq` at `sent` was answered (not 429) at `now`.
    pub fn on_answer(&mut self, now: f64, observation: Observation, seq: u64, sent: f64) {
        self.release();
        self.strikes = 0;
        if self.held_until > now {
            // The tenant accepts calls again: the waiting ones go on at the limiter's pace.
            self.held_until = now;
            self.last = self.last.min(now);
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
            self.heard(now);
            return;
        };
        self.remaining = Some(remaining);
        self.bring_up_to(now);
        if seq >= self.synced_seq {
            self.synced_seq = seq;
            // The count fell by more than this client's calls can explain: another consumer
            // spends the bucket.
            if let Some((sent_before, told_before)) = self.synced {
                if self.counted_since(sent_before).is_some_and(|mine| {
                    i64::from(told_before) - i64::from(remaining) > mine as i64 + 1
                }) {
                    self.seen_shared();
                }
            }
            self.synced = Some((sent, remaining));
            // The tenant's count, less the calls it may have counted since (counting one it
            // counted before only leaves a token unspent).
            let overtaken = self.overtaken(sent);
            let told = (f64::from(remaining) - overtaken as f64).clamp(0.0, self.capacity());
            self.tokens = if self.shared {
                // Others read the same count: take a share of what it says is left.
                self.tokens.max(told * SHARED_SURPLUS).min(told)
            } else {
                // Others may read the same count (instances that start together do, before
                // anything shows the bucket is shared): take a share of it, at least one
                // token; the next answers, a round trip later, give the rest.
                self.tokens
                    .max(told * SHARED_SURPLUS)
                    .max(told.min(1.0))
                    .min(told)
            };
            self.sent_since_sync = overtaken;
            // Full by the reset only if nobody else spends it.
            self.full_at = observation
                .reset_in
                .filter(|_| !self.shared)
                .map(|reset_in| now + reset_in);
        }
        self.heard(now);
        self.learn(now, sent, remaining, observation.reset_in);
    }

    /// Learns a lower bound of the refill this client can spend from the admitted answers.
    ///
    /// Between two answers i and j, the tenant's count went from `r_i` to `r_j` (each floored,
    /// so by more than `r_j - r_i - 1`) while at least `n` calls it admitted were spent: the
    /// call j and those certainly handled between the two (sent after i's answer came,
    /// answered before j left). That took at most from i's send to j's answer, so the refill
    /// is at least `(r_j - r_i - 1 + n) / (received_j - sent_i)`; a bucket that was full for a
    /// while, calls of other classes and other consumers only make it a lower one (what
    /// others spend is not this client's to spend). The reset gives another bound while no
    /// other consumer is suspected: the bucket is full by the reset, so it refills more than
    /// `limit - remaining - 1` tokens within the reset plus the call's round trip.
    fn learn(&mut self, now: f64, sent: f64, remaining: u32, reset_in: Option<f64>) {
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        let j = Sample {
            sent,
            received: now,
            remaining,
        };
        self.samples.push_back(j);
        let mut best: f64 = 0.0;
        for i in self.samples.iter().filter(|i| i.received <= j.sent) {
            let between = self
                .samples
                .iter()
                .filter(|k| k.sent >= i.received && k.received <= j.sent)
                .count();
            let refilled =
                f64::from(j.remaining) - f64::from(i.remaining) - 1.0 + (between + 1) as f64;
            let window = j.received - i.sent;
            if window > 0.0 {
                best = best.max(refilled / window);
            }
        }
        if let (true, Some(limit), Some(reset_in)) = (self.trust_reset, self.limit, reset_in) {
            if remaining.saturating_add(1) < limit {
                let bound = f64::from(limit - remaining - 1) / (reset_in + (now - sent)).max(0.001);
                best = best.max(bound);
            }
        }
        let seconds = (now - self.last_learned).clamp(0.0, 10.0);
        self.last_learned = now;
        if !(best > 0.0 && best.is_finite()) {
            return;
        }
        self.refill = Some(match self.refill {
            Some(old) if self.shared => {
                let plenty = self.limit.is_some_and(|limit| remaining * 2 >= limit);
                if plenty {
                    // The bucket fills: the consumers together leave tokens unspent.
                    old.max(best) * (1.0 + SHARED_GROWTH_PER_SECOND * seconds)
                } else {
                    // What others leave grows while one of them holds back after a 429:
                    // follow a fall at once, a rise slowly (they come back).
                    best.min(old * (1.0 + SHARED_GROWTH_PER_SECOND / 4.0 * seconds))
                }
            }
            _ => best,
        });
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
        // 429s that come while the class is held answer calls that were in flight together
        // (one burst): they are one congestion signal, and cut the pace once. Cutting per 429
        // took ten simultaneous 429s to 0.7^10 of the pace, the floor, for minutes.
        let fresh = now >= self.held_until;
        self.heard(now);
        if let Some(limit) = observation.limit {
            self.limit = Some(limit);
        }
        self.remaining = Some(0);
        self.bring_up_to(now);
        self.tokens = 0.0;
        self.full_at = None;
        // Someone else may spend this bucket: the reset bounds the tenant's refill, not ours,
        // and the samples taken before may count what others no longer leave.
        self.seen_shared();
        self.samples.clear();
        // Multiplicative decrease, from the pace in force (not from an allowance above it).
        // Before a refill is learned, the mirror refills only from answers and resets (a pace
        // of zero): the allowance is then the pace in force, and the cut is from it (cutting
        // from zero would leave the class at the floor pace for minutes: a 429 another class
        // caused on a bucket they share, say).
        if fresh {
            let in_force = match self.refill_rate() {
                rate if rate > 0.0 => rate / self.settings.share.max(0.001),
                _ => self.allowance,
            };
            self.allowance = (in_force * DECREASE).max(MIN_RATE);
            if let Some(refill) = self.refill.as_mut() {
                *refill = (*refill * DECREASE).max(MIN_RATE);
            }
        }
        self.last_increase = now;
        let hold = match hint {
            Some(wait) => {
                self.strikes = 0;
                wait
            }
            None => {
                if fresh || self.strikes == 0 {
                    self.strikes = self.strikes.saturating_add(1);
                }
                (2f64.powi(self.strikes.min(8) as i32 - 1)).min(NO_HINT_HOLD_CAP)
            }
        } + jitter.clamp(0.0, 1.0) * HOLD_JITTER;
        self.held_until = self.held_until.max(now + hold);
        // Nothing accrues during the hold, and the first call after it waits a random part of
        // this client's spacing: instances held by the same reset (an epoch second) do not
        // all fire the moment it ends.
        self.tokens = 1.0 - jitter.clamp(0.0, 1.0);
        self.last = self.held_until;
        hold
    }
}

/// Every class's bucket, shared by the client's tasks, and the metrics they publish.
pub(crate) struct LearningLimiter {
    buckets: Vec<Mutex<ClassBucket>>,
    /// Wakes a class's waiting calls when its hold ends early.
    wake: Vec<tokio::sync::Notify>,
    origin: tokio::time::Instant,
}

/// A call the limiter let go: in flight until answered (see [`LearningLimiter::answered`]) or
/// dropped (a transport error, a 429, a caller that gave up), so the mirror counts it against
/// the tenant's `remaining` meanwhile.
pub(crate) struct InFlight<'a> {
    limiter: &'a LearningLimiter,
    class: RateClass,
    seq: u64,
    sent: f64,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.bucket(self.class).release();
        }
    }
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
        }
    }

    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn bucket(&self, class: RateClass) -> std::sync::MutexGuard<'_, ClassBucket> {
        lock(&self.buckets[class.index()])
    }

    /// Waits for a token of `class`; the call is in flight until the returned ticket is
    /// answered or dropped.
    pub(crate) async fn until_ready(&self, class: RateClass, metrics: &Metrics) -> InFlight<'_> {
        let started = tokio::time::Instant::now();
        let seq = loop {
            let woken = self.wake[class.index()].notified();
            let acquired = self.bucket(class).try_acquire(self.now());
            match acquired {
                Ok(seq) => break seq,
                Err(secs) => {
                    let wait = Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(1));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = woken => {}
                    }
                }
            }
        };
        let waited = started.elapsed().as_secs_f64();
        if waited > 0.0 {
            metrics
                .mgmt_class_wait
                .with_label_values(&[class.as_str()])
                .inc_by(waited);
        }
        InFlight {
            limiter: self,
            class,
            seq,
            sent: self.now(),
            done: false,
        }
    }

    /// The call `ticket` was answered with a status other than 429; `admitted`: the answer
    /// carries the bucket's count (the tenant admitted it).
    pub(crate) fn answered(
        &self,
        mut ticket: InFlight<'_>,
        headers: &HeaderMap,
        admitted: bool,
        metrics: &Metrics,
    ) {
        ticket.done = true;
        let class = ticket.class;
        let mut observation = Observation::from_headers(headers);
        if !admitted {
            observation.remaining = None;
        }
        let now = self.now();
        let wake = {
            let mut bucket = self.bucket(class);
            let was_held = bucket.held_until() > now;
            bucket.on_answer(now, observation, ticket.seq, ticket.sent);
            self.publish(class, &bucket, metrics);
            was_held || bucket.tokens >= 1.0
        };
        // The hold ended, or the tenant's count refilled the mirror: the waiting calls go on.
        if wake {
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

    /// A deterministic source of numbers in [0, 1).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// What happens next in the model, at a time.
    enum Event {
        /// A waiting call of (instance, slot) asks its limiter again (stale if `generation`
        /// is not the slot's).
        Try(usize, usize, u64),
        /// A call reaches the tenant.
        Arrive(usize, usize, u64, f64),
        /// Its answer reaches the client.
        Answer(usize, usize, u64, f64, Answer),
    }

    /// `instances` clients, each with `slots` calls always waiting (as the assigner's batches
    /// do), against one tenant, with 0.5-5 ms each way: returns (429 share, admitted calls as
    /// a share of the tenant's limit: its burst plus its rate over `seconds`).
    fn run_shared(
        rate: f64,
        burst: u32,
        settings: ClassSettings,
        instances: usize,
        slots: usize,
        seconds: f64,
    ) -> (f64, f64) {
        let run = simulate(rate, burst, settings, instances, slots, None, seconds, 7);
        (
            run.share_429,
            run.admitted as f64 / (f64::from(burst) + rate * seconds),
        )
    }

    /// What a model run measured.
    struct Run {
        share_429: f64,
        admitted: u64,
        /// When the last call was admitted (with fixed work: when all of it was done).
        end: f64,
    }

    /// The assign bench's cell in the model: `instances` clients, each with `users` calls
    /// to make, all waiting from the start, against one tenant; returns (429 share,
    /// throughput: admitted calls over the tenant's burst plus its rate until all are done).
    fn run_work(
        rate: f64,
        burst: u32,
        settings: ClassSettings,
        instances: usize,
        users: usize,
        seed: u64,
    ) -> (f64, f64) {
        let run = simulate(
            rate,
            burst,
            settings,
            instances,
            16,
            Some(users),
            3600.0,
            seed,
        );
        (
            run.share_429,
            run.admitted as f64 / (f64::from(burst) + rate * run.end),
        )
    }

    /// The model's event loop: with `work`, each slot makes one call and is done once it is
    /// admitted; without, slots call again at once, until `seconds`.
    #[allow(clippy::too_many_arguments)]
    fn simulate(
        rate: f64,
        burst: u32,
        settings: ClassSettings,
        instances: usize,
        slots: usize,
        work: Option<usize>,
        seconds: f64,
        seed: u64,
    ) -> Run {
        let mut tenant = Tenant::new(rate, burst);
        let mut buckets: Vec<ClassBucket> = (0..instances)
            .map(|_| ClassBucket::new(settings, 0.0))
            .collect();
        let mut generation = vec![vec![0u64; slots]; instances];
        let mut queue: Vec<(f64, u64, Event)> = Vec::new();
        let mut order = 0u64;
        fn push(queue: &mut Vec<(f64, u64, Event)>, order: &mut u64, at: f64, event: Event) {
            *order += 1;
            queue.push((at, *order, event));
        }
        let mut busy = vec![vec![false; slots]; instances];
        for instance in 0..instances {
            for slot in 0..slots {
                push(&mut queue, &mut order, 0.0, Event::Try(instance, slot, 0));
            }
        }
        let mut random = Lcg(seed);
        if seed != 7 {
            // Another phase of the tenant's clock against the second.
            tenant.epoch += random.next();
        }
        let (mut admitted, mut limited) = (0u64, 0u64);
        let mut end = 0.0;
        // With fixed work: the calls each instance still has to make (admitted ones are done).
        let mut todo = vec![work.unwrap_or(usize::MAX); instances];
        let mut flying = vec![0usize; instances];
        // The earliest event each time (ties in the order they were made).
        while let Some(next) = (0..queue.len()).min_by(|a, b| {
            (queue[*a].0, queue[*a].1)
                .partial_cmp(&(queue[*b].0, queue[*b].1))
                .unwrap_or(std::cmp::Ordering::Equal)
        }) {
            let (now, _, event) = queue.swap_remove(next);
            if now >= seconds || todo.iter().all(|t| *t == 0) {
                break;
            }
            match event {
                Event::Try(i, slot, g) => {
                    if g != generation[i][slot] || todo[i] <= flying[i] {
                        continue;
                    }
                    match buckets[i].try_acquire(now) {
                        Ok(seq) => {
                            busy[i][slot] = true;
                            flying[i] += 1;
                            let latency = 0.0005 + 0.0045 * random.next();
                            push(
                                &mut queue,
                                &mut order,
                                now + latency,
                                Event::Arrive(i, slot, seq, now),
                            );
                        }
                        Err(wait) => {
                            push(&mut queue, &mut order, now + wait, Event::Try(i, slot, g))
                        }
                    }
                }
                Event::Arrive(i, slot, seq, sent) => {
                    let answer = tenant.call(now);
                    let latency = 0.0005 + 0.0045 * random.next();
                    let answer = match answer {
                        Answer::Admitted(mut o) => {
                            o.reset_in = o.reset_in.map(|r| (r - latency).max(0.0));
                            Answer::Admitted(o)
                        }
                        Answer::Limited(mut o, _) => {
                            o.reset_in = o.reset_in.map(|r| (r - latency).max(0.0));
                            let hint = o.reset_in.unwrap_or(0.0).max(1.0);
                            Answer::Limited(o, hint)
                        }
                    };
                    push(
                        &mut queue,
                        &mut order,
                        now + latency,
                        Event::Answer(i, slot, seq, sent, answer),
                    );
                }
                Event::Answer(i, slot, seq, sent, answer) => {
                    flying[i] -= 1;
                    match answer {
                        Answer::Admitted(observation) => {
                            admitted += 1;
                            end = now;
                            buckets[i].on_answer(now, observation, seq, sent);
                            todo[i] = todo[i].saturating_sub(1);
                        }
                        Answer::Limited(observation, hint) => {
                            limited += 1;
                            buckets[i].release();
                            let jitter = random.next();
                            buckets[i].on_rate_limited(now, observation, Some(hint), jitter);
                        }
                    }
                    // The answering slot goes on, and the waiting ones look again (the
                    // limiter wakes them).
                    busy[i][slot] = false;
                    for s in 0..slots {
                        if !busy[i][s] && todo[i] > flying[i] {
                            generation[i][s] += 1;
                            let g = generation[i][s];
                            push(&mut queue, &mut order, now, Event::Try(i, s, g));
                        }
                    }
                }
            }
        }
        Run {
            share_429: limited as f64 / (admitted + limited).max(1) as f64,
            admitted,
            end,
        }
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

    /// The assign bench's grid in the model: each bucket at 0.5x, 1x, 2x, 10x and `auto`,
    /// one call at a time and 16 at once (the assigner's batches), and three instances at
    /// `auto` with 16 calls each sharing one tenant.
    #[test]
    fn the_model_grid_stays_within_the_goals() {
        let mut misses = Vec::new();
        for (rate, burst) in [(2.0, 2), (2.5, 10), (16.0, 50)] {
            let mut cells: Vec<(f64, usize, usize)> = Vec::new();
            for factor in [0.5, 1.0, 2.0, 10.0, 0.0] {
                cells.push((factor, 1, 1));
                cells.push((factor, 1, 16));
            }
            cells.push((0.0, 3, 16));
            for (factor, instances, slots) in cells {
                let settings = if factor == 0.0 {
                    auto()
                } else {
                    fixed(rate * factor, burst)
                };
                let (share_429, throughput) =
                    run_shared(rate, burst, settings, instances, slots, 300.0);
                let line = format!(
                    "{rate}/s burst {burst} at {}, {instances} x {slots} at once: 429 share {share_429:.4}, throughput {throughput:.3}",
                    if factor == 0.0 { "auto".to_owned() } else { format!("{factor}x") }
                );
                println!("{line}");
                let ok = if factor == 0.5 {
                    share_429 == 0.0 && throughput <= 0.55
                } else if instances > 1 && burst == 2 {
                    // Not the goal at 2/s, burst 2 (see docs/performance.md): a guard against
                    // going back.
                    share_429 <= 0.05 && throughput >= 0.8
                } else if instances > 1 {
                    share_429 <= 0.01 && throughput >= 0.99
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

    /// The assign bench's three-instance cell in the model: each bucket, three instances at
    /// `auto`, the users of 30 s (and 300 s) of the tenant's rate split among them, all
    /// waiting from the start, over several phases of the tenant's clock and latencies.
    #[test]
    fn three_instances_share_a_bucket_fairly() {
        let mut misses = Vec::new();
        for (rate, burst) in [(2.0, 2), (2.5, 10), (16.0, 50)] {
            for seconds in [30.0, 300.0] {
                let users = ((f64::from(burst) + rate * seconds) / 3.0).ceil() as usize;
                let (mut limited, mut throughput, mut worst) = (0.0, 0.0, 1.0f64);
                let seeds = 10;
                for seed in 0..seeds {
                    let (share, through) = run_work(rate, burst, auto(), 3, users, 100 + seed);
                    limited += share;
                    throughput += through;
                    worst = worst.min(through);
                }
                let (limited, throughput) = (limited / seeds as f64, throughput / seeds as f64);
                let line = format!(
                    "{rate}/s burst {burst}, 3 instances at auto, {users} users each ({seconds} s): 429 share {limited:.4}, throughput {throughput:.3} (worst {worst:.3})"
                );
                println!("{line}");
                // What is achieved (see docs/performance.md), a guard against going back: the
                // goal (1 %, 0.9) is met by the 150/min and 16/s buckets over 300 s; the first
                // seconds, while the instances find out that they share the bucket, cost the
                // 30-s cells a few percent; 2/s with a burst of 2 misses it.
                let (most_429, least_throughput) = match (burst, seconds < 100.0) {
                    (2, true) => (0.125, 0.55),
                    (2, false) => (0.035, 0.68),
                    (_, true) => (0.045, 0.95),
                    (_, false) => (0.01, 0.99),
                };
                if !(limited <= most_429 && throughput >= least_throughput) {
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
        bucket.on_answer(6.0, none, 1, 5.9);
        assert!(bucket.held_until() <= 6.0);
    }

    #[test]
    fn a_429_before_any_refill_is_learned_cuts_from_the_pace_in_force_not_from_zero() {
        // The first call's answer states the bucket (2, one left, full in 1 s) but no refill
        // yet; the next call, still in flight as the limiter sees it, meets a 429 (another
        // class spent the bucket they share).
        let mut bucket = ClassBucket::new(fixed(4.0, 2), 0.0);
        let first = bucket.try_acquire(0.0).unwrap_or_default();
        let stated = Observation {
            limit: Some(2),
            remaining: Some(1),
            reset_in: Some(1.0),
        };
        bucket.on_answer(0.1, stated, first, 0.0);
        assert!(bucket.try_acquire(0.2).is_ok(), "the one left is spent");
        let hold = bucket.on_rate_limited(0.5, stated, Some(1.0), 0.0);
        bucket.release();
        assert!(
            bucket.pace() >= 4.0 * DECREASE * 0.99,
            "cut from the configured 4/s: {}",
            bucket.pace()
        );
        // After the hold, calls go at that pace: at least 4 within the next 3 s.
        let mut sent = 0;
        let mut now = 0.5 + hold;
        while now < 3.5 + hold {
            if let Ok(seq) = bucket.try_acquire(now) {
                sent += 1;
                bucket.on_answer(now + 0.01, stated, seq, now);
            }
            now += 0.01;
        }
        assert!(sent >= 4, "{sent} calls in 3 s after the hold");
    }

    #[test]
    fn simultaneous_429s_of_one_burst_cut_the_pace_once() {
        // Ten calls left together; the tenant answers all ten 429 within a millisecond.
        let mut bucket = ClassBucket::new(fixed(50.0, 20), 0.0);
        let first = bucket.try_acquire(0.0).unwrap_or_default();
        let stated = Observation {
            limit: Some(20),
            remaining: Some(19),
            reset_in: Some(1.0),
        };
        bucket.on_answer(0.01, stated, first, 0.0);
        // As many leave as the mirror lets (the rest of the ten went on other connections:
        // their 429s come all the same).
        let mut sent = 0;
        while sent < 10 && bucket.try_acquire(0.02).is_ok() {
            sent += 1;
        }
        assert!(sent >= 1);
        // Nothing learned yet: the pace in force is the configured 50/s.
        let before = 50.0;
        let limited = Observation {
            limit: Some(20),
            remaining: Some(0),
            reset_in: Some(1.0),
        };
        for i in 0..10 {
            bucket.on_rate_limited(0.03 + f64::from(i) * 0.0001, limited, Some(1.0), 0.0);
            bucket.release();
        }
        assert!(
            bucket.pace() >= before * DECREASE * 0.99,
            "one cut: {} from {before}/s",
            bucket.pace()
        );
    }

    proptest! {
        /// Calls in flight are counted against an answer's `remaining`: right after it, no
        /// more calls go than it says minus those still in flight, and until its reset never
        /// more than the whole bucket.
        #[test]
        fn calls_in_flight_are_counted_against_remaining(
            limit in 2u32..60,
            in_flight in 1u32..20,
            remaining in 0u32..60,
            reset_in in 0.5f64..10.0,
        ) {
            let remaining = remaining.min(limit - 1);
            let mut bucket = ClassBucket::new(fixed(1000.0, limit), 0.0);
            let first = bucket.try_acquire(0.0);
            prop_assert!(first.is_ok());
            let full = Observation { limit: Some(limit), remaining: Some(limit - 1), reset_in: Some(0.01) };
            bucket.on_answer(0.001, full, 1, 0.0);
            // `in_flight` calls leave (as many as the mirror lets), then the first answers.
            let mut sent = Vec::new();
            for _ in 0..in_flight {
                if let Ok(seq) = bucket.try_acquire(0.002) { sent.push(seq); }
            }
            prop_assert!(!sent.is_empty());
            let answer = Observation { limit: Some(limit), remaining: Some(remaining), reset_in: Some(reset_in) };
            bucket.on_answer(0.003, answer, sent[0], 0.002);
            let still = sent.len() as u32 - 1;
            let mut now_sent = 0u32;
            while bucket.try_acquire(0.003).is_ok() { now_sent += 1; }
            prop_assert!(now_sent <= remaining.saturating_sub(still), "{now_sent} sent with {remaining} remaining and {still} in flight");
            let mut later = now_sent;
            let mut now = 0.003;
            while now < 0.003 + reset_in - 0.01 {
                now += 0.01;
                while bucket.try_acquire(now).is_ok() { later += 1; }
            }
            prop_assert!(later <= limit, "{later} sent before the reset of a bucket of {limit}");
        }

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
                        bucket.on_answer(now, observation, seq, now - dt / 2.0);
                        prop_assert!(bucket.held_until() <= now);
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
