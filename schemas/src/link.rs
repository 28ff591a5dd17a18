//! `LinkRecord`: the registry's state of one link, on the compacted `links` topic.

use std::fmt;
use std::str::FromStr;

use apache_avro::types::Value;

use crate::codec::{nullable, CodecError, Contract, Fields, SchemaId};
use crate::ids::{CampaignId, ClientId, LinkCode, LinkId};

pub const LINK_V1: SchemaId = SchemaId(2);
pub const LINK_V2: SchemaId = SchemaId(8);

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkStatus {
    Active,
    Paused,
    Deleted,
}

impl LinkStatus {
    const SYMBOLS: [&'static str; 3] = ["active", "paused", "deleted"];

    pub fn as_str(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }
}

impl fmt::Display for LinkStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LinkStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(LinkStatus::Active),
            "paused" => Ok(LinkStatus::Paused),
            "deleted" => Ok(LinkStatus::Deleted),
            other => Err(format!("unknown link status {other:?}; expected active, paused or deleted")),
        }
    }
}

/// One link. See `schemas/avro/link.v2.avsc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRecord {
    pub link_id: LinkId,
    pub code: LinkCode,
    pub client_id: ClientId,
    pub campaign_id: CampaignId,
    pub destination_url: String,
    pub status: LinkStatus,
    pub created_at_ms: i64,
    pub valid_from_ms: Option<i64>,
    pub valid_until_ms: Option<i64>,
    pub click_limit: Option<i64>,
    /// v2: a trap link no human can see (v1 data reads as `false`).
    pub honeypot: bool,
}

impl Contract for LinkRecord {
    const NAME: &'static str = "Link";
    const VERSIONS: &'static [(SchemaId, &'static str)] =
        &[(LINK_V1, include_str!("../avro/link.v1.avsc")), (LINK_V2, include_str!("../avro/link.v2.avsc"))];

    fn to_avro(&self) -> Value {
        let s = |v: &str| Value::String(v.to_owned());
        Value::Record(vec![
            ("link_id".into(), s(self.link_id.as_str())),
            ("code".into(), s(self.code.as_str())),
            ("client_id".into(), s(self.client_id.as_str())),
            ("campaign_id".into(), s(self.campaign_id.as_str())),
            ("destination_url".into(), s(&self.destination_url)),
            ("status".into(), Value::Enum(self.status as u32, self.status.as_str().into())),
            ("created_at".into(), Value::TimestampMillis(self.created_at_ms)),
            ("valid_from".into(), nullable(self.valid_from_ms.map(Value::TimestampMillis))),
            ("valid_until".into(), nullable(self.valid_until_ms.map(Value::TimestampMillis))),
            ("click_limit".into(), nullable(self.click_limit.map(Value::Long))),
            ("honeypot".into(), Value::Boolean(self.honeypot)),
        ])
    }

    fn from_avro(record: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(Self::NAME, record)?;
        let shape = |field: &'static str, problem: String| CodecError::Shape { contract: Self::NAME, field, problem };
        Ok(LinkRecord {
            link_id: LinkId::parse(f.string("link_id")?).map_err(|e| shape("link_id", e.to_string()))?,
            code: LinkCode::parse(f.string("code")?).map_err(|e| shape("code", e.to_string()))?,
            client_id: ClientId::parse(f.string("client_id")?).map_err(|e| shape("client_id", e.to_string()))?,
            campaign_id: CampaignId::parse(f.string("campaign_id")?)
                .map_err(|e| shape("campaign_id", e.to_string()))?,
            destination_url: f.string("destination_url")?,
            status: f.enum_symbol("status")?.parse().map_err(|e| shape("status", e))?,
            created_at_ms: f.long("created_at")?,
            valid_from_ms: f.opt_long("valid_from")?,
            valid_until_ms: f.opt_long("valid_until")?,
            click_limit: f.opt_long("click_limit")?,
            honeypot: f.boolean("honeypot")?,
        })
    }
}

pub const LINK_COUNT_V1: SchemaId = SchemaId(5);

/// Clicks counted so far for a link with a click limit (aggregator → edges).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkCount {
    pub link_id: LinkId,
    pub clicks: i64,
    pub as_of_ms: i64,
}

impl Contract for LinkCount {
    const NAME: &'static str = "LinkCount";
    const VERSIONS: &'static [(SchemaId, &'static str)] =
        &[(LINK_COUNT_V1, include_str!("../avro/link_count.v1.avsc"))];

    fn to_avro(&self) -> Value {
        Value::Record(vec![
            ("link_id".into(), Value::String(self.link_id.to_string())),
            ("clicks".into(), Value::Long(self.clicks)),
            ("as_of".into(), Value::TimestampMillis(self.as_of_ms)),
        ])
    }

    fn from_avro(record: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(Self::NAME, record)?;
        let link_id = LinkId::parse(f.string("link_id")?).map_err(|e| CodecError::Shape {
            contract: Self::NAME,
            field: "link_id",
            problem: e.to_string(),
        })?;
        Ok(LinkCount { link_id, clicks: f.long("clicks")?, as_of_ms: f.long("as_of")? })
    }
}
