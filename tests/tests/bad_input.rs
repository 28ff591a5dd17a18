//! Bad input gets a clear answer and never costs data.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use ricochet_schemas::{CampaignId, ClickEvent, ClientId, Codec, EventId, LinkId};
use ricochet_tests::client::{self, http};
use ricochet_tests::servers::Servers;
use ricochet_tests::{eventually, services};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_codes_get_404_and_malformed_creates_get_400_with_a_reason() {
    let servers = Servers::start().await;
    let api = services::api(&servers, "api", &[]).await;
    let edge = services::redirect(&servers, "edge", &[]).await;
    let http = http();

    // Unknown, malformed and overlong codes: 404, never a redirect.
    for path in ["ZZZZZZZZ", "abc", "has-dash!", &"x".repeat(5000)] {
        let r = http.get(format!("{}/{path}", edge.url())).send().await.unwrap();
        assert_eq!(r.status(), 404, "GET /{}", &path[..path.len().min(20)]);
        assert!(r.headers().get("location").is_none(), "a 404 carries no Location");
        assert!(r.text().await.unwrap().contains("Link not found"));
    }

    let post = |body: String| {
        let (http, url) = (http.clone(), format!("{}/v1/links", api.url()));
        async move {
            let r = http.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body["error"]["message"].as_str().unwrap_or_default().to_owned())
        }
    };
    let cases = [
        ("{not json", "invalid JSON body"),
        (r#"{"client_id":"acme","campaign_id":"c"}"#, "missing field `destination_url`"),
        (r#"{"client_id":"acme","campaign_id":"c","destination_url":"javascript:alert(1)"}"#, "must use http or https"),
        (r#"{"client_id":"acme","campaign_id":"c","destination_url":"https://u:p@x.example/"}"#, "credentials"),
        (
            r#"{"client_id":"ac me","campaign_id":"c","destination_url":"https://x.example/"}"#,
            "client_id may only contain",
        ),
        (
            r#"{"client_id":"acme","campaign_id":"","destination_url":"https://x.example/"}"#,
            "campaign_id must not be empty",
        ),
        (
            r#"{"client_id":"acme","campaign_id":"c","destination_url":"https://x.example/","colour":"red"}"#,
            "unknown field `colour`",
        ),
    ];
    for (body, expected) in cases {
        let (status, message) = post(body.to_owned()).await;
        assert_eq!(status, 400, "{body}");
        assert!(message.contains(expected), "{body}: message {message:?} should mention {expected:?}");
    }
    // Nothing invalid reached the registry; a valid create still works.
    let link = client::create_link(&api.url(), "acme", "c", "https://x.example/").await;
    let r = http.get(format!("{}/v1/links/{}", api.url(), link.link_id)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(format!("{}/v1/links/nope/stats", api.url())).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(format!("{}/v1/links/{}/stats?from=yesterday", api.url(), link.link_id)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("RFC 3339"), "{body}");
}

fn event(link: &str) -> ClickEvent {
    ClickEvent {
        event_id: EventId::mint(),
        event_time_ms: client::now_secs() * 1000,
        client_id: ClientId::parse("acme").unwrap(),
        campaign_id: CampaignId::parse("c").unwrap(),
        link_id: LinkId::parse(link).unwrap(),
        recipient_id: None,
        destination_url: "https://x.example/".into(),
        http_method: "GET".into(),
        user_agent: None,
        referer: None,
        client_ip: None,
        edge_node: "test".into(),
        event_type: ricochet_schemas::EventType::Click,
        is_prefetch: false,
        recipient_token: ricochet_schemas::RecipientToken::Absent,
        signals: ricochet_schemas::Signals::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_set_aside_counted_and_do_not_stop_the_aggregator() {
    let servers = Servers::start().await;
    let aggregator = services::aggregator(&servers, "aggregator", &[]).await;
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", servers.kafka.brokers()).create().unwrap();
    let codec = Codec::<ClickEvent>::new();
    let send = |payload: Vec<u8>| {
        let producer = producer.clone();
        async move {
            producer
                .send(FutureRecord::to("clicks").key("acme").payload(&payload), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    // valid, garbage, valid, unknown schema id, valid, event time out of range
    send(codec.encode(&event("l1")).unwrap()).await;
    send(b"{\"not\":\"avro\"}".to_vec()).await;
    send(codec.encode(&event("l1")).unwrap()).await;
    send(vec![0, 0, 0, 0, 77, 1, 2, 3]).await;
    send(codec.encode(&event("l1")).unwrap()).await;
    let mut ancient = event("l1");
    ancient.event_time_ms = -5;
    send(codec.encode(&ancient).unwrap()).await;

    let ch = &servers.clickhouse;
    eventually("the 3 valid clicks to be counted", Duration::from_secs(30), || async {
        (ch.number("SELECT sum(clicks) FROM click_rollup_minute WHERE link_id = 'l1'").await == 3).then_some(())
    })
    .await;
    let metrics = http().get(format!("{}/metrics", aggregator.url())).send().await.unwrap().text().await.unwrap();
    let poison = metrics
        .lines()
        .find(|l| l.starts_with("ricochet_aggregator_poison_messages_total"))
        .expect("poison metric exported");
    assert!(poison.ends_with(" 3"), "{poison}");

    // The three poison messages are on the dead-letter topic with their reasons.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers.kafka.brokers())
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["clicks-dlq"]).unwrap();
    let mut reasons = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reasons.len() < 3 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m.headers().expect("dead letters carry headers");
            let reason =
                headers.iter().find(|h| h.key == "ricochet.reason").and_then(|h| h.value).expect("reason header");
            reasons.push(String::from_utf8_lossy(reason).into_owned());
        }
    }
    assert_eq!(reasons.len(), 3, "dead letters: {reasons:?}");
    assert!(reasons[0].contains("magic byte"), "{reasons:?}");
    assert!(reasons[1].contains("unknown schema id 77"), "{reasons:?}");
    assert!(reasons[2].contains("outside 1970..2106"), "{reasons:?}");

    // And it keeps going.
    send(codec.encode(&event("l1")).unwrap()).await;
    eventually("a click after the poison to be counted", Duration::from_secs(30), || async {
        (ch.number("SELECT sum(clicks) FROM click_rollup_minute WHERE link_id = 'l1'").await == 4).then_some(())
    })
    .await;
}
