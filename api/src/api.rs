//! The link and aggregate handlers: link creation and lookup, series, top
//! lists, campaigns, recipients and client API keys.
//!
//! Every handler takes the caller's [`Principal`] ([`auth`](crate::auth)) and
//! reads through the coalescing cache ([`cache`](crate::cache)); failures are
//! [`ApiError`]s. The routes are wired in `router.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use ricochet_registry::{Destination, NewLink};
use ricochet_schemas::{ApiKeyRecord, CampaignId, ClientId, LinkId, LinkRecord, RecipientId};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, KeyScope, Principal};
use crate::error::{ApiError, NoQuery, Path};
use crate::openapi::{
    self, AdminErrors, CreateErrors, RangeParams, ReadErrors, StatsErrors, StatusErrors, UpdateErrors,
};
use crate::state::ApiState;
use crate::stats::{self, Range, Scope, StatsQuery, TopBy};

/// `POST /v1/links` body. Fields are strings here and validated one by one so
/// that each error names its field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub client_id: String,
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub campaign_id: String,
    /// Where the link sends the recipient.
    #[schema(schema_with = openapi::url_schema)]
    pub destination_url: String,
    /// Unix seconds; before it the link answers 410.
    #[serde(default, deserialize_with = "crate::numbers::option_i64")]
    #[schema(minimum = 0, maximum = 253402300799.0)]
    pub valid_from: Option<i64>,
    /// Unix seconds; from it on the link answers 410.
    #[serde(default, deserialize_with = "crate::numbers::option_i64")]
    #[schema(minimum = 0, maximum = 253402300799.0)]
    pub valid_until: Option<i64>,
    /// Clicks after which the edges close the link (approximately, see docs/click-limits.md).
    #[serde(default, deserialize_with = "crate::numbers::option_i64")]
    #[schema(minimum = 1)]
    pub click_limit: Option<i64>,
    /// A trap link to hide in the message (e.g. a 1×1 anchor no person sees):
    /// a hit voids the recipient's clicks on the campaign (docs/bot-detection.md).
    #[serde(default)]
    pub honeypot: bool,
}

impl CreateLink {
    pub(crate) fn validate(self) -> Result<NewLink, ApiError> {
        let bad = |e: &dyn std::fmt::Display| ApiError::BadRequest(e.to_string());
        for (name, value) in [("valid_from", self.valid_from), ("valid_until", self.valid_until)] {
            if value.is_some_and(|v| !(0..=openapi::MAX_VALIDITY_SECONDS).contains(&v)) {
                return Err(ApiError::BadRequest(format!(
                    "{name} must be Unix seconds between 0 and {}",
                    openapi::MAX_VALIDITY_SECONDS
                )));
            }
        }
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until) {
            if from >= until {
                return Err(ApiError::Unprocessable("valid_from must be earlier than valid_until".into()));
            }
        }
        if self.click_limit.is_some_and(|l| l <= 0) {
            return Err(ApiError::BadRequest("click_limit must be a positive number".into()));
        }
        Ok(NewLink {
            client_id: ClientId::parse(self.client_id).map_err(|e| bad(&e))?,
            campaign_id: CampaignId::parse(self.campaign_id).map_err(|e| bad(&e))?,
            destination: Destination::parse(&self.destination_url).map_err(|e| bad(&e))?,
            // Times are Unix seconds on the API, milliseconds in the registry.
            valid_from_ms: self.valid_from.map(|s| s * 1000),
            valid_until_ms: self.valid_until.map(|s| s * 1000),
            click_limit: self.click_limit,
            honeypot: self.honeypot,
        })
    }
}

pub(crate) fn link_json(link: &LinkRecord, base: &str) -> serde_json::Value {
    json!({
        "link_id": link.link_id,
        "code": link.code,
        "client_id": link.client_id,
        "campaign_id": link.campaign_id,
        "destination_url": link.destination_url,
        "status": link.status,
        "tracking_url": format!("{}/{}", base.trim_end_matches('/'), link.code),
        "created_at": link.created_at_ms / 1000,
        "valid_from": link.valid_from_ms.map(|m| m / 1000),
        "valid_until": link.valid_until_ms.map(|m| m / 1000),
        "click_limit": link.click_limit,
        "honeypot": link.honeypot,
    })
}

#[utoipa::path(
    post,
    path = "/v1/links",
    tag = "links",
    summary = "Create a tracking link (admin).",
    request_body = CreateLink,
    responses(
        (status = 201, description = "Created.", body = openapi::Link),
        CreateErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create_link(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    body: Result<Json<CreateLink>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    principal.require(KeyScope::Write)?;
    let Json(body) = body?;
    let new = body.validate()?;
    principal.require_write(new.client_id.as_str())?;
    let link = s.writer.create(new, &s.links).await.map_err(|e| ApiError::Registry(e.to_string()))?;
    // Visible to this process's reads at once, without waiting for the tail.
    s.links.apply(link.clone());
    Ok((StatusCode::CREATED, Json(link_json(&link, &s.public_redirect_url))))
}

/// The link, if the principal may see it; otherwise the same 404 as for no link.
fn visible_link(s: &ApiState, principal: &Principal, link_id: &str) -> Result<Arc<LinkRecord>, ApiError> {
    principal.require(KeyScope::Read)?;
    LinkId::parse(link_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let missing = || ApiError::NotFound(format!("no link with id {link_id:?}"));
    let link = s.links.get(link_id).ok_or_else(missing)?;
    principal.check(link.client_id.as_str(), || format!("no link with id {link_id:?}"))?;
    Ok(link)
}

fn client_scope(principal: &Principal, client_id: &str, needs: KeyScope) -> Result<ClientId, ApiError> {
    principal.check_scope(client_id, needs, || format!("no client {client_id:?}"))?;
    ClientId::parse(client_id).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn campaign_scope(
    principal: &Principal,
    client_id: &str,
    campaign_id: &str,
    needs: KeyScope,
) -> Result<Scope, ApiError> {
    let client = client_scope(principal, client_id, needs)?;
    let campaign = CampaignId::parse(campaign_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Scope::Campaign(client, campaign))
}

fn parse_range(query: Result<Query<StatsQuery>, QueryRejection>) -> Result<(StatsQuery, Range), ApiError> {
    let Query(q) = query?;
    let range = Range::parse(&q, chrono::Utc::now().timestamp())?;
    Ok((q, range))
}

fn cache_key(uri: &OriginalUri) -> String {
    uri.0.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default()
}

#[utoipa::path(
    get,
    path = "/v1/links/{link_id}",
    tag = "links",
    summary = "A link.",
    params(("link_id" = String, Path, description = "The link's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "The link.", body = openapi::Link),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get_link(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    Path(link_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let link = visible_link(&s, &principal, &link_id)?;
    Ok(Json(link_json(&link, &s.public_redirect_url)))
}

async fn series_response(
    s: &ApiState,
    uri: OriginalUri,
    headers: &HeaderMap,
    scope: Scope,
    range: Range,
) -> Result<Response, ApiError> {
    let ch = s.clickhouse.clone();
    s.cache
        .respond(cache_key(&uri), headers, || async move {
            let series = stats::series(&ch, &scope, range).await?;
            let mut value = serde_json::to_value(series).expect("series serialize");
            if let Scope::Link(link) = &scope {
                value["link_id"] = json!(link.link_id);
                value["client_id"] = json!(link.client_id);
                value["campaign_id"] = json!(link.campaign_id);
            }
            Ok(value)
        })
        .await
}

#[utoipa::path(
    get,
    path = "/v1/links/{link_id}/stats",
    tag = "aggregates",
    summary = "A link's click series.",
    params(("link_id" = String, Path, description = "The link's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$"), RangeParams),
    responses(
        (status = 200, description = "The series.", body = openapi::Series, headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn link_stats(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(link_id): Path<String>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let link = visible_link(&s, &principal, &link_id)?;
    let (_, range) = parse_range(query)?;
    series_response(&s, uri, &headers, Scope::Link(link), range).await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/stats",
    tag = "aggregates",
    summary = "A client's click series.",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$"), RangeParams),
    responses(
        (status = 200, description = "The series.", body = openapi::Series, headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn client_stats(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(client_id): Path<String>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let client = client_scope(&principal, &client_id, KeyScope::Read)?;
    let (_, range) = parse_range(query)?;
    series_response(&s, uri, &headers, Scope::Client(client), range).await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/campaigns/{campaign_id}/stats",
    tag = "aggregates",
    summary = "A campaign's click series.",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$"), ("campaign_id" = String, Path, description = "The campaign's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$"), RangeParams),
    responses(
        (status = 200, description = "The series.", body = openapi::Series, headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn campaign_stats(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path((client_id, campaign_id)): Path<(String, String)>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = campaign_scope(&principal, &client_id, &campaign_id, KeyScope::Read)?;
    let (_, range) = parse_range(query)?;
    series_response(&s, uri, &headers, scope, range).await
}

fn limit(q: &StatsQuery, default: u32, max: u32) -> Result<u32, ApiError> {
    match q.limit.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n),
        n => Err(ApiError::BadRequest(format!("limit must be between 1 and {max}, not {n}"))),
    }
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/campaigns/{campaign_id}/top-links",
    tag = "aggregates",
    summary = "A campaign's most clicked links.",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$"), ("campaign_id" = String, Path, description = "The campaign's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$"), RangeParams, ("limit" = Option<u32>, Query, description = "Rows to return. Default: 10.", minimum = 1, maximum = 100)),
    responses(
        (status = 200, description = "The links, most clicked first.", body = openapi::TopLinks, headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn top_links(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path((client_id, campaign_id)): Path<(String, String)>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = campaign_scope(&principal, &client_id, &campaign_id, KeyScope::Read)?;
    let (q, range) = parse_range(query)?;
    let n = limit(&q, 10, 100)?;
    let (ch, links) = (s.clickhouse.clone(), s.links.clone());
    s.cache
        .respond(cache_key(&uri), &headers, || async move {
            let rows = stats::top(&ch, &scope, TopBy::Link, range, n).await?;
            let items: Vec<_> = rows
                .into_iter()
                .map(|r| {
                    let link = links.get(&r.key);
                    json!({
                        "link_id": r.key,
                        "code": link.as_ref().map(|l| l.code.to_string()),
                        "destination_url": link.as_ref().map(|l| l.destination_url.clone()),
                        "clicks": if range.human_only { r.human_clicks } else { r.clicks },
                        "human_clicks": r.human_clicks,
                        "opens": r.opens,
                    })
                })
                .collect();
            Ok(json!({ "links": items }))
        })
        .await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/top-campaigns",
    tag = "aggregates",
    summary = "A client's most clicked campaigns.",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$"), RangeParams, ("limit" = Option<u32>, Query, description = "Rows to return. Default: 10.", minimum = 1, maximum = 100)),
    responses(
        (status = 200, description = "The campaigns, most clicked first.", body = openapi::TopCampaigns, headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn top_campaigns(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(client_id): Path<String>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let client = client_scope(&principal, &client_id, KeyScope::Read)?;
    let (q, range) = parse_range(query)?;
    let n = limit(&q, 10, 100)?;
    let ch = s.clickhouse.clone();
    s.cache
        .respond(cache_key(&uri), &headers, || async move {
            let rows = stats::top(&ch, &Scope::Client(client), TopBy::Campaign, range, n).await?;
            let items: Vec<_> = rows
                .into_iter()
                .map(|r| {
                    json!({
                        "campaign_id": r.key,
                        "clicks": if range.human_only { r.human_clicks } else { r.clicks },
                        "human_clicks": r.human_clicks,
                        "opens": r.opens,
                    })
                })
                .collect();
            Ok(json!({ "campaigns": items }))
        })
        .await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/campaigns",
    tag = "aggregates",
    summary = "A client's campaigns and their link counts.",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "The campaigns.", body = openapi::Campaigns, headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
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
    Path(client_id): Path<String>,
) -> Result<Response, ApiError> {
    let client = client_scope(&principal, &client_id, KeyScope::Read)?;
    let links = s.links.clone();
    s.cache
        .respond(cache_key(&uri), &headers, || async move {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for link in links.links_of(client.as_str()) {
                *counts.entry(link.campaign_id.to_string()).or_default() += 1;
            }
            let campaigns: Vec<_> = counts.into_iter().map(|(c, n)| json!({ "campaign_id": c, "links": n })).collect();
            Ok(json!({ "client_id": client, "campaigns": campaigns }))
        })
        .await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/campaigns/{campaign_id}/recipients",
    tag = "aggregates",
    summary = "Recipients who clicked in a campaign, by recipient id, a page at a time.",
    params(("client_id" = String, Path, description = "The client's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$"), ("campaign_id" = String, Path, description = "The campaign's id.", pattern = r"^[A-Za-z0-9._-]{1,64}$"), RangeParams, ("limit" = Option<u32>, Query, description = "Rows to return. Default: 100.", minimum = 1, maximum = 1000), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page (a recipient id).", pattern = r"^[A-Za-z0-9._@+-]{1,128}$")),
    responses(
        (status = 200, description = "One page.", body = openapi::Recipients, headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn recipients(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path((client_id, campaign_id)): Path<(String, String)>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = campaign_scope(&principal, &client_id, &campaign_id, KeyScope::Recipients)?;
    let (q, range) = parse_range(query)?;
    let n = limit(&q, 100, 1000)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| RecipientId::parse(c).map(String::from).map_err(|e| ApiError::BadRequest(format!("cursor: {e}"))))
        .transpose()?;
    let ch = s.clickhouse.clone();
    s.cache
        .respond(cache_key(&uri), &headers, || async move {
            let page = stats::recipients(&ch, &scope, range, after.as_deref(), n).await?;
            let next_cursor = (page.len() == n as usize).then(|| page.last().map(|r| r.recipient_id.clone())).flatten();
            Ok(json!({ "recipients": page, "next_cursor": next_cursor }))
        })
        .await
}

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

/// `GET /v1/status`: lag and freshness across every aggregator (admin).
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "operations",
    summary = "Lag and freshness across every aggregator (admin); computed at most every 2 s.",
    responses(
        (status = 200, description = "The status.", body = crate::status::StatusReport, headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=2"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatusErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn status(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    _: NoQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let state = s.clone();
    s.status_cache
        .respond("status".into(), &headers, || async move {
            let status = state
                .status
                .as_ref()
                .ok_or_else(|| ApiError::Kafka("this API has no broker client for the status".into()))?;
            let report = status.report(&state.clickhouse).await?;
            Ok(serde_json::to_value(report).expect("the status serializes"))
        })
        .await
}
