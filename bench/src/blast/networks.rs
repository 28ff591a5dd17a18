//! Where clicks come from: address pools by who owns them, and the address a
//! request is sent from inside one (the edge sees it in `X-Forwarded-For`).
//!
//! The ranges are the owners' own published or routed blocks (from the
//! vendors' documentation of their mail-gateway egress, and the large
//! residential, mobile and cloud blocks of well-known ASNs), written here by
//! hand and NOT taken from the edge's classification data in `signals/`: the
//! benchmark has to find out whether that data knows where scanners really
//! come from, so it must not copy it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rand::Rng;
use ricochet_signals::dimensions::{Countries, CountryCode};

/// What kind of network an address belongs to, in the generator's own words
/// (ground truth, not what the edge classifies it as).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetKind {
    /// A mail-security vendor's own egress network.
    Vendor,
    /// A public cloud or hosting provider (scanner sandboxes run there too).
    Cloud,
    /// A consumer VPN or a relay like iCloud Private Relay: people behind cloud addresses.
    Vpn,
    /// A corporate security proxy (Zscaler-style): a company's staff behind cloud addresses.
    CorporateProxy,
    Residential,
    Mobile,
    /// A company's own office network.
    Corporate,
}

impl NetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NetKind::Vendor => "vendor",
            NetKind::Cloud => "cloud",
            NetKind::Vpn => "vpn",
            NetKind::CorporateProxy => "corporate_proxy",
            NetKind::Residential => "residential",
            NetKind::Mobile => "mobile",
            NetKind::Corporate => "corporate",
        }
    }
}

/// A named owner of some address blocks.
#[derive(Debug)]
pub struct Pool {
    pub owner: &'static str,
    pub asn: u32,
    pub blocks: &'static [&'static str],
}

impl Pool {
    /// A uniformly random host address of one of the pool's blocks (each
    /// block equally likely, so small published blocks are not drowned).
    pub fn address(&self, rng: &mut impl Rng) -> Ipv4Addr {
        let block = self.blocks[rng.random_range(0..self.blocks.len())];
        host_in(block.parse().expect("valid CIDR in the pool table"), rng)
    }
}

/// A random address inside `net`, avoiding its network and broadcast addresses.
pub fn host_in(net: Ipv4Net, rng: &mut impl Rng) -> Ipv4Addr {
    let base = u32::from(net.network());
    let size = 1u64 << (32 - net.prefix_len());
    let offset = if size > 2 { rng.random_range(1..size - 1) } else { 0 };
    Ipv4Addr::from(base + offset as u32)
}

// --- mail-security vendors' egress ------------------------------------------

/// Microsoft Exchange Online Protection / Defender for Office 365 (the ranges the issue names).
pub const MICROSOFT_EOP: Pool = Pool {
    owner: "microsoft",
    asn: 8075,
    blocks: &["40.92.0.0/15", "40.107.0.0/16", "52.100.0.0/14", "104.47.0.0/17"],
};
/// Proofpoint (pphosted / ppe-hosted egress).
pub const PROOFPOINT: Pool = Pool {
    owner: "proofpoint",
    asn: 26211,
    blocks: &["148.163.128.0/19", "67.231.144.0/20", "205.220.160.0/19", "185.132.180.0/22"],
};
/// Mimecast (US and EU grids).
pub const MIMECAST: Pool = Pool {
    owner: "mimecast",
    asn: 30031,
    blocks: &["205.139.110.0/24", "207.211.30.0/24", "91.220.42.0/24", "185.58.84.0/22", "195.130.217.0/24"],
};
/// Barracuda Email Security Service.
pub const BARRACUDA: Pool = Pool { owner: "barracuda", asn: 15324, blocks: &["64.235.144.0/20", "209.222.80.0/21"] };
/// Cisco Secure Email (IronPort cloud, iphmx).
pub const CISCO: Pool = Pool { owner: "cisco", asn: 16417, blocks: &["68.232.128.0/19", "216.71.128.0/19"] };

// --- clouds (scanner sandboxes, and people on VPNs) --------------------------

pub const AZURE: Pool =
    Pool { owner: "azure", asn: 8075, blocks: &["13.64.0.0/11", "20.36.0.0/14", "20.40.0.0/13", "52.224.0.0/11"] };
pub const AWS: Pool =
    Pool { owner: "aws", asn: 16509, blocks: &["3.80.0.0/12", "18.204.0.0/14", "34.192.0.0/10", "54.144.0.0/12"] };
pub const GOOGLE_CLOUD: Pool = Pool { owner: "gcp", asn: 396982, blocks: &["34.64.0.0/10", "35.184.0.0/13"] };
pub const DIGITALOCEAN: Pool =
    Pool { owner: "digitalocean", asn: 14061, blocks: &["159.89.0.0/16", "167.99.0.0/16", "138.197.0.0/16"] };
/// Consumer VPN exits (M247, Datacamp/CDN77: where the big VPN brands rent).
pub const VPN_EXITS: Pool =
    Pool { owner: "vpn", asn: 9009, blocks: &["185.156.172.0/22", "89.187.160.0/19", "37.120.192.0/19"] };
/// iCloud Private Relay egress (Akamai and Cloudflare).
pub const PRIVATE_RELAY: Pool =
    Pool { owner: "private_relay", asn: 36183, blocks: &["172.224.0.0/12", "104.28.0.0/16"] };
/// Zscaler: companies whose staff browse through a cloud security proxy.
pub const ZSCALER: Pool = Pool { owner: "zscaler", asn: 22616, blocks: &["165.225.0.0/17", "147.161.128.0/17"] };

// --- mail providers' image fetchers -----------------------------------------

/// Apple (AS714): Mail Privacy Protection's proxies fetch from here, or from
/// the iCloud Private Relay egress ([`PRIVATE_RELAY`]).
pub const APPLE: Pool = Pool { owner: "apple", asn: 714, blocks: &["17.0.0.0/8"] };
/// Google's image proxy (ggpht.com, AS15169): Gmail fetches a message's images here when it is opened.
pub const GOOGLE_IMAGE_PROXY: Pool = Pool { owner: "google_image_proxy", asn: 15169, blocks: &["66.249.80.0/20"] };
/// Yahoo's mail image proxy (AS36646/36647/26101).
pub const YAHOO_PROXY: Pool = Pool { owner: "yahoo_proxy", asn: 36647, blocks: &["98.136.0.0/15", "74.6.0.0/16"] };

// --- people's own networks, by country ---------------------------------------

/// One country's eyeball networks: where its people read mail and click.
/// Each block is a large residential, mobile or business ISP's (named beside
/// it); an address is drawn only from the parts of a block that the vendored
/// country table (`signals/data/country-ranges.csv.gz`) gives to this
/// country, so the truth's country of an address is the table's, and what
/// the benchmark measures is what the aggregator loses on top (it sees only
/// the /24). Blocks mixing countries (177/8, 179/8, 189/8) are kept on
/// purpose: their /24s near a boundary are where the loss is.
#[derive(Debug)]
pub struct CountryNets {
    pub country: &'static str,
    /// Share of consumer recipients, and of companies behind gateways.
    pub consumer_weight: f64,
    pub company_weight: f64,
    pub residential: &'static [&'static str],
    pub mobile: &'static [&'static str],
    /// Offices' business lines (when empty: the residential ISPs' blocks).
    pub business: &'static [&'static str],
}

/// Countries of the recipients. Weights are assumptions: an English-language
/// sender with a European and a small Indian, Brazilian and Australian list.
pub const COUNTRY_NETS: [CountryNets; 10] = [
    CountryNets {
        country: "US",
        consumer_weight: 0.38,
        company_weight: 0.50,
        residential: &["73.0.0.0/8", "98.192.0.0/10"], // Comcast
        mobile: &["172.32.0.0/11", "174.192.0.0/10", "107.64.0.0/10"], // T-Mobile US, Verizon Wireless, AT&T Mobility
        business: &["12.0.0.0/8", "4.0.0.0/9", "38.0.0.0/8"], // AT&T, Lumen, Cogent
    },
    CountryNets {
        country: "GB",
        consumer_weight: 0.12,
        company_weight: 0.12,
        residential: &["86.128.0.0/10", "81.128.0.0/11"], // BT
        mobile: &["31.94.0.0/16", "92.40.0.0/14"],        // EE, Three
        business: &[],
    },
    CountryNets {
        country: "DE",
        consumer_weight: 0.12,
        company_weight: 0.12,
        residential: &["79.192.0.0/10", "91.0.0.0/10", "93.192.0.0/10"], // Deutsche Telekom
        mobile: &["80.187.0.0/16", "176.0.0.0/13"],                      // Telekom mobile, Telefónica
        business: &[],
    },
    CountryNets {
        country: "FR",
        consumer_weight: 0.08,
        company_weight: 0.08,
        residential: &["90.0.0.0/9", "86.192.0.0/11", "88.160.0.0/11"], // Orange, Free
        mobile: &["37.160.0.0/12"],                                     // Free Mobile
        business: &[],
    },
    CountryNets {
        country: "CA",
        consumer_weight: 0.06,
        company_weight: 0.05,
        residential: &["99.224.0.0/11", "70.48.0.0/13"], // Rogers, Bell
        mobile: &[],
        business: &[],
    },
    CountryNets {
        country: "ES",
        consumer_weight: 0.05,
        company_weight: 0.03,
        residential: &["83.32.0.0/11", "88.0.0.0/11", "79.144.0.0/12"], // Telefónica
        mobile: &[],
        business: &[],
    },
    CountryNets {
        country: "NL",
        consumer_weight: 0.05,
        company_weight: 0.05,
        residential: &["77.160.0.0/12", "84.80.0.0/12"], // KPN
        mobile: &[],
        business: &[],
    },
    CountryNets {
        country: "IN",
        consumer_weight: 0.05,
        company_weight: 0.01,
        residential: &["117.192.0.0/10", "49.32.0.0/11"], // BSNL, Jio
        mobile: &["106.192.0.0/10"],                      // Airtel, Vodafone Idea
        business: &[],
    },
    CountryNets {
        country: "BR",
        consumer_weight: 0.05,
        company_weight: 0.01,
        residential: &["177.0.0.0/8", "179.0.0.0/8", "189.0.0.0/8"], // many ISPs, shared with MX and others
        mobile: &[],
        business: &[],
    },
    CountryNets {
        country: "AU",
        consumer_weight: 0.04,
        company_weight: 0.03,
        residential: &["101.160.0.0/11", "110.140.0.0/14"], // Telstra
        mobile: &["1.120.0.0/13"],                          // Telstra mobile
        business: &[],
    },
];

/// Which of a country's networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eyeball {
    Residential,
    Mobile,
    Business,
}

/// One country's networks of one kind: the table's ranges of that country
/// inside their blocks, `(first, last)` inclusive, and how many addresses they hold.
struct Ranges {
    country: &'static str,
    kind: Eyeball,
    list: Vec<(u32, u32)>,
    total: u64,
}

/// The vendored country table, and for each country of [`COUNTRY_NETS`] and
/// each kind of its networks, the table's ranges inside those blocks that are
/// that country's. Built once (~0.3 s).
pub struct Geo {
    countries: Countries,
    ranges: Vec<Ranges>,
}

impl Geo {
    pub fn load() -> anyhow::Result<Geo> {
        let countries = Countries::load()?;
        let table = countries.table().v4();
        let mut ranges = Vec::new();
        for c in &COUNTRY_NETS {
            let code = CountryCode::parse(c.country).expect("a country code");
            for (kind, blocks) in [
                (Eyeball::Residential, c.residential),
                (Eyeball::Mobile, if c.mobile.is_empty() { c.residential } else { c.mobile }),
                (Eyeball::Business, if c.business.is_empty() { c.residential } else { c.business }),
            ] {
                let mut list = Vec::new();
                for b in blocks {
                    let net: Ipv4Net = b.parse().expect("valid CIDR in the country table");
                    let (lo, hi) = (u32::from(net.network()), u32::from(net.broadcast()));
                    let start = table.partition_point(|(_, last, _)| *last < lo);
                    for (first, last, cc) in &table[start..] {
                        if *first > hi {
                            break;
                        }
                        let (a, z) = ((*first).max(lo), (*last).min(hi));
                        if *cc == code && a <= z {
                            list.push((a, z));
                        }
                    }
                }
                anyhow::ensure!(!list.is_empty(), "no address of {} in {blocks:?}", c.country);
                let total = list.iter().map(|(a, z)| u64::from(z - a) + 1).sum();
                ranges.push(Ranges { country: c.country, kind, list, total });
            }
        }
        Ok(Geo { countries, ranges })
    }

    /// A random address of `country`'s networks of `kind`: a range picked by
    /// size, a host in it (never its first or last address).
    pub fn address(&self, country: &str, kind: Eyeball, rng: &mut impl Rng) -> Ipv4Addr {
        let r = self.ranges.iter().find(|r| r.country == country && r.kind == kind).expect("a country of COUNTRY_NETS");
        let mut x = rng.random_range(0..r.total);
        for (a, z) in &r.list {
            let size = u64::from(z - a) + 1;
            if x < size {
                let ip = u64::from(*a) + x;
                // Keep off the range's edges when it has room (network and broadcast addresses).
                let ip = if size > 2 { ip.clamp(u64::from(*a) + 1, u64::from(*z) - 1) } else { ip };
                return Ipv4Addr::from(ip as u32);
            }
            x -= size;
        }
        unreachable!("x < total")
    }

    /// The table's country of a full address (the truth): `""` when none.
    pub fn country(&self, ip: Ipv4Addr) -> String {
        self.countries.country(ip.into()).map_or_else(String::new, |c| c.as_str().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const ALL: [&Pool; 15] = [
        &APPLE,
        &GOOGLE_IMAGE_PROXY,
        &YAHOO_PROXY,
        &MICROSOFT_EOP,
        &PROOFPOINT,
        &MIMECAST,
        &BARRACUDA,
        &CISCO,
        &AZURE,
        &AWS,
        &GOOGLE_CLOUD,
        &DIGITALOCEAN,
        &VPN_EXITS,
        &PRIVATE_RELAY,
        &ZSCALER,
    ];

    #[test]
    fn every_address_drawn_lies_in_its_pool_and_is_a_host() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for pool in ALL {
            let nets: Vec<Ipv4Net> = pool.blocks.iter().map(|b| b.parse().unwrap()).collect();
            for _ in 0..200 {
                let ip = pool.address(&mut rng);
                let net = nets.iter().find(|n| n.contains(&ip));
                let net = net.unwrap_or_else(|| panic!("{ip} is outside {}", pool.owner));
                assert!(ip != net.network() && ip != net.broadcast(), "{ip} is not a host of {net}");
            }
        }
    }

    #[test]
    fn no_two_pools_or_country_blocks_overlap() {
        let mut nets: Vec<(&str, Ipv4Net)> =
            ALL.iter().flat_map(|p| p.blocks.iter().map(|b| (p.owner, b.parse::<Ipv4Net>().unwrap()))).collect();
        for c in &COUNTRY_NETS {
            for b in c.residential.iter().chain(c.mobile).chain(c.business) {
                nets.push((c.country, b.parse().unwrap()));
            }
        }
        for (i, (a, x)) in nets.iter().enumerate() {
            for (b, y) in &nets[i + 1..] {
                assert!(!x.contains(y) && !y.contains(x), "{a} {x} overlaps {b} {y}");
            }
        }
    }

    #[test]
    fn a_country_address_is_that_country_by_the_table_and_inside_its_blocks() {
        let geo = Geo::load().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let weights: f64 = COUNTRY_NETS.iter().map(|c| c.consumer_weight).sum();
        assert!((weights - 1.0).abs() < 1e-9, "consumer weights sum to {weights}");
        for c in &COUNTRY_NETS {
            let blocks: Vec<Ipv4Net> =
                c.residential.iter().chain(c.mobile).chain(c.business).map(|b| b.parse().unwrap()).collect();
            for kind in [Eyeball::Residential, Eyeball::Mobile, Eyeball::Business] {
                for _ in 0..300 {
                    let ip = geo.address(c.country, kind, &mut rng);
                    assert_eq!(geo.country(ip), c.country, "{ip}");
                    assert!(blocks.iter().any(|n| n.contains(&ip)), "{ip} outside {}'s blocks", c.country);
                }
            }
        }
    }
}
