//! Breakdowns and opens through the API (issue 16, "Done when"): known clicks
//! and opens go through the real edge, from known addresses (a trusted proxy's
//! `X-Forwarded-For`), user agents, referers and links with and without UTM
//! tags; the aggregator stores them; then every breakdown of the campaign, at
//! the day and hour rollups and from the raw events, a filter, the link's and
//! the client's breakdowns, the CSV and the stats' open fields are checked
//! against what was sent.
//!
//! The expected numbers are computed from the requests: each request states
//! what it is (country, device, mail client, referrer, UTM tags, human or
//! machine), and the stored events are first checked to say the same. The OS
//! and browser families are uap-core's names, read back from the stored
//! events rather than restated here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ricochet_registry::TokenKeys;
use ricochet_schemas::{MachineOpen, Reason, RecipientId};
use ricochet_tests::client::{self, http, Link};
use ricochet_tests::eventually;
use ricochet_tests::servers::Servers;
use ricochet_tests::services::{self, Service};
use ricochet_warehouse::tables::week_floor;
use serde_json::Value;

const TOKEN_KEYS: &str = "k1:1111111111111111111111111111111111111111111111111111111111111111";
const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const WINDOWS_CHROME: &str = client::BROWSER_UA;
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const CURL: &str = "curl/8.5.0";
/// Apple Mail Privacy Protection's proxy.
const APPLE_PROXY: &str = "Mozilla/5.0";
const GMAIL_PROXY: &str = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
/// Outlook for Windows loading a message's images (its Trident web view).
const OUTLOOK_DESKTOP: &str = "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; .NET4.0E; Microsoft Outlook 16.0.5266; ms-office; MSOffice 16)";
/// Outlook for Windows (Microsoft 365 builds) fetching the images itself: the
/// agent the edge also knows as Office's link preview, a machine on a click.
const OUTLOOK_OFFICE: &str = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)";

/// Every dimension, as the aggregator writes them.
const DIMENSIONS: [&str; 9] = ricochet_warehouse::tables::BREAKDOWN_DIMENSIONS;
/// The dimensions each request states; `os` and `browser` are read back.
const STATED: [&str; 7] =
    ["country", "device", "mail_client", "referrer_domain", "utm_source", "utm_medium", "utm_campaign"];

/// One request to the edge and what it is.
struct Request {
    link: usize,
    recipient: Option<&'static str>,
    open: bool,
    ip: &'static str,
    ua: &'static str,
    referer: Option<&'static str>,
    human: bool,
    country: &'static str,
    device: &'static str,
    mail_client: &'static str,
    referrer_domain: &'static str,
}

/// The links' destinations and their UTM tags (source, medium, campaign).
const LINKS: [(&str, [&str; 3]); 2] = [
    (
        "https://acme.example/sale?utm_source=newsletter&utm_medium=email&utm_campaign=Winter",
        ["newsletter", "email", "Winter"],
    ),
    ("https://acme.example/plain", ["", "", ""]),
];

#[rustfmt::skip]
fn requests() -> Vec<Request> {
    let r = |link, recipient, open, ip, ua, referer, human, country, device, mail_client, referrer_domain| Request {
        link, recipient, open, ip, ua, referer, human, country, device, mail_client, referrer_domain,
    };
    vec![
        // Opens first: Apple's privacy proxy (a machine), Outlook desktop and
        // Gmail's proxy (people). Each names its recipient's mail client, which
        // that recipient's clicks below take when no webmail Referer names one.
        r(0, Some("r1@x.example"), true, "17.58.0.1", APPLE_PROXY, None, false, "US", "", "apple_mail", ""),
        r(0, Some("r2@x.example"), true, "79.192.1.1", OUTLOOK_DESKTOP, None, true, "DE", "desktop", "outlook", ""),
        r(1, Some("r3@x.example"), true, "66.249.80.1", GMAIL_PROXY, None, true, "US", "other", "gmail", ""),
        r(1, Some("r5@x.example"), true, "90.0.0.1", OUTLOOK_OFFICE, None, true, "FR", "desktop", "outlook", ""),
        // Human clicks: Germany, France, and a private address (no country).
        // A webmail Referer names the client itself (r1's first click); r4 never opened.
        r(0, Some("r1@x.example"), false, "79.192.0.1", IPHONE_SAFARI, Some("https://mail.google.com/"), true, "DE", "mobile", "gmail", "mail.google.com"),
        r(0, Some("r2@x.example"), false, "79.192.1.1", WINDOWS_CHROME, Some("https://www.news.example/today"), true, "DE", "desktop", "outlook", "news.example"),
        r(1, Some("r3@x.example"), false, "90.0.0.1", WINDOWS_CHROME, None, true, "FR", "desktop", "gmail", ""),
        r(1, Some("r1@x.example"), false, "79.192.0.1", IPHONE_SAFARI, None, true, "DE", "mobile", "apple_mail", ""),
        r(0, Some("r4@x.example"), false, "192.168.1.10", WINDOWS_CHROME, None, true, "", "desktop", "other", ""),
        // Bot clicks: a crawler in the US, curl from Germany.
        r(0, None, false, "8.8.8.8", GOOGLEBOT, None, false, "US", "bot", "other", ""),
        r(1, None, false, "79.192.2.1", CURL, None, false, "DE", "", "other", ""),
    ]
}

/// A stored event: whether it is an open and human, its recipient, its dimensions.
#[derive(Debug, Clone)]
struct Stored {
    link: usize,
    /// Its event time, Unix seconds.
    time: i64,
    open: bool,
    human: bool,
    /// A machine's open: why it was judged a machine's.
    machine_open: Option<MachineOpen>,
    recipient: String,
    dims: BTreeMap<String, String>,
}

/// The counts of one value, as the API answers them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    human_clicks: u64,
    bot_clicks: u64,
    clicks: u64,
    unique_human_recipients: u64,
    human_opens: u64,
    machine_opens: u64,
    /// `machine_opens_by_reason`: Apple's privacy proxies, scanners, prefetchers.
    machine_opens_by_reason: [u64; 3],
    unique_human_openers: u64,
}

impl Counts {
    fn of(v: &Value) -> Counts {
        let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
        Counts {
            human_clicks: n("human_clicks"),
            bot_clicks: n("bot_clicks"),
            clicks: n("clicks"),
            unique_human_recipients: n("unique_human_recipients"),
            human_opens: n("human_opens"),
            machine_opens: n("machine_opens"),
            machine_opens_by_reason: MachineOpen::ALL
                .map(|m| v["machine_opens_by_reason"][m.as_str()].as_u64().unwrap_or_else(|| panic!("{m:?} in {v}"))),
            unique_human_openers: n("unique_human_openers"),
        }
    }

    /// Adds `other`'s counts, all but the unique recipients and openers.
    fn add(&mut self, other: &Counts) {
        self.human_clicks += other.human_clicks;
        self.bot_clicks += other.bot_clicks;
        self.clicks += other.clicks;
        self.human_opens += other.human_opens;
        self.machine_opens += other.machine_opens;
        for (mine, theirs) in self.machine_opens_by_reason.iter_mut().zip(other.machine_opens_by_reason) {
            *mine += theirs;
        }
    }
}

/// The recipients among `events` with a human click (`open` false) or a
/// human open (`open` true).
fn people<'a>(events: &[&'a Stored], open: bool) -> BTreeSet<&'a str> {
    events
        .iter()
        .filter(|e| e.open == open && e.human && !e.recipient.is_empty())
        .map(|e| e.recipient.as_str())
        .collect()
}

fn shown(v: &str) -> String {
    if v.is_empty() {
        "unknown".into()
    } else {
        v.into()
    }
}

/// What a breakdown of `events` by `by` must answer, value by value.
fn expected(events: &[&Stored], by: &str, human_only: bool) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for e in events {
        let c = out.entry(shown(&e.dims[by])).or_default();
        match (e.open, e.human) {
            (false, true) => {
                c.human_clicks += 1;
                c.clicks += 1;
            }
            (false, false) => {
                c.bot_clicks += 1;
                c.clicks += 1;
            }
            (true, true) => c.human_opens += 1,
            (true, false) => {
                c.machine_opens += 1;
                c.machine_opens_by_reason[e.machine_open.expect("a machine's open has a reason") as usize] += 1;
            }
        }
    }
    for (value, c) in &mut out {
        let of_value: Vec<&Stored> = events.iter().copied().filter(|e| shown(&e.dims[by]) == *value).collect();
        c.unique_human_recipients = people(&of_value, false).len() as u64;
        c.unique_human_openers = people(&of_value, true).len() as u64;
        if human_only {
            c.clicks = c.human_clicks;
            c.bot_clicks = 0;
            c.machine_opens = 0;
            c.machine_opens_by_reason = [0; 3];
        }
    }
    if human_only {
        out.retain(|_, c| c.human_clicks > 0 || c.human_opens > 0);
    }
    out
}

/// A new key of `client` with one scope.
/// Writes breakdown rows straight into `click_breakdowns`, past the fence, as
/// an old aggregator or retention would have left them: each row is the
/// values of (grain, client, campaign, link, dimension, value, bucket,
/// topic, partition, clicks, human clicks, bot clicks, opens, human opens,
/// machine opens, the three open reasons, position delta).
async fn insert_breakdown_rows(servers: &Servers, rows: &[String]) {
    servers
        .clickhouse
        .query(&format!(
            "INSERT INTO click_breakdowns (grain, client_id, campaign_id, link_id, dimension, value, bucket_start, \
             source_topic, source_partition, clicks, human_clicks, bot_clicks, opens, human_opens, machine_opens, \
             open_apple_privacy, open_scanner, open_prefetch, position_delta) VALUES {}",
            rows.join(", ")
        ))
        .await
        .unwrap();
}

async fn key(base: &str, client: &str, scope: &str) -> String {
    let r = http()
        .post(format!("{base}/v1/clients/{client}/api-keys"))
        .json(&serde_json::json!({"scopes": [scope]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned()
}

async fn get(url: &str) -> Value {
    let r = http().get(url).send().await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

/// The rows of a breakdown answer by value, checking they come ranked.
fn rows(answer: &Value) -> BTreeMap<String, Counts> {
    let rows = answer["rows"].as_array().unwrap_or_else(|| panic!("rows in {answer}"));
    let keys: Vec<(u64, u64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["human_clicks"].as_u64().unwrap(),
                r["clicks"].as_u64().unwrap(),
                r["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut ranked = keys.clone();
    ranked.sort_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)).then_with(|| a.2.cmp(&b.2)));
    assert_eq!(keys, ranked, "rows by human clicks, then clicks, then value: {answer}");
    rows.iter().map(|r| (r["value"].as_str().unwrap().to_owned(), Counts::of(r))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn breakdowns_count_each_value_exactly_human_and_machine() {
    let servers = Servers::start().await;
    let env = [
        ("RICOCHET_TOKEN_KEYS", TOKEN_KEYS.to_owned()),
        ("RICOCHET_TRUSTED_PROXIES", "127.0.0.0/8".to_owned()),
        ("RICOCHET_FLUSH_INTERVAL_MS", "200".to_owned()),
    ];
    let _aggregator = services::aggregator(&servers, "aggregator", &env).await;
    let api = services::api(&servers, "api", &env).await;
    let base = api.url();
    let mut links: Vec<Link> = Vec::new();
    for (destination, _) in LINKS {
        links.push(client::create_link(&base, "acme", "bd", destination).await);
    }
    let edge: Service = services::redirect(&servers, "edge", &env).await;

    let keys = TokenKeys::parse(TOKEN_KEYS).unwrap();
    let requests = requests();
    for (i, q) in requests.iter().enumerate() {
        let code = &links[q.link].code;
        let token = q.recipient.map(|r| keys.mint("acme", code, &RecipientId::parse(r).unwrap()));
        let path = match (q.open, &token) {
            (false, None) => format!("/{code}"),
            (false, Some(t)) => format!("/{code}/{t}"),
            (true, None) => format!("/o/{code}.gif"),
            (true, Some(t)) => format!("/o/{code}/{t}.gif"),
        };
        let mut request = http()
            .get(format!("{}{path}", edge.url()))
            .header("x-forwarded-for", q.ip)
            .header("user-agent", q.ua)
            .header("accept-language", "de-DE,de;q=0.9");
        if let Some(referer) = q.referer {
            request = request.header("referer", referer);
        }
        let r = request.send().await.unwrap();
        assert!(r.status().is_success() || r.status() == 302, "request {i} {path}: {}", r.status());
        // Apart in time: no two requests of a recipient make a burst.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (clicks, opens) =
        (requests.iter().filter(|q| !q.open).count() as u64, requests.iter().filter(|q| q.open).count() as u64);

    let now = client::now_secs();
    let day = now - now.rem_euclid(86_400);
    let hour = now - now.rem_euclid(3_600);
    let stats_url =
        format!("{base}/v1/clients/acme/campaigns/bd/stats?from={}&to={}&granularity=hour", hour - 3_600, hour + 7_200);
    let stats = eventually("every click and open counted", Duration::from_secs(60), || {
        let url = stats_url.clone();
        async move {
            let v = get(&url).await;
            (v["totals"]["clicks"] == clicks && v["totals"]["opens"] == opens).then_some(v)
        }
    })
    .await;

    // What was stored, and that it is what was sent.
    let body = servers
        .clickhouse
        .query(&format!(
            "SELECT link_id, toString(event_type) AS event_type, toUInt32(event_time) AS time, is_human, \
             toString(verdict_reason) AS reason, recipient_id, user_agent, {} \
             FROM click_events WHERE campaign_id = 'bd' FORMAT JSONEachRow",
            DIMENSIONS.join(", ")
        ))
        .await
        .unwrap();
    let mut stored = Vec::new();
    for line in body.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let link = links.iter().position(|l| l.link_id == row["link_id"]).unwrap();
        let open = row["event_type"] == "open";
        let recipient = row["recipient_id"].as_str().unwrap().to_owned();
        let ua = row["user_agent"].as_str().unwrap();
        let sent = requests
            .iter()
            .find(|q| q.link == link && q.open == open && q.ua == ua && q.recipient.unwrap_or("") == recipient)
            .unwrap_or_else(|| panic!("a stored event nobody sent: {row}"));
        let dims: BTreeMap<String, String> =
            DIMENSIONS.iter().map(|d| (d.to_string(), row[*d].as_str().unwrap().to_owned())).collect();
        let utm = LINKS[link].1;
        let stated = [sent.country, sent.device, sent.mail_client, sent.referrer_domain, utm[0], utm[1], utm[2]];
        for (name, want) in STATED.iter().zip(stated) {
            // A device of "" means: not stated (uap-core decides, e.g. for curl or a bare Mozilla/5.0).
            if *name == "device" && want.is_empty() {
                continue;
            }
            assert_eq!(dims[*name], want, "{name} of {ua} from {}: {row}", sent.ip);
        }
        let human = row["is_human"] == 1;
        assert_eq!(human, sent.human, "verdict on {ua} from {} (open: {open}): {row}", sent.ip);
        let time = row["time"].as_i64().unwrap();
        let reason = Reason::parse(row["reason"].as_str().unwrap()).unwrap_or_else(|| panic!("a reason: {row}"));
        let machine_open = reason.machine_open().filter(|_| open);
        assert_eq!(machine_open.is_some(), open && !human, "{row}");
        stored.push(Stored { link, time, open, human, machine_open, recipient, dims });
    }
    assert_eq!(stored.len(), requests.len(), "each request stored once");
    let all: Vec<&Stored> = stored.iter().collect();

    // The stats' open fields: the Apple proxy's open is a machine's, Outlook's and Gmail's are people's.
    let t = &stats["totals"];
    let human_opens = stored.iter().filter(|e| e.open && e.human).count() as u64;
    assert_eq!(t["human_opens"], human_opens, "{t}");
    assert_eq!(t["machine_opens"], opens - human_opens, "{t}");
    assert_eq!(t["machine_opens_by_reason"]["apple_privacy"], 1, "{t}");
    assert_eq!(t["machine_opens_by_reason"]["scanner"], 0, "{t}");
    let openers: BTreeSet<&str> = stored.iter().filter(|e| e.open && e.human).map(|e| e.recipient.as_str()).collect();
    assert_eq!(t["unique_human_openers"], openers.len() as u64, "{t}");
    let clickers: BTreeSet<&str> =
        stored.iter().filter(|e| !e.open && e.human && !e.recipient.is_empty()).map(|e| e.recipient.as_str()).collect();
    assert_eq!(t["unique_human_recipients"], clickers.len() as u64, "opens are not clicks: {t}");
    let series_opens: u64 =
        stats["series"].as_array().unwrap().iter().map(|p| p["human_opens"].as_u64().unwrap()).sum();
    assert_eq!(series_opens, human_opens);

    // Every dimension, from the day rollups, the hour rollups and the raw events, human and bot.
    let campaign = format!("{base}/v1/clients/acme/campaigns/bd/breakdown");
    let monday = week_floor(now as u32) as i64;
    let weeks = (monday - 7 * 86_400, monday + 14 * 86_400);
    let ranges = [
        (weeks.0, weeks.1, "rollups"),
        (day - 86_400, day + 2 * 86_400, "rollups"),
        (hour - 3_600, hour + 7_200, "rollups"),
        (now - 3_599, now + 3_601, "events"),
        // Ragged ends (`api/src/tiling.rs`): from 01:00 yesterday, its 23
        // hours; to this hour, from 02:00 on, today less the hours from this
        // one, which hold every event just sent (none of them in the range).
        (day - 86_400 + 3_600, hour + 7_200, "rollups"),
        (day - 86_400 + 3_600, hour, "rollups"),
    ];
    for by in DIMENSIONS {
        for (from, to, source) in ranges {
            let url = format!("{campaign}?by={by}&from={from}&to={to}&human_only=false&limit=1000");
            let answer = get(&url).await;
            assert_eq!(answer["source"], source, "{url}");
            assert_eq!(answer["by"], by);
            let within: Vec<&Stored> = all.iter().copied().filter(|e| (from..to).contains(&e.time)).collect();
            assert_eq!(rows(&answer), expected(&within, by, false), "{url}: {answer}");
            assert_eq!(Counts::of(&answer["other"]), Counts::default(), "nothing past 1000 values");
        }
        // Human only, the default: no machine in any number.
        let url = format!("{campaign}?by={by}&from={}&to={}&limit=1000", hour - 3_600, hour + 7_200);
        let answer = get(&url).await;
        assert_eq!(answer["human_only"], true);
        assert_eq!(rows(&answer), expected(&all, by, true), "{url}: {answer}");
    }

    // Opens per mail client, as the stats report them in total: Apple's
    // proxy's open is Apple Mail's machine open, for Apple's privacy
    // proxies; r2 and r5 opened with Outlook, two human openers.
    let url = format!("{campaign}?by=mail_client&human_only=false&from={}&to={}", hour - 3_600, hour + 7_200);
    let answer = get(&url).await;
    let by_client = rows(&answer);
    assert_eq!(by_client["apple_mail"].machine_opens_by_reason, [1, 0, 0], "{url}: {answer}");
    assert_eq!(by_client["outlook"].unique_human_openers, 2, "{url}: {answer}");

    // Retention (`RICOCHET_RETENTION_ROLLUP_DAYS`) deletes the rows of
    // buckets that began before its cutoff: the day holding the cutoff has
    // lost its day row and kept its later hours, as here (NZ, a day before
    // any range below, cut at 04:00). A range from the cutoff on counts
    // those hours: its start is never read as its day less the hours before.
    let past = monday - 8 * 86_400;
    let cutoff = past + 4 * 3_600;
    let kept: Vec<String> = [4, 10, 22]
        .iter()
        .map(|h| {
            format!(
                "(3600, 'acme', 'bd', '', 'country', 'NZ', toDateTime({}), '', 0, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0)",
                past + h * 3_600
            )
        })
        .collect();
    insert_breakdown_rows(&servers, &kept).await;
    let url = format!("{campaign}?by=country&from={cutoff}&to={}&human_only=false&limit=1000", hour + 7_200);
    let mut want = expected(&all, "country", false);
    want.insert("NZ".into(), Counts { human_clicks: 3, bot_clicks: 3, clicks: 6, ..Counts::default() });
    assert_eq!(rows(&get(&url).await), want, "{url}: the hours kept after a retention cutoff");

    // A limit: the first value, and everything else summed in `other`.
    let answer =
        get(&format!("{campaign}?by=country&human_only=false&limit=1&from={}&to={}", hour - 3_600, hour + 7_200)).await;
    let full = expected(&all, "country", false);
    let listed = answer["rows"][0]["value"].as_str().unwrap().to_owned();
    let rest: Vec<&Stored> = all.iter().copied().filter(|e| shown(&e.dims["country"]) != listed).collect();
    let mut other = Counts::default();
    for c in expected(&rest, "country", false).values() {
        other.add(c);
    }
    // A recipient in two of the rest's values counts once.
    other.unique_human_recipients = people(&rest, false).len() as u64;
    other.unique_human_openers = people(&rest, true).len() as u64;
    assert_eq!(answer["rows"].as_array().unwrap().len(), 1);
    assert_eq!(Counts::of(&answer["rows"][0]), full[&listed]);
    let top = full
        .iter()
        .max_by(|a, b| (a.1.human_clicks, a.1.clicks).cmp(&(b.1.human_clicks, b.1.clicks)).then_with(|| b.0.cmp(a.0)));
    assert_eq!(Some(&listed), top.map(|t| t.0), "the value with the most human clicks");
    assert_eq!(Counts::of(&answer["other"]), other, "{answer}");

    // Filters: German devices; unknown countries; a filter on the dimension itself.
    for (filter, keep) in [
        ("country=de", Box::new(|e: &Stored| e.dims["country"] == "DE") as Box<dyn Fn(&Stored) -> bool>),
        ("country=unknown", Box::new(|e: &Stored| e.dims["country"].is_empty())),
        (
            "device=desktop&mail_client=outlook",
            Box::new(|e: &Stored| e.dims["device"] == "desktop" && e.dims["mail_client"] == "outlook"),
        ),
        ("utm_campaign=Winter", Box::new(|e: &Stored| e.dims["utm_campaign"] == "Winter")),
    ] {
        let kept: Vec<&Stored> = all.iter().copied().filter(|e| keep(e)).collect();
        assert!(!kept.is_empty(), "{filter} keeps something");
        for by in ["device", "country"] {
            let url =
                format!("{campaign}?by={by}&{filter}&human_only=false&from={}&to={}", day - 86_400, day + 2 * 86_400);
            let answer = get(&url).await;
            assert_eq!(answer["source"], "events", "a filter reads the raw events");
            assert_eq!(rows(&answer), expected(&kept, by, false), "{url}: {answer}");
        }
    }

    // The link's and the client's breakdowns.
    let link0: Vec<&Stored> = all.iter().copied().filter(|e| e.link == 0).collect();
    let url = format!(
        "{base}/v1/links/{}/breakdown?by=mail_client&human_only=false&from={}&to={}",
        links[0].link_id,
        hour - 3_600,
        hour + 7_200
    );
    assert_eq!(rows(&get(&url).await), expected(&link0, "mail_client", false), "{url}");
    let url = format!(
        "{base}/v1/clients/acme/breakdown?by=browser&human_only=false&from={}&to={}",
        day - 86_400,
        day + 2 * 86_400
    );
    assert_eq!(rows(&get(&url).await), expected(&all, "browser", false), "{url}");

    // Weeks whose week rows are incomplete come from the day rows: here a
    // batch as an aggregator from before the week grain writes it (day rows
    // of every dimension, no week rows), straight into the table.
    let old_batch: Vec<String> = DIMENSIONS
        .iter()
        .map(|d| {
            let value = match *d {
                "country" => "FR",
                "device" => "tablet",
                _ => "",
            };
            format!(
                "(86400, 'acme', 'bd', '', '{d}', '{value}', toDateTime({day}), '', 0, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0)"
            )
        })
        .collect();
    insert_breakdown_rows(&servers, &old_batch).await;
    // (limit=999: not the answer cached for a second from the same request above.)
    let url = format!("{campaign}?by=country&from={}&to={}&human_only=false&limit=999", weeks.0, weeks.1);
    let mut want = expected(&all, "country", false);
    let fr = want.entry("FR".into()).or_default();
    (fr.human_clicks, fr.bot_clicks, fr.clicks) = (fr.human_clicks + 2, fr.bot_clicks + 1, fr.clicks + 3);
    assert_eq!(rows(&get(&url).await), want, "{url}: the day rows, not the incomplete week's rows");

    // CSV, by parameter and by Accept header: the same numbers, with a header row.
    let json_url = format!("{campaign}?by=country&human_only=false&from={}&to={}", hour - 3_600, hour + 7_200);
    let answer = get(&json_url).await;
    for (url, accept) in [(format!("{json_url}&format=csv"), "*/*"), (json_url.clone(), "text/csv")] {
        let r = http().get(&url).header("accept", accept).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"), "{url}");
        let text = r.text().await.unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(
                "rank,value,human_clicks,bot_clicks,clicks,unique_human_recipients,human_opens,machine_opens,\
                 machine_opens_apple_privacy,machine_opens_scanner,machine_opens_prefetch,unique_human_openers"
            )
        );
        let mut csv_rows = BTreeMap::new();
        for line in lines {
            let cells: Vec<&str> = line.split(',').collect();
            let n = |i: usize| cells[i].parse::<u64>().unwrap();
            let counts = Counts {
                human_clicks: n(2),
                bot_clicks: n(3),
                clicks: n(4),
                unique_human_recipients: n(5),
                human_opens: n(6),
                machine_opens: n(7),
                machine_opens_by_reason: [n(8), n(9), n(10)],
                unique_human_openers: n(11),
            };
            let key = if cells[0] == "other" { "(other)".to_owned() } else { cells[1].to_owned() };
            csv_rows.insert(key, counts);
        }
        let mut json_rows = rows(&answer);
        json_rows.insert("(other)".into(), Counts::of(&answer["other"]));
        assert_eq!(csv_rows, json_rows, "{url}:\n{text}");
    }
    let r = http().get(format!("{stats_url}&format=csv")).send().await.unwrap();
    let text = r.text().await.unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let total: Vec<&str> = text.lines().find(|l| l.starts_with("total,")).unwrap().split(',').collect();
    let cell = |name: &str| total[header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("{name}: {text}"))];
    assert_eq!(cell("clicks"), clicks.to_string());
    assert_eq!(cell("human_opens"), human_opens.to_string());
    assert_eq!(cell("machine_opens_apple_privacy"), "1");
    assert_eq!(cell("unique_human_openers"), openers.len().to_string());

    // Who may read: a key with the read scope, its own client only (as the stats).
    let (reader, recipients_only, other_client) =
        (key(&base, "acme", "read").await, key(&base, "acme", "recipients").await, key(&base, "globex", "read").await);
    for url in [
        format!("{campaign}?by=os"),
        format!("{base}/v1/clients/acme/breakdown?by=os"),
        format!("{base}/v1/links/{}/breakdown?by=os", links[1].link_id),
    ] {
        for (key, status) in [(&reader, 200), (&recipients_only, 403), (&other_client, 404)] {
            let r = client::http_as(Some(key.as_str())).get(&url).send().await.unwrap();
            assert_eq!(r.status(), status, "{url}");
        }
    }

    // Bad requests say what is allowed.
    for (query, says) in [
        ("", "by is required"),
        ("by=city", "by must be one of"),
        ("by=os&country=DEU", "two letters"),
        ("by=os&device=phone", "desktop, mobile, tablet, bot, other"),
        ("by=os&mail_client=thunderbird", "apple_mail"),
        ("by=os&format=xml", "json or csv"),
        ("by=os&nonce=1", "unknown field"),
    ] {
        let r = http().get(format!("{campaign}?{query}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{query}: {body}");
    }
}
