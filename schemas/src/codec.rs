//! Encoding and decoding of framed Avro messages, with schema resolution.
//!
//! A [`Contract`] lists every version of its schema with the fixed id it was
//! published under. [`Codec`] writes the newest version and reads any of them:
//! the id in the frame selects the writer schema, and Avro resolution maps it
//! onto the newest (defaults fill added fields, removed fields are skipped).

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use apache_avro::types::Value;
use apache_avro::Schema;

use crate::framing;

/// The id a schema is published under, as written in the Confluent frame.
/// Ids are fixed in this crate so that no registry is needed to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaId(pub u32);

impl fmt::Display for SchemaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("message too short for the Confluent frame ({len} bytes, need at least 5)")]
    Truncated { len: usize },
    #[error("message does not start with the Confluent magic byte 0 (found {byte:#04x})")]
    BadMagic { byte: u8 },
    #[error("unknown schema id {0} for {1}")]
    UnknownSchema(SchemaId, &'static str),
    #[error("avro: {0}")]
    Avro(Box<apache_avro::Error>),
    #[error("{contract}: field `{field}`: {problem}")]
    Shape { contract: &'static str, field: &'static str, problem: String },
}

impl From<apache_avro::Error> for CodecError {
    fn from(e: apache_avro::Error) -> Self {
        CodecError::Avro(Box::new(e))
    }
}

/// A message type with a versioned Avro schema.
pub trait Contract: Sized {
    /// A name for errors and logs.
    const NAME: &'static str;
    /// Every published version, oldest first, as (id, schema text). The last one is written.
    const VERSIONS: &'static [(SchemaId, &'static str)];
    /// The value as a record of the newest schema.
    fn to_avro(&self) -> Value;
    /// Builds the type from a record already resolved to the newest schema.
    fn from_avro(record: Value) -> Result<Self, CodecError>;
    /// A hand decoder of the newest version's datum, for types decoded on a
    /// hot path; `None` (the default) goes through `apache-avro`. It must
    /// accept and refuse exactly what the generic path does.
    fn decode_newest(_datum: &[u8]) -> Option<Result<Self, CodecError>> {
        None
    }
}

/// Encoder and decoder for one contract. Parse once, share freely (`Codec` is `Send + Sync`).
pub struct Codec<T> {
    writer_id: SchemaId,
    by_id: HashMap<SchemaId, Schema>,
    _contract: PhantomData<fn() -> T>,
}

impl<T: Contract> Default for Codec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Contract> Codec<T> {
    /// Parses the embedded schemas.
    ///
    /// # Panics
    /// If an embedded schema is invalid: a build defect that the crate's tests catch.
    pub fn new() -> Self {
        let by_id: HashMap<SchemaId, Schema> = T::VERSIONS
            .iter()
            .map(|(id, text)| {
                let schema = Schema::parse_str(text)
                    .unwrap_or_else(|e| panic!("embedded schema {id} of {} is invalid: {e}", T::NAME));
                (*id, schema)
            })
            .collect();
        let (writer_id, _) = *T::VERSIONS.last().expect("a contract has at least one version");
        Codec { writer_id, by_id, _contract: PhantomData }
    }

    /// The id this build writes.
    pub fn writer_id(&self) -> SchemaId {
        self.writer_id
    }

    /// The parsed schema published under `id`.
    pub fn schema(&self, id: SchemaId) -> Option<&Schema> {
        self.by_id.get(&id)
    }

    /// Encodes `value` with the newest schema, framed.
    pub fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        self.encode_value(self.writer_id, value.to_avro())
    }

    /// Encodes a raw record with the schema published under `id`, framed.
    /// Used to write older versions in compatibility tests and tools.
    pub fn encode_value(&self, id: SchemaId, record: Value) -> Result<Vec<u8>, CodecError> {
        let schema = self.by_id.get(&id).ok_or(CodecError::UnknownSchema(id, T::NAME))?;
        let datum = apache_avro::to_avro_datum(schema, record)?;
        let mut framed = framing::header(id, datum.len());
        framed.extend_from_slice(&datum);
        Ok(framed)
    }

    /// Decodes a framed message written with any published version.
    pub fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let (id, datum) = framing::split(bytes)?;
        if id == self.writer_id {
            if let Some(decoded) = T::decode_newest(datum) {
                return decoded;
            }
        }
        self.decode_generic(bytes)
    }

    /// [`Codec::decode`] through `apache-avro` alone, skipping any hand
    /// decoder: the reference the hand decoders are tested against.
    pub fn decode_generic(&self, bytes: &[u8]) -> Result<T, CodecError> {
        T::from_avro(self.decode_value(bytes, self.writer_id)?)
    }

    /// Decodes a framed message into a raw record of the schema published under `reader_id`.
    pub fn decode_value(&self, bytes: &[u8], reader_id: SchemaId) -> Result<Value, CodecError> {
        let (id, mut datum) = framing::split(bytes)?;
        let writer = self.by_id.get(&id).ok_or(CodecError::UnknownSchema(id, T::NAME))?;
        let reader = self.by_id.get(&reader_id).ok_or(CodecError::UnknownSchema(reader_id, T::NAME))?;
        let value = if id == reader_id {
            apache_avro::from_avro_datum(writer, &mut datum, None)?
        } else {
            apache_avro::from_avro_datum(writer, &mut datum, Some(reader))?
        };
        if !datum.is_empty() {
            return Err(CodecError::Shape {
                contract: T::NAME,
                field: "<datum>",
                problem: format!("{} trailing bytes after the record", datum.len()),
            });
        }
        Ok(value)
    }
}

/// Field access on a decoded record, with errors that name the field.
pub(crate) struct Fields {
    contract: &'static str,
    fields: Vec<(String, Value)>,
}

impl Fields {
    pub(crate) fn new(contract: &'static str, record: Value) -> Result<Self, CodecError> {
        match record {
            Value::Record(fields) => Ok(Fields { contract, fields }),
            other => Err(CodecError::Shape {
                contract,
                field: "<record>",
                problem: format!("expected a record, found {other:?}"),
            }),
        }
    }

    fn shape(&self, field: &'static str, problem: impl Into<String>) -> CodecError {
        CodecError::Shape { contract: self.contract, field, problem: problem.into() }
    }

    fn take(&mut self, field: &'static str) -> Result<Value, CodecError> {
        let pos = self.fields.iter().position(|(name, _)| name == field).ok_or_else(|| self.shape(field, "missing"))?;
        Ok(std::mem::replace(&mut self.fields[pos].1, Value::Null))
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, CodecError> {
        match self.take(field)? {
            Value::String(s) => Ok(s),
            Value::Uuid(u) => Ok(u.to_string()),
            other => Err(self.shape(field, format!("expected a string, found {other:?}"))),
        }
    }

    pub(crate) fn uuid(&mut self, field: &'static str) -> Result<uuid::Uuid, CodecError> {
        match self.take(field)? {
            Value::Uuid(u) => Ok(u),
            Value::String(s) => uuid::Uuid::parse_str(&s).map_err(|e| self.shape(field, e.to_string())),
            other => Err(self.shape(field, format!("expected a uuid, found {other:?}"))),
        }
    }

    pub(crate) fn long(&mut self, field: &'static str) -> Result<i64, CodecError> {
        match self.take(field)? {
            Value::Long(v) | Value::TimestampMillis(v) => Ok(v),
            Value::Int(v) => Ok(v.into()),
            other => Err(self.shape(field, format!("expected a long, found {other:?}"))),
        }
    }

    pub(crate) fn int(&mut self, field: &'static str) -> Result<i32, CodecError> {
        match self.take(field)? {
            Value::Int(v) => Ok(v),
            other => Err(self.shape(field, format!("expected an int, found {other:?}"))),
        }
    }

    pub(crate) fn boolean(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.take(field)? {
            Value::Boolean(b) => Ok(b),
            other => Err(self.shape(field, format!("expected a boolean, found {other:?}"))),
        }
    }

    pub(crate) fn enum_symbol(&mut self, field: &'static str) -> Result<String, CodecError> {
        match self.take(field)? {
            Value::Enum(_, symbol) => Ok(symbol),
            other => Err(self.shape(field, format!("expected an enum, found {other:?}"))),
        }
    }

    pub(crate) fn string_array(&mut self, field: &'static str) -> Result<Vec<String>, CodecError> {
        match self.take(field)? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(self.shape(field, format!("expected strings, found {other:?}"))),
                })
                .collect(),
            other => Err(self.shape(field, format!("expected an array, found {other:?}"))),
        }
    }

    pub(crate) fn opt_string_array(&mut self, field: &'static str) -> Result<Option<Vec<String>>, CodecError> {
        match unwrap_union(self.take(field)?) {
            Value::Null => Ok(None),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(self.shape(field, format!("expected strings, found {other:?}"))),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            other => Err(self.shape(field, format!("expected null or an array, found {other:?}"))),
        }
    }

    pub(crate) fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, CodecError> {
        match unwrap_union(self.take(field)?) {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(self.shape(field, format!("expected null or a string, found {other:?}"))),
        }
    }

    pub(crate) fn opt_long(&mut self, field: &'static str) -> Result<Option<i64>, CodecError> {
        match unwrap_union(self.take(field)?) {
            Value::Null => Ok(None),
            Value::Long(v) | Value::TimestampMillis(v) => Ok(Some(v)),
            other => Err(self.shape(field, format!("expected null or a long, found {other:?}"))),
        }
    }
}

fn unwrap_union(value: Value) -> Value {
    match value {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}

/// `["null", T]` union value for an optional field.
pub(crate) fn nullable(value: Option<Value>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}
