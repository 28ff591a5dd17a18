//! Clicks survive what happens to the broker and to the edge: every event
//! passes through the edge's disk spool before Kafka.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use ricochet_tests::{client, eventually, load};

async fn distinct_events(servers: &Servers, link_id: &str) -> u64 {
    servers
        .clickhouse
        .number(&format!("SELECT count(DISTINCT event_id) FROM click_events WHERE link_id = '{link_id}'"))
        .await
}

/// Waits until at least `sent` distinct events of the link are in ClickHouse.
async fn wait_for_events(servers: &Servers, link_id: &str, sent: u64, what: &str, timeout: Duration) -> u64 {
    eventually(what, timeout, || async {
        let n = distinct_events(servers, link_id).await;
        (n >= sent).then_some(n)
    })
    .await
}

/// The aggregator and the API, an edge, and one link.
async fn setup(servers: &Servers) -> ([Service; 2], Service, client::Link) {
    let aggregator = services::aggregator(servers, "aggregator", &[]).await;
    let api = services::api(servers, "api", &[]).await;
    let link = client::create_link(&api.url(), "acme", "spool", "https://acme.example/").await;
    // Started after the link exists: ready means the link is loaded.
    let edge = services::redirect(servers, "edge", &[]).await;
    ([aggregator, api], edge, link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_during_a_minute_of_load_loses_no_click() {
    let mut servers = Servers::start().await;
    let (_aggregator, edge, link) = setup(&servers).await;
    let stop = Arc::new(AtomicBool::new(false));
    let run = tokio::spawn(load::clicks(format!("{}/{}", edge.url(), link.code), 150, Duration::from_secs(60), stop));

    tokio::time::sleep(Duration::from_secs(15)).await;
    servers.kafka.kill();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    servers.kafka.restart().await;
    eprintln!("broker was down for {:.1}s", down.elapsed().as_secs_f64());

    let report = run.await.unwrap();
    assert!(
        report.failures.is_empty(),
        "the edge kept redirecting: {:?}",
        &report.failures[..report.failures.len().min(5)]
    );
    let sent = report.redirected();
    assert!(sent > 6_000, "load ran: {sent}");
    let counted =
        wait_for_events(&servers, &link.link_id, sent, "every click to reach ClickHouse", Duration::from_secs(120))
            .await;
    assert_eq!(counted, sent, "after dedup by event id, events counted equal clicks sent");
    // A flush writes raw events first and rollups second: wait for the rollups
    // themselves, then hold a little longer so a late double count would show.
    let rollup_sql = format!("SELECT sum(clicks) FROM click_rollup_minute WHERE link_id = '{}'", link.link_id);
    eventually("the rollups to count every click", Duration::from_secs(30), || async {
        (servers.clickhouse.number(&rollup_sql).await >= sent).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rollup = servers.clickhouse.number(&rollup_sql).await;
    let copies = servers
        .clickhouse
        .number(&format!("SELECT count() FROM click_events WHERE link_id = '{}'", link.link_id))
        .await;
    eprintln!("sent {sent}, distinct events {counted}, raw rows {copies}, rollup clicks {rollup}");
    assert_eq!(rollup, sent, "the rollups count each click once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_spool_survives_a_graceful_restart_of_the_edge_while_the_broker_is_down() {
    let mut servers = Servers::start().await;
    let (_aggregator, mut edge, link) = setup(&servers).await;
    servers.kafka.stop();

    let stop = Arc::new(AtomicBool::new(false));
    let report = load::clicks(format!("{}/{}", edge.url(), link.code), 200, Duration::from_secs(5), stop).await;
    assert!(report.failures.is_empty(), "redirects never wait for the broker: {:?}", report.failures.first());
    let sent = report.redirected();
    // Graceful shutdown with the broker away: the spool keeps everything.
    assert!(edge.proc.terminate_and_wait(Duration::from_secs(60)), "edge exits cleanly on SIGTERM");
    let spool = servers.path().join("edge-spool");
    let on_disk = std::fs::read_dir(&spool)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "spool"))
        .count();
    assert!(on_disk > 0, "events wait in the spool");

    servers.kafka.restart().await;
    let _edge = services::redirect(&servers, "edge", &[]).await;
    let counted = wait_for_events(
        &servers,
        &link.link_id,
        sent,
        "the spooled clicks to be forwarded after the restart",
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(counted, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_loses_at_most_the_fsync_window() {
    const FSYNC_MS: u64 = 100;
    let servers = Servers::start().await;
    let _aggregator = services::aggregator(&servers, "aggregator", &[]).await;
    let api = services::api(&servers, "api", &[]).await;
    let link = client::create_link(&api.url(), "acme", "spool", "https://acme.example/").await;
    let env = [("RICOCHET_SPOOL_FSYNC_MS", FSYNC_MS.to_string())];
    let mut edge = services::redirect(&servers, "edge", &env).await;

    let stop = Arc::new(AtomicBool::new(false));
    let run =
        tokio::spawn(load::clicks(format!("{}/{}", edge.url(), link.code), 400, Duration::from_secs(30), stop.clone()));
    tokio::time::sleep(Duration::from_secs(4)).await;
    edge.proc.kill();
    let killed_at = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = run.await.unwrap();
    let sent = report.redirected();
    // Clicks answered in the last fsync window (doubled, for scheduling slack) may be lost.
    let window = Duration::from_millis(2 * FSYNC_MS);
    let at_risk =
        report.redirected_at.iter().filter(|t| killed_at.saturating_duration_since(**t) <= window).count() as u64;

    let _edge = services::redirect(&servers, "edge", &env).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let counted = eventually("spooled clicks to be forwarded", Duration::from_secs(60), || async {
        let n = distinct_events(&servers, &link.link_id).await;
        (n + at_risk >= sent).then_some(n)
    })
    .await;
    eprintln!("sent {sent}, counted {counted}, lost {}, allowed {at_risk}", sent.saturating_sub(counted));
    assert!(counted <= sent, "no click invented");
    assert!(sent - counted <= at_risk, "lost {} > {at_risk} answered within the last {window:?}", sent - counted);
}

/// What an edge resending its spool after a crash does: the same event, with
/// the same id and key, reaches the topic again. It is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_events_are_counted_once() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use ricochet_schemas::*;
    let servers = Servers::start().await;
    let _aggregator = services::aggregator(&servers, "aggregator", &[]).await;
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", servers.kafka.brokers()).create().unwrap();
    let event = ClickEvent {
        event_id: EventId::mint(),
        event_time_ms: ricochet_tests::client::now_secs() * 1000,
        client_id: ClientId::parse("acme").unwrap(),
        campaign_id: CampaignId::parse("c").unwrap(),
        link_id: LinkId::parse("replayed").unwrap(),
        recipient_id: None,
        destination_url: "https://acme.example/".into(),
        http_method: "GET".into(),
        user_agent: None,
        referer: None,
        client_ip: None,
        edge_node: "edge".into(),
        event_type: EventType::Click,
        is_prefetch: false,
        recipient_token: RecipientToken::Absent,
        signals: ricochet_schemas::Signals::default(),
    };
    let bytes = Codec::<ClickEvent>::new().encode(&event).unwrap();
    for _ in 0..3 {
        producer.send(FutureRecord::to("clicks").key("acme").payload(&bytes), Duration::from_secs(10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await; // across flushes, not only within one batch
    }
    let mut other = event.clone();
    other.event_id = EventId::mint();
    let other_bytes = Codec::<ClickEvent>::new().encode(&other).unwrap();
    producer.send(FutureRecord::to("clicks").key("acme").payload(&other_bytes), Duration::from_secs(10)).await.unwrap();
    let ch = &servers.clickhouse;
    eventually("both distinct events to be stored", Duration::from_secs(30), || async {
        (ch.number("SELECT count(DISTINCT event_id) FROM click_events WHERE link_id = 'replayed'").await == 2)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ch.number("SELECT sum(clicks) FROM click_rollup_minute WHERE link_id = 'replayed'").await, 2);
}
