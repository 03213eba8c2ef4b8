//! The tenant-wide token bucket over Management API calls and the `x-ratelimit-*` /
//! `Retry-After` headers derived from it. Time is `tokio::time::Instant`, so a paused tokio
//! clock drives the refill.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

/// A token bucket: `burst` tokens, refilled continuously at `rate` per second.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: u32,
    tokens: f64,
    last: Instant,
}

/// What the bucket decided about one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Admission {
    /// No limit configured.
    Unlimited,
    /// Allowed; `remaining` whole tokens are left and the bucket is full again after `until_full`.
    Allowed {
        remaining: u32,
        until_full: Duration,
    },
    /// Refused; one token frees up after `until_next`.
    Limited { until_next: Duration },
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: f64, burst: u32, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Changes rate and size and refills the bucket.
    pub(crate) fn reconfigure(&mut self, rate: f64, burst: u32, now: Instant) {
        *self = TokenBucket::new(rate, burst, now);
    }

    /// The configured bucket size (`x-ratelimit-limit`).
    pub(crate) fn burst(&self) -> u32 {
        self.burst
    }

    fn limited(&self) -> bool {
        self.rate > 0.0 && self.rate.is_finite()
    }

    /// Takes one token if there is one.
    pub(crate) fn admit(&mut self, now: Instant) -> Admission {
        if !self.limited() {
            return Admission::Unlimited;
        }
        let capacity = f64::from(self.burst.max(1));
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admission::Allowed {
                remaining: self.tokens.floor() as u32,
                until_full: seconds((capacity - self.tokens) / self.rate),
            }
        } else {
            Admission::Limited {
                until_next: seconds((1.0 - self.tokens) / self.rate),
            }
        }
    }
}

fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

/// The rate-limit headers of one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    pub limit: u32,
    pub remaining: u32,
    /// Epoch seconds.
    pub reset: u64,
    pub retry_after: Option<u64>,
}

/// How 429 headers are written.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeaderStyle {
    pub reset_equals_now: bool,
    pub retry_after: bool,
}

impl RateHeaders {
    /// Headers for `admission`, with `now_epoch` the wall clock in epoch seconds.
    ///
    /// Allowed: reset = when the bucket is full again. Limited: reset = when the next request is
    /// allowed, or now when `reset_equals_now`. Unlimited: a full bucket, reset = now.
    pub(crate) fn for_admission(
        admission: Admission,
        burst: u32,
        now_epoch: f64,
        style: HeaderStyle,
    ) -> RateHeaders {
        let now = now_epoch.floor() as u64;
        let after = |d: Duration| {
            if d.is_zero() {
                now
            } else {
                (now_epoch + d.as_secs_f64()).ceil() as u64
            }
        };
        match admission {
            Admission::Unlimited => RateHeaders {
                limit: burst,
                remaining: burst,
                reset: now,
                retry_after: None,
            },
            Admission::Allowed {
                remaining,
                until_full,
            } => RateHeaders {
                limit: burst,
                remaining,
                reset: after(until_full),
                retry_after: None,
            },
            Admission::Limited { until_next } => RateHeaders {
                limit: burst,
                remaining: 0,
                reset: if style.reset_equals_now {
                    now
                } else {
                    after(until_next)
                },
                retry_after: style
                    .retry_after
                    .then(|| (until_next.as_secs_f64().ceil() as u64).max(1)),
            },
        }
    }

    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(self.limit),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(self.remaining),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(self.reset),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 3, start);
        for expected in [2, 1, 0] {
            match bucket.admit(start) {
                Admission::Allowed { remaining, .. } => assert_eq!(remaining, expected),
                other => panic!("expected allowed, got {other:?}"),
            }
        }
        match bucket.admit(start) {
            Admission::Limited { until_next } => {
                assert!((until_next.as_secs_f64() - 0.5).abs() < 1e-6)
            }
            other => panic!("expected limited, got {other:?}"),
        }
        let later = start + Duration::from_millis(500);
        assert!(matches!(
            bucket.admit(later),
            Admission::Allowed { remaining: 0, .. }
        ));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(0.0, 1, now);
        for _ in 0..100 {
            assert_eq!(bucket.admit(now), Admission::Unlimited);
        }
    }

    #[test]
    fn limited_headers() {
        let admission = Admission::Limited {
            until_next: Duration::from_millis(400),
        };
        let plain = RateHeaders::for_admission(admission, 2, 1000.5, HeaderStyle::default());
        assert_eq!(plain.reset, 1001);
        assert_eq!(plain.retry_after, None);
        let quirky = RateHeaders::for_admission(
            admission,
            2,
            1000.5,
            HeaderStyle {
                reset_equals_now: true,
                retry_after: true,
            },
        );
        assert_eq!(quirky.reset, 1000);
        assert_eq!(quirky.retry_after, Some(1));
    }
}
