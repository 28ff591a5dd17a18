//! The aggregate API as dashboards and CRMs use it: tenancy, validation,
//! time zones, pagination, and polling that ClickHouse barely notices.

use std::collections::BTreeSet;
use std::time::Duration;

use ricochet_registry::token::mint_with_client_key;
use ricochet_schemas::RecipientId;
use ricochet_tests::client::{self, http, http_as, Link};
use ricochet_tests::eventually;
use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use serde_json::{json, Value};

const TOKEN_KEYS: &str = "k1:1111111111111111111111111111111111111111111111111111111111111111";

async fn api_key(api: &Service, client_id: &str) -> String {
    let r = http().post(format!("{}/v1/clients/{client_id}/api-keys", api.url())).send().await.unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned()
}

async fn get(key: Option<&str>, url: String) -> (u16, Value) {
    let r = http_as(key).get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_sees_only_its_clients_data_and_bad_requests_say_why() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    let a_link = client::create_link(&api.url(), "acme", "bf", "https://acme.example/").await;
    let b_link = client::create_link(&api.url(), "globex", "launch", "https://globex.example/").await;
    let a_key = api_key(&api, "acme").await;
    let base = api.url();
    let a = Some(a_key.as_str());

    // Own data: 200. The other client's links, campaigns, series, lists: 404.
    for own in [
        format!("{base}/v1/links/{}", a_link.link_id),
        format!("{base}/v1/links/{}/stats", a_link.link_id),
        format!("{base}/v1/clients/acme/stats"),
        format!("{base}/v1/clients/acme/campaigns"),
        format!("{base}/v1/clients/acme/campaigns/bf/stats"),
        format!("{base}/v1/clients/acme/campaigns/bf/top-links"),
        format!("{base}/v1/clients/acme/campaigns/bf/recipients"),
        format!("{base}/v1/clients/acme/top-campaigns"),
    ] {
        assert_eq!(get(a, own.clone()).await.0, 200, "{own}");
    }
    for other in [
        format!("{base}/v1/links/{}", b_link.link_id),
        format!("{base}/v1/links/{}/stats", b_link.link_id),
        format!("{base}/v1/clients/globex/stats"),
        format!("{base}/v1/clients/globex/campaigns"),
        format!("{base}/v1/clients/globex/campaigns/launch/stats"),
        format!("{base}/v1/clients/globex/campaigns/launch/top-links"),
        format!("{base}/v1/clients/globex/campaigns/launch/recipients"),
        format!("{base}/v1/clients/globex/top-campaigns"),
        format!("{base}/v1/clients/globex"),
        format!("{base}/v1/clients/globex/token-keys"),
    ] {
        let (status, body) = get(a, other.clone()).await;
        assert_eq!(status, 404, "{other}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    // The same 404 as for a link that does not exist: existence does not leak.
    let (_, unknown) = get(a, format!("{base}/v1/links/nope")).await;
    let (_, foreign) = get(a, format!("{base}/v1/links/{}", b_link.link_id)).await;
    assert_eq!(
        unknown["error"]["message"].as_str().unwrap().replace("nope", "X"),
        foreign["error"]["message"].as_str().unwrap().replace(&b_link.link_id, "X")
    );

    // No key, a wrong key, a revoked key: 401 saying so. A client key on an admin route: 403.
    let (status, body) = get(None, format!("{base}/v1/clients/acme/stats")).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("Authorization"), "{body}");
    assert_eq!(get(Some("rk_wrong"), format!("{base}/v1/clients/acme/stats")).await.0, 401);
    let r = http_as(a)
        .post(format!("{base}/v1/links"))
        .json(&json!({"client_id": "acme", "campaign_id": "x", "destination_url": "https://a.example/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let key_id = format!("{:x}", sha256(&a_key));
    assert_eq!(http().delete(format!("{base}/v1/clients/acme/api-keys/{key_id}")).send().await.unwrap().status(), 204);
    assert_eq!(get(a, format!("{base}/v1/clients/acme/stats")).await.0, 401, "a revoked key stops working");

    // Validation: a value outside the document is a 400 that says what is
    // allowed; allowed values that conflict are a 422 that says why.
    for (query, says) in [("from=0&to=1000000", "at most 7 days"), ("from=200&to=100", "earlier")] {
        let (status, body) =
            get(Some(client::ADMIN_KEY), format!("{base}/v1/clients/acme/campaigns/bf/stats?{query}")).await;
        assert_eq!(status, 422, "{query}");
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{query}: {body}");
    }
    for (query, says) in [
        ("granularity=week", "minute, hour or day"),
        ("from=-5", "between 0 and"),
        ("tz=Mars/Olympus", "IANA"),
        ("from=tomorrow", "RFC 3339"),
        ("granularty=hour", "unknown field"),
        ("human_only=maybe", "human_only"),
    ] {
        let (status, body) =
            get(Some(client::ADMIN_KEY), format!("{base}/v1/clients/acme/campaigns/bf/stats?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{query}: {body}");
    }
    assert_eq!(
        get(Some(client::ADMIN_KEY), format!("{base}/v1/clients/acme/campaigns/bf/top-links?limit=0")).await.0,
        400
    );
    assert_eq!(
        get(Some(client::ADMIN_KEY), format!("{base}/v1/clients/acme/campaigns/bf/recipients?cursor=%%%")).await.0,
        400
    );
}

fn sha256(s: &str) -> impl std::fmt::LowerHex {
    use sha2::Digest;
    struct Hex(Vec<u8>);
    impl std::fmt::LowerHex for Hex {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
    }
    Hex(sha2::Sha256::digest(s.as_bytes()).to_vec())
}

async fn click(edge: &Service, path: &str, ua: &str) {
    let r = http().get(format!("{}/{path}", edge.url())).header("user-agent", ua).send().await.unwrap();
    assert_eq!(r.status(), 302, "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn series_top_lists_recipients_and_polling() {
    let servers = Servers::start().await;
    let env = [("RICOCHET_TOKEN_KEYS", TOKEN_KEYS.to_owned()), ("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned())];
    let _aggregator = services::aggregator(&servers, "aggregator", &env).await;
    let api = services::api(&servers, "api", &env).await;
    let mut links: Vec<Link> = Vec::new();
    for i in 0..3 {
        links.push(client::create_link(&api.url(), "acme", "bf", &format!("https://acme.example/{i}")).await);
    }
    let edge = services::redirect(&servers, "edge", &env).await;
    let keys: Value =
        http().get(format!("{}/v1/clients/acme/token-keys", api.url())).send().await.unwrap().json().await.unwrap();
    let key: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&keys["keys"][0]["key"].as_str().unwrap()[i..i + 2], 16).unwrap())
        .collect();

    // link 0: 5 human clicks by 5 recipients; link 1: 3 human + 2 bot; link 2: 1 human.
    for r in 0..5 {
        let token =
            mint_with_client_key("k1", &key, &links[0].code, &RecipientId::parse(format!("r{r}@x.example")).unwrap());
        click(&edge, &format!("{}/{token}", links[0].code), client::BROWSER_UA).await;
    }
    for _ in 0..3 {
        click(&edge, &links[1].code, client::BROWSER_UA).await;
    }
    for _ in 0..2 {
        click(&edge, &links[1].code, "Slackbot-LinkExpanding 1.0").await;
    }
    click(&edge, &links[2].code, client::BROWSER_UA).await;

    let base = api.url();
    let (from, to) = (client::now_secs() - 3 * 86_400, client::now_secs() + 86_400);
    let stats = eventually("all 11 clicks in the campaign totals", Duration::from_secs(30), || {
        let url = format!(
            "{base}/v1/clients/acme/campaigns/bf/stats?from={from}&to={to}&granularity=day&tz=America/New_York"
        );
        async move {
            let (_, v) = get(Some(client::ADMIN_KEY), url).await;
            (v["totals"]["clicks"] == 11).then_some(v)
        }
    })
    .await;
    assert_eq!(stats["totals"]["human_clicks"], 9, "{stats}");
    assert_eq!(stats["totals"]["bot_clicks"], 2);
    assert_eq!(stats["totals"]["unique_recipients"], 5);
    assert_eq!(stats["tz"], "America/New_York");
    let days = stats["series"].as_array().unwrap();
    assert!(
        days.iter().all(|d| d["bucket_start"].as_str().unwrap().contains("T00:00:00-0")),
        "local midnights: {days:?}"
    );
    assert_eq!(days.iter().map(|d| d["clicks"].as_u64().unwrap()).sum::<u64>(), 11, "zero-filled, nothing lost");

    let (_, human) = get(
        Some(client::ADMIN_KEY),
        format!("{base}/v1/clients/acme/campaigns/bf/stats?from={from}&to={to}&granularity=hour&human_only=true"),
    )
    .await;
    assert_eq!(human["totals"]["clicks"], 9, "human_only leaves bots out");
    let (_, top) = get(
        Some(client::ADMIN_KEY),
        format!("{base}/v1/clients/acme/campaigns/bf/top-links?from={from}&to={to}&limit=2"),
    )
    .await;
    let top = top["links"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!(
        (top[0]["link_id"].as_str().unwrap(), top[0]["clicks"].as_u64().unwrap()),
        (links[0].link_id.as_str(), 5)
    );
    assert_eq!(top[0]["code"], links[0].code.as_str());
    let (_, camps) =
        get(Some(client::ADMIN_KEY), format!("{base}/v1/clients/acme/top-campaigns?from={from}&to={to}")).await;
    assert_eq!(camps["campaigns"][0]["campaign_id"], "bf");

    // Recipients, two per page, until the cursor runs out.
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let page_url = format!(
            "{base}/v1/clients/acme/campaigns/bf/recipients?from={from}&to={to}&limit=2{}",
            cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default()
        );
        let (_, page) = get(Some(client::ADMIN_KEY), page_url).await;
        for r in page["recipients"].as_array().unwrap() {
            assert!(seen.insert(r["recipient_id"].as_str().unwrap().to_owned()), "no recipient twice");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);

    // ETag: the same answer again is a bodyless 304.
    let url = format!("{base}/v1/clients/acme/campaigns/bf/stats?from={from}&to={to}");
    let first = http().get(&url).send().await.unwrap();
    let etag = first.headers()["etag"].clone();
    assert_eq!(first.headers()["cache-control"], "private, max-age=1");
    let again = http().get(&url).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), 304);

    // 400 screens polling the same campaign at once: one computation, so
    // ClickHouse sees one series query, not 400.
    let poll_url = format!("{base}/v1/clients/acme/campaigns/bf/stats?from={from}&to={to}&granularity=hour&tz=UTC");
    let ch = &servers.clickhouse;
    ch.query("SYSTEM FLUSH LOGS").await.unwrap();
    let before =
        ch.number("SELECT count() FROM system.query_log WHERE type = 2 AND query LIKE '%sum(bot_clicks)%'").await;
    let responses = futures::future::join_all((0..400).map(|_| {
        let url = poll_url.clone();
        async move { http().get(url).send().await.unwrap().status().as_u16() }
    }))
    .await;
    assert!(responses.iter().all(|s| *s == 200));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ch.query("SYSTEM FLUSH LOGS").await.unwrap();
    let after =
        ch.number("SELECT count() FROM system.query_log WHERE type = 2 AND query LIKE '%sum(bot_clicks)%'").await;
    let queries = after - before;
    eprintln!("400 concurrent identical polls → {queries} ClickHouse series queries");
    assert!((1..=3).contains(&queries), "coalesced into about one query, got {queries}");
}

/// The router and the document are built from one definition (`api/src/router.rs`),
/// so this checks what that promises from outside: the document is served
/// without a key, and every operation in it is really routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_and_every_operation_in_it_is_routed() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    let r = http_as(None).get(format!("{}/v1/openapi.json", api.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.expect("a JSON document");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys().filter(|m| *m != "parameters") {
            operations.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(operations.len(), 36, "{operations:?}");
    for (method, path) in &operations {
        let url = format!(
            "{}{}",
            api.url(),
            path.replace("{link_id}", "x")
                .replace("{client_id}", "acme")
                .replace("{campaign_id}", "c")
                .replace("{key_id}", "k")
                .replace("{recipient_id}", "r")
                .replace("{webhook_id}", "wh_x")
        );
        let r = http().request(method.to_uppercase().parse().unwrap(), &url).send().await.unwrap();
        assert_ne!(r.status(), 405, "{method} {path}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("no such route"), "{method} {path} is documented but not routed");
    }
}
