//! `DecidedEvent`: a click or open whose verdict is final, published by the
//! aggregator to the `decided` topic for consumers outside the counting path
//! (webhooks, Kafka Connect, a sender's own services).

use apache_avro::types::Value;

use crate::codec::{nullable, CodecError, Contract, Fields, SchemaId};

pub const DECIDED_EVENT_V1: SchemaId = SchemaId(11);

/// One decided event. Strings rather than the id newtypes: it is written from
/// what the aggregator stored and read by code that only forwards it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecidedEvent {
    pub event_id: String,
    /// `click` or `open`.
    pub event_type: String,
    pub occurred_at_ms: i64,
    pub client_id: String,
    pub campaign_id: String,
    pub link_id: String,
    pub recipient_id: Option<String>,
    /// `human`, `bot` (a click) or `machine` (an open).
    pub verdict: String,
    pub reason: String,
    pub country: String,
    pub device: String,
    pub os: String,
    pub browser: String,
    pub mail_client: String,
    pub referrer_domain: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub destination_url: String,
    pub source_partition: i32,
    pub source_offset: i64,
}

const TYPES: [&str; 2] = ["click", "open"];
const VERDICTS: [&str; 3] = ["human", "bot", "machine"];

fn symbol(symbols: &[&str], value: &str) -> Value {
    let i = symbols.iter().position(|s| *s == value).unwrap_or(0);
    Value::Enum(i as u32, symbols[i].to_owned())
}

impl Contract for DecidedEvent {
    const NAME: &'static str = "DecidedEvent";
    const VERSIONS: &'static [(SchemaId, &'static str)] =
        &[(DECIDED_EVENT_V1, include_str!("../avro/decided_event.v1.avsc"))];

    fn to_avro(&self) -> Value {
        let s = |v: &str| Value::String(v.to_owned());
        Value::Record(vec![
            ("event_id".into(), s(&self.event_id)),
            ("type".into(), symbol(&TYPES, &self.event_type)),
            ("occurred_at".into(), Value::TimestampMillis(self.occurred_at_ms)),
            ("client_id".into(), s(&self.client_id)),
            ("campaign_id".into(), s(&self.campaign_id)),
            ("link_id".into(), s(&self.link_id)),
            ("recipient_id".into(), nullable(self.recipient_id.as_deref().map(s))),
            ("verdict".into(), symbol(&VERDICTS, &self.verdict)),
            ("reason".into(), s(&self.reason)),
            ("country".into(), s(&self.country)),
            ("device".into(), s(&self.device)),
            ("os".into(), s(&self.os)),
            ("browser".into(), s(&self.browser)),
            ("mail_client".into(), s(&self.mail_client)),
            ("referrer_domain".into(), s(&self.referrer_domain)),
            ("utm_source".into(), s(&self.utm_source)),
            ("utm_medium".into(), s(&self.utm_medium)),
            ("utm_campaign".into(), s(&self.utm_campaign)),
            ("destination_url".into(), s(&self.destination_url)),
            ("source_partition".into(), Value::Int(self.source_partition)),
            ("source_offset".into(), Value::Long(self.source_offset)),
        ])
    }

    fn from_avro(record: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(Self::NAME, record)?;
        Ok(DecidedEvent {
            event_id: f.string("event_id")?,
            event_type: f.enum_symbol("type")?,
            occurred_at_ms: f.long("occurred_at")?,
            client_id: f.string("client_id")?,
            campaign_id: f.string("campaign_id")?,
            link_id: f.string("link_id")?,
            recipient_id: f.opt_string("recipient_id")?,
            verdict: f.enum_symbol("verdict")?,
            reason: f.string("reason")?,
            country: f.string("country")?,
            device: f.string("device")?,
            os: f.string("os")?,
            browser: f.string("browser")?,
            mail_client: f.string("mail_client")?,
            referrer_domain: f.string("referrer_domain")?,
            utm_source: f.string("utm_source")?,
            utm_medium: f.string("utm_medium")?,
            utm_campaign: f.string("utm_campaign")?,
            destination_url: f.string("destination_url")?,
            source_partition: f.int("source_partition")?,
            source_offset: f.long("source_offset")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Codec;

    #[test]
    fn a_decided_event_survives_the_round_trip() {
        let e = DecidedEvent {
            event_id: "0190f3a2-7c1e-7000-8000-000000000001".into(),
            event_type: "open".into(),
            occurred_at_ms: 1_800_000_000_123,
            client_id: "acme".into(),
            campaign_id: "bf".into(),
            link_id: "l1".into(),
            recipient_id: Some("r1".into()),
            verdict: "machine".into(),
            reason: "apple_privacy".into(),
            country: "US".into(),
            device: "other".into(),
            os: "Other".into(),
            browser: "Other".into(),
            mail_client: "apple_mail".into(),
            referrer_domain: String::new(),
            utm_source: "newsletter".into(),
            utm_medium: "email".into(),
            utm_campaign: String::new(),
            destination_url: "https://acme.example/".into(),
            source_partition: 3,
            source_offset: 42,
        };
        let codec = Codec::<DecidedEvent>::new();
        let bytes = codec.encode(&e).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 11], "Confluent framing, schema id 11");
        assert_eq!(codec.decode(&bytes).unwrap(), e);
    }
}
