//! The tables both services name. The schemas are in `infra/migrations/` and
//! described in `docs/data-model.md`.

/// One row per click (raw events, for the data team and the recipient views).
pub const EVENTS_TABLE: &str = "click_events";
/// Per-link one-minute rollup deltas, plus the checkpoint rows that hold the
/// stored Kafka positions (`client_id = ''`).
pub const ROLLUP_TABLE: &str = "click_rollup_minute";
