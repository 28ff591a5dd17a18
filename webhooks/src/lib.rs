//! Webhooks of decided events (issue 17): the `ricochet-webhooks` deliverer,
//! and what the API shares with it to register endpoints.
//!
//! Pure parts:
//! - [`signing`]: Standard Webhooks signatures (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`) and
//!   the `whsec_…` secrets shown once to the sender.
//! - [`payload`]: decided events as delivery bodies (`{"type", "timestamp",
//!   "data"}`, or an array for batching endpoints) and their stable
//!   `webhook-id`.
//! - [`retry`]: when a failed delivery is tried again (backoff with jitter
//!   for 24 hours) and when an endpoint is disabled (`410 Gone`, or failing
//!   for a day), with a property test.
//! - [`lanes`]: an endpoint's events in flight, by recipient, and the
//!   position that is safe to commit, with a property test.
//! - [`target`]: no SSRF: which URLs and addresses a webhook may reach
//!   (no loopback, private, link-local or metadata ranges unless the operator
//!   allows them), checked at registration and again after DNS resolution.
//! - [`partition`]: which partition of `decided` holds a client's events.
//!
//! I/O:
//! - [`endpoints`]: the compacted `webhooks` topic, written by the API and
//!   the deliverer and held in memory by both.
//! - [`send`]: one signed POST, connecting only to allowed addresses.
//! - [`deliverer`]: one run per endpoint (and replay): read, send, retry,
//!   commit; the supervisor that starts and stops them.
//! - [`active`]: which of several deliverers delivers (one at a time, the
//!   others stand by), by a consumer group on the webhooks topic.
//! - [`log`]: every attempt into ClickHouse's `webhook_deliveries`.
//! - [`config`], [`service`]: the service's settings and its `run`.

pub mod active;
pub mod config;
pub mod deliverer;
pub mod endpoints;
pub mod lanes;
pub mod log;
pub mod partition;
pub mod payload;
pub mod retry;
pub mod send;
pub mod service;
pub mod signing;
pub mod target;

pub use service::run;
