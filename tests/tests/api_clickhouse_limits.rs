//! The API's cost limits on the ClickHouse side (issue 18, "Surface"): every
//! query it sends carries `max_execution_time` and `readonly = 1`, so a slow
//! query answers a clear 503 instead of holding a connection and a ClickHouse
//! thread, and nothing the API sends can write; migrations, at start, still do.
//! The API connects as its own ClickHouse user, `ricochet_api`, whose quota is
//! keyed by client (`infra/clickhouse/users.xml`): one client past its share
//! gets 429 while the others are still served.

use std::time::{Duration, Instant};

use clap::Parser;
use ricochet_api::config::ApiConfig;
use ricochet_tests::client::{self, http_as};
use ricochet_tests::servers::Servers;
use ricochet_tests::services;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_past_the_limit_answers_503_and_the_read_client_cannot_write() {
    let servers = Servers::start().await;
    // Starting at all proves the migrations ran with a client that may write.
    let api = services::api(&servers, "api", &[("RICOCHET_API_CLICKHOUSE_MAX_EXECUTION_SECS", "1".into())]).await;
    let link = client::create_link(&api.url(), "acme", "bf", "https://acme.example/").await;
    let url = format!("{}/v1/clients/acme/campaigns/bf/stats", api.url());
    let (status, _) = get(&url).await;
    assert_eq!(status, 200, "campaign stats before the table is slowed down");

    // The campaign's stats read `click_recipients`; make reading it take
    // ~2.4 s (6 rows × 0.4 s; a view, not a table function, which readonly
    // forbids), over the 1 s the API allows.
    let ch = &servers.clickhouse;
    ch.query("RENAME TABLE click_recipients TO click_recipients_real").await.unwrap();
    ch.query("INSERT INTO click_recipients_real (recipient_id) VALUES ('a'), ('b'), ('c'), ('d'), ('e'), ('f')")
        .await
        .unwrap();
    ch.query("CREATE VIEW click_recipients AS SELECT * FROM click_recipients_real WHERE sleepEachRow(0.4) = 0")
        .await
        .unwrap();
    // Another query string than above, so the API's response cache cannot answer.
    let started = Instant::now();
    let (status, body) = get(&format!("{url}?granularity=hour")).await;
    let took = started.elapsed();
    assert_eq!(status, 503, "a query past RICOCHET_API_CLICKHOUSE_MAX_EXECUTION_SECS: {body} after {took:?}");
    assert_eq!(body["error"]["code"], "query_timeout", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("RICOCHET_API_CLICKHOUSE_MAX_EXECUTION_SECS"), "the message names the limit: {body}");
    assert!(!message.contains("click_recipients"), "no table names to the caller: {body}");
    assert!(took < Duration::from_secs(10), "answered in {took:?}");
    let _ = link;

    // The API's read client: SELECTs pass, writes and DDL are refused by
    // ClickHouse itself.
    let config = ApiConfig::parse_from(["ricochet-api", "--clickhouse-url", &ch.url()]);
    let read = ricochet_api::state::query_client(&config);
    assert_eq!(read.query("SELECT toUInt8(1)").fetch_one::<u8>().await.unwrap(), 1);
    for write in [
        "INSERT INTO click_recipients_real (recipient_id) VALUES ('g')",
        "CREATE TABLE api_was_here (x UInt8) ENGINE = Memory",
        "DROP TABLE click_recipients_real",
    ] {
        let refused = read.query(write).execute().await;
        let err = refused.expect_err(&format!("the API's read client ran {write:?}")).to_string();
        assert!(err.contains("readonly"), "{write}: {err}");
    }
    assert_eq!(ch.number("SELECT count() FROM click_recipients_real").await, 6);
}

/// The API sends each query with its client as `quota_key`: a client past its
/// share of ClickHouse gets 429 `clickhouse_quota`, another client does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_past_its_clickhouse_quota_gets_429_and_another_client_does_not() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    client::create_link(&api.url(), "acme", "bf", "https://acme.example/").await;
    client::create_link(&api.url(), "globex", "bf", "https://globex.example/").await;

    // The shipped quota, tightened for the test to 10 queries a minute per
    // client. ClickHouse rereads users.xml within seconds (and starts counting
    // afresh), so the API's own start-up queries do not count.
    let users = servers.clickhouse.users_xml();
    let shipped = std::fs::read_to_string(&users).unwrap();
    assert!(shipped.contains("<queries>2000</queries>"), "the API's per-client quota in users.xml");
    std::fs::write(&users, shipped.replace("<queries>2000</queries>", "<queries>10</queries>")).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Distinct ranges, so the API's response cache does not answer.
    let now = client::now_millis() / 1000;
    let stats = |client: &str, i: i64| {
        format!("{}/v1/clients/{client}/campaigns/bf/stats?from={}&to={}", api.url(), now - 3600 - i, now + 60)
    };
    let mut refused = None;
    for i in 0..40 {
        let r = http_as(Some(client::ADMIN_KEY)).get(stats("acme", i)).send().await.unwrap();
        if r.status() == 429 {
            let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            refused = Some((i, retry_after, r.json::<Value>().await.unwrap()));
            break;
        }
        assert_eq!(r.status(), 200, "acme's request {i}");
    }
    let (after, retry_after, body) = refused.expect("acme was never refused past 10 queries a minute");
    assert_eq!(body["error"]["code"], "clickhouse_quota", "{body}");
    assert_eq!(retry_after.as_deref(), Some("60"), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("Code: 201") && !message.contains("ricochet_api"),
        "ClickHouse's words stay in the log: {body}"
    );
    eprintln!("acme refused after {after} requests");

    let (status, body) = get(&stats("globex", 0)).await;
    assert_eq!(status, 200, "globex is served while acme's quota is spent: {body}");
}

async fn get(url: &str) -> (u16, Value) {
    let r = http_as(Some(client::ADMIN_KEY)).get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// An operator who points the API at a user without a keyed quota (a stock
/// `default` user, a managed service's) still gets answers: ClickHouse
/// refuses every query that carries a quota key for such a user, so the API
/// sends none there (and says so in its log).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_user_without_a_keyed_quota_the_api_still_answers() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[("RICOCHET_CLICKHOUSE_USER", "default".into())]).await;
    let link = client::create_link(&api.url(), "acme", "bf", "https://acme.example/").await;
    for url in [
        format!("{}/v1/clients/acme/campaigns/bf/stats", api.url()),
        format!("{}/v1/links/{}/breakdown?by=country", api.url(), link.link_id),
    ] {
        let (status, body) = get(&url).await;
        assert_eq!(status, 200, "{url}: {body}");
    }
    let log = std::fs::read_to_string(servers.path().join("api.log")).unwrap();
    assert!(log.contains("quota is not keyed"), "the API says its queries go unkeyed");
}
