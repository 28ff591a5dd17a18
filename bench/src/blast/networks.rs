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

// --- people's own networks ---------------------------------------------------

pub const RESIDENTIAL: Pool = Pool {
    owner: "residential",
    asn: 0,
    // Comcast, Deutsche Telekom, Orange, BT.
    blocks: &["73.0.0.0/8", "98.192.0.0/10", "79.192.0.0/10", "90.0.0.0/9", "86.128.0.0/10"],
};
pub const MOBILE: Pool = Pool {
    owner: "mobile",
    asn: 0,
    // T-Mobile US, Verizon Wireless, AT&T Mobility.
    blocks: &["172.32.0.0/11", "174.192.0.0/10", "107.64.0.0/10"],
};
pub const CORPORATE: Pool = Pool {
    owner: "corporate",
    asn: 0,
    // Business access on AT&T, Lumen and Cogent.
    blocks: &["12.0.0.0/8", "4.0.0.0/9", "38.0.0.0/8"],
};

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const ALL: [&Pool; 15] = [
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
        &RESIDENTIAL,
        &MOBILE,
        &CORPORATE,
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
    fn no_two_pools_overlap() {
        let nets: Vec<(&str, Ipv4Net)> =
            ALL.iter().flat_map(|p| p.blocks.iter().map(|b| (p.owner, b.parse::<Ipv4Net>().unwrap()))).collect();
        for (i, (a, x)) in nets.iter().enumerate() {
            for (b, y) in &nets[i + 1..] {
                assert!(!x.contains(y) && !y.contains(x), "{a} {x} overlaps {b} {y}");
            }
        }
    }
}
