//! ClickHouse is stopped for 60 s while clicks keep coming through the edge.
//! The edge keeps redirecting, the aggregator pauses (bounded memory, Kafka
//! holds the backlog) and keeps serving its health and status endpoints, and
//! once ClickHouse is back every click is counted exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ricochet_tests::client::{self, http};
use ricochet_tests::feed::{self, Tally};
use ricochet_tests::servers::Servers;
use ricochet_tests::{eventually, load, services};

const OUTAGE: Duration = Duration::from_secs(60);
const RATE: u64 = 200;
const MAX_BATCH_EVENTS: u64 = 1000;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_for_a_minute_pauses_the_aggregator_and_loses_nothing() {
    let started = Instant::now();
    let mut servers = Servers::start().await;
    let aggregator = services::aggregator(
        &servers,
        "aggregator",
        &[
            ("RICOCHET_FLUSH_INTERVAL_MS", "500".to_owned()),
            ("RICOCHET_MAX_BATCH_EVENTS", MAX_BATCH_EVENTS.to_string()),
        ],
    )
    .await;
    let edge = services::redirect(&servers, "edge", &[]).await;
    // The aggregator's own listener answers health and this member's status;
    // links and stats are the API's.
    let ops = aggregator.url();
    // Keep the service: dropping it stops the process.
    let api_service = services::api(&servers, "api", &[]).await;
    let api = api_service.url();
    let link = client::create_link(&api, "acme", "outage", "https://acme.example/").await;
    let url = format!("{}/{}", edge.url(), link.code);
    let warmup: u64 = eventually("the edge to know the link", Duration::from_secs(30), || {
        let url = url.clone();
        async move { (http().get(url).send().await.ok()?.status() == 302).then_some(1) }
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load::clicks(url, RATE, Duration::from_secs(600), stop.clone()));
    eventually("clicks to be counted before the outage", Duration::from_secs(30), || async {
        (servers.clickhouse.number("SELECT sum(clicks) FROM click_rollup_minute").await > 0).then_some(())
    })
    .await;

    servers.clickhouse.stop();
    let down_at = Instant::now();
    eprintln!("clickhouse stopped");
    let rss_before = rss_kib(aggregator.proc.pid());
    let (mut first_lag, mut last_lag, mut max_pending, mut max_rss) = (None, 0, 0, 0);
    let mut checks = 0;
    while down_at.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let health = http()
            .get(format!("{ops}/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("healthz answers during the outage");
        assert_eq!(health.status(), 200, "healthz during the outage");
        let status = client::status(&ops).await;
        let pending = status["pending_events"].as_u64().unwrap();
        max_pending = max_pending.max(pending);
        max_rss = max_rss.max(rss_kib(aggregator.proc.pid()));
        if down_at.elapsed() > Duration::from_secs(10) {
            // Settled into the outage: paused, one batch in memory at most.
            assert_eq!(status["paused"], true, "paused while ClickHouse is down: {status}");
            let lag = status["lag"].as_i64().unwrap();
            first_lag.get_or_insert(lag);
            last_lag = lag;
            checks += 1;
        }
    }
    // The stats API says ClickHouse is away rather than hanging or lying.
    let stats = http().get(format!("{api}/v1/links/{}/stats", link.link_id)).send().await.unwrap();
    assert_eq!(stats.status(), 503, "stats during the outage");
    servers.clickhouse.restart().await;
    let up_at = Instant::now();
    eprintln!("clickhouse back");

    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let report = loader.await.unwrap();
    assert!(report.failures.is_empty(), "the edge failed: {:?}", &report.failures[..report.failures.len().min(5)]);
    let during = report.redirected_at.iter().filter(|t| **t > down_at && **t < up_at).count() as u64;
    assert!(during > RATE * OUTAGE.as_secs() / 2, "the edge kept redirecting during the outage: {during}");
    let grew = last_lag - first_lag.unwrap();
    eprintln!(
        "outage: {during} clicks redirected; lag grew by {grew} over {checks} checks; \
         at most {max_pending} events pending; RSS {rss_before} KiB -> at most {max_rss} KiB"
    );
    assert!(grew as u64 > RATE * 30, "Kafka held the backlog (lag grew by {grew})");
    assert!(max_pending <= MAX_BATCH_EVENTS, "memory holds one batch at most");
    assert!(max_rss < rss_before + 64 * 1024, "memory stayed bounded: {rss_before} KiB -> {max_rss} KiB");

    let total = warmup + report.redirected();
    let tally = Tally { per_link: [(link.link_id.clone(), total)].into(), ..Tally::default() };
    feed::assert_counted_exactly(&servers.clickhouse, &tally, Duration::from_secs(60)).await;
    let stats = client::link_stats(&api, &link.link_id, client::now_secs() - 3600, client::now_secs() + 60).await;
    assert_eq!(client::total_clicks(&stats), total, "the stats API agrees");
    let status = client::status(&ops).await;
    assert_eq!(status["lag"], 0, "caught up: {status}");
    eprintln!(
        "{total} clicks exact {:.0}s after ClickHouse came back; test took {:.0}s",
        up_at.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
