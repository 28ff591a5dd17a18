//! `/v1/status` and the lag and freshness gauges on `/metrics` report what
//! the pipeline really holds: zero lag once everything is stored, lag equal
//! to the clicks waiting in Kafka while ClickHouse is away, and freshness as
//! the age of the newest click stored.

use std::time::Duration;

use ricochet_tests::feed::{Feed, Tally, Target};
use ricochet_tests::servers::Servers;
use ricochet_tests::{client, eventually, services, PARTITIONS};
use serde_json::Value;

async fn status_when(api: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    eventually(what, Duration::from_secs(30), || async {
        let s = client::status(api).await;
        ok(&s).then_some(s)
    })
    .await
}

fn stored_sum(status: &Value) -> i64 {
    status["partitions"].as_array().unwrap().iter().map(|p| p["stored_position"].as_i64().unwrap_or(0)).sum()
}

fn high_sum(status: &Value) -> i64 {
    status["partitions"].as_array().unwrap().iter().map(|p| p["high_watermark"].as_i64().unwrap_or(0)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_lag_and_freshness() {
    let mut servers = Servers::start().await;
    let aggregator =
        services::aggregator(&servers, "aggregator", &[("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned())]).await;
    let api = aggregator.url();
    let feed = Feed::new(&servers.kafka.brokers());
    let targets = Target::many(8, 1);
    let mut tally = Tally::default();

    // 100 clicks that happened 30 s ago.
    let then = client::now_millis() - 30_000;
    let clicks: Vec<_> = (0..100).map(|i| targets[i % 8].click(then)).collect();
    feed.send_all(&clicks, &mut tally).await;
    // Watermarks are refreshed once a second: wait until they have caught up too.
    let s = status_when(&api, "all 100 clicks stored, no lag", |s| {
        stored_sum(s) == 100 && high_sum(s) == 100 && s["lag"] == 0
    })
    .await;
    assert_eq!(s["partitions"].as_array().unwrap().len() as i64, PARTITIONS, "{s}");
    for p in s["partitions"].as_array().unwrap() {
        assert_eq!(p["lag"], 0, "{s}");
        assert_eq!(p["stored_position"], p["high_watermark"], "{s}");
    }
    let freshness = s["freshness_seconds"].as_f64().unwrap();
    assert!((30.0..60.0).contains(&freshness), "freshness {freshness}: {s}");
    assert_eq!(s["paused"], false);
    // The same numbers as gauges (refreshed once a second).
    eventually("the gauges", Duration::from_secs(10), || async {
        let lag = client::metric(&api, "ricochet_aggregator_partition_lag").await;
        let fresh = client::metric(&api, "ricochet_aggregator_freshness_seconds").await;
        (lag == 0.0 && (30.0..60.0).contains(&fresh)).then_some(())
    })
    .await;

    // ClickHouse goes away; 50 new clicks wait in Kafka and show as lag.
    servers.clickhouse.stop();
    let now = client::now_millis();
    let clicks: Vec<_> = (0..50).map(|i| targets[i % 8].click(now)).collect();
    feed.send_all(&clicks, &mut tally).await;
    let s = status_when(&api, "lag of 50 while ClickHouse is down", |s| s["lag"] == 50 && s["paused"] == true).await;
    assert_eq!(stored_sum(&s), 100, "nothing stored while down: {s}");
    assert!(s["freshness_seconds"].as_f64().unwrap() > freshness, "freshness grows while nothing is stored: {s}");
    eventually("the lag gauge", Duration::from_secs(10), || async {
        (client::metric(&api, "ricochet_aggregator_partition_lag").await == 50.0).then_some(())
    })
    .await;

    servers.clickhouse.restart().await;
    let s = status_when(&api, "caught up after ClickHouse is back", |s| {
        stored_sum(s) == 150 && high_sum(s) == 150 && s["lag"] == 0 && s["paused"] == false
    })
    .await;
    let freshness = s["freshness_seconds"].as_f64().unwrap();
    assert!(freshness < 30.0, "the new clicks are stored: {s}");
    eprintln!("{s:#}");
}
