//! The HTTP product of Ricochet, `ricochet-api`: the admin control plane that
//! writes links, clients and keys to the registry topics, the aggregate stats
//! read from ClickHouse, the response cache, auth and the dashboard.
//!
//! It runs apart from the aggregator (the consumer): link creation does not
//! need a consumer, and API replicas scale with readers, not with partitions.
//! It shares only the ClickHouse tables, through `ricochet-warehouse`.
//!
//! - [`service`]: [`run`], which applies the migrations, starts the registry
//!   tail and serves until shutdown; `main.rs` only parses, binds and waits
//!   for a signal.
//! - [`config`]: every setting, from flags and environment.
//! - [`router`]: the route table, from which the OpenAPI document is derived; [`openapi`]: its frame,
//!   the error body and statuses, the path parameters and the patterns the handlers enforce.
//! - [`state`]: what the handlers share; [`error`]: the one error type.
//! - [`routes`]: the handlers, one file per resource with the types it answers: [`routes::links`],
//!   [`routes::clients`], [`routes::keys`], [`routes::stats`] (series and top
//!   lists), [`routes::breakdowns`] (by country, device, mail client…), [`routes::recipients`] (lists and erasure), [`routes::events`] (the streamed export of decided events),
//!   [`routes::webhooks`] (clients' webhook endpoints, their deliveries and replays) and
//!   [`routes::operations`] (health, metrics, status, the document).
//! - [`auth`]: API keys and who may read what.
//! - [`limits`]: a token bucket per key, requests in flight, the request timeout.
//! - [`cache`]: one ClickHouse query per distinct request per second, ETags.
//! - [`mod@format`]: JSON or CSV answers (`format=csv`, `Accept: text/csv`).
//! - [`stats`]: the aggregate queries, all their SQL, and the series and recipient rows they return;
//!   [`tiling`]: which breakdown rows (weeks, days, hours, added or subtracted) answer a range exactly.
//! - [`status`]: lag and freshness across every aggregator (`/v1/status`).
//! - [`dashboard`]: the embedded dashboard page.
//! - [`numbers`]: integers as JSON Schema means them (`1.0` is 1).

pub mod auth;
pub mod cache;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod format;
pub mod limits;
pub mod numbers;
pub mod openapi;
pub mod router;
pub mod routes;
pub mod service;
pub mod state;
pub mod stats;
pub mod status;
pub mod tiling;

pub use config::ApiConfig;
pub use service::{migrate, run};
