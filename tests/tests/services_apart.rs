//! The API and the aggregator are separate processes: each keeps working while
//! the other is away, and the API's `/v1/status` tells how many aggregators run
//! and how far behind they are, from what they stored (0, 1 or 2 of them).

use std::time::Duration;

use ricochet_tests::client::{self, http};
use ricochet_tests::feed::{Feed, Tally, Target};
use ricochet_tests::servers::Servers;
use ricochet_tests::{eventually, services, PARTITIONS};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

async fn status_when(api: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    eventually(what, WAIT, || async {
        let s = client::status(api).await;
        ok(&s).then_some(s)
    })
    .await
}

fn stored_sum(s: &Value) -> i64 {
    s["partitions"].as_array().unwrap().iter().map(|p| p["stored_position"].as_i64().unwrap_or(0)).sum()
}

fn members(s: &Value) -> i64 {
    s["aggregators"]["members"].as_i64().unwrap()
}

async fn counted(api: &str, link_id: &str, from: i64) -> u64 {
    client::total_clicks(&client::link_stats(api, link_id, from, client::now_secs() + 120).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_aggregators_run_apart_and_status_counts_them() {
    let servers = Servers::start().await;
    let started = client::now_secs() - 60;
    let fast = [("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned())];

    // No aggregator at all: links are still created, and the status says nobody consumes.
    let mut api = services::api(&servers, "api-0", &[]).await;
    let link = client::create_link(&api.url(), "acme", "apart", "https://acme.example/").await;
    // The edge creates the clicks topic (the API only reads it).
    let _edge = services::redirect(&servers, "edge", &[]).await;
    let feed = Feed::new(&servers.kafka.brokers());
    let target = Target::new(&link.client_id, &link.campaign_id, &link.link_id);
    let mut tally = Tally::default();
    let now = client::now_millis();
    feed.send_all(&(0..40).map(|_| target.click(now)).collect::<Vec<_>>(), &mut tally).await;
    let s = status_when(&api.url(), "the 40 waiting clicks as lag, nobody consuming", |s| s["lag"] == 40).await;
    assert_eq!(members(&s), 0, "{s}");
    assert_eq!(s["aggregators"]["running"], false, "{s}");
    assert!(s["warnings"][0].as_str().unwrap().contains("no aggregator is running"), "{s}");
    assert_eq!(s["partitions"].as_array().unwrap().len() as i64, PARTITIONS, "{s}");
    assert_eq!(stored_sum(&s), 0, "{s}");

    // One aggregator: it catches up, and the status says so.
    let mut a = services::aggregator(&servers, "aggregator-a", &fast).await;
    let s = status_when(&api.url(), "one member, caught up", |s| members(s) == 1 && s["lag"] == 0).await;
    assert_eq!(stored_sum(&s), 40, "{s}");
    assert_eq!(s["warnings"], serde_json::json!([]), "{s}");
    assert!(s["freshness_seconds"].as_f64().unwrap() < 120.0, "{s}");
    assert_eq!(counted(&api.url(), &link.link_id, started).await, 40);

    // Two aggregators share the partitions; the status reads both from ClickHouse.
    let mut b = services::aggregator(&servers, "aggregator-b", &fast).await;
    status_when(&api.url(), "two members", |s| members(s) == 2).await;
    feed.send_all(&(0..30).map(|_| target.click(client::now_millis())).collect::<Vec<_>>(), &mut tally).await;
    let s = status_when(&api.url(), "two members, 70 stored", |s| members(s) == 2 && stored_sum(s) == 70).await;
    assert_eq!(s["lag"], 0, "{s}");

    // The API restarts; the aggregators keep counting while it is gone, and the
    // new API serves the stats.
    assert!(api.proc.terminate_and_wait(Duration::from_secs(20)), "the API exits cleanly");
    feed.send_all(&(0..25).map(|_| target.click(client::now_millis())).collect::<Vec<_>>(), &mut tally).await;
    eventually("the aggregators to count while the API is down", WAIT, || async {
        let n = servers.clickhouse.number("SELECT sum(clicks) FROM click_rollup_minute").await;
        (n == 95).then_some(())
    })
    .await;
    api = services::api(&servers, "api-1", &[]).await;
    assert_eq!(counted(&api.url(), &link.link_id, started).await, tally.total());
    assert_eq!(tally.total(), 95);

    // Both aggregators stop: link creation goes on, the status says nobody consumes.
    assert!(b.proc.terminate_and_wait(Duration::from_secs(20)), "b exits cleanly");
    assert!(a.proc.terminate_and_wait(Duration::from_secs(20)), "a exits cleanly");
    let other = client::create_link(&api.url(), "acme", "apart", "https://acme.example/other").await;
    let r = http().get(format!("{}/v1/links/{}", api.url(), other.link_id)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let s = status_when(&api.url(), "no members after both left", |s| members(s) == 0).await;
    assert_eq!(s["aggregators"]["running"], false, "{s}");
    assert_eq!(stored_sum(&s), 95, "what they stored stays readable: {s}");
    assert_eq!(counted(&api.url(), &link.link_id, started).await, 95, "stats still served without aggregators");
}
