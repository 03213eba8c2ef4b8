//! The limiter's model tests: each class bucket against a token-bucket tenant with Auth0's
//! headers (one instance, calls in flight, several instances sharing a bucket), and its
//! invariants under random operation sequences.

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
                    Err(wait) => push(&mut queue, &mut order, now + wait, Event::Try(i, slot, g)),
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
            // Several instances: the mean of ten phases of the tenant's clock and latencies
            // (one run of 300 s measured from 0.65 % to 1.30 % of 429s at 150/min between
            // two limiters whose mean is the same).
            let (share_429, throughput) = if instances > 1 {
                let runs: Vec<(f64, f64)> = (0..10)
                    .map(|seed| {
                        let run = simulate(
                            rate,
                            burst,
                            settings,
                            instances,
                            slots,
                            None,
                            300.0,
                            200 + seed,
                        );
                        (
                            run.share_429,
                            run.admitted as f64 / (f64::from(burst) + rate * 300.0),
                        )
                    })
                    .collect();
                (
                    runs.iter().map(|r| r.0).sum::<f64>() / 10.0,
                    runs.iter().map(|r| r.1).sum::<f64>() / 10.0,
                )
            } else {
                run_shared(rate, burst, settings, instances, slots, 300.0)
            };
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
                share_429 <= 0.05 && throughput >= 0.75
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
                "{rate}/s burst {burst}, 3 instances at auto, {users} users each ({seconds} s): 429 share {limited:.5}, throughput {throughput:.3} (worst {worst:.3})"
            );
            println!("{line}");
            // What is achieved (see docs/performance.md), a guard against going back: in a
            // bucket of 10 or 50, no 429 in any 30-s phase (at most one in 5,000 calls over
            // 300 s) and every phase's throughput within the goal, by a shared bucket's
            // reserve and its refill's additive raise and multiplicative cut (before them:
            // 0.78 % of 429s at 150/min; the reserve alone starved one instance to 0.67);
            // 2/s with a burst of 2 misses the goal (three first calls against two tokens,
            // and no reserve fits in 2).
            let (most_429, least_throughput) = match (burst, seconds < 100.0) {
                (2, true) => (0.125, 0.55),
                (2, false) => (0.035, 0.68),
                (_, true) => (0.0, 0.95),
                (_, false) => (0.0002, 0.99),
            };
            let worst_floor = if burst == 2 { 0.0 } else { least_throughput };
            if !(limited <= most_429 && throughput >= least_throughput && worst >= worst_floor) {
                misses.push(line);
            }
        }
    }
    assert!(misses.is_empty(), "{misses:#?}");
}

/// Instances that start together read the same counts: near the bottom of a bucket of 4 or
/// more they do not each spend one of its last tokens (three instances starting together met
/// a 429 at every start of the assign bench's 150/min cell), and with a token for each of
/// them each still takes one.
#[test]
fn instances_reading_the_last_tokens_do_not_each_take_one() {
    let spent = |remaining: u32| -> usize {
        (0..ASSUMED_CONSUMERS)
            .map(|_| {
                let mut bucket = ClassBucket::new(auto(), 0.0);
                let Ok(seq) = bucket.try_acquire(0.0) else {
                    panic!("the first call goes alone at once")
                };
                let told = Observation {
                    limit: Some(10),
                    remaining: Some(remaining),
                    reset_in: Some(4.0),
                };
                bucket.on_answer(0.01, told, seq, 0.0);
                std::iter::from_fn(|| bucket.try_acquire(0.011).ok()).count()
            })
            .sum()
    };
    assert!(spent(2) <= 2, "{} calls for the last 2 tokens", spent(2));
    assert_eq!(spent(3), 3, "one token for each of three instances");
    assert!(spent(9) >= 3, "a lone instance's burst is spent at once");
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
