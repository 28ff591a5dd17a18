//! `ClickEvent` v3 by hand, both ways: the edge's encoder, a click straight
//! into framed Avro bytes appended to a caller's buffer, and the aggregator's
//! decoder, a v3 datum straight into a [`ClickEvent`].
//!
//! The generic path ([`crate::Codec`]) builds an `apache_avro::Value` tree,
//! validates it and resolves the schema on every call: ~120 allocations per
//! event, a sixth of the edge's CPU per redirect, and over a third of the
//! aggregator's per event (`docs/benchmarks.md`). The encoder writes the same
//! bytes with none: every string is borrowed from the link or the request, the
//! event id and the address are formatted on the stack, and the output goes
//! into a buffer the caller reuses. The decoder reads the fields in order and
//! allocates only the event's own strings.
//!
//! It lives beside `click_event.v3.avsc` because it *is* that schema, written
//! out by hand: the field order below is the schema's, and
//! `tests/click_wire.rs` proves, for random events covering every field, that
//! the bytes equal the generic encoder's and decode with `apache-avro` into
//! the same event, and that the decoder accepts and refuses exactly what
//! `apache-avro` does on damaged bytes; `tests/golden.rs` pins them to
//! `golden/click_event.v3.hex`. A new schema version must change both together.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use crate::click::{ClickEvent, EventType, NetworkClass, RecipientToken, Signals, UaClass, CLICK_EVENT_V3};
use crate::codec::CodecError;
use crate::framing;
use crate::ids::{CampaignId, ClientId, EventId, IdError, LinkId, RecipientId};

/// One click as the edge sees it, borrowed: what [`encode`] writes.
/// Field docs are in `schemas/avro/click_event.v3.avsc`.
#[derive(Clone, Copy, Debug)]
pub struct ClickWire<'a> {
    pub event_id: uuid::Uuid,
    pub event_time_ms: i64,
    pub client_id: &'a str,
    pub campaign_id: &'a str,
    pub link_id: &'a str,
    pub recipient_id: Option<&'a str>,
    /// The URL in two pieces written one after the other: the edge's registry
    /// keeps a destination's interned `scheme://host` apart from the rest, and
    /// joining them would cost an allocation per click. A whole URL is `[url, ""]`.
    pub destination_url: [&'a str; 2],
    pub http_method: &'a str,
    /// Raw header bytes (already cut to the edge's limit). Header values need
    /// not be UTF-8: invalid sequences are written as U+FFFD, exactly as
    /// `String::from_utf8_lossy` would, without building the string.
    pub user_agent: Option<&'a [u8]>,
    /// Raw header bytes, like `user_agent`.
    pub referer: Option<&'a [u8]>,
    /// Already anonymized; formatted into the datum without a heap string.
    pub client_ip: Option<IpAddr>,
    pub edge_node: &'a str,
    pub event_type: EventType,
    pub is_prefetch: bool,
    pub recipient_token: RecipientToken,
    pub signals: &'a Signals,
}

/// Appends the framed message (Confluent header with schema id 7, then the
/// v3 datum) to `out`. Never fails and never allocates beyond growing `out`.
pub fn encode(click: &ClickWire<'_>, out: &mut Vec<u8>) {
    out.push(framing::MAGIC);
    out.extend_from_slice(&CLICK_EVENT_V3.0.to_be_bytes());

    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    string(out, click.event_id.hyphenated().encode_lower(&mut id));
    long(out, click.event_time_ms);
    string(out, click.client_id);
    string(out, click.campaign_id);
    string(out, click.link_id);
    optional(out, click.recipient_id, string);
    let [head, tail] = click.destination_url;
    long(out, (head.len() + tail.len()) as i64);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(tail.as_bytes());
    string(out, click.http_method);
    optional(out, click.user_agent, lossy_string);
    optional(out, click.referer, lossy_string);
    optional(out, click.client_ip, |out, ip| {
        let mut text = StackText::default();
        // An address prints in at most 39 characters; `StackText` holds 48.
        write!(text, "{ip}").expect("an IP address fits in 48 bytes");
        string(out, text.as_str());
    });
    string(out, click.edge_node);
    long(out, click.event_type as i64);
    boolean(out, click.is_prefetch);
    long(out, click.recipient_token as i64);

    let s = click.signals;
    boolean(out, s.prefetch_header);
    long(out, s.ua_class as i64);
    boolean(out, s.has_accept);
    boolean(out, s.has_accept_language);
    boolean(out, s.scanner_referer);
    long(out, s.network_class as i64);
    optional(out, s.network_name.as_deref(), string);
    long(out, i64::from(s.asn));
    boolean(out, s.network_allow_listed);
    optional(out, s.sent_at_ms, long);
    boolean(out, s.honeypot);
}

impl<'a> ClickWire<'a> {
    /// The borrowed view of an owned event (tests, tools and benchmarks: the
    /// edge builds a `ClickWire` directly from the link and the request).
    pub fn of(event: &'a ClickEvent) -> Self {
        ClickWire {
            event_id: event.event_id.0,
            event_time_ms: event.event_time_ms,
            client_id: event.client_id.as_str(),
            campaign_id: event.campaign_id.as_str(),
            link_id: event.link_id.as_str(),
            recipient_id: event.recipient_id.as_ref().map(|r| r.as_str()),
            destination_url: [&event.destination_url, ""],
            http_method: &event.http_method,
            user_agent: event.user_agent.as_deref().map(str::as_bytes),
            referer: event.referer.as_deref().map(str::as_bytes),
            // An owned event's address is text; one that does not parse cannot
            // be written by this encoder, which only takes addresses.
            client_ip: event.client_ip.as_deref().and_then(|ip| ip.parse().ok()),
            edge_node: &event.edge_node,
            event_type: event.event_type,
            is_prefetch: event.is_prefetch,
            recipient_token: event.recipient_token,
            signals: &event.signals,
        }
    }
}

/// Avro `long` (and `int`, enum index, union branch): zig-zag, then a
/// little-endian base-128 varint.
pub(crate) fn long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.push(u8::from(b));
}

pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// `bytes` as UTF-8 with each invalid sequence replaced by U+FFFD: the
/// length is counted first, then the chunks are written, so no string is built.
fn lossy_string(out: &mut Vec<u8>, bytes: &[u8]) {
    const REPLACEMENT: &str = "\u{FFFD}";
    let len: usize =
        bytes.utf8_chunks().map(|c| c.valid().len() + if c.invalid().is_empty() { 0 } else { REPLACEMENT.len() }).sum();
    long(out, len as i64);
    for chunk in bytes.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(REPLACEMENT.as_bytes());
        }
    }
}

/// A `["null", T]` union: branch 0 is null, branch 1 carries the value.
pub(crate) fn optional<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        None => long(out, 0),
        Some(v) => {
            long(out, 1);
            write(out, v);
        }
    }
}

/// A fixed stack buffer to `write!` short text into (an IP address).
struct StackText {
    buf: [u8; 48],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText { buf: [0; 48], len: 0 }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this cannot fail.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dest = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Decodes a `ClickEvent` v3 datum (the bytes after the Confluent header).
///
/// Accepts and refuses what `apache-avro` with [`crate::Codec`] does for the
/// same bytes, including its quirks (a 16-byte `event_id` string is read as
/// the UUID's raw bytes), so that which messages are poison does not depend
/// on the decoder. Trailing bytes after the record are an error.
pub fn decode(datum: &[u8]) -> Result<ClickEvent, CodecError> {
    let mut r = Reader { rest: datum };
    let event = ClickEvent {
        event_id: EventId(r.uuid("event_id")?),
        event_time_ms: r.long("event_time")?,
        client_id: r.id("client_id", ClientId::parse)?,
        campaign_id: r.id("campaign_id", CampaignId::parse)?,
        link_id: r.id("link_id", LinkId::parse)?,
        recipient_id: match r.optional("recipient_id")? {
            false => None,
            true => Some(r.id("recipient_id", RecipientId::parse)?),
        },
        destination_url: r.string("destination_url")?,
        http_method: r.string("http_method")?,
        user_agent: r.opt_string("user_agent")?,
        referer: r.opt_string("referer")?,
        client_ip: r.opt_string("client_ip")?,
        edge_node: r.string("edge_node")?,
        event_type: r.symbol("event_type", &EventType::ALL)?,
        is_prefetch: r.boolean("is_prefetch")?,
        recipient_token: r.symbol("recipient_token", &RecipientToken::ALL)?,
        signals: Signals {
            prefetch_header: r.boolean("prefetch_header")?,
            ua_class: r.symbol("ua_class", &UaClass::ALL)?,
            has_accept: r.boolean("has_accept")?,
            has_accept_language: r.boolean("has_accept_language")?,
            scanner_referer: r.boolean("scanner_referer")?,
            network_class: r.symbol("network_class", &NetworkClass::ALL)?,
            network_name: r.opt_string("network_name")?,
            asn: {
                let asn = r.long("asn")?;
                u32::try_from(asn).map_err(|e| shape("asn", e.to_string()))?
            },
            network_allow_listed: r.boolean("network_allow_listed")?,
            sent_at_ms: match r.optional("sent_at")? {
                false => None,
                true => Some(r.long("sent_at")?),
            },
            honeypot: r.boolean("honeypot")?,
        },
    };
    if !r.rest.is_empty() {
        return Err(shape("<datum>", format!("{} trailing bytes after the record", r.rest.len())));
    }
    Ok(event)
}

fn shape(field: &'static str, problem: impl Into<String>) -> CodecError {
    CodecError::Shape { contract: "ClickEvent", field, problem: problem.into() }
}

/// The unread rest of a datum; every read names the field it is for.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self, field: &'static str) -> Result<u8, CodecError> {
        let (&b, rest) = self.rest.split_first().ok_or_else(|| shape(field, "the datum ends early"))?;
        self.rest = rest;
        Ok(b)
    }

    /// Zig-zag varint, as `apache-avro` reads it: at most 10 bytes, bits past
    /// the 64th dropped.
    fn long(&mut self, field: &'static str) -> Result<i64, CodecError> {
        let mut z = 0u64;
        for shift in (0..10).map(|j| j * 7) {
            let b = self.byte(field)?;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(shape(field, "a variable-length integer longer than 10 bytes"))
    }

    fn boolean(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.byte(field)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(shape(field, format!("a boolean byte must be 0 or 1, found {b}"))),
        }
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        let len = self.long(field)?;
        let len = usize::try_from(len).map_err(|_| shape(field, format!("negative length {len}")))?;
        if len > self.rest.len() {
            return Err(shape(field, format!("length {len} runs past the datum's end")));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(bytes)
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes(field)?).map_err(|e| shape(field, e.to_string()))
    }

    fn string(&mut self, field: &'static str) -> Result<String, CodecError> {
        self.str(field).map(str::to_owned)
    }

    fn id<T>(&mut self, field: &'static str, parse: fn(String) -> Result<T, IdError>) -> Result<T, CodecError> {
        parse(self.string(field)?).map_err(|e| shape(field, e.to_string()))
    }

    /// The branch of a `["null", T]` union: `true` when a value follows.
    fn optional(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.long(field)? {
            0 => Ok(false),
            1 => Ok(true),
            i => Err(shape(field, format!("union branch {i} of 2"))),
        }
    }

    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, CodecError> {
        if self.optional(field)? {
            self.string(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An enum by its symbol index; `all` lists the values in symbol order.
    fn symbol<T: Copy>(&mut self, field: &'static str, all: &[T]) -> Result<T, CodecError> {
        let i = self.long(field)?;
        usize::try_from(i)
            .ok()
            .and_then(|i| all.get(i).copied())
            .ok_or_else(|| shape(field, format!("symbol {i} of an enum with {} symbols", all.len())))
    }

    /// A `uuid` string; like `apache-avro`, exactly 16 bytes are the raw UUID.
    fn uuid(&mut self, field: &'static str) -> Result<uuid::Uuid, CodecError> {
        let bytes = self.bytes(field)?;
        let parsed = match bytes.len() {
            16 => uuid::Uuid::from_slice(bytes),
            _ => uuid::Uuid::try_parse_ascii(bytes),
        };
        parsed.map_err(|e| shape(field, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn longs(n: i64) -> Vec<u8> {
        let mut out = Vec::new();
        long(&mut out, n);
        out
    }

    #[test]
    fn longs_are_zigzag_varints() {
        // The Avro specification's examples, and the extremes.
        assert_eq!(longs(0), [0x00]);
        assert_eq!(longs(-1), [0x01]);
        assert_eq!(longs(1), [0x02]);
        assert_eq!(longs(-64), [0x7f]);
        assert_eq!(longs(64), [0x80, 0x01]);
        assert_eq!(longs(i64::MAX), [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(longs(i64::MIN), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn invalid_utf8_is_replaced_like_from_utf8_lossy() {
        let raw = b"ok\xff\xfe-\xe2\x82";
        let mut out = Vec::new();
        lossy_string(&mut out, raw);
        let expected = String::from_utf8_lossy(raw);
        assert_eq!(out[0] as usize, expected.len() * 2, "zig-zag length prefix");
        assert_eq!(&out[1..], expected.as_bytes());
    }

    #[test]
    fn the_longest_address_fits_the_stack_buffer() {
        let ip: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
        let mut text = StackText::default();
        write!(text, "{ip}").unwrap();
        assert_eq!(text.as_str(), ip.to_string());
    }
}
