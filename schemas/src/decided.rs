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
    let i = index(symbols, value);
    Value::Enum(i as u32, symbols[i].to_owned())
}

/// An enum's index; an unknown value is written as the first symbol.
fn index(symbols: &[&str], value: &str) -> usize {
    symbols.iter().position(|s| *s == value).unwrap_or(0)
}

impl DecidedEvent {
    /// Appends the framed message (Confluent header with schema id 11, then
    /// the datum) to `out`, byte for byte what [`crate::Codec::encode`]
    /// writes, without building `apache_avro`'s value tree: the aggregator
    /// encodes every event it counts, and the tree cost it ~5 µs an event.
    pub fn encode_wire(&self, out: &mut Vec<u8>) {
        use crate::click_wire::{long, optional, string};
        out.push(crate::framing::MAGIC);
        out.extend_from_slice(&DECIDED_EVENT_V1.0.to_be_bytes());
        string(out, &self.event_id);
        long(out, index(&TYPES, &self.event_type) as i64);
        long(out, self.occurred_at_ms);
        string(out, &self.client_id);
        string(out, &self.campaign_id);
        string(out, &self.link_id);
        optional(out, self.recipient_id.as_deref(), string);
        long(out, index(&VERDICTS, &self.verdict) as i64);
        for s in [
            &self.reason,
            &self.country,
            &self.device,
            &self.os,
            &self.browser,
            &self.mail_client,
            &self.referrer_domain,
            &self.utm_source,
            &self.utm_medium,
            &self.utm_campaign,
            &self.destination_url,
        ] {
            string(out, s);
        }
        long(out, i64::from(self.source_partition));
        long(out, self.source_offset);
    }
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
    use proptest::prelude::*;

    use super::*;
    use crate::Codec;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z0-9_.:/-]{1,40}", "\\PC{0,20}"]
    }

    prop_compose! {
        fn decided()(
            ids in proptest::collection::vec(text(), 4),
            event_type in prop_oneof![Just("click"), Just("open"), Just("other")],
            verdict in prop_oneof![Just("human"), Just("bot"), Just("machine")],
            recipient in proptest::option::of(text()),
            dims in proptest::collection::vec(text(), 11),
            occurred_at_ms in any::<i64>(),
            source_partition in any::<i32>(),
            source_offset in any::<i64>(),
        ) -> DecidedEvent {
            DecidedEvent {
                event_id: ids[0].clone(),
                event_type: event_type.into(),
                occurred_at_ms,
                client_id: ids[1].clone(),
                campaign_id: ids[2].clone(),
                link_id: ids[3].clone(),
                recipient_id: recipient,
                verdict: verdict.into(),
                reason: dims[0].clone(),
                country: dims[1].clone(),
                device: dims[2].clone(),
                os: dims[3].clone(),
                browser: dims[4].clone(),
                mail_client: dims[5].clone(),
                referrer_domain: dims[6].clone(),
                utm_source: dims[7].clone(),
                utm_medium: dims[8].clone(),
                utm_campaign: dims[9].clone(),
                destination_url: dims[10].clone(),
                source_partition,
                source_offset,
            }
        }
    }

    proptest! {
        /// The hand encoder writes exactly apache-avro's bytes, whatever the event.
        #[test]
        fn the_hand_encoder_writes_what_apache_avro_writes(e in decided()) {
            let codec = Codec::<DecidedEvent>::new();
            let mut wire = Vec::new();
            e.encode_wire(&mut wire);
            prop_assert_eq!(&wire, &codec.encode(&e).unwrap());
        }
    }

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
