//! Creating links: the record is produced to the `links` topic and the call
//! returns only once the broker acknowledged it (acks=all, idempotent).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use ricochet_schemas::{CampaignId, ClientId, Codec, CodecError, LinkId, LinkRecord, LinkStatus};

use crate::destination::Destination;
use crate::table::LinkTable;

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
}

pub struct LinkWriter {
    producer: FutureProducer,
    topic: String,
    codec: Codec<LinkRecord>,
    ack_timeout: Duration,
}

impl LinkWriter {
    pub fn new(brokers: &str, topic: &str) -> Result<Self, RegistryError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .create()
            .map_err(RegistryError::Create)?;
        Ok(LinkWriter {
            producer,
            topic: topic.to_owned(),
            codec: Codec::new(),
            ack_timeout: Duration::from_secs(10),
        })
    }

    /// Mints an id and a code, publishes the link and waits for the acknowledgement.
    /// `known` is this process's view of the registry, used to avoid reusing a code.
    pub async fn create(
        &self,
        new: NewLink,
        known: &LinkTable,
    ) -> Result<LinkRecord, RegistryError> {
        let code = loop {
            let code = crate::code::mint();
            if !known.contains_code(code.as_str()) {
                break code;
            }
        };
        let record = LinkRecord {
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
        };
        self.put(&record).await?;
        Ok(record)
    }

    /// Publishes a link's new state and waits for the acknowledgement.
    pub async fn put(&self, record: &LinkRecord) -> Result<(), RegistryError> {
        let payload = self.codec.encode(record)?;
        let message = FutureRecord::to(&self.topic)
            .key(record.link_id.as_str())
            .payload(&payload);
        self.producer
            .send(message, self.ack_timeout)
            .await
            .map(|_| ())
            .map_err(|(e, _)| RegistryError::NotAcknowledged(e))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
