//! The link registry: which code goes where, for whom, and whether it is live.
//!
//! The sources of truth are two log-compacted Kafka topics: `links`, keyed by
//! link id, and `clients`, keyed by client id; the newest record of a key is
//! its state. There is no other database. A client's status is checked on
//! every lookup, so pausing a client is one record, and per-key ordering makes
//! pause → resume → pause end in the last state on every reader. Writers ([`RegistryWriter`]) answer only once the broker has
//! acknowledged the record, so a link that was reported created survives any
//! crash. Every reader (each edge, the API) holds the whole registry in memory
//! ([`Registry`], ~90 bytes a link) and keeps it current by tailing the topic
//! ([`tail`]), so a lookup on the redirect path is a hash-table read. An edge
//! keeps a local [`snapshot`] so that a restart resumes from it. The API also
//! applies each record it writes at once, with its offset as its version
//! ([`Version`]), so its tail never undoes a write with an older record.
//!
//! - [`destination`]: what a destination URL may be (no open redirects).
//! - [`code`]: minting unguessable base62 codes.
//! - [`table`]: the in-memory registry.
//! - [`links`]: its compact link table (interned ids, one byte arena per shard).
//! - [`link_decode`]: reading `links` records without the generic Avro decoder.
//! - [`snapshot`]: the edge's checked local copy, with the offsets it covers.
//! - [`writer`]: creating links (produce and await the acknowledgement).
//! - [`tail`]: loading and following the topic; readiness once caught up.
//! - [`token`]: signed recipient tokens (HMAC, rotating key ids).
//! - [`topics`]: creating the topics Ricochet needs, idempotently.
//! - [`kafka`]: the brokers and how to reach them (TLS, SASL), for every Kafka client.

pub mod code;
pub mod destination;
pub mod kafka;
pub mod link_decode;
pub mod links;
pub mod snapshot;
pub mod table;
pub mod tail;
pub mod token;
pub mod topics;
pub mod writer;

pub use destination::{Destination, DestinationError};
pub use kafka::{KafkaConnection, KafkaSecurity, KafkaSecurityError};
pub use links::{DestinationRef, LinkIdRef, LinkRef};
pub use table::{Registry, Version};
pub use tail::{RegistryChange, RegistryTail, RegistryTopics, SnapshotConfig, TailError};
pub use token::{TokenError, TokenKeys, VerifiedToken};
pub use writer::{NewLink, RegistryError, RegistryWriter};
