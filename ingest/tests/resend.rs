//! A delivery the broker fails is resent from the spool, not dropped.
//!
//! nisshi, the broker the other tests run on, answered produce requests with
//! "Unknown broker error" for a few seconds after a restart under load
//! (`docs/benchmarks.md`); it cannot be made to do so on demand. librdkafka's
//! own mock cluster can: it stands in for the broker here, failing the first
//! produce requests with that error, and nothing else is mocked.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message};
use ricochet_ingest::publisher::refuses_the_record;
use ricochet_ingest::{Publisher, PublisherConfig};
use ricochet_schemas::{ClickEvent, ClickWire};

mod common;
use common::event;

const TOPIC: &str = "clicks";

fn config(dir: &std::path::Path, brokers: &str) -> PublisherConfig {
    let mut c = common::config(dir, &["--kafka-brokers", brokers, "--clicks-topic", TOPIC]);
    c.spool.fsync_interval_ms = 10;
    c
}

/// The distinct record values in the topic.
fn topic_values(brokers: &str, expected: usize) -> HashSet<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "resend-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut values = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while values.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            values.insert(m.payload().unwrap_or_default().to_vec());
        }
    }
    values
}

#[test]
fn deliveries_the_broker_fails_are_resent_until_it_takes_them() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    // The first produce requests fail with the error nisshi gave; then the broker recovers.
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN; 8]);
    let brokers = cluster.bootstrap_servers();

    let dir = tempfile::tempdir().unwrap();
    let publisher = Publisher::start(&config(dir.path(), &brokers)).unwrap();
    let events: Vec<ClickEvent> = (0..200).map(event).collect();
    for e in &events {
        publisher.publish("acme", &ClickWire::of(e)).unwrap();
    }
    let stats = publisher.stats();
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.delivered.load(std::sync::atomic::Ordering::Relaxed) < events.len() as u64 {
        assert!(Instant::now() < deadline, "not every event was delivered: {stats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    publisher.shutdown(Duration::from_secs(5));
    assert!(
        stats.resent.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the failures reached the forwarder: {stats:?}"
    );
    assert_eq!(stats.failed.load(std::sync::atomic::Ordering::Relaxed), 0, "nothing given up: {stats:?}");

    let mut expected = HashSet::new();
    for e in &events {
        let mut value = Vec::new();
        ricochet_schemas::click_wire::encode(&ClickWire::of(e), &mut value);
        expected.insert(value);
    }
    assert_eq!(topic_values(&brokers, expected.len()), expected, "every event is in the topic");
}

#[test]
fn only_a_record_the_broker_refuses_for_what_it_is_is_given_up() {
    let refused = |code| refuses_the_record(&KafkaError::MessageProduction(code));
    assert!(refused(RDKafkaErrorCode::MessageSizeTooLarge));
    assert!(refused(RDKafkaErrorCode::InvalidRecord));
    for transient in [
        RDKafkaErrorCode::Unknown,
        RDKafkaErrorCode::RequestTimedOut,
        RDKafkaErrorCode::BrokerTransportFailure,
        RDKafkaErrorCode::NotEnoughReplicas,
        RDKafkaErrorCode::UnknownTopicOrPartition,
        RDKafkaErrorCode::TopicAuthorizationFailed,
    ] {
        assert!(!refused(transient), "{transient:?} says nothing about the record: resend it");
    }
}
