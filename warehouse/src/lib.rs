//! The ClickHouse side that the aggregator and the API share: how to connect
//! ([`config`]), the table names ([`tables`]), the schema migrations
//! ([`migrations`], and their [`cluster`] mode) and the Kafka positions the aggregators store with their
//! rollups ([`positions`]).
//!
//! The aggregator writes these tables and the API reads them; neither depends
//! on the other, both depend on this crate.

pub mod cluster;
pub mod config;
pub mod migrations;
pub mod positions;
pub mod tables;

pub use config::ClickHouseConfig;
