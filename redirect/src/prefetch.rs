//! Requests that are not a person clicking: HEAD requests and the link-preview
//! fetchers of mail scanners and chat apps. They are redirected like anyone
//! else (a scanner that gets a 404 may quarantine the email), but their events
//! carry `is_prefetch` so they are counted as bot clicks, not human ones.

use axum::http::{header, HeaderMap, Method};

/// Substrings of user agents that fetch links to preview or scan them.
/// Matched case-insensitively. Extend with care: a false positive hides a human click.
const PREVIEW_FETCHERS: &[&str] = &[
    "bingpreview",
    "discordbot",
    "facebookexternalhit",
    "googleimageproxy",
    "google-safety",
    "linkedinbot",
    "mimecast",
    "proofpoint",
    "barracuda",
    "skypeuripreview",
    "slackbot",
    "telegrambot",
    "twitterbot",
    "whatsapp",
    "yahoomailproxy",
    "microsoft office",
    "outlook-ios",
    "headlesschrome",
];

pub fn is_prefetch(method: &Method, headers: &HeaderMap) -> bool {
    if method == Method::HEAD {
        return true;
    }
    let Some(ua) = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // Compared in place, case-insensitively: no lowercased copy per request.
    PREVIEW_FETCHERS.iter().any(|f| ua.as_bytes().windows(f.len()).any(|w| w.eq_ignore_ascii_case(f.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ua(s: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::USER_AGENT, s.parse().unwrap());
        h
    }

    #[test]
    fn flags_head_and_known_fetchers_but_not_browsers() {
        assert!(is_prefetch(&Method::HEAD, &HeaderMap::new()));
        assert!(is_prefetch(&Method::GET, &ua("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)")));
        assert!(is_prefetch(&Method::GET, &ua("Mozilla/5.0 (compatible; GoogleImageProxy)")));
        assert!(!is_prefetch(
            &Method::GET,
            &ua("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36")
        ));
        assert!(!is_prefetch(&Method::GET, &HeaderMap::new()));
    }
}
