//! The aggregator is killed with SIGKILL at random moments while clicks keep
//! arriving, 20 times, and every click is still counted exactly once.

use std::time::{Duration, Instant};

use rand::Rng;
use ricochet_tests::feed::{self, Feed, Load, Target};
use ricochet_tests::servers::Servers;
use ricochet_tests::services;

const KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twenty_times_under_load_every_click_is_counted_once() {
    let started = Instant::now();
    let servers = Servers::start().await;
    let env = [
        ("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned()),
        // Static membership: a restarted member takes its partitions back at
        // once instead of waiting out the dead one's session, so most kills
        // land while it is consuming and flushing, not while it waits.
        ("RICOCHET_GROUP_INSTANCE_ID", "aggregator-0".to_owned()),
    ];
    let mut aggregator = services::aggregator(&servers, "aggregator-life-0", &env).await;
    let load = Load::start(Feed::new(&servers.kafka.brokers()), Target::many(16, 2), 1000);
    let ch = &servers.clickhouse;

    let mut rng = rand::rng();
    for life in 1..=KILLS {
        // A random moment in its life: assigning, consuming, mid-flush, settling.
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..1500))).await;
        aggregator.proc.assert_running();
        aggregator.proc.kill();
        let counted = ch.number("SELECT sum(clicks) FROM click_rollup_minute").await;
        eprintln!("kill {life:2}: {} clicks sent, {counted} counted", load.sent());
        // Clicks keep arriving while it is down.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        aggregator = services::aggregator(&servers, &format!("aggregator-life-{life}"), &env).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = load.stop().await;
    eprintln!("{} clicks sent across {KILLS} kills in {:.0}s", tally.total(), started.elapsed().as_secs_f64());
    assert!(tally.total() > 10_000, "the load kept going: {tally:?}");

    feed::assert_counted_exactly(ch, &tally, Duration::from_secs(60)).await;
    aggregator.proc.assert_running();
    eprintln!("exact after {:.0}s", started.elapsed().as_secs_f64());
}
