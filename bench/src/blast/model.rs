//! The simulated blast: who receives it, who (or what) opens each link and
//! when, on which network, with which headers. Pure and seeded: the same
//! [`Params`] give the same plan, request for request.
//!
//! Published figures (issue 8, from senders' logs and the vendors' own
//! documentation) that the model takes as given:
//! - a scanner fetches every link of a message within 1–2 s;
//! - 66% of those bursts start 20–60 s after the send (median 43 s), 28% at
//!   1–5 min, the rest earlier or later;
//! - scanners often send a browser user agent without Accept-Language,
//!   sometimes HEAD before GET, sometimes re-check minutes or hours later,
//!   and come from the vendor's network (or a cloud sandbox);
//! - people click one or two links, minutes after delivery.
//!
//! What is NOT published, and is therefore an assumption written down in
//! [`VENDORS`] (per-vendor shares of HEAD-first, missing Accept-Language,
//! browser-identical requests, re-scans, cloud sandboxes, honeypot
//! following) and in [`HumanModel`]. Each is a behaviour, none is a rule of
//! the aggregator's: nothing here knows what the verdict code looks at.

use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

use super::networks::{self, NetKind, Pool};

/// What a blast looks like. Times are "virtual": the blast's own timeline,
/// which [`compress`] maps onto the replay's wall clock.
#[derive(Clone, Debug)]
pub struct Params {
    pub seed: u64,
    pub recipients: u32,
    /// Visible links per message in the main campaign (a hidden honeypot comes on top).
    pub links: u32,
    /// Share of recipients who get a single-link email (campaign `single`).
    pub single_link_share: f64,
    /// Share of recipients whose mail passes a security gateway (B2B).
    pub scanner_share: f64,
    /// Share of recipients who click at all.
    pub click_rate: f64,
    /// The sender hands the messages over this many seconds.
    pub send_window_secs: f64,
    /// Nothing after this many seconds past a message's send is simulated.
    pub horizon_secs: f64,
    /// One hidden honeypot link per message.
    pub honeypot: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            seed: 1,
            recipients: 2000,
            links: 4,
            single_link_share: 0.2,
            scanner_share: 0.3,
            click_rate: 0.2,
            send_window_secs: 600.0,
            horizon_secs: 3.0 * 3600.0,
            honeypot: true,
        }
    }
}

/// The two campaigns of a blast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Campaign {
    /// `links` visible links a message.
    Main,
    /// One visible link a message.
    Single,
}

impl Campaign {
    pub const ALL: [Campaign; 2] = [Campaign::Main, Campaign::Single];
    pub fn as_str(self) -> &'static str {
        match self {
            Campaign::Main => "main",
            Campaign::Single => "single",
        }
    }
    pub fn visible_links(self, params: &Params) -> u32 {
        match self {
            Campaign::Main => params.links.max(1),
            Campaign::Single => 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    Defender,
    Proofpoint,
    Mimecast,
    Barracuda,
    Cisco,
}

impl Vendor {
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Defender => "defender",
            Vendor::Proofpoint => "proofpoint",
            Vendor::Mimecast => "mimecast",
            Vendor::Barracuda => "barracuda",
            Vendor::Cisco => "cisco",
        }
    }
}

/// One vendor's behaviour. Shares are per burst unless said otherwise.
#[derive(Debug)]
pub struct VendorProfile {
    pub vendor: Vendor,
    /// Of the protected recipients, how many are behind this vendor (market share).
    pub market_share: f64,
    pub own: &'static Pool,
    /// Where its detonation sandboxes run when not on its own network.
    pub cloud: &'static Pool,
    pub cloud_share: f64,
    pub head_first: f64,
    pub no_accept_language: f64,
    /// Requests that look EXACTLY like a person's browser: a current browser
    /// user agent, Accept and Accept-Language, GET only.
    pub browser_identical: f64,
    /// Probability of re-checking the message later (per message).
    pub rescan: f64,
    /// Probability of following the hidden link (a parser that skips hidden anchors won't).
    pub follows_honeypot: f64,
    /// Holds the mail until scanned (so people click only after the sweep);
    /// otherwise delivers at once and detonates links in parallel.
    pub pre_delivery: bool,
    /// Checks the link again at the moment the person clicks it (Safe Links
    /// "time of click"), per human click.
    pub time_of_click: f64,
    /// Its fleet: how many distinct addresses its bursts come from, per run.
    pub fleet: usize,
    /// User agents of the non-identical requests: (weight, user agent or none).
    pub user_agents: &'static [(f64, Option<&'static str>)],
}

const CHROME_WIN_OLD: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.124 Safari/537.36";
const IE11_WIN7: &str = "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko";
const HEADLESS: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/114.0.5735.133 Safari/537.36";
const PYTHON: &str = "python-requests/2.31.0";
const JAVA: &str = "Java/1.8.0_381";
const EDGE_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";

/// The five gateways the issue names. Shares are assumptions (see the module doc).
pub static VENDORS: [VendorProfile; 5] = [
    VendorProfile {
        vendor: Vendor::Defender,
        market_share: 0.45,
        own: &networks::MICROSOFT_EOP,
        cloud: &networks::AZURE,
        cloud_share: 0.3,
        head_first: 0.1,
        no_accept_language: 0.7,
        browser_identical: 0.25,
        rescan: 0.3,
        follows_honeypot: 0.9,
        pre_delivery: false,
        time_of_click: 0.5,
        fleet: 60,
        user_agents: &[(0.6, Some(EDGE_WIN)), (0.25, Some(CHROME_WIN_OLD)), (0.15, None)],
    },
    VendorProfile {
        vendor: Vendor::Proofpoint,
        market_share: 0.2,
        own: &networks::PROOFPOINT,
        cloud: &networks::AWS,
        cloud_share: 0.1,
        head_first: 0.35,
        no_accept_language: 0.8,
        browser_identical: 0.15,
        rescan: 0.4,
        follows_honeypot: 0.95,
        pre_delivery: true,
        time_of_click: 0.0,
        fleet: 40,
        user_agents: &[(0.5, Some(CHROME_WIN_OLD)), (0.3, Some(IE11_WIN7)), (0.2, Some(PYTHON))],
    },
    VendorProfile {
        vendor: Vendor::Mimecast,
        market_share: 0.15,
        own: &networks::MIMECAST,
        cloud: &networks::AWS,
        cloud_share: 0.15,
        head_first: 0.2,
        no_accept_language: 0.75,
        browser_identical: 0.2,
        rescan: 0.2,
        follows_honeypot: 0.85,
        pre_delivery: true,
        time_of_click: 0.0,
        fleet: 30,
        user_agents: &[(0.6, Some(CHROME_WIN_OLD)), (0.3, Some(HEADLESS)), (0.1, None)],
    },
    VendorProfile {
        vendor: Vendor::Barracuda,
        market_share: 0.1,
        own: &networks::BARRACUDA,
        cloud: &networks::AWS,
        cloud_share: 0.4,
        head_first: 0.5,
        no_accept_language: 0.85,
        browser_identical: 0.1,
        rescan: 0.25,
        follows_honeypot: 0.9,
        pre_delivery: true,
        time_of_click: 0.0,
        fleet: 20,
        user_agents: &[(0.5, Some(IE11_WIN7)), (0.3, Some(CHROME_WIN_OLD)), (0.2, Some(JAVA))],
    },
    VendorProfile {
        vendor: Vendor::Cisco,
        market_share: 0.1,
        own: &networks::CISCO,
        cloud: &networks::GOOGLE_CLOUD,
        cloud_share: 0.2,
        head_first: 0.3,
        no_accept_language: 0.8,
        browser_identical: 0.15,
        rescan: 0.2,
        follows_honeypot: 0.9,
        pre_delivery: true,
        time_of_click: 0.0,
        fleet: 20,
        user_agents: &[(0.7, Some(CHROME_WIN_OLD)), (0.3, Some(HEADLESS))],
    },
];

pub fn profile(vendor: Vendor) -> &'static VendorProfile {
    VENDORS.iter().find(|p| p.vendor == vendor).expect("every vendor has a profile")
}

/// People's browsers (current versions, desktop and mobile).
pub const HUMAN_USER_AGENTS: [&str; 7] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    EDGE_WIN,
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
];
pub const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8";
const LANGUAGES: [&str; 5] =
    ["en-US,en;q=0.9", "en-GB,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9", "es-ES,es;q=0.9"];
const WEBMAIL_REFERERS: [&str; 3] =
    ["https://mail.google.com/", "https://outlook.live.com/", "https://mail.yahoo.com/"];

/// How people behave. Assumptions, see the module doc.
#[derive(Clone, Debug)]
pub struct HumanModel {
    /// Share of clickers who click within a minute of delivery.
    pub fast: f64,
    /// Median and log-sd of the delay to the first click, for the others.
    pub delay_median_secs: f64,
    pub delay_sigma: f64,
    /// How many distinct links a clicker follows: weights of 1, 2, 3.
    pub links_weights: [f64; 3],
    /// Median gap to the next link.
    pub next_link_median_secs: f64,
    /// A second request to the same link a moment later (double click, reload).
    pub double_click: f64,
}

impl Default for HumanModel {
    fn default() -> Self {
        HumanModel {
            fast: 0.07,
            delay_median_secs: 20.0 * 60.0,
            delay_sigma: 1.4,
            links_weights: [0.7, 0.25, 0.05],
            next_link_median_secs: 45.0,
            double_click: 0.04,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    Human,
    Scanner,
}

/// Why a request happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A gateway's sweep over the message's links.
    Sweep,
    /// A gateway's later re-check.
    Rescan,
    /// A gateway's check at the moment a person clicks.
    TimeOfClick,
    /// A person's click.
    Click,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Method {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "HEAD")]
    Head,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
        }
    }
}

/// The request headers that carry signals.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Headers {
    pub user_agent: Option<String>,
    pub accept: Option<String>,
    pub accept_language: Option<String>,
    pub referer: Option<String>,
}

/// Who a recipient is.
#[derive(Clone, Debug)]
pub struct Recipient {
    pub id: String,
    pub campaign: Campaign,
    /// Behind a gateway: its vendor, and the company (index) they work at.
    pub gateway: Option<(Vendor, u32)>,
    /// Seconds after the blast starts that the message is sent.
    pub send_secs: f64,
}

/// One planned request, in virtual time.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub recipient: String,
    pub campaign: Campaign,
    /// Index of the link in its campaign; `visible_links` is the honeypot.
    pub link: u32,
    pub honeypot: bool,
    pub actor: Actor,
    pub vendor: Option<Vendor>,
    pub kind: Kind,
    pub net: NetKind,
    pub ip: Ipv4Addr,
    pub method: Method,
    pub headers: Headers,
    /// A scanner request indistinguishable from a browser's by its headers.
    pub browser_identical: bool,
    /// Hard human cases: behind a gateway; a single-link email.
    pub behind_gateway: bool,
    pub single_link: bool,
    /// Milliseconds after the message's send (virtual).
    pub since_send_ms: i64,
    /// Which session of its message this request belongs to (requests of a
    /// session keep their exact relative timing when compressed).
    pub session: u32,
}

/// A company behind a gateway: its staff share the office's egress.
struct Company {
    office: Vec<Ipv4Addr>,
    proxied: bool,
}

/// The seeded plan: recipients and every request, in virtual time.
pub struct Plan {
    pub recipients: Vec<Recipient>,
    pub requests: Vec<Request>,
}

fn weighted<T: Copy>(rng: &mut impl Rng, items: &[(f64, T)]) -> T {
    let total: f64 = items.iter().map(|(w, _)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for (w, item) in items {
        if x < *w {
            return *item;
        }
        x -= w;
    }
    items.last().expect("non-empty").1
}

/// When a sweep starts, seconds after the send: 66% at 20–60 s (median 43 s),
/// 28% at 1–5 min, 3% sooner, 3% held 5–30 min in a queue.
pub fn sweep_start_secs(rng: &mut impl Rng) -> f64 {
    let x: f64 = rng.random();
    if x < 0.66 {
        // u^0.8 puts the median of 20 + 40·u^0.8 at 43 s.
        20.0 + 40.0 * rng.random::<f64>().powf(0.8)
    } else if x < 0.94 {
        log_uniform(rng, 60.0, 300.0)
    } else if x < 0.97 {
        rng.random_range(5.0..20.0)
    } else {
        log_uniform(rng, 300.0, 1800.0)
    }
}

fn log_uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

fn lognormal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    LogNormal::new(median.ln(), sigma).expect("finite parameters").sample(rng)
}

struct Builder<'a> {
    params: &'a Params,
    human: HumanModel,
    rng: StdRng,
    fleets: Vec<(Vendor, Vec<(NetKind, Ipv4Addr)>)>,
    companies: Vec<Company>,
    requests: Vec<Request>,
}

impl Builder<'_> {
    fn fleet_address(&mut self, vendor: Vendor) -> (NetKind, Ipv4Addr) {
        let fleet = &self.fleets.iter().find(|(v, _)| *v == vendor).expect("a fleet per vendor").1;
        fleet[self.rng.random_range(0..fleet.len())]
    }

    fn scanner_headers(&mut self, p: &VendorProfile, identical: bool) -> Headers {
        if identical {
            return self.browser_headers(None);
        }
        let ua = weighted(&mut self.rng, p.user_agents);
        Headers {
            user_agent: ua.map(str::to_owned),
            accept: self
                .rng
                .random_bool(0.9)
                .then(|| if self.rng.random_bool(0.5) { "*/*" } else { BROWSER_ACCEPT }.into()),
            accept_language: (!self.rng.random_bool(p.no_accept_language)).then(|| "en-US,en;q=0.9".into()),
            referer: None,
        }
    }

    fn browser_headers(&mut self, referer: Option<&str>) -> Headers {
        Headers {
            user_agent: Some(HUMAN_USER_AGENTS[self.rng.random_range(0..HUMAN_USER_AGENTS.len())].into()),
            accept: Some(BROWSER_ACCEPT.into()),
            accept_language: Some(LANGUAGES[self.rng.random_range(0..LANGUAGES.len())].into()),
            referer: referer.map(str::to_owned),
        }
    }

    /// One pass of a gateway over `links` of the message, starting at `start_ms`.
    #[allow(clippy::too_many_arguments)]
    fn scan(&mut self, r: &Recipient, vendor: Vendor, kind: Kind, links: &[u32], start_ms: i64, session: u32) {
        let p = profile(vendor);
        let identical = self.rng.random_bool(p.browser_identical);
        let head_first = !identical && self.rng.random_bool(p.head_first);
        // One address for the whole pass, or (distributed sandboxes) one per link.
        let spread = self.rng.random_bool(0.3);
        let mut addr = self.fleet_address(vendor);
        let headers = self.scanner_headers(p, identical);
        // Every link within 1–2 s.
        let span_ms = self.rng.random_range(300..2000);
        let visible = r.campaign.visible_links(self.params);
        for &link in links {
            if spread {
                addr = self.fleet_address(vendor);
            }
            let mut at = start_ms + self.rng.random_range(0..=span_ms);
            let mut methods = vec![Method::Get];
            if head_first {
                methods.insert(0, Method::Head);
            }
            for method in methods {
                self.requests.push(Request {
                    recipient: r.id.clone(),
                    campaign: r.campaign,
                    link,
                    honeypot: link == visible,
                    actor: Actor::Scanner,
                    vendor: Some(vendor),
                    kind,
                    net: addr.0,
                    ip: addr.1,
                    method,
                    headers: headers.clone(),
                    browser_identical: identical,
                    behind_gateway: true,
                    single_link: r.campaign == Campaign::Single,
                    since_send_ms: at,
                    session,
                });
                at += self.rng.random_range(40..300);
            }
        }
    }

    fn all_links(&mut self, r: &Recipient, follows_honeypot: f64) -> Vec<u32> {
        let visible = r.campaign.visible_links(self.params);
        let mut links: Vec<u32> = (0..visible).filter(|_| self.rng.random_bool(0.97)).collect();
        if links.is_empty() {
            links.push(0);
        }
        if self.params.honeypot && self.rng.random_bool(follows_honeypot) {
            links.push(visible);
        }
        // Scanners walk the HTML in no particular order.
        for i in (1..links.len()).rev() {
            links.swap(i, self.rng.random_range(0..=i));
        }
        links
    }

    /// Where a person clicks from.
    fn human_address(&mut self, r: &Recipient) -> (NetKind, Ipv4Addr) {
        let (kind, pool): (NetKind, &Pool) = match r.gateway {
            Some((_, company)) => {
                let c = &self.companies[company as usize];
                let x: f64 = self.rng.random();
                if x < 0.2 {
                    (NetKind::Mobile, &networks::MOBILE)
                } else if x < 0.3 {
                    (NetKind::Residential, &networks::RESIDENTIAL)
                } else if c.proxied {
                    (NetKind::CorporateProxy, &networks::ZSCALER)
                } else {
                    let office = c.office[self.rng.random_range(0..c.office.len())];
                    return (NetKind::Corporate, office);
                }
            }
            None => {
                let x: f64 = self.rng.random();
                if x < 0.6 {
                    (NetKind::Residential, &networks::RESIDENTIAL)
                } else if x < 0.88 {
                    (NetKind::Mobile, &networks::MOBILE)
                } else if x < 0.94 {
                    (NetKind::Vpn, &networks::PRIVATE_RELAY)
                } else if x < 0.97 {
                    (NetKind::Vpn, &networks::VPN_EXITS)
                } else {
                    // Self-hosted proxies and remote desktops on a hosting provider.
                    (NetKind::Vpn, &networks::DIGITALOCEAN)
                }
            }
        };
        (kind, pool.address(&mut self.rng))
    }

    fn recipient(&mut self, r: &Recipient) {
        let visible = r.campaign.visible_links(self.params);
        let horizon_ms = (self.params.horizon_secs * 1000.0) as i64;
        let mut session = 0;
        let mut delivered_ms = self.rng.random_range(1000..5000);
        let mut gateway = None;
        if let Some((vendor, _)) = r.gateway {
            let p = profile(vendor);
            gateway = Some(p);
            let sweep_ms = (sweep_start_secs(&mut self.rng) * 1000.0) as i64;
            let links = self.all_links(r, p.follows_honeypot);
            self.scan(r, vendor, Kind::Sweep, &links, sweep_ms, session);
            session += 1;
            delivered_ms = if p.pre_delivery {
                sweep_ms + 2000 + self.rng.random_range(0..3000)
            } else {
                self.rng.random_range(2000..10_000)
            };
            if self.rng.random_bool(p.rescan) {
                let at = sweep_ms + (lognormal(&mut self.rng, 45.0 * 60.0, 1.0) * 1000.0) as i64;
                let links = if self.rng.random_bool(0.5) {
                    self.all_links(r, p.follows_honeypot)
                } else {
                    vec![self.rng.random_range(0..visible)]
                };
                if at < horizon_ms {
                    self.scan(r, vendor, Kind::Rescan, &links, at, session);
                    session += 1;
                }
            }
        }
        if !self.rng.random_bool(self.params.click_rate) {
            return;
        }
        let h = self.human.clone();
        let first_ms = delivered_ms
            + if self.rng.random_bool(h.fast) {
                self.rng.random_range(5_000..55_000)
            } else {
                (lognormal(&mut self.rng, h.delay_median_secs, h.delay_sigma) * 1000.0) as i64
            };
        let count =
            weighted(&mut self.rng, &[(h.links_weights[0], 1), (h.links_weights[1], 2), (h.links_weights[2], 3)])
                .min(visible);
        // The first (hero) link is the likeliest; each link at most once.
        let mut remaining: Vec<u32> = (0..visible).collect();
        let mut at = first_ms;
        let referer = (r.gateway.is_none() && self.rng.random_bool(0.3))
            .then(|| WEBMAIL_REFERERS[self.rng.random_range(0..WEBMAIL_REFERERS.len())]);
        let headers = self.browser_headers(referer);
        let addr = self.human_address(r);
        for n in 0..count {
            if n > 0 {
                at += ((lognormal(&mut self.rng, h.next_link_median_secs, 1.0) * 1000.0) as i64).max(3000);
            }
            if at >= horizon_ms {
                break;
            }
            let weights: Vec<(f64, usize)> =
                remaining.iter().enumerate().map(|(i, l)| (1.0 / (f64::from(*l) + 1.0), i)).collect();
            let link = remaining.remove(weighted(&mut self.rng, &weights));
            let mut click_at = at;
            if let Some(p) = gateway {
                if self.rng.random_bool(p.time_of_click) {
                    // The gateway checks the link just before the browser follows it.
                    let check_at = at - self.rng.random_range(200..900);
                    self.scan(r, p.vendor, Kind::TimeOfClick, &[link], check_at, session);
                    click_at = at.max(check_at + 1000);
                }
            }
            let repeats = if self.rng.random_bool(h.double_click) { 2 } else { 1 };
            for k in 0..repeats {
                self.requests.push(Request {
                    recipient: r.id.clone(),
                    campaign: r.campaign,
                    link,
                    honeypot: false,
                    actor: Actor::Human,
                    vendor: r.gateway.map(|(v, _)| v),
                    kind: Kind::Click,
                    net: addr.0,
                    ip: addr.1,
                    method: Method::Get,
                    headers: headers.clone(),
                    browser_identical: false,
                    behind_gateway: r.gateway.is_some(),
                    single_link: r.campaign == Campaign::Single,
                    since_send_ms: click_at + k * self.rng.random_range(300..1500),
                    session,
                });
            }
            session += 1;
        }
    }
}

/// Builds the whole blast from its parameters, deterministically.
pub fn plan(params: &Params) -> Plan {
    let mut rng = StdRng::seed_from_u64(params.seed);
    let fleets = VENDORS
        .iter()
        .map(|p| {
            let fleet = (0..p.fleet)
                .map(|_| {
                    if rng.random_bool(p.cloud_share) {
                        (NetKind::Cloud, p.cloud.address(&mut rng))
                    } else {
                        (NetKind::Vendor, p.own.address(&mut rng))
                    }
                })
                .collect();
            (p.vendor, fleet)
        })
        .collect();
    // Protected recipients work at companies of a few to a few hundred people.
    let mut companies: Vec<Company> = Vec::new();
    let mut company_vendor: Vec<Vendor> = Vec::new();
    let mut company_left = 0u32;
    let market: Vec<(f64, Vendor)> = VENDORS.iter().map(|p| (p.market_share, p.vendor)).collect();
    let mut recipients = Vec::with_capacity(params.recipients as usize);
    for i in 0..params.recipients {
        let campaign = if rng.random_bool(params.single_link_share) { Campaign::Single } else { Campaign::Main };
        let gateway = rng.random_bool(params.scanner_share).then(|| {
            if company_left == 0 {
                company_left = (lognormal(&mut rng, 8.0, 1.0).round() as u32).clamp(1, 300);
                let office = (0..rng.random_range(1..=3)).map(|_| networks::CORPORATE.address(&mut rng)).collect();
                companies.push(Company { office, proxied: rng.random_bool(0.15) });
                company_vendor.push(weighted(&mut rng, &market));
            }
            company_left -= 1;
            let c = companies.len() as u32 - 1;
            (company_vendor[c as usize], c)
        });
        let id = match gateway {
            Some((_, c)) => format!("r{i:06}@corp{c:04}.example"),
            None => format!("r{i:06}@mail.example"),
        };
        recipients.push(Recipient { id, campaign, gateway, send_secs: rng.random_range(0.0..params.send_window_secs) });
    }
    let mut b = Builder { params, human: HumanModel::default(), rng, fleets, companies, requests: Vec::new() };
    for r in &recipients {
        b.recipient(r);
    }
    Plan { recipients, requests: b.requests }
}

/// When each request is sent in the replay, in milliseconds after it starts:
/// the blast's timeline divided by `scale`, except that a session (a sweep, a
/// click) keeps its own timing exactly and consecutive sessions of a message
/// stay at least `min_gap_ms` apart (or their true gap, when shorter).
/// Returns one offset per request, in the plan's order.
pub fn compress(plan: &Plan, scale: f64, min_gap_ms: i64) -> Vec<i64> {
    let send_ms: std::collections::HashMap<&str, i64> =
        plan.recipients.iter().map(|r| (r.id.as_str(), (r.send_secs * 1000.0) as i64)).collect();
    // Per message, sessions in start order: (start, end) in virtual ms.
    let mut sessions: std::collections::HashMap<(&str, u32), (i64, i64)> = std::collections::HashMap::new();
    for q in &plan.requests {
        let e = sessions.entry((q.recipient.as_str(), q.session)).or_insert((q.since_send_ms, q.since_send_ms));
        e.0 = e.0.min(q.since_send_ms);
        e.1 = e.1.max(q.since_send_ms);
    }
    let mut by_message: std::collections::HashMap<&str, Vec<(u32, i64, i64)>> = std::collections::HashMap::new();
    for ((r, s), (start, end)) in &sessions {
        by_message.entry(r).or_default().push((*s, *start, *end));
    }
    // Session -> its start in the replay.
    let mut real_start: std::collections::HashMap<(&str, u32), i64> = std::collections::HashMap::new();
    for (r, mut list) in by_message {
        list.sort_by_key(|(_, start, _)| *start);
        let send = send_ms[r];
        let mut prev: Option<(i64, i64)> = None; // (virtual end, real end)
        for (s, start, end) in list {
            let scaled = ((send + start) as f64 / scale) as i64;
            let real = match prev {
                None => scaled,
                Some((v_end, r_end)) => {
                    let gap = start - v_end;
                    if gap <= min_gap_ms {
                        r_end + gap
                    } else {
                        scaled.max(r_end + min_gap_ms)
                    }
                }
            };
            real_start.insert((r, s), real);
            let r_end = real + (end - start);
            prev = Some(match prev {
                Some((v_end, prev_r_end)) if v_end > end => (v_end, prev_r_end),
                _ => (end, r_end),
            });
        }
    }
    plan.requests
        .iter()
        .map(|q| {
            let key = (q.recipient.as_str(), q.session);
            real_start[&key] + (q.since_send_ms - sessions[&key].0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(scanner_share: f64) -> Params {
        Params { recipients: 3000, scanner_share, ..Params::default() }
    }

    #[test]
    fn the_same_seed_gives_the_same_blast_and_another_seed_another() {
        let a = plan(&params(0.4));
        let b = plan(&params(0.4));
        let c = plan(&Params { seed: 2, ..params(0.4) });
        assert_eq!(a.requests, b.requests);
        assert_ne!(a.requests, c.requests);
    }

    #[test]
    fn sweep_starts_follow_the_published_figures() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut starts: Vec<f64> = (0..20_000).map(|_| sweep_start_secs(&mut rng)).collect();
        let share = |lo: f64, hi: f64| starts.iter().filter(|s| **s >= lo && **s < hi).count() as f64 / 20_000.0;
        assert!((share(20.0, 60.0) - 0.66).abs() < 0.015, "20-60 s: {}", share(20.0, 60.0));
        assert!((share(60.0, 300.0) - 0.28).abs() < 0.015, "1-5 min: {}", share(60.0, 300.0));
        let mut in_range: Vec<f64> = starts.iter().copied().filter(|s| (20.0..60.0).contains(s)).collect();
        in_range.sort_by(f64::total_cmp);
        let median = in_range[in_range.len() / 2];
        assert!((median - 43.0).abs() < 1.0, "median of the 20-60 s bursts: {median}");
        starts.sort_by(f64::total_cmp);
        assert!(starts[0] >= 5.0);
    }

    #[test]
    fn a_sweep_covers_the_message_within_two_seconds_and_people_never_see_the_honeypot() {
        let p = plan(&params(0.5));
        let mut sweeps: std::collections::HashMap<(&str, u32), Vec<&Request>> = std::collections::HashMap::new();
        for q in p.requests.iter().filter(|q| q.kind == Kind::Sweep) {
            sweeps.entry((q.recipient.as_str(), q.session)).or_default().push(q);
        }
        assert!(sweeps.len() > 1000, "{} sweeps", sweeps.len());
        for qs in sweeps.values() {
            let lo = qs.iter().map(|q| q.since_send_ms).min().unwrap();
            let hi = qs.iter().map(|q| q.since_send_ms).max().unwrap();
            assert!(hi - lo <= 2000 + 2 * 300, "a sweep spans {} ms", hi - lo);
        }
        let honeypots = p.requests.iter().filter(|q| q.honeypot).count();
        assert!(honeypots > 1000, "{honeypots} honeypot hits");
        assert!(p.requests.iter().filter(|q| q.honeypot).all(|q| q.actor == Actor::Scanner));
    }

    #[test]
    fn the_scanner_share_is_the_share_of_recipients_behind_a_gateway_and_humans_click_one_or_two_links() {
        for share in [0.1, 0.8] {
            let p = plan(&params(share));
            let behind = p.recipients.iter().filter(|r| r.gateway.is_some()).count() as f64 / 3000.0;
            assert!((behind - share).abs() < 0.03, "{behind} behind a gateway, asked {share}");
            let mut per: std::collections::HashMap<&str, std::collections::HashSet<u32>> = Default::default();
            for q in p.requests.iter().filter(|q| q.actor == Actor::Human) {
                per.entry(&q.recipient).or_default().insert(q.link);
            }
            let clickers = per.len() as f64 / 3000.0;
            assert!((0.15..0.25).contains(&clickers), "{clickers} of recipients click");
            let one = per.values().filter(|l| l.len() == 1).count() as f64 / per.len() as f64;
            assert!((0.6..0.9).contains(&one), "{one} click a single link");
        }
    }

    #[test]
    fn the_hard_cases_are_all_there() {
        let p = plan(&params(0.5));
        let humans: Vec<&Request> = p.requests.iter().filter(|q| q.actor == Actor::Human).collect();
        assert!(humans.iter().any(|q| q.since_send_ms < 60_000), "a human within 60 s of the send");
        assert!(humans.iter().any(|q| q.behind_gateway), "a human behind a gateway");
        assert!(humans.iter().any(|q| matches!(q.net, NetKind::Vpn | NetKind::CorporateProxy)), "humans on cloud");
        assert!(humans.iter().any(|q| q.single_link));
        let scanners: Vec<&Request> = p.requests.iter().filter(|q| q.actor == Actor::Scanner).collect();
        assert!(scanners.iter().any(|q| q.browser_identical && q.headers.accept_language.is_some()));
        assert!(scanners.iter().any(|q| q.method == Method::Head));
        assert!(scanners.iter().any(|q| q.kind == Kind::Rescan && q.since_send_ms > 3_600_000));
        assert!(scanners.iter().any(|q| q.kind == Kind::TimeOfClick));
        for v in VENDORS.iter().map(|p| p.vendor) {
            assert!(scanners.iter().any(|q| q.vendor == Some(v)), "{v:?} scans");
        }
    }

    #[test]
    fn compression_keeps_sessions_exact_and_shrinks_the_rest() {
        let p = plan(&params(0.5));
        let real = compress(&p, 30.0, 15_000);
        let mut sessions: std::collections::HashMap<(&str, u32), Vec<usize>> = Default::default();
        for (i, q) in p.requests.iter().enumerate() {
            sessions.entry((q.recipient.as_str(), q.session)).or_default().push(i);
        }
        for idx in sessions.values() {
            let (a, b) = (idx[0], *idx.last().unwrap());
            assert_eq!(
                real[b] - real[a],
                p.requests[b].since_send_ms - p.requests[a].since_send_ms,
                "a session's own timing is kept"
            );
        }
        let virtual_end = p.recipients.iter().map(|r| (r.send_secs * 1000.0) as i64).max().unwrap()
            + p.requests.iter().map(|q| q.since_send_ms).max().unwrap();
        let real_end = *real.iter().max().unwrap();
        assert!(real_end < virtual_end / 10, "replay {real_end} ms for a {virtual_end} ms blast");
        // Consecutive sessions of a message far apart in the blast stay apart in the replay.
        let mut per: std::collections::HashMap<&str, Vec<(i64, i64)>> = Default::default();
        for (q, t) in p.requests.iter().zip(&real) {
            per.entry(&q.recipient).or_default().push((q.since_send_ms, *t));
        }
        for (r, mut starts) in per {
            starts.sort();
            for w in starts.windows(2) {
                let (v, t) = (w[1].0 - w[0].0, w[1].1 - w[0].1);
                assert!(t >= v.min(15_000) - 2000, "{r}: virtual gap {v} ms became {t} ms");
            }
        }
    }
}
