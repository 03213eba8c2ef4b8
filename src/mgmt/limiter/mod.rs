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
//!   be shared and the count has one for each of [`ASSUMED_CONSUMERS`]), so a burst the tenant still has is spent within a few round trips, no token is
//!   spent twice, and instances that read the same count do not all spend it: a raise counts
//!   [`ASSUMED_CONSUMERS`] times this client's calls in flight (others that read the same
//!   count may have as many), and only an answer to a call sent after the last raise raises
//!   the mirror again (one quarter per round trip, not per answer); by the answer's
//!   `x-ratelimit-reset` the bucket is full again (less what was sent since);
//! - the *refill* this client may spend: a lower bound learned from pairs of answers (the
//!   count's rise plus the calls certainly admitted between them, over the longest time they
//!   can span) and, until the bucket is seen shared (below), from the reset (the bucket
//!   refills `limit - remaining - 1` tokens within it: the whole tenant's refill, so in a
//!   bucket of 4 or more, where pairs of answers find a lone client's full refill within
//!   seconds, only a third of it: instances that start together then do not each take all
//!   of it); before anything is learned the mirror refills only from answers and resets,
//!   never at the configured ceiling;
//! - an AIMD *allowance*: cut by 30 % on a 429, raised by 5 % a second while calls succeed, never
//!   above the ceiling (`requests_per_second` as configured, or, with `"auto"`, unbounded);
//! - a *hold* after a 429: until its reset (or `Retry-After`) plus a little jitter, or, with no
//!   usable reset, 1 s doubling to [`NO_HINT_HOLD_CAP`]; a success of the class ends the hold at
//!   once, and waiting calls go on at the limiter's pace (recovery is immediate).
//!
//! The pace is `min(ceiling, allowance, refill × 0.95) × share` (share: `auto_share` with
//! `"auto"`, else 1). Several instances sharing one tenant each read the same headers. The
//! refill each learns from pairs of answers is what the others leave (their calls lower the
//! count between two of its answers). Once a 429, or a count lower than this client's calls
//! and the tenant's refill since the previous answer explain (the refill's lower bound from
//! the resets: others' calls hide behind it), shows the bucket is shared, an instance stops
//! trusting the reset (it
//! bounds the tenant's whole refill) and paces at 90 % of what it learned; in a bucket of 10 or
//! more its mirror leaves a reserve (a tenth) that instances meet at instead of a 429, and its
//! refill is raised additively (2 % of the tenant's refill a second) above the reserve and cut
//! by 15 % at it, so instances converge to equal parts (AIMD on the count, not on 429s); in a
//! smaller one it grows only while the bucket is seen at least half full and follows a fall
//! at once; until its part is learned it paces at a third of the tenant's refill (a bucket of
//! 4 or more), not at the initial pace; after a 429's hold the
//! first call waits a random part of the spacing (holds that end at the same epoch second do not
//! fire together): no static "divide by N".

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

use super::{header_seconds, lock};
use crate::metrics::Metrics;

mod class;
pub use class::RateClass;

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
/// bucket is not known to be shared and the count has one for each of [`ASSUMED_CONSUMERS`]).
const SHARED_SURPLUS: f64 = 0.25;
/// The share of a shared bucket left unspent by the mirror's raises, in buckets of
/// [`RESERVE_FROM`] or more (1 of Essentials' 10, 5 of Enterprise's 50).
const SHARED_RESERVE: f64 = 0.1;
const RESERVE_FROM: u32 = 10;
/// A shared bucket's refill: cut at the reserve, raised by this share of the tenant's
/// whole refill per second above it.
const SHARED_CUT: f64 = 0.85;
const SHARED_RAISE_PER_SECOND: f64 = 0.02;
/// How many consumers a raise of the mirror assumes read the same count, each with as many
/// calls in flight as this client.
const ASSUMED_CONSUMERS: u64 = 3;
/// The smallest bucket in which the reset's bound is shared among [`ASSUMED_CONSUMERS`].
const SHARE_RESET_FROM: u32 = 4;
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
    /// When a shared bucket's count at its reserve last cut the refill.
    last_cut: f64,
    /// The last admitted answers (oldest first).
    samples: VecDeque<Sample>,
    /// The last send's number, and the newest send whose answer set the mirror (older answers
    /// are stale).
    next_seq: u64,
    synced_seq: u64,
    /// Calls sent and not answered yet: the tenant may not have counted them in `remaining`.
    in_flight: u32,
    /// The answer that last set the mirror: when its call left, when it came, and the count it
    /// stated.
    synced: Option<(f64, f64, u32)>,
    /// A lower bound of the tenant's whole refill (all consumers'), from its resets: the
    /// bucket is full by the reset.
    tenant_refill: f64,
    /// Calls sent since the mirror was last set from an answer (those in flight then included).
    sent_since_sync: u64,
    /// When the tenant said its bucket is full again (`x-ratelimit-reset`), if nothing is spent.
    full_at: Option<f64>,
    /// When the last call left.
    last_sent: f64,
    /// When an answer last raised the mirror: only answers to calls sent after it raise it
    /// again.
    raised_at: f64,
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
            last_cut: f64::NEG_INFINITY,
            samples: VecDeque::with_capacity(SAMPLES),
            next_seq: 0,
            synced_seq: 0,
            in_flight: 0,
            synced: None,
            tenant_refill: 0.0,
            sent_since_sync: 0,
            full_at: None,
            last_sent: f64::NEG_INFINITY,
            raised_at: f64::NEG_INFINITY,
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
            // Shared before this client learned its part: a third of the tenant's refill
            // (its reset's bound), not the initial pace.
            None if self.shared
                && self.tenant_refill > 0.0
                && self.limit.is_some_and(|limit| limit >= SHARE_RESET_FROM) =>
            {
                self.allowance
                    .min(self.tenant_refill * SHARED_MARGIN / ASSUMED_CONSUMERS as f64)
            }
            None => self.allowance,
        };
        learned.min(self.settings.ceiling) * self.settings.share
    }

    /// The tokens of a shared bucket (of [`RESERVE_FROM`] or more) its mirror leaves
    /// unspent: instances that read the same count meet there, not at a 429.
    fn reserve(&self) -> f64 {
        match self.limit {
            Some(limit) if limit >= RESERVE_FROM => (f64::from(limit) * SHARED_RESERVE).floor(),
            _ => 0.0,
        }
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
            if let Some((sent_before, received_before, told_before)) = self.synced {
                // Less the tenant's refill between the two counts (at least the reset's bound
                // over the least time between them): others' calls hide behind the refill.
                // Alone, the bucket holds at least `expected - mine` (the earlier count was
                // floored, the refill is a lower bound), so its floored count is more than
                // `expected - mine - 1`: a count short by one whole call is proof of another
                // consumer (a single call of theirs is often enough, not two).
                let refilled = self.tenant_refill * (sent - received_before).max(0.0);
                let expected = (f64::from(told_before) + refilled)
                    .min(f64::from(self.limit.unwrap_or(u32::MAX)));
                if self
                    .counted_since(sent_before)
                    .is_some_and(|mine| expected - f64::from(remaining) >= mine as f64 + 1.0)
                {
                    self.seen_shared();
                }
            }
            self.synced = Some((sent, now, remaining));
            // The tenant's count, less the calls it may have counted since (counting one it
            // counted before only leaves a token unspent).
            let overtaken = self.overtaken(sent);
            let told = (f64::from(remaining) - overtaken as f64).clamp(0.0, self.capacity());
            let before = self.tokens;
            // Others that read the same counts may have as many calls in flight as this
            // client: a raise counts them too.
            let spare = (f64::from(remaining) - (ASSUMED_CONSUMERS * overtaken) as f64)
                .clamp(0.0, self.capacity());
            self.tokens = if sent < self.raised_at {
                // The count predates what this client took at its last raise (and what
                // others took from the same count): it may only lower the mirror. One raise
                // per round trip: instances that read the same counts spend at most a
                // quarter each per round, not a quarter per answer.
                self.tokens.min(told)
            } else if self.shared {
                // Others read the same count: take a share of what it says is left.
                let reserve = self.reserve();
                let told = (told - reserve).max(0.0);
                let spare = (spare - reserve).max(0.0);
                self.tokens.max(spare * SHARED_SURPLUS).min(told)
            } else {
                // Others may read the same count (instances that start together do, before
                // anything shows the bucket is shared): take a share of it, at least one
                // token while the count has one for each of them (near the bottom of a
                // bucket of 4 or more, instances that each took one of the last two met
                // 429s at every start); the next answers, a round trip later, give the rest.
                let least = if told < ASSUMED_CONSUMERS as f64
                    && self.limit.is_some_and(|limit| limit >= SHARE_RESET_FROM)
                {
                    0.0
                } else {
                    told.min(1.0)
                };
                self.tokens.max(spare * SHARED_SURPLUS).max(least).min(told)
            };
            if self.tokens > before {
                self.raised_at = now;
            }
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
        if let (Some(limit), Some(reset_in)) = (self.limit, reset_in) {
            if remaining.saturating_add(1) < limit {
                let bound = f64::from(limit - remaining - 1) / (reset_in + (now - sent)).max(0.001);
                self.tenant_refill = self.tenant_refill.max(bound);
                if self.trust_reset {
                    // The whole tenant's refill, which other consumers that started with this
                    // one may share: in a bucket big enough for the pairs of answers to learn
                    // a lone client's full refill within seconds, only a share of it. In a
                    // smaller one (Free's 2) the reset is all there is to learn from.
                    let consumers = if limit >= SHARE_RESET_FROM {
                        ASSUMED_CONSUMERS as f64
                    } else {
                        1.0
                    };
                    best = best.max(bound / consumers);
                }
            }
        }
        let seconds = (now - self.last_learned).clamp(0.0, 10.0);
        self.last_learned = now;
        if !(best > 0.0 && best.is_finite()) {
            return;
        }
        let reserve = self.reserve();
        self.refill = Some(match self.refill {
            Some(old) if self.shared && reserve > 0.0 && self.tenant_refill > 0.0 => {
                // A shared bucket with a reserve (10 or more): additive increase while the
                // count is above the reserve, multiplicative decrease (once a second) at it,
                // so instances converge to equal parts (each raises by the same amount, the
                // larger part is cut more) without a 429 as the signal.
                if f64::from(remaining) <= reserve {
                    if now - self.last_cut >= 1.0 {
                        self.last_cut = now;
                        old * SHARED_CUT
                    } else {
                        old
                    }
                } else {
                    (old + SHARED_RAISE_PER_SECOND * self.tenant_refill * seconds)
                        .min(self.tenant_refill)
                }
            }
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
mod tests;
