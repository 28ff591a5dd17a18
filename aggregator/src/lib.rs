//! The aggregator: a Kafka consumer-group member that rolls click events into
//! per-link minute, 15-minute, hour and day buckets in ClickHouse, exactly
//! once, and keeps its retention. It serves only its own operations endpoints
//! ([`ops`]); the product API that reads what it stores is `ricochet-api`,
//! and the tables both share are in `ricochet-warehouse`.
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
//! - [`status`]: this member's consumer lag and event-time freshness (gauges, `/v1/status`).
//! - [`ops`]: the operations listener (`/healthz`, `/readyz`, `/metrics`, `/v1/status`).
//! - [`retention`]: how long data is kept; TTL or a job, by server version.

pub mod checkpoint;
pub mod config;
pub mod dead_letter;
pub mod limits;
pub mod mirror;
pub mod ops;
pub mod pipeline;
pub mod retention;
pub mod rollup;
pub mod sink;
pub mod status;
pub mod verdict;

pub use config::AggregatorConfig;
