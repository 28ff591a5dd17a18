//! Routes and the serving loop.
//!
//! Clicks and opens take a short path: [`EdgeService`] reads the request line
//! and calls the edge directly, with the peer address it was given when the
//! connection was accepted. Everything else (health, readiness, and odd click
//! URLs such as percent-encoded ones) goes through the axum
//! [`router`], which also serves every click route, so the two agree. The
//! short path exists for cost alone: the router's matching, path extraction,
//! middleware and per-request connection-info extension cost about as much
//! as the whole click's bookkeeping (`docs/benchmarks.md`).
//!
//! The edge speaks HTTP/1.1 only, through `ricochet-serve` (hyper's own
//! connection builder rather than `axum::serve`): what sits in front of it (a
//! TLS terminator, a load balancer) speaks HTTP/1.1 to it, and detecting
//! HTTP/2 on every connection costs every read of every request a rewind
//! buffer. A connection that sends no complete request head within the
//! configured timeout is closed, so a client trickling its headers
//! (slowloris) cannot hold one for ever, and past the connection cap new
//! connections wait in the accept queue.
//!
//! Metrics are served only on the operations listener ([`ops_router`],
//! `RICOCHET_OPS_LISTEN`), never on the public port; `/healthz` and
//! `/readyz` are on both, since load balancers probe the public one.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::future::Either;
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use ricochet_serve::{Limits, RouterService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service as _;

use crate::edge::{self, Edge};

/// The public port's routes: clicks and opens, and health for load balancers.
pub fn router(edge: Arc<Edge>) -> Router {
    let clicks = Router::new()
        .route("/{code}", get(edge::redirect))
        .route("/{code}/{token}", get(edge::redirect_for_recipient))
        .route("/o/{file}", get(edge::open_pixel))
        .route("/o/{code}/{file}", get(edge::open_pixel_for_recipient))
        .layer(middleware::from_fn(observe_latency));
    health().merge(clicks).with_state(edge)
}

/// The operations listener's routes: health, readiness and metrics, which
/// stay off the public port.
pub fn ops_router(edge: Arc<Edge>, metrics: Option<PrometheusHandle>) -> Router {
    health()
        .route(
            "/metrics",
            get(move |State(edge): State<Arc<Edge>>| async move {
                metrics::gauge!("ricochet_edge_producer_queue_depth").set(edge.publisher.in_flight() as f64);
                metrics::gauge!("ricochet_registry_links").set(edge.links.len() as f64);
                metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default()
            }),
        )
        .with_state(edge)
}

fn health() -> Router<Arc<Edge>> {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz))
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

/// Serves clicks on `public` and operations on `ops` until `shutdown`
/// resolves, then lets in-flight requests finish (see [`ricochet_serve::serve`]).
pub async fn run(
    public: TcpListener,
    ops: TcpListener,
    edge: Arc<Edge>,
    metrics: Option<PrometheusHandle>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let ops_router = ops_router(edge.clone(), metrics);
    let shared = Arc::new(Shared { router: router(edge.clone()), edge, latency: Latency::new() });
    let ops = ricochet_serve::serve(
        "edge_ops",
        ops,
        Limits { max_connections: 64, ..limits },
        move |peer| RouterService { router: ops_router.clone(), peer },
        stop.clone().cancelled_owned(),
    );
    let public = ricochet_serve::serve(
        "edge",
        public,
        limits,
        move |peer| EdgeService { shared: shared.clone(), peer },
        stop.clone().cancelled_owned(),
    );
    let signal = async move {
        shutdown.await;
        stop.cancel();
        Ok(())
    };
    tokio::try_join!(public, ops, signal)?;
    Ok(())
}

/// What every connection's service shares.
struct Shared {
    edge: Arc<Edge>,
    router: Router,
    latency: Latency,
}

/// One connection's service: clicks and opens straight to the edge, the rest
/// to the router.
#[derive(Clone)]
pub struct EdgeService {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for EdgeService {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, axum::routing::future::RouteFuture<Infallible>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let start = Instant::now();
        let (mut parts, body) = request.into_parts();
        let Some(route) = Route::of(&parts.method, parts.uri.path()) else {
            let mut request = hyper::Request::from_parts(parts, body);
            request.extensions_mut().insert(ConnectInfo(self.peer));
            return Either::Right(self.shared.router.clone().call(request));
        };
        let edge = &self.shared.edge;
        let req = edge::Request {
            method: parts.method.clone(),
            headers: std::mem::take(&mut parts.headers),
            peer: self.peer,
        };
        let response = match route {
            Route::Click { code, token } => edge::click(edge, code, token, req),
            Route::Open { code, token } => edge::open(edge, code, token, req),
        };
        self.shared.latency.record(response.status(), start);
        Either::Left(std::future::ready(Ok(response)))
    }
}

/// The URL shapes of the short path. Whatever else (other methods, encoded
/// characters, empty segments, the ops endpoints) is left to the router.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `/{code}` and `/{code}/{token}`.
    Click { code: &'a str, token: Option<&'a str> },
    /// `/o/{code}.gif` and `/o/{code}/{token}.gif`.
    Open { code: &'a str, token: Option<&'a str> },
}

impl<'a> Route<'a> {
    fn of(method: &Method, path: &'a str) -> Option<Route<'a>> {
        if (method != Method::GET && method != Method::HEAD) || path.contains('%') {
            return None;
        }
        let mut segments = path.strip_prefix('/')?.split('/');
        let first = segments.next().filter(|s| !s.is_empty())?;
        let second = segments.next();
        let third = segments.next();
        if segments.next().is_some() || second == Some("") || third == Some("") {
            return None;
        }
        match (first, second, third) {
            ("o", Some(file), None) => Some(Route::Open { code: file.strip_suffix(".gif")?, token: None }),
            ("o", Some(code), Some(file)) => Some(Route::Open { code, token: Some(file.strip_suffix(".gif")?) }),
            (_, _, Some(_)) | ("healthz" | "readyz", None, None) => None,
            (code, token, None) => Some(Route::Click { code, token }),
        }
    }
}

/// The request-duration histogram's handles, looked up once rather than by
/// name and label on every request.
struct Latency {
    found: metrics::Histogram,
    ok: metrics::Histogram,
    not_found: metrics::Histogram,
    gone: metrics::Histogram,
}

impl Latency {
    fn new() -> Self {
        let h =
            |status: &'static str| metrics::histogram!("ricochet_edge_request_duration_seconds", "status" => status);
        Latency { found: h("302"), ok: h("200"), not_found: h("404"), gone: h("410") }
    }

    fn record(&self, status: StatusCode, start: Instant) {
        let seconds = start.elapsed().as_secs_f64();
        match status {
            StatusCode::FOUND => self.found.record(seconds),
            StatusCode::OK => self.ok.record(seconds),
            StatusCode::NOT_FOUND => self.not_found.record(seconds),
            StatusCode::GONE => self.gone.record(seconds),
            other => metrics::histogram!("ricochet_edge_request_duration_seconds", "status" => status_label(other))
                .record(seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, path: &str) -> Option<Route<'_>> {
        Route::of(&method, path)
    }

    #[test]
    fn click_and_open_shapes_take_the_short_path() {
        let click = |code, token| Some(Route::Click { code, token });
        let open = |code, token| Some(Route::Open { code, token });
        assert_eq!(of(Method::GET, "/Ab3dE5gH"), click("Ab3dE5gH", None));
        assert_eq!(of(Method::HEAD, "/Ab3dE5gH"), click("Ab3dE5gH", None), "HEAD is a click too (scanners send it)");
        assert_eq!(of(Method::GET, "/Ab3dE5gH/k1.abc.def"), click("Ab3dE5gH", Some("k1.abc.def")));
        assert_eq!(of(Method::GET, "/o/Ab3dE5gH.gif"), open("Ab3dE5gH", None));
        assert_eq!(of(Method::GET, "/o/Ab3dE5gH/k1.abc.gif"), open("Ab3dE5gH", Some("k1.abc")));
        assert_eq!(of(Method::GET, "/o"), click("o", None), "as the router: a code may be `o`");
    }

    #[test]
    fn everything_else_is_left_to_the_router() {
        for path in [
            "/",
            "//x",
            "/x/",
            "/x//",
            "/a/b/c",
            "/a/b/c/d",
            "/healthz",
            "/readyz",
            "/Ab%33dE",
            "/o/Ab3dE5gH",
            "/o/Ab3dE5gH/k1.abc",
            "/o/a/b/c.gif",
            "/o/",
            "/o//x.gif",
        ] {
            assert_eq!(of(Method::GET, path), None, "{path}");
        }
        assert_eq!(of(Method::POST, "/Ab3dE5gH"), None, "other methods get the router's 405");
    }
}
