//! Click-event publishing for the redirect edge.
//!
//! One [`Publisher`] wraps one librdkafka producer, shared by every request
//! handler. [`Publisher::publish`] encodes the event (Avro, Confluent framing)
//! and hands it to librdkafka's in-memory queue; it never waits on the broker,
//! so a slow or absent Kafka can never slow a redirect. librdkafka retries
//! delivery in the background with idempotence on, so retries cannot reorder or
//! duplicate within a partition; delivery outcomes are counted in metrics.
//!
//! Routing is decided here and nowhere else: the topic is `clicks` and the key
//! is the client id, with Java's murmur2 partitioner so that Apache Kafka's own
//! clients agree on the partition of a key.
//!
//! - [`config`]: the producer's settings and the librdkafka keys they map to.
//! - [`publisher`]: the producer, its delivery callback and its counters.

pub mod config;
pub mod publisher;

pub use config::PublisherConfig;
pub use publisher::{PublishError, PublishStats, Publisher};
