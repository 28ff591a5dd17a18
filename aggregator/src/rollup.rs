//! The in-memory batch: events rolled into per-link one-minute buckets, kept
//! per source partition so that a revoked partition's share can be dropped
//! without touching the rest. At flush every minute is written at each
//! [`Grain`] (minute, 15 minutes, hour, UTC day) in the same insert, and the
//! recipients who clicked are collected per 15-minute bucket.
//!
//! Duplicates made upstream (an edge resending its spool after a crash, a
//! producer retry across a broker failover) carry the same event id and land
//! in the same partition (same key). The batch drops an event whose id it has
//! seen among the last [`DEDUP_WINDOW`] stored events of its partition, or in
//! the pending batch. Outside that window a duplicate is counted in the
//! rollups; `click_events` still collapses it by event id.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

// Every event goes through these maps and sets, keyed by ids the edge minted
// or the registry holds, not by anything a client chooses: a fast hasher.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use hashbrown::Equivalent;

/// hashbrown's maps find an owned key by a borrowed one (`entry_ref`,
/// `get_or_insert_with`): an event adds to its bucket without copying the
/// bucket's strings, which happens once per bucket and flush instead.
type ByRef<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;
type SetByRef<T> = hashbrown::HashSet<T, foldhash::fast::RandomState>;
use ricochet_schemas::{CampaignId, ClickEvent, ClientId, EventType, LinkId, MachineOpen, Reason};

use crate::checkpoint::PartitionRange;
use crate::dimensions::{EventDimensions, Value};
use crate::protocol::Part;
use crate::sink::{put_strings, put_value, BreakdownWriter, EventRow, RecipientRow, RollupRow};

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

/// A bucket width the rollups are kept at. Each is a whole number of minutes,
/// so every grain is a sum of minute buckets; 15 minutes divides every time
/// zone's UTC offset, so local hours and days are whole 15-minute buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    Minute,
    QuarterHour,
    Hour,
    /// A UTC day.
    Day,
    /// An ISO week (from Monday 00:00 UTC): the campaigns' breakdown rows
    /// only, never a rollup grain.
    Week,
}

impl Grain {
    pub const ALL: [Grain; 4] = [Grain::Minute, Grain::QuarterHour, Grain::Hour, Grain::Day];

    /// The width in seconds: the `grain` column's value.
    pub const fn secs(self) -> u32 {
        match self {
            Grain::Minute => 60,
            Grain::QuarterHour => 900,
            Grain::Hour => 3600,
            Grain::Day => 86_400,
            Grain::Week => ricochet_warehouse::tables::BREAKDOWN_WEEK,
        }
    }

    /// The start of the bucket holding `secs` (UTC; the epoch is a day
    /// boundary, a Thursday: weeks start four days later).
    pub const fn floor(self, secs: u32) -> u32 {
        match self {
            Grain::Week => ricochet_warehouse::tables::week_floor(secs),
            _ => secs - secs % self.secs(),
        }
    }
}

/// A link, as its rows name it: numbered per share ([`PartitionBatch`]),
/// so that an event's rollup and breakdown keys hash its number, not its
/// three strings again, and a new key copies no string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LinkKey {
    pub client_id: ClientId,
    pub campaign_id: CampaignId,
    pub link_id: LinkId,
}

/// A [`LinkKey`] borrowed from an event; hashed alike (the same fields in
/// the same order, and a reference hashes as what it points to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkKeyRef<'a> {
    pub client_id: &'a ClientId,
    pub campaign_id: &'a CampaignId,
    pub link_id: &'a LinkId,
}

impl LinkKey {
    pub fn borrowed(&self) -> LinkKeyRef<'_> {
        LinkKeyRef { client_id: &self.client_id, campaign_id: &self.campaign_id, link_id: &self.link_id }
    }

    /// The link's row key in `bucket`.
    fn at(&self, bucket: BucketStart) -> RollupKeyRef<'_> {
        let LinkKeyRef { client_id, campaign_id, link_id } = self.borrowed();
        RollupKeyRef { client_id, campaign_id, link_id, bucket }
    }
}

impl Equivalent<LinkKey> for LinkKeyRef<'_> {
    fn equivalent(&self, key: &LinkKey) -> bool {
        *self == key.borrowed()
    }
}

impl From<&LinkKeyRef<'_>> for LinkKey {
    fn from(r: &LinkKeyRef<'_>) -> Self {
        LinkKey { client_id: r.client_id.clone(), campaign_id: r.campaign_id.clone(), link_id: r.link_id.clone() }
    }
}

/// A rollup row's key: a link and a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RollupKeyRef<'a> {
    pub client_id: &'a ClientId,
    pub campaign_id: &'a CampaignId,
    pub link_id: &'a LinkId,
    pub bucket: BucketStart,
}

/// A link of the share, by its number, and a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LinkBucket {
    link: u32,
    bucket: BucketStart,
}

/// A [`RecipientRow`] borrowed from the event, hashed alike (same fields, same order).
#[derive(Hash, PartialEq, Eq)]
struct RecipientRef<'a> {
    client_id: &'a str,
    campaign_id: &'a str,
    link_id: &'a str,
    bucket_start: u32,
    human: u8,
    recipient_id: &'a str,
    is_open: u8,
}

impl Equivalent<RecipientRow> for RecipientRef<'_> {
    fn equivalent(&self, row: &RecipientRow) -> bool {
        self.bucket_start == row.bucket_start
            && self.human == row.human
            && self.is_open == row.is_open
            && self.recipient_id == row.recipient_id
            && self.link_id == row.link_id
            && self.campaign_id == row.campaign_id
            && self.client_id == row.client_id
    }
}

impl RecipientRef<'_> {
    fn to_row(&self) -> RecipientRow {
        RecipientRow {
            client_id: self.client_id.to_owned(),
            campaign_id: self.campaign_id.to_owned(),
            link_id: self.link_id.to_owned(),
            bucket_start: self.bucket_start,
            human: self.human,
            recipient_id: self.recipient_id.to_owned(),
            is_open: self.is_open,
        }
    }
}

/// The breakdowns' dimensions, as `click_rollups.dimension` names them, in
/// the order [`crate::dimensions::EventDimensions::values`] gives their values.
pub use ricochet_warehouse::tables::BREAKDOWN_DIMENSIONS as DIMENSIONS;

/// The grains breakdown rows are kept at (`tables::BREAKDOWN_GRAINS`); the
/// campaigns' rows also at [`Grain::Week`].
pub const BREAKDOWN_GRAINS: [Grain; 2] = [Grain::Hour, Grain::Day];

/// One link-hour and one combination of every dimension's value: what the
/// batch counts per event (one map update, not one per dimension); the
/// flush spreads each into its nine dimensions' rows ([`Batch::breakdown_chunks`]).
///
/// The values are told apart by the address of their shared string
/// ([`crate::dimensions::Value`]), not by the string: an event hashes nine
/// addresses rather than nine strings. Two allocations of one string make
/// two combinations, which the flush's fold counts as one value
/// ([`ComboIndex::write`]).
#[derive(Clone, Debug)]
struct ComboKey {
    key: LinkBucket,
    values: [Value; DIMENSIONS.len()],
}

impl ComboKey {
    fn addresses(&self) -> [usize; DIMENSIONS.len()] {
        self.values.each_ref().map(crate::dimensions::address)
    }
}

impl PartialEq for ComboKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.addresses() == other.addresses()
    }
}

impl Eq for ComboKey {}

impl std::hash::Hash for ComboKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        self.addresses().hash(state);
    }
}

/// A [`ComboKey`] borrowed from the event and its dimensions; hashed alike
/// (the same fields in the same order).
#[derive(Clone, Copy, Debug)]
struct ComboKeyRef<'a> {
    key: LinkBucket,
    /// [`EventDimensions::addresses`].
    addresses: [usize; DIMENSIONS.len()],
    /// Where the values come from: an owned key shares them.
    dimensions: &'a EventDimensions,
}

impl<'a> ComboKeyRef<'a> {
    fn new(key: LinkBucket, dimensions: &'a EventDimensions) -> Self {
        ComboKeyRef { key, addresses: dimensions.addresses(), dimensions }
    }
}

impl std::hash::Hash for ComboKeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        self.addresses.hash(state);
    }
}

impl Equivalent<ComboKey> for ComboKeyRef<'_> {
    fn equivalent(&self, combo: &ComboKey) -> bool {
        self.key == combo.key && self.addresses == combo.addresses()
    }
}

impl From<&ComboKeyRef<'_>> for ComboKey {
    fn from(r: &ComboKeyRef<'_>) -> Self {
        ComboKey { key: r.key, values: r.dimensions.shared_values() }
    }
}

/// One partition's combinations, numbered once per flush so that each
/// dimension's fold hashes three small integers per row rather than four
/// strings (client, campaign, link, value): on a drain where few events
/// share a link and hour, the fold makes about ten rows per event.
struct ComboIndex<'a> {
    /// Per link number: its client, campaign and link as `RowBinary`
    /// ([`put_strings`]), and its campaign's number.
    links: Runs,
    link_campaigns: Vec<u32>,
    /// Per campaign number: its client, campaign and `""` as `RowBinary`.
    campaigns: Runs,
    /// Per combination: its link's number, its hour, its values and counts.
    combos: Vec<(u32, u32, &'a [Value; DIMENSIONS.len()], &'a BreakdownCounts)>,
}

impl<'a> ComboIndex<'a> {
    fn new(share: &'a PartitionBatch) -> Self {
        let mut index = ComboIndex {
            links: Runs::default(),
            link_campaigns: Vec::with_capacity(share.links.len()),
            campaigns: Runs::default(),
            combos: Vec::with_capacity(share.breakdowns.len()),
        };
        let mut campaign_numbers: HashMap<[&str; 2], u32> = HashMap::new();
        // The share's numbers for its links, in order.
        for link in &share.links {
            let link = [link.client_id.as_str(), link.campaign_id.as_str(), link.link_id.as_str()];
            let campaign = *campaign_numbers
                .entry([link[0], link[1]])
                .or_insert_with(|| index.campaigns.push(|out| put_strings(out, &[link[0], link[1], ""])));
            index.link_campaigns.push(campaign);
            index.links.push(|out| put_strings(out, &link));
        }
        for (combo, counts) in &share.breakdowns {
            index.combos.push((combo.key.link, combo.key.bucket.0, &combo.values, counts));
        }
        index
    }

    /// Writes one dimension's rows: its values' counts per link and per
    /// campaign at the hour and the day, and per campaign at the week.
    fn write(&self, dimension: usize, scratch: &mut FoldScratch<'a>, writer: &mut BreakdownWriter) {
        let FoldScratch { by_address, numbers, values, link_hours, link_days, campaign_hours, campaign_days, weeks } =
            scratch;
        by_address.clear();
        numbers.clear();
        values.clear();
        link_hours.clear();
        for &(link, hour, combo_values, counts) in &self.combos {
            let value: &'a Value = &combo_values[dimension];
            // Values are shared (`crate::dimensions::Value`), so most
            // combinations holding a value hold the same allocation: its
            // address finds the number without hashing the string. Two
            // allocations of one string still get one number, through the
            // string; the combinations keep every address alive (and so
            // unique) until the flush ends.
            let address = crate::dimensions::address(value);
            let number = *by_address.entry(address).or_insert_with(|| {
                *numbers.entry(&**value).or_insert_with(|| values.push(|out| put_value(out, dimension, value)))
            });
            link_hours.entry(FoldKey::new(link, Grain::Hour, hour, number)).or_default().add(counts);
        }
        // Each coarser map from the smallest finer one: the link's days from
        // its hours (combinations that differ in other dimensions share the
        // hour's row), the campaign's hours from its links' hours, its days
        // from its hours, its weeks from its days.
        let campaign_of = |link: u32| self.link_campaigns[link as usize];
        fold(link_hours, link_days, Grain::Day, |link| link);
        fold(link_hours, campaign_hours, Grain::Hour, campaign_of);
        fold(campaign_hours, campaign_days, Grain::Day, |campaign| campaign);
        fold(campaign_days, weeks, Grain::Week, |campaign| campaign);
        let links = [&*link_hours, &*link_days].map(|rows| (&self.links, rows));
        let campaigns = [&*campaign_hours, &*campaign_days, &*weeks].map(|rows| (&self.campaigns, rows));
        for (owners, rows) in links.into_iter().chain(campaigns) {
            for (k, counts) in rows {
                let (grain, value) = k.grain_and_value();
                writer.counts(owners.get(k.owner), values.get(value as u32), grain, k.bucket, counts);
            }
        }
    }
}

/// Folds `rows` into `into` (cleared first) at `grain`, each row under the
/// owner `owner` maps its own to: a link's rows into its campaign's, or one
/// owner's rows into a coarser bucket.
fn fold(
    rows: &HashMap<FoldKey, BreakdownCounts>,
    into: &mut HashMap<FoldKey, BreakdownCounts>,
    grain: Grain,
    owner: impl Fn(u32) -> u32,
) {
    into.clear();
    for (k, counts) in rows {
        let (_, value) = k.grain_and_value();
        into.entry(FoldKey::new(owner(k.owner), grain, k.bucket, value as u32)).or_default().add(counts);
    }
}

/// Runs of `RowBinary` in one buffer, by number: an owner's strings
/// ([`put_strings`]) or a dimension and value ([`put_value`]), encoded once
/// per flush and copied into each of its rows.
#[derive(Default)]
struct Runs {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Runs {
    /// Appends the run `put` writes; returns its number.
    fn push(&mut self, put: impl FnOnce(&mut Vec<u8>)) -> u32 {
        put(&mut self.bytes);
        self.ends.push(self.bytes.len());
        self.ends.len() as u32 - 1
    }

    fn get(&self, number: u32) -> &[u8] {
        let n = number as usize;
        let start = if n == 0 { 0 } else { self.ends[n - 1] };
        &self.bytes[start..self.ends[n]]
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// What [`ComboIndex::write`] works in, kept from one dimension to the next
/// (cleared, its allocations reused): each value's number and, by number,
/// its strings; the folds.
#[derive(Default)]
struct FoldScratch<'a> {
    /// A value's number by the address of its shared string.
    by_address: HashMap<usize, u32>,
    numbers: HashMap<&'a str, u32>,
    values: Runs,
    /// The link's rows at the hour and the day; the campaign's at the hour,
    /// the day and the week.
    link_hours: HashMap<FoldKey, BreakdownCounts>,
    link_days: HashMap<FoldKey, BreakdownCounts>,
    campaign_hours: HashMap<FoldKey, BreakdownCounts>,
    campaign_days: HashMap<FoldKey, BreakdownCounts>,
    weeks: HashMap<FoldKey, BreakdownCounts>,
}

/// A breakdown row's key within one dimension, by number ([`ComboIndex`]):
/// its link's (or campaign's) number, its bucket, and its value's number
/// with the grain in the lowest two bits (hour 0, day 1, week 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FoldKey {
    owner: u32,
    bucket: u32,
    value_and_grain: u32,
}

impl FoldKey {
    const GRAINS: [Grain; 3] = [Grain::Hour, Grain::Day, Grain::Week];

    fn new(owner: u32, grain: Grain, hour: u32, value: u32) -> Self {
        let grain_bits = Self::GRAINS.iter().position(|g| *g == grain).expect("a breakdown grain") as u32;
        FoldKey { owner, bucket: grain.floor(hour), value_and_grain: value << 2 | grain_bits }
    }

    fn grain_and_value(&self) -> (Grain, usize) {
        (Self::GRAINS[(self.value_and_grain & 3) as usize], (self.value_and_grain >> 2) as usize)
    }
}

/// What one breakdown row counts: clicks and opens by verdict, without the
/// click reasons (those are on the rollup rows), so the flush's map of
/// breakdown values stays a third of the size. Counted in `u32`, half the
/// bytes the flush's folds move per row: a batch is flushed at
/// `max_batch_events` (at most 200,000) plus what the verdict delay still
/// holds, thousands of times below `u32::MAX`; the row written widens them
/// to the table's `UInt64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BreakdownCounts {
    pub clicks: u32,
    pub human_clicks: u32,
    pub opens: u32,
    pub human_opens: u32,
    /// Machine opens per [`MachineOpen`], indexed like [`MachineOpen::ALL`].
    pub by_machine_open: [u32; MachineOpen::ALL.len()],
}

impl BreakdownCounts {
    /// Counts one decided event.
    pub fn count(&mut self, event_type: EventType, reason: Reason) {
        match event_type {
            EventType::Open => {
                self.opens += 1;
                match reason.machine_open() {
                    None => self.human_opens += 1,
                    Some(m) => self.by_machine_open[m as usize] += 1,
                }
            }
            EventType::Click => {
                self.clicks += 1;
                self.human_clicks += u32::from(reason.is_human());
            }
        }
    }

    pub fn add(&mut self, other: &BreakdownCounts) {
        self.clicks += other.clicks;
        self.human_clicks += other.human_clicks;
        self.opens += other.opens;
        self.human_opens += other.human_opens;
        for (mine, theirs) in self.by_machine_open.iter_mut().zip(other.by_machine_open) {
            *mine += theirs;
        }
    }
}

/// What one rollup row counts. `clicks = human_clicks + bot_clicks`, and
/// `by_reason` splits the clicks by the verdict's reason; `opens =
/// human_opens + the machine opens`, which `by_machine_open` splits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub clicks: u64,
    pub human_clicks: u64,
    /// Clicks whose verdict is a machine (see [`crate::verdict`]).
    pub bot_clicks: u64,
    pub opens: u64,
    pub human_opens: u64,
    /// Clicks per [`Reason`], indexed like [`Reason::ALL`].
    pub by_reason: [u64; Reason::ALL.len()],
    /// Machine opens per [`MachineOpen`], indexed like [`MachineOpen::ALL`].
    pub by_machine_open: [u64; MachineOpen::ALL.len()],
}

impl Counts {
    /// Counts one decided event.
    pub fn count(&mut self, event_type: EventType, reason: Reason) {
        match event_type {
            EventType::Open => {
                self.opens += 1;
                match reason.machine_open() {
                    None => self.human_opens += 1,
                    Some(m) => self.by_machine_open[m as usize] += 1,
                }
            }
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

    pub fn add(&mut self, other: &Counts) {
        self.clicks += other.clicks;
        self.human_clicks += other.human_clicks;
        self.bot_clicks += other.bot_clicks;
        self.opens += other.opens;
        self.human_opens += other.human_opens;
        for (mine, theirs) in self.by_reason.iter_mut().zip(other.by_reason) {
            *mine += theirs;
        }
        for (mine, theirs) in self.by_machine_open.iter_mut().zip(other.by_machine_open) {
            *mine += theirs;
        }
    }

    /// Machine opens reported under `m`.
    pub fn machine_open(&self, m: MachineOpen) -> u64 {
        self.by_machine_open[m as usize]
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
    /// The share's links, numbered in the order they came ([`LinkKey`]).
    links: indexmap::IndexSet<LinkKey, foldhash::fast::RandomState>,
    rollups: HashMap<LinkBucket, Counts>,
    /// Per link-hour and combination of dimension values.
    breakdowns: ByRef<ComboKey, BreakdownCounts>,
    /// The first offset counted in `breakdowns`: the events before it are
    /// in the breakdowns already (see `protocol::breakdowns_from`).
    breakdowns_first: Option<i64>,
    events: Vec<EventRow>,
    ids: HashSet<u128>,
    recipients: SetByRef<RecipientRow>,
}

impl PartitionBatch {
    /// The number of the event's link in this share.
    fn link(&mut self, link: LinkKeyRef<'_>) -> u32 {
        let number = match self.links.get_index_of(&link) {
            Some(number) => number,
            None => self.links.insert_full(LinkKey::from(&link)).0,
        };
        number as u32
    }

    fn new(range: PartitionRange) -> Self {
        PartitionBatch {
            range,
            links: Default::default(),
            rollups: HashMap::new(),
            breakdowns: ByRef::default(),
            breakdowns_first: None,
            events: Vec::new(),
            ids: HashSet::new(),
            recipients: SetByRef::default(),
        }
    }
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
    /// Survives `clear` and revokes: the mail client each recipient opened
    /// with, for their clicks that name none (a stale entry of a partition
    /// now elsewhere is still the recipient's client).
    openers: crate::dimensions::Openers,
    /// Survives `clear`: the parses of destinations and Referers.
    memo: crate::dimensions::Memo,
}

impl Batch {
    /// Adds the message at `offset`, with its verdict. `event` is `None` for a
    /// message that was set aside (poison): it adds nothing but still moves the
    /// partition's position. `breakdowns`: the event is counted in the
    /// breakdowns too (not when they hold it already); once an event of a
    /// share is, every later one is.
    pub fn add(
        &mut self,
        partition: i32,
        offset: i64,
        event: Option<(ClickEvent, BucketStart, Reason)>,
        ingested_at: u32,
        breakdowns: bool,
    ) {
        self.opened_at.get_or_insert_with(Instant::now);
        let pb = self.partitions.entry(partition).or_insert_with(|| {
            let range = PartitionRange { partition, first: offset, next: offset + 1 };
            PartitionBatch::new(range)
        });
        pb.range.next = offset + 1;
        if breakdowns && pb.breakdowns_first.is_none() {
            pb.breakdowns_first = Some(offset);
        }
        let Some((event, bucket, reason)) = event else { return };
        let id = event.event_id.0.as_u128();
        let seen_before = self.recent.get(&partition).is_some_and(|r| r.set.contains(&id));
        if seen_before || !pb.ids.insert(id) {
            metrics::counter!("ricochet_aggregator_duplicates_dropped_total").increment(1);
            return;
        }
        let link = pb.link(LinkKeyRef {
            client_id: &event.client_id,
            campaign_id: &event.campaign_id,
            link_id: &event.link_id,
        });
        if let Some(recipient) = &event.recipient_id {
            let r = RecipientRef {
                client_id: event.client_id.as_str(),
                campaign_id: event.campaign_id.as_str(),
                link_id: event.link_id.as_str(),
                bucket_start: Grain::QuarterHour.floor(bucket.0),
                human: reason.is_human() as u8,
                recipient_id: recipient.as_str(),
                is_open: (event.event_type == EventType::Open) as u8,
            };
            pb.recipients.get_or_insert_with(&r, RecipientRef::to_row);
        }
        pb.rollups.entry(LinkBucket { link, bucket }).or_default().count(event.event_type, reason);
        let mut dimensions = self.memo.of(&event);
        self.openers.attribute(&event, &mut dimensions);
        if breakdowns {
            let hour = LinkBucket { link, bucket: BucketStart(Grain::Hour.floor(bucket.0)) };
            let combo = ComboKeyRef::new(hour, &dimensions);
            pb.breakdowns.entry_ref(&combo).or_default().count(event.event_type, reason);
        }
        pb.events.push(EventRow::new(event, reason, dimensions, partition, offset, ingested_at));
        self.num_events += 1;
    }

    /// An open was read: the mail client its pixel names is its
    /// recipient's, for their clicks released from now on
    /// ([`crate::dimensions::Openers`]).
    pub fn remember_open(&mut self, event: &ClickEvent) {
        self.openers.remember(event);
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    pub fn num_events(&self) -> usize {
        self.num_events
    }

    /// An upper bound on the rows of the larger of the flush's two inserts:
    /// minutes sharing a coarser bucket share its row, and combinations
    /// sharing a dimension's value share its breakdown row (a combination
    /// makes a row per dimension and grain for its link and its campaign,
    /// and one per dimension for its campaign's week).
    pub fn num_rollup_rows(&self) -> usize {
        let (rollups, breakdowns) = self.partitions.values().fold((0, 0), |(r, b), p| {
            (
                r + p.rollups.len() * Grain::ALL.len() + 1,
                b + p.breakdowns.len() * DIMENSIONS.len() * (BREAKDOWN_GRAINS.len() * 2 + 1) + 1,
            )
        });
        rollups.max(breakdowns)
    }

    /// The first offset of `partition`'s share counted in the breakdowns.
    pub fn breakdowns_first(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition)?.breakdowns_first
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

    /// Drops one partition's pending share but keeps its dedup window: the
    /// same member reads the share again (a rewind, a refused dead letter).
    pub fn revoke_share(&mut self, partition: i32) {
        if let Some(pb) = self.partitions.remove(&partition) {
            self.num_events -= pb.events.len();
        }
        if self.partitions.is_empty() {
            self.opened_at = None;
        }
    }

    /// One partition's share is stored: its event ids join the dedup window.
    pub fn clear_partition(&mut self, partition: i32) {
        if let Some(pb) = self.partitions.remove(&partition) {
            self.num_events -= pb.events.len();
            self.recent.entry(partition).or_default().remember(pb.ids);
        }
        if self.partitions.is_empty() {
            self.opened_at = None;
        }
    }

    pub fn event_rows(&self) -> impl Iterator<Item = &EventRow> {
        self.partitions.values().flat_map(|p| p.events.iter())
    }

    /// The recipients who clicked, per link and 15-minute bucket, once each.
    pub fn recipient_rows(&self) -> impl ExactSizeIterator<Item = &RecipientRow> {
        self.partitions.values().flat_map(|p| p.recipients.iter()).collect::<Vec<_>>().into_iter()
    }

    /// Raw events of the given partitions.
    pub fn event_rows_of<'a>(&'a self, partitions: &'a [i32]) -> impl Iterator<Item = &'a EventRow> + 'a {
        partitions.iter().filter_map(|p| self.partitions.get(p)).flat_map(|p| p.events.iter())
    }

    /// Recipients of the given partitions.
    pub fn recipient_rows_of<'a>(&'a self, partitions: &'a [i32]) -> impl Iterator<Item = &'a RecipientRow> + 'a {
        partitions.iter().filter_map(|p| self.partitions.get(p)).flat_map(|p| p.recipients.iter())
    }

    /// What one atomic insert carries for `parts` (partitions of this batch):
    /// the deltas at every grain (minutes folded into their coarser buckets),
    /// plus one position row per partition moving it from the part's previous
    /// position to its end, each row tagged with its partition's fence.
    /// Made as they are written: a flush of a busy batch has hundreds of
    /// thousands of rows, which are never collected.
    pub fn rollup_rows<'a>(
        &'a self,
        topic: &'a str,
        parts: &'a [&'a Part],
    ) -> impl Iterator<Item = RollupRow<'a>> + 'a {
        parts.iter().filter_map(|part| Some((*part, self.partitions.get(&part.range.partition)?))).flat_map(
            move |(part, pb)| {
                let key = move |k: &LinkBucket| pb.links[k.link as usize].at(k.bucket);
                let minutes = pb.rollups.iter().map(move |(k, counts)| RollupRow::delta(key(k), Grain::Minute, counts));
                let coarser = Grain::ALL[1..].iter().flat_map(move |grain| {
                    let mut folded: HashMap<LinkBucket, Counts> = HashMap::with_capacity(pb.rollups.len());
                    for (k, counts) in &pb.rollups {
                        let bucket = BucketStart(grain.floor(k.bucket.0));
                        folded.entry(LinkBucket { bucket, ..*k }).or_default().add(counts);
                    }
                    folded.into_iter().map(move |(k, counts)| RollupRow::delta(key(&k), *grain, &counts))
                });
                std::iter::once(RollupRow::position(topic, part))
                    .chain(minutes.chain(coarser).map(move |row| row.fenced(part)))
            },
        )
    }

    /// What the breakdown insert carries for `parts`, in chunks of
    /// [`BreakdownWriter`]'s bytes and their row counts: for each
    /// dimension, its values' counts per link and per campaign (`link_id`
    /// `""`) at the hour and day grains (the campaign's also at the week),
    /// plus a position row per partition whose breakdowns this flush moves,
    /// each row tagged with its partition's fence. Each combination of
    /// values counts once for each dimension. Made as they are sent, one
    /// dimension at a time (its fold's maps reused for the next), never all
    /// collected.
    pub fn breakdown_chunks<'a>(
        &'a self,
        topic: &'a str,
        parts: &'a [&'a Part],
    ) -> impl Iterator<Item = (bytes::Bytes, usize)> + 'a {
        let mut shares = parts.iter().filter_map(|part| Some((*part, self.partitions.get(&part.range.partition)?)));
        let mut writer = BreakdownWriter::default();
        let mut scratch = FoldScratch::default();
        let mut share: Option<(ComboIndex<'a>, usize)> = None;
        std::iter::from_fn(move || loop {
            if let Some(chunk) = writer.full_chunk() {
                return Some(chunk);
            }
            match &mut share {
                Some((index, dimension)) if *dimension < DIMENSIONS.len() => {
                    index.write(*dimension, &mut scratch, &mut writer);
                    *dimension += 1;
                }
                _ => match shares.next() {
                    Some((part, pb)) => {
                        writer.part(topic, part);
                        share = Some((ComboIndex::new(pb), 0));
                    }
                    None => return writer.finish(),
                },
            }
        })
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
    use crate::sink::{decode_breakdowns, BreakdownRow};
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

    /// The batch's parts, each partition fenced with token 100 + partition.
    /// The breakdown insert's bytes for `parts`, its chunks joined (read
    /// with [`decode_breakdowns`]); each chunk holds the rows it says.
    fn breakdown_bytes(b: &Batch, parts: &[&Part]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (chunk, rows) in b.breakdown_chunks("clicks", parts) {
            assert_eq!(decode_breakdowns(&chunk).len(), rows, "a chunk's row count");
            bytes.extend_from_slice(&chunk);
        }
        bytes
    }

    fn parts(b: &Batch, previous: impl Fn(i32) -> Option<i64>) -> Vec<Part> {
        b.ranges()
            .into_iter()
            .map(|range| Part {
                range,
                previous: previous(range.partition),
                breakdowns_previous: previous(range.partition),
                fence: crate::protocol::Fence { generation: 1, token: 100 + range.partition as u64 },
            })
            .collect()
    }

    #[test]
    fn buckets_are_utc_minutes_and_bounded() {
        assert_eq!(BucketStart::of_millis(119_999), Some(BucketStart(60)));
        assert_eq!(BucketStart::of_millis(120_000), Some(BucketStart(120)));
        assert_eq!(BucketStart::of_millis(-1), None);
        assert_eq!(BucketStart::of_millis(i64::MAX), None);
    }

    #[test]
    fn rolls_up_per_link_and_minute_with_one_position_delta_per_partition() {
        let mut b = Batch::default();
        b.add(0, 10, Some(click("a", "l1", 60_000)), 0, true);
        b.add(0, 11, Some(click("a", "l1", 61_000)), 0, true);
        b.add(0, 12, Some(click("a", "l1", 121_000)), 0, true);
        b.add(1, 5, Some(click("b", "l2", 60_000)), 0, true);
        b.add(1, 6, None, 0, true); // poison: moves the position, counts nothing
        assert_eq!(b.num_events(), 4);
        // Partition 0 had 10 stored, partition 1 nothing yet.
        let parts = parts(&b, |p| (p == 0).then_some(10));
        let refs: Vec<&Part> = parts.iter().collect();
        let rows: Vec<RollupRow> = b.rollup_rows("clicks", &refs).collect();
        let bytes = breakdown_bytes(&b, &refs);
        let breakdowns: Vec<BreakdownRow> = decode_breakdowns(&bytes);
        for grain in Grain::ALL {
            let total: u64 = rows.iter().filter(|r| r.grain == grain.secs()).map(|r| r.clicks).sum();
            assert_eq!(total, 4, "{grain:?}");
        }
        assert!(rows.iter().all(|r| r.dimension.is_empty()), "breakdowns have a table of their own");
        assert!(breakdowns.iter().all(|r| r.fence_token == 100 + r.fence_partition as u64));
        let positions: Vec<_> =
            rows.iter().filter(|r| r.grain == 0).map(|r| (r.source_partition, r.position_delta)).collect();
        assert_eq!(positions, vec![(0, 3), (1, 7)], "deltas from the stored position to the next offset");
        let breakdown_positions: Vec<_> =
            breakdowns.iter().filter(|r| r.grain == 0).map(|r| (r.source_partition, r.position_delta)).collect();
        assert_eq!(breakdown_positions, vec![(0, 3), (1, 7)], "the breakdowns' own positions");
        assert!(rows.iter().filter(|r| r.grain != 0).all(|r| r.position_delta == 0 && r.source_topic.is_empty()));
        // Every row carries its partition's fence.
        assert!(rows.iter().all(|r| r.fence_token == 100 + r.fence_partition as u64));
        assert_eq!(rows.iter().filter(|r| r.fence_partition == 1).count(), 5, "l2's minute at 4 grains + a position");
        let l2 = breakdowns.iter().filter(|r| r.fence_partition == 1 && r.grain != 0);
        assert_eq!(
            l2.count(),
            DIMENSIONS.len() * (BREAKDOWN_GRAINS.len() * 2 + 1),
            "a row per dimension at hour and day, for the link and its campaign, and at the week for the campaign"
        );
        let minute = |start| rows.iter().find(|r| r.grain == 60 && r.link_id == "l1" && r.bucket_start == start);
        assert_eq!((minute(60).unwrap().clicks, minute(120).unwrap().clicks), (2, 1));
        // Both minutes of l1 fold into one row at every coarser grain.
        for grain in [Grain::QuarterHour, Grain::Hour, Grain::Day] {
            let l1: Vec<_> = rows.iter().filter(|r| r.grain == grain.secs() && r.link_id == "l1").collect();
            assert_eq!(l1.len(), 1, "{grain:?}");
            assert_eq!((l1[0].bucket_start, l1[0].clicks), (0, 3));
        }
    }

    #[test]
    fn breakdowns_count_every_event_once_per_dimension_at_hours_and_days() {
        let mut b = Batch::default();
        let mut events = Vec::new();
        // Two hours of one link: clicks from webmail and an app, and opens.
        for (i, (ua, referer, ip, open)) in [
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", Some("https://mail.google.com/"), "81.2.69.0", false),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36", Some("https://outlook.live.com/"), "81.2.69.0", false),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36", None, "2001:4860:4860::", false),
            ("Mozilla/5.0", None, "17.58.0.0", true),
            ("Mozilla/4.0 (compatible; ms-office; MSOffice 16)", None, "81.2.69.0", true),
        ]
        .into_iter()
        .cycle()
        .take(12)
        .enumerate()
        {
            let (mut e, _, _) = click("a", "l1", 3_600_000 * (i as i64 % 2) + 1_000);
            e.user_agent = Some(ua.into());
            e.referer = referer.map(Into::into);
            e.client_ip = Some(ip.into());
            if open {
                e.event_type = EventType::Open;
            }
            let reason = if open && ua == "Mozilla/5.0" { Reason::ApplePrivacy } else { Reason::Human };
            events.push((crate::dimensions::of(&e), e.event_type, reason));
            let bucket = BucketStart::of_millis(e.event_time_ms).unwrap();
            b.add(0, i as i64, Some((e, bucket, reason)), 0, true);
        }
        let parts = parts(&b, |_| None);
        let refs: Vec<&Part> = parts.iter().collect();
        let bytes = breakdown_bytes(&b, &refs);
        let all: Vec<BreakdownRow> = decode_breakdowns(&bytes);
        let clicks = events.iter().filter(|e| e.1 == EventType::Click).count() as u64;
        // The campaign's rows count what the link's do (its only link here).
        let (rows, campaign): (Vec<_>, Vec<_>) = all.iter().filter(|r| r.grain != 0).partition(|r| r.link_id == "l1");
        let (weeks, campaign): (Vec<_>, Vec<_>) = campaign.into_iter().partition(|r| r.grain == Grain::Week.secs());
        let key = |r: &&BreakdownRow<'_>| {
            (r.grain, r.dimension.to_owned(), r.value.to_owned(), r.bucket_start, r.clicks, r.opens, r.human_opens)
        };
        let mut a: Vec<_> = rows.iter().map(key).collect();
        let mut c: Vec<_> = campaign.iter().map(key).collect();
        a.sort_unstable();
        c.sort_unstable();
        assert_eq!(a, c);
        // The campaign's week rows: its day rows folded by week (links have none).
        let mut folded: std::collections::BTreeMap<_, (u64, u64, u64)> = Default::default();
        for r in campaign.iter().filter(|r| r.grain == Grain::Day.secs()) {
            let sums = folded.entry((r.dimension, r.value.to_owned(), Grain::Week.floor(r.bucket_start))).or_default();
            *sums = (sums.0 + r.clicks, sums.1 + r.opens, sums.2 + r.human_opens);
        }
        let weekly: std::collections::BTreeMap<_, _> = weeks
            .iter()
            .map(|r| ((r.dimension, r.value.to_owned(), r.bucket_start), (r.clicks, r.opens, r.human_opens)))
            .collect();
        assert_eq!(weekly.len(), weeks.len(), "one week row per (week, value)");
        assert_eq!(weekly, folded);
        assert!(campaign.iter().all(|r| r.link_id.is_empty() && r.campaign_id == "camp"));
        for grain in BREAKDOWN_GRAINS {
            for (d, dimension) in DIMENSIONS.into_iter().enumerate() {
                let of_dim: Vec<_> =
                    rows.iter().filter(|r| r.dimension == dimension && r.grain == grain.secs()).collect();
                assert_eq!(of_dim.iter().map(|r| r.clicks).sum::<u64>(), clicks, "{dimension} at {grain:?}");
                // Each value's row counts exactly the events with that value, once.
                for r in &of_dim {
                    let mine = |e: &&(crate::dimensions::EventDimensions, EventType, Reason)| {
                        e.0.values()[d] == r.value
                            && (grain == Grain::Day
                                || events.iter().position(|x| std::ptr::eq(x, *e)).unwrap() % 2
                                    == (r.bucket_start / 3600) as usize)
                    };
                    let want_clicks = events.iter().filter(|e| mine(e) && e.1 == EventType::Click).count() as u64;
                    let want_human_opens =
                        events.iter().filter(|e| mine(e) && e.1 == EventType::Open && e.2.is_human()).count() as u64;
                    let want_apple = events.iter().filter(|e| mine(e) && e.2 == Reason::ApplePrivacy).count() as u64;
                    assert_eq!(
                        (r.clicks, r.human_opens, r.open_apple_privacy),
                        (want_clicks, want_human_opens, want_apple),
                        "{r:?}"
                    );
                    assert_eq!(r.opens, r.human_opens + r.machine_opens);
                }
                let buckets: std::collections::HashSet<_> = of_dim.iter().map(|r| (r.bucket_start, &r.value)).collect();
                assert_eq!(buckets.len(), of_dim.len(), "one row per (bucket, value) in a batch");
            }
        }
        let country =
            |v: &str| rows.iter().filter(|r| r.dimension == "country" && r.grain == 86_400 && r.value == v).count();
        assert_eq!((country("GB"), country("US")), (1, 1), "81.2.69.0 is in GB, 17.58.0.0 in US");
        assert!(rows.iter().any(|r| r.dimension == "mail_client" && r.value == "gmail" && r.clicks > 0));
    }

    #[test]
    fn each_campaign_row_sums_its_own_links_rows_and_each_link_row_its_events() {
        let mut b = Batch::default();
        let mut events = Vec::new();
        // One partition: two clients, three campaigns, five links, two
        // countries, events over two days and two weeks (from Sunday noon).
        for i in 0..60i64 {
            let (client, campaign, link) =
                [("a", "c1", "l1"), ("a", "c1", "l2"), ("a", "c2", "l3"), ("b", "c1", "l4"), ("b", "c3", "l5")]
                    [(i % 5) as usize];
            let sunday_noon = i64::from(ricochet_warehouse::tables::WEEK_START - 43_200) * 1000;
            let (mut e, _, _) = click(client, link, sunday_noon + (i % 7) * 9_000_000 + i);
            e.campaign_id = CampaignId::parse(campaign).unwrap();
            e.client_ip = Some(if i % 3 == 0 { "81.2.69.0" } else { "17.58.0.0" }.into());
            let bucket = BucketStart::of_millis(e.event_time_ms).unwrap();
            events.push(((client, campaign, link), crate::dimensions::of(&e), bucket.0));
            b.add(0, i, Some((e, bucket, Reason::Human)), 0, true);
        }
        let parts = parts(&b, |_| None);
        let refs: Vec<&Part> = parts.iter().collect();
        let bytes = breakdown_bytes(&b, &refs);
        let rows: Vec<BreakdownRow> = decode_breakdowns(&bytes).into_iter().filter(|r| r.grain != 0).collect();
        let key = |r: &BreakdownRow<'_>| {
            (
                r.dimension.to_owned(),
                r.grain,
                r.client_id.to_owned(),
                r.campaign_id.to_owned(),
                r.bucket_start,
                r.value.to_owned(),
            )
        };
        let mut from_links: HashMap<_, u64> = HashMap::new();
        for r in rows.iter().filter(|r| !r.link_id.is_empty()) {
            *from_links.entry(key(r)).or_default() += r.clicks;
            if r.grain == Grain::Day.secs() {
                let (dimension, _, client, campaign, day, value) = key(r);
                let week = (dimension, Grain::Week.secs(), client, campaign, Grain::Week.floor(day), value);
                *from_links.entry(week).or_default() += r.clicks;
            }
            // A link's row counts its own events with its value, once.
            let (d, grain) = (
                DIMENSIONS.iter().position(|d| *d == r.dimension).unwrap(),
                Grain::ALL.iter().find(|g| g.secs() == r.grain).unwrap(),
            );
            let want = events
                .iter()
                .filter(|(owner, dims, minute)| {
                    *owner == (r.client_id, r.campaign_id, r.link_id)
                        && dims.values()[d] == r.value
                        && grain.floor(*minute) == r.bucket_start
                })
                .count() as u64;
            assert_eq!(r.clicks, want, "{r:?}");
        }
        let campaigns: HashMap<_, u64> =
            rows.iter().filter(|r| r.link_id.is_empty()).map(|r| (key(r), r.clicks)).collect();
        assert_eq!(campaigns.len(), rows.iter().filter(|r| r.link_id.is_empty()).count(), "one row per campaign key");
        assert_eq!(campaigns, from_links, "each campaign's rows are its own links' rows summed");
        let weeks: HashSet<_> = campaigns.keys().filter(|k| k.1 == Grain::Week.secs()).map(|k| k.4).collect();
        assert_eq!(weeks.len(), 2, "the events span two weeks: {weeks:?}");
        assert_eq!(
            campaigns
                .keys()
                .filter(|k| k.0 == "country" && k.1 == 86_400)
                .map(|k| (&k.2, &k.3))
                .collect::<HashSet<_>>()
                .len(),
            4
        );
    }

    #[test]
    fn a_value_made_twice_is_still_one_row() {
        // Two links of one campaign whose destinations differ but carry the
        // same utm_source: each destination's tags are parsed (and their
        // strings allocated) on their own, and the campaign still has one
        // "news" row per bucket, counting both links' clicks.
        let mut b = Batch::default();
        for (offset, link) in ["l1", "l2"].into_iter().enumerate() {
            let (mut e, bucket, reason) = click("a", link, 3_600_000);
            e.destination_url = format!("https://x.example/{link}?utm_source=news");
            b.add(0, offset as i64, Some((e, bucket, reason)), 0, true);
        }
        let parts = parts(&b, |_| None);
        let refs: Vec<&Part> = parts.iter().collect();
        let bytes = breakdown_bytes(&b, &refs);
        let rows = decode_breakdowns(&bytes);
        let news: Vec<_> = rows
            .iter()
            .filter(|r| r.dimension == "utm_source" && r.link_id.is_empty() && r.grain == Grain::Hour.secs())
            .map(|r| (r.value, r.clicks))
            .collect();
        assert_eq!(news, [("news", 2)]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

        /// Whatever the events and however they share owners and buckets,
        /// each breakdown row counts exactly its key's events: links at the
        /// hour and day, campaigns at the hour, day and week, every
        /// dimension, and no key twice in one insert.
        #[test]
        fn each_breakdown_row_counts_its_keys_events_once(
            events in proptest::collection::vec((0..3usize, 0..5usize, 0..5usize, 0..(9 * 86_400i64), 0..3usize, 0..3usize), 1..80)
        ) {
            const AGENTS: [&str; 5] = [
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
                "Mozilla/5.0",
                "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
                "curl/8.5.0",
            ];
            const ADDRESSES: [&str; 3] = ["81.2.69.0", "17.58.0.0", "2001:4860:4860::"];
            const REFERERS: [Option<&str>; 3] = [Some("https://mail.google.com/"), Some("https://outlook.live.com/"), None];
            // From a Friday: the events span two weeks.
            let start = i64::from(ricochet_warehouse::tables::WEEK_START - 3 * 86_400);
            let mut b = Batch::default();
            // By (client, campaign, link or "", dimension, grain, bucket, value).
            type Key = (String, String, String, String, u32, u32, String);
            let mut want: HashMap<Key, BreakdownCounts> = HashMap::new();
            for (offset, &(client, link, agent, secs, address, kind)) in events.iter().enumerate() {
                let client = ["a", "b", "c"][client];
                let (mut e, _, _) = click(client, &format!("l{link}"), (start + secs) * 1000);
                e.campaign_id = CampaignId::parse(format!("c{}", link % 2)).unwrap();
                e.user_agent = Some(AGENTS[agent].into());
                e.client_ip = Some(ADDRESSES[address].into());
                e.referer = REFERERS[(agent + address) % 3].map(Into::into);
                let reason = match kind {
                    0 => Reason::Human,
                    1 => Reason::BotUserAgent,
                    _ => {
                        e.event_type = EventType::Open;
                        if agent == 2 { Reason::ApplePrivacy } else { Reason::Human }
                    }
                };
                let bucket = BucketStart::of_millis(e.event_time_ms).unwrap();
                let values = crate::dimensions::of(&e).values().map(str::to_owned);
                let owners = [(e.link_id.as_str().to_owned(), &[Grain::Hour, Grain::Day][..]), (String::new(), &[Grain::Hour, Grain::Day, Grain::Week][..])];
                for (link_id, grains) in owners {
                    for (d, value) in values.iter().enumerate() {
                        for grain in grains {
                            let key = (client.to_owned(), e.campaign_id.as_str().to_owned(), link_id.clone(), DIMENSIONS[d].to_owned(), grain.secs(), grain.floor(bucket.0), value.clone());
                            want.entry(key).or_default().count(e.event_type, reason);
                        }
                    }
                }
                b.add(0, offset as i64, Some((e, bucket, reason)), 0, true);
            }
            let parts = parts(&b, |_| None);
            let refs: Vec<&Part> = parts.iter().collect();
            let mut got: HashMap<_, BreakdownCounts> = HashMap::new();
            let bytes = breakdown_bytes(&b, &refs);
            for r in decode_breakdowns(&bytes).into_iter().filter(|r| r.grain != 0) {
                let key = (r.client_id.to_owned(), r.campaign_id.to_owned(), r.link_id.to_owned(), r.dimension.to_owned(), r.grain, r.bucket_start, r.value.to_owned());
                proptest::prop_assert_eq!(r.bot_clicks, r.clicks - r.human_clicks);
                proptest::prop_assert_eq!(r.machine_opens, r.opens - r.human_opens);
                let n = |count: u64| u32::try_from(count).expect("a batch's count fits u32");
                let counts = BreakdownCounts {
                    clicks: n(r.clicks),
                    human_clicks: n(r.human_clicks),
                    opens: n(r.opens),
                    human_opens: n(r.human_opens),
                    by_machine_open: [n(r.open_apple_privacy), n(r.open_scanner), n(r.open_prefetch)],
                };
                proptest::prop_assert!(got.insert(key.clone(), counts).is_none(), "{:?} twice", key);
            }
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn grains_are_the_warehouse_grains() {
        assert_eq!(BREAKDOWN_GRAINS.map(Grain::secs), ricochet_warehouse::tables::BREAKDOWN_GRAINS);
        let mut secs: Vec<u32> = Grain::ALL.iter().map(|g| g.secs()).collect();
        secs.reverse();
        assert_eq!(secs, ricochet_warehouse::tables::GRAINS);
        assert_eq!(Grain::QuarterHour.secs(), ricochet_warehouse::tables::RECIPIENT_BUCKET_SECS);
    }

    #[test]
    fn grains_floor_to_their_width() {
        let t = 1_764_567_890; // 2025-12-01T05:44:50Z
        assert_eq!(Grain::Minute.floor(t), t - 50);
        assert_eq!(Grain::QuarterHour.floor(t), t - 14 * 60 - 50);
        assert_eq!(Grain::Hour.floor(t), t - 44 * 60 - 50);
        assert_eq!(Grain::Day.floor(t) % 86_400, 0);
        assert!(t - Grain::Day.floor(t) < 86_400);
    }

    #[test]
    fn recipients_are_collected_once_per_quarter_hour_and_verdict() {
        let mut b = Batch::default();
        let with_recipient = |ms, reason| {
            let (mut e, bucket, _) = click("a", "l1", ms);
            e.recipient_id = Some(ricochet_schemas::RecipientId::parse("r1").unwrap());
            (e, bucket, reason)
        };
        b.add(0, 1, Some(with_recipient(60_000, Reason::Human)), 0, true);
        b.add(0, 2, Some(with_recipient(120_000, Reason::Human)), 0, true); // same quarter hour
        b.add(0, 3, Some(with_recipient(900_000, Reason::Human)), 0, true); // the next one
        b.add(0, 4, Some(with_recipient(60_000, Reason::Head)), 0, true); // a bot click
        b.add(0, 5, Some(click("a", "l1", 60_000)), 0, true); // no recipient
        let mut rows: Vec<_> = b.recipient_rows().map(|r| (r.bucket_start, r.human)).collect();
        rows.sort();
        assert_eq!(rows, vec![(0, 0), (0, 1), (900, 1)]);
    }

    #[test]
    fn borrowed_keys_hash_and_compare_as_their_owned_rows() {
        use std::hash::BuildHasher;
        let state = foldhash::fast::RandomState::default();
        let (e, bucket, _) = click("acme", "l1", 60_000);
        let owned =
            LinkKey { client_id: e.client_id.clone(), campaign_id: e.campaign_id.clone(), link_id: e.link_id.clone() };
        let borrowed = owned.borrowed();
        assert_eq!(state.hash_one(&owned), state.hash_one(borrowed));
        assert!(borrowed.equivalent(&owned) && LinkKey::from(&borrowed) == owned);
        let (other, _, _) = click("acme", "l2", 60_000);
        let other_link =
            LinkKeyRef { client_id: &other.client_id, campaign_id: &other.campaign_id, link_id: &other.link_id };
        assert!(!other_link.equivalent(&owned));
        let borrowed = LinkBucket { link: 0, bucket };
        let r = RecipientRef {
            client_id: "acme",
            campaign_id: "c",
            link_id: "l1",
            bucket_start: 900,
            human: 1,
            recipient_id: "r",
            is_open: 0,
        };
        let row = r.to_row();
        assert_eq!(state.hash_one(&row), state.hash_one(&r));
        assert!(r.equivalent(&row));
        let other = RecipientRef { human: 0, ..r };
        assert!(!other.equivalent(&row));
        assert!(!RecipientRef { is_open: 1, ..r }.equivalent(&row), "an open is not a click");
        let dimensions = EventDimensions {
            country: "DE".into(),
            device: ricochet_signals::dimensions::DeviceClass::Mobile,
            os: "iOS".into(),
            browser: "Mobile Safari".into(),
            mail_client: ricochet_signals::dimensions::MailClient::AppleMail,
            referrer_domain: "".into(),
            utm_source: "news".into(),
            utm_medium: "email".into(),
            utm_campaign: "spring".into(),
        };
        let combo = ComboKeyRef::new(borrowed, &dimensions);
        let owned_combo = ComboKey::from(&combo);
        assert_eq!(
            owned_combo.values.each_ref().map(|v| &**v),
            ["DE", "mobile", "iOS", "Mobile Safari", "apple_mail", "", "news", "email", "spring"]
        );
        assert_eq!(state.hash_one(&owned_combo), state.hash_one(combo));
        assert!(combo.equivalent(&owned_combo));
        let autumn = EventDimensions { utm_campaign: "autumn".into(), ..dimensions.clone() };
        assert!(!ComboKeyRef::new(borrowed, &autumn).equivalent(&owned_combo));
        let mobile =
            EventDimensions { device: ricochet_signals::dimensions::DeviceClass::Desktop, ..dimensions.clone() };
        assert!(!ComboKeyRef::new(borrowed, &mobile).equivalent(&owned_combo));
        // Adding twice through the borrowed keys keeps one entry each.
        let mut b = Batch::default();
        b.add(0, 1, Some(click("acme", "l1", 60_000)), 0, true);
        b.add(0, 2, Some(click("acme", "l1", 61_000)), 0, true);
        b.add(0, 3, Some(click("acme", "l2", 61_000)), 0, true);
        assert_eq!(b.partitions[&0].rollups.len(), 2);
        assert_eq!(b.partitions[&0].links.len(), 2);
        assert_eq!(b.partitions[&0].breakdowns.len(), 2);
    }

    #[test]
    fn splits_human_bot_and_opens() {
        let mut b = Batch::default();
        let (bot, bucket, _) = click("a", "l1", 60_000);
        b.add(0, 1, Some((bot, bucket, Reason::Head)), 0, true);
        let (mut open, bucket, _) = click("a", "l1", 60_000);
        open.event_type = EventType::Open;
        b.add(0, 2, Some((open, bucket, Reason::Human)), 0, true);
        b.add(0, 3, Some(click("a", "l1", 60_000)), 0, true);
        let parts = parts(&b, |_| None);
        let refs: Vec<&Part> = parts.iter().collect();
        let row = b.rollup_rows("clicks", &refs).find(|r| r.grain == 60 && r.link_id == "l1").unwrap();
        assert_eq!((row.clicks, row.human_clicks, row.bot_clicks, row.opens), (2, 1, 1, 1));
        assert_eq!((row.bot_head, row.human_allow_listed), (1, 0));
        let counts = b.partitions[&0].rollups.values().next().unwrap();
        assert_eq!((counts.reason(Reason::Head), counts.reason(Reason::Human)), (1, 1), "opens have no reason");
    }

    #[test]
    fn duplicates_are_dropped_in_the_batch_and_across_flushes() {
        let mut b = Batch::default();
        let (e, bucket, reason) = click("a", "l1", 60_000);
        b.add(0, 1, Some((e.clone(), bucket, reason)), 0, true);
        b.add(0, 2, Some((e.clone(), bucket, reason)), 0, true); // a resend in the same batch
        assert_eq!(b.num_events(), 1);
        assert_eq!(b.ranges()[0].next, 3, "the duplicate still moves the position");
        b.clear();
        b.add(0, 3, Some((e.clone(), bucket, reason)), 0, true); // a resend after the flush
        assert_eq!(b.num_events(), 0);
        b.revoke(&[0]);
        b.add(0, 4, Some((e, bucket, reason)), 0, true); // a new owner starts without the window
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
        b.add(0, 1, Some(click("a", "l1", 60_000)), 0, true);
        b.add(1, 1, Some(click("b", "l2", 60_000)), 0, true);
        b.revoke(&[0]);
        assert_eq!(b.num_events(), 1);
        assert_eq!(b.ranges(), vec![PartitionRange { partition: 1, first: 1, next: 2 }]);
        b.revoke(&[1]);
        assert!(b.is_empty() && b.opened_at().is_none());
    }
}
