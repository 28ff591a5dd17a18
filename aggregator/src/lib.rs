//! The aggregator: a Kafka consumer-group member that rolls click events into
//! per-link minute, 15-minute, hour and day buckets in ClickHouse, exactly
//! once, and keeps its retention. It serves only its own operations endpoints
//! ([`ops`]); the product API that reads what it stores is `ricochet-api`,
//! and the tables both share are in `ricochet-warehouse`.
//!
//! Exactly once without Kafka transactions: each flush writes the rollups and
//! the Kafka positions they cover in one atomic ClickHouse insert, through a
//! fence that drops the rows of a member that lost the partition; a member
//! resumes from the positions stored there. The breakdowns (clicks and opens
//! per dimension value) go first, in an insert of their own with positions
//! of their own. [`protocol`] holds every state
//! change and the argument; `docs/data-model.md` describes the tables.
//!
//! - [`service`]: `run(config, listener, shutdown)`, wiring everything below.
//! - [`config`]: every setting, from flags and environment.
//! - [`protocol`]: the exactly-once state machine (pure) and its argument.
//! - [`pipeline`]: the consumer loop, rebalances, flushing and retries (I/O).
//! - [`sink`]: ClickHouse rows, the writes, acquiring partitions, the retry rule.
//! - [`sql`]: every SQL statement the aggregator sends.
//! - [`rollup`]: the in-memory batch (`BucketStart`, `LinkKey`) and the rows of its inserts.
//! - [`verdict`]: human or bot, and why (`Reason`), from an event's signals.
//! - [`dimensions`]: device, OS, browser, mail client, referrer, UTM of each raw event.
//! - [`checkpoint`]: positions and the guard against applying twice.
//! - [`dead_letter`]: poison messages to `clicks-dlq`.
//! - [`decided`]: every counted event, with its final verdict, to the `decided` topic, once.
//! - [`limits`]: click counts fed back to the edges for links with a click limit.
//! - [`mirror`]: the link registry and client states mirrored into ClickHouse.
//! - [`status`]: this member's consumer lag and event-time freshness (gauges, `/v1/status`).
//! - [`ops`]: the operations listener (`/healthz`, `/readyz`, `/metrics`, `/v1/status`).
//! - [`retention`]: how long data is kept; TTL or a job, by server version.
//! - [`erasure`]: erasing a recipient the API was asked to erase, for good.
//! - [`memory`]: how the allocator takes memory (small pages) and how long it keeps what is freed.

pub mod checkpoint;
pub mod config;
pub mod dead_letter;
pub mod decided;
pub mod dimensions;
pub mod erasure;
pub mod limits;
pub mod memory;
pub mod mirror;
pub mod ops;
pub mod pipeline;
pub mod protocol;
pub mod retention;
pub mod rollup;
pub mod service;
pub mod sink;
pub mod sql;
pub mod status;
pub mod verdict;

pub use config::AggregatorConfig;
pub use service::{migrate, run};
