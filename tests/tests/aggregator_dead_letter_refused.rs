//! A dead letter the dead-letter topic refuses must not stop the counting of
//! the other partitions, and the operator must see it (issue 15, "the failure
//! modes above").
//!
//! The broker itself refuses the dead letters, as it would in production: the
//! dead-letter topic is created before the aggregator starts (which then finds
//! it and keeps it) with `max.message.bytes = 1024`, and the poison messages
//! are 4 KiB of bytes that are not Avro. The clicks topic (default limit,
//! 1 MiB) takes them; the dead-letter topic answers every copy with
//! `MESSAGE_TOO_LARGE`, a refusal no retry can overcome: the same thing as a
//! dead-letter topic with a smaller limit than the source topic's, or a
//! message grown past the limit by the reason headers.
//!
//! The poison goes to one partition; valid clicks go to every partition, each
//! partition's clicks on links of their own. While the dead letters are
//! refused:
//! - every click on the other partitions is counted exactly, and their stored
//!   positions reach their high watermarks;
//! - the poisoned partition never stores a position past its first poison
//!   message (its copy is not acknowledged) and counts nothing twice;
//! - `ricochet_aggregator_dead_letters_unconfirmed` on the aggregator's
//!   `/metrics` and `dead_letters_unconfirmed` in its own `GET /v1/status`
//!   are at least 1.
//!
//! Then the operator fixes the topic (deletes it and creates it again with the
//! default limit): the retried dead letters land, the poisoned partition
//! catches up, every click is counted exactly, and both readings are back at 0.

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use ricochet_schemas::{ClickEvent, Codec};
use ricochet_tests::feed::{self, Tally, Target};
use ricochet_tests::servers::Servers;
use ricochet_tests::{client, eventually, services, PARTITIONS};

const DEAD_LETTER_TOPIC: &str = "clicks-dlq";
/// The dead-letter topic's `max.message.bytes` while it refuses.
const DEAD_LETTER_LIMIT: usize = 1024;
/// The size of each poison message: above the limit, far below the clicks topic's.
const POISON_BYTES: usize = 4096;
const POISONS: usize = 3;
/// The partition that gets the poison.
const POISONED: i32 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_dead_letters_do_not_stop_the_other_partitions() {
    let started = Instant::now();
    let servers = Servers::start().await;
    let brokers = servers.kafka.brokers();
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("admin client");
    create_dead_letter_topic(&admin, Some(DEAD_LETTER_LIMIT)).await;
    let aggregator = services::aggregator(
        &servers,
        "aggregator",
        &[
            ("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned()),
            ("RICOCHET_DEAD_LETTER_TOPIC", DEAD_LETTER_TOPIC.to_owned()),
        ],
    )
    .await;
    let ops = aggregator.url();
    let ch = &servers.clickhouse;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let codec = Codec::<ClickEvent>::new();
    let targets: BTreeMap<i32, Vec<Target>> = (0..PARTITIONS as i32)
        .map(|p| (p, (0..2).map(|l| Target::new(&format!("client-p{p}"), "camp", &format!("link-p{p}-{l}"))).collect()))
        .collect();
    let mut tally = Tally::default();

    // Before the poison: every partition counts.
    for p in targets.keys() {
        send_clicks(&producer, &codec, *p, &targets[p], 10, &mut tally).await;
    }
    feed::assert_counted_exactly(ch, &tally, Duration::from_secs(30)).await;

    // The poison, then clicks on every partition for a few seconds (many flushes).
    let mut poison_offsets = Vec::new();
    for i in 0..POISONS {
        let mut payload = format!("not avro, poison {i}: ").into_bytes();
        payload.resize(POISON_BYTES, b'x');
        let record = FutureRecord::to("clicks").partition(POISONED).key("poison").payload(&payload);
        let delivered =
            producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("the poison is accepted");
        assert_eq!(delivered.partition, POISONED);
        poison_offsets.push(delivered.offset);
    }
    let first_poison = poison_offsets[0];
    let sending = Instant::now();
    while sending.elapsed() < Duration::from_secs(4) {
        for p in targets.keys() {
            send_clicks(&producer, &codec, *p, &targets[p], 5, &mut tally).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually("the aggregator to read the poison", Duration::from_secs(30), || async {
        (client::metric(&ops, "ricochet_aggregator_poison_messages_total").await >= 1.0).then_some(())
    })
    .await;
    eprintln!("{POISONS} poison messages at {POISONED}/{poison_offsets:?}; {} clicks sent", tally.total());

    let mut failures = Vec::new();
    let other_links: BTreeMap<String, u64> = tally
        .per_link
        .iter()
        .filter(|(link, _)| !link.starts_with(&format!("link-p{POISONED}-")))
        .map(|(l, n)| (l.clone(), *n))
        .collect();
    let poisoned_links: BTreeMap<String, u64> =
        tally.per_link.iter().filter(|(l, _)| !other_links.contains_key(*l)).map(|(l, n)| (l.clone(), *n)).collect();

    // 1. The other partitions keep counting: exactly, rollups and positions.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counted = feed::rollup_per_link_at(ch, 60).await;
        let seen: BTreeMap<String, u64> =
            counted.iter().filter(|(l, _)| other_links.contains_key(*l)).map(|(l, n)| (l.clone(), *n)).collect();
        if seen == other_links {
            break;
        }
        if Instant::now() > deadline {
            failures.push(format!(
                "the other partitions did not count while the dead letters were refused: after 30 s their \
                 rollups hold {} of {} clicks\n    counted {seen:?}\n    sent    {other_links:?}",
                seen.values().sum::<u64>(),
                other_links.values().sum::<u64>()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let high = high_watermarks(&brokers).await;
    let stored = stored_positions(&servers).await;
    for p in (0..PARTITIONS as i32).filter(|p| *p != POISONED) {
        if stored.get(&p) != high.get(&p) {
            failures.push(format!(
                "partition {p}'s stored position {:?} is not its high watermark {:?}",
                stored.get(&p),
                high.get(&p)
            ));
        }
    }

    // 2. The poisoned partition waits at its first unacknowledged dead letter
    //    and counts nothing twice.
    if stored.get(&POISONED).is_some_and(|s| *s > first_poison) {
        failures.push(format!(
            "partition {POISONED} stored position {:?}, past its first poison message at {first_poison}, whose dead \
             letter the broker refused",
            stored.get(&POISONED)
        ));
    }
    let counted = feed::rollup_per_link_at(ch, 60).await;
    for (link, sent) in &poisoned_links {
        let n = counted.get(link).copied().unwrap_or(0);
        if n > *sent {
            failures.push(format!("{link} counted {n} clicks of {sent} sent"));
        }
    }

    // 3. The operator sees it, on /metrics and on the member's /v1/status.
    let gauge = "ricochet_aggregator_dead_letters_unconfirmed";
    let seen =
        wait_for(Duration::from_secs(10), || async { metric_sample(&ops, gauge).await.filter(|v| *v >= 1.0) }).await;
    if seen.is_none() {
        failures.push(format!("{gauge} on /metrics is {:?}, not at least 1", metric_sample(&ops, gauge).await));
    }
    let status = client::status(&ops).await;
    if status["dead_letters_unconfirmed"].as_u64().is_none_or(|n| n == 0) {
        failures.push(format!(
            "/v1/status has dead_letters_unconfirmed = {}, not at least 1: {status}",
            status["dead_letters_unconfirmed"]
        ));
    }
    eprintln!("while refused ({:.0}s): {}", started.elapsed().as_secs_f64(), summary(&failures));

    // 4. The operator fixes the topic: the letters land and everything is counted.
    delete_dead_letter_topic(&admin).await;
    create_dead_letter_topic(&admin, None).await;
    let exact =
        AssertUnwindSafe(feed::assert_counted_exactly(ch, &tally, Duration::from_secs(60))).catch_unwind().await;
    if let Err(panic) = exact {
        failures.push(format!("once the dead-letter topic accepts: {}", panic_message(&*panic)));
    }
    let high = high_watermarks(&brokers).await;
    let stored = stored_positions(&servers).await;
    if stored != high {
        failures
            .push(format!("once the dead-letter topic accepts: stored positions {stored:?}, high watermarks {high:?}"));
    }
    let cleared = wait_for(Duration::from_secs(15), || async {
        let s = client::status(&ops).await;
        (metric_sample(&ops, gauge).await == Some(0.0) && s["dead_letters_unconfirmed"].as_u64() == Some(0))
            .then_some(())
    })
    .await;
    if cleared.is_none() {
        failures.push(format!(
            "once the dead-letter topic accepts: {gauge} is {:?} and /v1/status has dead_letters_unconfirmed = {}, not 0",
            metric_sample(&ops, gauge).await,
            client::status(&ops).await["dead_letters_unconfirmed"]
        ));
    }
    let letters = dead_letters_stored(&brokers).await;
    if letters < POISONS as i64 {
        failures.push(format!("the dead-letter topic holds {letters} messages, not the {POISONS} poison messages"));
    }

    eprintln!("{} clicks sent; {:.0}s", tally.total(), started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{} failed:\n- {}", failures.len(), failures.join("\n- "));
}

fn summary(failures: &[String]) -> String {
    if failures.is_empty() {
        "as required".to_owned()
    } else {
        format!("{} failed", failures.len())
    }
}

/// `count` clicks on `targets`, round robin, to `partition` (not by key: each
/// partition's clicks are on links of its own), added to `tally` once acknowledged.
async fn send_clicks(
    producer: &FutureProducer,
    codec: &Codec<ClickEvent>,
    partition: i32,
    targets: &[Target],
    count: usize,
    tally: &mut Tally,
) {
    let now = client::now_millis();
    let events: Vec<ClickEvent> = (0..count).map(|i| targets[i % targets.len()].click(now)).collect();
    let sends = events.iter().map(|e| {
        let payload = codec.encode(e).expect("encode");
        let key = e.client_id.as_str().to_owned();
        async move {
            let record = FutureRecord::to("clicks").partition(partition).key(&key).payload(&payload);
            producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("a click is accepted")
        }
    });
    futures::future::join_all(sends).await;
    for e in &events {
        let link = e.link_id.as_str().to_owned();
        *tally.per_link.entry(link.clone()).or_default() += 1;
        *tally.per_minute.entry((link, e.event_time_ms.div_euclid(60_000) * 60)).or_default() += 1;
    }
}

async fn create_dead_letter_topic(admin: &AdminClient<DefaultClientContext>, limit: Option<usize>) {
    let limit = limit.map(|l| l.to_string());
    let mut topic = NewTopic::new(DEAD_LETTER_TOPIC, 1, TopicReplication::Fixed(1));
    if let Some(l) = &limit {
        topic = topic.set("max.message.bytes", l);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    // Just after a delete the broker may still see the old topic: try again.
    for _ in 0..50 {
        let result = admin.create_topics([&topic], &options).await.expect("create_topics");
        match &result[0] {
            Ok(_) => return,
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err((t, e)) => panic!("creating {t}: {e}"),
        }
    }
    panic!("{DEAD_LETTER_TOPIC} still exists 10 s after it was deleted");
}

async fn delete_dead_letter_topic(admin: &AdminClient<DefaultClientContext>) {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let result = admin.delete_topics(&[DEAD_LETTER_TOPIC], &options).await.expect("delete_topics");
    if let Err((t, e)) = &result[0] {
        panic!("deleting {t}: {e}");
    }
}

/// Polls `check` every 200 ms for up to `within`; `None` if it never answered `Some`.
async fn wait_for<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sum of a metric's samples, `None` when `/metrics` has none.
async fn metric_sample(url: &str, name: &str) -> Option<f64> {
    let text = client::http().get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Each partition's stored position, as the product reads it.
async fn stored_positions(servers: &Servers) -> BTreeMap<i32, i64> {
    ricochet_warehouse::positions::read(&servers.clickhouse.warehouse_client(), "clicks")
        .await
        .expect("stored positions")
        .into_iter()
        .collect()
}

/// The high watermark of every partition of `topic`.
async fn watermarks(brokers: &str, topic: &'static str, partitions: i32) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("watermark client");
        (0..partitions)
            .map(|p| (p, consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks").1))
            .collect()
    })
    .await
    .expect("watermark task")
}

async fn high_watermarks(brokers: &str) -> BTreeMap<i32, i64> {
    watermarks(brokers, "clicks", PARTITIONS as i32).await
}

async fn dead_letters_stored(brokers: &str) -> i64 {
    watermarks(brokers, DEAD_LETTER_TOPIC, 1).await[&0]
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(a panic without a message)".to_owned())
}
