//! The aggregator: a Kafka consumer-group member that rolls click events into
//! per-link one-minute buckets in ClickHouse, exactly once, and serves the
//! aggregate HTTP endpoints.
//!
//! Exactly once without Kafka transactions: each flush writes the rollups and
//! the Kafka positions they cover in one atomic ClickHouse insert, and a
//! member resumes from the positions stored there. See [`pipeline`] for the
//! protocol and `docs/data-model.md` for the tables.
//!
//! - [`config`]: every setting, from flags and environment.
//! - [`pipeline`]: the consumer loop, rebalances, flushing and retries.
//! - [`rollup`]: the in-memory batch (`BucketStart`, `RollupKey`).
//! - [`verdict`]: human or bot, and why (`Reason`), from an event's signals.
//! - [`checkpoint`]: stored positions and the guard against applying twice.
//! - [`sink`]: ClickHouse rows, inserts, reading positions, settling unknown outcomes.
//! - [`dead_letter`]: poison messages to `clicks-dlq`.
//! - [`limits`]: click counts fed back to the edges for links with a click limit.
//! - [`mirror`]: the link registry and client states mirrored into ClickHouse.
//! - [`migrations`]: the versioned SQL in `infra/migrations/`.
//! - [`status`]: consumer lag and event-time freshness (`/v1/status`, gauges).
//! - [`auth`]: API keys and who may read what.
//! - [`cache`]: one ClickHouse query per distinct request per second, ETags.
//! - [`stats`], [`api`]: the HTTP endpoints; [`admin`]: clients, link status, batches.

pub mod admin;
pub mod api;
pub mod auth;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod dashboard;
pub mod dead_letter;
pub mod limits;
pub mod migrations;
pub mod mirror;
pub mod pipeline;
pub mod rollup;
pub mod sink;
pub mod stats;
pub mod status;
pub mod verdict;

pub use config::AggregatorConfig;
