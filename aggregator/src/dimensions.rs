//! What the aggregator adds to each raw event for the breakdowns (issue 16):
//! device class, OS and browser families, mail client, referrer domain, and
//! the link's UTM tags, from `ricochet_signals::dimensions`.
//!
//! Here, not at the edge: a user agent seen for the first time takes ~10 µs
//! to parse against uap-core's regexes, far over the edge's budget per
//! redirect; the aggregator parses each distinct agent once (the cache in
//! `Agents`) off the redirect's path. The country needs the full client
//! address, which only the edge sees, so it is not computed here.

use std::sync::LazyLock;

use ricochet_schemas::{ClickEvent, EventType};
use ricochet_signals::dimensions::{self, Agents};

/// Distinct user agents remembered: a blast's population of mail clients and
/// browsers fits many times over.
const CACHE_ENTRIES: u64 = 65_536;

/// Built on first use (~150 ms: the regexes compile); [`load`] does it at start.
static AGENTS: LazyLock<Agents> =
    LazyLock::new(|| Agents::load(CACHE_ENTRIES).expect("the vendored uap-core regexes and mail-client list load"));

/// Loads the data now, so that the first flush does not pay for it.
pub fn load() {
    LazyLock::force(&AGENTS);
}

/// The dimensions of one event, as the `click_events` columns hold them:
/// names as the API filters on them, `""` for unknown where there is no name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventDimensions {
    pub device: &'static str,
    pub os: String,
    pub browser: String,
    pub mail_client: &'static str,
    pub referrer_domain: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
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
