//! The breakdowns' dimensions of each raw event (issue 16, "Dimensions,
//! computed once"): the aggregator stores country, device class, OS and
//! browser families, mail client, referrer domain and the destination's UTM
//! tags as columns of `click_events`, through the erasure filter's input
//! table, on the real servers; and each open's verdict: Apple's privacy proxy
//! is a machine, Gmail's image proxy and Outlook on the desktop are people.

use std::time::Duration;

use ricochet_schemas::{EventType, UaClass};
use ricochet_tests::client;
use ricochet_tests::feed::{Feed, Tally, Target};
use ricochet_tests::servers::Servers;
use ricochet_tests::{eventually, services};

const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const WINDOWS_CHROME: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const GMAIL_PROXY: &str = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
const OUTLOOK_DESKTOP: &str = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)";
/// Apple Mail Privacy Protection's proxy (mail-clients.txt, [mpp]).
const APPLE_PROXY: &str = "Mozilla/5.0";
/// Apple Mail's own WebKit, with MPP off, or fetched from Apple's network.
const APPLE_MAIL: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)";

/// A request (user agent, referer, destination, an open?, anonymized
/// address, ASN) and the columns expected: device, os, browser, mail_client,
/// referrer_domain, utm_source, utm_medium, utm_campaign, country,
/// verdict_reason.
type Case = (&'static str, Option<&'static str>, &'static str, bool, &'static str, u32, [&'static str; 10]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_raw_event_carries_its_dimensions() {
    let servers = Servers::start().await;
    let _aggregator = services::aggregator(&servers, "aggregator", &[]).await;
    let target = Target::new("acme", "bf", "dims-link");
    let now = client::now_millis() - 10_000;
    let cases: [Case; 7] = [
        (
            IPHONE_SAFARI,
            Some("https://mail.google.com/"),
            "https://acme.example/p",
            false,
            "81.2.69.0",
            5089,
            ["mobile", "iOS", "Mobile Safari", "gmail", "mail.google.com", "", "", "", "GB", "human"],
        ),
        (
            WINDOWS_CHROME,
            Some("https://www.news.example/today"),
            "https://acme.example/sale?utm_source=newsletter&utm_medium=email&utm_campaign=Black%20Friday",
            false,
            "2a02:8108:1100::",
            3209,
            [
                "desktop",
                "Windows",
                "Chrome",
                "other",
                "news.example",
                "newsletter",
                "email",
                "Black Friday",
                "DE",
                "human",
            ],
        ),
        (
            GOOGLEBOT,
            None,
            "https://acme.example/",
            false,
            "10.1.2.0",
            0,
            ["bot", "Other", "Googlebot", "other", "", "", "", "", "", "bot_user_agent"],
        ),
        (
            GMAIL_PROXY,
            None,
            "https://acme.example/",
            true,
            "66.249.88.0",
            15169,
            ["other", "Other", "GmailImageProxy", "gmail", "", "", "", "", "US", "human"],
        ),
        (
            OUTLOOK_DESKTOP,
            None,
            "https://acme.example/",
            true,
            "81.2.69.0",
            5089,
            ["desktop", "Windows", "Outlook", "outlook", "", "", "", "", "GB", "human"],
        ),
        (
            APPLE_PROXY,
            None,
            "https://acme.example/",
            true,
            "17.58.1.0",
            36183,
            ["other", "Other", "Other", "apple_mail", "", "", "", "", "US", "apple_privacy"],
        ),
        (
            APPLE_MAIL,
            None,
            "https://acme.example/",
            true,
            "17.58.0.0",
            714,
            ["desktop", "Mac OS X", "Apple Mail", "apple_mail", "", "", "", "", "US", "apple_privacy"],
        ),
    ];
    let mut events = Vec::new();
    for (i, (ua, referer, destination, open, ip, asn, _)) in cases.iter().enumerate() {
        let mut e = target.click(now + i as i64);
        e.client_ip = Some((*ip).into());
        e.signals.asn = *asn;
        e.user_agent = Some((*ua).into());
        if *ua == GOOGLEBOT {
            // What the edge's classifier says of it (the feed skips the edge).
            e.signals.ua_class = UaClass::Bot;
        }
        e.referer = referer.map(String::from);
        e.destination_url = (*destination).into();
        if *open {
            e.event_type = EventType::Open;
        }
        events.push(e);
    }
    let mut tally = Tally::default();
    Feed::new(&servers.kafka.brokers()).send_all(&events, &mut tally).await;
    eventually("events stored", Duration::from_secs(60), || async {
        let n = servers.clickhouse.number("SELECT count() FROM click_events WHERE link_id = 'dims-link'").await;
        (n == events.len() as u64).then_some(())
    })
    .await;
    for (event, (ua, .., expected)) in events.iter().zip(&cases) {
        let row = servers
            .clickhouse
            .query(&format!(
                "SELECT device, os, browser, mail_client, referrer_domain, utm_source, utm_medium, utm_campaign, \
                 country, verdict_reason FROM click_events WHERE event_id = '{}' FORMAT TSV",
                event.event_id
            ))
            .await
            .unwrap();
        let got: Vec<&str> = row.trim_end_matches('\n').split('\t').collect();
        assert_eq!(got, expected, "{ua}");
    }
    // The link's rollups split the opens by verdict: Gmail's proxy and Outlook
    // are people, both Apple fetches Apple's privacy proxy.
    // (Raw events are written before the rollups of the same flush.)
    let opens = eventually("the rollups of the flush", Duration::from_secs(30), || async {
        let q = "SELECT sum(opens), sum(human_opens), sum(machine_opens), sum(open_apple_privacy) FROM click_rollups \
                 WHERE grain = 3600 AND dimension = '' AND link_id = 'dims-link' FORMAT TSV";
        let got = servers.clickhouse.query(q).await.unwrap();
        (!got.starts_with("0\t")).then_some(got)
    })
    .await;
    assert_eq!(opens, "4\t2\t2\t2\n", "opens, human, machine, apple_privacy");
    let by_country = servers
        .clickhouse
        .query(
            "SELECT value, sum(clicks), sum(opens) FROM click_breakdowns WHERE grain = 86400 \
             AND dimension = 'country' AND link_id = 'dims-link' GROUP BY value ORDER BY value FORMAT TSV",
        )
        .await
        .unwrap();
    assert_eq!(by_country, "\t1\t0\nDE\t1\t0\nGB\t1\t1\nUS\t0\t3\n", "clicks and opens by country");
    // The campaign's rows count the same (its only link here).
    let campaign = servers
        .clickhouse
        .query(
            "SELECT value, sum(clicks), sum(opens) FROM click_breakdowns WHERE grain = 3600 \
             AND dimension = 'country' AND link_id = '' AND campaign_id IN \
             (SELECT campaign_id FROM click_events WHERE link_id = 'dims-link') GROUP BY value ORDER BY value FORMAT TSV",
        )
        .await
        .unwrap();
    assert_eq!(campaign, by_country, "the campaign's breakdown rows");
}
