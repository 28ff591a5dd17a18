//! The aggregator's operations listener: liveness, readiness, Prometheus
//! metrics and this member's status. Nothing here needs a key: it carries no
//! client data, and it is meant for the orchestrator and the scraper only.
//! Links, stats and the group-wide status are served by `ricochet-api`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use ricochet_registry::RegistryTail;

use crate::status::{self, PipelineStatus};

pub struct OpsState {
    pub metrics: Option<PrometheusHandle>,
    /// Ready once the link registry (for click limits and the mirror) is loaded.
    pub tail: Option<RegistryTail>,
    pub status: Arc<PipelineStatus>,
}

pub fn router(state: Arc<OpsState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<Arc<OpsState>>| async move {
                s.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default()
            }),
        )
        .route("/v1/status", get(|State(s): State<Arc<OpsState>>| status::serve(State(s.status.clone()))))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<OpsState>>) -> Response {
    if s.tail.as_ref().is_none_or(RegistryTail::is_ready) {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading the link registry").into_response()
    }
}
