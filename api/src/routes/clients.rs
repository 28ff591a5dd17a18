//! Clients: their state (pause, fallback URL, hot spread, allow-listed
//! networks) and the campaigns their links belong to.
//!
//! Pausing is one record on the registry's clients topic, so it takes effect
//! for every link of the client at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use ricochet_registry::writer::now_ms;
use ricochet_registry::Destination;
use ricochet_schemas::{ClientId, ClientRecord, ClientStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{cache_key, client_scope};
use crate::auth::{KeyScope, Principal};
use crate::error::{ApiError, NoQuery, Path};
use crate::openapi::{self, AdminErrors, ClientPath, ReadErrors};
use crate::state::ApiState;

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

/// A client's state.
#[derive(Serialize, ToSchema)]
pub struct Client {
    #[schema(value_type = String)]
    pub client_id: ClientId,
    #[schema(value_type = String, example = "active")]
    pub status: ClientStatus,
    pub fallback_url: Option<String>,
    pub hot_spread: u16,
    pub allowed_networks: Vec<String>,
    /// Unix seconds.
    pub updated_at: i64,
}

impl From<&ClientRecord> for Client {
    fn from(c: &ClientRecord) -> Self {
        Client {
            client_id: c.client_id.clone(),
            status: c.status,
            fallback_url: c.fallback_url.clone(),
            hot_spread: c.hot_spread,
            allowed_networks: c.allowed_networks.clone(),
            updated_at: c.updated_at_ms / 1000,
        }
    }
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
async fn write_client(s: &ApiState, mut record: ClientRecord) -> Result<Json<Client>, ApiError> {
    record.updated_at_ms = now_ms();
    let version = s.writer.put_client(&record).await.map_err(|e| ApiError::Registry(e.to_string()))?;
    s.links.apply_client_at(record.clone(), version);
    Ok(Json(Client::from(&record)))
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
    params(ClientPath),
    request_body = PutClient,
    responses(
        (status = 200, description = "The client's state.", body = Client),
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn put_client(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(ClientPath { client_id }): Path<ClientPath>,
    body: Result<Json<PutClient>, JsonRejection>,
) -> Result<Json<Client>, ApiError> {
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
    params(ClientPath),
    request_body = PatchClient,
    responses(
        (status = 200, description = "The client's state.", body = Client),
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn patch_client(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(ClientPath { client_id }): Path<ClientPath>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<Client>, ApiError> {
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
    params(ClientPath),
    responses(
        (status = 200, description = "The client's state.", body = Client),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn get_client(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(ClientPath { client_id }): Path<ClientPath>,
) -> Result<Json<Client>, ApiError> {
    principal.check_scope(&client_id, KeyScope::Read, || format!("no client {client_id:?}"))?;
    ClientId::parse(client_id.as_str()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let client = s
        .links
        .client(&client_id)
        .ok_or_else(|| ApiError::NotFound(format!("client {client_id:?} was never configured (it is active)")))?;
    Ok(Json(Client::from(&*client)))
}

#[derive(Serialize, ToSchema)]
pub struct CampaignLinks {
    pub campaign_id: String,
    pub links: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Campaigns {
    #[schema(value_type = String)]
    pub client_id: ClientId,
    pub campaigns: Vec<CampaignLinks>,
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/campaigns",
    tag = "aggregates",
    summary = "A client's campaigns and their link counts.",
    params(ClientPath),
    responses(
        (status = 200, description = "The campaigns.", body = Campaigns, headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn campaigns(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(ClientPath { client_id }): Path<ClientPath>,
) -> Result<Response, ApiError> {
    let client = client_scope(&principal, &client_id, KeyScope::Read)?;
    let links = s.links.clone();
    s.cache
        .respond(cache_key(&uri), &headers, || async move {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for link in links.links_of(client.as_str()) {
                *counts.entry(link.campaign_id.to_string()).or_default() += 1;
            }
            let campaigns =
                counts.into_iter().map(|(campaign_id, links)| CampaignLinks { campaign_id, links }).collect();
            Ok(Campaigns { client_id: client, campaigns })
        })
        .await
}

fn client_status_schema() -> utoipa::openapi::schema::Object {
    openapi::enum_schema(&["active", "paused"])
}

fn networks_schema() -> utoipa::openapi::schema::Array {
    let cidr = utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(openapi::CIDR_PATTERN));
    utoipa::openapi::schema::ArrayBuilder::new().items(cidr).max_items(Some(256)).build()
}
