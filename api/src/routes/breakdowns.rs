//! Breakdowns: a client's, a campaign's or a link's clicks and opens by one
//! dimension (country, device, OS, browser, mail client, referrer domain, UTM
//! source, medium, campaign), human first, optionally filtered on the others.
//!
//! Where the counts come from ([`stats::breakdown_counts`]): without filters
//! and with `from` and `to` on whole UTC hours, from `click_breakdowns`
//! (for a campaign or a client, weeks for the whole weeks in the range whose
//! week rows are complete; UTC days for the whole days left; the hours at
//! the start; at the end its hours, or its day or week less the rows after
//! `to`, whichever reads less: [`crate::tiling`]), range reads on the sort
//! key's prefix, a small fraction of the raw events;
//! otherwise from the raw events. `unique_human_recipients` always comes from
//! the raw events ([`stats::breakdown_recipients`]). The answer's `source`
//! says which the counts came from.
//!
//! Ranking: rows by `human_clicks` descending, then `clicks` descending, then
//! value. `limit` rows are listed; every value past them is summed in `other`.
//! With `human_only` (the default) machines are left out of every number
//! (`bot_clicks` and `machine_opens` read 0, `clicks` is the human clicks) and
//! values with no human click or open are not listed.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::Required;
use utoipa::{IntoParams, ToSchema};

use super::{cache_key, campaign_scope, client_scope, visible_link};
use crate::auth::{KeyScope, Principal};
use crate::error::{ApiError, Path};
use crate::format::{CsvBody, Format};
use crate::openapi::{self, CampaignPath, ClientPath, LinkPath, StatsErrors};
use crate::state::ApiState;
use crate::stats::{self, BreakdownSpec, Dimension, MachineOpens, Scope, StatsError, ValueCounts};
use ricochet_schemas::MachineOpen;

/// Rows listed when `limit` is not given, and the most a request may ask for.
pub const DEFAULT_LIMIT: u32 = 10;
pub const MAX_LIMIT: u32 = 1000;
/// The range when `from` is not given: this many days before `to`.
pub const DEFAULT_DAYS: i64 = 30;
/// The longest range a breakdown may cover.
pub const MAX_DAYS: i64 = 366;
/// How an unknown value (stored as `''`) is shown, and filtered on.
pub const UNKNOWN: &str = "unknown";
/// `device` values.
pub const DEVICES: [&str; 5] = ["desktop", "mobile", "tablet", "bot", "other"];
/// `mail_client` values.
pub const MAIL_CLIENTS: [&str; 5] = ["gmail", "outlook", "yahoo", "apple_mail", "other"];
/// A `country` filter: an ISO 3166 alpha-2 code, either case, or `unknown`.
pub const COUNTRY_PATTERN: &str = "^([A-Za-z]{2}|unknown)$";
/// A filter on a free-text dimension (OS, browser, referrer domain, UTM tags):
/// 1 to [`MAX_VALUE_CHARS`] characters, no control characters.
pub const VALUE_PATTERN: &str = r"^[^\x00-\x1F\x7F]{1,200}$";
pub const MAX_VALUE_CHARS: usize = 200;

/// The query string, unvalidated; unknown parameters are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakdownQuery {
    pub by: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub tz: Option<String>,
    pub human_only: Option<bool>,
    #[serde(default, deserialize_with = "crate::numbers::option_u32_text")]
    pub limit: Option<u32>,
    pub format: Option<String>,
    pub country: Option<String>,
    pub device: Option<String>,
    pub os: Option<String>,
    pub browser: Option<String>,
    pub mail_client: Option<String>,
    pub referrer_domain: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
}

impl BreakdownQuery {
    /// The filter given on `d`, if any.
    fn filter(&self, d: Dimension) -> Option<&str> {
        match d {
            Dimension::Country => self.country.as_deref(),
            Dimension::Device => self.device.as_deref(),
            Dimension::Os => self.os.as_deref(),
            Dimension::Browser => self.browser.as_deref(),
            Dimension::MailClient => self.mail_client.as_deref(),
            Dimension::ReferrerDomain => self.referrer_domain.as_deref(),
            Dimension::UtmSource => self.utm_source.as_deref(),
            Dimension::UtmMedium => self.utm_medium.as_deref(),
            Dimension::UtmCampaign => self.utm_campaign.as_deref(),
        }
    }
}

/// A validated breakdown request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakdownRequest {
    pub spec: BreakdownSpec,
    pub tz: Tz,
    pub human_only: bool,
    pub limit: u32,
}

impl BreakdownRequest {
    /// Defaults: the last [`DEFAULT_DAYS`] whole days of `tz`, today's
    /// included (`to` alone: the [`DEFAULT_DAYS`] days before it; `from`
    /// alone: up to the end of today), human only, [`DEFAULT_LIMIT`] rows.
    /// Whole days, not "up to the next hour": a UTC day's rows answer for a
    /// day at once, where a ragged hour at each end costs a row per value and
    /// hour. `from` and `to` are taken as given (not rounded): off whole
    /// hours, the raw events answer.
    pub fn parse(q: &BreakdownQuery, now: i64) -> Result<Self, StatsError> {
        let names = || Dimension::ALL.map(Dimension::as_str).join(", ");
        let by = match q.by.as_deref() {
            None => return Err(StatsError::BadParam(format!("by is required: one of {}", names()))),
            Some(raw) => Dimension::parse(raw)
                .ok_or_else(|| StatsError::BadParam(format!("by must be one of {}, not {raw:?}", names())))?,
        };
        let tz = stats::parse_tz(q.tz.as_deref())?;
        let (whole_days_from, end_of_today) = stats::last_whole_days(now, DEFAULT_DAYS as u64, tz);
        let to = q.to.as_deref().map(|t| stats::parse_instant("to", t)).transpose()?;
        let from = q.from.as_deref().map(|f| stats::parse_instant("from", f)).transpose()?;
        let (from, to) = match (from, to) {
            (Some(from), Some(to)) => (from, to),
            (Some(from), None) => (from, end_of_today),
            (None, Some(to)) => (to - DEFAULT_DAYS * 86_400, to),
            (None, None) => (whole_days_from, end_of_today),
        };
        stats::check_bounds(from, to)?;
        if to - from > MAX_DAYS * 86_400 {
            return Err(StatsError::Conflict(format!("range too long for a breakdown: at most {MAX_DAYS} days")));
        }
        let limit = match q.limit.unwrap_or(DEFAULT_LIMIT) {
            n if (1..=MAX_LIMIT).contains(&n) => n,
            n => return Err(StatsError::BadParam(format!("limit must be between 1 and {MAX_LIMIT}, not {n}"))),
        };
        let mut filters = Vec::new();
        for d in Dimension::ALL {
            if let Some(raw) = q.filter(d) {
                filters.push((d, filter_value(d, raw)?));
            }
        }
        let spec = BreakdownSpec { by, from, to, filters, now };
        Ok(BreakdownRequest { spec, tz, human_only: q.human_only.unwrap_or(true), limit })
    }
}

/// A filter's value as stored: `unknown` is `''`, a country is upper case.
fn filter_value(d: Dimension, raw: &str) -> Result<String, StatsError> {
    if raw == UNKNOWN {
        return Ok(String::new());
    }
    let name = d.as_str();
    let one_of = |allowed: &[&str]| {
        if allowed.contains(&raw) {
            Ok(raw.to_owned())
        } else {
            Err(StatsError::BadParam(format!("{name} must be one of {} or {UNKNOWN}, not {raw:?}", allowed.join(", "))))
        }
    };
    match d {
        Dimension::Country => match raw.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Ok(raw.to_ascii_uppercase()),
            _ => Err(StatsError::BadParam(format!(
                "country must be an ISO 3166 alpha-2 code (two letters, e.g. DE) or {UNKNOWN}, not {raw:?}"
            ))),
        },
        Dimension::Device => one_of(&DEVICES),
        Dimension::MailClient => one_of(&MAIL_CLIENTS),
        Dimension::Os
        | Dimension::Browser
        | Dimension::ReferrerDomain
        | Dimension::UtmSource
        | Dimension::UtmMedium
        | Dimension::UtmCampaign => {
            let chars = raw.chars().count();
            if (1..=MAX_VALUE_CHARS).contains(&chars) && !raw.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}') {
                Ok(raw.to_owned())
            } else {
                Err(StatsError::BadParam(format!(
                    "{name} must be 1 to {MAX_VALUE_CHARS} characters without control characters"
                )))
            }
        }
    }
}

/// The counts of a value, or of every value past the listed ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct BreakdownCounts {
    pub human_clicks: u64,
    pub bot_clicks: u64,
    /// Human and bot clicks (with `human_only`, human clicks).
    pub clicks: u64,
    /// Distinct recipients (signed tokens) with at least one human click, exact.
    pub unique_human_recipients: u64,
    pub human_opens: u64,
    /// Opens fetched by machines (Apple's privacy proxies, scanners, prefetchers).
    pub machine_opens: u64,
    /// `machine_opens` by why they were a machine's.
    pub machine_opens_by_reason: MachineOpens,
    /// Distinct recipients (signed tokens) with at least one human open, exact.
    pub unique_human_openers: u64,
}

impl std::ops::AddAssign<&ValueCounts> for BreakdownCounts {
    fn add_assign(&mut self, v: &ValueCounts) {
        self.human_clicks += v.human_clicks;
        self.bot_clicks += v.bot_clicks;
        self.clicks += v.clicks;
        self.human_opens += v.human_opens;
        self.machine_opens += v.machine_opens;
        self.machine_opens_by_reason += v.machine_opens_by_reason();
    }
}

/// One value of the dimension and its counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct BreakdownRow {
    /// The value: an ISO 3166 alpha-2 code for `country`, a lowercase name for
    /// `device` and `mail_client`, as recorded for the others; `unknown` when
    /// the event had none.
    pub value: String,
    #[serde(flatten)]
    pub counts: BreakdownCounts,
}

/// Where a breakdown's counts came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The hour, day or week rows of `click_breakdowns` (the name predates that table).
    Rollups,
    /// The raw events (filters, or a range off whole hours).
    Events,
}

/// A breakdown: the top values, most human clicks first, and the rest summed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Breakdown {
    pub by: Dimension,
    /// RFC 3339, in `tz`.
    pub from: String,
    /// RFC 3339, in `tz` (exclusive).
    pub to: String,
    pub tz: String,
    pub human_only: bool,
    pub source: Source,
    pub rows: Vec<BreakdownRow>,
    /// Every value past the listed rows, summed (its unique recipients counted once).
    pub other: BreakdownCounts,
}

/// `rank,value,…`: the rows ranked 1 to n, then `other` (with no value).
impl CsvBody for Breakdown {
    fn csv(&self, out: &mut csv::Writer<Vec<u8>>) -> csv::Result<()> {
        out.write_record([
            "rank",
            "value",
            "human_clicks",
            "bot_clicks",
            "clicks",
            "unique_human_recipients",
            "human_opens",
            "machine_opens",
            "machine_opens_apple_privacy",
            "machine_opens_scanner",
            "machine_opens_prefetch",
            "unique_human_openers",
        ])?;
        let record = |rank: String, value: &str, c: &BreakdownCounts| {
            let by_reason = MachineOpen::ALL.map(|m| c.machine_opens_by_reason.get(m));
            let numbers =
                [c.human_clicks, c.bot_clicks, c.clicks, c.unique_human_recipients, c.human_opens, c.machine_opens]
                    .into_iter()
                    .chain(by_reason)
                    .chain([c.unique_human_openers]);
            [rank, value.to_owned()].into_iter().chain(numbers.map(|n| n.to_string())).collect::<Vec<_>>()
        };
        for (i, row) in self.rows.iter().enumerate() {
            out.write_record(record((i + 1).to_string(), &row.value, &row.counts))?;
        }
        out.write_record(record("other".into(), "", &self.other))
    }
}

/// Ranks the values: with `human_only`, machines left out and values without
/// human activity dropped; most human clicks first, then most clicks, then by
/// the value as shown. The first `limit` are listed, the rest summed.
pub fn rank(mut values: Vec<ValueCounts>, human_only: bool, limit: u32) -> (Vec<ValueCounts>, BreakdownCounts) {
    if human_only {
        values.retain(|v| v.human_clicks > 0 || v.human_opens > 0);
        for v in &mut values {
            v.clicks = v.human_clicks;
            v.bot_clicks = 0;
            v.machine_opens = 0;
            (v.open_apple_privacy, v.open_scanner, v.open_prefetch) = (0, 0, 0);
        }
    }
    values.retain(|v| v.clicks + v.human_opens + v.machine_opens > 0);
    values.sort_by(|a, b| {
        (b.human_clicks, b.clicks).cmp(&(a.human_clicks, a.clicks)).then_with(|| shown(&a.value).cmp(shown(&b.value)))
    });
    let rest = values.split_off(values.len().min(limit as usize));
    let mut other = BreakdownCounts::default();
    for v in &rest {
        other += v;
    }
    (values, other)
}

/// A stored value as the answer shows it.
fn shown(value: &str) -> &str {
    if value.is_empty() {
        UNKNOWN
    } else {
        value
    }
}

/// The breakdown of `scope`: its counts (one query), ranked, then the unique
/// human recipients of the listed values and of the rest (a second query).
pub async fn breakdown(ch: &clickhouse::Client, scope: &Scope, req: &BreakdownRequest) -> Result<Breakdown, ApiError> {
    let spec = &req.spec;
    let values = stats::breakdown_counts(ch, scope, spec).await?;
    let (listed, mut other) = rank(values, req.human_only, req.limit);
    let page: Vec<&str> = listed.iter().map(|v| v.value.as_str()).collect();
    // Without a human click or open there is no human recipient or opener to count.
    let human: u64 =
        listed.iter().map(|v| v.human_clicks + v.human_opens).sum::<u64>() + other.human_clicks + other.human_opens;
    let (people, other_people) =
        if human > 0 { stats::breakdown_recipients(ch, scope, spec, &page).await? } else { Default::default() };
    (other.unique_human_recipients, other.unique_human_openers) = (other_people.recipients, other_people.openers);
    let rows = listed
        .iter()
        .map(|v| {
            let mut counts = BreakdownCounts::default();
            counts += v;
            let of_value = people.get(&v.value).copied().unwrap_or_default();
            (counts.unique_human_recipients, counts.unique_human_openers) = (of_value.recipients, of_value.openers);
            BreakdownRow { value: shown(&v.value).to_owned(), counts }
        })
        .collect();
    Ok(Breakdown {
        by: spec.by,
        from: stats::rfc3339(spec.from, req.tz),
        to: stats::rfc3339(spec.to, req.tz),
        tz: req.tz.name().to_owned(),
        human_only: req.human_only,
        source: if spec.rollup_spans(false).is_some() { Source::Rollups } else { Source::Events },
        rows,
        other,
    })
}

/// The query parameters as the document states them; the handlers extract
/// [`BreakdownQuery`], validated with the same constants.
pub struct BreakdownParams;

impl IntoParams for BreakdownParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let q = |name: &str, description: &str, schema: Schema| {
            openapi::param(name, ParameterIn::Query, description, schema)
        };
        let text = |values: &[&str]| {
            let mut values = values.to_vec();
            values.push(UNKNOWN);
            Schema::Object(openapi::enum_schema(&values))
        };
        let mut by = q(
            "by",
            "The dimension to break down by.",
            Schema::Object(openapi::enum_schema(&Dimension::ALL.map(Dimension::as_str))),
        );
        by.required = Required::True;
        let limit = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(1))
            .maximum(Some(MAX_LIMIT))
            .default(Some(DEFAULT_LIMIT.into()));
        let human_only = ObjectBuilder::new().schema_type(Type::Boolean).default(Some(true.into()));
        let value = || {
            Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(VALUE_PATTERN))
                    .min_length(Some(1))
                    .max_length(Some(MAX_VALUE_CHARS))
                    .build(),
            )
        };
        let mut params = vec![
            by,
            q(
                "from",
                "Start: Unix seconds or RFC 3339, taken as given. Default: 30 days before `to`, or with neither, \
                 the start of the 30th day before the end of today in `tz` (the last 30 whole days).",
                openapi::instant_schema(),
            ),
            q(
                "to",
                "End (exclusive): Unix seconds or RFC 3339, taken as given. Default: the end of today in `tz`. \
                 With no filter and both ends on whole UTC hours, the counts come from the hour (or day, or for \
                 campaigns and clients week) rollups; otherwise from the raw events. At most 366 days (else 422).",
                openapi::instant_schema(),
            ),
            q(
                "tz",
                "IANA time zone `from` and `to` are shown in, and whose days the default range is. Default: UTC.",
                openapi::tz_schema(),
            ),
            q(
                "human_only",
                "Leave machines out: bot clicks and machine opens read 0 and values without a human click or open \
                 are not listed. Default: true.",
                human_only.into(),
            ),
            q("limit", "Values to list; the rest are summed in `other`. Default: 10.", limit.into()),
            q(
                "format",
                "`csv`: the same numbers as CSV with a header row (`text/csv`); also chosen by `Accept: text/csv`. \
                 Default: `json`.",
                openapi::format_schema(),
            ),
            q(
                "country",
                "Only events from this country: ISO 3166 alpha-2 (either case), or `unknown`.",
                openapi::pattern_schema(COUNTRY_PATTERN),
            ),
            q("device", "Only events from this device class (or `unknown`).", text(&DEVICES)),
        ];
        for (name, what) in [("os", "OS family"), ("browser", "browser family")] {
            params.push(q(name, &format!("Only events with this {what} (uap-core's names), or `unknown`."), value()));
        }
        params.push(q("mail_client", "Only events from this mail client (or `unknown`).", text(&MAIL_CLIENTS)));
        params.push(q("referrer_domain", "Only events with this referrer domain, or `unknown` (none).", value()));
        for name in ["utm_source", "utm_medium", "utm_campaign"] {
            params.push(q(name, &format!("Only events of links with this {name}, or `unknown` (none)."), value()));
        }
        params
    }
}

async fn respond(
    s: &ApiState,
    uri: OriginalUri,
    headers: &HeaderMap,
    scope: Scope,
    query: Result<Query<BreakdownQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let req = BreakdownRequest::parse(&q, chrono::Utc::now().timestamp())?;
    let format = Format::negotiate(q.format.as_deref(), headers)?;
    let ch = s.clickhouse_for(&scope);
    s.cache.respond_as(cache_key(&uri), headers, format, || async move { breakdown(&ch, &scope, &req).await }).await
}

#[utoipa::path(
    get,
    path = "/v1/links/{link_id}/breakdown",
    tag = "aggregates",
    summary = "A link's clicks and opens by country, device, OS, browser, mail client, referrer or UTM tag.",
    params(LinkPath, BreakdownParams),
    responses(
        (status = 200, description = "The values, most human clicks first, and the rest summed in `other`.", content((Breakdown = "application/json"), (String = "text/csv")), headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn link_breakdown(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(LinkPath { link_id }): Path<LinkPath>,
    query: Result<Query<BreakdownQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let link = visible_link(&s, &principal, &link_id)?;
    respond(&s, uri, &headers, Scope::Link(link), query).await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/breakdown",
    tag = "aggregates",
    summary = "A client's clicks and opens by country, device, OS, browser, mail client, referrer or UTM tag.",
    params(ClientPath, BreakdownParams),
    responses(
        (status = 200, description = "The values, most human clicks first, and the rest summed in `other`.", content((Breakdown = "application/json"), (String = "text/csv")), headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn client_breakdown(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(ClientPath { client_id }): Path<ClientPath>,
    query: Result<Query<BreakdownQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let client = client_scope(&principal, &client_id, KeyScope::Read)?;
    respond(&s, uri, &headers, Scope::Client(client), query).await
}

#[utoipa::path(
    get,
    path = "/v1/clients/{client_id}/campaigns/{campaign_id}/breakdown",
    tag = "aggregates",
    summary = "A campaign's clicks and opens by country, device, OS, browser, mail client, referrer or UTM tag.",
    params(CampaignPath, BreakdownParams),
    responses(
        (status = 200, description = "The values, most human clicks first, and the rest summed in `other`.", content((Breakdown = "application/json"), (String = "text/csv")), headers(("ETag" = String, description = "Send it back in If-None-Match for a 304."), ("Cache-Control" = String, description = "private, max-age=1"))),
        (status = 304, description = "Not modified since the ETag sent in If-None-Match."),
        StatsErrors,
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn campaign_breakdown(
    State(s): State<Arc<ApiState>>,
    principal: Principal,
    uri: OriginalUri,
    headers: HeaderMap,
    Path(CampaignPath { client_id, campaign_id }): Path<CampaignPath>,
    query: Result<Query<BreakdownQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let scope = campaign_scope(&principal, &client_id, &campaign_id, KeyScope::Read)?;
    respond(&s, uri, &headers, scope, query).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiling::Span;

    const NOW: i64 = 1_800_000_123;

    fn parse(query: &str) -> Result<BreakdownRequest, String> {
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        let Query(q) = Query::<BreakdownQuery>::try_from_uri(&uri).map_err(|e| e.body_text())?;
        BreakdownRequest::parse(&q, NOW).map_err(|e| e.to_string())
    }

    /// A value's counts; its machine opens are Apple's proxies' but one, a scanner's.
    fn v(value: &str, human_clicks: u64, bot_clicks: u64, human_opens: u64, machine_opens: u64) -> ValueCounts {
        ValueCounts {
            value: value.into(),
            human_clicks,
            bot_clicks,
            clicks: human_clicks + bot_clicks,
            human_opens,
            machine_opens,
            open_apple_privacy: machine_opens.saturating_sub(1),
            open_scanner: machine_opens.min(1),
            open_prefetch: 0,
        }
    }

    #[test]
    fn defaults_are_the_last_thirty_whole_days_human_only_ten_rows() {
        let r = parse("by=country").unwrap();
        assert_eq!(r.spec.by, Dimension::Country);
        let tomorrow = NOW - NOW.rem_euclid(86_400) + 86_400;
        assert_eq!((r.spec.from, r.spec.to), (tomorrow - 30 * 86_400, tomorrow), "30 UTC days, today's included");
        assert!(r.human_only && r.limit == 10 && r.spec.filters.is_empty() && r.tz == Tz::UTC);
        assert!(r.spec.rollup_spans(false).unwrap().iter().all(|s| s.grain == 86_400), "whole days: no hour rows");
        // In a zone: its days (Paris, UTC+1 in winter: midnight is 23:00 UTC the day before).
        let r = parse("by=country&tz=Europe/Paris").unwrap();
        assert_eq!(r.spec.to, tomorrow - 3_600);
        assert_eq!(r.spec.to - r.spec.from, 30 * 86_400);
        // One end given: the other as before (30 days before `to`; up to the end of today).
        let r = parse(&format!("by=os&to={}", tomorrow - 7_200)).unwrap();
        assert_eq!((r.spec.from, r.spec.to), (tomorrow - 7_200 - 30 * 86_400, tomorrow - 7_200));
        let r = parse(&format!("by=os&from={}", tomorrow - 5 * 86_400)).unwrap();
        assert_eq!((r.spec.from, r.spec.to), (tomorrow - 5 * 86_400, tomorrow));
    }

    #[test]
    fn whole_days_come_from_the_day_rows_the_ragged_ends_from_the_hours_else_the_events() {
        let spans = |q: &str| parse(q).unwrap().spec.rollup_spans(false);
        let (day, h) = (20_000 * 86_400, 3_600);
        assert_eq!(
            spans(&format!("by=os&from={day}&to={}", day + 7 * 86_400)),
            Some(vec![Span::plus(86_400, day, day + 7 * 86_400)])
        );
        assert_eq!(
            spans(&format!("by=os&from={}&to={}", day - 3 * h, day + 2 * 86_400 + 5 * h)),
            Some(vec![
                Span::plus(86_400, day, day + 2 * 86_400),
                Span::plus(3_600, day - 3 * h, day),
                Span::plus(3_600, day + 2 * 86_400, day + 2 * 86_400 + 5 * h)
            ]),
            "days inside, hours at the ends"
        );
        assert_eq!(
            spans(&format!("by=os&from={}&to={}", day - h, day + h)),
            Some(vec![Span::plus(3_600, day - h, day + h)]),
            "no whole day"
        );
        assert_eq!(spans(&format!("by=os&from={}&to={}", day + 60, day + h)), None, "off the hour");
        assert_eq!(spans(&format!("by=os&from={day}&to={}&device=mobile", day + 86_400)), None, "a filter");
        // Local midnights are not UTC days: Paris's 1 November is the hour
        // before the UTC day and that day less its last hour.
        assert_eq!(
            spans("by=os&from=2026-11-01T00:00:00%2B01:00&to=2026-11-02T00:00:00%2B01:00"),
            Some(vec![
                Span::plus(86_400, 1793491200, 1793577600),
                Span::plus(3_600, 1793487600, 1793491200),
                Span::minus(3_600, 1793574000, 1793577600),
            ])
        );
    }

    #[test]
    fn filters_are_checked_and_stored_as_the_tables_hold_them() {
        let r = parse("by=device&country=de&device=mobile&mail_client=unknown&utm_campaign=Black%20Friday").unwrap();
        assert_eq!(
            r.spec.filters,
            vec![
                (Dimension::Country, "DE".to_owned()),
                (Dimension::Device, "mobile".to_owned()),
                (Dimension::MailClient, String::new()),
                (Dimension::UtmCampaign, "Black Friday".to_owned()),
            ]
        );
        assert_eq!(
            parse("by=country&country=unknown").unwrap().spec.filters,
            vec![(Dimension::Country, String::new())]
        );
        let err = |q: &str| parse(q).unwrap_err();
        assert!(err("limit=5").contains("by is required"), "{}", err("limit=5"));
        assert!(err("by=city").contains("by must be one of country, device"), "{}", err("by=city"));
        assert!(err("by=os&country=DEU").contains("two letters"));
        assert!(err("by=os&device=phone").contains("desktop, mobile, tablet, bot, other"));
        assert!(err("by=os&mail_client=thunderbird").contains("gmail, outlook, yahoo, apple_mail, other"));
        assert!(err("by=os&browser=").contains("1 to 200"));
        assert!(err("by=os&browser=a%0Ab").contains("control"));
        assert!(err(&format!("by=os&os={}", "x".repeat(201))).contains("1 to 200"));
        assert!(err("by=os&limit=0").contains("between 1 and 1000"));
        assert!(err("by=os&limit=1001").contains("between 1 and 1000"));
        assert!(err("by=os&city=Paris").contains("unknown field"));
        assert!(err("by=os&from=100&to=50").contains("earlier"));
        assert!(err("by=os&from=0&to=40000000").contains("at most 366 days"));
        assert!(err("by=os&tz=Mars/Olympus").contains("IANA"));
    }

    #[test]
    fn the_patterns_the_document_states_accept_what_the_handler_accepts() {
        // The document's patterns are ECMA regexes; these are the cases that matter.
        assert!(filter_value(Dimension::Os, &"é".repeat(200)).is_ok(), "characters, not bytes");
        assert!(filter_value(Dimension::Os, "\u{7f}").is_err());
        assert!(filter_value(Dimension::Country, "unknown").is_ok());
        assert!(filter_value(Dimension::Country, "Unknown").is_err());
        assert_eq!(
            MAX_VALUE_CHARS.to_string(),
            VALUE_PATTERN[VALUE_PATTERN.find(",").unwrap() + 1..].trim_end_matches("}$")
        );
    }

    #[test]
    fn ranking_is_human_first_and_the_rest_is_other() {
        let values = vec![
            v("FR", 3, 9, 0, 0),
            v("DE", 5, 0, 1, 4),
            v("", 3, 1, 0, 0),
            v("US", 0, 7, 0, 2),
            v("IT", 0, 0, 2, 0),
            v("ES", 1, 0, 0, 0),
        ];
        let (listed, other) = rank(values.clone(), false, 3);
        let order: Vec<&str> = listed.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(order, ["DE", "FR", ""], "human clicks, then clicks");
        assert_eq!(
            other,
            BreakdownCounts {
                human_clicks: 1,
                bot_clicks: 7,
                clicks: 8,
                human_opens: 2,
                machine_opens: 2,
                machine_opens_by_reason: MachineOpens { apple_privacy: 1, scanner: 1, prefetch: 0 },
                ..Default::default()
            }
        );
        let (listed, other) = rank(values, true, 10);
        let order: Vec<&str> = listed.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(order, ["DE", "FR", "", "ES", "IT"], "no human activity in US; ties by value shown (unknown)");
        assert!(listed.iter().all(|v| v.bot_clicks == 0 && v.machine_opens == 0 && v.clicks == v.human_clicks));
        assert!(listed.iter().all(|v| v.machine_opens_by_reason() == MachineOpens::default()), "{listed:?}");
        assert_eq!(other, BreakdownCounts::default());
    }

    #[test]
    fn csv_has_a_header_the_ranked_rows_and_other() {
        let counts = BreakdownCounts {
            human_clicks: 2,
            bot_clicks: 1,
            clicks: 3,
            unique_human_recipients: 2,
            human_opens: 4,
            machine_opens: 5,
            machine_opens_by_reason: MachineOpens { apple_privacy: 3, scanner: 2, prefetch: 0 },
            unique_human_openers: 3,
        };
        let b = Breakdown {
            by: Dimension::UtmCampaign,
            from: "x".into(),
            to: "y".into(),
            tz: "UTC".into(),
            human_only: false,
            source: Source::Events,
            rows: vec![BreakdownRow { value: "Black Friday, \"early\"".into(), counts }],
            other: BreakdownCounts::default(),
        };
        let text = String::from_utf8(b.to_csv()).unwrap();
        assert_eq!(
            text,
            "rank,value,human_clicks,bot_clicks,clicks,unique_human_recipients,human_opens,machine_opens,\
             machine_opens_apple_privacy,machine_opens_scanner,machine_opens_prefetch,unique_human_openers\n\
             1,\"Black Friday, \"\"early\"\"\",2,1,3,2,4,5,3,2,0,3\n\
             other,,0,0,0,0,0,0,0,0,0,0\n"
        );
    }
}
