//! Where a webhook may go. A sender registers a URL; Ricochet then makes
//! requests to it from inside the operator's network, so a URL that points
//! back inside (the cloud's metadata service at 169.254.169.254, a
//! database on 10.0.0.5, the deliverer's own port on 127.0.0.1) would turn
//! webhooks into a way in: server-side request forgery.
//!
//! So a target is checked twice: its URL at registration ([`check_url`]:
//! scheme, no credentials, and a literal address must be public), and every
//! address its host resolves to just before each delivery
//! ([`resolve_public`]), whose answer the delivery then connects to, so a
//! name that resolves to a public address at registration and to a private
//! one later (DNS rebinding) is refused too. An operator whose receivers are
//! on a private network (the local stack, the tests) allows them with
//! `RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS=true` ([`Policy::allow_private`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("not a URL: {0}")]
    Invalid(String),
    #[error("a webhook URL is http:// or https://, not {0}://")]
    Scheme(String),
    #[error("a webhook URL names a host")]
    NoHost,
    #[error("a webhook URL carries no user name or password; sign with the webhook secret instead")]
    Credentials,
    #[error("{0} is a loopback, private, link-local, metadata or otherwise non-public address, which webhooks may not reach")]
    NotPublic(IpAddr),
    #[error("{host} did not resolve: {reason}")]
    Resolve { host: String, reason: String },
}

/// What the operator allows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// Private, loopback and link-local targets too
    /// (`RICOCHET_WEBHOOKS_ALLOW_PRIVATE_TARGETS`).
    pub allow_private: bool,
}

impl Policy {
    fn check_ip(&self, ip: IpAddr) -> Result<(), TargetError> {
        if self.allow_private || is_public(ip) {
            Ok(())
        } else {
            Err(TargetError::NotPublic(ip))
        }
    }
}

/// A target URL as registered: `http` or `https`, a host, no credentials,
/// and, if the host is an address, a public one.
pub fn check_url(raw: &str, policy: Policy) -> Result<Url, TargetError> {
    let url = Url::parse(raw).map_err(|e| TargetError::Invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::Scheme(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    match url.host() {
        None => return Err(TargetError::NoHost),
        Some(Host::Ipv4(ip)) => policy.check_ip(IpAddr::V4(ip))?,
        Some(Host::Ipv6(ip)) => policy.check_ip(IpAddr::V6(ip))?,
        Some(Host::Domain(_)) => {}
    }
    Ok(url)
}

/// The addresses to deliver to `url` at, resolved now: every one must be
/// public (one private answer refuses the lot, so a name cannot mix a public
/// address in to pass). Connect to these, not to the name again.
pub async fn resolve_public(url: &Url, policy: Policy) -> Result<Vec<SocketAddr>, TargetError> {
    let host = url.host_str().ok_or(TargetError::NoHost)?;
    let port = url.port_or_known_default().ok_or(TargetError::NoHost)?;
    // `host_str` keeps an IPv6 literal's brackets, which lookup_host does not take.
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
        .await
        .map_err(|e| TargetError::Resolve { host: host.to_owned(), reason: e.to_string() })?
        .collect();
    if addrs.is_empty() {
        return Err(TargetError::Resolve { host: host.to_owned(), reason: "no addresses".into() });
    }
    for a in &addrs {
        policy.check_ip(a.ip())?;
    }
    Ok(addrs)
}

/// Whether an address is on the public internet: not unspecified,
/// loopback, private (RFC 1918, IPv6 unique local), shared (CGNAT), link
/// local (where cloud metadata services answer), multicast, broadcast,
/// documentation, benchmarking or reserved. IPv4 inside IPv6 (mapped,
/// compatible, NAT64) is judged as the IPv4 address it carries.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                // 2001:db8::/32, documentation.
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                // 100::/64, discard-only.
                || (first == 0x0100 && v6.segments()[1..4] == [0, 0, 0]))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24, protocol assignments.
        || (a == 192 && b == 0 && c == 0)
        // 198.18.0.0/15, benchmarking.
        || (a == 198 && (b == 18 || b == 19))
        // 240.0.0.0/4, reserved.
        || a >= 240)
}

/// The IPv4 address an IPv6 one carries: mapped (`::ffff:a.b.c.d`),
/// compatible (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s[..6] {
        [0, 0, 0, 0, 0, 0xffff] => Some(tail),
        // `::` and `::1` are IPv6's own; the rest of ::/96 is compatible.
        [0, 0, 0, 0, 0, 0] if !v6.is_unspecified() && !v6.is_loopback() => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0] => Some(tail),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Policy = Policy { allow_private: false };
    const OPEN: Policy = Policy { allow_private: true };

    #[test]
    fn internal_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.170",
            "198.18.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "::",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_public(ip), "{ip} passed as public");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_public(ip), "{ip} refused");
        }
    }

    #[test]
    fn urls_are_checked_at_registration() {
        assert!(check_url("https://hooks.example.com/ricochet", STRICT).is_ok());
        assert!(check_url("http://8.8.8.8:8080/x", STRICT).is_ok());
        assert_eq!(check_url("ftp://example.com/", STRICT), Err(TargetError::Scheme("ftp".into())));
        assert_eq!(check_url("https://u:p@example.com/", STRICT), Err(TargetError::Credentials));
        assert!(matches!(check_url("not a url", STRICT), Err(TargetError::Invalid(_))));
        assert!(matches!(check_url("file:///etc/passwd", STRICT), Err(TargetError::Scheme(_))));
        for internal in [
            "http://127.0.0.1:8081/v1/links",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[fd00:ec2::254]/",
            "http://10.0.0.5:9000/",
        ] {
            assert!(matches!(check_url(internal, STRICT), Err(TargetError::NotPublic(_))), "{internal} accepted");
            assert!(check_url(internal, OPEN).is_ok(), "{internal} refused with private targets allowed");
        }
    }

    #[tokio::test]
    async fn names_are_checked_again_once_resolved() {
        // `localhost` resolves to loopback: refused unless allowed, whatever
        // the name looked like at registration.
        let url = check_url("http://localhost:9/hook", STRICT).unwrap();
        assert!(matches!(resolve_public(&url, STRICT).await, Err(TargetError::NotPublic(_))));
        let addrs = resolve_public(&url, OPEN).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9), "{addrs:?}");
        let literal = check_url("http://[::1]:9/", OPEN).unwrap();
        assert_eq!(resolve_public(&literal, OPEN).await.unwrap()[0].ip(), "::1".parse::<IpAddr>().unwrap());
    }
}
