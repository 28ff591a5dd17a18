//! What the aggregator adds to each raw event for the breakdowns (issue 16):
//! country, device class, OS and browser families, mail client, referrer
//! domain, and the link's UTM tags, from `ricochet_signals::dimensions`.
//!
//! Here, not at the edge: a user agent seen for the first time takes ~10 µs
//! to parse against uap-core's regexes, and an IPv6 country lookup 0.3-0.7 µs,
//! both over the edge's budget of 0.2 µs per redirect; the aggregator parses
//! each distinct agent once (the cache in `Agents`) off the redirect's path.
//!
//! The country is looked up from the address the event carries, which the
//! edge has already anonymized to its /24 (IPv4) or /48 (IPv6). The country
//! table is coarser than that almost everywhere: of the 14.5 M IPv4 /24s it
//! covers, 15,262 (0.1%) hold ranges of two countries, and 6,125 of its
//! 33 billion IPv6 /48s (measured on the vendored table, 2026-12). Inside those,
//! the lookup answers the country of the block's first address. So the
//! country costs the edge nothing and the full address is never kept.

use std::net::IpAddr;
use std::sync::LazyLock;

use ricochet_schemas::{ClickEvent, EventType};
use ricochet_signals::dimensions::{self, Agents, Countries, Fetcher, MailClient};

/// Distinct user agents remembered: a blast's population of mail clients and
/// browsers fits many times over.
const CACHE_ENTRIES: u64 = 65_536;

/// Built on first use (~150 ms: the regexes compile); [`load`] does it at start.
static AGENTS: LazyLock<Agents> =
    LazyLock::new(|| Agents::load(CACHE_ENTRIES).expect("the vendored uap-core regexes and mail-client list load"));

/// Built on first use (~0.2 s: 540 k ranges); [`load`] does it at start.
static COUNTRIES: LazyLock<Countries> = LazyLock::new(|| Countries::load().expect("the vendored country table loads"));

/// Loads the data now, so that the first flush does not pay for it.
pub fn load() {
    LazyLock::force(&AGENTS);
    LazyLock::force(&COUNTRIES);
}

/// Who fetched an open's pixel, as the open's verdict needs it
/// ([`crate::verdict::per_open`]): the mail client its user agent names, and
/// whether it is the provider's image proxy.
pub fn pixel_fetcher(event: &ClickEvent) -> Fetcher {
    match event.user_agent.as_deref() {
        Some(ua) if !ua.trim().is_empty() => {
            let d = AGENTS.dimensions(ua);
            Fetcher { client: d.open_mail_client, proxy: d.open_proxy }
        }
        _ => Fetcher { client: MailClient::Other, proxy: false },
    }
}

/// The ISO 3166 alpha-2 code of the event's (anonymized) address; `""` when
/// there is none, it does not parse, or the table has no country for it.
fn country(event: &ClickEvent) -> String {
    event
        .client_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .and_then(|ip| COUNTRIES.country(ip))
        .map_or_else(String::new, |c| c.as_str().to_owned())
}

/// The dimensions of one event, as the `click_events` columns hold them:
/// names as the API filters on them, `""` for unknown where there is no name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventDimensions {
    pub country: String,
    pub device: &'static str,
    pub os: String,
    pub browser: String,
    pub mail_client: &'static str,
    pub referrer_domain: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
}

impl EventDimensions {
    /// The values in [`crate::rollup::DIMENSIONS`] order.
    pub fn values(&self) -> [&str; crate::rollup::DIMENSIONS.len()] {
        [
            &self.country,
            self.device,
            &self.os,
            &self.browser,
            self.mail_client,
            &self.referrer_domain,
            &self.utm_source,
            &self.utm_medium,
            &self.utm_campaign,
        ]
    }
}

pub fn of(event: &ClickEvent) -> EventDimensions {
    let is_open = matches!(event.event_type, EventType::Open);
    let d = AGENTS.request_dimensions(event.user_agent.as_deref(), event.referer.as_deref(), is_open);
    // Most destinations carry no UTM tags: skip parsing their query then.
    let utm = if event.destination_url.contains("utm_") {
        dimensions::utm(&event.destination_url)
    } else {
        Default::default()
    };
    EventDimensions {
        country: country(event),
        device: d.device.as_str(),
        os: d.os.to_string(),
        browser: d.browser.to_string(),
        mail_client: d.mail_client.as_str(),
        referrer_domain: d.referrer_domain.unwrap_or_default(),
        utm_source: utm.source.unwrap_or_default(),
        utm_medium: utm.medium.unwrap_or_default(),
        utm_campaign: utm.campaign.unwrap_or_default(),
    }
}
