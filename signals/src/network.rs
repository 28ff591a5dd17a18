//! Who owns the client address: a mail-security vendor, a cloud or hosting
//! provider, or anyone else; with the autonomous system number.
//!
//! Vendor CIDRs (`data/scanner-cidrs.txt`) are checked first, because some
//! vendors scan from a shared AS (Microsoft EOP lives in AS8075, mostly Azure).
//! Then the address's ASN comes from the range table (`data/asn-ranges.csv.gz`,
//! every routed IPv4 and IPv6 range, sorted, binary-searched), and the ASN's
//! class from the named lists (`data/scanner-asns.txt`, `data/cloud-asns.txt`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use ricochet_schemas::NetworkClass;

use crate::data;
use crate::ranges::RangeTable;
use crate::SignalsError;

/// The network facts that leave the edge; the address itself does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkVerdict {
    pub class: NetworkClass,
    /// 0: no routed range holds the address (private, loopback, unallocated).
    pub asn: u32,
    /// The vendor or provider, for scanner and cloud networks.
    pub name: Option<&'static str>,
}

pub struct Networks {
    cidrs: Vec<(IpNet, &'static str)>,
    /// Every routed range's ASN.
    asns: RangeTable<u32>,
    named: HashMap<u32, (NetworkClass, &'static str)>,
}

fn bad(file: &'static str, line: usize, problem: impl ToString) -> SignalsError {
    SignalsError::BadData { file, line, problem: problem.to_string() }
}

/// `KEY <whitespace> NAME` lines.
fn named_lines(
    file: &'static str,
    text: &'static str,
) -> impl Iterator<Item = Result<(&'static str, &'static str), SignalsError>> {
    data::lines(text).map(move |(n, l)| {
        let (key, name) = l.split_once(char::is_whitespace).ok_or_else(|| bad(file, n, "expected `key name`"))?;
        Ok((key, name.trim()))
    })
}

impl Networks {
    pub fn load() -> Result<Self, SignalsError> {
        let mut cidrs = Vec::new();
        for entry in named_lines("scanner-cidrs.txt", data::SCANNER_CIDRS) {
            let (net, name) = entry?;
            cidrs.push((net.parse::<IpNet>().map_err(|e| bad("scanner-cidrs.txt", 0, format!("{net}: {e}")))?, name));
        }
        let mut named = HashMap::new();
        for (file, text, class) in [
            ("scanner-asns.txt", data::SCANNER_ASNS, NetworkClass::Scanner),
            ("cloud-asns.txt", data::CLOUD_ASNS, NetworkClass::Cloud),
        ] {
            for entry in named_lines(file, text) {
                let (asn, name) = entry?;
                let asn = asn.parse::<u32>().map_err(|e| bad(file, 0, format!("{asn}: {e}")))?;
                // Scanner lists load first and win: a vendor is never demoted to cloud.
                named.entry(asn).or_insert((class, name));
            }
        }
        let asns = RangeTable::parse_gz("asn-ranges.csv.gz", data::ASN_RANGES_GZ, |v| {
            v.parse::<u32>().map_err(|e| e.to_string())
        })?;
        Ok(Networks { cidrs, asns, named })
    }

    /// Classifies the full address. Cheap: a scan of a few dozen CIDRs and one
    /// binary search in ~500 k ranges.
    pub fn classify(&self, ip: IpAddr) -> NetworkVerdict {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let asn = self.asn(ip);
        if let Some((_, vendor)) = self.cidrs.iter().find(|(net, _)| net.contains(&ip)) {
            return NetworkVerdict { class: NetworkClass::Scanner, asn, name: Some(vendor) };
        }
        match self.named.get(&asn) {
            Some(&(class, name)) => NetworkVerdict { class, asn, name: Some(name) },
            None => NetworkVerdict { class: NetworkClass::Other, asn, name: None },
        }
    }

    /// The ASN announcing `ip`; 0 when none does.
    pub fn asn(&self, ip: IpAddr) -> u32 {
        self.asns.get(ip).unwrap_or(0)
    }

    /// The vendor CIDRs, for the bench to send scanner traffic from where it comes from.
    pub fn scanner_cidrs(&self) -> &[(IpNet, &'static str)] {
        &self.cidrs
    }

    /// Every named ASN with its class and name.
    pub fn named_asns(&self) -> impl Iterator<Item = (u32, NetworkClass, &'static str)> + '_ {
        self.named.iter().map(|(&asn, &(class, name))| (asn, class, name))
    }

    /// The IPv4 ranges an ASN announces (inclusive), for the bench.
    pub fn v4_ranges_of(&self, asn: u32) -> impl Iterator<Item = (Ipv4Addr, Ipv4Addr)> + '_ {
        self.asns.v4().iter().filter(move |r| r.2 == asn).map(|&(s, e, _)| (Ipv4Addr::from(s), Ipv4Addr::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    pub(crate) fn nets() -> &'static Networks {
        static N: OnceLock<Networks> = OnceLock::new();
        N.get_or_init(|| Networks::load().unwrap())
    }

    fn class(ip: &str) -> NetworkVerdict {
        nets().classify(ip.parse().unwrap())
    }

    #[test]
    fn microsoft_eop_is_a_scanner_though_its_as_is_azure() {
        for ip in ["40.92.3.4", "40.107.200.1", "52.101.9.9", "104.47.0.20", "2a01:111:f400::1"] {
            let v = class(ip);
            assert_eq!((v.class, v.name), (NetworkClass::Scanner, Some("Microsoft EOP")), "{ip}");
        }
        assert_eq!(class("40.92.3.4").asn, 8075);
        // Elsewhere in AS8075 is Azure: cloud.
        let azure = class("20.42.0.1");
        assert_eq!((azure.class, azure.asn), (NetworkClass::Cloud, 8075));
    }

    #[test]
    fn vendor_networks_by_asn() {
        for (ip, vendor) in [
            ("67.231.145.10", "Proofpoint"),
            ("148.163.130.1", "Proofpoint"),
            ("205.139.110.30", "Mimecast"),
            ("185.58.85.1", "Mimecast"),
            ("209.222.82.1", "Barracuda"),
            ("68.232.130.1", "Cisco IronPort"),
        ] {
            let v = class(ip);
            assert_eq!((v.class, v.name), (NetworkClass::Scanner, Some(vendor)), "{ip}");
            assert_ne!(v.asn, 0, "{ip} has its ASN");
        }
    }

    #[test]
    fn cloud_and_everyone_else() {
        for (ip, provider) in [("3.5.5.5", "AWS"), ("8.8.8.8", "Google"), ("1.1.1.1", "Cloudflare")] {
            let v = class(ip);
            assert_eq!((v.class, v.name), (NetworkClass::Cloud, Some(provider)), "{ip}");
        }
        // Deutsche Telekom, a residential network: other, with its ASN and no name.
        let dt = class("79.192.0.1");
        assert_eq!((dt.class, dt.asn, dt.name), (NetworkClass::Other, 3320, None));
        for private in ["10.1.2.3", "127.0.0.1", "192.168.1.1", "::1", "fd00::1"] {
            let v = class(private);
            assert_eq!((v.class, v.asn, v.name), (NetworkClass::Other, 0, None), "{private}");
        }
    }

    #[test]
    fn mapped_ipv6_reads_as_ipv4() {
        assert_eq!(class("::ffff:40.92.3.4"), class("40.92.3.4"));
    }

    proptest::proptest! {
        #[test]
        fn the_prefix_index_answers_what_a_binary_search_of_everything_does(x in proptest::prelude::any::<u32>(), near in 0usize..420_000) {
            let n = nets();
            let v4 = n.asns.v4();
            let whole = |x: u32| {
                let i = v4.partition_point(|r| r.0 <= x);
                i.checked_sub(1).map(|i| v4[i]).filter(|r| x <= r.1).map_or(0, |r| r.2)
            };
            // Anywhere, and at the edges of real ranges (where an off-by-one would show).
            let (start, end, _) = v4[near % v4.len()];
            for x in [x, start, end, start.wrapping_sub(1), end.wrapping_add(1)] {
                proptest::prop_assert_eq!(n.asn(IpAddr::V4(x.into())), whole(x), "{}", std::net::Ipv4Addr::from(x));
            }
        }
    }

    #[test]
    fn lookups_find_range_edges() {
        let n = nets();
        let (start, end, asn) = n.asns.v4()[n.asns.v4().len() / 2];
        assert_eq!(n.asn(IpAddr::V4(start.into())), asn);
        assert_eq!(n.asn(IpAddr::V4(end.into())), asn);
        assert!(n.asns.v4().len() > 300_000 && n.asns.v6().len() > 50_000, "the whole table loaded");
        assert!(n.v4_ranges_of(15324).count() > 0, "Barracuda has ranges");
    }
}
