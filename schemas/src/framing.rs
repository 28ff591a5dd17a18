//! The Confluent wire format: `[0x00][schema id: u32 BE][Avro binary datum]`.

use crate::codec::{CodecError, SchemaId};

/// The first byte of every framed message.
pub const MAGIC: u8 = 0;
/// Magic byte plus the 4-byte schema id.
pub const HEADER_LEN: usize = 5;

/// Writes the header for `id` into a fresh buffer with room for `datum_hint` more bytes.
pub fn header(id: SchemaId, datum_hint: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + datum_hint);
    buf.push(MAGIC);
    buf.extend_from_slice(&id.0.to_be_bytes());
    buf
}

/// Splits a framed message into its schema id and its datum.
pub fn split(bytes: &[u8]) -> Result<(SchemaId, &[u8]), CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::Truncated { len: bytes.len() });
    }
    if bytes[0] != MAGIC {
        return Err(CodecError::BadMagic { byte: bytes[0] });
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((SchemaId(id), &bytes[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_split() {
        let mut framed = header(SchemaId(258), 3);
        framed.extend_from_slice(&[7, 8, 9]);
        assert_eq!(framed[..5], [0, 0, 0, 1, 2]);
        let (id, datum) = split(&framed).unwrap();
        assert_eq!(id, SchemaId(258));
        assert_eq!(datum, &[7, 8, 9]);
    }

    #[test]
    fn split_rejects_short_and_unframed_input() {
        assert!(matches!(split(&[0, 0, 1]), Err(CodecError::Truncated { len: 3 })));
        assert!(matches!(split(b"{\"json\":1}"), Err(CodecError::BadMagic { byte: b'{' })));
    }
}
