//! The verdict on one click: human or machine, and the rule that decided it.
//!
//! This module holds the per-request rules: what a single event's signals
//! (recorded by the edge, see `ricochet_schemas::Signals`) say on their own.
//! Rules over a recipient's other clicks on the campaign (bursts, honeypot
//! windows, one network clicking for many recipients, re-scans) need the
//! message's other events and build on these.

use ricochet_schemas::{ClickEvent, NetworkClass, Reason, UaClass};

/// The verdict one event's own signals give, first matching rule wins. Opens
/// are judged by the same rules (a scanner fetches pixels too).
pub fn per_request(event: &ClickEvent) -> Reason {
    let s = &event.signals;
    if s.honeypot {
        return Reason::Honeypot;
    }
    if event.http_method.eq_ignore_ascii_case("HEAD") {
        return Reason::Head;
    }
    if s.prefetch_header {
        return Reason::PrefetchHeader;
    }
    match s.ua_class {
        UaClass::Preview => return Reason::PreviewFetcher,
        UaClass::Bot => return Reason::BotUserAgent,
        UaClass::HttpClient | UaClass::Absent => return Reason::HttpClient,
        UaClass::Browser => {}
        // v1/v2 events: the edge's own prefetch flag is all there is.
        UaClass::Unknown if event.is_prefetch => return Reason::PreviewFetcher,
        UaClass::Unknown => {}
    }
    if s.network_allow_listed {
        return Reason::AllowListed;
    }
    if s.scanner_referer {
        return Reason::ScannerReferer;
    }
    if s.network_class == NetworkClass::Scanner {
        return Reason::ScannerNetwork;
    }
    Reason::Human
}

#[cfg(test)]
mod tests {
    use super::*;
    use ricochet_schemas::*;

    fn event() -> ClickEvent {
        ClickEvent {
            event_id: EventId::mint(),
            event_time_ms: 1,
            client_id: ClientId::parse("c").unwrap(),
            campaign_id: CampaignId::parse("k").unwrap(),
            link_id: LinkId::mint(),
            recipient_id: None,
            destination_url: "https://x.example/".into(),
            http_method: "GET".into(),
            user_agent: None,
            referer: None,
            client_ip: None,
            edge_node: "e".into(),
            event_type: EventType::Click,
            is_prefetch: false,
            recipient_token: RecipientToken::Absent,
            signals: Signals { ua_class: UaClass::Browser, network_class: NetworkClass::Other, ..Signals::default() },
        }
    }

    #[test]
    fn a_browser_on_an_ordinary_network_is_human() {
        assert_eq!(per_request(&event()), Reason::Human);
    }

    #[test]
    fn each_signal_decides_with_its_reason() {
        let with = |f: &dyn Fn(&mut ClickEvent)| {
            let mut e = event();
            f(&mut e);
            per_request(&e)
        };
        assert_eq!(with(&|e| e.http_method = "HEAD".into()), Reason::Head);
        assert_eq!(with(&|e| e.signals.prefetch_header = true), Reason::PrefetchHeader);
        assert_eq!(with(&|e| e.signals.ua_class = UaClass::Preview), Reason::PreviewFetcher);
        assert_eq!(with(&|e| e.signals.ua_class = UaClass::Bot), Reason::BotUserAgent);
        assert_eq!(with(&|e| e.signals.ua_class = UaClass::HttpClient), Reason::HttpClient);
        assert_eq!(with(&|e| e.signals.ua_class = UaClass::Absent), Reason::HttpClient);
        assert_eq!(with(&|e| e.signals.scanner_referer = true), Reason::ScannerReferer);
        assert_eq!(with(&|e| e.signals.network_class = NetworkClass::Scanner), Reason::ScannerNetwork);
        assert_eq!(with(&|e| e.signals.honeypot = true), Reason::Honeypot);
        // A cloud network alone is weak evidence: people browse through VPNs.
        assert_eq!(with(&|e| e.signals.network_class = NetworkClass::Cloud), Reason::Human);
        // The client vouches for its own network, not for a bot's user agent.
        assert_eq!(
            with(&|e| {
                e.signals.network_class = NetworkClass::Scanner;
                e.signals.network_allow_listed = true;
            }),
            Reason::AllowListed
        );
        assert_eq!(
            with(&|e| {
                e.signals.ua_class = UaClass::HttpClient;
                e.signals.network_allow_listed = true;
            }),
            Reason::HttpClient
        );
    }

    #[test]
    fn old_events_keep_the_edges_prefetch_flag() {
        let mut e = event();
        e.signals = Signals::default();
        assert_eq!(per_request(&e), Reason::Human);
        e.is_prefetch = true;
        assert_eq!(per_request(&e), Reason::PreviewFetcher);
    }
}
