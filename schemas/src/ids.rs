//! Identifiers with meaning, validated once at the edge of the system.
//!
//! Every id is a short printable token so that it can travel in URLs, Kafka
//! keys and ClickHouse `String` columns without escaping surprises.

use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} characters long; the limit is {max}")]
    TooLong { kind: &'static str, len: usize, max: usize },
    #[error("{kind} is {len} characters long; the minimum is {min}")]
    TooShort { kind: &'static str, len: usize, min: usize },
    #[error("{kind} may only contain {allowed}; found {found:?}")]
    BadChar { kind: &'static str, allowed: &'static str, found: char },
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, min = $min:expr, max = $max:expr, allowed = $allowed:literal, $ok:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                let len = s.chars().count();
                if len == 0 {
                    return Err(IdError::Empty { kind: $kind });
                }
                if len < $min {
                    return Err(IdError::TooShort { kind: $kind, len, min: $min });
                }
                if len > $max {
                    return Err(IdError::TooLong { kind: $kind, len, max: $max });
                }
                let ok: fn(char) -> bool = $ok;
                if let Some(found) = s.chars().find(|c| !ok(*c)) {
                    return Err(IdError::BadChar { kind: $kind, allowed: $allowed, found });
                }
                Ok($name(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        /// Lets maps keyed by the id be queried with a plain `&str` (same hash as `String`).
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

token_id!(
    /// The sender (a customer of Ricochet). Events are keyed by it in Kafka.
    ClientId, "client_id", min = 1, max = 64, allowed = "ASCII letters, digits, '-', '_' and '.'", is_token_char
);
token_id!(
    /// A campaign (one blast) of a client.
    CampaignId, "campaign_id", min = 1, max = 64, allowed = "ASCII letters, digits, '-', '_' and '.'", is_token_char
);
token_id!(
    /// A tracking link's stable id (minted as a UUIDv7 in simple form).
    LinkId, "link_id", min = 1, max = 64, allowed = "ASCII letters, digits, '-', '_' and '.'", is_token_char
);
token_id!(
    /// The sender's own id for a recipient, carried in a signed token.
    RecipientId, "recipient_id", min = 1, max = 128, allowed = "ASCII letters, digits, '-', '_', '.', '@' and '+'",
    |c| is_token_char(c) || matches!(c, '@' | '+')
);
token_id!(
    /// The unguessable base62 code in a tracking URL (`/{code}`).
    LinkCode, "link code", min = 7, max = 16, allowed = "base62 characters (0-9, A-Z, a-z)",
    |c| c.is_ascii_alphanumeric()
);

impl LinkId {
    /// A fresh, time-ordered link id.
    pub fn mint() -> Self {
        LinkId(uuid::Uuid::now_v7().simple().to_string())
    }
}

/// A click's unique, time-ordered id (UUIDv7), minted at the edge.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct EventId(pub uuid::Uuid);

impl EventId {
    pub fn mint() -> Self {
        EventId(uuid::Uuid::now_v7())
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_accept_tokens_and_explain_rejections() {
        assert_eq!(ClientId::parse("acme-co_1.eu").unwrap().as_str(), "acme-co_1.eu");
        assert_eq!(ClientId::parse(""), Err(IdError::Empty { kind: "client_id" }));
        assert!(matches!(ClientId::parse("a b"), Err(IdError::BadChar { found: ' ', .. })));
        assert!(matches!(ClientId::parse("x".repeat(65)), Err(IdError::TooLong { len: 65, .. })));
        let err = ClientId::parse("a/b").unwrap_err().to_string();
        assert!(err.contains("client_id may only contain"), "{err}");
    }

    #[test]
    fn link_codes_are_base62_of_at_least_seven() {
        assert!(LinkCode::parse("abcDEF1").is_ok());
        assert!(matches!(LinkCode::parse("abc"), Err(IdError::TooShort { min: 7, .. })));
        assert!(matches!(LinkCode::parse("abcdef-1"), Err(IdError::BadChar { found: '-', .. })));
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let ok: ClientId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(ok.as_str(), "acme");
        let err = serde_json::from_str::<ClientId>("\"a b\"").unwrap_err().to_string();
        assert!(err.contains("may only contain"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic_and_accept_only_their_alphabet(raw in "\\PC{0,40}") {
            if let Ok(code) = LinkCode::parse(raw.clone()) {
                proptest::prop_assert!(code.as_str().chars().all(|c| c.is_ascii_alphanumeric()));
                proptest::prop_assert!((7..=16).contains(&code.as_str().len()));
            }
            if let Ok(id) = ClientId::parse(raw) {
                proptest::prop_assert!(id.as_str().chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
            }
        }
    }

    #[test]
    fn minted_link_ids_are_valid_and_distinct() {
        let a = LinkId::mint();
        let b = LinkId::mint();
        assert_ne!(a, b);
        assert!(LinkId::parse(a.as_str()).is_ok());
    }
}
