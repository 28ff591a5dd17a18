//! Erasing a recipient (issue 18, "Privacy"): `DELETE
//! /v1/clients/{client_id}/recipients/{recipient_id}` answers 202 to the
//! admin and to a key with the `recipients` scope (and to no one else); the
//! aggregator then deletes the recipient's raw events and recipient rows,
//! keeps the rollup counts, and a replay of the recipient's events through
//! Kafka (what an edge's spool or a rewound consumer sends) stores nothing of
//! them again, while other recipients' events still land.

use std::time::Duration;

use ricochet_schemas::{ClickEvent, RecipientId, RecipientToken};
use ricochet_tests::client::{self, http_as};
use ricochet_tests::feed::{Feed, Tally, Target};
use ricochet_tests::servers::Servers;
use ricochet_tests::{eventually, services};
use serde_json::{json, Value};

fn clicks_of(target: &Target, recipient: &str, n: i64, at_ms: i64) -> Vec<ClickEvent> {
    (0..n)
        .map(|i| {
            let mut c = target.click(at_ms + i * 1000);
            c.recipient_id = Some(RecipientId::parse(recipient).unwrap());
            c.recipient_token = RecipientToken::Valid;
            c
        })
        .collect()
}

async fn rows_of(servers: &Servers, table: &str, recipient: &str) -> u64 {
    servers.clickhouse.number(&format!("SELECT count() FROM {table} WHERE recipient_id = '{recipient}'")).await
}

async fn erase(key: Option<&str>, base: &str, client_id: &str, recipient: &str) -> (u16, Value) {
    let r = http_as(key).delete(format!("{base}/v1/clients/{client_id}/recipients/{recipient}")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erased_recipient_is_deleted_and_stays_deleted_through_replays() {
    let servers = Servers::start().await;
    let _aggregator =
        services::aggregator(&servers, "aggregator", &[("RICOCHET_ERASURE_INTERVAL_SECS", "1".into())]).await;
    let api = services::api(&servers, "api", &[]).await;
    let base = api.url();
    let link = client::create_link(&base, "acme", "bf", "https://acme.example/").await;
    let target = Target::new("acme", "bf", &link.link_id);
    let (gone, kept) = ("ada.lovelace@example.com", "grace.hopper@example.com");

    // Both recipients click; everything is counted and stored.
    let now = client::now_millis() - 60_000;
    let mut first = clicks_of(&target, gone, 5, now);
    first.extend(clicks_of(&target, kept, 3, now));
    let mut tally = Tally::default();
    let feed = Feed::new(&servers.kafka.brokers());
    feed.send_all(&first, &mut tally).await;
    eventually("clicks counted", Duration::from_secs(60), || async {
        let n = servers.clickhouse.number("SELECT sum(clicks) FROM click_rollup_minute").await;
        (n == tally.total()).then_some(())
    })
    .await;
    assert_eq!(rows_of(&servers, "click_events", gone).await, 5);
    assert!(rows_of(&servers, "click_recipients", gone).await > 0);

    // Who may ask: not without a key, not with a `read` key, not another client's key.
    let mint = |scopes: Value, client_id: &'static str| {
        let base = base.clone();
        async move {
            let r = http_as(Some(client::ADMIN_KEY))
                .post(format!("{base}/v1/clients/{client_id}/api-keys"))
                .json(&json!({ "scopes": scopes }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned()
        }
    };
    let read_key = mint(json!(["read"]), "acme").await;
    let other_key = mint(json!(["recipients"]), "globex").await;
    let recipients_key = mint(json!(["recipients"]), "acme").await;
    assert_eq!(erase(None, &base, "acme", gone).await.0, 401);
    let (status, body) = erase(Some(&read_key), &base, "acme", gone).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("`recipients`"), "{body}");
    assert_eq!(erase(Some(&other_key), &base, "acme", gone).await.0, 404, "another client's key");
    let (status, body) = erase(Some(&recipients_key), &base, "acme", "not%20an%20id").await;
    assert_eq!(status, 400, "{body}");
    // Nothing was erased by any of those.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rows_of(&servers, "click_events", gone).await, 5, "a refused request erased something");

    // The client's own key with `recipients` scope: 202, then gone within seconds.
    let (status, body) = erase(Some(&recipients_key), &base, "acme", gone).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!((body["recipient_id"].as_str(), body["status"].as_str()), (Some(gone), Some("accepted")), "{body}");
    eventually("the recipient's rows deleted", Duration::from_secs(60), || async {
        let left = rows_of(&servers, "click_events", gone).await + rows_of(&servers, "click_recipients", gone).await;
        (left == 0).then_some(())
    })
    .await;
    assert_eq!(rows_of(&servers, "click_events", kept).await, 3, "another recipient's events were deleted");
    assert!(rows_of(&servers, "click_recipients", kept).await > 0);
    let counted = servers.clickhouse.number("SELECT sum(clicks) FROM click_rollup_minute").await;
    assert_eq!(counted, tally.total(), "rollup counts hold no recipient and stay");

    // A replay: the same events again (as a spool resend sends them), a new
    // click of the erased recipient, then a marker of the other recipient.
    let mut replay =
        first.iter().filter(|c| c.recipient_id.as_ref().unwrap().as_str() == gone).cloned().collect::<Vec<_>>();
    replay.extend(clicks_of(&target, gone, 2, now + 30_000));
    let marker = clicks_of(&target, kept, 1, now + 40_000);
    replay.extend(marker.iter().cloned());
    feed.send_all(&replay, &mut tally).await;
    let marker_id = marker[0].event_id.to_string();
    eventually("the marker after the replay stored", Duration::from_secs(60), || async {
        let n = servers
            .clickhouse
            .number(&format!("SELECT count() FROM click_events WHERE event_id = '{marker_id}'"))
            .await;
        (n > 0).then_some(())
    })
    .await;
    assert_eq!(rows_of(&servers, "click_events", gone).await, 0, "a replay brought the erased recipient's events back");
    assert_eq!(rows_of(&servers, "click_recipients", gone).await, 0, "a replay brought the erased recipient back");
    assert_eq!(rows_of(&servers, "click_events", kept).await, 4);

    // The recipients list no longer names them.
    let (from, to) = (now / 1000 - 3600, now / 1000 + 3600);
    let r = http_as(Some(&recipients_key))
        .get(format!("{base}/v1/clients/acme/campaigns/bf/recipients?from={from}&to={to}&human_only=false"))
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    let ids: Vec<&str> =
        page["recipients"].as_array().unwrap().iter().filter_map(|r| r["recipient_id"].as_str()).collect();
    assert_eq!(ids, vec![kept], "{page}");

    // The admin may ask too, and asking twice is harmless.
    assert_eq!(erase(Some(client::ADMIN_KEY), &base, "acme", gone).await.0, 202);
    // Recorded as applied once the second look, an insert timeout after the
    // deletes, found nothing more.
    let applied = format!("SELECT count() FROM recipient_erasures WHERE recipient_id = '{gone}' AND applied = 1");
    eventually("the erasure recorded as applied", Duration::from_secs(90), || async {
        (servers.clickhouse.number(&applied).await >= 1).then_some(())
    })
    .await;
}
