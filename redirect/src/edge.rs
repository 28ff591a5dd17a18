//! The hot path: code → destination → 302, then the click is enqueued.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ricochet_ingest::Publisher;
use ricochet_registry::{LinkRef, Registry, RegistryTail, TokenKeys, VerifiedToken};
use ricochet_schemas::{ClientRecord, ClientStatus, EventType, LinkStatus, RecipientId, RecipientToken};
use ricochet_signals::{Classifier, Observed};

use crate::{click, pages};

/// What every request handler shares.
pub struct Edge {
    pub links: Arc<Registry>,
    pub publisher: Arc<Publisher>,
    pub node_id: String,
    /// Whose `X-Forwarded-For` is believed (see [`click::client_ip`]).
    pub trusted_proxies: click::TrustedProxies,
    /// Master keys for recipient tokens; `None`: every token counts as invalid.
    pub tokens: Option<TokenKeys>,
    /// `None` when the registry was filled by hand (tests): always ready.
    pub tail: Option<RegistryTail>,
    /// What each request says about who sent it; loaded once at start.
    pub signals: Arc<Classifier>,
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
pub(crate) fn click(edge: &Edge, code: &str, token: Option<&str>, req: Request) -> Response {
    // 1. Look the code up in memory. Unknown codes are never redirected.
    let Some(link) = edge.links.resolve(code) else {
        return pages::not_found();
    };
    // 2. Decide the answer from the link's and its client's state alone.
    let now_ms = now_ms();
    let client = edge.links.client(link.client_id());
    if !is_live(&link, client.as_deref(), now_ms) || edge.links.limit_reached(&link) {
        return inactive(client.as_deref());
    }
    let response = found(&link.destination_url().parts());
    // 3. Bookkeeping after the answer is decided; it only enqueues.
    edge.record(&link, client.as_deref(), EventType::Click, token, &req, now_ms);
    response
}

/// Opens are served the pixel whatever happens: a broken image helps nobody.
pub(crate) fn open(edge: &Edge, code: &str, token: Option<&str>, req: Request) -> Response {
    let Some(link) = edge.links.resolve(code) else {
        return (StatusCode::NOT_FOUND, pages::pixel()).into_response();
    };
    let now_ms = now_ms();
    let client = edge.links.client(link.client_id());
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
    /// borrows from the registry's copy of the link and from the request, the
    /// key and the link id's text are formatted on the stack, and the
    /// publisher encodes straight into the spool's buffer.
    fn record(
        &self,
        link: &LinkRef<'_>,
        client: Option<&ClientRecord>,
        event_type: EventType,
        token: Option<&str>,
        req: &Request,
        now_ms: i64,
    ) {
        let ip = click::client_ip(req.peer.ip(), &req.headers, &self.trusted_proxies);
        let (verified, recipient_token) = self.recipient(link, token);
        let (recipient, sent_at_ms) = verified.map_or((None, None), |v| (Some(v.recipient), v.sent_at_ms));
        // The full address is classified here; only the anonymized one goes into the event.
        let observed = Observed { method: &req.method, headers: &req.headers, ip, sent_at_ms };
        let signals = self.signals.observe(&observed, link.honeypot(), client);
        let sender = sender_hash(recipient.as_ref(), token, ip);
        let seen = click::Seen {
            event_type,
            method: &req.method,
            headers: &req.headers,
            ip,
            recipient: (recipient.as_ref(), recipient_token),
            now_ms,
            edge_node: &self.node_id,
            signals: &signals,
        };
        link.link_id().with_str(|link_id| {
            let event = click::event(link, link_id, seen);
            let mut key = KeyBuf::default();
            if let Err(e) = self.publisher.publish(partition_key(link.client_id(), client, sender, &mut key), &event) {
                metrics::counter!("ricochet_edge_events_dropped_total", "reason" => e.reason()).increment(1);
                tracing::warn!(error = %e, "click event dropped");
            }
        });
    }

    /// The token's recipient and send time, only when it verifies.
    fn recipient(&self, link: &LinkRef<'_>, token: Option<&str>) -> (Option<VerifiedToken>, RecipientToken) {
        let Some(token) = token else {
            return (None, RecipientToken::Absent);
        };
        let verified = match &self.tokens {
            Some(keys) => keys.verify_token(link.client_id(), link.code(), token),
            None => Err(ricochet_registry::TokenError::UnknownKey("(no keys configured)".into())),
        };
        match verified {
            Ok(verified) => (Some(verified), RecipientToken::Valid),
            Err(e) => {
                metrics::counter!("ricochet_edge_invalid_tokens_total").increment(1);
                tracing::debug!(error = %e, code = link.code(), "recipient token rejected; click kept unattributed");
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
///
/// The sub-key is `sender_hash` (see [`sender_hash`]) modulo the spread, never
/// random: all of one recipient's events reach one partition, so the
/// aggregator sees a recipient's whole burst in one place to judge it.
fn partition_key<'a>(
    client_id: &'a str,
    client: Option<&ClientRecord>,
    sender_hash: u32,
    buf: &'a mut KeyBuf,
) -> &'a str {
    match client.map(|c| c.hot_spread).filter(|spread| *spread > 1) {
        Some(spread) => {
            use std::io::Write as _;
            let mut rest = &mut buf.0[..];
            let room = rest.len();
            // A client id is at most 64 bytes and the suffix at most 6: this fits.
            match write!(rest, "{}#{}", client_id, sender_hash % u32::from(spread)) {
                Ok(()) => {
                    let len = room - rest.len();
                    std::str::from_utf8(&buf.0[..len]).unwrap_or(client_id)
                }
                Err(_) => client_id,
            }
        }
        None => client_id,
    }
}

/// Room for `client id # sub-key` (64 + 1 + 5 bytes at most).
struct KeyBuf([u8; 72]);

impl Default for KeyBuf {
    fn default() -> Self {
        KeyBuf([0; 72])
    }
}

/// A stable hash of who sent the request: the verified recipient; else the
/// token's text (a token that failed to verify still names one recipient's
/// links); else the anonymized address, so one network's clicks stay together.
/// CRC-32 (IEEE): every edge and every release computes the same, unlike std's
/// `DefaultHasher`; no allocation.
pub fn sender_hash(recipient: Option<&RecipientId>, token: Option<&str>, ip: std::net::IpAddr) -> u32 {
    match (recipient, token) {
        (Some(r), _) => crc32fast::hash(r.as_str().as_bytes()),
        (None, Some(t)) => crc32fast::hash(t.as_bytes()),
        (None, None) => match click::anonymize(ip) {
            std::net::IpAddr::V4(v4) => crc32fast::hash(&v4.octets()),
            std::net::IpAddr::V6(v6) => crc32fast::hash(&v6.octets()),
        },
    }
}

/// Active, of an active client, and inside its validity window if it has one.
pub fn is_live(link: &LinkRef<'_>, client: Option<&ClientRecord>, now_ms: i64) -> bool {
    link.status() == LinkStatus::Active
        && client.is_none_or(|c| c.status == ClientStatus::Active)
        && link.valid_from_ms().is_none_or(|from| now_ms >= from)
        && link.valid_until_ms().is_none_or(|until| now_ms < until)
}

/// A paused, expired, deleted or used-up link: the client's fallback URL, or the 410 page.
fn inactive(client: Option<&ClientRecord>) -> Response {
    match client.and_then(|c| c.fallback_url.as_deref()) {
        Some(fallback) => found(&[fallback]),
        None => pages::gone(),
    }
}

/// A `302` to the URL made of `parts` (the registry keeps a destination's host apart).
fn found(parts: &[&str]) -> Response {
    let mut location = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    parts.iter().for_each(|p| location.extend_from_slice(p.as_bytes()));
    // Destinations were validated when registered (no control characters), so
    // this cannot fail; a corrupt registry record still must not panic.
    match HeaderValue::try_from(location) {
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
    use ricochet_schemas::{CampaignId, ClientId, LinkCode, LinkId, LinkRecord};

    fn link() -> LinkRecord {
        LinkRecord {
            link_id: LinkId::mint(),
            code: LinkCode::parse("Ab3dE5gH").unwrap(),
            client_id: ClientId::parse("acme").unwrap(),
            campaign_id: CampaignId::parse("bf").unwrap(),
            destination_url: "https://shop.example/".into(),
            status: LinkStatus::Active,
            created_at_ms: 0,
            valid_from_ms: None,
            valid_until_ms: None,
            click_limit: None,
            honeypot: false,
        }
    }

    fn client(hot_spread: u16) -> ClientRecord {
        ClientRecord {
            client_id: ClientId::parse("acme").unwrap(),
            status: ClientStatus::Active,
            fallback_url: None,
            hot_spread,
            updated_at_ms: 0,
            allowed_networks: vec![],
        }
    }

    fn key_of(l: &LinkRecord, c: Option<&ClientRecord>, hash: u32) -> String {
        partition_key(l.client_id.as_str(), c, hash, &mut KeyBuf::default()).to_owned()
    }

    #[test]
    fn the_longest_client_id_and_sub_key_fit_the_stack_buffer() {
        let long = LinkRecord { client_id: ClientId::parse("a".repeat(ClientId::MAX_LEN)).unwrap(), ..link() };
        let hot = ClientRecord { hot_spread: u16::MAX, ..client(1) };
        let key = key_of(&long, Some(&hot), u32::MAX);
        let (client, sub) = key.split_once('#').expect("a sub-key");
        assert_eq!(client, long.client_id.as_str());
        assert_eq!(sub.parse::<u32>().unwrap(), u32::MAX % u32::from(u16::MAX));
    }

    #[test]
    fn one_recipient_always_gets_one_key_and_recipients_spread() {
        let (l, hot) = (link(), client(16));
        let ip = "203.0.113.7".parse().unwrap();
        let keys: std::collections::HashSet<String> = (0..200)
            .map(|i| {
                let r = RecipientId::parse(format!("r-{i}")).unwrap();
                let key = key_of(&l, Some(&hot), sender_hash(Some(&r), Some("tok"), ip));
                assert_eq!(key, key_of(&l, Some(&hot), sender_hash(Some(&r), None, ip)), "stable for r-{i}");
                key
            })
            .collect();
        assert!(keys.len() >= 12, "200 recipients over 16 sub-keys use most of them: {}", keys.len());
        assert!(keys.iter().all(|k| k.starts_with("acme#")));
        // The same recipient on any link, from any address, with any token text: one key.
        let r = RecipientId::parse("jane@example.com").unwrap();
        let a = key_of(&l, Some(&hot), sender_hash(Some(&r), Some("x"), ip));
        let b = key_of(&link(), Some(&hot), sender_hash(Some(&r), None, "198.51.100.1".parse().unwrap()));
        assert_eq!(a, b);
    }

    #[test]
    fn without_a_recipient_the_token_text_then_the_network_decides() {
        let (l, hot) = (link(), client(64));
        let key = |token, ip: &str| key_of(&l, Some(&hot), sender_hash(None, token, ip.parse().unwrap()));
        assert_eq!(key(None, "203.0.113.7"), key(None, "203.0.113.200"), "one /24, one key");
        assert_eq!(key(Some("bad.token"), "203.0.113.7"), key(Some("bad.token"), "198.51.100.1"));
        let spread: std::collections::HashSet<_> = (0..=255).map(|n| key(None, &format!("198.51.{n}.1"))).collect();
        assert!(spread.len() > 32, "networks spread: {}", spread.len());
    }

    #[test]
    fn normal_clients_keep_the_plain_client_key() {
        let jane = RecipientId::parse("jane@example.com").unwrap();
        let hash = sender_hash(Some(&jane), None, "203.0.113.7".parse().unwrap());
        assert_eq!(key_of(&link(), Some(&client(1)), hash), "acme");
        assert_eq!(key_of(&link(), None, hash), "acme");
        // Pinned: a change of hash would move recipients between partitions mid-campaign.
        assert_eq!(hash, crc32fast::hash(b"jane@example.com"));
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926, "CRC-32/IEEE check value");
    }
}
