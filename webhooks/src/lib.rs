//! Webhooks of decided events (issue 17), the parts that hold on their own:
//! what a delivery carries, how it is signed, when it is retried and where it
//! may go. The deliverer that reads the `decided` topic and the API that
//! registers endpoints build on them; neither exists yet.
//!
//! - [`signing`]: Standard Webhooks signatures (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`) and
//!   the `whsec_…` secrets shown once to the sender.
//! - [`payload`]: decided events as delivery bodies (`{"type", "timestamp",
//!   "data"}`, or an array for batching endpoints) and their stable
//!   `webhook-id`.
//! - [`retry`]: when a failed delivery is tried again (backoff with jitter
//!   for 24 hours) and when an endpoint is disabled (`410 Gone`, or failing
//!   for a day): pure, with a property test.
//! - [`target`]: no SSRF: which URLs and addresses a webhook may reach
//!   (no loopback, private, link-local or metadata ranges unless the operator
//!   allows them), checked at registration and again after DNS resolution.

pub mod payload;
pub mod retry;
pub mod signing;
pub mod target;
