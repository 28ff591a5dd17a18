//! What operators and load balancers ask: liveness, readiness, metrics, the
//! aggregators' status, and the OpenAPI document itself. Only `/v1/status`
//! needs a key.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use ricochet_registry::RegistryTail;

use crate::auth::Principal;
use crate::error::{ApiError, NoQuery};
use crate::openapi::{ErrorBody, StatusErrors};
use crate::state::ApiState;

/// Liveness: answers while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Alive.", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz(_: NoQuery) -> &'static str {
    "ok"
}

/// Readiness: once the link registry and the webhook endpoints have been loaded.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready.", body = String, content_type = "text/plain"),
        (status = 503, description = "Still loading the link registry or the webhook endpoints from Kafka.", body = ErrorBody),
    ))]
pub(crate) async fn readyz(State(s): State<Arc<ApiState>>, _: NoQuery) -> Result<&'static str, ApiError> {
    if !s.tail.as_ref().is_none_or(RegistryTail::is_ready) {
        Err(ApiError::Loading("the link registry is still being read from the Kafka broker".into()))
    } else if !s.webhooks.endpoints.is_loaded() {
        Err(ApiError::Loading("the webhook endpoints are still being read from the Kafka broker".into()))
    } else {
        Ok("ready")
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format.", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(s): State<Arc<ApiState>>, _: NoQuery) -> impl IntoResponse {
    let text = s.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI document.", body = Object)))]
pub(crate) async fn openapi_json(_: NoQuery) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document_json())
}

/// The serialised document of [`crate::router::document`], made once.
pub(crate) fn document_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| crate::openapi::to_json(&crate::router::document()))
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
