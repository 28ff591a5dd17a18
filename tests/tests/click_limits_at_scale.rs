//! Click limits with 100,000 limited links (issue 18, "The limits query scales
//! to 100,000 limited links"). The aggregator reads the limited links' totals
//! with their ids bound in the query text, which 18.16 caps at
//! `max_query_size` (256 KiB): one query over every limited link stopped
//! working past ~5,000 of them, so no capped link ever closed. Here a client
//! has 100,000 capped links, made the documented way (ten batches of 10,000),
//! and a person clicking two of them, far apart in the registry, closes both.
//! Real ClickHouse, broker, aggregator, API and edge.

use std::time::{Duration, Instant};

use ricochet_tests::client::{self, http};
use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use serde_json::{json, Value};

const LINKS: usize = 100_000;
const BATCH: usize = 10_000;
const LIMIT: u64 = 2;

async fn create_capped_links(api: &str) -> Vec<client::Link> {
    let mut made = Vec::with_capacity(LINKS);
    for batch in 0..LINKS / BATCH {
        let links: Vec<Value> = (0..BATCH)
            .map(|i| {
                json!({
                    "client_id": "acme",
                    "campaign_id": "capped",
                    "destination_url": format!("https://acme.example/offer/{batch}/{i}"),
                    "click_limit": LIMIT,
                })
            })
            .collect();
        let r = http().post(format!("{api}/v1/links:batch")).json(&json!({ "links": links })).send().await.unwrap();
        assert_eq!(r.status(), 201, "batch {batch}: {}", r.text().await.unwrap_or_default());
        let body: Value = r.json().await.unwrap();
        let links: Vec<client::Link> = serde_json::from_value(body["links"].clone()).unwrap();
        made.extend(links);
    }
    assert_eq!(made.len(), LINKS);
    made
}

/// A person's click: a browser's user agent and language, so it is judged
/// human and counts towards the limit (human clicks count by default).
async fn click(edge: &Service, code: &str) -> u16 {
    client::http_as(None)
        .get(format!("{}/{code}", edge.url()))
        .header("user-agent", client::BROWSER_UA)
        .header("accept-language", "en-GB,en;q=0.9")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_limited_links_still_close() {
    let servers = Servers::start().await;
    let _aggregator =
        services::aggregator(&servers, "aggregator", &[("RICOCHET_FLUSH_INTERVAL_MS", "200".into())]).await;
    let api = services::api(&servers, "api", &[]).await;
    let links = create_capped_links(&api.url()).await;
    let edge = services::redirect(&servers, "edge", &[]).await;

    let (first, last) = (&links[0], &links[LINKS - 1]);
    for link in [first, last] {
        for _ in 0..LIMIT {
            assert_eq!(click(&edge, &link.code).await, 302, "a click under the limit of {}", link.link_id);
        }
    }
    // Both close within the documented feedback window, stretched for a
    // loaded machine: the aggregator reads 100,000 links' totals per round.
    let started = Instant::now();
    let mut open = vec![first, last];
    while !open.is_empty() {
        let mut still = Vec::new();
        for link in open {
            match click(&edge, &link.code).await {
                410 => {}
                302 => still.push(link),
                other => panic!("unexpected status {other} for {}", link.link_id),
            }
        }
        open = still;
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "capped links still open after {:?}: {:?}",
            started.elapsed(),
            open.iter().map(|l| &l.link_id).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("both capped links closed {:?} after their last allowed click", started.elapsed());
}
