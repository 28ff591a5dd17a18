//! The country of a client address, from `data/country-ranges.csv.gz`
//! (ip-location-db's geo-whois-asn-country: provider geofeeds first, then the
//! registries' WHOIS, then the announcing AS's country). Country-level only:
//! right for breakdowns, not for locating a person.

use std::fmt;
use std::net::IpAddr;

use crate::data;
use crate::ranges::RangeTable;
use crate::SignalsError;

/// An ISO 3166-1 alpha-2 code: two uppercase ASCII letters, stored inline
/// (no allocation per click).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Two ASCII letters, either case (`de` reads as `DE`, as a filter may
    /// spell it); `None` otherwise. Whether the code is assigned is not checked:
    /// the data set decides which codes exist.
    pub fn parse(s: &str) -> Option<Self> {
        match s.as_bytes() {
            &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(CountryCode([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // Two ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    pub fn as_bytes(&self) -> [u8; 2] {
        self.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

/// IANA's special-purpose blocks (RFC 6890 and its updates) that are no
/// country's: private, shared (CGNAT), loopback, link-local, documentation,
/// benchmarking, multicast and reserved. The data set gives some of them a
/// country anyway (192.168.0.0/16 reads as AU in 2.3.2026061719, one of the data
/// bugs its README warns of), so they are answered before the table is asked.
/// Globally routed special blocks (6to4, Teredo's relays) are left to the table.
const NOT_A_COUNTRY_V4: &[(u32, u8)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
    (0x0a00_0000, 8),  // 10.0.0.0/8 private
    (0x6440_0000, 10), // 100.64.0.0/10 shared address space (CGNAT)
    (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
    (0xa9fe_0000, 16), // 169.254.0.0/16 link-local
    (0xac10_0000, 12), // 172.16.0.0/12 private
    (0xc000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
    (0xc000_0200, 24), // 192.0.2.0/24 documentation
    (0xc0a8_0000, 16), // 192.168.0.0/16 private
    (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
    (0xc633_6400, 24), // 198.51.100.0/24 documentation
    (0xcb00_7100, 24), // 203.0.113.0/24 documentation
    (0xe000_0000, 3),  // 224.0.0.0/3: multicast 224/4, reserved 240/4, broadcast
];

const NOT_A_COUNTRY_V6: &[(u128, u8)] = &[
    (0, 127),                                        // ::/128 unspecified, ::1/128 loopback
    (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96), // 64:ff9b::/96 NAT64 (a gateway's, not a client's)
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // 100::/64 discard
    (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // 2001:db8::/32 documentation
    (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // fc00::/7 unique local
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // fe80::/10 link-local
    (0xff00_0000_0000_0000_0000_0000_0000_0000, 8),  // ff00::/8 multicast
];

/// Whether `ip` is in one of the special-purpose blocks above.
pub fn is_special_purpose(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let x = u32::from(v4);
            NOT_A_COUNTRY_V4.iter().any(|&(net, len)| x >> (32 - len) == net >> (32 - len))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_special_purpose(IpAddr::V4(v4)),
            None => {
                let x = u128::from(v6);
                NOT_A_COUNTRY_V6.iter().any(|&(net, len)| x >> (128 - len) == net >> (128 - len))
            }
        },
    }
}

/// The address → country table, loaded once (~540 k ranges, ~0.1-0.2 s).
pub struct Countries {
    table: RangeTable<CountryCode>,
}

impl Countries {
    pub fn load() -> Result<Self, SignalsError> {
        let table = RangeTable::parse_gz("country-ranges.csv.gz", data::COUNTRY_RANGES_GZ, |v| {
            // The table is written uppercase; refuse anything else rather than guess.
            CountryCode::parse(v).filter(|c| c.as_str() == v).ok_or_else(|| format!("not a country code: {v:?}"))
        })?;
        Ok(Countries { table })
    }

    /// The country `ip` is in; `None` for special-purpose (private, reserved,
    /// ...) and unlisted addresses. A binary search, no allocation.
    pub fn country(&self, ip: IpAddr) -> Option<CountryCode> {
        if is_special_purpose(ip) {
            return None;
        }
        self.table.get(ip)
    }

    /// The table, for tests and benches.
    pub fn table(&self) -> &RangeTable<CountryCode> {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_special_purpose_block_holds_its_ends_and_nothing_beside() {
        let special = |s: &str| is_special_purpose(s.parse().unwrap());
        // (first, last, just before, just after), written out, not derived from the table above.
        for (first, last, before, after) in [
            ("0.0.0.0", "0.255.255.255", None, Some("1.0.0.0")),
            ("10.0.0.0", "10.255.255.255", Some("9.255.255.255"), Some("11.0.0.0")),
            ("100.64.0.0", "100.127.255.255", Some("100.63.255.255"), Some("100.128.0.0")),
            ("127.0.0.0", "127.255.255.255", Some("126.255.255.255"), Some("128.0.0.0")),
            ("169.254.0.0", "169.254.255.255", Some("169.253.255.255"), Some("169.255.0.0")),
            ("172.16.0.0", "172.31.255.255", Some("172.15.255.255"), Some("172.32.0.0")),
            ("192.0.0.0", "192.0.0.255", Some("191.255.255.255"), Some("192.0.1.0")),
            ("192.0.2.0", "192.0.2.255", Some("192.0.1.255"), Some("192.0.3.0")),
            ("192.168.0.0", "192.168.255.255", Some("192.167.255.255"), Some("192.169.0.0")),
            ("198.18.0.0", "198.19.255.255", Some("198.17.255.255"), Some("198.20.0.0")),
            ("198.51.100.0", "198.51.100.255", Some("198.51.99.255"), Some("198.51.101.0")),
            ("203.0.113.0", "203.0.113.255", Some("203.0.112.255"), Some("203.0.114.0")),
            ("224.0.0.0", "255.255.255.255", Some("223.255.255.255"), None),
            ("::", "::1", None, Some("::2")),
            ("64:ff9b::", "64:ff9b::ffff:ffff", Some("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff"), Some("64:ff9b::1:0:0")),
            ("100::", "100::ffff:ffff:ffff:ffff", Some("ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), Some("100:0:0:1::")),
            (
                "2001:db8::",
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"),
                Some("2001:db9::"),
            ),
            (
                "fc00::",
                "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
                Some("fe00::"),
            ),
            (
                "fe80::",
                "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
                Some("fec0::"),
            ),
            (
                "ff00::",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
                None,
            ),
        ] {
            assert!(special(first) && special(last), "{first}-{last}");
            for outside in [before, after].into_iter().flatten() {
                assert!(!special(outside), "{outside} is outside {first}-{last}");
            }
        }
        assert!(special("::ffff:10.1.2.3") && !special("::ffff:8.8.8.8"), "mapped IPv4 reads as IPv4");
    }
}
