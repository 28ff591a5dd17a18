//! Who is asking: the admin, or one client through one of its API keys.
//!
//! Keys travel as `Authorization: Bearer <key>`. Client keys are stored only as
//! their SHA-256 on the compacted `api_keys` topic, next to the registry, and
//! every API process holds them in memory. A client key sees only its own
//! client's data: anything else answers 404, exactly as if it did not exist.
//!
//! A client key has scopes ([`KeyScope`]): `read` (stats, top lists, the
//! dashboard), `recipients` (recipient lists), `write` (create and change the
//! client's own links) and `tokens` (the token-signing keys). A call outside
//! them answers 403 naming the missing scope. Keys made before scopes hold
//! [`LEGACY_SCOPES`], what every client key could do then. A key stops working
//! once it expires, and while its client is paused.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use rand::Rng;
use ricochet_schemas::{ClientId, ClientStatus};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::ApiState;

/// Prefix of client keys, so a leaked one is recognisable in logs and scanners.
pub const KEY_PREFIX: &str = "rk_";

/// A client key's scope: what it may do (see `docs/security.md`). Its
/// lowercase name is how keys are created and listed, and how they are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    /// Stats, breakdowns, top lists, the client record: what a dashboard needs.
    Read,
    /// Recipient lists (recipient addresses).
    Recipients,
    /// Create and change the client's own links.
    Write,
    /// The client's recipient-token signing keys.
    Tokens,
}

impl KeyScope {
    pub const ALL: [KeyScope; 4] = [KeyScope::Read, KeyScope::Recipients, KeyScope::Write, KeyScope::Tokens];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Read => "read",
            KeyScope::Recipients => "recipients",
            KeyScope::Write => "write",
            KeyScope::Tokens => "tokens",
        }
    }

    pub fn parse(s: &str) -> Option<KeyScope> {
        KeyScope::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`KeyScope`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Scopes(u8);

/// What a key made before scopes may do: everything a client key could then,
/// which was reading all of its client's data, recipients and signing keys
/// included, and writing nothing.
pub const LEGACY_SCOPES: Scopes = Scopes(1 | 1 << 1 | 1 << 3);

impl Scopes {
    pub fn contains(self, scope: KeyScope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn with(self, scope: KeyScope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    /// A stored record's scopes: `None` is a legacy key; unknown names are
    /// ignored (a newer API may know more).
    pub fn of_record(scopes: Option<&[String]>) -> Scopes {
        match scopes {
            None => LEGACY_SCOPES,
            Some(names) => names.iter().filter_map(|n| KeyScope::parse(n)).fold(Scopes::default(), Scopes::with),
        }
    }

    /// The scopes in the set, in [`KeyScope::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = KeyScope> {
        KeyScope::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(KeyScope::as_str).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Client(ClientId, Scopes),
}

impl Principal {
    /// Whether this principal may read `client_id`'s data.
    pub fn can_read(&self, client_id: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Client(own, _) => own.as_str() == client_id,
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
            Principal::Client(..) => Err(ApiError::Forbidden("this operation needs the admin key".into())),
        }
    }

    /// A 403 naming the scope when a client key lacks it; the admin has all.
    pub fn require(&self, scope: KeyScope) -> Result<(), ApiError> {
        match self {
            Principal::Client(_, scopes) if !scopes.contains(scope) => Err(ApiError::Forbidden(format!(
                "this API key lacks the `{}` scope (it has: {}); ask the admin for a key with it",
                scope.as_str(),
                match scopes.names() {
                    names if names.is_empty() => "none".to_owned(),
                    names => names.join(", "),
                }
            ))),
            _ => Ok(()),
        }
    }

    /// Creating or changing `client_id`'s links: the admin, or that client's
    /// key with the `write` scope.
    pub fn require_write(&self, client_id: &str) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Client(own, _) if own.as_str() != client_id => Err(ApiError::Forbidden(format!(
                "this API key belongs to client {own} and may not write client {client_id:?}'s links"
            ))),
            Principal::Client(..) => self.require(KeyScope::Write),
        }
    }

    /// Who asked, for an audit record: `admin` or `client`.
    pub fn audit_name(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::Client(..) => "client".into(),
        }
    }

    /// [`Principal::check`] for `client_id`, then [`Principal::require`].
    pub fn check_scope(&self, client_id: &str, scope: KeyScope, what: impl FnOnce() -> String) -> Result<(), ApiError> {
        self.check(client_id, what)?;
        self.require(scope)
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
        let record = state
            .links
            .api_key(&hash_key(key))
            .filter(|k| !k.revoked)
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked API key".into()))?;
        if let Some(expired) = record.expires_at_ms.filter(|at| *at <= ricochet_registry::writer::now_ms()) {
            let at = chrono::DateTime::from_timestamp_millis(expired).unwrap_or_default();
            return Err(ApiError::Unauthorized(format!(
                "this API key expired at {}; ask the admin for a new one",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )));
        }
        let paused = state.links.client(record.client_id.as_str()).is_some_and(|c| c.status == ClientStatus::Paused);
        if paused {
            return Err(ApiError::Forbidden(format!(
                "client {} is paused; its API keys work again once the admin sets it active",
                record.client_id
            )));
        }
        Ok(Principal::Client(record.client_id.clone(), Scopes::of_record(record.scopes.as_deref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_read_only_their_own_data() {
        let acme = Principal::Client(ClientId::parse("acme").unwrap(), LEGACY_SCOPES);
        assert!(acme.can_read("acme"));
        assert!(!acme.can_read("globex"));
        assert!(Principal::Admin.can_read("globex"));
        assert!(matches!(acme.check("globex", || "x".into()), Err(ApiError::NotFound(_))));
        assert!(acme.require_admin().is_err());
    }

    #[test]
    fn legacy_keys_keep_todays_rights_and_scopes_name_what_is_missing() {
        let legacy = Scopes::of_record(None);
        assert_eq!(legacy.names(), ["read", "recipients", "tokens"]);
        let read = Scopes::of_record(Some(&["read".into(), "future".into()]));
        assert_eq!(read.names(), ["read"]);
        let key = Principal::Client(ClientId::parse("acme").unwrap(), read);
        assert!(key.require(KeyScope::Read).is_ok());
        let Err(ApiError::Forbidden(m)) = key.require(KeyScope::Recipients) else { panic!("not a 403") };
        assert!(m.contains("`recipients`"), "{m}");
        assert!(Principal::Admin.require(KeyScope::Write).is_ok());
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
