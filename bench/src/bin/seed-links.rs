//! Puts N active links into the registry the way the aggregator's API does
//! (Avro `LinkRecord`s with Confluent framing on the compacted `links` topic,
//! keyed by link id, acks=all, idempotent), but straight from a producer, so
//! that a million links take seconds and no ClickHouse is needed. Creates the
//! edge's topics first with the edge's own specs. Writes the codes, one a
//! line, for the load generators, and optionally the same links as an nginx
//! `map` (bench/edge.sh's nginx peer answers from it).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use ricochet_registry::topics::{self, TopicSpec};
use ricochet_schemas::{Codec, LinkRecord};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, default_value = "links")]
    links_topic: String,
    #[arg(long, default_value = "clients")]
    clients_topic: String,
    #[arg(long, default_value = "clicks")]
    clicks_topic: String,
    /// Partitions of the clicks topic (the edge's default).
    #[arg(long, default_value_t = 12)]
    clicks_partitions: i32,
    /// Links to produce.
    #[arg(long)]
    count: u64,
    /// Senders the links are spread over (events are keyed by sender).
    #[arg(long, default_value_t = 200)]
    clients: u64,
    /// Where the codes go, one a line; appended to, so several runs add up.
    #[arg(long)]
    codes_out: Option<std::path::PathBuf>,
    /// Where the links go as nginx `map` entries (`/CODE "DESTINATION";`), appended to.
    #[arg(long)]
    nginx_map_out: Option<std::path::PathBuf>,
}

#[derive(Clone, Default)]
struct Acks {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                eprintln!("link refused: {e}");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    topics::ensure(
        &args.brokers,
        &[
            TopicSpec { name: args.clicks_topic.clone(), partitions: args.clicks_partitions, compacted: false },
            TopicSpec { name: args.links_topic.clone(), partitions: 1, compacted: true },
            TopicSpec { name: args.clients_topic.clone(), partitions: 1, compacted: true },
        ],
    )
    .await
    .context("creating topics")?;

    let acks = Acks::default();
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(acks.clone())
        .context("producer")?;
    let codec = Codec::<LinkRecord>::new();
    let append = |path: &Option<std::path::PathBuf>| -> anyhow::Result<_> {
        Ok(match path {
            Some(path) => Some(std::io::BufWriter::new(
                std::fs::OpenOptions::new().create(true).append(true).open(path).context("output file")?,
            )),
            None => None,
        })
    };
    let mut out = append(&args.codes_out)?;
    let mut nginx_map = append(&args.nginx_map_out)?;

    let started = Instant::now();
    let mut seen = std::collections::HashSet::with_capacity(args.count as usize);
    let created_at_ms = ricochet_registry::writer::now_ms();
    let mut i = 0u64;
    while i < args.count {
        let code = ricochet_registry::code::mint();
        if !seen.insert(code.as_str().to_owned()) {
            continue;
        }
        let record = ricochet_bench::link(i, code, args.clients, created_at_ms);
        let payload = codec.encode(&record)?;
        let mut message = BaseRecord::to(&args.links_topic).key(record.link_id.as_str()).payload(&payload);
        loop {
            match producer.send(message) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), m)) => {
                    message = m;
                    producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => anyhow::bail!("cannot enqueue a link: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
        if let Some(out) = out.as_mut() {
            writeln!(out, "{}", record.code)?;
        }
        if let Some(map) = nginx_map.as_mut() {
            // Destinations were validated on registration: no quotes, no control characters.
            writeln!(map, "/{} \"{}\";", record.code, record.destination_url)?;
        }
        i += 1;
    }
    for mut file in [out, nginx_map].into_iter().flatten() {
        file.flush()?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while acks.ok.load(Ordering::Relaxed) + acks.failed.load(Ordering::Relaxed) < args.count {
        anyhow::ensure!(Instant::now() < deadline, "links not acknowledged within 600 s");
        producer.poll(Duration::from_millis(100));
    }
    producer.flush(Duration::from_secs(10))?;
    let failed = acks.failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} links were refused by the broker");
    let secs = started.elapsed().as_secs_f64();
    println!("seeded {} links in {secs:.1} s ({:.0}/s)", args.count, args.count as f64 / secs);
    Ok(())
}
