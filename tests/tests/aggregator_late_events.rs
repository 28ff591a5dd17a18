//! Clicks that reach Kafka hours after they happened (an edge's spool replayed
//! after an outage) are counted in the minute they happened, not the minute
//! they arrived, and do not make the pipeline look stale.

use std::time::Duration;

use ricochet_tests::client;
use ricochet_tests::feed::{self, Feed, Tally, Target};
use ricochet_tests::servers::Servers;
use ricochet_tests::services;

const HOURS_LATE: i64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_replay_hours_late_lands_in_its_event_time_minutes() {
    let servers = Servers::start().await;
    let _aggregator =
        services::aggregator(&servers, "aggregator", &[("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned())]).await;
    // Keep the service: dropping it stops the process.
    let api_service = services::api(&servers, "api", &[]).await;
    let api = api_service.url();
    let link = client::create_link(&api, "acme", "replay", "https://acme.example/").await;
    let target = Target::new(&link.client_id, &link.campaign_id, &link.link_id);
    let feed = Feed::new(&servers.kafka.brokers());
    let mut tally = Tally::default();

    // Current clicks first, so the replay arrives after newer ones.
    let now_ms = client::now_millis();
    let current: Vec<_> = (0..5).map(|_| target.click(now_ms)).collect();
    feed.send_all(&current, &mut tally).await;

    // The replay: minute m0 gets 7 (one at its very last millisecond), m0+1
    // gets 1 (at its very first), m0+2 none, m0+3 gets 13.
    let m0 = (now_ms / 1000 - HOURS_LATE * 3600) / 60 * 60;
    let at = |minute: i64, ms: i64| target.click((m0 + minute * 60) * 1000 + ms);
    let mut replay: Vec<_> = (0..6).map(|i| at(0, i * 7_000)).collect();
    replay.push(at(0, 59_999));
    replay.push(at(1, 0));
    replay.extend((0..13).map(|i| at(3, i * 4_000 + 1)));
    feed.send_all(&replay, &mut tally).await;
    assert_eq!(tally.total(), 26);

    feed::assert_counted_exactly(&servers.clickhouse, &tally, Duration::from_secs(30)).await;

    // ClickHouse: one row per event-time minute, exactly as sent.
    let rows = servers
        .clickhouse
        .query(&format!(
            "SELECT toUInt32(bucket_start), sum(clicks) FROM click_rollup_minute \
             WHERE link_id = '{}' GROUP BY bucket_start ORDER BY bucket_start FORMAT TSV",
            link.link_id
        ))
        .await
        .unwrap();
    let stored: Vec<(i64, u64)> = rows
        .lines()
        .map(|l| {
            let (b, n) = l.split_once('\t').unwrap();
            (b.parse().unwrap(), n.parse().unwrap())
        })
        .collect();
    let expected: Vec<(i64, u64)> = tally.per_minute.iter().map(|((_, minute), n)| (*minute, *n)).collect();
    assert_eq!(stored, expected, "rollup minutes in ClickHouse");
    assert_eq!(&stored[..3], &[(m0, 7), (m0 + 60, 1), (m0 + 180, 13)]);

    // The stats API, asked about that old hour, shows the same minutes.
    let stats = client::link_stats(&api, &link.link_id, m0 - 120, m0 + 300).await;
    let series: Vec<u64> = stats["series"].as_array().unwrap().iter().map(|p| p["clicks"].as_u64().unwrap()).collect();
    assert_eq!(series, vec![0, 0, 7, 1, 0, 13, 0], "{stats}");
    assert_eq!(client::total_clicks(&stats), 21);
    let recent = client::link_stats(&api, &link.link_id, now_ms / 1000 - 300, now_ms / 1000 + 60).await;
    assert_eq!(client::total_clicks(&recent), 5, "current clicks stay current");

    // Freshness follows the newest click stored: the replay does not make the
    // pipeline look five hours stale.
    let freshness = client::status(&api).await["freshness_seconds"].as_f64().unwrap();
    assert!(freshness < 120.0, "freshness after the replay: {freshness}s");
}
