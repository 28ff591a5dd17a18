//! A client's keys: the API keys it calls with (minted, listed and revoked
//! by the admin; only their hashes are kept) and the keys it signs recipient
//! tokens with (`docs/recipient-tokens.md`).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ricochet_schemas::{ApiKeyRecord, ClientId};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, KeyScope, Principal};
use crate::error::{ApiError, NoQuery, Path};
use crate::openapi::{self, AdminErrors, ReadErrors, UpdateErrors};
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
    scopes: Option<Vec<openapi::KeyScopeName>>,
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
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body = Option<CreateApiKey>,
    responses(
        (status = 201, description = "Created.", body = openapi::ApiKeyCreated),
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create_api_key(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(client_id): Path<String>,
    // No body, `null`, or the object: the document allows all three.
    body: Result<Option<Json<Option<serde_json::Value>>>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
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
    s.writer.put_api_key(&record).await.map_err(|e| ApiError::Registry(e.to_string()))?;
    s.links.apply_api_key(record.clone());
    let mut body = key_json(&record);
    body["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(body)))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A key as listed: never its secret.
fn key_json(k: &ApiKeyRecord) -> serde_json::Value {
    json!({
        "key_id": k.key_hash,
        "client_id": k.client_id,
        "label": k.label,
        "scopes": auth::Scopes::of_record(k.scopes.as_deref()).names(),
        "legacy": k.scopes.is_none(),
        "created_at": rfc3339(k.created_at_ms),
        "expires_at": k.expires_at_ms.map(rfc3339),
    })
}

/// `GET /v1/clients/{id}/api-keys` (admin): the client's keys that are not
/// revoked, expired ones included, without their secrets.
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/api-keys",
    tag = "clients",
    summary = "List a client's API keys (admin), without their secrets.",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "The keys, oldest first.", body = openapi::ApiKeys),
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_api_keys(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(client_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin()?;
    let client_id = ClientId::parse(client_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut keys: Vec<_> = s.links.api_keys().into_iter().filter(|k| k.client_id == client_id && !k.revoked).collect();
    keys.sort_by(|a, b| (a.created_at_ms, &a.key_hash).cmp(&(b.created_at_ms, &b.key_hash)));
    let keys: Vec<_> = keys.iter().map(|k| key_json(k)).collect();
    Ok(Json(json!({ "client_id": client_id, "keys": keys })))
}

/// `DELETE /v1/clients/{id}/api-keys/{key_id}` (admin): the key stops working everywhere.
#[utoipa::path(
    delete,
    path = "/v1/clients/{client_id}/api-keys/{key_id}",
    tag = "clients",
    summary = "Revoke a client's API key (admin).",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$"), ("key_id" = String, Path, description = "The key's id (its SHA-256, as returned at creation).", pattern = r"^[0-9a-f]{64}$")),
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
    Path((client_id, key_id)): Path<(String, String)>,
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
    s.writer.put_api_key(&record).await.map_err(|e| ApiError::Registry(e.to_string()))?;
    s.links.apply_api_key(record);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/clients/{id}/token-keys`: the keys a client signs recipient tokens
/// with, newest first. See `docs/recipient-tokens.md`.
#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/token-keys",
    tag = "clients",
    summary = "The keys a client signs recipient tokens with, newest first.",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "The keys.", body = openapi::TokenKeys),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn token_keys(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(client_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.check_scope(&client_id, KeyScope::Tokens, || format!("no client {client_id:?}"))?;
    let client_id = ClientId::parse(client_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let keys = s.token_keys.as_ref().ok_or_else(|| ApiError::NotFound("recipient tokens are not configured".into()))?;
    let keys: Vec<_> = keys
        .client_keys(client_id.as_str())
        .into_iter()
        .map(|(kid, key)| json!({ "kid": kid, "key": hex::encode(key) }))
        .collect();
    Ok(Json(json!({ "client_id": client_id, "keys": keys })))
}
