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

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use foldhash::{HashMap, HashMapExt};
use ricochet_schemas::{ClickEvent, EventType};
use ricochet_signals::dimensions::{self, Agents, Countries, CountryCode, DeviceClass, Fetcher, MailClient};

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

/// A dimension's value as the batch keeps it: shared, so that an event's
/// copy of it, and each combination's ([`crate::rollup`]), is a reference
/// count rather than an allocation (a flush holds thousands of copies of a
/// few dozen values).
pub type Value = Arc<str>;

static EMPTY: LazyLock<Value> = LazyLock::new(|| Value::from(""));
/// Every two-letter code, by [`country_index`].
static COUNTRY_VALUES: LazyLock<Vec<Value>> = LazyLock::new(|| {
    (b'A'..=b'Z').flat_map(|a| (b'A'..=b'Z').map(move |b| Value::from(format!("{}{}", a as char, b as char)))).collect()
});
static DEVICE_VALUES: LazyLock<[Value; 5]> = LazyLock::new(|| DeviceClass::ALL.map(|d| Value::from(d.as_str())));
static MAIL_CLIENT_VALUES: LazyLock<[Value; 5]> = LazyLock::new(|| MailClient::ALL.map(|c| Value::from(c.as_str())));

/// Where a shared value's string is: equal addresses, equal values (while
/// both are alive). Equal values may have different addresses (parsed
/// twice); a fold that must count each value once compares strings after.
pub fn address(value: &Value) -> usize {
    Arc::as_ptr(value).cast::<u8>() as usize
}

fn empty() -> Value {
    EMPTY.clone()
}

fn shared(s: Option<String>) -> Value {
    s.map_or_else(empty, Value::from)
}

fn country_index(code: CountryCode) -> Option<usize> {
    let [a, b] = code.as_bytes();
    let letter = |x: u8| x.is_ascii_uppercase().then(|| usize::from(x - b'A'));
    Some(letter(a)? * 26 + letter(b)?)
}

/// The ISO 3166 alpha-2 code of the event's (anonymized) address; `""` when
/// there is none, it does not parse, or the table has no country for it.
fn country(event: &ClickEvent) -> Value {
    let code = event.client_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()).and_then(|ip| COUNTRIES.country(ip));
    code.map_or_else(empty, country_value)
}

fn country_value(code: CountryCode) -> Value {
    match country_index(code) {
        Some(i) => COUNTRY_VALUES[i].clone(),
        None => Value::from(code.as_str()),
    }
}

/// The dimensions of one event, as the `click_events` columns hold them:
/// names as the API filters on them, `""` for unknown where there is no name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDimensions {
    pub country: Value,
    pub device: DeviceClass,
    pub os: Value,
    pub browser: Value,
    pub mail_client: MailClient,
    pub referrer_domain: Value,
    pub utm_source: Value,
    pub utm_medium: Value,
    pub utm_campaign: Value,
}

impl EventDimensions {
    /// The values in [`crate::rollup::DIMENSIONS`] order.
    pub fn values(&self) -> [&str; crate::rollup::DIMENSIONS.len()] {
        [
            &self.country,
            self.device.as_str(),
            &self.os,
            &self.browser,
            self.mail_client.as_str(),
            &self.referrer_domain,
            &self.utm_source,
            &self.utm_medium,
            &self.utm_campaign,
        ]
    }

    /// The addresses of [`Self::shared_values`], which tell the values
    /// apart without reading them (see [`address`]).
    pub fn addresses(&self) -> [usize; crate::rollup::DIMENSIONS.len()] {
        [
            address(&self.country),
            address(&DEVICE_VALUES[self.device as usize]),
            address(&self.os),
            address(&self.browser),
            address(&MAIL_CLIENT_VALUES[self.mail_client as usize]),
            address(&self.referrer_domain),
            address(&self.utm_source),
            address(&self.utm_medium),
            address(&self.utm_campaign),
        ]
    }

    /// The same values, shared.
    pub fn shared_values(&self) -> [Value; crate::rollup::DIMENSIONS.len()] {
        [
            self.country.clone(),
            DEVICE_VALUES[self.device as usize].clone(),
            self.os.clone(),
            self.browser.clone(),
            MAIL_CLIENT_VALUES[self.mail_client as usize].clone(),
            self.referrer_domain.clone(),
            self.utm_source.clone(),
            self.utm_medium.clone(),
            self.utm_campaign.clone(),
        ]
    }
}

/// The dimensions of one event, every string parsed afresh ([`Memo::of`]
/// remembers the parses that repeat).
pub fn of(event: &ClickEvent) -> EventDimensions {
    of_with(event, link_utm, referer_of)
}

/// A link's UTM tags (source, medium, campaign), shared.
type SharedUtm = [Value; 3];

/// The UTM tags of a link's destination.
fn link_utm(destination: &str) -> SharedUtm {
    // Most destinations carry no UTM tags: skip parsing their query then.
    if destination.contains("utm_") {
        let utm = dimensions::utm(destination);
        [shared(utm.source), shared(utm.medium), shared(utm.campaign)]
    } else {
        [empty(), empty(), empty()]
    }
}

/// A Referer's domain and the mail client it names.
fn referer_of(referer: &str) -> (Value, MailClient) {
    let (domain, client) = AGENTS.referer_dimensions(referer);
    (shared(domain), client)
}

/// [`of`], with the two URL parses given: the destination's UTM tags and
/// the Referer's domain and mail client.
fn of_with(
    event: &ClickEvent,
    utm: impl FnOnce(&str) -> SharedUtm,
    referer: impl FnOnce(&str) -> (Value, MailClient),
) -> EventDimensions {
    let is_open = matches!(event.event_type, EventType::Open);
    let (referrer_domain, referer_client) = match event.referer.as_deref() {
        Some(r) => {
            let (domain, client) = referer(r);
            (domain, Some(client))
        }
        None => (empty(), None),
    };
    // The signals decide whose mail client counts (the pixel's agent for an
    // open, the Referer for a click); the domain is shared from above.
    let d = AGENTS.dimensions_with_referer(event.user_agent.as_deref(), referer_client.map(|c| (None, c)), is_open);
    let [utm_source, utm_medium, utm_campaign] = utm(&event.destination_url);
    EventDimensions {
        country: country(event),
        device: d.device,
        os: d.os,
        browser: d.browser,
        mail_client: d.mail_client,
        referrer_domain,
        utm_source,
        utm_medium,
        utm_campaign,
    }
}

/// Distinct destinations and Referers [`Memo`] remembers, each: a blast's
/// links and webmail origins fit many times over.
const MEMO_ENTRIES: usize = 4_096;

/// What [`of`] parses that repeats from event to event, remembered: a link's
/// UTM tags by its destination (the tags are the link's, and every click of
/// it carries the same destination), and a Referer's domain and mail client
/// by the Referer (a few webmail origins carry most of a blast's). Both are
/// functions of one string, and a URL parse costs several times what a hash
/// of it does. Bounded: when a map fills it starts over.
#[derive(Debug)]
pub struct Memo {
    utm: Recent<SharedUtm>,
    referers: Recent<(Value, MailClient)>,
}

impl Default for Memo {
    fn default() -> Self {
        Memo::with_entries(MEMO_ENTRIES)
    }
}

impl Memo {
    /// Remembering up to `entries` destinations and as many Referers.
    pub fn with_entries(entries: usize) -> Self {
        Memo { utm: Recent::new(entries), referers: Recent::new(entries) }
    }

    /// The same as [`of`].
    pub fn of(&mut self, event: &ClickEvent) -> EventDimensions {
        let Memo { utm, referers } = self;
        of_with(event, |destination| utm.get(destination, link_utm), |referer| referers.get(referer, referer_of))
    }
}

/// Values by the string they were made from, at most `entries`.
#[derive(Debug)]
struct Recent<V> {
    map: hashbrown::HashMap<Box<str>, V, foldhash::fast::RandomState>,
    entries: usize,
}

impl<V: Clone> Recent<V> {
    fn new(entries: usize) -> Self {
        Recent { map: Default::default(), entries: entries.max(1) }
    }

    fn get(&mut self, key: &str, make: impl FnOnce(&str) -> V) -> V {
        if let Some(v) = self.map.get(key) {
            return v.clone();
        }
        if self.map.len() >= self.entries {
            self.map.clear();
        }
        let v = make(key);
        self.map.insert(key.into(), v.clone());
        v
    }
}

/// Recipients whose mail client [`Openers`] remembers, per generation: each
/// takes at most 2^20 slots of 17 bytes (~18 MB), both ~36 MB, and a
/// million-recipient blast's openers fit in the two.
const OPENERS_PER_GENERATION: usize = 1 << 19;

/// The mail client each recipient was last seen opening a message with, so
/// that their clicks name it too.
///
/// Why: a click names its mail client only through a webmail Referer
/// (mail.google.com, outlook.live.com, ...). The apps people read mail in
/// (Apple Mail, Outlook, the Gmail and Yahoo apps) open links in a browser
/// with no Referer, so most clicks would read `other`. The pixel of the same
/// recipient's open does name the client (Apple's privacy proxy, Gmail's and
/// Yahoo's image proxies, Outlook's agent), and a message is opened before a
/// link in it is clicked. So a click with no webmail Referer takes the client
/// of its recipient's latest open, of any of the client's campaigns, that this
/// member has read by the time the click's verdict is final; an open names
/// only a client it recognises, never `other` (a gateway's image fetch says
/// nothing about the reader).
///
/// Opens are remembered as they are read ([`Openers::remember`], from
/// `Protocol::hold`), clicks attributed as they are released, after the
/// verdict delay ([`Openers::attribute`]): Apple's privacy proxy fetches a
/// message's pixel when the device downloads it, which can come after the
/// reader's first click, and the delay the click waits for its verdict lets
/// that open teach the click its client.
///
/// Bounded by two generations: when the newer fills, the older is dropped, so
/// a recipient not seen for a generation is forgotten. Like the verdicts'
/// context it is not stored: after an assignment it starts empty, and until a
/// recipient opens again their clicks without Referer read `other`. That loses
/// attribution, never counts: each event is still counted once, under the
/// value it was stored with.
#[derive(Debug)]
pub struct Openers {
    newer: HashMap<u64, MailClient>,
    older: HashMap<u64, MailClient>,
    per_generation: usize,
}

impl Default for Openers {
    fn default() -> Self {
        Openers::with_capacity(OPENERS_PER_GENERATION)
    }
}

impl Openers {
    pub fn with_capacity(per_generation: usize) -> Self {
        Openers { newer: HashMap::new(), older: HashMap::new(), per_generation: per_generation.max(1) }
    }

    /// Remembers the mail client an open's pixel names, if it names one:
    /// call as each open is read, before the clicks held with it are
    /// released ([`Self::attribute`]).
    pub fn remember(&mut self, event: &ClickEvent) {
        if event.event_type != EventType::Open {
            return;
        }
        let Some(key) = Self::key(event) else { return };
        let client = pixel_fetcher(event).client;
        if client == MailClient::Other {
            return;
        }
        if self.newer.len() >= self.per_generation && !self.newer.contains_key(&key) {
            self.older = std::mem::replace(&mut self.newer, HashMap::with_capacity(self.per_generation.min(1 << 16)));
        }
        self.newer.insert(key, client);
    }

    /// Fills in the mail client of a click that names none from its
    /// recipient's latest open remembered so far.
    pub fn attribute(&self, event: &ClickEvent, dimensions: &mut EventDimensions) {
        if event.event_type != EventType::Click || dimensions.mail_client != MailClient::Other {
            return;
        }
        let Some(key) = Self::key(event) else { return };
        if let Some(client) = self.newer.get(&key).or_else(|| self.older.get(&key)) {
            dimensions.mail_client = *client;
        }
    }

    fn key(event: &ClickEvent) -> Option<u64> {
        let recipient = event.recipient_id.as_ref()?;
        Some(
            foldhash::quality::FixedState::with_seed(0x0be4e45)
                .hash_one((event.client_id.as_str(), recipient.as_str())),
        )
    }

    /// Recipients remembered (both generations; one may be in both).
    pub fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }

    pub fn is_empty(&self) -> bool {
        self.newer.is_empty() && self.older.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ricochet_schemas::{CampaignId, ClientId, EventId, LinkId, RecipientId, RecipientToken, Signals};

    const CHROME: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    const OUTLOOK_DESKTOP: &str = "Mozilla/4.0 (compatible; ms-office; MSOffice 16)";
    const APPLE_PROXY: &str = "Mozilla/5.0";
    const GMAIL_PROXY: &str =
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";

    fn event(client: &str, recipient: &str, open: bool, ua: &str, referer: Option<&str>) -> ClickEvent {
        ClickEvent {
            event_id: EventId::mint(),
            event_time_ms: 1_000,
            client_id: ClientId::parse(client).unwrap(),
            campaign_id: CampaignId::parse("camp").unwrap(),
            link_id: LinkId::parse("l1").unwrap(),
            recipient_id: Some(RecipientId::parse(recipient).unwrap()),
            destination_url: "https://x.example/".into(),
            http_method: "GET".into(),
            user_agent: Some(ua.into()),
            referer: referer.map(Into::into),
            client_ip: None,
            edge_node: "e".into(),
            event_type: if open { EventType::Open } else { EventType::Click },
            is_prefetch: false,
            recipient_token: RecipientToken::Absent,
            signals: Signals::default(),
        }
    }

    /// The mail client stored for `e` after `openers` saw what came before.
    fn stored(openers: &mut Openers, e: &ClickEvent) -> MailClient {
        let mut d = of(e);
        openers.remember(e);
        openers.attribute(e, &mut d);
        d.mail_client
    }

    #[test]
    fn a_click_without_a_webmail_referer_names_the_client_its_recipient_opened_with() {
        let mut o = Openers::default();
        assert_eq!(stored(&mut o, &event("acme", "ann", false, CHROME, None)), MailClient::Other, "nothing seen yet");
        assert_eq!(stored(&mut o, &event("acme", "ann", true, APPLE_PROXY, None)), MailClient::AppleMail);
        assert_eq!(stored(&mut o, &event("acme", "bob", true, OUTLOOK_DESKTOP, None)), MailClient::Outlook);
        assert_eq!(stored(&mut o, &event("acme", "ann", false, CHROME, None)), MailClient::AppleMail);
        assert_eq!(stored(&mut o, &event("acme", "bob", false, CHROME, None)), MailClient::Outlook);
        // Another recipient, and the same recipient id at another client, learn nothing.
        assert_eq!(stored(&mut o, &event("acme", "cyd", false, CHROME, None)), MailClient::Other);
        assert_eq!(stored(&mut o, &event("other", "ann", false, CHROME, None)), MailClient::Other);
        // A webmail Referer is the click's own evidence and wins.
        let webmail = event("acme", "ann", false, CHROME, Some("https://mail.google.com/"));
        assert_eq!(stored(&mut o, &webmail), MailClient::Gmail);
        // The latest open counts: ann now reads in Gmail.
        assert_eq!(stored(&mut o, &event("acme", "ann", true, GMAIL_PROXY, None)), MailClient::Gmail);
        assert_eq!(stored(&mut o, &event("acme", "ann", false, CHROME, None)), MailClient::Gmail);
    }

    #[test]
    fn an_open_by_an_unknown_fetcher_teaches_nothing() {
        // A security gateway fetching images with a browser's agent says
        // nothing about the reader's mail client.
        let mut o = Openers::default();
        assert_eq!(stored(&mut o, &event("acme", "ann", true, OUTLOOK_DESKTOP, None)), MailClient::Outlook);
        assert_eq!(stored(&mut o, &event("acme", "ann", true, CHROME, None)), MailClient::Other);
        assert_eq!(stored(&mut o, &event("acme", "ann", false, CHROME, None)), MailClient::Outlook);
    }

    proptest::proptest! {
        /// Whatever the events and however often their destinations and
        /// Referers repeat (past the memo's bound too), the remembered parses
        /// give each event the dimensions a fresh parse does.
        #[test]
        fn remembered_parses_give_the_dimensions_of_fresh_ones(
            events in proptest::collection::vec((0..3usize, 0..6usize, 0..64usize, proptest::bool::ANY), 1..300),
            entries in 1..32usize,
        ) {
            const REFERERS: [&str; 6] = [
                "https://mail.google.com/",
                "https://outlook.live.com/mail/0/",
                "android-app://com.google.android.gm/",
                "https://www.news.example/a?b#c",
                "not a url",
                "",
            ];
            // A small memo, so that it fills and starts over within a case.
            let mut memo = Memo::with_entries(entries);
            for (agent, referer, link, open) in events {
                let mut e = event("acme", "r", open, [CHROME, OUTLOOK_DESKTOP, GMAIL_PROXY][agent], Some(REFERERS[referer]));
                // Half the links tagged, some tags repeated, one percent-encoded.
                e.destination_url = match link % 4 {
                    0 => format!("https://shop.example/{link}"),
                    1 => format!("https://shop.example/?utm_source=news&utm_medium=email&utm_campaign=c{link}"),
                    2 => format!("https://shop.example/p?utm_campaign=Black%20Friday+{}", link % 7),
                    _ => format!("https://shop.example/#x?utm_source={link}"),
                };
                if referer == 5 {
                    e.referer = None;
                }
                proptest::prop_assert_eq!(memo.of(&e), of(&e));
            }
            proptest::prop_assert!(memo.utm.map.len() <= entries && memo.referers.map.len() <= entries);
        }
    }

    /// The shared values are the values, for every device class, mail
    /// client and country code the tables hold.
    #[test]
    fn shared_values_are_the_values() {
        let mut d = of(&event("acme", "r", false, CHROME, Some("https://mail.google.com/")));
        for (device, client) in DeviceClass::ALL.into_iter().zip(MailClient::ALL) {
            (d.device, d.mail_client) = (device, client);
            for code in ["DE", "US", "AA", "ZZ"] {
                d.country = country_value(CountryCode::parse(code).unwrap());
                let shared = d.shared_values();
                assert_eq!(shared.each_ref().map(|v| &**v), d.values());
            }
        }
    }

    #[test]
    fn openers_are_bounded_by_two_generations() {
        let mut o = Openers::with_capacity(2);
        for r in ["r0", "r1", "r2", "r3", "r4"] {
            stored(&mut o, &event("acme", r, true, OUTLOOK_DESKTOP, None));
            assert!(o.len() <= 4, "{}", o.len());
        }
        // r0 and r1 filled the first generation, r2 and r3 the second; r4 dropped the first.
        assert_eq!(stored(&mut o, &event("acme", "r0", false, CHROME, None)), MailClient::Other);
        for r in ["r2", "r3", "r4"] {
            assert_eq!(stored(&mut o, &event("acme", r, false, CHROME, None)), MailClient::Outlook, "{r}");
        }
    }
}
