//! Each per-message verdict rule decides as `docs/bot-detection.md` says,
//! against the real broker and ClickHouse: events with their v3 signals are
//! fed straight into the clicks topic, and the verdict is read back from the
//! raw events (`verdict_reason`) and the rollups (`human_clicks`).
//!
//! Every scenario has its own client, so the rules of one cannot see another's
//! clicks (a rule looks at one recipient, or one campaign's network).

use std::collections::HashMap;
use std::time::Duration;

use ricochet_schemas::{ClickEvent, NetworkClass, RecipientId, UaClass};
use ricochet_tests::feed::{Feed, Tally, Target};
use ricochet_tests::servers::{ClickHouse, Servers};
use ricochet_tests::{client, eventually, services};

/// Long enough for a whole scenario, sent in one go, to be read before its
/// first click is decided; short enough to keep the test quick.
const DELAY_MS: u64 = 3_000;

/// A browser on a residential network, from the recipient's token, `secs`
/// after the send.
fn click(client: &str, recipient: &str, link: &str, sent_ms: i64, secs: f64) -> ClickEvent {
    let mut e = Target::new(client, "camp", link).click(sent_ms + (secs * 1000.0) as i64);
    e.recipient_id = Some(RecipientId::parse(recipient).unwrap());
    e.user_agent = Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0".into());
    e.client_ip = Some("198.51.100.0".into());
    e.signals.ua_class = UaClass::Browser;
    e.signals.network_class = NetworkClass::Other;
    e.signals.asn = 64_500;
    e.signals.sent_at_ms = Some(sent_ms);
    e
}

fn from(mut e: ClickEvent, class: NetworkClass, ip: &str, asn: u32) -> ClickEvent {
    e.signals.network_class = class;
    e.client_ip = Some(ip.into());
    e.signals.asn = asn;
    e
}

/// The stored verdict of each event of `client`, once all `n` are stored.
async fn verdicts(ch: &ClickHouse, client: &str, n: usize) -> HashMap<String, String> {
    let sql = format!(
        "SELECT event_id, toString(verdict_reason), is_human FROM click_events FINAL \
         WHERE client_id = '{client}' FORMAT TSV"
    );
    eventually(&format!("{n} verdicts for {client}"), Duration::from_secs(60), || async {
        let rows = ch.query(&sql).await.ok()?;
        let v: HashMap<String, String> = rows
            .lines()
            .map(|l| {
                let mut f = l.split('\t');
                let (id, reason, human) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
                // is_human agrees with the reason, on every row.
                let human_reason = reason == "human" || reason == "allow_listed";
                assert_eq!(human == "1", human_reason, "{l}");
                (id.to_owned(), reason.to_owned())
            })
            .collect();
        (v.len() == n).then_some(v)
    })
    .await
}

/// (human_clicks, bot_clicks) of `client` in the rollups.
async fn rollup(ch: &ClickHouse, client: &str) -> (u64, u64) {
    let rows = ch
        .query(&format!(
            "SELECT sum(human_clicks), sum(bot_clicks) FROM click_rollup_minute WHERE client_id = '{client}' FORMAT TSV"
        ))
        .await
        .unwrap();
    let (h, b) = rows.trim().split_once('\t').unwrap();
    (h.parse().unwrap(), b.parse().unwrap())
}

/// Sends the scenario and checks each event's stored reason, and the rollups.
async fn check(ch: &ClickHouse, feed: &Feed, client: &str, expected: Vec<(ClickEvent, &str)>) {
    let events: Vec<ClickEvent> = expected.iter().map(|(e, _)| e.clone()).collect();
    feed.send_all(&events, &mut Tally::default()).await;
    let stored = verdicts(ch, client, events.len()).await;
    for (i, (e, want)) in expected.iter().enumerate() {
        let got = &stored[&e.event_id.to_string()];
        assert_eq!(
            got, want,
            "{client}: event {i} ({} at {} ms) decided {got}, not {want}",
            e.link_id, e.event_time_ms
        );
    }
    let humans = expected.iter().filter(|(_, r)| *r == "human" || *r == "allow_listed").count() as u64;
    // The rollups are written in the same flush as the raw events' position.
    let counted = eventually("the rollups", Duration::from_secs(30), || async {
        let r = rollup(ch, client).await;
        (r.0 + r.1 == expected.len() as u64).then_some(r)
    })
    .await;
    assert_eq!(counted, (humans, expected.len() as u64 - humans), "{client}: (human, bot) clicks in the rollups");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_per_message_rule_decides_as_documented() {
    let servers = Servers::start().await;
    let _aggregator =
        services::aggregator(&servers, "aggregator", &[("RICOCHET_VERDICT_DELAY_MS", DELAY_MS.to_string())]).await;
    let ch = &servers.clickhouse;
    let feed = Feed::new(&servers.kafka.brokers());
    // Sent a quarter of an hour ago, so every click of a scenario is in the past.
    let sent = client::now_millis() - 15 * 60_000;

    // A burst across links: a browser-looking scanner fetching every link of
    // the message within a second, 43 s after the send.
    let c = "burst";
    let burst = ["l1", "l2", "l3", "l4"]
        .iter()
        .enumerate()
        .map(|(i, l)| (click(c, "r1", l, sent, 43.0 + i as f64 * 0.2), "burst"));
    let mut scenario: Vec<_> = burst.collect();
    // Another recipient clicking two links half a minute apart: a person.
    scenario.push((click(c, "r2", "l1", sent, 200.0), "human"));
    scenario.push((click(c, "r2", "l2", sent, 230.0), "human"));
    check(ch, &feed, c, scenario).await;

    // A person on a cloud network (a VPN) clicking one link, minutes after
    // the send; and one clicking within the first minute from home: time
    // alone does not convict.
    let c = "cloud";
    check(
        ch,
        &feed,
        c,
        vec![
            (from(click(c, "r1", "l1", sent, 190.0), NetworkClass::Cloud, "203.0.113.0", 16_509), "human"),
            (click(c, "r2", "l1", sent, 25.0), "human"),
        ],
    )
    .await;

    // A honeypot hit voids the recipient's clicks around it: one just before
    // (still undecided), the hit, one 20 s after. Ten minutes later, from the
    // recipient's own network, the click counts; another recipient is untouched.
    let c = "honeypot";
    let mut trap = click(c, "r1", "trap", sent, 44.0);
    trap.signals.honeypot = true;
    check(
        ch,
        &feed,
        c,
        vec![
            (click(c, "r1", "l1", sent, 43.5), "honeypot"),
            (trap, "honeypot"),
            (click(c, "r1", "l2", sent, 64.0), "honeypot"),
            (from(click(c, "r1", "l2", sent, 640.0), NetworkClass::Other, "192.0.2.0", 64_999), "human"),
            (click(c, "r2", "l1", sent, 50.0), "human"),
        ],
    )
    .await;

    // A person behind a corporate scanner: the gateway sweeps every link from
    // its vendor's cloud 40 s after the send, the person clicks one of them
    // three minutes later from the office, and the gateway re-checks a link
    // ten minutes after its sweep.
    let c = "aftersweep";
    let gateway =
        |link: &str, secs: f64| from(click(c, "r1", link, sent, secs), NetworkClass::Cloud, "52.100.10.0", 8_075);
    check(
        ch,
        &feed,
        c,
        vec![
            (gateway("l1", 40.0), "burst"),
            (gateway("l2", 40.3), "burst"),
            (gateway("l3", 40.6), "burst"),
            (from(click(c, "r1", "l2", sent, 220.0), NetworkClass::Other, "192.0.2.0", 64_999), "human"),
            (gateway("l2", 640.0), "rescan"),
        ],
    )
    .await;

    // The gateway re-checks a link thirteen minutes after its sweep from a
    // cloud sandbox (another network than the sweep's), with a browser's
    // agent but none of its headers: a rescan. The person behind the
    // gateway, on a cloud VPN with a real browser's headers: counted.
    let c = "resweep";
    let vendor =
        |link: &str, secs: f64| from(click(c, "r1", link, sent, secs), NetworkClass::Scanner, "148.163.0.0", 26_211);
    let person = from(click(c, "r1", "l1", sent, 300.0), NetworkClass::Cloud, "203.0.113.0", 16_509);
    let mut sandbox = from(click(c, "r1", "l1", sent, 840.0), NetworkClass::Cloud, "3.81.71.0", 14_618);
    sandbox.signals.has_accept_language = false;
    check(
        ch,
        &feed,
        c,
        vec![
            (vendor("l1", 40.0), "scanner_network"),
            (vendor("l2", 40.2), "scanner_network"),
            (person, "human"),
            (sandbox, "rescan"),
        ],
    )
    .await;

    // A scanner's HEAD then GET of one link with the same agent: both the
    // scanner's. Outlook's Office check (HEAD, its own agent) then the
    // reader's browser: the GET is the person's.
    let c = "headpair";
    let with = |mut e: ClickEvent, method: &str, agent: &str| {
        e.http_method = method.into();
        e.user_agent = Some(agent.into());
        e
    };
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0";
    check(
        ch,
        &feed,
        c,
        vec![
            (with(click(c, "r1", "l1", sent, 600.0), "HEAD", chrome), "head"),
            (with(click(c, "r1", "l1", sent, 600.4), "GET", chrome), "head"),
            (with(click(c, "r2", "l1", sent, 600.0), "HEAD", "Microsoft Office Existence Discovery"), "head"),
            (with(click(c, "r2", "l1", sent, 600.4), "GET", chrome), "human"),
        ],
    )
    .await;

    // One network clicking the same link for six recipients within a second
    // is a fan-out; the same from a network the client allow-listed is not.
    let c = "fanout";
    let mut scenario: Vec<_> = (0..6)
        .map(|i| {
            (
                from(
                    click(c, &format!("r{i}"), "l1", sent, 45.0 + i as f64 * 0.1),
                    NetworkClass::Cloud,
                    "203.0.113.0",
                    16_509,
                ),
                "network_fanout",
            )
        })
        .collect();
    scenario.extend((0..6).map(|i| {
        let mut e = from(
            click(c, &format!("o{i}"), "l1", sent, 300.0 + i as f64 * 0.1),
            NetworkClass::Cloud,
            "192.0.2.0",
            64_999,
        );
        e.signals.network_allow_listed = true;
        (e, "allow_listed")
    }));
    check(ch, &feed, c, scenario).await;
}

/// Through the real edge: `curl` on a tracking link is redirected, and counted
/// as a machine (`http_client`), in the raw events and in the stats API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_curl_click_through_the_edge_is_not_human() {
    let servers = Servers::start().await;
    let _aggregator = services::aggregator(&servers, "aggregator", &[]).await;
    let api = services::api(&servers, "api", &[]).await;
    let edge = services::redirect(&servers, "edge", &[]).await;
    let link = client::create_link(&api.url(), "acme", "curl", "https://acme.example/").await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let url = format!("{}/{}", edge.url(), link.code);
    eventually("the edge to redirect curl", Duration::from_secs(30), || async {
        let r = http.get(&url).header("user-agent", "curl/8.5.0").header("accept", "*/*").send().await.ok()?;
        (r.status() == 302).then_some(())
    })
    .await;
    let ch = &servers.clickhouse;
    let stored = eventually("curl's click to be stored", Duration::from_secs(60), || async {
        let rows = ch
            .query(&format!(
                "SELECT DISTINCT toString(ua_class), is_human, toString(verdict_reason) FROM click_events \
                 WHERE link_id = '{}' FORMAT TSV",
                link.link_id
            ))
            .await
            .ok()?;
        (!rows.trim().is_empty()).then(|| rows.trim().to_owned())
    })
    .await;
    assert_eq!(stored, "http_client\t0\thttp_client", "every request curl made is a machine's");
    // The raw events are inserted before the flush's rollups and positions
    // (sink.rs), so the stats may trail the raw row by one insert.
    let from = client::now_secs() - 3600;
    let stats = eventually("curl's click in the stats", Duration::from_secs(30), || async {
        let stats = client::link_stats(&api.url(), &link.link_id, from, client::now_secs() + 60).await;
        (client::total_clicks(&stats) >= 1).then_some(stats)
    })
    .await;
    assert_eq!(stats["totals"]["human_clicks"], 0);
    assert!(stats["totals"]["bot_by_reason"]["http_client"].as_u64().unwrap() >= 1, "{stats}");
}

/// An edge whose clock is a day ahead does not run a partition's verdict
/// clock ahead (issue 18): its event counts as arriving now for the clock, so
/// a click already held keeps waiting for its context and a sweep arriving
/// after the bad event is still judged a sweep. Before clamping, the future
/// event released the sweep's first click at once, alone, as human.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_dated_event_does_not_release_held_clicks_early() {
    // Longer than the documented skew (5 s), as the 10 s default is.
    const DELAY_MS: u64 = 8_000;
    let servers = Servers::start().await;
    let _aggregator =
        services::aggregator(&servers, "aggregator", &[("RICOCHET_VERDICT_DELAY_MS", DELAY_MS.to_string())]).await;
    let ch = &servers.clickhouse;
    let feed = Feed::new(&servers.kafka.brokers());
    let c = "skewed";
    // Sent 43 s ago: the sweep's clicks are current.
    let sent = client::now_millis() - 43_000;
    let first = click(c, "r1", "l1", sent, 43.0);
    // Another recipient's click from an edge a day ahead, same partition (same client).
    let future = click(c, "r9", "l1", sent, 43.0 + 86_400.0);
    feed.send_all(&[first.clone(), future.clone()], &mut Tally::default()).await;
    // The rest of the sweep arrives a moment later, as it would.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let rest: Vec<ClickEvent> = ["l2", "l3", "l4"].iter().map(|l| click(c, "r1", l, sent, 43.3)).collect();
    feed.send_all(&rest, &mut Tally::default()).await;

    let stored = verdicts(ch, c, 5).await;
    for e in std::iter::once(&first).chain(&rest) {
        assert_eq!(stored[&e.event_id.to_string()], "burst", "the sweep's click on {}", e.link_id);
    }
    assert_eq!(stored[&future.event_id.to_string()], "human", "the future-dated click itself");
}
