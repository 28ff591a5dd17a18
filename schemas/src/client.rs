//! `ClientRecord`: a sender's state, on the compacted `clients` topic.

use apache_avro::types::Value;

use crate::codec::{nullable, CodecError, Contract, Fields, SchemaId};
use crate::ids::ClientId;

pub const CLIENT_V1: SchemaId = SchemaId(4);
pub const CLIENT_V2: SchemaId = SchemaId(9);

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientStatus {
    Active,
    Paused,
}

impl ClientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientStatus::Active => "active",
            ClientStatus::Paused => "paused",
        }
    }
}

/// See `schemas/avro/client.v2.avsc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: ClientId,
    pub status: ClientStatus,
    pub fallback_url: Option<String>,
    /// Sub-keys a hot client's events spread over; 1 for a normal client.
    pub hot_spread: u16,
    pub updated_at_ms: i64,
    /// v2: CIDRs (`203.0.113.0/24`) the client vouches for; validated by the API.
    pub allowed_networks: Vec<String>,
}

impl Contract for ClientRecord {
    const NAME: &'static str = "Client";
    const VERSIONS: &'static [(SchemaId, &'static str)] =
        &[(CLIENT_V1, include_str!("../avro/client.v1.avsc")), (CLIENT_V2, include_str!("../avro/client.v2.avsc"))];

    fn to_avro(&self) -> Value {
        Value::Record(vec![
            ("client_id".into(), Value::String(self.client_id.to_string())),
            ("status".into(), Value::Enum(self.status as u32, self.status.as_str().into())),
            ("fallback_url".into(), nullable(self.fallback_url.clone().map(Value::String))),
            ("hot_spread".into(), Value::Int(self.hot_spread.into())),
            ("updated_at".into(), Value::TimestampMillis(self.updated_at_ms)),
            (
                "allowed_networks".into(),
                Value::Array(self.allowed_networks.iter().cloned().map(Value::String).collect()),
            ),
        ])
    }

    fn from_avro(record: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(Self::NAME, record)?;
        let shape = |field: &'static str, problem: String| CodecError::Shape { contract: Self::NAME, field, problem };
        Ok(ClientRecord {
            client_id: ClientId::parse(f.string("client_id")?).map_err(|e| shape("client_id", e.to_string()))?,
            status: match f.enum_symbol("status")?.as_str() {
                "paused" => ClientStatus::Paused,
                _ => ClientStatus::Active,
            },
            fallback_url: f.opt_string("fallback_url")?,
            hot_spread: u16::try_from(f.long("hot_spread")?.clamp(1, 1024)).unwrap_or(1),
            updated_at_ms: f.long("updated_at")?,
            allowed_networks: f.string_array("allowed_networks")?,
        })
    }
}
