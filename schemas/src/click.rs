//! `ClickEvent`: one click, as the edge publishes it to the `clicks` topic.

use apache_avro::types::Value;

use crate::codec::{nullable, CodecError, Contract, Fields, SchemaId};
use crate::ids::{CampaignId, ClientId, EventId, LinkId, RecipientId};

pub const CLICK_EVENT_V1: SchemaId = SchemaId(1);
pub const CLICK_EVENT_V2: SchemaId = SchemaId(3);
pub const CLICK_EVENT_V3: SchemaId = SchemaId(7);

/// What happened: a link was followed, or an email's open pixel was fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum EventType {
    #[default]
    Click,
    Open,
}

/// What the edge made of the recipient token in the URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RecipientToken {
    #[default]
    Absent,
    Valid,
    /// Tampered, signed with an unknown key, or malformed: still redirected, flagged.
    Invalid,
}

impl EventType {
    const SYMBOLS: [&'static str; 2] = ["click", "open"];
    /// Every value, in the schema's symbol order (the Avro enum index).
    pub const ALL: [Self; 2] = [Self::Click, Self::Open];
    pub fn as_str(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }
}

impl RecipientToken {
    const SYMBOLS: [&'static str; 3] = ["absent", "valid", "invalid"];
    /// Every value, in the schema's symbol order (the Avro enum index).
    pub const ALL: [Self; 3] = [Self::Absent, Self::Valid, Self::Invalid];
    pub fn as_str(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }
}

/// What the user agent says the client is. See `click_event.v3.avsc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum UaClass {
    /// Not classified: events written before v3.
    #[default]
    Unknown,
    Browser,
    /// A known crawler, monitor or security scanner.
    Bot,
    /// A link-preview fetcher (chat unfurlers, mail previews).
    Preview,
    /// A generic HTTP library or tool: curl, python-requests, Go-http-client, okhttp…
    HttpClient,
    /// No User-Agent header at all.
    Absent,
}

impl UaClass {
    const SYMBOLS: [&'static str; 6] = ["unknown", "browser", "bot", "preview", "http_client", "absent"];
    /// Every value, in the schema's symbol order (the Avro enum index).
    pub const ALL: [Self; 6] = [Self::Unknown, Self::Browser, Self::Bot, Self::Preview, Self::HttpClient, Self::Absent];
    pub fn as_str(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }
    pub fn from_symbol(s: &str) -> Self {
        match s {
            "browser" => Self::Browser,
            "bot" => Self::Bot,
            "preview" => Self::Preview,
            "http_client" => Self::HttpClient,
            "absent" => Self::Absent,
            _ => Self::Unknown,
        }
    }
}

/// Who owns the client address, classified at the edge before anonymizing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum NetworkClass {
    /// Not classified: events written before v3, or no address.
    #[default]
    Unknown,
    /// A mail-security vendor's network (Microsoft EOP, Proofpoint, Mimecast…).
    Scanner,
    /// A cloud or hosting provider: weak evidence, people browse from VPNs and proxies too.
    Cloud,
    /// Anything else: residential, mobile, corporate.
    Other,
}

impl NetworkClass {
    const SYMBOLS: [&'static str; 4] = ["unknown", "scanner", "cloud", "other"];
    /// Every value, in the schema's symbol order (the Avro enum index).
    pub const ALL: [Self; 4] = [Self::Unknown, Self::Scanner, Self::Cloud, Self::Other];
    pub fn as_str(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }
    pub fn from_symbol(s: &str) -> Self {
        match s {
            "scanner" => Self::Scanner,
            "cloud" => Self::Cloud,
            "other" => Self::Other,
            _ => Self::Unknown,
        }
    }
}

/// v3: what the edge observed about the request, for the aggregator's verdict.
/// The edge records; it never decides. Defaults are "no evidence", which is
/// what v1 and v2 events read as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signals {
    /// `Purpose`/`Sec-Purpose: prefetch`, `X-Purpose`, `X-Moz`.
    pub prefetch_header: bool,
    pub ua_class: UaClass,
    pub has_accept: bool,
    pub has_accept_language: bool,
    /// The Referer names a mail-security gateway.
    pub scanner_referer: bool,
    pub network_class: NetworkClass,
    /// Scanner vendor or network owner, when known.
    pub network_name: Option<String>,
    /// Autonomous system number; 0 when unknown.
    pub asn: u32,
    /// The address is in one of the client's allowed networks.
    pub network_allow_listed: bool,
    /// Send time carried by a valid v2 recipient token (ms since the epoch).
    pub sent_at_ms: Option<i64>,
    /// The link is a honeypot.
    pub honeypot: bool,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            prefetch_header: false,
            ua_class: UaClass::Unknown,
            has_accept: true,
            has_accept_language: true,
            scanner_referer: false,
            network_class: NetworkClass::Unknown,
            network_name: None,
            asn: 0,
            network_allow_listed: false,
            sent_at_ms: None,
            honeypot: false,
        }
    }
}

/// One click on a tracking link. See `schemas/avro/click_event.v3.avsc` for field docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClickEvent {
    pub event_id: EventId,
    /// Milliseconds since the Unix epoch, UTC.
    pub event_time_ms: i64,
    pub client_id: ClientId,
    pub campaign_id: CampaignId,
    pub link_id: LinkId,
    pub recipient_id: Option<RecipientId>,
    pub destination_url: String,
    pub http_method: String,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    /// Already anonymized (IPv4 /24, IPv6 /48).
    pub client_ip: Option<String>,
    pub edge_node: String,
    /// v2; v1 data reads as `Click`.
    pub event_type: EventType,
    /// v2: HEAD or a known link-preview fetcher. v1 data reads as `false`.
    pub is_prefetch: bool,
    /// v2; v1 data reads as `Absent`.
    pub recipient_token: RecipientToken,
    /// v3; older data reads as [`Signals::default`].
    pub signals: Signals,
}

impl Contract for ClickEvent {
    const NAME: &'static str = "ClickEvent";
    const VERSIONS: &'static [(SchemaId, &'static str)] = &[
        (CLICK_EVENT_V1, include_str!("../avro/click_event.v1.avsc")),
        (CLICK_EVENT_V2, include_str!("../avro/click_event.v2.avsc")),
        (CLICK_EVENT_V3, include_str!("../avro/click_event.v3.avsc")),
    ];

    fn to_avro(&self) -> Value {
        let s = |v: &str| Value::String(v.to_owned());
        let sig = &self.signals;
        Value::Record(vec![
            ("event_id".into(), Value::Uuid(self.event_id.0)),
            ("event_time".into(), Value::TimestampMillis(self.event_time_ms)),
            ("client_id".into(), s(self.client_id.as_str())),
            ("campaign_id".into(), s(self.campaign_id.as_str())),
            ("link_id".into(), s(self.link_id.as_str())),
            ("recipient_id".into(), nullable(self.recipient_id.as_ref().map(|r| s(r.as_str())))),
            ("destination_url".into(), s(&self.destination_url)),
            ("http_method".into(), s(&self.http_method)),
            ("user_agent".into(), nullable(self.user_agent.as_deref().map(s))),
            ("referer".into(), nullable(self.referer.as_deref().map(s))),
            ("client_ip".into(), nullable(self.client_ip.as_deref().map(s))),
            ("edge_node".into(), s(&self.edge_node)),
            ("event_type".into(), Value::Enum(self.event_type as u32, self.event_type.as_str().into())),
            ("is_prefetch".into(), Value::Boolean(self.is_prefetch)),
            ("recipient_token".into(), Value::Enum(self.recipient_token as u32, self.recipient_token.as_str().into())),
            ("prefetch_header".into(), Value::Boolean(sig.prefetch_header)),
            ("ua_class".into(), Value::Enum(sig.ua_class as u32, sig.ua_class.as_str().into())),
            ("has_accept".into(), Value::Boolean(sig.has_accept)),
            ("has_accept_language".into(), Value::Boolean(sig.has_accept_language)),
            ("scanner_referer".into(), Value::Boolean(sig.scanner_referer)),
            ("network_class".into(), Value::Enum(sig.network_class as u32, sig.network_class.as_str().into())),
            ("network_name".into(), nullable(sig.network_name.as_deref().map(s))),
            ("asn".into(), Value::Long(sig.asn.into())),
            ("network_allow_listed".into(), Value::Boolean(sig.network_allow_listed)),
            ("sent_at".into(), nullable(sig.sent_at_ms.map(Value::TimestampMillis))),
            ("honeypot".into(), Value::Boolean(sig.honeypot)),
        ])
    }

    /// The aggregator decodes every click: by hand, not through a `Value` tree.
    fn decode_newest(datum: &[u8]) -> Option<Result<Self, CodecError>> {
        // Only while v3 is the newest: a v4 must bring its own decoder.
        const _: () = assert!(ClickEvent::VERSIONS[ClickEvent::VERSIONS.len() - 1].0 .0 == CLICK_EVENT_V3.0);
        Some(crate::click_wire::decode(datum))
    }

    fn from_avro(record: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(Self::NAME, record)?;
        let id = |field: &'static str, e: crate::IdError| CodecError::Shape {
            contract: Self::NAME,
            field,
            problem: e.to_string(),
        };
        Ok(ClickEvent {
            event_id: EventId(f.uuid("event_id")?),
            event_time_ms: f.long("event_time")?,
            client_id: ClientId::parse(f.string("client_id")?).map_err(|e| id("client_id", e))?,
            campaign_id: CampaignId::parse(f.string("campaign_id")?).map_err(|e| id("campaign_id", e))?,
            link_id: LinkId::parse(f.string("link_id")?).map_err(|e| id("link_id", e))?,
            recipient_id: f
                .opt_string("recipient_id")?
                .map(RecipientId::parse)
                .transpose()
                .map_err(|e| id("recipient_id", e))?,
            destination_url: f.string("destination_url")?,
            http_method: f.string("http_method")?,
            user_agent: f.opt_string("user_agent")?,
            referer: f.opt_string("referer")?,
            client_ip: f.opt_string("client_ip")?,
            edge_node: f.string("edge_node")?,
            event_type: match f.enum_symbol("event_type")?.as_str() {
                "open" => EventType::Open,
                _ => EventType::Click,
            },
            is_prefetch: f.boolean("is_prefetch")?,
            recipient_token: match f.enum_symbol("recipient_token")?.as_str() {
                "valid" => RecipientToken::Valid,
                "invalid" => RecipientToken::Invalid,
                _ => RecipientToken::Absent,
            },
            signals: Signals {
                prefetch_header: f.boolean("prefetch_header")?,
                ua_class: UaClass::from_symbol(&f.enum_symbol("ua_class")?),
                has_accept: f.boolean("has_accept")?,
                has_accept_language: f.boolean("has_accept_language")?,
                scanner_referer: f.boolean("scanner_referer")?,
                network_class: NetworkClass::from_symbol(&f.enum_symbol("network_class")?),
                network_name: f.opt_string("network_name")?,
                asn: u32::try_from(f.long("asn")?).map_err(|e| CodecError::Shape {
                    contract: Self::NAME,
                    field: "asn",
                    problem: e.to_string(),
                })?,
                network_allow_listed: f.boolean("network_allow_listed")?,
                sent_at_ms: f.opt_long("sent_at")?,
                honeypot: f.boolean("honeypot")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL[i]` is the value the Avro enum index `i` stands for (the hand
    /// decoder reads enums by index): each value's discriminant and symbol.
    #[test]
    fn every_enums_values_are_listed_in_symbol_order() {
        let orders: [Vec<(usize, &str)>; 4] = [
            EventType::ALL.iter().map(|v| (*v as usize, v.as_str())).collect(),
            RecipientToken::ALL.iter().map(|v| (*v as usize, v.as_str())).collect(),
            UaClass::ALL.iter().map(|v| (*v as usize, v.as_str())).collect(),
            NetworkClass::ALL.iter().map(|v| (*v as usize, v.as_str())).collect(),
        ];
        let symbols: [&[&str]; 4] =
            [&EventType::SYMBOLS, &RecipientToken::SYMBOLS, &UaClass::SYMBOLS, &NetworkClass::SYMBOLS];
        for (order, symbols) in orders.iter().zip(symbols) {
            let expected: Vec<(usize, &str)> = symbols.iter().copied().enumerate().collect();
            assert_eq!(order, &expected);
        }
    }
}
