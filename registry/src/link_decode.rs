//! Decoding `links` records on the load path without building an Avro `Value` tree.
//!
//! A cold start decodes every link once; through `apache_avro` (a `Value` per
//! field, a resolution pass per record) that costs 1.3–3.1 µs and ~50
//! allocations a link (`docs/benchmarks.md`). The two published writer
//! schemas of `Link` are fixed and flat (strings, an enum, longs, nullable
//! longs, a boolean), so this reads their binary encoding directly: the five
//! strings are the only allocations. Any other schema id goes through the
//! generic [`Codec`], and the property test below holds the two to the same
//! answers, field by field, for both versions.

use ricochet_schemas::link::{LINK_V1, LINK_V2};
use ricochet_schemas::{framing, CampaignId, ClientId, Codec, CodecError, LinkCode, LinkId, LinkRecord, LinkStatus};

/// Decodes link records, fast for the known schemas.
pub struct LinkDecoder {
    codec: Codec<LinkRecord>,
}

impl Default for LinkDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl LinkDecoder {
    pub fn new() -> Self {
        LinkDecoder { codec: Codec::new() }
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<LinkRecord, CodecError> {
        let (id, datum) = framing::split(bytes)?;
        if id == LINK_V1 || id == LINK_V2 {
            decode_datum(datum, id == LINK_V2)
        } else {
            self.codec.decode(bytes)
        }
    }
}

fn shape(field: &'static str, problem: impl Into<String>) -> CodecError {
    CodecError::Shape { contract: "Link", field, problem: problem.into() }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn long(&mut self, field: &'static str) -> Result<i64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.at).ok_or_else(|| shape(field, "datum ends inside a long"))?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err(shape(field, "long longer than 10 bytes"))
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, CodecError> {
        let len = usize::try_from(self.long(field)?).map_err(|_| shape(field, "negative string length"))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| shape(field, "datum ends inside a string"))?;
        let s = std::str::from_utf8(&self.buf[self.at..end]).map_err(|e| shape(field, e.to_string()))?;
        self.at = end;
        Ok(s)
    }

    /// `["null", "long"]`.
    fn opt_long(&mut self, field: &'static str) -> Result<Option<i64>, CodecError> {
        match self.long(field)? {
            0 => Ok(None),
            1 => Ok(Some(self.long(field)?)),
            other => Err(shape(field, format!("union branch {other} out of range"))),
        }
    }
}

fn decode_datum(datum: &[u8], v2: bool) -> Result<LinkRecord, CodecError> {
    let mut r = Reader { buf: datum, at: 0 };
    let link_id = LinkId::parse(r.str("link_id")?).map_err(|e| shape("link_id", e.to_string()))?;
    let code = LinkCode::parse(r.str("code")?).map_err(|e| shape("code", e.to_string()))?;
    let client_id = ClientId::parse(r.str("client_id")?).map_err(|e| shape("client_id", e.to_string()))?;
    let campaign_id = CampaignId::parse(r.str("campaign_id")?).map_err(|e| shape("campaign_id", e.to_string()))?;
    let destination_url = r.str("destination_url")?.to_owned();
    let status = match r.long("status")? {
        0 => LinkStatus::Active,
        1 => LinkStatus::Paused,
        2 => LinkStatus::Deleted,
        other => return Err(shape("status", format!("enum index {other} out of range"))),
    };
    let created_at_ms = r.long("created_at")?;
    let valid_from_ms = r.opt_long("valid_from")?;
    let valid_until_ms = r.opt_long("valid_until")?;
    let click_limit = r.opt_long("click_limit")?;
    let honeypot = if v2 {
        match r.buf.get(r.at) {
            Some(0) => false,
            Some(1) => true,
            _ => return Err(shape("honeypot", "expected a boolean byte")),
        }
    } else {
        false
    };
    r.at += usize::from(v2);
    if r.at != datum.len() {
        return Err(shape("<datum>", format!("{} trailing bytes after the record", datum.len() - r.at)));
    }
    Ok(LinkRecord {
        link_id,
        code,
        client_id,
        campaign_id,
        destination_url,
        status,
        created_at_ms,
        valid_from_ms,
        valid_until_ms,
        click_limit,
        honeypot,
    })
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;
    use proptest::prelude::*;
    use ricochet_schemas::codec::Contract;

    use super::*;
    use crate::links::tests::arb_link;

    fn v1_value(link: &LinkRecord) -> Value {
        match link.to_avro() {
            Value::Record(mut fields) => {
                fields.retain(|(name, _)| name != "honeypot");
                Value::Record(fields)
            }
            other => other,
        }
    }

    proptest! {
        /// The fast path and `apache_avro` agree on every field, for v2 and v1 data.
        #[test]
        fn agrees_with_the_generic_codec(link in arb_link()) {
            let codec = Codec::<LinkRecord>::new();
            let fast = LinkDecoder::new();
            let v2 = codec.encode(&link).unwrap();
            prop_assert_eq!(fast.decode(&v2).unwrap(), codec.decode(&v2).unwrap());
            prop_assert_eq!(fast.decode(&v2).unwrap(), link.clone());
            let v1 = codec.encode_value(LINK_V1, v1_value(&link)).unwrap();
            let generic = codec.decode(&v1).unwrap();
            prop_assert!(!generic.honeypot);
            prop_assert_eq!(fast.decode(&v1).unwrap(), generic);
        }

        /// Cut or extended data is refused, as the generic codec refuses it.
        #[test]
        fn refuses_what_the_codec_refuses(link in arb_link(), cut in 6usize..200, extra in any::<u8>()) {
            let codec = Codec::<LinkRecord>::new();
            let fast = LinkDecoder::new();
            let bytes = codec.encode(&link).unwrap();
            if cut < bytes.len() {
                prop_assert!(fast.decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(extra);
            prop_assert!(fast.decode(&longer).is_err());
            prop_assert!(codec.decode(&longer).is_err());
        }
    }

    #[test]
    fn bad_ids_are_refused_like_the_codec_does() {
        let codec = Codec::<LinkRecord>::new();
        let mut link = arb_link_example();
        link.destination_url = "https://a.example/".into();
        let Value::Record(mut fields) = link.to_avro() else { unreachable!() };
        fields[1].1 = Value::String("bad code!".into());
        let bytes = codec.encode_value(LINK_V2, Value::Record(fields)).unwrap();
        assert!(codec.decode(&bytes).is_err());
        let err = LinkDecoder::new().decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("code"), "{err}");
    }

    fn arb_link_example() -> LinkRecord {
        LinkRecord {
            link_id: LinkId::mint(),
            code: LinkCode::parse("Abcdefgh").unwrap(),
            client_id: ClientId::parse("acme").unwrap(),
            campaign_id: CampaignId::parse("c").unwrap(),
            destination_url: String::new(),
            status: LinkStatus::Active,
            created_at_ms: 0,
            valid_from_ms: None,
            valid_until_ms: None,
            click_limit: None,
            honeypot: false,
        }
    }
}
