//! Helpers for `bench/edge.sh`, the redirect edge's benchmark. Nothing here is
//! used by the services; each binary is one step of the benchmark:
//!
//! - `bare-redirect`: the ceiling of the stack, an axum server that answers every
//!   GET with a constant `302`, on the same runtime settings as the edge.
//! - `seed-links`: N `LinkRecord`s straight into the `links` topic, their codes to a file.
//! - `rate-load`: a fixed-rate (open-loop) HTTP/1 load generator with an HDR
//!   histogram, for latency at a given throughput (what `wrk2` would do).
//! - `topic-count`: messages in a topic (end minus start offsets, summed over
//!   partitions), optionally waiting until it reaches an expected count.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// A browser's user agent: the edge copies it into every event and scans it for
/// link-preview fetchers, so the load carries one like real clicks do.
pub const USER_AGENT: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// Reads the codes file written by `seed-links`: one code a line.
pub fn read_codes(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    let codes: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    anyhow::ensure!(!codes.is_empty(), "{} holds no codes", path.display());
    Ok(codes)
}

/// Messages currently in `topic`: high minus low watermark, summed over its partitions.
pub fn topic_messages(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> anyhow::Result<i64> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic:?} does not exist or has no partitions");
    let mut total = 0;
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        total += high - low;
    }
    Ok(total)
}

/// A consumer used only for metadata and watermarks (it never subscribes).
pub fn metadata_consumer(brokers: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "ricochet-bench-count")
        .set("enable.auto.commit", "false")
        .create()?)
}
