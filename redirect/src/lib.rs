//! The redirect edge: answers a tracking link with a `302` from memory, then
//! publishes the click.
//!
//! A click never waits for bookkeeping. The destination comes from the
//! in-memory registry (`ricochet-registry`), the response is decided before the
//! event exists, and publishing only enqueues into the producer's memory
//! (`ricochet-ingest`). Kafka being slow or down changes nothing for the
//! recipient.
//!
//! - [`config`]: every setting, from flags and environment.
//! - [`click`]: turning a request into a `ClickEvent` (IP anonymization included).
//! - [`pages`]: the small 404 and 410 pages.
//! - [`edge`]: the shared state and the redirect handler: the hot path. What a
//!   request says about its sender (bot signals) comes from `ricochet-signals`.
//! - [`server`]: routes, health, metrics, graceful shutdown.

pub mod click;
pub mod config;
pub mod edge;
pub mod pages;
pub mod server;

pub use config::RedirectConfig;
pub use edge::Edge;
pub use server::{router, run};
