//! Who is asking: the admin, or one client through one of its API keys.
//!
//! Keys travel as `Authorization: Bearer <key>`. Client keys are stored only as
//! their SHA-256 on the compacted `api_keys` topic, next to the registry, and
//! every API process holds them in memory. A client key sees only its own
//! client's data: anything else answers 404, exactly as if it did not exist.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use rand::Rng;
use ricochet_schemas::ClientId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::ApiState;

/// Prefix of client keys, so a leaked one is recognisable in logs and scanners.
pub const KEY_PREFIX: &str = "rk_";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Client(ClientId),
}

impl Principal {
    /// Whether this principal may read `client_id`'s data.
    pub fn can_read(&self, client_id: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Client(own) => own.as_str() == client_id,
        }
    }

    /// A 404 for anything the principal may not see, so existence does not leak.
    pub fn check(&self, client_id: &str, what: impl FnOnce() -> String) -> Result<(), ApiError> {
        if self.can_read(client_id) {
            Ok(())
        } else {
            Err(ApiError::NotFound(what()))
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Client(_) => Err(ApiError::Forbidden("this operation needs the admin key".into())),
        }
    }
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A fresh client key: the prefix and 32 base62 characters (~190 bits) from the CSPRNG.
pub fn mint_key() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let body: String = (0..32).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("{KEY_PREFIX}{body}")
}

impl FromRequestParts<Arc<ApiState>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<ApiState>) -> Result<Self, ApiError> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("missing Authorization header; send `Authorization: Bearer <api key>`".into())
        })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be `Bearer <api key>`".into()))?;
        if bool::from(key.as_bytes().ct_eq(state.admin_key.as_bytes())) {
            return Ok(Principal::Admin);
        }
        match state.links.api_key_client(&hash_key(key)) {
            Some(client) => Ok(Principal::Client(client)),
            None => Err(ApiError::Unauthorized("unknown or revoked API key".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_read_only_their_own_data() {
        let acme = Principal::Client(ClientId::parse("acme").unwrap());
        assert!(acme.can_read("acme"));
        assert!(!acme.can_read("globex"));
        assert!(Principal::Admin.can_read("globex"));
        assert!(matches!(acme.check("globex", || "x".into()), Err(ApiError::NotFound(_))));
        assert!(acme.require_admin().is_err());
    }

    #[test]
    fn keys_are_long_random_and_hashed() {
        let (a, b) = (mint_key(), mint_key());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == 35);
        assert_eq!(hash_key("k").len(), 64);
        assert_ne!(hash_key(&a), hash_key(&b));
    }
}
