//! Signed recipient tokens: per-recipient attribution without per-recipient storage.
//!
//! A tracking URL may carry `/{code}/{token}`, where
//!
//! ```text
//! v1 token = kid "." base64url(recipient_id) "." base64url(HMAC-SHA256(client_key, code "." recipient_id)[..16])
//! v2 token = kid "." base64url(recipient_id) "." sent_at "." base64url(HMAC-SHA256(client_key, "v2:" code "." sent_at "." recipient_id)[..16])
//! client_key = HMAC-SHA256(master_key[kid], "ricochet/recipient-key/v1/" client_id)
//! ```
//!
//! A v2 token also carries the time the email was sent (`sent_at`, decimal
//! seconds since the Unix epoch), signed, so every click knows how long after
//! delivery it came without anything stored per message. The two versions are
//! told apart by their number of parts; the `v2:` prefix keeps their signed
//! messages disjoint (a code never contains `:`), so a v1 signature can never
//! pass as a v2 one. Both verify with the same keys.
//!
//! The edge holds the master keys (`RICOCHET_TOKEN_KEYS`); each client gets only
//! its derived `client_key` (API: `GET /v1/clients/{id}/token-keys`) and mints
//! tokens for a whole blast on its own side, with no API call per recipient.
//! A client key can sign only that client's recipients, and binding the code
//! stops a token from being moved to another link. Keys rotate by id: add a new
//! master key first in the list (it becomes the one handed out), keep the old
//! ones until the emails that used them are no longer clicked.
//!
//! A token that fails verification never blocks the redirect: the click is
//! attributed to no recipient and flagged `invalid`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use ricochet_schemas::{IdError, RecipientId};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted; longer path segments are rejected before any work.
pub const MAX_TOKEN_LEN: usize = 256;
const MAC_BYTES: usize = 16;
const KEY_CONTEXT: &str = "ricochet/recipient-key/v1/";
/// `sent_at` digits: seconds up to the year 33658, and no overflow in milliseconds.
const MAX_SENT_AT_DIGITS: usize = 12;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub recipient: RecipientId,
    /// When the email was sent (ms since the epoch); `None` for v1 tokens.
    pub sent_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token key spec must be `kid:hexsecret[,kid:hexsecret…]` with kid of 1-16 letters or digits and a secret of at least 32 bytes: {0}")]
    BadKeySpec(String),
    #[error("token is longer than {MAX_TOKEN_LEN} characters")]
    TooLong,
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token was signed with unknown key id {0:?}")]
    UnknownKey(String),
    #[error("token signature does not match")]
    BadSignature,
    #[error("token recipient is invalid: {0}")]
    BadRecipient(#[from] IdError),
}

/// The master keys, newest (the one handed out) first.
#[derive(Clone)]
pub struct TokenKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("TokenKeys").field("ids", &self.keys.iter().map(|(k, _)| k).collect::<Vec<_>>()).finish()
    }
}

impl TokenKeys {
    /// Parses `kid:hexsecret,kid:hexsecret`.
    pub fn parse(spec: &str) -> Result<Self, TokenError> {
        let mut keys = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, secret) = part.split_once(':').ok_or_else(|| TokenError::BadKeySpec("missing ':'".into()))?;
            if kid.is_empty() || kid.len() > 16 || !kid.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(TokenError::BadKeySpec(format!("bad key id {kid:?}")));
            }
            let secret = hex::decode(secret).map_err(|e| TokenError::BadKeySpec(format!("key {kid}: {e}")))?;
            if secret.len() < 32 {
                return Err(TokenError::BadKeySpec(format!("key {kid} has {} bytes", secret.len())));
            }
            keys.push((kid.to_owned(), secret));
        }
        if keys.is_empty() {
            return Err(TokenError::BadKeySpec("no keys".into()));
        }
        Ok(TokenKeys { keys })
    }

    fn master(&self, kid: &str) -> Option<&[u8]> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, s)| s.as_slice())
    }

    fn derive(master: &[u8], client_id: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(master).expect("HMAC takes any key length");
        mac.update(KEY_CONTEXT.as_bytes());
        mac.update(client_id.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The keys a client signs with, newest first: `(kid, key)`.
    pub fn client_keys(&self, client_id: &str) -> Vec<(String, Vec<u8>)> {
        self.keys.iter().map(|(kid, master)| (kid.clone(), Self::derive(master, client_id))).collect()
    }

    /// Mints a token with the newest key: what a sender does on its side.
    pub fn mint(&self, client_id: &str, code: &str, recipient: &RecipientId) -> String {
        let (kid, master) = &self.keys[0];
        mint_with_client_key(kid, &Self::derive(master, client_id), code, recipient)
    }

    /// Mints a v2 token, carrying the send time, with the newest key.
    pub fn mint_sent_at(&self, client_id: &str, code: &str, recipient: &RecipientId, sent_at_secs: u64) -> String {
        let (kid, master) = &self.keys[0];
        mint_sent_at_with_client_key(kid, &Self::derive(master, client_id), code, recipient, sent_at_secs)
    }

    /// Checks a token for a link of `client_id` with `code`: its recipient.
    pub fn verify(&self, client_id: &str, code: &str, token: &str) -> Result<RecipientId, TokenError> {
        self.verify_token(client_id, code, token).map(|t| t.recipient)
    }

    /// Checks a v1 or v2 token for a link of `client_id` with `code`: its
    /// recipient and, for v2, the signed send time.
    pub fn verify_token(&self, client_id: &str, code: &str, token: &str) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let parts: Vec<&str> = token.splitn(5, '.').collect();
        let (kid, who, sent_at, sig) = match parts[..] {
            [kid, who, sig] => (kid, who, None, sig),
            [kid, who, sent_at, sig] => (kid, who, Some(sent_at), sig),
            _ => return Err(TokenError::Malformed("expected kid.recipient[.sent_at].signature")),
        };
        let recipient = URL_SAFE_NO_PAD.decode(who).map_err(|_| TokenError::Malformed("recipient is not base64url"))?;
        let recipient = String::from_utf8(recipient).map_err(|_| TokenError::Malformed("recipient is not UTF-8"))?;
        let sent_at_secs = sent_at.map(parse_sent_at).transpose()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        if sig.len() != MAC_BYTES {
            return Err(TokenError::Malformed("signature has the wrong length"));
        }
        let master = self.master(kid).ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))?;
        let mac = signed(&Self::derive(master, client_id), code, sent_at, &recipient);
        // Constant-time comparison of the truncated MAC.
        mac.verify_truncated_left(&sig).map_err(|_| TokenError::BadSignature)?;
        Ok(VerifiedToken {
            recipient: RecipientId::parse(recipient)?,
            sent_at_ms: sent_at_secs.map(|s| s as i64 * 1000),
        })
    }
}

fn parse_sent_at(text: &str) -> Result<u64, TokenError> {
    // Digits only: `u64::from_str` would also take a `+`, and one time must have one spelling.
    if text.is_empty() || text.len() > MAX_SENT_AT_DIGITS || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed("sent_at is not 1-12 decimal digits"));
    }
    text.parse().map_err(|_| TokenError::Malformed("sent_at is not a number"))
}

/// The MAC over what a token signs: v1 `code "." recipient`, v2 `"v2:" code "." sent_at "." recipient`.
fn signed(client_key: &[u8], code: &str, sent_at: Option<&str>, recipient: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(client_key).expect("HMAC takes any key length");
    if let Some(sent_at) = sent_at {
        mac.update(b"v2:");
        mac.update(code.as_bytes());
        mac.update(b".");
        mac.update(sent_at.as_bytes());
    } else {
        mac.update(code.as_bytes());
    }
    mac.update(b".");
    mac.update(recipient.as_bytes());
    mac
}

/// Mints a v1 token from a client key, as a sender does in bulk on its own side.
pub fn mint_with_client_key(kid: &str, client_key: &[u8], code: &str, recipient: &RecipientId) -> String {
    let sig = signed(client_key, code, None, recipient.as_str()).finalize().into_bytes();
    format!("{kid}.{}.{}", URL_SAFE_NO_PAD.encode(recipient.as_str()), URL_SAFE_NO_PAD.encode(&sig[..MAC_BYTES]))
}

/// Mints a v2 token from a client key: the recipient and the time the email is
/// sent (seconds since the Unix epoch), both signed.
pub fn mint_sent_at_with_client_key(
    kid: &str,
    client_key: &[u8],
    code: &str,
    recipient: &RecipientId,
    sent_at_secs: u64,
) -> String {
    let sent_at = sent_at_secs.to_string();
    let sig = signed(client_key, code, Some(&sent_at), recipient.as_str()).finalize().into_bytes();
    format!(
        "{kid}.{}.{sent_at}.{}",
        URL_SAFE_NO_PAD.encode(recipient.as_str()),
        URL_SAFE_NO_PAD.encode(&sig[..MAC_BYTES])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> TokenKeys {
        TokenKeys::parse(&format!("k2:{},k1:{}", "ab".repeat(32), "cd".repeat(32))).unwrap()
    }

    fn r(s: &str) -> RecipientId {
        RecipientId::parse(s).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_for_its_client_and_code_only() {
        let k = keys();
        let token = k.mint("acme", "Ab3dE5gH", &r("jane@example.com"));
        assert!(token.starts_with("k2."));
        assert_eq!(k.verify("acme", "Ab3dE5gH", &token), Ok(r("jane@example.com")));
        assert_eq!(k.verify("globex", "Ab3dE5gH", &token), Err(TokenError::BadSignature), "another client's link");
        assert_eq!(k.verify("acme", "Zz9yX8wV", &token), Err(TokenError::BadSignature), "another link");
    }

    #[test]
    fn senders_mint_with_their_client_key_and_old_keys_still_verify() {
        let k = keys();
        let (kid, key) = k.client_keys("acme").pop().unwrap(); // the older key, k1
        assert_eq!(kid, "k1");
        let token = mint_with_client_key(&kid, &key, "Ab3dE5gH", &r("r-42"));
        assert_eq!(k.verify("acme", "Ab3dE5gH", &token), Ok(r("r-42")));
        let rotated_out = TokenKeys::parse(&format!("k2:{}", "ab".repeat(32))).unwrap();
        assert_eq!(rotated_out.verify("acme", "Ab3dE5gH", &token), Err(TokenError::UnknownKey("k1".into())));
    }

    #[test]
    fn tampering_is_detected() {
        let k = keys();
        let token = k.mint("acme", "Ab3dE5gH", &r("r-42"));
        let forged = token.replacen(&URL_SAFE_NO_PAD.encode("r-42"), &URL_SAFE_NO_PAD.encode("r-43"), 1);
        assert_eq!(k.verify("acme", "Ab3dE5gH", &forged), Err(TokenError::BadSignature));
        assert!(matches!(k.verify("acme", "Ab3dE5gH", "garbage"), Err(TokenError::Malformed(_))));
        assert_eq!(k.verify("acme", "Ab3dE5gH", &"a".repeat(300)), Err(TokenError::TooLong));
    }

    #[test]
    fn key_specs_are_checked() {
        assert!(TokenKeys::parse("").is_err());
        assert!(TokenKeys::parse("k1:abcd").is_err(), "short secret");
        assert!(TokenKeys::parse(&format!("k-1:{}", "ab".repeat(32))).is_err(), "bad kid");
        assert!(!format!("{:?}", keys()).contains("abab"), "Debug never shows secrets");
    }

    #[test]
    fn v2_tokens_carry_a_signed_send_time_and_v1_tokens_keep_working() {
        let k = keys();
        let sent = 1_764_579_600; // 2025-12-01T09:00:00Z
        let v2 = k.mint_sent_at("acme", "Ab3dE5gH", &r("jane@example.com"), sent);
        assert_eq!(v2.split('.').count(), 4);
        assert_eq!(
            k.verify_token("acme", "Ab3dE5gH", &v2),
            Ok(VerifiedToken { recipient: r("jane@example.com"), sent_at_ms: Some(sent as i64 * 1000) })
        );
        assert_eq!(k.verify("acme", "Ab3dE5gH", &v2), Ok(r("jane@example.com")));
        let v1 = k.mint("acme", "Ab3dE5gH", &r("jane@example.com"));
        assert_eq!(
            k.verify_token("acme", "Ab3dE5gH", &v1),
            Ok(VerifiedToken { recipient: r("jane@example.com"), sent_at_ms: None })
        );
        // Senders mint v2 with their client key too, also with an older key.
        let (kid, key) = k.client_keys("acme").pop().unwrap();
        let theirs = mint_sent_at_with_client_key(&kid, &key, "Ab3dE5gH", &r("r-42"), sent);
        assert_eq!(k.verify_token("acme", "Ab3dE5gH", &theirs).unwrap().sent_at_ms, Some(sent as i64 * 1000));
    }

    #[test]
    fn the_documented_python_mints_the_same_v2_token() {
        // docs/recipient-tokens.md's `tracking_url` with key 00…00 gives this.
        let token = mint_sent_at_with_client_key("k1", &[0; 32], "Ab3dE5gH", &r("r-42"), 1_764_579_600);
        assert_eq!(token, "k1.ci00Mg.1764579600.jOZ51Eu67M6ikjTP-BwzHA");
    }

    #[test]
    fn a_send_time_cannot_be_changed_added_or_removed() {
        let k = keys();
        let v2 = k.mint_sent_at("acme", "Ab3dE5gH", &r("r-42"), 1_764_579_600);
        let moved = v2.replacen(".1764579600.", ".1764579000.", 1);
        assert_eq!(k.verify_token("acme", "Ab3dE5gH", &moved), Err(TokenError::BadSignature), "changed");
        let parts: Vec<&str> = v2.split('.').collect();
        let dropped = format!("{}.{}.{}", parts[0], parts[1], parts[3]);
        assert_eq!(k.verify_token("acme", "Ab3dE5gH", &dropped), Err(TokenError::BadSignature), "removed");
        let v1 = k.mint("acme", "Ab3dE5gH", &r("r-42"));
        let parts: Vec<&str> = v1.split('.').collect();
        let added = format!("{}.{}.1764579600.{}", parts[0], parts[1], parts[2]);
        assert_eq!(k.verify_token("acme", "Ab3dE5gH", &added), Err(TokenError::BadSignature), "added");
        for bad in ["", "+1764579600", "-5", "1e9", "1234567890123"] {
            let t = format!("{}.{}.{bad}.{}", parts[0], parts[1], parts[2]);
            assert!(matches!(k.verify_token("acme", "Ab3dE5gH", &t), Err(TokenError::Malformed(_))), "{bad:?}");
        }
        assert!(matches!(k.verify_token("acme", "Ab3dE5gH", "a.b.c.d.e"), Err(TokenError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn verifying_arbitrary_input_never_panics(token in ".{0,300}", code in "[A-Za-z0-9]{0,20}") {
            let _ = keys().verify_token("acme", &code, &token);
        }

        #[test]
        fn any_send_time_round_trips(sent in 0u64..=999_999_999_999, who in "[A-Za-z0-9@.+_-]{1,40}") {
            let k = keys();
            let token = k.mint_sent_at("acme", "Ab3dE5gH", &r(&who), sent);
            let got = k.verify_token("acme", "Ab3dE5gH", &token).unwrap();
            prop_assert_eq!(got.sent_at_ms, Some(sent as i64 * 1000));
            prop_assert_eq!(got.recipient, r(&who));
        }
    }
}
