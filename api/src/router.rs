//! The route table: every path and method, and the handler that answers it.
//!
//! Routes are registered with `utoipa_axum::routes!`, which takes each path
//! and method from the handler's `#[utoipa::path]` annotation: the router and
//! the OpenAPI document served at `/v1/openapi.json` are built from the same
//! definition ([`document`]), so no route can be served undocumented or
//! documented unserved. Only the dashboard's static files stay outside it.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::{middleware, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dashboard;
use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::routes::{breakdowns, clients, events, keys, links, operations, recipients, stats, webhooks};
use crate::state::ApiState;

/// The documented routes, with their handlers.
fn documented() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        // Operations.
        .routes(routes!(operations::healthz))
        .routes(routes!(operations::readyz))
        .routes(routes!(operations::metrics))
        .routes(routes!(operations::status))
        // Links.
        .routes(routes!(links::create_link))
        .routes(routes!(links::create_links))
        .routes(routes!(links::get_link, links::patch_link))
        // Clients and their campaigns.
        .routes(routes!(clients::get_client, clients::put_client, clients::patch_client))
        .routes(routes!(clients::campaigns))
        // Stats: series and top lists.
        .routes(routes!(stats::link_stats))
        .routes(routes!(stats::client_stats))
        .routes(routes!(stats::top_campaigns))
        .routes(routes!(stats::campaign_stats))
        .routes(routes!(stats::top_links))
        // Breakdowns: by country, device, mail client…
        .routes(routes!(breakdowns::link_breakdown))
        .routes(routes!(breakdowns::client_breakdown))
        .routes(routes!(breakdowns::campaign_breakdown))
        // Recipients.
        .routes(routes!(recipients::recipients))
        .routes(routes!(recipients::erase_recipient))
        // Exports: the decided raw events.
        .routes(routes!(events::campaign_events))
        // Keys.
        .routes(routes!(keys::create_api_key, keys::list_api_keys))
        .routes(routes!(keys::revoke_api_key))
        .routes(routes!(keys::token_keys))
        // Webhooks.
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::get_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::enable))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::replay))
}

/// The OpenAPI document of every route [`router`] serves.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = documented().routes(routes!(operations::openapi_json)).into_openapi();
    crate::openapi::add_common_responses(&mut doc);
    doc
}

/// Every route, behind the limits of [`crate::limits`]: the caller's token
/// bucket first, then the request timeout (which counts the wait for a
/// slot), then the cap on requests in flight, and the body limit.
pub fn router(state: Arc<ApiState>) -> Router {
    // Made here, so that no request waits for it and a document that cannot be serialised stops the start.
    operations::document_json();
    let limits = state.limits;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests.max(1)));
    documented()
        .routes(routes!(operations::openapi_json))
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
        assert_eq!(paths.len(), 30, "{:?}", paths.keys().collect::<Vec<_>>());
        let stats = &paths["/v1/links/{link_id}/stats"]["get"];
        let param = |name: &str| stats["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(param("link_id")["schema"]["pattern"], crate::openapi::ID_PATTERN);
        assert_eq!(param("granularity")["schema"]["enum"], serde_json::json!(["minute", "hour", "day"]));
        assert!(param("tz")["schema"]["enum"].as_array().unwrap().iter().any(|z| z == "Europe/Paris"));
        for status in ["400", "401", "404", "422", "503"] {
            let body = &stats["responses"][status]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(body, "#/components/schemas/ErrorBody", "{status}");
        }
        let breakdown = &paths["/v1/clients/{client_id}/campaigns/{campaign_id}/breakdown"]["get"];
        let param =
            |name: &str| breakdown["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(param("by")["required"], true);
        assert_eq!(param("by")["schema"]["enum"].as_array().unwrap().len(), 9);
        assert_eq!(param("country")["schema"]["pattern"], crate::routes::breakdowns::COUNTRY_PATTERN);
        assert_eq!(param("format")["schema"]["enum"], serde_json::json!(["json", "csv"]));
        let ok = &breakdown["responses"]["200"]["content"];
        assert_eq!(ok["application/json"]["schema"]["$ref"], "#/components/schemas/Breakdown");
        assert_eq!(ok["text/csv"]["schema"]["type"], "string");
        assert!(paths["/v1/links/{link_id}/stats"]["get"]["responses"]["200"]["content"]["text/csv"].is_object());
        let top = &paths["/v1/clients/{client_id}/campaigns/{campaign_id}/top-links"]["get"]["parameters"];
        let limit = top.as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(
            (limit["schema"]["minimum"].as_f64(), limit["schema"]["maximum"].as_f64()),
            (Some(1.0), Some(100.0))
        );
    }
}
