//! The verdict on a click: human or machine, and why.
//!
//! The edge only records signals ([`crate::Signals`]); the aggregator decides,
//! per message, once a click's verdict window has passed, and stores the
//! verdict with the raw event and in the rollups; the API and the data team
//! read it back. This enum is that shared vocabulary: its symbols are the
//! ClickHouse `Enum8` values of `click_events.verdict_reason` and the rollups'
//! per-reason columns, so a symbol is never renamed or reused, only added.

use std::fmt;

/// Why a click was judged as it was. The first two are human verdicts; every
/// other one is a machine (bot) verdict, with the rule that decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Reason {
    /// No rule fired.
    Human = 1,
    /// The client allow-listed the network the click came from.
    AllowListed = 2,
    /// A HEAD request, or the GET its sender made of the same link right
    /// after it, with the same user agent.
    Head = 10,
    /// `Purpose`/`Sec-Purpose: prefetch`, `X-Purpose`, `X-Moz`.
    PrefetchHeader = 11,
    /// A link-preview fetcher's user agent.
    PreviewFetcher = 12,
    /// A known bot's user agent.
    BotUserAgent = 13,
    /// A generic HTTP client (curl, python-requests…), or no user agent at all.
    HttpClient = 14,
    /// The Referer names a mail-security gateway.
    ScannerReferer = 15,
    /// The address belongs to a mail-security vendor.
    ScannerNetwork = 16,
    /// A hit on a honeypot link, or a click voided by one.
    Honeypot = 17,
    /// Several distinct links of the message within about two seconds.
    Burst = 18,
    /// One network clicking for many recipients of the campaign at once.
    NetworkFanout = 19,
    /// Too soon after the send for a person to have read the message.
    TooFastAfterSend = 20,
    /// A repeat of a machine's sweep over links it already fetched: from the
    /// sweep's network, or a bare request from a cloud sandbox elsewhere.
    Rescan = 21,
    /// An open fetched by Apple Mail Privacy Protection's proxies, which load
    /// the images of nearly every message delivered to Apple Mail, read or not.
    ApplePrivacy = 22,
}

/// Why an open was a machine's, as reported (`machine_opens_by_reason`): the
/// verdict reasons grouped the way ESPs report machine opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MachineOpen {
    /// Apple Mail Privacy Protection's proxies.
    ApplePrivacy,
    /// A mail-security gateway fetching images: its network, its Referer,
    /// a honeypot, or the sweep rules.
    Scanner,
    /// Anything else that fetches without a reader: HEAD, prefetch headers,
    /// preview fetchers, bots and bare HTTP clients.
    Prefetch,
}

impl MachineOpen {
    pub const ALL: [MachineOpen; 3] = [MachineOpen::ApplePrivacy, MachineOpen::Scanner, MachineOpen::Prefetch];

    pub fn as_str(self) -> &'static str {
        match self {
            MachineOpen::ApplePrivacy => "apple_privacy",
            MachineOpen::Scanner => "scanner",
            MachineOpen::Prefetch => "prefetch",
        }
    }
}

impl Reason {
    /// Every reason, in ClickHouse `Enum8` order.
    pub const ALL: [Reason; 15] = [
        Reason::Human,
        Reason::AllowListed,
        Reason::Head,
        Reason::PrefetchHeader,
        Reason::PreviewFetcher,
        Reason::BotUserAgent,
        Reason::HttpClient,
        Reason::ScannerReferer,
        Reason::ScannerNetwork,
        Reason::Honeypot,
        Reason::Burst,
        Reason::NetworkFanout,
        Reason::TooFastAfterSend,
        Reason::Rescan,
        Reason::ApplePrivacy,
    ];

    pub fn is_human(self) -> bool {
        matches!(self, Reason::Human | Reason::AllowListed)
    }

    /// Whether a click can get this verdict (`apple_privacy` is an open's
    /// alone): the rollups have a per-reason column for each of these.
    pub fn applies_to_clicks(self) -> bool {
        self != Reason::ApplePrivacy
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Human => "human",
            Reason::AllowListed => "allow_listed",
            Reason::Head => "head",
            Reason::PrefetchHeader => "prefetch_header",
            Reason::PreviewFetcher => "preview_fetcher",
            Reason::BotUserAgent => "bot_user_agent",
            Reason::HttpClient => "http_client",
            Reason::ScannerReferer => "scanner_referer",
            Reason::ScannerNetwork => "scanner_network",
            Reason::Honeypot => "honeypot",
            Reason::Burst => "burst",
            Reason::NetworkFanout => "network_fanout",
            Reason::TooFastAfterSend => "too_fast_after_send",
            Reason::Rescan => "rescan",
            Reason::ApplePrivacy => "apple_privacy",
        }
    }

    /// The group an open judged a machine's is reported under; `None` for a human.
    pub fn machine_open(self) -> Option<MachineOpen> {
        match self {
            Reason::Human | Reason::AllowListed => None,
            Reason::ApplePrivacy => Some(MachineOpen::ApplePrivacy),
            Reason::ScannerReferer
            | Reason::ScannerNetwork
            | Reason::Honeypot
            | Reason::Burst
            | Reason::NetworkFanout
            | Reason::TooFastAfterSend
            | Reason::Rescan => Some(MachineOpen::Scanner),
            Reason::Head
            | Reason::PrefetchHeader
            | Reason::PreviewFetcher
            | Reason::BotUserAgent
            | Reason::HttpClient => Some(MachineOpen::Prefetch),
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The reason of a ClickHouse `Enum8` code (`verdict_reason`, `reason_code`).
    pub fn from_code(code: u32) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| *r as u32 == code)
    }

    /// The ClickHouse `Enum8(...)` type, from [`Reason::ALL`], for migrations.
    pub fn clickhouse_enum() -> String {
        let values: Vec<String> = Reason::ALL.iter().map(|r| format!("'{}' = {}", r.as_str(), *r as u8)).collect();
        format!("Enum8({})", values.join(", "))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_round_trip_and_are_unique() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            assert_eq!(Reason::from_code(r as u32), Some(r));
        }
        assert_eq!(Reason::from_code(0), None);
        let mut codes: Vec<u8> = Reason::ALL.iter().map(|r| *r as u8).collect();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
        assert_eq!(Reason::parse("nope"), None);
    }

    #[test]
    fn only_two_reasons_are_human() {
        let human: Vec<Reason> = Reason::ALL.into_iter().filter(|r| r.is_human()).collect();
        assert_eq!(human, vec![Reason::Human, Reason::AllowListed]);
        assert!(Reason::clickhouse_enum().starts_with("Enum8('human' = 1, 'allow_listed' = 2, 'head' = 10"));
    }
}
