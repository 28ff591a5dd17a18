//! Preloads the clicks topic for `bench/aggregator.sh`: N `ClickEvent`s (Avro,
//! Confluent framing, keyed by client id, as the edge publishes them) into
//! `clicks`, and the same N events as `JSONEachRow` lines into `clicks_json`
//! (for ClickHouse's Kafka engine). Creates both topics first, with the edge's
//! partition count. Event times rise with the offset over `--span-minutes`
//! ending now, as a blast's clicks do.
//!
//! Output (one line): `preload_result events=N secs=S rate=R avro_bytes=B json_bytes=J`.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rdkafka::producer::Producer;
use ricochet_bench::clicks::{self, Traffic};
use ricochet_registry::topics::{self, TopicSpec};
use ricochet_schemas::{ClickEvent, Codec};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    kafka: clicks::Kafka,
    #[arg(long, default_value = "clicks_json")]
    json_topic: String,
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Events to produce (into each topic).
    #[arg(long)]
    count: u64,
    /// Senders; the first one sends `--hot-share` of all clicks.
    #[arg(long, default_value_t = 1000)]
    clients: u32,
    #[arg(long, default_value_t = 0.5)]
    hot_share: f64,
    /// Links of the hot sender, and of each other sender.
    #[arg(long, default_value_t = 500)]
    hot_links: u32,
    #[arg(long, default_value_t = 20)]
    links: u32,
    /// The event times cover this many minutes, ending now.
    #[arg(long, default_value_t = 60)]
    span_minutes: i64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let specs: Vec<TopicSpec> = [&args.kafka.topic, &args.json_topic]
        .into_iter()
        .map(|name| TopicSpec { name: name.clone(), partitions: args.partitions, compacted: false })
        .collect();
    topics::ensure(&args.kafka.brokers, &specs).await.context("creating topics")?;

    let traffic = Traffic {
        prefix: "client".into(),
        clients: args.clients,
        links: args.links,
        hot_share: args.hot_share,
        hot_links: args.hot_links,
    };
    let producer = clicks::producer(&args.kafka.brokers, 50)?;
    let codec = Codec::<ClickEvent>::new();
    let mut rng = rand::rng();
    let end_ms = clicks::now_ms();
    let span_ms = args.span_minutes * 60_000;
    let (mut avro_bytes, mut json_bytes) = (0u64, 0u64);
    let started = Instant::now();
    for i in 0..args.count {
        let pick = traffic.pick(&mut rng);
        let event_time_ms = end_ms - span_ms + (i as i64 * span_ms) / args.count.max(1) as i64;
        let event = traffic.click(pick, &traffic.link_id(pick), event_time_ms, &mut rng);
        let payload = codec.encode(&event)?;
        let json = clicks::json_row(&event);
        clicks::send(&producer, &args.kafka.topic, event.client_id.as_str(), &payload)?;
        clicks::send(&producer, &args.json_topic, event.client_id.as_str(), json.as_bytes())?;
        avro_bytes += payload.len() as u64;
        json_bytes += json.len() as u64;
        producer.poll(Duration::ZERO);
        if i > 0 && i % 500_000 == 0 {
            eprintln!("  … {i} of {} enqueued after {:.0} s", args.count, started.elapsed().as_secs_f64());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    let delivered = producer.context().clone();
    while delivered.settled() < 2 * args.count {
        anyhow::ensure!(Instant::now() < deadline, "clicks not acknowledged within 1800 s");
        producer.poll(Duration::from_millis(100));
    }
    producer.flush(Duration::from_secs(30))?;
    let failed = delivered.failed.load(std::sync::atomic::Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} messages were refused by the broker");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "preload_result events={} secs={secs:.1} rate={:.0} avro_bytes={avro_bytes} json_bytes={json_bytes}",
        args.count,
        args.count as f64 / secs
    );
    Ok(())
}
