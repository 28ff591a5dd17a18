//! The aggregator's HTTP API: link creation and the aggregate endpoints.
//!
//! One error type, [`ApiError`], maps every failure to a status and a JSON body
//! `{"error": {"code": …, "message": …}}` that says what to fix.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use ricochet_registry::{Destination, NewLink, Registry, RegistryTail, RegistryWriter};
use ricochet_schemas::{CampaignId, ClientId, LinkRecord};
use serde::Deserialize;
use serde_json::json;

use crate::stats::{self, Range, StatsError, StatsQuery};

pub struct ApiState {
    pub links: Arc<Registry>,
    pub writer: Arc<RegistryWriter>,
    pub tail: Option<RegistryTail>,
    pub clickhouse: clickhouse::Client,
    /// Base of tracking URLs handed out, e.g. `https://t.example.com`.
    pub public_redirect_url: String,
    pub metrics: Option<PrometheusHandle>,
    /// Master keys for recipient tokens, to hand clients their derived keys.
    pub token_keys: Option<ricochet_registry::TokenKeys>,
    /// The pipeline's lag and freshness, for `/v1/status`.
    pub status: Option<Arc<crate::status::PipelineStatus>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the link registry is unavailable: {0}")]
    Registry(String),
    #[error("the analytics store is unavailable: {0}")]
    Store(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Registry(_) | ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        (status, Json(json!({ "error": { "code": code, "message": self.to_string() } }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::BadRequest(format!("invalid JSON body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", r.body_text()))
    }
}

impl From<StatsError> for ApiError {
    fn from(e: StatsError) -> Self {
        match e {
            StatsError::BadParam(m) => ApiError::BadRequest(m),
            StatsError::ClickHouse(e) => ApiError::Store(e.to_string()),
        }
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<Arc<ApiState>>| async move {
                s.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default()
            }),
        )
        .route("/v1/status", get(crate::status::serve))
        .route("/v1/links", post(create_link))
        .route("/v1/links:batch", post(crate::admin::create_links))
        .route("/v1/clients/{client_id}", get(crate::admin::get_client).put(crate::admin::put_client))
        .route("/v1/clients/{client_id}/token-keys", get(crate::admin::token_keys))
        .route("/v1/links/{link_id}", get(get_link).patch(crate::admin::patch_link))
        .route("/v1/links/{link_id}/stats", get(link_stats))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<ApiState>>) -> Response {
    if s.tail.as_ref().is_none_or(RegistryTail::is_ready) {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading the link registry").into_response()
    }
}

/// `POST /v1/links` body. Fields are strings here and validated one by one so
/// that each error names its field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    pub client_id: String,
    pub campaign_id: String,
    pub destination_url: String,
    #[serde(default)]
    pub valid_from: Option<i64>,
    #[serde(default)]
    pub valid_until: Option<i64>,
    #[serde(default)]
    pub click_limit: Option<i64>,
}

impl CreateLink {
    pub(crate) fn validate(self) -> Result<NewLink, ApiError> {
        let bad = |e: &dyn std::fmt::Display| ApiError::BadRequest(e.to_string());
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until) {
            if from >= until {
                return Err(ApiError::BadRequest("valid_from must be earlier than valid_until".into()));
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
    })
}

async fn create_link(
    State(s): State<Arc<ApiState>>,
    body: Result<Json<CreateLink>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(body) = body?;
    let new = body.validate()?;
    let link = s.writer.create(new, &s.links).await.map_err(|e| ApiError::Registry(e.to_string()))?;
    // Visible to this process's reads at once, without waiting for the tail.
    s.links.apply(link.clone());
    Ok((StatusCode::CREATED, Json(link_json(&link, &s.public_redirect_url))))
}

async fn get_link(
    State(s): State<Arc<ApiState>>,
    Path(link_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let link = s.links.get(&link_id).ok_or_else(|| ApiError::NotFound(format!("no link with id {link_id:?}")))?;
    Ok(Json(link_json(&link, &s.public_redirect_url)))
}

async fn link_stats(
    State(s): State<Arc<ApiState>>,
    Path(link_id): Path<String>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<stats::LinkStats>, ApiError> {
    let Query(query) = query?;
    let link = s.links.get(&link_id).ok_or_else(|| ApiError::NotFound(format!("no link with id {link_id:?}")))?;
    let range = Range::parse(&query, chrono::Utc::now().timestamp())?;
    Ok(Json(stats::link_stats(&s.clickhouse, &link, range).await?))
}
