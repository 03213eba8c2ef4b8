//! Keeps the events of one key (a user id) in arrival order while other keys run in parallel.
//!
//! `enter` is called in arrival order (by the single task reading the source); it returns a
//! `Turn` whose `wait` completes once every earlier turn of the same keys finished. A lock alone
//! would not do: tasks reach a lock in whatever order the runtime schedules them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::{join_all, FutureExt, Shared};
use tokio::sync::oneshot;

type Done = Shared<oneshot::Receiver<()>>;

/// The chain of turns per key. Entries are removed when their last turn finishes.
#[derive(Default)]
pub struct Sequencer {
    inner: Mutex<Chains>,
}

#[derive(Default)]
struct Chains {
    next_id: u64,
    last: HashMap<String, (u64, Done)>,
}

/// One unit of work's place in the chains of its keys. Dropping it (finished, failed or
/// cancelled) lets the next turn of each key go.
pub struct Turn {
    sequencer: Arc<Sequencer>,
    id: u64,
    keys: Vec<String>,
    waits: Vec<Done>,
    _done: oneshot::Sender<()>,
}

impl Sequencer {
    /// Takes a place behind the earlier turns of `keys` (duplicates are fine).
    pub fn enter<I, S>(self: &Arc<Self>, keys: I) -> Turn
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let (tx, rx) = oneshot::channel();
        let done = rx.shared();
        let mut chains = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        chains.next_id += 1;
        let id = chains.next_id;
        let mut keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        keys.sort();
        keys.dedup();
        let mut waits = Vec::new();
        for key in &keys {
            if let Some((_, previous)) = chains.last.insert(key.clone(), (id, done.clone())) {
                waits.push(previous);
            }
        }
        Turn {
            sequencer: Arc::clone(self),
            id,
            keys,
            waits,
            _done: tx,
        }
    }

    /// Keys with a turn queued or running.
    pub fn active_keys(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last
            .len()
    }
}

impl Turn {
    /// Completes when every earlier turn of the same keys is finished.
    pub async fn wait(&mut self) {
        // An error only means the earlier turn was dropped: it is finished either way.
        let _ = join_all(std::mem::take(&mut self.waits)).await;
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut chains = self
            .sequencer
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for key in &self.keys {
            if chains.last.get(key).is_some_and(|(id, _)| *id == self.id) {
                chains.last.remove(key);
            }
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
}
