//! The route table: every path and method, and the handler that answers it.
//!
//! Every `/v1` route but the OpenAPI document needs `Authorization: Bearer
//! <key>`. The routes are listed in [`ROUTES`] and documented in
//! `api/openapi.json`; a test keeps the three in step.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use ricochet_registry::RegistryTail;

use crate::error::ApiError;
use crate::state::ApiState;
use crate::{admin, api, dashboard};

/// Every route, as `(method, path)`. `api/openapi.json` documents exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/status"),
    ("post", "/v1/links"),
    ("post", "/v1/links:batch"),
    ("get", "/v1/links/{link_id}"),
    ("patch", "/v1/links/{link_id}"),
    ("get", "/v1/links/{link_id}/stats"),
    ("get", "/v1/clients/{client_id}"),
    ("put", "/v1/clients/{client_id}"),
    ("get", "/v1/clients/{client_id}/stats"),
    ("get", "/v1/clients/{client_id}/top-campaigns"),
    ("get", "/v1/clients/{client_id}/campaigns"),
    ("get", "/v1/clients/{client_id}/campaigns/{campaign_id}/stats"),
    ("get", "/v1/clients/{client_id}/campaigns/{campaign_id}/top-links"),
    ("get", "/v1/clients/{client_id}/campaigns/{campaign_id}/recipients"),
    ("post", "/v1/clients/{client_id}/api-keys"),
    ("delete", "/v1/clients/{client_id}/api-keys/{key_id}"),
    ("get", "/v1/clients/{client_id}/token-keys"),
];

pub const OPENAPI: &str = include_str!("../openapi.json");

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
        .route("/v1/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/v1/status", get(api::status))
        .route("/v1/links", post(api::create_link))
        .route("/v1/links:batch", post(admin::create_links))
        .route("/v1/links/{link_id}", get(api::get_link).patch(admin::patch_link))
        .route("/v1/links/{link_id}/stats", get(api::link_stats))
        .route("/v1/clients/{client_id}", get(admin::get_client).put(admin::put_client))
        .route("/v1/clients/{client_id}/stats", get(api::client_stats))
        .route("/v1/clients/{client_id}/top-campaigns", get(api::top_campaigns))
        .route("/v1/clients/{client_id}/campaigns", get(api::campaigns))
        .route("/v1/clients/{client_id}/campaigns/{campaign_id}/stats", get(api::campaign_stats))
        .route("/v1/clients/{client_id}/campaigns/{campaign_id}/top-links", get(api::top_links))
        .route("/v1/clients/{client_id}/campaigns/{campaign_id}/recipients", get(api::recipients))
        .route("/v1/clients/{client_id}/api-keys", post(api::create_api_key))
        .route("/v1/clients/{client_id}/api-keys/{key_id}", axum::routing::delete(api::revoke_api_key))
        .route("/v1/clients/{client_id}/token-keys", get(admin::token_keys))
        .fallback(|| async { ApiError::NotFound("no such route; see /v1/openapi.json".into()) })
        .merge(dashboard::router())
        .with_state(state)
}

async fn readyz(State(s): State<Arc<ApiState>>) -> Response {
    if s.tail.as_ref().is_none_or(RegistryTail::is_ready) {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading the link registry").into_response()
    }
}
