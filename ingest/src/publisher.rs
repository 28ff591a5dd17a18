//! The shared producer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use ricochet_schemas::{ClickEvent, Codec, CodecError};

use crate::config::PublisherConfig;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka producer could not be created: {0}")]
    Create(#[source] KafkaError),
    /// The in-memory queue is full: the broker has been unreachable or slow for long
    /// enough to fill it. The caller decides what to do with the event.
    #[error("producer queue is full ({in_flight} events waiting for the broker)")]
    QueueFull { in_flight: i32 },
    #[error("event could not be enqueued: {0}")]
    Enqueue(#[source] KafkaError),
    #[error("event could not be encoded: {0}")]
    Encode(#[from] CodecError),
    #[error("{remaining} events were still undelivered when the flush timed out")]
    FlushTimeout { remaining: i32 },
}

/// Delivery outcomes since start, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct PublishStats {
    pub enqueued: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

/// librdkafka calls `delivery` on its own thread once per event.
struct DeliveryCounter {
    stats: Arc<PublishStats>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ricochet_ingest_events_delivered_total").increment(1);
            }
            Err((err, _)) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ricochet_ingest_events_failed_total").increment(1);
                tracing::error!(error = %err, "click event delivery failed after retries");
            }
        }
    }
}

/// The edge's one producer. Cheap to share behind an `Arc`.
pub struct Publisher {
    producer: ThreadedProducer<DeliveryCounter>,
    topic: String,
    codec: Codec<ClickEvent>,
    stats: Arc<PublishStats>,
}

impl Publisher {
    pub fn new(config: &PublisherConfig) -> Result<Self, PublishError> {
        let stats = Arc::new(PublishStats::default());
        let producer = config
            .client_config()
            .create_with_context(DeliveryCounter {
                stats: stats.clone(),
            })
            .map_err(PublishError::Create)?;
        Ok(Publisher {
            producer,
            topic: config.topic.clone(),
            codec: Codec::new(),
            stats,
        })
    }

    /// Encodes and enqueues one event, keyed by its client id. Never waits for the broker.
    pub fn publish(&self, event: &ClickEvent) -> Result<(), PublishError> {
        let payload = self.codec.encode(event)?;
        let record = BaseRecord::to(&self.topic)
            .key(event.client_id.as_str())
            .payload(&payload);
        match self.producer.send(record) {
            Ok(()) => {
                self.stats.enqueued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(PublishError::QueueFull {
                    in_flight: self.producer.in_flight_count(),
                })
            }
            Err((e, _)) => Err(PublishError::Enqueue(e)),
        }
    }

    /// Events enqueued but not yet acknowledged by the broker.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    pub fn stats(&self) -> &PublishStats {
        &self.stats
    }

    /// Waits until every enqueued event is delivered or failed, up to `timeout`.
    /// Called on graceful shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        match self.producer.flush(timeout) {
            Ok(()) => Ok(()),
            Err(_) => Err(PublishError::FlushTimeout {
                remaining: self.producer.in_flight_count(),
            }),
        }
    }
}
