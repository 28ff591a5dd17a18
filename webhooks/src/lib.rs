//! Webhooks of decided events (issue 17), the parts that hold on their own:
//! how a delivery is signed and where one may go. The deliverer that reads
//! the `decided` topic and the API that registers endpoints build on them.
//!
//! - [`signing`]: Standard Webhooks signatures (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`) and
//!   the `whsec_…` secrets shown once to the sender.
//! - [`target`]: no SSRF: which URLs and addresses a webhook may reach
//!   (no loopback, private, link-local or metadata ranges unless the operator
//!   allows them), checked at registration and again after DNS resolution.

pub mod signing;
pub mod target;
