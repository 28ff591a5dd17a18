//! Small HTTP helpers for talking to the services the way a user would.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// A link as `POST /v1/links` returns it.
#[derive(Clone, Debug, Deserialize)]
pub struct Link {
    pub link_id: String,
    pub code: String,
    pub client_id: String,
    pub campaign_id: String,
    pub tracking_url: String,
}

/// An HTTP client that never follows redirects: the 302 is what we test.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

pub async fn create_link(api: &str, client_id: &str, campaign_id: &str, destination: &str) -> Link {
    let r = http()
        .post(format!("{api}/v1/links"))
        .json(&json!({ "client_id": client_id, "campaign_id": campaign_id, "destination_url": destination }))
        .send()
        .await
        .expect("POST /v1/links");
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, 201, "create link: {body}");
    serde_json::from_str(&body).expect("link JSON")
}

/// `GET /v1/links/{id}/stats` over `[from, to)` Unix seconds, by minute.
pub async fn link_stats(api: &str, link_id: &str, from: i64, to: i64) -> Value {
    let r = http()
        .get(format!(
            "{api}/v1/links/{link_id}/stats?from={from}&to={to}&granularity=minute"
        ))
        .send()
        .await
        .expect("GET stats");
    assert!(r.status().is_success(), "stats: {}", r.status());
    r.json().await.expect("stats JSON")
}

pub fn total_clicks(stats: &Value) -> u64 {
    stats["totals"]["clicks"].as_u64().expect("totals.clicks")
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
