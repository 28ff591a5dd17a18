//! The hot path: code → destination → 302, then the click is enqueued.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use ricochet_ingest::Publisher;
use ricochet_registry::{Registry, RegistryTail, TokenKeys};
use ricochet_schemas::{
    ClientRecord, ClientStatus, EventType, LinkRecord, LinkStatus, RecipientId, RecipientToken, Signals,
};

use crate::{click, pages};

/// What every request handler shares.
pub struct Edge {
    pub links: Arc<Registry>,
    pub publisher: Arc<Publisher>,
    pub node_id: String,
    pub trust_forwarded_for: bool,
    /// Master keys for recipient tokens; `None`: every token counts as invalid.
    pub tokens: Option<TokenKeys>,
    /// `None` when the registry was filled by hand (tests): always ready.
    pub tail: Option<RegistryTail>,
}

/// The parts of a request the event needs.
pub struct Request {
    pub method: Method,
    pub headers: HeaderMap,
    pub peer: SocketAddr,
}

/// `GET /{code}`.
pub async fn redirect(State(edge): State<Arc<Edge>>, Path(code): Path<String>, req: RequestParts) -> Response {
    click(&edge, &code, None, req.0)
}

/// `GET /{code}/{token}`: a tracking URL that names its recipient.
pub async fn redirect_for_recipient(
    State(edge): State<Arc<Edge>>,
    Path((code, token)): Path<(String, String)>,
    req: RequestParts,
) -> Response {
    click(&edge, &code, Some(&token), req.0)
}

/// `GET /o/{code}.gif`: an email's open pixel.
pub async fn open_pixel(State(edge): State<Arc<Edge>>, Path(file): Path<String>, req: RequestParts) -> Response {
    match file.strip_suffix(".gif") {
        Some(code) => open(&edge, code, None, req.0),
        None => pages::not_found(),
    }
}

/// `GET /o/{code}/{token}.gif`: an open pixel that names its recipient.
pub async fn open_pixel_for_recipient(
    State(edge): State<Arc<Edge>>,
    Path((code, file)): Path<(String, String)>,
    req: RequestParts,
) -> Response {
    match file.strip_suffix(".gif") {
        Some(token) => open(&edge, &code, Some(token), req.0),
        None => pages::not_found(),
    }
}

/// The product in one function.
fn click(edge: &Edge, code: &str, token: Option<&str>, req: Request) -> Response {
    // 1. Look the code up in memory. Unknown codes are never redirected.
    let Some(link) = edge.links.resolve(code) else {
        return pages::not_found();
    };
    // 2. Decide the answer from the link's and its client's state alone.
    let now_ms = now_ms();
    let client = edge.links.client(link.client_id.as_str());
    if !is_live(&link, client.as_deref(), now_ms) || edge.links.limit_reached(&link) {
        return inactive(client.as_deref());
    }
    let response = found(&link.destination_url);
    // 3. Bookkeeping after the answer is decided; it only enqueues.
    edge.record(&link, client.as_deref(), EventType::Click, token, &req, now_ms);
    response
}

/// Opens are served the pixel whatever happens: a broken image helps nobody.
fn open(edge: &Edge, code: &str, token: Option<&str>, req: Request) -> Response {
    let Some(link) = edge.links.resolve(code) else {
        return (StatusCode::NOT_FOUND, pages::pixel()).into_response();
    };
    let now_ms = now_ms();
    let client = edge.links.client(link.client_id.as_str());
    if is_live(&link, client.as_deref(), now_ms) {
        edge.record(&link, client.as_deref(), EventType::Open, token, &req, now_ms);
    }
    pages::pixel().into_response()
}

impl Edge {
    pub fn is_ready(&self) -> bool {
        self.tail.as_ref().is_none_or(RegistryTail::is_ready)
    }

    /// Builds the event and hands it to the spool. Never waits; a failure is
    /// counted, never shown to the recipient. Allocation-free: the event
    /// borrows from the link and the request, the key is formatted on the
    /// stack, and the publisher encodes straight into the spool's buffer.
    fn record(
        &self,
        link: &LinkRecord,
        client: Option<&ClientRecord>,
        event_type: EventType,
        token: Option<&str>,
        req: &Request,
        now_ms: i64,
    ) {
        let ip = click::client_ip(req.peer.ip(), &req.headers, self.trust_forwarded_for);
        let (recipient_id, recipient_token) = self.recipient(link, token);
        // Until the edge's classifier lands: no evidence either way.
        let signals = Signals::default();
        let seen = click::Seen {
            event_type,
            method: &req.method,
            headers: &req.headers,
            ip,
            recipient: (recipient_id.as_ref(), recipient_token),
            now_ms,
            edge_node: &self.node_id,
            signals: &signals,
        };
        let event = click::event(link, seen);
        let mut key = KeyBuf::default();
        if let Err(e) = self.publisher.publish(partition_key(link, client, &mut key), &event) {
            metrics::counter!("ricochet_edge_events_dropped_total", "reason" => e.reason()).increment(1);
            tracing::warn!(error = %e, "click event dropped");
        }
    }

    fn recipient(&self, link: &LinkRecord, token: Option<&str>) -> (Option<RecipientId>, RecipientToken) {
        let Some(token) = token else {
            return (None, RecipientToken::Absent);
        };
        let verified = match &self.tokens {
            Some(keys) => keys.verify(link.client_id.as_str(), link.code.as_str(), token),
            None => Err(ricochet_registry::TokenError::UnknownKey("(no keys configured)".into())),
        };
        match verified {
            Ok(recipient) => (Some(recipient), RecipientToken::Valid),
            Err(e) => {
                metrics::counter!("ricochet_edge_invalid_tokens_total").increment(1);
                tracing::debug!(error = %e, code = %link.code, "recipient token rejected; click kept unattributed");
                (None, RecipientToken::Invalid)
            }
        }
    }
}

/// Events are keyed by client, so one client's clicks share a partition; a
/// client flagged hot spreads over `hot_spread` sub-keys so that one sender's
/// blast is not capped by one partition. Rollups key on the event's fields,
/// not the Kafka key, so they are the same either way. A sub-key is written
/// into `buf` on the stack.
fn partition_key<'a>(link: &'a LinkRecord, client: Option<&ClientRecord>, buf: &'a mut KeyBuf) -> &'a str {
    match client.map(|c| c.hot_spread).filter(|spread| *spread > 1) {
        Some(spread) => {
            use std::io::Write as _;
            let mut rest = &mut buf.0[..];
            let room = rest.len();
            // A client id is at most 64 bytes and the suffix at most 6: this fits.
            match write!(rest, "{}#{}", link.client_id, rand::rng().random_range(0..spread)) {
                Ok(()) => {
                    let len = room - rest.len();
                    std::str::from_utf8(&buf.0[..len]).unwrap_or(link.client_id.as_str())
                }
                Err(_) => link.client_id.as_str(),
            }
        }
        None => link.client_id.as_str(),
    }
}

/// Room for `client id # sub-key` (64 + 1 + 5 bytes at most).
struct KeyBuf([u8; 72]);

impl Default for KeyBuf {
    fn default() -> Self {
        KeyBuf([0; 72])
    }
}

/// Active, of an active client, and inside its validity window if it has one.
pub fn is_live(link: &LinkRecord, client: Option<&ClientRecord>, now_ms: i64) -> bool {
    link.status == LinkStatus::Active
        && client.is_none_or(|c| c.status == ClientStatus::Active)
        && link.valid_from_ms.is_none_or(|from| now_ms >= from)
        && link.valid_until_ms.is_none_or(|until| now_ms < until)
}

/// A paused, expired, deleted or used-up link: the client's fallback URL, or the 410 page.
fn inactive(client: Option<&ClientRecord>) -> Response {
    match client.and_then(|c| c.fallback_url.as_deref()) {
        Some(fallback) => found(fallback),
        None => pages::gone(),
    }
}

fn found(destination: &str) -> Response {
    // Destinations were validated when registered (no control characters), so
    // this cannot fail; a corrupt registry record still must not panic.
    match HeaderValue::from_str(destination) {
        Ok(location) => (
            StatusCode::FOUND,
            [(header::LOCATION, location), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        )
            .into_response(),
        Err(_) => pages::not_found(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Extractor for the request parts the event needs.
pub struct RequestParts(pub Request);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestParts {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        Ok(RequestParts(Request { method: parts.method.clone(), headers: std::mem::take(&mut parts.headers), peer }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ricochet_schemas::{CampaignId, ClientId, LinkCode, LinkId};

    fn link() -> LinkRecord {
        LinkRecord {
            link_id: LinkId::parse("l1").unwrap(),
            code: LinkCode::parse("Ab3dE5gH").unwrap(),
            client_id: ClientId::parse("a".repeat(ClientId::MAX_LEN)).unwrap(),
            campaign_id: CampaignId::parse("c").unwrap(),
            destination_url: "https://example.com/".into(),
            status: LinkStatus::Active,
            created_at_ms: 0,
            valid_from_ms: None,
            valid_until_ms: None,
            click_limit: None,
            honeypot: false,
        }
    }

    #[test]
    fn partition_keys_are_the_client_or_a_stack_formatted_sub_key() {
        let link = link();
        let mut buf = KeyBuf::default();
        assert_eq!(partition_key(&link, None, &mut buf), link.client_id.as_str());
        let hot = ClientRecord {
            client_id: link.client_id.clone(),
            status: ClientStatus::Active,
            fallback_url: None,
            hot_spread: u16::MAX,
            updated_at_ms: 0,
            allowed_networks: vec![],
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut buf = KeyBuf::default();
            let key = partition_key(&link, Some(&hot), &mut buf);
            let (client, sub) = key.split_once('#').expect("a sub-key");
            assert_eq!(client, link.client_id.as_str(), "the longest client id still fits");
            assert!(sub.parse::<u16>().unwrap() < u16::MAX);
            seen.insert(key.to_owned());
        }
        assert!(seen.len() > 100, "sub-keys spread: {} distinct of 200", seen.len());
    }
}
