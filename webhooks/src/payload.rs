//! What a delivery carries: decided events as Standard Webhooks payloads.
//!
//! One event is one JSON object, `{"type", "timestamp", "data"}`:
//! - `type`: `click.human`, `click.bot`, `open.human` or `open.machine`, the
//!   names an endpoint subscribes to;
//! - `timestamp`: when the event happened (RFC 3339, UTC, milliseconds);
//! - `data`: the event as the `decided` topic holds it (ids, `occurred_at`,
//!   `verdict`, `reason`, and every dimension), `recipient_id` null without a
//!   valid token.
//!
//! An endpoint that takes batches (up to its `batch_size` events a request,
//! as SendGrid's Event Webhook sends them) gets a JSON array of such objects.
//! The delivery's `webhook-id` is derived from the events it carries
//! ([`message_id`]), so it is the same on every retry of the same delivery and
//! a receiver can deduplicate on it.

use ricochet_schemas::DecidedEvent;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The event types an endpoint may subscribe to.
pub const EVENT_TYPES: [&str; 4] = ["click.human", "click.bot", "open.human", "open.machine"];

/// The subscription name of an event: its type and its verdict.
pub fn event_type(event: &DecidedEvent) -> String {
    format!("{}.{}", event.event_type, event.verdict)
}

#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: String,
    timestamp: String,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    event_id: &'a str,
    client_id: &'a str,
    campaign_id: &'a str,
    link_id: &'a str,
    recipient_id: Option<&'a str>,
    occurred_at: String,
    verdict: &'a str,
    reason: &'a str,
    country: &'a str,
    device: &'a str,
    os: &'a str,
    browser: &'a str,
    mail_client: &'a str,
    referrer_domain: &'a str,
    utm_source: &'a str,
    utm_medium: &'a str,
    utm_campaign: &'a str,
    destination_url: &'a str,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn payload(e: &DecidedEvent) -> Payload<'_> {
    let occurred_at = rfc3339(e.occurred_at_ms);
    Payload {
        kind: event_type(e),
        timestamp: occurred_at.clone(),
        data: Data {
            event_id: &e.event_id,
            client_id: &e.client_id,
            campaign_id: &e.campaign_id,
            link_id: &e.link_id,
            recipient_id: e.recipient_id.as_deref(),
            occurred_at,
            verdict: &e.verdict,
            reason: &e.reason,
            country: &e.country,
            device: &e.device,
            os: &e.os,
            browser: &e.browser,
            mail_client: &e.mail_client,
            referrer_domain: &e.referrer_domain,
            utm_source: &e.utm_source,
            utm_medium: &e.utm_medium,
            utm_campaign: &e.utm_campaign,
            destination_url: &e.destination_url,
        },
    }
}

/// The body of a delivery of `events` (one or more): the object of a single
/// event for an endpoint that takes one at a time (`batched` false), else an
/// array.
pub fn body(events: &[DecidedEvent], batched: bool) -> Vec<u8> {
    let json = match (events, batched) {
        ([one], false) => serde_json::to_vec(&payload(one)),
        _ => serde_json::to_vec(&events.iter().map(payload).collect::<Vec<_>>()),
    };
    json.expect("a payload of strings serialises")
}

/// The `webhook-id` of a delivery: `msg_` and a digest of its events' ids,
/// the same on every retry of the same delivery.
pub fn message_id(events: &[DecidedEvent]) -> String {
    let mut digest = Sha256::new();
    for e in events {
        digest.update(e.event_id.as_bytes());
        digest.update(b"\n");
    }
    let hash = digest.finalize();
    format!("msg_{}", hash[..16].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn event(id: &str, kind: &str, verdict: &str) -> DecidedEvent {
        DecidedEvent {
            event_id: id.into(),
            event_type: kind.into(),
            occurred_at_ms: 1_764_720_000_123,
            client_id: "acme".into(),
            campaign_id: "bf".into(),
            link_id: "l1".into(),
            recipient_id: Some("7ff912801fee80eb94c6c1a1de144cb5".into()),
            verdict: verdict.into(),
            reason: "human".into(),
            country: "DE".into(),
            device: "mobile".into(),
            destination_url: "https://shop.example/p".into(),
            ..DecidedEvent::default()
        }
    }

    #[test]
    fn one_event_is_one_object_with_type_timestamp_and_data() {
        let one: Value = serde_json::from_slice(&body(&[event("e1", "click", "human")], false)).unwrap();
        assert_eq!(one["type"], "click.human");
        assert_eq!(one["timestamp"], "2025-12-03T00:00:00.123Z");
        assert_eq!(one["data"]["event_id"], "e1");
        assert_eq!(one["data"]["occurred_at"], "2025-12-03T00:00:00.123Z");
        assert_eq!(one["data"]["recipient_id"], "7ff912801fee80eb94c6c1a1de144cb5");
        assert_eq!(one["data"]["country"], "DE");
        assert_eq!(one["data"]["verdict"], "human");
        let mut anonymous = event("e2", "open", "machine");
        anonymous.recipient_id = None;
        let open: Value = serde_json::from_slice(&body(&[anonymous], false)).unwrap();
        assert_eq!(open["type"], "open.machine");
        assert_eq!(open["data"]["recipient_id"], Value::Null);
    }

    #[test]
    fn a_batch_is_an_array_in_order() {
        let events = [event("e1", "click", "human"), event("e2", "click", "bot")];
        let batch: Value = serde_json::from_slice(&body(&events, true)).unwrap();
        let types: Vec<&str> = batch.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["click.human", "click.bot"]);
        // A batching endpoint gets an array even for one event.
        let one: Value = serde_json::from_slice(&body(&events[..1], true)).unwrap();
        assert_eq!(one.as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn every_type_is_one_an_endpoint_can_subscribe_to() {
        for (kind, verdict) in [("click", "human"), ("click", "bot"), ("open", "human"), ("open", "machine")] {
            assert!(EVENT_TYPES.contains(&event_type(&event("e", kind, verdict)).as_str()));
        }
    }

    #[test]
    fn the_message_id_is_stable_and_tells_deliveries_apart() {
        let (a, b) = (event("e1", "click", "human"), event("e2", "click", "human"));
        let id = message_id(&[a.clone(), b.clone()]);
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
        assert_eq!(id, message_id(&[a.clone(), b.clone()]));
        assert_ne!(id, message_id(&[b.clone(), a.clone()]));
        assert_ne!(id, message_id(&[a]));
    }
}
