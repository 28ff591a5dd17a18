//! The group goes from 2 aggregators to 3 to 1 while clicks keep arriving,
//! with batches long enough (3 s) that every change of owner catches partitions
//! with clicks pending in memory; every click is still counted exactly once.
//! Run with the cooperative protocol (the default, which nisshi supports) and
//! with an eager one (the fallback for brokers that do not).

use std::time::{Duration, Instant};

use ricochet_tests::client;
use ricochet_tests::feed::{self, Feed, Load, Target};
use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use ricochet_tests::{eventually, PARTITIONS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_two_to_three_to_one_members_under_load() {
    scale_under_load("cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_two_to_three_to_one_members_under_load() {
    scale_under_load("range").await;
}

/// Waits until the members own every partition between them, each at least one.
async fn wait_for_assignment(members: &[&Service]) {
    let urls: Vec<String> = members.iter().map(|m| m.url()).collect();
    eventually("every member to own partitions, all partitions owned once", Duration::from_secs(30), || {
        let urls = urls.clone();
        async move {
            let mut all = Vec::new();
            for u in &urls {
                let owned = client::owned_partitions(u).await;
                if owned.is_empty() {
                    return None;
                }
                all.extend(owned);
            }
            all.sort();
            (all == (0..PARTITIONS).collect::<Vec<i64>>()).then_some(())
        }
    })
    .await;
}

async fn scale_under_load(strategy: &str) {
    let started = Instant::now();
    let servers = Servers::start().await;
    let env = [
        // Long batches: a rebalance always finds clicks pending.
        ("RICOCHET_FLUSH_INTERVAL_MS", "3000".to_owned()),
        ("RICOCHET_ASSIGNMENT_STRATEGY", strategy.to_owned()),
    ];
    let a = services::aggregator(&servers, "aggregator-a", &env).await;
    let mut b = services::aggregator(&servers, "aggregator-b", &env).await;
    let load = Load::start(Feed::new(&servers.kafka.brokers()), Target::many(16, 2), 1000);

    wait_for_assignment(&[&a, &b]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    eprintln!("2 members; {} clicks sent", load.sent());

    let mut c = services::aggregator(&servers, "aggregator-c", &env).await;
    wait_for_assignment(&[&a, &b, &c]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    eprintln!("3 members; {} clicks sent", load.sent());
    // The changes of owner caught clicks pending in a batch, which the old
    // owner dropped and the new one read again from the stored position.
    let mut dropped = 0.0;
    for m in [&a, &b, &c] {
        dropped += client::metric(&m.url(), "ricochet_aggregator_revoked_pending_events_total").await;
    }
    assert!(dropped > 0.0, "no rebalance happened mid-batch");

    // Down to one: graceful stops flush what they hold and leave the group.
    assert!(b.proc.terminate_and_wait(Duration::from_secs(20)), "b exits cleanly");
    assert!(c.proc.terminate_and_wait(Duration::from_secs(20)), "c exits cleanly");
    wait_for_assignment(&[&a]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tally = load.stop().await;
    eprintln!("1 member; {} clicks sent, {dropped} pending clicks dropped at revocations", tally.total());

    feed::assert_counted_exactly(&servers.clickhouse, &tally, Duration::from_secs(60)).await;
    eprintln!("{strategy}: exact after {:.0}s", started.elapsed().as_secs_f64());
}
