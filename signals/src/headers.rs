//! Signals read straight off the request headers.

use std::sync::OnceLock;

use http::HeaderMap;

/// `Purpose: prefetch`, `Sec-Purpose: prefetch…` (Chrome, also `prefetch;prerender`),
/// `X-Purpose: preview` (Safari) and `X-Moz: prefetch` (Firefox).
pub fn prefetch_header(headers: &HeaderMap) -> bool {
    let says = |name: &str, words: &[&str]| {
        headers.get_all(name).iter().any(|v| {
            let v = v.as_bytes();
            words.iter().any(|w| v.len() >= w.len() && v[..w.len()].eq_ignore_ascii_case(w.as_bytes()))
        })
    };
    says("purpose", &["prefetch", "preview"])
        || says("sec-purpose", &["prefetch", "prerender"])
        || says("x-purpose", &["preview", "prefetch"])
        || says("x-moz", &["prefetch"])
}

/// One rule of `data/scanner-referers.txt`.
#[derive(Debug)]
enum HostRule {
    /// The host, or any subdomain of it.
    Suffix(String),
    /// `protect-*.mimecast.com`: one label that starts with `prefix`, then `.rest`.
    Wildcard { prefix: String, rest: String },
}

impl HostRule {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostRule::Suffix(s) => {
                host == s || host.strip_suffix(s.as_str()).is_some_and(|before| before.ends_with('.'))
            }
            HostRule::Wildcard { prefix, rest } => host
                .strip_suffix(rest.as_str())
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| label.starts_with(prefix.as_str()) && !label.contains('.')),
        }
    }
}

fn referer_rules() -> &'static [HostRule] {
    static RULES: OnceLock<Vec<HostRule>> = OnceLock::new();
    RULES.get_or_init(|| {
        crate::data::lines(crate::data::SCANNER_REFERERS)
            .map(|(_, l)| {
                let l = l.to_ascii_lowercase();
                match l.split_once("*.") {
                    Some((prefix, rest)) => HostRule::Wildcard { prefix: prefix.to_owned(), rest: rest.to_owned() },
                    None => HostRule::Suffix(l),
                }
            })
            .collect()
    })
}

/// The host of a URL, lowercased: no scheme, user info or port.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(':').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The `Referer` names a mail-security gateway's link rewriter (Safe Links,
/// URL Defense, Mimecast, Barracuda, Cisco): the gateway, not the recipient,
/// is following the link.
pub fn scanner_referer(headers: &HeaderMap) -> bool {
    let Some(referer) = headers.get(http::header::REFERER).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(host) = host_of(referer) else {
        return false;
    };
    referer_rules().iter().any(|r| r.matches(&host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn prefetch_headers_of_each_browser() {
        assert!(prefetch_header(&with("purpose", "prefetch")));
        assert!(prefetch_header(&with("sec-purpose", "prefetch;prerender")));
        assert!(prefetch_header(&with("sec-purpose", "Prefetch")));
        assert!(prefetch_header(&with("x-purpose", "preview")));
        assert!(prefetch_header(&with("x-moz", "prefetch")));
        assert!(!prefetch_header(&HeaderMap::new()));
        assert!(!prefetch_header(&with("x-moz", "something-else")));
        assert!(!prefetch_header(&with("accept", "prefetch")), "only the purpose headers count");
    }

    #[test]
    fn scanner_referers_by_vendor() {
        let yes = [
            "https://nam12.safelinks.protection.outlook.com/?url=https%3A%2F%2Ft.example.com",
            "https://urldefense.com/v3/__https://t.example.com__;!!abc",
            "https://urldefense.proofpoint.com/v2/url?u=https-3A__t.example.com",
            "https://protect-eu.mimecast.com/s/abc?domain=t.example.com",
            "https://protect.mimecast.com/s/abc",
            "https://linkprotect.cudasvc.com/url?a=https%3a%2f%2ft.example.com",
            "https://secure-web.cisco.com/1abc/https%3A%2F%2Ft.example.com",
            "HTTPS://URLDEFENSE.COM:443/v3/",
        ];
        for r in yes {
            assert!(scanner_referer(&with("referer", r)), "{r}");
        }
        let no = [
            "https://mail.google.com/",
            "https://outlook.live.com/mail/0/",
            "https://notsafelinks.protection.outlook.com.evil.example/",
            "https://evilurldefense.com/",
            "https://protect-eu.mimecast.com.evil.example/",
            "https://a.b.protect-eu.evil.example/",
            "not a url",
            "",
        ];
        for r in no {
            assert!(!scanner_referer(&with("referer", r)), "{r}");
        }
        assert!(!scanner_referer(&HeaderMap::new()));
    }
}
