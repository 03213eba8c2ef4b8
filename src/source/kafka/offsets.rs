//! Which offset of a partition may be committed: the contiguous low watermark of finished
//! messages. Messages finish out of order (other users run in parallel); an offset is stored
//! only when every message below it reached a final outcome, so a crash can only redeliver.

use std::collections::BTreeSet;

/// The in-flight offsets of one owned partition.
#[derive(Debug, Default)]
pub struct PartitionOffsets {
    /// Offsets taken from the broker and not finished yet.
    pending: BTreeSet<i64>,
    /// The smallest offset taken in this assignment.
    first_taken: Option<i64>,
    /// One past the highest offset taken.
    next_taken: Option<i64>,
    /// The last position handed out for storing.
    stored: Option<i64>,
}

impl PartitionOffsets {
    /// A message was taken from the broker.
    pub fn begin(&mut self, offset: i64) {
        self.pending.insert(offset);
        self.first_taken = Some(self.first_taken.map_or(offset, |f| f.min(offset)));
        self.next_taken = Some(self.next_taken.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// A message reached its final outcome. Returns the new committable position (the next
    /// offset to consume, as Kafka commits it) when it moved forward.
    pub fn finish(&mut self, offset: i64) -> Option<i64> {
        if !self.pending.remove(&offset) {
            return None;
        }
        let watermark = self.watermark()?;
        if self.stored.is_some_and(|s| s >= watermark) {
            return None;
        }
        self.stored = Some(watermark);
        Some(watermark)
    }

    /// The next offset to consume such that every message taken below it is finished, or
    /// `None` when nothing taken has finished in order yet.
    pub fn watermark(&self) -> Option<i64> {
        match self.pending.first() {
            Some(&lowest) => match self.first_taken {
                Some(first) if first < lowest => Some(lowest),
                _ => None,
            },
            None => self.next_taken,
        }
    }

    /// Messages taken and not finished.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Offsets taken and not finished, lowest first (for logs on revoke and shutdown).
    pub fn pending(&self) -> impl Iterator<Item = i64> + '_ {
        self.pending.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completion_moves_the_watermark_one_by_one() {
        let mut p = PartitionOffsets::default();
        for o in 10..13 {
            p.begin(o);
        }
        assert_eq!(p.watermark(), None);
        assert_eq!(p.finish(10), Some(11));
        assert_eq!(p.finish(11), Some(12));
        assert_eq!(p.finish(12), Some(13));
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn a_slow_message_holds_back_everything_after_it() {
        let mut p = PartitionOffsets::default();
        for o in 0..5 {
            p.begin(o);
        }
        assert_eq!(p.finish(1), None, "0 is still pending");
        assert_eq!(p.finish(3), None);
        assert_eq!(p.finish(4), None);
        assert_eq!(p.finish(0), Some(2), "1 finished, 2 pending");
        assert_eq!(p.finish(2), Some(5));
        assert_eq!(p.pending().count(), 0);
    }

    #[test]
    fn gaps_in_offsets_do_not_block() {
        // Compacted topics and transaction markers leave holes.
        let mut p = PartitionOffsets::default();
        p.begin(3);
        p.begin(7);
        p.begin(20);
        assert_eq!(p.finish(7), None);
        assert_eq!(p.finish(3), Some(20));
        assert_eq!(p.finish(20), Some(21));
    }

    #[test]
    fn unknown_or_repeated_finishes_change_nothing() {
        let mut p = PartitionOffsets::default();
        p.begin(0);
        assert_eq!(p.finish(5), None);
        assert_eq!(p.finish(0), Some(1));
        assert_eq!(p.finish(0), None);
        p.begin(1);
        assert_eq!(p.watermark(), Some(1));
        assert_eq!(p.finish(1), Some(2));
    }

    proptest::proptest! {
        /// Whatever the completion order, a stored position never passes an unfinished offset
        /// and never moves backwards, and all finished ends at one past the last offset.
        #[test]
        fn never_passes_an_unfinished_offset(order in proptest::sample::subsequence((0..40i64).collect::<Vec<_>>(), 0..=40), shuffle_seed in 0u64..1000) {
            let mut p = PartitionOffsets::default();
            for o in 0..40 { p.begin(o); }
            let mut done: Vec<i64> = order.clone();
            // A deterministic shuffle of the chosen subset.
            let n = done.len();
            for i in 0..n { let j = ((shuffle_seed as usize).wrapping_mul(31).wrapping_add(i * 17)) % n.max(1); done.swap(i, j); }
            let mut finished = BTreeSet::new();
            let mut last = None;
            for o in done {
                finished.insert(o);
                if let Some(pos) = p.finish(o) {
                    proptest::prop_assert!((0..pos).all(|x| finished.contains(&x)));
                    proptest::prop_assert!(last.is_none_or(|l| pos > l));
                    last = Some(pos);
                }
            }
            if finished.len() == 40 { proptest::prop_assert_eq!(last, Some(40)); }
        }
    }
}
