//! Writing the registry: link and client records are produced to their
//! compacted topics and each call returns only once the broker acknowledged
//! the record (acks=all, idempotent).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use ricochet_schemas::{
    ApiKeyRecord, CampaignId, ClientId, ClientRecord, Codec, CodecError, LinkCount, LinkId, LinkRecord, LinkStatus,
};

use crate::destination::Destination;
use crate::kafka::KafkaConnection;
use crate::table::{Registry, Version};
use crate::tail::RegistryTopics;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("kafka producer could not be created: {0}")]
    Create(#[source] KafkaError),
    #[error("the broker did not acknowledge the link: {0}")]
    NotAcknowledged(#[source] KafkaError),
    #[error("link could not be encoded: {0}")]
    Encode(#[from] CodecError),
}

/// A validated request for a new link.
#[derive(Clone, Debug)]
pub struct NewLink {
    pub client_id: ClientId,
    pub campaign_id: CampaignId,
    pub destination: Destination,
    pub valid_from_ms: Option<i64>,
    pub valid_until_ms: Option<i64>,
    pub click_limit: Option<i64>,
    /// A trap link, hidden in the message: see `LinkRecord::honeypot`.
    pub honeypot: bool,
}

pub struct RegistryWriter {
    config: ClientConfig,
    /// Made by the first write. Every rdkafka producer keeps a thread polling
    /// its queue, which costs about 1% of a core even when idle (it spins
    /// through the last millisecond of each 100 ms poll): a process that
    /// writes rarely, like the aggregator's click-limit feedback, should not
    /// pay that from its start.
    producer: OnceLock<FutureProducer>,
    topics: RegistryTopics,
    links: Codec<LinkRecord>,
    clients: Codec<ClientRecord>,
    counts: Codec<LinkCount>,
    api_keys: Codec<ApiKeyRecord>,
    ack_timeout: Duration,
}

impl RegistryWriter {
    pub fn new(kafka: &KafkaConnection, topics: &RegistryTopics) -> Result<Self, RegistryError> {
        let mut config = kafka.client_config();
        config.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "1");
        Ok(RegistryWriter {
            config,
            producer: OnceLock::new(),
            topics: topics.clone(),
            links: Codec::new(),
            clients: Codec::new(),
            counts: Codec::new(),
            api_keys: Codec::new(),
            ack_timeout: Duration::from_secs(10),
        })
    }

    /// A new link record with a fresh id and code, not yet written. `known` is this
    /// process's view of the registry, used to avoid reusing a code.
    pub fn mint(&self, new: NewLink, known: &Registry) -> LinkRecord {
        let code = loop {
            let code = crate::code::mint();
            if !known.contains_code(code.as_str()) {
                break code;
            }
        };
        LinkRecord {
            link_id: LinkId::mint(),
            code,
            client_id: new.client_id,
            campaign_id: new.campaign_id,
            destination_url: new.destination.into_string(),
            status: LinkStatus::Active,
            created_at_ms: now_ms(),
            valid_from_ms: new.valid_from_ms,
            valid_until_ms: new.valid_until_ms,
            click_limit: new.click_limit,
            honeypot: new.honeypot,
        }
    }

    /// Mints a link, publishes it and waits for the acknowledgement; the
    /// link and its version.
    pub async fn create(&self, new: NewLink, known: &Registry) -> Result<(LinkRecord, Version), RegistryError> {
        let record = self.mint(new, known);
        let version = self.put_link(&record).await?;
        Ok((record, version))
    }

    /// Publishes a link's new state and waits for the acknowledgement; the
    /// record's version, to apply it with ([`Registry::apply_at`]).
    pub async fn put_link(&self, record: &LinkRecord) -> Result<Version, RegistryError> {
        let payload = self.links.encode(record)?;
        self.send(&self.topics.links, record.link_id.as_str(), &payload).await
    }

    /// Publishes many links at once and waits for every acknowledgement; the
    /// result of each, in order.
    pub async fn put_links(&self, records: &[LinkRecord]) -> Vec<Result<Version, RegistryError>> {
        futures::future::join_all(records.iter().map(|r| self.put_link(r))).await
    }

    /// Publishes a client's new state and waits for the acknowledgement; its version.
    pub async fn put_client(&self, record: &ClientRecord) -> Result<Version, RegistryError> {
        let payload = self.clients.encode(record)?;
        self.send(&self.topics.clients, record.client_id.as_str(), &payload).await
    }

    /// Publishes a link's fed-back click count.
    pub async fn put_count(&self, count: &LinkCount) -> Result<(), RegistryError> {
        let payload = self.counts.encode(count)?;
        self.send(&self.topics.counts, count.link_id.as_str(), &payload).await.map(|_| ())
    }

    /// Publishes a (hashed) API key record; its version.
    pub async fn put_api_key(&self, key: &ApiKeyRecord) -> Result<Version, RegistryError> {
        let payload = self.api_keys.encode(key)?;
        self.send(&self.topics.api_keys, &key.key_hash, &payload).await
    }

    /// Publishes one record; its offset as its version ([`Version::UNKNOWN`]
    /// if the broker did not say).
    async fn send(&self, topic: &str, key: &str, payload: &[u8]) -> Result<Version, RegistryError> {
        let message = FutureRecord::to(topic).key(key).payload(payload);
        self.producer()?
            .send(message, self.ack_timeout)
            .await
            .map(|delivered| if delivered.offset >= 0 { Version(delivered.offset) } else { Version::UNKNOWN })
            .map_err(|(e, _)| RegistryError::NotAcknowledged(e))
    }
}

impl RegistryWriter {
    fn producer(&self) -> Result<&FutureProducer, RegistryError> {
        if let Some(p) = self.producer.get() {
            return Ok(p);
        }
        let made: FutureProducer = self.config.create().map_err(RegistryError::Create)?;
        // Two first writers at once: one producer is kept, the other dropped.
        Ok(self.producer.get_or_init(|| made))
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
