//! Exports (issue 17, "Exports"): a campaign's decided events streamed from
//! the real ClickHouse through `GET …/campaigns/{id}/events`, checked against
//! the API's own totals for the same campaign and range: as many rows as
//! events, as many `human` rows as human clicks and opens, each event once,
//! the filters, both formats, and who may export.
//!
//! Clicks and opens go through the real edge (people with signed recipient
//! tokens, scripts without), the real broker and aggregator.

use std::collections::BTreeSet;
use std::time::Duration;

use ricochet_api::routes::events::ExportedEvent;
use ricochet_registry::TokenKeys;
use ricochet_schemas::RecipientId;
use ricochet_tests::client::{self, http, http_as, Link};
use ricochet_tests::eventually;
use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use serde_json::Value;

const TOKEN_KEYS: &str = "k1:2222222222222222222222222222222222222222222222222222222222222222";
const HUMAN_CLICKS: usize = 24;
const BOT_CLICKS: usize = 9;
const APPLE_OPENS: usize = 5;
const GMAIL_OPENS: usize = 4;
const GMAIL_PROXY: &str = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";

async fn send(edge: &Service, keys: &TokenKeys, links: &[Link]) {
    let token = |code: &str, i: usize| keys.mint("acme", code, &RecipientId::parse(format!("r{i:03}")).unwrap());
    let mut requests: Vec<(String, String, &str)> = Vec::new();
    for i in 0..HUMAN_CLICKS {
        let code = &links[i % links.len()].code;
        requests.push((format!("/{code}/{}", token(code, i)), format!("79.192.{i}.1"), client::BROWSER_UA));
    }
    for i in 0..BOT_CLICKS {
        let code = &links[i % links.len()].code;
        requests.push((format!("/{code}"), format!("8.8.{i}.8"), "curl/8.5.0"));
    }
    for i in 0..APPLE_OPENS {
        let code = &links[0].code;
        requests.push((format!("/o/{code}/{}.gif", token(code, 100 + i)), format!("17.58.{i}.1"), "Mozilla/5.0"));
    }
    for i in 0..GMAIL_OPENS {
        let code = &links[links.len() - 1].code;
        requests.push((format!("/o/{code}/{}.gif", token(code, 200 + i)), format!("66.249.8{i}.1"), GMAIL_PROXY));
    }
    for (path, ip, ua) in requests {
        let r = http()
            .get(format!("{}{path}", edge.url()))
            .header("x-forwarded-for", ip)
            .header("user-agent", ua)
            .header("accept-language", "de-DE,de;q=0.9")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success() || r.status() == 302, "{path}: {}", r.status());
    }
}

async fn export(base: &str, key: Option<&str>, query: &str) -> (u16, String, String) {
    // No key given: the admin's.
    let client = match key {
        Some(k) => http_as(Some(k)),
        None => http(),
    };
    let r = client.get(format!("{base}/v1/clients/acme/campaigns/bf/events?{query}")).send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, r.text().await.unwrap())
}

fn ndjson(body: &str) -> Vec<ExportedEvent> {
    body.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn csv_rows(body: &str) -> Vec<ExportedEvent> {
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    reader.deserialize().map(|r| r.unwrap_or_else(|e| panic!("{e}: {body:.400}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_export_holds_every_decided_event_once_and_equals_the_totals() {
    let servers = Servers::start().await;
    let env = [
        ("RICOCHET_TOKEN_KEYS", TOKEN_KEYS.to_owned()),
        ("RICOCHET_TRUSTED_PROXIES", "127.0.0.0/8".to_owned()),
        ("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned()),
    ];
    let _aggregator = services::aggregator(&servers, "aggregator", &env).await;
    let api = services::api(&servers, "api", &env).await;
    let base = api.url();
    let links = vec![
        client::create_link(&base, "acme", "bf", "https://acme.example/a?utm_source=newsletter&utm_medium=email").await,
        client::create_link(&base, "acme", "bf", "https://acme.example/b").await,
    ];
    // Another campaign's event must not appear.
    let elsewhere = client::create_link(&base, "acme", "other", "https://acme.example/c").await;
    client::create_link(&base, "rival", "bf", "https://rival.example/").await;
    let edge = services::redirect(&servers, "edge", &env).await;
    let from = client::now_secs() - 60;
    send(&edge, &TokenKeys::parse(TOKEN_KEYS).unwrap(), &links).await;
    send(&edge, &TokenKeys::parse(TOKEN_KEYS).unwrap(), std::slice::from_ref(&elsewhere)).await;
    let to = client::now_secs() + 120;
    let range = format!("from={from}&to={to}");

    // The API's totals for the campaign, once every event is counted.
    let events = (HUMAN_CLICKS + BOT_CLICKS + APPLE_OPENS + GMAIL_OPENS) as u64;
    let totals = eventually("every event counted", Duration::from_secs(60), || async {
        let url = format!("{base}/v1/clients/acme/campaigns/bf/stats?{range}&granularity=minute");
        let t: Value = http().get(url).send().await.ok()?.json().await.ok()?;
        let t = t["totals"].clone();
        (t["clicks"].as_u64()? + t["opens"].as_u64()? == events).then_some(t)
    })
    .await;
    let n = |k: &str| totals[k].as_u64().unwrap_or_else(|| panic!("{k} in {totals}")) as usize;

    // An event written twice, as the aggregator may after a crash
    // (docs/data-model.md, "Duplicates"), before the parts merge.
    servers
        .clickhouse
        .query("INSERT INTO click_events SELECT * FROM click_events WHERE recipient_id = 'r000'")
        .await
        .unwrap();

    // NDJSON, the default: every event once, each line the documented object.
    let (status, content_type, body) = export(&base, None, &range).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/x-ndjson");
    let rows = ndjson(&body);
    assert_eq!(rows.len(), events as usize, "one row per event");
    let ids: BTreeSet<&str> = rows.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "no event twice");
    assert!(rows.iter().all(|e| e.client_id == "acme" && e.campaign_id == "bf"), "only the campaign's events");
    let count = |f: &dyn Fn(&ExportedEvent) -> bool| rows.iter().filter(|e| f(e)).count();
    assert_eq!(count(&|e| e.event_type == "click" && e.verdict == "human"), n("human_clicks"));
    assert_eq!(count(&|e| e.event_type == "click" && e.verdict == "bot"), n("bot_clicks"));
    assert_eq!(count(&|e| e.event_type == "open" && e.verdict == "human"), n("human_opens"));
    assert_eq!(count(&|e| e.event_type == "open" && e.verdict == "machine"), n("machine_opens"));
    // What was sent, as decided: people human, curl a bot, Apple's proxy a machine open.
    assert_eq!(n("human_clicks"), HUMAN_CLICKS, "{totals}");
    assert_eq!(n("machine_opens"), APPLE_OPENS, "{totals}");
    assert_eq!(count(&|e| e.reason == "apple_privacy"), APPLE_OPENS);
    assert_eq!(count(&|e| e.mail_client == "gmail" && e.event_type == "open"), GMAIL_OPENS);
    assert_eq!(count(&|e| e.utm_source == "newsletter"), count(&|e| e.link_id == links[0].link_id));
    assert_eq!(count(&|e| e.country == "DE" && e.verdict == "human" && e.event_type == "click"), HUMAN_CLICKS);
    assert_eq!(count(&|e| e.recipient_id == "r000"), 1);
    let first = rows.iter().find(|e| e.recipient_id == "r000").unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(&first.occurred_at).unwrap_or_else(|e| panic!("{e}: {first:?}"));
    assert!((from..to).contains(&at.timestamp()), "occurred_at {} in the range", first.occurred_at);

    // CSV: the same events, with a header row of the same names.
    let (status, content_type, csv) = export(&base, None, &format!("{range}&format=csv")).await;
    assert_eq!(status, 200, "{csv}");
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let header = csv.lines().next().unwrap().replace('"', "");
    assert!(
        header.starts_with("event_id,type,occurred_at,client_id,campaign_id,link_id,recipient_id,verdict,reason,"),
        "{header}"
    );
    let from_csv: BTreeSet<String> = csv_rows(&csv).into_iter().map(|e| e.event_id).collect();
    assert_eq!(from_csv, ids.iter().map(|s| s.to_string()).collect(), "CSV and NDJSON hold the same events");

    // Filters.
    let (_, _, body) = export(&base, None, &format!("{range}&human_only=true&type=click")).await;
    let humans = ndjson(&body);
    assert_eq!(humans.len(), n("human_clicks"));
    assert!(humans.iter().all(|e| e.verdict == "human" && e.event_type == "click"));
    let (_, _, body) = export(&base, None, &format!("{range}&type=open")).await;
    assert_eq!(ndjson(&body).len(), n("human_opens") + n("machine_opens"));
    let (_, _, body) = export(&base, None, &format!("from={}&to={from}", from - 3600)).await;
    assert!(ndjson(&body).is_empty(), "an hour before anything was sent: {body}");

    // Bad input: a clear 400 or 422.
    for (query, want) in [("type=view", 400), ("format=xml", 400), ("nonce=1", 400), ("from=100&to=50", 422)] {
        let (status, _, body) = export(&base, None, query).await;
        assert_eq!(status, want, "{query}: {body}");
        assert!(body.contains("\"message\""), "{query}: {body}");
    }

    // Who may export: rows carry recipient ids, so the `recipients` scope.
    let key = |client: &'static str, scope: &'static str| {
        let base = base.clone();
        async move {
            let r = http()
                .post(format!("{base}/v1/clients/{client}/api-keys"))
                .json(&serde_json::json!({ "scopes": [scope] }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned()
        }
    };
    let (status, _, body) = export(&base, Some(&key("acme", "read").await), &range).await;
    assert_eq!(status, 403, "a read-only key: {body}");
    let (status, _, body) = export(&base, Some(&key("acme", "recipients").await), &range).await;
    assert_eq!((status, ndjson(&body).len()), (200, events as usize));
    let (status, _, body) = export(&base, Some(&key("rival", "recipients").await), &range).await;
    assert_eq!(status, 404, "another client's key: {body}");
    let (status, _, _) = export(&base, Some("rk_not-a-key"), &range).await;
    assert_eq!(status, 401);
}
