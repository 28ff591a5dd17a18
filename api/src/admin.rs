//! Managing the registry over HTTP: bulk link creation, link status, clients
//! (pause, fallback URL, hot spread) and their recipient-token keys.
//!
//! Every write goes to the registry's compacted topics and answers only once
//! the broker acknowledged it; edges apply it within a second by tailing.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ricochet_registry::writer::now_ms;
use ricochet_registry::Destination;
use ricochet_schemas::{ClientId, ClientRecord, ClientStatus, LinkStatus};
use serde::Deserialize;
use serde_json::json;

use crate::api::{link_json, CreateLink};
use crate::auth::{KeyScope, Principal};
use crate::error::{ApiError, NoQuery, Path};
use crate::openapi::{self, AdminErrors, CreateErrors, ReadErrors, UpdateErrors};
use crate::state::ApiState;

/// Most links one batch may create.
pub const MAX_BATCH: usize = 10_000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLinks {
    #[schema(min_items = 1, max_items = 10_000)]
    pub links: Vec<CreateLink>,
}

/// `POST /v1/links:batch`: all or nothing. Every item is validated first and
/// a single invalid item rejects the batch with a per-item report. If the
/// broker acknowledges only part of the batch, the acknowledged links are
/// marked deleted again, so no link of a failed batch is ever usable.
#[utoipa::path(
    post,
    path = "/v1/links:batch",
    tag = "links",
    summary = "Create up to 10,000 links at once, all or none (admin).",
    request_body = CreateLinks,
    responses(
        (status = 201, description = "Created, in the order given.", body = openapi::Links),
        CreateErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn create_links(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    body: Result<Json<CreateLinks>, JsonRejection>,
) -> Result<Response, ApiError> {
    principal.require(KeyScope::Write)?;
    let Json(CreateLinks { links }) = body?;
    if links.is_empty() || links.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!("a batch holds 1 to {MAX_BATCH} links, not {}", links.len())));
    }
    let total = links.len();
    let mut valid = Vec::with_capacity(total);
    let mut errors = Vec::new();
    // 422 when every invalid item only has conflicting values, else 400.
    let mut conflicts_only = true;
    for (index, item) in links.into_iter().enumerate() {
        match item.validate() {
            Ok(new) => valid.push(new),
            Err(e) => {
                conflicts_only &= matches!(e, ApiError::Unprocessable(_));
                errors.push(json!({ "index": index, "message": e.to_string() }))
            }
        }
    }
    if !errors.is_empty() {
        let (status, code) = if conflicts_only {
            (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable")
        } else {
            (StatusCode::BAD_REQUEST, "bad_request")
        };
        let body = json!({ "error": {
            "code": code,
            "message": format!("{} of {total} links are invalid; none were created", errors.len()),
            "items": errors,
        }});
        return Ok((status, Json(body)).into_response());
    }
    for new in &valid {
        principal.require_write(new.client_id.as_str())?;
    }
    let records: Vec<_> = valid.into_iter().map(|new| s.writer.mint(new, &s.links)).collect();
    let results = s.writer.put_links(&records).await;
    if let Some(failure) = results.iter().find_map(|r| r.as_ref().err()) {
        let written: Vec<_> = records
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(rec, _)| ricochet_schemas::LinkRecord { status: LinkStatus::Deleted, ..rec.clone() })
            .collect();
        let undone = s.writer.put_links(&written).await.iter().filter(|r| r.is_ok()).count();
        tracing::error!(error = %failure, written = written.len(), undone, "batch partly acknowledged; rolled back");
        return Err(ApiError::Registry(format!("{failure}; the batch was rolled back")));
    }
    for record in &records {
        s.links.apply(record.clone());
    }
    let body: Vec<_> = records.iter().map(|r| link_json(r, &s.public_redirect_url)).collect();
    Ok((StatusCode::CREATED, Json(json!({ "links": body }))).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchLink {
    #[schema(schema_with = link_status_schema)]
    pub status: String,
}

/// `PATCH /v1/links/{id}`: pause, resume or delete one link.
#[utoipa::path(
    patch,
    path = "/v1/links/{link_id}",
    tag = "links",
    summary = "Pause, resume or delete a link (admin).",
    params(("link_id" = String, Path, description = "The link's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body = PatchLink,
    responses(
        (status = 200, description = "The updated link.", body = openapi::Link),
        UpdateErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn patch_link(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(link_id): Path<String>,
    body: Result<Json<PatchLink>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require(KeyScope::Write)?;
    ricochet_schemas::LinkId::parse(link_id.as_str()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let Json(patch) = body?;
    let status: LinkStatus = patch.status.parse().map_err(ApiError::BadRequest)?;
    let link = s.links.get(&link_id).ok_or_else(|| ApiError::NotFound(format!("no link with id {link_id:?}")))?;
    principal.check(link.client_id.as_str(), || format!("no link with id {link_id:?}"))?;
    principal.require_write(link.client_id.as_str())?;
    let updated = ricochet_schemas::LinkRecord { status, ..(*link).clone() };
    s.writer.put_link(&updated).await.map_err(|e| ApiError::Registry(e.to_string()))?;
    s.links.apply(updated.clone());
    Ok(Json(link_json(&updated, &s.public_redirect_url)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutClient {
    #[schema(schema_with = client_status_schema)]
    pub status: String,
    /// Where a paused client's links send recipients (instead of a 410 page).
    #[serde(default)]
    #[schema(schema_with = openapi::nullable_url_schema)]
    pub fallback_url: Option<String>,
    /// Kafka partitions a hot client's clicks are spread over. Default: 1.
    #[serde(default, deserialize_with = "crate::numbers::option_i64")]
    #[schema(minimum = 1, maximum = 64)]
    pub hot_spread: Option<i64>,
    /// CIDRs whose clicks are never called bots for their network alone
    /// (the client's office behind a cloud proxy, say). At most 256.
    #[serde(default)]
    #[schema(schema_with = networks_schema)]
    pub allowed_networks: Vec<String>,
}

fn client_json(c: &ClientRecord) -> serde_json::Value {
    json!({
        "client_id": c.client_id,
        "status": c.status,
        "fallback_url": c.fallback_url,
        "hot_spread": c.hot_spread,
        "allowed_networks": c.allowed_networks,
        "updated_at": c.updated_at_ms / 1000,
    })
}

fn parse_client_status(status: &str) -> Result<ClientStatus, ApiError> {
    match status {
        "active" => Ok(ClientStatus::Active),
        "paused" => Ok(ClientStatus::Paused),
        other => Err(ApiError::BadRequest(format!("status must be active or paused, not {other:?}"))),
    }
}

fn parse_fallback_url(url: Option<String>) -> Result<Option<String>, ApiError> {
    url.map(|u| Destination::parse(&u).map(Destination::into_string))
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("fallback_url: {e}")))
}

fn parse_hot_spread(spread: i64) -> Result<u16, ApiError> {
    match u16::try_from(spread) {
        Ok(n @ 1..=64) => Ok(n),
        _ => Err(ApiError::BadRequest("hot_spread must be between 1 and 64".into())),
    }
}

fn parse_networks(networks: &[String]) -> Result<Vec<String>, ApiError> {
    if networks.len() > 256 {
        return Err(ApiError::BadRequest("allowed_networks takes at most 256 CIDRs".into()));
    }
    networks
        .iter()
        .map(|cidr| {
            cidr.parse::<ipnet::IpNet>().map(|net| net.trunc().to_string()).map_err(|_| {
                ApiError::BadRequest(format!(
                    "allowed_networks: {cidr:?} is not a CIDR such as 203.0.113.0/24 or 2001:db8::/32"
                ))
            })
        })
        .collect()
}

/// Writes the client's new state to the registry and answers it.
async fn write_client(s: &ApiState, mut record: ClientRecord) -> Result<Json<serde_json::Value>, ApiError> {
    record.updated_at_ms = now_ms();
    s.writer.put_client(&record).await.map_err(|e| ApiError::Registry(e.to_string()))?;
    s.links.apply_client(record.clone());
    Ok(Json(client_json(&record)))
}

/// `PUT /v1/clients/{id}`: the client's whole state. Pausing is one record, so
/// it takes effect for every link of the client at once.
#[utoipa::path(
    put,
    path = "/v1/clients/{client_id}",
    tag = "clients",
    summary = "Replace a client's whole state (admin).",
    description = "Full replacement: a field left out takes its default (no fallback URL, `hot_spread` 1, \
                   no allow-listed networks), whatever it was before. To change some fields and keep the \
                   others, use `PATCH`.",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body = PutClient,
    responses(
        (status = 200, description = "The client's state.", body = openapi::Client),
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn put_client(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(client_id): Path<String>,
    body: Result<Json<PutClient>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin()?;
    let Json(put) = body?;
    let record = ClientRecord {
        client_id: ClientId::parse(client_id).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        status: parse_client_status(&put.status)?,
        fallback_url: parse_fallback_url(put.fallback_url)?,
        hot_spread: parse_hot_spread(put.hot_spread.unwrap_or(1))?,
        updated_at_ms: 0,
        allowed_networks: parse_networks(&put.allowed_networks)?,
    };
    write_client(&s, record).await
}

/// `PATCH /v1/clients/{id}` body: only the fields sent change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchClient {
    #[serde(default, deserialize_with = "not_null")]
    #[schema(schema_with = client_status_schema)]
    pub status: Option<String>,
    /// Where a paused client's links send recipients; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = openapi::nullable_url_schema)]
    pub fallback_url: Option<Option<String>>,
    /// Kafka partitions a hot client's clicks are spread over.
    #[serde(default, deserialize_with = "not_null_i64")]
    #[schema(minimum = 1, maximum = 64, nullable = false)]
    pub hot_spread: Option<i64>,
    /// CIDRs whose clicks are never called bots for their network alone; replaces the whole list.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(schema_with = networks_schema)]
    pub allowed_networks: Option<Vec<String>>,
}

/// A field that was sent, even as `null` (`Some(None)`), apart from one that was not (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A field that may be left out but not sent as `null`.
fn not_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn not_null_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match crate::numbers::option_i64(d)? {
        Some(n) => Ok(Some(n)),
        None => Err(serde::de::Error::custom("hot_spread must be a number from 1 to 64, not null")),
    }
}

/// `PATCH /v1/clients/{id}`: changes the fields sent and keeps the others.
#[utoipa::path(
    patch,
    path = "/v1/clients/{client_id}",
    tag = "clients",
    summary = "Change some of a client's settings (admin); the fields left out keep their value.",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    request_body = PatchClient,
    responses(
        (status = 200, description = "The client's state.", body = openapi::Client),
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn patch_client(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(client_id): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin()?;
    let Json(body) = body?;
    // An object only: serde would also take an array as the fields in order.
    if !body.is_object() {
        return Err(ApiError::BadRequest("invalid JSON body: expected an object of the fields to change".into()));
    }
    let patch: PatchClient =
        serde_json::from_value(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let client_id = ClientId::parse(client_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // A client never configured is active, with every default.
    let mut record = s.links.client(client_id.as_str()).map(|c| (*c).clone()).unwrap_or(ClientRecord {
        client_id,
        status: ClientStatus::Active,
        fallback_url: None,
        hot_spread: 1,
        updated_at_ms: 0,
        allowed_networks: Vec::new(),
    });
    if let Some(status) = patch.status {
        record.status = parse_client_status(&status)?;
    }
    if let Some(url) = patch.fallback_url {
        record.fallback_url = parse_fallback_url(url)?;
    }
    if let Some(spread) = patch.hot_spread {
        record.hot_spread = parse_hot_spread(spread)?;
    }
    if let Some(networks) = patch.allowed_networks {
        record.allowed_networks = parse_networks(&networks)?;
    }
    write_client(&s, record).await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}",
    tag = "clients",
    summary = "A client's state.",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "The client's state.", body = openapi::Client),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn get_client(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(client_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.check_scope(&client_id, KeyScope::Read, || format!("no client {client_id:?}"))?;
    ClientId::parse(client_id.as_str()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let client = s
        .links
        .client(&client_id)
        .ok_or_else(|| ApiError::NotFound(format!("client {client_id:?} was never configured (it is active)")))?;
    Ok(Json(client_json(&client)))
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

fn enum_schema(values: &[&str]) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

fn link_status_schema() -> utoipa::openapi::schema::Object {
    enum_schema(&["active", "paused", "deleted"])
}

fn client_status_schema() -> utoipa::openapi::schema::Object {
    enum_schema(&["active", "paused"])
}

fn networks_schema() -> utoipa::openapi::schema::Array {
    let cidr = utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(openapi::CIDR_PATTERN));
    utoipa::openapi::schema::ArrayBuilder::new().items(cidr).max_items(Some(256)).build()
}
