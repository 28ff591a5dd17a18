//! The hot path: code → destination → 302, then the click is enqueued.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ricochet_ingest::Publisher;
use ricochet_registry::{LinkTable, RegistryTail};
use ricochet_schemas::{ClickEvent, EventType, LinkRecord, LinkStatus, RecipientToken};

use crate::{click, pages};

/// What every request handler shares.
pub struct Edge {
    pub links: Arc<LinkTable>,
    pub publisher: Arc<Publisher>,
    pub node_id: String,
    pub trust_forwarded_for: bool,
    /// `None` when the table was filled by hand (tests): always ready.
    pub tail: Option<RegistryTail>,
}

impl Edge {
    pub fn is_ready(&self) -> bool {
        self.tail.as_ref().is_none_or(RegistryTail::is_ready)
    }

    /// Hands the click to the producer's memory. Never waits for the broker; a
    /// failure is counted, never shown to the recipient.
    fn record(&self, event: &ClickEvent) {
        if let Err(e) = self.publisher.publish(event.client_id.as_str(), event) {
            metrics::counter!("ricochet_edge_events_dropped_total", "reason" => e.reason())
                .increment(1);
            tracing::warn!(error = %e, "click event dropped");
        }
    }
}

/// `GET /{code}`: the product in one function.
pub async fn redirect(
    State(edge): State<Arc<Edge>>,
    Path(code): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    // 1. Look the code up in memory. Unknown codes are never redirected.
    let Some(link) = edge.links.resolve(&code) else {
        return pages::not_found();
    };
    // 2. Decide the answer from the link's state alone.
    let now_ms = now_ms();
    if !is_live(&link, now_ms) {
        return pages::gone();
    }
    let response = found(&link.destination_url);
    // 3. Bookkeeping after the answer is decided; it only enqueues.
    let ip = click::client_ip(peer.ip(), &headers, edge.trust_forwarded_for);
    let seen = click::Seen {
        event_type: EventType::Click,
        method: &method,
        headers: &headers,
        ip,
        recipient: (None, RecipientToken::Absent),
        now_ms,
        edge_node: &edge.node_id,
    };
    edge.record(&click::event(&link, seen));
    response
}

/// Active, and inside its validity window if it has one.
pub fn is_live(link: &LinkRecord, now_ms: i64) -> bool {
    link.status == LinkStatus::Active
        && link.valid_from_ms.is_none_or(|from| now_ms >= from)
        && link.valid_until_ms.is_none_or(|until| now_ms < until)
}

fn found(destination: &str) -> Response {
    // Destinations were validated at creation (no control characters), so this
    // header value cannot fail; a corrupt registry record still must not panic.
    match header::HeaderValue::from_str(destination) {
        Ok(location) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, location),
                (header::CACHE_CONTROL, "no-store".parse().unwrap()),
            ],
        )
            .into_response(),
        Err(_) => pages::not_found(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
