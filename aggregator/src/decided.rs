//! The decided-events topic: every click and open, once its verdict is final,
//! published for consumers outside the counting path (webhooks, Kafka
//! Connect, a sender's own services), as `DecidedEvent` (Avro, Confluent
//! framing, `schemas/avro/decided_event.v1.avsc`), keyed by client id.
//!
//! ## How each event gets there once
//!
//! Partition N of the decided topic mirrors partition N of the clicks topic,
//! and only the member that owns clicks partition N writes to it, in offset
//! order (`acks=all`, one request in flight, no delivery timeout: a record is
//! never skipped while a later one lands). Each record carries its source
//! partition and offset.
//!
//! - **After the count, never before.** A flush publishes a partition's events
//!   only once its fenced rollup insert is stored (`Verdict::Stored`): what is
//!   published is exactly what was counted, and a replay, which may judge an
//!   event again with less context, can never publish a second verdict for it.
//! - **Catching up.** A member that died between the insert and the broker's
//!   acknowledgement leaves a gap: counted, not published. Whoever acquires
//!   the partition next reads the decided partition's last record (its source
//!   offset S) and the stored position P, reads the clicks partition's
//!   messages S+1..P again from Kafka, and looks their stored verdicts up in
//!   `click_events` by sort key ([`crate::sql::stored_decided`]), publishing
//!   them in order before anything new. The same catch-up runs when a publish
//!   could not even be enqueued (the broker's queue full), and for a batch
//!   whose insert was settled as stored after an unknown outcome. Events
//!   erased since (a recipient's erasure) are not published.
//! - **Handing over.** On revocation the member waits for its records to be
//!   acknowledged before the partition moves, so the next owner's catch-up
//!   sees them.
//!
//! - **Where it starts.** An empty decided partition has no last record to
//!   read. So before the aggregator makes the topic it marks where each
//!   partition starts: the clicks partitions' stored positions at that moment,
//!   committed as the offsets of the consumer group `{group}.decided-start` on
//!   the clicks topic ([`ensure_topic`]). The catch-up of an empty partition
//!   starts at its mark: a new deployment publishes from offset 0, one that
//!   turns the topic on later publishes what it counts from then on, and a
//!   member killed before its very first records landed is caught up like any
//!   other. (A topic made by hand, without marks, starts at the stored position
//!   of its first acquisition.)
//!
//! What is left: a member frozen after its insert was stored, waking up after
//! the next owner caught up, can still publish its batch, and a produce
//! request retried after a lost answer lands twice, so an event can appear
//! twice, with the same `event_id` (and the stored verdict). Consumers
//! deduplicate on `event_id`: at least once, exactly once in the absence of a
//! member that wakes up late.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickhouse::Row;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use ricochet_registry::KafkaConnection;
use ricochet_schemas::{ClickEvent, Codec, DecidedEvent, Reason};
use serde::Deserialize;

use crate::sink::{ClickHouseSink, EventRow};

/// How long reading a partition's end or a gap may wait for the broker.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Events looked up in ClickHouse per query.
const LOOKUP_CHUNK: usize = 500;
/// Events one catch-up step publishes at most: it runs on the consumer's
/// thread (in the rebalance callback, or after a flush), so a long gap (the
/// topic turned off for a day) is filled a step per flush instead of holding
/// the consumer past its poll interval.
const CATCH_UP_STEP: i64 = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum DecidedError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("{0}")]
    Read(String),
}

/// Encoded decided events, with their keys (client ids), in offset order.
pub type Records = Vec<(String, Vec<u8>)>;

/// A stored flush's decided events of one partition, encoded before the
/// batch lets go of them, and the position they end at.
pub struct FlushRecords {
    pub partition: i32,
    pub next: i64,
    pub records: Records,
}

/// Partitions whose published records may have a gap: caught up before
/// anything new is published for them. Shared with the delivery callback.
#[derive(Clone, Default)]
struct Behind(Arc<Mutex<HashSet<i32>>>);

impl Behind {
    fn mark(&self, partition: i32) {
        self.0.lock().unwrap().insert(partition);
    }
    fn take(&self, partition: i32) -> bool {
        self.0.lock().unwrap().remove(&partition)
    }
    fn any(&self) -> bool {
        !self.0.lock().unwrap().is_empty()
    }
    fn all(&self) -> Vec<i32> {
        self.0.lock().unwrap().iter().copied().collect()
    }
}

struct Delivery(Behind);

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => metrics::counter!("ricochet_aggregator_decided_published_total").increment(1),
            Err((e, message)) => {
                metrics::counter!("ricochet_aggregator_decided_failures_total").increment(1);
                tracing::error!(error = %e, partition = message.partition(), "a decided event was not published; catching up");
                self.0.mark(message.partition());
            }
        }
    }
}

/// The aggregator's side of the decided topic.
pub struct DecidedPublisher {
    producer: ThreadedProducer<Delivery>,
    reader: ClientConfig,
    topic: String,
    clicks_topic: String,
    codec: Codec<DecidedEvent>,
    clicks: Codec<ClickEvent>,
    behind: Behind,
    /// Reads the start marks ([`ensure_topic`]).
    marks: ClientConfig,
}

impl DecidedPublisher {
    pub fn new(kafka: &KafkaConnection, topic: &str, clicks_topic: &str, group_id: &str) -> Result<Self, KafkaError> {
        let behind = Behind::default();
        let mut config = kafka.client_config();
        config
            // One request in flight keeps the order through retries without
            // idempotence, whose producer spun its broker thread at ~30 µs of
            // CPU per record against nisshi (docs/benchmarks.md); a retried
            // request can leave a duplicate, which consumers drop by event_id.
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1")
            .set("acks", "all")
            // Never give a record up: a later one must not land past a lost one.
            .set("message.timeout.ms", "0")
            .set("linger.ms", "20");
        let producer = config.create_with_context(Delivery(behind.clone()))?;
        let mut reader = kafka.client_config();
        reader
            .set("group.id", "ricochet-decided-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_uncommitted");
        Ok(DecidedPublisher {
            producer,
            reader,
            topic: topic.to_owned(),
            clicks_topic: clicks_topic.to_owned(),
            codec: Codec::new(),
            clicks: Codec::new(),
            behind,
            marks: marks_config(kafka, group_id),
        })
    }

    /// The stored events of a partition's flush, encoded now (the batch is
    /// dropped once the insert is stored) and sent by [`Self::publish`].
    pub fn encode<'a>(&self, partition: i32, rows: impl Iterator<Item = &'a EventRow>) -> Records {
        rows.map(|row| {
            let event = from_row(row, partition);
            let mut bytes = Vec::with_capacity(256);
            event.encode_wire(&mut bytes);
            (event.client_id, bytes)
        })
        .collect()
    }

    /// Publishes a stored flush of `partition`, after catching up a gap first.
    pub fn publish(
        &self,
        rt: &tokio::runtime::Handle,
        sink: &ClickHouseSink,
        partition: i32,
        stored: i64,
        records: Records,
    ) {
        if self.behind.take(partition) {
            // The catch-up reads up to `stored`, this flush included (a step
            // at a time: if more is left, the partition stays behind).
            self.catch_up(rt, sink, partition, Some(stored));
            return;
        }
        self.send(partition, records);
    }

    fn send(&self, partition: i32, records: Records) {
        for (key, payload) in records {
            let record = BaseRecord::to(&self.topic).partition(partition).key(&key).payload(&payload);
            if let Err((e, _)) = self.producer.send(record) {
                metrics::counter!("ricochet_aggregator_decided_failures_total").increment(1);
                tracing::warn!(error = %e, partition, "cannot enqueue a decided event; catching up later");
                self.behind.mark(partition);
                return;
            }
        }
    }

    /// A partition may have a gap (an insert settled as stored after an
    /// unknown outcome): caught up at its next flush or [`Self::catch_up_behind`].
    pub fn mark_behind(&self, partition: i32) {
        self.behind.mark(partition);
    }

    /// Whether some partition waits to be caught up.
    pub fn is_behind(&self) -> bool {
        self.behind.any()
    }

    /// Catches up every partition marked behind that this member still owns
    /// (`owned`: partition and stored position).
    pub fn catch_up_behind(
        &self,
        rt: &tokio::runtime::Handle,
        sink: &ClickHouseSink,
        owned: &HashMap<i32, Option<i64>>,
    ) {
        for p in self.behind.all() {
            if let Some(stored) = owned.get(&p) {
                self.behind.take(p);
                self.catch_up(rt, sink, p, *stored);
            }
        }
    }

    /// Waits for every record sent to be acknowledged (before a partition
    /// moves to another member), at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "decided events still unacknowledged at hand-over");
        }
    }

    /// Publishes what was counted in `partition` up to `stored` but is not in
    /// the decided topic. On failure the partition stays behind, and is
    /// caught up again later; counting never waits for it.
    pub fn catch_up(&self, rt: &tokio::runtime::Handle, sink: &ClickHouseSink, partition: i32, stored: Option<i64>) {
        if let Err(e) = self.try_catch_up(rt, sink, partition, stored) {
            metrics::counter!("ricochet_aggregator_decided_failures_total").increment(1);
            tracing::warn!(error = %e, partition, "cannot catch the decided topic up yet; retrying after the next flush");
            self.behind.mark(partition);
        }
    }

    fn try_catch_up(
        &self,
        rt: &tokio::runtime::Handle,
        sink: &ClickHouseSink,
        partition: i32,
        stored: Option<i64>,
    ) -> Result<(), DecidedError> {
        let Some(stored) = stored else { return Ok(()) };
        // Records of ours still in flight must land before the end is read.
        self.flush(READ_TIMEOUT);
        let published = match self.last_published(partition)? {
            Some(offset) => offset,
            None => match self.start_mark(partition)? {
                Some(start) => start - 1,
                None => {
                    tracing::info!(partition, stored, "decided partition empty and unmarked: publishing from here on");
                    return Ok(());
                }
            },
        };
        if published + 1 >= stored {
            return Ok(());
        }
        let to = stored.min(published + 1 + CATCH_UP_STEP);
        if to < stored {
            // The rest at the next flush; until then this partition's new
            // records wait (they are inside the gap).
            self.behind.mark(partition);
        }
        let gap = self.read_clicks(partition, published + 1, to)?;
        let (client, table) = sink.events_of(partition);
        let mut published_now = 0;
        for chunk in gap.chunks(LOOKUP_CHUNK) {
            let found = rt.block_on(lookup(client, table, chunk))?;
            let mut records = Vec::with_capacity(chunk.len());
            for (offset, click) in chunk {
                // Not stored: erased since, or set aside as poison.
                let Some(row) = found.get(&click.event_id.to_string()) else { continue };
                let event = row.decided(partition, *offset);
                let mut bytes = Vec::with_capacity(256);
                event.encode_wire(&mut bytes);
                records.push((event.client_id, bytes));
            }
            published_now += records.len();
            self.send(partition, records);
        }
        metrics::counter!("ricochet_aggregator_decided_caught_up_total").increment(published_now as u64);
        tracing::info!(partition, from = published + 1, to, stored, published_now, "decided topic caught up");
        Ok(())
    }

    /// The source offset of the decided partition's last record.
    fn last_published(&self, partition: i32) -> Result<Option<i64>, DecidedError> {
        let consumer: BaseConsumer = self.reader.create()?;
        let (low, high) = consumer.fetch_watermarks(&self.topic, partition, READ_TIMEOUT)?;
        if high <= low {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(high - 1))?;
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + READ_TIMEOUT;
        while std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.offset() == high - 1 => {
                    let payload = m.payload().unwrap_or_default();
                    let event = self.codec.decode(payload).map_err(|e| DecidedError::Read(e.to_string()))?;
                    return Ok(Some(event.source_offset));
                }
                Some(Ok(_)) | None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
        Err(DecidedError::Read(format!("the decided partition {partition}'s last record did not come")))
    }

    /// The first offset of the clicks partition to publish, as marked when the
    /// topic was made.
    fn start_mark(&self, partition: i32) -> Result<Option<i64>, DecidedError> {
        let consumer: BaseConsumer = self.marks.create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.clicks_topic, partition);
        let committed = consumer.committed_offsets(tpl, READ_TIMEOUT)?;
        Ok(committed.find_partition(&self.clicks_topic, partition).and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }))
    }

    /// The clicks partition's messages in `[from, to)`, decodable ones only.
    fn read_clicks(&self, partition: i32, from: i64, to: i64) -> Result<Vec<(i64, ClickEvent)>, DecidedError> {
        let consumer: BaseConsumer = self.reader.create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.clicks_topic, partition, Offset::Offset(from))?;
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        let mut last_seen = std::time::Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last_seen = std::time::Instant::now();
                    if m.offset() >= to {
                        break;
                    }
                    if let Some(Ok(click)) = m.payload().map(|p| self.clicks.decode(p)) {
                        out.push((m.offset(), click));
                    }
                    if m.offset() + 1 >= to {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange))) => {
                    return Err(DecidedError::Read(format!("clicks {from}..{to} of partition {partition} expired")))
                }
                Some(Err(e)) => return Err(e.into()),
                None if last_seen.elapsed() > READ_TIMEOUT => {
                    return Err(DecidedError::Read(format!(
                        "clicks {from}..{to} of partition {partition} did not come"
                    )))
                }
                None => {}
            }
        }
        Ok(out)
    }
}

/// An event as `click_events` holds it ([`crate::sql::stored_decided`]).
#[derive(Row, Deserialize)]
struct StoredEvent {
    event_id: String,
    event_type: String,
    event_time_ms: i64,
    client_id: String,
    campaign_id: String,
    link_id: String,
    recipient_id: String,
    is_human: u8,
    reason: String,
    country: String,
    device: String,
    os: String,
    browser: String,
    mail_client: String,
    referrer_domain: String,
    utm_source: String,
    utm_medium: String,
    utm_campaign: String,
    destination_url: String,
}

impl StoredEvent {
    fn decided(&self, partition: i32, offset: i64) -> DecidedEvent {
        DecidedEvent {
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            occurred_at_ms: self.event_time_ms,
            client_id: self.client_id.clone(),
            campaign_id: self.campaign_id.clone(),
            link_id: self.link_id.clone(),
            recipient_id: (!self.recipient_id.is_empty()).then(|| self.recipient_id.clone()),
            verdict: verdict(self.is_human == 1, self.event_type == "click").into(),
            reason: self.reason.clone(),
            country: self.country.clone(),
            device: self.device.clone(),
            os: self.os.clone(),
            browser: self.browser.clone(),
            mail_client: self.mail_client.clone(),
            referrer_domain: self.referrer_domain.clone(),
            utm_source: self.utm_source.clone(),
            utm_medium: self.utm_medium.clone(),
            utm_campaign: self.utm_campaign.clone(),
            destination_url: self.destination_url.clone(),
            source_partition: partition,
            source_offset: offset,
        }
    }
}

async fn lookup(
    client: &clickhouse::Client,
    table: &str,
    chunk: &[(i64, ClickEvent)],
) -> Result<HashMap<String, StoredEvent>, DecidedError> {
    let set = |f: &dyn Fn(&ClickEvent) -> String| -> Vec<String> {
        let s: std::collections::BTreeSet<String> = chunk.iter().map(|(_, c)| f(c)).collect();
        s.into_iter().collect()
    };
    let seconds = |c: &ClickEvent| c.event_time_ms.div_euclid(1000).clamp(0, u32::MAX as i64) as u32;
    let from = chunk.iter().map(|(_, c)| seconds(c)).min().unwrap_or(0);
    let to = chunk.iter().map(|(_, c)| seconds(c)).max().unwrap_or(0);
    let (clients, campaigns, links, events) = (
        set(&|c| c.client_id.to_string()),
        set(&|c| c.campaign_id.to_string()),
        set(&|c| c.link_id.to_string()),
        set(&|c| c.event_id.to_string()),
    );
    let sql = crate::sql::stored_decided(table, (clients.len(), campaigns.len(), links.len(), events.len()));
    let mut query = client.query(&sql);
    for value in clients.iter().chain(&campaigns).chain(&links) {
        query = query.bind(value);
    }
    query = query.bind(from).bind(to);
    for value in &events {
        query = query.bind(value);
    }
    let rows = query.fetch_all::<StoredEvent>().await?;
    Ok(rows.into_iter().map(|r| (r.event_id.clone(), r)).collect())
}

/// `human`, or `bot` for a click and `machine` for an open, as the API and
/// the exports say it.
fn verdict(human: bool, click: bool) -> &'static str {
    match (human, click) {
        (true, _) => "human",
        (false, true) => "bot",
        (false, false) => "machine",
    }
}

/// The decided event of a row the flush stored.
fn from_row(row: &EventRow, partition: i32) -> DecidedEvent {
    let click = row.event_type == 1;
    DecidedEvent {
        event_id: row.event_id.to_string(),
        event_type: if click { "click" } else { "open" }.into(),
        occurred_at_ms: row.event_time_ms,
        client_id: row.client_id.clone(),
        campaign_id: row.campaign_id.clone(),
        link_id: row.link_id.clone(),
        recipient_id: (!row.recipient_id.is_empty()).then(|| row.recipient_id.clone()),
        verdict: verdict(row.is_human == 1, click).into(),
        reason: Reason::from_code(row.verdict_reason as u8 as u32).map_or("human", |r| r.as_str()).into(),
        country: row.country.to_string(),
        device: row.device.to_string(),
        os: row.os.to_string(),
        browser: row.browser.to_string(),
        mail_client: row.mail_client.to_string(),
        referrer_domain: row.referrer_domain.to_string(),
        utm_source: row.utm_source.to_string(),
        utm_medium: row.utm_medium.to_string(),
        utm_campaign: row.utm_campaign.to_string(),
        destination_url: row.destination_url.clone(),
        source_partition: partition,
        source_offset: row.kafka_offset,
    }
}

/// The consumer group whose committed offsets on the clicks topic mark where
/// each decided partition starts.
fn marks_config(kafka: &KafkaConnection, group_id: &str) -> ClientConfig {
    let mut config = kafka.client_config();
    config.set("group.id", format!("{group_id}.decided-start")).set("enable.auto.commit", "false");
    config
}

/// Makes the decided topic, with as many partitions as the clicks topic
/// (partition N mirrors partition N), unless it exists. Before making it,
/// marks where each partition starts: the clicks partitions' stored
/// positions now (see the module doc). A crash between the two marks again at
/// the next start.
pub async fn ensure_topic(
    kafka: &KafkaConnection,
    topic: &str,
    clicks_topic: &str,
    group_id: &str,
    sink: &ClickHouseSink,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let consumer: BaseConsumer = kafka.client_config().create()?;
    // All topics: asking for one by name may create it where the broker auto-creates.
    let metadata = consumer.fetch_metadata(None, READ_TIMEOUT).context("reading the topics")?;
    if metadata.topics().iter().any(|t| t.name() == topic) {
        return Ok(());
    }
    let partitions =
        metadata.topics().iter().find(|t| t.name() == clicks_topic).map_or(0, |t| t.partitions().len()) as i32;
    let all: Vec<i32> = (0..partitions).collect();
    let (stored, _) = sink.read_positions_of(&all).await.context("reading the stored positions")?;
    let mut marks = TopicPartitionList::new();
    for p in &all {
        marks.add_partition_offset(clicks_topic, *p, Offset::Offset(stored.get(p).copied().unwrap_or(0)))?;
    }
    let marker: BaseConsumer = marks_config(kafka, group_id).create()?;
    marker.commit(&marks, rdkafka::consumer::CommitMode::Sync).context("marking where the decided topic starts")?;
    tracing::info!(topic, partitions, "making the decided topic; it starts at the stored positions");
    let spec = ricochet_registry::topics::TopicSpec { name: topic.to_owned(), partitions, compacted: false };
    ricochet_registry::topics::ensure(kafka, &[spec]).await.context("creating the decided topic")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_read_as_the_api_says_them() {
        assert_eq!(verdict(true, true), "human");
        assert_eq!(verdict(true, false), "human");
        assert_eq!(verdict(false, true), "bot");
        assert_eq!(verdict(false, false), "machine");
    }
}
