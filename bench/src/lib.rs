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
//! - `registry-rss`: the memory of N links in the edge's in-memory registry
//!   alone, without Kafka, to split the edge's RSS.
//!
//! `bench/aggregator.sh`, the aggregator's benchmark, uses `preload-clicks`,
//! `drain-topic`, `ch-wait` and `freshness`, built on [`clicks`].
//!
//! `bench/blast.sh`, issue 8's labelled blast, uses `blast` and `blast-score`,
//! built on [`blast`]: scanner gateways and people, replayed against the edge,
//! and the aggregator's verdicts scored against the truth.

pub mod blast;
pub mod clicks;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use ricochet_schemas::{CampaignId, ClientId, LinkCode, LinkId, LinkRecord, LinkStatus};

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

/// The `i`-th benchmark link: one of `clients` senders, 50 campaigns each, a
/// destination of a typical length (~70 bytes) with UTM parameters.
pub fn link(i: u64, code: LinkCode, clients: u64, created_at_ms: i64) -> LinkRecord {
    let client = i % clients;
    LinkRecord {
        link_id: LinkId::mint(),
        code,
        client_id: ClientId::parse(format!("client-{client:04}")).expect("valid client id"),
        campaign_id: CampaignId::parse(format!("blast-{client:04}-{:03}", (i / clients) % 50))
            .expect("valid campaign id"),
        destination_url: format!("https://shop{client}.example/deals/{i:07}?utm_source=email&utm_medium=blast"),
        status: LinkStatus::Active,
        created_at_ms,
        valid_from_ms: None,
        valid_until_ms: None,
        click_limit: None,
        honeypot: false,
    }
}

/// This process's resident set (`VmRSS`) in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .unwrap_or(0)
}
