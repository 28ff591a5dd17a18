//! Loading the registry topics (`links`, `clients`) into memory and following them.
//!
//! The tail reads every partition from the beginning without a consumer group
//! (each process needs all of it) and never commits. It reports ready once it
//! has applied everything up to the end offsets it saw at start: an edge that
//! answered before that could 404 a link that exists.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use ricochet_schemas::{ApiKeyRecord, ClientRecord, Codec, CodecError, LinkCount, LinkRecord};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::table::Registry;

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("registry topic {0:?} does not exist or has no partitions")]
    NoTopic(String),
    #[error("metadata task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A handle on the running tail.
#[derive(Clone)]
pub struct RegistryTail {
    ready: Arc<AtomicBool>,
}

impl RegistryTail {
    /// True once everything up to the end offsets seen at start has been applied.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Starts following the links and clients topics into `table` until
    /// `shutdown` is cancelled.
    pub async fn start(
        brokers: &str,
        topics: &RegistryTopics,
        table: Arc<Registry>,
        shutdown: CancellationToken,
    ) -> Result<(RegistryTail, JoinHandle<()>), TailError> {
        Self::start_observed(brokers, topics, table, shutdown, None).await
    }

    /// Like [`start`](Self::start), and also sends every applied record, with its
    /// offset as a version, to `changes` (the aggregator mirrors them into
    /// ClickHouse). Sending waits when the channel is full: a mirror never misses one.
    pub async fn start_observed(
        brokers: &str,
        topics: &RegistryTopics,
        table: Arc<Registry>,
        shutdown: CancellationToken,
        changes: Option<mpsc::Sender<RegistryChange>>,
    ) -> Result<(RegistryTail, JoinHandle<()>), TailError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // librdkafka wants a group id; this one never joins or commits.
            .set("group.id", format!("ricochet-registry-tail-{}", uuid::Uuid::now_v7().simple()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // A pause must reach every edge within a second: do not let the broker
            // hold a fetch for long when there is nothing new.
            .set("fetch.wait.max.ms", "100")
            .create()?;
        let consumer = Arc::new(consumer);

        let mut targets = Vec::new();
        for topic in [&topics.links, &topics.clients, &topics.counts, &topics.api_keys] {
            let consumer = consumer.clone();
            let topic = topic.clone();
            // Metadata and watermark calls block on the network.
            let ends = tokio::task::spawn_blocking(move || end_offsets(&consumer, &topic)).await??;
            targets.extend(ends);
        }
        let mut assignment = TopicPartitionList::new();
        for (topic, partition, _) in &targets {
            assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;

        let ready = Arc::new(AtomicBool::new(false));
        let tail = RegistryTail { ready: ready.clone() };
        let decoders = Decoders::new(topics);
        let mut remaining: Vec<(String, i32, i64)> = targets.into_iter().filter(|(_, _, high)| *high > 0).collect();
        if remaining.is_empty() {
            ready.store(true, Ordering::Release);
        }
        let assigned: Vec<(String, i32)> =
            assignment.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let task = tokio::spawn(async move {
            // Next offset to read per (topic, partition), for the lag gauge.
            let mut positions: std::collections::HashMap<(String, i32), i64> = std::collections::HashMap::new();
            let mut lag_check = tokio::time::interval(Duration::from_secs(5));
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = lag_check.tick() => {
                        let (consumer, assigned, positions) = (consumer.clone(), assigned.clone(), positions.clone());
                        // Watermark requests block on the network.
                        if let Ok(Some(lag)) = tokio::task::spawn_blocking(move || registry_lag(&consumer, &assigned, &positions)).await {
                            metrics::gauge!("ricochet_registry_lag_records").set(lag as f64);
                        }
                        continue;
                    }
                    m = consumer.recv() => m,
                };
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "registry tail: consume error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                // Tombstones (no payload) are ignored: links and clients are retired by
                // status, never deleted by key.
                if let Some(payload) = message.payload() {
                    match decoders.apply(&table, message.topic(), payload, message.offset()) {
                        Ok(Some(change)) => {
                            if let Some(tx) = &changes {
                                let _ = tx.send(change).await;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            metrics::counter!("ricochet_registry_undecodable_total").increment(1);
                            tracing::error!(error = %e, topic = message.topic(), offset = message.offset(), "registry tail: undecodable record skipped");
                        }
                    }
                }
                positions.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
                metrics::gauge!("ricochet_registry_links").set(table.len() as f64);
                if !remaining.is_empty() {
                    let (topic, partition, next) = (message.topic(), message.partition(), message.offset() + 1);
                    remaining.retain(|(t, p, high)| !(t == topic && *p == partition && next >= *high));
                    if remaining.is_empty() {
                        tracing::info!(links = table.len(), "registry loaded; ready");
                        ready.store(true, Ordering::Release);
                    }
                }
            }
        });
        Ok((tail, task))
    }
}

/// One decoder per registry topic.
struct Decoders {
    topics: RegistryTopics,
    links: Codec<LinkRecord>,
    clients: Codec<ClientRecord>,
    counts: Codec<LinkCount>,
    api_keys: Codec<ApiKeyRecord>,
}

impl Decoders {
    fn new(topics: &RegistryTopics) -> Self {
        Decoders {
            topics: topics.clone(),
            links: Codec::new(),
            clients: Codec::new(),
            counts: Codec::new(),
            api_keys: Codec::new(),
        }
    }

    /// Decodes a record by its topic and applies it; returns what a mirror needs to see.
    fn apply(
        &self,
        table: &Registry,
        topic: &str,
        payload: &[u8],
        version: i64,
    ) -> Result<Option<RegistryChange>, CodecError> {
        if topic == self.topics.links {
            let link = self.links.decode(payload)?;
            table.apply(link.clone());
            Ok(Some(RegistryChange::Link(link, version)))
        } else if topic == self.topics.clients {
            let client = self.clients.decode(payload)?;
            table.apply_client(client.clone());
            Ok(Some(RegistryChange::Client(client, version)))
        } else if topic == self.topics.counts {
            table.apply_count(self.counts.decode(payload)?);
            Ok(None)
        } else {
            table.apply_api_key(self.api_keys.decode(payload)?);
            Ok(None)
        }
    }
}

/// A record the tail applied, with its offset (a version that only grows per key).
#[derive(Clone, Debug)]
pub enum RegistryChange {
    Link(LinkRecord, i64),
    Client(ClientRecord, i64),
}

/// The registry's compacted topics.
#[derive(Clone, Debug)]
pub struct RegistryTopics {
    pub links: String,
    pub clients: String,
    /// Click counts of limited links, fed back by the aggregator.
    pub counts: String,
    /// Clients' API keys, hashed.
    pub api_keys: String,
}

impl RegistryTopics {
    /// What `topics::ensure` needs to create them: compacted, one partition each
    /// (the registry is small, and one partition keeps every key's records in order).
    pub fn specs(&self) -> Vec<crate::topics::TopicSpec> {
        [&self.links, &self.clients, &self.counts, &self.api_keys]
            .into_iter()
            .map(|name| crate::topics::TopicSpec { name: name.clone(), partitions: 1, compacted: true })
            .collect()
    }
}

/// Records between what the tail applied and the topics' ends; `None` if the
/// broker did not answer.
fn registry_lag(
    consumer: &StreamConsumer,
    assigned: &[(String, i32)],
    positions: &std::collections::HashMap<(String, i32), i64>,
) -> Option<i64> {
    let mut lag = 0;
    for (topic, partition) in assigned {
        let (low, high) = consumer.fetch_watermarks(topic, *partition, Duration::from_secs(2)).ok()?;
        let at = positions.get(&(topic.clone(), *partition)).copied().unwrap_or(low);
        lag += (high - at).max(0);
    }
    Some(lag)
}

fn end_offsets(consumer: &StreamConsumer, topic: &str) -> Result<Vec<(String, i32, i64)>, TailError> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(TailError::NoTopic(topic.to_owned()));
    }
    partitions.into_iter().map(|p| Ok((topic.to_owned(), p, consumer.fetch_watermarks(topic, p, timeout)?.1))).collect()
}
