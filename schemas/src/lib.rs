//! The Avro contracts between Ricochet's processes.
//!
//! The `.avsc` files under `schemas/avro/` are the source of truth; this crate
//! embeds them, gives each a fixed schema id, and carries the Rust types and the
//! codec beside them. Every message is framed in the Confluent wire format
//! (magic byte `0`, big-endian `u32` schema id, Avro binary datum), so any
//! reader with a schema registry (ClickHouse's `AvroConfluent`, Kafka Connect)
//! can decode it, and old and new writers can share a topic during a rolling
//! deploy: a reader always decodes with the *writer's* schema, found by id, and
//! resolves it into its own.
//!
//! - [`ids`]: identifier newtypes (`ClientId`, `LinkId`, `LinkCode`, …) and their validation.
//! - [`framing`]: the Confluent header.
//! - [`codec`]: the schema table and the generic encode/decode with schema resolution.
//! - [`click`]: `ClickEvent` (v1, v2, v3), published by the edge to the `clicks` topic.
//! - [`click_wire`]: `ClickEvent` v3 by hand: the edge's allocation-free encoder and the aggregator's decoder (same bytes and errors as [`codec`]).
//! - [`link`]: `LinkRecord`, the registry's record on the compacted `links` topic.
//! - [`api_key`]: `ApiKeyRecord`, a client's hashed API key on the compacted `api_keys` topic.
//! - [`client`]: `ClientRecord`, a sender's state on the compacted `clients` topic.
//! - [`decided`]: `DecidedEvent`, a click or open with its final verdict, published by the aggregator to the `decided` topic.
//! - [`webhook`]: `WebhookRecord`, a client's webhook endpoint on the compacted `webhooks` topic.
//! - [`verdict`]: `Reason`, why a click was judged human or bot (aggregator → ClickHouse → API).
//!
//! Evolution rules (checked by `tests/evolution.rs`): a new version may only add
//! fields that have a default, and may only remove fields that had one; ids are
//! never reused.

pub mod api_key;
pub mod click;
pub mod click_wire;
pub mod client;
pub mod codec;
pub mod decided;
pub mod framing;
pub mod ids;
pub mod link;
pub mod verdict;
pub mod webhook;

pub use api_key::ApiKeyRecord;
pub use click::{ClickEvent, EventType, NetworkClass, RecipientToken, Signals, UaClass};
pub use click_wire::ClickWire;
pub use client::{ClientRecord, ClientStatus};
pub use codec::{Codec, CodecError, SchemaId};
pub use decided::DecidedEvent;
pub use ids::{CampaignId, ClientId, EventId, IdError, LinkCode, LinkId, RecipientId};
pub use link::{LinkCount, LinkRecord, LinkStatus};
pub use verdict::{MachineOpen, Reason};
pub use webhook::{Replay, WebhookRecord};
