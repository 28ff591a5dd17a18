//! Quiet flushes on a replicated cluster (issue 15, hole 1): one click per
//! flush, on one link, for a sustained period (two minutes by default), and
//! every click must be counted on BOTH replicas, with the stored Kafka
//! positions exact.
//!
//! Why it can fail: a flush of one click on the same link, in the same
//! minute, from the same partition writes a rollup + positions block that is
//! byte-identical to the flush before it (same rows, and a position row that
//! holds only the delta, 1). `ReplicatedMergeTree` deduplicates an insert
//! whose block hashes like one of its last `replicated_deduplication_window`
//! (100) blocks, and answers OK. Unless the aggregator turns that off or
//! makes each block unique, those clicks vanish and the stored position (the
//! sum of the deltas) falls behind the real end of the partition.
//! `tests/tests/cluster.rs` cannot see this: under its load no two blocks repeat.
//!
//! What it asserts, once the load stops:
//! - counts: both replicas' own `_local` tables hold exactly the clicks the
//!   broker acknowledged, per link at every grain, and as many distinct raw
//!   events ([`feed::assert_counted_exactly_in`]);
//! - positions: on both replicas, for every partition of the topic, the
//!   stored position equals the broker's high watermark (every message of
//!   the topic is one of these clicks; a partition that got none has no
//!   position);
//! - the premise: the flushes really held one click each (the aggregator's
//!   flush counter is close to the number of clicks).
//!
//! Why real servers: the deduplication happens inside ClickHouse's
//! replicated engine (block hashes kept in ZooKeeper); a single server,
//! chDB or a mock does not deduplicate, so only ZooKeeper and two 18.16
//! replicas, started as `tests/tests/cluster.rs` starts them, can show it.
//!
//! `RICOCHET_QUIET_FLUSHES_SECS` overrides the duration (default 120 s).

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;
use ricochet_tests::client::{self, now_millis};
use ricochet_tests::feed::{self, Feed, Tally, Target};
use ricochet_tests::servers::ReplicatedServers;
use ricochet_tests::services;

/// How long clicks are sent, unless `RICOCHET_QUIET_FLUSHES_SECS` says otherwise.
const DEFAULT_DURATION: Duration = Duration::from_secs(120);
const DURATION_ENV: &str = "RICOCHET_QUIET_FLUSHES_SECS";
/// One click this often, with a flush every 200 ms: each flush holds one click at most.
const CLICK_EVERY: Duration = Duration::from_secs(1);
const FLUSH_INTERVAL_MS: u64 = 200;

fn duration() -> Duration {
    match std::env::var(DURATION_ENV) {
        Ok(v) => Duration::from_secs(v.parse().unwrap_or_else(|e| panic!("{DURATION_ENV}={v:?}: {e}"))),
        Err(_) => DEFAULT_DURATION,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_per_flush_for_minutes_counts_every_click_and_stores_exact_positions() {
    let started = Instant::now();
    let servers = ReplicatedServers::start().await;
    eprintln!("zookeeper and two replicas up in {:.1}s", started.elapsed().as_secs_f64());
    let env = [
        ("RICOCHET_FLUSH_INTERVAL_MS", FLUSH_INTERVAL_MS.to_string()),
        ("RICOCHET_INSERT_TIMEOUT_SECS", "5".to_owned()),
        ("RICOCHET_CLICKHOUSE_INSERT_QUORUM", "2".to_owned()),
    ];
    let aggregator = services::cluster_aggregator(&servers, 0, "aggregator-quiet", &env).await;
    eprintln!("aggregator ready after {:.1}s", started.elapsed().as_secs_f64());

    // One link of one client: every click goes to the same partition, and
    // within a minute to the same rollup rows.
    let feed = Feed::new(&servers.kafka.brokers());
    let target = Target::new("client-quiet", "camp", "link-quiet");
    let mut tally = Tally::default();
    let how_long = duration();
    let mut tick = tokio::time::interval(CLICK_EVERY);
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        tick.tick().await;
        feed.send_all(&[target.click(now_millis())], &mut tally).await;
        if tally.total() % 15 == 0 {
            let counted =
                servers.replicas[0].number("SELECT sum(clicks) FROM click_rollups_local WHERE grain = 60").await;
            eprintln!("{} clicks sent, {counted} counted on r1", tally.total());
        }
    }
    eprintln!("{} clicks sent over {how_long:?}", tally.total());
    assert!(
        tally.total() as f64 >= 0.9 * how_long.as_secs_f64() / CLICK_EVERY.as_secs_f64(),
        "the feed kept its pace: {tally:?}"
    );

    // Counts on both replicas (this waits until the aggregator caught up; r2
    // first fetches what r1 holds).
    for r in &servers.replicas {
        feed::sync_replica(r).await;
    }
    // Caught rather than raised at once, so that a failing run shows the
    // positions too.
    let counted = AssertUnwindSafe(async {
        for (i, r) in servers.replicas.iter().enumerate() {
            feed::assert_counted_exactly_in(r, "_local", &tally, Duration::from_secs(30)).await;
            eprintln!("r{}: every click counted", i + 1);
        }
    })
    .catch_unwind()
    .await;

    // The premise: flushes held one click each (not several clicks batched
    // into one, which would hide the hole).
    let flushes = client::metric(&aggregator.url(), "ricochet_aggregator_flushes_total").await;
    eprintln!("{flushes} flushes for {} clicks", tally.total());
    assert!(
        flushes >= 0.9 * tally.total() as f64,
        "only {flushes} flushes for {} clicks: the flushes did not hold one click each",
        tally.total()
    );

    // Positions: on both replicas, each partition's stored position is the
    // partition's end. Every message is one of the clicks, so the topic's
    // ends add up to them.
    let watermarks = feed::high_watermarks(&servers.kafka.brokers()).await;
    assert_eq!(
        watermarks.values().sum::<i64>(),
        tally.total() as i64,
        "the topic holds the clicks sent: {watermarks:?}"
    );
    let expected: std::collections::BTreeMap<i32, i64> =
        watermarks.iter().filter(|(_, end)| **end > 0).map(|(p, end)| (*p, *end)).collect();
    let mut wrong = Vec::new();
    for (i, r) in servers.replicas.iter().enumerate() {
        let stored = feed::stored_positions(r, "click_rollups_local").await;
        eprintln!("r{}: stored positions {stored:?}, partition ends {expected:?}", i + 1);
        if stored != expected {
            wrong.push(format!("r{}: stored {stored:?}", i + 1));
        }
    }
    assert!(
        wrong.is_empty(),
        "stored positions are not the partitions' ends {expected:?}:\n{}\n(counts: {})",
        wrong.join("\n"),
        if counted.is_ok() { "exact" } else { "NOT exact, see the panic above" }
    );
    if let Err(panic) = counted {
        std::panic::resume_unwind(panic);
    }
    eprintln!("exact on both replicas after {:.0}s", started.elapsed().as_secs_f64());
}
