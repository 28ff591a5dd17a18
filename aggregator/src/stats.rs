//! Time series and totals for one link, read from the minute rollups.

use chrono::{DateTime, SecondsFormat, Utc};
use clickhouse::{Client, Row};
use ricochet_schemas::LinkRecord;
use serde::{Deserialize, Serialize};

use crate::sink::{EVENTS_TABLE, ROLLUP_TABLE};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    pub fn step_secs(self) -> i64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3600,
            Granularity::Day => 86_400,
        }
    }

    /// The widest range a request may ask for, so one poll cannot ask for millions of buckets.
    pub fn max_range_secs(self) -> i64 {
        match self {
            Granularity::Minute => 7 * 86_400,
            Granularity::Hour => 92 * 86_400,
            Granularity::Day => 3 * 366 * 86_400,
        }
    }

    fn bucket_sql(self) -> &'static str {
        match self {
            Granularity::Minute => "toUInt32(bucket_start)",
            Granularity::Hour => "toUInt32(toStartOfHour(bucket_start))",
            Granularity::Day => "toUInt32(toStartOfDay(bucket_start))",
        }
    }

    fn parse(s: &str) -> Result<Self, StatsError> {
        match s {
            "minute" => Ok(Granularity::Minute),
            "hour" => Ok(Granularity::Hour),
            "day" => Ok(Granularity::Day),
            other => Err(StatsError::BadParam(format!("granularity must be minute, hour or day, not {other:?}"))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("{0}")]
    BadParam(String),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

/// The query string of a stats request, unvalidated.
#[derive(Debug, Default, Deserialize)]
pub struct StatsQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub granularity: Option<String>,
}

/// A validated, bucket-aligned `[from, to)` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    pub granularity: Granularity,
}

fn parse_instant(name: &str, raw: &str) -> Result<i64, StatsError> {
    if let Ok(secs) = raw.parse::<i64>() {
        return Ok(secs);
    }
    DateTime::parse_from_rfc3339(raw).map(|t| t.timestamp()).map_err(|_| {
        StatsError::BadParam(format!(
            "{name} must be an RFC 3339 time (2026-11-22T10:00:00Z) or Unix seconds, not {raw:?}"
        ))
    })
}

impl Range {
    /// Defaults: the last hour, by minute. `from` is rounded down and `to` up to whole buckets.
    pub fn parse(q: &StatsQuery, now: i64) -> Result<Self, StatsError> {
        let granularity = q.granularity.as_deref().map(Granularity::parse).transpose()?.unwrap_or(Granularity::Minute);
        let step = granularity.step_secs();
        let to = q.to.as_deref().map(|t| parse_instant("to", t)).transpose()?.unwrap_or(now + 1);
        let from = q.from.as_deref().map(|f| parse_instant("from", f)).transpose()?.unwrap_or(to - 3600);
        if from < 0 || to > u32::MAX as i64 {
            return Err(StatsError::BadParam("from and to must lie between 1970 and 2106".into()));
        }
        if from >= to {
            return Err(StatsError::BadParam("from must be earlier than to".into()));
        }
        let (from, to) = (from - from.rem_euclid(step), to + (step - to.rem_euclid(step)) % step);
        if to - from > granularity.max_range_secs() {
            return Err(StatsError::BadParam(format!(
                "range too long for {granularity:?} granularity: at most {} days",
                granularity.max_range_secs() / 86_400
            )));
        }
        Ok(Range { from, to, granularity })
    }
}

#[derive(Debug, Row, Deserialize)]
struct BucketRow {
    bucket: u32,
    clicks: u64,
    human_clicks: u64,
    bot_clicks: u64,
    opens: u64,
}

/// The counts of one bucket, or of a whole range.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub clicks: u64,
    pub human_clicks: u64,
    pub bot_clicks: u64,
    pub opens: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.clicks += o.clicks;
        self.human_clicks += o.human_clicks;
        self.bot_clicks += o.bot_clicks;
        self.opens += o.opens;
    }
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Point {
    pub bucket_start: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    #[serde(flatten)]
    pub counts: Counts,
    /// Distinct recipients with a valid token who clicked, exact.
    pub unique_recipients: u64,
}

#[derive(Debug, Serialize)]
pub struct LinkStats {
    pub link_id: String,
    pub client_id: String,
    pub campaign_id: String,
    pub granularity: Granularity,
    pub from: String,
    pub to: String,
    pub series: Vec<Point>,
    pub totals: Totals,
}

fn rfc3339(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Zero-filled series for one link. The primary-key prefix (client, campaign,
/// link) makes this a range read, not a scan.
pub async fn link_stats(client: &Client, link: &LinkRecord, range: Range) -> Result<LinkStats, StatsError> {
    let sql = format!(
        "SELECT {bucket} AS bucket, sum(clicks) AS clicks, sum(human_clicks) AS human_clicks, \
         sum(bot_clicks) AS bot_clicks, sum(opens) AS opens FROM {ROLLUP_TABLE} \
         WHERE client_id = ? AND campaign_id = ? AND link_id = ? \
         AND bucket_start >= toDateTime(?) AND bucket_start < toDateTime(?) \
         GROUP BY bucket ORDER BY bucket",
        bucket = range.granularity.bucket_sql()
    );
    let rows = client
        .query(&sql)
        .bind(link.client_id.as_str())
        .bind(link.campaign_id.as_str())
        .bind(link.link_id.as_str())
        .bind(range.from as u32)
        .bind(range.to as u32)
        .fetch_all::<BucketRow>()
        .await?;
    let series = zero_fill(
        range,
        rows.iter().map(|r| {
            let counts =
                Counts { clicks: r.clicks, human_clicks: r.human_clicks, bot_clicks: r.bot_clicks, opens: r.opens };
            (r.bucket as i64, counts)
        }),
    );
    let mut counts = Counts::default();
    for p in &series {
        counts += p.counts;
    }
    let unique_recipients = client
        .query(&format!(
            "SELECT uniqExact(recipient_id) FROM {EVENTS_TABLE} \
             WHERE client_id = ? AND campaign_id = ? AND link_id = ? \
             AND recipient_id != '' AND event_type = 'click' \
             AND event_time >= toDateTime(?) AND event_time < toDateTime(?)"
        ))
        .bind(link.client_id.as_str())
        .bind(link.campaign_id.as_str())
        .bind(link.link_id.as_str())
        .bind(range.from as u32)
        .bind(range.to as u32)
        .fetch_one::<u64>()
        .await?;
    let totals = Totals { counts, unique_recipients };
    Ok(LinkStats {
        link_id: link.link_id.to_string(),
        client_id: link.client_id.to_string(),
        campaign_id: link.campaign_id.to_string(),
        granularity: range.granularity,
        from: rfc3339(range.from),
        to: rfc3339(range.to),
        series,
        totals,
    })
}

fn zero_fill(range: Range, buckets: impl Iterator<Item = (i64, Counts)>) -> Vec<Point> {
    let step = range.granularity.step_secs();
    let mut counts = vec![Counts::default(); ((range.to - range.from) / step) as usize];
    for (bucket, c) in buckets {
        if bucket >= range.from && bucket < range.to {
            counts[((bucket - range.from) / step) as usize] += c;
        }
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, counts)| Point { bucket_start: rfc3339(range.from + i as i64 * step), counts })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: Option<&str>, to: Option<&str>, g: Option<&str>) -> StatsQuery {
        StatsQuery { from: from.map(Into::into), to: to.map(Into::into), granularity: g.map(Into::into) }
    }

    #[test]
    fn ranges_align_to_buckets() {
        let r = Range::parse(&q(Some("2026-11-22T10:00:30Z"), Some("2026-11-22T10:02:01Z"), None), 0).unwrap();
        assert_eq!((r.to - r.from) / 60, 3);
        assert_eq!(rfc3339(r.from), "2026-11-22T10:00:00Z");
        assert_eq!(rfc3339(r.to), "2026-11-22T10:03:00Z");
    }

    #[test]
    fn bad_ranges_say_what_is_allowed() {
        let err = |from, to, g| Range::parse(&q(from, to, g), 1_800_000_000).unwrap_err().to_string();
        assert!(err(Some("yesterday"), None, None).contains("RFC 3339"));
        assert!(err(Some("100"), Some("50"), None).contains("earlier"));
        assert!(err(None, None, Some("week")).contains("minute, hour or day"));
        assert!(err(Some("0"), Some("1000000"), None).contains("at most 7 days"));
    }

    #[test]
    fn series_is_zero_filled() {
        let range = Range { from: 600, to: 600 + 5 * 60, granularity: Granularity::Minute };
        let c = |clicks| Counts { clicks, ..Counts::default() };
        let s = zero_fill(range, [(660, c(3)), (840, c(2)), (9999, c(7))].into_iter());
        assert_eq!(s.iter().map(|p| p.counts.clicks).collect::<Vec<_>>(), vec![0, 3, 0, 0, 2]);
    }
}
