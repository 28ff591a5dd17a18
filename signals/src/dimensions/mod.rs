//! What a click or open is broken down by: country, device class, OS and
//! browser families, mail client, referrer domain, and the link's UTM tags.
//!
//! Pure lookups on vendored data, no I/O after [`Dimensioner::load`]:
//! - [`country`]: address → ISO 3166-1 alpha-2, a range-table search;
//! - [`device`]: user agent → device class, OS, browser (uap-core), cached per agent;
//! - [`mail`]: user agent (opens) or Referer host (clicks) → mail client;
//! - [`referrer_domain`], [`utm`]: string parsing of the Referer and of a
//!   link's destination.
//!
//! The address must be the full one, before the edge anonymizes it; only the
//! country leaves. UTM tags belong to the link, not the click: compute them
//! once when the link is created, not per event.

pub mod country;
pub mod device;
pub mod mail;

use std::net::IpAddr;
use std::sync::Arc;

pub use country::{Countries, CountryCode};
pub use device::{AgentDimensions, Agents, DeviceClass};
pub use mail::{Fetcher, MailClient, MailClients};

use crate::SignalsError;

/// The per-request dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dimensions {
    /// `None`: a private, reserved or unlisted address.
    pub country: Option<CountryCode>,
    pub device: DeviceClass,
    /// uap-core's OS family; `Other` when unknown or absent.
    pub os: Arc<str>,
    /// uap-core's browser family; `Other` when unknown or absent.
    pub browser: Arc<str>,
    pub mail_client: MailClient,
    /// The Referer's host, lowercased, without `www.`.
    pub referrer_domain: Option<String>,
}

/// Everything the dimensions need, built once at start (the country table and
/// the uap regexes take a few hundred milliseconds), then shared: every
/// method takes `&self` and is safe to call from many threads. The dimensions'
/// counterpart of [`crate::Classifier`].
pub struct Dimensioner {
    countries: Countries,
    agents: Agents,
}

impl Dimensioner {
    /// The vendored data, with the default user-agent cache.
    pub fn load() -> Result<Self, SignalsError> {
        Self::with_cache_entries(device::DEFAULT_CACHE_ENTRIES)
    }

    /// The vendored data, remembering up to `cache_entries` distinct user agents.
    pub fn with_cache_entries(cache_entries: u64) -> Result<Self, SignalsError> {
        Ok(Dimensioner { countries: Countries::load()?, agents: Agents::load(cache_entries)? })
    }

    /// The dimensions of one click (`is_open` false) or open (true). Never
    /// fails: whatever the request carries, the worst answer is "unknown".
    pub fn dimensions(&self, ip: IpAddr, user_agent: Option<&str>, referer: Option<&str>, is_open: bool) -> Dimensions {
        Dimensions {
            country: self.countries.country(ip),
            ..self.agents.request_dimensions(user_agent, referer, is_open)
        }
    }

    pub fn countries(&self) -> &Countries {
        &self.countries
    }

    pub fn agents(&self) -> &Agents {
        &self.agents
    }
}

impl Agents {
    /// Every dimension but the country, which needs the full address (the
    /// aggregator, which sees only the anonymized one, uses this). Never fails.
    ///
    /// The mail client of an open comes from its user agent (the pixel's
    /// fetcher); of a click, from the Referer (webmail), since a click's user
    /// agent is the recipient's browser.
    pub fn request_dimensions(&self, user_agent: Option<&str>, referer: Option<&str>, is_open: bool) -> Dimensions {
        self.dimensions_with_referer(user_agent, referer.map(|r| self.referer_dimensions(r)), is_open)
    }

    /// [`Self::request_dimensions`], the Referer given as
    /// [`Self::referer_dimensions`] made it (a caller that remembers them
    /// per Referer).
    pub fn dimensions_with_referer(
        &self,
        user_agent: Option<&str>,
        referer: Option<(Option<String>, MailClient)>,
        is_open: bool,
    ) -> Dimensions {
        let agent = match user_agent {
            Some(ua) if !ua.trim().is_empty() => self.dimensions(ua),
            _ => self.absent(),
        };
        let (referrer_domain, click_mail_client) = referer.unwrap_or((None, MailClient::Other));
        Dimensions {
            country: None,
            device: agent.device,
            os: agent.os,
            browser: agent.browser,
            mail_client: if is_open { agent.open_mail_client } else { click_mail_client },
            referrer_domain,
        }
    }

    /// What a Referer says: its referrer domain, and the mail client its
    /// host names if a click carries it (webmail). A function of the Referer
    /// alone, which a caller may remember per Referer
    /// ([`Self::dimensions_with_referer`]): parsing the URL is most of the cost.
    pub fn referer_dimensions(&self, referer: &str) -> (Option<String>, MailClient) {
        let host = referrer_host(referer);
        let client = host.as_deref().map_or(MailClient::Other, |h| self.mail_clients().from_referer_host(h));
        (host.map(strip_www), client)
    }
}

/// The referrer domain of a Referer header value: its host, lowercased, without
/// a leading `www.` or a trailing dot. `None` when absent or not an absolute
/// http(s) or android-app URL. (Host minus `www.`, not the registrable eTLD+1:
/// no public-suffix list is vendored yet, so `news.bbc.co.uk` stays as it is.)
pub fn referrer_domain(referer: &str) -> Option<String> {
    referrer_host(referer).map(strip_www)
}

/// The Referer's host as the `url` crate normalizes it (lowercase, IDNA as
/// punycode, IPv6 in brackets), trailing dot removed.
fn referrer_host(referer: &str) -> Option<String> {
    let url = url::Url::parse(referer.trim()).ok()?;
    // android-app://<package>/: Chrome on Android's Referer for links opened from an app.
    if !matches!(url.scheme(), "http" | "https" | "android-app") {
        return None;
    }
    let host = url.host_str()?.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_owned())
}

fn strip_www(host: String) -> String {
    match host.strip_prefix("www.") {
        Some(rest) if !rest.is_empty() => rest.to_owned(),
        _ => host,
    }
}

/// Longest UTM value kept, in characters: enough for any real campaign name,
/// and a bound on what one link can make the breakdown tables store.
pub const MAX_UTM_CHARS: usize = 100;

/// A link's UTM tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Utm {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
}

/// The `utm_source`, `utm_medium` and `utm_campaign` of a destination URL's
/// query string: percent- and `+`-decoded (form encoding, as analytics tools
/// read them), control characters dropped, trimmed, cut to [`MAX_UTM_CHARS`].
/// Names are matched exactly (lowercase), as Google Analytics does. A repeated
/// tag keeps its first non-empty value; absent or empty is `None`.
pub fn utm(destination: &str) -> Utm {
    // The fragment first: a `?` after the `#` starts no query.
    let before_fragment = destination.split_once('#').map_or(destination, |(d, _)| d);
    let Some((_, query)) = before_fragment.split_once('?') else {
        return Utm::default();
    };
    let mut tags = Utm::default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*name {
            "utm_source" => &mut tags.source,
            "utm_medium" => &mut tags.medium,
            "utm_campaign" => &mut tags.campaign,
            _ => continue,
        };
        if slot.is_none() {
            *slot = clean_tag(&value);
        }
    }
    tags
}

fn clean_tag(value: &str) -> Option<String> {
    let value: String = value.chars().filter(|c| !c.is_control()).collect();
    let value = value.trim();
    (!value.is_empty()).then(|| value.chars().take(MAX_UTM_CHARS).collect::<String>().trim_end().to_owned())
}

#[cfg(test)]
mod tests;
