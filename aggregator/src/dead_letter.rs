//! Setting poison messages aside on a dead-letter topic, with the reason.
//!
//! A message that cannot be decoded must neither stop the aggregator nor be
//! lost: it is copied, untouched, to `clicks-dlq` with headers naming the
//! reason and its source position. The pipeline waits for the broker's
//! acknowledgement before it records a position past the message, and a copy
//! the broker refused is sent again before that flush is retried.

use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

pub struct DeadLetters {
    config: ClientConfig,
    /// Made for the first poison message: an rdkafka producer's polling
    /// thread costs about 1% of a core even idle, and most runs never set a
    /// message aside.
    producer: OnceLock<FutureProducer>,
    topic: String,
}

/// A poison message and why it was set aside.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub reason: String,
    /// Topic, partition and offset it was read from.
    pub source: (String, i32, i64),
}

/// A dead letter on its way to the broker.
pub struct Pending {
    letter: DeadLetter,
    /// `None` when the last send could not even be enqueued.
    delivery: Option<DeliveryFuture>,
}

impl DeadLetters {
    pub fn new(kafka: &ricochet_registry::KafkaConnection, topic: &str) -> Result<Self, KafkaError> {
        let mut config = kafka.client_config();
        config.set("enable.idempotence", "true").set("acks", "all").set("message.timeout.ms", "30000");
        Ok(DeadLetters { config, producer: OnceLock::new(), topic: topic.to_owned() })
    }

    fn producer(&self) -> Result<&FutureProducer, KafkaError> {
        if let Some(p) = self.producer.get() {
            return Ok(p);
        }
        let made: FutureProducer = self.config.create()?;
        Ok(self.producer.get_or_init(|| made))
    }

    /// Enqueues a copy of the message; [`DeadLetters::confirm`] waits for the broker.
    pub fn send(&self, letter: DeadLetter) -> Pending {
        let delivery = self.enqueue(&letter);
        Pending { letter, delivery }
    }

    /// Waits until the broker has acknowledged every pending letter. Letters it
    /// refused are sent again and stay in `pending`, so a retry waits for them.
    pub async fn confirm(&self, pending: &mut Vec<Pending>) -> Result<(), String> {
        let mut first_error = None;
        for p in pending.iter_mut() {
            let outcome = match p.delivery.take() {
                None => Err("could not be enqueued".to_owned()),
                Some(d) => match d.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e.to_string()),
                    Err(_) => Err("delivery cancelled".to_owned()),
                },
            };
            if let Err(e) = outcome {
                let (_, partition, offset) = p.letter.source;
                tracing::warn!(partition, offset, error = %e, "dead letter not acknowledged; sending it again");
                first_error.get_or_insert(e);
                p.delivery = self.enqueue(&p.letter);
            }
        }
        match first_error {
            None => {
                pending.clear();
                Ok(())
            }
            Some(e) => Err(format!("dead-letter delivery: {e}")),
        }
    }

    /// Enqueues, waiting while librdkafka's queue is full (a broker that is
    /// slow or away): dropping the copy would lose the message.
    fn enqueue(&self, letter: &DeadLetter) -> Option<DeliveryFuture> {
        let (topic, partition, offset) = &letter.source;
        let headers = OwnedHeaders::new()
            .insert(Header { key: "ricochet.reason", value: Some(&letter.reason) })
            .insert(Header { key: "ricochet.source", value: Some(&format!("{topic}/{partition}/{offset}")) });
        let producer = match self.producer() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(partition, offset, error = %e, "dead-letter producer cannot be created");
                return None;
            }
        };
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers.clone());
            if let Some(k) = &letter.key {
                record = record.key(k);
            }
            if let Some(p) = &letter.payload {
                record = record.payload(p);
            }
            match producer.send_result(record) {
                Ok(delivery) => return Some(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    tracing::error!(partition, offset, error = %e, "dead letter cannot be enqueued");
                    return None;
                }
            }
        }
    }

    pub fn flush(&self, timeout: Duration) {
        if let Some(p) = self.producer.get() {
            let _ = Producer::flush(p, timeout);
        }
    }
}
