//! Routes and the serving loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::edge::{self, Edge};

pub fn router(edge: Arc<Edge>, metrics: Option<PrometheusHandle>) -> Router {
    let ops = Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz)).route(
        "/metrics",
        get(move |State(edge): State<Arc<Edge>>| async move {
            metrics::gauge!("ricochet_edge_producer_queue_depth").set(edge.publisher.in_flight() as f64);
            metrics::gauge!("ricochet_registry_links").set(edge.links.len() as f64);
            metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default()
        }),
    );
    let clicks = Router::new()
        .route("/{code}", get(edge::redirect))
        .route("/{code}/{token}", get(edge::redirect_for_recipient))
        .route("/o/{file}", get(edge::open_pixel))
        .route("/o/{code}/{file}", get(edge::open_pixel_for_recipient))
        .layer(middleware::from_fn(observe_latency));
    ops.merge(clicks).with_state(edge)
}

async fn readyz(State(edge): State<Arc<Edge>>) -> Response {
    if edge.is_ready() {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading the link registry").into_response()
    }
}

async fn observe_latency(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!("ricochet_edge_request_duration_seconds", "status" => status_label(response.status()))
        .record(start.elapsed().as_secs_f64());
    response
}

/// The edge's own statuses as static labels: no string allocated per request.
fn status_label(status: StatusCode) -> std::borrow::Cow<'static, str> {
    match status {
        StatusCode::FOUND => "302".into(),
        StatusCode::OK => "200".into(),
        StatusCode::NOT_FOUND => "404".into(),
        StatusCode::GONE => "410".into(),
        other => other.as_str().to_owned().into(),
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
