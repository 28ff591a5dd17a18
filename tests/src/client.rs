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

/// The admin key every test aggregator is started with.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// An HTTP client that never follows redirects (the 302 is what we test) and
/// authenticates as the admin.
pub fn http() -> reqwest::Client {
    http_as(Some(ADMIN_KEY))
}

/// Like [`http`], with another key, or none.
pub fn http_as(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().expect("header value"));
    }
    reqwest::Client::builder()
        // The tests speak plain HTTP to loopback. The workspace's reqwest has
        // rustls with the system's roots (the webhook deliverer's), which
        // would read the trust store for every client made: ~15 ms each,
        // too slow for tests that open hundreds of clients at once.
        .tls_built_in_root_certs(false)
        .default_headers(headers)
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
        .get(format!("{api}/v1/links/{link_id}/stats?from={from}&to={to}&granularity=minute"))
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
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// `RICOCHET_OPS_LISTEN` on a free port, for a test that reads an edge's
/// `/metrics` (served only there), and that listener's URL.
pub fn ops_listener() -> ((&'static str, String), String) {
    let port = crate::free_port();
    (("RICOCHET_OPS_LISTEN", format!("127.0.0.1:{port}")), format!("http://127.0.0.1:{port}"))
}

/// `GET /v1/status` of an aggregator.
pub async fn status(api: &str) -> Value {
    let r = http().get(format!("{api}/v1/status")).send().await.expect("GET /v1/status");
    assert!(r.status().is_success(), "status: {}", r.status());
    r.json().await.expect("status JSON")
}

/// The partitions an aggregator owns, from its `/v1/status`.
pub async fn owned_partitions(api: &str) -> Vec<i64> {
    status(api).await["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["partition"].as_i64().expect("partition"))
        .collect()
}

/// The sum of every sample of a Prometheus metric (all label sets), 0 if absent.
pub async fn metric(api: &str, name: &str) -> f64 {
    let text =
        http().get(format!("{api}/metrics")).send().await.expect("GET /metrics").text().await.expect("metrics text");
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// A current desktop Chrome's user agent: what a person's click looks like.
/// (A bare `Mozilla/5.0` is a known bot signature in isbot's list.)
pub const BROWSER_UA: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
