//! The registry every edge holds in memory: links created in one process
//! resolve in others, pausing a client stops its links everywhere at once,
//! and tokens, opens and prefetchers are told apart.

use std::time::{Duration, Instant};

use ricochet_registry::token::mint_with_client_key;
use ricochet_schemas::RecipientId;
use ricochet_tests::client::{self, http};
use ricochet_tests::eventually;
use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use serde_json::{json, Value};

const TOKEN_KEYS: &str = "k2:2222222222222222222222222222222222222222222222222222222222222222,k1:1111111111111111111111111111111111111111111111111111111111111111";

async fn status_of(edge: &Service, code: &str) -> u16 {
    http().get(format!("{}/{code}", edge.url())).send().await.unwrap().status().as_u16()
}

async fn put_client(api: &str, client: &str, body: Value) -> Value {
    let r = http().put(format!("{api}/v1/clients/{client}")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "PUT client");
    r.json().await.unwrap()
}

/// Waits until every edge answers `status` for `code`; returns how long that took.
async fn until_all(edges: &[&Service], code: &str, status: u16) -> Duration {
    let start = Instant::now();
    eventually(&format!("every edge to answer {status}"), Duration::from_secs(10), || async {
        for edge in edges {
            if status_of(edge, code).await != status {
                return None;
            }
        }
        Some(())
    })
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_resume_pause_ends_paused_on_every_edge() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    let link = client::create_link(&api.url(), "acme", "c", "https://acme.example/").await;
    let other = client::create_link(&api.url(), "globex", "c", "https://globex.example/").await;
    let (ops_env, ops) = client::ops_listener();
    let edge1 = services::redirect(&servers, "edge-1", &[ops_env]).await;
    let edge2 = services::redirect(&servers, "edge-2", &[]).await;
    let edges = [&edge1, &edge2];
    assert_eq!(status_of(&edge1, &link.code).await, 302, "a link created by the API resolves on another process");
    assert_eq!(status_of(&edge2, &link.code).await, 302);

    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        // In quick succession: per-key ordering must leave the last state everywhere.
        put_client(&api.url(), "acme", json!({"status": "paused"})).await;
        put_client(&api.url(), "acme", json!({"status": "active"})).await;
        put_client(&api.url(), "acme", json!({"status": "paused"})).await;
        worst = worst.max(until_all(&edges, &link.code, 410).await);
        // It stays paused: no late record flips it back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for edge in edges {
            assert_eq!(status_of(edge, &link.code).await, 410, "still paused on {}", edge.url());
        }
        assert_eq!(status_of(&edge1, &other.code).await, 302, "other clients are untouched");
        put_client(&api.url(), "acme", json!({"status": "active"})).await;
        until_all(&edges, &link.code, 302).await;
    }
    eprintln!("slowest pause to reach both edges: {worst:?}");
    assert!(worst < Duration::from_secs(2), "a pause reaches every edge within about a second, took {worst:?}");
    // The edge reports its registry size and lag.
    let metrics = eventually("the registry gauges", Duration::from_secs(15), || async {
        let text = http().get(format!("{ops}/metrics")).send().await.ok()?.text().await.ok()?;
        text.contains("ricochet_registry_lag_records 0").then_some(text)
    })
    .await;
    assert!(metrics.contains("ricochet_registry_links 2"), "{metrics}");

    // A paused client with a fallback URL sends its links there instead of the 410 page.
    put_client(&api.url(), "acme", json!({"status": "paused", "fallback_url": "https://acme.example/expired"})).await;
    for edge in edges {
        let url = format!("{}/{}", edge.url(), link.code);
        eventually("the fallback URL to be served", Duration::from_secs(10), || async {
            let r = http().get(&url).send().await.ok()?;
            (r.status() == 302 && r.headers()["location"] == "https://acme.example/expired").then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn link_status_batches_tokens_opens_and_prefetchers() {
    let servers = Servers::start().await;
    let env = [("RICOCHET_TOKEN_KEYS", TOKEN_KEYS.to_owned())];
    let _aggregator = services::aggregator(&servers, "aggregator", &env).await;
    let api = services::api(&servers, "api", &env).await;
    let link = client::create_link(&api.url(), "acme", "c", "https://acme.example/").await;
    let edge = services::redirect(&servers, "edge", &env).await;

    // Link status: paused and deleted answer 410 with a page.
    let patch = |status: &str| {
        let (url, body) = (format!("{}/v1/links/{}", api.url(), link.link_id), json!({ "status": status }));
        async move { http().patch(url).json(&body).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(patch("paused").await, 200);
    until_all(&[&edge], &link.code, 410).await;
    assert_eq!(patch("active").await, 200);
    until_all(&[&edge], &link.code, 302).await;
    assert_eq!(patch("sleeping").await, 400);

    // Batch creation: all or nothing.
    let items: Vec<Value> = (0..2000)
        .map(|i| json!({"client_id": "acme", "campaign_id": "bulk", "destination_url": format!("https://acme.example/{i}")}))
        .collect();
    let r = http().post(format!("{}/v1/links:batch", api.url())).json(&json!({ "links": items })).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let created = created["links"].as_array().unwrap().clone();
    assert_eq!(created.len(), 2000);
    let last = created.last().unwrap()["code"].as_str().unwrap().to_owned();
    until_all(&[&edge], &last, 302).await;
    let mut bad = items_with_one_bad();
    let r = http()
        .post(format!("{}/v1/links:batch", api.url()))
        .json(&json!({ "links": bad.split_off(0) }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["error"]["items"][0]["index"], 2, "{report}");
    assert!(report["error"]["message"].as_str().unwrap().contains("none were created"));

    // Signed recipient tokens: the client mints them with its own key.
    let keys: Value =
        http().get(format!("{}/v1/clients/acme/token-keys", api.url())).send().await.unwrap().json().await.unwrap();
    let kid = keys["keys"][0]["kid"].as_str().unwrap().to_owned();
    let key = hex_decode(keys["keys"][0]["key"].as_str().unwrap());
    let token = mint_with_client_key(&kid, &key, &link.code, &RecipientId::parse("jane@example.com").unwrap());
    let tampered = token.replace(".", ".x");
    for t in [&token, &tampered, &"~".to_string()] {
        let r = http().get(format!("{}/{}/{t}", edge.url(), link.code)).send().await.unwrap();
        assert_eq!(r.status(), 302, "a bad token still redirects: the recipient must reach the content");
    }
    // Opens and prefetchers.
    let r = http().get(format!("{}/o/{}.gif", edge.url(), link.code)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/gif");
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("no-store"));
    assert_eq!(http().get(format!("{}/o/{}/{token}.gif", edge.url(), link.code)).send().await.unwrap().status(), 200);
    assert_eq!(http().get(format!("{}/o/ZZZZZZZZ.gif", edge.url())).send().await.unwrap().status(), 404);
    assert_eq!(http().head(format!("{}/{}", edge.url(), link.code)).send().await.unwrap().status(), 302);
    let r = http()
        .get(format!("{}/{}", edge.url(), link.code))
        .header("user-agent", "Slackbot-LinkExpanding 1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);

    // What reached ClickHouse: 3 token clicks (1 valid), 2 opens, 2 prefetches, plus the status probes.
    let ch = &servers.clickhouse;
    let q = |cond: &str| {
        format!("SELECT count(DISTINCT event_id) FROM click_events WHERE link_id = '{}' AND {cond}", link.link_id)
    };
    eventually("the opens to arrive", Duration::from_secs(30), || async {
        (ch.number(&q("event_type = 'open'")).await == 2).then_some(())
    })
    .await;
    eventually("the prefetches to arrive", Duration::from_secs(30), || async {
        (ch.number(&q("is_prefetch = 1")).await == 2).then_some(())
    })
    .await;
    assert_eq!(
        ch.number(&q("recipient_token = 'valid' AND recipient_id = 'jane@example.com'")).await,
        2,
        "click + open"
    );
    assert_eq!(ch.number(&q("recipient_token = 'invalid' AND recipient_id = ''")).await, 2);
    let stats = client::link_stats(&api.url(), &link.link_id, client::now_secs() - 600, client::now_secs() + 120).await;
    eventually("the rollups to count opens and bots", Duration::from_secs(30), || {
        let api = api.url();
        let id = link.link_id.clone();
        async move {
            let s = client::link_stats(&api, &id, client::now_secs() - 600, client::now_secs() + 120).await;
            // The HEAD and the previewer by their own reasons; every other
            // click here came from reqwest without a User-Agent, so it is an
            // HTTP client's, not a person's.
            let by_reason = &s["totals"]["bot_by_reason"];
            (s["totals"]["opens"] == 2
                && by_reason["head"] == 1
                && by_reason["preview_fetcher"] == 1
                && s["totals"]["human_clicks"] == 0
                && s["totals"]["bot_clicks"] == s["totals"]["clicks"])
                .then_some(())
        }
    })
    .await;
    assert!(stats["totals"]["unique_recipients"].as_u64().unwrap() <= 1);
}

fn items_with_one_bad() -> Vec<Value> {
    (0..5)
        .map(|i| {
            let url = if i == 2 { "ftp://nope".to_owned() } else { format!("https://acme.example/{i}") };
            json!({"client_id": "acme", "campaign_id": "bulk", "destination_url": url})
        })
        .collect()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn click_limits_close_links_approximately_and_the_registry_is_mirrored() {
    const LIMIT: u64 = 60;
    const RATE_PER_SEC: u64 = 20;
    let servers = Servers::start().await;
    // The aggregator counts and closes links at their limit; the API creates them.
    let _aggregator =
        services::aggregator(&servers, "aggregator", &[("RICOCHET_FLUSH_INTERVAL_MS", "200".into())]).await;
    let api = services::api(&servers, "api", &[]).await;
    let r = http()
        .post(format!("{}/v1/links", api.url()))
        .json(&json!({"client_id": "acme", "campaign_id": "c", "destination_url": "https://acme.example/", "click_limit": LIMIT}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let link: client::Link = r.json().await.unwrap();
    let edge = services::redirect(&servers, "edge", &[]).await;

    // Scripts and scanners do not use up a link's limit (human clicks count by
    // default): twice the limit from a client without a User-Agent, and the
    // link stays open well past the feedback window.
    for _ in 0..LIMIT * 2 {
        assert_eq!(status_of(&edge, &link.code).await, 302);
        tokio::time::sleep(Duration::from_millis(1000 / (RATE_PER_SEC * 4))).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(status_of(&edge, &link.code).await, 302, "bot clicks closed a capped link");

    // People click steadily until the edge closes the link.
    let person = ricochet_tests::client::http_as(None);
    let as_person = || {
        person
            .get(format!("{}/{}", edge.url(), link.code))
            .header("user-agent", client::BROWSER_UA)
            .header("accept-language", "en-GB,en;q=0.9")
    };
    let mut redirected = 0u64;
    let start = Instant::now();
    loop {
        match as_person().send().await.unwrap().status().as_u16() {
            302 => redirected += 1,
            410 => break,
            other => panic!("unexpected status {other}"),
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the limit never closed the link ({redirected} clicks)");
        tokio::time::sleep(Duration::from_millis(1000 / RATE_PER_SEC)).await;
    }
    // Documented bound: flush (0.2 s) + feedback (2 s) + tail (~0.1 s) + one poll, at this rate.
    let overshoot = redirected.saturating_sub(LIMIT);
    eprintln!("limit {LIMIT}: {redirected} clicks redirected before the link closed (overshoot {overshoot})");
    assert!(redirected >= LIMIT, "never closes early");
    assert!(overshoot <= RATE_PER_SEC * 4, "overshoot {overshoot} beyond the documented window");

    // The registry is mirrored into ClickHouse for joins, newest state winning.
    let patched = http()
        .patch(format!("{}/v1/links/{}", api.url(), link.link_id))
        .json(&json!({"status": "paused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let ch = &servers.clickhouse;
    let q = format!(
        "SELECT count() FROM links FINAL WHERE link_id = '{}' AND status = 'paused' AND click_limit = {LIMIT}",
        link.link_id
    );
    eventually("the paused link to be mirrored", Duration::from_secs(20), || async {
        (ch.number(&q).await == 1).then_some(())
    })
    .await;
}
