//! What a request says about who sent it: the edge's bot signals.
//!
//! The edge answers every request with its redirect and never blocks; this
//! crate only *records* what the request shows, as a `ricochet_schemas::Signals`
//! value for the click event, and the aggregator decides the verdict. Each
//! signal is cheap: the user-agent class is cached per distinct user agent, the
//! network is a binary search in a sorted range table, the rest are header
//! lookups. The full client address is classified here, before the edge
//! anonymizes it; only the class, the ASN and a network name leave the edge.
//!
//! - [`headers`]: prefetch headers, Accept / Accept-Language, scanner referers.
//! - [`user_agent`]: browser, bot, preview fetcher, HTTP client or absent.
//! - [`network`]: the address's ASN and class (scanner vendor, cloud, other).
//! - [`allow_list`]: a client's own networks, parsed once per client record.
//! - [`data`]: the vendored lists in `signals/data/` (see `data/SOURCES.md`).
//! - [`ranges`]: the sorted IP range tables the ASN and the country come from.
//! - [`dimensions`]: what a click or open is broken down by (country, device,
//!   OS, browser, mail client, referrer domain, UTM tags), not whether it is a bot.
//!
//! The bench reads the same vendor ranges through [`network::Networks::scanner_cidrs`]
//! to simulate scanners from where they really are.

pub mod allow_list;
pub mod data;
pub mod dimensions;
pub mod headers;
pub mod network;
pub mod ranges;
pub mod user_agent;

use std::net::IpAddr;

use http::{HeaderMap, Method};
use ricochet_schemas::{ClientRecord, Signals, UaClass};

pub use allow_list::AllowLists;
pub use dimensions::{CountryCode, DeviceClass, Dimensioner, Dimensions, MailClient};
pub use network::{NetworkVerdict, Networks};
pub use user_agent::UserAgents;

#[derive(Debug, thiserror::Error)]
pub enum SignalsError {
    #[error("{file} line {line}: {problem}")]
    BadData { file: &'static str, line: usize, problem: String },
    #[error("{file}: {source}")]
    Io {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("user-agent pattern {pattern:?} does not compile: {problem}")]
    BadPattern { pattern: String, problem: String },
    #[error("uap-core regexes: {problem}")]
    BadUapRegexes { problem: String },
}

/// Everything the edge needs to compute a request's signals, loaded once at start.
pub struct Classifier {
    pub user_agents: UserAgents,
    pub networks: Networks,
    pub allow_lists: AllowLists,
}

/// The parts of a request the signals look at.
pub struct Observed<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The full client address, not yet anonymized.
    pub ip: IpAddr,
    /// From a recipient token that verified; `None` otherwise.
    pub sent_at_ms: Option<i64>,
}

impl Classifier {
    /// Parses the vendored data (the ASN table takes ~100-200 ms; do it once).
    pub fn load() -> Result<Self, SignalsError> {
        Ok(Classifier {
            user_agents: UserAgents::load(user_agent::DEFAULT_CACHE_ENTRIES)?,
            networks: Networks::load()?,
            allow_lists: AllowLists::default(),
        })
    }

    /// The signals of one click or open on a link (a `honeypot` one or not).
    /// Never fails and never panics: whatever the request carries, the worst
    /// outcome is "no evidence".
    pub fn observe(&self, req: &Observed<'_>, honeypot: bool, client: Option<&ClientRecord>) -> Signals {
        let network = self.networks.classify(req.ip);
        Signals {
            prefetch_header: headers::prefetch_header(req.headers),
            ua_class: self.user_agents.classify_header(req.headers),
            has_accept: req.headers.contains_key(http::header::ACCEPT),
            has_accept_language: req.headers.contains_key(http::header::ACCEPT_LANGUAGE),
            scanner_referer: headers::scanner_referer(req.headers),
            network_class: network.class,
            network_name: network.name.map(str::to_owned),
            asn: network.asn,
            network_allow_listed: client.is_some_and(|c| self.allow_lists.contains(c, req.ip)),
            sent_at_ms: req.sent_at_ms,
            honeypot,
        }
    }
}

/// The v2 `is_prefetch` flag, from the v3 signals: a HEAD request, a prefetch
/// header, or a link-preview fetcher. Kept so v2 readers count what they did.
pub fn is_prefetch(method: &Method, signals: &Signals) -> bool {
    method == Method::HEAD || signals.prefetch_header || signals.ua_class == UaClass::Preview
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ricochet_schemas::{ClientId, ClientStatus, NetworkClass};
    use std::sync::OnceLock;

    fn classifier() -> &'static Classifier {
        static C: OnceLock<Classifier> = OnceLock::new();
        C.get_or_init(|| Classifier::load().unwrap())
    }

    fn client(nets: &[&str]) -> ClientRecord {
        ClientRecord {
            client_id: ClientId::parse("acme").unwrap(),
            status: ClientStatus::Active,
            fallback_url: None,
            hot_spread: 1,
            updated_at_ms: 0,
            allowed_networks: nets.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn a_browser_at_home_and_a_scanner_at_microsoft() {
        let browser = headers(&[
            ("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
            ("accept", "text/html"),
            ("accept-language", "de-DE"),
        ]);
        let home = Observed {
            method: &Method::GET,
            headers: &browser,
            ip: "79.192.0.1".parse().unwrap(),
            sent_at_ms: Some(42),
        };
        let s = classifier().observe(&home, false, Some(&client(&[])));
        assert_eq!(s.ua_class, UaClass::Browser);
        assert!(s.has_accept && s.has_accept_language && !s.prefetch_header && !s.scanner_referer && !s.honeypot);
        assert_eq!((s.network_class, s.asn, s.sent_at_ms), (NetworkClass::Other, 3320, Some(42)));
        assert!(!is_prefetch(&Method::GET, &s));

        let scanner =
            headers(&[("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0.0.0 Safari/537.36")]);
        let eop =
            Observed { method: &Method::HEAD, headers: &scanner, ip: "40.92.3.4".parse().unwrap(), sent_at_ms: None };
        let s = classifier().observe(&eop, true, Some(&client(&["40.92.0.0/15"])));
        assert!(!s.has_accept && !s.has_accept_language && s.honeypot && s.network_allow_listed);
        assert_eq!((s.network_class, s.network_name.as_deref()), (NetworkClass::Scanner, Some("Microsoft EOP")));
        assert!(is_prefetch(&Method::HEAD, &s));
    }

    #[test]
    fn curl_is_an_http_client() {
        let h = headers(&[("user-agent", "curl/8.5.0"), ("accept", "*/*")]);
        let req = Observed { method: &Method::GET, headers: &h, ip: "127.0.0.1".parse().unwrap(), sent_at_ms: None };
        let s = classifier().observe(&req, false, None);
        assert_eq!(s.ua_class, UaClass::HttpClient);
        assert!(!s.has_accept_language && !s.network_allow_listed);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn observing_arbitrary_requests_never_panics(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 6),
            v4 in any::<u32>(),
            v6 in any::<u128>(),
            nets in proptest::collection::vec(".{0,20}", 0..3),
            head in any::<bool>(),
        ) {
            let mut h = HeaderMap::new();
            let names = ["user-agent", "referer", "sec-purpose", "x-purpose", "x-moz", "purpose"];
            for (name, value) in names.iter().zip(&values) {
                if let Ok(v) = http::HeaderValue::from_bytes(value) {
                    h.insert(*name, v);
                }
            }
            let method = if head { Method::HEAD } else { Method::GET };
            let c = ClientRecord { allowed_networks: nets, ..client(&[]) };
            for ip in [IpAddr::from(v4.to_be_bytes()), IpAddr::from(v6.to_be_bytes())] {
                let s = classifier().observe(&Observed { method: &method, headers: &h, ip, sent_at_ms: None }, false, Some(&c));
                prop_assert_ne!(s.ua_class, UaClass::Unknown);
                prop_assert_ne!(s.network_class, NetworkClass::Unknown);
            }
        }
    }
}
