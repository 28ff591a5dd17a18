//! Destination URLs. The edge only ever redirects to a destination registered
//! through this check, so it cannot be used as an open redirect.

use url::Url;

pub const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("destination_url must not be empty")]
    Empty,
    #[error("destination_url is {len} bytes long; the limit is {MAX_URL_LEN}")]
    TooLong { len: usize },
    #[error("destination_url contains a control character or whitespace at byte {at}")]
    ControlChar { at: usize },
    #[error("destination_url is not a valid absolute URL: {0}")]
    Unparsable(String),
    #[error("destination_url must use http or https, not {0:?}")]
    Scheme(String),
    #[error("destination_url must have a host")]
    NoHost,
    #[error("destination_url must not embed credentials (user:password@)")]
    Credentials,
}

/// A checked destination, kept in its normalized form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination(String);

impl Destination {
    pub fn parse(raw: &str) -> Result<Self, DestinationError> {
        if raw.is_empty() {
            return Err(DestinationError::Empty);
        }
        if raw.len() > MAX_URL_LEN {
            return Err(DestinationError::TooLong { len: raw.len() });
        }
        // Checked on the raw text: the URL parser would silently strip tabs and
        // newlines, and a Location header must never carry them.
        if let Some(at) = raw.bytes().position(|b| b.is_ascii_control() || b == b' ') {
            return Err(DestinationError::ControlChar { at });
        }
        let url = Url::parse(raw).map_err(|e| DestinationError::Unparsable(e.to_string()))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(DestinationError::Scheme(other.to_owned())),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(DestinationError::NoHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(DestinationError::Credentials);
        }
        let normalized = String::from(url);
        if normalized.len() > MAX_URL_LEN {
            return Err(DestinationError::TooLong { len: normalized.len() });
        }
        Ok(Destination(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_http_and_https() {
        assert_eq!(Destination::parse("https://shop.example/a?b=c").unwrap().as_str(), "https://shop.example/a?b=c");
        assert_eq!(Destination::parse("http://Shop.Example").unwrap().as_str(), "http://shop.example/");
    }

    #[test]
    fn rejects_what_could_turn_the_edge_into_a_weapon() {
        use DestinationError::*;
        assert_eq!(Destination::parse(""), Err(Empty));
        assert_eq!(Destination::parse("javascript:alert(1)"), Err(Scheme("javascript".into())));
        assert_eq!(Destination::parse("ftp://x.example/"), Err(Scheme("ftp".into())));
        assert_eq!(Destination::parse("https://user:pw@x.example/"), Err(Credentials));
        assert_eq!(Destination::parse("https://user@x.example/"), Err(Credentials));
        assert_eq!(Destination::parse("https://x.example/\r\nSet-Cookie: a=b"), Err(ControlChar { at: 18 }));
        assert_eq!(Destination::parse("https://x.example/a b"), Err(ControlChar { at: 19 }));
        assert!(matches!(Destination::parse("/relative"), Err(Unparsable(_))));
        let long = format!("https://x.example/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(Destination::parse(&long), Err(TooLong { .. })));
    }

    proptest! {
        #[test]
        fn never_panics_and_accepted_urls_are_safe(raw in ".{0,300}") {
            if let Ok(d) = Destination::parse(&raw) {
                prop_assert!(d.as_str().starts_with("http://") || d.as_str().starts_with("https://"));
                prop_assert!(!d.as_str().bytes().any(|b| b.is_ascii_control()));
            }
        }
    }
}
