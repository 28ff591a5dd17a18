//! The route table: every path and method, and the handler that answers it.
//!
//! Routes are registered with `utoipa_axum::routes!`, which takes each path
//! and method from the handler's `#[utoipa::path]` annotation: the router and
//! the OpenAPI document served at `/v1/openapi.json` are built from the same
//! definition ([`document`]), so no route can be served undocumented or
//! documented unserved. Only the dashboard's static files stay outside it.

use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::{middleware, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use ricochet_registry::RegistryTail;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, NoQuery};
use crate::openapi::{ApiDoc, ErrorBody};
use crate::state::ApiState;
use crate::{admin, api, dashboard, erasure};

/// The documented routes, with their handlers.
fn documented() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(api::status))
        .routes(routes!(api::create_link))
        .routes(routes!(admin::create_links))
        .routes(routes!(api::get_link, admin::patch_link))
        .routes(routes!(api::link_stats))
        .routes(routes!(admin::get_client, admin::put_client, admin::patch_client))
        .routes(routes!(api::client_stats))
        .routes(routes!(api::top_campaigns))
        .routes(routes!(api::campaigns))
        .routes(routes!(api::campaign_stats))
        .routes(routes!(api::top_links))
        .routes(routes!(api::recipients))
        .routes(routes!(erasure::erase_recipient))
        .routes(routes!(api::create_api_key, api::list_api_keys))
        .routes(routes!(api::revoke_api_key))
        .routes(routes!(admin::token_keys))
}

/// The OpenAPI document of every route [`router`] serves.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = documented().routes(routes!(openapi_json)).into_openapi();
    crate::openapi::add_common_responses(&mut doc);
    doc
}

/// The serialised document, made once.
static DOCUMENT: OnceLock<String> = OnceLock::new();

/// Every route, behind the limits of [`crate::limits`]: the caller's token
/// bucket first, then the request timeout (which counts the wait for a
/// slot), then the cap on requests in flight, and the body limit.
pub fn router(state: Arc<ApiState>) -> Router {
    DOCUMENT.get_or_init(|| crate::openapi::to_json(&document()));
    let limits = state.limits;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests.max(1)));
    documented()
        .routes(routes!(openapi_json))
        .split_for_parts()
        .0
        .fallback(|| async { ApiError::NotFound("no such route; see /v1/openapi.json".into()) })
        .merge(dashboard::router())
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(slots, crate::limits::concurrency))
        .layer(middleware::from_fn_with_state(limits.request_timeout, crate::limits::timeout))
        .layer(middleware::from_fn_with_state(state.clone(), crate::limits::rate_limit))
        .with_state(state)
}

/// Liveness: answers while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Alive.", body = String, content_type = "text/plain")))]
async fn healthz(_: NoQuery) -> &'static str {
    "ok"
}

/// Readiness: once the link registry has been loaded.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "Ready.", body = String, content_type = "text/plain"),
        (status = 503, description = "Still loading the link registry from Kafka.", body = ErrorBody),
    ))]
async fn readyz(State(s): State<Arc<ApiState>>, _: NoQuery) -> Result<&'static str, ApiError> {
    if s.tail.as_ref().is_none_or(RegistryTail::is_ready) {
        Ok("ready")
    } else {
        Err(ApiError::Loading("the link registry is still being read from the Kafka broker".into()))
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format.", body = String, content_type = "text/plain")))]
async fn metrics(State(s): State<Arc<ApiState>>, _: NoQuery) -> impl IntoResponse {
    let text = s.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI document.", body = Object)))]
async fn openapi_json(_: NoQuery) -> impl IntoResponse {
    let doc = DOCUMENT.get_or_init(|| crate::openapi::to_json(&document())).as_str();
    ([(header::CONTENT_TYPE, "application/json")], doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_states_patterns_ranges_and_error_bodies() {
        let doc: serde_json::Value = serde_json::from_str(&crate::openapi::to_json(&document())).unwrap();
        if std::env::var_os("PRINT_OPENAPI").is_some() {
            println!("{doc:#}");
        }
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 20, "{:?}", paths.keys().collect::<Vec<_>>());
        let stats = &paths["/v1/links/{link_id}/stats"]["get"];
        let param = |name: &str| stats["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(param("link_id")["schema"]["pattern"], crate::openapi::ID_PATTERN);
        assert_eq!(param("granularity")["schema"]["enum"], serde_json::json!(["minute", "hour", "day"]));
        assert!(param("tz")["schema"]["enum"].as_array().unwrap().iter().any(|z| z == "Europe/Paris"));
        for status in ["400", "401", "404", "422", "503"] {
            let body = &stats["responses"][status]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(body, "#/components/schemas/ErrorBody", "{status}");
        }
        let top = &paths["/v1/clients/{client_id}/campaigns/{campaign_id}/top-links"]["get"]["parameters"];
        let limit = top.as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(
            (limit["schema"]["minimum"].as_f64(), limit["schema"]["maximum"].as_f64()),
            (Some(1.0), Some(100.0))
        );
    }
}
