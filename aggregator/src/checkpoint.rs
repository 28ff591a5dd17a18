//! Positions: the next offset to apply, per owned partition, as stored in
//! ClickHouse next to the rollups they produced.
//!
//! The stored position is the source of truth (Kafka's committed offsets are
//! only a hint for lag tools). A message before the position was already
//! counted; a batch that would start before it is refused with a typed error
//! rather than applied twice.

use std::collections::HashMap;

/// The offsets `[first, next)` a batch covers in one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: i32,
    pub first: i64,
    pub next: i64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("batch for partition {partition} starts at offset {first}, before the stored position {stored}: applying it would count clicks twice")]
    Overlap { partition: i32, first: i64, stored: i64 },
    #[error("batch covers partition {partition}, which this member does not own")]
    NotOwned { partition: i32 },
}

/// What to do with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Apply,
    /// Already counted (it lies before the stored position): skip it.
    AlreadyApplied,
    /// Already taken into the pending batch (delivered again): skip it, or the
    /// batch's offset range would stop describing what it holds.
    AlreadyPending,
    /// Not ours (a straggler from a revoked assignment): skip it.
    NotOwned,
    /// Beyond the next offset expected: messages in between were skipped (a
    /// seek that did not happen). Drop this one and read again from `expected`.
    Gap {
        expected: i64,
    },
    /// The same gap again right after reading again from `expected`: the
    /// messages in between no longer exist (retention). Applied, and reported.
    ApplyAfterGap {
        missing: i64,
    },
}

/// One owned partition.
#[derive(Clone, Copy, Debug, Default)]
struct Owned {
    /// The stored position. `None`: nothing applied yet, everything is new.
    stored: Option<i64>,
    /// The next offset the pending batch can take: one past the last admitted
    /// message, or the stored position when nothing is pending.
    next: Option<i64>,
    /// The offset of the last gap reported, to tell a skipped seek from lost data.
    gap_at: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Positions {
    owned: HashMap<i32, Owned>,
}

impl Positions {
    pub fn assign(&mut self, partition: i32, stored: Option<i64>) {
        self.owned.insert(partition, Owned { stored, next: stored, gap_at: None });
    }

    pub fn revoke(&mut self, partition: i32) {
        self.owned.remove(&partition);
    }

    /// Owned partitions and their stored positions.
    pub fn owned(&self) -> impl Iterator<Item = (i32, Option<i64>)> + '_ {
        self.owned.iter().map(|(p, o)| (*p, o.stored))
    }

    /// The stored position of an owned partition (`None`: nothing stored, or not owned).
    pub fn stored(&self, partition: i32) -> Option<i64> {
        self.owned.get(&partition).and_then(|o| o.stored)
    }

    /// Decides about the message at `offset`, and takes it into the pending
    /// batch's range when it is to be applied.
    pub fn admit(&mut self, partition: i32, offset: i64) -> Admit {
        let Some(owned) = self.owned.get_mut(&partition) else {
            return Admit::NotOwned;
        };
        if owned.stored.is_some_and(|stored| offset < stored) {
            return Admit::AlreadyApplied;
        }
        if owned.next.is_some_and(|next| offset < next) {
            return Admit::AlreadyPending;
        }
        // Offsets of the clicks topic are contiguous: a jump means messages were
        // skipped, and storing past them would lose their clicks for good.
        let mut admitted = Admit::Apply;
        if let Some(next) = owned.next.filter(|next| offset > *next) {
            if owned.gap_at != Some(offset) {
                owned.gap_at = Some(offset);
                return Admit::Gap { expected: next };
            }
            admitted = Admit::ApplyAfterGap { missing: offset - next };
        }
        owned.gap_at = None;
        owned.next = Some(offset + 1);
        admitted
    }

    /// Forgets what the pending batch took: it was dropped, and consumption
    /// restarts from the stored positions.
    pub fn rewind(&mut self) {
        for owned in self.owned.values_mut() {
            owned.next = owned.stored;
        }
    }

    /// Forgets what the pending batch took from one partition.
    pub fn rewind_partition(&mut self, partition: i32) {
        if let Some(owned) = self.owned.get_mut(&partition) {
            owned.next = owned.stored;
        }
    }

    /// Refuses a batch that overlaps what is already applied.
    pub fn verify(&self, ranges: &[PartitionRange]) -> Result<(), CheckpointError> {
        for r in ranges {
            match self.owned.get(&r.partition).map(|o| o.stored) {
                None => return Err(CheckpointError::NotOwned { partition: r.partition }),
                Some(Some(stored)) if r.first < stored => {
                    return Err(CheckpointError::Overlap { partition: r.partition, first: r.first, stored })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Records that the batch covering `ranges` is stored.
    pub fn advance(&mut self, ranges: &[PartitionRange]) {
        for r in ranges {
            if let Some(owned) = self.owned.get_mut(&r.partition) {
                let stored = owned.stored.map_or(r.next, |s| s.max(r.next));
                owned.stored = Some(stored);
                owned.next = Some(owned.next.map_or(stored, |n| n.max(stored)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_before_the_stored_position_are_not_applied_again() {
        let mut p = Positions::default();
        p.assign(0, Some(100));
        p.assign(1, None);
        assert_eq!(p.admit(0, 99), Admit::AlreadyApplied);
        assert_eq!(p.admit(0, 100), Admit::Apply);
        assert_eq!(p.admit(1, 0), Admit::Apply);
        assert_eq!(p.admit(2, 0), Admit::NotOwned);
    }

    #[test]
    fn a_message_delivered_again_is_taken_once_until_the_batch_is_dropped() {
        let mut p = Positions::default();
        p.assign(0, Some(100));
        assert_eq!(p.admit(0, 100), Admit::Apply);
        assert_eq!(p.admit(0, 101), Admit::Apply);
        assert_eq!(p.admit(0, 100), Admit::AlreadyPending);
        // The pending batch is dropped: the same offsets are new again.
        p.rewind();
        assert_eq!(p.admit(0, 100), Admit::Apply);
        // Once stored, they are applied, and the next batch starts after them.
        p.advance(&[PartitionRange { partition: 0, first: 100, next: 101 }]);
        assert_eq!(p.admit(0, 100), Admit::AlreadyApplied);
        assert_eq!(p.admit(0, 101), Admit::Apply);
        p.rewind();
        assert_eq!(p.admit(0, 101), Admit::Apply);
    }

    #[test]
    fn a_skipped_range_is_read_again_unless_it_no_longer_exists() {
        let mut p = Positions::default();
        p.assign(0, Some(100));
        assert_eq!(p.admit(0, 100), Admit::Apply);
        assert_eq!(p.admit(0, 105), Admit::Gap { expected: 101 }, "101..105 were skipped");
        assert_eq!(p.admit(0, 101), Admit::Apply, "read again from 101");
        assert_eq!(p.admit(0, 102), Admit::Apply);
        // Retention removed 103..110: after reading again, the same gap comes back.
        assert_eq!(p.admit(0, 110), Admit::Gap { expected: 103 });
        assert_eq!(p.admit(0, 110), Admit::ApplyAfterGap { missing: 7 });
        assert_eq!(p.admit(0, 111), Admit::Apply);
    }

    #[test]
    fn an_overlapping_batch_is_a_typed_error() {
        let mut p = Positions::default();
        p.assign(0, Some(100));
        let stale = [PartitionRange { partition: 0, first: 90, next: 120 }];
        assert_eq!(p.verify(&stale), Err(CheckpointError::Overlap { partition: 0, first: 90, stored: 100 }));
        let fresh = [PartitionRange { partition: 0, first: 100, next: 120 }];
        assert_eq!(p.verify(&fresh), Ok(()));
        p.advance(&fresh);
        assert_eq!(p.verify(&fresh), Err(CheckpointError::Overlap { partition: 0, first: 100, stored: 120 }));
        p.revoke(0);
        assert_eq!(p.verify(&fresh), Err(CheckpointError::NotOwned { partition: 0 }));
    }
}
