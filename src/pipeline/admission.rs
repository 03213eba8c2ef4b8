//! The bound on the events being processed at once, whatever the source and `max_inflight`.
//!
//! An event past the pure stages holds its deep path (several KB: the profile and role reads,
//! the ledger's lookups, the role write, the wait for its grants' commit) until its verdict,
//! and with a ledger most of that time is spent waiting: for the lookup batcher, the reads at
//! the tenant's rate, the write batcher's commit. Only the waits inside the role assigner were
//! counted before, so with `max_inflight = 100000` every message in flight could hold its
//! deep path (833 MB with SQLite on the ledger bench's worst case, against 150 MB without).
//!
//! Invariants:
//! - at most [`PROCESSING_MAX`] events hold their deep path at once: an event past it waits
//!   for room (a few hundred bytes: its decoded item and a small future), never fails, never
//!   dropped, in the order it arrived;
//! - every event that entered (holding room or waiting for it) is counted until its verdict
//!   ([`Admission::in_process`]), and sources pause their intake at [`PROCESSING_MAX`] of them
//!   counted with the messages queued behind an earlier message of their user
//!   ([`crate::source::Intake::update_waiting`]): what waits is bounded by that count, not by
//!   `max_inflight`.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Events holding their deep path at once at most, and the events in process at which sources
/// pause their intake ([`crate::source::Intake::update_waiting`]): a source that pauses
/// rarely makes an event wait for room, and one that does not pause (replay, the webhook) is
/// bounded all the same. 2,000 at about 10 KB each: the ledger bench's worst case within
/// 1.25x of the run without a ledger (docs/ledger.md); a few hundred keep the tenant's rate
/// busy.
pub const PROCESSING_MAX: usize = 2_000;

/// The room of the events being processed, shared by a pipeline and its relabelled copies
/// (the backstop beside the stream's source).
#[derive(Debug)]
pub struct Admission {
    room: Semaphore,
    in_process: AtomicUsize,
}

/// One event's place: counted while it lives, holding room once it has some.
pub struct Admitted<'a> {
    _room: Option<SemaphorePermit<'a>>,
    in_process: &'a AtomicUsize,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.in_process.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// Room for `max` events at once (at least one).
    pub fn new(max: usize) -> Admission {
        Admission {
            room: Semaphore::new(max.max(1)),
            in_process: AtomicUsize::new(0),
        }
    }

    /// Counts the event in, then waits for room (first come, first served).
    pub async fn enter(&self) -> Admitted<'_> {
        self.in_process.fetch_add(1, Ordering::Relaxed);
        // Counted out by its drop, also when the wait for room is dropped (a task aborted).
        let mut admitted = Admitted {
            _room: None,
            in_process: &self.in_process,
        };
        // The semaphore is never closed: `Err` cannot happen, and would only mean no bound.
        admitted._room = self.room.acquire().await.ok();
        admitted
    }

    /// Events counted in now: holding room or waiting for it.
    pub fn in_process(&self) -> usize {
        self.in_process.load(Ordering::Relaxed)
    }

    /// Events holding room now.
    pub fn holding(&self, max: usize) -> usize {
        max.max(1).saturating_sub(self.room.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn past_the_room_events_wait_counted_and_each_gets_in_once_one_leaves() {
        let admission = Arc::new(Admission::new(2));
        let first = admission.enter().await;
        let second = admission.enter().await;
        assert_eq!(admission.in_process(), 2);
        let waiting = {
            let admission = Arc::clone(&admission);
            tokio::spawn(async move {
                let _third = admission.enter().await;
                admission.holding(2)
            })
        };
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no room: the third waits");
        assert_eq!(admission.in_process(), 3, "and is counted meanwhile");
        assert_eq!(admission.holding(2), 2);
        drop(first);
        assert_eq!(waiting.await.ok(), Some(2), "in once the first left");
        assert_eq!(admission.in_process(), 1, "each counted out once");
        drop(second);
        assert_eq!(admission.in_process(), 0);
        assert_eq!(admission.holding(2), 0);
    }
}
