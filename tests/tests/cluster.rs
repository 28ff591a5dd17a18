//! The aggregator on a replicated ClickHouse cluster (ZooKeeper, one shard of
//! two 18.16 replicas, migrations in cluster mode, quorum inserts): each
//! replica in turn is killed with SIGKILL under load and restarted, and every
//! click ends counted exactly once on BOTH replicas.

use std::time::{Duration, Instant};

use ricochet_tests::feed::{self, Feed, Load, Target};
use ricochet_tests::servers::ReplicatedServers;
use ricochet_tests::services;

/// A number from the aggregator's `/metrics`, 0 when not exported yet.
async fn metric(aggregator: &services::Service, name: &str) -> f64 {
    let body = reqwest::get(format!("{}/metrics", aggregator.url())).await.unwrap().text().await.unwrap();
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_ends_with_exact_counts_on_both_replicas() {
    let started = Instant::now();
    let mut servers = ReplicatedServers::start().await;
    eprintln!("zookeeper and two replicas up in {:.1}s", started.elapsed().as_secs_f64());
    let env = [
        ("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned()),
        // A quorum that cannot be reached gives up after this, and the insert is settled.
        ("RICOCHET_INSERT_TIMEOUT_SECS", "5".to_owned()),
        ("RICOCHET_CLICKHOUSE_INSERT_QUORUM", "2".to_owned()),
    ];
    let aggregator = services::cluster_aggregator(&servers, 0, "aggregator-cluster", &env).await;

    // Cluster mode created both tables on both replicas.
    for (i, r) in servers.replicas.iter().enumerate() {
        let engines = r
            .query(
                "SELECT name, engine FROM system.tables WHERE database = 'default' \
                 AND (name LIKE 'click_rollups%' OR name LIKE 'click_counts%') ORDER BY name FORMAT TSV",
            )
            .await
            .unwrap();
        assert_eq!(
            engines,
            "click_counts_fence\tMaterializedView\nclick_counts_in\tNull\n\
             click_rollups\tDistributed\nclick_rollups_fence\tMaterializedView\nclick_rollups_in\tNull\n\
             click_rollups_local\tReplicatedSummingMergeTree\n",
            "replica r{}: the rollups, and the fence in front of them",
            i + 1
        );
    }

    let load = Load::start(Feed::new(&servers.kafka.brokers()), Target::many(8, 2), 500);
    for victim in [1, 0] {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = servers.replicas[0].number("SELECT sum(clicks) FROM click_rollups_local WHERE grain = 60").await;
        servers.replicas[victim].kill();
        eprintln!("r{} killed: {} clicks sent, {before} counted", victim + 1, load.sent());
        tokio::time::sleep(Duration::from_secs(4)).await;
        servers.replicas[victim].restart().await;
        eprintln!("r{} back: {} clicks sent", victim + 1, load.sent());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;
    eprintln!("{} clicks sent in {:.0}s", tally.total(), started.elapsed().as_secs_f64());
    assert!(tally.total() > 3_000, "the load kept going: {tally:?}");

    for (i, r) in servers.replicas.iter().enumerate() {
        feed::assert_counted_exactly_in(r, "_local", &tally, Duration::from_secs(120)).await;
        eprintln!("r{}: exact after {:.0}s", i + 1, started.elapsed().as_secs_f64());
    }
    // Reads through the Distributed table agree.
    feed::assert_counted_exactly(&servers.replicas[1], &tally, Duration::from_secs(10)).await;

    // The kills were felt: flushes failed while a replica was missing, and
    // were retried rather than lost or doubled.
    let failures = metric(&aggregator, "ricochet_aggregator_flush_failures_total").await;
    eprintln!("flush failures while a replica was down: {failures}");
    assert!(failures > 0.0, "no flush failed: the quorum was not in force");
}

/// A replica paused for seconds while the migrations run (a VM pause, a host
/// starved of CPU) delays them and breaks nothing. With a short ZooKeeper
/// session (this harness had 6 s) the pause expires the replica's session, and
/// 18.16 then applies no further ALTER to that replica's tables: the next
/// migration that alters one stalled, and the aggregator stopped at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_while_migrating_delays_the_migrations_and_breaks_nothing() {
    let servers = ReplicatedServers::start().await;
    let log = servers.path().join("aggregator-paused.log");
    let pause = async {
        // Once 0001 has made click_events_local, before the ALTERs of 0004 and 0009.
        let made = "\"0001_click_events\"";
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log).unwrap_or_default().contains(made) {
            assert!(Instant::now() < deadline, "0001 not applied within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        servers.replicas[1].freeze();
        eprintln!("r2 paused");
        tokio::time::sleep(Duration::from_secs(10)).await;
        servers.replicas[1].thaw();
        eprintln!("r2 running again");
    };
    let started = Instant::now();
    let (_aggregator, ()) = tokio::join!(services::cluster_aggregator(&servers, 0, "aggregator-paused", &[]), pause);
    eprintln!("migrated in {:.0}s", started.elapsed().as_secs_f64());

    let columns = "SELECT table, name, type FROM system.columns \
                   WHERE database = 'default' AND table LIKE '%\\_local' ORDER BY table, name FORMAT TSV";
    let (r1, r2) =
        (servers.replicas[0].query(columns).await.unwrap(), servers.replicas[1].query(columns).await.unwrap());
    assert!(r1.contains("click_events_local\tua_class\t"), "0004 applied on r1:\n{r1}");
    assert_eq!(r1, r2, "both replicas' tables have every column");
}
