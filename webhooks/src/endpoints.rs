//! The registered endpoints: the compacted `webhooks` topic, read into memory.
//!
//! Like the link registry, the topic is the only store: one record per
//! endpoint, keyed by `webhook_id`, the newest being its state. The API
//! writes them (create, rotate, replay, delete) and the deliverer writes the
//! state it finds out (disabled, failing since). Both hold every endpoint in
//! memory ([`Endpoints`]) and keep it current by following the topic
//! ([`follow`]); a write answers only once the broker acknowledged it
//! ([`EndpointWriter`]), and is applied locally at once so the writer reads
//! its own writes.
//!
//! The records hold signing secrets, so only the API and the deliverer may
//! read the topic (Kafka ACLs; `docs/security.md`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use ricochet_registry::topics::TopicSpec;
use ricochet_registry::KafkaConnection;
use ricochet_schemas::{ClientId, Codec, CodecError, WebhookRecord};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("kafka client could not be created: {0}")]
    Create(#[source] KafkaError),
    #[error("the broker did not acknowledge the webhook: {0}")]
    NotAcknowledged(#[source] KafkaError),
    #[error("webhook record could not be encoded: {0}")]
    Encode(#[from] CodecError),
    #[error("reading the webhooks topic: {0}")]
    Read(#[source] KafkaError),
}

/// The topic's spec for `topics::ensure`: compacted, one partition, so every
/// endpoint's records stay in order.
pub fn topic_spec(topic: &str) -> TopicSpec {
    TopicSpec { name: topic.to_owned(), partitions: 1, compacted: true }
}

/// Every endpoint, current as of the last record read.
#[derive(Default)]
pub struct Endpoints {
    by_id: RwLock<HashMap<String, Arc<WebhookRecord>>>,
    loaded: AtomicBool,
    /// Bumped on every change, for the deliverer to reconcile its tasks.
    changed: watch::Sender<u64>,
}

impl Endpoints {
    pub fn new() -> Arc<Self> {
        Arc::new(Endpoints::default())
    }

    /// Applies a record (from the topic, or just written).
    pub fn apply(&self, record: WebhookRecord) {
        let mut by_id = self.by_id.write().expect("endpoints lock");
        // A deleted endpoint is kept as a tombstone so that a late write of
        // its old state cannot bring it back on this reader.
        by_id.insert(record.webhook_id.clone(), Arc::new(record));
        drop(by_id);
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn get(&self, webhook_id: &str) -> Option<Arc<WebhookRecord>> {
        self.by_id.read().expect("endpoints lock").get(webhook_id).cloned()
    }

    /// A client's endpoints, deleted ones left out, oldest first.
    pub fn of_client(&self, client: &ClientId) -> Vec<Arc<WebhookRecord>> {
        let mut list: Vec<_> = self
            .by_id
            .read()
            .expect("endpoints lock")
            .values()
            .filter(|w| &w.client_id == client && !w.deleted)
            .cloned()
            .collect();
        list.sort_by(|a, b| (a.created_at_ms, &a.webhook_id).cmp(&(b.created_at_ms, &b.webhook_id)));
        list
    }

    /// Every endpoint that is not deleted.
    pub fn all(&self) -> Vec<Arc<WebhookRecord>> {
        self.by_id.read().expect("endpoints lock").values().filter(|w| !w.deleted).cloned().collect()
    }

    /// Whether the topic has been read up to where it ended at start.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Writes endpoint records and waits for the broker's acknowledgement.
pub struct EndpointWriter {
    producer: FutureProducer,
    topic: String,
    codec: Codec<WebhookRecord>,
}

impl EndpointWriter {
    pub fn new(kafka: &KafkaConnection, topic: &str) -> Result<Self, EndpointsError> {
        let mut config = kafka.client_config();
        config.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "1");
        Ok(EndpointWriter {
            producer: config.create().map_err(EndpointsError::Create)?,
            topic: topic.to_owned(),
            codec: Codec::new(),
        })
    }

    /// Publishes `record` and applies it to `endpoints` once acknowledged.
    pub async fn put(&self, record: WebhookRecord, endpoints: &Endpoints) -> Result<(), EndpointsError> {
        let payload = self.codec.encode(&record)?;
        let message = FutureRecord::to(&self.topic).key(&record.webhook_id).payload(&payload);
        self.producer
            .send(message, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| EndpointsError::NotAcknowledged(e))?;
        endpoints.apply(record);
        Ok(())
    }
}

/// Reads the topic from its start into `endpoints`, marks them loaded once
/// at the end it had when this began, and follows it until `stop` is set.
/// Blocking: run it on a thread of its own. A record that does not decode is
/// logged and skipped: the topic is written only by Ricochet, and one bad
/// record must not stop deliveries for everyone.
pub fn follow(
    kafka: &KafkaConnection,
    topic: &str,
    endpoints: &Endpoints,
    stop: &AtomicBool,
) -> Result<(), EndpointsError> {
    let mut config = kafka.client_config();
    config.set("group.id", "ricochet-webhooks-reader").set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().map_err(EndpointsError::Create)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).map_err(EndpointsError::Read)?;
    consumer.assign(&assignment).map_err(EndpointsError::Read)?;
    let codec: Codec<WebhookRecord> = Codec::new();
    let (_, end) = loop {
        match consumer.fetch_watermarks(topic, 0, Duration::from_secs(5)) {
            Ok(w) => break w,
            Err(e) if stop.load(Ordering::Relaxed) => return Err(EndpointsError::Read(e)),
            Err(e) => {
                tracing::warn!(error = %e, topic, "webhooks topic not readable yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    };
    let mut next = 0;
    if end == 0 {
        endpoints.loaded.store(true, Ordering::Release);
    }
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                match m.payload().map(|p| codec.decode(p)) {
                    Some(Ok(record)) => endpoints.apply(record),
                    Some(Err(e)) => {
                        tracing::error!(offset = m.offset(), error = %e, "undecodable webhook record skipped")
                    }
                    None => {}
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading the webhooks topic"),
            None => {}
        }
        if !endpoints.is_loaded() {
            // Compaction may leave the last offsets empty: the end is reached
            // once the position passes it, or nothing is left to read.
            if next >= end {
                endpoints.loaded.store(true, Ordering::Release);
            } else if let Ok(position) = consumer.position() {
                let at = position.elements().first().and_then(|e| e.offset().to_raw()).unwrap_or(0);
                if at >= end {
                    endpoints.loaded.store(true, Ordering::Release);
                }
            }
        }
    }
    Ok(())
}

/// The thread that runs [`follow`] into an [`Endpoints`] (it blocks), for the
/// API and the deliverer alike. Stopped by [`Follower::stop`], or when
/// dropped (a failed start), within its poll interval.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    pub fn start(kafka: &KafkaConnection, topic: &str, into: Arc<Endpoints>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (kafka, topic, flag) = (kafka.clone(), topic.to_owned(), stop.clone());
        let thread = std::thread::Builder::new().name("webhooks-follow".into()).spawn(move || {
            if let Err(e) = follow(&kafka, &topic, &into, &flag) {
                // Readiness stays 503 if the endpoints were never loaded.
                tracing::error!(error = %e, topic, "following the webhooks topic stopped");
            }
        })?;
        Ok(Follower { stop, thread: Some(thread) })
    }

    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
