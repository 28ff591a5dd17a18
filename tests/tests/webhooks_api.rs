//! Webhooks through the API (issue 17, "Webhooks"): registering an endpoint
//! (its secret shown once), listing and reading it without the secret,
//! rotating the secret (the old one kept for 24 hours), asking for a replay,
//! the deliveries list from ClickHouse, deleting; all of it written to the
//! compacted webhooks topic, so it is there after a restart. Who may do what
//! (`write` and `recipients` to manage, `read` to look, only one's own
//! client), endpoints the deliverer disabled shown as such, the cap per
//! client, and targets refused at registration (loopback, private,
//! link-local, cloud metadata, other schemes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ricochet_registry::KafkaConnection;
use ricochet_schemas::WebhookRecord;
use ricochet_tests::client::{self, http_as};
use ricochet_tests::eventually;
use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use ricochet_webhooks::endpoints::{self, EndpointWriter, Endpoints};
use serde_json::{json, Value};

async fn call(key: &str, method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value, String) {
    let mut r = http_as(Some(key)).request(method, url);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
}

async fn get(key: &str, url: &str) -> (u16, Value, String) {
    call(key, reqwest::Method::GET, url, None).await
}

async fn post(key: &str, url: &str, body: Option<Value>) -> (u16, Value, String) {
    call(key, reqwest::Method::POST, url, body).await
}

async fn delete(key: &str, url: &str) -> u16 {
    call(key, reqwest::Method::DELETE, url, None).await.0
}

/// A client key with `scopes`, minted by the admin.
async fn key(api: &Service, client: &str, scopes: &[&str]) -> String {
    let (status, body, text) = post(
        client::ADMIN_KEY,
        &format!("{}/v1/clients/{client}/api-keys", api.url()),
        Some(json!({ "scopes": scopes })),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    body["key"].as_str().unwrap().to_owned()
}

fn message(body: &Value) -> String {
    body["error"]["message"].as_str().unwrap_or_default().to_owned()
}

fn rfc3339_ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{e}: {s}")).timestamp_millis()
}

/// The webhooks topic as the deliverer reads it, followed on a thread until dropped.
struct Topic {
    endpoints: Arc<Endpoints>,
    stop: Arc<AtomicBool>,
}

impl Topic {
    fn follow(brokers: &str) -> Topic {
        let endpoints = Endpoints::new();
        let stop = Arc::new(AtomicBool::new(false));
        let (into, flag, kafka) = (endpoints.clone(), stop.clone(), KafkaConnection::plaintext(brokers));
        std::thread::spawn(move || endpoints::follow(&kafka, "webhooks", &into, &flag).unwrap());
        Topic { endpoints, stop }
    }

    async fn record(&self, webhook_id: &str, what: &str, check: impl Fn(&WebhookRecord) -> bool) -> WebhookRecord {
        eventually(what, Duration::from_secs(30), || async {
            self.endpoints.get(webhook_id).filter(|w| check(w)).map(|w| (*w).clone())
        })
        .await
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_are_registered_rotated_replayed_listed_and_deleted() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    let base = format!("{}/v1/clients/acme/webhooks", api.url());
    let admin = client::ADMIN_KEY;
    let manage = key(&api, "acme", &["write", "recipients"]).await;
    let read = key(&api, "acme", &["read"]).await;
    let write_only = key(&api, "acme", &["write"]).await;
    let rival = key(&api, "rival", &["read", "write", "recipients"]).await;

    // Registered: the secret once, the rest as listed.
    let new = json!({"url": "http://127.0.0.1:9/hook", "events": ["click.human", "open.human"], "campaign_id": "bf", "batch_size": 10});
    let (status, created, text) = post(&manage, &base, Some(new.clone())).await;
    assert_eq!(status, 201, "{text}");
    let id = created["webhook_id"].as_str().unwrap().to_owned();
    assert!(
        id.len() == 25 && id.starts_with("wh_") && id[3..].bytes().all(|b| b.is_ascii_alphanumeric()),
        "webhook_id {id}"
    );
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{created}");
    assert_eq!(created["url"], "http://127.0.0.1:9/hook");
    assert_eq!(created["events"], json!(["click.human", "open.human"]));
    assert_eq!((&created["campaign_id"], &created["batch_size"]), (&json!("bf"), &json!(10)));
    assert_eq!((&created["status"], &created["client_id"]), (&json!("active"), &json!("acme")));
    assert!((rfc3339_ms(&created["created_at"]) - client::now_millis()).abs() < 60_000, "{created}");
    assert!(created["disabled_at"].is_null() && created["failing_since"].is_null() && created["last_replay"].is_null());
    let webhook = format!("{base}/{id}");

    // Who may register: `write` and `recipients`, for its own client only.
    let (status, body, _) = post(&read, &base, Some(new.clone())).await;
    assert_eq!(status, 403, "a read key: {body}");
    assert!(message(&body).contains("`write`"), "{body}");
    let (status, body, _) = post(&write_only, &base, Some(new.clone())).await;
    assert_eq!(status, 403, "write without recipients: {body}");
    assert!(message(&body).contains("`recipients`"), "{body}");
    let (status, body, _) = post(&rival, &base, Some(new.clone())).await;
    assert!(status == 403 || status == 404, "another client's key: {status} {body}");

    // Bad bodies: 400, saying what is allowed.
    for (body, needle) in [
        (json!({"url": "https://a.example/", "events": ["click.human"], "secret": "mine"}), "secret"),
        (json!({"url": "https://a.example/", "events": ["click"]}), "click.human, click.bot, open.human, open.machine"),
        (json!({"url": "https://a.example/", "events": []}), "at least one"),
        (json!({"url": "https://a.example/", "events": ["click.bot", "click.bot"]}), "twice"),
        (json!({"url": "https://a.example/", "events": ["click.bot"], "batch_size": 0}), "batch_size"),
        (json!({"url": "https://a.example/", "events": ["click.bot"], "batch_size": 101}), "batch_size"),
        (json!({"url": "https://a.example/", "events": ["click.bot"], "campaign_id": "no spaces"}), "campaign_id"),
        (json!({"events": ["click.bot"]}), "url"),
        (json!(["https://a.example/", ["click.bot"]]), "object"),
    ] {
        let (status, answer, text) = post(&manage, &base, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(message(&answer).contains(needle), "{body}: {text}");
    }

    // Listed and read with `read`, never with the secret; not by another client.
    let (status, listed, text) = get(&read, &base).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["webhooks"][0]["webhook_id"], id.as_str());
    assert!(!text.contains(&secret) && !text.contains("whsec_") && !text.contains("secret"), "{text}");
    let (status, one, text) = get(&read, &webhook).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(one, listed["webhooks"][0]);
    assert!(!text.contains("whsec_"), "{text}");
    assert_eq!(get(&rival, &webhook).await.0, 404);
    assert_eq!(get(&rival, &base).await.0, 404, "another client's list");
    assert_eq!(get(&read, &format!("{base}/wh_unknown0000000000000000")).await.0, 404);
    assert_eq!(get(&read, &format!("{base}/not-a-webhook")).await.0, 400);
    assert_eq!(get(&read, &format!("{webhook}?nonce=1")).await.0, 400, "unknown query parameter");
    assert_eq!(get(&read, &format!("{base}?nonce=1")).await.0, 400, "unknown query parameter");

    // Rotation: a new secret, the old one signing beside it for 24 hours.
    let rotate = format!("{webhook}/rotate-secret");
    assert_eq!(post(&read, &rotate, None).await.0, 403);
    assert_eq!(post(&rival, &rotate, None).await.0, 404);
    let (status, rotated, text) = post(&manage, &rotate, None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(rotated["webhook_id"], id.as_str());
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret, "{rotated}");
    let until = rfc3339_ms(&rotated["previous_secret_valid_until"]);
    assert!((until - client::now_millis() - 86_400_000).abs() < 60_000, "{rotated}");

    // Replay: 202 with its id and range; bad ranges 422, bad values 400.
    let replay = format!("{webhook}/replay");
    let now = chrono::Utc::now();
    let (from, to) = (now - chrono::Duration::hours(2), now - chrono::Duration::minutes(1));
    let ms = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let range = format!("from={}&to={}", ms(from), ms(to));
    assert_eq!(post(&read, &format!("{replay}?{range}"), None).await.0, 403);
    let (status, replayed, text) = post(&manage, &format!("{replay}?{range}"), None).await;
    assert_eq!(status, 202, "{text}");
    let replay_id = replayed["replay_id"].as_str().unwrap().to_owned();
    assert!(replay_id.starts_with("rp_") && replay_id.len() == 25, "{replayed}");
    assert_eq!(
        (rfc3339_ms(&replayed["from"]), rfc3339_ms(&replayed["to"])),
        (from.timestamp_millis(), to.timestamp_millis())
    );
    let secs = |t: chrono::DateTime<chrono::Utc>| t.timestamp().to_string();
    for (query, want) in [
        (format!("from={}&to={}", secs(to), secs(from)), 422),
        (format!("from={}&to={}", secs(from), secs(now + chrono::Duration::days(1))), 422),
        (format!("from={}&to={}", secs(now - chrono::Duration::days(40)), secs(now)), 422),
        (format!("from={}", secs(from)), 400),
        (format!("from=yesterday&to={}", secs(to)), 400),
        (format!("{range}&nonce=1"), 400),
    ] {
        let (status, body, text) = post(&manage, &format!("{replay}?{query}"), None).await;
        assert_eq!(status, want, "{query}: {text}");
        assert!(!message(&body).is_empty(), "{query}: {text}");
    }
    let (_, one, _) = get(&read, &webhook).await;
    assert_eq!(one["last_replay"]["replay_id"], replay_id.as_str(), "{one}");

    // On the topic, as the deliverer reads it: the new secret, the old one until tomorrow, the replay.
    let topic = Topic::follow(&servers.kafka.brokers());
    let record = topic.record(&id, "the replay on the topic", |w| w.replay.is_some()).await;
    assert_eq!(record.secret, new_secret);
    assert_eq!(record.previous_secret, Some((secret.clone(), until)));
    assert_eq!(
        record.replay.as_ref().map(|r| (r.id.as_str(), r.from_ms, r.to_ms)),
        Some((replay_id.as_str(), from.timestamp_millis(), to.timestamp_millis()))
    );
    assert_eq!((record.batch_size, record.campaign_id.as_ref().map(|c| c.to_string())), (10, Some("bf".to_owned())));

    // Deliveries: none yet; then the deliverer's rows, newest first, this webhook's only.
    let deliveries = format!("{webhook}/deliveries");
    let (status, body, text) = get(&read, &deliveries).await;
    assert_eq!((status, &body), (200, &json!({"deliveries": []})), "{text}");
    for query in ["limit=0", "limit=501", "limit=ten", "nonce=1"] {
        assert_eq!(get(&read, &format!("{deliveries}?{query}")).await.0, 400, "{query}");
    }
    assert_eq!(get(&rival, &deliveries).await.0, 404);
    let t = client::now_millis() - 10_000;
    servers
        .clickhouse
        .query(&format!(
            "INSERT INTO webhook_deliveries VALUES \
             ('acme', '{id}', 'msg_a', toDateTime({s0}), {t}, 1, 1, 0, 'failed', 0, 0, 'connection refused'), \
             ('acme', '{id}', 'msg_a', toDateTime({s1}), {t1}, 2, 1, 1, 'delivered', 200, 35, ''), \
             ('acme', 'wh_someoneelse00000000000', 'msg_b', toDateTime({s1}), {t1}, 1, 1, 0, 'delivered', 200, 1, ''), \
             ('rival', '{id}', 'msg_c', toDateTime({s1}), {t1}, 1, 1, 0, 'delivered', 200, 1, '')",
            s0 = t / 1000,
            t1 = t + 1_500,
            s1 = (t + 1_500) / 1000,
        ))
        .await
        .unwrap();
    let (status, body, text) = get(&read, &deliveries).await;
    assert_eq!(status, 200, "{text}");
    let rows = body["deliveries"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{body}");
    assert_eq!(
        rows[0],
        json!({"message_id": "msg_a", "attempted_at": ms(chrono::DateTime::from_timestamp_millis(t + 1_500).unwrap()),
               "attempt": 2, "events": 1, "replay": true, "outcome": "delivered", "status": 200, "latency_ms": 35, "error": null})
    );
    assert_eq!(
        rows[1],
        json!({"message_id": "msg_a", "attempted_at": ms(chrono::DateTime::from_timestamp_millis(t).unwrap()),
               "attempt": 1, "events": 1, "replay": false, "outcome": "failed", "status": null, "latency_ms": 0,
               "error": "connection refused"})
    );
    let (_, body, _) = get(admin, &format!("{deliveries}?limit=1")).await;
    assert_eq!(body["deliveries"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["deliveries"][0]["attempt"], 2);

    // In Kafka, not in the API's memory: the same after a restart.
    drop(api);
    let api = services::api(&servers, "api-2", &[]).await;
    let base = format!("{}/v1/clients/acme/webhooks", api.url());
    let webhook = format!("{base}/{id}");
    let (status, again, text) = get(&read, &webhook).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(again, one, "after a restart");

    // Disabled by the deliverer (a day of failures): flagged, and no replay.
    let kafka = KafkaConnection::plaintext(&servers.kafka.brokers());
    let writer = EndpointWriter::new(&kafka, "webhooks").unwrap();
    let disabled_at = client::now_millis();
    let disabled = WebhookRecord {
        disabled: Some((disabled_at, "failing".into())),
        failing_since_ms: Some(disabled_at - 86_400_000),
        ..record.clone()
    };
    writer.put(disabled, &topic.endpoints).await.unwrap();
    let flagged = eventually("the API sees the endpoint disabled", Duration::from_secs(30), || async {
        let (_, one, _) = get(&read, &webhook).await;
        (one["status"] == "disabled").then_some(one)
    })
    .await;
    assert_eq!(flagged["disabled_reason"], "failing");
    assert_eq!(rfc3339_ms(&flagged["disabled_at"]), disabled_at);
    assert_eq!(rfc3339_ms(&flagged["failing_since"]), disabled_at - 86_400_000);
    let (_, listed, _) = get(&read, &base).await;
    assert_eq!(listed["webhooks"][0]["status"], "disabled");
    let (status, body, text) = post(&manage, &format!("{webhook}/replay?{range}"), None).await;
    assert_eq!(status, 409, "{text}");
    assert!(message(&body).contains("disabled"), "{body}");

    // Deleted: gone from the API, marked deleted on the topic.
    assert_eq!(delete(&read, &webhook).await, 403);
    assert_eq!(delete(&rival, &webhook).await, 404);
    assert_eq!(delete(&manage, &webhook).await, 204);
    assert_eq!(get(&read, &webhook).await.0, 404);
    assert_eq!(get(&read, &format!("{webhook}/deliveries")).await.0, 404);
    assert_eq!(post(&manage, &format!("{webhook}/rotate-secret"), None).await.0, 404);
    assert_eq!(delete(&manage, &webhook).await, 404);
    let (_, listed, _) = get(&read, &base).await;
    assert_eq!(listed, json!({"webhooks": []}));
    topic.record(&id, "the deletion on the topic", |w| w.deleted).await;

    // At most 20 a client.
    for i in 0..20 {
        let body = json!({"url": format!("https://hooks.acme.example/{i}"), "events": ["click.bot"]});
        let (status, _, text) = post(admin, &base, Some(body)).await;
        assert_eq!(status, 201, "webhook {i}: {text}");
    }
    let (status, body, text) =
        post(admin, &base, Some(json!({"url": "https://x.example/", "events": ["click.bot"]}))).await;
    assert_eq!(status, 409, "{text}");
    assert!(message(&body).contains("20"), "{body}");
    let (_, listed, _) = get(&read, &base).await;
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_inside_the_network_are_refused_at_registration() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[("RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "false".into())]).await;
    let base = format!("{}/v1/clients/acme/webhooks", api.url());
    for (url, needle) in [
        ("http://127.0.0.1:9/x", "127.0.0.1"),
        ("http://10.0.0.5/", "10.0.0.5"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("http://[::1]:8081/", "::1"),
        ("http://[::ffff:192.168.1.1]/", "192.168.1.1"),
        ("ftp://hooks.acme.example/x", "ftp"),
        ("file:///etc/passwd", "file"),
        ("https://user:pass@hooks.acme.example/", "password"),
        ("not a url", "url"),
    ] {
        let body = json!({"url": url, "events": ["click.human"]});
        let (status, answer, text) = post(client::ADMIN_KEY, &base, Some(body)).await;
        assert_eq!(status, 400, "{url}: {text}");
        assert!(message(&answer).contains(needle), "{url}: {text}");
    }
    let (_, listed, _) = get(client::ADMIN_KEY, &base).await;
    assert_eq!(listed, json!({"webhooks": []}), "nothing registered");
    // A public host name passes (it is checked again after each DNS lookup, by the deliverer).
    let body = json!({"url": "https://hooks.acme.example/ricochet", "events": ["click.human"]});
    let (status, _, text) = post(client::ADMIN_KEY, &base, Some(body)).await;
    assert_eq!(status, 201, "{text}");
}
