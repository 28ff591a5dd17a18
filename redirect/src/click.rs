//! Turning a request into a click event: a [`ClickWire`] that borrows from
//! the link and the request, for the publisher to encode straight into the
//! spool's buffer. Nothing here allocates.

use std::net::IpAddr;

use axum::http::{header, HeaderMap, Method};
use ricochet_schemas::{ClickWire, EventType, LinkRecord, RecipientId, RecipientToken, Signals};

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

/// The address the click came from: the peer, or the first `X-Forwarded-For`
/// entry when the edge is told to trust its proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    peer
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
/// the request's headers (cut), and the anonymized address.
pub fn event<'a>(link: &'a LinkRecord, seen: Seen<'a>) -> ClickWire<'a> {
    let Seen { event_type, method, headers, ip, recipient, now_ms, edge_node, signals } = seen;
    ClickWire {
        event_id: uuid::Uuid::now_v7(),
        event_time_ms: now_ms,
        client_id: link.client_id.as_str(),
        campaign_id: link.campaign_id.as_str(),
        link_id: link.link_id.as_str(),
        recipient_id: recipient.0.map(RecipientId::as_str),
        destination_url: &link.destination_url,
        http_method: method.as_str(),
        user_agent: header_bytes(headers, header::USER_AGENT),
        referer: header_bytes(headers, header::REFERER),
        client_ip: Some(anonymize(ip)),
        edge_node,
        event_type,
        is_prefetch: crate::prefetch::is_prefetch(method, headers),
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

    #[test]
    fn forwarded_for_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.9, 10.0.0.1".parse().unwrap());
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(client_ip(peer, &h, false), peer);
        assert_eq!(client_ip(peer, &h, true).to_string(), "198.51.100.9");
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
