//! The floor of `bench/aggregator.sh`: a bare librdkafka consumer (the same
//! crate and defaults as the aggregator's) that joins a fresh consumer group,
//! reads a topic from the earliest offset and throws every message away,
//! until it has reached the high watermarks it saw at start. With `--decode`
//! it also decodes each message as a `ClickEvent`, which isolates the cost of
//! Avro decoding.
//!
//! Output (one line): `drain_result messages=N bytes=B assign_ms=A first_ms=F
//! elapsed_ms=E eps=R eps_total=T peak_rss_mb=M`, where `elapsed_ms` runs from
//! the assignment to the last message, `eps` is N over that, and `eps_total`
//! counts from the process start (joining the group included).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext, Message};
use ricochet_bench::clicks;
use ricochet_schemas::{ClickEvent, Codec};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    kafka: clicks::Kafka,
    #[arg(long, default_value = "ricochet-bench-drain")]
    group: String,
    /// Decode every message as a ClickEvent (Avro) instead of only reading it.
    #[arg(long)]
    decode: bool,
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// Stop after this many messages (default: all of them).
    #[arg(long)]
    max_messages: Option<u64>,
    /// After reaching the end, keep polling (parked at the end) this long: what an
    /// idle consumer costs the broker. An empty topic is then allowed.
    #[arg(long, default_value_t = 0)]
    idle_secs: u64,
    /// Extra librdkafka settings, `key=value` (repeatable), e.g. `fetch.wait.max.ms=100`.
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not key=value"))?;
    Ok((k.to_owned(), v.to_owned()))
}

/// Remembers when the group first handed this member partitions.
#[derive(Default)]
struct Assigned(Mutex<Option<Instant>>);

impl ClientContext for Assigned {}

impl ConsumerContext for Assigned {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(tpl) if tpl.count() > 0) {
            self.0.lock().unwrap().get_or_insert_with(Instant::now);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let rpc = Duration::from_secs(10);
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.kafka.brokers)
        .set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in &args.settings {
        config.set(k, v);
    }
    let consumer: BaseConsumer<Assigned> = config.create_with_context(Assigned::default()).context("consumer")?;
    let metadata = consumer.fetch_metadata(Some(&args.kafka.topic), rpc)?;
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for t in metadata.topics().iter().filter(|t| t.name() == args.kafka.topic) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(&args.kafka.topic, p.id(), rpc)?;
            if high > low {
                remaining.insert(p.id(), high);
            }
        }
    }
    anyhow::ensure!(args.idle_secs > 0 || !remaining.is_empty(), "topic {:?} is empty or missing", args.kafka.topic);
    consumer.subscribe(&[&args.kafka.topic])?;

    let codec = Codec::<ClickEvent>::new();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let (mut messages, mut bytes, mut undecodable) = (0u64, 0u64, 0u64);
    let mut first = None;
    let mut last = started;
    let max_messages = args.max_messages.unwrap_or(u64::MAX);
    while !remaining.is_empty() && messages < max_messages {
        anyhow::ensure!(Instant::now() < deadline, "{} partitions not drained within the timeout", remaining.len());
        let Some(result) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = result?;
        last = Instant::now();
        first.get_or_insert(last);
        messages += 1;
        let payload = message.payload().unwrap_or_default();
        bytes += payload.len() as u64;
        if args.decode && codec.decode(payload).is_err() {
            undecodable += 1;
        }
        let p = message.partition();
        if remaining.get(&p).is_some_and(|high| message.offset() + 1 >= *high) {
            remaining.remove(&p);
        }
    }
    let idle_until = Instant::now() + Duration::from_secs(args.idle_secs);
    while Instant::now() < idle_until {
        if let Some(message) = consumer.poll(idle_until.saturating_duration_since(Instant::now())) {
            message?;
        }
    }
    let assigned = consumer.context().0.lock().unwrap().unwrap_or(started);
    let ms = |t: Instant| t.duration_since(started).as_secs_f64() * 1000.0;
    let elapsed = last.duration_since(assigned).as_secs_f64();
    println!(
        "drain_result messages={messages} bytes={bytes} undecodable={undecodable} assign_ms={:.0} first_ms={:.0} \
         elapsed_ms={:.0} eps={:.0} eps_total={:.0} peak_rss_mb={:.1}",
        ms(assigned),
        ms(first.unwrap_or(started)),
        elapsed * 1000.0,
        messages as f64 / elapsed,
        messages as f64 / last.duration_since(started).as_secs_f64(),
        clicks::peak_rss_mib()
    );
    Ok(())
}
