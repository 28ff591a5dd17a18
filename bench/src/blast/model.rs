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
//!
//! Issue 16 adds who the recipients are and how they read: a country
//! ([`networks::COUNTRY_NETS`], addresses from the vendored country table's
//! ranges of that country), a mail setup ([`CONSUMER_SETUPS`],
//! [`COMPANY_SETUPS`]: mail client, device, browser, the Referer of their
//! clicks, and who fetches their open pixel), and the opens themselves:
//! Apple's privacy proxy at delivery for Apple Mail readers with Mail
//! Privacy Protection on (read or not), a gateway's image fetch during its
//! sweep, Gmail's and Yahoo's image proxies when the message is opened, and
//! desktop and mobile apps fetching from the reader's own address. The shares
//! are assumptions, written beside each.

use std::net::Ipv4Addr;
use std::sync::LazyLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

use super::networks::{self, Eyeball, Geo, NetKind, Pool, COUNTRY_NETS};

/// The vendored country table and the countries' address ranges, loaded on first use.
pub static GEO: LazyLock<Geo> = LazyLock::new(|| Geo::load().expect("the vendored country table loads"));

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
    /// Probability that its sweep also loads the message's images (the open pixel).
    pub fetches_images: f64,
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
        fetches_images: 0.5,
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
        fetches_images: 0.7,
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
        fetches_images: 0.6,
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
        fetches_images: 0.6,
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
        fetches_images: 0.5,
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
const CHROME_WIN: &str = HUMAN_USER_AGENTS[0];
const SAFARI_MAC: &str = HUMAN_USER_AGENTS[2];
const SAFARI_IPHONE: &str = HUMAN_USER_AGENTS[3];
const CHROME_ANDROID: &str = HUMAN_USER_AGENTS[4];
const FIREFOX_WIN: &str = HUMAN_USER_AGENTS[5];
const CHROME_MAC: &str = HUMAN_USER_AGENTS[6];
/// Chrome on an Android tablet: no `Mobile` token.
const CHROME_ANDROID_TABLET: &str =
    "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// Pixel fetchers' user agents (`signals/data/mail-clients.txt` names the sources).
pub const GOOGLE_IMAGE_PROXY_UA: &str =
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
pub const YAHOO_PROXY_UA: &str = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html";
/// Apple Mail Privacy Protection's proxy, as ESPs report it.
pub const APPLE_PROXY_UA: &str = "Mozilla/5.0";
const APPLE_MAIL_MAC_UA: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)";
const APPLE_MAIL_IPHONE_UA: &str =
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148";
const APPLE_MAIL_IPAD_UA: &str =
    "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148";
pub const OUTLOOK_DESKTOP_UA: &str = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)";
/// An assumption: the Outlook app on Android loading images itself under its own name.
const OUTLOOK_ANDROID_UA: &str = "Outlook-Android/2.0";
const THUNDERBIRD_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.5.0";

/// The mail client a recipient reads with, in the breakdowns' names. The
/// truth's own type, not `ricochet_signals`' (which tells it from requests):
/// the truth file is written without the classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailClient {
    Gmail,
    Outlook,
    Yahoo,
    AppleMail,
    Other,
}

impl MailClient {
    pub const ALL: [MailClient; 5] =
        [MailClient::Gmail, MailClient::Outlook, MailClient::Yahoo, MailClient::AppleMail, MailClient::Other];
    pub fn as_str(self) -> &'static str {
        match self {
            MailClient::Gmail => "gmail",
            MailClient::Outlook => "outlook",
            MailClient::Yahoo => "yahoo",
            MailClient::AppleMail => "apple_mail",
            MailClient::Other => "other",
        }
    }
}

/// The device a recipient clicks on, in the breakdowns' names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Desktop,
    Mobile,
    Tablet,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Desktop => "desktop",
            Device::Mobile => "mobile",
            Device::Tablet => "tablet",
        }
    }
}

/// Who loads a reader's images when they open the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Images {
    /// Gmail's image proxy (Google's addresses), once per recipient.
    GmailProxy,
    /// Yahoo's image proxy.
    YahooProxy,
    /// Apple Mail: Apple's privacy proxy at delivery when Mail Privacy
    /// Protection is on ([`APPLE_MPP_SHARE`]); else the app itself, with this
    /// user agent, from the reader's address.
    AppleMail(&'static str),
    /// A mail app, with this user agent, from the reader's address.
    App(&'static str),
    /// Webmail in the reader's browser: the browser's own user agent.
    Browser,
}

/// How a recipient reads mail.
#[derive(Debug)]
pub struct Setup {
    pub name: &'static str,
    pub client: MailClient,
    pub device: Device,
    /// The browser their clicks open in (one per recipient, picked evenly).
    pub browsers: &'static [&'static str],
    /// The Referer of their clicks: the webmail's origin, the app's
    /// `android-app://` referer, or none (desktop and iOS apps send none).
    pub referer: Option<&'static str>,
    pub images: Images,
}

/// Of Apple Mail readers, those with Mail Privacy Protection on (an
/// assumption: ESPs report most Apple Mail opens as MPP).
pub const APPLE_MPP_SHARE: f64 = 0.85;
/// Of recipients who do not click, those who open the message (images on).
pub const READ_RATE: f64 = 0.3;

const fn setup(
    name: &'static str,
    client: MailClient,
    device: Device,
    browsers: &'static [&'static str],
    referer: Option<&'static str>,
    images: Images,
) -> Setup {
    Setup { name, client, device, browsers, referer, images }
}

use Device::{Desktop, Mobile, Tablet};
use MailClient::{AppleMail as Apple, Gmail, Other as OtherClient, Outlook, Yahoo};

const DESKTOP_BROWSERS: &[&str] = &[CHROME_WIN, EDGE_WIN, FIREFOX_WIN, CHROME_MAC];
pub static GMAIL_WEB: Setup =
    setup("gmail_web", Gmail, Desktop, DESKTOP_BROWSERS, Some("https://mail.google.com/"), Images::GmailProxy);
pub static GMAIL_ANDROID: Setup = setup(
    "gmail_android",
    Gmail,
    Mobile,
    &[CHROME_ANDROID],
    Some("android-app://com.google.android.gm/"),
    Images::GmailProxy,
);
pub static GMAIL_ANDROID_TABLET: Setup = setup(
    "gmail_android_tablet",
    Gmail,
    Tablet,
    &[CHROME_ANDROID_TABLET],
    Some("android-app://com.google.android.gm/"),
    Images::GmailProxy,
);
pub static GMAIL_IOS: Setup = setup("gmail_ios", Gmail, Mobile, &[SAFARI_IPHONE], None, Images::GmailProxy);
pub static APPLE_IPHONE: Setup =
    setup("apple_mail_iphone", Apple, Mobile, &[SAFARI_IPHONE], None, Images::AppleMail(APPLE_MAIL_IPHONE_UA));
pub static APPLE_MAC: Setup =
    setup("apple_mail_mac", Apple, Desktop, &[SAFARI_MAC, CHROME_MAC], None, Images::AppleMail(APPLE_MAIL_MAC_UA));
/// iPadOS Safari asks for desktop pages with a Mac user agent: these clicks
/// read as desktop, and the truth says tablet (a loss the user agent forces).
pub static APPLE_IPAD: Setup =
    setup("apple_mail_ipad", Apple, Tablet, &[SAFARI_MAC], None, Images::AppleMail(APPLE_MAIL_IPAD_UA));
pub static OUTLOOK_DESKTOP: Setup =
    setup("outlook_desktop", Outlook, Desktop, &[EDGE_WIN, CHROME_WIN], None, Images::App(OUTLOOK_DESKTOP_UA));
pub static OUTLOOK_COM: Setup =
    setup("outlook_com", Outlook, Desktop, DESKTOP_BROWSERS, Some("https://outlook.live.com/"), Images::Browser);
pub static OUTLOOK_365_WEB: Setup = setup(
    "outlook_365_web",
    Outlook,
    Desktop,
    &[EDGE_WIN, CHROME_WIN],
    Some("https://outlook.office.com/"),
    Images::Browser,
);
pub static OUTLOOK_ANDROID: Setup = setup(
    "outlook_android",
    Outlook,
    Mobile,
    &[CHROME_ANDROID],
    Some("android-app://com.microsoft.office.outlook/"),
    Images::App(OUTLOOK_ANDROID_UA),
);
pub static YAHOO_WEB: Setup =
    setup("yahoo_web", Yahoo, Desktop, DESKTOP_BROWSERS, Some("https://mail.yahoo.com/"), Images::YahooProxy);
pub static YAHOO_ANDROID: Setup = setup(
    "yahoo_android",
    Yahoo,
    Mobile,
    &[CHROME_ANDROID],
    Some("android-app://com.yahoo.mobile.client.android.mail/"),
    Images::YahooProxy,
);
pub static THUNDERBIRD: Setup =
    setup("thunderbird", OtherClient, Desktop, &[FIREFOX_WIN, CHROME_WIN], None, Images::App(THUNDERBIRD_UA));

/// The mail client a click's Referer names, by the setups' own referers
/// (`other` for none): what a click can show of its reader's mail client.
pub fn referer_client(referer: Option<&str>) -> MailClient {
    let all = CONSUMER_SETUPS.iter().chain(COMPANY_SETUPS.iter()).map(|(_, s)| *s);
    referer.and_then(|r| all.into_iter().find(|s| s.referer == Some(r))).map_or(MailClient::Other, |s| s.client)
}

/// Consumers' mail setups and their shares (assumptions, in the rough order
/// of Litmus's published client market shares: Apple Mail and Gmail lead).
pub static CONSUMER_SETUPS: [(f64, &Setup); 13] = [
    (0.16, &GMAIL_WEB),
    (0.12, &GMAIL_ANDROID),
    (0.02, &GMAIL_ANDROID_TABLET),
    (0.06, &GMAIL_IOS),
    (0.22, &APPLE_IPHONE),
    (0.05, &APPLE_MAC),
    (0.03, &APPLE_IPAD),
    (0.04, &OUTLOOK_DESKTOP),
    (0.08, &OUTLOOK_COM),
    (0.03, &OUTLOOK_ANDROID),
    (0.06, &YAHOO_WEB),
    (0.03, &YAHOO_ANDROID),
    (0.10, &THUNDERBIRD),
];

/// Staff of companies behind gateways: mostly Outlook.
pub static COMPANY_SETUPS: [(f64, &Setup); 7] = [
    (0.55, &OUTLOOK_DESKTOP),
    (0.12, &OUTLOOK_365_WEB),
    (0.05, &OUTLOOK_ANDROID),
    (0.10, &APPLE_IPHONE),
    (0.05, &APPLE_MAC),
    (0.10, &GMAIL_WEB),
    (0.03, &GMAIL_ANDROID),
];

pub const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8";
const LANGUAGES: [&str; 5] =
    ["en-US,en;q=0.9", "en-GB,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9", "es-ES,es;q=0.9"];

/// A person's Accept-Language by country.
fn language(country: &str) -> &'static str {
    match country {
        "GB" | "AU" | "IN" => LANGUAGES[1],
        "DE" => LANGUAGES[2],
        "FR" => LANGUAGES[3],
        "ES" => LANGUAGES[4],
        "NL" => "nl-NL,nl;q=0.9,en;q=0.8",
        "BR" => "pt-BR,pt;q=0.9,en;q=0.8",
        _ => LANGUAGES[0],
    }
}

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
    /// A mail provider's privacy proxy fetching a pixel without a reader (Apple's MPP).
    Proxy,
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
    /// A fetch of the open pixel (who fetched it: [`Request::opener`]).
    Open,
}

/// Who fetched an open's pixel: the label of an open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Opener {
    /// Apple Mail Privacy Protection's proxy, at delivery, read or not: a machine.
    AppleProxy,
    /// A security gateway loading the images during its sweep: a machine.
    Gateway,
    /// Gmail's image proxy, when the reader opens the message: a person.
    GmailProxy,
    /// Yahoo's image proxy, when the reader opens the message: a person.
    YahooProxy,
    /// The reader's own mail app or browser, from their address: a person.
    Reader,
}

impl Opener {
    pub const ALL: [Opener; 5] =
        [Opener::AppleProxy, Opener::Gateway, Opener::GmailProxy, Opener::YahooProxy, Opener::Reader];
    pub fn as_str(self) -> &'static str {
        match self {
            Opener::AppleProxy => "apple_proxy",
            Opener::Gateway => "gateway",
            Opener::GmailProxy => "gmail_proxy",
            Opener::YahooProxy => "yahoo_proxy",
            Opener::Reader => "reader",
        }
    }
    /// The group a machine open is reported under (`apple_privacy`,
    /// `scanner`), as `ricochet_schemas::MachineOpen` names them; `None` for a person's.
    pub fn machine_group(self) -> Option<&'static str> {
        match self {
            Opener::AppleProxy => Some("apple_privacy"),
            Opener::Gateway => Some("scanner"),
            Opener::GmailProxy | Opener::YahooProxy | Opener::Reader => None,
        }
    }
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
    /// Where they live (or their company is): a country of [`COUNTRY_NETS`].
    pub country: &'static str,
    pub setup: &'static Setup,
    /// The browser user agent of their clicks.
    pub browser: &'static str,
    /// Apple Mail Privacy Protection on (only Apple Mail readers have it).
    pub mpp: bool,
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
    /// Who fetched the pixel, for an open ([`Kind::Open`]); `None` for a click.
    #[serde(default)]
    pub opener: Option<Opener>,
    /// The truth of the breakdowns: the vendored table's country of the full
    /// address (`""`: none), and the recipient's device and mail client.
    #[serde(default)]
    pub country: String,
    #[serde(default)]
    pub device: Option<Device>,
    #[serde(default)]
    pub mail_client: Option<MailClient>,
}

impl Request {
    pub fn is_open(&self) -> bool {
        self.kind == Kind::Open
    }
    /// Whether a person made it: a human click or a person's open.
    pub fn by_a_person(&self) -> bool {
        self.actor == Actor::Human
    }
}

/// A company behind a gateway: its staff share the office's egress.
struct Company {
    country: &'static str,
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
            let ua = HUMAN_USER_AGENTS[self.rng.random_range(0..HUMAN_USER_AGENTS.len())];
            let lang = LANGUAGES[self.rng.random_range(0..LANGUAGES.len())];
            return browser_headers(ua, lang, None);
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

    /// A request of recipient `r`'s, labelled with the truth of the breakdowns.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        r: &Recipient,
        (actor, kind, opener): (Actor, Kind, Option<Opener>),
        link: u32,
        (net, ip): (NetKind, Ipv4Addr),
        method: Method,
        headers: Headers,
        browser_identical: bool,
        since_send_ms: i64,
        session: u32,
    ) {
        let visible = r.campaign.visible_links(self.params);
        self.requests.push(Request {
            recipient: r.id.clone(),
            campaign: r.campaign,
            link,
            honeypot: kind != Kind::Open && link == visible,
            actor,
            vendor: r.gateway.map(|(v, _)| v),
            kind,
            net,
            ip,
            method,
            headers,
            browser_identical,
            behind_gateway: r.gateway.is_some(),
            single_link: r.campaign == Campaign::Single,
            since_send_ms,
            session,
            opener,
            country: GEO.country(ip),
            device: Some(r.setup.device),
            mail_client: Some(r.setup.client),
        });
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
                self.push(r, (Actor::Scanner, kind, None), link, addr, method, headers.clone(), identical, at, session);
                at += self.rng.random_range(40..300);
            }
        }
        // The gateway renders the message too: its images (the pixel) load
        // within the sweep, from the same place, with the same headers.
        if kind == Kind::Sweep && self.rng.random_bool(p.fetches_images) {
            let at = start_ms + self.rng.random_range(0..=span_ms);
            let open = (Actor::Scanner, Kind::Open, Some(Opener::Gateway));
            self.push(
                r,
                open,
                0,
                addr,
                Method::Get,
                image_headers(headers.user_agent.as_deref()),
                identical,
                at,
                session,
            );
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

    /// Where a person clicks (and reads) from.
    fn human_address(&mut self, r: &Recipient) -> (NetKind, Ipv4Addr) {
        let (kind, pool): (NetKind, &Pool) = match r.gateway {
            Some((_, company)) => {
                let c = &self.companies[company as usize];
                let x: f64 = self.rng.random();
                if x < 0.2 {
                    return (NetKind::Mobile, GEO.address(r.country, Eyeball::Mobile, &mut self.rng));
                } else if x < 0.3 {
                    return (NetKind::Residential, GEO.address(r.country, Eyeball::Residential, &mut self.rng));
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
                    return (NetKind::Residential, GEO.address(r.country, Eyeball::Residential, &mut self.rng));
                } else if x < 0.88 {
                    return (NetKind::Mobile, GEO.address(r.country, Eyeball::Mobile, &mut self.rng));
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

    /// The opens of a message: Apple's proxy at delivery (MPP on, read or
    /// not), and, when the reader opens it at `read_ms`, whoever loads their
    /// images. One fetch per message each: Gmail and Apple cache the image.
    fn opens(
        &mut self,
        r: &Recipient,
        delivered_ms: i64,
        read_ms: Option<i64>,
        own: (NetKind, Ipv4Addr),
        session: &mut u32,
    ) {
        let horizon_ms = (self.params.horizon_secs * 1000.0) as i64;
        let proxy_headers = |ua: &str| Headers {
            user_agent: Some(ua.to_owned()),
            accept: Some("image/*,*/*;q=0.8".into()),
            ..Headers::default()
        };
        let mpp = matches!(r.setup.images, Images::AppleMail(_)) && r.mpp;
        if mpp {
            // Shortly after delivery, whether or not anyone reads it.
            let at = delivered_ms + (lognormal(&mut self.rng, 60.0, 1.0) * 1000.0) as i64;
            let addr = if self.rng.random_bool(0.5) {
                (NetKind::Cloud, networks::APPLE.address(&mut self.rng))
            } else {
                (NetKind::Vpn, networks::PRIVATE_RELAY.address(&mut self.rng))
            };
            if at < horizon_ms {
                let open = (Actor::Proxy, Kind::Open, Some(Opener::AppleProxy));
                self.push(r, open, 0, addr, Method::Get, proxy_headers(APPLE_PROXY_UA), false, at, *session);
                *session += 1;
            }
        }
        let Some(at) = read_ms.filter(|at| *at < horizon_ms) else { return };
        let (opener, addr, headers) = match r.setup.images {
            Images::GmailProxy => (
                Opener::GmailProxy,
                (NetKind::Cloud, networks::GOOGLE_IMAGE_PROXY.address(&mut self.rng)),
                proxy_headers(GOOGLE_IMAGE_PROXY_UA),
            ),
            Images::YahooProxy => (
                Opener::YahooProxy,
                (NetKind::Cloud, networks::YAHOO_PROXY.address(&mut self.rng)),
                proxy_headers(YAHOO_PROXY_UA),
            ),
            // Apple's proxy fetched it already.
            Images::AppleMail(_) if mpp => return,
            Images::AppleMail(ua) | Images::App(ua) => {
                (Opener::Reader, own, image_headers(Some(ua)).with_language(language(r.country)))
            }
            Images::Browser => (Opener::Reader, own, image_headers(Some(r.browser)).with_language(language(r.country))),
        };
        self.push(r, (Actor::Human, Kind::Open, Some(opener)), 0, addr, Method::Get, headers, false, at, *session);
        *session += 1;
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
        let h = self.human.clone();
        let clicks = self.rng.random_bool(self.params.click_rate);
        let first_ms = delivered_ms
            + if self.rng.random_bool(h.fast) {
                self.rng.random_range(5_000..55_000)
            } else {
                (lognormal(&mut self.rng, h.delay_median_secs, h.delay_sigma) * 1000.0) as i64
            };
        let addr = self.human_address(r);
        // A clicker reads the message first; others read it at some point, or never.
        let read_ms = if clicks {
            Some((first_ms - self.rng.random_range(3_000..60_000)).max(delivered_ms + 1000))
        } else if self.rng.random_bool(READ_RATE) {
            Some(delivered_ms + (lognormal(&mut self.rng, 30.0 * 60.0, 1.2) * 1000.0) as i64)
        } else {
            None
        };
        self.opens(r, delivered_ms, read_ms, addr, &mut session);
        if !clicks {
            return;
        }
        let count =
            weighted(&mut self.rng, &[(h.links_weights[0], 1), (h.links_weights[1], 2), (h.links_weights[2], 3)])
                .min(visible);
        // The first (hero) link is the likeliest; each link at most once.
        let mut remaining: Vec<u32> = (0..visible).collect();
        let mut at = first_ms;
        let headers = browser_headers(r.browser, language(r.country), r.setup.referer);
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
                let t = click_at + k * self.rng.random_range(300..1500);
                self.push(
                    r,
                    (Actor::Human, Kind::Click, None),
                    link,
                    addr,
                    Method::Get,
                    headers.clone(),
                    false,
                    t,
                    session,
                );
            }
            session += 1;
        }
    }
}

/// A browser's request headers for a page.
fn browser_headers(ua: &str, language: &str, referer: Option<&str>) -> Headers {
    Headers {
        user_agent: Some(ua.into()),
        accept: Some(BROWSER_ACCEPT.into()),
        accept_language: Some(language.into()),
        referer: referer.map(str::to_owned),
    }
}

/// An image fetch's headers.
fn image_headers(ua: Option<&str>) -> Headers {
    Headers {
        user_agent: ua.map(str::to_owned),
        accept: Some("image/avif,image/webp,image/apng,image/*,*/*;q=0.8".into()),
        ..Headers::default()
    }
}

impl Headers {
    fn with_language(mut self, language: &str) -> Headers {
        self.accept_language = Some(language.into());
        self
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
    let consumer_countries: Vec<(f64, &'static str)> =
        COUNTRY_NETS.iter().map(|c| (c.consumer_weight, c.country)).collect();
    let company_countries: Vec<(f64, &'static str)> =
        COUNTRY_NETS.iter().map(|c| (c.company_weight, c.country)).collect();
    let mut recipients = Vec::with_capacity(params.recipients as usize);
    for i in 0..params.recipients {
        let campaign = if rng.random_bool(params.single_link_share) { Campaign::Single } else { Campaign::Main };
        let gateway = rng.random_bool(params.scanner_share).then(|| {
            if company_left == 0 {
                company_left = (lognormal(&mut rng, 8.0, 1.0).round() as u32).clamp(1, 300);
                let country = weighted(&mut rng, &company_countries);
                let office =
                    (0..rng.random_range(1..=3)).map(|_| GEO.address(country, Eyeball::Business, &mut rng)).collect();
                companies.push(Company { country, office, proxied: rng.random_bool(0.15) });
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
        let send_secs = rng.random_range(0.0..params.send_window_secs);
        let (country, setup) = match gateway {
            Some((_, c)) => (companies[c as usize].country, weighted(&mut rng, &COMPANY_SETUPS)),
            None => (weighted(&mut rng, &consumer_countries), weighted(&mut rng, &CONSUMER_SETUPS)),
        };
        let browser = setup.browsers[rng.random_range(0..setup.browsers.len())];
        let mpp = setup.client == MailClient::AppleMail && rng.random_bool(APPLE_MPP_SHARE);
        recipients.push(Recipient { id, campaign, gateway, send_secs, country, setup, browser, mpp });
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
            for q in p.requests.iter().filter(|q| q.actor == Actor::Human && !q.is_open()) {
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
        let humans: Vec<&Request> = p.requests.iter().filter(|q| q.actor == Actor::Human && !q.is_open()).collect();
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
