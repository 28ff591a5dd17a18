//! The tables both services name. The schemas are in `infra/migrations/` and
//! described in `docs/data-model.md`.

/// One row per click (raw events, for the data team and the recipient views).
pub const EVENTS_TABLE: &str = "click_events";
/// Per-link rollup deltas at four grains (`grain` = 60, 900, 3600, 86400
/// seconds), plus the position rows (`grain = 0`) whose `position_delta`s sum
/// to the stored Kafka positions. Always filter on one grain.
pub const ROLLUP_TABLE: &str = "click_rollups";
/// Clicks and opens per dimension value (breakdowns), per campaign
/// (`link_id = ''`) and per link, at the hour and day grains, plus the
/// position rows (`grain = 0`) of the breakdowns, which have positions of
/// their own. Always filter on one dimension and one grain.
pub const BREAKDOWNS_TABLE: &str = "click_breakdowns";
/// Recipients who clicked, per link and 15-minute bucket.
pub const RECIPIENTS_TABLE: &str = "click_recipients";

/// Erasures asked for through the API, one row per request: the queue the
/// aggregators apply.
pub const ERASURE_REQUESTS_TABLE: &str = "erasure_requests";
/// Recipients whose rows are never stored again, on every shard.
pub const RECIPIENT_ERASURES_TABLE: &str = "recipient_erasures";

/// Every attempt to deliver a webhook: written by the deliverer, read by
/// the API's deliveries list.
pub const WEBHOOK_DELIVERIES_TABLE: &str = "webhook_deliveries";

/// The grains of [`ROLLUP_TABLE`] (the `grain` column: bucket widths in
/// seconds), coarsest first: UTC day, hour, 15 minutes, minute. Each divides
/// the one before, and 15 minutes divides every time zone's UTC offset.
pub const GRAINS: [u32; 4] = [86_400, 3_600, 900, 60];

/// The breakdowns' dimensions: the values of `click_breakdowns.dimension`,
/// each also a `click_events` column.
pub const BREAKDOWN_DIMENSIONS: [&str; 9] = [
    "country",
    "device",
    "os",
    "browser",
    "mail_client",
    "referrer_domain",
    "utm_source",
    "utm_medium",
    "utm_campaign",
];

/// The grains breakdown rows are kept at (hour and UTC day): enough for
/// hourly and daily breakdowns in whole-hour time zones, at a quarter of the
/// 15-minute grain's rows.
pub const BREAKDOWN_GRAINS: [u32; 2] = [3_600, 86_400];

/// The week grain (`grain = 604800`) of the campaigns' breakdown rows
/// (`link_id = ''`) only: a 30-day breakdown of a campaign or a client reads
/// four weeks of rows and a few days, not thirty days of rows per value. Its
/// buckets are ISO weeks: Monday 00:00 UTC ([`WEEK_START`]).
pub const BREAKDOWN_WEEK: u32 = 604_800;

/// The first Monday 00:00 UTC after the epoch (1970-01-05), in seconds: week
/// buckets start at `WEEK_START + k × BREAKDOWN_WEEK`.
pub const WEEK_START: u32 = 345_600;

/// The start of the `grain` bucket holding `t` (Unix seconds): weeks
/// ([`BREAKDOWN_WEEK`]) start on Monday 00:00 UTC, every other grain at a
/// multiple of its width. The one rule the aggregator writes buckets by and
/// the API tiles ranges by.
pub const fn bucket_floor(t: i64, grain: u32) -> i64 {
    let origin = if grain == BREAKDOWN_WEEK { WEEK_START as i64 } else { 0 };
    t - (t - origin).rem_euclid(grain as i64)
}

/// The start of the week (Monday 00:00 UTC) holding `secs`; 0 before the
/// first Monday (no event is stored from then).
pub const fn week_floor(secs: u32) -> u32 {
    if secs < WEEK_START {
        return 0;
    }
    bucket_floor(secs as i64, BREAKDOWN_WEEK) as u32
}

/// The bucket width of [`RECIPIENTS_TABLE`], in seconds.
pub const RECIPIENT_BUCKET_SECS: u32 = 900;

/// The coarsest grain whose buckets tile every `[boundary, next boundary)`
/// exactly: each boundary (in UTC seconds) is a multiple of it. Minute when
/// nothing coarser fits.
pub fn coarsest_grain(boundaries: impl IntoIterator<Item = i64> + Clone) -> u32 {
    GRAINS
        .into_iter()
        .find(|g| boundaries.clone().into_iter().all(|b| b.rem_euclid(i64::from(*g)) == 0))
        .unwrap_or(GRAINS[GRAINS.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_utc() {
        // 2026-11-30 is a Monday; 2026-12-06 a Sunday.
        let monday = 1_795_996_800;
        assert_eq!(week_floor(monday), monday);
        assert_eq!(week_floor(monday + 6 * 86_400 + 86_399), monday);
        assert_eq!(week_floor(monday - 1), monday - BREAKDOWN_WEEK);
        assert_eq!(week_floor(WEEK_START), WEEK_START);
    }

    #[test]
    fn the_coarsest_grain_that_tiles_the_boundaries() {
        let day = 20_000 * 86_400;
        assert_eq!(coarsest_grain([day, day + 30 * 86_400]), 86_400, "UTC days");
        assert_eq!(coarsest_grain([day - 3_600, day + 23 * 3_600]), 3_600, "Paris days (UTC+1)");
        assert_eq!(coarsest_grain([day - 5 * 3_600 - 45 * 60, day + 18 * 3_600 + 15 * 60]), 900, "Kathmandu days");
        assert_eq!(coarsest_grain([day + 60, day + 120]), 60);
        assert_eq!(coarsest_grain([day + 1, day + 61]), 60, "nothing fits: minutes, as before");
    }
}
