//! Client keys with scopes (issue 18, "Keys with scopes"): a `read` key sees
//! counts but no recipient addresses and no signing keys, a `write` key
//! creates its own client's links only, a key made without scopes keeps the
//! rights keys had before scopes, keys are listed without their secret,
//! expire when asked, and stop working while their client is paused.

use std::time::Duration;

use ricochet_tests::client::{self, http_as};
use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use serde_json::{json, Value};

const TOKEN_KEYS: &str = "k1:1111111111111111111111111111111111111111111111111111111111111111";

async fn mint(api: &Service, body: Option<Value>) -> Value {
    let mut r = http_as(Some(client::ADMIN_KEY)).post(format!("{}/v1/clients/acme/api-keys", api.url()));
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn call(key: &str, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut r = http_as(Some(key)).request(method, url);
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn get(key: &str, url: String) -> (u16, Value) {
    call(key, reqwest::Method::GET, url, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scopes_expiry_listing_and_paused_clients() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[("RICOCHET_TOKEN_KEYS", TOKEN_KEYS.into())]).await;
    let base = api.url();
    client::create_link(&base, "acme", "bf", "https://acme.example/").await;
    let stats = format!("{base}/v1/clients/acme/campaigns/bf/stats");
    let recipients = format!("{base}/v1/clients/acme/campaigns/bf/recipients");
    let token_keys = format!("{base}/v1/clients/acme/token-keys");
    let new_link = json!({"client_id": "acme", "campaign_id": "bf", "destination_url": "https://acme.example/2"});

    // A key made as before (no body): the rights keys had before scopes.
    let legacy = mint(&api, None).await;
    let legacy_key = legacy["key"].as_str().unwrap().to_owned();
    assert_eq!(legacy["scopes"], json!(["read", "recipients", "tokens"]), "{legacy}");
    for url in [&stats, &recipients, &token_keys] {
        assert_eq!(get(&legacy_key, url.clone()).await.0, 200, "legacy key on {url}");
    }
    let (status, _) =
        call(&legacy_key, reqwest::Method::POST, format!("{base}/v1/links"), Some(new_link.clone())).await;
    assert_eq!(status, 403, "a legacy key never could create links");

    // `read`: what a dashboard needs, nothing more; a 403 names the scope.
    let read = mint(&api, Some(json!({"scopes": ["read"], "label": "dashboard"}))).await;
    let read_key = read["key"].as_str().unwrap().to_owned();
    assert_eq!(get(&read_key, stats.clone()).await.0, 200);
    assert_eq!(get(&read_key, format!("{base}/v1/clients/acme/campaigns")).await.0, 200);
    for (url, scope) in [(&recipients, "recipients"), (&token_keys, "tokens")] {
        let (status, body) = get(&read_key, url.clone()).await;
        assert_eq!(status, 403, "read key on {url}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("`{scope}`")), "the 403 names the missing scope: {body}");
    }

    // `write`: its own client's links, not another's.
    let write = mint(&api, Some(json!({"scopes": ["write"]}))).await;
    let write_key = write["key"].as_str().unwrap().to_owned();
    let (status, body) =
        call(&write_key, reqwest::Method::POST, format!("{base}/v1/links"), Some(new_link.clone())).await;
    assert_eq!(status, 201, "{body}");
    let other = json!({"client_id": "globex", "campaign_id": "x", "destination_url": "https://globex.example/"});
    assert_eq!(call(&write_key, reqwest::Method::POST, format!("{base}/v1/links"), Some(other)).await.0, 403);
    assert_eq!(get(&write_key, stats.clone()).await.0, 403, "write alone does not read");

    // Bad requests: an unknown scope, no scope, an expiry that is not a time.
    for body in [json!({"scopes": ["admin"]}), json!({"scopes": []}), json!({"expires_at": "tomorrow"})] {
        let r = http_as(Some(client::ADMIN_KEY))
            .post(format!("{base}/v1/clients/acme/api-keys"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }

    // Listed without secrets.
    let (status, listed) = get(client::ADMIN_KEY, format!("{base}/v1/clients/acme/api-keys")).await;
    assert_eq!(status, 200);
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{listed}");
    assert!(!listed.to_string().contains(&read_key) && keys.iter().all(|k| k.get("key").is_none()), "{listed}");
    let listed_read = keys.iter().find(|k| k["key_id"] == read["key_id"]).unwrap();
    assert_eq!(listed_read["scopes"], json!(["read"]));
    assert_eq!(listed_read["label"], "dashboard");
    assert_eq!(get(&read_key, format!("{base}/v1/clients/acme/api-keys")).await.0, 403, "keys list is admin's");

    // Expiry.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    let expiring = mint(&api, Some(json!({"scopes": ["read"], "expires_at": soon.to_rfc3339()}))).await;
    let expiring_key = expiring["key"].as_str().unwrap().to_owned();
    assert_eq!(get(&expiring_key, stats.clone()).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = get(&expiring_key, stats.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("expired"), "{body}");

    // A paused client's keys stop working, and work again once it is active.
    let pause = |status: &'static str| {
        let base = base.clone();
        async move {
            let r = http_as(Some(client::ADMIN_KEY))
                .patch(format!("{base}/v1/clients/acme"))
                .json(&json!({ "status": status }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    pause("paused").await;
    let (status, body) = get(&read_key, format!("{stats}?granularity=hour")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("paused"), "{body}");
    pause("active").await;
    assert_eq!(get(&read_key, format!("{stats}?granularity=hour")).await.0, 200);
}
