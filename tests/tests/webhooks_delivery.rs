//! Webhooks delivered (issue 17): real broker, ClickHouse, aggregator, API
//! and deliverer (`ricochet-webhooks`), and a real HTTP receiver on loopback
//! (`ricochet_tests::receiver`) that checks every signature and can fail,
//! stall, answer `410` or go down. Clicks go straight into the `clicks`
//! topic; what a receiver must get is what ClickHouse counted, decided.
//!
//! Retries are shortened (200 ms doubling to 2 s) so that a minute's outage
//! is retried through in seconds, not in the production hour.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ricochet_tests::feed::{self, Feed, Load, Target};
use ricochet_tests::receiver::Receiver;
use ricochet_tests::servers::{ClickHouse, Servers};
use ricochet_tests::services::{self, Service};
use ricochet_tests::{client, eventually, PARTITIONS};
use serde_json::{json, Value};

fn fast_retries() -> Vec<(&'static str, String)> {
    vec![("RICOCHET_WEBHOOKS_RETRY_FIRST_MS", "200".to_owned()), ("RICOCHET_WEBHOOKS_RETRY_MAX_SECS", "2".to_owned())]
}

/// Registers a webhook through the API; its answer (`webhook_id`, `secret`).
async fn create_webhook(api: &str, client_id: &str, body: Value) -> Value {
    let r = client::http().post(format!("{api}/v1/clients/{client_id}/webhooks")).json(&body).send().await.unwrap();
    let status = r.status();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "creating a webhook: {answer}");
    assert!(answer["secret"].as_str().unwrap().starts_with("whsec_"), "{answer}");
    answer
}

async fn webhook(api: &str, client_id: &str, webhook_id: &str) -> Value {
    let r = client::http().get(format!("{api}/v1/clients/{client_id}/webhooks/{webhook_id}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The endpoint's latest attempts, as the API lists them.
async fn deliveries(api: &str, client_id: &str, webhook_id: &str) -> Vec<Value> {
    let url = format!("{api}/v1/clients/{client_id}/webhooks/{webhook_id}/deliveries?limit=500");
    let list: Value = client::http().get(url).send().await.unwrap().json().await.unwrap();
    list["deliveries"].as_array().expect("a list of deliveries").clone()
}

/// Checks deliveries, as the receiver got them, with `standardwebhooks` from
/// PyPI (the test venv): every one must verify with `secret`.
fn assert_reference_library_verifies(deliveries: &[ricochet_tests::receiver::Delivery], secret: &str) {
    const VERIFY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
cases = json.load(open(sys.argv[1]))
bad = []
for case in cases:
    try:
        Webhook(case["secret"]).verify(case["body"], case["headers"])
    except Exception as e:
        bad.append((case["headers"]["webhook-id"], str(e)))
print(json.dumps({"checked": len(cases), "bad": bad}))
"#;
    let cases: Vec<Value> = deliveries
        .iter()
        .take(500)
        .map(|d| {
            let headers: serde_json::Map<String, Value> =
                d.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            json!({"secret": secret, "body": d.body, "headers": headers})
        })
        .collect();
    assert!(!cases.is_empty(), "deliveries to check");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deliveries.json");
    std::fs::write(&path, serde_json::to_vec(&cases).unwrap()).unwrap();
    let out = std::process::Command::new(ricochet_tests::test_python())
        .args(["-c", VERIFY])
        .arg(&path)
        .output()
        .expect("running the reference library");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checked"], cases.len(), "{report}");
    assert_eq!(report["bad"], json!([]), "deliveries the reference library refuses");
}

/// The ids of a client's events ClickHouse counted as human.
async fn human_events(ch: &ClickHouse, client_id: &str) -> HashSet<String> {
    let sql =
        format!("SELECT event_id FROM click_events FINAL WHERE client_id = '{client_id}' AND is_human = 1 FORMAT TSV");
    ch.query(&sql).await.unwrap().lines().map(str::to_owned).collect()
}

/// Waits until the receiver holds exactly `client_id`'s human clicks (each at
/// least once), checking every one it got is that client's, human, and signed.
async fn assert_every_human_click_delivered(ch: &ClickHouse, receiver: &Receiver, client_id: &str, within: Duration) {
    let delivered = eventually("every human click delivered", within, || async {
        let expected = human_events(ch, client_id).await;
        let got = receiver.event_ids();
        (!expected.is_empty() && expected.is_subset(&got)).then_some((expected, got))
    })
    .await;
    let (expected, got) = delivered;
    let extra: Vec<&String> = got.difference(&expected).collect();
    assert!(extra.is_empty(), "delivered events that are not {client_id}'s human clicks: {extra:?}");
    for d in receiver.deliveries() {
        for e in &d.events {
            assert_eq!(e["type"], "click.human", "{e}");
            assert_eq!(e["data"]["client_id"], client_id, "{e}");
            assert_eq!(e["data"]["verdict"], "human", "{e}");
        }
    }
    assert_eq!(receiver.bad_signatures(), 0, "every delivery carries a valid signature");
}

/// Clients spread over the partitions, and one that shares `acme`'s.
fn neighbour_of(client_id: &str) -> String {
    let p = ricochet_webhooks::partition::partition_of(client_id, PARTITIONS as i32);
    (0..)
        .map(|i| format!("neighbour-{i}"))
        .find(|c| ricochet_webhooks::partition::partition_of(c, PARTITIONS as i32) == p)
        .unwrap()
}

struct Stack {
    servers: Servers,
    _aggregator: Service,
    api: Service,
}

async fn stack() -> Stack {
    let servers = Servers::start().await;
    let aggregator = services::aggregator(&servers, "aggregator", &[]).await;
    let api = services::api(&servers, "api", &[]).await;
    Stack { servers, _aggregator: aggregator, api }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_30_percent_and_down_for_a_minute_gets_every_human_click() {
    let s = stack().await;
    let _deliverer = services::webhooks(&s.servers, "webhooks", &fast_retries()).await;
    let receiver = Receiver::start().await;
    receiver.fail_percent(30);
    let created = create_webhook(&s.api.url(), "acme", json!({"url": receiver.url(), "events": ["click.human"]})).await;
    receiver.expect_secret(created["secret"].as_str().unwrap());

    let targets = vec![
        Target::new("acme", "spring", "acme-1"),
        Target::new("acme", "spring", "acme-2"),
        Target::new("globex", "fall", "globex-1"),
    ];
    let load = Load::start(Feed::like_the_edge(&s.servers.kafka.brokers()), targets, 60);
    tokio::time::sleep(Duration::from_secs(8)).await;
    receiver.down().await;
    eprintln!("receiver down after {} deliveries", receiver.deliveries().len());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = receiver.deliveries().len();
    receiver.up().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tally = load.stop().await;
    eprintln!("{} clicks sent; {before} deliveries before the receiver came back", tally.total());
    feed::assert_counted_exactly(&s.servers.clickhouse, &tally, Duration::from_secs(60)).await;
    assert_every_human_click_delivered(&s.servers.clickhouse, &receiver, "acme", Duration::from_secs(90)).await;
    assert!(receiver.requests() > receiver.deliveries().len() as u64, "some requests failed and were retried");
    // One event, one webhook-id, however often it was sent.
    for (event, ids) in receiver.webhook_ids_by_event() {
        assert_eq!(ids.len(), 1, "event {event} came with several webhook-ids: {ids:?}");
    }
    // The deliveries as received verify with the specification's own library.
    let secret = created["secret"].as_str().unwrap();
    assert_reference_library_verifies(&receiver.deliveries(), secret);

    // The attempts are listed, failures with their status.
    let id = created["webhook_id"].as_str().unwrap();
    let list = deliveries(&s.api.url(), "acme", id).await;
    let outcomes: HashSet<&str> = list.iter().map(|d| d["outcome"].as_str().unwrap()).collect();
    assert!(outcomes.contains("delivered") && outcomes.contains("failed"), "{outcomes:?}");
    assert_eq!(webhook(&s.api.url(), "acme", id).await["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_deliverer_resumes_its_retries() {
    let s = stack().await;
    let mut deliverer = services::webhooks(&s.servers, "webhooks-1", &fast_retries()).await;
    let receiver = Receiver::start().await;
    let created = create_webhook(&s.api.url(), "acme", json!({"url": receiver.url(), "events": ["click.human"]})).await;
    receiver.expect_secret(created["secret"].as_str().unwrap());
    receiver.down().await;

    let load =
        Load::start(Feed::like_the_edge(&s.servers.kafka.brokers()), vec![Target::new("acme", "spring", "a-1")], 100);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let tally = load.stop().await;
    feed::assert_counted_exactly(&s.servers.clickhouse, &tally, Duration::from_secs(60)).await;
    // Deliveries are being retried (the receiver refuses connections) when
    // the deliverer dies.
    let ch = &s.servers.clickhouse;
    eventually("failed attempts are logged", Duration::from_secs(30), || async {
        (ch.number("SELECT count() FROM webhook_deliveries WHERE outcome = 'failed'").await > 0).then_some(())
    })
    .await;
    deliverer.proc.kill();
    eprintln!("deliverer killed with {} clicks sent, none delivered", tally.total());
    receiver.up().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.deliveries().is_empty(), "nothing is delivered while the deliverer is dead");
    let _deliverer = services::webhooks(&s.servers, "webhooks-2", &fast_retries()).await;
    assert_every_human_click_delivered(ch, &receiver, "acme", Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_endpoint_does_not_delay_another_clients_deliveries() {
    let s = stack().await;
    let env = [fast_retries(), vec![("RICOCHET_WEBHOOKS_TIMEOUT_SECS", "30".to_owned())]].concat();
    let _deliverer = services::webhooks(&s.servers, "webhooks", &env).await;
    // Two clients whose events share one partition of the decided topic.
    let neighbour = neighbour_of("acme");
    let (stalled, prompt) = (Receiver::start().await, Receiver::start().await);
    stalled.delay(Duration::from_secs(25));
    let a = create_webhook(&s.api.url(), "acme", json!({"url": stalled.url(), "events": ["click.human"]})).await;
    let b = create_webhook(&s.api.url(), &neighbour, json!({"url": prompt.url(), "events": ["click.human"]})).await;
    stalled.expect_secret(a["secret"].as_str().unwrap());
    prompt.expect_secret(b["secret"].as_str().unwrap());

    let started = Instant::now();
    let targets = vec![Target::new("acme", "spring", "a-1"), Target::new(&neighbour, "spring", "n-1")];
    let load = Load::start(Feed::like_the_edge(&s.servers.kafka.brokers()), targets, 100);
    tokio::time::sleep(Duration::from_secs(5)).await;
    load.stop().await;
    // The neighbour's receiver has every one of its human clicks within
    // seconds, while acme's has answered none of its requests yet.
    assert_every_human_click_delivered(&s.servers.clickhouse, &prompt, &neighbour, Duration::from_secs(20)).await;
    assert!(started.elapsed() < Duration::from_secs(25), "delivered while the stalled endpoint was still stalled");
    assert!(stalled.deliveries().is_empty(), "the stalled receiver has answered nothing yet");
    assert!(stalled.requests() > 0, "acme's endpoint was being delivered to");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_a_private_address_is_refused_at_delivery() {
    let servers = Servers::start().await;
    let _aggregator = services::aggregator(&servers, "aggregator", &[]).await;
    let strict = [("RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "false".to_owned())];
    let api = services::api(&servers, "api", &strict).await;
    let env = [fast_retries(), strict.to_vec()].concat();
    let _deliverer = services::webhooks(&servers, "webhooks", &env).await;
    let receiver = Receiver::start().await;
    // A name passes registration (it may resolve anywhere later); what it
    // resolves to is checked at each delivery: loopback, refused.
    let created =
        create_webhook(&api.url(), "acme", json!({"url": receiver.url_by_name(), "events": ["click.human"]})).await;
    let load =
        Load::start(Feed::like_the_edge(&servers.kafka.brokers()), vec![Target::new("acme", "spring", "a-1")], 50);
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.stop().await;
    let id = created["webhook_id"].as_str().unwrap().to_owned();
    let refused = eventually("a refused attempt is listed", Duration::from_secs(30), || async {
        deliveries(&api.url(), "acme", &id).await.into_iter().find(|d| d["outcome"] == "refused")
    })
    .await;
    assert!(refused["error"].as_str().unwrap().contains("127.0.0.1"), "{refused}");
    assert_eq!(receiver.requests(), 0, "no request reached the private address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_an_endpoint_a_day_of_failures_does_too_and_enabling_resumes_where_it_stopped() {
    let s = stack().await;
    // "A day" is three seconds here.
    let env = [fast_retries(), vec![("RICOCHET_WEBHOOKS_GIVE_UP_SECS", "3".to_owned())]].concat();
    let _deliverer = services::webhooks(&s.servers, "webhooks", &env).await;
    let (gone, dead) = (Receiver::start().await, Receiver::start().await);
    gone.gone();
    dead.down().await;
    let neighbour = neighbour_of("acme");
    let g = create_webhook(&s.api.url(), "acme", json!({"url": gone.url(), "events": ["click.human"]})).await;
    let d = create_webhook(&s.api.url(), &neighbour, json!({"url": dead.url(), "events": ["click.human"]})).await;
    let targets = vec![Target::new("acme", "spring", "a-1"), Target::new(&neighbour, "spring", "n-1")];
    let load = Load::start(Feed::like_the_edge(&s.servers.kafka.brokers()), targets, 50);
    let api = s.api.url();
    let gone_id = g["webhook_id"].as_str().unwrap();
    let w = eventually("the endpoint answering 410 is disabled", Duration::from_secs(30), || async {
        let w = webhook(&api, "acme", gone_id).await;
        (w["status"] == "disabled").then_some(w)
    })
    .await;
    assert_eq!(w["disabled_reason"], "gone", "{w}");
    let requests = gone.requests();
    let dead_id = d["webhook_id"].as_str().unwrap();
    let w = eventually("the endpoint failing throughout is disabled", Duration::from_secs(30), || async {
        let w = webhook(&api, &neighbour, dead_id).await;
        (w["status"] == "disabled").then_some(w)
    })
    .await;
    assert_eq!(w["disabled_reason"], "failing", "{w}");
    assert!(w["failing_since"].is_string(), "{w}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tally = load.stop().await;
    assert_eq!(gone.requests(), requests, "a disabled endpoint gets no more requests");

    // The receiver is back and its owner enables the endpoint: every human
    // click of acme's is delivered, those decided while it was disabled too.
    gone.not_gone();
    let r = client::http().post(format!("{api}/v1/clients/acme/webhooks/{gone_id}/enable")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let w: Value = r.json().await.unwrap();
    assert_eq!((w["status"].as_str(), w["disabled_reason"].as_str()), (Some("active"), None), "{w}");
    assert_eq!(webhook(&api, "acme", gone_id).await["status"], "active");
    feed::assert_counted_exactly(&s.servers.clickhouse, &tally, Duration::from_secs(60)).await;
    assert_every_human_click_delivered(&s.servers.clickhouse, &gone, "acme", Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sends_a_time_range_again_signed_with_the_rotated_secret() {
    let s = stack().await;
    let _deliverer = services::webhooks(&s.servers, "webhooks", &fast_retries()).await;
    let receiver = Receiver::start().await;
    let created = create_webhook(&s.api.url(), "acme", json!({"url": receiver.url(), "events": ["click.human"]})).await;
    receiver.expect_secret(created["secret"].as_str().unwrap());
    let from = chrono::Utc::now();
    let load =
        Load::start(Feed::like_the_edge(&s.servers.kafka.brokers()), vec![Target::new("acme", "spring", "a-1")], 50);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tally = load.stop().await;
    let to = chrono::Utc::now() + chrono::Duration::seconds(1);
    // Everything sent is counted (so published) before the range is replayed.
    feed::assert_counted_exactly(&s.servers.clickhouse, &tally, Duration::from_secs(60)).await;
    assert_every_human_click_delivered(&s.servers.clickhouse, &receiver, "acme", Duration::from_secs(30)).await;
    let first = receiver.deliveries().len();

    // Rotate: the receiver now knows only the new secret; deliveries carry both.
    let id = created["webhook_id"].as_str().unwrap();
    let api = s.api.url();
    let rotated: Value = client::http()
        .post(format!("{api}/v1/clients/acme/webhooks/{id}/rotate-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    receiver.expect_secret(rotated["secret"].as_str().unwrap());
    let range = [("from", from.to_rfc3339()), ("to", to.to_rfc3339())];
    let r =
        client::http().post(format!("{api}/v1/clients/acme/webhooks/{id}/replay")).query(&range).send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let expected = human_events(&s.servers.clickhouse, "acme").await;
    eventually("the replay delivers the range again", Duration::from_secs(30), || async {
        let again: HashSet<String> = receiver.deliveries()[first..]
            .iter()
            .flat_map(|d| d.events.iter().map(|e| e["data"]["event_id"].as_str().unwrap().to_owned()))
            .collect();
        (again == expected).then_some(())
    })
    .await;
    assert_eq!(receiver.bad_signatures(), 0, "replayed deliveries are signed with the new secret too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliverer_stopped_with_sigterm_lets_its_requests_finish_and_the_next_delivers_the_rest() {
    let s = stack().await;
    let mut deliverer = services::webhooks(&s.servers, "webhooks-1", &fast_retries()).await;
    let receiver = Receiver::start().await;
    // Each answer takes 1.5 s, so requests are in flight when the stop comes.
    receiver.delay(Duration::from_millis(1500));
    let created = create_webhook(&s.api.url(), "acme", json!({"url": receiver.url(), "events": ["click.human"]})).await;
    receiver.expect_secret(created["secret"].as_str().unwrap());
    let load =
        Load::start(Feed::like_the_edge(&s.servers.kafka.brokers()), vec![Target::new("acme", "spring", "a-1")], 50);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tally = load.stop().await;
    feed::assert_counted_exactly(&s.servers.clickhouse, &tally, Duration::from_secs(60)).await;
    eventually("requests in flight", Duration::from_secs(30), || async { (receiver.requests() > 0).then_some(()) })
        .await;
    let exited = tokio::task::block_in_place(|| deliverer.proc.terminate_and_wait(Duration::from_secs(30)));
    assert!(exited, "the deliverer exits cleanly on SIGTERM, within its grace");
    let answered = receiver.deliveries().len();
    assert!(answered > 0, "the requests in flight at the stop were let finish");
    assert_eq!(receiver.requests(), answered as u64, "nothing was cut off mid-request");

    receiver.delay(Duration::ZERO);
    let _deliverer = services::webhooks(&s.servers, "webhooks-2", &fast_retries()).await;
    // The rest (at least once: events answered in one lane past another
    // lane's unanswered one are sent again, with the same webhook-id).
    assert_every_human_click_delivered(&s.servers.clickhouse, &receiver, "acme", Duration::from_secs(60)).await;
    for (event, ids) in receiver.webhook_ids_by_event() {
        assert_eq!(ids.len(), 1, "event {event} came with several webhook-ids: {ids:?}");
    }
}

/// Whether the deliverer says it is the active one (`ricochet_webhooks_active`).
async fn is_active(deliverer: &Service) -> bool {
    let text = client::http().get(format!("{}/metrics", deliverer.url())).send().await.unwrap().text().await.unwrap();
    text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["ricochet_webhooks_active", "1"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_deliverers_one_delivers_and_the_standby_takes_over_when_it_dies() {
    let s = stack().await;
    let mut first = services::webhooks(&s.servers, "webhooks-1", &fast_retries()).await;
    let mut second = services::webhooks(&s.servers, "webhooks-2", &fast_retries()).await;
    let receiver = Receiver::start().await;
    let created = create_webhook(&s.api.url(), "acme", json!({"url": receiver.url(), "events": ["click.human"]})).await;
    receiver.expect_secret(created["secret"].as_str().unwrap());
    let ch = &s.servers.clickhouse;

    // Both run: every event is delivered once, by the active one only.
    let load =
        Load::start(Feed::like_the_edge(&s.servers.kafka.brokers()), vec![Target::new("acme", "spring", "a-1")], 50);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tally = load.stop().await;
    feed::assert_counted_exactly(ch, &tally, Duration::from_secs(60)).await;
    assert_every_human_click_delivered(ch, &receiver, "acme", Duration::from_secs(60)).await;
    let delivered: usize = receiver.deliveries().iter().map(|d| d.events.len()).sum();
    assert_eq!(delivered, receiver.event_ids().len(), "no event delivered twice while two deliverers run");
    let first_active = is_active(&first).await;
    assert_ne!(first_active, is_active(&second).await, "exactly one deliverer is active");

    // The active one dies (kill -9: no goodbye to the group); the standby
    // takes over and delivers what came after.
    let (dead, standby) = if first_active { (&mut first, &second) } else { (&mut second, &first) };
    dead.proc.kill();
    let load =
        Load::start(Feed::like_the_edge(&s.servers.kafka.brokers()), vec![Target::new("acme", "spring", "a-1")], 50);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut all = tally;
    feed::merge(&mut all, load.stop().await);
    feed::assert_counted_exactly(ch, &all, Duration::from_secs(60)).await;
    assert_every_human_click_delivered(ch, &receiver, "acme", Duration::from_secs(60)).await;
    assert!(is_active(standby).await, "the standby is the active one now");
}
