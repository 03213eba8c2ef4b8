//! One delivery's verdict, whatever its source: its events through the pipeline in order, and
//! a task lost on the way (a panic: a bug) retried in place before the delivery is given up.
//!
//! Invariants:
//! - a delivery's verdict is `Done` only when every event reached a final outcome other than
//!   `invalid`/`failed`; `DeadLetter` carries the first such event's reason;
//! - a lost task never counts as done (no dedup mark) and never ends the delivery at once: the
//!   delivery is decoded again and run again, after a short pause, up to [`MAX_LOST_TASKS`]
//!   losses in a row (the count lives only while the delivery is in flight: it is not a memory
//!   of outcomes); a run after a loss starts at the lost event: those finished before it are
//!   neither run nor reported again (`each` sees every event's final report once);
//! - after [`MAX_LOST_TASKS`] losses in a row the delivery is `DeadLetter` as `failed`, the
//!   lost event recorded `failed`;
//! - a source that keeps no bytes to decode the delivery again (Kafka without a dead-letter
//!   topic: keeping every payload while in flight would cost its size in memory, and there is
//!   no destination for the dead letter anyway) gets `Retry` at the first loss: it keeps the
//!   delivery unacknowledged and counts it, it never drops it.

use std::time::Duration;

use super::{Outcome, Pipeline, Rejected, Report, Verdict};
use crate::event::Decoded;

/// How many times in a row a delivery may lose its task before it is dead-lettered `failed`.
pub const MAX_LOST_TASKS: u32 = 3;

/// `deliver`'s `again` for a source that keeps no bytes to decode a delivery again.
pub type NoRedecode = fn() -> Vec<Decoded>;

/// The pause before a delivery whose task was lost runs again (times the losses so far).
const LOST_PAUSE: Duration = Duration::from_millis(200);

impl Pipeline {
    /// Takes a delivery's `items` to their outcomes, in order, and gives it one [`Verdict`].
    /// `again` decodes the delivery again (from the bytes its source holds) when a task was
    /// lost (`None`: the source keeps no bytes, a loss is `Retry`); `each` is handed every
    /// final report (a source's per-event bookkeeping; `replay` writes it as its line).
    pub async fn deliver<A, E>(&self, items: Vec<Decoded>, again: Option<A>, mut each: E) -> Verdict
    where
        A: Fn() -> Vec<Decoded>,
        E: FnMut(Report),
    {
        let mut items = items;
        let mut lost = 0;
        // What the events that reached their outcome said, across the runs of the delivery:
        // a run after a loss starts at the first event not finished (those before are neither
        // run nor reported again).
        let mut verdict = Verdict::Done;
        let mut finished = 0;
        loop {
            let mut loss = None;
            for item in items.into_iter().skip(finished) {
                match self.attempt(item).await {
                    Ok(report) => {
                        finished += 1;
                        if verdict.is_done()
                            && matches!(report.outcome, Outcome::Invalid | Outcome::Failed)
                        {
                            verdict = Verdict::DeadLetter(Rejected {
                                outcome: report.outcome,
                                error: report.error.clone().unwrap_or_default(),
                            });
                        }
                        each(report);
                    }
                    Err(task) => {
                        loss = Some(task);
                        break;
                    }
                }
            }
            let Some(task) = loss else {
                return verdict;
            };
            lost += 1;
            let Some(again) = again.as_ref() else {
                let said = task.report.error.unwrap_or_default();
                return Verdict::Retry(format!(
                    "the task was lost ({said}); the delivery is kept unacknowledged"
                ));
            };
            if lost >= MAX_LOST_TASKS {
                let mut report = self.give_up(task);
                let said = report.error.take().unwrap_or_default();
                report.error = Some(format!(
                    "the delivery lost its task {lost} times in a row: {said}"
                ));
                tracing::error!(
                    log_id = report.log_id.as_deref().unwrap_or("-"),
                    lost,
                    "a delivery lost its task too many times in a row: it ends failed"
                );
                let error = report.error.clone().unwrap_or_default();
                each(report);
                return Verdict::DeadLetter(Rejected {
                    outcome: Outcome::Failed,
                    error,
                });
            }
            tracing::warn!(
                log_id = task.report.log_id.as_deref().unwrap_or("-"),
                lost,
                max = MAX_LOST_TASKS,
                "a delivery lost its task: it runs again"
            );
            tokio::time::sleep(LOST_PAUSE * lost).await;
            items = again();
        }
    }
}
