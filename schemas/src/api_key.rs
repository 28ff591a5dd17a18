//! `ApiKeyRecord`: a client's API key, hashed, on the compacted `api_keys` topic.

use apache_avro::types::Value;

use crate::codec::{nullable, CodecError, Contract, Fields, SchemaId};
use crate::ids::ClientId;

pub const API_KEY_V1: SchemaId = SchemaId(6);
pub const API_KEY_V2: SchemaId = SchemaId(10);

/// See `schemas/avro/api_key.v2.avsc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Lowercase hex SHA-256 of the key.
    pub key_hash: String,
    pub client_id: ClientId,
    pub label: Option<String>,
    pub revoked: bool,
    pub created_at_ms: i64,
    /// v2: what the key may do (`read`, `recipients`, `write`, `tokens`);
    /// `None`: a key made before scopes (v1 data), with the rights such keys had.
    pub scopes: Option<Vec<String>>,
    /// v2: when the key stops working; `None`: never.
    pub expires_at_ms: Option<i64>,
}

impl Contract for ApiKeyRecord {
    const NAME: &'static str = "ApiKey";
    const VERSIONS: &'static [(SchemaId, &'static str)] =
        &[(API_KEY_V1, include_str!("../avro/api_key.v1.avsc")), (API_KEY_V2, include_str!("../avro/api_key.v2.avsc"))];

    fn to_avro(&self) -> Value {
        Value::Record(vec![
            ("key_hash".into(), Value::String(self.key_hash.clone())),
            ("client_id".into(), Value::String(self.client_id.to_string())),
            ("label".into(), nullable(self.label.clone().map(Value::String))),
            ("revoked".into(), Value::Boolean(self.revoked)),
            ("created_at".into(), Value::TimestampMillis(self.created_at_ms)),
            (
                "scopes".into(),
                nullable(self.scopes.as_ref().map(|s| Value::Array(s.iter().cloned().map(Value::String).collect()))),
            ),
            ("expires_at".into(), nullable(self.expires_at_ms.map(Value::TimestampMillis))),
        ])
    }

    fn from_avro(record: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(Self::NAME, record)?;
        Ok(ApiKeyRecord {
            key_hash: f.string("key_hash")?,
            client_id: ClientId::parse(f.string("client_id")?).map_err(|e| CodecError::Shape {
                contract: Self::NAME,
                field: "client_id",
                problem: e.to_string(),
            })?,
            label: f.opt_string("label")?,
            revoked: f.boolean("revoked")?,
            created_at_ms: f.long("created_at")?,
            scopes: f.opt_string_array("scopes")?,
            expires_at_ms: f.opt_long("expires_at")?,
        })
    }
}
