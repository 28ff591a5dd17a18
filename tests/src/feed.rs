//! Clicks written straight into the `clicks` topic, as the edge publishes them
//! (Avro, keyed by client id), for aggregator tests: preloading fast, a steady
//! background load that keeps going while aggregators are killed, and the
//! exact tally of what the broker acknowledged, to compare ClickHouse with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use ricochet_schemas::{CampaignId, ClickEvent, ClientId, Codec, EventId, EventType, LinkId, RecipientToken};

use crate::servers::ClickHouse;

/// Whose click: the three ids a rollup row is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub client_id: String,
    pub campaign_id: String,
    pub link_id: String,
}

impl Target {
    pub fn new(client_id: &str, campaign_id: &str, link_id: &str) -> Target {
        Target { client_id: client_id.into(), campaign_id: campaign_id.into(), link_id: link_id.into() }
    }

    /// `clients` clients with `links` links each, so that the load (keyed by
    /// client id) reaches every partition.
    pub fn many(clients: usize, links: usize) -> Vec<Target> {
        (0..clients)
            .flat_map(|c| {
                (0..links).map(move |l| Target::new(&format!("client-{c}"), "camp", &format!("link-{c}-{l}")))
            })
            .collect()
    }

    /// A click on this target at `event_time_ms`.
    pub fn click(&self, event_time_ms: i64) -> ClickEvent {
        ClickEvent {
            event_id: EventId::mint(),
            event_time_ms,
            client_id: ClientId::parse(self.client_id.as_str()).expect("client id"),
            campaign_id: CampaignId::parse(self.campaign_id.as_str()).expect("campaign id"),
            link_id: LinkId::parse(self.link_id.as_str()).expect("link id"),
            recipient_id: None,
            destination_url: "https://x.example/".into(),
            http_method: "GET".into(),
            user_agent: Some("feed".into()),
            referer: None,
            client_ip: None,
            edge_node: "feed".into(),
            event_type: EventType::Click,
            is_prefetch: false,
            recipient_token: RecipientToken::Absent,
            signals: ricochet_schemas::Signals::default(),
        }
    }
}

/// Clicks the broker acknowledged, per link and per (link, minute).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub per_link: BTreeMap<String, u64>,
    pub per_minute: BTreeMap<(String, i64), u64>,
}

impl Tally {
    pub fn total(&self) -> u64 {
        self.per_link.values().sum()
    }

    fn add(&mut self, event: &ClickEvent) {
        let link = event.link_id.as_str().to_owned();
        *self.per_link.entry(link.clone()).or_default() += 1;
        let minute = event.event_time_ms.div_euclid(60_000) * 60;
        *self.per_minute.entry((link, minute)).or_default() += 1;
    }
}

/// An idempotent `acks=all` producer for the clicks topic.
#[derive(Clone)]
pub struct Feed {
    producer: FutureProducer,
    codec: Arc<Codec<ClickEvent>>,
    topic: String,
}

impl Feed {
    /// Keyed by client id with librdkafka's default partitioner (CRC32): the
    /// partition a client lands on differs from the edge's, which most
    /// aggregator tests do not mind (and their client sets are chosen to
    /// reach every partition with it).
    pub fn new(brokers: &str) -> Feed {
        Self::with_partitioner(brokers, "consistent_random")
    }

    /// Keyed by client id with the edge's partitioner (Java's `murmur2`,
    /// `ingest/src/config.rs`): for tests of consumers that find a client's
    /// partition from its id, as the webhook deliverer does.
    pub fn like_the_edge(brokers: &str) -> Feed {
        Self::with_partitioner(brokers, "murmur2_random")
    }

    fn with_partitioner(brokers: &str, partitioner: &str) -> Feed {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("partitioner", partitioner)
            .create()
            .expect("producer");
        Feed { producer, codec: Arc::new(Codec::new()), topic: "clicks".into() }
    }

    /// Sends every event and waits for the broker; panics if one is refused,
    /// since the test could then not know what to expect.
    pub async fn send_all(&self, events: &[ClickEvent], tally: &mut Tally) {
        let mut deliveries = Vec::with_capacity(events.len());
        for event in events {
            let payload = self.codec.encode(event).expect("encode");
            let mut record = FutureRecord::to(&self.topic).key(event.client_id.as_str()).payload(&payload);
            let delivery = loop {
                match self.producer.send_result(record) {
                    Ok(d) => break d,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => panic!("cannot enqueue a click: {e}"),
                }
            };
            deliveries.push(delivery);
        }
        for (event, delivery) in events.iter().zip(deliveries) {
            match delivery.await {
                Ok(Ok(_)) => tally.add(event),
                Ok(Err((e, _))) => panic!("the broker refused a click: {e}"),
                Err(_) => panic!("a click's delivery was cancelled"),
            }
        }
    }
}

/// A steady load of current clicks over `targets`, until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// About `per_second` clicks a second, round robin over `targets`.
    pub fn start(feed: Feed, targets: Vec<Target>, per_second: u64) -> Load {
        Self::start_picking(feed, targets, per_second, false)
    }

    /// [`Load::start`], each click on a target picked at random: no two
    /// flushes of a partition are likely to hold the same clicks per link,
    /// so their rollup blocks differ (a replicated table drops a block
    /// identical to a recent one; `tests/tests/cluster_quiet_flushes.rs`
    /// tests that on its own).
    pub fn start_random(feed: Feed, targets: Vec<Target>, per_second: u64) -> Load {
        Self::start_picking(feed, targets, per_second, true)
    }

    fn start_picking(feed: Feed, targets: Vec<Target>, per_second: u64, random: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (s, n, t) = (stop.clone(), sent.clone(), tally.clone());
        let task = tokio::spawn(async move {
            let tick = Duration::from_millis(20);
            let per_tick = (per_second as usize / 50).max(1);
            let mut i = 0usize;
            while !s.load(Ordering::Relaxed) {
                let now_ms = crate::client::now_millis();
                let events: Vec<ClickEvent> = (0..per_tick)
                    .map(|k| {
                        let t = if random { rand::random_range(0..targets.len()) } else { (i + k) % targets.len() };
                        targets[t].click(now_ms)
                    })
                    .collect();
                i += per_tick;
                let mut batch = Tally::default();
                let started = std::time::Instant::now();
                feed.send_all(&events, &mut batch).await;
                n.fetch_add(batch.total(), Ordering::Relaxed);
                merge(&mut t.lock().unwrap(), batch);
                tokio::time::sleep(tick.saturating_sub(started.elapsed())).await;
            }
        });
        Load { stop, sent, tally, task }
    }

    /// Clicks acknowledged so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task");
        let tally = self.tally.lock().unwrap().clone();
        tally
    }
}

/// Adds `from`'s clicks to `into`'s.
pub fn merge(into: &mut Tally, from: Tally) {
    for (k, v) in from.per_link {
        *into.per_link.entry(k).or_default() += v;
    }
    for (k, v) in from.per_minute {
        *into.per_minute.entry(k).or_default() += v;
    }
}

/// Clicks per link in the minute rollups.
pub async fn rollup_per_link(ch: &ClickHouse) -> BTreeMap<String, u64> {
    per_link(
        ch,
        "SELECT link_id, sum(clicks) FROM click_rollup_minute WHERE client_id != '' GROUP BY link_id FORMAT TSV",
    )
    .await
}

/// Clicks per link at one grain of `click_rollups` (seconds).
pub async fn rollup_per_link_at(ch: &ClickHouse, grain: u32) -> BTreeMap<String, u64> {
    per_link_at(ch, "click_rollups", grain).await
}

async fn per_link_at(ch: &ClickHouse, table: &str, grain: u32) -> BTreeMap<String, u64> {
    per_link_of(ch, table, grain, "").await
}

/// Clicks per link in the rows of one breakdown `dimension` (`""`: the
/// rollups themselves) at `grain`: every event counts once in each dimension.
async fn per_link_of(ch: &ClickHouse, table: &str, grain: u32, dimension: &str) -> BTreeMap<String, u64> {
    let sql = format!(
        "SELECT link_id, sum(clicks) FROM {table} WHERE grain = {grain} AND dimension = '{dimension}' \
         GROUP BY link_id HAVING sum(clicks) > 0 FORMAT TSV"
    );
    per_link(ch, &sql).await
}

async fn per_link(ch: &ClickHouse, sql: &str) -> BTreeMap<String, u64> {
    let body = ch.query(sql).await.expect("rollups per link");
    body.lines()
        .filter_map(|l| {
            let (link, n) = l.split_once('\t')?;
            Some((link.to_owned(), n.parse().ok()?))
        })
        .collect()
}

/// Waits until the rollups hold exactly `tally` per link, then checks that
/// they stay so, that the raw events hold as many distinct clicks, that every
/// coarser grain holds the same per link, and that each stored position is
/// where the raw events end. Panics with what differs.
pub async fn assert_counted_exactly(ch: &ClickHouse, tally: &Tally, within: Duration) {
    assert_counted_exactly_in(ch, "", tally, within).await
}

/// [`assert_counted_exactly`] on the tables named with `suffix` (`_local`: one
/// replica's own copy on a cluster).
pub async fn assert_counted_exactly_in(ch: &ClickHouse, suffix: &str, tally: &Tally, within: Duration) {
    let (rollups, events) = (format!("click_rollups{suffix}"), format!("click_events{suffix}"));
    let deadline = std::time::Instant::now() + within;
    loop {
        let seen = per_link_at(ch, &rollups, 60).await;
        if seen == tally.per_link {
            break;
        }
        let total: u64 = seen.values().sum();
        assert!(
            total <= tally.total(),
            "counted twice: rollups hold {total} clicks, {} were sent\nrollups {seen:?}\nsent    {:?}",
            tally.total(),
            tally.per_link
        );
        assert!(
            std::time::Instant::now() < deadline,
            "after {within:?} the rollups hold {total} of {} clicks\nrollups {seen:?}\nsent    {:?}",
            tally.total(),
            tally.per_link
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Nothing counted twice by a late flush or a ghost insert.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for grain in [60, 900, 3600, 86_400] {
        assert_eq!(per_link_at(ch, &rollups, grain).await, tally.per_link, "rollups at grain {grain} s");
    }
    // The breakdowns, with positions of their own: each dimension counts
    // every click exactly once too, per link and per campaign.
    use ricochet_warehouse::tables::{BREAKDOWN_DIMENSIONS, BREAKDOWN_GRAINS, BREAKDOWN_WEEK};
    let breakdowns = format!("click_breakdowns{suffix}");
    for grain in BREAKDOWN_GRAINS {
        for dimension in BREAKDOWN_DIMENSIONS {
            let mut seen = per_link_of(ch, &breakdowns, grain, dimension).await;
            let campaigns = seen.remove("").unwrap_or(0);
            assert_eq!(seen, tally.per_link, "breakdown by {dimension} at grain {grain} s, per link");
            assert_eq!(campaigns, tally.total(), "breakdown by {dimension} at grain {grain} s, per campaign");
        }
    }
    // The campaigns' week rows (links have none).
    for dimension in BREAKDOWN_DIMENSIONS {
        let seen = per_link_of(ch, &breakdowns, BREAKDOWN_WEEK, dimension).await;
        let want = BTreeMap::from([(String::new(), tally.total())]);
        assert_eq!(seen, want, "breakdown by {dimension} at the week, per campaign only");
    }
    assert_eq!(
        stored_positions(ch, &breakdowns).await,
        stored_positions(ch, &rollups).await,
        "the breakdowns' positions against the rollups'"
    );
    assert_eq!(
        ch.number(&format!("SELECT count(DISTINCT event_id) FROM {events}")).await,
        tally.total(),
        "distinct raw events"
    );
    // Each stored position (the sum of its flushes' deltas) is exactly one past
    // the partition's last event: a range stored twice would push it further,
    // a lost position row would leave it behind.
    assert_eq!(
        ch.query(&format!(
            "SELECT kafka_partition, max(kafka_offset) + 1 FROM {events} GROUP BY kafka_partition \
             ORDER BY kafka_partition FORMAT TSV"
        ))
        .await
        .expect("events per partition"),
        ch.query(&format!(
            "SELECT source_partition, sum(position_delta) FROM {rollups} WHERE grain = 0 \
             AND source_partition GLOBAL IN (SELECT kafka_partition FROM {events}) \
             GROUP BY source_partition ORDER BY source_partition FORMAT TSV"
        ))
        .await
        .expect("stored positions"),
        "stored positions (partition, next offset) against the raw events"
    );
}

/// The stored Kafka positions in `table` (`click_rollups`, or a replica's own
/// `click_rollups_local`): per partition of the clicks topic, the sum of its
/// position rows' `position_delta` (grain 0), as the aggregator reads them
/// (`ricochet_warehouse::positions`). A partition without position rows is absent.
pub async fn stored_positions(ch: &ClickHouse, table: &str) -> BTreeMap<i32, i64> {
    let sql = format!(
        "SELECT source_partition, sum(position_delta) FROM {table} \
         WHERE grain = 0 AND client_id = '' AND source_topic = 'clicks' \
         GROUP BY source_partition ORDER BY source_partition FORMAT TSV"
    );
    let body = ch.query(&sql).await.unwrap_or_else(|e| panic!("stored positions in {table}: {e}"));
    body.lines()
        .map(|l| {
            let (p, n) = l.split_once('\t').unwrap_or_else(|| panic!("stored positions: bad line {l:?}"));
            (p.parse().expect("partition"), n.parse().expect("position"))
        })
        .collect()
}

/// The high watermark (one past the last offset) of every partition of the
/// clicks topic, from the broker: where a stored position must end once every
/// message was counted (every message of the topic is a click in these tests).
pub async fn high_watermarks(brokers: &str) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("watermark consumer");
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some("clicks"), timeout).expect("clicks topic metadata");
        let topic = metadata.topics().iter().find(|t| t.name() == "clicks").expect("the clicks topic");
        topic
            .partitions()
            .iter()
            .map(|p| {
                let (_, high) =
                    consumer.fetch_watermarks("clicks", p.id(), timeout).expect("the clicks topic's watermarks");
                (p.id(), high)
            })
            .collect()
    })
    .await
    .expect("watermark task")
}

/// Waits until `ch` has fetched every part its replication queue knows of
/// (`SYSTEM SYNC REPLICA`) for the raw events and the rollups: after a
/// replica was down, reads of its `_local` tables (or through `Distributed`,
/// which may pick it) are then complete.
pub async fn sync_replica(ch: &ClickHouse) {
    for table in ["click_events_local", "click_rollups_local"] {
        ch.query(&format!("SYSTEM SYNC REPLICA {table}")).await.unwrap_or_else(|e| panic!("sync {table}: {e}"));
    }
}
