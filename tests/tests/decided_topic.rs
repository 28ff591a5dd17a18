//! The decided-events topic (issue 17, "A decided-events topic"): the
//! aggregator is killed with SIGKILL at random moments while clicks keep
//! arriving, and afterwards the `decided` topic holds every counted event
//! exactly once, with the verdict ClickHouse counted, partition N holding
//! clicks partition N's events in offset order. One life runs with the topic
//! turned off, so the next one must fill a gap in the middle of every
//! partition; the first life is often killed before its first records land,
//! so the gap from offset 0 is filled from the start marks. Real broker and
//! ClickHouse.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use ricochet_schemas::{Codec, DecidedEvent};
use ricochet_tests::feed::{self, Feed, Load, Target};
use ricochet_tests::servers::Servers;
use ricochet_tests::{eventually, services};

const KILLS: usize = 8;

/// Every record of the decided topic, by partition, in order.
fn read_decided(brokers: &str) -> BTreeMap<i32, Vec<DecidedEvent>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "decided-topic-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some("decided"), Duration::from_secs(10)).unwrap();
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    assert!(!partitions.is_empty(), "the aggregator made the decided topic");
    let codec = Codec::<DecidedEvent>::new();
    let mut out = BTreeMap::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks("decided", p, Duration::from_secs(10)).unwrap();
        let mut events = Vec::new();
        if high > low {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("decided", p, Offset::Offset(low)).unwrap();
            consumer.assign(&tpl).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while (events.len() as i64) < high - low {
                assert!(Instant::now() < deadline, "partition {p}: read {} of {}", events.len(), high - low);
                if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                    let m = m.unwrap();
                    events.push(codec.decode(m.payload().unwrap()).unwrap());
                }
            }
        }
        out.insert(p, events);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_under_load_the_decided_topic_holds_each_counted_event_once() {
    let servers = Servers::start().await;
    let env =
        [("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned()), ("RICOCHET_GROUP_INSTANCE_ID", "aggregator-0".to_owned())];
    let mut aggregator = services::aggregator(&servers, "aggregator-life-0", &env).await;
    let load = Load::start(Feed::new(&servers.kafka.brokers()), Target::many(16, 2), 1000);
    let ch = &servers.clickhouse;
    let mut rng = rand::rng();
    for life in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        aggregator.proc.assert_running();
        aggregator.proc.kill();
        eprintln!("kill {life}: {} clicks sent", load.sent());
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        aggregator = services::aggregator(&servers, &format!("aggregator-life-{life}"), &env).await;
        if life == KILLS / 2 {
            // A life that counts without publishing (the topic turned off): a
            // gap in the middle of every partition, for the next life to fill.
            tokio::time::sleep(Duration::from_millis(500)).await;
            aggregator.proc.kill();
            let off = [env.as_slice(), &[("RICOCHET_DECIDED_TOPIC", String::new())]].concat();
            aggregator = services::aggregator(&servers, "aggregator-life-off", &off).await;
            let counted = ch.number("SELECT count() FROM click_events").await;
            eventually("the life without the topic counts", Duration::from_secs(30), || async {
                (ch.number("SELECT count() FROM click_events").await > counted + 500).then_some(())
            })
            .await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop().await;
    assert!(tally.total() > 3_000, "the load kept going: {tally:?}");
    feed::assert_counted_exactly(ch, &tally, Duration::from_secs(60)).await;

    // What ClickHouse counted: each event's verdict and reason.
    let rows = ch.query("SELECT event_id, is_human, verdict_reason FROM click_events FINAL FORMAT TSV").await.unwrap();
    let counted: HashMap<String, (bool, String)> = rows
        .lines()
        .map(|l| {
            let mut cols = l.split('\t');
            let (id, human, reason) = (cols.next().unwrap(), cols.next().unwrap(), cols.next().unwrap());
            (id.to_owned(), (human == "1", reason.to_owned()))
        })
        .collect();
    assert_eq!(counted.len() as u64, tally.total());

    // The decided topic catches up within seconds of the last flush.
    let brokers = servers.kafka.brokers();
    let deadline = Instant::now() + Duration::from_secs(60);
    let decided = loop {
        let decided = read_decided(&brokers);
        let n: usize = decided.values().map(Vec::len).sum();
        if n >= counted.len() {
            break decided;
        }
        if Instant::now() > deadline {
            // Where the gaps are: each partition's counted offsets missing from it.
            let stored = ch
                .query("SELECT kafka_partition, kafka_offset FROM click_events FINAL ORDER BY 1, 2 FORMAT TSV")
                .await
                .unwrap();
            let mut missing: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
            for l in stored.lines() {
                let (p, o) = l.split_once('\t').unwrap();
                let (p, o): (i32, i64) = (p.parse().unwrap(), o.parse().unwrap());
                if !decided.get(&p).is_some_and(|es| es.iter().any(|e| e.source_offset == o)) {
                    missing.entry(p).or_default().push(o);
                }
            }
            let gaps: Vec<String> = missing
                .iter_mut()
                .map(|(p, os)| {
                    os.sort_unstable();
                    // Missing offsets as runs: `a..=b`.
                    let mut runs: Vec<(i64, i64)> = Vec::new();
                    for &o in os.iter() {
                        match runs.last_mut() {
                            Some((_, end)) if *end + 1 == o => *end = o,
                            _ => runs.push((o, o)),
                        }
                    }
                    let runs: Vec<String> = runs.iter().take(20).map(|(a, b)| format!("{a}..={b}")).collect();
                    let published = decided.get(p).map_or(0, Vec::len);
                    format!("partition {p}: {} missing ({published} published): {}", os.len(), runs.join(" "))
                })
                .collect();
            panic!("{n} of {} counted events published after 60 s:\n{}", counted.len(), gaps.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut seen: HashMap<&str, (i32, i64)> = HashMap::new();
    for (p, events) in &decided {
        let mut last = -1;
        for e in events {
            assert_eq!(e.source_partition, *p, "partition {p} holds clicks partition {p}'s events");
            assert!(e.source_offset > last, "partition {p}: offset {} after {last}", e.source_offset);
            last = e.source_offset;
            if let Some(before) = seen.insert(&e.event_id, (*p, e.source_offset)) {
                panic!("event {} published twice: at {before:?} and ({p}, {})", e.event_id, e.source_offset);
            }
            let (human, reason) =
                counted.get(&e.event_id).unwrap_or_else(|| panic!("{} published, not counted", e.event_id));
            assert_eq!(
                e.verdict == "human",
                *human,
                "{}: published {} against the counted verdict",
                e.event_id,
                e.verdict
            );
            assert_eq!(&e.reason, reason, "{}: published reason against the counted one", e.event_id);
        }
    }
    assert_eq!(seen.len(), counted.len(), "every counted event published");
    aggregator.proc.assert_running();
}
