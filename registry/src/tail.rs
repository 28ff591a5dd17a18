//! Loading the registry topics (`links`, `clients`, …) into memory and following them.
//!
//! The tail reads every partition without a consumer group (each process needs
//! all of it) and never commits. It reports ready once it has applied
//! everything up to the end offsets it saw at start: an edge that answered
//! before that could 404 a link that exists, or serve one paused while it was
//! down.
//!
//! It starts from the beginning of the topics, or, given a snapshot
//! ([`crate::snapshot`]) that checks out against the broker, from the offsets
//! the snapshot covers. It runs on its own thread with a `BaseConsumer`: a cold
//! load is millions of small records, and an async stream's per-message wake-up
//! and the generic Avro decoder were most of the minute 1,000,000 links took.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use ricochet_schemas::{ApiKeyRecord, ClientRecord, Codec, CodecError, LinkCount, LinkRecord};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::kafka::KafkaConnection;
use crate::link_decode::LinkDecoder;
use crate::snapshot::{self, Position, Snapshot};
use crate::table::{Registry, Version};

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("registry topic {0:?} does not exist or has no partitions")]
    NoTopic(String),
    #[error("metadata task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Where the edge keeps its snapshot, and how often it rewrites it.
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    pub path: PathBuf,
    /// A new snapshot at most this often while records arrive; `None`: only at shutdown.
    pub interval: Option<Duration>,
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

    /// Starts following the registry topics into `table` until `shutdown` is cancelled.
    pub async fn start(
        kafka: &KafkaConnection,
        topics: &RegistryTopics,
        table: Arc<Registry>,
        shutdown: CancellationToken,
    ) -> Result<(RegistryTail, JoinHandle<()>), TailError> {
        Self::start_with(kafka, topics, table, shutdown, None, None).await
    }

    /// Like [`start`](Self::start), and also sends every applied record, with its
    /// offset as a version, to `changes` (the aggregator mirrors them into
    /// ClickHouse). Sending waits when the channel is full: a mirror never misses one.
    pub async fn start_observed(
        kafka: &KafkaConnection,
        topics: &RegistryTopics,
        table: Arc<Registry>,
        shutdown: CancellationToken,
        changes: Option<mpsc::Sender<RegistryChange>>,
    ) -> Result<(RegistryTail, JoinHandle<()>), TailError> {
        Self::start_with(kafka, topics, table, shutdown, changes, None).await
    }

    /// Like [`start`](Self::start), resuming from the snapshot at `snapshot.path`
    /// when it is sound and current, and keeping it up to date. The returned
    /// task ends after writing a last snapshot once `shutdown` is cancelled.
    pub async fn start_with_snapshot(
        kafka: &KafkaConnection,
        topics: &RegistryTopics,
        table: Arc<Registry>,
        shutdown: CancellationToken,
        snapshot: SnapshotConfig,
    ) -> Result<(RegistryTail, JoinHandle<()>), TailError> {
        Self::start_with(kafka, topics, table, shutdown, None, Some(snapshot)).await
    }

    async fn start_with(
        kafka: &KafkaConnection,
        topics: &RegistryTopics,
        table: Arc<Registry>,
        shutdown: CancellationToken,
        changes: Option<mpsc::Sender<RegistryChange>>,
        snapshot: Option<SnapshotConfig>,
    ) -> Result<(RegistryTail, JoinHandle<()>), TailError> {
        let consumer: BaseConsumer = kafka
            .client_config()
            // librdkafka wants a group id; this one never joins or commits.
            .set("group.id", format!("ricochet-registry-tail-{}", uuid::Uuid::now_v7().simple()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // A pause must reach every edge within a second: do not let the broker
            // hold a fetch for long when there is nothing new.
            .set("fetch.wait.max.ms", "100")
            // A cold load is the whole topic: large fetches, few round trips, but a
            // bounded prefetch queue (it counts in the edge's RSS next to the table).
            .set("fetch.max.bytes", "16777216")
            .set("max.partition.fetch.bytes", "8388608")
            .set("queued.max.messages.kbytes", "65536")
            .create()?;
        let topics = topics.clone();
        let ready = Arc::new(AtomicBool::new(false));
        let tail = RegistryTail { ready: ready.clone() };
        // Metadata, watermarks and reading a snapshot all block.
        let setup = {
            let (topics, table) = (topics.clone(), table.clone());
            tokio::task::spawn_blocking(move || Setup::prepare(consumer, &topics, &table, snapshot)).await??
        };
        let task = tokio::task::spawn_blocking(move || setup.run(&topics, &table, &ready, &shutdown, changes));
        Ok((tail, task))
    }
}

/// The tail between start-up and its loop: what to read, from where, to when.
struct Setup {
    consumer: BaseConsumer,
    cluster_id: String,
    /// Per partition: (topic, partition, end offset at start).
    targets: Vec<(String, i32, i64)>,
    /// Per partition: the next offset to apply and a check of the last applied record.
    positions: HashMap<(String, i32), Position>,
    snapshot: Option<SnapshotConfig>,
}

impl Setup {
    fn prepare(
        consumer: BaseConsumer,
        topics: &RegistryTopics,
        table: &Registry,
        snapshot: Option<SnapshotConfig>,
    ) -> Result<Setup, TailError> {
        let timeout = Duration::from_secs(10);
        let cluster_id = consumer.client().fetch_cluster_id(timeout).unwrap_or_default();
        let mut targets = Vec::new();
        let mut watermarks = HashMap::new();
        for topic in topics.all() {
            for (partition, low, high) in partition_watermarks(&consumer, topic)? {
                targets.push((topic.to_owned(), partition, high));
                watermarks.insert((topic.to_owned(), partition), (low, high));
            }
        }
        let mut positions = HashMap::new();
        if let Some(config) = &snapshot {
            let started = Instant::now();
            match Snapshot::load(&config.path, &cluster_id, &watermarks, table, |p| verify_last_record(&consumer, p)) {
                Ok(loaded) => {
                    tracing::info!(
                        path = %config.path.display(),
                        links = table.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "registry snapshot loaded; applying what changed since"
                    );
                    metrics::counter!("ricochet_registry_snapshot_loads_total", "outcome" => "loaded").increment(1);
                    positions = loaded.positions;
                }
                Err(snapshot::SnapshotError::Missing) => {
                    tracing::info!(path = %config.path.display(), "no registry snapshot; loading the topics");
                    metrics::counter!("ricochet_registry_snapshot_loads_total", "outcome" => "missing").increment(1);
                }
                Err(e) => {
                    // Whatever was read is dropped: a full load never mixes with it.
                    table.clear();
                    tracing::warn!(error = %e, path = %config.path.display(), "registry snapshot refused; loading the topics");
                    metrics::counter!("ricochet_registry_snapshot_loads_total", "outcome" => "refused").increment(1);
                }
            }
        }
        // A partition read from its start is, before its first record, at its
        // log start: a snapshot taken then must still list it (an empty topic too).
        for (key, (low, _)) in &watermarks {
            positions.entry(key.clone()).or_insert(Position { next: *low, last_crc: 0 });
        }
        let mut assignment = TopicPartitionList::new();
        for (topic, partition, _) in &targets {
            let offset =
                positions.get(&(topic.clone(), *partition)).map_or(Offset::Beginning, |p| Offset::Offset(p.next));
            assignment.add_partition_offset(topic, *partition, offset)?;
        }
        consumer.assign(&assignment)?;
        Ok(Setup { consumer, cluster_id, targets, positions, snapshot })
    }

    fn run(
        mut self,
        topics: &RegistryTopics,
        table: &Arc<Registry>,
        ready: &AtomicBool,
        shutdown: &CancellationToken,
        changes: Option<mpsc::Sender<RegistryChange>>,
    ) {
        let decoders = Decoders::new(topics);
        let positions = &mut self.positions;
        let mut remaining: Vec<(String, i32, i64)> = self
            .targets
            .iter()
            .filter(|(t, p, high)| positions.get(&(t.clone(), *p)).map_or(0, |pos| pos.next) < *high)
            .cloned()
            .collect();
        let started = Instant::now();
        if remaining.is_empty() {
            ready.store(true, Ordering::Release);
        }
        let assigned: Vec<(String, i32)> = self.targets.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        let mut lag_check = Instant::now();
        let mut snapshot_writer = SnapshotWriter::default();
        let mut applied_since_snapshot = 0u64;
        while !shutdown.is_cancelled() {
            if lag_check.elapsed() >= Duration::from_secs(5) {
                lag_check = Instant::now();
                if let Some(lag) = registry_lag(&self.consumer, &assigned, positions) {
                    metrics::gauge!("ricochet_registry_lag_records").set(lag as f64);
                }
                metrics::gauge!("ricochet_registry_links").set(table.len() as f64);
            }
            if let Some(config) = &self.snapshot {
                let due = config.interval.is_some_and(|every| snapshot_writer.last.elapsed() >= every);
                if due && applied_since_snapshot > 0 && ready.load(Ordering::Acquire) && snapshot_writer.idle() {
                    applied_since_snapshot = 0;
                    snapshot_writer.spawn(
                        config.path.clone(),
                        table.clone(),
                        self.cluster_id.clone(),
                        positions.clone(),
                    );
                }
            }
            let message = match self.consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "registry tail: consume error");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
            applied_since_snapshot += 1;
            apply_message(&decoders, table, &message, changes.as_ref());
            let (topic, partition, next) = (message.topic(), message.partition(), message.offset() + 1);
            let check = message.payload().map_or(0, crc32fast::hash);
            match positions.get_mut(&(topic.to_owned(), partition)) {
                Some(p) => *p = Position { next, last_crc: check },
                None => {
                    positions.insert((topic.to_owned(), partition), Position { next, last_crc: check });
                }
            }
            if !remaining.is_empty() {
                remaining.retain(|(t, p, high)| !(t == topic && *p == partition && next >= *high));
                if remaining.is_empty() {
                    tracing::info!(
                        links = table.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "registry loaded; ready"
                    );
                    metrics::gauge!("ricochet_registry_links").set(table.len() as f64);
                    ready.store(true, Ordering::Release);
                }
            }
        }
        snapshot_writer.wait();
        if let Some(config) = &self.snapshot {
            if ready.load(Ordering::Acquire) {
                // On the way down, so that the next start reads little from the broker.
                let written = snapshot::write(&config.path, table, &self.cluster_id, positions);
                log_written(&config.path, written);
            }
        }
    }
}

/// At most one snapshot being written, off the tail's thread: the tail keeps
/// applying records meanwhile (a pause still reaches the edge at once). What
/// it applies during the write may or may not be in the file; either way the
/// file's offsets were taken first, so a restart re-applies those records.
struct SnapshotWriter {
    running: Option<std::thread::JoinHandle<()>>,
    last: Instant,
}

impl Default for SnapshotWriter {
    fn default() -> Self {
        SnapshotWriter { running: None, last: Instant::now() }
    }
}

impl SnapshotWriter {
    fn idle(&mut self) -> bool {
        self.running.as_ref().is_none_or(|h| h.is_finished())
    }

    fn spawn(
        &mut self,
        path: PathBuf,
        table: Arc<Registry>,
        cluster_id: String,
        positions: HashMap<(String, i32), Position>,
    ) {
        self.last = Instant::now();
        self.running = Some(std::thread::spawn(move || {
            let written = snapshot::write(&path, &table, &cluster_id, &positions);
            log_written(&path, written);
        }));
    }

    fn wait(&mut self) {
        if let Some(h) = self.running.take() {
            let _ = h.join();
        }
    }
}

fn log_written(path: &std::path::Path, written: Result<snapshot::Written, snapshot::SnapshotError>) {
    match written {
        Ok(w) => {
            metrics::counter!("ricochet_registry_snapshots_written_total").increment(1);
            tracing::info!(path = %path.display(), links = w.links, bytes = w.bytes, ms = w.millis, "registry snapshot written");
        }
        Err(e) => {
            metrics::counter!("ricochet_registry_snapshot_failures_total").increment(1);
            tracing::warn!(error = %e, path = %path.display(), "registry snapshot not written");
        }
    }
}

fn apply_message(
    decoders: &Decoders,
    table: &Registry,
    message: &BorrowedMessage<'_>,
    changes: Option<&mpsc::Sender<RegistryChange>>,
) {
    // Tombstones (no payload) are ignored: links and clients are retired by
    // status, never deleted by key.
    let Some(payload) = message.payload() else { return };
    match decoders.apply(table, message.topic(), payload, message.offset(), changes.is_some()) {
        Ok(Some(change)) => {
            if let Some(tx) = changes {
                // This thread is not a runtime worker, so blocking here is fine.
                let _ = tx.blocking_send(change);
            }
        }
        Ok(None) => {}
        Err(e) => {
            metrics::counter!("ricochet_registry_undecodable_total").increment(1);
            tracing::error!(error = %e, topic = message.topic(), offset = message.offset(), "registry tail: undecodable record skipped");
        }
    }
}

/// Reads the record just before a snapshot's position and compares it with
/// the check the snapshot recorded: the snapshot was taken from these very
/// topics, not from ones of the same name on another broker or recreated since.
/// `Ok(true)`: it matches, or it was compacted away (then a newer record of
/// its key follows and will be applied).
fn verify_last_record(consumer: &BaseConsumer, p: &snapshot::Check) -> Result<bool, KafkaError> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.position.next - 1))?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.topic() == p.topic && m.partition() == p.partition => {
                let verified = m.offset() > p.position.next - 1
                    || (m.offset() == p.position.next - 1
                        && m.payload().map_or(0, crc32fast::hash) == p.position.last_crc);
                return Ok(verified);
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(false)
}

/// One decoder per registry topic.
struct Decoders {
    topics: RegistryTopics,
    links: LinkDecoder,
    clients: Codec<ClientRecord>,
    counts: Codec<LinkCount>,
    api_keys: Codec<ApiKeyRecord>,
}

impl Decoders {
    fn new(topics: &RegistryTopics) -> Self {
        Decoders {
            topics: topics.clone(),
            links: LinkDecoder::new(),
            clients: Codec::new(),
            counts: Codec::new(),
            api_keys: Codec::new(),
        }
    }

    /// Decodes a record by its topic and applies it; returns what a mirror needs
    /// to see, if one is `observed`.
    fn apply(
        &self,
        table: &Registry,
        topic: &str,
        payload: &[u8],
        version: i64,
        observed: bool,
    ) -> Result<Option<RegistryChange>, CodecError> {
        // The offset is the record's version: a record the API applied
        // itself, when it wrote it, is not undone by an older one of the
        // same key that the tail reaches later (see `table::Version`).
        if topic == self.topics.links {
            let link = self.links.decode(payload)?;
            table.apply_at(&link, Version(version));
            Ok(observed.then_some(RegistryChange::Link(link, version)))
        } else if topic == self.topics.clients {
            let client = self.clients.decode(payload)?;
            table.apply_client_at(client.clone(), Version(version));
            Ok(observed.then_some(RegistryChange::Client(client, version)))
        } else if topic == self.topics.counts {
            table.apply_count(self.counts.decode(payload)?);
            Ok(None)
        } else {
            table.apply_api_key_at(self.api_keys.decode(payload)?, Version(version));
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
        self.all()
            .into_iter()
            .map(|name| crate::topics::TopicSpec { name: name.to_owned(), partitions: 1, compacted: true })
            .collect()
    }

    pub fn all(&self) -> [&str; 4] {
        [&self.links, &self.clients, &self.counts, &self.api_keys]
    }
}

/// Records between what the tail applied and the topics' ends; `None` if the
/// broker did not answer.
fn registry_lag(
    consumer: &BaseConsumer,
    assigned: &[(String, i32)],
    positions: &HashMap<(String, i32), Position>,
) -> Option<i64> {
    let mut lag = 0;
    for (topic, partition) in assigned {
        let (low, high) = consumer.fetch_watermarks(topic, *partition, Duration::from_secs(2)).ok()?;
        let at = positions.get(&(topic.clone(), *partition)).map_or(low, |p| p.next);
        lag += (high - at).max(0);
    }
    Some(lag)
}

/// Per partition of `topic`: (partition, log start offset, end offset).
fn partition_watermarks(consumer: &BaseConsumer, topic: &str) -> Result<Vec<(i32, i64, i64)>, TailError> {
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
    partitions
        .into_iter()
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
            Ok((p, low, high))
        })
        .collect()
}
