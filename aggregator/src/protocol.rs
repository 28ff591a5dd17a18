//! The exactly-once protocol: every state change of a consumer-group member,
//! in one pure state machine. No Kafka, no ClickHouse, no clock: the pipeline
//! ([`crate::pipeline`]) tells it what happened (a partition acquired, a
//! message read, an insert answered) and does what it decides (where to seek,
//! what to write, what to settle). The property test at the bottom drives it
//! through random interleavings of two members, a fenced store and unknown
//! outcomes, and checks that every offset is counted exactly once.
//!
//! # The argument
//!
//! **What is stored.** For each partition `p` of the clicks topic, ClickHouse
//! holds rollup rows and a *stored position* `S(p)`: the sum of the position
//! deltas written with them (`warehouse::positions`). `S(p)` is the first
//! offset whose event is not counted. Every flush writes, per partition, the
//! counts of the events in `[first, next)` (every grain) and the delta
//! `next - S(p)` **in one block** (one part: the batch is capped below
//! `max_insert_block_size` and that setting is pinned on the insert), so for
//! one partition the counts and the position land together or not at all.
//!
//! **Breakdowns** (`click_breakdowns`) are a second table with positions of
//! their own, `B(p)`, written the same way (one block, through the same
//! fence) by an insert sent *before* the rollups' and only once nothing of
//! it is in doubt: the rollups' insert is sent after the breakdowns' was
//! acknowledged. So `B(p) >= S(p)`: a flush whose breakdowns landed and
//! whose rollups did not leaves `B(p)` ahead. Reading resumes at `S(p)`;
//! events before `B(p)` are counted in the rollups only (their breakdowns
//! are stored), the others in both, and each table's delta starts from its
//! own position ([`breakdowns_from`], [`Part::breakdowns_delta`]). A stored
//! flush moves both to `next`. Everything below holds for each table.
//!
//! **Invariant.** For every partition, the counted offsets are exactly
//! `[0, S(p))` (minus messages set aside as poison, which are in the
//! dead-letter topic instead). Every write below preserves it.
//!
//! **Fences.** A member *acquires* `p` (on assignment, and again before it
//! settles an insert whose answer it lost) in three steps, in this order:
//! 1. it writes an owner row `(p, generation, time, token)` with a fresh
//!    random token, and waits for the acknowledgement (on a cluster: from
//!    every replica of `p`'s shard, `insert_quorum`);
//! 2. it waits until no insert of this deployment (`query_id` prefix) is
//!    running any more, killing those that outlive the fence timeout;
//! 3. it reads `S(p)` and starts from there ([`Protocol::assign`]).
//!
//! Every rollup insert goes through `click_counts_in`, whose materialized
//! view passes a row on only if it carries the *current* token of its
//! partition: the newest owner row of the highest generation. So after step 1,
//! a write of anyone else (a member frozen for a minute, cut off from the
//! group, or a late copy of the acquirer's own earlier attempt) can land only
//! if ClickHouse started it before step 1 ended, and step 2 waits for exactly
//! those. After step 2 no other write for `p` can land until someone acquires
//! `p` again, so step 3 reads a position that stays true while the token does.
//!
//! **Why each write is safe.**
//! - *Rollups and positions* (`written`/`settled`): passed on only under the
//!   current token, and computed from `S(p)` as read in step 3 plus this
//!   member's own stored flushes since, which is `S(p)` itself while the token
//!   is current. After every insert the member reads `S(p)` and `B(p)` back:
//!   `next` for both means stored; anything else means the token was stale (the rows were dropped
//!   by the fence): the member forgets `p` ([`Verdict::Fenced`]) and acquires
//!   it again only if Kafka still says it owns it after the session timeout.
//! - *Settling* an insert whose answer was lost re-acquires its partitions, so
//!   a copy of it that ClickHouse registers late carries a stale token and
//!   lands nowhere; the position read in step 3 says whether it landed.
//! - *Raw events and recipients* are written before the rollups and are
//!   idempotent (ReplacingMergeTree by event id, by the whole row): a stale
//!   member writing them again adds no count. They pass through the erasure
//!   filter (`click_events_in`, `click_recipients_in`), which drops an erased
//!   recipient's rows whoever writes them, stale or not.
//! - *Erasures* ([`crate::erasure`]) are not per partition and not fenced:
//!   every step is idempotent, so two members applying one request at once,
//!   or one applying it again after a crash, store and delete the same.
//! - *Dead letters* are confirmed by the broker before the partition's
//!   position moves past them; a dead letter the broker refuses blocks only
//!   its own partition ([`Protocol::block`]), which is re-read after a backoff
//!   (the dead-letter topic is at least once).
//! - *Kafka commits* are a hint for lag tools, never read back.
//!
//! **Generations.** A partition moves to a new owner only in a later
//! consumer-group generation, so the new owner's row wins over the old
//! owner's, however late the old owner acts. Within one generation (a static
//! member replaced by a restarted process, or a member re-acquiring before a
//! settle) the later acquisition wins; the loser's writes are dropped and it
//! acquires again: liveness, never a count, depends on clocks.
//!
//! **What an unclean exit costs.** Nothing stored is lost or counted twice:
//! the pending batch and the events awaiting their verdict are read again by
//! the next owner from `S(p)`. The dedup window of event ids ([`crate::rollup`])
//! is in memory: a duplicate made upstream (an edge resending its spool) is
//! dropped from the rollups only when both copies are read by the same process
//! within the window; `click_events` collapses it by event id regardless.

use std::collections::{BTreeMap, HashMap};

use ricochet_schemas::ClickEvent;

use crate::checkpoint::{Admit, PartitionRange, Positions};
use crate::rollup::{Batch, BucketStart};
use crate::verdict::{Rules, Verdicts};

/// Who may write a partition: the consumer-group generation in which this
/// member acquired it and the random token of that acquisition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    pub generation: i32,
    pub token: u64,
}

/// A partition acquired: fenced (steps 1 and 2 of the module doc) and its
/// stored positions read (step 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquired {
    pub partition: i32,
    /// The rollups' stored position, where reading resumes. `None`: nothing
    /// stored yet, start at the beginning.
    pub stored: Option<i64>,
    /// The breakdowns' stored position (`None`: none stored).
    pub breakdowns: Option<i64>,
    pub fence: Fence,
}

/// One partition's share of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub range: PartitionRange,
    /// The rollups' stored position the delta starts from.
    pub previous: Option<i64>,
    /// The breakdowns' stored position their delta starts from. At or past
    /// `range.first` when the breakdowns are ahead: then only the events from
    /// it on are in the breakdown rows, and no breakdown position row is
    /// written unless `range.next` passes it.
    pub breakdowns_previous: Option<i64>,
    pub fence: Fence,
}

impl Part {
    /// Where the breakdowns' stored position must be once this part landed.
    pub fn breakdowns_next(&self) -> i64 {
        self.range.next.max(self.breakdowns_previous.unwrap_or(0))
    }

    /// The breakdowns' position delta this part writes, if it moves it.
    pub fn breakdowns_delta(&self) -> Option<i64> {
        let previous = self.breakdowns_previous.unwrap_or(0);
        (self.range.next > previous).then(|| self.range.next - previous)
    }
}

/// A write of the pending batch: raw events, recipients, then the rollups and
/// positions of these partitions in one insert per shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub parts: Vec<Part>,
}

impl Attempt {
    pub fn ranges(&self) -> Vec<PartitionRange> {
        self.parts.iter().map(|p| p.range).collect()
    }

    pub fn partitions(&self) -> Vec<i32> {
        self.parts.iter().map(|p| p.range.partition).collect()
    }
}

/// What became of one partition's share of an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; the stored position is the range's end.
    Stored,
    /// Not counted, and this member still holds the partition: read again from
    /// the stored position (seek there).
    Retry { stored: Option<i64> },
    /// Not counted because another member holds the partition now: forgotten.
    /// Pause it; acquire it again only if Kafka still assigns it later.
    Fenced,
}

/// Where the pending write stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Writing {
    #[default]
    Idle,
    /// Begun: the batch is frozen until the outcome is known.
    InFlight(Attempt),
    /// The rollup insert may or may not have landed: nothing is written again
    /// before it is settled.
    Unknown(Attempt),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("an insert's outcome is unknown: settle it before writing again")]
    MustSettle,
    #[error("a write is already in flight")]
    InFlight,
    #[error("no write is in flight")]
    NothingInFlight,
    #[error("no insert awaits settling")]
    NothingToSettle,
}

/// One owned partition's protocol state beside its position.
#[derive(Clone, Debug)]
struct Owned {
    fence: Fence,
    /// The breakdowns' stored position, as read or written since.
    breakdowns: Option<i64>,
    /// Events before this offset are already in the breakdowns (see
    /// [`breakdowns_from`]): they go to the rollups only.
    breakdowns_from: i64,
    /// Offsets of poison messages read and sent to the dead-letter topic
    /// without an acknowledgement yet.
    dead_letters: Vec<i64>,
    /// Newest event time (ms) in the pending batch.
    newest_event_ms: Option<i64>,
}

/// The member's exactly-once state: positions, the pending batch, the events
/// awaiting their verdict, the dead letters and the write in progress.
#[derive(Debug)]
pub struct Protocol {
    positions: Positions,
    batch: Batch,
    verdicts: Verdicts<BucketStart>,
    owned: BTreeMap<i32, Owned>,
    writing: Writing,
}

impl Protocol {
    pub fn new(rules: Rules) -> Self {
        Protocol {
            positions: Positions::default(),
            batch: Batch::default(),
            verdicts: Verdicts::new(rules),
            owned: BTreeMap::new(),
            writing: Writing::Idle,
        }
    }

    // ---------------------------------------------------------------- ownership

    /// Starts owning a partition at its stored position. Called after the
    /// acquisition (fence, then read); anything held for it before is dropped.
    pub fn assign(&mut self, acquired: Acquired) {
        let p = acquired.partition;
        self.forget(p);
        self.positions.assign(p, acquired.stored);
        self.owned.insert(
            p,
            Owned {
                fence: acquired.fence,
                breakdowns: acquired.breakdowns,
                breakdowns_from: breakdowns_from(acquired.stored, acquired.breakdowns),
                dead_letters: Vec::new(),
                newest_event_ms: None,
            },
        );
    }

    /// The partition moved away (or was fenced): what it held is dropped, its
    /// next owner reads it again. Returns the events dropped.
    pub fn revoke(&mut self, partition: i32) -> usize {
        let before = self.num_unstored();
        self.forget(partition);
        before - self.num_unstored()
    }

    /// Every partition is gone at once (an assignment lost, a rebalance error).
    pub fn lost(&mut self) -> usize {
        let partitions: Vec<i32> = self.owned.keys().copied().collect();
        partitions.into_iter().map(|p| self.revoke(p)).sum()
    }

    fn forget(&mut self, partition: i32) {
        self.batch.revoke(&[partition]);
        self.verdicts.revoke(partition);
        self.positions.revoke(partition);
        self.owned.remove(&partition);
        self.drop_from_attempt(partition);
    }

    /// A partition that leaves mid-write leaves the attempt: the remaining
    /// parts still describe what the batch holds.
    fn drop_from_attempt(&mut self, partition: i32) {
        if let Writing::InFlight(a) | Writing::Unknown(a) = &mut self.writing {
            a.parts.retain(|p| p.range.partition != partition);
            if a.parts.is_empty() {
                self.writing = Writing::Idle;
            }
        }
    }

    /// Owned partitions with their stored positions.
    pub fn owned(&self) -> Vec<(i32, Option<i64>)> {
        self.owned.keys().map(|p| (*p, self.positions.stored(*p))).collect()
    }

    pub fn owns(&self, partition: i32) -> bool {
        self.owned.contains_key(&partition)
    }

    pub fn fence(&self, partition: i32) -> Option<Fence> {
        self.owned.get(&partition).map(|o| o.fence)
    }

    pub fn stored(&self, partition: i32) -> Option<i64> {
        self.positions.stored(partition)
    }

    // ---------------------------------------------------------------- messages

    /// Decides about the message at `offset` (see [`Admit`]); an admitted
    /// message must then be [`Protocol::hold`]ed.
    pub fn admit(&mut self, partition: i32, offset: i64) -> Admit {
        self.positions.admit(partition, offset)
    }

    /// An admitted message, decoded (`None`: poison, already sent to the
    /// dead-letter topic, see [`Protocol::dead_letter`]), waits for its verdict.
    /// An open teaches its recipient's mail client now, so that clicks
    /// still held learn it too.
    pub fn hold(&mut self, partition: i32, offset: i64, event: Option<(ClickEvent, BucketStart)>, now_ms: i64) {
        if let Some((e, _)) = &event {
            self.batch.remember_open(e);
        }
        self.verdicts.push(partition, offset, event, now_ms);
    }

    /// A poison message at `offset` was sent to the dead-letter topic; the
    /// partition is not flushed past it until [`Protocol::dead_letters_confirmed`].
    pub fn dead_letter(&mut self, partition: i32, offset: i64) {
        if let Some(o) = self.owned.get_mut(&partition) {
            o.dead_letters.push(offset);
        }
    }

    /// The broker acknowledged every dead letter of `partition`.
    pub fn dead_letters_confirmed(&mut self, partition: i32) {
        if let Some(o) = self.owned.get_mut(&partition) {
            o.dead_letters.clear();
        }
    }

    /// Partitions with dead letters not acknowledged yet.
    pub fn awaiting_dead_letters(&self) -> Vec<i32> {
        self.owned.iter().filter(|(_, o)| !o.dead_letters.is_empty()).map(|(p, _)| *p).collect()
    }

    pub fn num_dead_letters_unconfirmed(&self) -> usize {
        self.owned.values().map(|o| o.dead_letters.len()).sum()
    }

    /// A dead letter of `partition` was refused: the partition alone goes
    /// back to its stored position (its batch share and held events are
    /// dropped) and is read again later, resending the letter; the others
    /// flush on. Returns where to seek, `None` when it is not owned.
    pub fn block(&mut self, partition: i32) -> Option<Option<i64>> {
        if !self.owned.contains_key(&partition) || !matches!(self.writing, Writing::Idle) {
            return None;
        }
        self.rewind_partition(partition);
        Some(self.positions.stored(partition))
    }

    fn rewind_partition(&mut self, partition: i32) {
        self.batch.revoke_share(partition);
        let stored = self.positions.stored(partition);
        self.positions.rewind_partition(partition);
        self.verdicts.rewind(partition, stored);
        if let Some(o) = self.owned.get_mut(&partition) {
            o.dead_letters.clear();
            o.newest_event_ms = None;
        }
    }

    /// Moves the events decided by `now_ms` into the pending batch (not while
    /// a write is in flight or unsettled: the batch then is what was sent).
    pub fn release(&mut self, now_ms: i64, ingested_at: u32) {
        if !matches!(self.writing, Writing::Idle) {
            return;
        }
        for d in self.verdicts.release(now_ms) {
            let Some(o) = self.owned.get_mut(&d.partition) else { continue };
            if let Some((e, _, _)) = &d.event {
                o.newest_event_ms = Some(o.newest_event_ms.map_or(e.event_time_ms, |n| n.max(e.event_time_ms)));
            }
            let breakdowns = d.offset >= o.breakdowns_from;
            self.batch.add(d.partition, d.offset, d.event, ingested_at, breakdowns);
        }
    }

    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// Events read and not stored: the batch's and those awaiting a verdict.
    pub fn num_unstored(&self) -> usize {
        self.batch.num_events() + self.verdicts.num_held()
    }

    /// The newest event time in the pending batch.
    pub fn newest_event_ms(&self) -> Option<i64> {
        self.owned.values().filter_map(|o| o.newest_event_ms).max()
    }

    // ---------------------------------------------------------------- writing

    /// Starts writing the pending batch: `Ok(None)` when there is nothing to
    /// write. Partitions awaiting dead letters must be settled first (the
    /// pipeline confirms or blocks them).
    pub fn begin(&mut self) -> Result<Option<Attempt>, ProtocolError> {
        match &self.writing {
            Writing::Idle => {}
            Writing::InFlight(_) => return Err(ProtocolError::InFlight),
            Writing::Unknown(_) => return Err(ProtocolError::MustSettle),
        }
        if self.batch.is_empty() {
            return Ok(None);
        }
        let mut parts = Vec::new();
        for range in self.batch.ranges() {
            let p = range.partition;
            let Some(owned) = self.owned.get(&p) else {
                // Never happens: a share is dropped with its partition.
                self.batch.revoke(&[p]);
                continue;
            };
            if self.positions.verify(&[range]).is_err() {
                // Would count twice: the stored position decides, read again.
                self.rewind_partition(p);
                continue;
            }
            parts.push(Part {
                range,
                previous: self.positions.stored(p),
                breakdowns_previous: owned.breakdowns,
                fence: owned.fence,
            });
        }
        if parts.is_empty() {
            return Ok(None);
        }
        let attempt = Attempt { parts };
        self.writing = Writing::InFlight(attempt.clone());
        Ok(Some(attempt))
    }

    /// The attempt failed before its rollup insert could land (a connection
    /// refused, an error answer, a raw insert that failed): nothing of it was
    /// counted. The batch stays; the pipeline retries or rewinds.
    pub fn failed(&mut self) -> Result<(), ProtocolError> {
        match self.writing {
            Writing::InFlight(_) => {
                self.writing = Writing::Idle;
                Ok(())
            }
            _ => Err(ProtocolError::NothingInFlight),
        }
    }

    /// The rollup insert's answer was lost: it may have landed.
    pub fn unknown(&mut self) -> Result<(), ProtocolError> {
        match std::mem::take(&mut self.writing) {
            Writing::InFlight(a) => {
                self.writing = Writing::Unknown(a);
                Ok(())
            }
            other => {
                self.writing = other;
                Err(ProtocolError::NothingInFlight)
            }
        }
    }

    /// The attempt whose outcome is unknown, to settle.
    pub fn unsettled(&self) -> Option<&Attempt> {
        match &self.writing {
            Writing::Unknown(a) => Some(a),
            _ => None,
        }
    }

    pub fn in_flight(&self) -> Option<&Attempt> {
        match &self.writing {
            Writing::InFlight(a) => Some(a),
            _ => None,
        }
    }

    /// The breakdown and rollup inserts were acknowledged, and `stored` and
    /// `breakdowns` are each partition's stored positions read back afterwards.
    pub fn written(
        &mut self,
        stored: &HashMap<i32, i64>,
        breakdowns: &HashMap<i32, i64>,
    ) -> Result<Vec<(i32, Verdict)>, ProtocolError> {
        let Writing::InFlight(attempt) = std::mem::take(&mut self.writing) else {
            return Err(ProtocolError::NothingInFlight);
        };
        let mut verdicts = Vec::with_capacity(attempt.parts.len());
        for part in &attempt.parts {
            let p = part.range.partition;
            let both =
                stored.get(&p) == Some(&part.range.next) && breakdowns.get(&p).copied() == Some(part.breakdowns_next());
            let verdict = if both {
                self.store(part.range, part.breakdowns_next());
                Verdict::Stored
            } else {
                // Acknowledged but not counted (or only the breakdowns): the
                // fence dropped the rows, so another member holds the
                // partition now; it resumes from what is stored.
                self.forget(p);
                Verdict::Fenced
            };
            verdicts.push((p, verdict));
        }
        Ok(verdicts)
    }

    /// The unknown attempt is settled: its partitions were acquired again
    /// (new fences, positions read after them). A partition whose stored
    /// position is its range's end was counted; any other starts again from
    /// what is stored.
    pub fn settled(&mut self, reacquired: &[Acquired]) -> Result<Vec<(i32, Verdict)>, ProtocolError> {
        let Writing::Unknown(attempt) = std::mem::take(&mut self.writing) else {
            return Err(ProtocolError::NothingToSettle);
        };
        let mut verdicts = Vec::with_capacity(attempt.parts.len());
        for part in &attempt.parts {
            let p = part.range.partition;
            let Some(a) = reacquired.iter().find(|a| a.partition == p) else {
                // Not acquired again (another member holds it): forget it.
                self.forget(p);
                verdicts.push((p, Verdict::Fenced));
                continue;
            };
            if a.stored == Some(part.range.next) {
                // The rollups landed, so the breakdowns did before them (they
                // are sent first); their position is as read.
                self.store(part.range, a.breakdowns.unwrap_or(part.range.next));
                if let Some(o) = self.owned.get_mut(&p) {
                    o.fence = a.fence;
                }
                verdicts.push((p, Verdict::Stored));
            } else {
                self.assign(*a);
                verdicts.push((p, Verdict::Retry { stored: a.stored }));
            }
        }
        Ok(verdicts)
    }

    fn store(&mut self, range: PartitionRange, breakdowns: i64) {
        self.positions.advance(&[range]);
        self.batch.clear_partition(range.partition);
        if let Some(o) = self.owned.get_mut(&range.partition) {
            o.newest_event_ms = None;
            o.breakdowns = Some(breakdowns);
            o.breakdowns_from = breakdowns_from(Some(range.next), Some(breakdowns));
        }
    }

    /// Drops everything pending and goes back to the stored positions (after
    /// a failed write, or messages dropped while paused). Returns where each
    /// owned partition must seek.
    pub fn rewind(&mut self) -> Vec<(i32, Option<i64>)> {
        if !matches!(self.writing, Writing::Idle) {
            return Vec::new();
        }
        let partitions: Vec<i32> = self.owned.keys().copied().collect();
        for p in &partitions {
            self.rewind_partition(*p);
        }
        self.owned()
    }
}

/// The first offset the breakdown rows must count, given the stored
/// positions of the rollups (where reading resumes) and of the breakdowns.
/// The breakdown insert goes first, so the breakdowns are never behind the
/// rollups but may be ahead (their insert landed, the rollups' did not):
/// the events before their position then go to the rollups only. With no
/// breakdown position at all (a database older than `click_breakdowns`, or
/// one whose breakdowns were truncated), the breakdowns begin where the
/// rollups are: they never count an event twice, and say so.
pub fn breakdowns_from(stored: Option<i64>, breakdowns: Option<i64>) -> i64 {
    let stored = stored.unwrap_or(0);
    match breakdowns {
        Some(b) if b >= stored => b,
        Some(b) => {
            tracing::error!(
                breakdowns = b,
                rollups = stored,
                "breakdowns behind the rollups: they resume where the rollups are"
            );
            stored
        }
        None => {
            if stored > 0 {
                tracing::warn!(rollups = stored, "no breakdowns stored yet: they begin where the rollups are");
            }
            stored
        }
    }
}

#[cfg(test)]
mod tests {
    //! Two members and a store that applies the fence as ClickHouse's view
    //! does, driven by random sequences of assignments (with and without the
    //! old owner noticing), messages, releases, writes with every outcome,
    //! settles, rewinds and dead letters refused.

    use super::*;
    use proptest::prelude::*;
    use ricochet_schemas::{CampaignId, ClientId, EventId, EventType, LinkId, RecipientToken, Signals};
    use std::time::Duration;

    const PARTITIONS: i32 = 2;
    const MESSAGES: i64 = 25;

    fn event(partition: i32, offset: i64, time_ms: i64) -> ClickEvent {
        ClickEvent {
            event_id: EventId::mint(),
            event_time_ms: time_ms,
            client_id: ClientId::parse(format!("c{partition}")).unwrap(),
            campaign_id: CampaignId::parse("camp").unwrap(),
            link_id: LinkId::parse(format!("l{}", offset % 3)).unwrap(),
            recipient_id: None,
            destination_url: "https://x.example/".into(),
            http_method: "GET".into(),
            user_agent: None,
            referer: None,
            client_ip: None,
            edge_node: "e".into(),
            event_type: EventType::Click,
            is_prefetch: false,
            recipient_token: RecipientToken::Absent,
            signals: Signals::default(),
        }
    }

    /// The log: which offsets are poison.
    fn poison(partition: i32, offset: i64) -> bool {
        (offset * 7 + partition as i64) % 11 == 0
    }

    /// The two fenced inserts of a flush, sent in this order.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Table {
        Breakdowns,
        Rollups,
    }

    #[derive(Default)]
    struct Store {
        /// Current fence per partition (the newest owner row of the highest generation).
        current: HashMap<i32, (i32, u64, Fence)>,
        position: HashMap<i32, i64>,
        counted: HashMap<(i32, i64), u32>,
        breakdowns_position: HashMap<i32, i64>,
        counted_breakdowns: HashMap<(i32, i64), u32>,
        clock: u64,
    }

    impl Store {
        fn acquire(&mut self, partition: i32, generation: i32, token: u64) -> Acquired {
            self.clock += 1;
            let fence = Fence { generation, token };
            let newer = match self.current.get(&partition) {
                None => true,
                Some((g, at, _)) => (generation, self.clock) > (*g, *at),
            };
            if newer {
                self.current.insert(partition, (generation, self.clock, fence));
            }
            Acquired {
                partition,
                stored: self.position.get(&partition).copied(),
                breakdowns: self.breakdowns_position.get(&partition).copied(),
                fence,
            }
        }

        /// One insert, through the fence: each partition's rows land only
        /// under its current token.
        fn land(&mut self, write: &Write) {
            for (part, offsets) in &write.parts {
                let p = part.range.partition;
                if self.current.get(&p).map(|c| c.2) != Some(part.fence) {
                    continue;
                }
                let (counted, position, delta) = match write.table {
                    Table::Rollups => {
                        (&mut self.counted, &mut self.position, part.range.next - part.previous.unwrap_or(0))
                    }
                    Table::Breakdowns => (
                        &mut self.counted_breakdowns,
                        &mut self.breakdowns_position,
                        part.breakdowns_delta().unwrap_or(0),
                    ),
                };
                for offset in offsets {
                    *counted.entry((p, *offset)).or_default() += 1;
                }
                *position.entry(p).or_default() += delta;
            }
        }
    }

    /// What one insert carries: per partition, its part and the offsets it counts.
    #[derive(Clone, Debug)]
    struct Write {
        table: Table,
        parts: Vec<(Part, Vec<i64>)>,
    }

    impl Write {
        fn of(attempt: &Attempt, batch: &Batch, table: Table) -> Self {
            let parts = attempt
                .parts
                .iter()
                .map(|part| {
                    let p = part.range.partition;
                    let from = match table {
                        Table::Rollups => i64::MIN,
                        Table::Breakdowns => batch.breakdowns_first(p).unwrap_or(i64::MAX),
                    };
                    let offsets = batch
                        .event_rows()
                        .filter(|r| r.kafka_partition == p && r.kafka_offset >= from)
                        .map(|r| r.kafka_offset)
                        .collect();
                    (*part, offsets)
                })
                .collect();
            Write { table, parts }
        }

        /// Both inserts of a flush, breakdowns first.
        fn both(attempt: &Attempt, batch: &Batch) -> [Self; 2] {
            [Write::of(attempt, batch, Table::Breakdowns), Write::of(attempt, batch, Table::Rollups)]
        }
    }

    struct Member {
        protocol: Protocol,
        /// Kafka's view of this member's assignment, and where it reads next.
        cursor: HashMap<i32, i64>,
        generation: i32,
        /// Fenced partitions this member may acquire again later.
        paused: Vec<i32>,
    }

    impl Member {
        fn new() -> Self {
            let rules = Rules::with_delay(Duration::from_millis(50));
            Member { protocol: Protocol::new(rules), cursor: HashMap::new(), generation: 0, paused: Vec::new() }
        }

        fn seek(&mut self, partition: i32, stored: Option<i64>) {
            if let Some(c) = self.cursor.get_mut(&partition) {
                *c = stored.unwrap_or(0);
            }
        }

        fn apply(&mut self, verdicts: Vec<(i32, Verdict)>) {
            for (p, v) in verdicts {
                match v {
                    Verdict::Stored => {}
                    Verdict::Retry { stored } => self.seek(p, stored),
                    Verdict::Fenced => self.paused.push(p),
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// Kafka moves a partition to member `to`; the old owner is told only
        /// when `tell_old` (otherwise it is a zombie until a later step).
        Move {
            partition: i32,
            to: usize,
            tell_old: bool,
        },
        Read {
            member: usize,
            partition: i32,
            count: u8,
        },
        Release {
            member: usize,
            advance_ms: u16,
        },
        Flush {
            member: usize,
            outcome: Outcome,
        },
        Settle {
            member: usize,
        },
        Rewind {
            member: usize,
        },
        RefuseDeadLetters {
            member: usize,
        },
        /// Paused (fenced) partitions still assigned are acquired again.
        Reacquire {
            member: usize,
        },
        /// The oldest insert still in transit reaches ClickHouse now.
        LateLanding,
    }

    #[derive(Clone, Copy, Debug)]
    enum Outcome {
        Landed,
        /// The breakdown insert failed before anything was applied.
        FailedBefore,
        UnknownLanded,
        UnknownNotLanded,
        /// The breakdown insert's answer is lost and it reaches ClickHouse
        /// only later, maybe after it was settled (the rollups are never sent).
        UnknownLate,
        /// The breakdowns landed; the rollup insert failed or its answer was lost.
        BreakdownsOnly,
        /// The breakdowns landed; the rollup insert's answer is lost and it
        /// reaches ClickHouse only later.
        BreakdownsThenRollupsLate,
    }

    fn step() -> impl Strategy<Value = Step> {
        let member = 0..2usize;
        let partition = 0..PARTITIONS;
        prop_oneof![
            1 => (partition.clone(), member.clone(), any::<bool>())
                .prop_map(|(partition, to, tell_old)| Step::Move { partition, to, tell_old }),
            4 => (member.clone(), partition, 1..6u8).prop_map(|(member, partition, count)| Step::Read { member, partition, count }),
            2 => (member.clone(), 0..200u16).prop_map(|(member, advance_ms)| Step::Release { member, advance_ms }),
            3 => (member.clone(), prop_oneof![
                4 => Just(Outcome::Landed),
                1 => Just(Outcome::FailedBefore),
                1 => Just(Outcome::UnknownLanded),
                1 => Just(Outcome::UnknownNotLanded),
                1 => Just(Outcome::UnknownLate),
                1 => Just(Outcome::BreakdownsOnly),
                1 => Just(Outcome::BreakdownsThenRollupsLate)
            ])
            .prop_map(|(member, outcome)| Step::Flush { member, outcome }),
            1 => (member.clone()).prop_map(|member| Step::Settle { member }),
            1 => (member.clone()).prop_map(|member| Step::Rewind { member }),
            1 => (member.clone()).prop_map(|member| Step::RefuseDeadLetters { member }),
            1 => member.prop_map(|member| Step::Reacquire { member }),
            1 => Just(Step::LateLanding),
        ]
    }

    struct World {
        store: Store,
        members: [Member; 2],
        /// Kafka's owner of each partition, and the group generation.
        owner: HashMap<i32, usize>,
        generation: i32,
        now_ms: i64,
        next_token: u64,
        in_transit: Vec<Write>,
    }

    impl World {
        fn new() -> Self {
            World {
                store: Store::default(),
                members: [Member::new(), Member::new()],
                owner: HashMap::new(),
                generation: 0,
                now_ms: 1_000_000,
                next_token: 1,
                in_transit: Vec::new(),
            }
        }

        fn acquire(&mut self, m: usize, partition: i32) {
            self.next_token += 1;
            let generation = self.members[m].generation;
            let a = self.store.acquire(partition, generation, self.next_token);
            let member = &mut self.members[m];
            member.protocol.assign(a);
            member.cursor.insert(partition, a.stored.unwrap_or(0));
            member.paused.retain(|p| *p != partition);
        }

        fn settle(&mut self, m: usize) {
            let Some(attempt) = self.members[m].protocol.unsettled().cloned() else { return };
            let generation = self.members[m].generation;
            let mut again = Vec::new();
            for p in attempt.partitions() {
                self.next_token += 1;
                again.push(self.store.acquire(p, generation, self.next_token));
            }
            let verdicts = self.members[m].protocol.settled(&again).unwrap();
            self.members[m].apply(verdicts);
        }

        fn run(&mut self, step: Step) {
            match step {
                Step::Move { partition, to, tell_old } => {
                    self.generation += 1;
                    if let Some(old) = self.owner.insert(partition, to) {
                        if tell_old || old == to {
                            // A revocation settles first, as the pipeline's callback does.
                            self.settle(old);
                            self.members[old].protocol.revoke(partition);
                            self.members[old].cursor.remove(&partition);
                        }
                    }
                    self.members[to].generation = self.generation;
                    self.acquire(to, partition);
                }
                Step::Read { member, partition, count } => {
                    let m = &mut self.members[member];
                    let Some(cursor) = m.cursor.get(&partition).copied() else { return };
                    if m.paused.contains(&partition) || !m.protocol.owns(partition) {
                        return;
                    }
                    for offset in cursor..(cursor + count as i64).min(MESSAGES) {
                        match m.protocol.admit(partition, offset) {
                            Admit::Apply => {}
                            Admit::Gap { expected } => {
                                m.cursor.insert(partition, expected);
                                return;
                            }
                            _ => continue,
                        }
                        let decoded = if poison(partition, offset) {
                            m.protocol.dead_letter(partition, offset);
                            None
                        } else {
                            let e = event(partition, offset, self.now_ms);
                            let b = BucketStart::of_millis(e.event_time_ms).unwrap();
                            Some((e, b))
                        };
                        m.protocol.hold(partition, offset, decoded, self.now_ms);
                        m.cursor.insert(partition, offset + 1);
                    }
                }
                Step::Release { member, advance_ms } => {
                    self.now_ms += advance_ms as i64;
                    self.members[member].protocol.release(self.now_ms, 0);
                }
                Step::Flush { member, outcome } => {
                    let m = &mut self.members[member];
                    for p in m.protocol.awaiting_dead_letters() {
                        m.protocol.dead_letters_confirmed(p);
                    }
                    let Ok(Some(attempt)) = m.protocol.begin() else { return };
                    let [breakdowns, rollups] = Write::both(&attempt, m.protocol.batch());
                    match outcome {
                        Outcome::Landed => {
                            self.store.land(&breakdowns);
                            self.store.land(&rollups);
                            let verdicts =
                                m.protocol.written(&self.store.position, &self.store.breakdowns_position).unwrap();
                            m.apply(verdicts);
                        }
                        Outcome::FailedBefore => {
                            m.protocol.failed().unwrap();
                            for (p, s) in m.protocol.rewind() {
                                m.seek(p, s);
                            }
                        }
                        Outcome::UnknownLanded => {
                            self.store.land(&breakdowns);
                            self.store.land(&rollups);
                            m.protocol.unknown().unwrap();
                        }
                        Outcome::UnknownLate => {
                            self.in_transit.push(breakdowns);
                            m.protocol.unknown().unwrap();
                        }
                        Outcome::UnknownNotLanded => m.protocol.unknown().unwrap(),
                        Outcome::BreakdownsOnly => {
                            self.store.land(&breakdowns);
                            m.protocol.unknown().unwrap();
                        }
                        Outcome::BreakdownsThenRollupsLate => {
                            self.store.land(&breakdowns);
                            self.in_transit.push(rollups);
                            m.protocol.unknown().unwrap();
                        }
                    }
                }
                Step::Settle { member } => self.settle(member),
                Step::Rewind { member } => {
                    let m = &mut self.members[member];
                    for (p, s) in m.protocol.rewind() {
                        m.seek(p, s);
                    }
                }
                Step::RefuseDeadLetters { member } => {
                    let m = &mut self.members[member];
                    for p in m.protocol.awaiting_dead_letters() {
                        if let Some(stored) = m.protocol.block(p) {
                            m.seek(p, stored);
                        }
                    }
                }
                Step::LateLanding => {
                    if !self.in_transit.is_empty() {
                        let write = self.in_transit.remove(0);
                        self.store.land(&write);
                    }
                }
                Step::Reacquire { member } => {
                    let paused = std::mem::take(&mut self.members[member].paused);
                    for p in paused {
                        if self.owner.get(&p) == Some(&member) {
                            self.acquire(member, p);
                        }
                    }
                }
            }
        }

        /// Every zombie learns, member 0 takes everything and reads to the end.
        fn drain(&mut self) {
            while !self.in_transit.is_empty() {
                self.run(Step::LateLanding);
            }
            for m in 0..2 {
                self.settle(m);
                self.members[m].protocol.lost();
                self.members[m].cursor.clear();
                self.members[m].paused.clear();
            }
            self.generation += 1;
            self.members[0].generation = self.generation;
            for p in 0..PARTITIONS {
                self.owner.insert(p, 0);
                self.acquire(0, p);
            }
            for _ in 0..(MESSAGES * 2) {
                for p in 0..PARTITIONS {
                    self.run(Step::Read { member: 0, partition: p, count: 5 });
                }
                self.run(Step::Release { member: 0, advance_ms: 1_000 });
                self.run(Step::Flush { member: 0, outcome: Outcome::Landed });
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        #[test]
        fn every_offset_is_counted_exactly_once(steps in prop::collection::vec(step(), 0..120)) {
            let mut world = World::new();
            for s in steps {
                world.run(s);
                // Never more than once, at any moment.
                for (key, n) in world.store.counted.iter().chain(&world.store.counted_breakdowns) {
                    prop_assert!(*n <= 1, "offset {key:?} counted {n} times");
                }
            }
            world.drain();
            for p in 0..PARTITIONS {
                prop_assert_eq!(world.store.position.get(&p).copied(), Some(MESSAGES), "partition {}", p);
                prop_assert_eq!(world.store.breakdowns_position.get(&p).copied(), Some(MESSAGES), "partition {}", p);
                for offset in 0..MESSAGES {
                    let want = u32::from(!poison(p, offset));
                    let n = world.store.counted.get(&(p, offset)).copied().unwrap_or(0);
                    prop_assert_eq!(n, want, "rollups: partition {} offset {}", p, offset);
                    let n = world.store.counted_breakdowns.get(&(p, offset)).copied().unwrap_or(0);
                    prop_assert_eq!(n, want, "breakdowns: partition {} offset {}", p, offset);
                }
            }
        }
    }

    #[test]
    fn a_late_copy_of_a_settled_insert_lands_nowhere() {
        let mut world = World::new();
        world.run(Step::Move { partition: 1, to: 0, tell_old: true });
        world.run(Step::Read { member: 0, partition: 1, count: 4 });
        world.run(Step::Release { member: 0, advance_ms: 100 });
        world.run(Step::Flush { member: 0, outcome: Outcome::UnknownLate });
        world.run(Step::Settle { member: 0 });
        world.run(Step::Read { member: 0, partition: 1, count: 4 });
        world.run(Step::Release { member: 0, advance_ms: 100 });
        world.run(Step::Flush { member: 0, outcome: Outcome::Landed });
        world.run(Step::LateLanding);
        assert_eq!(world.store.position.get(&1), Some(&4));
        assert!(world.store.counted.values().all(|n| *n == 1), "{:?}", world.store.counted);
    }

    #[test]
    fn a_write_under_a_stale_fence_is_fenced_and_forgets_the_partition() {
        let mut world = World::new();
        world.run(Step::Move { partition: 0, to: 0, tell_old: false });
        world.run(Step::Read { member: 0, partition: 0, count: 3 });
        world.run(Step::Release { member: 0, advance_ms: 100 });
        // Member 1 takes partition 0 while member 0 is frozen.
        world.run(Step::Move { partition: 0, to: 1, tell_old: false });
        world.run(Step::Flush { member: 0, outcome: Outcome::Landed });
        assert!(world.store.counted.is_empty(), "the stale write landed");
        assert!(!world.members[0].protocol.owns(0));
        assert_eq!(world.members[0].paused, vec![0]);
    }

    #[test]
    fn settling_a_landed_insert_stores_it_and_a_lost_one_reads_again() {
        let mut world = World::new();
        world.run(Step::Move { partition: 1, to: 0, tell_old: true });
        world.run(Step::Read { member: 0, partition: 1, count: 4 });
        world.run(Step::Release { member: 0, advance_ms: 100 });
        world.run(Step::Flush { member: 0, outcome: Outcome::UnknownLanded });
        assert_eq!(world.members[0].protocol.begin(), Err(ProtocolError::MustSettle));
        world.run(Step::Settle { member: 0 });
        assert_eq!(world.members[0].protocol.stored(1), Some(4));
        world.run(Step::Read { member: 0, partition: 1, count: 4 });
        world.run(Step::Release { member: 0, advance_ms: 100 });
        world.run(Step::Flush { member: 0, outcome: Outcome::UnknownNotLanded });
        world.run(Step::Settle { member: 0 });
        assert_eq!(world.members[0].protocol.stored(1), Some(4));
        assert_eq!(world.members[0].cursor.get(&1), Some(&4), "read again from the stored position");
    }

    #[test]
    fn breakdowns_stored_without_their_rollups_are_not_counted_again() {
        let mut world = World::new();
        world.run(Step::Move { partition: 1, to: 0, tell_old: true });
        world.run(Step::Read { member: 0, partition: 1, count: 4 });
        world.run(Step::Release { member: 0, advance_ms: 100 });
        world.run(Step::Flush { member: 0, outcome: Outcome::BreakdownsOnly });
        world.run(Step::Settle { member: 0 });
        assert_eq!(world.store.breakdowns_position.get(&1), Some(&4));
        assert_eq!(world.store.position.get(&1), None, "the rollups did not land");
        // Read again from the rollups' position: the same offsets go to the rollups only.
        world.run(Step::Read { member: 0, partition: 1, count: 6 });
        world.run(Step::Release { member: 0, advance_ms: 100 });
        world.run(Step::Flush { member: 0, outcome: Outcome::Landed });
        assert_eq!((world.store.position.get(&1), world.store.breakdowns_position.get(&1)), (Some(&6), Some(&6)));
        assert!(world.store.counted.values().chain(world.store.counted_breakdowns.values()).all(|n| *n == 1));
        assert_eq!(world.store.counted.len(), world.store.counted_breakdowns.len());
    }

    /// Apple's privacy proxy can fetch the pixel after the reader's first
    /// click; the click, held for its verdict, still learns Apple Mail.
    #[test]
    fn a_held_click_takes_the_mail_client_of_an_open_read_before_its_release() {
        let mut protocol = Protocol::new(Rules::with_delay(Duration::from_secs(10)));
        let fence = Fence { generation: 1, token: 1 };
        protocol.assign(Acquired { partition: 0, stored: None, breakdowns: None, fence });
        let reader = |offset: i64, time_ms: i64, open: bool, ua: &str| {
            let mut e = event(0, offset, time_ms);
            e.recipient_id = Some(ricochet_schemas::RecipientId::parse("ann").unwrap());
            e.user_agent = Some(ua.into());
            e.event_type = if open { EventType::Open } else { EventType::Click };
            e
        };
        let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 \
                      (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
        let t = 1_764_000_000_000;
        for (offset, time_ms, open, ua) in [(0, t, false, safari), (1, t + 2_000, true, "Mozilla/5.0")] {
            assert_eq!(protocol.admit(0, offset), Admit::Apply);
            let e = reader(offset, time_ms, open, ua);
            let bucket = BucketStart::of_millis(e.event_time_ms).unwrap();
            protocol.hold(0, offset, Some((e, bucket)), time_ms);
        }
        protocol.release(t + 2_000 + 10_001, 0);
        let clients: Vec<_> = protocol.batch().event_rows().map(|r| (r.event_type, r.mail_client)).collect();
        assert_eq!(clients.len(), 2);
        assert!(clients.iter().all(|(_, c)| *c == "apple_mail"), "{clients:?}");
    }

    #[test]
    fn breakdowns_without_a_position_begin_where_the_rollups_are() {
        assert_eq!(breakdowns_from(None, None), 0);
        assert_eq!(breakdowns_from(Some(40), None), 40, "a database from before click_breakdowns");
        assert_eq!(breakdowns_from(Some(40), Some(55)), 55, "ahead: their insert landed, the rollups' did not");
        assert_eq!(breakdowns_from(Some(40), Some(30)), 40, "never counted twice");
    }
}
