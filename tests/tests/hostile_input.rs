//! The API and the edge as a hostile internet meets them (issue 18, "Surface"):
//! keys where keys are due, a token bucket per key, no unknown query
//! parameters, connections and requests that cannot be held open for ever,
//! operators' endpoints off the public port, the documented batch accepted,
//! and `PATCH` for client settings.
//!
//! Each test collects every broken promise before failing, so one run shows
//! all of them.

use std::time::{Duration, Instant};

use ricochet_tests::client::{self, http, http_as};
use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use ricochet_tests::{eventually, free_port};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct Broken(Vec<String>);

impl Broken {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            let what = what.into();
            eprintln!("BROKEN: {what}");
            self.0.push(what);
        }
    }

    fn assert_none(self) {
        assert!(self.0.is_empty(), "{} broken:\n- {}", self.0.len(), self.0.join("\n- "));
    }
}

async fn api_key(api: &Service, client_id: &str) -> String {
    let r = http().post(format!("{}/v1/clients/{client_id}/api-keys", api.url())).send().await.unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned()
}

async fn status_and_body(r: reqwest::RequestBuilder) -> (u16, String) {
    match r.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, format!("no answer: {e}")),
    }
}

/// The soft and hard `Max open files` of a process.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
    let mut fields = line.split_whitespace().skip(3);
    (fields.next().unwrap().to_owned(), fields.next().unwrap().to_owned())
}

/// Lowers this test process's soft file-descriptor limit, so that the
/// services it starts next inherit a low soft limit under a higher hard one.
fn lower_soft_open_files_limit(to: u64) {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = to.min(l.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
}

/// Opens a connection, sends half a request head and then one byte every
/// 200 ms; returns how long the server kept it open (at most `give_up`).
async fn trickle(port: u16, path: &str, give_up: Duration) -> Duration {
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(format!("GET {path} HTTP/1.1\r\nHost: e\r\nX-Slow: ").as_bytes()).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < give_up {
        if slow.write_all(b"x").await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            _ => {}
        }
    }
    start.elapsed()
}

/// Whether a fresh connection gets an answer to `GET path` within `within`.
async fn answers_within(port: u16, path: &str, within: Duration) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        (n > 0).then_some(())
    };
    tokio::time::timeout(within, attempt).await.ok().flatten().is_some()
}

/// Opens a connection with a small receive buffer and pipelines `GET path`
/// on it without ever reading an answer (a "slow read"), until the server
/// stops taking requests or cuts the connection. The task ends when the
/// server closes the connection.
async fn never_read(port: u16, path: &str) -> tokio::task::JoinHandle<()> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: e\r\n\r\n").repeat(100);
    tokio::spawn(async move {
        // Blocks once the server stops reading; fails once it closes.
        while s.write_all(request.as_bytes()).await.is_ok() {}
    })
}

/// Holds `n` idle connections open; returns them.
async fn hold_connections(port: u16, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Let the server accept them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    held
}

/// `GET /v1/status`, unknown query parameters, the documented batch and
/// `PATCH` for client settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_surface() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    let base = api.url();
    let mut broken = Broken::default();
    let key = api_key(&api, "demo").await;
    let link = client::create_link(&base, "demo", "c", "https://shop.example/a").await;

    // /v1/status: the admin key only.
    let (s, _) = status_and_body(http_as(None).get(format!("{base}/v1/status"))).await;
    broken.check(s == 401, format!("GET /v1/status without a key answers {s}, not 401"));
    let (s, _) = status_and_body(http_as(Some(&key)).get(format!("{base}/v1/status"))).await;
    broken.check(s == 403, format!("GET /v1/status with a client key answers {s}, not 403"));
    let (s, _) = status_and_body(http().get(format!("{base}/v1/status"))).await;
    broken.check(s == 200, format!("GET /v1/status with the admin key answers {s}"));
    // Cached and coalesced: 50 calls at once, and 10 more one after another,
    // cost ClickHouse about one freshness query.
    let ch = &servers.clickhouse;
    let freshness_queries = || async {
        ch.query("SYSTEM FLUSH LOGS").await.unwrap();
        ch.number("SELECT count() FROM system.query_log WHERE type = 2 AND query LIKE '%max(event_time_ms)%'").await
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = freshness_queries().await;
    let calls = futures::future::join_all((0..50).map(|_| async {
        let (s, _) = status_and_body(http().get(format!("{base}/v1/status"))).await;
        s
    }))
    .await;
    for _ in 0..10 {
        let (s, _) = status_and_body(http().get(format!("{base}/v1/status"))).await;
        broken.check(s == 200, format!("GET /v1/status answered {s} in a sequence"));
    }
    broken.check(calls.iter().all(|s| *s == 200), format!("concurrent GET /v1/status: {calls:?}"));
    // One computation every 2 s: 1 or 2 in the time the calls take, 3 on a slow machine.
    let queries = freshness_queries().await - before;
    broken.check(queries <= 3, format!("60 calls of /v1/status within ~1 s made {queries} ClickHouse queries"));

    // Unknown query parameters: 400 on every route, as on /stats.
    for path in [
        "/v1/clients/demo/campaigns?nonce=1".to_owned(),
        format!("/v1/links/{}?nonce=1", link.link_id),
        "/v1/clients/demo?nonce=1".into(),
        "/v1/clients/demo/token-keys?nonce=1".into(),
        "/v1/clients/demo/stats?nonce=1".into(),
        "/v1/status?nonce=1".into(),
        "/v1/openapi.json?nonce=1".into(),
        "/healthz?nonce=1".into(),
        "/readyz?nonce=1".into(),
        "/metrics?nonce=1".into(),
    ] {
        let (s, body) = status_and_body(http().get(format!("{base}{path}"))).await;
        broken.check(s == 400, format!("GET {path} answers {s}, not 400: {body}"));
    }
    let (s, body) = status_and_body(http_as(Some(&key)).get(format!("{base}/v1/clients/demo/campaigns?nonce=2"))).await;
    broken.check(s == 400, format!("a client key's ?nonce=2 answers {s}: {body}"));
    let (s, body) = status_and_body(http().post(format!("{base}/v1/links?nonce=1")).json(&json!({
        "client_id": "demo", "campaign_id": "c", "destination_url": "https://shop.example/a"
    })))
    .await;
    broken.check(s == 400, format!("POST /v1/links?nonce=1 answers {s}: {body}"));

    // The documented batch: 10,000 links of ~210 bytes.
    let links: Vec<Value> = (0..10_000)
        .map(|i| {
            json!({
                "client_id": "demo",
                "campaign_id": "black-friday-2026",
                "destination_url": format!(
                    "https://shop.example/deals/black-friday/item-{i:06}?utm_source=email&utm_medium=blast&utm_campaign=bf26&ref=abcdefghij"
                ),
                "click_limit": 1000
            })
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "links": links })).unwrap();
    eprintln!("batch of 10,000 links: {} bytes, {} a link", body.len(), body.len() / 10_000);
    let (s, text) = status_and_body(
        http().post(format!("{base}/v1/links:batch")).header("content-type", "application/json").body(body),
    )
    .await;
    broken.check(s == 201, format!("POST /v1/links:batch of 10,000 answers {s}: {:.200}", text));

    // PATCH changes only the fields sent; PUT replaces the whole state.
    let full = json!({
        "status": "active",
        "fallback_url": "https://demo.example/ended",
        "hot_spread": 4,
        "allowed_networks": ["203.0.113.0/24"],
    });
    let (s, _) = status_and_body(http().put(format!("{base}/v1/clients/demo")).json(&full)).await;
    assert_eq!(s, 200, "PUT client");
    let (s, body) =
        status_and_body(http().patch(format!("{base}/v1/clients/demo")).json(&json!({"status": "paused"}))).await;
    let patched: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    broken.check(
        s == 200
            && patched["status"] == "paused"
            && patched["hot_spread"] == 4
            && patched["fallback_url"] == "https://demo.example/ended"
            && patched["allowed_networks"] == json!(["203.0.113.0/24"]),
        format!("PATCH {{status: paused}} answers {s}: {body}"),
    );
    let (s, body) =
        status_and_body(http().patch(format!("{base}/v1/clients/demo")).json(&json!({"fallback_url": null}))).await;
    let patched: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    broken.check(
        s == 200 && patched["fallback_url"].is_null() && patched["status"] == "paused" && patched["hot_spread"] == 4,
        format!("PATCH {{fallback_url: null}} answers {s}: {body}"),
    );
    let (s, body) =
        status_and_body(http().patch(format!("{base}/v1/clients/demo")).json(&json!({"hot_spread": 0}))).await;
    broken.check(s == 400, format!("PATCH {{hot_spread: 0}} answers {s}: {body}"));
    let (s, body) = status_and_body(
        http_as(Some(&key)).patch(format!("{base}/v1/clients/demo")).json(&json!({"status": "active"})),
    )
    .await;
    broken.check(s == 403, format!("PATCH with a client key answers {s}: {body}"));
    let (_, body) =
        status_and_body(http().put(format!("{base}/v1/clients/demo")).json(&json!({"status": "active"}))).await;
    let put: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!((&put["hot_spread"], &put["allowed_networks"]), (&json!(1), &json!([])), "PUT replaces: {body}");

    // A failing backend is named, but no host or table is.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ch.query("RENAME TABLE click_events TO click_events_away").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (s, body) = status_and_body(http().get(format!("{base}/v1/status"))).await;
    broken.check(s == 503, format!("GET /v1/status with a table gone answers {s}: {body}"));
    for secret in ["click_events", "127.0.0.1", "DB::Exception", &servers.clickhouse.url()] {
        broken.check(!body.contains(secret), format!("the error body names {secret:?}: {body}"));
    }
    ch.query("RENAME TABLE click_events_away TO click_events").await.unwrap();
    broken.assert_none();
}

/// The API's connections and requests: a token bucket per key, a cut-off
/// request head, a connection cap, a concurrency cap, a request timeout and
/// the file-descriptor limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_holds_its_connections_requests_and_rates() {
    let servers = Servers::start().await;
    lower_soft_open_files_limit(512);
    let limited = services::api(
        &servers,
        "limited",
        &[
            ("RICOCHET_API_RATE_LIMIT_PER_SEC", "5".into()),
            ("RICOCHET_API_RATE_LIMIT_BURST", "10".into()),
            ("RICOCHET_HEADER_READ_TIMEOUT_SECS", "1".into()),
        ],
    )
    .await;
    let capped = services::api(
        &servers,
        "capped",
        &[
            ("RICOCHET_MAX_CONNECTIONS", "4".into()),
            ("RICOCHET_MAX_CONCURRENT_REQUESTS", "2".into()),
            ("RICOCHET_REQUEST_TIMEOUT_SECS", "3".into()),
        ],
    )
    .await;
    let mut broken = Broken::default();

    // The soft limit is raised to the hard one at start.
    let (soft, hard) = open_files_limits(limited.proc.pid());
    broken.check(soft == hard, format!("the API's open-files limit stays at {soft} under a hard {hard}"));

    // A trickled head is cut off at the header-read timeout (1 s here).
    let held = trickle(limited.port, "/healthz", Duration::from_secs(8)).await;
    broken.check(held < Duration::from_secs(4), format!("a trickled request head held the API for {held:?}"));

    // The token bucket: 5/s with a burst of 10, per key.
    let key = api_key(&limited, "acme").await;
    let url = format!("{}/v1/clients/acme/campaigns", limited.url());
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..30 {
        let r = http_as(Some(&key)).get(&url).send().await.unwrap();
        if r.status() == 429 {
            retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        }
        statuses.push(r.status().as_u16());
    }
    let limited_count = statuses.iter().filter(|s| **s == 429).count();
    broken.check(
        statuses[..8].iter().all(|s| *s == 200) && limited_count >= 10,
        format!("30 quick requests with one key: {statuses:?}"),
    );
    broken.check(
        retry_after.as_deref().and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| (1..=60).contains(&s)),
        format!("429 without Retry-After in seconds: {retry_after:?}"),
    );
    // Another key has its own bucket.
    let other = api_key(&limited, "acme").await;
    let (s, _) = status_and_body(http_as(Some(&other)).get(&url)).await;
    broken.check(s == 200, format!("a second key is limited by the first one's use: {s}"));
    // Without a key: limited per address.
    let mut keyless = Vec::new();
    for _ in 0..30 {
        keyless.push(status_and_body(http_as(None).get(&url)).await.0);
    }
    broken.check(
        keyless.contains(&401) && keyless.contains(&429) && keyless.iter().all(|s| *s == 401 || *s == 429),
        format!("30 quick requests without a key: {keyless:?}"),
    );
    // Refills: a second later the key works again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (s, _) = status_and_body(http_as(Some(&key)).get(&url)).await;
    broken.check(s == 200, format!("the bucket did not refill: {s}"));

    // At most 4 connections: a fifth waits until one closes.
    let mut connections = hold_connections(capped.port, 4).await;
    let fifth = answers_within(capped.port, "/healthz", Duration::from_secs(1)).await;
    broken.check(!fifth, "a fifth connection was served past a cap of 4");
    connections.pop();
    let after = answers_within(capped.port, "/healthz", Duration::from_secs(3)).await;
    broken.check(after, "a connection was not served once one of the 4 closed");
    drop(connections);

    // With ClickHouse stalled: at most 2 requests at once, each cut at 3 s.
    let link = client::create_link(&capped.url(), "acme", "c", "https://shop.example/").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    servers.clickhouse.freeze();
    let now = client::now_secs();
    let stalled = |i: i64| {
        let url = format!("{}/v1/links/{}/stats?from={}&to={now}", capped.url(), link.link_id, now - 3600 - i);
        async move {
            let start = Instant::now();
            let (s, _) = status_and_body(http().get(url).timeout(Duration::from_secs(10))).await;
            (s, start.elapsed())
        }
    };
    let (a, b, third) = tokio::join!(stalled(1), stalled(2), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        answers_within(capped.port, "/healthz", Duration::from_secs(1)).await
    });
    servers.clickhouse.thaw();
    for (s, took) in [a, b] {
        broken.check(
            (s == 503 || s == 504) && took < Duration::from_secs(6),
            format!("a request stalled on ClickHouse answered {s} after {took:?}; the request timeout is 3 s"),
        );
    }
    broken.check(!third, "a third request was served while 2 were in flight (cap 2)");
    eventually("the capped API to serve again", Duration::from_secs(10), || async {
        answers_within(capped.port, "/healthz", Duration::from_secs(1)).await.then_some(())
    })
    .await;
    broken.assert_none();
}

/// The edge: metrics only on the operations listener, health on both, a
/// connection cap and the file-descriptor limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_keeps_operations_off_the_public_port() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    let link = client::create_link(&api.url(), "acme", "c", "https://shop.example/").await;
    lower_soft_open_files_limit(512);
    let ops = free_port();
    let edge = services::redirect(
        &servers,
        "edge",
        &[("RICOCHET_OPS_LISTEN", format!("127.0.0.1:{ops}")), ("RICOCHET_MAX_CONNECTIONS", "4".into())],
    )
    .await;
    let mut broken = Broken::default();
    let ops_url = format!("http://127.0.0.1:{ops}");

    let (s, body) = status_and_body(http().get(format!("{}/metrics", edge.url()))).await;
    broken.check(s == 404, format!("the public port serves /metrics: {s} {:.100}", body));
    let (s, body) = status_and_body(http().get(format!("{ops_url}/metrics"))).await;
    broken.check(s == 200 && body.contains("ricochet_"), format!("the ops port's /metrics: {s} {:.100}", body));
    for base in [edge.url(), ops_url.clone()] {
        for path in ["/healthz", "/readyz"] {
            let (s, _) = status_and_body(http().get(format!("{base}{path}"))).await;
            broken.check(s == 200, format!("{base}{path} answers {s}"));
        }
    }
    let (s, _) = status_and_body(http().get(format!("{ops_url}/{}", link.code))).await;
    broken.check(s == 404, format!("the ops port redirects clicks: {s}"));

    let (soft, hard) = open_files_limits(edge.proc.pid());
    broken.check(soft == hard, format!("the edge's open-files limit stays at {soft} under a hard {hard}"));

    let mut connections = hold_connections(edge.port, 4).await;
    let fifth = answers_within(edge.port, &format!("/{}", link.code), Duration::from_secs(1)).await;
    broken.check(!fifth, "a fifth connection was served past a cap of 4");
    connections.pop();
    let after = answers_within(edge.port, &format!("/{}", link.code), Duration::from_secs(3)).await;
    broken.check(after, "a connection was not served once one of the 4 closed");
    broken.assert_none();
}

/// Probes from outside, as an attacker would send them, against both
/// services with their default settings (but a small bucket): keys where
/// keys are due, 429 under a burst, no 5xx, a trickled head cut on time,
/// unknown parameters refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_probes_get_4xx_and_never_5xx() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[("RICOCHET_HEADER_READ_TIMEOUT_SECS", "2".into())]).await;
    let base = api.url();
    let link = client::create_link(&base, "acme", "c", "https://shop.example/").await;
    let edge = services::redirect(
        &servers,
        "edge",
        &[
            ("RICOCHET_HEADER_READ_TIMEOUT_SECS", "2".into()),
            ("RICOCHET_OPS_LISTEN", format!("127.0.0.1:{}", free_port())),
        ],
    )
    .await;
    let mut broken = Broken::default();

    // Every operation that needs a key answers 401 without one.
    let doc: Value = http_as(None).get(format!("{base}/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["security"] == json!([{}]) {
                continue;
            }
            let url = format!(
                "{base}{}",
                path.replace("{link_id}", &link.link_id)
                    .replace("{client_id}", "acme")
                    .replace("{campaign_id}", "c")
                    .replace("{key_id}", &"0".repeat(64))
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (s, body) = status_and_body(http_as(None).request(method.clone(), &url).json(&json!({}))).await;
            broken.check(s == 401 || s == 429, format!("{method} {path} without a key answers {s}: {body}"));
        }
    }

    // Odd input of every kind: 4xx, never 5xx, on both services.
    let long = "a".repeat(10_000);
    let odd_paths = [
        "/v1/links/%00".to_owned(),
        "/v1/links/..%2f..%2fetc%2fpasswd".into(),
        format!("/v1/links/{long}"),
        "/v1/clients/acme/stats?from=-1&to=99999999999999999999".into(),
        "/v1/clients/acme/stats?tz=../../etc/passwd".into(),
        "/v1/clients/acme/stats?granularity=%FF".into(),
        "/v1/clients/acme/campaigns/c/recipients?cursor=%27%20OR%201%3D1".into(),
        "/v1/clients/acme/campaigns?nonce=1".into(),
        "/v1/clients/acme/campaigns?nonce=1&nonce=2".into(),
        "/v1/clients/acme/top-campaigns?limit=0".into(),
        "/v1/clients/acme/top-campaigns?limit=1e99".into(),
        "/%2e%2e/%2e%2e/".into(),
    ];
    for path in &odd_paths {
        for (name, url) in [("api", format!("{base}{path}")), ("edge", format!("{}{path}", edge.url()))] {
            let (s, body) = status_and_body(http().get(&url)).await;
            broken.check((400..500).contains(&s), format!("{name} GET {path:.80} answers {s}: {body:.200}"));
        }
    }
    let (s, body) = status_and_body(http().get(format!("{base}/v1/clients/acme/campaigns?nonce=1"))).await;
    broken.check(s == 400, format!("?nonce=1 answers {s}: {body}"));
    for body in ["{", "[]", "null", "{\"links\":[{}]}", &format!("{{\"links\":\"{long}\"}}")] {
        for path in ["/v1/links", "/v1/links:batch", "/v1/clients/acme"] {
            let method = if path == "/v1/clients/acme" { reqwest::Method::PATCH } else { reqwest::Method::POST };
            let (s, text) = status_and_body(
                http()
                    .request(method, format!("{base}{path}"))
                    .header("content-type", "application/json")
                    .body(body.to_owned()),
            )
            .await;
            broken.check((400..500).contains(&s), format!("{path} with {body:.40} answers {s}: {text:.200}"));
        }
    }

    // A burst from one address without a key: 429s, never 5xx.
    let burst = futures::future::join_all((0..400).map(|_| {
        let url = format!("{base}/v1/clients/acme/campaigns");
        async move { status_and_body(http_as(None).get(url)).await.0 }
    }))
    .await;
    broken.check(burst.contains(&429), "400 requests at once without a key were never limited");
    broken.check(burst.iter().all(|s| (400..500).contains(s)), format!("a burst answered {burst:?}"));

    // Trickled heads are cut on time, on both.
    for (name, port) in [("api", api.port), ("edge", edge.port)] {
        let held = trickle(port, "/healthz", Duration::from_secs(10)).await;
        broken.check(held < Duration::from_secs(5), format!("a trickled head held the {name} for {held:?}"));
    }
    broken.assert_none();
}

/// A client that sends requests and never reads the answers holds a
/// connection only for the send timeout, on the edge and on the API: with a
/// cap of one connection, the next client is served once it is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_at_the_send_timeout() {
    let servers = Servers::start().await;
    let one = [("RICOCHET_MAX_CONNECTIONS", "1".to_owned()), ("RICOCHET_SEND_TIMEOUT_SECS", "2".to_owned())];
    let api = services::api(&servers, "api", &one).await;
    let link = client::create_link(&api.url(), "acme", "c", "https://shop.example/").await;
    let edge = services::redirect(&servers, "edge", &one).await;
    let mut broken = Broken::default();
    for (name, port, path) in [("edge", edge.port, format!("/{}", link.code)), ("api", api.port, "/healthz".to_owned())]
    {
        let reader = never_read(port, &path).await;
        // Long enough to fill every buffer between the two and stall the server's writes.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        let served = answers_within(port, &path, Duration::from_secs(20)).await;
        broken.check(served, format!("the {name}'s one connection was held by a client that never reads"));
        broken.check(
            start.elapsed() < Duration::from_secs(10),
            format!("the {name} served the next client after {:?}, past a 2 s send timeout", start.elapsed()),
        );
        let closed = tokio::time::timeout(Duration::from_secs(10), reader).await.is_ok();
        broken.check(closed, format!("the {name} kept the connection of a client that never reads"));
    }
    broken.assert_none();
}
