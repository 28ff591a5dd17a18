//! An endpoint's events between the `decided` topic and its receiver: the
//! deliverer's state, pure, with the argument for why a committed position
//! never skips an event.
//!
//! The reader pushes every record of the endpoint's partition in offset
//! order: the events the endpoint subscribes to into one of its lanes, the
//! others skipped. A lane is chosen by recipient, so one recipient's events
//! stay in one lane, and a lane sends one batch at a time and retries it
//! until it is done: events of one recipient arrive in order, while the
//! other lanes go on (the deliverer keeps up to its concurrency cap of them
//! sending at once).
//!
//! **Argument.** The position to commit is the lowest offset still queued
//! in any lane, or, with every lane empty, the offset after the last record
//! pushed or skipped. An event leaves its lane only through [`Lanes::finish`]
//! (delivered, or given up on and logged), so every event at or past the
//! committed position is either finished or still queued: a restart that
//! reads from it loses no event, at worst delivers some again (at least once,
//! with the same `webhook-id` for the same event). Offsets only grow within
//! a partition, so the position never moves back.

use std::collections::VecDeque;

/// One lane: its queue in offset order and the batch at its head being sent.
#[derive(Debug)]
struct Lane<T> {
    queue: VecDeque<(i64, T)>,
    /// How many events at the head form the batch being (re)sent; `0`: none.
    /// A failed batch is retried with the same events, so its `webhook-id`
    /// stays the same.
    batch: usize,
    sending: bool,
}

#[derive(Debug)]
pub struct Lanes<T> {
    lanes: Vec<Lane<T>>,
    /// The offset after the last record pushed or skipped.
    next: i64,
    queued: usize,
}

impl<T> Lanes<T> {
    /// `count` lanes (at least one), starting at offset `start`.
    pub fn new(count: usize, start: i64) -> Self {
        Lanes {
            lanes: (0..count.max(1)).map(|_| Lane { queue: VecDeque::new(), batch: 0, sending: false }).collect(),
            next: start,
            queued: 0,
        }
    }

    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// A record this endpoint does not take.
    pub fn skip(&mut self, offset: i64) {
        self.next = self.next.max(offset + 1);
    }

    /// An event for the endpoint, into the lane of `key` (its recipient).
    pub fn push(&mut self, offset: i64, key: u64, item: T) {
        let lane = (key % self.lanes.len() as u64) as usize;
        self.lanes[lane].queue.push_back((offset, item));
        self.next = self.next.max(offset + 1);
        self.queued += 1;
    }

    /// Events queued and not finished.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// The next batch of `lane` to send, if it is idle and has events: the
    /// batch it failed to send last, or up to `max` events from its head.
    pub fn take(&mut self, lane: usize, max: usize) -> Option<Vec<&T>> {
        let l = &mut self.lanes[lane];
        if l.sending || l.queue.is_empty() {
            return None;
        }
        if l.batch == 0 {
            l.batch = max.max(1).min(l.queue.len());
        }
        l.sending = true;
        Some(l.queue.iter().take(l.batch).map(|(_, item)| item).collect())
    }

    /// The batch `lane` was sending is done with (delivered or dropped).
    pub fn finish(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        let n = l.batch;
        l.queue.drain(..n);
        l.batch = 0;
        l.sending = false;
        self.queued -= n;
    }

    /// The batch `lane` was sending failed: it stays, to be taken again.
    pub fn release(&mut self, lane: usize) {
        self.lanes[lane].sending = false;
    }

    /// The position a restart may resume from: see the module's argument.
    pub fn committable(&self) -> i64 {
        self.lanes.iter().filter_map(|l| l.queue.front().map(|(offset, _)| *offset)).min().unwrap_or(self.next)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        Record { take: bool, key: u64 },
        Send { lane: usize, max: usize },
        Finish { lane: usize },
        Fail { lane: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (any::<bool>(), 0u64..6).prop_map(|(take, key)| Step::Record { take, key }),
            (0usize..4, 1usize..4).prop_map(|(lane, max)| Step::Send { lane, max }),
            (0usize..4).prop_map(|lane| Step::Finish { lane }),
            (0usize..4).prop_map(|lane| Step::Fail { lane }),
        ]
    }

    proptest! {
        /// Through any sequence of records, sends, deliveries and failures:
        /// the committed position never passes an event not yet finished,
        /// never moves back, and each recipient's events are finished in
        /// offset order; retried batches carry the same events.
        #[test]
        fn the_position_never_skips_an_unfinished_event(steps in prop::collection::vec(step(), 1..200), lanes in 1usize..5) {
            let start = 100;
            let mut l: Lanes<(i64, u64)> = Lanes::new(lanes, start);
            let mut next_offset = start;
            let mut unfinished: BTreeSet<i64> = BTreeSet::new();
            let mut sending: Vec<Option<Vec<(i64, u64)>>> = vec![None; lanes];
            let mut failed: Vec<Option<Vec<(i64, u64)>>> = vec![None; lanes];
            let mut last_finished_by_key: std::collections::HashMap<u64, i64> = Default::default();
            let mut committed = start;
            let mut after_last = start;
            for s in steps {
                match s {
                    Step::Record { take, key } => {
                        let offset = next_offset;
                        after_last = offset + 1;
                        next_offset += 1 + (key as i64 % 2); // gaps, as compaction or other clients leave
                        if take {
                            l.push(offset, key, (offset, key));
                            unfinished.insert(offset);
                        } else {
                            l.skip(offset);
                        }
                    }
                    Step::Send { lane, max } => {
                        let lane = lane % lanes;
                        if let Some(batch) = l.take(lane, max) {
                            let batch: Vec<_> = batch.into_iter().copied().collect();
                            prop_assert!(sending[lane].is_none(), "a lane sends one batch at a time");
                            if let Some(before) = failed[lane].take() {
                                prop_assert_eq!(&before, &batch, "a retried batch carries the same events");
                            }
                            sending[lane] = Some(batch);
                        }
                    }
                    Step::Finish { lane } => {
                        let lane = lane % lanes;
                        if let Some(batch) = sending[lane].take() {
                            l.finish(lane);
                            for (offset, key) in batch {
                                unfinished.remove(&offset);
                                let last = last_finished_by_key.insert(key, offset);
                                prop_assert!(last.is_none_or(|last| last < offset), "a recipient's events finish in order");
                            }
                        }
                    }
                    Step::Fail { lane } => {
                        let lane = lane % lanes;
                        if let Some(batch) = sending[lane].take() {
                            l.release(lane);
                            failed[lane] = Some(batch);
                        }
                    }
                }
                let c = l.committable();
                prop_assert!(unfinished.iter().all(|&o| o >= c), "position {} passes an unfinished event", c);
                prop_assert!(c >= committed, "the position moved back from {} to {}", committed, c);
                prop_assert_eq!(l.queued(), unfinished.len());
                if unfinished.is_empty() {
                    prop_assert_eq!(c, after_last, "with nothing queued, the position is past the last record");
                }
                committed = c;
            }
        }
    }

    #[test]
    fn with_nothing_queued_the_position_is_past_the_last_record() {
        let mut l: Lanes<u8> = Lanes::new(2, 10);
        assert_eq!(l.committable(), 10);
        l.skip(10);
        l.push(11, 0, 1);
        l.push(12, 1, 2);
        assert_eq!(l.committable(), 11);
        assert_eq!(l.take(1, 5).unwrap(), vec![&2]);
        l.finish(1);
        assert_eq!(l.committable(), 11, "lane 0 still holds offset 11");
        assert_eq!(l.take(0, 5).unwrap(), vec![&1]);
        l.release(0);
        assert_eq!(l.committable(), 11);
        assert_eq!(l.take(0, 5).unwrap(), vec![&1]);
        l.finish(0);
        assert_eq!(l.committable(), 13);
    }
}
