//! The rollups collapse on merge without losing a count or a position:
//! `OPTIMIZE … FINAL` runs over and over while clicks arrive and the
//! aggregator is killed and restarted (so it resumes from positions that were
//! just merged), and every count and position ends exact. After a last merge
//! each (grain, bucket) and each partition's position is one row.

use std::time::Duration;

use ricochet_tests::feed::{self, Feed, Load, Target};
use ricochet_tests::servers::Servers;
use ricochet_tests::services;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merging_mid_load_changes_no_count_and_no_position() {
    let servers = Servers::start().await;
    let env =
        [("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned()), ("RICOCHET_GROUP_INSTANCE_ID", "aggregator-0".to_owned())];
    let mut aggregator = services::aggregator(&servers, "aggregator-merge-0", &env).await;
    let load = Load::start(Feed::new(&servers.kafka.brokers()), Target::many(8, 3), 500);
    let ch = &servers.clickhouse;

    for round in 1..=12 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        ch.query("OPTIMIZE TABLE click_rollups FINAL").await.expect("optimize rollups");
        ch.query("OPTIMIZE TABLE click_recipients FINAL").await.expect("optimize recipients");
        if round % 4 == 0 {
            aggregator.proc.kill();
            aggregator = services::aggregator(&servers, &format!("aggregator-merge-{round}"), &env).await;
        }
    }
    let tally = load.stop().await;
    assert!(tally.total() > 2_000, "the load kept going: {tally:?}");
    feed::assert_counted_exactly(ch, &tally, Duration::from_secs(60)).await;

    let positions = "SELECT source_partition, sum(position_delta) FROM click_rollups WHERE grain = 0 \
                     GROUP BY source_partition ORDER BY source_partition FORMAT TSV";
    let before = ch.query(positions).await.unwrap();
    ch.query("OPTIMIZE TABLE click_rollups FINAL").await.unwrap();
    for grain in [60, 900, 3600, 86_400] {
        assert_eq!(feed::rollup_per_link_at(ch, grain).await, tally.per_link, "grain {grain} after the last merge");
    }
    assert_eq!(ch.query(positions).await.unwrap(), before, "positions after the last merge");
    let rows = ch.number("SELECT count() FROM click_rollups").await;
    let keys = ch
        .number(
            "SELECT count() FROM (SELECT DISTINCT grain, client_id, campaign_id, link_id, bucket_start, \
             source_topic, source_partition, dimension, value FROM click_rollups)",
        )
        .await;
    assert_eq!(rows, keys, "one row per bucket and per partition position once merged");
    // A client's events all come from one partition (the topic is keyed by
    // client), so a breakdown keeps one row per (link or campaign, bucket, value).
    ch.query("OPTIMIZE TABLE click_breakdowns FINAL").await.unwrap();
    let breakdown_rows = ch.number("SELECT count() FROM click_breakdowns WHERE grain != 0").await;
    let values = ch
        .number(
            "SELECT count() FROM (SELECT DISTINCT grain, client_id, campaign_id, link_id, bucket_start, dimension, value \
             FROM click_breakdowns WHERE grain != 0)",
        )
        .await;
    assert!(values > 0, "breakdown rows were written");
    assert_eq!(breakdown_rows, values, "breakdown rows per (bucket, value) after merges");
    assert_eq!(
        ch.number("SELECT count() FROM click_breakdowns WHERE grain = 0").await,
        ch.number("SELECT count(DISTINCT source_partition) FROM click_rollups WHERE grain = 0").await,
        "one breakdowns position row per partition once merged"
    );
    let flushes = ch
        .number("SELECT count() FROM system.query_log WHERE type = 2 AND query LIKE 'INSERT INTO click_counts_in%'")
        .await;
    eprintln!("{} clicks, {flushes} rollup inserts, {rows} rows after merging", tally.total());
    aggregator.proc.assert_running();
}
