//! The breakdowns' dimensions of each raw event (issue 16, "Dimensions,
//! computed once"): the aggregator stores device class, OS and browser
//! families, mail client, referrer domain and the destination's UTM tags as
//! columns of `click_events`, through the erasure filter's input table, on the
//! real servers.

use std::time::Duration;

use ricochet_schemas::EventType;
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

/// A request (user agent, referer, destination, an open?) and the columns
/// expected: device, os, browser, mail_client, referrer_domain, utm_source,
/// utm_medium, utm_campaign.
type Case = (&'static str, Option<&'static str>, &'static str, bool, [&'static str; 8]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_raw_event_carries_its_dimensions() {
    let servers = Servers::start().await;
    let _aggregator = services::aggregator(&servers, "aggregator", &[]).await;
    let target = Target::new("acme", "bf", "dims-link");
    let now = client::now_millis() - 10_000;
    let cases: [Case; 5] = [
        (
            IPHONE_SAFARI,
            Some("https://mail.google.com/"),
            "https://acme.example/p",
            false,
            ["mobile", "iOS", "Mobile Safari", "gmail", "mail.google.com", "", "", ""],
        ),
        (
            WINDOWS_CHROME,
            Some("https://www.news.example/today"),
            "https://acme.example/sale?utm_source=newsletter&utm_medium=email&utm_campaign=Black%20Friday",
            false,
            ["desktop", "Windows", "Chrome", "other", "news.example", "newsletter", "email", "Black Friday"],
        ),
        (GOOGLEBOT, None, "https://acme.example/", false, ["bot", "Other", "Googlebot", "other", "", "", "", ""]),
        (
            GMAIL_PROXY,
            None,
            "https://acme.example/",
            true,
            ["other", "Other", "GmailImageProxy", "gmail", "", "", "", ""],
        ),
        (
            OUTLOOK_DESKTOP,
            None,
            "https://acme.example/",
            true,
            ["desktop", "Windows", "Outlook", "outlook", "", "", "", ""],
        ),
    ];
    let mut events = Vec::new();
    for (i, (ua, referer, destination, open, _)) in cases.iter().enumerate() {
        let mut e = target.click(now + i as i64);
        e.user_agent = Some((*ua).into());
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
                "SELECT device, os, browser, mail_client, referrer_domain, utm_source, utm_medium, utm_campaign \
                 FROM click_events WHERE event_id = '{}' FORMAT TSV",
                event.event_id
            ))
            .await
            .unwrap();
        let got: Vec<&str> = row.trim_end_matches('\n').split('\t').collect();
        assert_eq!(got, expected, "{ua}");
    }
}
