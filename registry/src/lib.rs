//! The link registry: which code goes where, for whom, and whether it is live.
//!
//! The source of truth is the log-compacted Kafka topic `links`, keyed by link
//! id; the newest record of a key is that link's state. There is no other
//! database. Writers ([`LinkWriter`]) answer only once the broker has
//! acknowledged the record, so a link that was reported created survives any
//! crash. Every reader (each edge, the API) holds the whole registry in memory
//! ([`LinkTable`]) and keeps it current by tailing the topic ([`tail`]), so a
//! lookup on the redirect path is a hash-map read.
//!
//! - [`destination`]: what a destination URL may be (no open redirects).
//! - [`code`]: minting unguessable base62 codes.
//! - [`table`]: the in-memory registry.
//! - [`writer`]: creating links (produce and await the acknowledgement).
//! - [`tail`]: loading and following the topic; readiness once caught up.
//! - [`topics`]: creating the topics Ricochet needs, idempotently.

pub mod code;
pub mod destination;
pub mod table;
pub mod tail;
pub mod topics;
pub mod writer;

pub use destination::{Destination, DestinationError};
pub use table::LinkTable;
pub use tail::{RegistryTail, TailError};
pub use writer::{LinkWriter, NewLink, RegistryError};
