//! The tables both services name. The schemas are in `infra/migrations/` and
//! described in `docs/data-model.md`.

/// One row per click (raw events, for the data team and the recipient views).
pub const EVENTS_TABLE: &str = "click_events";
/// Per-link rollup deltas at four grains (`grain` = 60, 900, 3600, 86400
/// seconds), plus the position rows (`grain = 0`) whose `position_delta`s sum
/// to the stored Kafka positions. Always filter on one grain.
pub const ROLLUP_TABLE: &str = "click_rollups";
/// Recipients who clicked, per link and 15-minute bucket.
pub const RECIPIENTS_TABLE: &str = "click_recipients";
