//! The aggregate queries behind the API: time series, totals, top lists,
//! recipients and breakdowns, for a client, a campaign or a link; and the
//! other reads the API makes: the time zones ClickHouse knows, the
//! status's freshness and a webhook's deliveries. Every SQL string of the API is here, so that one file
//! shows what it asks ClickHouse. The handlers are in [`crate::routes::stats`],
//! [`crate::routes::recipients`] and [`crate::routes::breakdowns`], and a
//! [`Series`] or [`Recipient`] is what they answer, as it comes from here.
//!
//! Every query filters on a prefix of the tables' sort key (grain, client,
//! campaign, link), so it is a range read. Each reads the coarsest rollup
//! grain that is exact for its buckets in the requested IANA time zone (UTC
//! days, hours, 15 minutes or minutes; see `Range::series_grain`), and the
//! series is zero-filled here with the same bucket boundaries (a day in a zone
//! with daylight saving can last 23 or 25 hours). Series and top lists read
//! the rollup rows of `click_rollups` (`dimension = ''`: databases from
//! before migration 0012 also hold breakdown rows there); breakdowns read
//! `click_breakdowns`, one dimension, whose key leads with the client and
//! the dimension, then the grain, campaign and link. Unique recipients come from
//! the 15-minute recipients table (its click rows, `is_open = 0`; its open
//! rows count unique human openers), and from raw events only for the minutes a
//! minute-granularity range has outside whole quarter hours. Values are bound on the
//! client (ClickHouse 18.16 has no server-side parameters).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Days, NaiveTime, Offset, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use clickhouse::{Client, Row};
use ricochet_schemas::{CampaignId, ClientId, LinkRecord, MachineOpen, Reason};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::tiling::{self, Span};
use ricochet_warehouse::tables::{
    coarsest_grain, BREAKDOWNS_TABLE, BREAKDOWN_GRAINS, BREAKDOWN_WEEK, EVENTS_TABLE, RECIPIENTS_TABLE,
    RECIPIENT_BUCKET_SECS, ROLLUP_TABLE, WEBHOOK_DELIVERIES_TABLE, WEEK_START,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    /// The widest range a request may ask for, so one poll cannot ask for millions of buckets.
    pub fn max_range_days(self) -> i64 {
        match self {
            Granularity::Minute => 7,
            Granularity::Hour => 92,
            Granularity::Day => 3 * 366,
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
    /// A value outside what the API documents.
    #[error("{0}")]
    BadParam(String),
    /// Values that are each allowed but conflict (from after to, too long a range).
    #[error("{0}")]
    Conflict(String),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

/// The query string of an aggregate request, unvalidated. Unknown parameters are
/// refused so that a typo (`granularty=`) is an error, not a silent default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub granularity: Option<String>,
    pub tz: Option<String>,
    pub human_only: Option<bool>,
    #[serde(default, deserialize_with = "crate::numbers::option_u32_text")]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// `json` or `csv` ([`crate::format`]).
    pub format: Option<String>,
}

/// A validated, bucket-aligned `[from, to)` range in a time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    pub granularity: Granularity,
    pub tz: Tz,
    pub human_only: bool,
}

/// `tz`: an IANA zone both chrono-tz and ClickHouse know; UTC when absent.
pub(crate) fn parse_tz(raw: Option<&str>) -> Result<Tz, StatsError> {
    match raw {
        None => Ok(Tz::UTC),
        Some(name) => name.parse().ok().filter(|_| crate::openapi::zones().contains(&name)).ok_or_else(|| {
            StatsError::BadParam(format!(
                "tz must be an IANA time zone such as Europe/Paris (the enum in /v1/openapi.json), not {name:?}"
            ))
        }),
    }
}

/// `from` before `to`, both within what the API takes (422 otherwise).
pub(crate) fn check_bounds(from: i64, to: i64) -> Result<(), StatsError> {
    if from < 0 || to > crate::openapi::MAX_UNIX_SECONDS {
        return Err(StatsError::Conflict("from and to must lie between 1970 and 2106".into()));
    }
    if from >= to {
        return Err(StatsError::Conflict("from must be earlier than to".into()));
    }
    Ok(())
}

pub(crate) fn parse_instant(name: &str, raw: &str) -> Result<i64, StatsError> {
    if let Some(secs) = crate::numbers::parse_seconds(raw) {
        if !(0..=crate::openapi::MAX_UNIX_SECONDS).contains(&secs) {
            return Err(StatsError::BadParam(format!(
                "{name} in Unix seconds must be between 0 and {}, not {secs}",
                crate::openapi::MAX_UNIX_SECONDS
            )));
        }
        return Ok(secs);
    }
    DateTime::parse_from_rfc3339(raw).map(|t| t.timestamp()).map_err(|_| {
        StatsError::BadParam(format!(
            "{name} must be an RFC 3339 time (2026-11-22T10:00:00Z) or Unix seconds, not {raw:?}"
        ))
    })
}

/// Start of the bucket holding `t`.
fn floor(t: i64, g: Granularity, tz: Tz) -> i64 {
    match g {
        Granularity::Minute => t - t.rem_euclid(60),
        Granularity::Hour => {
            let offset = tz.offset_from_utc_datetime(&utc(t).naive_utc()).fix().local_minus_utc() as i64;
            t - (t + offset).rem_euclid(3600)
        }
        Granularity::Day => {
            let date = utc(t).with_timezone(&tz).date_naive();
            local_midnight(tz, date)
        }
    }
}

/// Start of the bucket after the one starting at `start`.
fn next(start: i64, g: Granularity, tz: Tz) -> i64 {
    match g {
        Granularity::Minute => start + 60,
        Granularity::Hour => start + 3600,
        Granularity::Day => {
            let date = utc(start).with_timezone(&tz).date_naive();
            local_midnight(tz, date.checked_add_days(Days::new(1)).unwrap_or(date))
        }
    }
}

/// The start of the local day after the one holding `now`, and of the day
/// `days` days before that one: the last `days` whole days of `tz`, today's included.
pub fn last_whole_days(now: i64, days: u64, tz: Tz) -> (i64, i64) {
    let today = utc(now).with_timezone(&tz).date_naive();
    let tomorrow = today.checked_add_days(Days::new(1)).unwrap_or(today);
    (local_midnight(tz, tomorrow.checked_sub_days(Days::new(days)).unwrap_or(tomorrow)), local_midnight(tz, tomorrow))
}

fn local_midnight(tz: Tz, date: chrono::NaiveDate) -> i64 {
    // A day starts at its first existing local instant (midnight may be skipped by DST).
    let naive = date.and_time(NaiveTime::MIN);
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(naive + chrono::Duration::hours(1))).earliest())
        .map_or(naive.and_utc().timestamp(), |t| t.timestamp())
}

fn utc(t: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default()
}

impl Range {
    /// Defaults: the last hour, by minute, in UTC. `from` is rounded down and
    /// `to` up to whole buckets of the zone.
    pub fn parse(q: &StatsQuery, now: i64) -> Result<Self, StatsError> {
        let granularity = q.granularity.as_deref().map(Granularity::parse).transpose()?.unwrap_or(Granularity::Minute);
        let tz = parse_tz(q.tz.as_deref())?;
        let to = q.to.as_deref().map(|t| parse_instant("to", t)).transpose()?.unwrap_or(now + 1);
        let from = q.from.as_deref().map(|f| parse_instant("from", f)).transpose()?.unwrap_or(to - 3600);
        check_bounds(from, to)?;
        if to - from > granularity.max_range_days() * 86_400 {
            return Err(StatsError::Conflict(format!(
                "range too long for {granularity:?} granularity: at most {} days",
                granularity.max_range_days()
            )));
        }
        let from = floor(from, granularity, tz);
        let last = floor(to - 1, granularity, tz);
        let to = next(last, granularity, tz);
        Ok(Range { from, to, granularity, tz, human_only: q.human_only.unwrap_or(false) })
    }

    /// Every bucket start in the range.
    pub fn buckets(&self) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = self.from;
        while t < self.to {
            out.push(t);
            t = next(t, self.granularity, self.tz);
        }
        out
    }

    /// The coarsest rollup grain that is exact for the whole series: every
    /// bucket of the requested granularity, in its zone, is a whole number of
    /// rollup buckets (a day in Paris is 24 hour rows, in Kathmandu 96
    /// quarter-hour rows, in UTC one day row).
    fn series_grain(&self) -> u32 {
        coarsest_grain(self.buckets().into_iter().chain([self.to]))
    }

    /// The coarsest grain exact for the range as a whole (totals, top lists).
    fn total_grain(&self) -> u32 {
        coarsest_grain([self.from, self.to])
    }

    /// SQL for the bucket of a rollup row (a `UInt32`, as the row type expects),
    /// and whether its `?` binds the zone. Minutes are the same in every zone.
    fn bucket_sql(&self) -> (&'static str, bool) {
        match self.granularity {
            Granularity::Minute => ("toUInt32(bucket_start)", false),
            Granularity::Hour => ("toUInt32(toStartOfHour(bucket_start, ?))", true),
            Granularity::Day => ("toUInt32(toStartOfDay(bucket_start, ?))", true),
        }
    }
}

/// Whose numbers: a client, one of its campaigns, or one link.
#[derive(Clone, Debug)]
pub enum Scope {
    Client(ClientId),
    Campaign(ClientId, CampaignId),
    Link(Arc<LinkRecord>),
}

impl Scope {
    /// Whose data it is: the client whose ClickHouse quota a query counts against.
    pub fn client_id(&self) -> &str {
        match self {
            Scope::Client(c) | Scope::Campaign(c, _) => c.as_str(),
            Scope::Link(l) => l.client_id.as_str(),
        }
    }

    /// A `WHERE` prefix on the sort key, and its values to bind in order.
    fn filter(&self) -> (&'static str, Vec<String>) {
        match self {
            Scope::Client(c) => ("client_id = ?", vec![c.to_string()]),
            Scope::Campaign(c, k) => ("client_id = ? AND campaign_id = ?", vec![c.to_string(), k.to_string()]),
            Scope::Link(l) => (
                "client_id = ? AND campaign_id = ? AND link_id = ?",
                vec![l.client_id.to_string(), l.campaign_id.to_string(), l.link_id.to_string()],
            ),
        }
    }

    /// [`Self::filter`] for `click_breakdowns`, and where it goes in its key:
    /// after the dimension and the grain. A client's or a campaign's counts
    /// are its campaign rows (`link_id = ''`), a link's its own.
    fn breakdown_filter(&self) -> (&'static str, Vec<String>) {
        match self {
            Scope::Client(c) => ("client_id = ? AND link_id = ''", vec![c.to_string()]),
            Scope::Campaign(c, k) => {
                ("client_id = ? AND campaign_id = ? AND link_id = ''", vec![c.to_string(), k.to_string()])
            }
            Scope::Link(_) => self.filter(),
        }
    }

    /// Whether its breakdown rows are kept at the week too: campaigns' rows
    /// are (and a client's counts are its campaigns'), links' are not.
    fn has_week_rows(&self) -> bool {
        !matches!(self, Scope::Link(_))
    }
}

/// The counts of one bucket, or of a whole range. Human clicks lead: they are
/// what senders decide on (`clicks` includes the machines'). Opens are apart
/// from clicks: `opens` is every open-pixel fetch, split by the open's verdict
/// into `human_opens` and `machine_opens` (opens stored before the verdicts
/// existed are in `opens` only).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq, ToSchema)]
pub struct Counts {
    pub human_clicks: u64,
    pub bot_clicks: u64,
    pub clicks: u64,
    pub opens: u64,
    pub human_opens: u64,
    /// Opens fetched by machines: Apple's privacy proxies, mail scanners, prefetchers.
    pub machine_opens: u64,
    pub machine_opens_by_reason: MachineOpens,
}

/// Machine opens by why they were a machine's (`ricochet_schemas::MachineOpen`):
/// they sum to `machine_opens`.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq, ToSchema)]
pub struct MachineOpens {
    /// Apple Mail Privacy Protection's proxies, which fetch the images of nearly every message delivered.
    pub apple_privacy: u64,
    /// Mail-security gateways fetching images (their networks, referers, sweeps).
    pub scanner: u64,
    /// Anything else fetching without a reader: HEAD, prefetch headers, previewers, bots.
    pub prefetch: u64,
}

impl MachineOpens {
    /// The count of one reason, by `MachineOpen`, so that a new reason is a compile error here.
    pub fn get(&self, reason: MachineOpen) -> u64 {
        match reason {
            MachineOpen::ApplePrivacy => self.apple_privacy,
            MachineOpen::Scanner => self.scanner,
            MachineOpen::Prefetch => self.prefetch,
        }
    }
}

impl std::ops::AddAssign for MachineOpens {
    fn add_assign(&mut self, o: MachineOpens) {
        self.apple_privacy += o.apple_privacy;
        self.scanner += o.scanner;
        self.prefetch += o.prefetch;
    }
}

impl Counts {
    /// With `human_only`, machines are left out of every number: bot clicks,
    /// and machine opens (`opens` keeps the opens without a verdict).
    fn filtered(mut self, human_only: bool) -> Self {
        if human_only {
            self.clicks = self.human_clicks;
            self.bot_clicks = 0;
            self.opens = self.opens.saturating_sub(self.machine_opens);
            self.machine_opens = 0;
            self.machine_opens_by_reason = MachineOpens::default();
        }
        self
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.clicks += o.clicks;
        self.human_clicks += o.human_clicks;
        self.bot_clicks += o.bot_clicks;
        self.opens += o.opens;
        self.human_opens += o.human_opens;
        self.machine_opens += o.machine_opens;
        self.machine_opens_by_reason += o.machine_opens_by_reason;
    }
}

/// One row of the series query: a bucket's sums, or (at the marker buckets
/// below) the unique recipients and openers, or one reason's bot clicks.
#[derive(Debug, Row, Deserialize)]
struct BucketRow {
    bucket: u32,
    clicks: u64,
    human_clicks: u64,
    bot_clicks: u64,
    opens: u64,
    human_opens: u64,
    machine_opens: u64,
    open_apple_privacy: u64,
    open_scanner: u64,
    open_prefetch: u64,
}

impl BucketRow {
    fn counts(&self) -> Counts {
        Counts {
            clicks: self.clicks,
            human_clicks: self.human_clicks,
            bot_clicks: self.bot_clicks,
            opens: self.opens,
            human_opens: self.human_opens,
            machine_opens: self.machine_opens,
            machine_opens_by_reason: MachineOpens {
                apple_privacy: self.open_apple_privacy,
                scanner: self.open_scanner,
                prefetch: self.open_prefetch,
            },
        }
    }
}

#[derive(Debug, Serialize, PartialEq, Eq, ToSchema)]
pub struct Point {
    /// RFC 3339, in the requested zone.
    pub bucket_start: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Totals {
    pub human_clicks: u64,
    /// Distinct recipients with a valid token with at least one human click, exact.
    pub unique_human_recipients: u64,
    pub bot_clicks: u64,
    /// Bot clicks per verdict reason (`head`, `burst`, …), only the reasons seen.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub bot_by_reason: BTreeMap<&'static str, u64>,
    pub clicks: u64,
    pub opens: u64,
    pub human_opens: u64,
    pub machine_opens: u64,
    pub machine_opens_by_reason: MachineOpens,
    /// Distinct recipients with a valid token who clicked, machines included, exact.
    pub unique_recipients: u64,
    /// Distinct recipients with a valid token with at least one human open, exact.
    pub unique_human_openers: u64,
}

/// A click series. Link series also carry the link's ids.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    pub granularity: Granularity,
    pub tz: String,
    pub human_only: bool,
    pub from: String,
    pub to: String,
    pub series: Vec<Point>,
    pub totals: Totals,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub link_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub campaign_id: Option<String>,
}

/// One row per bucket, then a `total` row with the range's totals; the unique
/// counts and the bot clicks by reason are the range's, so only that row has them.
impl crate::format::CsvBody for Series {
    fn csv(&self, out: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        let reasons: Vec<Reason> = Reason::ALL.into_iter().filter(|r| !r.is_human() && r.applies_to_clicks()).collect();
        let mut header: Vec<String> =
            ["bucket_start", "human_clicks", "bot_clicks", "clicks", "opens", "human_opens", "machine_opens"]
                .map(String::from)
                .into();
        header.extend(MachineOpen::ALL.map(|m| format!("machine_opens_{}", m.as_str())));
        header.extend(["unique_human_recipients", "unique_recipients", "unique_human_openers"].map(String::from));
        header.extend(reasons.iter().map(|r| format!("bot_{}", r.as_str())));
        out.write_record(&header)?;
        let counts = |label: &str, c: &Counts| {
            let mut row = vec![label.to_owned()];
            row.extend(
                [c.human_clicks, c.bot_clicks, c.clicks, c.opens, c.human_opens, c.machine_opens]
                    .map(|n| n.to_string()),
            );
            row.extend(MachineOpen::ALL.map(|m| c.machine_opens_by_reason.get(m).to_string()));
            row
        };
        for p in &self.series {
            let mut row = counts(&p.bucket_start, &p.counts);
            row.resize(header.len(), String::new());
            out.write_record(&row)?;
        }
        let t = &self.totals;
        let total = Counts {
            human_clicks: t.human_clicks,
            bot_clicks: t.bot_clicks,
            clicks: t.clicks,
            opens: t.opens,
            human_opens: t.human_opens,
            machine_opens: t.machine_opens,
            machine_opens_by_reason: t.machine_opens_by_reason,
        };
        let mut row = counts("total", &total);
        row.extend([t.unique_human_recipients, t.unique_recipients, t.unique_human_openers].map(|n| n.to_string()));
        row.extend(reasons.iter().map(|r| t.bot_by_reason.get(r.as_str()).copied().unwrap_or(0).to_string()));
        out.write_record(&row)
    }
}

pub(crate) fn rfc3339(secs: i64, tz: Tz) -> String {
    utc(secs).with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A bucket value no real bucket has: the row of the `UNION ALL` that carries
/// the exact unique-recipient counts, all in its `clicks` column, human ones
/// in its `human_clicks` column, human openers in its `human_opens` column.
const RECIPIENTS_ROW: u32 = u32::MAX;
/// Rows `REASON_ROWS + code` of the `UNION ALL` carry the bot clicks of the
/// verdict reason with that `Enum8` code (from the rollups' `bot_*` columns).
const REASON_ROWS: u32 = u32::MAX - 256;

/// The open columns of a series row that only bucket rows fill.
const NO_OPENS: &str = "toUInt64(0) AS human_opens, toUInt64(0) AS machine_opens, \
                        toUInt64(0) AS open_apple_privacy, toUInt64(0) AS open_scanner, toUInt64(0) AS open_prefetch";

/// The zero-filled series and totals of a scope, in one ClickHouse query: the
/// rollup buckets (`dimension = ''`: the breakdown rows beside them count the
/// same clicks again), plus one row with the exact unique recipients and
/// human openers of the range.
pub async fn series(ch: &Client, scope: &Scope, range: Range) -> Result<Series, StatsError> {
    let (filter, values) = scope.filter();
    let (bucket, binds_tz) = range.bucket_sql();
    let human = if range.human_only { "AND is_human = 1" } else { "" };
    let human_recipients = if range.human_only { "AND human = 1" } else { "" };
    // Unique recipients: the recipients table for the whole 15-minute buckets
    // of the range, raw events only for the minutes before the first and after
    // the last (minute granularity only; hour and day ranges have none).
    let width = i64::from(RECIPIENT_BUCKET_SECS);
    let inner_from = range.from + (width - range.from.rem_euclid(width)) % width;
    let inner_to = (range.to - range.to.rem_euclid(width)).max(inner_from);
    let edges = [(range.from, inner_from.min(range.to)), (inner_to.max(range.from), range.to)];
    // Bot clicks by reason, from the rollups' per-reason columns: one row per
    // reason, `REASON_ROWS + code`, through an ARRAY JOIN of the sums.
    let reason_sums: Vec<String> = Reason::ALL
        .iter()
        .filter(|r| !r.is_human() && r.applies_to_clicks())
        .map(|r| format!("(toUInt32({}), sum(bot_{}))", *r as u8, r.as_str()))
        .collect();
    let reason_sums = reason_sums.join(", ");
    let sql = format!(
        "SELECT {bucket} AS bucket, sum(clicks) AS clicks, sum(human_clicks) AS human_clicks, \
         sum(bot_clicks) AS bot_clicks, sum(opens) AS opens, sum(human_opens) AS human_opens, \
         sum(machine_opens) AS machine_opens, sum(open_apple_privacy) AS open_apple_privacy, \
         sum(open_scanner) AS open_scanner, sum(open_prefetch) AS open_prefetch FROM {ROLLUP_TABLE} \
         WHERE grain = ? AND {filter} AND dimension = '' \
         AND bucket_start >= toDateTime(?) AND bucket_start < toDateTime(?) \
         GROUP BY bucket \
         UNION ALL \
         SELECT toUInt32({RECIPIENTS_ROW}) AS bucket, toUInt64(uniqExactIf(recipient_id, is_open = 0)) AS clicks, \
         toUInt64(uniqExactIf(recipient_id, human = 1 AND is_open = 0)) AS human_clicks, toUInt64(0) AS bot_clicks, \
         toUInt64(0) AS opens, toUInt64(uniqExactIf(recipient_id, human = 1 AND is_open = 1)) AS human_opens, \
         toUInt64(0) AS machine_opens, toUInt64(0) AS open_apple_privacy, toUInt64(0) AS open_scanner, \
         toUInt64(0) AS open_prefetch FROM ( \
           SELECT recipient_id, human, is_open FROM {RECIPIENTS_TABLE} WHERE {filter} {human_recipients} \
           AND bucket_start >= toDateTime(?) AND bucket_start < toDateTime(?) \
           UNION ALL \
           SELECT recipient_id, is_human AS human, toUInt8(event_type = 'open') AS is_open FROM {EVENTS_TABLE} \
           WHERE {filter} AND recipient_id != '' {human} \
           AND ((event_time >= toDateTime(?) AND event_time < toDateTime(?)) \
             OR (event_time >= toDateTime(?) AND event_time < toDateTime(?)))) \
         UNION ALL \
         SELECT toUInt32({REASON_ROWS} + reason.1) AS bucket, toUInt64(reason.2) AS clicks, \
         toUInt64(0) AS human_clicks, toUInt64(0) AS bot_clicks, toUInt64(0) AS opens, {NO_OPENS} FROM ( \
           SELECT [{reason_sums}] AS reasons FROM {ROLLUP_TABLE} \
           WHERE grain = ? AND {filter} AND dimension = '' \
           AND bucket_start >= toDateTime(?) AND bucket_start < toDateTime(?)) \
         ARRAY JOIN reasons AS reason"
    );
    let mut query = ch.query(&sql);
    if binds_tz {
        query = query.bind(range.tz.name());
    }
    query = query.bind(range.series_grain());
    let bind_scope = |mut query: clickhouse::query::Query| {
        for v in &values {
            query = query.bind(v.as_str());
        }
        query
    };
    query = bind_scope(query).bind(range.from as u32).bind(range.to as u32);
    query = bind_scope(query).bind(inner_from as u32).bind(inner_to as u32);
    query = bind_scope(query);
    for (from, to) in edges {
        query = query.bind(from as u32).bind(to as u32);
    }
    query = bind_scope(query.bind(range.series_grain())).bind(range.from as u32).bind(range.to as u32);
    let rows = query.fetch_all::<BucketRow>().await?;
    metrics::counter!("ricochet_api_clickhouse_queries_total").increment(1);

    let buckets = range.buckets();
    let index: HashMap<i64, usize> = buckets.iter().enumerate().map(|(i, b)| (*b, i)).collect();
    let mut counts = vec![Counts::default(); buckets.len()];
    let (mut unique_recipients, mut unique_human_recipients, mut unique_human_openers) = (0, 0, 0);
    let mut bot_by_reason = BTreeMap::new();
    for r in rows {
        if r.bucket == RECIPIENTS_ROW {
            (unique_recipients, unique_human_recipients, unique_human_openers) =
                (r.clicks, r.human_clicks, r.human_opens);
        } else if r.bucket >= REASON_ROWS {
            let code = r.bucket - REASON_ROWS;
            if let Some(reason) = Reason::from_code(code) {
                if !range.human_only {
                    bot_by_reason.insert(reason.as_str(), r.clicks);
                }
            }
        } else if let Some(i) = index.get(&(r.bucket as i64)) {
            counts[*i] += r.counts().filtered(range.human_only);
        }
    }
    let mut total = Counts::default();
    for c in &counts {
        total += *c;
    }
    let series =
        buckets.iter().zip(counts).map(|(b, counts)| Point { bucket_start: rfc3339(*b, range.tz), counts }).collect();
    // A link's series names its client and campaign, which its path does not.
    let link = match scope {
        Scope::Link(link) => Some(link),
        Scope::Client(_) | Scope::Campaign(..) => None,
    };
    Ok(Series {
        link_id: link.map(|l| l.link_id.to_string()),
        client_id: link.map(|l| l.client_id.to_string()),
        campaign_id: link.map(|l| l.campaign_id.to_string()),
        granularity: range.granularity,
        tz: range.tz.name().to_owned(),
        human_only: range.human_only,
        from: rfc3339(range.from, range.tz),
        to: rfc3339(range.to, range.tz),
        series,
        totals: Totals {
            human_clicks: total.human_clicks,
            unique_human_recipients,
            bot_clicks: total.bot_clicks,
            bot_by_reason,
            clicks: total.clicks,
            opens: total.opens,
            human_opens: total.human_opens,
            machine_opens: total.machine_opens,
            machine_opens_by_reason: total.machine_opens_by_reason,
            unique_recipients,
            unique_human_openers,
        },
    })
}

/// One row of a top list.
#[derive(Debug, Row, Deserialize, Serialize)]
pub struct Ranked {
    pub key: String,
    pub clicks: u64,
    pub human_clicks: u64,
    pub opens: u64,
}

/// The top `limit` links (`by = "link_id"`) or campaigns (`by = "campaign_id"`) of a scope.
pub async fn top(ch: &Client, scope: &Scope, by: TopBy, range: Range, limit: u32) -> Result<Vec<Ranked>, StatsError> {
    let (filter, values) = scope.filter();
    let order = if range.human_only { "human_clicks" } else { "clicks" };
    let column = by.column();
    let sql = format!(
        "SELECT {column} AS key, sum(clicks) AS clicks, sum(human_clicks) AS human_clicks, sum(opens) AS opens \
         FROM {ROLLUP_TABLE} WHERE grain = ? AND {filter} AND dimension = '' \
         AND bucket_start >= toDateTime(?) AND bucket_start < toDateTime(?) \
         GROUP BY key ORDER BY {order} DESC, key LIMIT ?"
    );
    let mut query = ch.query(&sql).bind(range.total_grain());
    for v in &values {
        query = query.bind(v.as_str());
    }
    metrics::counter!("ricochet_api_clickhouse_queries_total").increment(1);
    Ok(query.bind(range.from as u32).bind(range.to as u32).bind(limit).fetch_all::<Ranked>().await?)
}

/// What a top list ranks. A closed set: column names never come from a request.
#[derive(Clone, Copy, Debug)]
pub enum TopBy {
    Link,
    Campaign,
}

impl TopBy {
    fn column(self) -> &'static str {
        match self {
            TopBy::Link => "link_id",
            TopBy::Campaign => "campaign_id",
        }
    }
}

/// A recipient who clicked, for CRMs.
#[derive(Debug, Row, Deserialize, Serialize, ToSchema)]
pub struct Recipient {
    pub recipient_id: String,
    /// Unix seconds.
    pub first_click: u32,
    /// Unix seconds.
    pub last_click: u32,
    pub human_clicks: u64,
    /// Human and machine clicks (with `human_only`, human clicks only).
    pub clicks: u64,
}

/// One page of the recipients who clicked in a campaign, ordered by recipient
/// id; `after` is the last id of the previous page (keyset pagination, stable
/// while new clicks arrive).
pub async fn recipients(
    ch: &Client,
    scope: &Scope,
    range: Range,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Recipient>, StatsError> {
    let (filter, values) = scope.filter();
    let human = if range.human_only { "AND is_human = 1" } else { "" };
    let sql = format!(
        "SELECT recipient_id, toUInt32(min(event_time)) AS first_click, toUInt32(max(event_time)) AS last_click, \
         uniqExactIf(event_id, is_human = 1) AS human_clicks, uniqExact(event_id) AS clicks FROM {EVENTS_TABLE} \
         WHERE {filter} AND recipient_id > ? AND event_type = 'click' {human} \
         AND event_time >= toDateTime(?) AND event_time < toDateTime(?) \
         GROUP BY recipient_id ORDER BY recipient_id LIMIT ?"
    );
    let mut query = ch.query(&sql);
    for v in &values {
        query = query.bind(v.as_str());
    }
    metrics::counter!("ricochet_api_clickhouse_queries_total").increment(1);
    Ok(query.bind(after.unwrap_or("")).bind(range.from as u32).bind(range.to as u32).bind(limit).fetch_all().await?)
}

/// What a breakdown groups by: a dimension of every click and open. A closed
/// set: the column names in the SQL below come from here, never from a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Country,
    Device,
    Os,
    Browser,
    MailClient,
    ReferrerDomain,
    UtmSource,
    UtmMedium,
    UtmCampaign,
}

impl Dimension {
    pub const ALL: [Dimension; 9] = [
        Dimension::Country,
        Dimension::Device,
        Dimension::Os,
        Dimension::Browser,
        Dimension::MailClient,
        Dimension::ReferrerDomain,
        Dimension::UtmSource,
        Dimension::UtmMedium,
        Dimension::UtmCampaign,
    ];

    /// Its name: the query parameter, the `dimension` of its rows in
    /// `click_breakdowns`, and its column in `click_events`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Country => "country",
            Dimension::Device => "device",
            Dimension::Os => "os",
            Dimension::Browser => "browser",
            Dimension::MailClient => "mail_client",
            Dimension::ReferrerDomain => "referrer_domain",
            Dimension::UtmSource => "utm_source",
            Dimension::UtmMedium => "utm_medium",
            Dimension::UtmCampaign => "utm_campaign",
        }
    }

    pub fn parse(s: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A validated breakdown: group the scope's clicks and opens in `[from, to)`
/// by `by`, keeping only events whose dimensions equal `filters` (stored
/// values: `''` is unknown), as asked at `now` (Unix seconds: what is still to
/// come costs less to read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakdownSpec {
    pub by: Dimension,
    pub from: i64,
    pub to: i64,
    pub filters: Vec<(Dimension, String)>,
    pub now: i64,
}

impl BreakdownSpec {
    /// The breakdown rows that answer exactly ([`tiling::tile`]): with
    /// `weeks` (a campaign's or a client's rows), the whole weeks (Monday to
    /// Monday, UTC) from the week rows; the whole UTC days from the day rows;
    /// the hours at the start from the hour rows; the end from the hour rows
    /// it covers or as its day (or week) less the rows after `to`, whichever
    /// reads fewer (a 30-day range ending on the next hour reads four or five
    /// weeks of week rows, a few days of day rows, the first day's hours, and
    /// the spans after `to`, still to come).
    /// None with a filter (breakdown rows count one dimension at a time) or a
    /// range off the hours: then the raw events answer.
    pub fn rollup_spans(&self, weeks: bool) -> Option<Vec<Span>> {
        if !self.filters.is_empty() {
            return None;
        }
        let mut grains = BREAKDOWN_GRAINS.to_vec();
        if weeks {
            grains.push(BREAKDOWN_WEEK);
        }
        grains.sort_unstable_by(|a, b| b.cmp(a));
        let finest = i64::from(*grains.last()?);
        if self.from % finest != 0 || self.to % finest != 0 {
            return None;
        }
        Some(tiling::tile(self.from, self.to, &grains, self.now))
    }
}

/// The counts of one value of a breakdown, as ClickHouse sums them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Row, Deserialize)]
pub struct ValueCounts {
    pub value: String,
    pub human_clicks: u64,
    pub bot_clicks: u64,
    pub clicks: u64,
    pub human_opens: u64,
    pub machine_opens: u64,
    /// `machine_opens` by [`MachineOpen`] (the names of `click_breakdowns`' columns).
    pub open_apple_privacy: u64,
    pub open_scanner: u64,
    pub open_prefetch: u64,
}

impl ValueCounts {
    pub fn machine_opens_by_reason(&self) -> MachineOpens {
        MachineOpens {
            apple_privacy: self.open_apple_privacy,
            scanner: self.open_scanner,
            prefetch: self.open_prefetch,
        }
    }
}

/// `verdict_reason IN ('…', …)`: the raw events' reasons that make an open
/// `m`'s machine open (`Reason::machine_open`), constants from the code.
fn machine_open_reasons(m: MachineOpen) -> String {
    let names: Vec<String> =
        Reason::ALL.iter().filter(|r| r.machine_open() == Some(m)).map(|r| format!("'{}'", r.as_str())).collect();
    format!("verdict_reason IN ({})", names.join(", "))
}

/// The counts per value of a breakdown (every value; the caller ranks them).
/// From `click_breakdowns` when [`BreakdownSpec::rollup_spans`] allows, range
/// reads on (client, dimension, grain, campaign, link), the subtracted spans'
/// rows taken away; else from the raw events.
pub async fn breakdown_counts(
    ch: &Client,
    scope: &Scope,
    spec: &BreakdownSpec,
) -> Result<Vec<ValueCounts>, StatsError> {
    let query = match spec.rollup_spans(scope.has_week_rows()) {
        Some(spans) => {
            let spans = whole_weeks_only(ch, scope, spans).await?;
            let (filter, values) = scope.breakdown_filter();
            // The spans are whole buckets the API computed (integers, not
            // input), disjoint within each grain: a row is in at most one.
            let of = |minus: bool| {
                let chosen: Vec<String> = spans
                    .iter()
                    .filter(|s| s.minus == minus)
                    .map(|s| {
                        format!(
                            "(grain = {} AND bucket_start >= toDateTime({}) AND bucket_start < toDateTime({}))",
                            s.grain, s.from, s.to
                        )
                    })
                    .collect();
                if chosen.is_empty() {
                    "0".to_owned()
                } else {
                    chosen.join(" OR ")
                }
            };
            let (added, subtracted) = (of(false), of(true));
            // Added less subtracted. A flush's rows of every grain land in
            // one insert, so the subtracted rows are never more than the
            // added ones hold; should they ever be, 0, not a wrapped UInt64.
            let net =
                |c: &str| format!("toUInt64(greatest(sumIf({c}, NOT subtracted) - sumIf({c}, subtracted), 0)) AS {c}");
            let sql = format!(
                "WITH ({subtracted}) AS subtracted SELECT value, {}, {}, {}, {}, {}, {}, {}, {} \
                 FROM {BREAKDOWNS_TABLE} WHERE dimension = ? AND (({added}) OR subtracted) AND {filter} \
                 GROUP BY value HAVING clicks + human_opens + machine_opens > 0",
                net("human_clicks"),
                net("bot_clicks"),
                net("clicks"),
                net("human_opens"),
                net("machine_opens"),
                net("open_apple_privacy"),
                net("open_scanner"),
                net("open_prefetch"),
            );
            let mut query = ch.query(&sql).bind(spec.by.as_str());
            for v in &values {
                query = query.bind(v.as_str());
            }
            query
        }
        None => {
            let (filter, values) = scope.filter();
            let column = spec.by.as_str();
            let filters = filters_sql(&spec.filters);
            let machine_open = |m| format!("event_type = 'open' AND is_human = 0 AND {}", machine_open_reasons(m));
            let sql = format!(
                "SELECT {column} AS value, \
                 uniqExactIf(event_id, event_type = 'click' AND is_human = 1) AS human_clicks, \
                 uniqExactIf(event_id, event_type = 'click' AND is_human = 0) AS bot_clicks, \
                 uniqExactIf(event_id, event_type = 'click') AS clicks, \
                 uniqExactIf(event_id, event_type = 'open' AND is_human = 1) AS human_opens, \
                 uniqExactIf(event_id, event_type = 'open' AND is_human = 0) AS machine_opens, \
                 uniqExactIf(event_id, {}) AS open_apple_privacy, \
                 uniqExactIf(event_id, {}) AS open_scanner, \
                 uniqExactIf(event_id, {}) AS open_prefetch \
                 FROM {EVENTS_TABLE} WHERE {filter} \
                 AND event_time >= toDateTime(?) AND event_time < toDateTime(?){filters} GROUP BY value",
                machine_open(MachineOpen::ApplePrivacy),
                machine_open(MachineOpen::Scanner),
                machine_open(MachineOpen::Prefetch),
            );
            let mut query = ch.query(&sql);
            for v in &values {
                query = query.bind(v.as_str());
            }
            query = query.bind(spec.from as u32).bind(spec.to as u32);
            for (_, v) in &spec.filters {
                query = query.bind(v.as_str());
            }
            query
        }
    };
    metrics::counter!("ricochet_api_clickhouse_queries_total").increment(1);
    Ok(query.fetch_all::<ValueCounts>().await?)
}

/// The day grain (`grain = 86400`) of the breakdown rows.
const DAY: u32 = 86_400;

/// `spans` with each week whose week rows are not complete read from the
/// day rows instead ([`tiling::weeks_from_complete_rows`]).
///
/// Why a week's rows can be incomplete: aggregators from before the week
/// grain write day rows without week rows, for as long as a rolling upgrade
/// lasts, and databases from before it have none for the weeks behind them.
/// A flush writes all of its breakdown rows in one insert, so a batch that
/// wrote week rows wrote them for every dimension: a week is complete when
/// its week rows of one dimension count as many events as its day rows of
/// that dimension. Device, the dimension with the fewest values, is checked:
/// a few dozen rows a week.
async fn whole_weeks_only(ch: &Client, scope: &Scope, spans: Vec<Span>) -> Result<Vec<Span>, StatsError> {
    let Some((from, to)) = tiling::week_range(&spans) else { return Ok(spans) };
    #[derive(Row, Deserialize)]
    struct WeekTotals {
        week: u32,
        weekly: u64,
        daily: u64,
    }
    let (filter, values) = scope.breakdown_filter();
    let (week, day) = (BREAKDOWN_WEEK, DAY);
    let sql = format!(
        "SELECT toUInt32(intDiv(toUInt32(bucket_start) - {WEEK_START}, {week}) * {week} + {WEEK_START}) AS week, \
         sumIf(clicks + opens, grain = {week}) AS weekly, sumIf(clicks + opens, grain = {day}) AS daily \
         FROM {BREAKDOWNS_TABLE} WHERE dimension = '{device}' AND grain IN ({day}, {week}) AND {filter} \
         AND bucket_start >= toDateTime(?) AND bucket_start < toDateTime(?) GROUP BY week",
        device = Dimension::Device.as_str()
    );
    let mut query = ch.query(&sql);
    for v in &values {
        query = query.bind(v.as_str());
    }
    metrics::counter!("ricochet_api_clickhouse_queries_total").increment(1);
    let incomplete: std::collections::HashSet<i64> = query
        .bind(from as u32)
        .bind(to as u32)
        .fetch_all::<WeekTotals>()
        .await?
        .into_iter()
        .filter(|w| w.weekly != w.daily)
        .map(|w| i64::from(w.week))
        .collect();
    Ok(tiling::weeks_from_complete_rows(spans, &incomplete, DAY))
}

/// ` AND country = ? AND device = ?`…: the filters, their values bound in order.
fn filters_sql(filters: &[(Dimension, String)]) -> String {
    filters.iter().map(|(d, _)| format!(" AND {} = ?", d.as_str())).collect()
}

/// The distinct people behind a breakdown's value, exactly: recipients
/// (signed tokens) with a human click, and with a human open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct People {
    pub recipients: u64,
    pub openers: u64,
}

/// [`People`] of each of `page` (stored values) and of every other value
/// together: from the raw events (`click_recipients` has no dimensions),
/// one query.
pub async fn breakdown_recipients(
    ch: &Client,
    scope: &Scope,
    spec: &BreakdownSpec,
    page: &[&str],
) -> Result<(HashMap<String, People>, People), StatsError> {
    #[derive(Row, Deserialize)]
    struct Recipients {
        in_page: u8,
        value: String,
        recipients: u64,
        openers: u64,
    }
    let (filter, values) = scope.filter();
    let column = spec.by.as_str();
    let in_page = if page.is_empty() {
        "toUInt8(0)".to_owned()
    } else {
        format!("toUInt8({column} IN ({}))", vec!["?"; page.len()].join(", "))
    };
    let filters = filters_sql(&spec.filters);
    let sql = format!(
        "SELECT {in_page} AS in_page, if(in_page = 1, {column}, '') AS value, \
         toUInt64(uniqExactIf(recipient_id, event_type = 'click')) AS recipients, \
         toUInt64(uniqExactIf(recipient_id, event_type = 'open')) AS openers FROM {EVENTS_TABLE} \
         WHERE {filter} AND is_human = 1 AND recipient_id != '' \
         AND event_time >= toDateTime(?) AND event_time < toDateTime(?){filters} GROUP BY in_page, value"
    );
    let mut query = ch.query(&sql);
    for v in page {
        query = query.bind(*v);
    }
    for v in &values {
        query = query.bind(v.as_str());
    }
    query = query.bind(spec.from as u32).bind(spec.to as u32);
    for (_, v) in &spec.filters {
        query = query.bind(v.as_str());
    }
    metrics::counter!("ricochet_api_clickhouse_queries_total").increment(1);
    let (mut by_value, mut other) = (HashMap::new(), People::default());
    for r in query.fetch_all::<Recipients>().await? {
        let people = People { recipients: r.recipients, openers: r.openers };
        if r.in_page == 1 {
            by_value.insert(r.value, people);
        } else {
            other = people;
        }
    }
    Ok((by_value, other))
}

/// Whether ClickHouse takes a quota key (`X-ClickHouse-Quota`) from the
/// API's user: `false` when that user's quota is not keyed by the client
/// (ClickHouse then refuses every keyed query: "doesn't allow client supplied
/// keys"), as with a stock `default` user. Other errors are errors.
pub async fn accepts_quota_keys(ch: &Client) -> Result<bool, clickhouse::error::Error> {
    match ch.clone().with_header("X-ClickHouse-Quota", "ricochet-probe").query("SELECT 1").fetch_one::<u8>().await {
        Ok(_) => Ok(true),
        Err(clickhouse::error::Error::BadResponse(reason)) if reason.contains("doesn't allow client supplied keys") => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Whether ClickHouse knows the time zone `name`; an unknown one is a
/// `BadResponse` ([`crate::openapi::probe_zones`]).
pub async fn check_zone(ch: &Client, name: &str) -> Result<(), clickhouse::error::Error> {
    ch.query("SELECT toTimeZone(toDateTime(0), ?)").bind(name).execute().await
}

/// The newest event time stored within the last `days`, in Unix
/// milliseconds, if there is any (the freshness of `/v1/status`).
pub async fn newest_event_ms(ch: &Client, days: u32) -> Result<Option<i64>, clickhouse::error::Error> {
    #[derive(Row, Deserialize)]
    struct Newest {
        newest: i64,
        rows: u64,
    }
    let newest = ch
        .query(&format!(
            // Bounded so that the partition key (the month) prunes old data.
            "SELECT max(event_time_ms) AS newest, count() AS rows FROM {EVENTS_TABLE} \
             WHERE event_time >= now() - INTERVAL {days} DAY"
        ))
        .fetch_one::<Newest>()
        .await?;
    Ok((newest.rows > 0).then_some(newest.newest))
}

/// One attempt to deliver a webhook, as the deliverer wrote it to
/// `webhook_deliveries` (migration 0011); the columns in table order, as
/// RowBinary reads them.
#[derive(Debug, Row, Deserialize)]
pub struct DeliveryRow {
    pub message_id: String,
    pub attempted_at_ms: i64,
    pub attempt: u32,
    pub events: u32,
    pub replay: u8,
    pub outcome: String,
    pub status: u16,
    pub latency_ms: u32,
    pub error: String,
}

/// A webhook endpoint's newest `limit` delivery attempts, newest first
/// (the routes in [`crate::routes::webhooks`]). A range read on the table's
/// sort key (client, webhook, time).
pub async fn webhook_deliveries(
    ch: &Client,
    client_id: &str,
    webhook_id: &str,
    limit: u32,
) -> Result<Vec<DeliveryRow>, StatsError> {
    let sql = format!(
        "SELECT message_id, attempted_at_ms, attempt, events, replay, outcome, status, latency_ms, error \
         FROM {WEBHOOK_DELIVERIES_TABLE} WHERE client_id = ? AND webhook_id = ? \
         ORDER BY attempted_at_ms DESC, message_id DESC, attempt DESC LIMIT ?"
    );
    metrics::counter!("ricochet_api_clickhouse_queries_total").increment(1);
    Ok(ch.query(&sql).bind(client_id).bind(webhook_id).bind(limit).fetch_all::<DeliveryRow>().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: Option<&str>, to: Option<&str>, g: Option<&str>, tz: Option<&str>) -> StatsQuery {
        StatsQuery {
            from: from.map(Into::into),
            to: to.map(Into::into),
            granularity: g.map(Into::into),
            tz: tz.map(Into::into),
            ..StatsQuery::default()
        }
    }

    #[test]
    fn series_read_the_coarsest_exact_grain() {
        let grain = |g, tz| {
            let r =
                Range::parse(&q(Some("2026-11-01T00:00:00Z"), Some("2026-11-30T00:00:00Z"), Some(g), tz), 0).unwrap();
            (r.series_grain(), r.total_grain())
        };
        assert_eq!(grain("day", None), (86_400, 86_400));
        assert_eq!(grain("day", Some("Europe/Paris")), (3_600, 3_600));
        assert_eq!(grain("day", Some("Asia/Kathmandu")), (900, 900), "UTC+5:45");
        assert_eq!(grain("hour", Some("Asia/Kolkata")), (900, 900), "UTC+5:30");
        assert_eq!(grain("hour", None), (3_600, 86_400));
        let minutes =
            Range::parse(&q(Some("2026-11-22T10:03:00Z"), Some("2026-11-22T11:07:00Z"), None, None), 0).unwrap();
        assert_eq!((minutes.series_grain(), minutes.total_grain()), (60, 60));
    }

    #[test]
    fn ranges_align_to_buckets() {
        let r = Range::parse(&q(Some("2026-11-22T10:00:30Z"), Some("2026-11-22T10:02:01Z"), None, None), 0).unwrap();
        assert_eq!(r.buckets().len(), 3);
        assert_eq!(rfc3339(r.from, Tz::UTC), "2026-11-22T10:00:00Z");
        assert_eq!(rfc3339(r.to, Tz::UTC), "2026-11-22T10:03:00Z");
    }

    #[test]
    fn days_follow_the_zone_including_daylight_saving() {
        // Europe/Paris leaves summer time on 2026-10-25: that day lasts 25 hours.
        let r = Range::parse(
            &q(Some("2026-10-24T12:00:00Z"), Some("2026-10-26T12:00:00Z"), Some("day"), Some("Europe/Paris")),
            0,
        )
        .unwrap();
        let b = r.buckets();
        assert_eq!(b.len(), 3);
        assert_eq!(rfc3339(b[0], r.tz), "2026-10-24T00:00:00+02:00");
        assert_eq!(rfc3339(b[1], r.tz), "2026-10-25T00:00:00+02:00");
        assert_eq!(rfc3339(b[2], r.tz), "2026-10-26T00:00:00+01:00");
        assert_eq!(b[2] - b[1], 25 * 3600);
        // India is UTC+05:30: its hours start at half past in UTC.
        let r =
            Range::parse(&q(Some("1000000000"), Some("1000007200"), Some("hour"), Some("Asia/Kolkata")), 0).unwrap();
        assert!(r.buckets().iter().all(|b| (b + 19_800) % 3600 == 0));
    }

    #[test]
    fn bad_ranges_say_what_is_allowed() {
        let err = |from, to, g, tz| Range::parse(&q(from, to, g, tz), 1_800_000_000).unwrap_err().to_string();
        assert!(err(Some("yesterday"), None, None, None).contains("RFC 3339"));
        assert!(err(Some("100"), Some("50"), None, None).contains("earlier"));
        assert!(err(None, None, Some("week"), None).contains("minute, hour or day"));
        assert!(err(Some("0"), Some("1000000"), None, None).contains("at most 7 days"));
        assert!(err(None, None, None, Some("Mars/Olympus")).contains("IANA"));
    }

    #[test]
    fn dimensions_are_the_ones_the_aggregator_writes() {
        let names = Dimension::ALL.map(Dimension::as_str);
        assert_eq!(names, ricochet_warehouse::tables::BREAKDOWN_DIMENSIONS);
        for d in Dimension::ALL {
            assert_eq!(Dimension::parse(d.as_str()), Some(d));
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str(), "the JSON name is the parameter's");
        }
    }

    #[test]
    fn machine_open_reasons_are_the_schemas() {
        let json = serde_json::to_value(MachineOpens { apple_privacy: 1, scanner: 2, prefetch: 3 }).unwrap();
        for (i, reason) in MachineOpen::ALL.into_iter().enumerate() {
            assert_eq!(json[reason.as_str()], i as u64 + 1, "{json}");
        }
        assert_eq!(json.as_object().unwrap().len(), MachineOpen::ALL.len());
    }

    #[test]
    fn human_only_drops_bots_from_every_number() {
        let by_reason = MachineOpens { apple_privacy: 2, scanner: 1, prefetch: 0 };
        let c = Counts {
            clicks: 10,
            human_clicks: 7,
            bot_clicks: 3,
            opens: 6,
            human_opens: 2,
            machine_opens: 3,
            machine_opens_by_reason: by_reason,
        };
        // One open without a verdict (stored before verdicts) stays: it is no machine's.
        let human = Counts { clicks: 7, bot_clicks: 0, opens: 3, machine_opens: 0, ..Counts::default() };
        assert_eq!(c.filtered(true), Counts { human_clicks: 7, human_opens: 2, ..human });
        assert_eq!(c.filtered(false), c);
    }
}

// ------------------------------------------------------------------ exports

/// What `GET …/events` streams: the decided raw events of a scope, in a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSpec {
    pub from: i64,
    pub to: i64,
    pub human_only: bool,
    /// `click` or `open`; `None`: both.
    pub event_type: Option<&'static str>,
    /// ClickHouse's own output format: `CSVWithNames` or `JSONEachRow`.
    pub format: &'static str,
    /// `max_execution_time` of the export's query, longer than an aggregate's:
    /// ClickHouse counts the time it waits for a slow reader.
    pub max_execution_secs: u64,
}

/// The export's columns, as `GET …/events` documents them
/// (`crate::routes::events::ExportedEvent`): the same names in CSV's header row
/// and in each NDJSON object. Only strings, so that every ClickHouse version
/// writes them alike (64-bit integers are quoted in JSON by some and not others).
const EXPORT_COLUMNS: &str = "event_id, toString(event_type) AS type, \
     concat(formatDateTime(event_time, '%Y-%m-%dT%H:%M:%S', 'UTC'), '.', \
            substring(toString(1000 + (event_time_ms % 1000)), 2, 3), 'Z') AS occurred_at, \
     client_id, campaign_id, link_id, recipient_id, \
     if(is_human = 1, 'human', if(event_type = 'click', 'bot', 'machine')) AS verdict, \
     toString(verdict_reason) AS reason, \
     country, device, os, browser, mail_client, referrer_domain, utm_source, utm_medium, utm_campaign, \
     destination_url";

/// The decided raw events of `scope`, as ClickHouse writes them in
/// `spec.format`, a chunk at a time: the API forwards the chunks, so its
/// memory stays flat whatever the size of the campaign. `FINAL` keeps one
/// copy of an event the aggregator wrote twice (`docs/data-model.md`,
/// "Duplicates"). No `ORDER BY`: the rows come in the table's order (link,
/// then time), which needs no sort on the server either.
pub fn export_events(
    ch: &Client,
    scope: &Scope,
    spec: &ExportSpec,
) -> Result<clickhouse::query::BytesCursor, StatsError> {
    let (filter, values) = scope.filter();
    let human = if spec.human_only { " AND is_human = 1" } else { "" };
    let event_type = if spec.event_type.is_some() { " AND event_type = ?" } else { "" };
    let sql = format!(
        "SELECT {EXPORT_COLUMNS} FROM {EVENTS_TABLE} FINAL WHERE {filter} \
         AND event_time >= toDateTime(?) AND event_time < toDateTime(?){human}{event_type}"
    );
    let mut query = ch.query(&sql).with_option("max_execution_time", spec.max_execution_secs.to_string());
    for v in &values {
        query = query.bind(v.as_str());
    }
    query = query.bind(spec.from as u32).bind(spec.to as u32);
    if let Some(t) = spec.event_type {
        query = query.bind(t);
    }
    metrics::counter!("ricochet_api_clickhouse_queries_total").increment(1);
    Ok(query.fetch_bytes(spec.format)?)
}
