//! `WebhookRecord`: a client's webhook endpoint on the compacted `webhooks` topic.

use apache_avro::types::Value;

use crate::codec::{nullable, CodecError, Contract, Fields, SchemaId};
use crate::ids::{CampaignId, ClientId};

pub const WEBHOOK_V1: SchemaId = SchemaId(12);

/// See `schemas/avro/webhook.v1.avsc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRecord {
    pub webhook_id: String,
    pub client_id: ClientId,
    pub url: String,
    /// `click.human`, `click.bot`, `open.human`, `open.machine`.
    pub events: Vec<String>,
    pub campaign_id: Option<CampaignId>,
    /// `whsec_…`.
    pub secret: String,
    /// The secret before the last rotation and until when it still signs.
    pub previous_secret: Option<(String, i64)>,
    pub batch_size: u16,
    pub created_at_ms: i64,
    pub deleted: bool,
    /// When and why (`gone`, `failing`) the deliverer stopped delivering.
    pub disabled: Option<(i64, String)>,
    pub failing_since_ms: Option<i64>,
    /// The newest replay asked for: its id and `[from, to)` in ms.
    pub replay: Option<Replay>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    pub id: String,
    pub from_ms: i64,
    pub to_ms: i64,
}

impl WebhookRecord {
    /// Whether deliveries go out: neither deleted nor disabled.
    pub fn is_active(&self) -> bool {
        !self.deleted && self.disabled.is_none()
    }
}

fn shape(field: &'static str, problem: impl ToString) -> CodecError {
    CodecError::Shape { contract: WebhookRecord::NAME, field, problem: problem.to_string() }
}

impl Contract for WebhookRecord {
    const NAME: &'static str = "Webhook";
    const VERSIONS: &'static [(SchemaId, &'static str)] = &[(WEBHOOK_V1, include_str!("../avro/webhook.v1.avsc"))];

    fn to_avro(&self) -> Value {
        let ts = |ms: Option<i64>| nullable(ms.map(Value::TimestampMillis));
        let s = |v: Option<String>| nullable(v.map(Value::String));
        Value::Record(vec![
            ("webhook_id".into(), Value::String(self.webhook_id.clone())),
            ("client_id".into(), Value::String(self.client_id.to_string())),
            ("url".into(), Value::String(self.url.clone())),
            ("events".into(), Value::Array(self.events.iter().cloned().map(Value::String).collect())),
            ("campaign_id".into(), s(self.campaign_id.as_ref().map(|c| c.to_string()))),
            ("secret".into(), Value::String(self.secret.clone())),
            ("previous_secret".into(), s(self.previous_secret.as_ref().map(|p| p.0.clone()))),
            ("previous_secret_until".into(), ts(self.previous_secret.as_ref().map(|p| p.1))),
            ("batch_size".into(), Value::Int(self.batch_size.into())),
            ("created_at".into(), Value::TimestampMillis(self.created_at_ms)),
            ("deleted".into(), Value::Boolean(self.deleted)),
            ("disabled_at".into(), ts(self.disabled.as_ref().map(|d| d.0))),
            ("disabled_reason".into(), s(self.disabled.as_ref().map(|d| d.1.clone()))),
            ("failing_since".into(), ts(self.failing_since_ms)),
            ("replay_id".into(), s(self.replay.as_ref().map(|r| r.id.clone()))),
            ("replay_from".into(), ts(self.replay.as_ref().map(|r| r.from_ms))),
            ("replay_to".into(), ts(self.replay.as_ref().map(|r| r.to_ms))),
        ])
    }

    fn from_avro(record: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(Self::NAME, record)?;
        let webhook_id = f.string("webhook_id")?;
        let client_id = ClientId::parse(f.string("client_id")?).map_err(|e| shape("client_id", e))?;
        let url = f.string("url")?;
        let events = f.string_array("events")?;
        let campaign_id =
            f.opt_string("campaign_id")?.map(CampaignId::parse).transpose().map_err(|e| shape("campaign_id", e))?;
        let secret = f.string("secret")?;
        let previous_secret = match (f.opt_string("previous_secret")?, f.opt_long("previous_secret_until")?) {
            (Some(s), Some(until)) => Some((s, until)),
            _ => None,
        };
        let batch_size = u16::try_from(f.int("batch_size")?).map_err(|e| shape("batch_size", e))?;
        let created_at_ms = f.long("created_at")?;
        let deleted = f.boolean("deleted")?;
        let disabled = match (f.opt_long("disabled_at")?, f.opt_string("disabled_reason")?) {
            (Some(at), reason) => Some((at, reason.unwrap_or_default())),
            (None, _) => None,
        };
        let failing_since_ms = f.opt_long("failing_since")?;
        let replay = match (f.opt_string("replay_id")?, f.opt_long("replay_from")?, f.opt_long("replay_to")?) {
            (Some(id), Some(from_ms), Some(to_ms)) => Some(Replay { id, from_ms, to_ms }),
            _ => None,
        };
        Ok(WebhookRecord {
            webhook_id,
            client_id,
            url,
            events,
            campaign_id,
            secret,
            previous_secret,
            batch_size,
            created_at_ms,
            deleted,
            disabled,
            failing_since_ms,
            replay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Codec;

    #[test]
    fn a_webhook_reads_back_as_written() {
        let codec: Codec<WebhookRecord> = Codec::new();
        let mut w = WebhookRecord {
            webhook_id: "wh_1".into(),
            client_id: ClientId::parse("acme").unwrap(),
            url: "https://hooks.acme.example/ricochet".into(),
            events: vec!["click.human".into()],
            campaign_id: None,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            previous_secret: None,
            batch_size: 1,
            created_at_ms: 1_700_000_000_000,
            deleted: false,
            disabled: None,
            failing_since_ms: None,
            replay: None,
        };
        assert_eq!(codec.decode(&codec.encode(&w).unwrap()).unwrap(), w);
        w.campaign_id = Some(CampaignId::parse("spring").unwrap());
        w.previous_secret = Some(("whsec_old".into(), 1_700_000_100_000));
        w.batch_size = 100;
        w.disabled = Some((1_700_000_200_000, "gone".into()));
        w.failing_since_ms = Some(1_700_000_150_000);
        w.replay = Some(Replay { id: "rp_1".into(), from_ms: 1, to_ms: 2 });
        assert_eq!(codec.decode(&codec.encode(&w).unwrap()).unwrap(), w);
    }
}
