//! The edge's bot signals, end to end: requests shaped like curl, a browser, a
//! mail gateway's HEAD and a browser prefetch go through the real edge, from
//! addresses given in `X-Forwarded-For`, and the events read back off the real
//! `clicks` topic carry what each request showed. Every request still gets its 302.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use ricochet_registry::TokenKeys;
use ricochet_schemas::{ClickEvent, Codec, NetworkClass, RecipientId, RecipientToken, UaClass};
use ricochet_tests::client::{self, http};
use ricochet_tests::servers::Servers;
use ricochet_tests::services;
use serde_json::json;

const TOKEN_KEYS: &str = "k1:1111111111111111111111111111111111111111111111111111111111111111";
const CHROME: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// Every event on the clicks topic, by link id, once `want` links have one each;
/// with the Kafka key each was published under.
fn read_events(brokers: &str, want: usize) -> HashMap<String, Vec<(String, ClickEvent)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "signals-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["clicks"]).unwrap();
    let codec = Codec::<ClickEvent>::new();
    let mut by_link: HashMap<String, Vec<(String, ClickEvent)>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while by_link.values().map(Vec::len).sum::<usize>() < want {
        assert!(Instant::now() < deadline, "only {} of {want} events arrived", by_link.len());
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let event = codec.decode(m.payload().expect("payload")).expect("a v3 click event");
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            by_link.entry(event.link_id.to_string()).or_default().push((key, event));
        }
    }
    by_link
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_request_shape_is_recorded_with_its_signals() {
    let servers = Servers::start().await;
    let env = [
        ("RICOCHET_TOKEN_KEYS", TOKEN_KEYS.to_owned()),
        ("RICOCHET_TRUST_FORWARDED_FOR", "true".to_owned()),
        // The trusted-proxy form; the flag above is its deprecated alias.
        ("RICOCHET_TRUSTED_PROXIES", "127.0.0.0/8".to_owned()),
    ];
    let api = services::api(&servers, "api", &env).await;
    let put = http()
        .put(format!("{}/v1/clients/acme", api.url()))
        .json(&json!({"status": "active", "hot_spread": 8, "allowed_networks": ["198.51.100.0/24"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
    let mut links = Vec::new();
    for name in ["curl", "browser", "head", "prefetch", "v1-token"] {
        links.push(client::create_link(&api.url(), "acme", "signals", &format!("https://acme.example/{name}")).await);
    }
    let r = http()
        .post(format!("{}/v1/links", api.url()))
        .json(&json!({"client_id": "acme", "campaign_id": "signals", "destination_url": "https://acme.example/trap", "honeypot": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let trap: client::Link = r.json().await.unwrap();
    let edge = services::redirect(&servers, "edge", &env).await;

    let keys = TokenKeys::parse(TOKEN_KEYS).unwrap();
    let jane = RecipientId::parse("jane@example.com").unwrap();
    let sent_at = client::now_secs() as u64 - 120;
    let v2 = |code: &str| keys.mint_sent_at("acme", code, &jane, sent_at);
    let [curl, browser, head, prefetch, v1] = &links[..] else { unreachable!() };
    let get = |path: String, from: &str| http().get(format!("{}{path}", edge.url())).header("x-forwarded-for", from);
    let requests = [
        get(format!("/{}", curl.code), "79.192.0.1").header("user-agent", "curl/8.5.0").header("accept", "*/*"),
        get(format!("/{}/{}", browser.code, v2(&browser.code)), "198.51.100.23")
            .header("user-agent", CHROME)
            .header("accept", "text/html,application/xhtml+xml")
            .header("accept-language", "de-DE,de;q=0.9"),
        http()
            .head(format!("{}/{}/{}", edge.url(), head.code, v2(&head.code)))
            .header("x-forwarded-for", "40.92.3.4")
            .header("user-agent", CHROME),
        get(format!("/{}", prefetch.code), "3.5.5.5")
            .header("user-agent", CHROME)
            .header("accept", "text/html")
            .header("sec-purpose", "prefetch")
            .header("referer", "https://nam12.safelinks.protection.outlook.com/?url=x"),
        get(format!("/{}/{}", v1.code, keys.mint("acme", &v1.code, &jane)), "79.192.0.1").header("user-agent", CHROME),
        get(format!("/{}", trap.code), "79.192.0.1").header("user-agent", CHROME),
    ];
    for request in requests {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 302, "every request is redirected, bots included");
    }

    let brokers = servers.kafka.brokers();
    let events = tokio::task::spawn_blocking(move || read_events(&brokers, 6)).await.unwrap();
    let one = |link: &client::Link| {
        let got = &events[&link.link_id];
        assert_eq!(got.len(), 1, "one event for {}", link.tracking_url);
        got[0].clone()
    };

    let (_, e) = one(curl);
    let s = &e.signals;
    assert_eq!(s.ua_class, UaClass::HttpClient, "curl is no human");
    assert!(s.has_accept && !s.has_accept_language && !s.prefetch_header && !s.honeypot);
    assert_eq!((s.network_class, s.asn, s.network_name.as_deref()), (NetworkClass::Other, 3320, None));
    assert_eq!(e.client_ip.as_deref(), Some("79.192.0.0"), "only the anonymized address leaves the edge");
    assert!(!e.is_prefetch);

    let (browser_key, e) = one(browser);
    let s = &e.signals;
    assert_eq!(s.ua_class, UaClass::Browser);
    assert!(s.has_accept && s.has_accept_language && s.network_allow_listed && !s.scanner_referer);
    assert_eq!((e.recipient_token, e.recipient_id.as_ref()), (RecipientToken::Valid, Some(&jane)));
    assert_eq!(s.sent_at_ms, Some(sent_at as i64 * 1000), "the v2 token's send time");

    let (head_key, e) = one(head);
    let s = &e.signals;
    assert_eq!(e.http_method, "HEAD");
    // reqwest always sends `Accept: */*`, so only Accept-Language is missing here.
    assert!(e.is_prefetch && s.has_accept && !s.has_accept_language && !s.network_allow_listed, "{e:?}");
    assert_eq!(
        (s.network_class, s.asn, s.network_name.as_deref()),
        (NetworkClass::Scanner, 8075, Some("Microsoft EOP"))
    );
    assert_eq!(e.client_ip.as_deref(), Some("40.92.3.0"));
    // Hot client: one recipient's events share a sub-key, whatever the link.
    assert!(browser_key.starts_with("acme#"), "{browser_key}");
    assert_eq!(head_key, browser_key, "jane's events reach one partition");

    let (_, e) = one(prefetch);
    let s = &e.signals;
    assert!(s.prefetch_header && s.scanner_referer && e.is_prefetch);
    assert_eq!((s.network_class, s.network_name.as_deref()), (NetworkClass::Cloud, Some("AWS")));
    assert_eq!(s.sent_at_ms, None, "no token, no send time");

    let (v1_key, e) = one(v1);
    assert_eq!((e.recipient_token, e.signals.sent_at_ms), (RecipientToken::Valid, None), "v1 tokens still verify");
    assert_eq!(v1_key, browser_key);

    let (_, e) = one(&trap);
    assert!(e.signals.honeypot);
    assert!(!links.iter().any(|l| events[&l.link_id][0].1.signals.honeypot), "only the trap is a honeypot");
}
