//! The live dashboard in a real browser: a seeded blast goes through the edge,
//! then headless Chromium (Debian's `chromium`) loads `/dashboard` with a
//! client's API key and must show exactly what was sent: totals, human and
//! machine opens, top links, and the breakdown panels, once as they are and
//! once filtered on a country (the filter chip's state is the address's
//! `?country=`, which a click on a value sets). A screenshot is kept in
//! `tests/artifacts/dashboard.png`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ricochet_registry::token::mint_with_client_key;
use ricochet_schemas::RecipientId;
use ricochet_tests::client::{self, http, http_as};
use ricochet_tests::servers::Servers;
use ricochet_tests::{eventually, repo_root, services};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN_KEYS: &str = "k1:1111111111111111111111111111111111111111111111111111111111111111";
const CLIENT: &str = "acme";
const CAMPAIGN: &str = "black-friday";
/// The blast: this many clicks on the campaign's links, drawn from a fixed seed.
const CLICKS: usize = 320;
const SEED: u64 = 20_261_122;
/// Apple Mail Privacy Protection's proxy fetching the pixel: a machine open.
const APPLE_PROXY: &str = "Mozilla/5.0";
const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const LINUX_FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0";
/// Addresses of the blast's untokened human clicks (the vendored country
/// table's German and French ISPs) and of its bots (Google's, US). Clicks
/// with a recipient token come from the test's own loopback address (no
/// country), so no network ever clicks for many recipients at once.
const GERMANY: &str = "79.192.0.1";
const FRANCE: &str = "90.0.0.1";
const BOTS: &str = "8.8.8.8";

/// What the dashboard must show for the campaign.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Expected {
    clicks: u64,
    human: u64,
    bot: u64,
    opens: u64,
    recipients: BTreeSet<String>,
    /// Per link code: (clicks, human clicks).
    per_link: BTreeMap<String, (u64, u64)>,
    human_opens: u64,
    machine_opens: u64,
    /// Per country as the API names it: (human clicks, bot clicks).
    by_country: BTreeMap<&'static str, (u64, u64)>,
    /// Human clicks per device of the German clicks.
    german_devices: BTreeMap<&'static str, u64>,
}

/// Sends `req` and returns its JSON body, which must come with status `want`.
async fn json(req: reqwest::RequestBuilder, want: u16) -> Value {
    let r = req.send().await.expect("the API answered");
    let (status, url) = (r.status().as_u16(), r.url().clone());
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, want, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_a_seeded_blast_in_a_real_browser() {
    // Before any server starts: without the browser this test cannot say anything.
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the dashboard test drives Debian's chromium package; \
         install it with `infra/install.sh --browser` (infra/test.sh does) or `apt-get install chromium`"
    );
    let servers = Servers::start().await;
    let env = [("RICOCHET_TOKEN_KEYS", TOKEN_KEYS.to_owned()), ("RICOCHET_TRUSTED_PROXIES", "127.0.0.0/8".to_owned())];
    let aggregator = services::aggregator(&servers, "aggregator", &env).await;
    let api_service = services::api(&servers, "api", &env).await;
    let api = api_service.url();

    // Three links in the campaign, weighted 5:3:1 so the top-links order is
    // clear; one in another campaign and one of another client, which the
    // campaign's numbers must not include.
    let mut links = Vec::new();
    for (i, page) in ["deals", "tv", "unsubscribe"].iter().enumerate() {
        links.push(client::create_link(&api, CLIENT, CAMPAIGN, &format!("https://shop.example/{page}?n={i}")).await);
    }
    let other_campaign = client::create_link(&api, CLIENT, "newsletter", "https://shop.example/news").await;
    let other_client = client::create_link(&api, "globex", CAMPAIGN, "https://globex.example/").await;
    // As the admin: a key for the client, and the client's token signing key.
    let new_key =
        http().post(format!("{api}/v1/clients/{CLIENT}/api-keys")).json(&json!({ "label": "dashboard test" }));
    let key = json(new_key, 201).await["key"].as_str().expect("key").to_owned();
    let keys = json(http().get(format!("{api}/v1/clients/{CLIENT}/token-keys")), 200).await;
    let (kid, secret) =
        (keys["keys"][0]["kid"].as_str().unwrap().to_owned(), hex(keys["keys"][0]["key"].as_str().unwrap()));

    // Started after the links exist, the edge has them all once it is ready.
    let edge = services::redirect(&servers, "edge", &env).await;

    // The seeded blast: clicks spread 5:3:1, about one in six from a link
    // previewer, a third of the human ones with a recipient token from a pool of
    // 40, plus opens and the noise that must not count.
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut expected = Expected::default();
    for l in &links {
        expected.per_link.insert(l.code.clone(), (0, 0));
    }
    let mut requests = Vec::new();
    for _ in 0..CLICKS {
        let link = &links[[0, 0, 0, 0, 0, 1, 1, 1, 2][rng.random_range(0..9)]];
        let bot = rng.random_bool(1.0 / 6.0);
        let mut path = format!("/{}", link.code);
        let mobile = rng.random_bool(0.4);
        let (country, address) = if bot {
            ("US", Some(BOTS))
        } else if rng.random_bool(1.0 / 3.0) {
            let recipient = format!("r{}@example.com", rng.random_range(0..40));
            let token = mint_with_client_key(&kid, &secret, &link.code, &RecipientId::parse(&recipient).unwrap());
            path = format!("{path}/{token}");
            expected.recipients.insert(recipient);
            ("unknown", None)
        } else if rng.random_bool(0.6) {
            *expected.german_devices.entry(if mobile { "mobile" } else { "desktop" }).or_default() += 1;
            ("DE", Some(GERMANY))
        } else {
            ("FR", Some(FRANCE))
        };
        let per_country = expected.by_country.entry(country).or_default();
        if bot {
            per_country.1 += 1;
        } else {
            per_country.0 += 1;
        }
        let entry = expected.per_link.get_mut(&link.code).unwrap();
        entry.0 += 1;
        if bot {
            expected.bot += 1;
        } else {
            expected.human += 1;
            entry.1 += 1;
        }
        expected.clicks += 1;
        let agent = if bot {
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
        } else if mobile {
            IPHONE_SAFARI
        } else {
            LINUX_FIREFOX
        };
        requests.push((path, agent, address, 302));
    }
    // Opens: readers' own fetches, and Apple's privacy proxy fetching for some.
    for i in 0..37 {
        requests.push((format!("/o/{}.gif", links[i % links.len()].code), client::BROWSER_UA, None, 200));
        expected.human_opens += 1;
    }
    for i in 0..9 {
        requests.push((format!("/o/{}.gif", links[i % links.len()].code), APPLE_PROXY, None, 200));
        expected.machine_opens += 1;
    }
    expected.opens = expected.human_opens + expected.machine_opens;
    for code in [&other_campaign.code, &other_client.code] {
        for _ in 0..11 {
            requests.push((format!("/{code}"), client::BROWSER_UA, Some(GERMANY), 302));
        }
    }
    assert!(expected.bot > 20 && expected.recipients.len() > 10, "the seed gives a useful mix: {expected:?}");
    send_all(&edge.url(), requests).await;

    // The API (as the client) converges on exactly that.
    let as_client = http_as(Some(&key));
    let stats_url = format!("{api}/v1/clients/{CLIENT}/campaigns/{CAMPAIGN}/stats");
    let totals = eventually("the stats API to count the blast", Duration::from_secs(60), || async {
        let t = json(as_client.get(&stats_url), 200).await["totals"].clone();
        let seen = [
            &t["clicks"],
            &t["human_clicks"],
            &t["bot_clicks"],
            &t["opens"],
            &t["human_opens"],
            &t["machine_opens"],
            &t["unique_recipients"],
        ];
        let want = [
            expected.clicks,
            expected.human,
            expected.bot,
            expected.opens,
            expected.human_opens,
            expected.machine_opens,
            expected.recipients.len() as u64,
        ];
        (seen.iter().zip(want).all(|(s, w)| s.as_u64() == Some(w))).then_some(t)
    })
    .await;
    eprintln!("sent and counted: {totals}");

    // The binary serves the page and its assets itself, with their types and caching.
    let page = http_as(None).get(format!("{api}/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let html = page.text().await.unwrap();
    let script = html.split("src=\"").nth(1).and_then(|s| s.split('"').next()).expect("a script");
    let asset = http_as(None).get(format!("{api}{script}")).send().await.unwrap();
    assert_eq!(asset.status(), 200, "{script}");
    assert_eq!(asset.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(asset.headers()["cache-control"].to_str().unwrap().contains("immutable"));

    // The browser, as the client would open it from a link with its key.
    let url = format!("{api}/dashboard?client={CLIENT}&key={key}&campaign={CAMPAIGN}");
    let (dom, log) = chromium(&url, &["--dump-dom", "--enable-logging=stderr", "--v=0"]).await;
    // The page logs nothing: a CSP violation, a failed request or a script error would.
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "the page wrote to the console:\n{}", console.join("\n"));
    let shown = |id: &str| -> u64 {
        let text = element_text(&dom, id).unwrap_or_else(|| panic!("no element #{id} in the page:\n{dom}"));
        text.chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or_else(|_| panic!("#{id} shows {text:?}"))
    };
    assert_eq!(element_text(&dom, "status").as_deref(), Some("Live"), "the page polled without errors");
    assert_eq!(shown("total-clicks"), expected.clicks, "clicks shown");
    assert_eq!(shown("total-human-clicks"), expected.human, "human clicks shown");
    assert_eq!(shown("total-bot-clicks"), expected.bot, "bot clicks shown");
    assert_eq!(shown("total-opens"), expected.opens, "opens shown");
    assert_eq!(shown("total-human-opens"), expected.human_opens, "human opens shown");
    assert_eq!(shown("total-machine-opens"), expected.machine_opens, "machine opens shown");
    assert_eq!(shown("total-unique-recipients"), expected.recipients.len() as u64, "unique recipients shown");

    // Top links: every link of the campaign, most clicked first, with its numbers.
    let rows = table_rows(&dom, "top-links");
    let shown_links: Vec<(String, u64, u64)> = rows
        .iter()
        .map(|cells| {
            (cells[0].clone(), cells[2].replace(',', "").parse().unwrap(), cells[3].replace(',', "").parse().unwrap())
        })
        .collect();
    let mut want_links: Vec<(String, u64, u64)> =
        expected.per_link.iter().map(|(c, (n, h))| (c.clone(), *n, *h)).collect();
    want_links.sort_by_key(|l| std::cmp::Reverse(l.1));
    assert_eq!(shown_links, want_links, "top links rows: {rows:?}");

    // The campaign picker lists this client's campaigns only.
    let options: Vec<&str> = dom.split("<option value=\"").skip(1).filter_map(|s| s.split('"').next()).collect();
    for campaign in [CAMPAIGN, "newsletter"] {
        assert!(options.contains(&campaign), "campaign {campaign} offered: {options:?}");
    }
    assert!(!dom.contains("globex"), "another client's data leaked into the page");

    // The country panel: every country with its human and bot clicks, human first.
    let countries = breakdown_rows(&dom, "breakdown-country");
    let shown_countries: Vec<(String, u64, u64)> = countries.iter().map(|(v, c)| (v.clone(), c[1], c[2])).collect();
    let mut want_countries: Vec<(String, u64, u64)> =
        expected.by_country.iter().map(|(c, (h, b))| (c.to_string(), *h, *b)).collect();
    want_countries.sort_by(|a, b| (b.1, b.1 + b.2).cmp(&(a.1, a.1 + a.2)).then_with(|| a.0.cmp(&b.0)));
    assert_eq!(shown_countries, want_countries, "country panel rows: {countries:?}");
    // The mail-client panel shows Apple's proxy's opens as machine opens.
    let mail = breakdown_rows(&dom, "breakdown-mail_client");
    let apple = mail.iter().find(|(v, _)| v == "apple_mail").unwrap_or_else(|| panic!("no apple_mail row: {mail:?}"));
    assert_eq!((apple.1[3], apple.1[4]), (0, expected.machine_opens), "Apple Mail's opens: {mail:?}");
    assert!(element_text(&dom, "filters").is_none_or(|t| t.is_empty()), "no filter chip before a filter");

    // Filtered on Germany, as a click on its row does: the chip, and the
    // device panel counts only the German clicks.
    let filtered = format!("{url}&country=DE");
    let (dom, _) = chromium(&filtered, &["--dump-dom"]).await;
    assert_eq!(element_text(&dom, "status").as_deref(), Some("Live"), "the filtered page polled without errors");
    let chip = dom.split("class=\"chip\"").nth(1).unwrap_or_else(|| panic!("no filter chip:\n{dom}"));
    assert!(chip.contains("data-dimension=\"country\"") && chip.contains("data-value=\"DE\""), "{chip}");
    let devices = breakdown_rows(&dom, "breakdown-device");
    let shown_devices: BTreeMap<&str, u64> =
        devices.iter().filter(|(_, c)| c[1] > 0).map(|(v, c)| (v.as_str(), c[1])).collect();
    assert_eq!(shown_devices, expected.german_devices, "German clicks by device: {devices:?}");
    let countries = breakdown_rows(&dom, "breakdown-country");
    assert_eq!(
        countries.iter().map(|(v, c)| (v.as_str(), c[1])).collect::<Vec<_>>(),
        vec![("DE", expected.by_country["DE"].0)],
        "the filtered country panel"
    );
    assert!(!dom.contains(&key), "the API key is not written into the page");

    // The screenshot, kept as a test artifact.
    let dir = repo_root().join("tests/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    chromium(&url, &[&format!("--screenshot={}", png.display()), "--window-size=1280,2000"]).await;
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let (w, h) =
        (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()));
    assert_eq!((w, h), (1280, 2000), "screenshot size");
    eprintln!("screenshot: {}", png.display());
    drop((edge, api_service, aggregator));
}

/// Sends every `(path, user agent, client address, expected status)` to the
/// edge, 32 at a time; the address goes in `X-Forwarded-For`, which the edge
/// trusts from loopback here.
async fn send_all(edge: &str, requests: Vec<(String, &'static str, Option<&'static str>, u16)>) {
    let http = http_as(None);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for (path, agent, address, want) in requests {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let mut req = http.get(format!("{edge}{path}")).header("user-agent", agent);
        if let Some(address) = address {
            req = req.header("x-forwarded-for", address);
        }
        tasks.push(tokio::spawn(async move {
            let status = req.send().await.map(|r| r.status().as_u16());
            drop(permit);
            (path, status.ok(), want)
        }));
    }
    for t in tasks {
        let (path, status, want) = t.await.unwrap();
        assert_eq!(status, Some(want), "edge answer for {path}");
    }
}

/// Runs headless Chromium on `url` with a fresh profile; returns its stdout and stderr.
async fn chromium(url: &str, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    // Enough virtual time for the first poll and a few more.
    .arg("--virtual-time-budget=8000")
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finished within 90 s")
        .unwrap_or_else(|e| panic!("running {CHROMIUM}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium {extra:?} failed ({}):\n{stderr}", out.status);
    (String::from_utf8(out.stdout).expect("UTF-8 DOM"), stderr)
}

/// The text of the element with this id, up to its first child tag.
fn element_text(dom: &str, id: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[start..];
    let text = &rest[rest.find('>')? + 1..];
    Some(unescape(text[..text.find('<')?].trim()))
}

/// The text of each cell of each row in the table body with this id.
fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom.find(&format!("<tbody id=\"{id}\">")).unwrap_or_else(|| panic!("no tbody #{id}"));
    let body = &dom[start..start + dom[start..].find("</tbody>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| unescape(strip_tags(&cell[cell.find('>').unwrap() + 1..]).trim()))
                .collect()
        })
        .collect()
}

/// Each row of a breakdown panel's body: its `data-value` (the API's value)
/// and its cells as numbers (the value's own cell reads 0).
fn breakdown_rows(dom: &str, id: &str) -> Vec<(String, Vec<u64>)> {
    let start = dom.find(&format!("<tbody id=\"{id}\">")).unwrap_or_else(|| panic!("no tbody #{id}:\n{dom}"));
    let body = &dom[start..start + dom[start..].find("</tbody>").unwrap()];
    body.split("<tr")
        .skip(1)
        .filter_map(|row| {
            let value = row.split("data-value=\"").nth(1)?.split('"').next()?;
            let cells = row
                .split("<td")
                .skip(1)
                .map(|cell| {
                    let text = strip_tags(&cell[cell.find('>').unwrap() + 1..]);
                    text.trim().replace(',', "").parse().unwrap_or(0)
                })
                .collect();
            Some((unescape(value), cells))
        })
        .filter(|(value, _)| !value.is_empty())
        .collect()
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn dom_helpers_read_what_chromium_dumps() {
    let dom = r#"<dd id="total-clicks" data-value="1234">1,234</dd><tbody id="top-links"><tr><td class="code">Ab</td><td class="destination" title="x"><a href="x">https://a.example/?a=1&amp;b=2</a></td><td class="num">9</td></tr></tbody>"#;
    assert_eq!(element_text(dom, "total-clicks").as_deref(), Some("1,234"));
    assert_eq!(table_rows(dom, "top-links"), vec![vec!["Ab", "https://a.example/?a=1&b=2", "9"]]);
    let panel = r#"<tbody id="breakdown-country"><tr data-value="DE"><td><button class="link value"><span class="flag">x</span> DE</button></td><td class="num bar" style="--share: 100.0%;">1,200</td><td class="num">3</td></tr><tr class="other" data-value=""><td>All others</td><td class="num">1</td></tr></tbody>"#;
    assert_eq!(breakdown_rows(panel, "breakdown-country"), vec![("DE".to_owned(), vec![0, 1200, 3])]);
}
