//! Keeps the events of one key (a user id) in arrival order while other keys run in parallel.
//!
//! `enter` is called in arrival order (by the single task reading the source); it returns a
//! `Turn` whose `wait` completes once every earlier turn of the same keys finished. A lock alone
//! would not do: tasks reach a lock in whatever order the runtime schedules them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The chain of turns per key. Entries are removed when their last turn finishes.
#[derive(Default)]
pub struct Sequencer {
    inner: Mutex<Chains>,
    /// Turns entered whose `wait` has not completed yet (queued behind an earlier turn of a
    /// key, or not yet polled): the work a source holds without it running.
    queued: AtomicUsize,
    /// Of those, the turns entered behind an unfinished earlier turn of one of their keys
    /// (a message waiting for its user's earlier one), not merely not polled yet.
    blocked: AtomicUsize,
}

/// Invariants (under the lock): `last` names, per key, the latest turn entered that has not
/// ended (a turn ending removes the keys it is still the last of); `gates` holds a gate only
/// for a turn that has not ended and that a later turn waits behind. A turn nobody waits
/// behind (the usual case: one event of a user in flight) costs no gate.
#[derive(Default)]
struct Chains {
    next_id: u64,
    /// The id of the last turn entered per key.
    last: HashMap<String, u64>,
    /// The gates of turns that later turns wait behind, by turn id: made by the first turn
    /// that waits, opened and removed when the turn ends.
    gates: HashMap<u64, Arc<Gate>>,
}

/// Opened once when its turn ends; turns behind it wait for that.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    opened: Notify,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::Release);
        self.opened.notify_waiters();
    }

    /// Completes once the gate is open (cancel-safe).
    async fn wait(&self) {
        loop {
            // Registered before the check: an `open` in between still wakes it.
            let opened = self.opened.notified();
            if self.open.load(Ordering::Acquire) {
                return;
            }
            opened.await;
        }
    }
}

/// One unit of work's place in the chains of its keys. Dropping it (finished, failed or
/// cancelled) lets the next turn of each key go.
pub struct Turn {
    sequencer: Arc<Sequencer>,
    id: u64,
    keys: Vec<String>,
    /// The gates of the earlier turns still to wait for.
    waits: Vec<Arc<Gate>>,
    /// Still counted in the sequencer's `queued` (until `wait` completes or the turn drops).
    queued: bool,
    /// Still counted in the sequencer's `blocked`.
    blocked: bool,
}

impl Sequencer {
    /// Takes a place behind the earlier turns of `keys` (duplicates are fine).
    pub fn enter<I, S>(self: &Arc<Self>, keys: I) -> Turn
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        keys.sort();
        keys.dedup();
        let mut waits = Vec::new();
        let mut chains = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        chains.next_id += 1;
        let id = chains.next_id;
        let Chains { last, gates, .. } = &mut *chains;
        for key in &keys {
            let earlier = match last.get_mut(key) {
                Some(last) => Some(std::mem::replace(last, id)),
                None => {
                    last.insert(key.clone(), id);
                    None
                }
            };
            if let Some(earlier) = earlier {
                waits.push(Arc::clone(gates.entry(earlier).or_default()));
            }
        }
        drop(chains);
        self.queued.fetch_add(1, Ordering::Relaxed);
        let blocked = !waits.is_empty();
        if blocked {
            self.blocked.fetch_add(1, Ordering::Relaxed);
        }
        Turn {
            sequencer: Arc::clone(self),
            id,
            keys,
            waits,
            queued: true,
            blocked,
        }
    }

    /// Turns entered and not yet begun: the work held behind earlier turns of the same keys
    /// (sources count it with the assignments waiting for the tenant, and pause their intake
    /// when it grows: see [`super::Intake::update_waiting`]).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Turns queued behind an unfinished earlier turn of one of their keys when they entered
    /// (a part of [`Sequencer::queued`]: the others are only not polled yet, which a busy
    /// runtime catches up with on its own).
    pub fn blocked(&self) -> usize {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Keys with a turn queued or running.
    pub fn active_keys(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
            .len()
    }

    /// Gates made for turns waited behind and not yet ended (the model checks none is left).
    #[cfg(test)]
    fn gates(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gates
            .len()
    }
}

impl Turn {
    /// Completes when every earlier turn of the same keys is finished.
    pub async fn wait(&mut self) {
        // One earlier turn at a time, each forgotten once finished: cancelling `wait` and
        // calling it again keeps the turns still unfinished (cancel-safe).
        while let Some(earlier) = self.waits.last().map(Arc::clone) {
            earlier.wait().await;
            self.waits.pop();
        }
        self.begun();
    }

    /// No earlier turn of its keys is unfinished: it may begin at once.
    pub fn is_free(&self) -> bool {
        self.waits.is_empty()
    }

    /// Begins a free turn without waiting (see [`Turn::is_free`]).
    pub fn begin(&mut self) {
        debug_assert!(self.is_free());
        self.begun();
    }

    fn begun(&mut self) {
        if std::mem::take(&mut self.queued) {
            self.sequencer.queued.fetch_sub(1, Ordering::Relaxed);
        }
        if std::mem::take(&mut self.blocked) {
            self.sequencer.blocked.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.begun();
        let gate = {
            let mut chains = self
                .sequencer
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for key in &self.keys {
                if chains.last.get(key) == Some(&self.id) {
                    chains.last.remove(key);
                }
            }
            chains.gates.remove(&self.id)
        };
        if let Some(gate) = gate {
            gate.open();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_of_one_key_run_in_entry_order_others_in_parallel() {
        let seq = Arc::new(Sequencer::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Earlier turns sleep longer, so without the sequencer they would finish last.
        for (i, key) in ["a", "b", "a", "a", "b"].iter().enumerate() {
            let seq = Arc::clone(&seq);
            let log = Arc::clone(&log);
            let key = key.to_string();
            // `enter` happens here, in order; the task runs whenever.
            let ready = {
                let turn = seq.enter([key.clone()]);
                let delay = Duration::from_millis(50 - 10 * i as u64);
                async move {
                    let mut turn = turn;
                    turn.wait().await;
                    tokio::time::sleep(delay).await;
                    log.lock().unwrap().push((key, i));
                    drop(turn);
                }
            };
            tasks.push(tokio::spawn(ready));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        let a: Vec<usize> = log
            .iter()
            .filter(|(k, _)| k == "a")
            .map(|(_, i)| *i)
            .collect();
        let b: Vec<usize> = log
            .iter()
            .filter(|(k, _)| k == "b")
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(a, vec![0, 2, 3]);
        assert_eq!(b, vec![1, 4]);
        assert_eq!(seq.active_keys(), 0, "finished chains are forgotten");
        assert_eq!(seq.gates(), 0, "and their gates");
    }

    #[tokio::test]
    async fn a_dropped_turn_releases_the_next() {
        let seq = Arc::new(Sequencer::default());
        let first = seq.enter(["u"]);
        let mut second = seq.enter(["u", "v"]);
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), second.wait())
            .await
            .unwrap();
        drop(second);
        assert_eq!(seq.active_keys(), 0);
    }

    /// The sequencer against a plain model: turns over keys `a`..`c` entered, polled and
    /// finished (or dropped unbegun) in random order.
    ///
    /// Invariants: a turn begins exactly when every earlier turn sharing one of its keys has
    /// finished (entry order per key, other keys in parallel); `queued()` counts the turns
    /// entered and neither begun nor dropped; a finished sequencer keeps no chain.
    /// Precondition (what `Dispatch` does): a turn is dropped after it began, or all turns are
    /// dropped at once (the drain's abort). A single unbegun turn dropped alone would release
    /// the turns behind it before the ones before it finished.
    mod model {
        use super::*;
        use futures_util::FutureExt;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Enter(Vec<u8>),
            Poll(usize),
            Finish(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                proptest::collection::vec(0u8..3, 1..3).prop_map(Op::Enter),
                (0usize..64).prop_map(Op::Poll),
                (0usize..64).prop_map(Op::Finish),
            ]
        }

        /// The model's turn: its keys, begun, finished.
        struct Modeled {
            keys: Vec<u8>,
            begun: bool,
            finished: bool,
            /// An earlier turn of one of its keys was unfinished when it entered.
            behind: bool,
        }

        fn may_begin(turns: &[Modeled], i: usize) -> bool {
            turns[..i]
                .iter()
                .all(|t| t.finished || !t.keys.iter().any(|k| turns[i].keys.contains(k)))
        }

        proptest! {
            #[test]
            fn turns_begin_in_entry_order_per_key_and_queued_counts_the_rest(
                ops in proptest::collection::vec(op(), 1..80)
            ) {
                let seq = Arc::new(Sequencer::default());
                let mut real: Vec<Option<Turn>> = Vec::new();
                let mut model: Vec<Modeled> = Vec::new();
                for op in ops {
                    match op {
                        Op::Enter(keys) => {
                            real.push(Some(seq.enter(keys.iter().map(|k| format!("user-{k}")))));
                            let behind = model
                                .iter()
                                .any(|t| !t.finished && t.keys.iter().any(|k| keys.contains(k)));
                            model.push(Modeled { keys, begun: false, finished: false, behind });
                        }
                        Op::Poll(i) if !model.is_empty() => {
                            let i = i % model.len();
                            if model[i].finished || model[i].begun {
                                continue;
                            }
                            let expected = may_begin(&model, i);
                            let began = match real[i].as_mut() {
                                Some(turn) => turn.wait().now_or_never().is_some(),
                                None => false,
                            };
                            prop_assert_eq!(began, expected, "turn {} of {:?}", i, model[i].keys);
                            model[i].begun = began;
                        }
                        Op::Finish(i) if !model.is_empty() => {
                            // A task ends after its turn began; an unbegun turn is dropped only
                            // by the drain's abort, which drops every turn (the end below).
                            let i = i % model.len();
                            if model[i].begun && !model[i].finished {
                                real[i] = None;
                                model[i].finished = true;
                            }
                        }
                        _ => {}
                    }
                    let queued = model.iter().filter(|t| !t.begun && !t.finished).count();
                    prop_assert_eq!(seq.queued(), queued);
                    let blocked = model
                        .iter()
                        .filter(|t| !t.begun && !t.finished && t.behind)
                        .count();
                    prop_assert_eq!(seq.blocked(), blocked);
                }
                real.clear();
                prop_assert_eq!(seq.queued(), 0);
                prop_assert_eq!(seq.blocked(), 0);
                prop_assert_eq!(seq.active_keys(), 0);
                prop_assert_eq!(seq.gates(), 0);
            }
        }
    }
}
