//! Click-event publishing for the redirect edge.
//!
//! One [`Publisher`], shared by every request handler, takes an event, encodes
//! it (Avro, Confluent framing, by `ricochet_schemas::click_wire`) straight
//! into a bounded shared buffer that the spool writer takes every 2 ms; it
//! never waits on I/O and never wakes a thread per event, so neither a slow
//! disk nor an absent Kafka can slow a redirect.
//! Every event then passes through a disk [`spool`] (fsynced every 100 ms by
//! default) before one idempotent, `acks=all` librdkafka producer sends it,
//! so a broker outage, a graceful shutdown or a restart loses nothing and a
//! SIGKILL loses at most one fsync interval.
//!
//! Mechanism only: the caller picks the key (the client id, salted for hot
//! clients). The topic comes from config; the partitioner is Java's murmur2 so
//! Apache Kafka's own clients agree on the partition of a key.
//!
//! - [`config`]: producer and spool settings, with the librdkafka keys they map to.
//! - [`spool`]: the on-disk log (segments, records, cursor).
//! - [`publisher`]: the writer and forwarder threads, acknowledgements, shutdown.

pub mod config;
pub mod publisher;
pub mod spool;

pub use config::PublisherConfig;
pub use publisher::{PublishError, PublishStats, Publisher};
