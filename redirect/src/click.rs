//! Turning a request into a click event: a [`ClickWire`] that borrows from
//! the link and the request, for the publisher to encode straight into the
//! spool's buffer. Nothing here allocates.

use std::net::IpAddr;

use axum::http::{header, HeaderMap, Method};
use ricochet_registry::LinkRef;
use ricochet_schemas::{ClickWire, EventType, RecipientId, RecipientToken, Signals};

/// Header values kept in events are cut to this many bytes: a hostile
/// user agent must not bloat every row downstream.
pub const MAX_HEADER_BYTES: usize = 512;

/// Keeps the network, drops the host: IPv4 to /24, IPv6 to /48. The full
/// address never leaves the edge.
pub fn anonymize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return anonymize(IpAddr::V4(v4));
            }
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

/// The proxies in front of the edge, whose `X-Forwarded-For` entries are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<ipnet::IpNet>,
    /// Deprecated `RICOCHET_TRUST_FORWARDED_FOR`: the peer is a proxy whatever
    /// its address (one hop is believed, the right-most entry).
    any_peer: bool,
}

impl TrustedProxies {
    pub fn new(nets: Vec<ipnet::IpNet>) -> Self {
        TrustedProxies { nets, any_peer: false }
    }

    /// Also believes the peer, whatever its address (the deprecated flag's meaning).
    pub fn with_any_peer(mut self) -> Self {
        self.any_peer = true;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && !self.any_peer
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

/// The address the click came from.
///
/// The peer, unless it is a trusted proxy: then `X-Forwarded-For` is read from
/// the right, each proxy having appended the address it saw, and the first
/// address that is not itself a trusted proxy is the client's. Entries left of
/// it were written by the client and are never believed, so a forged header
/// changes nothing. An entry that is not an address ends the walk at the last
/// hop a trusted proxy vouched for.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &TrustedProxies) -> IpAddr {
    if !(proxies.any_peer || proxies.contains(peer)) {
        return peer;
    }
    let mut client = peer;
    // Several headers count as one list, in order (RFC 7230 §3.2.2).
    let values: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Some(hop) = parse_hop(entry.trim()) else { break };
        client = hop;
        if !proxies.contains(hop) {
            break;
        }
    }
    client
}

/// `198.51.100.9`, `2001:db8::1`, or with a port (`198.51.100.9:5000`, `[2001:db8::1]:5000`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    entry.parse().ok().or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// A header's bytes, cut to [`MAX_HEADER_BYTES`] without splitting a UTF-8
/// sequence. Borrowed: the encoder writes them (invalid UTF-8 as U+FFFD).
fn header_bytes(headers: &HeaderMap, name: header::HeaderName) -> Option<&[u8]> {
    let bytes = headers.get(name)?.as_bytes();
    let mut cut = bytes.len().min(MAX_HEADER_BYTES);
    // Never split a UTF-8 sequence.
    while cut > 0 && cut < bytes.len() && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    Some(&bytes[..cut])
}

/// What the request was, beyond the link itself.
pub struct Seen<'a> {
    pub event_type: EventType,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub ip: IpAddr,
    pub recipient: (Option<&'a RecipientId>, RecipientToken),
    pub now_ms: i64,
    pub edge_node: &'a str,
    pub signals: &'a Signals,
}

/// The event for one click: a fresh UUIDv7, the link's ids and destination,
/// the request's headers (cut), and the anonymized address. It borrows the
/// link where the registry stores it; `link_id` is its text (a stored UUID is
/// 16 bytes, written out in hex on the caller's stack).
pub fn event<'a>(link: &'a LinkRef<'_>, link_id: &'a str, seen: Seen<'a>) -> ClickWire<'a> {
    let Seen { event_type, method, headers, ip, recipient, now_ms, edge_node, signals } = seen;
    let destination = link.destination_url();
    ClickWire {
        event_id: uuid::Uuid::now_v7(),
        event_time_ms: now_ms,
        client_id: link.client_id(),
        campaign_id: link.campaign_id(),
        link_id,
        recipient_id: recipient.0.map(RecipientId::as_str),
        destination_url: [destination.host, destination.rest],
        http_method: method.as_str(),
        user_agent: header_bytes(headers, header::USER_AGENT),
        referer: header_bytes(headers, header::REFERER),
        client_ip: Some(anonymize(ip)),
        edge_node,
        event_type,
        is_prefetch: ricochet_signals::is_prefetch(method, signals),
        recipient_token: recipient.1,
        signals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymizes_to_the_network() {
        assert_eq!(anonymize("203.0.113.77".parse().unwrap()).to_string(), "203.0.113.0");
        assert_eq!(anonymize("2001:db8:abcd:12::1".parse().unwrap()).to_string(), "2001:db8:abcd::");
        assert_eq!(anonymize("::ffff:198.51.100.9".parse().unwrap()).to_string(), "198.51.100.0");
    }

    fn proxies(nets: &str) -> TrustedProxies {
        TrustedProxies::new(nets.split(',').map(|n| n.parse().unwrap()).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_only_from_a_trusted_proxy() {
        let h = xff(&["198.51.100.9"]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &TrustedProxies::default()), peer, "no proxies configured");
        assert_eq!(client_ip(peer, &h, &proxies("10.0.0.0/8")), peer, "the peer is not one of them");
        assert_eq!(client_ip(peer, &h, &proxies("127.0.0.0/8")).to_string(), "198.51.100.9");
    }

    #[test]
    fn the_right_most_untrusted_hop_wins_over_forged_entries() {
        let trusted = proxies("127.0.0.0/8,10.0.0.0/8");
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        // The client sent "1.2.3.4"; the edge proxy (10.0.0.5) appended what it saw.
        let h = xff(&["1.2.3.4, 203.0.113.7, 10.0.0.5"]);
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "203.0.113.7");
        // Split over several headers, with ports and IPv6.
        let h = xff(&["1.2.3.4", "[2001:db8::7]:4711", "10.0.0.5:80"]);
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "2001:db8::7");
        // Garbage stops the walk at the last hop a proxy vouched for.
        let h = xff(&["1.2.3.4, not-an-ip, 10.0.0.5"]);
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "10.0.0.5");
        // Only proxies: the left-most of them.
        let h = xff(&["10.1.1.1, 10.0.0.5"]);
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "10.1.1.1");
        // An IPv4-mapped peer is matched as IPv4.
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        assert_eq!(client_ip(mapped, &xff(&["203.0.113.7"]), &trusted).to_string(), "203.0.113.7");
    }

    #[test]
    fn the_deprecated_flag_believes_one_hop() {
        let any = TrustedProxies::default().with_any_peer();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(peer, &xff(&["1.2.3.4, 203.0.113.7"]), &any).to_string(), "203.0.113.7");
        assert_eq!(client_ip(peer, &HeaderMap::new(), &any), peer);
    }

    #[test]
    fn long_headers_are_cut_on_a_char_boundary() {
        let mut h = HeaderMap::new();
        h.insert(header::USER_AGENT, format!("{}é", "a".repeat(MAX_HEADER_BYTES - 1)).parse().unwrap());
        let ua = header_bytes(&h, header::USER_AGENT).unwrap();
        assert_eq!(ua.len(), MAX_HEADER_BYTES - 1);
        assert!(std::str::from_utf8(ua).is_ok());
        h.insert(header::REFERER, "https://example.com/".parse().unwrap());
        assert_eq!(header_bytes(&h, header::REFERER), Some(&b"https://example.com/"[..]), "short values are whole");
    }
}
