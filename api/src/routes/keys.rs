//! A client's keys: the API keys it calls with (minted, listed and revoked
//! by the admin; only their hashes are kept) and the keys it signs recipient
//! tokens with (`docs/recipient-tokens.md`).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ricochet_schemas::{ApiKeyRecord, ClientId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{self, KeyScope, Principal};
use crate::error::{ApiError, NoQuery, Path};
use crate::openapi::{AdminErrors, ApiKeyPath, ClientPath, ReadErrors, UpdateErrors};
use crate::state::ApiState;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateApiKey {
    /// What the key is for, up to 200 characters.
    #[serde(default)]
    #[schema(max_length = 200)]
    label: Option<String>,
    /// What the key may do: `read` (stats, top lists, the dashboard),
    /// `recipients` (recipient lists), `write` (create and change the client's
    /// links), `tokens` (the token-signing keys). Absent: the rights keys had
    /// before scopes (`read`, `recipients`, `tokens`).
    #[serde(default)]
    #[schema(min_items = 1)]
    scopes: Option<Vec<KeyScope>>,
    /// When the key stops working (RFC 3339; one in the past makes a key that
    /// is already expired). Absent: never.
    #[serde(default)]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// `POST /v1/clients/{id}/api-keys` (admin): a new key, shown once; only its hash is kept.
#[utoipa::path(
    post,
    path = "/v1/clients/{client_id}/api-keys",
    tag = "clients",
    summary = "Mint an API key for a client (admin); it is shown once.",
    params(ClientPath),
    request_body = Option<CreateApiKey>,
    responses(
        (status = 201, description = "Created.", body = ApiKeyCreated),
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create_api_key(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(ClientPath { client_id }): Path<ClientPath>,
    // No body, `null`, or the object: the document allows all three.
    body: Result<Option<Json<Option<serde_json::Value>>>, JsonRejection>,
) -> Result<(StatusCode, Json<ApiKeyCreated>), ApiError> {
    principal.require_admin()?;
    let client_id = ClientId::parse(client_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // An object or nothing: serde would otherwise read `[null, null]` as the
    // struct's fields in order.
    let body: CreateApiKey = match body?.and_then(|Json(b)| b) {
        None => CreateApiKey::default(),
        Some(object @ serde_json::Value::Object(_)) => {
            serde_json::from_value(object).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
        }
        Some(_) => return Err(ApiError::BadRequest("the body must be a JSON object, null or empty".into())),
    };
    let label = body.label;
    let scopes = match body.scopes {
        Some(names) if names.is_empty() => {
            return Err(ApiError::BadRequest(
                "scopes must name at least one of read, recipients, write, tokens (or be left out)".into(),
            ))
        }
        Some(names) => Some(names.iter().map(|n| n.as_str().to_owned()).collect::<Vec<_>>()),
        None => None,
    };
    let now = ricochet_registry::writer::now_ms();
    let expires_at_ms = match body.expires_at {
        None => None,
        Some(at) => {
            let at = chrono::DateTime::parse_from_rfc3339(&at)
                .map_err(|e| ApiError::BadRequest(format!("expires_at must be an RFC 3339 time: {e}")))?
                .timestamp_millis();
            // One in the past is allowed: the key is made already expired.
            Some(at)
        }
    };
    if label.as_ref().is_some_and(|l| l.chars().count() > 200) {
        return Err(ApiError::BadRequest("label is limited to 200 characters".into()));
    }
    let key = auth::mint_key();
    let record = ApiKeyRecord {
        key_hash: auth::hash_key(&key),
        client_id,
        label,
        revoked: false,
        created_at_ms: now,
        scopes,
        expires_at_ms,
    };
    let version = s.writer.put_api_key(&record).await.map_err(|e| ApiError::Registry(e.to_string()))?;
    s.links.apply_api_key_at(record.clone(), version);
    Ok((StatusCode::CREATED, Json(ApiKeyCreated { key, listed: ApiKeyListed::from(&record) })))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyCreated {
    /// The key itself, shown this once.
    pub key: String,
    #[serde(flatten)]
    pub listed: ApiKeyListed,
}

/// A key as listed, without its secret.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyListed {
    /// Its id (SHA-256), for revoking it.
    pub key_id: String,
    #[schema(value_type = String)]
    pub client_id: ClientId,
    pub label: Option<String>,
    /// What the key may do.
    pub scopes: Vec<KeyScope>,
    /// A key made before scopes, with the rights keys had then.
    pub legacy: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it stops working; null: never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

impl From<&ApiKeyRecord> for ApiKeyListed {
    fn from(k: &ApiKeyRecord) -> Self {
        ApiKeyListed {
            key_id: k.key_hash.clone(),
            client_id: k.client_id.clone(),
            label: k.label.clone(),
            scopes: auth::Scopes::of_record(k.scopes.as_deref()).iter().collect(),
            legacy: k.scopes.is_none(),
            created_at: rfc3339(k.created_at_ms),
            expires_at: k.expires_at_ms.map(rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeys {
    #[schema(value_type = String)]
    pub client_id: ClientId,
    /// The client's keys that are not revoked (expired ones included), oldest first.
    pub keys: Vec<ApiKeyListed>,
}

/// `GET /v1/clients/{id}/api-keys` (admin): the client's keys that are not
/// revoked, expired ones included, without their secrets.
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/api-keys",
    tag = "clients",
    summary = "List a client's API keys (admin), without their secrets.",
    params(ClientPath),
    responses(
        (status = 200, description = "The keys, oldest first.", body = ApiKeys),
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_api_keys(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(ClientPath { client_id }): Path<ClientPath>,
) -> Result<Json<ApiKeys>, ApiError> {
    principal.require_admin()?;
    let client_id = ClientId::parse(client_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut keys: Vec<_> = s.links.api_keys().into_iter().filter(|k| k.client_id == client_id && !k.revoked).collect();
    keys.sort_by(|a, b| (a.created_at_ms, &a.key_hash).cmp(&(b.created_at_ms, &b.key_hash)));
    let keys = keys.iter().map(|k| ApiKeyListed::from(&**k)).collect();
    Ok(Json(ApiKeys { client_id, keys }))
}

/// `DELETE /v1/clients/{id}/api-keys/{key_id}` (admin): the key stops working everywhere.
#[utoipa::path(
    delete,
    path = "/v1/clients/{client_id}/api-keys/{key_id}",
    tag = "clients",
    summary = "Revoke a client's API key (admin).",
    params(ApiKeyPath),
    responses(
        (status = 204, description = "Revoked."),
        UpdateErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn revoke_api_key(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(ApiKeyPath { client_id, key_id }): Path<ApiKeyPath>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let client_id = ClientId::parse(client_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if key_id.len() != 64 || !key_id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ApiError::BadRequest(format!("key_id must be 64 lowercase hex digits, not {key_id:?}")));
    }
    if s.links.api_key_client(&key_id).as_ref() != Some(&client_id) {
        return Err(ApiError::NotFound(format!("no active key {key_id:?} for client {client_id}")));
    }
    let record = ApiKeyRecord {
        key_hash: key_id,
        client_id,
        label: None,
        revoked: true,
        created_at_ms: ricochet_registry::writer::now_ms(),
        scopes: None,
        expires_at_ms: None,
    };
    let version = s.writer.put_api_key(&record).await.map_err(|e| ApiError::Registry(e.to_string()))?;
    s.links.apply_api_key_at(record, version);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct TokenKey {
    pub kid: String,
    /// Hex.
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenKeys {
    #[schema(value_type = String)]
    pub client_id: ClientId,
    /// Newest first.
    pub keys: Vec<TokenKey>,
}

/// `GET /v1/clients/{id}/token-keys`: the keys a client signs recipient tokens
/// with, newest first. See `docs/recipient-tokens.md`.
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/token-keys",
    tag = "clients",
    summary = "The keys a client signs recipient tokens with, newest first.",
    params(ClientPath),
    responses(
        (status = 200, description = "The keys.", body = TokenKeys),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn token_keys(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(ClientPath { client_id }): Path<ClientPath>,
) -> Result<Json<TokenKeys>, ApiError> {
    principal.check_scope(&client_id, KeyScope::Tokens, || format!("no client {client_id:?}"))?;
    let client_id = ClientId::parse(client_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let keys = s.token_keys.as_ref().ok_or_else(|| ApiError::NotFound("recipient tokens are not configured".into()))?;
    let keys: Vec<_> = keys
        .client_keys(client_id.as_str())
        .into_iter()
        .map(|(kid, key)| TokenKey { kid, key: hex::encode(key) })
        .collect();
    Ok(Json(TokenKeys { client_id, keys }))
}
