//! Standard Webhooks signatures (the open specification at
//! standardwebhooks.com, used by Svix and others), so that a receiver can
//! check a delivery with any of its reference libraries.
//!
//! A delivery carries three headers: `webhook-id` (the message id, the same
//! on every retry, so a receiver can deduplicate), `webhook-timestamp`
//! (seconds since the epoch, so a receiver can refuse old replays) and
//! `webhook-signature`: `v1,` followed by the base64 HMAC-SHA256, keyed by
//! the secret, of `{id}.{timestamp}.{body}`. Several space-separated
//! signatures may be sent (while a secret is rotated); a receiver accepts the
//! delivery if one of them matches.
//!
//! A secret is shown to the sender as `whsec_` followed by the base64 of its
//! bytes; 32 random bytes here, within the 24 to 64 the specification asks.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("a webhook secret starts with {PREFIX}")]
    Prefix,
    #[error("a webhook secret is {PREFIX} and base64: {0}")]
    Base64(String),
    #[error("a webhook secret has 24 to 64 bytes, not {0}")]
    Length(usize),
}

/// The key one endpoint's deliveries are signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never in a log line.
        f.write_str("WebhookSecret(…)")
    }
}

impl WebhookSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::fill(&mut bytes[..]);
        WebhookSecret(bytes)
    }

    /// A secret as the sender was shown it (`whsec_…`).
    pub fn parse(shown: &str) -> Result<Self, SecretError> {
        let encoded = shown.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let bytes = STANDARD.decode(encoded).map_err(|e| SecretError::Base64(e.to_string()))?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(SecretError::Length(bytes.len()));
        }
        Ok(WebhookSecret(bytes))
    }

    /// How the sender is shown it, once, and how it is stored.
    pub fn to_shown(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `webhook-signature` value of one delivery: `v1,<base64>`.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(message_id, timestamp, body).finalize().into_bytes()))
    }

    /// Whether one of the space-separated `v1` signatures of `header` is this
    /// secret's for the delivery (compared in constant time).
    pub fn verify(&self, message_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|sig| {
            STANDARD.decode(sig).is_ok_and(|sig| self.mac(message_id, timestamp, body).verify_slice(&sig).is_ok())
        })
    }

    fn mac(&self, message_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// The three headers of a delivery signed with every one of `secrets` (one,
/// or two while a secret is rotated).
pub fn headers(
    secrets: &[&WebhookSecret],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let signatures: Vec<String> = secrets.iter().map(|s| s.sign(message_id, timestamp, body)).collect();
    [
        ("webhook-id", message_id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signatures.join(" ")),
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The specification's own example (also what its Python library gives).
    #[test]
    fn signs_the_specifications_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &signature));
    }

    #[test]
    fn secrets_are_shown_as_whsec_and_read_back() {
        let secret = WebhookSecret::generate();
        let shown = secret.to_shown();
        assert!(shown.starts_with("whsec_"), "{shown}");
        assert_eq!(WebhookSecret::parse(&shown).unwrap(), secret);
        assert_ne!(WebhookSecret::generate(), secret);
        assert_eq!(format!("{secret:?}"), "WebhookSecret(…)");
    }

    #[test]
    fn malformed_secrets_are_refused_with_the_reason() {
        assert_eq!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(SecretError::Prefix));
        assert!(matches!(WebhookSecret::parse("whsec_not base64!"), Err(SecretError::Base64(_))));
        assert_eq!(WebhookSecret::parse("whsec_AAAA"), Err(SecretError::Length(3)));
    }

    #[test]
    fn a_rotated_endpoint_gets_both_signatures_and_either_verifies() {
        let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
        let [_, _, (_, signature)] = headers(&[&new, &old], "msg_1", 1_700_000_000, b"{}");
        assert_eq!(signature.split(' ').count(), 2);
        assert!(old.verify("msg_1", 1_700_000_000, b"{}", &signature));
        assert!(new.verify("msg_1", 1_700_000_000, b"{}", &signature));
        assert!(!WebhookSecret::generate().verify("msg_1", 1_700_000_000, b"{}", &signature));
    }

    proptest! {
        /// Any change to the id, the timestamp or the body breaks the signature.
        #[test]
        fn a_signature_covers_id_timestamp_and_body(
            id in "[a-z0-9_]{1,30}",
            ts in 0i64..4_000_000_000,
            body in proptest::collection::vec(any::<u8>(), 0..200),
            flip in any::<usize>(),
        ) {
            let secret = WebhookSecret::generate();
            let signature = secret.sign(&id, ts, &body);
            prop_assert!(secret.verify(&id, ts, &body, &signature));
            let other_id = format!("{id}x");
            prop_assert!(!secret.verify(&other_id, ts, &body, &signature));
            prop_assert!(!secret.verify(&id, ts + 1, &body, &signature));
            let mut changed = body.clone();
            if changed.is_empty() {
                changed.push(0);
            } else {
                let i = flip % changed.len();
                changed[i] ^= 1;
            }
            prop_assert!(!secret.verify(&id, ts, &changed, &signature));
        }
    }
}
