//! The per-event counters of one pipeline. Its source label is fixed, so each label
//! combination's counter of `events_received_total` and `events_processed_total` is looked up
//! in its family once, by the first event that needs it, and kept: an event no longer hashes
//! its label values twice (the series appear as before: only once counted).
//!
//! Invariant: a kept counter is the family's child of those labels; nothing removes children
//! of these two families (they only grow), so the kept handle and the family never part.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec};

use super::{Outcome, SourceKind};
use crate::event::Trigger;

/// The `input` label values of `events_received_total`.
const INPUTS: [&str; 4] = ["test", "event_stream", "log", "invalid"];

/// `events_processed_total`'s counters by trigger (`Trigger::ALL` order, then no trigger) and
/// outcome (`Outcome::ALL` order).
type ByTriggerAndOutcome = [[OnceLock<IntCounter>; Outcome::ALL.len()]; Trigger::ALL.len() + 1];

/// One source's event counters, made as they are first needed.
pub(super) struct EventCounters {
    source: SourceKind,
    received: [OnceLock<IntCounter>; INPUTS.len()],
    processed: ByTriggerAndOutcome,
}

impl EventCounters {
    pub(super) fn new(source: SourceKind) -> EventCounters {
        EventCounters {
            source,
            received: [const { OnceLock::new() }; INPUTS.len()],
            processed: [const { [const { OnceLock::new() }; Outcome::ALL.len()] };
                Trigger::ALL.len() + 1],
        }
    }

    /// Counts an event received as `input` in `family` (`events_received_total`).
    pub(super) fn received(&self, family: &IntCounterVec, input: &'static str) {
        let labels = [self.source.as_str(), input];
        match INPUTS.iter().position(|known| *known == input) {
            Some(i) => self.received[i]
                .get_or_init(|| family.with_label_values(&labels))
                .inc(),
            None => family.with_label_values(&labels).inc(),
        }
    }

    /// Counts an event that reached `outcome` in `family` (`events_processed_total`).
    pub(super) fn processed(
        &self,
        family: &IntCounterVec,
        trigger: Option<Trigger>,
        outcome: Outcome,
    ) {
        let by_trigger = match trigger {
            Some(t) => Trigger::ALL.iter().position(|known| *known == t),
            None => Some(Trigger::ALL.len()),
        };
        let by_outcome = Outcome::ALL.iter().position(|known| *known == outcome);
        let labels = [
            self.source.as_str(),
            trigger.map_or("none", Trigger::as_str),
            outcome.as_str(),
        ];
        match (by_trigger, by_outcome) {
            (Some(t), Some(o)) => self.processed[t][o]
                .get_or_init(|| family.with_label_values(&labels))
                .inc(),
            _ => family.with_label_values(&labels).inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn kept_counters_count_in_the_family_like_a_lookup_per_event() {
        let metrics = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let counters = EventCounters::new(SourceKind::Kafka);
        for _ in 0..3 {
            counters.received(&metrics.events_received, "log");
            counters.processed(&metrics.events_processed, None, Outcome::NotEligible);
        }
        counters.processed(
            &metrics.events_processed,
            Some(Trigger::Signup),
            Outcome::Assigned,
        );
        // Another source's counters are its own series.
        EventCounters::new(SourceKind::Sqs).received(&metrics.events_received, "log");
        let received = |source, input| {
            metrics
                .events_received
                .with_label_values(&[source, input])
                .get()
        };
        assert_eq!(received("kafka", "log"), 3);
        assert_eq!(received("sqs", "log"), 1);
        assert_eq!(received("kafka", "invalid"), 0);
        let processed = |trigger, outcome| {
            metrics
                .events_processed
                .with_label_values(&["kafka", trigger, outcome])
                .get()
        };
        assert_eq!(processed("none", "not_eligible"), 3);
        assert_eq!(processed("signup", "assigned"), 1);
        assert_eq!(processed("signup", "not_eligible"), 0);
    }
}
