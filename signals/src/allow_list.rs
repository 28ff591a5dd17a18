//! A client's own networks (`ClientRecord.allowed_networks`): clicks from
//! them are the client's people, e.g. an office behind a cloud proxy.
//!
//! The CIDRs are parsed once per client record, not per request: the parsed
//! list is kept per client with the text it came from, and re-parsed only when
//! a newer record carries different networks.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use ipnet::IpNet;
use ricochet_schemas::{ClientId, ClientRecord};

struct Parsed {
    source: Vec<String>,
    nets: Vec<IpNet>,
}

#[derive(Default)]
pub struct AllowLists {
    by_client: DashMap<ClientId, Arc<Parsed>>,
}

impl AllowLists {
    /// Whether `ip` (the full address) is in one of the client's allowed networks.
    pub fn contains(&self, client: &ClientRecord, ip: IpAddr) -> bool {
        if client.allowed_networks.is_empty() {
            return false;
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.parsed(client).nets.iter().any(|net| net.contains(&ip))
    }

    fn parsed(&self, client: &ClientRecord) -> Arc<Parsed> {
        if let Some(p) = self.by_client.get(&client.client_id).filter(|p| p.source == client.allowed_networks) {
            return p.clone();
        }
        let nets = client
            .allowed_networks
            .iter()
            .filter_map(|cidr| match cidr.trim().parse::<IpNet>() {
                Ok(net) => Some(net),
                // The API validates CIDRs; a bad one from an old writer is skipped, never fatal.
                Err(e) => {
                    tracing::warn!(client = %client.client_id, cidr, error = %e, "ignoring an allowed network that is no CIDR");
                    None
                }
            })
            .collect();
        let parsed = Arc::new(Parsed { source: client.allowed_networks.clone(), nets });
        self.by_client.insert(client.client_id.clone(), parsed.clone());
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ricochet_schemas::ClientStatus;

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

    #[test]
    fn inside_and_outside_the_client_networks() {
        let lists = AllowLists::default();
        let c = client(&["203.0.113.0/24", "2001:db8:1::/48", "not a cidr"]);
        assert!(lists.contains(&c, "203.0.113.77".parse().unwrap()));
        assert!(lists.contains(&c, "::ffff:203.0.113.77".parse().unwrap()));
        assert!(lists.contains(&c, "2001:db8:1:5::1".parse().unwrap()));
        assert!(!lists.contains(&c, "203.0.114.1".parse().unwrap()));
        assert!(!lists.contains(&client(&[]), "203.0.113.77".parse().unwrap()));
    }

    #[test]
    fn a_new_record_replaces_the_parsed_list() {
        let lists = AllowLists::default();
        let ip = "198.51.100.7".parse().unwrap();
        assert!(!lists.contains(&client(&["203.0.113.0/24"]), ip));
        assert!(lists.contains(&client(&["198.51.100.0/24"]), ip), "re-parsed after the change");
        assert_eq!(lists.by_client.len(), 1);
    }
}
