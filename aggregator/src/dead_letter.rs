//! Setting poison messages aside on a dead-letter topic, with the reason.
//!
//! A message that cannot be decoded must neither stop the aggregator nor be
//! lost: it is copied, untouched, to `clicks-dlq` with headers naming the
//! reason and its source position. The pipeline waits for the broker's
//! acknowledgement before it records a position past the message.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(brokers: &str, topic: &str) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(DeadLetters {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Enqueues a copy of the message; the returned future resolves on the broker's answer.
    pub fn send(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        reason: &str,
        source: (&str, i32, i64),
    ) -> Result<DeliveryFuture, KafkaError> {
        let (topic, partition, offset) = source;
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ricochet.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "ricochet.source",
                value: Some(&format!("{topic}/{partition}/{offset}")),
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        self.producer.send_result(record).map_err(|(e, _)| e)
    }

    pub fn flush(&self, timeout: Duration) {
        let _ = rdkafka::producer::Producer::flush(&self.producer, timeout);
    }
}
