//! When a source takes messages, stops for a moment, pauses and resumes.
//!
//! [`Intake::update_waiting`] is the pause every source shares (SQS, the Events API): pause at
//! once when full, backlogged or the tenant failing, resume at half. The Kafka consumer goes
//! through [`Intake::step`] instead, which puts a short stop ([`ShortStop`]) before a pause for
//! fullness: a Kafka pause throws away what librdkafka prefetched (see [`SHORT_STOP_GRACE`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Why intake is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// `max_inflight` messages are being processed.
    Full,
    /// Management API calls are failing; events wait instead of piling up.
    TenantFailing,
    /// [`crate::pipeline::PROCESSING_MAX`] events are in process (waiting for the tenant's
    /// rate, the ledger, their grants' commit) with the messages queued behind an earlier one
    /// of their user, or [`crate::mgmt::WAITING_MAX`] with every message not begun: taking
    /// more would only hold them in memory.
    Backlogged,
    /// Shutting down: nothing new is taken.
    ShuttingDown,
}

impl PauseReason {
    fn as_str(self) -> &'static str {
        match self {
            PauseReason::Full => "in-flight limit reached",
            PauseReason::TenantFailing => "Management API failing",
            PauseReason::Backlogged => "events wait for the tenant or the ledger",
            PauseReason::ShuttingDown => "shutting down",
        }
    }
}

/// What a source holds when its intake decides: `inflight` messages taken and not finished,
/// `in_process` events being processed ([`crate::pipeline::Pipeline::waiting`]: waiting for a
/// read, the ledger, a role write or their grants' commit, each holding its path), `queued`
/// messages not begun (holding only their decoded events), and `blocked` of those queued
/// behind an earlier message of their user.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IntakeLoad {
    pub inflight: usize,
    pub in_process: usize,
    pub queued: usize,
    pub blocked: usize,
}

/// How long the Kafka consumer stays in a short stop before it pauses its partitions: 1 s.
///
/// A pause of librdkafka (`rd_kafka_toppar_pause_resume`) drops every message it prefetched
/// for the partition (up to `queued.max.messages.kbytes`, 16 MB) and fetches them again on
/// resuming: on a busy broker that refetch costs more than the wait it avoids (the consume
/// bench's rounds followed their pauses of 10–100 ms each: 2 / 5 / 1 pauses, ratios
/// 0.84 / 0.78 / 0.96). Not reading the consumer keeps the prefetch (librdkafka stops fetching
/// once its queue is full), so a moment's fullness only stops reading. The consumer then serves
/// no callback (rebalance, commit): 1 s delays a rebalance by at most that, well under
/// `session.timeout.ms` (45 s by default) and `max.poll.interval.ms` (300 s), and is ten times
/// the longest of the bench's pauses, so a full pipeline that is moving never pauses. A
/// backlog that lasts longer (a slow tenant or ledger) pauses as before, and the partitions
/// are paused while the consumer is read again (heartbeats, rebalances served at once).
pub const SHORT_STOP_GRACE: Duration = Duration::from_secs(1);

/// The Kafka consumer's short stop: since when intake has been full without pausing, and how
/// many such stops began (the exit log counts them).
#[derive(Debug, Clone)]
pub struct ShortStop {
    grace: Duration,
    since: Option<Instant>,
    stops: u64,
}

impl Default for ShortStop {
    fn default() -> Self {
        ShortStop::with_grace(SHORT_STOP_GRACE)
    }
}

impl ShortStop {
    pub fn with_grace(grace: Duration) -> ShortStop {
        ShortStop {
            grace,
            since: None,
            stops: 0,
        }
    }

    /// Short stops begun so far.
    pub fn stops(&self) -> u64 {
        self.stops
    }

    /// Whether intake is stopped short now (full, not paused yet).
    pub fn is_stopped(&self) -> bool {
        self.since.is_some()
    }
}

/// What [`Intake::step`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeStep {
    /// Read the next message (`false`: stopped short; while paused the consumer is still read,
    /// to serve the group: this is `true` then, and a paused partition yields nothing).
    pub receive: bool,
    /// The pause changed (`Some(true)`: pause the partitions, `Some(false)`: resume them).
    pub changed: Option<bool>,
}

/// When intake pauses and resumes: pause at `max_inflight`, while the tenant fails, or while
/// [`crate::pipeline::PROCESSING_MAX`] events are in process (waiting for the tenant or the
/// ledger) or [`crate::mgmt::WAITING_MAX`] wait with the messages queued behind their user;
/// resume at half of each once the tenant answers. Each change is logged once.
pub struct Intake {
    max_inflight: usize,
    resume_below: usize,
    paused: AtomicBool,
}

impl Intake {
    pub fn new(max_inflight: usize) -> Intake {
        Intake {
            max_inflight,
            resume_below: max_inflight / 2,
            paused: AtomicBool::new(false),
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Decides with `inflight` messages in flight and the tenant failing or not. Returns the
    /// new state (`true`: paused) when it changed.
    pub fn update(&self, inflight: usize, tenant_failing: bool) -> Option<bool> {
        self.update_waiting(inflight, 0, 0, 0, tenant_failing)
    }

    /// Why intake must not take more with `load` (the tenant aside): `max_inflight` messages,
    /// or [`crate::pipeline::PROCESSING_MAX`] events in process and blocked together (both
    /// grow while the tenant or the ledger is slower than the broker), or
    /// [`crate::mgmt::WAITING_MAX`] in process and queued (the tasks spawned and not polled
    /// yet, which a busy runtime catches up with, count only here), whatever `max_inflight`
    /// allows, so a tenant or a ledger slower than the broker bounds the memory of the events
    /// held.
    fn full(&self, load: IntakeLoad) -> Option<PauseReason> {
        let held = load.in_process + load.blocked.min(load.queued);
        let waiting = load.in_process + load.queued;
        if held >= crate::pipeline::PROCESSING_MAX || waiting >= crate::mgmt::WAITING_MAX {
            Some(PauseReason::Backlogged)
        } else if load.inflight >= self.max_inflight {
            Some(PauseReason::Full)
        } else {
            None
        }
    }

    /// Whether half of each limit of [`Intake::full`] is left: a pause may end.
    fn caught_up(&self, load: IntakeLoad) -> bool {
        let held = load.in_process + load.blocked.min(load.queued);
        let waiting = load.in_process + load.queued;
        load.inflight <= self.resume_below
            && held <= crate::pipeline::PROCESSING_MAX / 2
            && waiting <= crate::mgmt::WAITING_MAX / 2
    }

    /// [`Intake::update`], with `in_process`, `queued` and `blocked` as in [`IntakeLoad`]:
    /// pauses at once when [full](Intake::full) or the tenant fails, resumes once half of each
    /// limit is left and the tenant answers.
    pub fn update_waiting(
        &self,
        inflight: usize,
        in_process: usize,
        queued: usize,
        blocked: usize,
        tenant_failing: bool,
    ) -> Option<bool> {
        let load = IntakeLoad {
            inflight,
            in_process,
            queued,
            blocked,
        };
        if !self.is_paused() {
            let reason = if tenant_failing {
                Some(PauseReason::TenantFailing)
            } else {
                self.full(load)
            };
            reason.map(|reason| {
                self.set(true, reason.as_str());
                true
            })
        } else if self.caught_up(load) && !tenant_failing {
            self.set(false, "caught up");
            Some(false)
        } else {
            None
        }
    }

    /// The Kafka consumer's decision at `now`, with a short stop before a pause for fullness.
    ///
    /// Invariants (checked against a plain model in `tests::step_follows_its_model`):
    /// - nothing is received while [full](Intake::full) or while the tenant fails: either
    ///   `receive` is `false` (stopped short) or intake is paused;
    /// - not paused, the tenant failing pauses at once (as does [`Intake::stop`] at shutdown);
    /// - not paused, fullness stops short first: it pauses only once full without a break
    ///   for `stop`'s grace (since the first step that found it full); a step that finds room
    ///   again ends the stop and receives (no hysteresis: a stop throws nothing away);
    /// - paused, it resumes exactly when half of each limit is left and the tenant answers
    ///   (as [`Intake::update_waiting`]), and the consumer is read meanwhile (`receive`) to
    ///   serve the group; a pause ends any short stop;
    /// - each pause and resume is logged once ("intake paused", "intake resumed"); a short
    ///   stop is not a pause (a debug log).
    pub fn step(
        &self,
        stop: &mut ShortStop,
        load: IntakeLoad,
        tenant_failing: bool,
        now: Instant,
    ) -> IntakeStep {
        if self.is_paused() {
            stop.since = None;
            let changed = (self.caught_up(load) && !tenant_failing).then(|| {
                self.set(false, "caught up");
                false
            });
            return IntakeStep {
                receive: true,
                changed,
            };
        }
        if tenant_failing {
            stop.since = None;
            self.set(true, PauseReason::TenantFailing.as_str());
            return IntakeStep {
                receive: true,
                changed: Some(true),
            };
        }
        let Some(reason) = self.full(load) else {
            if let Some(since) = stop.since.take() {
                tracing::debug!(
                    seconds = now.saturating_duration_since(since).as_secs_f64(),
                    "intake stopped short: room again, receiving"
                );
            }
            return IntakeStep {
                receive: true,
                changed: None,
            };
        };
        let since = *stop.since.get_or_insert_with(|| {
            stop.stops += 1;
            tracing::debug!(
                reason = reason.as_str(),
                "intake stopped short (not reading; librdkafka keeps its prefetch)"
            );
            now
        });
        if now.saturating_duration_since(since) >= stop.grace {
            stop.since = None;
            self.set(true, reason.as_str());
            IntakeStep {
                receive: true,
                changed: Some(true),
            }
        } else {
            IntakeStep {
                receive: false,
                changed: None,
            }
        }
    }

    /// Pauses for good (shutdown). Returns whether it was running.
    pub fn stop(&self) -> bool {
        let was_paused = self.is_paused();
        self.set(true, PauseReason::ShuttingDown.as_str());
        !was_paused
    }

    fn set(&self, paused: bool, reason: &str) {
        if self.paused.swap(paused, Ordering::SeqCst) != paused {
            if paused {
                tracing::info!(reason, "intake paused");
            } else {
                tracing::info!(reason, "intake resumed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgmt::WAITING_MAX;
    use crate::pipeline::PROCESSING_MAX;

    fn load(inflight: usize, in_process: usize, queued: usize, blocked: usize) -> IntakeLoad {
        IntakeLoad {
            inflight,
            in_process,
            queued,
            blocked,
        }
    }

    #[test]
    fn a_full_intake_stops_short_and_pauses_only_after_the_grace() {
        let intake = Intake::new(10);
        let mut stop = ShortStop::with_grace(Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let step = |receive, changed| IntakeStep { receive, changed };
        assert_eq!(
            intake.step(&mut stop, load(9, 0, 0, 0), false, at(0)),
            step(true, None)
        );
        // Full: not read, not paused.
        assert_eq!(
            intake.step(&mut stop, load(10, 0, 0, 0), false, at(0)),
            step(false, None)
        );
        assert_eq!(
            intake.step(&mut stop, load(10, 0, 0, 0), false, at(999)),
            step(false, None)
        );
        // One slot free: read again at once, the stop's clock starts over.
        assert_eq!(
            intake.step(&mut stop, load(9, 0, 0, 0), false, at(1_000)),
            step(true, None)
        );
        assert_eq!(
            intake.step(&mut stop, load(10, 0, 0, 0), false, at(1_500)),
            step(false, None)
        );
        assert_eq!(stop.stops(), 2);
        // Full for the whole grace: paused (read again, to serve the group), resumed at half.
        assert_eq!(
            intake.step(&mut stop, load(10, 0, 0, 0), false, at(2_500)),
            step(true, Some(true))
        );
        assert!(intake.is_paused() && !stop.is_stopped());
        assert_eq!(
            intake.step(&mut stop, load(6, 0, 0, 0), false, at(2_600)),
            step(true, None)
        );
        assert_eq!(
            intake.step(&mut stop, load(5, 0, 0, 0), false, at(2_700)),
            step(true, Some(false))
        );
        // Backlogged stops short too.
        assert_eq!(
            intake.step(&mut stop, load(0, PROCESSING_MAX, 0, 0), false, at(2_800)),
            step(false, None)
        );
        // The tenant failing pauses at once, short stop or not.
        assert_eq!(
            intake.step(&mut stop, load(0, PROCESSING_MAX, 0, 0), true, at(2_801)),
            step(true, Some(true))
        );
        assert_eq!(
            intake.step(&mut stop, load(0, 0, 0, 0), true, at(2_900)),
            step(true, None)
        );
        assert_eq!(
            intake.step(&mut stop, load(0, 0, 0, 0), false, at(3_000)),
            step(true, Some(false))
        );
        assert!(intake.stop());
        assert_eq!(
            intake.step(&mut stop, load(10, 0, 0, 0), false, at(3_100)),
            step(true, None),
            "stopped for good stays paused"
        );
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        const MAX_INFLIGHT: usize = 10;
        const GRACE_MS: u64 = 1_000;

        /// One decision: the load, the tenant, and the milliseconds since the previous one.
        #[derive(Debug, Clone)]
        struct Input {
            load: IntakeLoad,
            tenant_failing: bool,
            elapsed_ms: u64,
        }

        /// Counts around each limit and its half.
        fn around(limit: usize) -> impl Strategy<Value = usize> {
            prop_oneof![
                Just(0),
                Just(limit / 2),
                Just(limit / 2 + 1),
                Just(limit - 1),
                Just(limit),
                0..=limit + 1,
            ]
        }

        fn input() -> impl Strategy<Value = Input> {
            (
                around(MAX_INFLIGHT),
                around(PROCESSING_MAX),
                around(WAITING_MAX),
                around(PROCESSING_MAX),
                prop::bool::weighted(0.1),
                prop_oneof![Just(0u64), 0..400u64, Just(GRACE_MS)],
            )
                .prop_map(|(inflight, in_process, queued, blocked, failing, ms)| {
                    Input {
                        load: load(inflight, in_process, queued, blocked),
                        tenant_failing: failing,
                        elapsed_ms: ms,
                    }
                })
        }

        /// The reference: the limits written out plainly, and what the consumer does.
        #[derive(Debug, Default)]
        struct Reference {
            paused: bool,
            full_since_ms: Option<u64>,
        }

        impl Reference {
            fn full(l: &IntakeLoad) -> bool {
                l.inflight >= MAX_INFLIGHT
                    || l.in_process + l.blocked.min(l.queued) >= PROCESSING_MAX
                    || l.in_process + l.queued >= WAITING_MAX
            }

            fn half_left(l: &IntakeLoad) -> bool {
                l.inflight <= MAX_INFLIGHT / 2
                    && l.in_process + l.blocked.min(l.queued) <= PROCESSING_MAX / 2
                    && l.in_process + l.queued <= WAITING_MAX / 2
            }

            /// (receive, pause changed).
            fn step(&mut self, i: &Input, now_ms: u64) -> (bool, Option<bool>) {
                if self.paused {
                    self.full_since_ms = None;
                    if Self::half_left(&i.load) && !i.tenant_failing {
                        self.paused = false;
                        return (true, Some(false));
                    }
                    return (true, None);
                }
                if i.tenant_failing {
                    self.paused = true;
                    self.full_since_ms = None;
                    return (true, Some(true));
                }
                if !Self::full(&i.load) {
                    self.full_since_ms = None;
                    return (true, None);
                }
                let since = *self.full_since_ms.get_or_insert(now_ms);
                if now_ms - since >= GRACE_MS {
                    self.paused = true;
                    self.full_since_ms = None;
                    (true, Some(true))
                } else {
                    (false, None)
                }
            }
        }

        proptest! {
            #[test]
            fn step_follows_its_model(inputs in prop::collection::vec(input(), 1..60)) {
                let intake = Intake::new(MAX_INFLIGHT);
                let mut stop = ShortStop::with_grace(Duration::from_millis(GRACE_MS));
                let mut reference = Reference::default();
                let t0 = Instant::now();
                let mut now_ms = 0;
                for (n, i) in inputs.iter().enumerate() {
                    now_ms += i.elapsed_ms;
                    let was_paused = intake.is_paused();
                    let got = intake.step(
                        &mut stop, i.load, i.tenant_failing, t0 + Duration::from_millis(now_ms),
                    );
                    let want = reference.step(i, now_ms);
                    prop_assert_eq!((got.receive, got.changed), want, "step {} {:?}", n, i);
                    prop_assert_eq!(intake.is_paused(), reference.paused);
                    // Never read while full or the tenant failing, unless paused.
                    if got.receive && !intake.is_paused() {
                        prop_assert!(!Reference::full(&i.load) && !i.tenant_failing);
                    }
                    // A pause is never taken back by the step that made it, nor a resume.
                    if let Some(paused) = got.changed {
                        prop_assert_eq!(was_paused, !paused);
                    }
                    prop_assert_eq!(stop.is_stopped(), reference.full_since_ms.is_some());
                }
            }
        }
    }
}
