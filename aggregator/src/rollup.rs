//! The in-memory batch: events rolled into per-link one-minute buckets, kept
//! per source partition so that a revoked partition's share can be dropped
//! without touching the rest.
//!
//! Duplicates made upstream (an edge resending its spool after a crash, a
//! producer retry across a broker failover) carry the same event id and land
//! in the same partition (same key). The batch drops an event whose id it has
//! seen among the last [`DEDUP_WINDOW`] stored events of its partition, or in
//! the pending batch. Outside that window a duplicate is counted in the
//! rollups; `click_events` still collapses it by event id.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use ricochet_schemas::{CampaignId, ClickEvent, ClientId, EventType, LinkId, Reason};

use crate::checkpoint::PartitionRange;
use crate::sink::{EventRow, RollupRow};

/// The start of a UTC minute, in seconds since the epoch (ClickHouse `DateTime`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketStart(pub u32);

impl BucketStart {
    pub const WIDTH_SECS: u32 = 60;

    /// The minute an event time falls in, or `None` outside ClickHouse's
    /// `DateTime` range (1970..2106): such an event is bad input, not a click to bucket.
    pub fn of_millis(ms: i64) -> Option<Self> {
        let secs = u32::try_from(ms.div_euclid(1000)).ok()?;
        Some(BucketStart(secs - secs % Self::WIDTH_SECS))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RollupKey {
    pub client_id: ClientId,
    pub campaign_id: CampaignId,
    pub link_id: LinkId,
    pub bucket: BucketStart,
}

/// What one rollup row counts. `clicks = human_clicks + bot_clicks`, and
/// `by_reason` splits the clicks by the verdict's reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub clicks: u64,
    pub human_clicks: u64,
    /// Clicks whose verdict is a machine (see [`crate::verdict`]).
    pub bot_clicks: u64,
    pub opens: u64,
    /// Clicks per [`Reason`], indexed like [`Reason::ALL`].
    pub by_reason: [u64; Reason::ALL.len()],
}

impl Counts {
    /// Counts one decided event.
    pub fn count(&mut self, event: &ClickEvent, reason: Reason) {
        match event.event_type {
            EventType::Open => self.opens += 1,
            EventType::Click => {
                self.clicks += 1;
                if reason.is_human() {
                    self.human_clicks += 1;
                } else {
                    self.bot_clicks += 1;
                }
                if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
                    self.by_reason[i] += 1;
                }
            }
        }
    }

    /// Clicks decided for `reason`.
    pub fn reason(&self, reason: Reason) -> u64 {
        Reason::ALL.iter().position(|r| *r == reason).map_or(0, |i| self.by_reason[i])
    }
}

/// Event ids remembered per partition for dropping duplicates: about a minute
/// of a 10,000 clicks/s blast over 12 partitions, hours at ordinary rates.
/// ~50 bytes an id: 2.4 MB per partition.
pub const DEDUP_WINDOW: usize = 50_000;

/// What one partition contributed since the last flush.
#[derive(Debug)]
struct PartitionBatch {
    range: PartitionRange,
    rollups: HashMap<RollupKey, Counts>,
    events: Vec<EventRow>,
    ids: HashSet<u128>,
}

/// The ids of the last stored events of one partition, oldest first.
#[derive(Debug, Default)]
struct RecentIds {
    set: HashSet<u128>,
    order: VecDeque<u128>,
}

impl RecentIds {
    fn remember(&mut self, ids: impl IntoIterator<Item = u128>) {
        for id in ids {
            if self.set.insert(id) {
                self.order.push_back(id);
            }
        }
        while self.order.len() > DEDUP_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Batch {
    partitions: BTreeMap<i32, PartitionBatch>,
    num_events: usize,
    opened_at: Option<Instant>,
    /// Survives `clear`: the dedup window of each owned partition.
    recent: HashMap<i32, RecentIds>,
}

impl Batch {
    /// Adds the message at `offset`, with its verdict. `event` is `None` for a
    /// message that was set aside (poison): it adds nothing but still moves the
    /// partition's position.
    pub fn add(
        &mut self,
        partition: i32,
        offset: i64,
        event: Option<(ClickEvent, BucketStart, Reason)>,
        ingested_at: u32,
    ) {
        self.opened_at.get_or_insert_with(Instant::now);
        let pb = self.partitions.entry(partition).or_insert_with(|| PartitionBatch {
            range: PartitionRange { partition, first: offset, next: offset + 1 },
            rollups: HashMap::new(),
            events: Vec::new(),
            ids: HashSet::new(),
        });
        pb.range.next = offset + 1;
        let Some((event, bucket, reason)) = event else { return };
        let id = event.event_id.0.as_u128();
        let seen_before = self.recent.get(&partition).is_some_and(|r| r.set.contains(&id));
        if seen_before || !pb.ids.insert(id) {
            metrics::counter!("ricochet_aggregator_duplicates_dropped_total").increment(1);
            return;
        }
        let key = RollupKey {
            client_id: event.client_id.clone(),
            campaign_id: event.campaign_id.clone(),
            link_id: event.link_id.clone(),
            bucket,
        };
        pb.rollups.entry(key).or_default().count(&event, reason);
        pb.events.push(EventRow::new(event, reason, partition, offset, ingested_at));
        self.num_events += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    pub fn num_events(&self) -> usize {
        self.num_events
    }

    pub fn num_rollup_rows(&self) -> usize {
        self.partitions.values().map(|p| p.rollups.len() + 1).sum()
    }

    /// When the first message of this batch arrived.
    pub fn opened_at(&self) -> Option<Instant> {
        self.opened_at
    }

    /// The offset range each partition covers.
    pub fn ranges(&self) -> Vec<PartitionRange> {
        self.partitions.values().map(|p| p.range).collect()
    }

    /// Drops what revoked partitions contributed: their new owner re-reads it
    /// from the stored position.
    pub fn revoke(&mut self, partitions: &[i32]) {
        for p in partitions {
            if let Some(pb) = self.partitions.remove(p) {
                self.num_events -= pb.events.len();
            }
            self.recent.remove(p);
        }
        if self.partitions.is_empty() {
            self.opened_at = None;
        }
    }

    pub fn event_rows(&self) -> impl Iterator<Item = &EventRow> {
        self.partitions.values().flat_map(|p| p.events.iter())
    }

    /// The rollup deltas plus one checkpoint row per partition: everything the
    /// single atomic insert carries.
    pub fn rollup_rows(&self, topic: &str) -> Vec<RollupRow> {
        let mut rows = Vec::with_capacity(self.num_rollup_rows());
        for pb in self.partitions.values() {
            rows.push(RollupRow::checkpoint(topic, pb.range));
            rows.extend(pb.rollups.iter().map(|(key, counts)| RollupRow::delta(key, *counts, topic, pb.range)));
        }
        rows
    }

    /// The batch is stored (or was already): its event ids join the dedup
    /// window, everything else is dropped.
    pub fn clear(&mut self) {
        for (partition, pb) in std::mem::take(&mut self.partitions) {
            self.recent.entry(partition).or_default().remember(pb.ids);
        }
        self.num_events = 0;
        self.opened_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ricochet_schemas::EventId;

    fn click(client: &str, link: &str, ms: i64) -> (ClickEvent, BucketStart, Reason) {
        let e = ClickEvent {
            event_id: EventId::mint(),
            event_time_ms: ms,
            client_id: ClientId::parse(client).unwrap(),
            campaign_id: CampaignId::parse("camp").unwrap(),
            link_id: LinkId::parse(link).unwrap(),
            recipient_id: None,
            destination_url: "https://x.example/".into(),
            http_method: "GET".into(),
            user_agent: None,
            referer: None,
            client_ip: None,
            edge_node: "e".into(),
            event_type: ricochet_schemas::EventType::Click,
            is_prefetch: false,
            recipient_token: ricochet_schemas::RecipientToken::Absent,
            signals: ricochet_schemas::Signals::default(),
        };
        let b = BucketStart::of_millis(ms).unwrap();
        (e, b, Reason::Human)
    }

    #[test]
    fn buckets_are_utc_minutes_and_bounded() {
        assert_eq!(BucketStart::of_millis(119_999), Some(BucketStart(60)));
        assert_eq!(BucketStart::of_millis(120_000), Some(BucketStart(120)));
        assert_eq!(BucketStart::of_millis(-1), None);
        assert_eq!(BucketStart::of_millis(i64::MAX), None);
    }

    #[test]
    fn rolls_up_per_link_and_minute_with_one_checkpoint_row_per_partition() {
        let mut b = Batch::default();
        b.add(0, 10, Some(click("a", "l1", 60_000)), 0);
        b.add(0, 11, Some(click("a", "l1", 61_000)), 0);
        b.add(0, 12, Some(click("a", "l1", 121_000)), 0);
        b.add(1, 5, Some(click("b", "l2", 60_000)), 0);
        b.add(1, 6, None, 0); // poison: moves the position, counts nothing
        assert_eq!(b.num_events(), 4);
        let rows = b.rollup_rows("clicks");
        let total: u64 = rows.iter().map(|r| r.clicks).sum();
        assert_eq!(total, 4);
        let checkpoints: Vec<_> =
            rows.iter().filter(|r| r.client_id.is_empty()).map(|r| (r.source_partition, r.source_end_offset)).collect();
        assert_eq!(checkpoints, vec![(0, 13), (1, 7)]);
        let l1_first_minute = rows.iter().find(|r| r.link_id == "l1" && r.bucket_start == 60).unwrap();
        assert_eq!(l1_first_minute.clicks, 2);
    }

    #[test]
    fn splits_human_bot_and_opens() {
        let mut b = Batch::default();
        let (bot, bucket, _) = click("a", "l1", 60_000);
        b.add(0, 1, Some((bot, bucket, Reason::Head)), 0);
        let (mut open, bucket, _) = click("a", "l1", 60_000);
        open.event_type = EventType::Open;
        b.add(0, 2, Some((open, bucket, Reason::Human)), 0);
        b.add(0, 3, Some(click("a", "l1", 60_000)), 0);
        let row = b.rollup_rows("clicks").into_iter().find(|r| r.link_id == "l1").unwrap();
        assert_eq!((row.clicks, row.human_clicks, row.bot_clicks, row.opens), (2, 1, 1, 1));
        let counts = b.partitions[&0].rollups.values().next().unwrap();
        assert_eq!((counts.reason(Reason::Head), counts.reason(Reason::Human)), (1, 1), "opens have no reason");
    }

    #[test]
    fn duplicates_are_dropped_in_the_batch_and_across_flushes() {
        let mut b = Batch::default();
        let (e, bucket, reason) = click("a", "l1", 60_000);
        b.add(0, 1, Some((e.clone(), bucket, reason)), 0);
        b.add(0, 2, Some((e.clone(), bucket, reason)), 0); // a resend in the same batch
        assert_eq!(b.num_events(), 1);
        assert_eq!(b.ranges()[0].next, 3, "the duplicate still moves the position");
        b.clear();
        b.add(0, 3, Some((e.clone(), bucket, reason)), 0); // a resend after the flush
        assert_eq!(b.num_events(), 0);
        b.revoke(&[0]);
        b.add(0, 4, Some((e, bucket, reason)), 0); // a new owner starts without the window
        assert_eq!(b.num_events(), 1);
    }

    #[test]
    fn the_window_forgets_the_oldest_ids() {
        let mut r = RecentIds::default();
        r.remember(0..(DEDUP_WINDOW as u128 + 10));
        assert_eq!(r.order.len(), DEDUP_WINDOW);
        assert!(!r.set.contains(&0) && r.set.contains(&(DEDUP_WINDOW as u128 + 9)));
    }

    #[test]
    fn revoking_a_partition_drops_only_its_share() {
        let mut b = Batch::default();
        b.add(0, 1, Some(click("a", "l1", 60_000)), 0);
        b.add(1, 1, Some(click("b", "l2", 60_000)), 0);
        b.revoke(&[0]);
        assert_eq!(b.num_events(), 1);
        assert_eq!(b.ranges(), vec![PartitionRange { partition: 1, first: 1, next: 2 }]);
        b.revoke(&[1]);
        assert!(b.is_empty() && b.opened_at().is_none());
    }
}
